"""Images as functions: an image `I` is the function `h_I(x)` from a pixel coordinate `x` to its
intensity. Coordinates, their Fourier features, and batches of `(image, coordinates, intensities)`
for a hypernetwork `g(x; f(I))` (the modularity experiment) or an implicit neural representation.

Conventions: images `[N, H, W]` (one channel) or `[N, C, H, W]` in [0, 1]; coordinates
`[H * W, 2]` (row, column) in [0, 1], row-major, so `images.flatten(1)[:, k]` is the intensity at
`coordinates[k]` of a one-channel image. `upsampled_coordinates` gives the pixel centres of a finer
grid in the same coordinates (super-resolution); `sample_image_patches` cuts scikit-learn's sample
images into patches.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def pixel_coordinates(height: int, width: int) -> Tensor:
    """`[height * width, 2]`: (row, column) of every pixel, row-major, each scaled to [0, 1]."""
    if height < 1 or width < 1:
        raise ValueError(f"pixel_coordinates: height and width must be >= 1, got {height}, {width}")
    rows = torch.linspace(0, 1, height) if height > 1 else torch.zeros(1)
    cols = torch.linspace(0, 1, width) if width > 1 else torch.zeros(1)
    return torch.stack(torch.meshgrid(rows, cols, indexing="ij"), -1).reshape(-1, 2)


def fourier_features(coords: Tensor, frequencies: int) -> Tensor:
    """`coords: [..., C]` in [0, 1] -> `[..., 2 * C * frequencies]`: `cos(k pi c), sin(k pi c)` for
    `k = 1..frequencies` (fixed features: a small network then fits an image's detail)."""
    if frequencies < 1:
        raise ValueError(f"frequencies: must be >= 1, got {frequencies}")
    k = torch.arange(1, frequencies + 1, dtype=coords.dtype, device=coords.device) * math.pi
    ang = coords[..., None] * k  # [..., C, F]
    return torch.cat([torch.cos(ang), torch.sin(ang)], dim=-1).flatten(-2)


def upsampled_coordinates(height: int, width: int, factor: int) -> Tensor:
    """`[factor * height * factor * width, 2]`: the pixel centres of a grid `factor` times finer than
    `height x width`, row-major, in the coordinates of `pixel_coordinates(height, width)` (where
    the coarse pixel `r` sits at `r / (height - 1)`). A coarse pixel covers `[r - 1/2, r + 1/2]` in
    pixel units, and its `factor` fine pixels sit at `r - 1/2 + (j + 1/2) / factor`; the outermost lie
    slightly outside [0, 1]. `factor=1` gives `pixel_coordinates(height, width)` (up to float rounding)."""
    if factor < 1:
        raise ValueError(f"factor: must be >= 1, got {factor}")
    if height < 2 or width < 2:
        raise ValueError(f"upsampled_coordinates: height and width must be >= 2, got {height}, {width}")

    def axis(n: int) -> Tensor:
        fine = (torch.arange(n * factor, dtype=torch.float64) + 0.5) / factor - 0.5  # in coarse pixel units
        return (fine / (n - 1)).float()

    return torch.stack(torch.meshgrid(axis(height), axis(width), indexing="ij"), -1).reshape(-1, 2)


def sample_image_patches(side: int, patch: int, grayscale: bool = False, stride: int | None = None) -> Tensor:
    """scikit-learn's two sample images (china, flower; shipped with scikit-learn, no download),
    each area-downsampled to `side x round(1.5 side)` pixels, cut into `patch x patch` patches every
    `stride` pixels (default: `patch`, no overlap). Returns `[N, C, patch, patch]` in [0, 1], `C` 1
    (mean of RGB) or 3, the china image's patches first, row-major."""
    from sklearn.datasets import load_sample_images

    if patch < 2 or side < patch:
        raise ValueError(f"sample_image_patches: need 2 <= patch <= side, got patch={patch}, side={side}")
    stride = patch if stride is None else stride
    if stride < 1:
        raise ValueError(f"stride: must be >= 1, got {stride}")
    out = []
    for im in load_sample_images().images:
        rgb = torch.tensor(im, dtype=torch.float32).permute(2, 0, 1)[None] / 255.0
        small = F.interpolate(rgb, size=(side, round(1.5 * side)), mode="area")[0]
        if grayscale:
            small = small.mean(0, keepdim=True)
        tiles = small.unfold(1, patch, stride).unfold(2, patch, stride)  # [C, rows, cols, patch, patch]
        out.append(tiles.permute(1, 2, 0, 3, 4).reshape(-1, small.shape[0], patch, patch))
    return torch.cat(out).clamp(0, 1)


class ImageFunctions:
    """A set of images seen as functions of their pixel coordinates.

    `images: [N, H, W]` or `[N, C, H, W]` in [0, 1]. `sample(index, pixels, generator)` draws
    `pixels` random pixels of each image in `index: [B]` and returns `(coords [B, pixels, 2],
    values [B, pixels, C])` (`C = 1` for `[N, H, W]`); `all_pixels(index)` returns every pixel,
    `[B, H * W, 2]` and `[B, H * W, C]`. `values: [N, C * H * W]` is each image flattened.
    """

    def __init__(self, images: Tensor) -> None:
        if images.ndim not in (3, 4):
            raise ValueError(f"images: expected [N, H, W] or [N, C, H, W], got shape {list(images.shape)}")
        self.images = images
        self.channels = 1 if images.ndim == 3 else int(images.shape[1])
        self.height, self.width = int(images.shape[-2]), int(images.shape[-1])
        self.coords = pixel_coordinates(self.height, self.width).to(images.dtype)
        self.values = images.reshape(images.shape[0], -1)
        # [N, H * W, C]: the intensities of pixel k in every channel
        self.pixels = images.reshape(images.shape[0], self.channels, -1).transpose(1, 2)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def sample(self, index: Tensor, pixels: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """`pixels` pixels per image, drawn uniformly with replacement."""
        n = self.height * self.width
        k = torch.randint(n, (index.shape[0], pixels), generator=generator)
        return self.coords[k], self.pixels[index[:, None], k]

    def all_pixels(self, index: Tensor) -> tuple[Tensor, Tensor]:
        """Every pixel of the images in `index`."""
        b = index.shape[0]
        return self.coords.expand(b, -1, -1), self.pixels[index]
