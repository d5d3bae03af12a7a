"""`ChunkedHyperNetwork`: the flat weight vector cut into chunks, every chunk produced by one shared
generator from `[cond, chunk_embedding]` (von Oswald et al. 2020; hypnettorch's chunked design).

All chunks run in one batched call; the padding of the last chunk is dropped, never wrapped.
Far fewer parameters than an all-at-once head when `P` is large: the head is `chunk_size` wide.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from hypernet.hypernetworks.base import HyperNetwork
from hypernet.init import element_scales, init_hidden, init_shared_head
from hypernet.layers import make_linear, mlp_trunk, widths
from hypernet.spec import ParamSpec


class ChunkedHyperNetwork(HyperNetwork):
    """`cond: [..., in_features] -> [..., P]` in `ceil(P / chunk_size)` chunks.

    Args:
        chunk_size: numbers produced per chunk.
        chunk_dim: size of the learned chunk embeddings.
        hidden: hidden widths of the shared generator.
        (other arguments as `MLPHyperNetwork`)
    """

    out_scale: Tensor
    out_offset: Tensor

    def __init__(
        self,
        in_features: int,
        spec: ParamSpec,
        chunk_size: int = 4096,
        chunk_dim: int = 16,
        hidden: Sequence[int] = (128, 128),
        activation: str = "relu",
        parametrization: str = "standard",
        init: str | None = None,
        *,
        encoding: str | None = "default",
        theta0: Tensor | None = None,
        residual: bool | None = None,
        weight_var: float | None = None,
        bias_var: float | None = None,
        norm: str | None = None,
    ) -> None:
        super().__init__(in_features, spec, parametrization, init, encoding, theta0, residual, weight_var, bias_var)
        if chunk_size <= 0 or chunk_dim <= 0:
            raise ValueError(f"chunk_size and chunk_dim must be positive, got {chunk_size}, {chunk_dim}")
        self.chunk_size, self.chunk_dim = chunk_size, chunk_dim
        self.num_chunks = math.ceil(spec.numel / chunk_size)
        self.chunk_embeddings = nn.Parameter(torch.randn(self.num_chunks, chunk_dim))
        self.hidden = widths(hidden)
        self.trunk = mlp_trunk(
            self.features + chunk_dim,
            self.hidden,
            activation,
            parametrization,
            self.weight_var,
            self.bias_var,
            norm=norm,
        )
        width = self.hidden[-1] if self.hidden else self.features + chunk_dim
        self.head = make_linear(width, chunk_size, parametrization, self.weight_var, self.bias_var)
        scale, offset = element_scales(spec, self.init, width, self.residual)
        self.register_buffer("out_scale", scale)
        self.register_buffer("out_offset", offset)
        if parametrization != "ntk":
            init_hidden(self.trunk, self.init)
            init_shared_head(self.head, self.init)

    def chunks(self, h: Tensor) -> Tensor:
        """`h: [..., features] -> [..., num_chunks, chunk_size]`, every chunk in one batched call."""
        lead = h.shape[:-1]
        emb = self.chunk_embeddings.to(h.dtype).expand(*lead, self.num_chunks, self.chunk_dim)
        inp = torch.cat([h.unsqueeze(-2).expand(*lead, self.num_chunks, h.shape[-1]), emb], dim=-1)
        out: Tensor = self.head(self.trunk(inp))
        return out

    def delta(self, h: Tensor) -> Tensor:
        flat = self.chunks(h).flatten(-2)[..., : self.spec.numel]  # drop the last chunk's padding
        return self.out_offset + self.out_scale * flat
