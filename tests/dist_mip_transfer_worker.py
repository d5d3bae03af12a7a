"""`hypernet run ...` in float64 for the distributed tests of `mip-ablation` and
`split-mnist-transfer`: run as one process (`python tests/dist_mip_transfer_worker.py ...`) or as N
under torchrun's launcher (`hypernet.train.distributed.launch`), each process then joining the run
as `torchrun` would start it.

`python dist_mip_transfer_worker.py [--rows FILE] -- ARGS...` runs `hypernet ARGS` with float64 as
the default dtype (so models are built in float64) and MIP's MNIST images cast to float64 (the
transfer experiment casts them to its learners' dtype itself), so that one process and N processes
differ only by summation order.
`--rows FILE`: every process appends `[rank, rows, weight]` of each part of a batch it trains on
(`mip_tasks.samples`, weight 1; the few-shot phases' `harness.shard`) to `FILE.RANK`.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import torch


def main() -> int:
    argv = sys.argv[1:]
    split = argv.index("--")
    own, args = argv[:split], argv[split + 1 :]
    rows = Path(own[own.index("--rows") + 1]) if "--rows" in own else None
    torch.set_default_dtype(torch.float64)

    from hypernet.cli import main as cli_main
    from hypernet.experiments import mip_tasks, transfer

    def record(count: int, weight: float) -> None:
        if rows is not None:
            rank = int(os.environ.get("RANK", "0"))
            with open(f"{rows}.{rank}", "a", encoding="utf-8") as fh:
                fh.write(json.dumps([rank, count, weight]) + "\n")

    half_size, samples, shard = (
        mip_tasks.half_size,
        mip_tasks.samples,
        transfer.shard,
    )

    def recording_samples(x: torch.Tensor, dim: int = 0) -> torch.Tensor:
        part = samples(x, dim)
        record(int(part.shape[dim]), 1.0)
        return part

    def recording_shard(*tensors: torch.Tensor) -> Any:
        parts, weight = shard(*tensors)
        record(int(parts[0].shape[0]), weight)
        return parts, weight

    mip_tasks.half_size = lambda images: half_size(images).double()  # type: ignore[assignment]
    mip_tasks.samples = recording_samples  # type: ignore[assignment]
    transfer.shard = recording_shard  # type: ignore[assignment]
    return cli_main(args)


if __name__ == "__main__":
    sys.exit(main())
