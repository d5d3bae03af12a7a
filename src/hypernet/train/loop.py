"""The training loop: optimizer and schedule from a config, progress on a terminal (plain lines
otherwise), metrics to `metrics.jsonl`, atomic checkpoints every N steps and at the end, exact resume,
and a clear stop on a NaN/Inf loss (the last good checkpoint is kept).

In a multi-process run (`hypernet.train.distributed`) every rank runs this loop on its shard of
the batch: the recorded loss and metrics are the means over the ranks, and rank 0 alone writes
metrics, checkpoints and progress."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from hypernet.train import distributed
from hypernet.train.checkpoint import CheckpointError, list_checkpoints, load_checkpoint, save_checkpoint
from hypernet.train.metrics import MetricsLog

StepFn = Callable[[int, torch.Generator], tuple[Tensor, dict[str, float]]]
EvalFn = Callable[[], dict[str, float]]


class TrainingDiverged(RuntimeError):
    """The loss, or the parameters, became NaN or infinite."""


def _first_nonfinite(optimizer: torch.optim.Optimizer) -> str | None:
    """Where the first non-finite value among the optimiser's parameters is (`group g, tensor i
    [shape]`), or None when all are finite."""
    for g, group in enumerate(optimizer.param_groups):
        for i, p in enumerate(group["params"]):
            if not bool(torch.isfinite(p.detach()).all()):
                return f"parameter group {g}, tensor {i} of shape {list(p.shape)}"
    return None


@dataclass
class TrainConfig:
    """How to train: `optimizer` in adam|adamw|sgd, `schedule` in constant|cosine|step."""

    steps: int = 500
    lr: float = 1e-3
    optimizer: str = "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "constant"
    warmup: int = 0
    grad_clip: float = 0.0
    checkpoint_every: int = 100
    log_every: int = 25
    eval_every: int = 100

    def __post_init__(self) -> None:
        if self.optimizer not in ("adam", "adamw", "sgd"):
            raise ValueError(f"optimizer: expected adam, adamw or sgd, got {self.optimizer!r}")
        if self.schedule not in ("constant", "cosine", "step"):
            raise ValueError(f"schedule: expected constant, cosine or step, got {self.schedule!r}")
        if self.steps < 0 or self.lr <= 0:
            raise ValueError(f"steps must be >= 0 and lr > 0, got steps={self.steps}, lr={self.lr}")

    def make_optimizer(self, params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
        if self.optimizer == "sgd":
            return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)
        cls = torch.optim.AdamW if self.optimizer == "adamw" else torch.optim.Adam
        return cls(params, lr=self.lr, weight_decay=self.weight_decay)

    def lr_at(self, step: int) -> float:
        """Learning rate at `step` (a pure function of the step, so resuming needs no scheduler state)."""
        if self.warmup and step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        if self.schedule == "cosine":
            t = (step - self.warmup) / max(1, self.steps - self.warmup)
            return self.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))
        if self.schedule == "step":
            return self.lr * (0.1 ** int(3 * step / max(1, self.steps)))
        return self.lr


class _Progress:
    """A rich progress bar on a terminal, plain lines every `log_every` steps otherwise."""

    def __init__(self, name: str, total: int, start: int, log_every: int, enabled: bool) -> None:
        self.name, self.total, self.log_every = name, total, log_every
        self.enabled = enabled
        self.bar = None
        if enabled and sys.stderr.isatty():
            try:
                from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
            except ImportError:  # the core without the cli extra: plain lines
                return
            self.bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                TextColumn("{task.fields[info]}"),
                TimeRemainingColumn(),
                transient=False,
            )
            self.bar.start()
            self.task = self.bar.add_task(name, total=total, completed=start, info="")

    def update(self, step: int, info: str) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=step, info=info)
        elif self.enabled and (step % self.log_every == 0 or step == self.total):
            print(f"[{self.name}] step {step}/{self.total} {info}", flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def train(
    name: str,
    model: nn.Module,
    params: Iterable[nn.Parameter],
    step_fn: StepFn,
    config: TrainConfig,
    run_dir: Path,
    *,
    eval_fn: EvalFn | None = None,
    generator: torch.Generator | None = None,
    resume: bool = True,
    progress: bool = True,
) -> None:
    """Train phase `name` of a run for `config.steps` steps.

    `step_fn(step, generator) -> (loss, metrics)` computes one batch's loss (the generator draws
    the batch, so resuming restores the data order too). Checkpoints go to `run_dir/checkpoints`,
    records `{"phase": name, "step": s, ...}` to `run_dir/metrics.jsonl`. With `resume`, a phase
    with checkpoints continues from the newest readable one (and is skipped if complete).
    """
    generator = generator if generator is not None else torch.Generator()
    if distributed.is_distributed() and not distributed.is_wrapped(model):
        raise ValueError(
            f"train {name}: this run has {distributed.world_size()} processes but the model is not wrapped for "
            "them; pass hypernet.train.distributed.wrap(model) (ctx.distribute(model) in an experiment) and call "
            "that in step_fn, so that the gradients are averaged over the processes"
        )
    net = distributed.unwrap(model)  # checkpoints hold the plain module's state
    main = distributed.is_main()
    optimizer = config.make_optimizer(params)
    ckpt_dir = run_dir / "checkpoints"
    log = MetricsLog(run_dir / "metrics.jsonl") if main else None
    start = 0
    if resume:
        start = _resume(name, net, optimizer, generator, ckpt_dir)
        if log is not None:
            log.rewind(name, start)
    if start >= config.steps:
        return
    last_good: Path | None = None
    bar = _Progress(name, config.steps, start, config.log_every, progress and main)
    model.train()
    try:
        for step in range(start, config.steps):
            lr = config.lr_at(step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            try:
                loss, metrics = step_fn(step, generator)
            except (ValueError, RuntimeError) as err:
                # a step that fails on its inputs after the last update made the parameters NaN/inf
                # (a learning rate far too large) is divergence, not the error it surfaces as (e.g.
                # "cond: contains NaN" from a conditioner's own non-finite output)
                bad = _first_nonfinite(optimizer) if step > start else None
                if bad is None:
                    raise
                where = f"last good checkpoint: {last_good}" if last_good else "no checkpoint was written yet"
                raise TrainingDiverged(
                    f"{name}: parameters became non-finite at step {step} ({bad}), and step {step + 1} failed "
                    f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); lower the learning rate; "
                    f"{where}"
                ) from err
            # the whole batch's values: every rank sees the same loss, so all stop together on NaN
            keys = sorted(metrics)
            values = [
                float(v)
                for v in distributed.mean_across(
                    torch.tensor([float(loss.detach()), *(float(metrics[k]) for k in keys)], dtype=torch.float64)
                ).tolist()
            ]
            if not math.isfinite(values[0]):
                where = f"last good checkpoint: {last_good}" if last_good else "no checkpoint was written yet"
                raise TrainingDiverged(f"{name}: loss became {values[0]} at step {step + 1}; {where}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip > 0:
                nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], config.grad_clip)
            optimizer.step()
            done = step + 1
            record = {"phase": name, "step": done, "loss": values[0], "lr": lr, **dict(zip(keys, values[1:]))}
            if log is None:  # ranks other than 0 compute; they write nothing
                continue
            evaluate = eval_fn is not None and (done % config.eval_every == 0 or done == config.steps)
            if evaluate and eval_fn is not None:
                model.eval()
                with torch.no_grad():
                    record.update(eval_fn())
                model.train()
            if evaluate or done % config.log_every == 0 or done == config.steps:
                log.append(record)
            bar.update(done, f"loss {record['loss']:.4f}")
            if done % config.checkpoint_every == 0 or done == config.steps:
                last_good = save_checkpoint(ckpt_dir, name, done, net, optimizer, generator)
        distributed.barrier()  # the phase's files are complete before any rank goes on
    finally:
        bar.close()
        model.eval()


def _resume(
    name: str, net: nn.Module, optimizer: torch.optim.Optimizer, generator: torch.Generator, ckpt_dir: Path
) -> int:
    """Load the newest readable checkpoint of phase `name`; return its step (0 if none). Rank 0
    chooses, every other rank loads that same file, so all continue from one state."""
    chosen: tuple[str, int] | None = None
    if distributed.is_main():
        for path in reversed(list_checkpoints(ckpt_dir, name)):
            try:
                chosen = (str(path), int(load_checkpoint(path, net, optimizer, generator)["step"]))
                break
            except CheckpointError as exc:
                print(f"warning: {exc}; trying an older checkpoint", file=sys.stderr)
    chosen = distributed.broadcast(chosen)
    if chosen is None:
        return 0
    if not distributed.is_main():
        load_checkpoint(Path(chosen[0]), net, optimizer, generator)
    return chosen[1]
