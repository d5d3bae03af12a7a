"""The three tasks of `mip-ablation`, each a hypernetwork input `gamma in [0, 1]^D` with its own meaning.

* `LossConditional` (MNIST): `gamma` weighs two losses of a small CNN classifier,
  `L_gamma = (1 - gamma/2) CE(logits, y) + (gamma/2) CE(logits, uniform)` (cross-entropy against a
  label-smoothing term): every `gamma` has its own optimum, as in loss-conditional training.
* `RotationConditioned` (MNIST): `gamma` is the strength of a transform, the digit rotated by
  `gamma * max_degrees` before the CNN classifies it.
* `FunctionRegression`: `gamma` is a signal parameter, the target MLP regresses
  `f_gamma(t) = D^(-1/2) sum_d sin(pi (d + 1)(1 + gamma_d) t + 2 pi gamma_d)` on `t in [-1, 1]`.

A task draws a training batch (`train_loss`) and scores a fixed held-out set (`eval_loss`, the same
loss averaged over a fixed grid of `gamma`). The MNIST tasks draw `groups` values of `gamma` per
step (one generated CNN each); the regression draws `groups` functions of `points` samples each.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hypernet.data.splits import Dataset
from hypernet.hypernetworks.base import HyperNetwork
from hypernet.target import TargetNetwork
from hypernet.train import distributed


def samples(x: Tensor, dim: int = 0) -> Tensor:
    """This process's part of the samples along `dim` of `x` (rows `rank, rank + W, ...`; all of
    them in one process); the count must split evenly over the processes."""
    if distributed.world_size() == 1:
        return x
    return distributed.shard(x.transpose(0, dim))[0].transpose(0, dim)


def small_cnn(classes: int = 10) -> nn.Sequential:
    """The MNIST target: `x: [B, 1, 14, 14] -> [B, classes]`, two strided convolutions (1,418 weights)."""
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, classes),
    )


def half_size(images: Tensor) -> Tensor:
    """MNIST `[N, 784]` -> `[N, 1, 14, 14]` by 2x2 average pooling (a 4x cheaper CNN on a CPU)."""
    return F.avg_pool2d(images.view(-1, 1, 28, 28), 2)


class _MNISTTask:
    """Shared by the two MNIST tasks: batches of `groups x group_size` images, one `gamma` per group."""

    name = ""

    def __init__(
        self, train: Dataset, test: Dataset, groups: int, group_size: int, eval_gammas: int = 5, in_features: int = 1
    ) -> None:
        self.train_x, self.train_y = half_size(train.x), train.y
        self.test_x, self.test_y = half_size(test.x), test.y
        self.groups, self.group_size, self.in_features = groups, group_size, in_features
        self.eval_grid = torch.linspace(0, 1, eval_gammas)

    def make_target(self) -> nn.Module:
        return small_cnn()

    def loss(self, logits: Tensor, y: Tensor, gamma: float) -> Tensor:
        raise NotImplementedError

    def inputs(self, x: Tensor, gamma: float) -> Tensor:
        return x

    def train_loss(self, hyper: HyperNetwork, target: TargetNetwork, g: torch.Generator) -> Tensor:
        gammas = torch.rand(self.groups, self.in_features, generator=g)
        weights = hyper(gammas)  # [groups, P]: one generated CNN per gamma
        total = weights.new_zeros(())
        for k in range(self.groups):
            idx = samples(torch.randint(len(self.train_y), (self.group_size,), generator=g))
            gamma = float(gammas[k, 0])
            total = total + self.loss(
                target(self.inputs(self.train_x[idx], gamma), weights[k]), self.train_y[idx], gamma
            )
        return total / self.groups

    @torch.no_grad()
    def eval_loss(self, hyper: HyperNetwork, target: TargetNetwork) -> float:
        losses = []
        for gamma in self.eval_grid.tolist():
            w = hyper(torch.full((1, self.in_features), gamma))[0]
            losses.append(float(self.loss(target(self.inputs(self.test_x, gamma), w), self.test_y, gamma)))
        return sum(losses) / len(losses)


class LossConditional(_MNISTTask):
    """`L_gamma = (1 - gamma/2) CE(logits, y) + (gamma/2) CE(logits, uniform)`."""

    name = "loss-conditional"

    def loss(self, logits: Tensor, y: Tensor, gamma: float) -> Tensor:
        logp = F.log_softmax(logits, -1)
        ce = F.nll_loss(logp, y)
        uniform = -logp.mean(-1).mean()
        return (1 - gamma / 2) * ce + (gamma / 2) * uniform


class RotationConditioned(_MNISTTask):
    """Cross-entropy on digits rotated by `gamma * max_degrees`."""

    name = "rotation-conditioned"
    max_degrees = 180.0

    def inputs(self, x: Tensor, gamma: float) -> Tensor:
        angle = torch.full((x.shape[0],), gamma * self.max_degrees)
        return rotate_small(x, angle)

    def loss(self, logits: Tensor, y: Tensor, gamma: float) -> Tensor:
        return F.cross_entropy(logits, y)


def rotate_small(x: Tensor, degrees: Tensor) -> Tensor:
    """Rotate `x: [N, 1, H, W]` by `degrees: [N]` (bilinear, zero padding)."""
    rad = degrees * (math.pi / 180)
    cos, sin, zero = torch.cos(rad), torch.sin(rad), torch.zeros_like(rad)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False)


def regression_function(gamma: Tensor, t: Tensor) -> Tensor:
    """`f_gamma(t)` for `gamma: [K, D]`, `t: [K, M, 1]` -> `[K, M, 1]`."""
    D = gamma.shape[-1]
    d = torch.arange(1, D + 1, dtype=t.dtype)
    freq = math.pi * d * (1 + gamma)  # [K, D]
    phase = 2 * math.pi * gamma
    return torch.sin(freq[:, None, :] * t + phase[:, None, :]).sum(-1, keepdim=True) / math.sqrt(D)


class FunctionRegression:
    """Per-sample regression of `f_gamma(t)` by an MLP `1 -> width -> width -> 1` with generated weights."""

    name = "regression"

    def __init__(self, in_features: int, groups: int, points: int, width: int = 32, seed: int = 12345) -> None:
        self.in_features, self.groups, self.points, self.width = in_features, groups, points, width
        g = torch.Generator().manual_seed(seed)  # the held-out functions: the same for every run
        self.eval_gamma = torch.rand(64, in_features, generator=g)
        self.eval_t = torch.linspace(-1, 1, 64).expand(64, 64)[..., None].contiguous()
        self.eval_y = regression_function(self.eval_gamma, self.eval_t)

    def make_target(self) -> nn.Module:
        w = self.width
        return nn.Sequential(nn.Linear(1, w), nn.ReLU(), nn.Linear(w, w), nn.ReLU(), nn.Linear(w, 1))

    def train_loss(self, hyper: HyperNetwork, target: TargetNetwork, g: torch.Generator) -> Tensor:
        gamma = torch.rand(self.groups, self.in_features, generator=g)
        t = samples(torch.rand(self.groups, self.points, 1, generator=g) * 2 - 1, dim=1)  # [K, M / W, 1]
        return F.mse_loss(target(t, hyper(gamma)), regression_function(gamma, t))

    @torch.no_grad()
    def eval_loss(self, hyper: HyperNetwork, target: TargetNetwork) -> float:
        return float(F.mse_loss(target(self.eval_t, hyper(self.eval_gamma)), self.eval_y))
