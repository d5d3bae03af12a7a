from __future__ import annotations

import pytest
import torch
from torch import nn

import hypernet as hn

from models import BUILDERS, INPUTS, SmallCNN

KINDS = list(BUILDERS)
ATOL = 1e-5  # float32 sums of <100 terms of O(1): a few ulps of 1e-7 each, well under 1e-5


def _loop(target: hn.TargetNetwork, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Independent reference: a Python loop, one plain module per sample."""
    outs = []
    for i in range(x.shape[0]):
        m = target.materialize(w[i]).eval()
        outs.append(m(x[i : i + 1]))
    return torch.cat(outs)


@pytest.mark.parametrize("kind", KINDS)
def test_initial_weights_reproduce_module(kind: str) -> None:
    module = BUILDERS[kind]().eval()
    target = hn.TargetNetwork(module)
    x = INPUTS[kind](7)
    torch.testing.assert_close(target(x, target.initial_weights()), module(x), atol=ATOL, rtol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_per_sample_matches_loop_outputs_and_gradients(kind: str) -> None:
    module = BUILDERS[kind]().eval()
    target = hn.TargetNetwork(module)
    B = 5
    x = INPUTS[kind](B)
    base = target.initial_weights()
    w = (base + 0.05 * torch.randn(B, base.numel())).requires_grad_(True)
    y = target(x, w)
    w_ref = w.detach().clone().requires_grad_(True)
    # reference gradients: a loop of functional calls with shared weights, one sample at a time
    y_ref = torch.cat([target(x[i : i + 1], w_ref[i]) for i in range(B)])
    torch.testing.assert_close(y, y_ref, atol=ATOL, rtol=1e-5)
    torch.testing.assert_close(y, _loop(target, x, w.detach()), atol=ATOL, rtol=1e-5)
    g = torch.randn_like(y)
    (grad,) = torch.autograd.grad((y * g).sum(), w)
    (grad_ref,) = torch.autograd.grad((y_ref * g).sum(), w_ref)
    torch.testing.assert_close(grad, grad_ref, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kind", KINDS)
def test_materialize_equals_functional(kind: str) -> None:
    module = BUILDERS[kind]().eval()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    target = hn.TargetNetwork(module)
    w = target.initial_weights() + 0.1 * torch.randn(target.spec.numel)
    x = INPUTS[kind](3)
    plain = target.materialize(w).eval()
    assert plain is not module
    torch.testing.assert_close(plain(x), target(x, w), atol=ATOL, rtol=1e-5)
    for k, v in module.state_dict().items():  # the original is never mutated
        assert torch.equal(v, before[k]), k


def test_engines_chosen_and_agree() -> None:
    torch.manual_seed(1)
    module = SmallCNN().eval()
    batched = hn.TargetNetwork(module, engine="batched")
    vmapped = hn.TargetNetwork(module, engine="vmap")
    assert hn.TargetNetwork(module).engine == "batched"
    # attention reads its projections in a fused kernel: it alone runs under vmap, the rest batched
    transformer = hn.TargetNetwork(BUILDERS["transformer"]())
    assert (transformer.engine, transformer.vmap_modules) == ("batched", ["self_attn"])
    x = INPUTS["cnn"](4)
    w = batched.initial_weights() + 0.1 * torch.randn(4, batched.spec.numel)
    torch.testing.assert_close(batched(x, w), vmapped(x, w), atol=ATOL, rtol=1e-5)


def test_batchnorm_training_uses_whole_batch_statistics() -> None:
    bn = nn.BatchNorm1d(3)
    target = hn.TargetNetwork(bn)
    x = torch.randn(6, 3) * 2 + 1
    w = torch.randn(6, 6)
    y = target(x, w)
    bn_user, bn = bn, target.module  # the target runs a copy; the user's module is left alone
    assert int(bn_user.num_batches_tracked) == 0 and float(bn_user.running_mean.abs().sum()) == 0.0
    # independent: normalise by the batch's own biased statistics, then each sample's affine
    mean, var = x.mean(0), x.var(0, unbiased=False)
    xhat = (x - mean) / torch.sqrt(var + bn.eps)
    torch.testing.assert_close(y, xhat * w[:, :3] + w[:, 3:], atol=1e-5, rtol=1e-5)
    # running stats were updated once, from the whole batch
    torch.testing.assert_close(bn.running_mean, 0.1 * mean, atol=1e-6, rtol=1e-5)
    assert int(bn.num_batches_tracked) == 1
    bn.eval()
    y_eval = target(x, w)
    xhat_eval = (x - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps)
    torch.testing.assert_close(y_eval, xhat_eval * w[:, :3] + w[:, 3:], atol=1e-5, rtol=1e-5)


def test_selection_by_name_glob_and_type() -> None:
    m = SmallCNN()
    assert hn.TargetNetwork(m, generate="fc.weight").generated_names == ["fc.weight"]
    assert hn.TargetNetwork(m, generate="conv*.weight").generated_names == ["conv1.weight", "conv2.weight"]
    assert hn.TargetNetwork(m, generate="bn1").generated_names == ["bn1.weight", "bn1.bias"]
    assert hn.TargetNetwork(m, generate=[nn.Conv2d]).generated_names == [
        "conv1.weight",
        "conv1.bias",
        "conv2.weight",
        "conv2.bias",
    ]
    assert hn.TargetNetwork(m, generate=[nn.Linear, "bn1.bias"]).generated_names == ["bn1.bias", "fc.weight", "fc.bias"]


def test_free_parameters_are_trained_directly() -> None:
    m = SmallCNN()
    target = hn.TargetNetwork(m, generate=[nn.Linear])
    x = torch.randn(4, 2, 6, 6)
    w = target.initial_weights().expand(4, -1).clone()
    target(x, w).sum().backward()
    copy = target.module
    assert copy.conv1.weight.grad is not None and m.conv1.weight.grad is None  # the user's module is untouched
    # exactly the non-generated parameters train; the generated ones are not parameters at all
    assert [n for n, _ in target.named_parameters()] == [
        "module." + n for n, _ in m.named_parameters() if not n.startswith("fc.")
    ]
    assert {id(p) for p in target.free_parameters()} == {id(p) for p in target.parameters()}
    assert set(target.state_dict()) == {"module." + k for k in m.state_dict() if not k.startswith("fc.")}


def test_errors_name_argument_and_shapes() -> None:
    m = nn.Sequential(nn.Linear(4, 3))
    target = hn.TargetNetwork(m)
    x = torch.randn(5, 4)
    with pytest.raises(ValueError, match=r"weights: expected shape \[15\] or \[B, 15\], got \[14\]"):
        target(x, torch.zeros(14))
    with pytest.raises(ValueError, match=r"got 3 weight sets \(\[3, 15\]\) for an input batch of 5"):
        target(x, torch.zeros(3, 15))
    with pytest.raises(ValueError, match=r"weights: expected shape"):
        target(x, torch.zeros(5, 1, 15))
    with pytest.raises(TypeError, match="dtype torch.float64 does not match the target's torch.float32"):
        target(x, torch.zeros(15, dtype=torch.float64))
    for dtype in (torch.long, torch.bool):  # no target.to(int64) hint: a network's weights are floats
        with pytest.raises(
            TypeError, match=rf"^weights: dtype {dtype} is not floating point; use weights.to\(torch.float32\)$"
        ):
            target(x, torch.zeros(15, dtype=dtype))
    with pytest.raises(TypeError, match="weights: expected a Tensor"):
        target(x, [0.0] * 15)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="pattern 'fc\\*' matches no parameter"):
        hn.TargetNetwork(m, generate="fc*")
    with pytest.raises(ValueError, match="module type Conv2d matches no parameter"):
        hn.TargetNetwork(m, generate=[nn.Conv2d])
    with pytest.raises(ValueError, match="materialize: needs one weight set"):
        target.materialize(torch.zeros(2, 15))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a second device to mismatch")
def test_device_mismatch() -> None:
    target = hn.TargetNetwork(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="weights: on device"):
        target(torch.randn(3, 2), torch.zeros(6, device="cuda"))


def test_device_mismatch_on_meta() -> None:
    target = hn.TargetNetwork(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="weights: on device meta, the target is on cpu"):
        target(torch.randn(3, 2), torch.zeros(6, device="meta"))


def test_batch_first_false_rnn() -> None:
    gru = nn.GRU(3, 4)  # sequence-first: batch is dim 1
    target = hn.TargetNetwork(gru, batch_dim=1)
    x = torch.randn(6, 5, 3)
    w = target.initial_weights() + 0.1 * torch.randn(5, target.spec.numel)
    out, h = target(x, w)
    for i in range(5):
        o_i, h_i = target.materialize(w[i])(x[:, i : i + 1])
        torch.testing.assert_close(out[:, i : i + 1], o_i, atol=ATOL, rtol=1e-5)
        torch.testing.assert_close(h[:, i : i + 1], h_i, atol=ATOL, rtol=1e-5)


@pytest.mark.parametrize("generate", [None, "weight", "bias"])
def test_layer_norm_on_sequences_per_sample(generate: str | None) -> None:
    ln = nn.LayerNorm(8)
    target = hn.TargetNetwork(ln, generate=generate)
    assert target.engine == "batched"
    x = torch.randn(3, 5, 8)
    w = torch.randn(3, target.spec.numel)
    y = target(x, w)
    for i in range(3):
        torch.testing.assert_close(y[i], target.materialize(w[i])(x[i]), atol=1e-5, rtol=1e-5)


def test_single_weight_set_batch_takes_the_shared_path() -> None:
    target = hn.TargetNetwork(BUILDERS["cnn"]().eval())
    x = INPUTS["cnn"](1)
    w = (target.initial_weights() + 0.1 * torch.randn(target.spec.numel)).unsqueeze(0).requires_grad_(True)
    y = target(x, w)
    torch.testing.assert_close(y, target.materialize(w[0].detach())(x), atol=ATOL, rtol=1e-5)
    y.sum().backward()
    assert w.grad is not None and w.grad.shape == w.shape
