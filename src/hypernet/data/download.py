"""Download-and-verify: fetch a file, check its checksum, and only then move it into the cache.

A truncated or corrupted download never reaches the cache (it is written to a temporary file in
the same folder, verified, then renamed atomically). Cached files are re-verified on use.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


class DownloadError(RuntimeError):
    """A download failed or did not match its checksum."""


@dataclass(frozen=True)
class Checksum:
    """`algorithm` (any `hashlib` name, e.g. `"sha256"`) and the expected hex digest."""

    algorithm: str
    hexdigest: str

    def of_file(self, path: Path) -> str:
        h = hashlib.new(self.algorithm)
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()

    def matches(self, path: Path) -> bool:
        return self.of_file(path) == self.hexdigest.lower()


def cache_dir() -> Path:
    """`$HYPERNET_DATA`, else `$XDG_CACHE_HOME/hypernet`, else `~/.cache/hypernet`."""
    if os.environ.get("HYPERNET_DATA"):
        return Path(os.environ["HYPERNET_DATA"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hypernet"


def download(urls: Sequence[str] | str, dest: Path, checksum: Checksum, timeout: float = 60.0) -> Path:
    """Make `dest` a verified copy of the file at the first working URL of `urls`; return `dest`.

    An existing `dest` that verifies is kept; one that does not is replaced. Raises
    `DownloadError` naming every URL tried when none gives a file with the right checksum.
    """
    dest = Path(dest)
    if dest.exists() and checksum.matches(dest):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for url in [urls] if isinstance(urls, str) else list(urls):
        fd, tmp_name = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
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
            os.replace(tmp, dest)
            return dest
        except (OSError, urllib.error.URLError, DownloadError) as exc:
            errors.append(f"{url}: {exc}")
        finally:
            tmp.unlink(missing_ok=True)
    raise DownloadError(f"could not download {dest.name}; tried: " + "; ".join(errors))
