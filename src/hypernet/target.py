"""`TargetNetwork`: call any `nn.Module` with weights given from outside.

`target(x, weights)` takes `weights: [P]` (one set shared by the batch) or `[B, P]` (one set per
sample, `B == x.shape[batch_dim]`). The wrapped module is never mutated: weights are supplied with
`torch.func.functional_call`, and `materialize` returns an independent deep copy.

Per-sample weights run batched, never as a Python loop over samples, by one of two engines:

* `"batched"` (`hypernet.batched_ops`): the module runs once on the whole batch and every layer
  call with a per-sample weight becomes its batched form (`bmm`, grouped conv, ...). Used whenever
  all generated tensors belong to Linear, Conv1d/2d/3d, BatchNorm, LayerNorm, GroupNorm,
  Embedding, GRU or LSTM layers.
* `"vmap"`: `torch.func.vmap` over `functional_call`, for any other module (attention, custom
  layers). Each sample is then a batch of one.

BatchNorm with per-sample weights, in training mode, normalises with statistics over the whole
batch (exactly as the plain module would) and then applies each sample's own affine parameters;
running statistics are updated once per call. In eval mode it uses the running statistics. (The
`"vmap"` engine cannot do this, so a BatchNorm in training mode there raises an error.)
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils._pytree import tree_map

from hypernet import batched_ops
from hypernet.selection import Selector, select_parameters
from hypernet.spec import ParamSpec

Engine = Literal["auto", "batched", "vmap"]


class TargetNetwork(nn.Module):
    """Wraps `module` so its selected parameters can be supplied from outside.

    Args:
        module: any `nn.Module`; kept as a submodule, so its parameters that are *not* generated
            stay ordinary trainable parameters (see `free_parameters`).
        generate: which parameters are generated: `None` (all), names, glob patterns or module
            types (see `hypernet.selection`).
        batch_dim: the batch dimension of the module's input (and outputs), for per-sample weights.
        engine: per-sample engine, `"auto"` picks `"batched"` when supported, else `"vmap"`.
    """

    def __init__(
        self, module: nn.Module, generate: Selector = None, *, batch_dim: int = 0, engine: Engine = "auto"
    ) -> None:
        super().__init__()
        if not isinstance(module, nn.Module):
            raise TypeError(f"TargetNetwork: `module` must be an nn.Module, got {type(module).__name__}")
        if engine not in ("auto", "batched", "vmap"):
            raise ValueError(f"TargetNetwork: engine must be 'auto', 'batched' or 'vmap', got {engine!r}")
        self.module = module
        self.generated_names: list[str] = select_parameters(module, generate)
        self.spec = ParamSpec.from_module(module, self.generated_names)
        self.batch_dim = batch_dim
        supported = batched_ops.supports(module, self.generated_names)
        if engine == "batched" and not supported:
            raise ValueError(
                "TargetNetwork: engine='batched' cannot handle some generated parameters (their modules are "
                "not Linear/Conv/Norm/Embedding/GRU/LSTM); use engine='auto' or 'vmap'"
            )
        self.engine: Literal["batched", "vmap"] = (
            "batched" if engine == "batched" or (engine == "auto" and supported) else "vmap"
        )

    # -- weights ---------------------------------------------------------------------------------
    def initial_weights(self) -> Tensor:
        """The module's own current values of the generated parameters, flattened: `[P]` (detached)."""
        params = dict(self.module.named_parameters())
        return self.spec.flatten({n: params[n].detach() for n in self.generated_names}).clone()

    def free_parameters(self) -> list[nn.Parameter]:
        """The wrapped module's parameters that are not generated (trained directly)."""
        gen = set(self.generated_names)
        return [p for n, p in self.module.named_parameters() if n not in gen]

    def _reference_tensor(self) -> Tensor | None:
        for p in self.module.parameters():
            return p
        for b in self.module.buffers():
            return b
        return None

    def check_weights(self, weights: Tensor, batch: int | None) -> None:
        """Raise a clear error unless `weights` is `[P]` or `[batch, P]` of the module's dtype and device."""
        P = self.spec.numel
        if not isinstance(weights, Tensor):
            raise TypeError(f"weights: expected a Tensor of shape [{P}] or [B, {P}], got {type(weights).__name__}")
        if weights.ndim not in (1, 2) or weights.shape[-1] != P:
            raise ValueError(f"weights: expected shape [{P}] or [B, {P}], got {list(weights.shape)}")
        if weights.ndim == 2 and batch is not None and weights.shape[0] != batch:
            raise ValueError(
                f"weights: got {weights.shape[0]} weight sets ({list(weights.shape)}) for an input batch of "
                f"{batch} (x.shape[{self.batch_dim}]); pass one set [{P}] or one per sample [{batch}, {P}]"
            )
        ref = self._reference_tensor()
        if ref is not None and weights.dtype != ref.dtype:
            raise TypeError(f"weights: dtype {weights.dtype} does not match the module's {ref.dtype}")
        if ref is not None and weights.device != ref.device:
            raise ValueError(f"weights: on device {weights.device}, the module is on {ref.device}")

    # -- forward ---------------------------------------------------------------------------------
    def forward(self, x: Any, weights: Tensor, *args: Any, **kwargs: Any) -> Any:
        """Run the module on `x` with `weights: [P]` or `[B, P]`; extra arguments go to the module."""
        batch = _batch_size(x, self.batch_dim)
        self.check_weights(weights, batch)
        if isinstance(x, Tensor) and weights.device != x.device:
            raise ValueError(f"x: on device {x.device}, weights on {weights.device}")
        if weights.ndim == 2 and weights.shape[0] == 1:
            weights = weights[0]  # one sample, one weight set: the shared path is the same and cheaper
        params = self.spec.unflatten(weights)
        if weights.ndim == 1:
            return functional_call(self.module, params, (x, *args), kwargs)
        if batch is None:
            raise ValueError("x: per-sample weights [B, P] need a Tensor input with a batch dimension")
        if self.engine == "batched":
            with batched_ops.PerSampleMode(list(params.values()), batch, self.batch_dim):
                return functional_call(self.module, params, (x, *args), kwargs)
        return self._vmap_forward(x, params, args, kwargs)

    def _vmap_forward(self, x: Tensor, params: dict[str, Tensor], args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
        if self.module.training and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in self.module.modules()):
            raise ValueError(
                "per-sample weights: a BatchNorm in training mode needs the 'batched' engine, which does not "
                "support some generated parameters of this module; call .eval() or generate fewer tensors"
            )
        d = self.batch_dim

        def one(p: dict[str, Tensor], xi: Tensor) -> Any:
            out = functional_call(self.module, p, (xi.unsqueeze(d), *args), kwargs)
            return tree_map(lambda t: t.squeeze(d) if isinstance(t, Tensor) else t, out)

        # The fused attention fast path has no vmap batching rule nor derivative: turn it off here.
        fastpath = torch.backends.mha.get_fastpath_enabled()
        torch.backends.mha.set_fastpath_enabled(False)
        try:
            # The math attention kernel is made of ops vmap batches natively (no per-sample fallback loop).
            with sdpa_kernel(SDPBackend.MATH):
                return vmap(one, in_dims=(0, d), out_dims=d, randomness="different")(params, x)
        finally:
            torch.backends.mha.set_fastpath_enabled(fastpath)

    def materialize(self, weights: Tensor) -> nn.Module:
        """An independent copy of the module with `weights: [P]` baked in as ordinary parameters."""
        self.check_weights(weights, None)
        if weights.ndim != 1:
            raise ValueError(f"materialize: needs one weight set [{self.spec.numel}], got {list(weights.shape)}")
        clone = copy.deepcopy(self.module)
        values = self.spec.unflatten(weights.detach())
        with torch.no_grad():
            own = dict(clone.named_parameters())
            for name, value in values.items():
                own[name].copy_(value)
        return clone

    def extra_repr(self) -> str:
        return f"generated={len(self.generated_names)} tensors, P={self.spec.numel}, engine={self.engine!r}"


def _batch_size(x: Any, dim: int) -> int | None:
    if isinstance(x, Tensor) and x.ndim > dim:
        return int(x.shape[dim])
    return None
