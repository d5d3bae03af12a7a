"""The README's table of hypernetwork designs: inputs, outputs and sizes for one reference target
(a 784-256-256-10 MLP, P = 269,322), condition of 32 features, hidden widths (128, 128).

    python benchmarks/designs.py
"""

from __future__ import annotations

import torch
from torch import nn

import hypernet as hn


def main() -> None:
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
    target = hn.TargetNetwork(module)
    spec = target.spec
    designs: list[tuple[str, str, hn.HyperNetwork]] = [
        ("MLPHyperNetwork", "all at once", hn.MLPHyperNetwork(32, spec)),
        ("ChunkedHyperNetwork", "chunks of 4,096", hn.ChunkedHyperNetwork(32, spec, chunk_size=4096, chunk_dim=16)),
        ("LayerwiseHyperNetwork", "one head per tensor", hn.LayerwiseHyperNetwork(32, spec, hidden=(128,))),
        ("LowRankHyperNetwork", "W0 + U V^T, rank 8", hn.LowRankHyperNetwork(32, spec, rank=8)),
        ("MLP, MIP", "theta0 + delta", hn.MLPHyperNetwork(32, spec, parametrization="mip")),
    ]
    print(f"target: 784-256-256-10 MLP, P = {spec.numel:,}; condition: [B, 32]")
    print("| design | output | input -> output | trainable parameters | numbers generated |")
    print("|---|---|---|---:|---:|")
    for name, output, hyper in designs:
        with torch.no_grad():
            out = hyper(torch.rand(4, 32))
        print(
            f"| `{name}` | {output} | `[B, 32] -> {list(out.shape[1:])}` | {hyper.num_parameters():,} | "
            f"{hyper.num_generated:,} |"
        )


if __name__ == "__main__":
    main()
