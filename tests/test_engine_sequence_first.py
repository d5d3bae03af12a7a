"""Sequence-first targets (`batch_dim=1`, inputs `[S, B, ...]`) on the batched engine: LayerNorm and
Embedding move the batch to the front and back as Linear does, and stay batched (no vmap fallback).

Reference: a loop over `target.materialize(w_i)` plain modules, each fed sample i's slice `[S, 1, ...]`;
gradients from their own parameters. float64, so 1e-10 is far below a real error (normalising over
the wrong dims, or giving sample i another sample's weights, changes outputs by O(0.1))."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor, nn

import hypernet as hn

TOL: dict[str, Any] = dict(atol=1e-10, rtol=1e-10)
S, B = 6, 4


class Tokens(nn.Module):
    """ids [S, B] -> Embedding (with a padding row) -> LayerNorm -> Linear: [S, B, 3]."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 5, padding_idx=0)
        self.norm = nn.LayerNorm(5)
        self.out = nn.Linear(5, 3)

    def forward(self, ids: Tensor) -> Tensor:
        return self.out(self.norm(self.emb(ids)))


class Grid(nn.Module):
    """x [S, B, 2, 5] -> LayerNorm over the last two dims -> Linear: [S, B, 2, 3]."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.LayerNorm((2, 5))
        self.out = nn.Linear(5, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.norm(x))


def _inputs(name: str) -> Tensor:
    g = torch.Generator().manual_seed(3)
    if name == "tokens":
        ids = torch.randint(0, 10, (S, B), generator=g)
        ids[:2, 1] = 0  # padding ids in one sample
        return ids
    return torch.randn(S, B, 2, 5, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("name", ["tokens", "grid"])
def test_sequence_first_layers_stay_batched_and_equal_the_loop(name: str) -> None:
    torch.manual_seed(0)
    module = (Tokens() if name == "tokens" else Grid()).double()
    target = hn.TargetNetwork(module, batch_dim=1)
    x = _inputs(name)
    w = (target.initial_weights() + 0.3 * torch.randn(B, target.spec.numel, dtype=torch.float64)).requires_grad_()
    y = target(x, w)
    g = torch.randn_like(y)
    (grad,) = torch.autograd.grad((y * g).sum(), w)
    outs, grads = [], []
    for i in range(B):
        plain = target.materialize(w[i].detach())
        yi = plain(x[:, i : i + 1])
        (yi * g[:, i : i + 1]).sum().backward()
        got = {n: p.grad if p.grad is not None else torch.zeros_like(p) for n, p in plain.named_parameters()}
        grads.append(target.spec.flatten({n: got[n] for n in target.spec.names}))
        outs.append(yi.detach())
    torch.testing.assert_close(y, torch.cat(outs, dim=1), **TOL)
    torch.testing.assert_close(grad, torch.stack(grads), **TOL)
    assert (target.engine, target.vmap_modules) == ("batched", []), target.engine_reason
    if name == "tokens":  # the padding row gets no gradient, in any sample
        row0 = target.spec.unflatten(grad)["emb.weight"][:, 0]
        assert torch.count_nonzero(row0) == 0
