"""`hypernet run ...` in float64 for the distributed tests of the continual harness: run as one
process (`python tests/dist_continual_worker.py ...`) or as N under torchrun's launcher
(`hypernet.train.distributed.launch`), each process then joining the run as `torchrun` would start it.

`python dist_continual_worker.py [--rows FILE] [--fail-at N] -- ARGS...` runs `hypernet ARGS` with
float64 as the default dtype and every learner converted to float64 before it trains (the harness
casts the float32 images to the learner's dtype), so that one process and N processes differ only
by summation order.
`--rows FILE`: every process appends `[rank, rows, weight]` of each batch part it trains on to
`FILE.RANK`. `--fail-at N`: process 1 raises at its N-th batch (after N-1 steps of the run).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch


def main() -> int:
    argv = sys.argv[1:]
    split = argv.index("--")
    own, args = argv[:split], argv[split + 1 :]
    rows = Path(own[own.index("--rows") + 1]) if "--rows" in own else None
    fail_at = int(own[own.index("--fail-at") + 1]) if "--fail-at" in own else 0
    torch.set_default_dtype(torch.float64)

    from hypernet.cli import main as cli_main
    from hypernet.experiments import harness

    shard = harness.shard
    calls = [0]

    def recording_shard(*tensors: torch.Tensor) -> tuple[list[torch.Tensor], float]:
        rank = int(os.environ.get("RANK", "0"))
        calls[0] += 1
        if fail_at and calls[0] == fail_at and rank == 1:
            raise RuntimeError(f"injected failure at batch {calls[0]}")
        parts, weight = shard(*tensors)
        if rows is not None:
            with open(f"{rows}.{rank}", "a", encoding="utf-8") as fh:
                fh.write(json.dumps([rank, int(parts[0].shape[0]), weight]) + "\n")
        return parts, weight

    harness.shard = recording_shard  # type: ignore[assignment]
    train_learner = harness.train_learner
    harness.train_learner = lambda name, learner, *rest: train_learner(name, learner.double(), *rest)
    return cli_main(args)


if __name__ == "__main__":
    sys.exit(main())
