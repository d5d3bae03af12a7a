"""Exact checks of the data helpers on hand-made inputs: splits computed by hand, IDX bytes written
by hand, the digits' published class counts, and block readers that must end. No MNIST files, no
network beyond 127.0.0.1: fast enough to run for every mutant of `hypernet.data` (tools/mutation.py)."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from hypernet.data import (
    Checksum,
    Dataset,
    IDXError,
    download,
    load_digits,
    permuted_tasks,
    split_tasks,
    train_test_split,
)
from hypernet.data.download import content_blocks
from hypernet.data.mnist import parse_idx

# per-class counts of scikit-learn's digits (its documentation lists ~180 per class; these are the
# counts of the bundled copy, the same in every scikit-learn release since 0.1x)
DIGITS_COUNTS = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]


def test_digits_are_sixteenths_as_float32_with_long_labels() -> None:
    data = load_digits()
    assert data.x.shape == (1797, 64) and data.x.dtype == torch.float32
    assert data.y.dtype == torch.long and torch.bincount(data.y).tolist() == DIGITS_COUNTS
    assert data.image_shape == (8, 8)
    # the raw pixels are integers 0..16 (both ends occur): x * 16 gives them back exactly
    assert float(data.x.min()) == 0.0 and float(data.x.max()) == 1.0
    assert torch.equal(data.x * 16, (data.x * 16).round())


def _labelled(labels: list[int]) -> Dataset:
    """Row `i` has feature `i`, so a split can be read off the features."""
    y = torch.tensor(labels)
    return Dataset(torch.arange(len(labels), dtype=torch.float32)[:, None], y, image_shape=(1, 1))


def test_train_test_split_counts_by_hand() -> None:
    # classes of sizes 2, 5, 10 with 20% for testing: round(0.4)=0 -> at least 1, round(1.0)=1, round(2.0)=2
    data = _labelled([0] * 2 + [1] * 5 + [2] * 10)
    train, test = train_test_split(data, 0.2, seed=0)
    assert torch.bincount(test.y, minlength=3).tolist() == [1, 1, 2]
    assert torch.bincount(train.y, minlength=3).tolist() == [1, 4, 8]
    # every row lands in exactly one part, each part in the original order
    rows = sorted(train.x[:, 0].tolist() + test.x[:, 0].tolist())
    assert rows == list(range(17))
    assert train.x[:, 0].tolist() == sorted(train.x[:, 0].tolist())
    assert torch.equal(data.y[train.x[:, 0].long()], train.y)  # rows keep their labels
    assert train.image_shape == (1, 1) and test.image_shape == (1, 1)
    # the defaults are test_fraction=0.2, seed=0
    d_train, d_test = train_test_split(data)
    assert torch.equal(d_train.x, train.x) and torch.equal(d_test.x, test.x)
    # another seed draws other rows (of the 10 in class 2, which 2 go to testing)
    other = [train_test_split(data, 0.2, seed=s)[1].x[:, 0].tolist() for s in range(1, 6)]
    assert any(o != test.x[:, 0].tolist() for o in other)


@pytest.mark.parametrize("fraction", [0.0, 1.0, 1.5, -0.1])
def test_train_test_split_refuses_fractions_outside_the_open_interval(fraction: float) -> None:
    with pytest.raises(ValueError, match="test_fraction"):
        train_test_split(_labelled([0, 1]), fraction)


def test_subset_keeps_the_image_shape() -> None:
    data = Dataset(torch.zeros(4, 6), torch.arange(4), image_shape=(2, 3))
    part = data.subset(torch.tensor([3, 1]))
    assert part.image_shape == (2, 3) and part.y.tolist() == [3, 1]


def test_split_tasks_by_hand() -> None:
    train = _labelled([3, 0, 1, 2, 1, 3, 0])
    test = _labelled([2, 2, 0, 3])
    tasks = split_tasks(train, test, groups=[(1, 3), (0,), (2,)])
    assert tasks.num_tasks == 3 and tasks.num_classes == 2 and tasks.classes == [(1, 3), (0,), (2,)]
    # task 0: classes 1 -> 0 and 3 -> 1, rows in their original order
    assert tasks.train[0].x[:, 0].tolist() == [0, 2, 4, 5] and tasks.train[0].y.tolist() == [1, 0, 0, 1]
    assert tasks.train[1].x[:, 0].tolist() == [1, 6] and tasks.train[1].y.tolist() == [0, 0]
    assert tasks.test[0].x[:, 0].tolist() == [3] and tasks.test[0].y.tolist() == [1]
    assert tasks.test[2].x[:, 0].tolist() == [0, 1] and tasks.test[2].y.tolist() == [0, 0]
    assert len(tasks.test) == 3 and all(d.image_shape == (1, 1) for d in tasks.train + tasks.test)


@pytest.mark.parametrize(
    "groups",
    [
        [(0, 1), ()],  # an empty task
        [(0, 1), (1, 2)],  # overlap with the previous task
        [(0, 1), (2, 3), (0, 4)],  # overlap with an earlier, not the previous, task
    ],
)
def test_split_tasks_refuses_empty_or_shared_groups(groups: list[tuple[int, ...]]) -> None:
    data = _labelled([0, 1, 2, 3, 4])
    with pytest.raises(ValueError, match="groups"):
        split_tasks(data, data, groups)


def test_split_tasks_with_a_class_missing_from_one_split() -> None:
    # the test split has no 4 (above its largest label): task (3, 4) keeps its 3s, relabelled 0;
    # a task none of whose classes is in a split is refused by name, not with an index error
    train, test = _labelled([0, 1, 2, 3, 4]), _labelled([0, 1, 3, 2])
    tasks = split_tasks(train, test, groups=[(0, 1), (3, 4)])
    assert tasks.test[1].x[:, 0].tolist() == [2] and tasks.test[1].y.tolist() == [0]
    with pytest.raises(ValueError, match=r"groups: the test split has no example of the classes \[5, 6\]"):
        split_tasks(_labelled([5, 6, 0]), _labelled([0, 1]), groups=[(0,), (5, 6)])
    with pytest.raises(ValueError, match="class labels are >= 0"):
        split_tasks(train, test, groups=[(0, -1)])


def test_permuted_tasks_apply_one_permutation_per_task_to_train_and_test() -> None:
    d = 12
    # every row is 0..d-1 shifted by the row index: column j holds j (+ row), so a permuted row
    # spells out the permutation itself
    train = Dataset(torch.arange(d).float() + torch.arange(3).float()[:, None], torch.tensor([2, 0, 2]), (3, 4))
    test = Dataset(torch.arange(d).float() + 100 + torch.arange(2).float()[:, None], torch.tensor([0, 0]), (3, 4))
    tasks = permuted_tasks(train, test, num_tasks=3, seed=7)
    assert tasks.num_tasks == 3 and len(tasks.test) == 3 and tasks.classes == [(0, 2)] * 3
    perms = [tasks.train[t].x[0].long() for t in range(3)]
    assert perms[0].tolist() == list(range(d))  # task 0: the identity
    for t, p in enumerate(perms):
        assert sorted(p.tolist()) == list(range(d))  # a permutation
        assert torch.equal(tasks.train[t].x, train.x[:, p]) and torch.equal(tasks.test[t].x, test.x[:, p])
        assert torch.equal(tasks.train[t].y, train.y) and torch.equal(tasks.test[t].y, test.y)
        assert tasks.train[t].image_shape == (3, 4) and tasks.test[t].image_shape == (3, 4)
    assert not torch.equal(perms[1], perms[2]) and not torch.equal(perms[1], perms[0])
    # the same seed, the same permutations (whatever the global RNG did in between)
    torch.manual_seed(123)
    again = permuted_tasks(train, test, num_tasks=3, seed=7)
    assert all(torch.equal(a.x, b.x) for a, b in zip(again.train, tasks.train, strict=True))
    # the defaults are num_tasks=5, seed=0
    default = permuted_tasks(train, test)
    explicit = permuted_tasks(train, test, num_tasks=5, seed=0)
    assert default.num_tasks == 5 and len(default.test) == 5
    assert all(torch.equal(a.x, b.x) for a, b in zip(default.train, explicit.train, strict=True))
    assert not all(torch.equal(a.x, b.x) for a, b in zip(default.train, permuted_tasks(train, test, 5, 1).train))


def _idx(body: bytes, shape: tuple[int, ...], code: int = 0x08) -> bytes:
    """IDX bytes written by hand: 0, 0, type code, ndim, then each size as 4 big-endian bytes."""
    return bytes([0, 0, code, len(shape)]) + b"".join(s.to_bytes(4, "big") for s in shape) + body


def test_parse_idx_by_hand() -> None:
    assert parse_idx(_idx(bytes([1, 2, 3, 4, 5, 6]), (3, 2))).tolist() == [[1, 2], [3, 4], [5, 6]]
    # 0x0B: big-endian int16; 0x0102 = 258, 0xFFFF = -1
    assert parse_idx(_idx(bytes([1, 2, 255, 255]), (2,), code=0x0B)).tolist() == [258, -1]
    # a zero-size array: the header is the whole file, and its sizes are read as 4 full bytes each
    # (2**24 needs the first byte of its field)
    assert parse_idx(_idx(b"", (0,))).shape == (0,)
    assert parse_idx(_idx(b"", (2**24, 0))).shape == (2**24, 0)
    assert parse_idx(_idx(b"", (0, 2**24))).shape == (0, 2**24)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (bytes([1, 0, 8, 1, 0, 0, 0, 1, 7]), "IDX data: bad magic number 01000801"),  # first byte wrong
        (bytes([0, 1, 8, 1, 0, 0, 0, 1, 7]), "IDX data: bad magic number 00010801"),  # second byte wrong
        (bytes([0, 0, 8]), "IDX data: bad magic number 000008"),  # too short for a magic number
        (bytes([0, 0, 8, 1]), "IDX data: truncated header"),  # a magic number, no sizes
        (bytes([0, 0, 8, 2, 0, 0, 0, 1]), "IDX data: truncated header"),
        (bytes([0, 0, 7, 1, 0, 0, 0, 1, 7]), "IDX data: unknown data type 0x07"),  # no such type
        (bytes([0, 0, 8, 0]), "IDX data: unknown data type 0x08 or zero dimensions"),  # ndim 0
    ],
)
def test_parse_idx_refuses_bad_headers(raw: bytes, message: str) -> None:
    with pytest.raises(IDXError, match=f"^{message}"):
        parse_idx(raw)


# -- reading loops end ----------------------------------------------------------------------------
# Every block reader stops at the end of its input and returns all of it. Each read runs in a
# watchdog thread, so a reader that never stops (a wrong end-of-file sentinel, a file opened in text
# mode against a bytes sentinel) fails in seconds instead of hanging the suite. Reading 10 KiB takes
# microseconds; 20 s only allows for a badly overloaded machine.
WATCHDOG_S = 20.0
PAYLOAD = bytes(range(256)) * 40  # 10 KiB, hand-made


def _finishes(fn: Callable[[], Any]) -> Any:
    """`fn()`'s result, failing the test when it does not return within WATCHDOG_S."""
    out: list[Any] = []
    worker = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    worker.start()
    worker.join(WATCHDOG_S)
    assert not worker.is_alive(), f"did not finish within {WATCHDOG_S} s (an endless read loop?)"
    assert out, "raised instead of returning (see the thread's traceback above)"
    return out[0]


