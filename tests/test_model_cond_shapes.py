"""A condition of the wrong rank is refused by `HyperModel` naming `cond`, not the weights it made."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import hypernet as hn


def _models() -> tuple[hn.HyperModel, hn.HyperModel]:
    target = hn.TargetNetwork(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)))
    tasks = hn.HyperModel(
        target, hn.MLPHyperNetwork(3, target.spec, hidden=(16,), parametrization="mip"), hn.TaskOneHot(3)
    )
    gamma = hn.HyperModel(target, hn.MLPHyperNetwork(1, target.spec, hidden=(16,), parametrization="mip"))
    return tasks, gamma


@pytest.mark.parametrize(
    ("which", "cond"),
    [
        ("tasks", torch.zeros(5, 1, dtype=torch.long)),  # task ids as a column: [B, 1] instead of [B]
        ("tasks", torch.zeros(2, 5, dtype=torch.long)),
        ("gamma", torch.rand(5, 2)),  # two numbers per sample for a one-number hypernetwork
    ],
)
def test_condition_of_the_wrong_rank_names_cond_and_its_shape(which: str, cond: torch.Tensor) -> None:
    tasks, gamma = _models()
    model = tasks if which == "tasks" else gamma
    shape = str(list(cond.shape)).replace("[", r"\[").replace("]", r"\]")
    with pytest.raises(ValueError, match=rf"^cond: {shape} gives weights \[.*\]; pass one condition \[C\]"):
        model(torch.randn(5, 4), cond)


def test_conditions_of_the_right_rank_still_run() -> None:
    tasks, gamma = _models()
    x = torch.randn(5, 4)
    assert tasks(x, torch.tensor(1)).shape == (5, 2)
    assert tasks(x, torch.tensor([0, 1, 2, 1, 0])).shape == (5, 2)
    assert gamma(x, torch.rand(5, 1)).shape == (5, 2)
    assert gamma(x, 0.5).shape == (5, 2)
