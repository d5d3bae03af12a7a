"""`rotation-widths`: the official code's rotation-prediction task with hypernetworks of varying widths.

An MNIST digit rotated by a random angle `a1` is the hypernetwork's input `z`; the same digit rotated
by `a1 + a2` is the primary network's input `x`; the model predicts `a2` as one of 12 classes of 30°.
`f: z -> n_f -> bottleneck -> weights of g`, `g: x -> n_g -> 12`, weights applied per sample.
Test error against the widths `n_f` and `n_g` (heat map).

Departures from the official setup, for a CPU: by default 2,000 training and 1,000 test images
(both from the split given, disjoint), Adam instead of SGD, 10 epochs instead of 100.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import hypernet as hn
from hypernet.data import MNIST_SIZES, check_mnist, load_mnist
from hypernet.experiments.registry import RunContext, register
from hypernet.experiments.settings import Relation, setting
from hypernet.report.table import Table
from hypernet.train import TrainConfig


@dataclass
class RotationWidthsConfig:
    n_f_values: tuple[int, ...] = setting((50, 200, 800), "hypernetwork widths n_f to sweep", ge=1, min_items=1)
    n_g_values: tuple[int, ...] = setting((5, 20, 80), "primary widths n_g to sweep", ge=1, min_items=1)
    bottleneck: int = setting(100, "width of the hypernetwork's last hidden layer", ge=1)
    n_train: int = setting(2000, "training images", ge=1)
    n_test: int = setting(1000, "test images (disjoint from the training images)", ge=1)
    split: Literal["train", "test"] = setting("test", "MNIST split to draw the images from")
    data_dir: str = setting(
        "", "folder with the MNIST files (empty: $HYPERNET_DATA or the user cache, downloading)", folder=True
    )
    epochs: int = setting(10, "passes over the training images", ge=1)
    batch_size: int = setting(64, "images per step", ge=1)
    lr: float = setting(1e-3, "Adam learning rate", gt=0)
    classes: int = setting(12, "rotation classes (360 / classes degrees each)", ge=2)

    RELATIONS: ClassVar[tuple[Relation, ...]] = (
        Relation(
            ("n_train", "n_test", "split"),
            lambda c: c.n_train + c.n_test <= MNIST_SIZES[c.split],
            "n_train + n_test <= the images of the split ("
            + ", ".join(f"{n:,} in {s}" for s, n in MNIST_SIZES.items())
            + ")",
        ),
    )


def rotate(images: Tensor, degrees: Tensor) -> Tensor:
    """Rotate `images: [N, 28, 28]` by `degrees: [N]` (bilinear, zero padding)."""
    rad = degrees * (math.pi / 180)
    cos, sin = torch.cos(rad), torch.sin(rad)
    zero = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta, [images.shape[0], 1, 28, 28], align_corners=False)
    return F.grid_sample(images[:, None], grid, align_corners=False)[:, 0]


def make_rotations(images: Tensor, classes: int, g: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """`(z, x, label)`: `z` rotated by a1, `x` by a1 + a2, `label` the class of a2."""
    a1 = torch.rand(images.shape[0], generator=g) * 360
    label = torch.randint(classes, (images.shape[0],), generator=g)
    a2 = label.float() * (360 / classes)
    return rotate(images, a1).flatten(1), rotate(images, a1 + a2).flatten(1), label


class RotationHyperModel(nn.Module):
    def __init__(self, n_f: int, n_g: int, bottleneck: int, classes: int) -> None:
        super().__init__()
        target = hn.TargetNetwork(nn.Sequential(nn.Linear(784, n_g), nn.ReLU(), nn.Linear(n_g, classes)))
        self.model = hn.HyperModel(target, hn.MLPHyperNetwork(784, target.spec, hidden=(n_f, bottleneck)))

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        out: Tensor = self.model(x, z)
        return out


@register(
    "rotation-widths",
    "rotation prediction on MNIST: test error against hypernetwork widths n_f, n_g",
    RotationWidthsConfig,
    quick={"n_f_values": (16, 64), "n_g_values": (4, 16), "n_train": 300, "n_test": 200, "epochs": 2, "bottleneck": 16},
    headline=lambda summary: headline(summary),
    captions={
        "rotation_test_error": "Test error of rotation prediction for each pair of widths: hypernetwork n_f "
        "(rows) and primary network n_g (columns)."
    },
    prepare=lambda cfg: check_mnist(cfg.split, cfg.data_dir or None),
    distributed=True,
    global_batch=lambda cfg: cfg.batch_size,
)
def run(cfg: RotationWidthsConfig, ctx: RunContext) -> dict[str, Any]:
    data = load_mnist(cfg.split, cfg.data_dir or None)
    g = torch.Generator().manual_seed(ctx.seed)
    order = torch.randperm(len(data), generator=g)
    images = data.x.view(-1, 28, 28)
    train = make_rotations(images[order[: cfg.n_train]], cfg.classes, g)
    test = make_rotations(images[order[cfg.n_train : cfg.n_train + cfg.n_test]], cfg.classes, g)
    steps = cfg.epochs * math.ceil(cfg.n_train / cfg.batch_size)
    errors = np.zeros((len(cfg.n_f_values), len(cfg.n_g_values)))
    results: dict[str, Any] = {}
    for i, n_f in enumerate(cfg.n_f_values):
        for j, n_g in enumerate(cfg.n_g_values):
            model = RotationHyperModel(n_f, n_g, cfg.bottleneck, cfg.classes).to(ctx.device)
            gen = torch.Generator().manual_seed(ctx.seed * 7919 + i * 101 + j)

            trained = ctx.distribute(model)  # DDP in a multi-process run

            def step(_: int, gen: torch.Generator, trained: nn.Module = trained) -> tuple[Tensor, dict[str, float]]:
                # the same global batch on every process; each keeps its own part
                idx = torch.randint(cfg.n_train, (cfg.batch_size,), generator=gen)
                z, x, y = ctx.shard(*(t[idx].to(ctx.device) for t in train))
                return F.cross_entropy(trained(x, z), y), {}

            name = f"n_f={n_f},n_g={n_g}"
            tc = TrainConfig(steps=steps, lr=cfg.lr, checkpoint_every=max(1, steps // 2), log_every=max(1, steps // 10))
            ctx.train(name, trained, model.model.trainable_parameters(), step, tc, generator=gen)
            with torch.no_grad():
                pred = (
                    torch.cat(
                        [
                            model(test[1][s : s + 500].to(ctx.device), test[0][s : s + 500].to(ctx.device))
                            for s in range(0, cfg.n_test, 500)
                        ]
                    )
                    .argmax(-1)
                    .cpu()
                )
            err = float((pred != test[2]).float().mean())
            errors[i, j] = err
            results[name] = {
                "n_f": n_f,
                "n_g": n_g,
                "test_error": err,
                "hypernetwork_parameters": sum(p.numel() for p in model.model.hypernetwork.parameters()),
            }
            print(f"{name}: test error {err:.3f}", flush=True)
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    im = ax.imshow(errors, cmap="viridis_r", origin="lower")
    for (i, j), e in np.ndenumerate(errors):
        ax.text(j, i, f"{e:.2f}", ha="center", va="center", color="w" if e > errors.mean() else "k")
    ax.set(
        xticks=range(len(cfg.n_g_values)),
        xticklabels=cfg.n_g_values,
        yticks=range(len(cfg.n_f_values)),
        yticklabels=cfg.n_f_values,
        xlabel="primary width n_g",
        ylabel="hypernetwork width n_f",
        title=f"Rotation prediction: test error (chance {1 - 1 / cfg.classes:.2f})",
    )
    fig.colorbar(im, ax=ax)
    ctx.save_figure(fig, "rotation_test_error")
    return {"runs": results, "chance_error": 1 - 1 / cfg.classes}


def headline(summary: dict[str, Any]) -> Table:
    """Test error and hypernetwork size for every width pair."""
    rows = [[r["n_f"], r["n_g"], r["test_error"], r["hypernetwork_parameters"]] for r in summary["runs"].values()]
    return Table(
        "Rotation prediction: test error by width",
        ["hypernetwork width n_f", "primary width n_g", "test error", "hypernetwork parameters"],
        rows,
        note=f"chance error {summary['chance_error']:.3f}",
    )
