"""`split-digits` (the main job, `hypernet demo`): one task-conditioned hypernetwork generates a small
classifier for each task of split digits (0/1, 2/3, 4/5, 6/7, 8/9), against one plain network trained
per task. Standard (task embedding + hyperfan init) and MIP (one-hot task, cos|sin encoding,
residual) parametrizations; per-task test accuracy and learning curves in the report.

It runs in the harness of the continual experiments (`experiments.harness`): the models above train
jointly on every task; `--set methods=hnet,ewc,si,...` adds the continual methods of `split-mnist`,
trained task after task on the same data (offline, for quick runs)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import matplotlib.pyplot as plt
import torch
from torch import Tensor, nn

import hypernet as hn
from hypernet.data import load_digits, split_tasks, train_test_split
from hypernet.experiments.continual import METHODS, ContinualConfig, build_learner
from hypernet.experiments.harness import Schedule, Tasks, heatmaps, run_methods
from hypernet.experiments.registry import RunContext, register
from hypernet.experiments.settings import setting
from hypernet.methods.learners import Learner, PerTaskNets, mlp
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
    methods: tuple[str, ...] = setting(
        (), "continual methods to run as well, task after task (steps / 5 per task)", choices=METHODS
    )


def classifier(hidden: tuple[int, ...], d_in: int = 64, d_out: int = 2) -> nn.Sequential:
    return mlp(d_in, hidden, d_out)


class TaskConditioned(Learner):
    """A `HyperModel` over tasks, with its task encoding (embedding or MIP's one-hot in [0, 1]),
    trained jointly on every task (one generated network per sample's task)."""

    joint = True

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

    def forward(self, x: Tensor, task: int | Tensor) -> Tensor:
        out: Tensor = self.model(x, torch.as_tensor(task, device=x.device))
        return out

    def trainable(self, task: int) -> list[nn.Parameter]:
        return self.model.trainable_parameters()


@register(
    "split-digits",
    "task-conditioned hypernetwork vs one network per task on split digits (the demo)",
    SplitDigitsConfig,
    quick={"steps": 150, "eval_every": 50, "checkpoint_every": 50},
    headline=lambda summary: headline(summary),
    captions={
        "learning_curves": "Training loss (left, log scale) and mean test accuracy over the five tasks (right) "
        "of each model during training.",
        "per_task_accuracy": "Test accuracy of each model on each task (digit pair) at the end of training.",
    },
    distributed=True,  # the harness shards every batch and trains through DDP (any batch size >= --nproc)
    smallest_batch=lambda cfg: cfg.batch_size,  # the joint learner's batch is 5 of these
)
def run(cfg: SplitDigitsConfig, ctx: RunContext) -> dict[str, Any]:
    train_set, test_set = train_test_split(load_digits(), cfg.test_fraction, seed=ctx.seed)
    taskset = split_tasks(train_set, test_set)
    if cfg.train_per_task > 0:
        g = torch.Generator().manual_seed(ctx.seed)
        taskset.train = [d.subset(torch.randperm(len(d), generator=g)[: cfg.train_per_task]) for d in taskset.train]
    tasks = Tasks.from_taskset(taskset)
    n = tasks.num_tasks
    joint = [f"hyper-{p}" for p in cfg.parametrizations] + ["plain-per-task"]
    sequential = ContinualConfig(
        hidden=cfg.hidden, hyper_hidden=cfg.hyper_hidden, chunk_size=0, embedding_dim=cfg.embedding_dim, lr=cfg.lr
    )

    def build(method: str, _seed: int) -> Learner:
        if method.startswith("hyper-"):
            return TaskConditioned(cfg, n, method.removeprefix("hyper-"))
        if method == "plain-per-task":
            return PerTaskNets([classifier(cfg.hidden) for _ in range(n)], joint=True)
        return build_learner(sequential, method, n, 2, d_in=64)

    sched = Schedule(
        train=TrainConfig(
            lr=cfg.lr,
            optimizer=cfg.optimizer,
            schedule=cfg.schedule,
            eval_every=cfg.eval_every,
            checkpoint_every=cfg.checkpoint_every,
            log_every=max(1, cfg.eval_every // 4),
        ),
        steps=max(1, cfg.steps // n),
        batch_size=cfg.batch_size,
        joint_steps=cfg.steps,
        joint_batch=cfg.batch_size,
        fisher_samples=100,
    )
    out = run_methods([*joint, *cfg.methods], build, tasks, sched, ctx)
    results = {
        name: {
            "per_task_acc": res["final_acc"],
            "mean_acc": res["mean_acc"],
            "trainable_parameters": res["trainable_parameters"],
            "class_il_acc": res["class_il_acc"],
            **({"forgetting": res["forgetting"]} if name in cfg.methods else {}),
        }
        for name, res in out.items()
    }
    _figures(ctx, {m: results[m] for m in joint}, taskset)
    heatmaps(ctx, out, ["/".join(map(str, c)) for c in tasks.classes])
    return {"models": results, "tasks": [list(c) for c in tasks.classes], "chance_acc": 0.5}


def _figures(ctx: RunContext, results: dict[str, Any], tasks: Any) -> None:
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
