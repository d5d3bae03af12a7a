"""The README's table of hypernetwork designs: inputs, outputs and sizes for one reference target
(a 784-256-256-10 MLP, P = 269,322), condition of 32 features, hidden widths (128, 128).

    python benchmarks/designs.py [--json docs/benchmarks/designs.json]

Prints the table as the README shows it; `--json` also writes its numbers (`make bench` does), which
`tests/test_readme_numbers.py` compares with the README.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

import hypernet as hn


def rows() -> tuple[int, list[dict[str, Any]]]:
    """`(P, one record per design)`: name, output, generated shape, trainable and generated numbers."""
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
    spec = hn.TargetNetwork(module).spec
    designs: list[tuple[str, str, hn.HyperNetwork]] = [
        ("MLPHyperNetwork", "all at once", hn.MLPHyperNetwork(32, spec)),
        ("ChunkedHyperNetwork", "chunks of 4,096", hn.ChunkedHyperNetwork(32, spec, chunk_size=4096, chunk_dim=16)),
        ("LayerwiseHyperNetwork", "one head per tensor", hn.LayerwiseHyperNetwork(32, spec, hidden=(128,))),
        ("LowRankHyperNetwork", "W0 + U V^T, rank 8", hn.LowRankHyperNetwork(32, spec, rank=8)),
        ("MLP, MIP", "theta0 + delta", hn.MLPHyperNetwork(32, spec, parametrization="mip")),
    ]
    out = []
    for name, output, hyper in designs:
        with torch.no_grad():
            shape = list(hyper(torch.rand(4, 32)).shape[1:])
        out.append(
            {
                "design": name,
                "output": output,
                "cond_features": 32,
                "weights_shape": shape,
                "trainable_parameters": hyper.num_parameters(),
                "numbers_generated": hyper.num_generated,
            }
        )
    return spec.numel, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--json", help="also write the table's numbers to this file")
    args = ap.parse_args()
    numel, table = rows()
    print(f"target: 784-256-256-10 MLP, P = {numel:,}; condition: [B, 32]")
    print("| design | output | input -> output | trainable parameters | numbers generated |")
    print("|---|---|---|---:|---:|")
    for r in table:
        print(
            f"| `{r['design']}` | {r['output']} | `[B, {r['cond_features']}] -> {r['weights_shape']}` | "
            f"{r['trainable_parameters']:,} | {r['numbers_generated']:,} |"
        )
    if args.json:
        record = {"target": "784-256-256-10 MLP", "target_parameters": numel, "designs": table}
        Path(args.json).write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
