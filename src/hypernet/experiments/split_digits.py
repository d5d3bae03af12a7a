"""`split-digits` (the main job, `hypernet demo`): one task-conditioned hypernetwork generates a small
classifier for each task of split digits (0/1, 2/3, 4/5, 6/7, 8/9), against one plain network trained
per task. Standard (task embedding + hyperfan init) and MIP (one-hot task, cos|sin encoding,
residual) parametrizations; per-task test accuracy and learning curves in the report."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import hypernet as hn
from hypernet.data import TaskSet, load_digits, split_tasks, train_test_split
from hypernet.experiments.registry import RunContext, register
from hypernet.experiments.settings import setting
from hypernet.report.table import Table
from hypernet.train import TrainConfig


@dataclass
class SplitDigitsConfig:
    steps: int = setting(1500, "training steps per model", ge=1)
    batch_size: int = setting(32, "images per task in each step", ge=1)
    lr: float = setting(2e-3, "learning rate", gt=0)
    optimizer: Literal["adam", "adamw", "sgd"] = setting("adam", "optimizer")
    schedule: Literal["constant", "cosine", "step"] = setting("constant", "learning-rate schedule")
    hidden: tuple[int, ...] = setting((32,), "hidden widths of the generated classifier 64 -> hidden -> 2", ge=1)
    hyper_hidden: tuple[int, ...] = setting((64,), "hidden widths of the hypernetwork", ge=1)
    embedding_dim: int = setting(8, "task-embedding size (standard and ntk parametrizations)", ge=1)
    parametrizations: tuple[str, ...] = setting(
        ("standard", "mip"), "hypernetwork parametrizations to train", min_items=1, choices=("standard", "ntk", "mip")
    )
    test_fraction: float = setting(0.25, "fraction of each digit class held out for testing", gt=0, lt=1)
    # few training images, so that sharing across tasks matters
    train_per_task: int = setting(40, "training images per task (0: all, about 290)", ge=0)
    eval_every: int = setting(100, "steps between test evaluations", ge=1)
    checkpoint_every: int = setting(100, "steps between checkpoints", ge=1)


def classifier(hidden: tuple[int, ...], d_in: int = 64, d_out: int = 2) -> nn.Sequential:
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(d_in, h), nn.ReLU()]
        d_in = h
    return nn.Sequential(*layers, nn.Linear(d_in, d_out))


class TaskConditioned(nn.Module):
    """A `HyperModel` over tasks, with its task encoding (embedding or MIP's one-hot in [0, 1])."""

    def __init__(self, cfg: SplitDigitsConfig, num_tasks: int, parametrization: str) -> None:
        super().__init__()
        self.num_tasks, self.parametrization = num_tasks, parametrization
        target = hn.TargetNetwork(classifier(cfg.hidden))
        if parametrization == "mip":
            hyper = hn.MLPHyperNetwork(
                num_tasks, target.spec, hidden=cfg.hyper_hidden, parametrization="mip", theta0=target.initial_weights()
            )
            self.model = hn.HyperModel(target, hyper, hn.TaskOneHot(num_tasks))
        else:
            hyper = hn.MLPHyperNetwork(
                cfg.embedding_dim, target.spec, hidden=cfg.hyper_hidden, parametrization=parametrization
            )
            self.model = hn.HyperModel(target, hyper, hn.TaskEmbedding(num_tasks, cfg.embedding_dim))

    def forward(self, x: Tensor, tasks: Tensor) -> Tensor:
        out: Tensor = self.model(x, tasks)
        return out


class PerTask(nn.Module):
    """The baseline: one plain classifier per task."""

    def __init__(self, cfg: SplitDigitsConfig, num_tasks: int) -> None:
        super().__init__()
        self.nets = nn.ModuleList(classifier(cfg.hidden) for _ in range(num_tasks))

    def forward(self, x: Tensor, tasks: Tensor) -> Tensor:
        out = torch.empty(x.shape[0], 2, device=x.device)
        for t, net in enumerate(self.nets):
            mask = tasks == t
            if mask.any():
                out[mask] = net(x[mask])
        return out


def _batch(tasks: TaskSet, size: int, g: torch.Generator, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    xs, ys, ts = [], [], []
    for t, data in enumerate(tasks.train):
        idx = torch.randint(len(data), (size,), generator=g)
        xs.append(data.x[idx])
        ys.append(data.y[idx])
        ts.append(torch.full((size,), t, dtype=torch.long))
    return torch.cat(xs).to(device), torch.cat(ys).to(device), torch.cat(ts).to(device)


def _accuracy(model: nn.Module, tasks: TaskSet, device: torch.device) -> list[float]:
    accs = []
    with torch.no_grad():
        for t, data in enumerate(tasks.test):
            ids = torch.full((len(data),), t, dtype=torch.long, device=device)
            pred = model(data.x.to(device), ids).argmax(-1)
            accs.append(float((pred == data.y.to(device)).float().mean()))
    return accs


@register(
    "split-digits",
    "task-conditioned hypernetwork vs one network per task on split digits (the demo)",
    SplitDigitsConfig,
    quick={"steps": 150, "eval_every": 50, "checkpoint_every": 50},
    distributed=True,
    global_batch=lambda cfg: cfg.batch_size,  # per task: each process must see every task (PerTask's nets)
    headline=lambda summary: headline(summary),
    captions={
        "learning_curves": "Training loss (left, log scale) and mean test accuracy over the five tasks (right) "
        "of each model during training.",
        "per_task_accuracy": "Test accuracy of each model on each task (digit pair) at the end of training.",
    },
)
def run(cfg: SplitDigitsConfig, ctx: RunContext) -> dict[str, Any]:
    train_set, test_set = train_test_split(load_digits(), cfg.test_fraction, seed=ctx.seed)
    tasks = split_tasks(train_set, test_set)
    if cfg.train_per_task > 0:
        g = torch.Generator().manual_seed(ctx.seed)
        tasks.train = [d.subset(torch.randperm(len(d), generator=g)[: cfg.train_per_task]) for d in tasks.train]
    models: dict[str, nn.Module] = {}
    for p in cfg.parametrizations:
        models[f"hyper-{p}"] = TaskConditioned(cfg, tasks.num_tasks, p).to(ctx.device)
    models["plain-per-task"] = PerTask(cfg, tasks.num_tasks).to(ctx.device)
    train_cfg = TrainConfig(
        steps=cfg.steps,
        lr=cfg.lr,
        optimizer=cfg.optimizer,
        schedule=cfg.schedule,
        eval_every=cfg.eval_every,
        checkpoint_every=cfg.checkpoint_every,
        log_every=max(1, cfg.eval_every // 4),
    )
    results: dict[str, Any] = {}
    for k, (name, model) in enumerate(models.items()):
        g = torch.Generator().manual_seed(ctx.seed * 1000 + k)

        trained = ctx.distribute(model)  # DDP in a multi-process run: it averages the gradients

        def step(_: int, gen: torch.Generator, trained: nn.Module = trained) -> tuple[Tensor, dict[str, float]]:
            # every process draws the same global batch and keeps its own part
            x, y, t = ctx.shard(*_batch(tasks, cfg.batch_size, gen, ctx.device))
            return F.cross_entropy(trained(x, t), y), {}

        def evaluate(model: nn.Module = model) -> dict[str, float]:
            accs = _accuracy(model, tasks, ctx.device)
            return {"test_acc": sum(accs) / len(accs)}

        params = model.model.trainable_parameters() if isinstance(model, TaskConditioned) else list(model.parameters())
        ctx.train(name, trained, params, step, train_cfg, eval_fn=evaluate, generator=g)
        accs = _accuracy(model, tasks, ctx.device)
        n_params = sum(p.numel() for p in params)
        results[name] = {"per_task_acc": accs, "mean_acc": sum(accs) / len(accs), "trainable_parameters": n_params}
    _figures(ctx, results, tasks)
    return {"models": results, "tasks": [list(c) for c in tasks.classes], "chance_acc": 0.5}


def _figures(ctx: RunContext, results: dict[str, Any], tasks: TaskSet) -> None:
    records = ctx.metrics()
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.6))
    for name in results:
        rows = [r for r in records if r.get("phase") == name]
        ax_loss.plot([r["step"] for r in rows], [r["loss"] for r in rows], label=name)
        ev = [r for r in rows if "test_acc" in r]
        ax_acc.plot([r["step"] for r in ev], [r["test_acc"] for r in ev], marker="o", label=name)
    ax_loss.set(xlabel="step", ylabel="training loss", yscale="log", title="Learning curves")
    ax_acc.set(xlabel="step", ylabel="mean test accuracy", title="Test accuracy over training")
    ax_loss.legend()
    ax_acc.legend()
    ctx.save_figure(fig, "learning_curves")

    fig, ax = plt.subplots(figsize=(7, 3.6))
    width = 0.8 / len(results)
    labels = ["/".join(map(str, c)) for c in tasks.classes]
    for i, (name, res) in enumerate(results.items()):
        xs = [t + (i - (len(results) - 1) / 2) * width for t in range(tasks.num_tasks)]
        ax.bar(xs, res["per_task_acc"], width, label=f"{name} (mean {res['mean_acc']:.3f})")
    lo = min(min(r["per_task_acc"]) for r in results.values())
    ax.set(
        xticks=range(tasks.num_tasks),
        xticklabels=labels,
        xlabel="task (digits)",
        ylabel="test accuracy",
        ylim=(max(0.0, lo - 0.05), 1.0),
        title="Per-task accuracy of the generated networks",
    )
    ax.legend(fontsize=8, loc="lower right")
    ctx.save_figure(fig, "per_task_accuracy")


def headline(summary: dict[str, Any]) -> Table:
    """Mean and per-task test accuracy and trainable parameters of each model."""
    tasks = ["/".join(map(str, t)) for t in summary["tasks"]]
    rows = [
        [name, res["mean_acc"], *res["per_task_acc"], res["trainable_parameters"]]
        for name, res in sorted(summary["models"].items(), key=lambda kv: -kv[1]["mean_acc"])
    ]
    return Table(
        "Split digits: test accuracy (mean over the tasks, then per task)",
        ["model", "mean", *[f"digits {t}" for t in tasks], "trainable parameters"],
        rows,
        note=f"chance accuracy {summary['chance_acc']:g}",
    )
