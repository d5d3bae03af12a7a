"""`mip-ablation`: does Magnitude Invariant Parametrization (Ortiz, Guttag, Dalca, ICLR 2024) make
hypernetworks train faster? Four variants of the same hypernetwork -- `standard`, MIP's input
encoding only, its residual output only, and full `mip` -- on three tasks (see `mip_tasks`), three
seeds, one axis at a time around a default (as the paper does).

Axes (around the default: ReLU, no normalisation, D = 1, all-at-once MLP design, Adam):
activation, normalisation inside the hypernetwork, input dimension D, design, optimizer. The
regression task sweeps every axis; the two MNIST tasks the default and the optimizer axis.

The target loss of each task is a config value fixed before the runs: 1.1 x the final held-out loss
of the standard hypernetwork in a pilot run of the default configuration with a seed outside the
measured ones (`--seed 100 --set seeds=1 --set axes=default`; the pilot's `suggested_targets`). Steps to
target: the first evaluation at which the held-out loss is at or below it.

On several processes (`--nproc N`, or torchrun) each hypernetwork trains through DDP: every process
draws the whole step, keeps its part of each condition's samples (`mip_tasks.samples`; the
samples per condition must split evenly, `global_batch`), and DDP averages the gradients, so N
processes take the steps of one. Evaluation runs on every process alike (the same weights), so
all stop together on a divergence; rank 0 alone writes files. The runs have their own loop (no
checkpoints, so no `--resume` mid-run), as in one process. N processes differ from one by float
rounding only, but the standard hypernetwork's regression amplifies rounding: in float32 its
final losses move by 1e-2 to 1e-1 when one process's initial weights move by 1e-7 (MIP's by under
1e-4), and so does a run on 2 processes (compare such runs in float64, as the tests do).
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import Tensor, nn

import hypernet as hn
from hypernet.data import MNIST_SIZES, check_mnist, load_mnist
from hypernet.data.splits import Dataset
from hypernet.experiments.mip_tasks import FunctionRegression, LossConditional, RotationConditioned
from hypernet.experiments.registry import RunContext, register
from hypernet.experiments.settings import Relation, setting
from hypernet.hypernetworks.base import HyperNetwork
from hypernet.report.table import Table
from hypernet.train import distributed
from hypernet.train.atomic import atomic_write

TASKS = ("regression", "loss-conditional", "rotation-conditioned")
MNIST_TASKS = ("loss-conditional", "rotation-conditioned")
VARIANTS = ("standard", "encoding", "residual", "mip")
VARIANT_NAMES = {"standard": "standard", "encoding": "encoding only", "residual": "residual only", "mip": "mip"}
DEFAULT = {"activation": "relu", "norm": "none", "input_dim": 1, "design": "mlp", "optimizer": "adam"}
AXES: dict[str, tuple[Any, ...]] = {
    "activation": ("relu", "leaky_relu", "gelu", "tanh"),
    "norm": ("none", "batch", "layer"),
    "input_dim": (1, 2, 4, 8),
    "design": ("mlp", "chunked", "layerwise", "lowrank"),
    "optimizer": ("adam", "sgd"),
}
MNIST_AXES = ("optimizer",)


@dataclass
class MipAblationConfig:
    tasks: tuple[str, ...] = setting(TASKS, "tasks to run", min_items=1, choices=TASKS)
    axes: tuple[str, ...] = setting(
        ("default", *AXES),
        "axes to sweep one at a time ('default' alone: the default only)",
        min_items=1,
        choices=("default", *AXES),
    )
    variants: tuple[str, ...] = setting(VARIANTS, "hypernetwork variants", min_items=1, choices=VARIANTS)
    seeds: int = setting(3, "seeds per configuration (run seed + 0, 1, ...)", ge=1)
    regression_steps: int = setting(800, "training steps on the regression task", ge=1)
    mnist_steps: int = setting(800, "training steps on the MNIST tasks", ge=1)
    eval_every: int = setting(25, "steps between held-out evaluations", ge=1)
    adam_lr: float = setting(1e-3, "Adam learning rate", gt=0)
    sgd_lr: float = setting(1e-2, "SGD learning rate (momentum 0.9)", gt=0)
    hyper_hidden: tuple[int, ...] = setting((64, 64), "hidden widths of the hypernetwork", ge=1, min_items=1)
    regression_groups: int = setting(16, "functions per regression step", ge=2)
    regression_points: int = setting(32, "points per function per regression step", ge=1)
    mnist_groups: int = setting(4, "values of gamma per MNIST step (one generated CNN each)", ge=2)
    mnist_group_size: int = setting(16, "images per gamma per MNIST step", ge=1)
    n_train: int = setting(10000, "MNIST training images (from train_split)", ge=1)
    n_eval: int = setting(1000, "held-out MNIST images (from the test split)", ge=1)
    train_split: Literal["train", "test"] = setting(
        "train", "MNIST split of the training images ('test': both disjoint parts of the test split)"
    )
    data_dir: str = setting(
        "", "folder with the MNIST files (empty: $HYPERNET_DATA or the user cache, downloading)", folder=True
    )
    target_regression: float = setting(0.004, "target held-out MSE of the regression task", gt=0)
    target_loss_conditional: float = setting(1.46, "target held-out loss of the loss-conditional task", gt=0)
    target_rotation_conditioned: float = setting(1.526, "target held-out loss of the rotation task", gt=0)

    RELATIONS: ClassVar[tuple[Relation, ...]] = (
        Relation(
            ("n_train", "n_eval", "train_split"),
            lambda c: (
                (c.n_train + c.n_eval if c.train_split == "test" else c.n_eval) <= MNIST_SIZES["test"]
                and (c.train_split == "test" or c.n_train <= MNIST_SIZES["train"])
            ),
            "n_eval <= 10,000 and n_train <= 60,000 (train_split=train), or n_train + n_eval <= 10,000 "
            "(train_split=test)",
        ),
    )


@dataclass(frozen=True)
class Setup:
    """One configuration of the axes."""

    activation: str = "relu"
    norm: str = "none"
    input_dim: int = 1
    design: str = "mlp"
    optimizer: str = "adam"

    def label(self) -> str:
        changed = [f"{k}={getattr(self, k)}" for k, v in DEFAULT.items() if getattr(self, k) != v]
        return ", ".join(changed) or "default"


def setups(axes: tuple[str, ...], task: str) -> list[tuple[str, Setup]]:
    """`(axis, setup)` for the default and every value of every requested axis the task sweeps."""
    out: list[tuple[str, Setup]] = [("default", Setup())]
    for axis in axes:
        if axis == "default" or (task in MNIST_TASKS and axis not in MNIST_AXES):
            continue
        for value in AXES[axis]:
            s = Setup(**{axis: value})
            if s != Setup():
                out.append((axis, s))
    return out


def build_hypernetwork(
    variant: str, setup: Setup, spec: hn.ParamSpec, hidden: tuple[int, ...], theta0: torch.Tensor
) -> HyperNetwork:
    """The hypernetwork of `variant` (standard | encoding | residual | mip) for `setup`.

    The low-rank design always outputs `W0 + U V^T` (residual by construction): its `standard` is
    the residual-only variant and its `encoding` the full `mip`.
    """
    param = "mip" if variant in ("encoding", "mip") else "standard"
    residual = variant in ("residual", "mip")
    common: dict[str, Any] = {
        "hidden": hidden,
        "activation": setup.activation,
        "parametrization": param,
        "norm": None if setup.norm == "none" else setup.norm,
    }
    D = setup.input_dim
    if setup.design == "lowrank":
        return hn.LowRankHyperNetwork(D, spec, rank=4, theta0=theta0, **common)
    common["residual"] = residual
    if residual:
        common["theta0"] = theta0
    if setup.design == "mlp":
        return hn.MLPHyperNetwork(D, spec, **common)
    if setup.design == "chunked":
        return hn.ChunkedHyperNetwork(D, spec, chunk_size=256, **common)
    if setup.design == "layerwise":
        return hn.LayerwiseHyperNetwork(D, spec, **common)
    raise ValueError(f"design: unknown {setup.design!r}")


def _make_task(name: str, cfg: MipAblationConfig, setup: Setup, data: tuple[Dataset, Dataset] | None) -> Any:
    if name == "regression":
        return FunctionRegression(setup.input_dim, cfg.regression_groups, cfg.regression_points)
    assert data is not None
    cls = LossConditional if name == "loss-conditional" else RotationConditioned
    return cls(data[0], data[1], cfg.mnist_groups, cfg.mnist_group_size)


class TrainLoss(nn.Module):
    """`task.train_loss` of `hyper` as a module's forward, so that DDP wraps it (its parameters are
    the hypernetwork's; the target's weights are all generated)."""

    def __init__(self, task: Any, hyper: HyperNetwork, target: hn.TargetNetwork) -> None:
        super().__init__()
        self.task, self.hyper, self.target = task, hyper, target

    def forward(self, g: torch.Generator) -> Tensor:
        loss: Tensor = self.task.train_loss(self.hyper, self.target, g)
        return loss


def _fit(
    ctx: RunContext, task: Any, variant: str, setup: Setup, cfg: MipAblationConfig, steps: int, seed: int
) -> dict[str, Any]:
    """Train one hypernetwork; the held-out loss every `eval_every` steps (NaN from a divergence on)."""
    torch.manual_seed(seed)
    target = hn.TargetNetwork(task.make_target())
    hyper = build_hypernetwork(variant, setup, target.spec, cfg.hyper_hidden, target.initial_weights())
    trained = ctx.distribute(TrainLoss(task, hyper, target))  # DDP in a multi-process run
    params = [p for p in hyper.parameters() if p.requires_grad]
    if setup.optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(params, lr=cfg.sgd_lr, momentum=0.9)
    else:
        opt = torch.optim.Adam(params, lr=cfg.adam_lr)
    g = torch.Generator().manual_seed(seed)
    curve_steps, curve = [], []

    def evaluate(step: int) -> None:
        hyper.eval()
        curve_steps.append(step)
        curve.append(task.eval_loss(hyper, target))
        hyper.train()

    evaluate(0)
    diverged = False
    for step in range(1, steps + 1):
        loss = trained(g)
        # this process's part may stay finite while another's does not: the mean decides for all
        if not torch.isfinite(distributed.mean_across(loss.detach().double().reshape(1))).all():
            diverged = True
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % cfg.eval_every == 0 or step == steps:
            evaluate(step)
            if not math.isfinite(curve[-1]):
                diverged = True
                break
    if diverged:  # the rest of the curve is undefined
        while curve_steps[-1] < steps:
            nxt = min(steps, (curve_steps[-1] // cfg.eval_every + 1) * cfg.eval_every)
            curve_steps.append(nxt)
            curve.append(float("nan"))
    return {"steps": curve_steps, "loss": curve, "diverged": diverged, "parameters": sum(p.numel() for p in params)}


def steps_to(curve_steps: list[int], curve: list[float], target: float) -> int | None:
    """The first evaluated step whose loss is at or below `target`, None if never."""
    for s, v in zip(curve_steps, curve):
        if math.isfinite(v) and v <= target:
            return s
    return None


def _median_steps(values: list[int | None]) -> float:
    """Median steps to target over seeds, a seed that never reached it counting as infinity."""
    return float(statistics.median([math.inf if v is None else float(v) for v in values]))


def _speedup(std: float, mip: float, steps: int) -> tuple[float | None, str]:
    """MIP's speed-up `std / mip` in median steps to target, and how to read it."""
    if math.isinf(std) and math.isinf(mip):
        return None, "neither reaches the target"
    if mip == 0:
        return None, "mip starts at or below the target" + (" (so does standard)" if std == 0 else "")
    if math.isinf(std):
        return steps / mip, "standard does not reach the target: a lower bound"
    if math.isinf(mip):
        return std / steps, "mip does not reach the target: an upper bound"
    return std / mip, ""


