"""Per-sample weights without `vmap`: a `TorchFunctionMode` that runs the module once on the whole
batch and turns every layer call that meets a per-sample weight `[B, *shape]` into its batched form
(`bmm` for `linear`, grouped convolution for `conv`, batch statistics plus per-sample affine for
normalisation, a time loop with `bmm` for RNN/GRU/LSTM).

Why not only `vmap`: under `vmap` each sample is its own batch of one, so a BatchNorm in training
mode would normalise every sample by itself, and PyTorch has no batching rule for `aten::gru` or
`aten::lstm`. Here every op sees the real batch, so BatchNorm uses statistics over the whole batch
and updates its running buffers once, exactly like an ordinary forward pass.

Only functions with a rule (`_RULES`, or added by `register_rule`) may touch a per-sample tensor;
besides them only metadata is allowed (`dtype`, `device`, ...; `shape`, `size()`, `ndim` answer for
one sample, as under `vmap`) and `.data` (read as `detach()`, itself per-sample). Anything else
(`.T`, `.mT`, `t()`, `matmul`, ...) raises `NoBatchedRule` naming it: nothing is silently
broadcast. `TargetNetwork(engine="auto")` then runs that module under `vmap`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

#: Module types whose own parameters this engine can take per sample. A subclass counts only when
#: it keeps the base class's `forward` (an overriding `forward` may read the weights its own way).
SUPPORTED_MODULES: tuple[type[nn.Module], ...] = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.modules.batchnorm._BatchNorm,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.Embedding,
    nn.RNN,
    nn.GRU,
    nn.LSTM,
)

#: Modules whose forward reads their children's parameters directly (fused kernels): run under vmap.
_OPAQUE_MODULES: tuple[type[nn.Module], ...] = (nn.MultiheadAttention,)

# Metadata that does not depend on the values nor on the extra sample dimension: always harmless.
_SAFE_ATTRS = {
    "dtype", "device", "requires_grad", "layout", "is_cuda", "is_cpu", "is_meta", "is_mps", "is_xpu",
    "is_sparse", "is_quantized", "is_nested", "is_mkldnn",
}  # fmt: skip
_SAFE_METHODS = {"is_floating_point", "is_complex", "get_device", "element_size"}
# Shape metadata: answered for ONE sample (as under vmap), so code that reads `weight.shape` sees the
# layer's own shape, never the batch of weight sets.
_SHAPE_ATTRS = {"shape", "ndim"}
_SHAPE_METHODS = {"size", "dim", "ndimension", "numel", "nelement", "__len__"}

_user_rules: dict[Callable[..., Any], Callable[..., Any]] = {}
_user_modules: list[type[nn.Module]] = []


class NoBatchedRule(NotImplementedError):
    """A generated per-sample tensor reached a function without a batched rule (`op`), inside the
    forward of `module` (the innermost module running then, or None). `engine="auto"` catches it and
    runs that module (or the whole target) under `vmap`; `engine="batched"` lets it through."""

    def __init__(self, message: str, op: str, module: nn.Module | None = None, fatal: bool = False) -> None:
        super().__init__(message)
        self.op, self.module, self.fatal = op, module, fatal


def register_rule(
    torch_function: Callable[..., Any],
    rule: Callable[..., Any],
    *,
    modules: type[nn.Module] | Sequence[type[nn.Module]] = (),
) -> None:
    """Teach the per-sample engine a function: `rule(ctx, *args, **kwargs)` replaces
    `torch_function(*args, **kwargs)` whenever an argument is a generated per-sample tensor.

    `ctx` is the running engine: `ctx.B` (the batch size), `ctx.batch_dim`, `ctx.is_ps(t)` (is `t` a
    per-sample tensor `[B, *shape]`?) and `ctx.batched(t)` (`t` as `[B, *shape]`, shared tensors
    expanded without a copy). Inside the rule, torch functions run normally. `modules`: the layer
    types whose own generated parameters reach only functions with rules (so they need not run
    under `vmap`), e.g. `nn.PReLU` for `F.prelu`; the rule applies to any module either way.

    Example, PReLU with a per-sample slope (`x: [B, C, ...]`, `weight: [B, C]`)::

        def prelu(ctx, input, weight):
            w = ctx.batched(weight).reshape(ctx.B, -1, *[1] * (input.ndim - 2))
            return torch.where(input >= 0, input, w * input)

        hn.register_rule(torch.nn.functional.prelu, prelu, modules=nn.PReLU)
    """
    if not callable(torch_function) or not callable(rule):
        raise TypeError("register_rule: torch_function and rule must be callable")
    types = (modules,) if isinstance(modules, type) else tuple(modules)
    for t in types:
        if not (isinstance(t, type) and issubclass(t, nn.Module)):
            raise TypeError(f"register_rule: modules must be nn.Module types, got {t!r}")
    _user_rules[torch_function] = rule
    _user_modules.extend(t for t in types if t not in _user_modules)


def unregister_rule(torch_function: Callable[..., Any], modules: Sequence[type[nn.Module]] = ()) -> None:
    """Undo `register_rule` (built-in rules stay)."""
    _user_rules.pop(torch_function, None)
    for t in modules:
        if t in _user_modules:
            _user_modules.remove(t)


def _rule(func: Callable[..., Any]) -> Callable[..., Any] | None:
    return _user_rules.get(func) or _RULES.get(func)


def known(module: nn.Module) -> bool:
    """True when `module`'s own parameters may be per-sample in this engine: its type is supported
    (or registered), or a subclass of one that keeps that type's `forward`."""
    for base in (*SUPPORTED_MODULES, *_user_modules):
        if isinstance(module, base) and type(module).forward is base.forward:
            return True
    return False


