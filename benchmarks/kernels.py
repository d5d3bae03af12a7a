"""Kernel benchmarks: time and peak memory of `mlp_ntk` and `hyper_ntk` (N in {1000, 4000}, d = 784,
depth 3, float64) and of `empirical_ntk` (trace) for a 784-512-512-10 MLP on N = 256 (float32).
Where neural-tangents (JAX, CPU) is importable, the same run times `stax` `kernel_fn` and
`empirical_ntk_fn` on the same inputs and prints our time as a ratio to theirs, and the max
absolute difference of the values.

Each measurement runs in a fresh subprocess so that its peak resident memory (ru_maxrss) is its own.

    python benchmarks/kernels.py [--sizes 1000,4000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

D, DEPTH, WV, BV = 784, 3, 2.0, 0.05


def _data(n: int, d: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float64)


def _ours(case: str, n: int) -> tuple[float, np.ndarray]:
    from torch import nn

    from hypernet import kernels

    if case == "mlp_ntk":
        x = torch.from_numpy(_data(n, D, 0))
        start = time.perf_counter()
        k = kernels.mlp_ntk(x, depth=DEPTH, weight_var=WV, bias_var=BV)
        return time.perf_counter() - start, k.numpy()
    if case == "hyper_ntk":
        x, z = torch.from_numpy(_data(n, D, 0)), torch.from_numpy(_data(n, 16, 1))
        start = time.perf_counter()
        k = kernels.hyper_ntk(x, z, f_depth=DEPTH, g_depth=DEPTH, weight_var=WV, bias_var=BV)
        return time.perf_counter() - start, k.numpy()
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(D, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))
    fn, params = kernels.functional(net)
    x = torch.from_numpy(_data(n, D, 0)).float()
    start = time.perf_counter()
    k = kernels.empirical_ntk(fn, params, x, output="trace")
    return time.perf_counter() - start, k.numpy()


def _theirs(case: str, n: int) -> tuple[float, np.ndarray] | None:
    try:
        import jax
        import neural_tangents as nt
        from neural_tangents import stax
    except ImportError:
        return None
    jax.config.update("jax_enable_x64", True)
    x = _data(n, D, 0)
    w_std, b_std = WV**0.5, BV**0.5
    if case == "mlp_ntk":
        layers = []
        for _ in range(DEPTH):
            layers += [stax.Dense(512, W_std=w_std, b_std=b_std), stax.Relu()]
        _, _, kernel_fn = stax.serial(*layers, stax.Dense(1, W_std=w_std, b_std=b_std))
        batched = nt.batch(kernel_fn, batch_size=min(n, 1000))
        start = time.perf_counter()
        k = np.asarray(batched(x, None, "ntk"))
        return time.perf_counter() - start, k
    if case == "empirical_ntk":
        init_fn, apply_fn, _ = stax.serial(stax.Dense(512), stax.Relu(), stax.Dense(512), stax.Relu(), stax.Dense(10))
        _, params = init_fn(jax.random.PRNGKey(0), (1, D))
        ntk_fn = jax.jit(
            nt.empirical_ntk_fn(
                apply_fn, trace_axes=(-1,), vmap_axes=0, implementation=nt.NtkImplementation.NTK_VECTOR_PRODUCTS
            )
        )
        x32 = x.astype(np.float32)
        ntk_fn(x32[:2], None, params)  # compile outside the timing
        start = time.perf_counter()
        k = np.asarray(ntk_fn(x32, None, params))
        return time.perf_counter() - start, k  # different random weights: compare time only
    return None  # neural-tangents has no hypernetwork kernel


def _one(case: str, n: int, impl: str) -> dict[str, Any]:
    result = _ours(case, n) if impl == "ours" else _theirs(case, n)
    if result is None:
        return {"available": False}
    seconds, k = result
    np.save(f"/tmp/hypernet-bench-{impl}-{case}-{n}.npy", k)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    return {"available": True, "seconds": seconds, "peak_rss_bytes": peak}


def _run_child(case: str, n: int, impl: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, "--child", case, str(n), impl], capture_output=True, text=True)
    if out.returncode != 0:
        return {"available": False, "error": out.stderr.strip().splitlines()[-1] if out.stderr else "failed"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", default="1000,4000")
    ap.add_argument("--json")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        case, n, impl = args.child
        print(json.dumps(_one(case, int(n), impl)))
        return
    cases = [("mlp_ntk", int(n)) for n in args.sizes.split(",")] + [
        ("hyper_ntk", int(n)) for n in args.sizes.split(",")
    ]
    cases.append(("empirical_ntk", 256))
    rows = []
    print(f"threads {torch.get_num_threads()}; d = {D}, depth {DEPTH}, weight_var {WV}, bias_var {BV}")
    print(
        f"{'kernel':<14} {'N':>5} {'ours s':>8} {'peak MB':>8} {'NT s':>8} {'NT peak MB':>11} {'NT/ours':>8} "
        f"{'max |diff|':>11}"
    )
    for case, n in cases:
        ours = _run_child(case, n, "ours")
        theirs = _run_child(case, n, "nt")
        row = {"kernel": case, "N": n, "ours": ours, "neural_tangents": theirs}
        ratio = diff = "n/a"
        nt_s = nt_mb = "n/a"
        if theirs.get("available"):
            nt_s, nt_mb = f"{theirs['seconds']:.3f}", f"{theirs['peak_rss_bytes'] / 2**20:.0f}"
            ratio = f"{theirs['seconds'] / ours['seconds']:.2f}x"
            if case != "empirical_ntk":
                a = np.load(f"/tmp/hypernet-bench-ours-{case}-{n}.npy")
                b = np.load(f"/tmp/hypernet-bench-nt-{case}-{n}.npy")
                row["max_abs_diff"] = float(np.abs(a - b).max())
                diff = f"{row['max_abs_diff']:.2e}"
        rows.append(row)
        print(
            f"{case:<14} {n:>5} {ours['seconds']:>8.3f} {ours['peak_rss_bytes'] / 2**20:>8.0f} {nt_s:>8} {nt_mb:>11} "
            f"{ratio:>8} {diff:>11}"
        )
    for f in Path("/tmp").glob("hypernet-bench-*.npy"):
        f.unlink()
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