def _geo_mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v) and v > 0]
    if len(finite) < len(values):
        return float("nan")
    return float(math.exp(sum(math.log(v) for v in finite) / len(finite)))


def _load_data(cfg: MipAblationConfig, seed: int) -> tuple[Dataset, Dataset]:
    test = load_mnist("test", cfg.data_dir or None)
    g = torch.Generator().manual_seed(seed)
    if cfg.train_split == "test":
        order = torch.randperm(len(test), generator=g)
        return test.subset(order[: cfg.n_train]), test.subset(order[cfg.n_train : cfg.n_train + cfg.n_eval])
    train = load_mnist("train", cfg.data_dir or None)
    return (
        train.subset(torch.randperm(len(train), generator=g)[: cfg.n_train]),
        test.subset(torch.randperm(len(test), generator=g)[: cfg.n_eval]),
    )


def _prepare(cfg: MipAblationConfig) -> None:
    if any(t in MNIST_TASKS for t in cfg.tasks):
        check_mnist("test", cfg.data_dir or None)
        if cfg.train_split == "train":
            check_mnist("train", cfg.data_dir or None)


def _samples_per_condition(cfg: MipAblationConfig) -> int:
    """What every process takes an equal part of: each condition's samples (a function's points, a
    gamma's images); with both kinds of task, their greatest common divisor (a process count splits
    both evenly exactly when it divides it)."""
    counts = [cfg.regression_points if t == "regression" else cfg.mnist_group_size for t in cfg.tasks]
    return math.gcd(*counts)


