"""`hyperparameter-sweep`: one hypernetwork conditioned on the weight-decay strength (MIP-encoded,
`hypernet.methods.conditional`) against separate trainings at each value of a grid.

The task: an MLP classifier trained on a small subset of MNIST (scikit-learn's digits for
`--quick`), where it overfits without weight decay and underfits with too much, so the validation
loss has an interior minimum over the range. Both arms minimise the same objective, cross-entropy
+ `lambda/2 ||theta||^2`, with the same initial weights (per seed), batches of the same size and
Adam: each separate run at one `lambda` of the grid (log-spaced over `[wd_low, wd_high]`), the
conditioned model at `values_per_step` values drawn log-uniformly each step.

Reported per seed and on the seed-mean curves: validation loss against `lambda` of both (the
conditioned curve also on a fine grid), the `lambda` each picks (the minimiser), their distance in
grid steps (of the log grid), the gap between the curves, the separate runs' variation over the
range, and the training cost of each arm (steps, wall and CPU seconds of the training phases,
checkpoint writes included).

On several processes (`hypernet run hyperparameter-sweep --nproc N`, or torchrun) both arms train
through DDP: every process draws the same batches and values from the phase's generator and keeps
its strided part of each value's batch, DDP averages the gradients, so N processes take one
process's steps (up to float summation order). Each loss is a mean cross-entropy over equal parts
(their mean is the whole batch's) plus the penalty `lambda/2 ||theta||^2`, the same on every
process (its mean is itself). A value's batch of a conditioned step may split unevenly (a batch of 12
images over 4 values, 3 each, on 2 processes): each process's term is weighted by its share of the rows
(`conditional_loss(..., shares)`), so the mean over the processes stays the whole batches' loss.
Evaluation runs alike on every process; rank 0 alone writes.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hypernet.data import MNIST_SIZES, Dataset, check_mnist, load_digits, load_mnist
from hypernet.experiments.harness import shard as weighted_shard
from hypernet.experiments.registry import PhaseTimer, RunContext, register
from hypernet.experiments.settings import Relation, no_folder_with_digits, setting
from hypernet.methods.conditional import (
    ConditionalLoss,
    ConditionalModel,
    HyperparameterRange,
    WeightDecay,
    loss_curve,
    plain_loss,
    weight_norms,
)
from hypernet.report.table import Table
from hypernet.train import TrainConfig

DIGITS_SIZE = 1797


@dataclass
class HyperparameterSweepConfig:
    dataset: Literal["mnist", "digits"] = setting("mnist", "data: MNIST (from data_dir) or scikit-learn's digits")
    data_dir: str = setting(
        "", "folder with the MNIST files (empty: $HYPERNET_DATA or the user cache, downloading)", folder=True
    )
    n_train: int = setting(1000, "training images (few, so that the network overfits without weight decay)", ge=1)
    n_val: int = setting(5000, "validation images (from the training split, disjoint from the training images)", ge=1)
    n_test: int = setting(5000, "test images (MNIST's test split; digits: after the validation images)", ge=1)
    hidden: tuple[int, ...] = setting((256,), "hidden widths of the target MLP", ge=1, min_items=1)
    # chosen before the measured runs, from a pilot with --seed 100 (see the README)
    wd_low: float = setting(1e-4, "smallest weight-decay strength of the range", gt=0)
    wd_high: float = setting(1e-1, "largest weight-decay strength of the range", gt=0)
    grid: int = setting(7, "values of the separate sweep, log-spaced over the range, ends included", ge=2)
    steps: int = setting(4000, "training steps of each separate run", ge=1)
    cond_steps: int = setting(4000, "training steps of the conditioned model", ge=1)
    values_per_step: int = setting(1, "weight-decay values drawn per step of the conditioned model", ge=1)
    batch_size: int = setting(64, "images per step (split evenly over the values of a conditioned step)", ge=1)
    # (): the MIP encoding [cos, sin] of the value mapped linearly to the weights, theta0 + A enc(z); a
    # pilot (seed 100) measured hidden (8,) at 0.48x the separate runs' CPU time, (): 0.35x, same picks
    hyper_hidden: tuple[int, ...] = setting(
        (), "hidden widths of the hypernetwork (empty: linear in the encoding)", ge=1
    )
    lr: float = setting(1e-3, "Adam learning rate (both arms)", gt=0)
    seeds: int = setting(3, "seeds (run seed + 0, 1, ...): initial weights and batches", ge=1)
    curve_points: int = setting(61, "points of the conditioned model's curve over the range", ge=2)
    checkpoint_every: int = setting(1000, "steps between checkpoints", ge=1)

    RELATIONS: ClassVar[tuple[Relation, ...]] = (
        no_folder_with_digits("dataset"),
        Relation(("wd_low", "wd_high"), lambda c: c.wd_low < c.wd_high, "wd_low < wd_high"),
        Relation(
            ("batch_size", "values_per_step"),
            lambda c: c.batch_size % c.values_per_step == 0,
            "batch_size a multiple of values_per_step",
        ),
        Relation(
            ("dataset", "n_train", "n_val", "n_test"),
            lambda c: (
                c.n_train + c.n_val + c.n_test <= DIGITS_SIZE
                if c.dataset == "digits"
                else c.n_train + c.n_val <= MNIST_SIZES["train"] and c.n_test <= MNIST_SIZES["test"]
            ),
            "n_train + n_val + n_test <= 1,797 (digits), or n_train + n_val <= 60,000 and n_test <= 10,000 (mnist)",
        ),
    )


class FusedAdam(TrainConfig):
    """Adam with PyTorch's fused kernel (one pass over each tensor), the same for both arms."""

    def make_optimizer(self, params: Any) -> torch.optim.Optimizer:
        return torch.optim.Adam(params, lr=self.lr, fused=True)


