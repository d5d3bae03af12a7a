"""Checkpoint integrity (issue #11): resume starts from the newest readable checkpoint, a damaged
newest one falls back to the previous, and pruning removes every file of an old checkpoint and
nothing of another phase's."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from hypernet.train import CheckpointError, TrainConfig, load_checkpoint, train
from hypernet.train.checkpoint import list_checkpoints, save_checkpoint

CFG = TrainConfig(steps=30, lr=1e-2, checkpoint_every=10, log_every=10, eval_every=100)


class _Recorder:
    """A regression problem whose step function records which steps it was asked to run."""

    def __init__(self) -> None:
        torch.manual_seed(0)
        self.model = nn.Linear(3, 1)
        self.steps: list[int] = []

    def __call__(self, step: int, g: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        self.steps.append(step)
        x = torch.randn(8, 3, generator=g)
        return (self.model(x) - x.sum(1, keepdim=True)).pow(2).mean(), {}


def _run(run_dir: Path, steps: int) -> _Recorder:
    rec = _Recorder()
    cfg = TrainConfig(**{**CFG.__dict__, "steps": steps})
    train("p", rec.model, rec.model.parameters(), rec, cfg, run_dir, progress=False)
    return rec


def _files(run_dir: Path) -> list[str]:
    return sorted(p.name for p in (run_dir / "checkpoints").iterdir())


# Catches: resume from the oldest checkpoint (or from scratch), or an off-by-one that repeats or
# skips the step after the checkpoint.
def test_resume_starts_from_the_newest_checkpoint(tmp_path: Path) -> None:
    assert _run(tmp_path, 30).steps == list(range(30))
    rec = _run(tmp_path, 50)  # a longer run resumes where the newest checkpoint (step 30) left off
    assert rec.steps == list(range(30, 50))
    assert _run(tmp_path, 50).steps == []  # complete: nothing to do


# Catches: a damaged newest checkpoint loaded anyway (no checksum), or a resume that gives up and
# starts from step 0 instead of the previous checkpoint; the warning must name the damaged file.
@pytest.mark.parametrize("damage", ["flip_byte", "truncate_tensors", "truncate_json", "delete_tensors"])
def test_damaged_newest_falls_back_to_previous(tmp_path: Path, damage: str, capsys: pytest.CaptureFixture[str]) -> None:
    _run(tmp_path, 30)
    newest = list_checkpoints(tmp_path / "checkpoints", "p")[-1]
    tensors = newest.with_suffix(".safetensors")
    assert newest.name == "p-00000030.json"
    if damage == "flip_byte":  # same size, one bit different: only the checksum can tell
        blob = bytearray(tensors.read_bytes())
        blob[len(blob) // 2] ^= 0x01
        tensors.write_bytes(bytes(blob))
    elif damage == "truncate_tensors":
        tensors.write_bytes(tensors.read_bytes()[:100])
    elif damage == "truncate_json":
        newest.write_text(newest.read_text()[:20])
    else:
        tensors.unlink()
    with pytest.raises(CheckpointError, match="p-00000030"):
        load_checkpoint(newest, nn.Linear(3, 1))
    capsys.readouterr()
    rec = _run(tmp_path, 40)
    assert rec.steps == list(range(20, 40))  # from the checkpoint at step 20, not from 0 nor 30
    assert "p-00000030" in capsys.readouterr().err


# Catches: pruning that deletes only the JSON (leaving orphaned tensors), keeps too many or too
# few, or leaves temporary files behind.
def test_pruning_removes_every_file_of_old_checkpoints(tmp_path: Path) -> None:
    _run(tmp_path, 50)
    assert _files(tmp_path) == [
        "p-00000040.json",
        "p-00000040.safetensors",
        "p-00000050.json",
        "p-00000050.safetensors",
    ]


# Catches: a phase's pruning or resume picking up another phase's files whose name merely contains
# "<name>-<step>" (e.g. phase "p" and phase "p-p").
def test_phases_do_not_see_each_others_checkpoints(tmp_path: Path) -> None:
    model = nn.Linear(2, 1)
    folder = tmp_path / "checkpoints"
    for step in (1, 2, 3):
        save_checkpoint(folder, "p-p", step, model, None, None, keep=5)
    for step in (1, 2, 3):
        save_checkpoint(folder, "p", step, model, None, None, keep=1)
    assert [p.name for p in list_checkpoints(folder, "p")] == ["p-00000003.json"]
    assert len(list_checkpoints(folder, "p-p")) == 3
    assert len(list(folder.glob("p-p-*.safetensors"))) == 3
