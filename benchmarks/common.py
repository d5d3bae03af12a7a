"""Helpers shared by the benchmarks: robust timing and memory held for backward."""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable, Mapping

import torch


def median_time(fn: Callable[[], object], repeat: int = 7, warmup: int = 2, min_time: float = 0.05) -> float:
    """Median seconds per call of `fn`, each sample looping until `min_time` has passed."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeat):
        n, start = 0, time.perf_counter()
        while True:
            fn()
            n += 1
            elapsed = time.perf_counter() - start
            if elapsed >= min_time:
                break
        samples.append(elapsed / n)
    return statistics.median(samples)


def interleaved_samples(
    fns: Mapping[str, Callable[[], object]],
    repeat: int = 7,
    min_time: float = 0.05,
    slow: set[str] | None = None,
    seed: int | None = None,
) -> dict[str, list[float]]:
    """Seconds per call of each function in each of `repeat` rounds, sampled round-robin so that a
    drifting machine (clock, other load) affects every path alike; sample `i` of every path comes
    from round `i`, so ratios can be taken round by round. With `seed`, each round visits the paths
    in an order shuffled by `random.Random(seed)` (no path always first). Paths in `slow` get one
    call per sample."""
    slow = slow or set()
    rng = random.Random(seed) if seed is not None else None
    for fn in fns.values():
        fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        order = list(fns)
        if rng is not None:
            rng.shuffle(order)
        for name in order:
            fn = fns[name]
            n, start = 0, time.perf_counter()
            while True:
                fn()
                n += 1
                elapsed = time.perf_counter() - start
                if elapsed >= min_time or name in slow:
                    break
            samples[name].append(elapsed / n)
    return samples


def interleaved_medians(
    fns: Mapping[str, Callable[[], object]], repeat: int = 7, min_time: float = 0.05, slow: set[str] | None = None
) -> dict[str, float]:
    """Median over the rounds of `interleaved_samples` (seconds per call of each function)."""
    samples = interleaved_samples(fns, repeat=repeat, min_time=min_time, slow=slow)
    return {name: statistics.median(v) for name, v in samples.items()}


def saved_bytes(fn: Callable[[], torch.Tensor]) -> int:
    """Bytes of distinct tensors autograd keeps for the backward pass of `fn()` (activation memory)."""
    seen: dict[tuple[int, int], int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        seen[(t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def peak_bytes_cuda(fn: Callable[[], object]) -> int | None:
    if not torch.cuda.is_available():
        return None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return int(torch.cuda.max_memory_allocated())


def _status_kib(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{key} not in /proc/self/status")


def peak_growth(fn: Callable[[], object]) -> int | None:
    """Bytes by which this process's resident set peaks above its level before `fn()` (Linux: the
    peak is reset through `/proc/self/clear_refs`; None elsewhere). Run under
    `MALLOC_MMAP_THRESHOLD_=65536` (see `exec_with_malloc_trim`) so that freed blocks leave the
    resident set and each call's peak is its own."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # reset VmHWM to the current resident set
    except OSError:
        return None
    before = _status_kib("VmRSS")
    fn()
    return (_status_kib("VmHWM") - before) * 1024


def exec_with_malloc_trim() -> None:
    """Restart this script with glibc serving large blocks from mmap (returned to the system on
    free), once, so that `peak_growth` measures each call alone."""
    import os
    import sys

    if os.environ.get("MALLOC_MMAP_THRESHOLD_") is None and sys.platform.startswith("linux"):
        os.environ["MALLOC_MMAP_THRESHOLD_"] = "65536"
        os.execv(sys.executable, [sys.executable, *sys.argv])