@dataclass
class Splits:
    train: Dataset
    val: Dataset
    test: Dataset


def load_splits(cfg: HyperparameterSweepConfig, seed: int) -> Splits:
    """Disjoint training and validation images from the training split (digits: from all 1,797),
    and test images; the subsets drawn with `seed`."""
    g = torch.Generator().manual_seed(seed)
    if cfg.dataset == "digits":
        data = load_digits()
        order = torch.randperm(len(data), generator=g)
        a, b = cfg.n_train, cfg.n_train + cfg.n_val
        return Splits(data.subset(order[:a]), data.subset(order[a:b]), data.subset(order[b : b + cfg.n_test]))
    train = load_mnist("train", cfg.data_dir or None)
    test = load_mnist("test", cfg.data_dir or None)
    order = torch.randperm(len(train), generator=g)
    return Splits(
        train.subset(order[: cfg.n_train]),
        train.subset(order[cfg.n_train : cfg.n_train + cfg.n_val]),
        test.subset(torch.randperm(len(test), generator=g)[: cfg.n_test]),
    )


def mlp(d_in: int, hidden: tuple[int, ...], d_out: int = 10) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(d_in, width), nn.ReLU()]
        d_in = width
    return nn.Sequential(*layers, nn.Linear(d_in, d_out))


@torch.no_grad()
def evaluate(module: nn.Module, data: Dataset) -> tuple[float, float]:
    """Cross-entropy and accuracy of `module` on `data`."""
    logits = module(data.x)
    return float(F.cross_entropy(logits, data.y)), float((logits.argmax(-1) == data.y).double().mean())


