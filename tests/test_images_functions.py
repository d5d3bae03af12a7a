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


def test_pixel_coordinates_edge_sizes_by_hand() -> None:
    assert pixel_coordinates(1, 1).tolist() == [[0.0, 0.0]]  # one pixel sits at the origin
    assert pixel_coordinates(1, 3).tolist() == [[0.0, 0.0], [0.0, 0.5], [0.0, 1.0]]
    assert pixel_coordinates(2, 1).tolist() == [[0.0, 0.0], [1.0, 0.0]]
    assert pixel_coordinates(2, 2).tolist() == [[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]]
    assert pixel_coordinates(2, 3).dtype == torch.float32
    for h, w in [(0, 3), (3, 0), (-1, 2)]:
        with pytest.raises(ValueError, match="height and width"):
            pixel_coordinates(h, w)


def test_fourier_features_keep_leading_axes_dtype_and_device() -> None:
    g = torch.Generator().manual_seed(1)
    c = torch.rand(2, 3, 2, generator=g, dtype=torch.float64)
    got = fourier_features(c, 3)
    assert got.shape == (2, 3, 12) and got.dtype == torch.float64
    for i in range(2):
        for j in range(3):
            want = []
            for v in c[i, j].tolist():  # plain-float reference, per coordinate: cos for k = 1..3, then sin
                want += [math.cos(k * math.pi * v) for k in (1, 2, 3)] + [math.sin(k * math.pi * v) for k in (1, 2, 3)]
            # float64 throughout: the only error is rounding of k * pi * v and cos/sin (~1e-16), far
            # below 1e-12; a float32 frequency (pi rounded to 7 digits) would be off by ~1e-7
            assert got[i, j].tolist() == pytest.approx(want, abs=1e-12, rel=0)
    one = fourier_features(torch.tensor([[0.5]]), 1)  # one frequency is allowed: cos(pi/2), sin(pi/2)
    assert one[0].tolist() == pytest.approx([0.0, 1.0], abs=1e-7)  # float32 rounding of pi/2: ~4e-8
    # the frequencies are made on the coordinates' device (meta: shapes only, no CPU tensor may mix in)
    meta = fourier_features(torch.zeros(5, 2, device="meta"), 4)
    assert meta.device.type == "meta" and meta.shape == (5, 16)


def test_image_functions_of_non_square_float64_images() -> None:
    g = torch.Generator().manual_seed(2)
    images = torch.rand(3, 2, 5, generator=g, dtype=torch.float64)
    funcs = ImageFunctions(images)
    assert len(funcs) == 3 and (funcs.height, funcs.width) == (2, 5)
    assert funcs.images is images and funcs.coords.dtype == torch.float64
    idx = torch.tensor([2, 2, 0, 1])
    coords, values = funcs.all_pixels(idx)
    assert coords.shape == (4, 10, 2) and values.shape == (4, 10, 1)
    for b, i in enumerate(idx.tolist()):
        assert torch.equal(coords[b], pixel_coordinates(2, 5).double())
        for r in range(2):
            for col in range(5):
                assert float(values[b, r * 5 + col, 0]) == float(images[i, r, col])
    # every pixel can be drawn (uniform over all 10, not over the first rows or columns only)
    c, v = funcs.sample(torch.tensor([1]), 400, torch.Generator().manual_seed(0))
    assert c.shape == (1, 400, 2) and v.shape == (1, 400, 1)
    assert {tuple(p) for p in c[0].tolist()} == {tuple(p) for p in pixel_coordinates(2, 5).double().tolist()}
    # the generator decides the draw; no generator falls back to torch's global one
    a = funcs.sample(idx, 7, torch.Generator().manual_seed(5))
    b = funcs.sample(idx, 7, torch.Generator().manual_seed(5))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    torch.manual_seed(5)
    assert torch.equal(funcs.sample(idx, 7)[0], a[0])
    # [N, H, W] and [N, C, H, W] are images; anything else is refused by name
    for bad in (torch.rand(2, 3), torch.rand(1, 2, 3, 4, 5)):
        with pytest.raises(ValueError, match=r"images: expected \[N, H, W\] or \[N, C, H, W\]"):
            ImageFunctions(bad)
