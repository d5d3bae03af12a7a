"""Initialisation of hypernetworks so the weights they generate start at a sensible scale.

* `"hyperfan_in"` / `"hyperfan_out"` (Chang, Sacramento, Weiss, ICLR 2020): the output layer is
  scaled per generated tensor so that each generated weight has the variance a directly
  initialised (fan-in, resp. fan-out) layer would have: `Var(W) = 1/fan_in` (`1/fan_out`), halved
  when the layer also has a generated bias, and `Var(b) = 1/2`. This assumes the hypernetwork's
  input has unit second moment per coordinate (true of `TaskEmbedding`'s N(0, 1) init and of
  `NoiseConditioner`); hidden layers are He-initialised with zero biases so that the last hidden
  layer keeps that second moment. Normalisation scales are generated as exactly 1 and shifts as 0.
* `"mip"` (Ortiz, Guttag, Dalca, ICLR 2024, as in their code): hidden layers Kaiming fan-out, each
  output block initialised as a layer whose fan-out is that tensor's size.
* `"default"`: PyTorch's own initialisation.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from hypernet.spec import ParamSpec, TensorInfo

INITS = ("default", "hyperfan_in", "hyperfan_out", "mip")


def check_init(init: str) -> str:
    if init not in INITS:
        raise ValueError(f"init: unknown {init!r}; choose one of {list(INITS)}")
    return init


def intended_variance(info: TensorInfo, mode: str) -> float:
    """The variance a directly initialised layer gives tensor `info` under hyperfan `mode`."""
    if info.role == "weight":
        fan = info.fan_in if mode == "hyperfan_in" else info.fan_out
        return (0.5 if info.has_bias else 1.0) / fan
    if info.role in ("norm_weight", "norm_bias"):
        return 0.0
    return 0.5


def init_hidden(layers: nn.Module, init: str) -> None:
    """He-initialise every `nn.Linear` in `layers` (fan-in for hyperfan, fan-out for MIP)."""
    if init == "default":
        return
    for m in layers.modules():
        if isinstance(m, nn.Linear):
            nn.init.kaiming_normal_(m.weight, mode="fan_out" if init == "mip" else "fan_in", nonlinearity="relu")
            nn.init.zeros_(m.bias)


@torch.no_grad()
def init_output_rows(
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    info: TensorInfo,
    init: str,
    residual: bool = False,
    input_second_moment: float = 1.0,
) -> None:
    """Initialise the rows `weight: [numel, d]` (and `bias: [numel]`) of an output layer that
    produce tensor `info`. With `residual`, the output is a delta around `theta0`, so norm tensors get
    no offset (theta0 already holds their 1 / 0)."""
    d = weight.shape[1]
    if init == "default":
        return
    if init == "mip":
        # A layer of fan-out numel(tensor): std = gain / sqrt(fan_out).
        nn.init.normal_(weight, std=math.sqrt(2.0 / info.numel))
        if bias is not None:
            nn.init.zeros_(bias)
        return
    var = intended_variance(info, init)
    nn.init.normal_(weight, std=math.sqrt(var / (d * input_second_moment)))
    if bias is not None:
        value = 1.0 if (info.role == "norm_weight" and not residual) else 0.0
        nn.init.constant_(bias, value)


def init_output_layer(layer: nn.Linear, spec: ParamSpec, init: str, residual: bool = False) -> None:
    """Initialise an output layer `[P, d]` that emits the whole flat vector, block by block."""
    for info in spec.tensors:
        rows = slice(info.offset, info.stop)
        init_output_rows(layer.weight[rows], layer.bias[rows], info, init, residual)


@torch.no_grad()
def default_theta0(spec: ParamSpec) -> torch.Tensor:
    """Weights as PyTorch layers initialise themselves, for a spec without a module at hand: `[P]`."""
    out = torch.empty(spec.numel)
    for info in spec.tensors:
        block = out[info.offset : info.stop]
        if info.role == "norm_weight":
            block.fill_(1.0)
        elif info.role == "norm_bias":
            block.zero_()
        else:
            bound = 1.0 / math.sqrt(info.fan_in)
            block.uniform_(-bound, bound)
    return out


@torch.no_grad()
def element_scales(spec: ParamSpec, init: str, width: int, residual: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-element output `scale, offset: [P]` for a head *shared* across tensors (chunked designs).

    A shared head cannot give each tensor its own row variance, so its weights are drawn N(0, 1/width)
    and the output is `offset + scale * head(h)`: `scale` carries the per-tensor standard deviation
    the rows would have had under `init`, `offset` the 1 of normalisation scales (when not residual).
    """
    scale = torch.ones(spec.numel)
    offset = torch.zeros(spec.numel)
    if init == "default":
        return scale, offset
    for info in spec.tensors:
        block = slice(info.offset, info.stop)
        if init == "mip":
            scale[block] = math.sqrt(2.0 * width / info.numel)
        else:
            scale[block] = math.sqrt(intended_variance(info, init))
        if info.role == "norm_weight" and not residual:
            offset[block] = 1.0
    return scale, offset


def init_shared_head(layer: nn.Module, init: str) -> None:
    """N(0, 1/width) weights and zero bias for a head whose output `element_scales` rescales."""
    if init == "default" or not isinstance(layer, nn.Linear):
        return
    nn.init.normal_(layer.weight, std=1.0 / math.sqrt(layer.weight.shape[1]))
    nn.init.zeros_(layer.bias)
