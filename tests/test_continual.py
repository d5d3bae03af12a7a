"""Continual learning: the hypernetwork's output regularizer against an explicit formula, how well
it keeps task 1's weights, entropy-based task inference, and every method of the harness in --quick."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import hypernet as hn
from hypernet.cli import main
from hypernet.methods import HnetContinual, class_incremental_predict, infer_task, output_regularizer
from hypernet.methods.learners import HnetLearner


def _hnet(mode: str = "stored", beta: float = 0.3, num_tasks: int = 4) -> HnetContinual:
    target = hn.TargetNetwork(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)))
    hyper = hn.MLPHyperNetwork(3, target.spec, hidden=(16,))
    return HnetContinual(target, hyper, num_tasks, 3, beta=beta, target_mode=mode).double()  # type: ignore[arg-type]


def _grads(loss: torch.Tensor, module: nn.Module) -> list[torch.Tensor]:
    params = [p for p in module.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return [g if g is not None else torch.zeros_like(p) for g, p in zip(grads, params, strict=True)]


@pytest.mark.parametrize("mode", ["stored", "frozen-copy"])
def test_regularizer_zero_at_snapshot_and_gradient_equals_explicit_formula(mode: str) -> None:
    hnet = _hnet(mode)
    for t in range(3):
        hnet.end_task(t)
    # the snapshot, computed here one task at a time (not by the library's batched call)
    snap = [hnet.hypernetwork(hnet.embeddings[t].detach()).detach().clone() for t in range(3)]
    reg = hnet.regularizer(3)
    assert float(reg.detach()) == 0.0
    assert all(float(g.abs().max()) == 0.0 for g in _grads(reg, hnet.hypernetwork))
    with torch.no_grad():
        for p in hnet.hypernetwork.parameters():
            p.add_(0.05 * torch.randn_like(p))
    reg = hnet.regularizer(3)
    # explicit: beta/(T-1) * sum_{t<T} ||h(e_t; Theta*) - h(e_t; Theta)||^2 with T-1 = 3
    explicit = sum(((hnet.hypernetwork(hnet.embeddings[t].detach()) - snap[t]) ** 2).sum() for t in range(3)) * 0.3 / 3
    assert float(reg.detach()) > 0
    # float64, the same sums in another order: agreement to ~1e-15 relative; 1e-10 leaves margin
    torch.testing.assert_close(reg, explicit, rtol=1e-10, atol=0)
    for a, b in zip(_grads(reg, hnet.hypernetwork), _grads(explicit, hnet.hypernetwork), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-14)


def test_regularizer_lookahead_and_subset_match_explicit_formula() -> None:
    hnet = _hnet()
    hnet.end_task(0)
    hnet.end_task(1)
    targets = hnet.targets[:2].clone()
    with torch.no_grad():
        for p in hnet.hypernetwork.parameters():
            p.add_(0.05 * torch.randn_like(p))
    delta = {n: 0.01 * torch.randn_like(p, dtype=p.dtype) for n, p in hnet.hypernetwork.named_parameters()}
    reg = hnet.regularizer(2, delta=delta)
    # explicit: the hypernetwork (one ReLU layer, then the head) written out with Theta + delta
    q = {n: p + delta[n] for n, p in hnet.hypernetwork.named_parameters()}

    def moved(e: torch.Tensor) -> torch.Tensor:
        h = torch.relu(q["trunk.0.weight"] @ e + q["trunk.0.bias"])
        return q["head.weight"] @ h + q["head.bias"]

    explicit = sum(((moved(hnet.embeddings[t].detach()) - targets[t]) ** 2).sum() for t in range(2)) * 0.3 / 2
    torch.testing.assert_close(reg, explicit, rtol=1e-10, atol=0)
    for a, b in zip(_grads(reg, hnet.hypernetwork), _grads(explicit, hnet.hypernetwork), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-14)
    # a subset of one earlier task: beta/1 * that task's term, the task drawn by the generator
    g = torch.Generator().manual_seed(3)
    pick = int(torch.randperm(2, generator=torch.Generator().manual_seed(3))[0])
    sub = hnet.regularizer(2, subset=1, generator=g)
    one = ((hnet.hypernetwork(hnet.embeddings[pick].detach()) - targets[pick]) ** 2).sum() * 0.3
    torch.testing.assert_close(sub, one, rtol=1e-10, atol=0)
    # the function passes gradcheck in the hypernetwork's head weight
    head = hnet.hypernetwork.head.weight  # type: ignore[union-attr]
    emb = torch.stack([hnet.embeddings[t].detach() for t in range(2)])
    torch.autograd.gradcheck(
        lambda w: output_regularizer(hnet.hypernetwork, emb, targets, 0.3, {"head.weight": w - head.detach()}),
        (head.detach().clone().requires_grad_(True),),
    )


def _train(learner: HnetLearner, x: torch.Tensor, y: torch.Tensor, task: int, steps: int = 150) -> None:
    opt = torch.optim.Adam(learner.trainable(task), lr=1e-2)
    g = torch.Generator().manual_seed(task)
    for _ in range(steps):
        idx = torch.randint(len(x), (32,), generator=g)
        loss, _ = learner.loss(x[idx], y[idx], task, g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    learner.end_task(task, x, g)


def test_regularizer_keeps_task1_weights_ten_times_closer() -> None:
    x = torch.randn(256, 4)
    ys = [(x[:, 0] > 0).long(), (x[:, 1] * x[:, 2] > 0).long()]
    moved = {}
    for beta in (0.0, 0.05):
        torch.manual_seed(0)
        target = hn.TargetNetwork(nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2)))
        learner = HnetLearner(HnetContinual(target, hn.MLPHyperNetwork(4, target.spec, hidden=(32,)), 2, 4, beta=beta))
        _train(learner, x, ys[0], 0)
        w1 = learner.hnet.weights(0).detach().clone()
        _train(learner, x, ys[1], 1)
        acc2 = float((learner(x, 1).argmax(-1) == ys[1]).float().mean())
        assert acc2 > 0.85, (beta, acc2)  # task 2 is learned either way
        moved[beta] = float((learner.hnet.weights(0).detach() - w1).norm() / w1.norm())
    # measured: 0.12 of |w1| without, 0.0017 with (a factor of about 70); the issue asks for 10
    assert moved[0.05] < 0.1 * moved[0.0], moved


def test_infer_task_by_entropy_on_constructed_example() -> None:
    # 3 tasks x 4 samples x 2 classes: sample i's own task (0, 2, 1, 2) is confident, the others are flat
    own = [0, 2, 1, 2]
    logits = torch.zeros(3, 4, 2)
    logits[..., 0] = 0.2  # flat-ish elsewhere: entropy close to log 2
    for i, t in enumerate(own):
        logits[t, i] = torch.tensor([-4.0, 4.0]) if i % 2 else torch.tensor([4.0, -4.0])
    assert infer_task(logits).tolist() == own
    labels, tasks = class_incremental_predict(logits, [(0, 1), (2, 3), (4, 5)])
    assert tasks.tolist() == own
    assert labels.tolist() == [0, 5, 2, 5]  # task 0 class 0; task 2 class 1 -> 5; task 1 class 0 -> 2; task 2 class 1


def _run(out: Path, data: Path, *sets: str, resume: bool = False) -> dict:  # type: ignore[type-arg]
    args = ["run", "split-mnist", "--quick", "--out", str(out), "--no-progress", "--data-dir", str(data)]
    for s in sets:
        args += ["--set", s]
    assert main([*args, "--resume"] if resume else args) == 0
    return json.loads((out / "summary.json").read_text())  # type: ignore[no-any-return]


def test_every_method_runs_quick_and_reports(tmp_path: Path, mnist_dir: Path) -> None:
    summary = _run(tmp_path / "all", mnist_dir)
    methods = summary["methods"]
    assert set(methods) == {"hnet", "finetune", "ewc", "online-ewc", "si", "per-task", "joint"}
    for name, res in methods.items():
        assert res["mean_acc"] > 0.75, (name, res["mean_acc"])  # chance is 0.5 per task
        assert 0.0 <= res["class_il_acc"] <= 1.0
        m = res["acc_matrix"]
        assert len(m) == 5 and all(len(r) == 5 for r in m)
        if name != "joint":  # row t holds tasks 0..t only
            assert all((m[t][k] is None) == (k > t) for t in range(5) for k in range(5))
    # memory: hnet stores (T-1) x P targets of 4 bytes; P of 784 -> 32 -> 2
    p = 784 * 32 + 32 + 32 * 2 + 2
    assert methods["hnet"]["stored_bytes"] == 4 * p * 4
    assert methods["per-task"]["trainable_parameters"] == 5 * p
    assert methods["finetune"]["trainable_parameters"] == 784 * 32 + 32 + 32 * 10 + 10
    assert methods["ewc"]["stored_bytes"] == 2 * 4 * methods["ewc"]["trainable_parameters"] * 4
    figures = tmp_path / "all" / "figures"
    assert (figures / "accuracy_heatmap.png").exists() and (figures / "final_accuracy.png").exists()


def test_continual_run_resumes_mid_task_to_the_same_summary(tmp_path: Path, mnist_dir: Path) -> None:
    sets = ("methods=hnet,si",)
    ref = _run(tmp_path / "run", mnist_dir, *sets)
    ckpts = tmp_path / "run" / "checkpoints"
    # as if killed in task 3 after its first checkpoint (step 15 of 30): later checkpoints gone
    for m in ("hnet", "si"):
        for path in [*ckpts.glob(f"{m}-task3-00000030.*"), *ckpts.glob(f"{m}-task4-*")]:
            path.unlink()
    (tmp_path / "run" / "summary.json").unlink()
    assert _run(tmp_path / "run", mnist_dir, *sets, resume=True) == ref


def test_method_setting_is_checked(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "split-mnist", "--set", "methods=hnet,lwf"]) == 2
    assert "--set methods=hnet,lwf: expected" in capsys.readouterr().err


def test_cross_entropy_helper_is_plain() -> None:
    # the learners' default loss is F.cross_entropy on the task's outputs
    from hypernet.methods.learners import FineTune, MultiHeadNet

    net = FineTune(MultiHeadNet(3, (4,), 2, 2))
    x, y = torch.randn(5, 3), torch.tensor([0, 1, 1, 0, 1])
    loss, _ = net.loss(x, y, 1, torch.Generator())
    torch.testing.assert_close(loss, F.cross_entropy(net.model.net(x)[:, 2:4], y))


@pytest.mark.slow
def test_transfer_quick_runs_and_counts_what_trains(tmp_path: Path, mnist_dir: Path) -> None:
    out = tmp_path / "tr"
    args = ["run", "split-mnist-transfer", "--quick", "--out", str(out), "--no-progress", "--data-dir", str(mnist_dir)]
    assert main([*args, "--set", "shots=10"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["new_task"] == [8, 9] and set(summary["arms"]) == {"hnet-embedding", "finetune-plain", "scratch"}
    # only the new embedding trains for the hypernetwork; all of a 784 -> 32 -> 5 x 2 network otherwise
    assert summary["trainable_on_new_task"]["hnet-embedding"] == 32
    assert summary["trainable_on_new_task"]["scratch"] == 784 * 32 + 32 + 32 * 10 + 10
    assert all(0.0 <= r["10"]["mean"] <= 1.0 for r in summary["arms"].values())
    assert (out / "figures" / "transfer.png").exists()