def _target_of(cfg: MipAblationConfig, task: str) -> float:
    return float(getattr(cfg, "target_" + task.replace("-", "_")))


@register(
    "mip-ablation",
    "MIP's input encoding and residual output, alone and together, against a standard hypernetwork",
    MipAblationConfig,
    quick={
        "axes": ("default",),
        "variants": ("standard", "mip"),
        "regression_steps": 300,
        "mnist_steps": 200,
        "eval_every": 10,
        "n_train": 2000,
        "n_eval": 300,
        "train_split": "test",
        "target_regression": 0.0326,
        "target_loss_conditional": 2.33,
        "target_rotation_conditioned": 2.57,
    },
    headline=lambda summary: headline(summary),
    captions={},
    prepare=_prepare,
    distributed=True,
    global_batch=lambda cfg: _samples_per_condition(cfg),
    batch_setting="regression_points / mnist_group_size",
)
def run(cfg: MipAblationConfig, ctx: RunContext) -> dict[str, Any]:
    data = _load_data(cfg, ctx.seed) if any(t in MNIST_TASKS for t in cfg.tasks) else None
    seeds = [ctx.seed + k for k in range(cfg.seeds)]
    runs: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    for task_name in cfg.tasks:
        steps = cfg.regression_steps if task_name == "regression" else cfg.mnist_steps
        target_loss = _target_of(cfg, task_name)
        for axis, setup in setups(cfg.axes, task_name):
            label = setup.label()
            key = f"{task_name} | {label}"
            if key in runs:
                continue
            task = _make_task(task_name, cfg, setup, data)
            per_variant: dict[str, Any] = {}
            for variant in cfg.variants:
                fits = [_fit(ctx, task, variant, setup, cfg, steps, s) for s in seeds]
                reach = [steps_to(f["steps"], f["loss"], target_loss) for f in fits]
                finals = [f["loss"][-1] for f in fits]
                per_variant[variant] = {
                    "steps_to_target": reach,
                    "median_steps_to_target": _median_steps(reach),
                    "final_loss": finals,
                    "final_loss_geomean": _geo_mean(finals),
                    "diverged": sum(f["diverged"] for f in fits),
                    "parameters": fits[0]["parameters"],
                    "curves": {"steps": fits[0]["steps"], "loss": [f["loss"] for f in fits]},
                }
                if ctx.progress:
                    print(
                        f"{key} | {variant}: steps to {target_loss:g} {reach}, final {[round(v, 4) for v in finals]}",
                        flush=True,
                    )
            runs[key] = {
                "task": task_name,
                "axis": axis,
                "setup": setup.__dict__,
                "label": label,
                "variants": per_variant,
            }
            if "standard" in per_variant and "mip" in per_variant:
                std, mip = per_variant["standard"], per_variant["mip"]
                speed, note = _speedup(std["median_steps_to_target"], mip["median_steps_to_target"], steps)
                final_ratio = std["final_loss_geomean"] / mip["final_loss_geomean"]
                rows.append(
                    {
                        "task": task_name,
                        "axis": axis,
                        "configuration": label,
                        "speedup": speed,
                        "speedup_note": note,
                        "final_loss_ratio": final_ratio,
                        "mip_helps": (speed is not None and speed > 1.0) or (speed is None and final_ratio > 1.0),
                    }
                )
    curves = {k: {v: r["curves"] for v, r in run_["variants"].items()} for k, run_ in runs.items()}
    if distributed.is_main():
        atomic_write(ctx.out / "curves.json", lambda tmp: tmp.write_text(json.dumps(curves)))
    for run_ in runs.values():
        for r in run_["variants"].values():
            del r["curves"]
    targets = {t: _target_of(cfg, t) for t in cfg.tasks}
    _figures(ctx, runs, curves, targets)
    suggested = {}
    for t in cfg.tasks:
        std = runs.get(f"{t} | default", {}).get("variants", {}).get("standard")
        if std is not None:
            suggested[t] = round(1.1 * statistics.median(std["final_loss"]), 4)
    return {
        "targets": targets,
        "seeds": seeds,
        "steps": {"regression": cfg.regression_steps, "mnist": cfg.mnist_steps},
        "runs": runs,
        "comparison": rows,
        "mip_does_not_help": [f"{r['task']} | {r['configuration']}" for r in rows if not r["mip_helps"]],
        "suggested_targets": suggested,
    }


