"""`hypernet run ...` in float64 for the distributed tests of `uncertainty` and
`hyperparameter-sweep`: run as one process (`python tests/dist_float64_worker.py -- ARGS`) or as N
under torchrun's launcher (`hypernet.train.distributed.launch`), each process then joining the run
as `torchrun` would start it.

Float64 is the default dtype (every network is built in it) and scikit-learn's digits, which both
experiments' `--quick` runs read, are handed over in float64, so that one process and N processes
differ only by summation order.
`--rows FILE`: every process appends `[rank, rows]` of each part of a batch it trains on
(`RunContext.shard`), `[rank, rows, share]` of each weighted part (the conditioned steps of
`hyperparameter-sweep`), to `FILE.RANK`.
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
    torch.set_default_dtype(torch.float64)

    from hypernet.cli import main as cli_main
    from hypernet.data import Dataset, load_digits
    from hypernet.experiments import hyperparameter_sweep, uncertainty
    from hypernet.experiments.registry import RunContext

    def digits64() -> Dataset:
        data = load_digits()
        return Dataset(data.x.double(), data.y, data.image_shape)

    uncertainty.load_digits = digits64  # type: ignore[assignment]
    hyperparameter_sweep.load_digits = digits64  # type: ignore[assignment]

    if rows is not None:
        shard = RunContext.shard

        def recording_shard(self: RunContext, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
            parts = shard(self, *tensors)
            rank = int(os.environ.get("RANK", "0"))
            with open(f"{rows}.{rank}", "a", encoding="utf-8") as fh:
                fh.write(json.dumps([rank, int(parts[0].shape[0])]) + "\n")
            return parts

        RunContext.shard = recording_shard  # type: ignore[method-assign]
        weighted = hyperparameter_sweep.weighted_shard

        def recording_weighted(*tensors: torch.Tensor) -> tuple[list[torch.Tensor], float]:
            parts, share = weighted(*tensors)
            rank = int(os.environ.get("RANK", "0"))
            with open(f"{rows}.{rank}", "a", encoding="utf-8") as fh:
                fh.write(json.dumps([rank, int(parts[0].shape[0]), share]) + "\n")
            return parts, share

        hyperparameter_sweep.weighted_shard = recording_weighted
    return cli_main(args)


if __name__ == "__main__":
    sys.exit(main())
