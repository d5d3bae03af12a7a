"""`hypernet run ...` in float64 for the distributed tests of `inr` and `modularity`: run as one
process (`python tests/dist_experiment_worker.py -- ARGS`) or as N under torchrun's launcher
(`hypernet.train.distributed.launch`), each process then joining the run as `torchrun` starts it.

float64 is the default dtype, so every model is built in float64; the inputs the experiments
make in float32 on purpose (MNIST and scikit-learn's digits, the sample images, the 2x grid) are
read in float64 here. One process and N
processes then differ only by summation order.
`--rows FILE`: every process appends `[rank, global rows, its rows]` of each batch it shards
(`RunContext.shard`) to `FILE.RANK`, so a test can see that each trained on its part only.
`--fail-at N`: process 1 raises at its N-th batch (after N-1 steps of the run).
"""

from __future__ import annotations

import dataclasses
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
    fail_at = int(own[own.index("--fail-at") + 1]) if "--fail-at" in own else 0
    torch.set_default_dtype(torch.float64)

    from hypernet.cli import main as cli_main
    from hypernet.experiments import inr, inr_figures, modularity, registry

    load_digits, patches, upsampled = inr.load_digits, inr.sample_image_patches, inr.upsampled_coordinates

    load_mnist = modularity.load_mnist

    def digits() -> Any:
        data = load_digits()
        return dataclasses.replace(data, x=data.x.double())

    def mnist(*args: Any, **kwargs: Any) -> Any:
        data = load_mnist(*args, **kwargs)
        return dataclasses.replace(data, x=data.x.double())

    inr.load_digits = digits  # type: ignore[assignment]
    modularity.load_mnist = mnist  # type: ignore[assignment]
    inr.sample_image_patches = lambda *a, **k: patches(*a, **k).double()  # type: ignore[assignment]
    inr.upsampled_coordinates = lambda *a, **k: upsampled(*a, **k).double()  # type: ignore[assignment]
    inr_figures.upsampled_coordinates = inr.upsampled_coordinates  # type: ignore[attr-defined]

    shard = registry.RunContext.shard
    calls = [0]

    def recording_shard(self: registry.RunContext, *tensors: torch.Tensor) -> Any:
        rank = int(os.environ.get("RANK", "0"))
        calls[0] += 1
        if fail_at and calls[0] == fail_at and rank == 1:
            raise RuntimeError(f"injected failure at batch {calls[0]}")
        parts = shard(self, *tensors)
        if rows is not None:
            with open(f"{rows}.{rank}", "a", encoding="utf-8") as fh:
                fh.write(json.dumps([rank, int(tensors[0].shape[0]), int(parts[0].shape[0])]) + "\n")
        return parts

    registry.RunContext.shard = recording_shard  # type: ignore[method-assign]
    return cli_main(args)


if __name__ == "__main__":
    sys.exit(main())
