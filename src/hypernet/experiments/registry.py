"""The experiment registry and what a run function receives (`RunContext`)."""

from __future__ import annotations

import dataclasses
import json
import time
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import torch
from torch import Tensor, nn

from hypernet.experiments.settings import ConfigError, parse_value, validate
from hypernet.report.table import Table
from hypernet.train import TrainConfig, distributed, train
from hypernet.train.atomic import atomic_write
from hypernet.train.checkpoint import list_checkpoints
from hypernet.train.loop import EvalFn, StepFn
from hypernet.train.metrics import read_metrics


@dataclass
class RunContext:
    """Where a run writes, and the switches it runs under."""

    out: Path
    seed: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    quick: bool = False
    resume: bool = False
    progress: bool = True

    @property
    def figures(self) -> Path:
        path = self.out / "figures"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def train(
        self,
        name: str,
        model: nn.Module,
        params: typing.Iterable[nn.Parameter],
        step_fn: StepFn,
        config: TrainConfig,
        eval_fn: EvalFn | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        train(
            name,
            model,
            params,
            step_fn,
            config,
            self.out,
            eval_fn=eval_fn,
            generator=generator,
            resume=self.resume,
            progress=self.progress,
        )

    def distribute(self, model: nn.Module) -> nn.Module:
        """`model` wrapped for a multi-process run (DDP), else itself: call the result in step
        functions and pass it to `train`."""
        return distributed.wrap(model)

    def shard(self, *tensors: Tensor) -> tuple[Tensor, ...]:
        """This process's part of a global batch (all of it in a one-process run)."""
        return distributed.shard(*tensors)

    def metrics(self) -> list[dict[str, Any]]:
        return read_metrics(self.out / "metrics.jsonl")

    def save_figure(self, fig: plt.Figure, name: str) -> Path:
        """Save `fig` as `figures/NAME.png` (rank 0 of a multi-process run only) and close it."""
        path = self.out / "figures" / f"{name}.png"
        if not distributed.is_main():
            plt.close(fig)
            return path
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
        plt.close(fig)
        return path


@dataclass(frozen=True)
class Experiment:
    """A named experiment: `run(config, ctx) -> summary` with `config` an instance of `config_cls`.

    `quick`: the overrides `--quick` applies (a reduced size for tests). `headline(summary)`: the
    short table of results shown at the end of a run and at the top of its report. `captions`:
    one sentence per figure (by file stem). `prepare(config)`: checks or fetches what the run
    reads (data files) before the run folder is made, so that a missing file writes nothing.
    `distributed`: the run trains through `ctx.train` with `ctx.distribute` and `ctx.shard`, so
    `--nproc N` / torchrun may run it on several processes; `global_batch(config)` then gives the
    samples of one step, which must split evenly over the processes (checked before the run);
    `smallest_batch(config)` the smallest batch a step shards unevenly, which needs at least one
    sample per process (also checked before anything is written). `batch_setting`: the setting(s)
    those refusals name (None: fixed batches, no setting; the process count must fit them).
    """

    name: str
    description: str
    config_cls: type
    run: Callable[[Any, RunContext], dict[str, Any]]
    quick: dict[str, Any] = field(default_factory=dict)
    headline: Callable[[dict[str, Any]], Table] | None = None
    captions: dict[str, str] = field(default_factory=dict)
    prepare: Callable[[Any], None] | None = None
    distributed: bool = False
    global_batch: Callable[[Any], int] | None = None
    smallest_batch: Callable[[Any], int] | None = None
    batch_setting: str | None = "batch_size"

    def make_config(self, overrides: dict[str, str], quick: bool = False) -> Any:
        """The config with `--quick` values, then `key=value` overrides parsed to each field's type,
        validated (ranges and relations) before anything is written."""
        hints = typing.get_type_hints(self.config_cls)
        names = [f.name for f in dataclasses.fields(self.config_cls)]
        values: dict[str, Any] = dict(self.quick) if quick else {}
        for key, raw in overrides.items():
            if key not in names:
                raise ConfigError(f"--set {key}: unknown key for {self.name}; keys are {', '.join(names)}")
            values[key] = parse_value(key, raw, hints[key])
        try:
            config = self.config_cls(**values)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"--set: {exc}") from exc
        validate(config)
        return config

    def results(self, summary: dict[str, Any], run: dict[str, Any], seconds: float) -> dict[str, Any]:
        """The run's headline numbers as one JSON-ready record (`results.json` in the run folder; the
        README quotes the copy in `docs/results/NAME.json`): what was run (command, seed, config,
        versions from `config.json` as `run`), how long it took, the headline table with its numbers
        unrounded, and the whole summary."""
        table = self.headline(summary) if self.headline is not None else None
        keys = ("command", "seed", "quick", "device", "config", "versions", "started")
        return {
            "experiment": self.name,
            **{k: run.get(k) for k in keys},
            "seconds": seconds,
            "headline": dataclasses.asdict(table) if table is not None else None,
            "summary": summary,
        }


