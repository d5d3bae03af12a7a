"""Families of target functions `h_I(x)` for the `modularity` experiment, and its two methods.

Every family gives training batches `(I [B, d_I], x [B, M, d_x], y [B, M, ...])` -- `B` contexts
`I`, `M` points `x` each -- and a fixed held-out set of new contexts. The methods:

* `HyperMethod`: `g(x; f(I))`, `f` an MLP trunk whose head emits all weights of `g` (per sample);
* `EmbeddingMethod`: `q([x, e(I)])`, `e` the same trunk with an embedding head (as in the paper).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import hypernet as hn
from hypernet.data.images import ImageFunctions, fourier_features


def mlp(d_in: int, widths: tuple[int, ...], d_out: int, bias: bool = True) -> nn.Sequential:
    """`d_in -> widths... -> d_out` with ReLUs between."""
    layers: list[nn.Module] = []
    for w in widths:
        layers += [nn.Linear(d_in, w, bias=bias), nn.ReLU()]
        d_in = w
    return nn.Sequential(*layers, nn.Linear(d_in, d_out, bias=bias))


def num_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


class HyperMethod(nn.Module):
    """`g(x; f(I))`: `x: [B, M, d_x]`, `I: [B, d_I]` -> `[B, M, d_out]`."""

    def __init__(self, d_i: int, d_x: int, d_out: int, widths: tuple[int, ...], trunk: tuple[int, ...], bias: bool):
        super().__init__()
        target = hn.TargetNetwork(mlp(d_x, widths, d_out, bias))
        self.model = hn.HyperModel(target, hn.MLPHyperNetwork(d_i, target.spec, hidden=trunk))
        self.primary_parameters = target.spec.numel  # the weights of g, all generated
        self.total_parameters = self.model.num_trainable()

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        out: Tensor = self.model(x, context)
        return out


class EmbeddingMethod(nn.Module):
    """`q([x, e(I)])`: `x: [B, M, d_x]`, `I: [B, d_I]` -> `[B, M, d_out]`."""

    def __init__(
        self,
        d_i: int,
        d_x: int,
        d_out: int,
        widths: tuple[int, ...],
        trunk: tuple[int, ...],
        embedding: int,
        bias: bool,
    ):
        super().__init__()
        self.e = mlp(d_i, trunk, embedding)
        self.q = mlp(d_x + embedding, widths, d_out, bias)
        self.primary_parameters = num_params(self.q)
        self.total_parameters = num_params(self)

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        emb = self.e(context)[:, None, :].expand(-1, x.shape[1], -1)
        out: Tensor = self.q(torch.cat([x, emb], -1))
        return out


class Family:
    """Base: `name`, sizes, `batch(generator)`, `test_batches()`, `loss(pred, y)` and `error(pred, y)`."""

    name = ""
    d_i = d_x = d_out = 0
    bias = True

    def batch(self, g: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        raise NotImplementedError

    def test_batches(self) -> list[tuple[Tensor, Tensor, Tensor]]:
        raise NotImplementedError

    def loss(self, pred: Tensor, y: Tensor) -> Tensor:
        return F.mse_loss(pred, y)

    def error(self, pred: Tensor, y: Tensor) -> Tensor:
        """Summed error over the batch's points (divided by the number of points by the caller)."""
        return (pred - y).pow(2).sum()


