"""Images as functions: an image `I` is the function `h_I(x)` from a pixel coordinate `x` to its
intensity. Coordinates, their Fourier features, and batches of `(image, coordinates, intensities)`
for a hypernetwork `g(x; f(I))` (the modularity experiment) or an implicit neural representation.

Conventions: images `[N, H, W]` in [0, 1]; coordinates `[H * W, 2]` (row, column) in [0, 1],
row-major, so `images.flatten(1)[:, k]` is the intensity at `coordinates[k]`.
"""

from __future__ import annotations

import math

import torch
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


class ImageFunctions:
    """A set of images seen as functions of their pixel coordinates.

    `images: [N, H, W]` in [0, 1]. `sample(index, pixels, generator)` draws `pixels` random pixels of
    each image in `index: [B]` and returns `(coords [B, pixels, 2], values [B, pixels, 1])`;
    `all_pixels(index)` returns every pixel, `[B, H * W, 2]` and `[B, H * W, 1]`.
    """

    def __init__(self, images: Tensor) -> None:
        if images.ndim != 3:
            raise ValueError(f"images: expected [N, H, W], got shape {list(images.shape)}")
        self.images = images
        self.height, self.width = int(images.shape[1]), int(images.shape[2])
        self.coords = pixel_coordinates(self.height, self.width).to(images.dtype)
        self.values = images.reshape(images.shape[0], -1)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def sample(self, index: Tensor, pixels: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """`pixels` pixels per image, drawn uniformly with replacement."""
        n = self.height * self.width
        k = torch.randint(n, (index.shape[0], pixels), generator=generator)
        return self.coords[k], self.values[index[:, None], k][..., None]

    def all_pixels(self, index: Tensor) -> tuple[Tensor, Tensor]:
        """Every pixel of the images in `index`."""
        b = index.shape[0]
        return self.coords.expand(b, -1, -1), self.values[index][..., None]