EXPERIMENTS: dict[str, Experiment] = {}


def register(
    name: str,
    description: str,
    config_cls: type,
    quick: dict[str, Any] | None = None,
    *,
    headline: Callable[[dict[str, Any]], Table] | None = None,
    captions: dict[str, str] | None = None,
    prepare: Callable[[Any], None] | None = None,
    distributed: bool = False,
    global_batch: Callable[[Any], int] | None = None,
    smallest_batch: Callable[[Any], int] | None = None,
    batch_setting: str | None = "batch_size",
) -> Callable[[Callable[[Any, RunContext], dict[str, Any]]], Callable[[Any, RunContext], dict[str, Any]]]:
    """Decorator: `@register("name", "what it shows", Config, quick={...}, headline=fn)` on a run function."""

    def wrap(fn: Callable[[Any, RunContext], dict[str, Any]]) -> Callable[[Any, RunContext], dict[str, Any]]:
        if name in EXPERIMENTS:
            raise ValueError(f"experiment {name!r} is registered twice")
        EXPERIMENTS[name] = Experiment(
            name,
            description,
            config_cls,
            fn,
            dict(quick or {}),
            headline,
            dict(captions or {}),
            prepare,
            distributed,
            global_batch,
            smallest_batch,
            batch_setting,
        )
        return fn

    return wrap


def get(name: str) -> Experiment:
    if name not in EXPERIMENTS:
        raise ConfigError(f"unknown experiment {name!r}; `hypernet list` shows {', '.join(sorted(EXPERIMENTS))}")
    return EXPERIMENTS[name]


class PhaseTimer:
    """Cost of each named training phase, kept in `train_seconds.json` in the run folder:
    `{"wall_s", "cpu_s", "partial"}` per phase. A phase that had finished keeps its entry when a
    resumed run calls it again (only to load its last checkpoint), so resuming a finished run
    changes no timing; a phase killed midway is timed by the attempt that finishes it (the killed
    attempt's seconds are not known) and flagged `partial`."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.path = ctx.out / "train_seconds.json"
        self.phases: dict[str, dict[str, Any]] = json.loads(self.path.read_text()) if self.path.exists() else {}

    def train(self, phase: str, run: Callable[[], None]) -> dict[str, Any]:
        """Run `run()` (the phase's training, checkpointed under the name `phase`) and return the
        phase's entry."""
        partial = phase not in self.phases and bool(list_checkpoints(self.ctx.out / "checkpoints", phase))
        wall, cpu = time.perf_counter(), time.process_time()
        run()
        if phase not in self.phases:
            self.phases[phase] = {
                "wall_s": time.perf_counter() - wall,
                "cpu_s": time.process_time() - cpu,
                "partial": partial,
            }
            if distributed.is_main():
                atomic_write(self.path, lambda tmp: tmp.write_text(json.dumps(self.phases, indent=1)))
        return self.phases[phase]
