"""Shared machinery of every hypernetwork design: input checks, the parametrization
(`"standard" | "ntk" | "mip"`), MIP's input encoding and residual `theta = theta0 + delta(cond)`."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from hypernet.conditioning import InputEncoding, checking
from hypernet.init import check_init, default_theta0
from hypernet.layers import check_parametrization
from hypernet.spec import ParamSpec

_DEFAULT_INIT = {"standard": "hyperfan_in", "mip": "mip", "ntk": "default"}


class HyperNetwork(nn.Module):
    """Base class: maps `cond: [..., in_features] -> [..., spec.numel]` generated weights.

    Subclasses build their layers for `self.features` inputs (after encoding) and implement
    `delta(h)`. With `parametrization="mip"` the hypernetwork owns MIP's input encoding: `cond`
    (in [0, 1]) is encoded by `encoding` (never encode it before), and the output is
    `theta0 + delta`, `theta0` a learnable `[P]` initialised from `theta0=` (the target's own
    initial weights) or as PyTorch layers initialise themselves.

    A hyperparameter-conditioned network (`in_features == 1`) also takes a float, `[B]` or `[B, 1]`.

    Options that would do nothing raise a `ValueError` instead of being ignored:
    `init=` under `"ntk"` (NTK layers are N(0, 1), scaled in the forward); `encoding=` unless
    `"mip"`; `weight_var=` / `bias_var=` unless `"ntk"`; `theta0=` without a residual output
    (`"mip"` or `residual=True`).

    `validate` (default True; set `hyper.validate = False` to skip): `cond` must be finite, a
    check that reads values on the host (skipped anyway while `torch.compile` traces).

    The ablations of MIP's two parts: `parametrization="mip", residual=False` (encoding only) and
    `parametrization="standard", residual=True` (residual only).
    """

    validate: bool = True  # check that conditions are finite (a host sync)

    def __init__(
        self,
        in_features: int,
        spec: ParamSpec,
        parametrization: str = "standard",
        init: str | None = None,
        encoding: str | None = "default",
        theta0: Tensor | None = None,
        residual: bool | None = None,
        weight_var: float | None = None,
        bias_var: float | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(spec, ParamSpec):
            raise TypeError(f"spec: expected a hypernet.ParamSpec, got {type(spec).__name__}")
        if not isinstance(in_features, int) or in_features <= 0:
            raise ValueError(f"in_features: must be a positive int, got {in_features!r}")
        self.in_features, self.spec = in_features, spec
        self.parametrization = check_parametrization(parametrization)
        mip, ntk = parametrization == "mip", parametrization == "ntk"
        if ntk and init not in (None, _DEFAULT_INIT["ntk"]):
            raise ValueError(
                f"init={init!r} has no effect under parametrization='ntk' (its layers are N(0, 1) with the "
                "scaling in the forward); drop init= or use parametrization='standard'"
            )
        if not mip and encoding != "default":
            raise ValueError(
                f"encoding={encoding!r} has no effect under parametrization={parametrization!r}: only 'mip' "
                "encodes its input; use parametrization='mip'"
            )
        if not ntk and (weight_var is not None or bias_var is not None):
            raise ValueError(
                f"weight_var/bias_var have no effect under parametrization={parametrization!r}; they set the "
                "'ntk' parametrization's variances"
            )
        self.init = check_init(init if init is not None else _DEFAULT_INIT[parametrization])
        self.weight_var = 2.0 if weight_var is None else float(weight_var)
        self.bias_var = 0.0 if bias_var is None else float(bias_var)
        if self.weight_var < 0 or self.bias_var < 0:
            raise ValueError(f"weight_var, bias_var: must be >= 0, got {self.weight_var}, {self.bias_var}")
        mode = "cos|sin" if encoding == "default" else encoding
        self.encoding: nn.Module = InputEncoding(mode, in_features) if mip and mode is not None else nn.Identity()
        self.features = in_features * (2 if mip and mode is not None else 1)
        self.residual = mip if residual is None else bool(residual)
        if theta0 is not None and not self.residual:
            raise ValueError(
                "theta0= has no effect without a residual output; use parametrization='mip' or residual=True"
            )
        if self.residual:
            # in the default dtype, as the layers built here: a float64 default gives a float64 model throughout
            start = default_theta0(spec) if theta0 is None else theta0.detach().clone().to(torch.get_default_dtype())
            if start.shape != (spec.numel,):
                raise ValueError(f"theta0: expected shape [{spec.numel}], got {list(start.shape)}")
            self.theta0: nn.Parameter | None = nn.Parameter(start)
        else:
            self.theta0 = None

    @property
    def encodes_input(self) -> bool:
        """True when this hypernetwork applies MIP's input encoding itself."""
        return not isinstance(self.encoding, nn.Identity)

    def _dtype(self) -> torch.dtype:
        for p in self.parameters():
            return p.dtype
        return torch.get_default_dtype()

    def prepare_condition(self, cond: Tensor | float) -> Tensor:
        """Check `cond` and shape it `[..., in_features]` (a scalar hyperparameter may be a float or `[B]`)."""
        dtype = self._dtype()
        if isinstance(cond, (float, int)) and not isinstance(cond, bool):
            cond = torch.tensor([float(cond)], dtype=dtype)
        if not isinstance(cond, Tensor):
            raise TypeError(f"cond: expected a Tensor [..., {self.in_features}], got {type(cond).__name__}")
        if not cond.dtype.is_floating_point:
            raise TypeError(
                f"cond: dtype {cond.dtype} is not floating point; task ids go through a conditioner "
                "(hn.TaskEmbedding or hn.TaskOneHot) in the HyperModel"
            )
        if cond.dtype != dtype:
            raise TypeError(
                f"cond: dtype {cond.dtype} does not match the hypernetwork's {dtype}; "
                f"use cond.to({dtype}) or convert the model with .to({cond.dtype})"
            )
        if self.in_features == 1 and (cond.ndim == 0 or cond.shape[-1] != 1):
            cond = cond.unsqueeze(-1)  # a scalar hyperparameter: float -> [1], [B] -> [B, 1]
        if cond.ndim == 0 or cond.shape[-1] != self.in_features:
            raise ValueError(f"cond: expected shape [..., {self.in_features}], got {list(cond.shape)}")
        if checking(self.validate) and not bool(torch.isfinite(cond).all()):
            raise ValueError("cond: contains NaN or inf; pass finite conditions (or set validate = False)")
        return cond

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

    def forward(self, cond: Tensor | float) -> Tensor:
        """`cond: [..., in_features] -> weights [..., P]`."""
        out = self.delta(self.encoding(self.prepare_condition(cond)))
        if self.theta0 is not None:
            out = out + self.theta0.to(out.dtype)
        return out

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, P={self.spec.numel}, parametrization={self.parametrization!r}, "
            f"init={self.init!r}"
        )
