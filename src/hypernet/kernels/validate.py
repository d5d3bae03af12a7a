"""Argument checks shared by every kernel function: each raises one `ValueError` (or `TypeError`
for a wrong type) whose message starts with the argument's name, so a caller sees at once which
input is wrong and why."""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch
from torch import Tensor


def count(name: str, value: Any, minimum: int) -> int:
    """An integer `>= minimum` (depths, dimensions, block sizes); bools and floats are refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an int >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name}: must be >= {minimum}, got {value}")
    return int(value)


def optional_count(name: str, value: Any, minimum: int = 1) -> int | None:
    """`None` (the default applies) or an int `>= minimum`."""
    return None if value is None else count(name, value, minimum)


def nonnegative(name: str, value: Any, *, positive: bool = False) -> float:
    """A finite real number `>= 0` (or `> 0` with `positive=True`): variances, rates, times."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a real number, got {value!r}")
    value = float(value)
    if math.isnan(value) or math.isinf(value) or value < 0 or (positive and value == 0):
        raise ValueError(f"{name}: must be a finite number {'> 0' if positive else '>= 0'}, got {value}")
    return value


def finite(name: str, t: Tensor) -> Tensor:
    """`t` itself, after checking that every entry is finite (no NaN or inf anywhere)."""
    if (t.is_floating_point() or t.is_complex()) and not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t)).sum())
        raise ValueError(f"{name}: contains {bad} non-finite value(s) (NaN or inf)")
    return t


def matrix(name: str, t: Any, rows: str = "N", cols: str = "d") -> Tensor:
    """A Tensor `[rows, cols]` with at least one column and only finite entries."""
    if not isinstance(t, Tensor):
        raise TypeError(f"{name}: expected a Tensor [{rows}, {cols}], got {type(t).__name__}")
    if t.ndim != 2:
        raise ValueError(f"{name}: expected a Tensor [{rows}, {cols}], got shape {list(t.shape)}")
    if t.shape[1] < 1:
        raise ValueError(f"{name}: needs {cols} >= 1 columns, got shape {list(t.shape)}")
    if t.dtype == torch.bool or t.is_complex():
        raise TypeError(f"{name}: expected a real-valued Tensor, got {t.dtype}")
    return finite(name, t)


def float_dtype(name: str, dtype: Any) -> torch.dtype:
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"{name}: expected a floating torch.dtype (e.g. torch.float64), got {dtype!r}")
    return dtype


def choice(name: str, value: Any, options: tuple[str, ...]) -> str:
    if value not in options:
        raise ValueError(f"{name}: expected one of {list(options)}, got {value!r}")
    return str(value)


def mlp_arguments(depth: Any, weight_var: Any, bias_var: Any, block: Any = None, depth_name: str = "depth") -> None:
    """The shared arguments of the MLP recursion. `depth` counts hidden layers, so 0 (a linear
    model: NTK = NNGP = the linear kernel) is valid."""
    count(depth_name, depth, 0)
    nonnegative("weight_var", weight_var)
    nonnegative("bias_var", bias_var)
    optional_count("block", block, 1)
