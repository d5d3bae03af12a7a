"""Datasets as tensors, deterministic train/test splits, and continual/multi-task variants:
*split* (classes in groups, one group per task) and *permuted* (a fixed pixel permutation per task)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Dataset:
    """`x: [N, D]` features, `y: [N]` integer labels; `image_shape` for plotting."""

    x: Tensor
    y: Tensor
    image_shape: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.x.shape[0] != self.y.shape[0]:
            raise ValueError(f"Dataset: x has {self.x.shape[0]} rows, y has {self.y.shape[0]}")

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def subset(self, index: Tensor) -> Dataset:
        return Dataset(self.x[index], self.y[index], self.image_shape)


@dataclass
class TaskSet:
    """One train and test `Dataset` per task; labels are relabelled within each task (0..k-1)."""

    train: list[Dataset]
    test: list[Dataset]
    classes: list[tuple[int, ...]]

    @property
    def num_tasks(self) -> int:
        return len(self.train)

    @property
    def num_classes(self) -> int:
        return max(len(c) for c in self.classes)


def train_test_split(data: Dataset, test_fraction: float = 0.2, seed: int = 0) -> tuple[Dataset, Dataset]:
    """A stratified split, the same for the same seed: each class keeps `test_fraction` for testing."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction: must lie in (0, 1), got {test_fraction}")
    g = torch.Generator().manual_seed(seed)
    train_idx, test_idx = [], []
    for c in torch.unique(data.y).tolist():
        idx = torch.nonzero(data.y == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        n_test = max(1, round(len(idx) * test_fraction))
        test_idx.append(idx[:n_test])
        train_idx.append(idx[n_test:])
    return data.subset(torch.cat(train_idx).sort().values), data.subset(torch.cat(test_idx).sort().values)


def split_tasks(
    train: Dataset, test: Dataset, groups: Sequence[Sequence[int]] = ((0, 1), (2, 3), (4, 5), (6, 7), (8, 9))
) -> TaskSet:
    """Split variant: task `t` holds the classes `groups[t]`, relabelled `0..len(groups[t])-1`."""
    seen: set[int] = set()
    for g in groups:
        if not g or seen & set(g):
            raise ValueError(f"groups: each task needs classes of its own, got {list(map(list, groups))}")
        if min(g) < 0:
            raise ValueError(f"groups: class labels are >= 0, got {list(map(list, groups))}")
        seen |= set(g)

    def pick(data: Dataset, classes: Sequence[int], split: str) -> Dataset:
        mask = torch.zeros_like(data.y, dtype=torch.bool)
        # sized for the labels present and the classes asked for: a class absent from this split is
        # no index error, and a task left with no example at all is refused below by name
        size = max(int(data.y.max()) if len(data.y) else -1, max(classes)) + 1
        relabel = torch.full((size,), -1, dtype=torch.long)
        for i, c in enumerate(classes):
            mask |= data.y == c
            relabel[c] = i
        if not bool(mask.any()):
            raise ValueError(f"groups: the {split} split has no example of the classes {list(classes)}")
        part = data.subset(torch.nonzero(mask).flatten())
        return Dataset(part.x, relabel[part.y], data.image_shape)

    return TaskSet(
        [pick(train, g, "training") for g in groups],
        [pick(test, g, "test") for g in groups],
        [tuple(int(c) for c in g) for g in groups],
    )


def permuted_tasks(train: Dataset, test: Dataset, num_tasks: int = 5, seed: int = 0) -> TaskSet:
    """Permuted variant: task 0 is the identity, task `t > 0` a fixed random pixel permutation."""
    g = torch.Generator().manual_seed(seed)
    d = train.x.shape[1]
    perms = [torch.arange(d)] + [torch.randperm(d, generator=g) for _ in range(num_tasks - 1)]
    classes = tuple(int(c) for c in torch.unique(train.y).tolist())
    return TaskSet(
        [Dataset(train.x[:, p], train.y, train.image_shape) for p in perms],
        [Dataset(test.x[:, p], test.y, test.image_shape) for p in perms],
        [classes] * num_tasks,
    )
