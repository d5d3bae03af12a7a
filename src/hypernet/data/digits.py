"""scikit-learn's bundled 8x8 digits (1,797 images): offline, no download."""

from __future__ import annotations

import torch

from hypernet.data.splits import Dataset


def load_digits() -> Dataset:
    """All 1,797 digits: `x: [1797, 64]` in [0, 1] (float32), `y: [1797]` in 0..9."""
    from sklearn.datasets import load_digits as _sk_load

    bunch = _sk_load()
    x = torch.tensor(bunch.data, dtype=torch.float32) / 16.0
    y = torch.tensor(bunch.target, dtype=torch.long)
    return Dataset(x, y, image_shape=(8, 8))
