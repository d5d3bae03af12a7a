"""Experiment settings: declared once per config field (`setting(default, meaning, ge=..., ...)`),
parsed from `--set key=value`, validated before a run writes anything, and listed by `--help`.

A config is a dataclass whose fields are made with `setting`; relations between fields are
`Relation`s in the class attribute `RELATIONS`. `validate(config)` checks both and raises
`ConfigError` with one line naming the key, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A bad `--set` key or value (the command line exits with code 2)."""


@dataclass(frozen=True)
class Rule:
    """What one setting allows: bounds (on the value, or on each item of a tuple), a least number
    of items, the choices for each item of a tuple of words (each at most once: a repeated method
    or variant would train twice under one name, into the same metrics and checkpoints), or an
    existing folder (`folder`)."""

    meaning: str
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    min_items: int = 0
    choices: tuple[str, ...] | None = None
    folder: bool = False

    @property
    def bounded(self) -> bool:
        return any(b is not None for b in (self.ge, self.gt, self.le, self.lt))

    def bounds_text(self) -> str:
        """`>= 1`, `> 0`, `in (0, 1)`, `in [0, 1]`, ... (empty without bounds)."""
        lo = f"{'[' if self.ge is not None else '('}{_num(self.ge if self.ge is not None else self.gt)}"
        hi = f"{_num(self.le if self.le is not None else self.lt)}{']' if self.le is not None else ')'}"
        has_lo, has_hi = self.ge is not None or self.gt is not None, self.le is not None or self.lt is not None
        if has_lo and has_hi:
            return f"in {lo}, {hi}"
        if has_lo:
            return f">= {_num(self.ge)}" if self.ge is not None else f"> {_num(self.gt)}"
        if has_hi:
            return f"<= {_num(self.le)}" if self.le is not None else f"< {_num(self.lt)}"
        return ""

    def ok(self, v: float) -> bool:
        if isinstance(v, float) and not math.isfinite(v):
            return False  # NaN compares false with every bound, and inf passes one-sided ones
        return not (
            (self.ge is not None and v < self.ge)
            or (self.gt is not None and v <= self.gt)
            or (self.le is not None and v > self.le)
            or (self.lt is not None and v >= self.lt)
        )


def _num(v: float | None) -> str:
    return f"{v:g}" if v is not None else ""


@dataclass(frozen=True)
class Relation:
    """A condition across settings: `holds(config)`; `allowed` says it in words for the error."""

    keys: tuple[str, ...]
    holds: Callable[[Any], bool]
    allowed: str


def no_folder_with_digits(key: str) -> Relation:
    """The rule of an experiment whose `key` setting picks "mnist" (read from `data_dir`) or the
    built-in "digits": a folder given with the digits would be ignored without a word (as with
    `--quick --data-dir DIR`, where quick mode picks the digits), so it is refused instead."""
    return Relation(
        (key, "data_dir"),
        lambda c: getattr(c, key) == "mnist" or not c.data_dir,
        f"no data_dir with {key}=digits (the digits are built in; --quick runs on them: "
        f"add --set {key}=mnist to read MNIST from the folder)",
    )


def setting(
    default: Any,
    meaning: str,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    min_items: int = 0,
    choices: tuple[str, ...] | None = None,
    folder: bool = False,
) -> Any:
    """A config field with its meaning and what it allows (bounds apply to each item of a tuple)."""
    rule = Rule(meaning, ge, gt, le, lt, min_items, choices, folder)
    return dataclasses.field(default=default, metadata={"rule": rule})


def rule_of(f: dataclasses.Field[Any]) -> Rule:
    rule = f.metadata.get("rule")
    return rule if isinstance(rule, Rule) else Rule("")


def _item_type(tp: Any) -> Any:
    """The item type of `tuple[T, ...]`, else None."""
    return typing.get_args(tp)[0] if typing.get_origin(tp) is tuple else None


def _strip_optional(tp: Any) -> Any:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return next(a for a in typing.get_args(tp) if a is not type(None))
    return tp


def show(value: Any) -> str:
    """A value as one would type it after `--set key=`."""
    if isinstance(value, tuple):
        return ",".join(show(v) for v in value)
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def type_text(tp: Any) -> str:
    """A setting's type for `--help`: `int`, `float`, `ints (e.g. 50,200)`, `adam|adamw|sgd`, ..."""
    tp = _strip_optional(tp)
    if typing.get_origin(tp) is typing.Literal:
        return "|".join(map(str, typing.get_args(tp)))
    item = _item_type(tp)
    if item is not None:
        return {int: "ints", float: "numbers", str: "words"}.get(item, "values") + ", comma-separated"
    return getattr(tp, "__name__", str(tp))


