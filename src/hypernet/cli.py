"""The `hypernet` command: `list`, `run NAME`, `demo`, `report DIR`.

Bad input (unknown experiment or key, a value out of range, an occupied output folder, missing or
damaged data) exits with code 2 and one line on stderr, no traceback, before the run writes
anything; a diverged or failed run exits with code 1. The experiments (and with them matplotlib,
scikit-learn and rich, the `cli` extra) are imported only here, when a command needs them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import torch

import hypernet
from hypernet.data import DataError, MissingDataError
from hypernet.report.html import ReportError
from hypernet.train import CheckpointError, TrainingDiverged, distributed
from hypernet.train.atomic import write_json

if TYPE_CHECKING:
    from hypernet.experiments.registry import Experiment

DEMO = "split-digits"
CLI_MODULES = ("matplotlib", "sklearn", "rich", "platformdirs")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"hypernet: error: {message}\n")


class UsageError(Exception):
    """Bad input from the user: exit code 2."""


def _experiments() -> dict[str, Experiment]:
    from hypernet.experiments import EXPERIMENTS

    return EXPERIMENTS


def _load_experiments() -> str | None:
    """Import the experiments (matplotlib, scikit-learn, rich); a one-line error if the cli extra is
    missing. Figures are files: unless the user chose a matplotlib backend (`MPLBACKEND`), the
    non-interactive Agg one is set, before matplotlib is imported."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    try:
        import hypernet.experiments  # noqa: F401
    except ImportError as exc:
        if exc.name and exc.name.split(".")[0] in CLI_MODULES:
            return f"the command line needs the cli extra (missing: {exc.name}); pip install 'hypernet[cli]'"
        raise
    return None


def _get(name: str) -> Experiment:
    from hypernet.experiments.registry import get

    _experiments()
    return get(name)


