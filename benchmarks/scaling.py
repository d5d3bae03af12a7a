"""Measured points for the cost model of docs/scaling.md: generation against target, per design,
one weight set per batch (shared) against one per sample.

Target 784-256-256-10 MLP (P = 269,322), condition of 8 numbers, hypernetwork trunk 8 -> 64, batch
B = 128. For each design (MLP head, chunks of 4,096, rank-8 factors) and mode, it times forward +
backward of the generation alone (`hypernetwork(cond)`) and of the target alone (`target(x, w)`,
w given), and measures the peak growth of the resident set in a full step; beside them, the
model's multiply-add counts (FLOPs = 2 x MACs) and bytes. Round-robin medians, 2 threads.

    python benchmarks/scaling.py [--json docs/benchmarks/scaling.json]
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

import hypernet as hn

from common import exec_with_malloc_trim, interleaved_medians, peak_growth

SIZES = (784, 256, 256, 10)
COND, WIDTH, B = 8, 64, 128


def target_macs(sizes: tuple[int, ...]) -> int:
    """Multiply-adds of one sample's forward: sum over layers of out x in."""
    return sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))


def generation_macs(hyper: nn.Module) -> int:
    """Multiply-adds of one condition's generation: every Linear's in x out, times the rows it runs
    on (1, or the number of chunks for the chunked design), plus U V^T for low-rank deltas."""
    rows = getattr(hyper, "num_chunks", 1)
    macs = sum(m.in_features * m.out_features for m in hyper.modules() if isinstance(m, nn.Linear)) * rows
    for b in getattr(hyper, "blocks", ()):
        macs += b.rows * b.cols * b.rank  # forming U V^T, as the model does today
    return macs


def designs(spec: hn.ParamSpec) -> dict[str, nn.Module]:
    return {
        "mlp": hn.MLPHyperNetwork(COND, spec, hidden=(WIDTH,)),
        "chunked": hn.ChunkedHyperNetwork(COND, spec, chunk_size=4096, chunk_dim=16, hidden=(WIDTH,)),
        "lowrank": hn.LowRankHyperNetwork(COND, spec, rank=8, hidden=(WIDTH,)),
    }


def fwd_bwd(fn: Callable[[], Tensor], params: list[Tensor]) -> Callable[[], None]:
    def run() -> None:
        for p in params:
            p.grad = None
        fn().square().mean().backward()

    return run


def _peak_from_no_grads(step: Callable[[], None], params: list[Tensor]) -> int | None:
    """Peak growth of one step that starts with no gradient held (its gradients count)."""
    for p in params:
        p.grad = None
    return peak_growth(step)


def measure(repeat: int) -> list[dict[str, Any]]:
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for i in range(len(SIZES) - 1):
        layers += [nn.Linear(SIZES[i], SIZES[i + 1]), nn.ReLU()]
    target = hn.TargetNetwork(nn.Sequential(*layers[:-1]))
    P = target.spec.numel
    x = torch.randn(B, SIZES[0])
    rows = []
    for name, hyper in designs(target.spec).items():
        params = list(hyper.parameters())
        for mode, n_cond in (("shared", 1), ("per-sample", B)):
            cond = torch.randn(COND) if mode == "shared" else torch.randn(B, COND)
            w = hyper(cond).detach().requires_grad_(True)
            paths = {
                "generation": fwd_bwd(lambda h=hyper, c=cond: h(c), params),
                "target": fwd_bwd(lambda w=w: target(x, w), [w]),
                "step": fwd_bwd(lambda h=hyper, c=cond: target(x, h(c)), params),
            }
            times = interleaved_medians(paths, repeat=repeat)
            gen, tgt = generation_macs(hyper), target_macs(SIZES)
            rows.append(
                {
                    "design": name,
                    "mode": mode,
                    "B": B,
                    "P": P,
                    "generated_per_condition": int(getattr(hyper, "num_generated", P)),
                    "hypernetwork_parameters": sum(p.numel() for p in params),
                    "macs_generation": gen * n_cond,
                    "macs_target": tgt * B,
                    "predicted_generation_over_target": gen * n_cond / (tgt * B),
                    "seconds": times,
                    "measured_generation_over_target": times["generation"] / times["target"],
                    "weights_bytes": 4 * P * n_cond,
                    "step_peak_growth_bytes": _peak_from_no_grads(paths["step"], params),
                }
            )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json")
    args = ap.parse_args()
    exec_with_malloc_trim()
    torch.set_num_threads(args.threads)
    load_before = [round(v, 2) for v in os.getloadavg()]
    rows = measure(args.repeat)
    out = {"threads": args.threads, "load_before": load_before, "load_after": [round(v, 2) for v in os.getloadavg()]}
    out["rows"] = rows
    print(f"threads {args.threads}; load average {out['load_before']} before, {out['load_after']} after")
    print("| design | mode | generated / condition | hypernet params | gen/target MACs | gen/target time | "
          "gen ms | target ms | step ms | weights MB | step peak MB |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        s = r["seconds"]
        peak = r["step_peak_growth_bytes"]
        print(
            f"| {r['design']} | {r['mode']} | {r['generated_per_condition']:,} | {r['hypernetwork_parameters']:,} | "
            f"{r['predicted_generation_over_target']:.2f} | {r['measured_generation_over_target']:.2f} | "
            f"{s['generation'] * 1e3:.1f} | {s['target'] * 1e3:.1f} | {s['step'] * 1e3:.1f} | "
            f"{r['weights_bytes'] / 2**20:.1f} | {'n/a' if peak is None else f'{peak / 2**20:.0f}'} |"
        )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)


if __name__ == "__main__":
    main()
