"""The one harness of the task experiments (`split-digits`, `split-mnist`, `permuted-mnist`):
train learners (`hypernet.methods.learners`) task after task, or jointly, through the training
loop's checkpoints (so a killed run resumes at a task boundary or mid-task), evaluate every task
after each one (task-incremental, and class-incremental by entropy-based task inference), and
aggregate over seeds: accuracy matrix, average final accuracy, forgetting, parameters, memory.

On several processes (`hypernet run NAME --nproc N`, or torchrun) every process draws the same
global batch from the same seeded generator and keeps its strided part (`shard`); the learner's
whole objective trains through DDP (`methods.learners.distribute`). Everything else (the Fisher's
inputs, the end of a task, evaluation) every process does alike, so all hold the same state;
rank 0 alone writes (the training loop's rule)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import Tensor, nn

from hypernet.data import TaskSet
from hypernet.experiments.registry import RunContext
from hypernet.experiments.settings import ConfigError
from hypernet.methods.continual import class_incremental_predict
from hypernet.methods.learners import Learner, distribute
from hypernet.train import TrainConfig, distributed


@dataclass
class TaskData:
    """One task's images `x: [N, D]` and labels `y: [N]`, optionally seen through a pixel permutation
    `perm: [D]` applied per batch (so ten permuted copies of MNIST are never held at once)."""

    x: Tensor
    y: Tensor
    perm: Tensor | None = None

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def rows(self, idx: Tensor | slice) -> tuple[Tensor, Tensor]:
        x = self.x[idx]
        return (x if self.perm is None else x[:, self.perm]), self.y[idx]


@dataclass
class Tasks:
    """Train and test data per task, and each task's global class labels (`classes[t][c]`)."""

    train: list[TaskData]
    test: list[TaskData]
    classes: list[tuple[int, ...]]

    @property
    def num_tasks(self) -> int:
        return len(self.train)

    @classmethod
    def from_taskset(cls, ts: TaskSet) -> Tasks:
        return cls([TaskData(d.x, d.y) for d in ts.train], [TaskData(d.x, d.y) for d in ts.test], list(ts.classes))


@dataclass
class Schedule:
    """How each learner trains: `steps` per task (sequential) with `batch_size` images of the task,
    or, for a joint learner, `joint_steps` steps with `joint_batch` images of every task each."""

    train: TrainConfig
    steps: int
    batch_size: int
    joint_steps: int
    joint_batch: int
    fisher_samples: int = 500


def _batch(
    data: TaskData, size: int, g: torch.Generator, device: torch.device, dtype: torch.dtype
) -> tuple[Tensor, Tensor]:
    x, y = data.rows(torch.randint(len(data), (size,), generator=g))
    return x.to(device, dtype), y.to(device)


def _mixed_batch(
    tasks: Tasks, size: int, g: torch.Generator, device: torch.device, dtype: torch.dtype
) -> tuple[Tensor, Tensor, Tensor]:
    xs, ys, ts = [], [], []
    for t, data in enumerate(tasks.train):
        x, y = _batch(data, size, g, device, dtype)
        xs.append(x)
        ys.append(y)
        ts.append(torch.full((size,), t, dtype=torch.long, device=device))
    return torch.cat(xs), torch.cat(ys), torch.cat(ts)


def shard(*tensors: Tensor) -> tuple[list[Tensor], float]:
    """This process's part of a global batch (`tensors: [B, ...]`, rows `rank, rank + W, ...`; all
    of it in one process) and its weight `b * W / B` (`b` its rows): the mean over the processes
    of `weight * (mean loss of the part)` is the global batch's mean loss even when `W` does not
    divide `B` (split-MNIST's joint batch: 5 x 25 images), and the weight is 1 when it does."""
    count, index, total = distributed.world_size(), distributed.rank(), int(tensors[0].shape[0])
    if count == 1:
        return list(tensors), 1.0
    if total < count:
        raise ValueError(
            f"a batch of {total} sample(s) cannot be shared by {count} processes; use a batch size of at least {count}"
        )
    parts = [t[index::count] for t in tensors]
    return parts, parts[0].shape[0] * count / total


def _dtype(learner: nn.Module) -> torch.dtype:
    """The learner's floating dtype, which its inputs take (float32 data into a float64 learner)."""
    return next(p.dtype for p in learner.parameters() if p.is_floating_point())


