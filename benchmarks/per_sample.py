"""Per-sample weights through a 784-256-256-10 MLP: forward + backward of `TargetNetwork` (batched
engine and vmap engine) against a Python loop over samples and a hand-written `torch.bmm` MLP,
all measured in this run. Prints ratios (higher = the library path is faster) and memory held for
backward.

    python benchmarks/per_sample.py [--threads N] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

import hypernet as hn

from common import interleaved_medians, median_time, saved_bytes

SIZES = (784, 256, 256, 10)


def make_target(device: str) -> hn.TargetNetwork:
    layers: list[nn.Module] = []
    for i in range(len(SIZES) - 1):
        layers.append(nn.Linear(SIZES[i], SIZES[i + 1]))
        if i < len(SIZES) - 2:
            layers.append(nn.ReLU())
    return hn.TargetNetwork(nn.Sequential(*layers).to(device))


def bmm_mlp(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Hand-written reference: the same MLP with `torch.baddbmm`, weights `w: [B, P]`."""
    B, h = x.shape[0], x.unsqueeze(1)
    sizes = []
    for i in range(len(SIZES) - 1):
        sizes += [SIZES[i] * SIZES[i + 1], SIZES[i + 1]]
    parts = w.split(sizes, dim=1)  # split, not slicing: its backward is one concatenation
    for i in range(len(SIZES) - 1):
        W = parts[2 * i].view(B, SIZES[i + 1], SIZES[i])
        b = parts[2 * i + 1].view(B, 1, SIZES[i + 1])
        h = torch.baddbmm(b, h, W.transpose(1, 2))
        if i < len(SIZES) - 2:
            h = F.relu(h)
    return h.squeeze(1)


def measure(target: hn.TargetNetwork, vmap_target: hn.TargetNetwork, B: int, device: str) -> dict[str, float]:
    """Times (s) of forward + backward for each path, and bytes saved for backward, at batch B."""
    P = target.spec.numel
    x = torch.randn(B, 784, device=device)
    w = (target.initial_weights().to(device) + 0.01 * torch.randn(B, P, device=device)).requires_grad_(True)
    forwards: dict[str, Callable[[], torch.Tensor]] = {
        "batched": lambda: target(x, w),
        "vmap": lambda: vmap_target(x, w),
        "bmm": lambda: bmm_mlp(x, w),
        "loop": lambda: torch.cat([target(x[i : i + 1], w[i]) for i in range(B)]),
    }
    # same numbers from every path (a sanity check, not part of the timing)
    assert torch.allclose(forwards["batched"](), bmm_mlp(x, w), atol=1e-4)

    def train_step(forward: Callable[[], torch.Tensor]) -> Callable[[], None]:
        def run() -> None:
            w.grad = None
            forward().square().mean().backward()

        return run

    row: dict[str, float] = {"B": B}
    steps = {name: train_step(forward) for name, forward in forwards.items()}
    loop_s = median_time(steps.pop("loop"), repeat=3, warmup=1)  # seconds at B = 256: kept out of the rounds
    for name, seconds in interleaved_medians(steps, repeat=15).items():
        row[name + "_s"] = seconds
    row["loop_s"] = loop_s
    row["saved_bytes_batched"] = saved_bytes(forwards["batched"])
    row["saved_bytes_bmm"] = saved_bytes(forwards["bmm"])
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batches", default="1,32,256")
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    target = make_target(args.device)
    vmap_target = hn.TargetNetwork(target.module, engine="vmap")
    rows = []
    threads = torch.get_num_threads()
    print(f"target 784-256-256-10 MLP, P = {target.spec.numel:,}; device {args.device}, threads {threads}")
    header = f"{'B':>5} {'batched ms':>11} {'vmap ms':>9} {'bmm ms':>8} {'loop ms':>9} {'loop/batched':>13} "
    header += f"{'bmm/batched':>12} {'vmap/batched':>13} {'saved MB batched':>17} {'saved MB bmm':>13}"
    print(header)
    for B in [int(b) for b in args.batches.split(",")]:
        row = measure(target, vmap_target, B, args.device)
        rows.append(row)
        t = {k: row[k + "_s"] for k in ("batched", "vmap", "bmm", "loop")}
        print(
            f"{B:>5} {t['batched'] * 1e3:>11.3f} {t['vmap'] * 1e3:>9.3f} {t['bmm'] * 1e3:>8.3f} "
            f"{t['loop'] * 1e3:>9.3f} {t['loop'] / t['batched']:>12.1f}x {t['bmm'] / t['batched']:>11.2f}x "
            f"{t['vmap'] / t['batched']:>12.2f}x {row['saved_bytes_batched'] / 2**20:>17.2f} "
            f"{row['saved_bytes_bmm'] / 2**20:>13.2f}"
        )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)


if __name__ == "__main__":
    main()
