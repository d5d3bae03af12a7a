"""Download-and-verify: fetch a file, check its checksum, and only then move it into the cache.

A truncated or corrupted download never reaches the cache (it is written to a temporary file in
the same folder, verified, then renamed atomically). Cached files are re-verified on use.
Checksums may be of a file's *content* (`Checksum(..., content=True)`): a gzip file is then
hashed as the bytes it decompresses to, so any faithful copy, gzipped or not, verifies.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from hypernet.atomic import file_mode

GZIP_MAGIC = b"\x1f\x8b"


class DataError(Exception):
    """A data file is missing, damaged, or could not be fetched (the CLI exits 2 with this line)."""


class DownloadError(DataError):
    """A download failed or did not match its checksum."""


class MissingDataError(DataError, FileNotFoundError):
    """A data file is not where it was looked for."""


def is_gzip(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == GZIP_MAGIC


def content_blocks(path: Path, size: int = 1 << 20) -> Iterator[bytes]:
    """The bytes of `path`, decompressed if it is a gzip file (by its magic number, not its name).

    Raises `DataError` naming the file when it is gzip but damaged (bad CRC, truncated, bad data).
    """
    gz = is_gzip(path)
    try:
        with gzip.open(path, "rb") if gz else open(path, "rb") as fh:
            yield from iter(lambda: fh.read(size), b"")
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: not a valid gzip file ({exc or type(exc).__name__})") from exc


@dataclass(frozen=True)
class Checksum:
    """`algorithm` (any `hashlib` name, e.g. `"sha256"`) and the expected hex digest; with
    `content`, of the file's uncompressed content (a gzip file is hashed as what it decompresses to)."""

    algorithm: str
    hexdigest: str
    content: bool = False

    def of_bytes(self, data: bytes) -> str:
        return hashlib.new(self.algorithm, data).hexdigest()

    def of_file(self, path: Path) -> str:
        h = hashlib.new(self.algorithm)
        if self.content:
            for block in content_blocks(path):
                h.update(block)
            return h.hexdigest()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()

    def matches(self, path: Path) -> bool:
        """Whether `path` verifies (a damaged gzip file does not)."""
        try:
            return self.of_file(path) == self.hexdigest.lower()
        except DataError:
            return False


def cache_dir() -> Path:
    """`$HYPERNET_DATA` if set, else the user cache folder (`platformdirs`, e.g. `~/.cache/hypernet`)."""
    env = os.environ.get("HYPERNET_DATA")
    if env:
        path = Path(env).expanduser()
        if path.exists() and not path.is_dir():
            raise DataError(f"HYPERNET_DATA={env}: not a folder (point it at a folder, or unset it)")
        return path
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("hypernet", appauthor=False))


def download(urls: Sequence[str] | str, dest: Path, checksum: Checksum, timeout: float = 60.0) -> Path:
    """Make `dest` a verified copy of the file at the first working URL of `urls`; return `dest`.

    An existing `dest` that verifies is kept; one that does not is replaced. Raises
    `DownloadError` naming every URL tried when none gives a file with the right checksum.
    """
    dest = Path(dest)
    if dest.exists() and checksum.matches(dest):
        return dest
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"cannot create the folder {dest.parent} for {dest.name}: {exc.strerror}") from exc
    errors = []
    for url in [urls] if isinstance(urls, str) else list(urls):
        try:
            fd, tmp_name = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
        except OSError as exc:
            raise DownloadError(f"cannot write into {dest.parent}: {exc.strerror}") from exc
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
                expected = resp.headers.get("Content-Length")
                written = 0
                for block in iter(lambda: resp.read(1 << 20), b""):
                    out.write(block)
                    written += len(block)
            if expected is not None and written != int(expected):
                raise DownloadError(f"truncated: got {written} of {expected} bytes")
            got = checksum.of_file(tmp)
            if got != checksum.hexdigest.lower():
                raise DownloadError(f"{checksum.algorithm} mismatch: expected {checksum.hexdigest}, got {got}")
            os.chmod(tmp, file_mode(dest))  # mkstemp's 0o600 would keep a shared cache from its other users
            os.replace(tmp, dest)
            return dest
        except (OSError, urllib.error.URLError, DataError) as exc:
            errors.append(f"{url}: {exc}")
        finally:
            tmp.unlink(missing_ok=True)
    raise DownloadError(f"could not download {dest.name}; tried: " + "; ".join(errors))
