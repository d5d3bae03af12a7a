from __future__ import annotations

import gzip
import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from hypernet.data import (
    Checksum,
    DownloadError,
    IDXError,
    download,
    load_digits,
    load_mnist,
    permuted_tasks,
    read_idx,
    split_tasks,
    train_test_split,
)

MNIST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_mnist_reader_on_shared_test_split(shared_dir: Path) -> None:
    data = load_mnist("test", shared_dir / "datasets" / "mnist-test", download=False)
    assert data.x.shape == (10000, 784) and data.x.dtype == torch.float32
    assert float(data.x.min()) >= 0.0 and float(data.x.max()) <= 1.0
    assert torch.bincount(data.y).tolist() == MNIST_COUNTS


def _idx_bytes(values: bytes, shape: tuple[int, ...], code: int = 0x08) -> bytes:
    header = bytes([0, 0, code, len(shape)]) + b"".join(s.to_bytes(4, "big") for s in shape)
    return header + values


def test_idx_validation(tmp_path: Path) -> None:
    good = tmp_path / "ok-idx1-ubyte"
    good.write_bytes(_idx_bytes(bytes(range(6)), (2, 3)))
    assert read_idx(good).tolist() == [[0, 1, 2], [3, 4, 5]]
    bad_magic = tmp_path / "bad"
    bad_magic.write_bytes(b"\x01\x02" + _idx_bytes(bytes(6), (2, 3))[2:])
    with pytest.raises(IDXError, match="bad magic number"):
        read_idx(bad_magic)
    short = tmp_path / "short.gz"
    short.write_bytes(gzip.compress(_idx_bytes(bytes(5), (2, 3))))
    with pytest.raises(IDXError, match=r"header says shape \(2, 3\) \(6 bytes\), file has 5"):
        read_idx(short)
    with pytest.raises(FileNotFoundError, match="IDX file not found"):
        read_idx(tmp_path / "absent")


class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    lie_about_length: set[str] = set()

    def do_GET(self) -> None:  # noqa: N802
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        declared = len(body) + (100 if self.path in self.lie_about_length else 0)
        self.send_header("Content-Length", str(declared))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_download_verifies_and_never_caches_bad_files(server: str, tmp_path: Path) -> None:
    payload = b"hypernet test payload" * 100
    good = Checksum("sha256", hashlib.sha256(payload).hexdigest())
    _Handler.files = {"/good.bin": payload, "/corrupt.bin": payload[:-1] + b"X", "/short.bin": payload}
    _Handler.lie_about_length = {"/short.bin"}
    dest = tmp_path / "cache" / "file.bin"
    with pytest.raises(DownloadError, match="sha256 mismatch"):
        download(f"{server}/corrupt.bin", dest, good, timeout=5)
    assert not dest.exists() and list(dest.parent.iterdir()) == []  # nothing half-written left behind
    with pytest.raises(DownloadError, match="short.bin"):
        download(f"{server}/short.bin", dest, good, timeout=5)
    assert not dest.exists()
    # the first mirror is corrupt, the second good: the good one is cached
    assert download([f"{server}/corrupt.bin", f"{server}/good.bin"], dest, good, timeout=5) == dest
    assert dest.read_bytes() == payload
    _Handler.files = {}  # cached and verified: no request needed
    assert download(f"{server}/good.bin", dest, good, timeout=5) == dest


def test_mnist_download_path_through_local_server(
    server: str, tmp_path: Path, shared_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = shared_dir / "datasets" / "mnist-test"
    _Handler.lie_about_length = set()
    _Handler.files = {
        "/t10k-images-idx3-ubyte.gz": (src / "t10k-images-idx3-ubyte.gz").read_bytes(),
        "/t10k-labels-idx1-ubyte.gz": b"corrupted",
    }
    import hypernet.data.mnist as mnist

    monkeypatch.setattr(mnist, "MIRRORS", (server + "/",))
    monkeypatch.setenv("HYPERNET_DATA", str(tmp_path))
    with pytest.raises(DownloadError, match="t10k-labels"):
        load_mnist("test")
    assert not (tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz").exists()
    _Handler.files["/t10k-labels-idx1-ubyte.gz"] = (src / "t10k-labels-idx1-ubyte.gz").read_bytes()
    data = load_mnist("test")
    assert torch.bincount(data.y).tolist() == MNIST_COUNTS


def test_splits_are_deterministic_and_stratified() -> None:
    data = load_digits()
    a_train, a_test = train_test_split(data, 0.25, seed=3)
    b_train, b_test = train_test_split(data, 0.25, seed=3)
    assert torch.equal(a_test.y, b_test.y) and torch.equal(a_train.x, b_train.x)
    c_train, _ = train_test_split(data, 0.25, seed=4)
    assert not torch.equal(a_train.x, c_train.x)
    assert len(a_train) + len(a_test) == len(data)
    frac = torch.bincount(a_test.y).float() / torch.bincount(data.y).float()
    assert torch.allclose(frac, torch.full_like(frac, 0.25), atol=0.01)
    tasks = split_tasks(a_train, a_test)
    assert tasks.num_tasks == 5 and tasks.classes[2] == (4, 5)
    assert set(tasks.train[2].y.tolist()) == {0, 1}
    assert len(tasks.train[2]) == int(((a_train.y == 4) | (a_train.y == 5)).sum())
    perm = permuted_tasks(a_train, a_test, num_tasks=3, seed=0)
    assert torch.equal(perm.train[0].x, a_train.x)
    assert not torch.equal(perm.train[1].x, a_train.x)
    assert torch.equal(perm.train[1].x.sort(1).values, a_train.x.sort(1).values)  # a permutation of pixels


def test_hypernet_data_env_points_at_an_existing_folder(shared_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYPERNET_DATA", str(shared_dir / "datasets" / "mnist-test"))
    data = load_mnist("test", download=False)  # files directly in the folder, no download
    assert torch.bincount(data.y).tolist() == MNIST_COUNTS


def test_mnist_checksums_are_sha256_and_match_the_shared_files(shared_dir: Path) -> None:
    from hypernet.data.mnist import FILES

    assert all(c.algorithm == "sha256" and len(c.hexdigest) == 64 for _, c in FILES.values())
    for key in ("test-images", "test-labels"):
        name, checksum = FILES[key]
        assert checksum.matches(shared_dir / "datasets" / "mnist-test" / name)