class Teacher(Family):
    """`h_I(x) = sigmoid(<w(I), x>)`, `w(I) = A tanh(B I)` a fixed random teacher, `I, x ~ N(0, 1)`.

    The smallest exact `g` is one linear unit `x -> 1` (`d_x` weights, + 1 bias) under the sigmoid,
    which both methods apply to their output. The error is the mean squared error.
    """

    name = "teacher"

    def __init__(self, d_i: int, d_x: int, n_train: int, n_test: int, points: int, batch: int, seed: int = 0):
        self.d_i, self.d_x, self.d_out, self.points, self.batch_size = d_i, d_x, 1, points, batch
        g = torch.Generator().manual_seed(10_000 + seed)
        self.B = torch.randn(d_i, 4 * d_i, generator=g) / math.sqrt(d_i)
        self.A = torch.randn(4 * d_i, d_x, generator=g) * (2.0 / math.sqrt(4 * d_i))
        self.train_i = torch.randn(n_train, d_i, generator=g)
        test_i = torch.randn(n_test, d_i, generator=g)
        test_x = torch.randn(n_test, 64, d_x, generator=g)
        self.tests = [(test_i[s : s + 250], test_x[s : s + 250]) for s in range(0, n_test, 250)]

    def w(self, context: Tensor) -> Tensor:
        return torch.tanh(context @ self.B) @ self.A

    def h(self, context: Tensor, x: Tensor) -> Tensor:
        return torch.sigmoid((x * self.w(context)[:, None, :]).sum(-1, keepdim=True))

    def batch(self, g: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        idx = torch.randint(len(self.train_i), (self.batch_size,), generator=g)
        context = self.train_i[idx]
        x = torch.randn(self.batch_size, self.points, self.d_x, generator=g)
        return context, x, self.h(context, x)

    def test_batches(self) -> list[tuple[Tensor, Tensor, Tensor]]:
        return [(c, x, self.h(c, x)) for c, x in self.tests]

    def loss(self, pred: Tensor, y: Tensor) -> Tensor:
        return F.mse_loss(torch.sigmoid(pred), y)

    def error(self, pred: Tensor, y: Tensor) -> Tensor:
        return (torch.sigmoid(pred) - y).pow(2).sum()


class MNISTImages(Family):
    """Images as functions: `I` an MNIST digit `[784]`, `x` the Fourier features of a pixel
    coordinate, `h_I(x)` its intensity. Error: mean squared error over every pixel of held-out digits."""

    name = "images"

    def __init__(self, train: Tensor, test: Tensor, frequencies: int, points: int, batch: int):
        self.train, self.test = ImageFunctions(train.view(-1, 28, 28)), ImageFunctions(test.view(-1, 28, 28))
        self.frequencies, self.points, self.batch_size = frequencies, points, batch
        self.d_i, self.d_x, self.d_out = 784, 4 * frequencies, 1

    def batch(self, g: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        idx = torch.randint(len(self.train), (self.batch_size,), generator=g)
        coords, values = self.train.sample(idx, self.points, g)
        return self.train.values[idx], fourier_features(coords, self.frequencies), values

    def test_batches(self) -> list[tuple[Tensor, Tensor, Tensor]]:
        out = []
        for s in range(0, len(self.test), 100):
            idx = torch.arange(s, min(len(self.test), s + 100))
            coords, values = self.test.all_pixels(idx)
            out.append((self.test.values[idx], fourier_features(coords, self.frequencies), values))
        return out


class Rotations(Family):
    """The paper's rotation prediction: `I` a digit rotated by `a1`, `x` the same digit rotated by
    `a1 + a2`, the output the class of `a2` among `classes` rotations. `g` has no biases, as in the
    paper's code. Error: the classification error on held-out digits."""

    name = "rotation"
    bias = False

    def __init__(
        self, train: tuple[Tensor, Tensor, Tensor], test: tuple[Tensor, Tensor, Tensor], classes: int, batch: int
    ):
        self.train, self.test, self.batch_size = train, test, batch
        self.d_i, self.d_x, self.d_out = 784, 784, classes

    def batch(self, g: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        idx = torch.randint(len(self.train[2]), (self.batch_size,), generator=g)
        z, x, y = (t[idx] for t in self.train)
        return z, x[:, None, :], y[:, None]

    def test_batches(self) -> list[tuple[Tensor, Tensor, Tensor]]:
        z, x, y = self.test
        return [(z[s : s + 500], x[s : s + 500, None, :], y[s : s + 500, None]) for s in range(0, len(y), 500)]

    def loss(self, pred: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(pred.flatten(0, 1), y.flatten())

    def error(self, pred: Tensor, y: Tensor) -> Tensor:
        return (pred.argmax(-1) != y).sum().float()