@torch.no_grad()
def task_accuracy(learner: Learner, data: TaskData, task: int, device: torch.device, chunk: int = 2000) -> float:
    """Task-incremental test accuracy of `learner` on `data` (the task id given)."""
    correct, dtype = 0, _dtype(learner)
    for lo in range(0, len(data), chunk):
        x, y = data.rows(slice(lo, lo + chunk))
        correct += int((learner(x.to(device, dtype), task).argmax(-1) == y.to(device)).sum())
    return correct / max(1, len(data))


@torch.no_grad()
def class_incremental(learner: Learner, tasks: Tasks, device: torch.device, chunk: int = 2000) -> tuple[float, float]:
    """Class-incremental accuracy (global label right, the task inferred by lowest predictive
    entropy among every task's outputs) and how often the task itself was inferred right."""
    right = inferred = total = 0
    dtype = _dtype(learner)
    for t, data in enumerate(tasks.test):
        for lo in range(0, len(data), chunk):
            x, y = data.rows(slice(lo, lo + chunk))
            x = x.to(device, dtype)
            logits = torch.stack([learner(x, k) for k in range(tasks.num_tasks)])
            label, task = class_incremental_predict(logits, tasks.classes)
            glob = torch.tensor(tasks.classes[t], device=device)[y.to(device)]
            right += int((label == glob).sum())
            inferred += int((task == t).sum())
            total += len(y)
    return right / total, inferred / total


def train_learner(
    name: str, learner: Learner, tasks: Tasks, sched: Schedule, ctx: RunContext, seed: int
) -> dict[str, Any]:
    """Train `learner` (phases `NAME-taskT`, or `NAME` if joint) and evaluate it; see the module doc."""
    n, device, dtype = tasks.num_tasks, ctx.device, _dtype(learner)
    matrix: list[list[float | None]] = [[None] * n for _ in range(n)]
    # every parameter reached at every step: by the learner's kind, or a joint learner whose every
    # process's part holds every task (a strided part of a batch laid out by task, `shard`)
    every_used = learner.every_parameter_used or (learner.joint and sched.joint_batch >= distributed.world_size())
    model = distribute(learner, find_unused=not every_used)  # in DDP on several processes, one for all tasks

    def gen(t: int) -> torch.Generator:
        return torch.Generator().manual_seed(seed * 1_000_003 + 7919 * t + 17)

    def mean_acc() -> dict[str, float]:
        return {"test_acc": sum(task_accuracy(learner, d, t, device) for t, d in enumerate(tasks.test)) / n}

    if learner.joint:
        cfg = _with_steps(sched.train, sched.joint_steps)

        def joint_step(_: int, g: torch.Generator) -> tuple[Tensor, dict[str, float]]:
            (x, y, t), weight = shard(*_mixed_batch(tasks, sched.joint_batch, g, device, dtype))
            out: tuple[Tensor, dict[str, float]] = model(x, y, t, g, weight)
            return out

        ctx.train(name, model, learner.trainable(0), joint_step, cfg, eval_fn=mean_acc, generator=gen(-1))
        matrix[n - 1] = [task_accuracy(learner, d, t, device) for t, d in enumerate(tasks.test)]
    else:
        cfg = _with_steps(sched.train, sched.steps)
        for t in range(n):
            learner.start_task(t)

            def step(_: int, g: torch.Generator, t: int = t) -> tuple[Tensor, dict[str, float]]:
                (x, y), weight = shard(*_batch(tasks.train[t], sched.batch_size, g, device, dtype))
                out: tuple[Tensor, dict[str, float]] = model(x, y, t, g, weight)
                return out

            def current(t: int = t) -> dict[str, float]:
                return {"test_acc": task_accuracy(learner, tasks.test[t], t, device)}

            ctx.train(f"{name}-task{t}", model, learner.trainable(t), step, cfg, eval_fn=current, generator=gen(t))
            g = gen(1000 + t)  # the Fisher's inputs: the same draw when a resumed run redoes this
            x, _ = tasks.train[t].rows(torch.randperm(len(tasks.train[t]), generator=g)[: sched.fisher_samples])
            learner.end_task(t, x.to(device, dtype), g)  # every process alike, on all of `x`
            matrix[t] = [task_accuracy(learner, d, k, device) if k <= t else None for k, d in enumerate(tasks.test)]
    final = [float(a) for a in matrix[n - 1] if a is not None]
    diag = [matrix[t][t] for t in range(n - 1)]
    forgetting = (
        sum(float(d) - final[t] for t, d in enumerate(diag) if d is not None) / (n - 1)
        if n > 1 and not learner.joint
        else 0.0
    )
    cil, inferred = class_incremental(learner, tasks, device)
    return {
        "acc_matrix": matrix,
        "final_acc": final,
        "mean_acc": sum(final) / len(final),
        "forgetting": forgetting,
        "class_il_acc": cil,
        "task_inference_acc": inferred,
        "trainable_parameters": learner.num_trainable(),
        "stored_bytes": learner.memory_bytes(),
    }


