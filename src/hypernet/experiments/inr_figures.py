"""Figures of the `inr` experiment: reconstruction grids, super-resolution, learning curves."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import matplotlib.pyplot as plt
import torch
from torch import Tensor, nn

from hypernet.data.images import pixel_coordinates, upsampled_coordinates

Render = Callable[[nn.Module, Tensor, Tensor], Tensor]  # (model, images [N, C, H, W], coords [K, 2]) -> [N, C, K]


def _show(ax: Any, image: Tensor) -> None:
    """`image: [C, H, W]` in [0, 1]."""
    if image.shape[0] == 1:
        ax.imshow(image[0].numpy(), cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(image.permute(1, 2, 0).clamp(0, 1).numpy())
    ax.set_xticks([])
    ax.set_yticks([])


def _grid(rows: list[tuple[str, Tensor]], title: str) -> plt.Figure:
    """One row per `(label, images [N, C, H, W])`."""
    n = rows[0][1].shape[0]
    fig, axes = plt.subplots(len(rows), n, figsize=(1.15 * n + 1.6, 1.2 * len(rows)), squeeze=False)
    for r, (label, images) in enumerate(rows):
        for c in range(n):
            _show(axes[r, c], images[c])
        axes[r, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle(title, fontsize=10)
    return fig


def reconstruction_grid(
    images: Tensor, models: dict[str, nn.Module], render: Render, results: dict[str, Any]
) -> plt.Figure:
    """Originals `images: [N, C, H, W]` (the first of the per-image fit subset) and each model's
    reconstruction, labelled with its PSNR on the fit subset."""
    h, w = images.shape[-2:]
    coords = pixel_coordinates(h, w)
    rows = [("original", images)]
    for name, model in models.items():
        key = name.replace("per-image fit", "per_image_fit")
        score = results[key]["fit_subset_psnr_db"]
        score = score["mean"] if isinstance(score, dict) else score
        rows.append((f"{name}\n{score:.1f} dB", render(model, images, coords).view_as(images)))
    return _grid(rows, f"Reconstructions (PSNR over the first {results['per_image_fit']['images']} held-out images)")


def super_resolution_figure(
    low: Tensor,
    high: Tensor,
    models: dict[str, nn.Module],
    digits: Tensor,
    digit_model: nn.Module,
    render: Render,
    scores: dict[str, Any],
) -> plt.Figure:
    """Patches `low: [N, C, h, w]`, each model queried at the 2x grid, bicubic, the true `high`
    `[N, C, 2h, 2w]`; then held-out `digits` and the digit hypernetwork's 2x rendering."""
    n, c, h, w = low.shape
    coords = upsampled_coordinates(h, w, 2)
    bicubic = torch.nn.functional.interpolate(low, scale_factor=2, mode="bicubic", align_corners=False).clamp(0, 1)
    rows = [("input", low), (f"bicubic\n{scores['bicubic']['psnr_db']:.1f} dB", bicubic)]
    for name, model in models.items():
        count = scores[name]["images"]
        label = f"{name}\n{scores[name]['psnr_db']:.1f} dB" + (
            f" (first {count})" if count < scores["bicubic"]["images"] else ""
        )
        rows.append((label, render(model, low, coords).view(n, c, 2 * h, 2 * w)))
    rows.append(("2x truth", high))
    dh, dw = digits.shape[-2:]
    up = render(digit_model, digits, upsampled_coordinates(dh, dw, 2)).view(len(digits), -1, 2 * dh, 2 * dw)
    rows += [("digit", digits), ("hypernetwork\n2x digit", up)]
    return _grid(rows, "Super-resolution: coordinate networks queried at twice the resolution (PSNR: held-out patches)")


def learning_curves(records: list[dict[str, Any]], phases: list[str]) -> plt.Figure:
    """Test PSNR against step for each training phase in `phases`."""
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for phase in phases:
        ev = [r for r in records if r.get("phase") == phase and "test_psnr" in r]
        ax.plot([r["step"] for r in ev], [r["test_psnr"] for r in ev], marker="o", label=phase)
    ax.set(xlabel="step", ylabel="test PSNR (dB)", title="Held-out PSNR during training")
    ax.legend(fontsize=8)
    return fig
