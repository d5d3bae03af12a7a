"""`uncertainty`: how sure is the model? A noise-conditioned hypernetwork trained as variational
inference (`hypernet.methods.bayesian`) against a single network, MC dropout and an explicit deep
ensemble, all on the same target `d -> hidden -> 5`, trained on digits 0-4.

In distribution: test accuracy, NLL and expected calibration error (with the reliability diagram)
on the test images of digits 0-4. Out of distribution: AUROC for telling the test digits 0-4 from
(a) the test digits 5-9 (classes never seen) and (b) the test digits 0-4 rotated by 90 degrees, by
two scores computed the same way for every method with members (`hypernet.methods.calibration`):
the predictive entropy of the mean prediction (also the single network's score) and the mutual
information between label and members (its epistemic part). Per method: trainable parameters and the training
wall time measured in this run; every metric over `seeds` seeds (mean and sample sd), and the
hypernetwork's gap to the deep ensemble paired by seed.

MNIST (`--data-dir`: the training split for training, the test split for every evaluation); the
`--quick` variant runs on scikit-learn's 8x8 digits (offline), a stratified 75/25 split.

On several processes (`hypernet run uncertainty --nproc N`, or torchrun) every network trains
through DDP: every process draws the same global batch from the phase's generator and keeps its
strided part, DDP averages the gradients, so N processes take one process's steps (up to float
summation order). The terms of each loss: a mean cross-entropy over equal parts (their mean is the
whole batch's); the hypernetwork's prior and weight-space entropy, computed on weight draws made
from the step's generator, the same on every process (their mean is themselves); its
function-space entropy, a function of the whole batch's logits, which every process gathers
(`gather_batch`). MC dropout's masks come from torch's global generator, which every process holds
in the same state: every process draws the whole batch's masks and keeps its part (`dropout_noise`),
the draws one process makes. Evaluation runs alike on every process; rank 0 alone writes.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

import hypernet as hn
from hypernet.data import check_mnist, load_digits, load_mnist, train_test_split
from hypernet.experiments.registry import PhaseTimer, RunContext, register
from hypernet.experiments.settings import ConfigError, Relation, no_folder_with_digits, setting
from hypernet.methods import calibration as cal
from hypernet.methods.bayesian import BayesianHyperNetwork, ELBOLoss
from hypernet.report.table import Table
from hypernet.train import TrainConfig, distributed

METHODS = ("single", "mc-dropout", "deep-ensemble", "hypernet")
OOD_SETS = ("heldout", "rotated")
CLASSES = 5  # trained on digits 0..4


@dataclass
class UncertaintyConfig:
    data: Literal["mnist", "digits"] = setting("mnist", "dataset: MNIST (from data_dir) or scikit-learn's 8x8 digits")
    data_dir: str = setting(
        "", "folder with the MNIST files (empty: $HYPERNET_DATA or the user cache, downloading)", folder=True
    )
    n_train: int = setting(0, "training images of digits 0-4 (0: all of them)", ge=0)
    seeds: int = setting(3, "seeds run one after another (--seed, --seed+1, ...)", ge=1)
    steps: int = setting(1500, "training steps of every network (each ensemble member too)", ge=1)
    batch_size: int = setting(128, "images per step", ge=1)
    lr: float = setting(1e-3, "Adam learning rate", gt=0)
    hidden: int = setting(100, "hidden width of the target network d -> hidden -> 5", ge=1)
    # dropout, kl_weight, hyper_rank, noise_dim, train_members: chosen on a validation split of the
    # training split (digits 0-4 held out; OOD proxies: training digits 5-9 and upside-down digits),
    # 11 settings per method under one rule: tools/uncertainty_tuning.py, docs/results/uncertainty-tuning.json
    dropout: float = setting(0.3, "MC dropout: dropout rate on the hidden layer", gt=0, lt=1)
    ensemble_size: int = setting(5, "members of the deep ensemble", ge=2)
    train_members: int = setting(5, "hypernetwork: weight draws per training step (the entropy estimate's K)", ge=2)
    eval_members: int = setting(20, "hypernetwork draws and MC-dropout passes at evaluation", ge=2)
    noise_dim: int = setting(8, "hypernetwork: size of the noise input", ge=1)
    hyper_hidden: tuple[int, ...] = setting((32,), "hypernetwork: hidden widths", ge=1)
    hyper_generate: Literal["all", "last"] = setting(
        "all", "hypernetwork: generate every weight, or only the last layer's (the first then a point estimate)"
    )
    hyper_rank: int = setting(
        0, "hypernetwork: 0 generates every weight whole; r >= 1: each matrix W0 + U V^T of rank r", ge=0
    )
    hyper_entropy: Literal["weights", "function"] = setting(
        "weights",
        "hypernetwork: entropy estimated on the weights, or on the members' log-probabilities on the "
        "training batch (function space; the prior stays on the weights)",
    )
    prior_scale: float = setting(1.0, "prior std times sqrt(fan-in) of each weight tensor", gt=0)
    kl_weight: float = setting(0.001, "beta: weight of the KL term (1: the evidence lower bound)", ge=0)
    ece_bins: int = setting(15, "equal-width confidence bins of the ECE and the reliability diagram", ge=1, le=1000)
    checkpoint_every: int = setting(500, "steps between checkpoints", ge=1)

    RELATIONS: ClassVar[tuple[Relation, ...]] = (no_folder_with_digits("data"),)


@dataclass
class Splits:
    """Training images/labels of digits 0-4 and the evaluation sets (`test`: digits 0-4)."""

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    ood: dict[str, Tensor]


def rotate90(x: Tensor, shape: tuple[int, int]) -> Tensor:
    """Images `x: [N, H*W]` rotated by 90 degrees (exact: a transpose and flip, no interpolation)."""
    return torch.rot90(x.view(-1, *shape), 1, (1, 2)).reshape(x.shape[0], -1)


def load_splits(cfg: UncertaintyConfig, seed: int) -> Splits:
    if cfg.data == "mnist":
        train, test = load_mnist("train", cfg.data_dir or None), load_mnist("test", cfg.data_dir or None)
    else:
        train, test = train_test_split(load_digits(), 0.25, seed=seed)
    assert train.image_shape is not None
    inside = train.y < CLASSES
    x_train, y_train = train.x[inside], train.y[inside]
    if cfg.n_train > len(y_train):
        raise ConfigError(f"--set n_train={cfg.n_train}: only {len(y_train):,} training images of digits 0-4 here")
    if cfg.n_train and cfg.n_train < len(y_train):
        pick = torch.randperm(len(y_train), generator=torch.Generator().manual_seed(seed))[: cfg.n_train]
        x_train, y_train = x_train[pick], y_train[pick]
    seen = test.y < CLASSES
    x_test, y_test = test.x[seen], test.y[seen]
    ood = {"heldout": test.x[~seen], "rotated": rotate90(x_test, train.image_shape)}
    return Splits(x_train, y_train, x_test, y_test, ood)


class Classifier(nn.Sequential):
    """The target `d -> hidden -> ReLU [-> Dropout] -> 5` (`x: [B, d] -> [B, 5]`). `forward(x, noise)`
    with `noise: [B, hidden]` multiplies the hidden layer by it in place of the dropout layer's own
    draw (`dropout_noise`: the masks of a multi-process step)."""

    def forward(self, x: Tensor, noise: Tensor | None = None) -> Tensor:
        for layer in self:
            x = x * noise if noise is not None and isinstance(layer, nn.Dropout) else layer(x)
        return x


def _target(d_in: int, hidden: int, dropout: float = 0.0) -> nn.Sequential:
    if dropout > 0:
        return Classifier(nn.Linear(d_in, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, CLASSES))
    return nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, CLASSES))


def dropout_noise(batch: int, width: int, p: float, like: Tensor) -> Tensor:
    """Dropout's scaled masks for a batch, `[batch, width]` (`like`'s dtype and device), drawn from
    torch's global generator as `nn.Dropout` draws them on the CPU (Bernoulli(1 - p), divided by
    1 - p): the same numbers from the same generator state (`tests/test_distributed_uncertainty.py`
    checks it bit for bit). On CUDA `nn.Dropout` draws with its own kernel; these are then masks of
    the same law, not the same masks."""
    return torch.empty(batch, width, dtype=like.dtype, device=like.device).bernoulli_(1 - p).div_(1 - p)


def gather_batch(local: Tensor) -> Tensor:
    """The whole step's logits `[K, B, C]` from this process's `local: [K, b, C]` (of its strided
    part of the batch, `shard`), rows back in the batch's order; `local` itself in one process.

    Every process then computes the same function-space entropy. Its gradient reaches this
    process's weights through this process's rows only, so that part's gradient is scaled by the
    number of processes `W` (its value unchanged): DDP's mean over the processes of
    `W * dH/dlocal_r * dlocal_r/dphi` is the whole `dH/dphi`, as in one process. The collective
    runs in the forward only (no collective of ours inside the backward, beside DDP's)."""
    count = distributed.world_size()
    if count == 1:
        return local
    parts = [torch.empty_like(local) for _ in range(count)]
    dist.all_gather(parts, local.detach().contiguous())
    parts[distributed.rank()] = local + (count - 1) * (local - local.detach())  # value local, gradient x W
    return torch.stack(parts, dim=2).flatten(1, 2)  # [K, b, W, C]: row i of process r is the batch's i * W + r


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


@torch.no_grad()
def _member_probs(fn: Callable[[Tensor], Tensor], x: Tensor, chunk: int = 2500) -> Tensor:
    """`fn(x) -> logits [K, B, C]` in chunks of inputs: probabilities `[K, N, C]`."""
    return torch.cat([fn(x[i : i + chunk]).softmax(-1) for i in range(0, len(x), chunk)], dim=1)


def evaluate(
    member_fn: Callable[[Tensor], Tensor], data: Splits, bins: int
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Every metric of one trained model from its members' probabilities (`member_fn: x -> [K, B, C]`),
    and the predictive entropy of each input of each set."""
    sets = {"test": data.x_test, **data.ood}
    probs = {name: _member_probs(member_fn, x) for name, x in sets.items()}
    mean = {name: p.mean(0) for name, p in probs.items()}
    entropy = {name: cal.entropy_of_probs(p) for name, p in mean.items()}
    # the epistemic part of the entropy (zero for one member: no score, no AUROC)
    mutual = {name: cal.mutual_information(p) for name, p in probs.items()}
    bins_ = cal.reliability_bins(mean["test"], data.y_test, bins)
    out: dict[str, Any] = {
        "accuracy": float((mean["test"].argmax(-1) == data.y_test).double().mean()),
        "nll": cal.nll(mean["test"], data.y_test),
        "ece": bins_.ece,
        "reliability": {"counts": bins_.counts, "confidence": bins_.confidence, "accuracy": bins_.accuracy},
        "members": int(probs["test"].shape[0]),
    }
    for name in sets:
        out[f"entropy_{name}"] = float(entropy[name].mean())
        if probs[name].shape[0] > 1:
            out[f"disagreement_{name}"] = cal.mean_pairwise_disagreement(probs[name])
            out[f"mi_{name}"] = float(mutual[name].mean())
    for name in data.ood:
        out[f"auroc_{name}"] = cal.auroc(entropy["test"], entropy[name])
        if probs[name].shape[0] > 1:
            out[f"mi_auroc_{name}"] = cal.auroc(mutual["test"], mutual[name])
    return out, {name: e.numpy() for name, e in entropy.items()}


def _batches(
    data: Splits, cfg: UncertaintyConfig, device: torch.device
) -> Callable[[torch.Generator], tuple[Tensor, Tensor]]:
    def draw(g: torch.Generator) -> tuple[Tensor, Tensor]:
        idx = torch.randint(len(data.y_train), (cfg.batch_size,), generator=g)
        return data.x_train[idx].to(device), data.y_train[idx].to(device)

    return draw


def run_seed(
    cfg: UncertaintyConfig,
    ctx: RunContext,
    seed: int,
    timer: PhaseTimer,
    data: Splits | None = None,
    methods: tuple[str, ...] = METHODS,
) -> tuple[dict[str, Any], dict[str, dict[str, np.ndarray]]]:
    """Train and evaluate `methods` for one seed: their metrics, and their entropies (for the
    figure). `data`: the splits to train and evaluate on (default: `load_splits(cfg, seed)`; the
    tuning script passes a validation split)."""
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise ValueError(f"methods: unknown {sorted(unknown)}; expected some of {METHODS}")
    data = load_splits(cfg, seed) if data is None else data
    d_in, device = data.x_train.shape[1], ctx.device
    draw = _batches(data, cfg, device)
    tc = TrainConfig(
        steps=cfg.steps, lr=cfg.lr, checkpoint_every=cfg.checkpoint_every, log_every=max(1, cfg.steps // 10)
    )
    results: dict[str, Any] = {}
    entropies: dict[str, dict[str, np.ndarray]] = {}

    def fit_net(phase: str, net: nn.Module, k: int, dropout: float = 0.0) -> float:
        trained = ctx.distribute(net)  # DDP in a multi-process run

        def step(_: int, g: torch.Generator) -> tuple[Tensor, dict[str, float]]:
            x, y = draw(g)
            if dropout > 0 and distributed.world_size() > 1:
                # the whole batch's masks, from the global generator (the same state on every
                # process), then this process's rows: one process's draws. One process keeps
                # nn.Dropout's own draw (the same numbers on the CPU, see dropout_noise)
                x, y, noise = ctx.shard(x, y, dropout_noise(x.shape[0], cfg.hidden, dropout, x))
                return F.cross_entropy(trained(x, noise), y), {}
            x, y = ctx.shard(x, y)
            return F.cross_entropy(trained(x), y), {}

        gen = torch.Generator().manual_seed(seed * 1_000_003 + 7919 * k + 17)
        cost = timer.train(phase, lambda: ctx.train(phase, trained, list(net.parameters()), step, tc, generator=gen))
        return float(cost["wall_s"])

    if "single" in methods:
        torch.manual_seed(seed * 1000)
        single = _target(d_in, cfg.hidden).to(device)
        seconds = fit_net(f"s{seed}-single", single, 0)
        single.eval()
        results["single"], entropies["single"] = evaluate(
            lambda x: single(x.to(device)).unsqueeze(0).cpu(), data, cfg.ece_bins
        )
        results["single"].update(trainable_parameters=_params(single), train_seconds=seconds)

    if "mc-dropout" in methods:  # dropout kept on at evaluation, eval_members passes
        torch.manual_seed(seed * 1000 + 1)
        drop = _target(d_in, cfg.hidden, cfg.dropout).to(device)
        seconds = fit_net(f"s{seed}-mc-dropout", drop, 1, cfg.dropout)
        drop.train()
        torch.manual_seed(seed * 1000 + 101)  # the evaluation's dropout masks
        results["mc-dropout"], entropies["mc-dropout"] = evaluate(
            lambda x: torch.stack([drop(x.to(device)) for _ in range(cfg.eval_members)]).cpu(), data, cfg.ece_bins
        )
        drop.eval()
        results["mc-dropout"].update(trainable_parameters=_params(drop), train_seconds=seconds)

    if "deep-ensemble" in methods:  # independent initialisations and batch orders
        members = []
        seconds = 0.0
        for m in range(cfg.ensemble_size):
            torch.manual_seed(seed * 1000 + 10 + m)
            net = _target(d_in, cfg.hidden).to(device)
            seconds += fit_net(f"s{seed}-ensemble-{m}", net, 10 + m)
            members.append(net.eval())
        results["deep-ensemble"], entropies["deep-ensemble"] = evaluate(
            lambda x: torch.stack([net(x.to(device)) for net in members]).cpu(), data, cfg.ece_bins
        )
        results["deep-ensemble"].update(trainable_parameters=sum(_params(n) for n in members), train_seconds=seconds)

    if "hypernet" in methods:  # the implicit posterior, train_members draws per step
        torch.manual_seed(seed * 1000 + 2)
        net = _target(d_in, cfg.hidden)
        # "last": only the output layer is random (a last-layer posterior), the hidden layer a trained point
        generate = None if cfg.hyper_generate == "all" else str(len(net) - 1)
        bayes = BayesianHyperNetwork(
            hn.TargetNetwork(net, generate=generate),
            noise_dim=cfg.noise_dim,
            hidden=cfg.hyper_hidden,
            prior_scale=cfg.prior_scale,
            kl_weight=cfg.kl_weight,
            rank=cfg.hyper_rank,
            entropy_space=cfg.hyper_entropy,
        ).to(device)
        n_data = len(data.y_train)
        objective = ctx.distribute(ELBOLoss(bayes))  # the whole loss in DDP on several processes

        def bayes_step(_: int, g: torch.Generator) -> tuple[Tensor, dict[str, float]]:
            # the batch, then the weight draws from `g`: the same on every process
            x, y = ctx.shard(*draw(g))
            out: tuple[Tensor, dict[str, float]] = objective(x, y, n_data, cfg.train_members, g, gather_batch)
            return out

        phase = f"s{seed}-hypernet"
        gen = torch.Generator().manual_seed(seed * 1_000_003 + 7919 * 2 + 17)
        seconds = timer.train(
            phase,
            lambda: ctx.train(phase, objective, bayes.model.trainable_parameters(), bayes_step, tc, generator=gen),
        )["wall_s"]
        with torch.no_grad():
            weights = bayes.sample_weights(cfg.eval_members, torch.Generator().manual_seed(seed * 1000 + 202))
        results["hypernet"], entropies["hypernet"] = evaluate(
            lambda x: bayes.ensemble_logits(x.to(device), weights).cpu(), data, cfg.ece_bins
        )
        results["hypernet"].update(trainable_parameters=bayes.num_trainable(), train_seconds=seconds)
    return results, entropies


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per method: each seed's metrics, and the mean and sample sd over seeds of every number."""
    out: dict[str, Any] = {}
    for method in runs[0]:
        per_seed = [r[method] for r in runs]
        agg: dict[str, Any] = {"seeds": per_seed}
        for key, value in per_seed[0].items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                vals = [float(r[key]) for r in per_seed]
                agg[key] = statistics.fmean(vals)
                agg[f"{key}_std"] = statistics.stdev(vals) if len(vals) > 1 else 0.0
        agg["trainable_parameters"] = per_seed[0]["trainable_parameters"]
        out[method] = agg
    return out


def paired_gap(runs: list[dict[str, Any]], a: str, b: str, key: str) -> dict[str, float]:
    """`a − b` of metric `key`, seed by seed: mean and sample sd."""
    gaps = [r[a][key] - r[b][key] for r in runs]
    return {"mean": statistics.fmean(gaps), "std": statistics.stdev(gaps) if len(gaps) > 1 else 0.0}


@register(
    "uncertainty",
    "noise-conditioned hypernetwork (implicit posterior) vs single net, MC dropout, deep ensemble: "
    "calibration and OOD detection",
    UncertaintyConfig,
    quick={"data": "digits", "steps": 400, "batch_size": 64, "hidden": 32, "checkpoint_every": 200},
    headline=lambda summary: headline(summary),
    captions={
        "uncertainty-reliability": "Reliability diagrams on the test digits 0-4 (all seeds pooled): accuracy "
        "against mean confidence per bin; the diagonal is perfect calibration, bar shading the share of inputs.",
        "uncertainty-entropy": "Predictive entropy of the mean prediction (first seed) on the test digits 0-4, "
        "the held-out digits 5-9 and the rotated digits 0-4; higher on OOD inputs is what detection uses.",
    },
    prepare=lambda cfg: _prepare(cfg),
    distributed=True,
    global_batch=lambda cfg: cfg.batch_size,
)
def run(cfg: UncertaintyConfig, ctx: RunContext) -> dict[str, Any]:
    timer = PhaseTimer(ctx)
    runs = []
    first: dict[str, dict[str, np.ndarray]] = {}
    for s in range(cfg.seeds):
        seed = ctx.seed + s
        res, entropies = run_seed(cfg, ctx, seed, timer)
        runs.append(res)
        first = first or entropies
        text = ", ".join(
            f"{m} ECE {r['ece']:.4f} AUROC {r['auroc_heldout']:.3f} MI AUROC {r.get('mi_auroc_heldout', 0.5):.3f}"
            for m, r in res.items()
        )
        print(f"seed {seed}: {text}", flush=True)
    models = aggregate(runs)
    gaps = {
        key: paired_gap(runs, "hypernet", "deep-ensemble", key)
        for key in ("accuracy", "nll", "ece", *(f"{s}_{o}" for s in ("auroc", "mi_auroc") for o in OOD_SETS))
    }
    hyper, mc = models["hypernet"], models["mc-dropout"]
    # the bar, on the means over seeds, fixed before any run
    # (the entropy score's; the mutual information's added with that score, the same comparison)
    criteria = {
        f"{s}_{o}_at_least_mc_dropout": hyper[f"{s}_{o}"] >= mc[f"{s}_{o}"]
        for s in ("auroc", "mi_auroc")
        for o in OOD_SETS
    }
    criteria["ece_at_most_mc_dropout"] = hyper["ece"] <= mc["ece"]
    summary = {
        "models": models,
        "gap_hypernet_minus_ensemble": gaps,
        "criteria": criteria,
        "seeds": [ctx.seed + s for s in range(cfg.seeds)],
        "data": cfg.data,
    }
    data = load_splits(cfg, ctx.seed)
    summary["images"] = {
        "train": len(data.y_train),
        "test": len(data.y_test),
        **{k: len(v) for k, v in data.ood.items()},
    }
    _figures(ctx, models, first)
    return summary


def _prepare(cfg: UncertaintyConfig) -> None:
    """Before the run folder exists: the data files are there, and `n_train` fits the images."""
    if cfg.data == "mnist":
        check_mnist("train", cfg.data_dir or None)
        check_mnist("test", cfg.data_dir or None)
    if cfg.n_train:
        load_splits(cfg, 0)  # raises ConfigError naming n_train when there are fewer images


LABELS = {
    "single": "single network",
    "mc-dropout": "MC dropout",
    "deep-ensemble": "deep ensemble",
    "hypernet": "hypernetwork",
}
SET_LABELS = {"test": "test digits 0-4", "heldout": "held-out digits 5-9", "rotated": "rotated digits 0-4"}


def pooled_bins(seeds: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reliability bins pooled over seeds: counts, mean confidence and accuracy per bin (NaN if empty)."""
    counts = np.array([r["reliability"]["counts"] for r in seeds], dtype=float)
    conf = np.nan_to_num(np.array([r["reliability"]["confidence"] for r in seeds], dtype=float))
    acc = np.nan_to_num(np.array([r["reliability"]["accuracy"] for r in seeds], dtype=float))
    n = counts.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return n, (conf * counts).sum(0) / n, (acc * counts).sum(0) / n


def _figures(ctx: RunContext, models: dict[str, Any], entropies: dict[str, dict[str, np.ndarray]]) -> None:
    fig, axes = plt.subplots(1, len(models), figsize=(3.3 * len(models), 3.4), sharey=True)
    for ax, (method, res) in zip(np.atleast_1d(axes), models.items()):
        n, conf, acc = pooled_bins(res["seeds"])
        bins = len(n)
        centres = (np.arange(bins) + 0.5) / bins
        shade = n / max(1.0, n.sum())
        ax.bar(
            centres,
            np.nan_to_num(acc),
            width=1 / bins,
            edgecolor="k",
            linewidth=0.4,
            color=plt.cm.Blues(0.3 + 0.7 * shade / max(shade.max(), 1e-12)),
            label="accuracy",
        )
        ax.plot(conf[n > 0], acc[n > 0], "o", color="tab:red", markersize=3, label="(confidence, accuracy)")
        ax.plot([0, 1], [0, 1], "k--", linewidth=0.8)
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", title=f"{LABELS[method]}\nECE {res['ece']:.4f}")
    np.atleast_1d(axes)[0].set_ylabel("accuracy")
    np.atleast_1d(axes)[0].legend(fontsize=7, loc="upper left")
    ctx.save_figure(fig, "uncertainty-reliability")

    fig, axes = plt.subplots(1, len(entropies), figsize=(3.3 * len(entropies), 3.2), sharey=True)
    top = float(np.log(CLASSES))
    edges = np.linspace(0, top, 31)
    for ax, (method, sets) in zip(np.atleast_1d(axes), entropies.items()):
        for name, values in sets.items():
            ax.hist(values, bins=edges, histtype="step", density=True, label=SET_LABELS[name])
        ax.set(xlabel="predictive entropy (nats)", title=LABELS[method], yscale="log")
    np.atleast_1d(axes)[0].set_ylabel("density")
    np.atleast_1d(axes)[0].legend(fontsize=7)
    ctx.save_figure(fig, "uncertainty-entropy")


def headline(summary: dict[str, Any]) -> Table:
    """Mean ± sd over seeds of every headline metric, parameters and training seconds per method."""
    rows = []
    for method, res in summary["models"].items():
        rows.append(
            [
                LABELS[method],
                *(
                    f"{res[k]:.4f} ± {res[k + '_std']:.4f}" if k in res else "-"
                    for k in (
                        "accuracy",
                        "nll",
                        "ece",
                        "auroc_heldout",
                        "auroc_rotated",
                        "mi_auroc_heldout",
                        "mi_auroc_rotated",
                    )
                ),
                res["trainable_parameters"],
                f"{res['train_seconds']:.1f} ± {res['train_seconds_std']:.1f}",
            ]
        )
    crit = ", ".join(f"{k}: {'yes' if v else 'no'}" for k, v in summary["criteria"].items())
    return Table(
        f"Uncertainty ({summary['data']}, trained on digits 0-4): mean ± sd over seeds {summary['seeds']}",
        [
            "method",
            "accuracy",
            "NLL",
            "ECE",
            "AUROC 5-9",
            "AUROC rotated",
            "MI AUROC 5-9",
            "MI AUROC rotated",
            "trainable parameters",
            "train s",
        ],
        rows,
        note=f"hypernetwork vs MC dropout: {crit}",
    )
