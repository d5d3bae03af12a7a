from __future__ import annotations

import gzip
import hashlib
import http.server
import os
import shutil
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from hypernet.data import (
    Checksum,
    ChecksumError,
    DataError,
    DownloadError,
    IDXError,
    MissingDataError,
    download,
    load_digits,
    load_mnist,
    permuted_tasks,
    read_idx,
    split_tasks,
    train_test_split,
)

MNIST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]  # from the dataset's README
IMAGES, LABELS = "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"


def test_mnist_reader_on_shared_test_split(mnist_test_dir: Path) -> None:
    data = load_mnist("test", mnist_test_dir, download=False)
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
    raw_named_gz = tmp_path / "raw-but-named.gz"  # gzip is recognised by its magic number, not the name
    raw_named_gz.write_bytes(_idx_bytes(bytes(range(6)), (3, 2)))
    assert read_idx(raw_named_gz).tolist() == [[0, 1], [2, 3], [4, 5]]
    with pytest.raises(FileNotFoundError, match="IDX file not found"):
        read_idx(tmp_path / "absent")


class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    lie_about_length: set[str] = set()
    requests: list[str] = []

    def do_GET(self) -> None:  # noqa: N802
        self.requests.append(self.path)
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
    # polled every 50 ms (not 0.5 s), so shutting it down after each test is quick
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
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
    old_umask = os.umask(0o027)  # the cached file gets the mode a plain open() would, not mkstemp's 0o600
    try:
        assert download([f"{server}/corrupt.bin", f"{server}/good.bin"], dest, good, timeout=5) == dest
    finally:
        os.umask(old_umask)
    assert dest.read_bytes() == payload
    assert stat.S_IMODE(dest.stat().st_mode) == 0o640
    _Handler.files = {}  # cached and verified: no request needed
    assert download(f"{server}/good.bin", dest, good, timeout=5) == dest


