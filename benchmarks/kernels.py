"""Kernel benchmarks: time and peak memory of `mlp_ntk` and `hyper_ntk` (N in {1000, 4000}, d = 784,
depth 3, float64) and of `empirical_ntk` (trace) for a 784-512-512-10 MLP on N = 256 (float32).
Where neural-tangents (JAX, CPU) is importable, the same run times `stax` `kernel_fn` and
`empirical_ntk_fn` on the same inputs and prints our time as a ratio to theirs, and the max
absolute difference of the values.

Each measurement runs in a fresh subprocess so that its peak resident memory (VmHWM) is its own.
The empirical NTK is of an NTK-parametrized 784-512-512-10 MLP whose weights are handed to
neural-tangents, so values are compared there too (float32). Differences are printed apart for the
diagonal: for identical inputs our analytic kernels use the exact identical-input rule, while
neural-tangents evaluates arccos at a correlation rounded to 1 - 1e-16 (off by up to ~1e-7).

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
WEIGHTS = "/tmp/hypernet-bench-weights.npz"
USED: dict[str, str] = {}  # which neural-tangents implementation ran, for the record


def _data(n: int, d: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float64)


def _ours(case: str, n: int) -> tuple[float, np.ndarray]:
    from hypernet import kernels
    from hypernet import layers as hn_layers

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
    net = kernels.MLPDescription(D, 512, 2, out_features=10, weight_var=WV, bias_var=BV).module()
    # hand the same weights to neural-tangents (stax Dense stores W as [in, out])
    linears = [m for m in net if isinstance(m, hn_layers.NTKLinear)]
    np.savez(WEIGHTS, *[t for m in linears for t in (m.weight.detach().T.numpy(), m.bias.detach().numpy())])
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
        layers = [
            stax.Dense(512, W_std=w_std, b_std=b_std),
            stax.Relu(),
            stax.Dense(512, W_std=w_std, b_std=b_std),
            stax.Relu(),
            stax.Dense(10, W_std=w_std, b_std=b_std),
        ]
        _, apply_fn, _ = stax.serial(*layers)
        saved = np.load(WEIGHTS)
        arrays = [saved[f"arr_{i}"] for i in range(len(saved.files))]
        params = [(arrays[0], arrays[1]), (), (arrays[2], arrays[3]), (), (arrays[4], arrays[5])]
        x32 = x.astype(np.float32)
        # neural-tangents' fastest implementation first; some JAX versions break some of them
        for impl in ("STRUCTURED_DERIVATIVES", "NTK_VECTOR_PRODUCTS", "JACOBIAN_CONTRACTION"):
            ntk_fn = jax.jit(
                nt.empirical_ntk_fn(
                    apply_fn, trace_axes=(-1,), vmap_axes=0, implementation=getattr(nt.NtkImplementation, impl)
                )
            )
            try:
                ntk_fn(x32[:2], None, params)  # compile outside the timing
            except Exception as exc:  # noqa: BLE001 - any failure means: try the next implementation
                print(f"neural-tangents {impl} failed: {type(exc).__name__}", file=sys.stderr)
                continue
            start = time.perf_counter()
            k = np.asarray(ntk_fn(x32, None, params))
            USED["implementation"] = impl
            return time.perf_counter() - start, k
        return None
    return None  # neural-tangents has no hypernetwork kernel


def _peak_rss() -> int:
    """Peak resident memory of this process in bytes. VmHWM, not ru_maxrss: the latter survives
    exec, so a child would report its parent's peak when that was higher."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def _one(case: str, n: int, impl: str) -> dict[str, Any]:
    result = _ours(case, n) if impl == "ours" else _theirs(case, n)
    if result is None:
        return {"available": False}
    seconds, k = result
    np.save(f"/tmp/hypernet-bench-{impl}-{case}-{n}.npy", k)
    peak = _peak_rss()
    return {"available": True, "seconds": seconds, "peak_rss_bytes": peak, **USED}


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
        f"{'max |diff| off-diag/diag':>25}"
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
            a = np.load(f"/tmp/hypernet-bench-ours-{case}-{n}.npy")
            b = np.load(f"/tmp/hypernet-bench-nt-{case}-{n}.npy")
            if case == "empirical_ntk":
                a = a / 10  # neural-tangents' trace_axes averages over the 10 outputs; ours sums them
            off = ~np.eye(n, dtype=bool)
            row["max_abs_diff_offdiag"] = float(np.abs(a - b)[off].max())
            row["max_abs_diff_diag"] = float(np.abs(np.diag(a) - np.diag(b)).max())
            row["max_abs_value"] = float(np.abs(a).max())
            diff = f"{row['max_abs_diff_offdiag']:.1e}/{row['max_abs_diff_diag']:.1e}"
        rows.append(row)
        print(
            f"{case:<14} {n:>5} {ours['seconds']:>8.3f} {ours['peak_rss_bytes'] / 2**20:>8.0f} {nt_s:>8} {nt_mb:>11} "
            f"{ratio:>8} {diff:>25}"
        )
    for f in Path("/tmp").glob("hypernet-bench-*.npy"):
        f.unlink()
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