@pytest.mark.parametrize("gz", [False, True])
def test_content_blocks_end_and_return_every_byte(tmp_path: Path, gz: bool) -> None:
    path = tmp_path / "f"
    path.write_bytes(gzip.compress(PAYLOAD) if gz else PAYLOAD)
    blocks = _finishes(lambda: list(content_blocks(path, size=1000)))
    assert b"".join(blocks) == PAYLOAD and len(blocks) == 11  # ten full blocks of 1000, one of 240
    expected = hashlib.sha256(PAYLOAD).hexdigest()  # independent: hashlib over the plain bytes
    assert _finishes(lambda: Checksum("sha256", expected, content=True).of_file(path)) == expected
    whole = hashlib.sha256(path.read_bytes()).hexdigest()  # the file's own bytes, gzip or not
    assert _finishes(lambda: Checksum("sha256", whole).of_file(path)) == whole


class _Once(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Length", str(len(PAYLOAD)))
        self.end_headers()
        self.wfile.write(PAYLOAD)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def url() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Once)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/f"
    httpd.shutdown()
    httpd.server_close()


def test_download_ends_and_writes_every_byte(url: str, tmp_path: Path) -> None:
    dest = tmp_path / "f"
    checksum = Checksum("sha256", hashlib.sha256(PAYLOAD).hexdigest())
    assert _finishes(lambda: download(url, dest, checksum, timeout=5)) == dest
    assert dest.read_bytes() == PAYLOAD
