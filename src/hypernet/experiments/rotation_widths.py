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
from typing import Any, Literal

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import hypernet as hn
from hypernet.data import load_mnist
from hypernet.experiments.registry import RunContext, register
from hypernet.train import TrainConfig


@dataclass
class RotationWidthsConfig:
    n_f_values: tuple[int, ...] = (50, 200, 800)
    n_g_values: tuple[int, ...] = (5, 20, 80)
    bottleneck: int = 100
    n_train: int = 2000
    n_test: int = 1000
    split: Literal["train", "test"] = "test"  # the MNIST split to draw from ("train" needs the download)
    data_dir: str = ""
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    classes: int = 12


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
)
def run(cfg: RotationWidthsConfig, ctx: RunContext) -> dict[str, Any]:
    data = load_mnist(cfg.split, cfg.data_dir or None)
    if cfg.n_train + cfg.n_test > len(data):
        raise ValueError(f"n_train + n_test = {cfg.n_train + cfg.n_test} exceeds the {len(data)} images of {cfg.split}")
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

            def step(
                _: int, gen: torch.Generator, model: RotationHyperModel = model
            ) -> tuple[Tensor, dict[str, float]]:
                idx = torch.randint(cfg.n_train, (cfg.batch_size,), generator=gen)
                z, x, y = (t[idx].to(ctx.device) for t in train)
                return F.cross_entropy(model(x, z), y), {}

            name = f"n_f={n_f},n_g={n_g}"
            tc = TrainConfig(steps=steps, lr=cfg.lr, checkpoint_every=max(1, steps // 2), log_every=max(1, steps // 10))
            ctx.train(name, model, model.model.trainable_parameters(), step, tc, generator=gen)
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