def _parse_sets(pairs: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        if "=" not in pair:
            raise UsageError(f"--set {pair}: expected key=value")
        key, value = pair.split("=", 1)
        key = key.strip()
        if key in out:  # the last one winning would hide a typo in the first (`--set steps=abc` included)
            raise UsageError(f"--set {key}: given twice ({key}={out[key]} and {key}={value.strip()}); give it once")
        out[key] = value.strip()
    return out


def _device(name: str) -> torch.device:
    if name not in ("cpu", "cuda"):
        raise UsageError(f"--device {name}: expected cpu or cuda")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available")
    return torch.device(name)


def _config_fields(exp: Experiment) -> list[str]:
    return [f.name for f in dataclasses.fields(exp.config_cls)]


def run_experiment(name: str, args: argparse.Namespace, command: str, argv: list[str]) -> int:
    """Validate everything, claim the run folder, run, then write the summary, report and table.

    `--nproc N` (N > 1) validates here, writing nothing, then runs this same command as N
    processes with torchrun's launcher; each of them (or each process `torchrun` starts) joins the
    process group, rank 0 claims the folder, and rank 0 alone writes."""
    from hypernet.experiments import RunContext
    from hypernet.experiments.rundir import read_run_config
    from hypernet.report.table import print_table

    exp = _get(name)
    sets = _parse_sets(args.set or [])
    # an empty value (`--out "$DIR"` with DIR unset) would otherwise be taken as "not given"
    for option, value in (("--out", args.out), ("--data-dir", getattr(args, "data_dir", None))):
        if value is not None and not value.strip():
            raise UsageError(f"{option}: empty; give a folder, or leave {option} out")
    if args.data_dir:
        if "data_dir" not in _config_fields(exp):
            raise UsageError(f"--data-dir: {name} reads no data files")
        if "data_dir" in sets:
            raise UsageError("--data-dir and --set data_dir=...: give the folder once")
        if not Path(args.data_dir).is_dir():
            raise UsageError(f"--data-dir {args.data_dir}: not a folder")
        sets["data_dir"] = args.data_dir
    _absolute_data_dir(sets)
    if getattr(args, "method", None):
        if "methods" not in _config_fields(exp):
            raise UsageError(f"--method: {name} has no methods to choose from")
        if "methods" in sets:
            raise UsageError("--method and --set methods=...: give the methods once")
        sets["methods"] = args.method
    config = exp.make_config(sets, quick=args.quick)
    device = _device(args.device)
    world = _world(exp, config, args.nproc)
    if args.resume and not args.out:
        raise UsageError("--resume: give the run's folder with --out")
    config_json = json.loads(json.dumps(dataclasses.asdict(config)))
    if args.nproc > 1 and distributed.env_world_size() == 1:
        _check_folder(name, args, config_json)  # bad input exits 2 before any process starts
        if exp.prepare is not None:
            exp.prepare(config)
        distributed.launch(["-m", "hypernet", *argv], args.nproc)
        return 0
    if world > 1:
        device = distributed.init(device)
        if not distributed.is_main():
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - one line of progress per run, not per process
    out = _claim_folder(name, exp, config, config_json, args, device, command, world)
    torch.manual_seed(args.seed)
    ctx = RunContext(
        out=out, seed=args.seed, device=device, quick=args.quick, resume=args.resume, progress=not args.no_progress
    )
    print(f"running {name} into {out}" + (f" on {world} processes" if world > 1 else ""), flush=True)
    if args.resume and (out / "summary.json").exists():
        print("the run was complete: each phase loads its last checkpoint; summary and report are written again")
    elif args.resume and not any((out / "checkpoints").glob("*.json")):
        print(f"no checkpoint in {out / 'checkpoints'} to resume from: the run starts from the beginning")
    start = time.monotonic()
    summary = exp.run(config, ctx)
    if not distributed.is_main():
        return 0
    write_json(out / "summary.json", summary)
    seconds = round(time.monotonic() - start, 1)
    write_json(out / "run.json", {"finished": _now(), "seconds": seconds, "resumed": args.resume, "processes": world})
    write_json(out / "results.json", exp.results(summary, read_run_config(out), seconds))
    report = _report(out)
    if exp.headline is not None:
        print()
        print_table(exp.headline(summary))
    print(f"\nsummary: {out / 'summary.json'}\nreport:  {report}")
    return 0


def _world(exp: Experiment, config: object, nproc: int) -> int:
    """The number of processes of this run: `--nproc`, or torchrun's `WORLD_SIZE`."""
    env = distributed.env_world_size()
    if nproc < 1:
        raise UsageError(f"--nproc {nproc}: expected a count >= 1")
    if env > 1 and nproc not in (1, env):
        raise UsageError(f"--nproc {nproc}: torchrun started {env} processes; give the count once")
    world = max(env, nproc)
    who = f"--nproc {world}" if nproc > 1 else f"{world} processes"  # (under torchrun: no --nproc given)
    if world > 1 and not exp.distributed:
        raise UsageError(f"{who}: {exp.name} does not train through the training loop; run it in one process")
    smallest = exp.smallest_batch(config) if exp.smallest_batch is not None and world > 1 else world
    batch = exp.global_batch(config) if exp.global_batch is not None and world > 1 else 0
    if smallest < world:
        raise UsageError(
            f"{who}: {exp.batch_setting or 'batch'}: a batch of {smallest} sample(s) cannot be shared by "
            f"{world} processes; "
            + (
                f"make each at least {world}"
                if exp.batch_setting and exp.batch_setting != "batch_size"
                else f"use a batch size of at least {world}"
                if batch in (0, smallest)
                else f"a step's batch of {batch} gives parts as small as {smallest}: use a batch size of at least "
                f"{world * -(-batch // smallest)}"
            )
        )
    if batch % world and exp.batch_setting == "batch_size":
        raise UsageError(
            f"{who}: batch_size={batch} does not split evenly over {world} processes; "
            f"use a multiple of {world} (each process takes an equal part of every step's batch)"
        )
    if batch % world and exp.batch_setting:
        raise UsageError(
            f"{who}: {exp.batch_setting}: a step's {batch} samples do not split evenly over {world} "
            f"processes; use a multiple of {world} (each process takes an equal part of every step's batch)"
        )
    if batch % world:  # fixed batches, no setting to change: the process count must fit them
        raise UsageError(
            f"{who}: {exp.name}'s steps take {batch} samples (or a multiple), which do not split "
            f"evenly over {world} processes; use a process count that divides {batch}"
        )
    return world


def _check_folder(name: str, args: argparse.Namespace, config_json: object) -> dict[str, object] | None:
    """Whether `--out` may take this run (writes nothing); the saved config when resuming."""
    from hypernet.experiments.rundir import check_out

    out = Path(args.out) if args.out else None
    saved = check_out(out, name, args.resume) if out is not None else None
    if saved is not None and (saved.get("config") != config_json or saved.get("seed") != args.seed):
        raise UsageError(f"--resume: the config or seed differs from the run in {out}; pass the same --set/--seed")
    return saved


def _claim_folder(
    name: str,
    exp: Experiment,
    config: object,
    config_json: object,
    args: argparse.Namespace,
    device: torch.device,
    command: str,
    world: int,
) -> Path:
    """Rank 0 (or the only process) checks and claims the run folder, or cleans what a killed run
    left in it; every process gets its path. A refusal on rank 0 ends the others quietly."""
    from hypernet.experiments.rundir import claim, clean_leftovers, new_run_dir

    answer: tuple[str, str] = ("error", "")
    if distributed.is_main():
        try:
            _check_folder(name, args, config_json)
            if exp.prepare is not None:
                exp.prepare(config)  # find, fetch and verify the data before the run folder exists
            if args.resume:
                out = Path(args.out)
                removed = clean_leftovers(out)
                if removed:
                    print(f"removed {len(removed)} leftover file(s) of the killed run", flush=True)
            else:
                out = Path(args.out) if args.out else new_run_dir(Path("runs"), name)
                meta = {"experiment": name, "description": exp.description, "config": config_json, "seed": args.seed}
                meta.update(quick=args.quick, device=str(device), command=command, started=_now(), processes=world)
                meta.update(versions=_versions())
                claim(out, meta)
            answer = ("ok", str(out))
        finally:
            distributed.broadcast(answer)  # before re-raising, so the other ranks do not wait
    else:
        answer = distributed.broadcast(answer)
        if answer[0] != "ok":
            raise _QuietExit(2)
    return Path(answer[1])


class _QuietExit(Exception):
    """End this process with `code`; another process has said why."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %z")


def _versions() -> dict[str, str]:
    return {"hypernet": hypernet.__version__, "torch": torch.__version__, "python": platform.python_version()}


def _report(run_dir: Path) -> Path:
    """Rebuild `run_dir/report.html`, with the experiment's headline table and captions if it is known."""
    from hypernet.experiments.rundir import read_run_config
    from hypernet.report import build_report

    if not (run_dir / "config.json").exists():
        raise UsageError(f"report {run_dir}: not a run directory (no config.json)")
    config = read_run_config(run_dir)
    exp = _experiments().get(config["experiment"])
    return build_report(run_dir, exp.headline if exp else None, exp.captions if exp else None)


def _absolute_data_dir(sets: dict[str, str]) -> None:
    """The data folder (`--data-dir` or `--set data_dir=DIR`) stored absolute: a `--resume` started
    from another folder still finds the files (a missing folder is left as given, for the setting's
    own error)."""
    folder = sets.get("data_dir", "")
    if folder.strip() and Path(folder).is_dir():
        sets["data_dir"] = str(Path(folder).resolve())


def _seed_value(text: str) -> int:
    """`--seed`: an integer in [0, 2**32), the range NumPy's and Python's generators all accept."""
    try:
        seed = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if not 0 <= seed < 2**32:
        raise argparse.ArgumentTypeError(f"must be in [0, 2**32), got {seed}")
    return seed


def _add_run_options(p: argparse.ArgumentParser, exp: Experiment | None = None) -> None:
    """The options of `run`/`demo`; with `exp` (its `--help`), only those that experiment takes."""
    fields = {f.name for f in dataclasses.fields(exp.config_cls)} if exp is not None else set()
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="change a setting (repeatable); see below")
    p.add_argument("--out", help="run folder: new or empty (default runs/NAME-TIMESTAMP-XXXXXX), or a run to --resume")
    p.add_argument("--seed", type=_seed_value, default=0, help="seed of every random draw (default 0)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--quick", action="store_true", help="reduced size, for tests and a first look")
    p.add_argument("--resume", action="store_true", help="continue a killed run in --out from its last checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar or progress lines")
    if exp is None or "data_dir" in fields:
        p.add_argument("--data-dir", help="your folder with the MNIST files (read only; sets the data_dir setting)")
    if exp is None or "methods" in fields:
        p.add_argument("--method", help="methods to run, comma-separated (sets the methods setting), e.g. hnet,ewc,si")
    if exp is None or exp.distributed:
        p.add_argument(
            "--nproc",
            type=int,
            default=1,
            help="train on N processes (torch.distributed + DDP, gloo on CPU, nccl on CUDA); or launch with torchrun",
        )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="hypernet", description="hypernetworks: experiments, reports and the demo")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    sub.add_parser("list", help="list the experiments")
    run = sub.add_parser(
        "run",
        help="run an experiment",
        epilog="`hypernet run NAME --help` lists the settings of NAME; `hypernet list` the names",
    )
    run.add_argument("name")
    _add_run_options(run)
    demo = sub.add_parser("demo", help=f"the main job: `run {DEMO}` (offline, under a minute on a CPU)")
    _add_run_options(demo)
    report = sub.add_parser("report", help="rebuild a run's report.html")
    report.add_argument("dir")
    return parser


