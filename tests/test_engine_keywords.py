"""Per-sample keyword arguments under the vmap fallback: attention padding masks hold one row per
sample (`hypernet.fallback.PER_SAMPLE_KEYWORDS`), so each sample must see its own row, whether one
module runs under vmap inside the batched pass or the whole target does.

Reference: a Python loop over `target.materialize(w_i)` plain modules, each called with sample i's
input and mask row; gradients read from their own parameters. float64, so 1e-10 is far below a real
error (a sample given another sample's mask changes its outputs by O(0.1))."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor, nn

import hypernet as hn
from hypernet import fallback

TOL: dict[str, Any] = dict(atol=1e-10, rtol=1e-10)
B, S, E = 4, 5, 8


def _masks(batch_first: bool) -> dict[str, Tensor]:
    """Different padding per sample (sample 3 pads nothing), [B, S] in either layout."""
    mask = torch.zeros(B, S, dtype=torch.bool)
    mask[0, 3:] = True
    mask[1, 1:] = True
    mask[2, 4:] = True
    return {"src_key_padding_mask": mask}


def _loop(
    target: hn.TargetNetwork, x: Tensor, w: Tensor, g: Tensor, d: int, kw: dict[str, Tensor], *args: Tensor
) -> tuple[Tensor, Tensor]:
    """Outputs and d(sum(y * g))/dw from one plain module per sample."""
    outs, grads = [], []
    for i in range(B):
        plain = target.materialize(w[i].detach())
        pick = [slice(None)] * x.ndim
        pick[d] = slice(i, i + 1)
        rows = {k: v[i : i + 1] for k, v in kw.items()}  # masks are [B, S] in either layout
        extra = [a[tuple(pick)] for a in args]
        y = plain(x[tuple(pick)], *extra, **rows)
        (y * g[tuple(pick)]).sum().backward()
        got = {n: p.grad if p.grad is not None else torch.zeros_like(p) for n, p in plain.named_parameters()}
        grads.append(target.spec.flatten({n: got[n] for n in target.spec.names}))
        outs.append(y)
    return torch.cat(outs, dim=d).detach(), torch.stack(grads)


def _check(target: hn.TargetNetwork, x: Tensor, kw: dict[str, Tensor], d: int, *args: Tensor) -> None:
    torch.manual_seed(1)
    w = (target.initial_weights() + 0.3 * torch.randn(B, target.spec.numel, dtype=torch.float64)).requires_grad_()
    y = target(x, w, *args, **kw)
    g = torch.randn_like(y)
    (grad,) = torch.autograd.grad((y * g).sum(), w)
    y_ref, grad_ref = _loop(target, x, w, g, d, kw, *args)
    torch.testing.assert_close(y, y_ref, **TOL)
    torch.testing.assert_close(grad, grad_ref, **TOL)
    # the masks matter here: one shared mask (sample 0's) gives other outputs for samples 1 and 2
    shared = {k: v[:1].expand_as(v) for k, v in kw.items()}
    y_shared = target(x, w, *args, **shared).detach()
    assert (y_shared - y_ref).abs().amax() > 1e-3


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("engine", ["auto", "vmap"])
def test_encoder_padding_mask_is_split_per_sample(batch_first: bool, engine: str) -> None:
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(E, 2, 16, dropout=0.0, batch_first=batch_first)
    module = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False).double()
    d = 0 if batch_first else 1
    target = hn.TargetNetwork(module, batch_dim=d, engine=engine)  # type: ignore[arg-type]
    x = torch.randn(B, S, E, dtype=torch.float64)
    if not batch_first:
        x = x.transpose(0, 1).contiguous()
    _check(target, x, _masks(batch_first), d)
    if engine == "auto":  # attention has no batched rule: the layers (not the whole target) run under vmap
        assert target.engine == "batched" and target.vmap_modules, target.engine_reason


def test_decoder_memory_and_both_masks_are_split_per_sample() -> None:
    torch.manual_seed(0)
    module = nn.TransformerDecoderLayer(E, 2, 16, dropout=0.0, batch_first=True).double()
    target = hn.TargetNetwork(module)
    x = torch.randn(B, S, E, dtype=torch.float64)
    memory = torch.randn(B, S + 1, E, dtype=torch.float64)
    tgt_mask = _masks(True)["src_key_padding_mask"]
    memory_mask = torch.zeros(B, S + 1, dtype=torch.bool)
    memory_mask[1, 2:] = True
    memory_mask[3, 5:] = True
    kw = {"tgt_key_padding_mask": tgt_mask, "memory_key_padding_mask": memory_mask}
    _check(target, x, kw, 0, memory)


def test_a_mask_without_a_row_per_sample_is_refused_naming_it() -> None:
    module = nn.TransformerEncoder(
        nn.TransformerEncoderLayer(E, 2, 16, dropout=0.0, batch_first=True), num_layers=1, enable_nested_tensor=False
    )
    for engine in ("auto", "vmap"):
        target = hn.TargetNetwork(module, engine=engine)  # type: ignore[arg-type]
        w = target.initial_weights().expand(B, -1)
        bad = torch.zeros(1, S, dtype=torch.bool)
        with pytest.raises(ValueError, match=r"key_padding_mask: shape \[1, 5\] has no row per sample \(4 along"):
            target(torch.randn(B, S, E), w, src_key_padding_mask=bad)


def test_split_keywords_hands_other_keywords_whole() -> None:
    mask = torch.zeros(B, S, dtype=torch.bool)
    attn = torch.zeros(S, S)
    whole, names, rows, dims = fallback.split_keywords(
        {"key_padding_mask": mask, "attn_mask": attn, "need_weights": False}, B
    )
    assert whole == {"attn_mask": attn, "need_weights": False} and whole["attn_mask"] is attn
    assert names == ["key_padding_mask"] and rows[0] is mask and dims == [0]
    one = fallback.with_rows(whole, names, [mask[2]], dims)
    assert one["key_padding_mask"].shape == (1, S) and one["attn_mask"] is attn
