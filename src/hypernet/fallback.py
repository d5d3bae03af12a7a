"""How `TargetNetwork(engine="auto")` runs what the batched engine cannot: one submodule under
`vmap` inside the batched pass, and the undoing of a failed attempt.

A module run under `vmap` inside the batched pass gets its positional Tensor arguments split along
`batch_dim` (the layout every batched rule assumes of its input, checked by size), the keyword
arguments named in `PER_SAMPLE_KEYWORDS` split along their own batch dim, and its other keyword
arguments whole; each sample then sees its own slice of the module's generated tensors. Touching
any other generated tensor still raises `NoBatchedRule`, so nothing broadcasts silently.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_unflatten

from hypernet.batched_ops import NoBatchedRule, PerSampleMode

_TENSOR = object()  # marks where a Tensor output goes back into a module's output structure

#: Keyword arguments that hold one row per sample, and the dim of those rows. Under `vmap` (the whole
#: target's, or one module's inside the batched pass) each sample gets its own row; every other
#: keyword argument is handed to every sample whole. PyTorch's attention modules take padding masks
#: as `[B, S]` whatever the layout of their inputs (`batch_first` or not), hence dim 0. Add an entry
#: for a module of your own whose keyword argument carries the batch.
PER_SAMPLE_KEYWORDS: dict[str, int] = {
    "key_padding_mask": 0,
    "src_key_padding_mask": 0,
    "tgt_key_padding_mask": 0,
    "memory_key_padding_mask": 0,
}


def split_keywords(kwargs: dict[str, Any], B: int) -> tuple[dict[str, Any], list[str], list[Tensor], list[int]]:
    """Split `kwargs` into those handed whole and the per-sample Tensors of `PER_SAMPLE_KEYWORDS`.

    Returns `(whole, names, tensors, dims)`: `tensors[i]` (for keyword `names[i]`) has `B` rows along
    `dims[i]`. A per-sample keyword without `B` rows there is refused, naming it."""
    whole: dict[str, Any] = {}
    names: list[str] = []
    tensors: list[Tensor] = []
    dims: list[int] = []
    for key, value in kwargs.items():
        dim = PER_SAMPLE_KEYWORDS.get(key)
        if dim is None or not isinstance(value, Tensor):
            whole[key] = value
            continue
        if value.ndim <= dim or value.shape[dim] != B:
            raise ValueError(
                f"{key}: shape {list(value.shape)} has no row per sample ({B} along dim {dim}); with per-sample "
                f"weights it must hold one row for each of the {B} samples"
            )
        names.append(key)
        tensors.append(value)
        dims.append(dim)
    return whole, names, tensors, dims


def with_rows(
    whole: dict[str, Any], names: Sequence[str], rows: Sequence[Tensor], dims: Sequence[int]
) -> dict[str, Any]:
    """The keyword arguments of one sample under `vmap`: `whole` plus each per-sample row, its batch
    dim put back with size 1 (the module sees a batch of one, as its positional inputs do)."""
    return {**whole, **{key: row.unsqueeze(dim) for key, row, dim in zip(names, rows, dims, strict=True)}}


@contextmanager
def vmap_friendly() -> Iterator[None]:
    """Attention kernels that `vmap` batches natively: the fused fast path has no batching rule nor
    derivative, and the math SDPA kernel is made of batchable ops (no per-sample loop inside vmap).
    Under `torch.compile` nothing is switched (these switches cannot be traced)."""
    if torch.compiler.is_compiling():
        yield
        return
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with sdpa_kernel(SDPBackend.MATH):
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


def inside(name: str, outer: str) -> bool:
    """True when the dotted `name` is `outer` or lies under it (`""` is the root)."""
    return outer == "" or name == outer or name.startswith(outer + ".")


class Snapshot:
    """The module's buffers and the RNG state before an attempt; `restore()` undoes the attempt, so
    a failed batched try leaves BatchNorm's running statistics (and dropout's draws) untouched."""

    def __init__(self, module: nn.Module, device: torch.device) -> None:
        self.buffers = [
            (owner, leaf, buf, buf.clone())
            for owner in module.modules()
            for leaf, buf in owner._buffers.items()
            if buf is not None
        ]
        self.device = device
        self.cpu_rng = torch.get_rng_state()
        self.cuda_rng = torch.cuda.get_rng_state(device) if device.type == "cuda" else None

    def restore(self) -> None:
        with torch.no_grad():
            for owner, leaf, buf, saved in self.buffers:
                owner._buffers[leaf] = buf  # undo a reassignment as well as an in-place update
                buf.copy_(saved)
        torch.set_rng_state(self.cpu_rng)
        if self.cuda_rng is not None:
            torch.cuda.set_rng_state(self.cuda_rng, self.device)


class DataAsDetach(TorchFunctionMode):
    """Reads `t.data` as `t.detach()` (the same values, no gradient): `vmap` refuses `.data`."""

    def __torch_function__(
        self, func: Callable[..., Any], types: Any, args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        attribute = getattr(getattr(func, "__self__", None), "__name__", "")
        if getattr(func, "__name__", "") == "__get__" and attribute == "data":
            return args[0].detach()
        return func(*args, **(kwargs or {}))


@contextmanager
def vmapped(root: nn.Module, names: Sequence[str], params: dict[str, Tensor], mode: PerSampleMode) -> Iterator[None]:
    """While active, the submodules `names` of `root` run under `vmap` when called in the batched pass."""
    installed = []
    try:
        for name in names:
            sub = root.get_submodule(name)
            local = {n[len(name) + 1 :] if name else n: t for n, t in params.items() if inside(n, name)}
            sub.forward = _vmapped_forward(sub, name, local, mode)  # an instance attribute, removed below
            installed.append(sub)
        yield
    finally:
        for sub in installed:
            del sub.forward


def _vmapped_forward(sub: nn.Module, name: str, local: dict[str, Tensor], mode: PerSampleMode) -> Callable[..., Any]:
    own_forward = type(sub).forward
    running = [False]
    d, B = mode.batch_dim, mode.B

    def forward(*args: Any, **kwargs: Any) -> Any:
        if running[0]:  # the call from inside vmap below: the module's own forward
            return own_forward(sub, *args, **kwargs)
        why = _why_not(sub, args, B, d)
        if why:
            raise NoBatchedRule(
                f"per-sample weights: {name!r} ({type(sub).__name__}) cannot run under vmap inside the batched "
                f"pass: {why}",
                op="vmap",
                module=sub,
                fatal=True,
            )
        mode.paused = True
        try:  # fresh aliases: vmap reads their sizes, which the mode would answer per sample
            aliases = {k: v.view_as(v) for k, v in local.items()}
        finally:
            mode.paused = False
        structure: list[Any] = []
        whole, names, rows, row_dims = split_keywords(kwargs, B)
        n_args = len(args)

        def one(p: dict[str, Tensor], *xs: Any) -> tuple[Tensor, ...]:
            inputs = tuple(x.unsqueeze(d) if isinstance(x, Tensor) else x for x in xs[:n_args])
            keywords = with_rows(whole, names, xs[n_args:], row_dims)
            running[0] = True
            try:
                with DataAsDetach():
                    out = functional_call(sub, p, inputs, keywords)
            finally:
                running[0] = False
            leaves, spec = tree_flatten(out)
            structure[:] = [spec, [_TENSOR if isinstance(t, Tensor) else t for t in leaves]]
            return tuple(t.squeeze(d) for t in leaves if isinstance(t, Tensor))

        in_dims = (0, *(d if isinstance(a, Tensor) else None for a in args), *row_dims)
        with vmap_friendly():
            outs = iter(vmap(one, in_dims=in_dims, out_dims=d, randomness="different")(aliases, *args, *rows))
        spec, leaves = structure
        return tree_unflatten([next(outs) if leaf is _TENSOR else leaf for leaf in leaves], spec)

    return forward


def _why_not(sub: nn.Module, args: Sequence[Any], B: int, d: int) -> str:
    """Why `sub(*args)` cannot run under vmap here ("" when it can)."""
    if sub.training and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in sub.modules()):
        return "it holds a BatchNorm in training mode, which needs the whole batch's statistics"
    tensors = [a for a in args if isinstance(a, Tensor)]
    if not tensors:
        return "no positional Tensor argument to split into samples"
    for a in tensors:
        if a.ndim <= d or a.shape[d] != B:
            return f"a positional argument of shape {list(a.shape)} has no batch of {B} along dim {d}"
    return ""
