"""Core 1.0 contract: generated weights are not parameters, options that do nothing raise,
hypernetize keeps outputs, save/load round trips, and the shape/dtype cases of conditions."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import hypernet as hn

from models import Recurrent, SmallCNN, mlp


def _task_model(parametrization: str = "standard") -> hn.HyperModel:
    target = hn.TargetNetwork(mlp())
    if parametrization == "mip":
        return hn.HyperModel(
            target, hn.MLPHyperNetwork(3, target.spec, hidden=(16,), parametrization="mip"), hn.TaskOneHot(3)
        )
    return hn.HyperModel(target, hn.MLPHyperNetwork(4, target.spec, hidden=(16,)), hn.TaskEmbedding(3, 4))


# -- 1. generated weights are not parameters ------------------------------------------------------
def test_parameters_are_exactly_what_trains() -> None:
    """Every parameter gets a gradient from one backward; the generated tensors are in none of
    parameters(), state_dict(). (Catches: placeholders kept as parameters, a dead copy in state.)"""
    model = _task_model()
    x, ids = torch.randn(5, 6), torch.tensor([0, 1, 2, 0, 1])
    model(x, ids).pow(2).sum().backward()
    names = [n for n, _ in model.named_parameters()]
    assert all(not n.startswith("target.") for n in names)  # the whole MLP is generated
    assert all(p.grad is not None for p in model.parameters()), names
    assert not any(k.startswith("target.") for k in model.state_dict())
    assert model.trainable_parameters() == list(model.parameters())
    # repr and shape reads of the placeholders still work
    assert "Linear(in_features=6, out_features=16, bias=True)" in repr(model)


def test_user_module_is_copied_not_changed() -> None:
    module = SmallCNN()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    ids_before = {n: id(p) for n, p in module.named_parameters()}
    model = hn.hypernetize(module, 2, hidden=(8,))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(2):
        opt.zero_grad()
        model(torch.randn(4, 2, 6, 6), torch.rand(4, 2)).sum().backward()
        opt.step()
    assert {n: id(p) for n, p in module.named_parameters()} == ids_before
    for k, v in module.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)


def test_hypernetize_stores_generated_weights_once() -> None:
    """P numbers live once, as theta0: no module copy, no initial-weights copy in the state."""
    module = mlp()
    P = sum(p.numel() for p in module.parameters())
    model = hn.hypernetize(module, 2, hidden=(8,))
    # the state is the hypernetwork's alone: the target contributes nothing (all generated)
    assert set(model.state_dict()) == {"hypernetwork." + k for k in model.hypernetwork.state_dict()}
    assert model.hypernetwork.theta0 is not None and model.hypernetwork.theta0.numel() == P
    with pytest.raises(RuntimeError, match="released"):
        model.target.initial_weights()


def test_tied_weights_follow_their_generated_tensor() -> None:
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(4, 4)
            self.b = nn.Linear(4, 4)
            self.b.weight = self.a.weight

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(torch.tanh(self.a(x)))

    module = Tied()
    target = hn.TargetNetwork(module)
    assert target.spec.names == ["a.weight", "a.bias", "b.bias"]
    w = target.initial_weights() + 0.1 * torch.randn(3, target.spec.numel)
    x = torch.randn(3, 4)
    out = target(x, w)
    for i in range(3):
        plain = target.materialize(w[i])
        assert plain.a.weight is plain.b.weight  # still tied
        torch.testing.assert_close(out[i], plain(x[i : i + 1])[0], atol=1e-6, rtol=1e-6)


def _three_sgd_steps(model: nn.Module, params: nn.Module, per_sample: bool, part: slice) -> None:
    """3 SGD steps of `model` on the rows `part` of a fixed batch of 8 (all ranks draw the same batch)."""
    opt = torch.optim.SGD(params.parameters(), lr=0.1)
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        x = torch.randn(8, 6, generator=gen, dtype=torch.float64)
        ids = torch.randint(0, 3, (8,), generator=gen) if per_sample else torch.tensor(1)
        y = torch.randn(8, 3, generator=gen, dtype=torch.float64)
        opt.zero_grad()
        (model(x[part], ids[part] if per_sample else ids) - y[part]).pow(2).mean().backward()
        opt.step()


def _ddp_worker(rank: int, world: int, per_sample: bool, port: int, out: str) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        model = _task_model().double()
        ddp = DistributedDataParallel(model)  # no find_unused_parameters: every parameter must be used
        _three_sgd_steps(ddp, ddp, per_sample, slice(rank * 4, rank * 4 + 4))
        if rank == 0:
            torch.save(model.state_dict(), out)
        dist.barrier()  # no rank tears gloo down while the other still talks to it (seen as SIGABRT)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("per_sample", [True, False], ids=["per-sample", "shared"])
def test_ddp_two_gloo_processes_match_one_process(per_sample: bool, tmp_path: Path) -> None:
    """2 processes x 4 samples under DDP == 1 process x 8 samples (DDP averages the two halves'
    mean-loss gradients, which is the full batch's mean-loss gradient). float64, so 1e-10 is
    far below the effect of any lost or doubled gradient (lr 0.1 x O(1) gradients)."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "ddp.pt"
    mp.spawn(_ddp_worker, args=(2, per_sample, port, str(out)), nprocs=2, join=True)
    torch.manual_seed(0)
    model = _task_model().double()
    _three_sgd_steps(model, model, per_sample, slice(0, 8))
    got = torch.load(out, weights_only=True)
    assert set(got) == set(model.state_dict())
    for k, v in model.state_dict().items():
        torch.testing.assert_close(got[k], v, atol=1e-10, rtol=0)


# -- 2. one place for MIP; options that do nothing raise ---------------------------------------
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"parametrization": "ntk", "init": "hyperfan_in"}, "init='hyperfan_in' has no effect"),
        ({"parametrization": "standard", "encoding": "cos|sin"}, "encoding='cos|sin' has no effect"),
        ({"parametrization": "ntk", "encoding": None}, "encoding=None has no effect"),
        ({"parametrization": "standard", "weight_var": 1.0}, "weight_var/bias_var have no effect"),
        ({"parametrization": "mip", "bias_var": 0.1}, "weight_var/bias_var have no effect"),
        ({"parametrization": "standard", "theta0": torch.zeros(1)}, "theta0= has no effect"),
        ({"parametrization": "mip", "residual": False, "theta0": torch.zeros(1)}, "theta0= has no effect"),
    ],
)
@pytest.mark.parametrize("design", [hn.MLPHyperNetwork, hn.ChunkedHyperNetwork, hn.LayerwiseHyperNetwork])
def test_options_that_do_nothing_raise(design: type, kwargs: dict, match: str) -> None:
    spec = hn.TargetNetwork(nn.Linear(2, 1)).spec
    with pytest.raises(ValueError, match=match):
        design(2, spec, **kwargs)


