"""MNIST from IDX files, verified by the SHA-256 of their uncompressed content.

Where the files come from, in order:
* `data_dir` (`--data-dir`): the user's own folder. Read only: never written, never downloaded
  into. A file missing there is an error naming the names looked for; one that fails verification
  is an error naming the file and the expected checksum.
* otherwise `$HYPERNET_DATA` or the user cache (`cache_dir()`): files the user put there directly
  are treated like `data_dir`'s; the download cache is its `mnist/` folder, where a missing or
  damaged file is fetched again from the mirrors and verified before it replaces anything.

Any faithful copy verifies, gzipped (with any compression) or raw; flipped bytes do not.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from hypernet.data.download import Checksum, DataError, MissingDataError, cache_dir, content_blocks, download
from hypernet.data.splits import Dataset

MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)

# SHA-256 of each file's uncompressed IDX bytes (the official files' content; it survives
# re-compression, unlike a checksum of the .gz file).
FILES: dict[str, tuple[str, Checksum]] = {
    "train-images": (
        "train-images-idx3-ubyte.gz",
        Checksum("sha256", "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db", content=True),
    ),
    "train-labels": (
        "train-labels-idx1-ubyte.gz",
        Checksum("sha256", "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5", content=True),
    ),
    "test-images": (
        "t10k-images-idx3-ubyte.gz",
        Checksum("sha256", "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7", content=True),
    ),
    "test-labels": (
        "t10k-labels-idx1-ubyte.gz",
        Checksum("sha256", "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2", content=True),
    ),
}

MNIST_SIZES = {"test": 10_000, "train": 60_000}

_DTYPES: dict[int, str] = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class IDXError(DataError, ValueError):
    """A file is not a valid IDX file."""


class ChecksumError(DataError):
    """A local data file does not match its expected checksum."""


def _content(path: Path) -> bytes:
    """`path`'s bytes, decompressed if gzip (recognised by its magic number, whatever its name)."""
    if not path.exists():
        raise MissingDataError(f"IDX file not found: {path}")
    try:
        return b"".join(content_blocks(path))
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from exc


def parse_idx(raw: bytes, name: str = "IDX data") -> np.ndarray:
    """Parse IDX bytes into an array, validating the magic number, dimensions and size."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise IDXError(f"{name}: bad magic number {raw[:4].hex()} (expected 0000TTNN)")
    code, ndim = raw[2], raw[3]
    if code not in _DTYPES or ndim == 0:
        raise IDXError(f"{name}: unknown data type 0x{code:02x} or zero dimensions")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise IDXError(f"{name}: truncated header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_DTYPES[code])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise IDXError(f"{name}: header says shape {shape} ({expected} bytes), file has {len(raw) - header}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def read_idx(path: Path | str) -> np.ndarray:
    """Read an IDX file, gzip-compressed or raw, into an array (no checksum: any IDX file)."""
    path = Path(path)
    return parse_idx(_content(path), str(path))


def _verified(path: Path, checksum: Checksum) -> bytes:
    raw = _content(path)
    got = checksum.of_bytes(raw)
    if got != checksum.hexdigest:
        raise ChecksumError(
            f"MNIST: {path} fails verification: the {checksum.algorithm} of its uncompressed content is "
            f"{got}, expected {checksum.hexdigest} (a damaged or different file)"
        )
    return raw


def _find(folder: Path, filename: str) -> Path | None:
    for name in (filename, filename.removesuffix(".gz")):
        if (folder / name).is_file():
            return folder / name
    return None


def _names(filename: str) -> str:
    return f"{filename} or {filename.removesuffix('.gz')}"


def _file_bytes(key: str, data_dir: Path | None, allow_download: bool) -> bytes:
    """The verified content of MNIST file `key` (see the module docstring for where it comes from)."""
    filename, checksum = FILES[key]
    if data_dir is not None:
        if not data_dir.is_dir():
            raise MissingDataError(f"MNIST: data folder {data_dir} does not exist or is not a folder")
        found = _find(data_dir, filename)
        if found is None:
            raise MissingDataError(f"MNIST: {_names(filename)} not found in {data_dir}")
        return _verified(found, checksum)
    root = cache_dir()
    found = _find(root, filename) if root.is_dir() else None
    if found is not None:  # the user's own copy, put in $HYPERNET_DATA: checked, never replaced
        return _verified(found, checksum)
    cached = root / "mnist" / filename
    if cached.exists():
        try:
            return _verified(cached, checksum)
        except DataError:
            if not allow_download:
                raise
            # a damaged file in our own download cache: fetched again below, replacing it
    if not allow_download:
        where = f"{root} nor {root / 'mnist'}"
        raise MissingDataError(f"MNIST: {_names(filename)} not found in {where}; downloading is off")
    download([m + filename for m in MIRRORS], cached, checksum)
    return _verified(cached, checksum)


def _arrays(split: str, data_dir: Path | str | None, allow_download: bool) -> tuple[np.ndarray, np.ndarray]:
    if split not in MNIST_SIZES:
        raise ValueError(f"split: expected 'train' or 'test', got {split!r}")
    folder = Path(data_dir) if data_dir is not None else None
    images = parse_idx(_file_bytes(f"{split}-images", folder, allow_download), FILES[f"{split}-images"][0])
    labels = parse_idx(_file_bytes(f"{split}-labels", folder, allow_download), FILES[f"{split}-labels"][0])
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise IDXError(f"MNIST {split}: images {images.shape} and labels {labels.shape} do not pair up")
    return images, labels


def check_mnist(split: str = "test", data_dir: Path | str | None = None, download: bool = True) -> None:
    """Find (or fetch) and verify MNIST `split` without loading it into tensors; raises `DataError`."""
    _arrays(split, data_dir, download)


def load_mnist(split: str = "test", data_dir: Path | str | None = None, download: bool = True) -> Dataset:
    """MNIST `split` (`"train"` or `"test"`): `x: [N, 784]` in [0, 1], `y: [N]`.

    Reads from `data_dir` when given (read only); otherwise from `$HYPERNET_DATA` or the user
    cache, downloading into its `mnist/` folder when missing and `download` is true. Every file
    is verified by the SHA-256 of its uncompressed content.
    """
    images, labels = _arrays(split, data_dir, download)
    x = torch.from_numpy(images.reshape(images.shape[0], -1).astype(np.float32) / 255.0)
    y = torch.from_numpy(labels.astype(np.int64))
    return Dataset(x, y, image_shape=(int(images.shape[1]), int(images.shape[2])))