def _serve_mnist_test(server: str, src: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import hypernet.data.mnist as mnist

    _Handler.lie_about_length = set()
    _Handler.requests = []
    _Handler.files = {f"/{name}": (src / name).read_bytes() for name in (IMAGES, LABELS)}
    monkeypatch.setattr(mnist, "MIRRORS", (server + "/",))


def test_mnist_download_path_through_local_server(
    server: str, tmp_path: Path, mnist_test_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _serve_mnist_test(server, mnist_test_dir, monkeypatch)
    _Handler.files[f"/{LABELS}"] = b"corrupted"
    monkeypatch.setenv("HYPERNET_DATA", str(tmp_path))
    with pytest.raises(DownloadError, match="t10k-labels"):
        load_mnist("test")
    assert not (tmp_path / "mnist" / LABELS).exists()
    _Handler.files[f"/{LABELS}"] = (mnist_test_dir / LABELS).read_bytes()
    data = load_mnist("test")
    assert torch.bincount(data.y).tolist() == MNIST_COUNTS
    assert sorted(p.name for p in (tmp_path / "mnist").iterdir()) == [IMAGES, LABELS]  # no .part left


def test_corrupted_cached_download_is_verified_again_and_replaced(
    server: str, tmp_path: Path, mnist_test_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _serve_mnist_test(server, mnist_test_dir, monkeypatch)
    monkeypatch.setenv("HYPERNET_DATA", str(tmp_path))
    load_mnist("test")
    cached = tmp_path / "mnist" / LABELS
    good = cached.read_bytes()
    # a byte flipped in the cached labels: recompressed, so the gzip itself is valid; only the
    # content checksum can see it
    flipped = bytearray(gzip.decompress(good))
    flipped[100] ^= 0x01
    cached.write_bytes(gzip.compress(bytes(flipped)))
    _Handler.requests = []
    data = load_mnist("test")
    assert _Handler.requests == [f"/{LABELS}"]  # only the damaged file was fetched again
    assert cached.read_bytes() == good and torch.bincount(data.y).tolist() == MNIST_COUNTS
    # without downloads the damaged cache file is reported, naming it
    cached.write_bytes(gzip.compress(bytes(flipped)))
    with pytest.raises(ChecksumError, match=f"{cached}.*expected ff7bcfd4"):
        load_mnist("test", download=False)


def test_corrupted_file_in_hypernet_data_is_rejected_naming_it(
    server: str, tmp_path: Path, mnist_test_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _serve_mnist_test(server, mnist_test_dir, monkeypatch)
    shutil.copy(mnist_test_dir / IMAGES, tmp_path / IMAGES)
    raw = bytearray(gzip.decompress((mnist_test_dir / LABELS).read_bytes()))
    raw[-1] = (raw[-1] + 1) % 10  # the last label changed: still a valid IDX file
    (tmp_path / LABELS.removesuffix(".gz")).write_bytes(bytes(raw))
    monkeypatch.setenv("HYPERNET_DATA", str(tmp_path))
    with pytest.raises(ChecksumError) as err:
        load_mnist("test")
    assert str(tmp_path / "t10k-labels-idx1-ubyte") in str(err.value)
    assert "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2" in str(err.value)  # expected
    assert _Handler.requests == []  # the user's own file is not silently replaced by a download
    assert (tmp_path / LABELS.removesuffix(".gz")).read_bytes() == bytes(raw)


def test_hypernet_data_pointing_at_a_file_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("HYPERNET_DATA", str(tmp_path / "file"))
    with pytest.raises(DataError, match=r"HYPERNET_DATA=.*file: not a folder"):
        load_mnist("test")


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.rglob("*")}


def test_recompressed_and_raw_copies_are_accepted(tmp_path: Path, mnist_test_dir: Path) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    images = gzip.decompress((mnist_test_dir / IMAGES).read_bytes())
    (folder / IMAGES).write_bytes(gzip.compress(images, compresslevel=1))  # other .gz bytes, same content
    assert (folder / IMAGES).read_bytes() != (mnist_test_dir / IMAGES).read_bytes()
    (folder / "t10k-labels-idx1-ubyte").write_bytes(gzip.decompress((mnist_test_dir / LABELS).read_bytes()))
    before = _snapshot(folder)
    data = load_mnist("test", folder)
    reference = load_mnist("test", mnist_test_dir)
    assert torch.equal(data.x, reference.x) and torch.equal(data.y, reference.y)
    assert _snapshot(folder) == before  # read only


def test_full_shared_mnist_recompressed_training_files_verify(mnist_dir: Path) -> None:
    data = load_mnist("train", mnist_dir, download=False)
    assert data.x.shape == (60000, 784) and torch.bincount(data.y).tolist() == MNIST_TRAIN_COUNTS


@pytest.mark.parametrize("form", ["raw", "regzipped", "gzip-bytes"])
def test_byte_flipped_copy_is_refused_naming_the_file(form: str, tmp_path: Path, mnist_test_dir: Path) -> None:
    shutil.copy(mnist_test_dir / LABELS, tmp_path / LABELS)
    images = bytearray(gzip.decompress((mnist_test_dir / IMAGES).read_bytes()))
    if form == "gzip-bytes":  # a byte flipped in the compressed stream itself
        blob = bytearray((mnist_test_dir / IMAGES).read_bytes())
        blob[len(blob) // 2] ^= 0x10
        bad = tmp_path / IMAGES
        bad.write_bytes(bytes(blob))
    else:
        images[5000] ^= 0x01  # one pixel value in the body: the IDX header is still valid
        bad = tmp_path / (IMAGES.removesuffix(".gz") if form == "raw" else IMAGES)
        bad.write_bytes(bytes(images) if form == "raw" else gzip.compress(bytes(images), compresslevel=1))  # fast
    with pytest.raises(DataError) as err:
        load_mnist("test", tmp_path)
    assert str(bad) in str(err.value)
    if form != "gzip-bytes":  # a damaged gzip stream may fail its own CRC before any checksum
        assert isinstance(err.value, ChecksumError)
        assert "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7" in str(err.value)


def test_missing_file_in_data_dir_is_named_and_nothing_is_fetched_or_written(
    server: str, tmp_path: Path, mnist_test_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _serve_mnist_test(server, mnist_test_dir, monkeypatch)
    monkeypatch.setenv("HYPERNET_DATA", str(tmp_path / "cache"))
    folder = tmp_path / "mine"
    folder.mkdir()
    shutil.copy(mnist_test_dir / IMAGES, folder / IMAGES)
    before = _snapshot(folder)
    names = "t10k-labels-idx1-ubyte.gz or t10k-labels-idx1-ubyte"
    with pytest.raises(MissingDataError, match=f"{names} not found in {folder}"):
        load_mnist("test", folder)
    assert _snapshot(folder) == before and _Handler.requests == [] and not (tmp_path / "cache").exists()


def test_content_checksum_is_the_same_for_gzip_and_raw(tmp_path: Path) -> None:
    payload = bytes(range(256)) * 50
    (tmp_path / "a.gz").write_bytes(gzip.compress(payload, compresslevel=9))
    (tmp_path / "b").write_bytes(gzip.compress(payload, compresslevel=1))
    (tmp_path / "c").write_bytes(payload)
    expected = hashlib.sha256(payload).hexdigest()  # independent: hashlib on the plain bytes
    content = Checksum("sha256", expected, content=True)
    assert all(content.matches(tmp_path / n) for n in ("a.gz", "b", "c"))
    assert not Checksum("sha256", expected).matches(tmp_path / "a.gz")  # a file checksum sees the gzip bytes
    (tmp_path / "d.gz").write_bytes(gzip.compress(payload)[:-9])  # truncated gzip
    assert not content.matches(tmp_path / "d.gz")
    with pytest.raises(DataError, match="d.gz: not a valid gzip file"):
        content.of_file(tmp_path / "d.gz")


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


def test_hypernet_data_env_points_at_an_existing_folder(mnist_test_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYPERNET_DATA", str(mnist_test_dir))
    data = load_mnist("test", download=False)  # files directly in the folder, no download
    assert torch.bincount(data.y).tolist() == MNIST_COUNTS


def test_mnist_checksums_are_of_the_content_and_match_the_shared_files(mnist_dir: Path, mnist_test_dir: Path) -> None:
    from hypernet.data.mnist import FILES

    for name, checksum in FILES.values():
        assert checksum.algorithm == "sha256" and checksum.content and len(checksum.hexdigest) == 64
        # independent of the code under test: hashlib over gzip.decompress of the shared copies
        content = gzip.decompress((mnist_dir / name).read_bytes())
        assert hashlib.sha256(content).hexdigest() == checksum.hexdigest, name
    for name in (IMAGES, LABELS):
        assert (mnist_dir / name).read_bytes() == (mnist_test_dir / name).read_bytes()


def test_absent_shared_data_skips_locally_and_fails_under_ci(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from conftest import need_shared

    absent = tmp_path / "datasets" / "mnist"
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=f"{absent} is absent"):
        need_shared(absent)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true requires them"):
        need_shared(absent)
    assert need_shared(tmp_path) == tmp_path


def test_download_writes_a_part_file_beside_dest_and_passes_the_timeout(
    server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os
    import re
    import urllib.request

    payload = b"part file test" * 10
    good = Checksum("sha256", hashlib.sha256(payload).hexdigest())
    dest = tmp_path / "a" / "b" / "file.bin"  # two missing folders: created with their parents
    seen: list[list[str]] = []
    timeouts: list[object] = []
    real_urlopen = urllib.request.urlopen

    def spy(url: str, *args: object, **kwargs: object) -> object:
        timeouts.append(kwargs.get("timeout", args[1] if len(args) > 1 else "absent"))
        seen.append(sorted(os.listdir(dest.parent)))  # while the download is open: the partial file
        return real_urlopen(url, *args, **kwargs)  # type: ignore[arg-type, call-overload]

    monkeypatch.setattr(urllib.request, "urlopen", spy)
    _Handler.files = {"/f": payload}
    _Handler.lie_about_length = set()
    assert download(f"{server}/f", dest, good, timeout=7.5) == dest and dest.read_bytes() == payload
    assert len(seen) == 1 and len(seen[0]) == 1
    assert re.fullmatch(r"file\.bin\.[^/]+\.part", seen[0][0]), seen  # beside dest, named after it
    assert os.listdir(dest.parent) == ["file.bin"]
    dest.unlink()
    download(f"{server}/f", dest, good)  # the default timeout
    assert timeouts == [7.5, 60.0]


def test_cache_dir_is_the_platform_user_cache_when_hypernet_data_is_unset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    from hypernet.data.download import cache_dir

    monkeypatch.delenv("HYPERNET_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    if sys.platform.startswith("linux"):  # the XDG rule: $XDG_CACHE_HOME/<app name>
        assert cache_dir() == tmp_path / "xdg" / "hypernet"
    assert cache_dir().name == "hypernet" or "hypernet" in cache_dir().parts
    monkeypatch.setenv("HYPERNET_DATA", str(tmp_path / "mine"))  # need not exist yet
    assert cache_dir() == tmp_path / "mine"


def _fake_mnist(folder: Path, images: bytes, labels: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    """Files `my-images.gz` / `my-labels` in `folder`, registered as MNIST's test split with
    checksums computed here by hashlib (so that parsing, not verification, is what is tested)."""
    import hypernet.data.mnist as mnist

    (folder / "my-images.gz").write_bytes(gzip.compress(images))
    (folder / "my-labels").write_bytes(labels)
    files = dict(mnist.FILES)
    files["test-images"] = ("my-images.gz", Checksum("sha256", hashlib.sha256(images).hexdigest(), content=True))
    files["test-labels"] = ("my-labels.gz", Checksum("sha256", hashlib.sha256(labels).hexdigest(), content=True))
    monkeypatch.setattr(mnist, "FILES", files)


def test_load_mnist_scales_by_255_and_keeps_the_image_shape(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # two 2x3 images written by hand: pixel bytes 0, 51, 102, 153, 204, 255 are 0, 0.2, ..., 1.0
    pixels = bytes([0, 51, 102, 153, 204, 255, 255, 204, 153, 102, 51, 0])
    _fake_mnist(tmp_path, _idx_bytes(pixels, (2, 2, 3)), _idx_bytes(bytes([7, 3]), (2,)), monkeypatch)
    data = load_mnist(data_dir=tmp_path, download=False)  # the default split is "test"
    assert data.image_shape == (2, 3) and data.x.shape == (2, 6)
    assert data.x[0].tolist() == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8, 1.0], abs=1e-7)  # float32 rounding
    assert data.x[1, 0].item() == 1.0 and data.y.tolist() == [7, 3] and data.y.dtype == torch.int64


@pytest.mark.parametrize(
    ("images", "labels", "message"),
    [
        (_idx_bytes(bytes(2), (2,)), _idx_bytes(bytes(2), (2,)), r"images \(2,\) and labels \(2,\)"),
        (_idx_bytes(bytes(8), (2, 2, 2)), _idx_bytes(bytes(2), (2, 1)), r"images \(2, 2, 2\) and labels \(2, 1\) do"),
        (_idx_bytes(bytes(8), (2, 2, 2)), _idx_bytes(bytes(3), (3,)), r"images \(2, 2, 2\) and labels \(3,\)"),
    ],
    ids=["1-D images", "2-D labels", "3 labels for 2 images"],
)
def test_mnist_images_and_labels_must_pair_up(
    images: bytes, labels: bytes, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_mnist(tmp_path, images, labels, monkeypatch)
    with pytest.raises(IDXError, match=f"MNIST test: {message}"):
        load_mnist("test", tmp_path)


def test_mnist_idx_errors_name_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good_labels = _idx_bytes(bytes(2), (2,))
    _fake_mnist(tmp_path, b"\x01\x02\x08\x01", good_labels, monkeypatch)
    with pytest.raises(IDXError, match="^my-images.gz: bad magic number"):
        load_mnist("test", tmp_path)
    _fake_mnist(tmp_path, _idx_bytes(bytes(8), (2, 2, 2)), b"\x00\x00\x08", monkeypatch)
    with pytest.raises(IDXError, match="^my-labels.gz: bad magic number"):
        load_mnist("test", tmp_path)
    bad = tmp_path / "bad-idx"
    bad.write_bytes(b"\x05\x00\x08\x01")
    with pytest.raises(IDXError, match=f"^{bad}: bad magic number"):
        read_idx(bad)


def test_check_mnist_verifies_without_loading(
    server: str, tmp_path: Path, mnist_test_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hypernet.data import check_mnist

    assert check_mnist(data_dir=mnist_test_dir) is None  # the default split is "test"
    assert check_mnist("test", str(mnist_test_dir), download=False) is None
    with pytest.raises(ValueError, match="split"):
        check_mnist("validation", mnist_test_dir)
    # nothing local, downloading on by default: fetched from the (local) mirror into the cache
    _serve_mnist_test(server, mnist_test_dir, monkeypatch)
    monkeypatch.setenv("HYPERNET_DATA", str(tmp_path))
    with pytest.raises(MissingDataError, match=f"not found in {tmp_path} nor {tmp_path / 'mnist'}; downloading is off"):
        check_mnist(download=False)
    assert _Handler.requests == []
    check_mnist()
    assert sorted(_Handler.requests) == [f"/{IMAGES}", f"/{LABELS}"]
    assert sorted(p.name for p in (tmp_path / "mnist").iterdir()) == [IMAGES, LABELS]
    # a damaged file in the user's own folder is reported
    (tmp_path / "mine").mkdir()
    shutil.copy(mnist_test_dir / IMAGES, tmp_path / "mine" / IMAGES)
    (tmp_path / "mine" / LABELS).write_bytes(gzip.compress(b"not the labels"))
    with pytest.raises(ChecksumError, match="t10k-labels"):
        check_mnist("test", tmp_path / "mine")


def test_load_mnist_defaults_to_the_test_split_and_downloading(
    server: str, tmp_path: Path, mnist_test_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _serve_mnist_test(server, mnist_test_dir, monkeypatch)
    monkeypatch.setenv("HYPERNET_DATA", str(tmp_path))
    data = load_mnist()
    assert len(data) == 10_000 and data.image_shape == (28, 28) and len(_Handler.requests) == 2