def vmap_modules(module: nn.Module, generated: Sequence[str]) -> dict[str, str]:
    """The submodules (name -> why) that must run under `vmap` because they own generated tensors
    but are not `known`, or read them inside a fused kernel (attention). Outermost only; `""` is
    the whole module."""
    owners = dict(module.named_modules())
    found: dict[str, str] = {}
    for name in generated:
        prefix = name.rpartition(".")[0]
        parts = prefix.split(".") if prefix else []
        for i in range(len(parts)):  # an opaque ancestor reads its children's weights itself
            anc = ".".join(parts[:i])
            if isinstance(owners[anc], _OPAQUE_MODULES):
                found.setdefault(anc, f"{type(owners[anc]).__name__} reads its layers' weights in a fused kernel")
                break
        else:
            if not known(owners[prefix]):
                found.setdefault(prefix, _why_unknown(owners[prefix]))
    return {n: why for n, why in found.items() if not any(_inside(n, m) for m in found if m != n)}


def _why_unknown(m: nn.Module) -> str:
    for base in SUPPORTED_MODULES:
        if isinstance(m, base):
            return f"{type(m).__name__} overrides {base.__name__}.forward"
    return f"{type(m).__name__} is not a layer type with batched rules"


def _inside(name: str, outer: str) -> bool:
    return outer == "" or name == outer or name.startswith(outer + ".")


def supports(module: nn.Module, generated: Sequence[str]) -> bool:
    """True when every generated parameter is owned by a module type this engine handles."""
    return not vmap_modules(module, generated)


def _innermost_module() -> nn.Module | None:
    """The module whose `forward` is running deepest in the Python stack (for error messages and
    to pick the module that `auto` runs under vmap). None while `torch.compile` traces."""
    if torch.compiler.is_compiling():
        return None
    frame = sys._getframe(2)
    while frame is not None:
        owner = frame.f_locals.get("self")
        if isinstance(owner, nn.Module):
            return owner
        frame = frame.f_back  # type: ignore[assignment]
    return None


