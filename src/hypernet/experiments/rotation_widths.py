"""`rotation-widths`: the official code's rotation-prediction task with hypernetworks of varying widths.

An MNIST digit rotated by a random angle `a1` is the hypernetwork's input `z`; the same digit rotated
by `a1 + a2` is the primary network's input `x`; the model predicts `a2` as one of 12 classes of 30°.
`f: z -> n_f -> bottleneck -> weights of g`, `g: x -> n_g -> 12`, weights applied per sample.
Test error against the widths `n_f` and `n_g` (heat map), and against the epoch (curves).

The default is the official code's setup (`TomerGalanti/InfiniteWidthHypernets`,
`rotations_experiment/`): 10,000 training images drawn from MNIST's training split, the 10,000
images of the test split to test on, plain SGD (no momentum, as `optim.SGD(params, lr)` there)
with learning rate 0.01, batch 64, new angles for every batch (the official dataset draws them at
every fetch), pixels standardised with MNIST's mean 0.1307 and sd 0.3081 after rotating.
Departures, all stated in the README and in each result's config:
- 12 epochs instead of 100: what fits about 15 minutes on 2 CPU cores for the 3 x 3 grid (one
  epoch measured: about 15 s of CPU for the largest cell, 65 s for the whole grid, then extrapolated);
- one seed (the official code averages repeated runs);
- batch 64: the official help text says 64, its default is 100;
- batches are drawn with replacement (an epoch is `n_train / batch_size` steps), not a shuffle;
- `a2` is exactly a multiple of 30° (the official code draws `a2` uniformly and labels the nearest
  multiple, so near a boundary the label is ambiguous);
- `f` is `784 -> n_f -> bottleneck 100` (official: `784 -> 200 -> 200 -> 100`, `n_f` changed by
  editing it) and `g` is `784 -> n_g -> 12` with biases (official: `784 -> n_g -> n_g -> 12`,
  no biases, no activation after the second layer);
- test error is the error on the 10,000 test images after the last epoch; per-epoch curves on the
  first `curve_images` of them.
`--quick` keeps its earlier setting: 300 training and 200 test images, disjoint, both from the test
split, fixed angles per image, raw pixels, Adam 1e-3, 2 epochs.
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

MNIST_MEAN, MNIST_SD = 0.1307, 0.3081  # the official code's `transforms.Normalize((0.1307,), (0.3081,))`


@dataclass
class RotationWidthsConfig:
    n_f_values: tuple[int, ...] = setting((50, 200, 800), "hypernetwork widths n_f to sweep", ge=1, min_items=1)
    n_g_values: tuple[int, ...] = setting((5, 20, 80), "primary widths n_g to sweep", ge=1, min_items=1)
    bottleneck: int = setting(100, "width of the hypernetwork's last hidden layer", ge=1)
    n_train: int = setting(10_000, "training images (official: 10,000 of the training split)", ge=1)
    n_test: int = setting(10_000, "test images, from MNIST's test split", ge=1, le=MNIST_SIZES["test"])
    train_split: Literal["train", "test"] = setting(
        "train", "MNIST split of the training images ('test': a part of the test split disjoint from the test images)"
    )
    data_dir: str = setting(
        "", "folder with the MNIST files (empty: $HYPERNET_DATA or the user cache, downloading)", folder=True
    )
    epochs: int = setting(12, "passes over the training images (official: 100)", ge=1)
    batch_size: int = setting(64, "images per step", ge=1)
    optimizer: Literal["sgd", "adam"] = setting("sgd", "optimizer (official: sgd)")
    lr: float = setting(0.01, "learning rate (official: 0.01)", gt=0)
    momentum: float = setting(0.0, "SGD momentum (official: none)", ge=0, lt=1)
    fresh_angles: bool = setting(True, "new angles for every batch (false: one fixed pair per training image)")
    standardize: bool = setting(True, f"pixels standardised with mean {MNIST_MEAN} and sd {MNIST_SD} after rotating")
    curve_images: int = setting(
        1000, "test images scored after every epoch for the curves (0: none)", ge=0, le=MNIST_SIZES["test"]
    )
    classes: int = setting(12, "rotation classes (360 / classes degrees each)", ge=2)

    RELATIONS: ClassVar[tuple[Relation, ...]] = (
        Relation(
            ("n_train", "n_test", "train_split"),
            lambda c: (
                c.n_train <= (MNIST_SIZES["train"] if c.train_split == "train" else MNIST_SIZES["test"] - c.n_test)
            ),
            f"n_train <= {MNIST_SIZES['train']:,} with train_split=train, "
            f"n_train + n_test <= {MNIST_SIZES['test']:,} with train_split=test",
        ),
        Relation(
            ("optimizer", "momentum"),
            lambda c: c.optimizer == "sgd" or c.momentum == 0,
            "momentum 0 with optimizer=adam (momentum is SGD's)",
        ),
        Relation(("curve_images", "n_test"), lambda c: c.curve_images <= c.n_test, "curve_images <= n_test"),
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


def rotation_batch(
    images: Tensor, classes: int, g: torch.Generator, standardize: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """`make_rotations` of `images: [N, 28, 28]`, pixels standardised as the official code does when
    `standardize`: `z, x: [N, 784]`, `label: [N]`."""
    z, x, label = make_rotations(images, classes, g)
    if standardize:
        z, x = (z - MNIST_MEAN) / MNIST_SD, (x - MNIST_MEAN) / MNIST_SD
    return z, x, label


class RotationHyperModel(nn.Module):
    def __init__(self, n_f: int, n_g: int, bottleneck: int, classes: int) -> None:
        super().__init__()
        target = hn.TargetNetwork(nn.Sequential(nn.Linear(784, n_g), nn.ReLU(), nn.Linear(n_g, classes)))
        self.model = hn.HyperModel(target, hn.MLPHyperNetwork(784, target.spec, hidden=(n_f, bottleneck)))

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        out: Tensor = self.model(x, z)
        return out


def _prepare(cfg: RotationWidthsConfig) -> None:
    check_mnist("test", cfg.data_dir or None)
    if cfg.train_split == "train":
        check_mnist("train", cfg.data_dir or None)


def _errors(model: nn.Module, test: tuple[Tensor, Tensor, Tensor], n: int, device: torch.device) -> float:
    """Error of `model` on the first `n` of the `test` triples `(z, x, label)`, in chunks of 500."""
    z, x, label = (t[:n] for t in test)
    with torch.no_grad():
        pred = torch.cat([model(x[s : s + 500].to(device), z[s : s + 500].to(device)) for s in range(0, n, 500)])
    return float((pred.argmax(-1).cpu() != label).float().mean())


@register(
    "rotation-widths",
    "rotation prediction on MNIST: test error against hypernetwork widths n_f, n_g",
    RotationWidthsConfig,
    quick={
        "n_f_values": (16, 64),
        "n_g_values": (4, 16),
        "n_train": 300,
        "n_test": 200,
        "train_split": "test",
        "epochs": 2,
        "bottleneck": 16,
        "optimizer": "adam",
        "lr": 1e-3,
        "fresh_angles": False,
        "standardize": False,
        "curve_images": 0,
    },
    headline=lambda summary: headline(summary),
    captions={
        "rotation_test_error": "Test error of rotation prediction for each pair of widths: hypernetwork n_f "
        "(rows) and primary network n_g (columns).",
        "rotation_test_error_curves": "Test error (on the first curve_images test images) after every epoch, "
        "one panel per primary width n_g, one line per hypernetwork width n_f.",
    },
    prepare=_prepare,
    distributed=True,
    global_batch=lambda cfg: cfg.batch_size,
)
def run(cfg: RotationWidthsConfig, ctx: RunContext) -> dict[str, Any]:
    g = torch.Generator().manual_seed(ctx.seed)
    test_data = load_mnist("test", cfg.data_dir or None)
    if cfg.train_split == "test":  # disjoint parts of one split
        order = torch.randperm(len(test_data), generator=g)
        train_images = test_data.x[order[: cfg.n_train]]
        test_images = test_data.x[order[cfg.n_train : cfg.n_train + cfg.n_test]]
    else:
        train_data = load_mnist("train", cfg.data_dir or None)
        train_images = train_data.x[torch.randperm(len(train_data), generator=g)[: cfg.n_train]]
        test_images = test_data.x[torch.randperm(len(test_data), generator=g)[: cfg.n_test]]
    train_images = train_images.view(-1, 28, 28)
    train = rotation_batch(train_images, cfg.classes, g, cfg.standardize)  # the fixed pairs (fresh_angles off)
    test = rotation_batch(test_images.view(-1, 28, 28), cfg.classes, g, cfg.standardize)
    steps_per_epoch = math.ceil(cfg.n_train / cfg.batch_size)
    steps = cfg.epochs * steps_per_epoch
    errors = np.zeros((len(cfg.n_f_values), len(cfg.n_g_values)))
    results: dict[str, Any] = {}
    for i, n_f in enumerate(cfg.n_f_values):
        for j, n_g in enumerate(cfg.n_g_values):
            model = RotationHyperModel(n_f, n_g, cfg.bottleneck, cfg.classes).to(ctx.device)
            gen = torch.Generator().manual_seed(ctx.seed * 7919 + i * 101 + j)

            trained = ctx.distribute(model)  # DDP in a multi-process run

            def step(_: int, gen: torch.Generator, trained: nn.Module = trained) -> tuple[Tensor, dict[str, float]]:
                # the same global batch on every process (one generator state on all); each keeps its own part
                idx = torch.randint(cfg.n_train, (cfg.batch_size,), generator=gen)
                if cfg.fresh_angles:
                    batch = rotation_batch(train_images[idx], cfg.classes, gen, cfg.standardize)
                else:
                    batch = (train[0][idx], train[1][idx], train[2][idx])
                z, x, y = ctx.shard(*(t.to(ctx.device) for t in batch))
                return F.cross_entropy(trained(x, z), y), {}

            def curve(model: nn.Module = model) -> dict[str, float]:
                return {"test_error_curve": _errors(model, test, cfg.curve_images, ctx.device)}

            name = f"n_f={n_f},n_g={n_g}"
            tc = TrainConfig(
                steps=steps,
                lr=cfg.lr,
                optimizer=cfg.optimizer,
                momentum=cfg.momentum,
                checkpoint_every=max(1, steps // 2),
                log_every=max(1, steps // 10),
                eval_every=steps_per_epoch,
            )
            ctx.train(
                name, trained, model.model.trainable_parameters(), step, tc, curve if cfg.curve_images else None, gen
            )
            err = _errors(model, test, cfg.n_test, ctx.device)
            errors[i, j] = err
            results[name] = {
                "n_f": n_f,
                "n_g": n_g,
                "test_error": err,
                "hypernetwork_parameters": sum(p.numel() for p in model.model.hypernetwork.parameters()),
            }
            if cfg.curve_images:
                records = [r for r in ctx.metrics() if r.get("phase") == name and "test_error_curve" in r]
                results[name]["test_error_by_epoch"] = [r["test_error_curve"] for r in records]
            print(f"{name}: test error {err:.3f}", flush=True)
    chance = 1 - 1 / cfg.classes
    _heat_map(ctx, cfg, errors, chance)
    if cfg.curve_images:
        _curves(ctx, cfg, results, chance)
    return {"runs": results, "chance_error": chance, "steps_per_cell": steps}


def _heat_map(ctx: RunContext, cfg: RotationWidthsConfig, errors: np.ndarray, chance: float) -> None:
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    im = ax.imshow(errors, cmap="viridis_r", origin="lower")
    for (i, j), e in np.ndenumerate(errors):
        ax.text(j, i, f"{e:.3f}", ha="center", va="center", color="w" if e > errors.mean() else "k")
    ax.set(
        xticks=range(len(cfg.n_g_values)),
        xticklabels=cfg.n_g_values,
        yticks=range(len(cfg.n_f_values)),
        yticklabels=cfg.n_f_values,
        xlabel="primary width n_g",
        ylabel="hypernetwork width n_f",
        title=f"Rotation prediction: test error (chance {chance:.2f})",
    )
    fig.colorbar(im, ax=ax)
    ctx.save_figure(fig, "rotation_test_error")


def _curves(ctx: RunContext, cfg: RotationWidthsConfig, results: dict[str, Any], chance: float) -> None:
    fig, axes = plt.subplots(1, len(cfg.n_g_values), figsize=(3.6 * len(cfg.n_g_values), 3.2), sharey=True)
    for ax, n_g in zip(np.atleast_1d(axes), cfg.n_g_values):
        for n_f in cfg.n_f_values:
            curve = results[f"n_f={n_f},n_g={n_g}"].get("test_error_by_epoch", [])
            ax.plot(range(1, len(curve) + 1), curve, marker=".", label=f"n_f={n_f}")
        ax.axhline(chance, color="grey", ls=":", lw=1)
        ax.set(title=f"n_g = {n_g}", xlabel="epoch")
    np.atleast_1d(axes)[0].set_ylabel(f"test error (first {cfg.curve_images:,} test images)")
    np.atleast_1d(axes)[0].legend()
    fig.tight_layout()
    ctx.save_figure(fig, "rotation_test_error_curves")


def headline(summary: dict[str, Any]) -> Table:
    """Test error and hypernetwork size for every width pair."""
    rows = [[r["n_f"], r["n_g"], r["test_error"], r["hypernetwork_parameters"]] for r in summary["runs"].values()]
    return Table(
        "Rotation prediction: test error by width",
        ["hypernetwork width n_f", "primary width n_g", "test error", "hypernetwork parameters"],
        rows,
        note=f"chance error {summary['chance_error']:.3f}",
    )