def _figures(ctx: RunContext, runs: dict[str, Any], curves: dict[str, Any], targets: dict[str, float]) -> None:
    """One figure per (task, axis): a panel per configuration, the variants' median curves with seed bands."""
    colors = {"standard": "tab:red", "encoding": "tab:orange", "residual": "tab:purple", "mip": "tab:blue"}
    by_task_axis: dict[tuple[str, str], list[str]] = {}
    for key, r in runs.items():
        by_task_axis.setdefault((r["task"], r["axis"]), []).append(key)
    for (task, axis), keys in by_task_axis.items():
        if axis != "default":
            keys = [f"{task} | default", *keys]
        fig, axs = plt.subplots(1, len(keys), figsize=(3.4 * len(keys), 3.0), squeeze=False, sharey=True)
        for ax, key in zip(axs[0], keys):
            for variant, c in curves[key].items():
                loss = np.array(c["loss"], dtype=float)
                ax.plot(c["steps"], np.nanmedian(loss, 0), color=colors[variant], label=VARIANT_NAMES[variant])
                ax.fill_between(c["steps"], np.nanmin(loss, 0), np.nanmax(loss, 0), color=colors[variant], alpha=0.2)
            ax.axhline(targets[task], color="k", lw=0.8, ls="--")
            ax.set(title=runs[key]["label"], xlabel="step", yscale="log")
        axs[0][0].set_ylabel("held-out loss")
        axs[0][0].legend(fontsize=7)
        fig.suptitle(f"{task}: {axis} (median and min-max over seeds; dashed: target)", fontsize=10)
        ctx.save_figure(fig, f"mip_{task}_{axis}")


