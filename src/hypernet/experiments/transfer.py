"""`split-mnist-transfer`: few-shot transfer to a new task with a frozen hypernetwork.

The hypernetwork learns the first four split-MNIST tasks (0/1 ... 6/7) with its output regularizer;
the fifth (8/9) is then learned from `n` labelled images by fitting only a fresh task embedding
(every hypernetwork weight frozen). Against: a plain network fine-tuned on the same four tasks, then
fine-tuned (all its weights, a new head) on the `n` images, and a plain network trained on them from
scratch. Test accuracy on the fifth task as a function of `n`, over seeds.

On several processes (`--nproc N`, or torchrun) the pretraining is the continual harness's
(`harness.train_learner`, already distributed) and every few-shot phase trains through DDP the
same way: each process draws the whole batch, keeps its strided part weighted by its share
(`harness.shard`: `min(n, batch_size)` need not split evenly, only give each process a sample),
DDP averages the gradients. Evaluation runs on every process alike; rank 0 alone writes.
"""

from __future__ import annotations

import copy
import statistics
from dataclasses import dataclass
from typing import Any

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hypernet.data import check_mnist
from hypernet.experiments.continual import ContinualConfig, build_learner, mnist_tasks
from hypernet.experiments.harness import Schedule, TaskData, Tasks, shard, task_accuracy, train_learner
from hypernet.experiments.registry import RunContext, register
from hypernet.experiments.settings import setting
from hypernet.methods.learners import HnetLearner, Learner
from hypernet.report.table import Table
from hypernet.train import TrainConfig, distributed

ARMS = ("hnet-embedding", "finetune-plain", "scratch")


@dataclass
class TransferConfig:
    shots: tuple[int, ...] = setting((10, 50, 200, 1000), "labelled images of the new task", ge=1, min_items=1)
    seeds: int = setting(3, "seeds run one after another (--seed, --seed+1, ...)", ge=1)
    steps_per_task: int = setting(600, "training steps per pretraining task", ge=1)
    few_steps: int = setting(300, "steps on the new task's few images", ge=1)
    embedding_lr: float = setting(0.1, "Adam learning rate of the new task embedding", gt=0)
    few_lr: float = setting(1e-3, "Adam learning rate of the plain networks on the new task", gt=0)
    batch_size: int = setting(128, "images per step (pretraining; the few-shot batch is min(n, this))", ge=1)
    lr: float = setting(1e-3, "Adam learning rate of pretraining", gt=0)
    hidden: tuple[int, ...] = setting((100, 100), "hidden widths of the target network", ge=1)
    beta: float = setting(0.01, "output-regularizer strength during pretraining", ge=0)
    train_per_task: int = setting(0, "pretraining images per task (0: all)", ge=0)
    test_per_task: int = setting(0, "test images per task (0: all)", ge=0)
    data_dir: str = setting(
        "", "folder with the MNIST files (empty: $HYPERNET_DATA or the user cache, downloading)", folder=True
    )
    checkpoint_every: int = setting(200, "steps between checkpoints", ge=1)


