"""`LayerwiseHyperNetwork`: one generator shared across tensors, conditioned on a learned per-tensor
embedding, with a per-tensor output head sized to that tensor (the review's component-wise output)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from hypernet.hypernetworks.base import HyperNetwork
from hypernet.init import init_hidden, init_output_rows
from hypernet.layers import make_linear, mlp_trunk, widths
from hypernet.spec import ParamSpec


class LayerwiseHyperNetwork(HyperNetwork):
    """`cond: [..., in_features] -> [..., P]`, tensor by tensor.

    The shared trunk sees `[cond, tensor_embedding_t]` for every tensor `t` at once (one batched
    call); head `t` maps its hidden vector to `numel(t)` numbers.

    Args:
        embedding_dim: size of the learned tensor embeddings.
        hidden: hidden widths of the shared trunk.
        (other arguments as `MLPHyperNetwork`)
    """

    def __init__(
        self,
        in_features: int,
        spec: ParamSpec,
        embedding_dim: int = 16,
        hidden: Sequence[int] = (128,),
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
        if embedding_dim <= 0:
            raise ValueError(f"embedding_dim must be positive, got {embedding_dim}")
        self.embedding_dim = embedding_dim
        self.tensor_embeddings = nn.Parameter(torch.randn(len(spec), embedding_dim))
        self.hidden = widths(hidden)
        self.trunk = mlp_trunk(
            self.features + embedding_dim,
            self.hidden,
            activation,
            parametrization,
            self.weight_var,
            self.bias_var,
            norm=norm,
        )
        width = self.hidden[-1] if self.hidden else self.features + embedding_dim
        self.heads = nn.ModuleList(
            make_linear(width, t.numel, parametrization, self.weight_var, self.bias_var) for t in spec
        )
        if parametrization != "ntk":
            init_hidden(self.trunk, self.init)
            for head, info in zip(self.heads, spec.tensors, strict=True):
                assert isinstance(head, nn.Linear)
                init_output_rows(head.weight, head.bias, info, self.init, self.residual)

    def delta(self, h: Tensor) -> Tensor:
        lead, T = h.shape[:-1], len(self.spec)
        emb = self.tensor_embeddings.to(h.dtype).expand(*lead, T, self.embedding_dim)
        hidden = self.trunk(torch.cat([h.unsqueeze(-2).expand(*lead, T, h.shape[-1]), emb], dim=-1))
        return torch.cat([head(hidden[..., t, :]) for t, head in enumerate(self.heads)], dim=-1)
