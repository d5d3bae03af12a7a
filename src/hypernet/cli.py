"""The `hypernet` command: `list`, `run NAME`, `demo`, `report DIR`.

Bad input (unknown experiment or key, bad value, an occupied output folder) exits with code 2 and
one line on stderr, no traceback; a diverged or failed run exits with code 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import NoReturn

import torch

from hypernet.data import DownloadError, IDXError
from hypernet.experiments import EXPERIMENTS, RunContext, get
from hypernet.experiments.registry import ConfigError
from hypernet.report import build_report
from hypernet.train import CheckpointError, TrainingDiverged
from hypernet.train.atomic import write_json

DEMO = "split-digits"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"hypernet: error: {message}\n")


class UsageError(Exception):
    """Bad input from the user: exit code 2."""


def _parse_sets(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise UsageError(f"--set {pair}: expected key=value")
        key, value = pair.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def _device(name: str) -> torch.device:
    if name not in ("cpu", "cuda"):
        raise UsageError(f"--device {name}: expected cpu or cuda")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available")
    return torch.device(name)


def run_experiment(name: str, args: argparse.Namespace) -> int:
    exp = get(name)
    config = exp.make_config(_parse_sets(args.set or []), quick=args.quick)
    out = Path(args.out) if args.out else Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    existing = out / "config.json"
    if existing.exists() and not args.resume:
        raise UsageError(f"--out {out}: already holds a run; pass --resume to continue it, or choose another folder")
    if args.resume and not existing.exists():
        raise UsageError(f"--resume: {out} holds no run to resume")
    if args.resume:
        saved = json.loads(existing.read_text())
        if saved.get("config") != json.loads(json.dumps(dataclasses.asdict(config))) or saved.get("seed") != args.seed:
            raise UsageError(f"--resume: the config or seed differs from the run in {out}; pass the same --set/--seed")
    device = _device(args.device)
    if args.data_dir:
        if not Path(args.data_dir).is_dir():
            raise UsageError(f"--data-dir {args.data_dir}: not a folder")
        os.environ["HYPERNET_DATA"] = str(Path(args.data_dir).resolve())
    out.mkdir(parents=True, exist_ok=True)
    command = "hypernet " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv else ""
    meta = {"experiment": name, "description": exp.description, "config": dataclasses.asdict(config)}
    meta.update(seed=args.seed, quick=args.quick, device=str(device), command=command)
    write_json(existing, meta)
    torch.manual_seed(args.seed)
    ctx = RunContext(
        out=out, seed=args.seed, device=device, quick=args.quick, resume=args.resume, progress=not args.no_progress
    )
    print(f"running {name} into {out}", flush=True)
    summary = exp.run(config, ctx)
    write_json(out / "summary.json", summary)
    report = build_report(out)
    print(f"summary: {out / 'summary.json'}\nreport:  {report}")
    return 0


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field (repeatable)")
    p.add_argument("--out", help="run directory (default runs/NAME-TIMESTAMP)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--quick", action="store_true", help="reduced size, for tests and a first look")
    p.add_argument("--resume", action="store_true", help="continue a killed run in --out from its last checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar or progress lines")
    p.add_argument("--data-dir", help="folder with datasets (MNIST IDX files); sets HYPERNET_DATA for the run")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="hypernet", description="hypernetworks: experiments, reports and the demo")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    sub.add_parser("list", help="list the experiments")
    run = sub.add_parser("run", help="run an experiment")
    run.add_argument("name")
    _add_run_options(run)
    demo = sub.add_parser("demo", help=f"the main job: `run {DEMO}` (offline, a few minutes on a CPU)")
    _add_run_options(demo)
    report = sub.add_parser("report", help="rebuild a run's report.html")
    report.add_argument("dir")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "list":
            for name, exp in sorted(EXPERIMENTS.items()):
                print(f"{name:<22} {exp.description}")
            return 0
        if args.command == "report":
            if not (Path(args.dir) / "config.json").exists():
                raise UsageError(f"report {args.dir}: not a run directory (no config.json)")
            print(build_report(Path(args.dir)))
            return 0
        return run_experiment(DEMO if args.command == "demo" else args.name, args)
    except (UsageError, ConfigError) as exc:
        print(f"hypernet: error: {exc}", file=sys.stderr)
        return 2
    except (DownloadError, IDXError, FileNotFoundError) as exc:
        print(f"hypernet: error: {exc} (point --data-dir at a folder that has the files)", file=sys.stderr)
        return 2
    except (TrainingDiverged, CheckpointError) as exc:
        print(f"hypernet: run stopped: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("hypernet: interrupted; rerun with --resume to continue", file=sys.stderr)
        return 130
    except Exception as exc:  # one line for users; the traceback on request
        if os.environ.get("HYPERNET_DEBUG"):
            raise
        print(
            f"hypernet: run failed: {type(exc).__name__}: {exc} (HYPERNET_DEBUG=1 shows the traceback)", file=sys.stderr
        )
        return 1
