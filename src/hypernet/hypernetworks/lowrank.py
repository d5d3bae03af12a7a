"""`LowRankHyperNetwork`: every 2-D (and conv) weight is `W = W0 + U V^T` with the factors
`U: [out, r]`, `V: [in * kernel, r]` generated and `W0` learned; other tensors are generated whole,
around their own base values. Generates `r (out + in)` numbers per matrix instead of `out * in`
(a matrix so small that `r (out + in) >= out * in` is generated whole)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from hypernet.hypernetworks.base import HyperNetwork
from hypernet.init import init_hidden, init_output_rows, intended_variance
from hypernet.layers import make_linear, mlp_trunk, widths
from hypernet.spec import ParamSpec, TensorInfo


@dataclass(frozen=True)
class _Block:
    info: TensorInfo
    rank: int  # 0: generated whole
    rows: int  # out
    cols: int  # in * kernel
    offset: int  # into the generated vector
    size: int


def _factors(block: _Block, chunk: Tensor) -> tuple[Tensor, Tensor]:
    """`chunk: [..., r (out + in)]` -> `U: [..., out, r]`, `V: [..., in, r]`."""
    lead, split = chunk.shape[:-1], block.rows * block.rank
    return (
        chunk[..., :split].reshape(*lead, block.rows, block.rank),
        chunk[..., split:].reshape(*lead, block.cols, block.rank),
    )


@dataclass
class LowRankWeights:
    """Generated weights in factored form, so a target can apply `x (W0 + U V^T)^T` without forming W.

    `base: {name: [*shape]}` (W0, shared), `factors: {name: (U [..., out, r], V [..., in, r])}`,
    `dense: {name: [..., *shape]}` (tensors generated whole, base included).
    """

    base: dict[str, Tensor]
    factors: dict[str, tuple[Tensor, Tensor]]
    dense: dict[str, Tensor]


class LowRankHyperNetwork(HyperNetwork):
    """`cond: [..., in_features] -> [..., P]` through low-rank deltas around learned base weights.

    Args:
        rank: the rank `r` of every matrix delta (capped at `min(out, in)`).
        hidden: hidden widths of the trunk.
        theta0: the base weights `[P]` (e.g. `target.initial_weights()`); by default as PyTorch
            layers initialise themselves.
        (other arguments as `MLPHyperNetwork`)
    """

    def __init__(
        self,
        in_features: int,
        spec: ParamSpec,
        rank: int = 4,
        hidden: Sequence[int] = (128, 128),
        activation: str = "relu",
        parametrization: str = "standard",
        init: str | None = None,
        *,
        encoding: str | None = "default",
        theta0: Tensor | None = None,
        weight_var: float | None = None,
        bias_var: float | None = None,
        norm: str | None = None,
    ) -> None:
        super().__init__(in_features, spec, parametrization, init, encoding, theta0, True, weight_var, bias_var)
        if not isinstance(rank, int) or isinstance(rank, bool) or rank <= 0:
            raise ValueError(f"rank must be a positive int, got {rank!r}")
        self.rank = rank
        blocks, offset = [], 0
        for info in spec.tensors:
            rows = info.shape[0] if len(info.shape) >= 2 else info.numel
            cols = info.numel // rows
            r = min(rank, rows, cols)
            if len(info.shape) >= 2 and r * (rows + cols) < info.numel:
                size = r * (rows + cols)
            else:  # vectors, and matrices too small for factors to save anything, are generated whole
                rows, cols, r, size = info.numel, 1, 0, info.numel
            blocks.append(_Block(info, r, rows, cols, offset, size))
            offset += size
        self.blocks = tuple(blocks)
        self._num_generated = offset
        self.hidden = widths(hidden)
        self.trunk = mlp_trunk(
            self.features, self.hidden, activation, parametrization, self.weight_var, self.bias_var, norm=norm
        )
        width = self.hidden[-1] if self.hidden else self.features
        self.head = make_linear(width, offset, parametrization, self.weight_var, self.bias_var)
        if parametrization != "ntk":
            init_hidden(self.trunk, self.init)
            assert isinstance(self.head, nn.Linear)
            self._init_head(self.head)

    @torch.no_grad()
    def _init_head(self, head: nn.Linear) -> None:
        fourth = self._hidden_fourth_moment() if any(b.rank for b in self.blocks) else 1.0
        for b in self.blocks:
            rows = slice(b.offset, b.offset + b.size)
            if b.rank == 0:
                init_output_rows(head.weight[rows], head.bias[rows], b.info, self.init, residual=True)
            elif self.init != "default":
                # U and V are both read from the same hidden vector h: with head rows of std s, given h,
                # U, V entries are independent N(0, s² |h|²), so E[(U Vᵀ)²] = r s⁴ E[|h|⁴]. Match the
                # variance a directly initialised layer would have.
                var = intended_variance(b.info, "hyperfan_out" if self.init == "hyperfan_out" else "hyperfan_in")
                nn.init.normal_(head.weight[rows], std=(var / (b.rank * fourth)) ** 0.25)
                nn.init.zeros_(head.bias[rows])

    @torch.no_grad()
    def _hidden_fourth_moment(self, samples: int = 1024) -> float:
        """`E[|h|⁴]` of the trunk's output, over conditions drawn as the inits assume them: N(0, 1)
        (a task embedding, noise), or uniform in [0, 1] under MIP's encoding. A fixed generator, so
        the global random stream (and thus every other initial value) is left as it was."""
        gen = torch.Generator().manual_seed(0)
        shape = (samples, self.in_features)
        cond = torch.rand(shape, generator=gen) if self.encodes_input else torch.randn(shape, generator=gen)
        h = self.trunk(self.encoding(cond))
        return float(h.pow(2).sum(-1).pow(2).mean())

    @property
    def num_generated(self) -> int:
        """Numbers produced per condition: `r (out + in)` per matrix plus the other tensors."""
        return self._num_generated

    def _generated(self, cond: Tensor | float) -> Tensor:
        out: Tensor = self.head(self.trunk(self.encoding(self.prepare_condition(cond))))
        return out

    def factorized(self, cond: Tensor | float) -> LowRankWeights:
        """The weights for `cond` in factored form (see `LowRankWeights`)."""
        g = self._generated(cond)
        assert self.theta0 is not None
        base = self.spec.unflatten(self.theta0)
        factors: dict[str, tuple[Tensor, Tensor]] = {}
        dense: dict[str, Tensor] = {}
        for b in self.blocks:
            chunk = g[..., b.offset : b.offset + b.size]
            name = b.info.name
            if b.rank == 0:
                dense[name] = base[name] + chunk.reshape((*chunk.shape[:-1], *b.info.shape))
            else:
                factors[name] = _factors(b, chunk)
        return LowRankWeights({n: base[n] for n in factors}, factors, dense)

    def delta(self, h: Tensor) -> Tensor:
        g: Tensor = self.head(self.trunk(h))
        parts = []
        for b in self.blocks:
            chunk = g[..., b.offset : b.offset + b.size]
            if b.rank == 0:
                parts.append(chunk)
            else:
                U, V = _factors(b, chunk)
                parts.append((U @ V.transpose(-1, -2)).flatten(-2))
        return torch.cat(parts, dim=-1)
