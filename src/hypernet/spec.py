"""`ParamSpec`: the ordered layout of the parameters a hypernetwork generates.

A spec maps a flat weight vector `theta: [..., P]` to named tensors `{name: [..., *shape]}` and
back, and records per tensor what initialisation needs: fan-in, fan-out and a role.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

#: Roles a generated tensor can play; initialisers treat each differently.
ROLES = ("weight", "bias", "norm_weight", "norm_bias", "other")

_NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
)


@dataclass(frozen=True)
class TensorInfo:
    """One generated tensor: where it lives in the flat vector and how it should be initialised."""

    name: str
    shape: tuple[int, ...]
    offset: int
    numel: int
    fan_in: int
    fan_out: int
    role: str
    #: True for a layer weight whose layer also has a generated bias (hyperfan splits the variance).
    has_bias: bool = False

    @property
    def stop(self) -> int:
        return self.offset + self.numel


def tensor_fans(shape: Sequence[int]) -> tuple[int, int]:
    """Fan-in and fan-out of a weight of `shape` (`[out, in, *kernel]`), as PyTorch computes them."""
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return int(shape[0]), int(shape[0])
    receptive = math.prod(shape[2:]) if len(shape) > 2 else 1
    return int(shape[1]) * receptive, int(shape[0]) * receptive


class ParamSpec:
    """Ordered names and shapes of generated tensors, with offsets into a flat vector of size `numel`.

    Args:
        shapes: `{name: shape}` in the order the flat vector stores them.
        fans: optional `{name: (fan_in, fan_out)}`; by default computed from the shape.
        roles: optional `{name: role}` (one of `ROLES`); by default `"weight"` for tensors of two or
            more dimensions and `"bias"` for one-dimensional ones.
        has_bias: optional `{weight_name: bool}`.
    """

    def __init__(
        self,
        shapes: Mapping[str, Sequence[int]],
        *,
        fans: Mapping[str, tuple[int, int]] | None = None,
        roles: Mapping[str, str] | None = None,
        has_bias: Mapping[str, bool] | None = None,
    ) -> None:
        if len(shapes) == 0:
            raise ValueError("ParamSpec: `shapes` is empty; a hypernetwork must generate at least one tensor")
        fans = dict(fans or {})
        roles = dict(roles or {})
        has_bias = dict(has_bias or {})
        infos: list[TensorInfo] = []
        offset = 0
        for name, raw_shape in shapes.items():
            shape = tuple(int(s) for s in raw_shape)
            if any(s <= 0 for s in shape):
                raise ValueError(f"ParamSpec: tensor {name!r} has shape {shape}; every dimension must be positive")
            numel = math.prod(shape)
            role = roles.get(name, "weight" if len(shape) >= 2 else "bias")
            if role not in ROLES:
                raise ValueError(f"ParamSpec: role {role!r} of {name!r} is not one of {ROLES}")
            fan_in, fan_out = fans.get(name, tensor_fans(shape))
            infos.append(
                TensorInfo(name, shape, offset, numel, int(fan_in), int(fan_out), role, bool(has_bias.get(name, False)))
            )
            offset += numel
        self.tensors: tuple[TensorInfo, ...] = tuple(infos)
        self._by_name = {t.name: t for t in infos}
        self.numel: int = offset

    # -- description -----------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return [t.name for t in self.tensors]

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        return [t.shape for t in self.tensors]

    @property
    def offsets(self) -> list[int]:
        return [t.offset for t in self.tensors]

    def __getitem__(self, name: str) -> TensorInfo:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"ParamSpec has no tensor {name!r}; it has {self.names}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __len__(self) -> int:
        return len(self.tensors)

    def __iter__(self) -> Iterator[TensorInfo]:
        return iter(self.tensors)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ParamSpec) and self.tensors == other.tensors

    def __hash__(self) -> int:
        return hash(self.tensors)

    def __repr__(self) -> str:
        body = ", ".join(f"{t.name}: {list(t.shape)}" for t in self.tensors)
        return f"ParamSpec(numel={self.numel}, {{{body}}})"

    # -- conversion ------------------------------------------------------------------------------
    def flatten(self, params: Mapping[str, Tensor]) -> Tensor:
        """`{name: [..., *shape]}` -> `[..., P]`; every tensor must share the same leading dims."""
        missing = [n for n in self.names if n not in params]
        if missing:
            raise ValueError(f"flatten: missing tensors {missing}; expected {self.names}")
        extra = [n for n in params if n not in self._by_name]
        if extra:
            raise ValueError(f"flatten: unexpected tensors {extra}; expected {self.names}")
        lead: tuple[int, ...] | None = None
        parts = []
        for t in self.tensors:
            value = params[t.name]
            k = len(t.shape)
            if tuple(value.shape[value.ndim - k :]) != t.shape or value.ndim < k:
                raise ValueError(
                    f"flatten: tensor {t.name!r} must end in shape {list(t.shape)}, got {list(value.shape)}"
                )
            this_lead = tuple(value.shape[: value.ndim - k])
            if lead is None:
                lead = this_lead
            elif this_lead != lead:
                raise ValueError(
                    f"flatten: tensor {t.name!r} has leading dims {list(this_lead)}, others have {list(lead)}"
                )
            parts.append(value.reshape(*this_lead, t.numel))
        return torch.cat(parts, dim=-1)

    def unflatten(self, flat: Tensor) -> dict[str, Tensor]:
        """`[..., P]` -> `{name: [..., *shape]}` (views, no copy)."""
        if not isinstance(flat, Tensor):
            raise TypeError(f"unflatten: expected a Tensor of shape [..., {self.numel}], got {type(flat).__name__}")
        if flat.ndim == 0 or flat.shape[-1] != self.numel:
            raise ValueError(f"unflatten: expected shape [..., {self.numel}], got {list(flat.shape)}")
        lead = flat.shape[:-1]
        pieces = flat.split([t.numel for t in self.tensors], dim=-1)
        return {t.name: p.reshape((*lead, *t.shape)) for t, p in zip(self.tensors, pieces, strict=True)}

    def slice(self, name: str) -> slice:
        """The slice of the flat vector that holds tensor `name`."""
        t = self[name]
        return slice(t.offset, t.stop)

    # -- construction ----------------------------------------------------------------------------
    @classmethod
    def from_module(cls, module: nn.Module, names: Sequence[str] | None = None) -> ParamSpec:
        """Spec for the parameters `names` of `module` (all parameters when `None`), in module order.

        Roles come from the owning module (normalisation layers get `norm_weight` / `norm_bias`);
        a bias gets the fan-in and fan-out of the weight beside it (`bias_ih_l0` -> `weight_ih_l0`).
        """
        params = dict(module.named_parameters())
        order = list(params) if names is None else [n for n in params if n in set(names)]
        owners = _owner_types(module)
        shapes: dict[str, tuple[int, ...]] = {}
        fans: dict[str, tuple[int, int]] = {}
        roles: dict[str, str] = {}
        has_bias: dict[str, bool] = {}
        for name in order:
            shape = tuple(params[name].shape)
            shapes[name] = shape
            prefix, _, leaf = name.rpartition(".")
            sibling = (prefix + "." if prefix else "") + _sibling_weight(leaf)
            is_norm = issubclass(owners[prefix], _NORM_TYPES)
            if len(shape) >= 2:
                roles[name] = "weight"
                fans[name] = tensor_fans(shape)
                bias_name = (prefix + "." if prefix else "") + leaf.replace("weight", "bias", 1)
                has_bias[name] = bias_name in order and bias_name != name
            elif is_norm:
                roles[name] = "norm_weight" if "weight" in leaf else "norm_bias"
                fans[name] = (1, 1)
            elif "bias" in leaf and sibling in params and params[sibling].ndim >= 2:
                roles[name] = "bias"
                fans[name] = tensor_fans(tuple(params[sibling].shape))
            else:
                roles[name] = "bias" if "bias" in leaf else "other"
                fans[name] = (1, 1)
        return cls(shapes, fans=fans, roles=roles, has_bias=has_bias)


def _sibling_weight(leaf: str) -> str:
    return leaf.replace("bias", "weight", 1)


def _owner_types(module: nn.Module) -> dict[str, type[nn.Module]]:
    return {name: type(m) for name, m in module.named_modules()}
