"""Shared machinery of every hypernetwork design: input checks, the parametrization
(`"standard" | "ntk" | "mip"`), MIP's input encoding and residual `theta = theta0 + delta(cond)`."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from hypernet.conditioning import InputEncoding
from hypernet.init import check_init, default_theta0
from hypernet.layers import check_parametrization
from hypernet.spec import ParamSpec

_DEFAULT_INIT = {"standard": "hyperfan_in", "mip": "mip", "ntk": "default"}


class HyperNetwork(nn.Module):
    """Base class: maps `cond: [..., in_features]` to generated weights `[..., spec.numel]`.

    Subclasses build their layers for `self.features` inputs (after encoding) and implement
    `delta(h)`. With `parametrization="mip"`, `cond` (in [0, 1]) is encoded by `encoding`
    and the output is `theta0 + delta`, `theta0` a learnable `[P]` initialised from `theta0=` (the
    target's own initial weights) or as PyTorch layers initialise themselves.
    """

    def __init__(
        self,
        in_features: int,
        spec: ParamSpec,
        parametrization: str = "standard",
        init: str | None = None,
        encoding: str | None = "cos|sin",
        theta0: Tensor | None = None,
        residual: bool | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(spec, ParamSpec):
            raise TypeError(f"spec: expected a hypernet.ParamSpec, got {type(spec).__name__}")
        if in_features <= 0:
            raise ValueError(f"in_features: must be positive, got {in_features}")
        self.in_features, self.spec = in_features, spec
        self.parametrization = check_parametrization(parametrization)
        self.init = check_init(init if init is not None else _DEFAULT_INIT[parametrization])
        mip = parametrization == "mip"
        self.encoding: nn.Module = InputEncoding(encoding, in_features) if mip else nn.Identity()
        self.features = in_features * (2 if mip and encoding is not None else 1)
        self.residual = mip if residual is None else residual
        if self.residual:
            start = default_theta0(spec) if theta0 is None else theta0.detach().clone().float()
            if start.shape != (spec.numel,):
                raise ValueError(f"theta0: expected shape [{spec.numel}], got {list(start.shape)}")
            self.theta0: nn.Parameter | None = nn.Parameter(start)
        else:
            self.theta0 = None

    @property
    def num_generated(self) -> int:
        """How many numbers one forward pass generates per condition (P)."""
        return self.spec.numel

    def num_parameters(self) -> int:
        """Trainable parameters of the hypernetwork (theta0 included)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def output_layers(self) -> list[nn.Module]:
        """The layers that emit generated numbers (`head` or `heads`)."""
        head = getattr(self, "head", None)
        return [head] if isinstance(head, nn.Module) else list(getattr(self, "heads", []))

    @torch.no_grad()
    def zero_delta_(self) -> HyperNetwork:
        """Zero the output layers, so a residual hypernetwork starts exactly at `theta0`."""
        if self.theta0 is None:
            raise ValueError("zero_delta_: only a residual hypernetwork (MIP, or residual=True) has a theta0 to keep")
        # (a residual design's fixed output offset is already zero: see init.element_scales)
        for layer in self.output_layers():
            for p in layer.parameters():
                p.zero_()
        return self

    def delta(self, h: Tensor) -> Tensor:
        """`h: [..., features] -> [..., P]`; implemented by each design."""
        raise NotImplementedError

    def forward(self, cond: Tensor) -> Tensor:
        """`cond: [..., in_features] -> weights [..., P]`."""
        if not isinstance(cond, Tensor):
            raise TypeError(f"cond: expected a Tensor [..., {self.in_features}], got {type(cond).__name__}")
        if cond.ndim == 0 or cond.shape[-1] != self.in_features:
            raise ValueError(f"cond: expected shape [..., {self.in_features}], got {list(cond.shape)}")
        out = self.delta(self.encoding(cond))
        if self.theta0 is not None:
            out = out + self.theta0.to(out.dtype)
        return out

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, P={self.spec.numel}, parametrization={self.parametrization!r}, "
            f"init={self.init!r}"
        )
