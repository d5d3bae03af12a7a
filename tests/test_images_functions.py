"""Images as functions (`hypernet.data.images`): coordinates, Fourier features, pixel batches."""

from __future__ import annotations

import math

import pytest
import torch

from hypernet.data import ImageFunctions, fourier_features, pixel_coordinates


def test_pixel_coordinates_are_row_major_in_unit_square() -> None:
    c = pixel_coordinates(3, 4)
    assert c.shape == (12, 2)
    # pixel k = r * 4 + col sits at (r / 2, col / 3)
    for r in range(3):
        for col in range(4):
            assert c[r * 4 + col].tolist() == pytest.approx([r / 2, col / 3])


def test_fourier_features_by_hand() -> None:
    c = torch.tensor([[0.25, 0.5]], dtype=torch.float64)
    got = fourier_features(c, 2)[0]
    want = []
    for v in (0.25, 0.5):  # per coordinate: cos(k pi v) for k = 1, 2, then sin(k pi v)
        want += [math.cos(math.pi * v), math.cos(2 * math.pi * v), math.sin(math.pi * v), math.sin(2 * math.pi * v)]
    assert got.tolist() == pytest.approx(want)


def test_samples_pair_each_coordinate_with_its_pixel() -> None:
    g = torch.Generator().manual_seed(0)
    images = torch.rand(5, 6, 7, generator=g)
    funcs = ImageFunctions(images)
    idx = torch.tensor([4, 0, 2])
    coords, values = funcs.sample(idx, 50, g)
    assert coords.shape == (3, 50, 2) and values.shape == (3, 50, 1)
    for b, i in enumerate(idx.tolist()):
        for k in range(50):  # back from the coordinate to the pixel: the value is the image's
            r, col = round(float(coords[b, k, 0]) * 5), round(float(coords[b, k, 1]) * 6)
            assert float(values[b, k, 0]) == float(images[i, r, col])
    coords, values = funcs.all_pixels(idx)
    assert coords.shape == (3, 42, 2)
    assert torch.equal(values[:, :, 0], images[idx].flatten(1))


def test_bad_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="images"):
        ImageFunctions(torch.rand(4, 16))
    with pytest.raises(ValueError, match="frequencies"):
        fourier_features(torch.rand(3, 2), 0)