def test_lowrank_and_input_encoding_no_op_options_raise() -> None:
    spec = hn.TargetNetwork(nn.Linear(2, 1)).spec
    with pytest.raises(ValueError, match="init='mip' has no effect"):
        hn.LowRankHyperNetwork(2, spec, parametrization="ntk", init="mip")
    with pytest.raises(ValueError, match="check_range=False has no effect"):
        hn.InputEncoding(None, check_range=False)


def test_valid_mip_ablations_build() -> None:
    """Encoding only and residual only are the MIP ablations; both must stay possible."""
    spec = hn.TargetNetwork(nn.Linear(2, 1)).spec
    enc_only = hn.MLPHyperNetwork(2, spec, hidden=(8,), parametrization="mip", residual=False)
    res_only = hn.MLPHyperNetwork(2, spec, hidden=(8,), residual=True)
    assert enc_only.encodes_input and enc_only.theta0 is None
    assert not res_only.encodes_input and res_only.theta0 is not None
    assert hn.MLPHyperNetwork(2, spec, hidden=(8,), parametrization="mip", encoding="z|1-z").features == 4


def test_stacked_encodings_and_width_mismatch_raise_at_construction() -> None:
    target = hn.TargetNetwork(nn.Linear(2, 1))
    mip = hn.MLPHyperNetwork(3, target.spec, hidden=(8,), parametrization="mip")
    with pytest.raises(ValueError, match="encodes it again"):
        hn.HyperModel(
            target,
            hn.MLPHyperNetwork(6, target.spec, hidden=(8,), parametrization="mip"),
            hn.InputEncoding("cos|sin", 3),
        )
    with pytest.raises(ValueError, match=r"TaskEmbedding gives 4 features, the hypernetwork takes in_features=3"):
        hn.HyperModel(target, mip, hn.TaskEmbedding(5, 4))
    with pytest.raises(ValueError, match=r"TaskOneHot gives 5 features"):
        hn.HyperModel(target, mip, hn.TaskOneHot(5))