class PerSampleMode(TorchFunctionMode):
    """Runs layer functions with per-sample weights `[B, *shape]` as batched ops.

    Args:
        per_sample: the per-sample tensors (as passed to `functional_call`).
        batch_size: B.
        batch_dim: where the batch sits in activations seen by `linear` (0 unless sequence-first).
    """

    def __init__(self, per_sample: Sequence[Tensor], batch_size: int, batch_dim: int = 0) -> None:
        super().__init__()
        self.ids = {id(t) for t in per_sample}
        self._keep = list(per_sample)  # keep alive so ids stay unique
        self.B = batch_size
        self.batch_dim = batch_dim
        self.paused = False  # set while a vmapped module prepares its inputs (see hypernet.fallback)

    def is_ps(self, t: Any) -> bool:
        return isinstance(t, Tensor) and id(t) in self.ids

    def adopt(self, t: Tensor) -> Tensor:
        """Mark `t` (a new `[B, *shape]` tensor made from per-sample ones) as per-sample, and return it."""
        self.ids.add(id(t))
        self._keep.append(t)
        return t

    def batched(self, t: Tensor) -> Tensor:
        """A per-sample tensor as is; a shared one expanded to `[B, *shape]` (a view, no copy)."""
        return t if self.is_ps(t) else t.unsqueeze(0).expand(self.B, *t.shape)

    def __torch_function__(
        self, func: Callable[..., Any], types: Any, args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        kwargs = kwargs or {}
        flat, _ = tree_flatten((args, kwargs))
        if self.paused or not any(self.is_ps(a) for a in flat):
            return func(*args, **kwargs)
        rule = _rule(func)
        if rule is not None:
            return rule(self, *args, **kwargs)
        name = getattr(func, "__name__", "")
        if name == "__get__":  # a property: `func.__self__` is the attribute's descriptor
            name = getattr(getattr(func, "__self__", None), "__name__", name)
            if name in _SAFE_ATTRS:
                return func(*args, **kwargs)
            if name == "shape":
                return args[0].shape[1:]
            if name == "ndim":
                return args[0].ndim - 1
            if name == "data" and self.is_ps(args[0]):  # read as `detach()`: the result is per-sample too
                return self.adopt(args[0].detach())
        elif name in _SAFE_METHODS and len(args) == 1 and not kwargs:
            return func(*args, **kwargs)
        elif name in _SHAPE_METHODS and self.is_ps(args[0]):
            return _one_sample_shape(name, args[0], *args[1:], **kwargs)
        module = _innermost_module()
        where = f" in {type(module).__name__}.forward" if module is not None else ""
        raise NoBatchedRule(
            f"per-sample weights: {name or func!r} received a generated tensor{where} and has no batched rule "
            "(it would broadcast over the batch of weight sets); engine='auto' runs such a module under vmap, "
            "or teach the engine with hn.register_rule",
            op=str(name or func),
            module=module,
        )


def _one_sample_shape(name: str, t: Tensor, dim: int | None = None) -> Any:
    """`size/dim/numel/len` of one sample of the per-sample tensor `t: [B, *shape]`."""
    shape = t.shape[1:]
    if name in ("dim", "ndimension"):
        return len(shape)
    if name in ("numel", "nelement"):
        return shape.numel()
    if name == "__len__":
        if not shape:
            raise TypeError("len() of a 0-d tensor")
        return shape[0]
    return shape if dim is None else shape[dim]


def _check_batch(mode: PerSampleMode, x: Tensor, dim: int, what: str) -> None:
    if x.shape[dim] != mode.B:
        raise ValueError(
            f"per-sample weights: {what} input has {x.shape[dim]} rows along dim {dim}, "
            f"expected the batch size {mode.B}"
        )


def _linear(mode: PerSampleMode, input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    x = input.movedim(mode.batch_dim, 0) if mode.batch_dim else input
    _check_batch(mode, x, 0, "linear")
    lead = x.shape[:-1]
    x3 = x.reshape(mode.B, -1, x.shape[-1])
    if mode.is_ps(weight):
        if bias is None:
            y = torch.bmm(x3, weight.transpose(1, 2))
        else:
            y = torch.baddbmm(mode.batched(bias).unsqueeze(1), x3, weight.transpose(1, 2))
    else:
        y = F.linear(x3, weight) + mode.batched(bias).unsqueeze(1)  # type: ignore[arg-type]
    y = y.reshape(*lead, y.shape[-1])
    return y.movedim(0, mode.batch_dim) if mode.batch_dim else y


_SPATIAL = {1: "L", 2: "H, W", 3: "D, H, W"}


def _conv(conv: Callable[..., Tensor], spatial: int) -> Callable[..., Tensor]:
    def rule(
        mode: PerSampleMode,
        input: Tensor,
        weight: Tensor,
        bias: Tensor | None = None,
        stride: Any = 1,
        padding: Any = 0,
        dilation: Any = 1,
        groups: int = 1,
    ) -> Tensor:
        # Grouped-convolution trick: the batch folds into channels, each sample its own groups.
        if input.ndim != spatial + 2:
            raise ValueError(
                f"per-sample weights: conv{spatial}d needs a batched input [B, C, {_SPATIAL[spatial]}] "
                f"with one sample per weight set, got shape {list(input.shape)}; an unbatched input needs "
                "x.unsqueeze(0) (and weights [1, P] or [P])"
            )
        _check_batch(mode, input, 0, "conv")
        B = mode.B
        w = mode.batched(weight)
        x = input.reshape(1, B * input.shape[1], *input.shape[2:])
        w = w.reshape(B * w.shape[1], *w.shape[2:])
        b = None if bias is None else mode.batched(bias).reshape(-1)
        y = conv(x, w, b, stride, padding, dilation, groups * B)
        return y.reshape(B, -1, *y.shape[2:])

    return rule


def _affine(mode: PerSampleMode, y: Tensor, weight: Tensor | None, bias: Tensor | None, trailing: int) -> Tensor:
    """`y * weight + bias` with `weight, bias: [*s]` or per-sample `[B, *s]`, aligned to `y: [B, *s, ...]`."""
    if weight is not None:
        w = mode.batched(weight)
        y = y * w.reshape(*w.shape, *([1] * trailing))
    if bias is not None:
        b = mode.batched(bias)
        y = y + b.reshape(*b.shape, *([1] * trailing))
    return y


def _batch_norm(
    mode: PerSampleMode,
    input: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> Tensor:
    # Statistics over the whole batch, then each sample's own affine parameters.
    _check_batch(mode, input, 0, "batch_norm")
    y = F.batch_norm(input, running_mean, running_var, None, None, training, momentum, eps)
    return _affine(mode, y, weight, bias, input.ndim - 2)


def _layer_norm(
    mode: PerSampleMode,
    input: Tensor,
    normalized_shape: Sequence[int],
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
) -> Tensor:
    # sequence-first inputs ([S, B, ...], batch_dim 1): the batch moves to the front and back, as in
    # `_linear`; it cannot lie among the normalized (last) dims
    moved = 0 < mode.batch_dim < input.ndim - len(normalized_shape)
    x = input.movedim(mode.batch_dim, 0) if moved else input
    _check_batch(mode, x, 0, "layer_norm")
    y = F.layer_norm(x, normalized_shape, None, None, eps)
    # weight, bias: [*normalized_shape] -> [B, 1, ..., 1, *normalized_shape] to skip the middle dims
    mid = x.ndim - 1 - len(normalized_shape)

    def aligned(t: Tensor) -> Tensor:
        t = mode.batched(t)
        return t.reshape(mode.B, *([1] * mid), *t.shape[1:])

    if weight is not None:
        y = y * aligned(weight)
    if bias is not None:
        y = y + aligned(bias)
    return y.movedim(0, mode.batch_dim) if moved else y


def _group_norm(
    mode: PerSampleMode,
    input: Tensor,
    num_groups: int,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
) -> Tensor:
    _check_batch(mode, input, 0, "group_norm")
    y = F.group_norm(input, num_groups, None, None, eps)
    return _affine(mode, y, weight, bias, input.ndim - 2)


def _embedding(
    mode: PerSampleMode,
    input: Tensor,
    weight: Tensor,
    padding_idx: int | None = None,
    max_norm: float | None = None,
    norm_type: float = 2.0,
    scale_grad_by_freq: bool = False,
    sparse: bool = False,
) -> Tensor:
    if max_norm is not None or scale_grad_by_freq or sparse:
        raise NoBatchedRule(
            "per-sample weights: Embedding with max_norm, scale_grad_by_freq or sparse has no batched rule",
            "embedding",
            _innermost_module(),
        )
    moved = 0 < mode.batch_dim < input.ndim  # sequence-first ids [S, B]: batch to the front and back
    if moved:
        input = input.movedim(mode.batch_dim, 0)
    _check_batch(mode, input, 0, "embedding")
    if padding_idx is not None:  # as F.embedding: the padding row is looked up but gets no gradient
        keep = torch.ones(weight.shape[-2], 1, dtype=weight.dtype, device=weight.device)
        keep[padding_idx] = 0
        weight = weight * keep + (weight * (1 - keep)).detach()
    rows = torch.arange(mode.B, device=input.device).reshape(mode.B, *([1] * (input.ndim - 1)))
    out = weight[rows, input]
    return out.movedim(0, mode.batch_dim) if moved else out


def _rnn(cell: str) -> Callable[..., Any]:
    gates = {"lstm": 4, "gru": 3}.get(cell, 1)

    def rule(
        mode: PerSampleMode,
        input: Tensor,
        hx: Any,
        params: Sequence[Tensor],
        has_biases: bool,
        num_layers: int,
        dropout: float,
        train: bool,
        bidirectional: bool,
        batch_first: bool,
    ) -> Any:
        if not isinstance(input, Tensor) or input.ndim != 3:
            raise NoBatchedRule(
                "per-sample weights: RNNs need a batched, unpacked 3-D input for the batched rule",
                cell,
                _innermost_module(),
            )
        x = input if batch_first else input.transpose(0, 1)  # [B, T, F]
        _check_batch(mode, x, 0, cell)
        h0, c0 = hx if cell == "lstm" else (hx, None)
        dirs = 2 if bidirectional else 1
        per = len(params) // (num_layers * dirs)  # w_ih, w_hh, [b_ih, b_hh], [w_hr: LSTM projection]
        proj = per == (4 if has_biases else 2) + 1
        h_out, c_out = [], []
        layer_in = x
        for layer in range(num_layers):
            outs = []
            for d in range(dirs):
                k = (layer * dirs + d) * per
                w_ih, w_hh = mode.batched(params[k]), mode.batched(params[k + 1])
                b_ih = mode.batched(params[k + 2]) if has_biases else None
                b_hh = mode.batched(params[k + 3]) if has_biases else None
                w_hr_t = mode.batched(params[k + per - 1]).transpose(1, 2) if proj else None
                h = h0[layer * dirs + d]
                c = c0[layer * dirs + d] if c0 is not None else None
                seq = layer_in.flip(1) if d == 1 else layer_in
                gx = torch.bmm(seq, w_ih.transpose(1, 2))  # [B, T, G*H], all steps at once
                if b_ih is not None:
                    gx = gx + b_ih.unsqueeze(1)
                w_hh_t = w_hh.transpose(1, 2)
                steps = []
                for t in range(seq.shape[1]):
                    gh = torch.bmm(h.unsqueeze(1), w_hh_t).squeeze(1)
                    if b_hh is not None:
                        gh = gh + b_hh
                    if cell == "lstm":
                        i, f, g, o = (gx[:, t] + gh).chunk(gates, dim=1)
                        assert c is not None
                        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                        h = torch.sigmoid(o) * torch.tanh(c)
                        if w_hr_t is not None:
                            h = torch.bmm(h.unsqueeze(1), w_hr_t).squeeze(1)
                    elif cell == "gru":
                        xr, xz, xn = gx[:, t].chunk(gates, dim=1)
                        hr, hz, hn = gh.chunk(gates, dim=1)
                        r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
                        n = torch.tanh(xn + r * hn)
                        h = (1 - z) * n + z * h
                    else:  # Elman RNN
                        pre = gx[:, t] + gh
                        h = torch.tanh(pre) if cell == "rnn_tanh" else torch.relu(pre)
                    steps.append(h)
                out = torch.stack(steps, dim=1)
                outs.append(out.flip(1) if d == 1 else out)
                h_out.append(h)
                c_out.append(c)
            layer_in = torch.cat(outs, dim=2) if dirs == 2 else outs[0]
            if train and dropout > 0 and layer < num_layers - 1:
                layer_in = F.dropout(layer_in, dropout, True)
        output = layer_in if batch_first else layer_in.transpose(0, 1)
        h_n = torch.stack(h_out, 0)
        if cell == "lstm":
            return output, h_n, torch.stack(c_out, 0)  # type: ignore[arg-type]
        return output, h_n

    return rule


_RULES: dict[Callable[..., Any], Callable[..., Any]] = {
    F.linear: _linear,
    torch.conv1d: _conv(F.conv1d, 1),
    torch.conv2d: _conv(F.conv2d, 2),
    torch.conv3d: _conv(F.conv3d, 3),
    F.batch_norm: _batch_norm,
    F.layer_norm: _layer_norm,
    F.group_norm: _group_norm,
    F.embedding: _embedding,
    torch.rnn_tanh: _rnn("rnn_tanh"),
    torch.rnn_relu: _rnn("rnn_relu"),
    torch.gru: _rnn("gru"),
    torch.lstm: _rnn("lstm"),
}