def _few_shot(
    ctx: RunContext,
    phase: str,
    learner: Learner,
    params: list[nn.Parameter],
    data: TaskData,
    lr: float,
    steps: int,
    batch: int,
    seed: int,
) -> None:
    cfg = TrainConfig(steps=steps, lr=lr, checkpoint_every=steps, eval_every=steps, log_every=max(1, steps // 4))

    # DDP on several processes; a step leaves the other tasks' embeddings or heads unused
    model = distributed.wrap(learner, find_unused_parameters=True)
    dtype = next(p.dtype for p in learner.parameters() if p.is_floating_point())  # float32 images in

    def step(_: int, g: torch.Generator) -> tuple[Tensor, dict[str, float]]:
        (x, y), weight = shard(*data.rows(torch.randint(len(data), (batch,), generator=g)))
        loss = F.cross_entropy(model(x.to(ctx.device, dtype), 4), y.to(ctx.device))
        return (loss if weight == 1.0 else weight * loss), {}

    ctx.train(phase, model, params, step, cfg, generator=torch.Generator().manual_seed(seed))


@register(
    "split-mnist-transfer",
    "few-shot transfer: a new split-MNIST task from a fresh embedding of a frozen hypernetwork vs plain networks",
    TransferConfig,
    quick={
        "seeds": 1,
        "steps_per_task": 30,
        "few_steps": 30,
        "train_per_task": 600,
        "test_per_task": 300,
        "hidden": (32,),
        "shots": (10, 50),
        "checkpoint_every": 15,
    },
    headline=lambda s: headline(s),
    captions={
        "transfer": "Test accuracy on the fifth split-MNIST task (8/9) against the number of its labelled "
        "images, mean ± sd over seeds."
    },
    prepare=lambda cfg: _check(cfg),
    distributed=True,  # the harness's sharding and DDP, any batch of at least --nproc samples
    smallest_batch=lambda cfg: _smallest_batch(cfg),
    batch_setting="batch_size / shots / train_per_task",  # the fewest shots' batch can be the smallest
)
def run(cfg: TransferConfig, ctx: RunContext) -> dict[str, Any]:
    tasks = mnist_tasks(
        ContinualConfig(train_per_task=cfg.train_per_task, test_per_task=cfg.test_per_task, data_dir=cfg.data_dir),
        "split",
        ctx.seed,
    )
    first = Tasks(tasks.train[:4], tasks.test[:4], tasks.classes[:4])
    new_train, new_test = tasks.train[4], tasks.test[4]
    ccfg = ContinualConfig(hidden=cfg.hidden, beta=cfg.beta, lr=cfg.lr, batch_size=cfg.batch_size)
    sched = Schedule(
        train=TrainConfig(
            lr=cfg.lr,
            checkpoint_every=cfg.checkpoint_every,
            eval_every=cfg.steps_per_task,
            log_every=max(1, cfg.steps_per_task // 4),
        ),
        steps=cfg.steps_per_task,
        batch_size=cfg.batch_size,
        joint_steps=1,
        joint_batch=1,
    )
    acc: dict[str, dict[int, list[float]]] = {a: {n: [] for n in cfg.shots} for a in ARMS}
    for s in range(cfg.seeds):
        seed = ctx.seed + s
        torch.manual_seed(seed * 1000)
        hnet = build_learner(ccfg, "hnet", 5, 2).to(ctx.device)
        assert isinstance(hnet, HnetLearner)
        train_learner(f"s{seed}-hnet", hnet, first, sched, ctx, seed * 100)
        torch.manual_seed(seed * 1000 + 1)
        plain = build_learner(ccfg, "finetune", 5, 2).to(ctx.device)
        train_learner(f"s{seed}-finetune", plain, first, sched, ctx, seed * 100 + 1)
        pre_hnet, pre_plain = copy.deepcopy(hnet.state_dict()), copy.deepcopy(plain.state_dict())
        for n in cfg.shots:
            g = torch.Generator().manual_seed(seed * 7 + n)
            idx = torch.randperm(len(new_train), generator=g)[: min(n, len(new_train))]
            few = TaskData(new_train.x[idx], new_train.y[idx], new_train.perm)
            batch = min(len(few), cfg.batch_size)
            hnet.load_state_dict(pre_hnet)
            _few_shot(
                ctx,
                f"s{seed}-hnet-embedding-n{n}",
                hnet,
                [hnet.hnet.embeddings[4]],
                few,
                cfg.embedding_lr,
                cfg.few_steps,
                batch,
                seed,
            )
            acc["hnet-embedding"][n].append(task_accuracy(hnet, new_test, 4, ctx.device))
            plain.load_state_dict(pre_plain)
            _few_shot(
                ctx,
                f"s{seed}-finetune-plain-n{n}",
                plain,
                plain.trainable(4),
                few,
                cfg.few_lr,
                cfg.few_steps,
                batch,
                seed,
            )
            acc["finetune-plain"][n].append(task_accuracy(plain, new_test, 4, ctx.device))
            torch.manual_seed(seed * 1000 + 2 + n)
            scratch = build_learner(ccfg, "finetune", 5, 2).to(ctx.device)
            _few_shot(
                ctx, f"s{seed}-scratch-n{n}", scratch, scratch.trainable(4), few, cfg.few_lr, cfg.few_steps, batch, seed
            )
            acc["scratch"][n].append(task_accuracy(scratch, new_test, 4, ctx.device))
    results = {
        a: {
            str(n): {
                "acc": vals,
                "mean": statistics.fmean(vals),
                "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
            }
            for n, vals in per_n.items()
        }
        for a, per_n in acc.items()
    }
    _figure(ctx, results, cfg.shots)
    return {
        "new_task": list(tasks.classes[4]),
        "shots": list(cfg.shots),
        "seeds": [ctx.seed + s for s in range(cfg.seeds)],
        "trainable_on_new_task": {
            "hnet-embedding": ccfg.embedding_dim,
            "finetune-plain": sum(p.numel() for p in plain.trainable(4)),
            "scratch": sum(p.numel() for p in plain.trainable(4)),
        },
        "arms": results,
    }


def _smallest_batch(cfg: TransferConfig) -> int:
    """The smallest batch a step shards: pretraining's `batch_size`, or the fewest shots' batch
    `min(n, batch_size)` (fewer when `train_per_task` leaves fewer images of the new task)."""
    few = min(cfg.shots) if cfg.train_per_task == 0 else min(*cfg.shots, cfg.train_per_task)
    return min(cfg.batch_size, few)


def _check(cfg: TransferConfig) -> None:
    for split in ("train", "test"):
        check_mnist(split, cfg.data_dir or None)


def _figure(ctx: RunContext, results: dict[str, Any], shots: tuple[int, ...]) -> None:
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for arm, per_n in results.items():
        ax.errorbar(
            list(shots),
            [per_n[str(n)]["mean"] for n in shots],
            yerr=[per_n[str(n)]["std"] for n in shots],
            marker="o",
            capsize=3,
            label=arm,
        )
    ax.set(
        xscale="log",
        xlabel="labelled images of the new task",
        ylabel="test accuracy (8 vs 9)",
        title="Few-shot transfer to a new task",
    )
    ax.legend(fontsize=8)
    ctx.save_figure(fig, "transfer")


def headline(summary: dict[str, Any]) -> Table:
    """Test accuracy on the new task per number of labelled images, mean ± sd over seeds."""
    shots = summary["shots"]
    rows = [
        [
            arm,
            summary["trainable_on_new_task"][arm],
            *[f"{100 * r[str(n)]['mean']:.2f} ± {100 * r[str(n)]['std']:.2f}" for n in shots],
        ]
        for arm, r in summary["arms"].items()
    ]
    return Table(
        f"split-MNIST transfer to digits {summary['new_task']}: test accuracy (%) by labelled images",
        ["arm", "trained numbers", *[f"n={n}" for n in shots]],
        rows,
        note=f"mean ± sd over {len(summary['seeds'])} seeds",
    )