def _with_steps(cfg: TrainConfig, steps: int) -> TrainConfig:
    return TrainConfig(**{**cfg.__dict__, "steps": steps})


def run_methods(
    methods: Sequence[str],
    build: Callable[[str, int], Learner],
    tasks: Tasks,
    sched: Schedule,
    ctx: RunContext,
    seeds: int = 1,
) -> dict[str, Any]:
    """Every method for `seeds` seeds (`ctx.seed`, `ctx.seed + 1`, ...): `build(method, seed)` makes
    a fresh learner (the torch seed set before, so it is the same on a resumed run).

    Returns per method: each seed's results (`train_learner`) and the means and standard
    deviations over seeds of `mean_acc`, `forgetting`, `class_il_acc`."""
    smallest = min(sched.batch_size, sched.joint_batch * tasks.num_tasks)
    if smallest < distributed.world_size():  # before anything trains, the same on every process
        raise ConfigError(
            f"batch_size: a batch of {smallest} sample(s) cannot be shared by {distributed.world_size()} processes; "
            f"use a batch size of at least {distributed.world_size()}"
        )
    out: dict[str, Any] = {}
    for k, method in enumerate(methods):
        runs = []
        for s in range(seeds):
            seed = ctx.seed + s
            torch.manual_seed(seed * 1000 + k)
            learner = build(method, seed).to(ctx.device)
            phase = method if seeds == 1 else f"s{seed}-{method}"
            runs.append(train_learner(phase, learner, tasks, sched, ctx, seed * 100 + k))
        out[method] = aggregate(runs)
    return out


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Means and sample standard deviations over seeds (std 0 for one seed); the mean accuracy matrix."""
    res: dict[str, Any] = {"seeds": runs}
    for key in ("mean_acc", "forgetting", "class_il_acc", "task_inference_acc"):
        vals = [r[key] for r in runs]
        res[key] = statistics.fmean(vals)
        res[f"{key}_std"] = statistics.stdev(vals) if len(vals) > 1 else 0.0
    n = len(runs[0]["acc_matrix"])
    res["acc_matrix"] = [
        [
            None if runs[0]["acc_matrix"][i][j] is None else statistics.fmean(r["acc_matrix"][i][j] for r in runs)
            for j in range(n)
        ]
        for i in range(n)
    ]
    res["final_acc"] = [statistics.fmean(r["final_acc"][t] for r in runs) for t in range(len(runs[0]["final_acc"]))]
    res["trainable_parameters"] = runs[0]["trainable_parameters"]
    res["stored_bytes"] = runs[0]["stored_bytes"]
    return res


def heatmaps(ctx: RunContext, results: dict[str, Any], labels: list[str], name: str = "accuracy_heatmap") -> None:
    """One panel per method: test accuracy on each task (columns) after training each task (rows)."""
    seq = {m: r for m, r in results.items() if any(v is not None for v in r["acc_matrix"][0])}
    if not seq:
        return
    cols = min(4, len(seq))
    rows = math.ceil(len(seq) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.0 * rows), squeeze=False)
    for ax in axes.flat[len(seq) :]:
        ax.axis("off")
    im = None
    for ax, (method, res) in zip(axes.flat, seq.items(), strict=False):
        m = np.array([[np.nan if v is None else v for v in row] for row in res["acc_matrix"]], dtype=float)
        im = ax.imshow(m, vmin=0.5, vmax=1.0, cmap="viridis")
        for (i, j), v in np.ndenumerate(m):
            if not np.isnan(v) and len(labels) <= 5:
                ax.text(j, i, f"{100 * v:.0f}", ha="center", va="center", fontsize=7, color="w" if v < 0.8 else "k")
        ax.set(title=f"{method} (final {100 * res['mean_acc']:.1f}%)", xlabel="evaluated task", ylabel="after task")
        ax.set_xticks(range(len(labels)), labels, fontsize=7, rotation=45 if len(labels) > 5 else 0)
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
    if im is not None:
        fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8, label="test accuracy")
    ctx.save_figure(fig, name)