def _experiment_help(argv: list[str]) -> str | None:
    """`run NAME --help` / `demo --help`: the options and every setting of NAME, or None."""
    if not argv or argv[0] not in ("run", "demo") or not ({"-h", "--help"} & set(argv)):
        return None
    if argv[0] == "demo":
        name = DEMO
    elif len(argv) > 1 and not argv[1].startswith("-"):
        name = argv[1]
    else:
        return None
    from hypernet.experiments.settings import settings_help

    exp = _get(name)
    prog = "hypernet demo" if argv[0] == "demo" else f"hypernet run {name}"
    p = _Parser(
        prog=prog,
        description=f"{name}: {exp.description}",
        epilog=f"settings (--set KEY=VALUE; tuples as 800 or 50,200):\n{settings_help(exp.config_cls, exp.quick)}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_run_options(p, exp)
    return p.format_help()


def _main(argv: list[str]) -> int:
    help_text = _experiment_help(argv)
    if help_text is not None:
        print(help_text, end="")
        return 0
    args = build_parser().parse_args(argv)
    if args.command == "list":
        for name, exp in sorted(_experiments().items()):
            print(f"{name:<22} {exp.description}")
        return 0
    if args.command == "report":
        print(_report(Path(args.dir)))
        return 0
    command = "hypernet " + shlex.join(argv)
    return run_experiment(DEMO if args.command == "demo" else args.name, args, command, argv)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    missing = _load_experiments()
    if missing:
        print(f"hypernet: error: {missing}", file=sys.stderr)
        return 2
    # SIGTERM (a scheduler's stop, torchrun's agent stopping the others) unwinds like an exception:
    # an atomic write in progress removes its temporary file, and the run says how it ended
    previous = distributed.stop_on_sigterm()
    try:
        return _run_main(argv)
    except SystemExit as exc:
        if exc.code != 128 + signal.SIGTERM or distributed.env_world_size() > 1:
            raise  # (a process of a multi-process run: the launcher names the one that failed)
        print("hypernet: stopped by SIGTERM; rerun with --resume to continue", file=sys.stderr)
        return 128 + signal.SIGTERM
    finally:
        distributed.shutdown()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _run_main(argv: list[str]) -> int:
    from hypernet.experiments.settings import ConfigError

    try:
        return _main(argv)
    except _QuietExit as exc:
        return exc.code
    except (UsageError, ConfigError, ReportError) as exc:
        print(f"hypernet: error: {exc}", file=sys.stderr)
        return 2
    except MissingDataError as exc:
        print(f"hypernet: error: {exc} (point --data-dir at a folder that has them)", file=sys.stderr)
        return 2
    except DataError as exc:
        print(f"hypernet: error: {exc}", file=sys.stderr)
        return 2
    except distributed.DistributedRunError as exc:
        if exc.exitcode == 2:  # bad input found by process 0, which said so in one line
            return 2
        print(f"hypernet: run stopped: {exc}; rerun with --resume to continue", file=sys.stderr)
        return 1
    except (TrainingDiverged, CheckpointError) as exc:
        if distributed.is_main():  # the same on every process
            distributed.record_failure(exc)
            print(f"hypernet: run stopped: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        # once: by --nproc's launcher (not its processes), or by process 0 under a user's torchrun
        if not distributed.launched() and os.environ.get("RANK", "0") == "0":
            print("hypernet: interrupted; rerun with --resume to continue", file=sys.stderr)
        return 130
    except Exception as exc:  # one line for users; the traceback on request
        if os.environ.get("HYPERNET_DEBUG"):
            raise
        # in a multi-process run the line names its process; a process that only saw another one
        # die says nothing (that one says why, and the launcher names it)
        who = f"process {distributed.rank()}: " if distributed.is_distributed() else ""
        if who and distributed.is_peer_failure(exc):
            return 1
        distributed.record_failure(exc)
        print(
            f"hypernet: {who}run failed: {type(exc).__name__}: {exc} (HYPERNET_DEBUG=1 shows the traceback)",
            file=sys.stderr,
        )
        return 1
