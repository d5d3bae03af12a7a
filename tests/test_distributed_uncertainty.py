"""`uncertainty` on several processes equals one process with the same global batch.

The runs go through `tests/dist_float64_worker.py`: `hypernet run uncertainty --quick ...` in
float64, as one process or as 2 under torchrun's launcher (`distributed.launch`). They differ only
in summation order (each process averages its part of the batch, DDP averages the parts; the
function-space entropy sums the gathered logits in the same order), ~1e-16 relative per operation.
Tolerances: 1e-9 relative (1e-12 absolute) on every logged loss term and every summary number,
accuracies and counts exactly (a prediction flips only for a logit margin below ~1e-12), final
weights to 1e-8 of each tensor's largest entry (Adam divides by sqrt(v) + eps: an entry whose
gradient is rounding noise takes noise-sized steps of large relative size). Each of these faults,
put in on purpose, fails the 2-process test: the function-space entropy on each process's part
alone, its gathered gradient not scaled by the number of processes, MC dropout's masks drawn per
process for its own rows.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from dist_compare import assert_same_run, records, run_float64
from hypernet.cli import main
from hypernet.experiments.uncertainty import dropout_noise

pytestmark = pytest.mark.slow

# lr 0.01 and beta 1 (the ELBO): the runs move, and the prior and entropy weigh in the gradient
ARGS = ["run", "uncertainty", "--quick", "--no-progress", "--set", "steps=12", "--set", "batch_size=16"]
ARGS += ["--set", "lr=0.01", "--set", "kl_weight=1", "--set", "ensemble_size=2", "--set", "eval_members=4"]
ARGS += ["--set", "train_members=3", "--set", "checkpoint_every=6", "--set", "seeds=1"]
TIMING = {"train_seconds", "train_seconds_std"}  # wall time of this run, not a result


@pytest.mark.parametrize("entropy", ["function", "weights"])
def test_uncertainty_two_processes_equal_one_float64(entropy: str, tmp_path: Path) -> None:
    """Every method (single, MC dropout, ensemble members, the hypernetwork's ELBO with prior and
    entropy) on 2 processes: each trains on its half of every batch, and the run is the
    one-process run."""
    args = [*ARGS, "--set", f"hyper_entropy={entropy}"]
    one, two, rows = tmp_path / "one", tmp_path / "two", tmp_path / "rows"
    run_float64(one, args, 1)
    run_float64(two, args, 2, "--rows", str(rows))
    assert_same_run(two, one, skip=TIMING)
    assert json.loads((two / "config.json").read_text())["processes"] == 2
    # each process trained on its half: 8 of 16 (a run that gave every process the whole batch
    # would reach the same numbers, so this is checked on its own); 5 phases of 12 steps
    for rank in (0, 1):
        seen = [json.loads(line) for line in Path(f"{rows}.{rank}").read_text().splitlines()]
        assert seen == [[rank, 8]] * (5 * 12)
    # the runs moved (the hypernetwork's draws: their prior term, a function of the weights;
    # beta 1 lets the entropy pull its nll up as well as down), and the prior and entropy are part
    # of what is compared
    single = [r["loss"] for r in records(one) if r["phase"] == "s0-single"]
    assert single[-1] < 0.9 * single[0]
    hyper = [r for r in records(one) if r["phase"] == "s0-hypernet"]
    assert abs(hyper[-1]["prior"] - hyper[0]["prior"]) > 0.5 * hyper[0]["prior"]
    assert min(abs(r["entropy"]) for r in hyper) > 1e-3 and min(r["prior"] for r in hyper) > 1e-3
    assert sorted(p.name for p in (two / "figures").iterdir()) == sorted(p.name for p in (one / "figures").iterdir())


def test_dropout_noise_is_the_draw_of_nn_dropout() -> None:
    """The masks a multi-process step draws for the whole batch are, bit for bit, those
    `nn.Dropout` draws from the same generator state in one process (and leave the generator in the
    same state), so N processes train MC dropout on one process's masks."""
    for dtype in (torch.float32, torch.float64):
        for rows, width, p in ((16, 32, 0.3), (7, 100, 0.5), (128, 100, 0.1)):
            h = torch.randn(rows, width, dtype=dtype)
            layer = nn.Dropout(p).train()
            torch.manual_seed(11)
            want, after = layer(h), torch.rand(4)
            torch.manual_seed(11)
            got, after_ours = h * dropout_noise(rows, width, p, h), torch.rand(4)
            assert torch.equal(got, want) and torch.equal(after_ours, after)
            assert 0 < int((want == 0).sum()) < want.numel()  # some units dropped, some kept


def test_batch_that_does_not_split_is_refused_before_anything_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """batch_size=7 over 2 processes: exit 2 with one line naming batch_size, no folder written."""
    out = tmp_path / "out"
    assert main(["run", "uncertainty", "--quick", "--nproc", "2", "--set", "batch_size=7", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "batch_size=7 does not split evenly over 2 processes" in err, err
    assert not out.exists()
