from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from hypernet.train import CheckpointError, TrainConfig, TrainingDiverged, load_checkpoint, train
from hypernet.train.checkpoint import list_checkpoints
from hypernet.train.metrics import read_metrics

Step = Callable[[int, torch.Generator], tuple[torch.Tensor, dict[str, float]]]


def _problem(seed: int = 0) -> tuple[nn.Module, Step]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Dropout(0.1), nn.Linear(8, 1))
    w = torch.tensor([[1.0], [-2.0], [0.5]])

    def step(_: int, g: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        x = torch.randn(16, 3, generator=g)
        return (model(x) - x @ w).pow(2).mean(), {}

    return model, step


CFG = TrainConfig(steps=40, lr=1e-2, checkpoint_every=10, log_every=5, eval_every=20)


class _Interrupt(Exception):
    pass


def test_resume_equals_uninterrupted(tmp_path: Path) -> None:
    model, step = _problem()
    train("p", model, model.parameters(), step, CFG, tmp_path / "a", generator=torch.Generator().manual_seed(1))
    full = {k: v.clone() for k, v in model.state_dict().items()}

    model, step = _problem()

    def dying(s: int, g: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        if s == 27:  # killed mid-way, after the checkpoint at step 20
            raise _Interrupt
        return step(s, g)

    with pytest.raises(_Interrupt):
        train("p", model, model.parameters(), dying, CFG, tmp_path / "b", generator=torch.Generator().manual_seed(1))
    model, step = _problem()  # a fresh process: rebuilt from scratch, then resumed
    train("p", model, model.parameters(), step, CFG, tmp_path / "b", generator=torch.Generator().manual_seed(1))
    for k, v in model.state_dict().items():
        assert torch.equal(v, full[k]), k
    assert read_metrics(tmp_path / "a" / "metrics.jsonl") == read_metrics(tmp_path / "b" / "metrics.jsonl")


def test_truncated_checkpoint_is_detected_and_previous_still_loads(tmp_path: Path) -> None:
    model, step = _problem()
    train("p", model, model.parameters(), step, CFG, tmp_path)
    ckpts = list_checkpoints(tmp_path / "checkpoints", "p")
    assert [p.name for p in ckpts] == ["p-00000030.json", "p-00000040.json"]  # the two newest are kept
    newest = ckpts[-1].with_suffix(".safetensors")
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="p-00000040.safetensors: truncated or altered"):
        load_checkpoint(ckpts[-1], model)
    assert load_checkpoint(ckpts[-2], model)["step"] == 30
    # resuming falls back to the older checkpoint and finishes the run
    model2, step2 = _problem()
    train("p", model2, model2.parameters(), step2, CFG, tmp_path)
    assert json.loads(list_checkpoints(tmp_path / "checkpoints", "p")[-1].read_text())["step"] == 40


def test_nan_loss_stops_with_message_and_keeps_last_good_checkpoint(tmp_path: Path) -> None:
    model, step = _problem()

    def poisoned(s: int, g: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        loss, m = step(s, g)
        return (loss * float("nan") if s == 24 else loss), m

    with pytest.raises(TrainingDiverged, match=r"p: loss became nan at step 25; last good checkpoint: .*p-00000020"):
        train("p", model, model.parameters(), poisoned, CFG, tmp_path)
    ckpts = list_checkpoints(tmp_path / "checkpoints", "p")
    assert ckpts[-1].name == "p-00000020.json"
    fresh, _ = _problem()
    load_checkpoint(ckpts[-1], fresh)
    assert all(torch.isfinite(p).all() for p in fresh.parameters())


def test_a_step_failing_on_non_finite_parameters_is_reported_as_divergence(tmp_path: Path) -> None:
    """`--set lr=1e308` made a conditioner's output NaN and the run failed with "cond: contains NaN"
    (a user-input message); a step that fails after the parameters went non-finite is divergence."""
    model, step = _problem()

    def checked(s: int, g: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
            raise ValueError("cond: contains NaN or inf")  # what a validating layer says of its input
        loss, m = step(s, g)
        if s == 11:  # a finite loss whose gradient is NaN for one weight (0 * the infinite slope of
            w = model[3].weight[0, 2]  # sqrt at 0): Adam's update then leaves that weight NaN
            loss = loss + (w - w.detach()).abs().sqrt()
        return loss, m

    expected = (
        r"p: parameters became non-finite at step 12 \(parameter group 0, tensor 2 of shape \[1, 8\]\), and step 13 "
        r"failed \(ValueError: cond: contains NaN or inf\); lower the learning rate; last good checkpoint: .*p-00000010"
    )
    with pytest.raises(TrainingDiverged, match=expected) as info:
        train("p", model, model.parameters(), checked, CFG, tmp_path)
    assert isinstance(info.value.__cause__, ValueError)

    # with finite parameters the step's own error is the user's: it passes through unchanged
    model2, step2 = _problem()

    def bad_input(s: int, g: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        if s == 5:
            raise ValueError("x: expected [B, 3], got [B, 4]")
        return step2(s, g)

    with pytest.raises(ValueError, match=r"^x: expected \[B, 3\], got \[B, 4\]$"):
        train("q", model2, model2.parameters(), bad_input, CFG, tmp_path)


def test_checkpoint_holds_no_pickle(tmp_path: Path) -> None:
    model, step = _problem()
    train("p", model, model.parameters(), step, TrainConfig(steps=5, checkpoint_every=5), tmp_path)
    blob = (tmp_path / "checkpoints" / "p-00000005.safetensors").read_bytes()
    assert not blob.startswith(b"\x80") and b"PK\x03\x04" not in blob[:4]  # not a pickle, not a torch zip


def test_bad_config_values() -> None:
    with pytest.raises(ValueError, match="optimizer: expected adam, adamw or sgd, got 'lbfgs'"):
        TrainConfig(optimizer="lbfgs")
    cfg = TrainConfig(steps=100, lr=1.0, schedule="cosine", warmup=10)
    assert cfg.lr_at(0) == pytest.approx(0.1) and cfg.lr_at(10) == pytest.approx(1.0)
    assert cfg.lr_at(99) < 0.01


def test_prune_removes_orphans_and_superseded_checkpoints_only(tmp_path: Path) -> None:
    from hypernet.train.checkpoint import prune_checkpoints

    model, step = _problem()
    train("p", model, model.parameters(), step, CFG, tmp_path)
    train("p-2", model, model.parameters(), step, CFG, tmp_path)
    folder = tmp_path / "checkpoints"
    kept = {p.name: p.read_bytes() for p in folder.iterdir()}
    # a kill after the tensor file but before its JSON, and one before the oldest was removed
    orphan = folder / "p-00000050.safetensors"
    orphan.write_bytes(b"half")
    (folder / "p-2-00000010.json").write_bytes((folder / "p-2-00000030.json").read_bytes())
    (folder / "p-2-00000010.safetensors").write_bytes(b"old")
    removed = prune_checkpoints(folder)
    assert sorted(p.name for p in removed) == [
        "p-00000050.safetensors",
        "p-2-00000010.json",
        "p-2-00000010.safetensors",
    ]
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == kept
    assert load_checkpoint(list_checkpoints(folder, "p")[-1], model)["step"] == 40
