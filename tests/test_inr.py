"""Functional representations (`hypernet.methods.inr`, experiment `inr`): PSNR against a direct
computation, the batched per-sample call against a loop over single images, batched per-image fits
against separate fits, SIREN's initialisation, the 2x grid, patches, and a quick run's PSNR floor."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import hypernet as hn
from hypernet.cli import main
from hypernet.data import load_digits
from hypernet.data.images import ImageFunctions, pixel_coordinates, sample_image_patches, upsampled_coordinates
from hypernet.methods.inr import (
    Activation,
    EmbeddingINR,
    INRHyperNetwork,
    coordinate_network,
    equal_width,
    fit_networks,
    mlp_encoder,
    psnr,
)


def test_psnr_matches_a_direct_computation() -> None:
    g = torch.Generator().manual_seed(0)
    true = torch.rand(3, 2, 4, 5, generator=g, dtype=torch.float64)
    pred = (true + 0.1 * torch.randn(3, 2, 4, 5, generator=g, dtype=torch.float64)).clamp(0, 1)
    got = psnr(pred, true)
    for b in range(3):  # plain floats: the mean squared error over the image's 40 values
        err = [(p - t) ** 2 for p, t in zip(pred[b].flatten().tolist(), true[b].flatten().tolist())]
        want = 10 * math.log10(1.0 / (sum(err) / len(err)))
        assert float(got[b]) == pytest.approx(want, rel=1e-12)  # float64 on both sides
    # peak 255 on images scaled by 255: the same PSNR
    assert torch.allclose(psnr(pred * 255, true * 255, peak=255.0), got, rtol=1e-12)
    # a known value: error 0.1 everywhere is 20 dB
    assert float(psnr(torch.full((1, 4), 0.6, dtype=torch.float64), torch.full((1, 4), 0.5, dtype=torch.float64))) == (
        pytest.approx(20.0, rel=1e-12)
    )
    with pytest.raises(ValueError, match="psnr"):
        psnr(pred, true[:2])


@pytest.mark.parametrize("activation", ["relu", "sine"])
def test_batched_call_equals_a_loop_over_single_images(activation: Activation) -> None:
    torch.manual_seed(0)
    model = INRHyperNetwork(
        mlp_encoder((3, 6, 6), (16,), 8), 8, (12, 10), channels=3, activation=activation, frequencies=3
    )
    images = torch.rand(5, 3, 6, 6)
    coords = torch.rand(5, 7, 2)
    out = model(images, coords)
    assert out.shape == (5, 7, 3)
    for b in range(5):
        # the plain module generated for image b alone, run on its coordinates
        single = model.network(images[b])(coords[b])
        # float32: the batched path uses bmm, the plain module matmul (summation order differs)
        torch.testing.assert_close(out[b], single, rtol=1e-5, atol=1e-5)
    # each image's weights differ (data-conditioned, not one shared set)
    w = model.weights(images)
    assert w.shape == (5, model.num_generated) and not torch.allclose(w[0], w[1])


def test_embedding_baseline_batched_equals_single_calls() -> None:
    torch.manual_seed(0)
    model = EmbeddingINR(mlp_encoder((1, 5, 5), (8,), 4), 4, (9,), frequencies=2)
    images, coords = torch.rand(4, 1, 5, 5), torch.rand(4, 6, 2)
    out = model(images, coords)
    for b in range(4):
        torch.testing.assert_close(out[b], model(images[b : b + 1], coords[b : b + 1])[0], rtol=1e-6, atol=1e-6)


def test_per_image_fits_together_equal_separate_fits() -> None:
    torch.manual_seed(0)
    target = hn.TargetNetwork(coordinate_network((8,), frequencies=2))
    init = torch.stack([hn.TargetNetwork(coordinate_network((8,), frequencies=2)).initial_weights() for _ in range(3)])
    funcs = ImageFunctions(torch.rand(3, 4, 4))
    coords, values = funcs.all_pixels(torch.arange(3))
    together = fit_networks(target, init, coords, values, steps=6, lr=1e-2)
    assert not torch.allclose(together, init)  # they moved
    for b in range(3):
        alone = fit_networks(target, init[b : b + 1], coords[b : b + 1], values[b : b + 1], steps=6, lr=1e-2)
        # Adam is elementwise and image b's loss reads row b only: the same path up to float32 rounding
        torch.testing.assert_close(together[b], alone[0], rtol=1e-5, atol=1e-6)


def test_siren_initialisation_and_generated_spread() -> None:
    torch.manual_seed(0)
    w0 = 30.0
    net = coordinate_network((64, 64), activation="sine", w0=w0)
    first, second = net[1], net[3]
    assert isinstance(first, torch.nn.Linear) and isinstance(second, torch.nn.Linear)
    assert float(first.weight.detach().abs().max()) <= 1 / 2  # U(-1/n, 1/n), n = 2 coordinates
    bound = math.sqrt(6 / 64) / w0
    top = float(second.weight.detach().abs().max())
    assert 0.9 * bound < top <= bound
    # the generated hidden weights spread like SIREN's (std bound / sqrt(3)), not He's (w0 times wider)
    model = INRHyperNetwork(mlp_encoder((1, 8, 8), (32,), 16), 16, (64, 64), activation="sine", w0=w0)
    spec = model.target.spec
    weights = spec.unflatten(model.weights(torch.rand(16, 1, 8, 8)).detach())
    std = float(weights["3.weight"].std())  # the second sine layer (index 3: encode, linear, sine, linear)
    siren = bound / math.sqrt(3)
    assert 0.8 * siren < std < 2.0 * siren, (std, siren)


def test_equal_width_picks_the_closest_count() -> None:
    assert equal_width(50, lambda w: w * w) == 7  # 49 beats 64
    assert equal_width(57, lambda w: w * w) == 8  # 64 is 7 away, 49 is 8
    assert equal_width(0, lambda w: w * w) == 1


def test_bad_inputs_name_the_argument() -> None:
    model = INRHyperNetwork(mlp_encoder((1, 4, 4), (8,), 4), 4, (8,), frequencies=2)
    with pytest.raises(ValueError, match="coords"):
        model(torch.rand(2, 1, 4, 4), torch.rand(3, 5, 2))
    with pytest.raises(ValueError, match="images"):
        model(torch.rand(2, 16), torch.rand(2, 5, 2))
    with pytest.raises(ValueError, match="activation"):
        coordinate_network((8,), activation="tanh")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="factor"):
        upsampled_coordinates(4, 4, 0)
    with pytest.raises(ValueError, match="w0: the sine frequency must be > 0"):
        coordinate_network((8,), activation="sine", w0=0)
    with pytest.raises(ValueError, match="code and hidden"):
        mlp_encoder((1, 4, 4), (8,), 0)
    with pytest.raises(ValueError, match="peak"):
        psnr(torch.rand(2, 3), torch.rand(2, 3), peak=0)
    target = hn.TargetNetwork(coordinate_network((8,), 1, frequencies=2))
    init = target.initial_weights().expand(2, -1)
    coords = torch.rand(2, 5, 2)
    with pytest.raises(ValueError, match=r"values: the target gives 1 channel\(s\), values have 3"):
        fit_networks(target, init, coords, torch.rand(2, 5, 3), steps=1)
    with pytest.raises(ValueError, match="steps >= 0, lr > 0"):
        fit_networks(target, init, coords, torch.rand(2, 5, 1), steps=1, lr=0)


def test_upsampled_coordinates_by_hand() -> None:
    # linspace and this arithmetic round differently in float32: equal to a few ulps of 1
    torch.testing.assert_close(upsampled_coordinates(3, 4, 1), pixel_coordinates(3, 4), rtol=0, atol=1e-6)
    c = upsampled_coordinates(3, 2, 2).view(6, 4, 2)
    # rows: coarse pixel r covers [r - 1/2, r + 1/2]; fine centres at r -/+ 1/4, scaled by 1 / (3 - 1)
    assert c[:, 0, 0].tolist() == pytest.approx([-0.125, 0.125, 0.375, 0.625, 0.875, 1.125])
    # columns: width 2, scaled by 1 / (2 - 1)
    assert c[0, :, 1].tolist() == pytest.approx([-0.25, 0.25, 0.75, 1.25])


def test_image_functions_with_channels_pair_pixels_in_every_channel() -> None:
    g = torch.Generator().manual_seed(0)
    images = torch.rand(4, 3, 5, 6, generator=g)
    funcs = ImageFunctions(images)
    coords, values = funcs.sample(torch.tensor([2, 0]), 20, g)
    assert values.shape == (2, 20, 3)
    for b, i in enumerate((2, 0)):
        for k in range(20):
            r, col = round(float(coords[b, k, 0]) * 4), round(float(coords[b, k, 1]) * 5)
            assert values[b, k].tolist() == images[i, :, r, col].tolist()


def test_sample_image_patches_are_slices_of_the_downsampled_images() -> None:
    from sklearn.datasets import load_sample_images

    patches = sample_image_patches(16, 4)
    assert patches.shape == (2 * 4 * 6, 3, 4, 4)
    china = torch.tensor(load_sample_images().images[0], dtype=torch.float32).permute(2, 0, 1)[None] / 255
    small = F.interpolate(china, size=(16, 24), mode="area")[0]
    # patch 7 of the china image: row 1, column 1 of its 4 x 6 patches
    torch.testing.assert_close(patches[7], small[:, 4:8, 4:8])
    assert sample_image_patches(16, 4, grayscale=True).shape == (48, 1, 4, 4)


def test_quick_run_passes_the_psnr_floor(tmp_path: Path) -> None:
    out = tmp_path / "inr"
    assert main(["run", "inr", "--quick", "--out", str(out), "--no-progress"]) == 0
    summary = json.loads((out / "results.json").read_text())["summary"]
    digits = summary["digits"]
    hyper, embed = digits["hypernetwork"], digits["embedding"]
    # equal trainable parameters, to within one unit of the baseline's width (< 2% here)
    assert abs(hyper["trainable_parameters"] - embed["trainable_parameters"]) < 0.02 * hyper["trainable_parameters"]
    # The floor: the PSNR of the best image-blind answer, the training digits' mean image, computed
    # here on the quick run's split (seed 0, 1400 training and 200 held-out digits), plus 3 dB.
    # The quick run reaches about 17.8 dB against a mean-image PSNR of about 12.
    x = load_digits().x.view(-1, 1, 8, 8)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    train, test = x[order[:1400]], x[order[1400:1600]]
    mean_image = float(psnr(train.mean(0).expand_as(test), test).mean())
    floor = mean_image + 3.0
    assert hyper["psnr_db"]["mean"] > floor, (hyper["psnr_db"], mean_image)
    # one network per image reaches far higher on its subset (64 pixels, ~1,700 weights each)
    assert digits["per_image_fit"]["fit_subset_psnr_db"] > hyper["fit_subset_psnr_db"]["mean"]
    figures = {p.name for p in (out / "figures").glob("*.png")}
    assert figures == {"reconstructions.png", "patches.png", "super_resolution.png", "learning_curves.png"}