def picks(
    hp: HyperparameterRange, grid: Tensor, separate: list[float], fine: Tensor, conditioned: list[float]
) -> dict[str, Any]:
    """What each arm picks and how far apart: the separate grid's minimiser, the conditioned fine
    curve's minimiser, their distance in grid steps of the unit (log) scale, the separate runs'
    loss at the grid value nearest the conditioned pick (its regret), and the separate variation."""
    n = len(separate)
    i_sep = int(np.argmin(separate))
    j_cond = int(np.argmin(conditioned))
    z_sep, z_cond = float(hp.to_unit(grid[i_sep])), float(hp.to_unit(fine[j_cond]))
    nearest = int(round(z_cond * (n - 1)))
    return {
        "separate_best": float(grid[i_sep]),
        "separate_best_index": i_sep,
        "separate_min_loss": float(separate[i_sep]),
        "conditioned_best": float(fine[j_cond]),
        "conditioned_min_loss": float(conditioned[j_cond]),
        "distance_grid_steps": abs(z_cond - z_sep) * (n - 1),
        "regret": float(separate[nearest] - separate[i_sep]),
        "separate_variation": (max(separate) - min(separate)) / min(separate),
    }


def gaps(separate: list[float], conditioned_on_grid: list[float]) -> dict[str, float]:
    """`conditioned - separate` on the grid: mean absolute, largest absolute, and the mean (signed)."""
    diff = [c - s for s, c in zip(separate, conditioned_on_grid)]
    return {
        "mean_abs_gap": statistics.fmean(abs(d) for d in diff),
        "max_abs_gap": max(abs(d) for d in diff),
        "mean_gap": statistics.fmean(diff),
    }


def _timed_train(
    ctx: RunContext, timer: PhaseTimer, name: str, model: nn.Module, step_fn: Any, config: TrainConfig, seed: int
) -> dict[str, Any]:
    """Train one phase; its cost (`wall_s`, `cpu_s`, `partial`, from the run folder on a resume) and steps."""
    params = [p for p in model.parameters() if p.requires_grad]
    gen = torch.Generator().manual_seed(seed)
    cost = timer.train(name, lambda: ctx.train(name, model, params, step_fn, config, generator=gen))
    return {**cost, "steps": config.steps}


