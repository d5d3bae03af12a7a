from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

SHARED = Path(__file__).resolve().parents[2] / "shared"
DATASETS = SHARED / "datasets"


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def need_shared(path: Path) -> Path:
    """`path` under ../shared, or skip the test saying what is missing; under CI=true a missing
    path fails the test instead (CI always has ../shared beside the clone)."""
    if path.exists():
        return path
    reason = f"{path} is absent: the shared datasets (../shared/datasets beside the repository) are not here"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}; CI=true requires them")
    pytest.skip(reason)


@pytest.fixture
def shared_dir() -> Path:
    return need_shared(SHARED)


@pytest.fixture
def mnist_test_dir() -> Path:
    """The official MNIST test files (gzip, byte for byte the original mirrors')."""
    return need_shared(DATASETS / "mnist-test")


@pytest.fixture
def mnist_dir() -> Path:
    """All four MNIST files; the two training files re-compressed (same content, other .gz bytes)."""
    return need_shared(DATASETS / "mnist")
