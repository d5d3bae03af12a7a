"""Conditioners: what goes into a hypernetwork (the review's input axis).

* task-conditioned: `TaskEmbedding` (ids -> learned vectors), `TaskOneHot` (ids -> one-hot, MIP's
  input for task ids: the MIP hypernetwork then encodes it),
* hyperparameter / scalar-conditioned: `InputEncoding` (MIP's constant-norm encoding of [0, 1] inputs),
* data-conditioned: `DataEncoder` (any module mapping the sample `x` to a condition, per sample),
* noise-conditioned: `NoiseConditioner` (`cond ~ N(0, I)`, an implicit distribution over weights).

Each is an `nn.Module` with `condition(x, cond) -> [..., C]`, which `HyperModel` calls.

Value checks (task ids in range, inputs in [0, 1]) read the values on the host, a device sync on a
GPU: `validate=False` (`check_range=False` for `InputEncoding`) turns them off, and they are skipped
while `torch.compile` traces or a `torch.func` transform runs.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

ENCODINGS = ("cos|sin", "z|1-z")


class Conditioner(nn.Module):
    """Base class: `condition(x, cond)` gives the hypernetwork input for a batch `x`."""

    out_features: int

    def condition(self, x: Any, cond: Any) -> Tensor:
        if cond is None:
            raise ValueError(f"cond: {type(self).__name__} needs a condition, got None")
        out: Tensor = self(cond)
        return out


class TaskEmbedding(Conditioner):
    """Learned task vectors, initialised N(0, 1). `ids: [...] (int) -> [..., dim]`.
    `validate=False` skips the range check of the ids (a host sync)."""

    def __init__(self, num_tasks: int, dim: int, validate: bool = True) -> None:
        super().__init__()
        if num_tasks <= 0 or dim <= 0:
            raise ValueError(f"TaskEmbedding: num_tasks and dim must be positive, got {num_tasks}, {dim}")
        self.num_tasks, self.out_features = num_tasks, dim
        self.validate = validate
        self.embedding = nn.Embedding(num_tasks, dim)

    def forward(self, ids: Tensor | int) -> Tensor:
        """`ids`: a task id or ids `[...]` (int, each in [0, num_tasks)) -> embeddings `[..., dim]`."""
        device = self.embedding.weight.device
        out: Tensor = self.embedding(_check_task_ids(ids, self.num_tasks, device, self.validate))
        return out


def checking(validate: bool) -> bool:
    """Whether host-side value checks run now: asked for, and neither `torch.compile` tracing nor
    a `torch.func` transform (vmap, jacrev: used by the empirical kernels) is running, which
    cannot read values."""
    transforms = getattr(torch._C, "_are_functorch_transforms_active", lambda: False)
    return validate and not torch.compiler.is_compiling() and not transforms()


def _check_task_ids(ids: Tensor | int, num_tasks: int, device: torch.device, validate: bool = True) -> Tensor:
    ids_t = torch.as_tensor(ids, device=device)
    if ids_t.dtype.is_floating_point or ids_t.dtype == torch.bool:
        raise TypeError(f"task ids: expected integers, got dtype {ids_t.dtype}")
    if checking(validate) and ids_t.numel() and (int(ids_t.min()) < 0 or int(ids_t.max()) >= num_tasks):
        low, high = int(ids_t.min()), int(ids_t.max())
        raise ValueError(f"task ids: must lie in [0, {num_tasks - 1}], got range [{low}, {high}]")
    return ids_t.long()


class TaskOneHot(Conditioner):
    """Task ids as one-hot vectors, MIP's input for categorical conditions:
    `ids: [...] (int) -> [..., num_tasks]` in {0, 1}. Nothing to learn; pair it with a
    `parametrization="mip"` hypernetwork of `in_features=num_tasks`, which encodes it.
    `validate=False` skips the range check of the ids (a host sync)."""

    _probe: Tensor

    def __init__(self, num_tasks: int, validate: bool = True) -> None:
        super().__init__()
        if not isinstance(num_tasks, int) or isinstance(num_tasks, bool) or num_tasks <= 0:
            raise ValueError(f"TaskOneHot: num_tasks must be a positive int, got {num_tasks!r}")
        self.num_tasks = self.out_features = num_tasks
        self.validate = validate
        # zero-size: follows .to(dtype/device), so the one-hot vectors match the hypernetwork's dtype
        self.register_buffer("_probe", torch.zeros(0), persistent=False)

    def forward(self, ids: Tensor | int) -> Tensor:
        """`ids`: a task id or ids `[...]` (int, each in [0, num_tasks)) -> one-hot `[..., num_tasks]`."""
        ids_t = _check_task_ids(ids, self.num_tasks, self._probe.device, self.validate)
        # a comparison rather than F.one_hot, which reads values on the host (no vmap, no fullgraph compile)
        classes = torch.arange(self.num_tasks, device=ids_t.device)
        return (ids_t.unsqueeze(-1) == classes).to(self._probe.dtype)

    def extra_repr(self) -> str:
        return f"num_tasks={self.num_tasks}"


class InputEncoding(Conditioner):
    """MIP input encoding of `z: [..., D]` in [0, 1] into `[..., 2D]` with constant L2 norm.

    `"cos|sin"`: `[cos(pi z / 2), sin(pi z / 2)]`; `"z|1-z"`: `[z, 1 - z]`; `None`: identity.
    Inputs outside [0, 1] raise a `ValueError` unless `check_range=False` (then they are encoded
    as given, and the magnitude invariance no longer holds).
    """

    def __init__(self, mode: str | None = "cos|sin", in_features: int | None = None, check_range: bool = True) -> None:
        super().__init__()
        if mode is not None and mode not in ENCODINGS:
            raise ValueError(f"InputEncoding: unknown mode {mode!r}; choose one of {list(ENCODINGS)} or None")
        if mode is None and not check_range:
            raise ValueError("InputEncoding: check_range=False has no effect with mode=None (nothing is encoded)")
        self.mode, self.check_range = mode, check_range
        self.in_features = in_features
        if in_features is not None:
            self.out_features = in_features * (1 if mode is None else 2)

    def forward(self, z: Tensor) -> Tensor:
        """`z: [..., D]` in [0, 1] -> the encoding `[..., D]` (mode None) or `[..., 2D]` (cos|sin)."""
        if not isinstance(z, Tensor):
            raise TypeError(f"cond: expected a Tensor in [0, 1], got {type(z).__name__}")
        if self.mode is None:
            return z
        # `~(0 <= z <= 1)` also catches NaN, which both `z < 0` and `z > 1` would let through.
        if checking(self.check_range) and z.numel() and bool((~((z >= 0) & (z <= 1))).any()):
            raise ValueError(
                f"cond: the {self.mode!r} encoding needs finite inputs in [0, 1], got range "
                f"[{float(z.min()):.4g}, {float(z.max()):.4g}]; rescale, or pass check_range=False"
            )
        if self.mode == "cos|sin":
            return torch.cat([torch.cos(z * (math.pi / 2)), torch.sin(z * (math.pi / 2))], dim=-1)
        return torch.cat([z, 1 - z], dim=-1)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}"


class DataEncoder(Conditioner):
    """Data-conditioned weights: `encoder(x) -> [B, C]`, one weight set per sample.

    `condition(x, cond)` encodes `cond` when given, else the batch `x` itself.
    """

    def __init__(self, encoder: nn.Module, out_features: int) -> None:
        super().__init__()
        self.encoder, self.out_features = encoder, out_features

    def forward(self, x: Tensor) -> Tensor:
        """`x: [B, ...]` -> the encoder's `[B, out_features]`, one condition per sample."""
        out: Tensor = self.encoder(x)
        if out.shape[-1] != self.out_features:
            raise ValueError(f"DataEncoder: encoder gave shape {list(out.shape)}, expected [..., {self.out_features}]")
        return out

    def condition(self, x: Any, cond: Any) -> Tensor:
        return self(x if cond is None else cond)


class NoiseConditioner(Conditioner):
    """Noise-conditioned weights: `cond ~ N(0, I_dim)`, one draw per sample (or `num_samples` draws).

    `condition(x, cond)` uses `cond` when given (fixed noise, for evaluation), else draws one
    vector per sample of `x`: weights become an implicit distribution learned by the hypernetwork.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        if dim <= 0:
            raise ValueError(f"NoiseConditioner: dim must be positive, got {dim}")
        self.out_features = dim
        self.register_buffer("_device_probe", torch.zeros(0), persistent=False)

    def forward(self, num_samples: int, generator: torch.Generator | None = None) -> Tensor:
        """`num_samples` draws of N(0, I): `[num_samples, dim]`, on the module's device and dtype."""
        probe = self._device_probe
        assert isinstance(probe, Tensor)
        return torch.randn(num_samples, self.out_features, generator=generator, device=probe.device, dtype=probe.dtype)

    def condition(self, x: Any, cond: Any) -> Tensor:
        if cond is not None:
            return torch.as_tensor(cond)
        if not isinstance(x, Tensor):
            raise ValueError("NoiseConditioner: pass `cond` (noise) when `x` is not a batched Tensor")
        return self(int(x.shape[0]))
