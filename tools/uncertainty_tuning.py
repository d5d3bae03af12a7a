"""Choose the `uncertainty` experiment's hypernetwork settings and MC dropout's rate on a
validation split of MNIST's TRAINING split, never on the test split or its OOD sets.

    OMP_NUM_THREADS=1 flock /work/notes/cpu.lock nice -n 5 .venv/bin/python tools/uncertainty_tuning.py \\
        --data-dir /work/shared/datasets/mnist --out docs/results/uncertainty-tuning.json --method mc-dropout
    (then --method hypernet --rows 0-3, 4-7, 8-10, 11-12, 13-14, and --method mc-dropout --rows
    8-10, 11-14: each part fits the shared lock's ~10 minutes; the parts merge into one file, and
    the choice is written once a method's grid is complete)
    --method hypernet --check-seeds 101,102 (and the same for mc-dropout), after the choice: the
    chosen setting at two more seeds, to see how much of its validation score is the seed's

Validation: 5,000 training images of digits 0-4 held out (a fixed permutation); the models train
on the other training images of digits 0-4 with the experiment's schedule. Two OOD proxies, both
from the training split: 5,000 training images of digits 5-9 (the same classes as the test
experiment's held-out set, other images), and the validation digits 0-4 flipped upside down (a
transform other than the test experiment's 90-degree rotation).

Rule, fixed before the first tuning run, the same for both methods (the hypernetwork's last 4 grid
rows were set after its first 4 had run: see HYPERNET_GRID): the score of a setting is its
validation AUROC averaged over the 2 proxies and the 2 OOD scores (predictive entropy and mutual
information); among the settings whose validation NLL is within 10% of the method's best, the one
with the highest score is chosen. Both methods get the same budget: 11 settings each, one seed
(100, outside the experiment's seeds 0-2). Round 2 (after the full run with the round-1 choice):
4 more settings each, pre-registered in the grids below (the hypernetwork's entropy in function
space; MC dropout's rate near its choice), the same rule over all 15 rows of each method.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from hypernet.atomic import write_json
from hypernet.data import load_mnist
from hypernet.experiments.registry import PhaseTimer, RunContext
from hypernet.experiments.uncertainty import CLASSES, Splits, UncertaintyConfig, run_seed

VALIDATION = 5000
SEED = 100
NLL_SLACK = 1.10  # settings with validation NLL above 1.1x the method's best are not eligible

# 11 settings per method: the hypernetwork's KL weight (beta), generator (rank 0: every weight whole;
# rank 2 or 8: W0 + U V^T), noise size and draws per step; MC dropout's rate
HYPERNET_GRID: list[dict[str, Any]] = [
    {"hyper_rank": 0, "kl_weight": 0.001},  # the defaults before this tuning
    {"hyper_rank": 0, "kl_weight": 0.01},
    {"hyper_rank": 0, "kl_weight": 0.1},
    {"hyper_rank": 2, "kl_weight": 0.001},
    # rows 4-7 were set after rows 0-3 had run (validation only): a larger beta and the rank-2 generator
    # had both scored lower there, so the rest of the budget goes to a smaller beta and to the dense
    # generator's other knobs (replacing rank 2 at beta 0.01 and 0.1, rank 2 with 32 noise dims, rank 8)
    {"hyper_rank": 0, "kl_weight": 0.0003},
    {"hyper_rank": 0, "kl_weight": 0.001, "noise_dim": 32},
    {"hyper_rank": 0, "kl_weight": 0.001, "train_members": 10},
    {"hyper_rank": 8, "kl_weight": 0.001},
    # rows 8-10, added after the full run with the first choice (its OOD AUROC stayed below MC dropout's on
    # the test sets): a posterior over the last layer only, at beta 1 (the ELBO itself), 0.1 and 0.01
    {"hyper_generate": "last", "kl_weight": 1.0},
    {"hyper_generate": "last", "kl_weight": 0.1},
    {"hyper_generate": "last", "kl_weight": 0.01},
    # round 2, rows 11-14, pre-registered (written down before any of them ran, with MC dropout's rows
    # 11-14; the rule and the seed unchanged, the choice again over the whole grid of each method): the
    # entropy estimated in function space (entropy_space="function" in hypernet.methods.bayesian: the
    # members' log-probabilities on the training batch, d = B*C = 128*5 = 640, instead of the weights,
    # d = P = 79,005), every weight generated. The betas, by scale alone: the estimate is d times a mean
    # log-distance, so beta 0.001 with d = 640 weighs the entropy 79,005/640 ~ 120 times less than the
    # tuned weight-space beta 0.001 did; beta ~ 0.001 * 120 = 0.12 gives it the same weight (and a 120
    # times stronger prior). The rows span that range in half-decades from its top: 0.1 (the matched
    # weight, rounded down), 0.03, 0.01, 0.003 (a prior at most 3 times the tuned one).
    {"hyper_entropy": "function", "kl_weight": 0.1},
    {"hyper_entropy": "function", "kl_weight": 0.03},
    {"hyper_entropy": "function", "kl_weight": 0.01},
    {"hyper_entropy": "function", "kl_weight": 0.003},
]
# rows 8-10 added with the hypernetwork's rows 8-10: the same budget, between the first grid's points;
# round 2, rows 11-14 (pre-registered with the hypernetwork's rows 11-14, the same budget of 4): the
# region around the chosen 0.3 at half the grid's spacing there (0.025), two on each side
DROPOUT_GRID: list[dict[str, Any]] = [
    {"dropout": p} for p in (0.05, 0.1, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.15, 0.35, 0.45, 0.225, 0.275, 0.325, 0.375)
]


def validation_splits(data_dir: str) -> Splits:
    """Training-split digits 0-4 minus `VALIDATION` held-out ones; those as the in-distribution
    set; training digits 5-9 and the flipped validation digits as the OOD proxies."""
    train = load_mnist("train", data_dir)
    assert train.image_shape is not None
    inside = train.y < CLASSES
    x, y = train.x[inside], train.y[inside]
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(12345))
    val, rest = perm[:VALIDATION], perm[VALIDATION:]
    others = train.x[~inside]
    pick = torch.randperm(len(others), generator=torch.Generator().manual_seed(54321))[:VALIDATION]
    x_val = x[val]
    flipped = torch.flip(x_val.view(-1, *train.image_shape), (1,)).reshape(len(x_val), -1)
    return Splits(x[rest], y[rest], x_val, y[val], {"digits59": others[pick], "flipped": flipped})


def score(result: dict[str, Any]) -> float:
    """Mean validation AUROC over the proxies and the two OOD scores."""
    keys = [f"{kind}_{name}" for kind in ("auroc", "mi_auroc") for name in ("digits59", "flipped")]
    return statistics.fmean(result[k] for k in keys)


def choose(rows: list[dict[str, Any]]) -> int:
    """Index of the chosen setting by the rule in the module docstring."""
    best_nll = min(r["metrics"]["nll"] for r in rows)
    eligible = [i for i, r in enumerate(rows) if r["metrics"]["nll"] <= NLL_SLACK * best_nll]
    return max(eligible, key=lambda i: rows[i]["score"])


def tune(
    data: Splits, base: UncertaintyConfig, method: str, grid: list[dict[str, Any]], seeds: list[int] | None = None
) -> list[dict[str, Any]]:
    """Train and evaluate `method` at each setting of `grid` on the validation splits (at `SEED`, or
    setting `i` at `seeds[i]`)."""
    rows = []
    for i, setting in enumerate(grid):
        seed = SEED if seeds is None else seeds[i]
        cfg = dataclasses.replace(base, **setting)
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            ctx = RunContext(out=Path(tmp), seed=seed, progress=False)
            results, _ = run_seed(cfg, ctx, seed, PhaseTimer(ctx), data=data, methods=(method,))
        metrics = {k: v for k, v in results[method].items() if k != "reliability"}
        row = {"setting": setting, "score": score(metrics), "metrics": metrics, "seconds": time.perf_counter() - start}
        if seeds is not None:
            row["seed"] = seed
        rows.append(row)
        print(
            f"{method} {setting}: score {row['score']:.4f} nll {metrics['nll']:.4f} ece {metrics['ece']:.4f} "
            f"auroc {metrics['auroc_digits59']:.4f}/{metrics['auroc_flipped']:.4f} "
            f"mi {metrics['mi_auroc_digits59']:.4f}/{metrics['mi_auroc_flipped']:.4f} ({row['seconds']:.0f} s)",
            flush=True,
        )
    return rows


GRIDS = {"mc-dropout": DROPOUT_GRID, "hypernet": HYPERNET_GRID}


def check_seeds(args: argparse.Namespace, seeds: list[int], argv: list[str] | None) -> int:
    """The chosen setting of `args.method` at other seeds, stored as `seed_check` beside its grid."""
    out: dict[str, Any] = json.loads(args.out.read_text()) if args.out.exists() else {}
    part = out.get(args.method, {})
    if "chosen_setting" not in part:
        print(f"--check-seeds: {args.out} has no complete grid (no choice) for {args.method}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    data = validation_splits(args.data_dir)
    # the grid's own base settings (its steps too: --steps does not apply here)
    base = UncertaintyConfig(**{**out["base"], "hyper_hidden": tuple(out["base"]["hyper_hidden"])})
    rows = tune(data, base, args.method, [part["chosen_setting"]] * len(seeds), seeds)
    scores = [part["grid"][part["chosen"]]["score"], *(r["score"] for r in rows)]
    part["seed_check"] = {
        "command": " ".join(["python tools/uncertainty_tuning.py", *(sys.argv[1:] if argv is None else argv)]),
        "rows": rows,
        "seeds": [SEED, *seeds],
        "score_mean": statistics.fmean(scores),
        "score_std": statistics.stdev(scores),
        "seconds": time.perf_counter() - start,
    }
    write_json(args.out, out)
    check = part["seed_check"]
    print(f"{args.method} score over seeds {check['seeds']}: {check['score_mean']:.4f} ± {check['score_std']:.4f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="folder with the MNIST files")
    parser.add_argument("--out", type=Path, required=True, help="the result file (JSON; parts are merged into it)")
    parser.add_argument("--steps", type=int, default=1500, help="training steps (the experiment's: 1500)")
    parser.add_argument("--method", choices=sorted(GRIDS), required=True, help="whose grid to run")
    parser.add_argument(
        "--rows", default="", help="run only these grid rows, e.g. 0-3 (the runs fit the shared lock's ~10 min)"
    )
    parser.add_argument(
        "--check-seeds",
        default="",
        help="after the choice: rerun the chosen setting at these seeds, e.g. 101,102 (how much of the "
        "validation score is the seed's), without touching the grid or the choice",
    )
    args = parser.parse_args(argv)
    if args.check_seeds:
        return check_seeds(args, [int(v) for v in args.check_seeds.split(",")], argv)
    grid = GRIDS[args.method]
    lo, hi = (int(v) for v in args.rows.split("-")) if args.rows else (0, len(grid) - 1)
    if not 0 <= lo <= hi < len(grid):
        print(f"--rows: expected a range within 0-{len(grid) - 1}, got {args.rows!r}", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    start = time.perf_counter()
    data = validation_splits(args.data_dir)
    # the experiment's defaults before this tuning; each grid row overrides the named settings
    base = UncertaintyConfig(
        data="mnist",
        data_dir=args.data_dir,
        steps=args.steps,
        dropout=0.25,
        kl_weight=0.001,
        hyper_rank=0,
        hyper_entropy="weights",
    )
    rows = tune(data, base, args.method, grid[lo : hi + 1])
    out: dict[str, Any] = json.loads(args.out.read_text()) if args.out.exists() else {}
    out.update(
        rule=(
            "highest mean validation AUROC over the 2 OOD proxies and the 2 scores (entropy, mutual "
            f"information), among settings with validation NLL <= {NLL_SLACK} x the method's best"
        ),
        seed=SEED,
        images={"train": len(data.y_train), "validation": len(data.y_test), **{k: len(v) for k, v in data.ood.items()}},
        base=dataclasses.asdict(base),
    )
    part = out.setdefault(args.method, {"grid": [None] * len(grid), "parts": []})
    part["grid"] += [None] * (len(grid) - len(part["grid"]))  # a grid extended after earlier parts
    part["grid"][lo : hi + 1] = rows
    part["parts"].append(
        {
            "command": " ".join(["python tools/uncertainty_tuning.py", *(sys.argv[1:] if argv is None else argv)]),
            "rows": [lo, hi],
            "seconds": time.perf_counter() - start,
        }
    )
    if all(part["grid"]):
        part["chosen"] = choose(part["grid"])
        part["chosen_setting"] = part["grid"][part["chosen"]]["setting"]
        print(f"chosen for {args.method}: {part['chosen_setting']}")
    else:  # a choice made on a shorter grid no longer holds
        part.pop("chosen", None)
        part.pop("chosen_setting", None)
    write_json(args.out, out)
    print(f"{time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
