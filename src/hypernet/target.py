"""`TargetNetwork`: call any `nn.Module` with weights given from outside.

`target(x, weights)` takes `weights: [P]` (one set shared by the batch) or `[B, P]` (one set per
sample, `B == x.shape[batch_dim]`). The user's module is never mutated: `TargetNetwork` keeps a
copy of it *without* the generated parameters (they are supplied at every call with
`torch.func.functional_call`), so `target.parameters()` are exactly the module's parameters that
are trained directly, `state_dict()` holds no dead placeholders, and DistributedDataParallel sees
no parameter that never receives a gradient. `materialize` returns an ordinary module again.

Per-sample weights run batched, never as a Python loop over samples, by one of two engines:

* `"batched"` (`hypernet.batched_ops`): the module runs once on the whole batch and every layer
  call with a per-sample weight becomes its batched form (`bmm`, grouped convolution, ...): Linear,
  Conv1d/2d/3d, BatchNorm, LayerNorm, GroupNorm, Embedding, RNN, GRU, LSTM, and whatever
  `hn.register_rule` teaches it. Any other use of a generated tensor (`w.T`, `x @ w.mT`, `w.data`,
  a subclass whose `forward` is its own, attention) raises `NoBatchedRule` naming the op: nothing
  is broadcast silently.
* `"vmap"`: `torch.func.vmap` over `functional_call` (each sample a batch of one).

`engine="auto"` (the default) runs batched, and each submodule the batched engine cannot handle
under `vmap` inside the batched pass (see `hypernet.fallback`); where that is not possible, the whole
target runs under `vmap`. Modules of unknown type are found at construction, the rest at the first
call that fails: that attempt is undone (buffers such as BatchNorm's running statistics, and the RNG
state, are restored) and rerun, and the choice is kept. `target.engine_reason` says what was chosen
and why. `engine="batched"` raises instead of falling back.

BatchNorm with per-sample weights, in training mode, normalises with statistics over the whole
batch (exactly as the plain module would) and then applies each sample's own affine parameters;
running statistics are updated once per call. In eval mode it uses the running statistics. (`vmap`
cannot do this, so a BatchNorm in training mode inside a module run under `vmap` raises an error.)

Under `torch.autocast` the weights may come in the autocast dtype (e.g. bfloat16 from a
hypernetwork that ran under autocast). Under `torch.compile` the `auto` engine uses the choice it
has made so far (without the undo machinery; run one eager per-sample call first if a module
needs the fallback), and where some module runs under `vmap` the whole target does.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap
from torch.utils._pytree import tree_map

from hypernet import batched_ops, factored
from hypernet.fallback import DataAsDetach, Snapshot, inside, split_keywords, vmap_friendly, vmapped, with_rows
from hypernet.hypernetworks.lowrank import LowRankWeights
from hypernet.selection import Selector, select_parameters
from hypernet.spec import ParamSpec

Engine = Literal["auto", "batched", "vmap"]


class TargetNetwork(nn.Module):
    """Wraps a copy of `module` so its selected parameters can be supplied from outside.

    `target(x, weights)` runs the module with `weights: [P]` (one set for the batch) or `[B, P]`
    (one per sample), `P = target.spec.numel` numbers in `target.spec`'s order.

    The user's `module` is **copied, never changed**: in the copy (`self.module`) the generated
    parameters are meta-device placeholders (shape only: the values are not copied, so a large
    model is not duplicated; they are not parameters and not in `state_dict()`); it keeps the
    others as ordinary trainable parameters (`free_parameters`). Training the target therefore
    leaves the user's module as it was; `materialize` gives a trained, plain module back.

    Args:
        module: any `nn.Module`.
        generate: which parameters are generated: `None` (all), names, glob patterns or module
            types (see `hypernet.selection`).
        batch_dim: the batch dimension of the module's input (and outputs), for per-sample weights.
        engine: per-sample engine: `"auto"` (batched, with `vmap` for what it cannot batch),
            `"batched"` (raises on what it cannot batch) or `"vmap"`.
    """

    _probe: Tensor

    def __init__(
        self, module: nn.Module, generate: Selector = None, *, batch_dim: int = 0, engine: Engine = "auto"
    ) -> None:
        super().__init__()
        if not isinstance(module, nn.Module):
            raise TypeError(f"TargetNetwork: `module` must be an nn.Module, got {type(module).__name__}")
        if engine not in ("auto", "batched", "vmap"):
            raise ValueError(f"TargetNetwork: engine must be 'auto', 'batched' or 'vmap', got {engine!r}")
        if not isinstance(batch_dim, int) or isinstance(batch_dim, bool) or batch_dim < 0:
            raise ValueError(f"TargetNetwork: batch_dim must be a non-negative int, got {batch_dim!r}")
        self.generated_names: list[str] = select_parameters(module, generate)
        self.spec = ParamSpec.from_module(module, self.generated_names)
        originals = dict(module.named_parameters())
        generated = {n: originals[n] for n in self.generated_names}
        # Tied weights: every other name under which a generated tensor appears gets the same value.
        ids = {id(p): n for n, p in generated.items()}
        self._aliases: dict[str, str] = {
            alias: ids[id(p)]
            for alias, p in module.named_parameters(remove_duplicate=False)
            if id(p) in ids and alias != ids[id(p)]
        }
        # Kept outside the state (not a parameter or buffer): `initial_weights()` returns it.
        self._initial: Tensor | None = self.spec.flatten({n: p.detach() for n, p in generated.items()}).clone()
        self.module = _copy_without(module, [*self.generated_names, *self._aliases])
        first = next(iter(generated.values()))
        # Zero-size buffer: follows `.to(dtype/device)`, so weights can be checked against it.
        self.register_buffer("_probe", torch.zeros(0, dtype=first.dtype, device=first.device), persistent=False)
        self.batch_dim = batch_dim
        self.requested_engine: Engine = engine
        units = batched_ops.vmap_modules(self.module, self.generated_names)
        if engine == "batched" and units:
            raise ValueError(
                "TargetNetwork: engine='batched' cannot handle "
                + "; ".join(f"{n or 'the module'!r}: {why}" for n, why in units.items())
                + " (teach it with hn.register_rule, or use engine='auto' or 'vmap')"
            )
        #: "batched" (possibly with some submodules under vmap: `vmap_modules`) or "vmap" (whole target)
        self.engine: Literal["batched", "vmap"] = "batched"
        #: submodules that run under vmap inside the batched pass
        self.vmap_modules: list[str] = []
        #: why the engine is what it is (updated when `auto` falls back)
        self.engine_reason = "batched: every generated tensor belongs to a layer with batched rules"
        if engine == "vmap":
            self.engine, self.engine_reason = "vmap", "vmap: requested"
        elif "" in units:
            self._whole_vmap(f"the module itself: {units['']}")
        elif units:
            self.vmap_modules = sorted(units)
            self.engine_reason = "batched, with under vmap: " + "; ".join(f"{n!r} ({w})" for n, w in units.items())

    def _whole_vmap(self, why: str) -> None:
        self.engine, self.vmap_modules = "vmap", []
        self.engine_reason = f"vmap (whole target): {why}"

    def _learn(self, err: batched_ops.NoBatchedRule) -> None:
        """After `err` in an `auto` attempt: run the module that raised it under vmap, or everything."""
        names = {id(m): n for n, m in self.module.named_modules()}
        name = names.get(id(err.module)) if err.module is not None else None
        if (
            err.fatal
            or not name  # the root module (or none found): the whole target
            or not any(inside(g, name) for g in self.generated_names)
            or any(inside(name, u) for u in self.vmap_modules)
        ):
            self._whole_vmap(str(err))
            return
        self.vmap_modules = sorted({u for u in self.vmap_modules if not inside(u, name)} | {name})
        why = f"{name!r} ({type(err.module).__name__}.forward: {err.op!r} has no batched rule)"
        had = self.engine_reason.startswith("batched, with")
        self.engine_reason = f"{self.engine_reason}; {why}" if had else f"batched, with under vmap: {why}"

    # -- weights ---------------------------------------------------------------------------------
    def initial_weights(self) -> Tensor:
        """The user's module's values of the generated parameters at construction, flattened: `[P]`."""
        if self._initial is None:
            raise RuntimeError(
                "initial_weights: released by release_initial_weights() (hypernetize keeps them as theta0)"
            )
        return self._initial.to(device=self._probe.device, dtype=self._probe.dtype, copy=True)

    def release_initial_weights(self) -> None:
        """Free the stored initial values (`[P]`), once a hypernetwork holds them (e.g. as `theta0`)."""
        self._initial = None

    def free_parameters(self) -> list[nn.Parameter]:
        """The module's parameters that are not generated (trained directly)."""
        return list(self.module.parameters())

    @property
    def dtype(self) -> torch.dtype:
        """The dtype generated weights must have."""
        return self._probe.dtype

    @property
    def device(self) -> torch.device:
        """The device generated weights must be on."""
        return self._probe.device

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
        if not weights.is_floating_point():  # a network's weights are floats: only one fix exists
            raise TypeError(f"weights: dtype {weights.dtype} is not floating point; use weights.to({self.dtype})")
        if weights.dtype != self.dtype and not _autocast_dtype(weights):
            raise TypeError(
                f"weights: dtype {weights.dtype} does not match the target's {self.dtype}; "
                f"convert one of them (weights.to({self.dtype}) or target.to({weights.dtype}))"
            )
        if weights.device != self.device:
            raise ValueError(f"weights: on device {weights.device}, the target is on {self.device}")

    def _params(self, weights: Tensor) -> dict[str, Tensor]:
        params = self.spec.unflatten(weights)
        for alias, name in self._aliases.items():
            params[alias] = params[name]
        return params

    # -- forward ---------------------------------------------------------------------------------
    def forward(self, x: Any, weights: Tensor | LowRankWeights, *args: Any, **kwargs: Any) -> Any:
        """Run the module on `x` with `weights: [P]` or `[B, P]`, or factored `LowRankWeights` (from
        `LowRankHyperNetwork.factorized`: applied without forming per-sample matrices, see
        `hypernet.factored`); extra arguments go to the module."""
        batch = _batch_size(x, self.batch_dim)
        if isinstance(weights, LowRankWeights):
            # The factored rules cover batched layers only: with modules under vmap (or the whole
            # target) the weights are merged and take the dense path, auto fallback included.
            if self.engine == "batched" and not self.vmap_modules:
                snapshot = Snapshot(self.module, x.device) if isinstance(x, Tensor) else None
                try:
                    return factored.forward(self.module, weights, x, batch, self.batch_dim, self._aliases, args, kwargs)
                except batched_ops.NoBatchedRule:
                    if self.requested_engine == "batched" or snapshot is None or torch.compiler.is_compiling():
                        raise
                    snapshot.restore()  # undo this try's buffer updates; the dense path learns the fallback
            weights = factored.merge(self.spec, weights)
        self.check_weights(weights, batch)
        if weights.dtype != self.dtype:  # the autocast dtype: back to the module's own, as a plain
            weights = weights.to(self.dtype)  # module's parameters are (autocast casts per op again)
        if isinstance(x, Tensor) and weights.device != x.device:
            raise ValueError(f"x: on device {x.device}, weights on {weights.device}")
        if (
            isinstance(x, Tensor)
            and x.is_floating_point()
            and x.dtype != self.dtype
            and not torch.is_autocast_enabled(x.device.type)
        ):
            raise TypeError(
                f"x: dtype {x.dtype} does not match the target's {self.dtype}; use x.to({self.dtype}) "
                f"or convert the model with .to({x.dtype})"
            )
        if weights.ndim == 2 and weights.shape[0] == 1:
            weights = weights[0]  # one sample, one weight set: the shared path is the same and cheaper
        elif weights.ndim == 2 and weights.shape[0] == 0:
            # An empty batch: run the module on it with any weights (here the first "set" of none, i.e.
            # zeros) so the outputs have the module's own empty shapes.
            weights = weights.new_zeros(self.spec.numel) + weights.sum(0)
        if weights.ndim == 1:
            return functional_call(self.module, self._params(weights), (x, *args), kwargs)
        if batch is None:
            raise ValueError("x: per-sample weights [B, P] need a Tensor input with a batch dimension")
        params = self._params(weights)
        if self.engine == "vmap" or (self.vmap_modules and torch.compiler.is_compiling()):
            # (a module under vmap inside the batched pass cannot be traced: the whole target then is)
            return self._vmap_forward(x, params, args, kwargs)
        if self.requested_engine == "batched" or torch.compiler.is_compiling():
            return self._batched_forward(x, params, args, kwargs, batch)
        snapshot = Snapshot(self.module, weights.device)
        while True:  # each failure puts one more module under vmap (or all): at most a few tries
            try:
                return self._batched_forward(x, params, args, kwargs, batch)
            except batched_ops.NoBatchedRule as err:
                snapshot.restore()
                self._learn(err)
                if self.engine == "vmap":
                    return self._vmap_forward(x, params, args, kwargs)

    def _batched_forward(
        self, x: Any, params: dict[str, Tensor], args: Sequence[Any], kwargs: dict[str, Any], batch: int
    ) -> Any:
        mode = batched_ops.PerSampleMode(list(params.values()), batch, self.batch_dim)
        with mode, vmapped(self.module, self.vmap_modules, params, mode):
            return functional_call(self.module, params, (x, *args), kwargs)

    def _vmap_forward(self, x: Tensor, params: dict[str, Tensor], args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
        if self.module.training and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in self.module.modules()):
            raise ValueError(
                "per-sample weights: a BatchNorm in training mode needs the 'batched' engine, which does not "
                "support some generated parameters of this module; call .eval() or generate fewer tensors"
            )
        d = self.batch_dim
        whole, names, rows, row_dims = split_keywords(kwargs, x.shape[d])

        def one(p: dict[str, Tensor], xi: Tensor, *sample_rows: Tensor) -> Any:
            with DataAsDetach():
                out = functional_call(
                    self.module, p, (xi.unsqueeze(d), *args), with_rows(whole, names, sample_rows, row_dims)
                )
            return tree_map(lambda t: t.squeeze(d) if isinstance(t, Tensor) else t, out)

        with vmap_friendly():
            return vmap(one, in_dims=(0, d, *row_dims), out_dims=d, randomness="different")(params, x, *rows)

    def materialize(self, weights: Tensor) -> nn.Module:
        """An independent, ordinary module with `weights: [P]` as its parameters (trainable leaves)."""
        self.check_weights(weights, None)
        if weights.ndim != 1:
            raise ValueError(f"materialize: needs one weight set [{self.spec.numel}], got {list(weights.shape)}")
        clone = copy.deepcopy(self.module)
        made: dict[int, nn.Parameter] = {}  # one Parameter per tensor, so tied weights stay tied
        for name, value in self._params(weights.detach()).items():
            owner, _, leaf = name.rpartition(".")
            param = made.setdefault(id(value), nn.Parameter(value.clone()))
            # setattr (not register_parameter) so that RNNs refresh their flat weight list too
            setattr(clone.get_submodule(owner), leaf, param)
        return clone

    def extra_repr(self) -> str:
        under = f", vmap_modules={self.vmap_modules}" if self.vmap_modules else ""
        return f"generated={len(self.generated_names)} tensors, P={self.spec.numel}, engine={self.engine!r}{under}"


def _autocast_dtype(t: Tensor) -> bool:
    """True when `t` has the dtype that the autocast now enabled on its device computes in."""
    kind = t.device.type
    return torch.is_autocast_enabled(kind) and t.dtype == torch.get_autocast_dtype(kind)


def _batch_size(x: Any, dim: int) -> int | None:
    if isinstance(x, Tensor) and x.ndim > dim:
        return int(x.shape[dim])
    return None


def _copy_without(module: nn.Module, names: Sequence[str]) -> nn.Module:
    """A deep copy of `module` in which the parameters `names` are replaced by plain meta-device
    tensors of the same shape: no memory, not parameters, not in `state_dict()`, but `repr` and code
    that reads `layer.weight.shape` keep working. The originals are never copied."""
    params = dict(module.named_parameters(remove_duplicate=False))
    memo: dict[int, Any] = {id(params[n]): torch.empty_like(params[n], device="meta") for n in names}
    clone = copy.deepcopy(module, memo)
    for name in names:
        owner, _, leaf = name.rpartition(".")
        sub = clone.get_submodule(owner)
        placeholder = sub._parameters.pop(leaf)
        setattr(sub, leaf, placeholder)  # a plain attribute now (RNNs refresh their flat weights)
    return clone