def _config(cfg: HyperparameterSweepConfig, steps: int) -> TrainConfig:
    return FusedAdam(
        steps=steps,
        lr=cfg.lr,
        checkpoint_every=cfg.checkpoint_every,
        log_every=max(1, steps // 20),
        eval_every=steps + 1,  # scored once, after training
    )


def run_seed(
    cfg: HyperparameterSweepConfig, ctx: RunContext, data: Splits, seed: int, timer: PhaseTimer
) -> dict[str, Any]:
    """Both arms for one seed: the separate runs over the grid, then the conditioned model."""
    hp = HyperparameterRange("weight_decay", cfg.wd_low, cfg.wd_high)
    grid = hp.grid(cfg.grid)
    fine = hp.grid(cfg.curve_points)
    objective = WeightDecay()
    x, y = data.train.x, data.train.y
    d_in = int(x.shape[1])
    b = cfg.batch_size

    sep_val, sep_test, sep_acc, sep_norm, sep_cost = [], [], [], [], []
    for i, value in enumerate(grid.tolist()):
        torch.manual_seed(seed)  # the same initial weights for every value (and the conditioned theta0)
        module = mlp(d_in, cfg.hidden)
        trained = ctx.distribute(module)  # DDP in a multi-process run

        def step(_s: int, g: torch.Generator, trained: nn.Module = trained, value: float = value) -> Any:
            idx = torch.randint(len(y), (b,), generator=g)
            xs, ys = ctx.shard(x[idx], y[idx])  # this process's part of the batch
            return plain_loss(trained, objective, xs, ys, value), {}

        cost = _timed_train(ctx, timer, f"separate-s{seed}-{i}", trained, step, _config(cfg, cfg.steps), seed)
        val_loss, val_acc = evaluate(module, data.val)
        sep_val.append(val_loss)
        sep_acc.append(val_acc)
        sep_test.append(evaluate(module, data.test)[0])
        sep_norm.append(float(torch.cat([p.detach().reshape(-1) for p in module.parameters()]).double().norm()))
        sep_cost.append(cost)

    torch.manual_seed(seed)
    model = ConditionalModel(mlp(d_in, cfg.hidden), hp, hidden=cfg.hyper_hidden)
    k, per = cfg.values_per_step, cfg.batch_size // cfg.values_per_step
    cond_loss = ctx.distribute(ConditionalLoss(model))  # the whole objective in DDP on several processes

    def cond_step(_s: int, g: torch.Generator) -> Any:
        values = hp.sample(k, g)
        batches, shares = [], []
        for _ in range(k):
            idx = torch.randint(len(y), (per,), generator=g)
            # this process's part of each value's batch, and its share when the batch does not split evenly
            (xs, ys), share = weighted_shard(x[idx], y[idx])
            batches.append((xs, ys))
            shares.append(share)
        return cond_loss(objective, batches, values, None if all(s == 1 for s in shares) else shares), {}

    cond_cost = _timed_train(
        ctx, timer, f"conditioned-s{seed}", cond_loss, cond_step, _config(cfg, cfg.cond_steps), seed
    )
    model.eval()
    cond_grid = loss_curve(model, grid, data.val.x, data.val.y).tolist()
    cond_fine = loss_curve(model, fine, data.val.x, data.val.y).tolist()
    chosen = picks(hp, grid, sep_val, fine, cond_fine)
    with torch.no_grad():
        cond_test_at_pick = evaluate(model.materialize(chosen["conditioned_best"]), data.test)[0]
    sep_wall, sep_cpu = sum(c["wall_s"] for c in sep_cost), sum(c["cpu_s"] for c in sep_cost)
    return {
        "seed": seed,
        "separate": {
            "val_loss": sep_val,
            "val_acc": sep_acc,
            "test_loss": sep_test,
            "weight_norm": sep_norm,
            "cost": {
                "steps": cfg.steps * cfg.grid,
                "wall_s": sep_wall,
                "cpu_s": sep_cpu,
                "partial": any(c["partial"] for c in sep_cost),
            },
            "trainable_parameters_each": sum(p.numel() for p in module.parameters()),
        },
        "conditioned": {
            "val_loss_grid": cond_grid,
            "val_loss_fine": cond_fine,
            "weight_norm_grid": weight_norms(model, grid).tolist(),
            "weight_norm_fine": weight_norms(model, fine).tolist(),
            "test_loss_at_pick": cond_test_at_pick,
            "cost": {
                "steps": cfg.cond_steps,
                "wall_s": cond_cost["wall_s"],
                "cpu_s": cond_cost["cpu_s"],
                "partial": cond_cost["partial"],
            },
            "trainable_parameters": sum(p.numel() for p in model.trainable_parameters()),
        },
        "separate_test_loss_at_pick": sep_test[chosen["separate_best_index"]],
        "picks": chosen,
        "gaps": gaps(sep_val, cond_grid),
        "cost_ratio": {
            "steps": cfg.cond_steps / (cfg.steps * cfg.grid),
            "wall": cond_cost["wall_s"] / sep_wall,
            "cpu": cond_cost["cpu_s"] / sep_cpu,
        },
    }


def _prepare(cfg: HyperparameterSweepConfig) -> None:
    if cfg.dataset == "mnist":
        check_mnist("train", cfg.data_dir or None)
        check_mnist("test", cfg.data_dir or None)


@register(
    "hyperparameter-sweep",
    "one weight-decay-conditioned hypernetwork vs separate trainings over a grid (validation loss, cost)",
    HyperparameterSweepConfig,
    quick={
        "dataset": "digits",
        "n_train": 300,
        "n_val": 700,
        "n_test": 700,
        "hidden": (32,),
        "steps": 600,
        "cond_steps": 600,
        "seeds": 1,
        "curve_points": 25,
        "checkpoint_every": 300,
    },
    headline=lambda summary: headline(summary),
    captions={
        "hyperparameter-sweep": "Left: validation loss against the weight-decay strength, separate runs at each grid "
        "value (points) and the one conditioned model (line), mean over seeds (band: min-max); dotted lines: "
        "the value each picks. Middle: the weight norm of each. Right: total training cost of each arm."
    },
    prepare=_prepare,
    distributed=True,
    global_batch=lambda cfg: cfg.batch_size,  # a separate run's batch: split evenly
    # a value's batch of a conditioned step: split as it comes, each part weighted by its share
    smallest_batch=lambda cfg: cfg.batch_size // cfg.values_per_step,
)
def run(cfg: HyperparameterSweepConfig, ctx: RunContext) -> dict[str, Any]:
    data = load_splits(cfg, ctx.seed)
    timer = PhaseTimer(ctx)
    seeds = [ctx.seed + k for k in range(cfg.seeds)]
    per_seed = [run_seed(cfg, ctx, data, s, timer) for s in seeds]
    hp = HyperparameterRange("weight_decay", cfg.wd_low, cfg.wd_high)
    grid, fine = hp.grid(cfg.grid), hp.grid(cfg.curve_points)
    mean_sep = np.mean([r["separate"]["val_loss"] for r in per_seed], 0).tolist()
    mean_cond_fine = np.mean([r["conditioned"]["val_loss_fine"] for r in per_seed], 0).tolist()
    mean_cond_grid = np.mean([r["conditioned"]["val_loss_grid"] for r in per_seed], 0).tolist()
    sep_cost = {k: sum(r["separate"]["cost"][k] for r in per_seed) for k in ("steps", "wall_s", "cpu_s")}
    cond_cost = {k: sum(r["conditioned"]["cost"][k] for r in per_seed) for k in ("steps", "wall_s", "cpu_s")}
    ratio = {
        "steps": cond_cost["steps"] / sep_cost["steps"],
        "wall": cond_cost["wall_s"] / sep_cost["wall_s"],
        "cpu": cond_cost["cpu_s"] / sep_cost["cpu_s"],
    }
    mean_picks = picks(hp, grid, mean_sep, fine, mean_cond_fine)
    within = [r["picks"]["distance_grid_steps"] <= 1.0 + 1e-9 for r in per_seed]
    criteria = {
        "variation_at_least_10pct": all(r["picks"]["separate_variation"] >= 0.10 for r in per_seed),
        "within_one_grid_step_every_seed": all(within),
        "within_one_grid_step_mean_curve": mean_picks["distance_grid_steps"] <= 1.0 + 1e-9,
        "under_half_cost_steps": ratio["steps"] < 0.5,
        "under_half_cost_wall": ratio["wall"] < 0.5,
    }
    summary = {
        "hyperparameter": "weight_decay",
        "grid": grid.tolist(),
        "fine": fine.tolist(),
        "seeds": seeds,
        "per_seed": per_seed,
        "mean": {
            "separate_val_loss": mean_sep,
            "conditioned_val_loss_grid": mean_cond_grid,
            "conditioned_val_loss_fine": mean_cond_fine,
            "picks": mean_picks,
            "gaps": gaps(mean_sep, mean_cond_grid),
        },
        "cost": {"separate": sep_cost, "conditioned": cond_cost, "ratio": ratio},
        "partial_timings": any(
            r["separate"]["cost"]["partial"] or r["conditioned"]["cost"]["partial"] for r in per_seed
        ),
        "criteria": criteria,
        "reached": all(criteria.values()),
    }
    _figure(ctx, summary)
    return summary


def _figure(ctx: RunContext, s: dict[str, Any]) -> None:
    grid, fine = np.array(s["grid"]), np.array(s["fine"])
    sep = np.array([r["separate"]["val_loss"] for r in s["per_seed"]])
    cond = np.array([r["conditioned"]["val_loss_fine"] for r in s["per_seed"]])
    fig, (ax, ax_norm, ax_cost) = plt.subplots(1, 3, figsize=(14, 3.8), gridspec_kw={"width_ratios": [2, 1.4, 1]})
    ax.fill_between(fine, cond.min(0), cond.max(0), color="tab:blue", alpha=0.2)
    ax.plot(fine, cond.mean(0), color="tab:blue", label="one conditioned hypernetwork")
    ax.errorbar(
        grid,
        sep.mean(0),
        yerr=[sep.mean(0) - sep.min(0), sep.max(0) - sep.mean(0)],
        color="tab:red",
        marker="o",
        ls="--",
        capsize=3,
        label=f"{len(grid)} separate trainings",
    )
    p = s["mean"]["picks"]
    ax.axvline(p["separate_best"], color="tab:red", ls=":")
    ax.axvline(p["conditioned_best"], color="tab:blue", ls=":")
    ax.set(xscale="log", xlabel="weight decay", ylabel="validation cross-entropy", title="Validation loss")
    ax.legend(fontsize=8)
    sep_norm = np.array([r["separate"]["weight_norm"] for r in s["per_seed"]]).mean(0)
    cond_norm = np.array([r["conditioned"]["weight_norm_fine"] for r in s["per_seed"]]).mean(0)
    ax_norm.plot(fine, cond_norm, color="tab:blue", label="conditioned")
    ax_norm.plot(grid, sep_norm, "o--", color="tab:red", label="separate")
    ax_norm.set(xscale="log", xlabel="weight decay", ylabel="||theta||", title="Weight norm")
    ax_norm.legend(fontsize=8)
    c = s["cost"]
    bars = ax_cost.bar(["separate", "conditioned"], [c["separate"]["wall_s"], c["conditioned"]["wall_s"]])
    for bar, arm in zip(bars, ("separate", "conditioned")):
        ax_cost.annotate(
            f"{c[arm]['steps']:,} steps",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
        )
    ax_cost.set(ylabel="training wall time, s (all seeds)", title=f"Cost (wall ratio {c['ratio']['wall']:.2f})")
    ctx.save_figure(fig, "hyperparameter-sweep")


def headline(summary: dict[str, Any]) -> Table:
    """Per seed and on the seed-mean curves: each arm's pick, their distance, the gap, the cost."""
    rows = []
    for r in summary["per_seed"]:
        p, g = r["picks"], r["gaps"]
        rows.append(
            [
                str(r["seed"]),
                p["separate_best"],
                p["conditioned_best"],
                p["distance_grid_steps"],
                p["separate_min_loss"],
                p["conditioned_min_loss"],
                g["mean_abs_gap"],
                p["separate_variation"],
                r["cost_ratio"]["wall"],
            ]
        )
    m = summary["mean"]
    rows.append(
        [
            "mean curve",
            m["picks"]["separate_best"],
            m["picks"]["conditioned_best"],
            m["picks"]["distance_grid_steps"],
            m["picks"]["separate_min_loss"],
            m["picks"]["conditioned_min_loss"],
            m["gaps"]["mean_abs_gap"],
            m["picks"]["separate_variation"],
            summary["cost"]["ratio"]["wall"],
        ]
    )
    c = summary["cost"]
    return Table(
        "Weight decay picked by one conditioned hypernetwork vs separate trainings (validation cross-entropy)",
        [
            "seed",
            "separate best",
            "conditioned best",
            "distance (grid steps)",
            "separate min loss",
            "conditioned min loss",
            "mean |gap|",
            "separate variation",
            "wall cost ratio",
        ],
        rows,
        note=f"total cost: separate {c['separate']['steps']:,} steps, {c['separate']['wall_s']:.0f} s; conditioned "
        f"{c['conditioned']['steps']:,} steps, {c['conditioned']['wall_s']:.0f} s; criteria reached: "
        f"{summary['reached']}",
    )