def test_task_one_hot_is_mip_over_task_ids() -> None:
    """TaskOneHot + MIP equals feeding the one-hot vectors by hand (the demo's old code path)."""
    torch.manual_seed(0)
    target = hn.TargetNetwork(mlp())
    hyper = hn.MLPHyperNetwork(3, target.spec, hidden=(16,), parametrization="mip")
    model = hn.HyperModel(target, hyper, hn.TaskOneHot(3))
    ids = torch.tensor([2, 0, 1, 2])
    by_hand = torch.tensor([[0.0, 0, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
    torch.testing.assert_close(model.weights(ids), hyper(by_hand), rtol=0, atol=0)
    assert model.condition(None, torch.tensor(1)).tolist() == [0.0, 1.0, 0.0]
    with pytest.raises(ValueError, match=r"task ids: must lie in \[0, 2\]"):
        model.weights(torch.tensor([3]))
    assert hn.TaskOneHot(3).double()(torch.tensor(0)).dtype == torch.float64


def test_one_activation_table_for_layers_and_kernel_descriptions() -> None:
    from hypernet.activations import ACTIVATIONS
    from hypernet.kernels.finite import HyperDescription

    model = HyperDescription(3, 2, 8, 8, activation="erf").module()  # erf: a closed-form kernel case
    erf_layers = [m for m in model.modules() if type(m).__name__ == "Erf"]
    assert len(erf_layers) == 2  # one in f, one in g
    x = torch.linspace(-2, 2, 5)
    torch.testing.assert_close(erf_layers[0](x), torch.erf(x))
    spec = hn.TargetNetwork(nn.Linear(2, 1)).spec
    for name in ACTIVATIONS:  # every name in the table builds a hypernetwork and has a kernel rule
        hn.MLPHyperNetwork(2, spec, hidden=(4,), activation=name)
        hn.kernels.get_rule(name)


# -- 3. hypernetize keeps outputs --------------------------------------------------------------
@pytest.mark.parametrize("kind", ["mlp", "cnn-train", "cnn-eval", "gru"])
def test_hypernetize_equals_original_at_step_zero(kind: str) -> None:
    """Default hypernetize: exactly the original's outputs, per-sample and shared conditions. A
    CNN with BatchNorm in training mode uses batch statistics in both."""
    module, x = {
        "mlp": (mlp(), torch.randn(6, 6)),
        "cnn-train": (SmallCNN().train(), torch.randn(6, 2, 6, 6)),
        "cnn-eval": (SmallCNN().eval(), torch.randn(6, 2, 6, 6)),
        "gru": (Recurrent(nn.GRU), torch.randn(6, 4, 3)),
    }[kind]
    expected = module(x).detach()
    model = hn.hypernetize(module, 2)
    model.train(module.training)
    # 1e-6: float32 rounding of the same arithmetic (theta0 + 0); a live delta is ~1e-1 (next test)
    torch.testing.assert_close(model(x, torch.rand(6, 2)), expected, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(model(x, torch.rand(2)), expected, atol=1e-6, rtol=1e-6)


def test_hypernetize_zero_init_still_trains_within_50_steps() -> None:
    """The zero output layer has a non-zero gradient: the loss must fall by half within 50 steps
    on a task whose answer depends on the condition (so theta0 alone cannot fit it)."""
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 1))
    model = hn.hypernetize(module, 1, hidden=(32,))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, c = torch.randn(64, 2), torch.rand(64)
    y = (torch.sin(3 * c) * x[:, 0]).unsqueeze(1)
    losses = []
    for _ in range(50):
        opt.zero_grad()
        loss = (model(x, c) - y).pow(2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    head = model.hypernetwork.head
    assert head.weight.abs().sum() > 0  # the zero layer moved
    assert losses[-1] < 0.5 * losses[0], losses[::10]


def test_hypernetize_picks_a_chunked_head_above_the_bound() -> None:
    module = mlp()  # P = 435
    with pytest.warns(UserWarning, match=r"would have 7,395 parameters \(> max_head_params = 1,000\)"):
        model = hn.hypernetize(module, 2, hidden=(16,), max_head_params=1000)
    assert isinstance(model.hypernetwork, hn.ChunkedHyperNetwork)
    head = model.hypernetwork.head
    assert head.weight.numel() + head.bias.numel() <= 1000  # the chunked head respects the bound
    x = torch.randn(3, 6)
    torch.testing.assert_close(model(x, torch.rand(3, 2)), module(x), atol=1e-6, rtol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        small = hn.hypernetize(module, 2, hidden=(16,))
    assert isinstance(small.hypernetwork, hn.MLPHyperNetwork)


# -- 4. save and load --------------------------------------------------------------------------
@pytest.mark.parametrize("parametrization", ["standard", "mip"])
def test_save_load_round_trip(parametrization: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = _task_model(parametrization)
    x, ids = torch.randn(4, 6), torch.tensor([0, 2, 1, 1])
    path = hn.save(model, tmp_path / "m.safetensors")
    torch.manual_seed(1)
    fresh = _task_model(parametrization)
    assert not torch.allclose(fresh(x, ids), model(x, ids))
    hn.load(path, fresh)
    torch.testing.assert_close(fresh(x, ids), model(x, ids), rtol=0, atol=0)
    # torch.save of the state dict loads with weights_only=True (only tensors inside)
    torch.save(model.state_dict(), tmp_path / "m.pt")
    torch.manual_seed(2)
    other = _task_model(parametrization)
    other.load_state_dict(torch.load(tmp_path / "m.pt", weights_only=True))
    torch.testing.assert_close(other(x, ids), model(x, ids), rtol=0, atol=0)
    assert not list(tmp_path.glob("*.tmp"))


def test_save_load_keeps_tied_free_weights_tied(tmp_path: Path) -> None:
    class TiedFree(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Linear(3, 3, bias=False)
            self.out = nn.Linear(3, 3, bias=False)
            self.out.weight = self.emb.weight
            self.mid = nn.Linear(3, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out(self.mid(self.emb(x)))

    model = hn.hypernetize(TiedFree(), 1, generate="mid", hidden=(4,))
    hn.save(model, tmp_path / "t.safetensors")
    fresh = hn.hypernetize(TiedFree(), 1, generate="mid", hidden=(4,))
    hn.load(tmp_path / "t.safetensors", fresh)
    assert fresh.target.module.out.weight is fresh.target.module.emb.weight
    torch.testing.assert_close(fresh.target.module.emb.weight, model.target.module.emb.weight)


def test_load_refuses_a_file_that_does_not_fit_and_leaves_the_model_alone(tmp_path: Path) -> None:
    model = _task_model("standard")
    other = _task_model("mip")
    hn.save(other, tmp_path / "mip.safetensors")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"does not fit this HyperModel .*missing .*conditioner.embedding.weight"):
        hn.load(tmp_path / "mip.safetensors", model)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    with pytest.raises(TypeError, match=r"hn.load\(path, model\)"):
        hn.load(model, tmp_path / "mip.safetensors")  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError, match="no file at"):
        hn.load(tmp_path / "absent.safetensors", model)
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="junk.safetensors is not a readable safetensors file"):
        hn.load(tmp_path / "junk.safetensors", model)


# -- 5. shapes and dtypes ----------------------------------------------------------------------
def test_scalar_hyperparameter_as_float_vector_or_column() -> None:
    target = hn.TargetNetwork(nn.Linear(3, 2))
    model = hn.HyperModel(target, hn.MLPHyperNetwork(1, target.spec, hidden=(8,), parametrization="mip"))
    x = torch.randn(4, 3)
    gammas = torch.tensor([0.1, 0.5, 0.5, 0.9])
    column = model(x, gammas[:, None])
    torch.testing.assert_close(model(x, gammas), column, rtol=0, atol=0)
    torch.testing.assert_close(model(x, 0.5), model(x, torch.tensor([0.5])), rtol=0, atol=0)
    torch.testing.assert_close(model(x, 0.5)[1], column[1], atol=1e-6, rtol=1e-6)


def test_empty_batch_returns_empty_outputs() -> None:
    for module, x in [(mlp(), torch.randn(0, 6)), (SmallCNN(), torch.randn(0, 2, 6, 6))]:
        model = hn.hypernetize(module, 2, hidden=(8,))
        out = model(x, torch.rand(0, 2))
        assert out.shape == (0, module(torch.randn(1, *x.shape[1:])).shape[1])
    ids_model = _task_model()
    assert ids_model(torch.randn(0, 6), torch.zeros(0, dtype=torch.long)).shape == (0, 3)


def test_float64_condition_into_float32_model_says_what_to_do() -> None:
    model = hn.hypernetize(mlp(), 2, hidden=(8,))
    with pytest.raises(TypeError, match=r"cond: dtype torch.float64 does not match .*torch.float32; use cond.to"):
        model(torch.randn(2, 6), torch.rand(2, 2, dtype=torch.float64))
    with pytest.raises(TypeError, match=r"cond: dtype torch.int64 is not floating point; task ids go through"):
        model(torch.randn(2, 6), torch.tensor([0, 1]))


def test_unbatched_conv_input_with_per_sample_weights_says_what_to_do() -> None:
    conv = nn.Conv2d(3, 4, 3)
    target = hn.TargetNetwork(conv)
    w = target.initial_weights().expand(3, -1).clone()
    with pytest.raises(ValueError, match=r"conv2d needs a batched input \[B, C, H, W\].*x.unsqueeze\(0\)"):
        target(torch.randn(3, 8, 8), w)  # [C, H, W] with C == 3 == the number of weight sets
    # shared weights: an unbatched input works as in PyTorch
    torch.testing.assert_close(target(torch.randn(3, 8, 8), w[0]).shape, torch.Size([4, 6, 6]))


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_rnn_target_per_sample_equals_loop(nonlinearity: str) -> None:
    """nn.RNN runs batched: outputs and gradients equal a loop over materialized modules (float64:
    the same arithmetic in another order, so 1e-12)."""
    rnn = nn.RNN(3, 4, num_layers=2, nonlinearity=nonlinearity, batch_first=True, bidirectional=True).double()
    target = hn.TargetNetwork(rnn)
    assert target.engine == "batched"
    w = (target.initial_weights() + 0.2 * torch.randn(3, target.spec.numel, dtype=torch.float64)).requires_grad_()
    x = torch.randn(3, 5, 3, dtype=torch.float64)
    out = target(x, w)[0]
    (g,) = torch.autograd.grad(out.pow(2).sum(), w)
    for i in range(3):
        wi = w[i].detach().requires_grad_()
        params = dict(zip(target.spec.names, target.spec.unflatten(wi).values(), strict=True))
        ref = torch.func.functional_call(rnn, params, (x[i : i + 1],))[0]
        torch.testing.assert_close(out[i], ref[0], atol=1e-12, rtol=0)
        (gi,) = torch.autograd.grad(ref.pow(2).sum(), wi)
        torch.testing.assert_close(g[i], gi, atol=1e-12, rtol=0)


def test_noise_conditioner_follows_the_model_dtype() -> None:
    spec = hn.TargetNetwork(nn.Linear(4, 2)).spec
    model = hn.HyperModel(hn.TargetNetwork(nn.Linear(4, 2)), hn.MLPHyperNetwork(3, spec), hn.NoiseConditioner(3))
    assert model.double()(torch.randn(5, 4, dtype=torch.float64)).dtype == torch.float64


def test_float64_input_into_float32_target_says_what_to_do() -> None:
    target = hn.TargetNetwork(mlp())
    w = target.initial_weights()
    with pytest.raises(TypeError, match=r"x: dtype torch.float64 does not match the target's torch.float32"):
        target(torch.randn(2, 6, dtype=torch.float64), w)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast decides dtypes per op: no check there
        target(torch.randn(2, 6), w)


def test_empirical_ntk_of_a_task_conditioned_mip_hypermodel() -> None:
    """Value checks of conditions (task ids, [0, 1] range) must not break torch.func transforms: the
    vmap-based Jacobian path equals the NTK-vector-product path (two different implementations)."""
    torch.manual_seed(0)
    target = hn.TargetNetwork(nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 2)))
    hyper = hn.MLPHyperNetwork(3, target.spec, hidden=(16,), parametrization="mip")
    model = hn.HyperModel(target, hyper, hn.TaskOneHot(3))
    inputs = (torch.randn(6, 5), torch.tensor([0, 1, 2, 0, 1, 2]))
    jac = hn.kernels.empirical_ntk(model, inputs, method="jacobian")
    ntvp = hn.kernels.empirical_ntk(model, inputs, method="ntvp")
    assert jac.shape == (6, 6, 2, 2) and float(jac.abs().max()) > 1e-3
    torch.testing.assert_close(jac, ntvp, atol=1e-5, rtol=1e-4)  # float32 sums in two orders
