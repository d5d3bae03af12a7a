"""A small training run for the distributed tests: run in-process (one process) or as a script
under `hypernet.train.distributed.launch` (N processes: `python tests/dist_worker.py OUT ...`).

Two phases of the same run: `task` (one task id per step, so one weight set [P] shared by the
batch) and `per-sample` (a task id per sample, so weights [B, P] through the per-sample engine).
float64 throughout, so that 1-process and N-process results differ only by summation order.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import Tensor, nn

import hypernet as hn
from hypernet.train import TrainConfig, distributed, train

GLOBAL_BATCH = 8
NUM_TASKS = 3


def make_model() -> hn.HyperModel:
    torch.manual_seed(0)
    target = hn.TargetNetwork(nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3)))
    hyper = hn.MLPHyperNetwork(4, target.spec, hidden=(16,))
    return hn.HyperModel(target, hyper, hn.TaskEmbedding(NUM_TASKS, 4)).double()


def run(out: Path, steps: int = 12, fail_at: int = 0, resume: bool = False) -> None:
    """Train both phases into `out`; with `fail_at`, process 1 (of 2+) raises at that step."""
    for phase, per_sample in (("task", False), ("per-sample", True)):
        model = make_model()
        trained = distributed.wrap(model)
        gen = torch.Generator().manual_seed(1)

        def step(s: int, g: torch.Generator, trained: nn.Module = trained, per_sample: bool = per_sample) -> tuple:
            if fail_at and s == fail_at and distributed.rank() == 1:
                raise RuntimeError(f"injected failure at step {s}")
            x = torch.randn(GLOBAL_BATCH, 6, generator=g, dtype=torch.float64)
            y = torch.randn(GLOBAL_BATCH, 3, generator=g, dtype=torch.float64)
            ids = torch.randint(0, NUM_TASKS, (GLOBAL_BATCH if per_sample else 1,), generator=g)
            if per_sample:
                x, y, ids = distributed.shard(x, y, ids)
                cond: Tensor = ids
            else:
                x, y = distributed.shard(x, y)
                cond = ids[0]  # a 0-d id: one weight set for the whole batch
            err = trained(x, cond) - y
            return err.pow(2).mean(), {"abs_err": float(err.detach().abs().mean())}

        def evaluate(model: hn.HyperModel = model) -> dict[str, float]:
            probe = torch.linspace(-1, 1, 6, dtype=torch.float64)[None]
            return {"probe": float(model(probe, torch.tensor(2)).sum())}

        config = TrainConfig(steps=steps, lr=0.02, checkpoint_every=4, log_every=1, eval_every=4)
        train(phase, trained, model.trainable_parameters(), step, config, out, eval_fn=evaluate, generator=gen,
              resume=resume, progress=False)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--fail-at", type=int, default=0)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()
    distributed.stop_on_sigterm()
    distributed.init(torch.device("cpu"))
    try:
        run(Path(args.out), args.steps, args.fail_at, args.resume)
    except Exception as exc:
        if not distributed.is_peer_failure(exc):
            distributed.record_failure(exc)
        raise
    finally:
        distributed.shutdown()


if __name__ == "__main__":
    main()
