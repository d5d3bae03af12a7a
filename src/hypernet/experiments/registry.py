"""The experiment registry and what a run function receives (`RunContext`)."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # figures are files; never open a window
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from hypernet.train import TrainConfig, train  # noqa: E402
from hypernet.train.loop import EvalFn, StepFn  # noqa: E402
from hypernet.train.metrics import read_metrics  # noqa: E402


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

    def metrics(self) -> list[dict[str, Any]]:
        return read_metrics(self.out / "metrics.jsonl")

    def save_figure(self, fig: plt.Figure, name: str) -> Path:
        """Save `fig` as `figures/NAME.png` and close it."""
        path = self.figures / f"{name}.png"
        tmp = path.with_suffix(".tmp.png")
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
        tmp.replace(path)
        plt.close(fig)
        return path


@dataclass(frozen=True)
class Experiment:
    """A named experiment: `run(config, ctx) -> summary` with `config` an instance of `config_cls`.

    `quick` overrides applied by `--quick` (a reduced size for tests).
    """

    name: str
    description: str
    config_cls: type
    run: Callable[[Any, RunContext], dict[str, Any]]
    quick: dict[str, Any] = field(default_factory=dict)

    def make_config(self, overrides: dict[str, str], quick: bool = False) -> Any:
        """The config with `--quick` values, then `key=value` overrides parsed to each field's type."""
        hints = typing.get_type_hints(self.config_cls)
        names = [f.name for f in dataclasses.fields(self.config_cls)]
        values: dict[str, Any] = dict(self.quick) if quick else {}
        for key, raw in overrides.items():
            if key not in names:
                raise ConfigError(f"--set {key}: unknown key for {self.name}; keys are {', '.join(names)}")
            values[key] = parse_value(key, raw, hints[key])
        try:
            return self.config_cls(**values)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"--set: {exc}") from exc


class ConfigError(ValueError):
    """A bad `--set` key or value."""


def parse_value(key: str, raw: str, tp: Any) -> Any:
    """Parse `raw` as type `tp` (bool, int, float, str, tuple[int, ...], or a union with None)."""
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        if raw not in choices:
            raise ConfigError(f"--set {key}={raw}: expected one of {', '.join(map(str, choices))}")
        return raw
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if raw.lower() in ("none", "null"):
            return None
        return parse_value(key, raw, args[0])
    try:
        if tp is bool:
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if tp in (int, float, str):
            return tp(raw)
        if origin is tuple:
            (item, *_rest) = typing.get_args(tp)
            return tuple(parse_value(key, part, item) for part in raw.split(",") if part.strip())
    except ValueError:
        pass
    else:
        raise ConfigError(f"--set {key}: type {tp} is not settable from the command line")
    raise ConfigError(f"--set {key}={raw}: expected {getattr(tp, '__name__', tp)}")


EXPERIMENTS: dict[str, Experiment] = {}


def register(
    name: str, description: str, config_cls: type, quick: dict[str, Any] | None = None
) -> Callable[[Callable[[Any, RunContext], dict[str, Any]]], Callable[[Any, RunContext], dict[str, Any]]]:
    """Decorator: `@register("name", "what it shows", Config, quick={...})` on a run function."""

    def wrap(fn: Callable[[Any, RunContext], dict[str, Any]]) -> Callable[[Any, RunContext], dict[str, Any]]:
        if name in EXPERIMENTS:
            raise ValueError(f"experiment {name!r} is registered twice")
        EXPERIMENTS[name] = Experiment(name, description, config_cls, fn, dict(quick or {}))
        return fn

    return wrap


def get(name: str) -> Experiment:
    if name not in EXPERIMENTS:
        raise ConfigError(f"unknown experiment {name!r}; `hypernet list` shows {', '.join(sorted(EXPERIMENTS))}")
    return EXPERIMENTS[name]
