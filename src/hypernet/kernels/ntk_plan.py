"""Planning an empirical NTK before any large allocation: which method runs, in which blocks, and
its estimated peak memory against the budget `max_memory`.

Estimates come from a probe: the model runs on 1 and on 2 rows while a dispatch mode adds up the
bytes of every tensor an operation creates (views excluded). The difference is the memory one
more row costs (its share of the autograd graph); the rest is batch-independent (e.g. scaled
weight copies). Each method's peak is then a formula in the block sizes (see the `*_peak`
functions); blocks shrink until the formula fits the budget.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

Inputs = Any  # a Tensor [N, ...] or a tuple of Tensors sharing N


@dataclass(frozen=True)
class NTKPlan:
    """How `empirical_ntk` computes a kernel (the one `plan_empirical_ntk` returns is the one run).

    `method`: `"structured"`, `"jacobian"` or `"ntvp"`; `reason`: why that method; `shape`: the
    result's shape; `block`: rows of `x1` and of `x2` per block; `products`: NTK-vector products
    run at once (`"ntvp"` only); `peak_bytes`: estimated peak memory of this blocking, result
    included; `max_memory`: the budget it was fitted to (bytes).
    """

    method: str
    reason: str
    output: str
    shape: tuple[int, ...]
    n_params: int
    block: tuple[int, int]
    products: int | None
    peak_bytes: int
    max_memory: int

    def __str__(self) -> str:
        extra = f", {self.products} NTK-vector products at once" if self.products is not None else ""
        return (
            f"method={self.method!r} ({self.reason}); output {self.output!r} {list(self.shape)}, "
            f"{self.n_params} parameters, blocks of {self.block[0]}x{self.block[1]} rows{extra}; "
            f"estimated peak {mib(self.peak_bytes)} of max_memory {mib(self.max_memory)}"
        )


@dataclass(frozen=True)
class Probe:
    """What the probe measured: `n_outputs` O, `itemsize` of the output dtype, `row_bytes` (memory
    one more input row costs in a forward), `fixed_bytes` (batch-independent forward memory),
    `param_bytes`, and the output dtype/device."""

    n_outputs: int
    itemsize: int
    row_bytes: int
    fixed_bytes: int
    param_bytes: int
    dtype: torch.dtype
    device: torch.device


def mib(n: float) -> str:
    """`n` bytes, human-readable."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def default_budget(device: torch.device) -> int:
    """Half the free memory of a CUDA device; a quarter of the physical memory on CPU (4 GiB where
    the system does not say)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free // 2)
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 4)
    except (ValueError, OSError, AttributeError):
        return 4 * 2**30


class _SavedBytes:
    """Adds up the storage bytes autograd saves for backward (each storage once): the memory a
    forward pass keeps alive until its backward. Cheaper than a dispatch mode, which would import
    `torch._dynamo` (about a second, once) on first use."""

    def __init__(self) -> None:
        self.total = 0
        self.seen: set[int] = set()

    def pack(self, t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in self.seen:
            self.seen.add(storage.data_ptr())
            self.total += storage.nbytes()
        return t

    def unpack(self, t: Tensor) -> Tensor:
        return t


def rows(inputs: Inputs, index: slice) -> Inputs:
    """Rows `index` of every tensor in `inputs`."""
    return tuple(t[index] for t in inputs) if isinstance(inputs, tuple) else inputs[index]


def n_rows(inputs: Inputs) -> int:
    return int((inputs[0] if isinstance(inputs, tuple) else inputs).shape[0])


def probe(fn: Callable[[dict[str, Tensor], Inputs], Tensor], params: dict[str, Tensor], x: Inputs) -> Probe:
    """Run `fn` on the first 1 and 2 rows of `x` (one row if that is all there is), measuring memory."""
    created = []
    out: Tensor | None = None
    live = {k: v.detach().requires_grad_(True) for k, v in params.items()}
    for k in (1, 2) if n_rows(x) >= 2 else (1,):
        first = rows(x, slice(0, k))  # copied: a view would count all of x's storage
        first = tuple(t.clone() for t in first) if isinstance(first, tuple) else first.clone()
        saved = _SavedBytes()
        with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(saved.pack, saved.unpack):
            out = fn(live, first)
        if not isinstance(out, Tensor):
            raise TypeError(f"f: expected the model to return a Tensor [N, O], got {type(out).__name__}")
        created.append(saved.total + out.untyped_storage().nbytes())
    assert out is not None
    if out.ndim != 2:
        raise ValueError(f"f: expected model outputs [N, O], got shape {list(out.shape)}")
    row = created[1] - created[0] if len(created) == 2 else created[0]
    row = max(row, 0)
    return Probe(
        n_outputs=int(out.shape[1]),
        itemsize=out.element_size(),
        row_bytes=row,
        fixed_bytes=max(created[0] - row, 0),
        param_bytes=sum(p.numel() * p.element_size() for p in params.values()),
        dtype=out.dtype,
        device=out.device,
    )


def result_shape(n1: int, n2: int, o: int, output: str) -> tuple[int, ...]:
    return {"full": (n1, n2, o, o), "trace": (n1, n2), "diagonal": (n1, n2, o)}[output]


def per_pair(o: int, output: str) -> int:
    """Numbers per (row, row) pair in the result."""
    return {"full": o * o, "trace": 1, "diagonal": o}[output]


def fit_square(n1: int, n2: int, peak: Callable[[int, int], int], budget: int) -> tuple[int, int] | None:
    """The largest blocks `(min(s, n1), min(s, n2))` whose `peak` fits `budget`; `None` if 1x1 does not."""
    if peak(n1, n2) <= budget:
        return n1, n2
    lo, hi = 1, max(n1, n2)
    if peak(1, 1) > budget:
        return None
    while lo < hi:  # peak grows with s: the largest s that fits
        mid = (lo + hi + 1) // 2
        if peak(min(mid, n1), min(mid, n2)) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return min(lo, n1), min(lo, n2)


def blocks(n1: int, n2: int, r: int, c: int, symmetric: bool) -> Iterator[tuple[slice, slice]]:
    """Row slices of `x1` and `x2` per block; for a symmetric kernel (`r == c`) only blocks on or
    above the diagonal (the rest are their transposes, see `mirror`)."""
    for i in range(0, n1, r):
        for j in range(i if symmetric else 0, n2, c):
            yield slice(i, min(n1, i + r)), slice(j, min(n2, j + c))


def mirror(out: Tensor, i: slice, j: slice, output: str) -> None:
    """Fill block `(j, i)` of a symmetric kernel from block `(i, j)`."""
    if i == j:
        return
    block = out[i, j]
    out[j, i] = block.permute(1, 0, 3, 2) if output == "full" else block.transpose(0, 1)