def headline(summary: dict[str, Any]) -> Table:
    """Median steps to the target loss and final loss of each variant, and MIP's speed-up, per configuration."""
    variants = [v for v in VARIANTS if any(v in r["variants"] for r in summary["runs"].values())]
    speed = {(c["task"], c["configuration"]): c for c in summary["comparison"]}
    rows = []
    for r in summary["runs"].values():
        vs = r["variants"]
        cmp_ = speed.get((r["task"], r["label"]))
        s = "-" if cmp_ is None or cmp_["speedup"] is None else f"{cmp_['speedup']:.2f}"
        if cmp_ is not None and cmp_["speedup_note"].endswith("lower bound"):
            s = ">= " + s
        elif cmp_ is not None and cmp_["speedup_note"].endswith("upper bound"):
            s = "<= " + s
        rows.append(
            [
                r["task"],
                r["label"],
                *[_steps_cell(vs[v]["median_steps_to_target"]) for v in variants],
                *[vs[v]["final_loss_geomean"] for v in variants],
                s,
            ]
        )
    return Table(
        "MIP ablation: median steps to the target loss and final held-out loss (geometric mean over seeds)",
        [
            "task",
            "configuration",
            *[f"steps {VARIANT_NAMES[v]}" for v in variants],
            *[f"final {VARIANT_NAMES[v]}" for v in variants],
            "speed-up mip/standard",
        ],
        rows,
        note="targets: "
        + ", ".join(f"{t} {v:g}" for t, v in summary["targets"].items())
        + "; '-' never reached; MIP does not help in: "
        + ("; ".join(summary["mip_does_not_help"]) or "none"),
    )


def _steps_cell(v: float | None) -> str:
    # None: the same "never" read back from summary.json, where infinity is stored as null
    return "never" if v is None or math.isinf(v) else f"{v:g}"