def allowed_text(tp: Any, rule: Rule) -> str:
    """What a setting allows, in words (for errors and `--help`)."""
    tp = _strip_optional(tp)
    if typing.get_origin(tp) is typing.Literal:
        return "one of " + ", ".join(map(str, typing.get_args(tp)))
    parts = []
    item = _item_type(tp)
    if item is not None:
        if rule.min_items:
            parts.append(f"at least {rule.min_items} item{'s' if rule.min_items > 1 else ''}")
        if rule.choices:
            parts.append("each one of " + ", ".join(rule.choices) + ", at most once")
        if rule.bounded:
            parts.append(f"each {rule.bounds_text()}")
    elif rule.folder:
        parts.append("empty or an existing folder")
    elif rule.bounded:
        parts.append(("an integer " if tp is int else "") + rule.bounds_text())
    return "; ".join(parts)


def parse_value(key: str, raw: str, tp: Any) -> Any:
    """Parse `raw` as type `tp` (bool, int, float, str, a Literal, `tuple[T, ...]`, or optional)."""
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        if raw not in choices:
            raise ConfigError(f"--set {key}={raw}: expected one of {', '.join(map(str, choices))}")
        return raw
    if origin in (typing.Union, types.UnionType):
        if raw.lower() in ("none", "null"):
            return None
        return parse_value(key, raw, _strip_optional(tp))
    item = _item_type(tp)
    if item is not None:
        # `800`, `50,200`, `(50, 200)` and `[50,200]` all mean the same; an empty value is ()
        inner = raw.strip().strip("()[]").strip()
        parts = [p.strip() for p in inner.split(",")] if inner else []
        if len(parts) > 1 and parts[-1] == "":  # one trailing comma, as in Python's `(800,)`
            parts.pop()
        if "" in parts:  # `4,,4` is a typo, not the tuple (4, 4)
            raise ConfigError(f"--set {key}={raw}: an empty item in the list; expected {type_text(tp)}")
        try:
            return tuple(_scalar(part, item) for part in parts)
        except ValueError:
            example = {int: "800 or 50,200", float: "0.5 or 0.1,0.2"}.get(item, "a or a,b")
            raise ConfigError(f"--set {key}={raw}: expected {type_text(tp)}, e.g. {example}") from None
    try:
        return _scalar(raw, tp)
    except ValueError:
        raise ConfigError(f"--set {key}={raw}: expected {getattr(tp, '__name__', tp)}") from None


def _scalar(raw: str, tp: Any) -> Any:
    if tp is bool:
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(raw)
    if tp is float:
        value = float(raw)
        if not math.isfinite(value):
            raise ValueError(raw)  # nan / inf: never a meaningful setting
        return value
    if tp in (int, str):
        return tp(raw)
    raise ConfigError(f"type {tp} is not settable from the command line")


def validate(config: Any) -> None:
    """Check every setting of `config` against its `Rule` and every `Relation` in `RELATIONS`.

    Raises `ConfigError("--set KEY=VALUE: expected ALLOWED")` for the first setting that fails.
    """
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        value, tp, rule = getattr(config, f.name), _strip_optional(hints[f.name]), rule_of(f)
        if value is None:
            continue
        if not _valid(value, tp, rule):
            raise ConfigError(f"--set {f.name}={show(value)}: expected {allowed_text(tp, rule)}")
    for rel in getattr(type(config), "RELATIONS", ()):
        if not rel.holds(config):
            given = " ".join(f"{k}={show(getattr(config, k))}" for k in rel.keys)
            raise ConfigError(f"--set {given}: expected {rel.allowed}")


def _valid(value: Any, tp: Any, rule: Rule) -> bool:
    if typing.get_origin(tp) is typing.Literal:
        return value in typing.get_args(tp)
    if _item_type(tp) is not None:
        items = tuple(value)
        if len(items) < rule.min_items:
            return False
        if rule.choices and (any(v not in rule.choices for v in items) or len(set(items)) < len(items)):
            return False
        return all(rule.ok(v) for v in items) if rule.bounded else True
    if rule.folder:
        return value == "" or Path(value).is_dir()
    return rule.ok(value) if rule.bounded else True


def settings_help(config_cls: type, quick: dict[str, Any] | None = None) -> str:
    """One block per setting: `name  TYPE  (default D; allowed)` and its meaning; then the relations."""
    hints = typing.get_type_hints(config_cls)
    lines = []
    for f in dataclasses.fields(config_cls):
        tp, rule = hints[f.name], rule_of(f)
        allowed = allowed_text(tp, rule)
        default = show(f.default) if f.default != "" else '""'
        extra = f"; --quick: {show(quick[f.name])}" if quick and f.name in quick else ""
        lines.append(f"  {f.name} ({type_text(tp)}, default {default}{extra}{'; ' + allowed if allowed else ''})")
        lines.append(f"      {rule.meaning}")
    relations = getattr(config_cls, "RELATIONS", ())
    if relations:
        lines.append("  and together: " + "; ".join(r.allowed for r in relations))
    return "\n".join(lines)
