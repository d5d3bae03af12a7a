"""`rotation-widths` on the official code's setup: its defaults, its data path (rotations,
standardisation, angles drawn per batch) and a small run on MNIST's training split."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from hypernet.cli import main
from hypernet.experiments import get
from hypernet.experiments.rotation_widths import MNIST_MEAN, MNIST_SD, RotationWidthsConfig, rotate, rotation_batch
from hypernet.experiments.settings import validate


def test_defaults_are_the_official_setup_and_quick_keeps_the_small_one() -> None:
    cfg = RotationWidthsConfig()
    validate(cfg)
    # TomerGalanti/InfiniteWidthHypernets, rotations_experiment/main.py: 10,000 training images of the
    # training split, the whole test split, optim.SGD(params, lr=0.01) (torch's default momentum 0)
    official = (10_000, "train", 10_000, "sgd", 0.01, 0.0, 64, True, True)
    got = (cfg.n_train, cfg.train_split, cfg.n_test, cfg.optimizer, cfg.lr, cfg.momentum, cfg.batch_size)
    assert (*got, cfg.fresh_angles, cfg.standardize) == official
    quick = get("rotation-widths").make_config({}, quick=True)
    validate(quick)
    assert (quick.n_train, quick.n_test, quick.train_split, quick.optimizer, quick.lr, quick.epochs) == (
        300, 200, "test", "adam", 1e-3, 2,
    )  # fmt: skip
    assert not quick.fresh_angles and not quick.standardize and quick.curve_images == 0


def test_rotate_by_quarter_turns_equals_rot90() -> None:
    """An independent rotation: at 90° steps every output pixel centre lands on an input pixel centre
    (28 x 28, align_corners=False), so bilinear sampling reproduces `torch.rot90` up to the float32
    rounding of the sampling grid (~1e-7 of a coordinate, times 14 pixels per unit, times a pixel
    step of at most 1: a few 1e-6, measured 3e-6 at 0°); 1e-5 is far below one grey level, 1/255,
    while a rotation the other way or by a wrong angle moves pixels by whole grey levels."""
    images = torch.rand(3, 28, 28, generator=torch.Generator().manual_seed(1))
    for degrees, k in ((90.0, 1), (180.0, 2), (270.0, 3)):
        out = rotate(images, torch.full((3,), degrees))
        torch.testing.assert_close(out, torch.rot90(images, k, dims=(1, 2)), atol=1e-5, rtol=0)
    torch.testing.assert_close(rotate(images, torch.zeros(3)), images, atol=1e-5, rtol=0)


def test_rotation_batch_standardises_as_the_official_code_and_draws_from_the_generator() -> None:
    images = torch.rand(8, 28, 28, generator=torch.Generator().manual_seed(2))
    raw = rotation_batch(images, 12, torch.Generator().manual_seed(5), standardize=False)
    std = rotation_batch(images, 12, torch.Generator().manual_seed(5), standardize=True)
    torch.testing.assert_close(std[0], (raw[0] - 0.1307) / 0.3081)  # transforms.Normalize((0.1307,), (0.3081,))
    torch.testing.assert_close(std[1], (raw[1] - 0.1307) / 0.3081)
    assert torch.equal(std[2], raw[2]) and std[2].min() >= 0 and std[2].max() < 12
    assert (MNIST_MEAN, MNIST_SD) == (0.1307, 0.3081)
    # outside the rotated digit the padding is 0 (PIL's fill in the official code), -mean/sd once standardised
    assert float(rotate(torch.ones(1, 28, 28), torch.tensor([45.0]))[0, 0, 0]) == 0.0
    # fresh angles: one generator, two draws of the same images, different pairs
    g = torch.Generator().manual_seed(3)
    first, second = rotation_batch(images, 12, g, True), rotation_batch(images, 12, g, True)
    assert not torch.equal(first[0], second[0]) and not torch.equal(first[2], second[2])


def test_paper_path_runs_on_the_training_split(tmp_path: Path, mnist_dir: Path) -> None:
    """The default path at a tiny size: training split, SGD, angles per batch, standardised pixels,
    a test-error curve per epoch."""
    out = tmp_path / "rw"
    sets = ["n_f_values=8", "n_g_values=4,8", "bottleneck=8", "n_train=320", "n_test=300", "curve_images=100"]
    args = ["run", "rotation-widths", "--out", str(out), "--no-progress", "--data-dir", str(mnist_dir)]
    assert main([*args, *(a for s in [*sets, "epochs=2"] for a in ("--set", s))]) == 0
    config = json.loads((out / "config.json").read_text())["config"]
    assert (config["train_split"], config["optimizer"], config["lr"], config["momentum"]) == ("train", "sgd", 0.01, 0.0)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps_per_cell"] == 2 * 5  # 320 / 64 steps per epoch
    for r in summary["runs"].values():
        assert len(r["test_error_by_epoch"]) == 2 and all(0 <= e <= 1 for e in r["test_error_by_epoch"])
        assert 0 <= r["test_error"] <= 1
    assert {p.name for p in (out / "figures").iterdir()} == {
        "rotation_test_error.png",
        "rotation_test_error_curves.png",
    }
