"""Generated low-rank adapters on a GPT-style stack at B = 256: peak memory and time of forward +
backward, factored (`x W0^T + (x V) U^T`, what `HyperModel` does for `LowRankHyperNetwork`) against
materialising the full per-sample weights (`target(x, hypernetwork(cond))`, `[B, P]`), with the
plain model's own forward + backward as the baseline; all in one run.

Target: examples/lowrank_gpt.py's TinyGPT (d = 128, 2 blocks, 4 heads, 32 tokens, vocabulary 64);
all six projections of each block (q, k, v, out, fc, proj) get rank-4 adapters, one task per sample
(per-sample) or one for the batch (per-task). Peak memory: on CUDA the allocator's peak
(`max_memory_allocated`), on CPU the growth of the resident set during the step (benchmarks/common.py),
starting with no gradient held, so the step's gradients count.

    python benchmarks/lowrank_memory.py [--threads 2] [--device cpu|cuda] [--json docs/benchmarks/lowrank_memory.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from common import exec_with_malloc_trim, interleaved_medians, peak_bytes_cuda, peak_growth

B, T, VOCAB, D, DEPTH, HEADS, RANK, TASKS = 256, 32, 64, 128, 2, 4, 4, 8


def _example() -> Any:
    path = Path(__file__).resolve().parents[1] / "examples" / "lowrank_gpt.py"
    spec = importlib.util.spec_from_file_location("lowrank_gpt", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["lowrank_gpt"] = module
    spec.loader.exec_module(module)
    return module


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json")
    args = ap.parse_args()
    if args.device == "cpu":
        exec_with_malloc_trim()
    torch.set_num_threads(args.threads)
    load_before = [round(v, 2) for v in os.getloadavg()]
    ex = _example()
    torch.manual_seed(0)
    device = torch.device(args.device)
    gpt = ex.TinyGPT(vocab=VOCAB, d=D, depth=DEPTH, heads=HEADS, context=T).to(device)
    model = ex.adapted(gpt, TASKS, rank=RANK, hidden=(32,)).to(device)
    ids = torch.randint(0, VOCAB, (B, T), device=device)
    y = torch.randint(0, VOCAB, (B, T), device=device)
    tasks = torch.randint(0, TASKS, (B,), device=device)

    def loss(out: Tensor) -> Tensor:
        return F.cross_entropy(out.flatten(0, 1), y.flatten())

    def step(forward: Callable[[], Tensor], params: list[torch.nn.Parameter]) -> Callable[[], None]:
        def run() -> None:
            for p in params:
                p.grad = None
            loss(forward()).backward()

        return run

    trainable = model.trainable_parameters()
    paths = {
        "plain model": step(lambda: gpt(ids), list(gpt.parameters())),
        "factored, per-sample": step(lambda: model(ids, tasks), trainable),
        "materialised, per-sample": step(
            lambda: model.target(ids, model.hypernetwork(model.condition(ids, tasks))), trainable
        ),
        "factored, per-task": step(lambda: model(ids, tasks[0]), trainable),
    }
    times = interleaved_medians(paths, repeat=args.repeat)
    measure = peak_bytes_cuda if device.type == "cuda" else peak_growth
    peaks = {}
    for name, fn in paths.items():
        for p in [*gpt.parameters(), *trainable]:  # the step's own gradients count in its peak
            p.grad = None
        peaks[name] = measure(fn)
    P = model.target.spec.numel
    out = {
        "device": args.device,
        "threads": args.threads,
        "load_before": load_before,
        "load_after": [round(v, 2) for v in os.getloadavg()],
        "B": B,
        "tokens": T,
        "d": D,
        "rank": RANK,
        "generated_weights": P,
        "generated_per_condition": model.hypernetwork.num_generated,
        "seconds": times,
        "peak_bytes": peaks,
        "peak_measure": "cuda max_memory_allocated" if device.type == "cuda" else "resident-set growth",
    }
    base_t, base_m = times["plain model"], peaks["plain model"]
    print(f"device {args.device}, threads {args.threads}; load average {out['load_before']} -> {out['load_after']}")
    print(f"TinyGPT d={D}, {DEPTH} blocks, {T} tokens, B={B}; P = {P:,} generated weights, rank {RANK}")
    print("| path | ms | time / plain | peak MB | peak / plain |")
    print("|---|---:|---:|---:|---:|")
    for name in paths:
        peak = peaks[name]
        ratio = f"{peak / base_m:.2f}x" if peak is not None and base_m else "n/a"
        mb = f"{peak / 2**20:.0f}" if peak is not None else "n/a"
        print(f"| {name} | {times[name] * 1e3:.1f} | {times[name] / base_t:.2f}x | {mb} | {ratio} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)


if __name__ == "__main__":
    main()
