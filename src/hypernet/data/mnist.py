"""MNIST from IDX files (gzip or raw), with a reader that validates magic numbers and sizes, and a
download-and-verify path into the user cache (`HYPERNET_DATA` or `--data-dir` to point elsewhere)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from hypernet.data.download import Checksum, cache_dir, download
from hypernet.data.splits import Dataset

MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)

# SHA-256 of the canonical gzipped files: the test split's as published with the shared copy, the
# training split's as widely recorded (matching the same mirrors' files byte for byte).
FILES: dict[str, tuple[str, Checksum]] = {
    "train-images": (
        "train-images-idx3-ubyte.gz",
        Checksum("sha256", "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
    ),
    "train-labels": (
        "train-labels-idx1-ubyte.gz",
        Checksum("sha256", "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
    ),
    "test-images": (
        "t10k-images-idx3-ubyte.gz",
        Checksum("sha256", "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
    ),
    "test-labels": (
        "t10k-labels-idx1-ubyte.gz",
        Checksum("sha256", "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
    ),
}

_DTYPES: dict[int, str] = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class IDXError(ValueError):
    """A file is not a valid IDX file."""


def read_idx(path: Path | str) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed) into an array, validating header and size."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"IDX file not found: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as exc:
        raise IDXError(f"{path}: cannot read ({exc})") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise IDXError(f"{path}: bad magic number {raw[:4].hex()} (expected 0000TTNN)")
    code, ndim = raw[2], raw[3]
    if code not in _DTYPES or ndim == 0:
        raise IDXError(f"{path}: unknown data type 0x{code:02x} or zero dimensions")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise IDXError(f"{path}: truncated header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_DTYPES[code])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise IDXError(f"{path}: header says shape {shape} ({expected} bytes), file has {len(raw) - header}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def _locate(name: str, data_dir: Path | None, allow_download: bool) -> Path:
    filename, checksum = FILES[name]
    if data_dir is not None:
        for candidate in (Path(data_dir) / filename, Path(data_dir) / filename.removesuffix(".gz")):
            if candidate.exists():
                return candidate
        # an explicit folder is the user's: read from it, never download into it
        raise FileNotFoundError(f"MNIST: {filename} not found in {data_dir}")
    for candidate in (cache_dir() / filename, cache_dir() / filename.removesuffix(".gz")):
        # $HYPERNET_DATA may hold the files directly (a folder the user already has), or under mnist/
        if candidate.exists() and (candidate.suffix != ".gz" or checksum.matches(candidate)):
            return candidate
    cached = cache_dir() / "mnist" / filename
    if cached.exists() and checksum.matches(cached):
        return cached
    if not allow_download:
        raise FileNotFoundError(f"MNIST: {cached} missing and downloading is off")
    return download([m + filename for m in MIRRORS], cached, checksum)


def load_mnist(split: str = "test", data_dir: Path | str | None = None, download: bool = True) -> Dataset:
    """MNIST `split` (`"train"` or `"test"`): `x: [N, 784]` in [0, 1], `y: [N]`.

    Reads from `data_dir` when given (never downloading into it); otherwise from `$HYPERNET_DATA`
    (the files directly, or under `mnist/`) or the user cache, downloading into `.../mnist/` with
    checksum verification when the files are missing and `download` is true.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split: expected 'train' or 'test', got {split!r}")
    folder = Path(data_dir) if data_dir is not None else None
    images = read_idx(_locate(f"{split}-images", folder, download))
    labels = read_idx(_locate(f"{split}-labels", folder, download))
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise IDXError(f"MNIST {split}: images {images.shape} and labels {labels.shape} do not pair up")
    x = torch.from_numpy(images.reshape(images.shape[0], -1).astype(np.float32) / 255.0)
    y = torch.from_numpy(labels.astype(np.int64))
    return Dataset(x, y, image_shape=(int(images.shape[1]), int(images.shape[2])))
