"""Mutation testing of one module at a time with mutmut, each with its own test selection.

    python tools/mutation.py spec            # mutate src/hypernet/spec.py, run tests/test_spec.py
    python tools/mutation.py spec --results --show  # summary and survivor diffs of the last run
    python tools/mutation.py --list          # the modules and their tests

mutmut reads its settings from `pyproject.toml` in the folder it runs in and keeps its mutants in
`mutants/` there. One settings table cannot give each module its own tests, so every module gets a
folder `.mutation/<module>/` (git-ignored) holding links to `src/` and `tests/` and a generated
`pyproject.toml`. Each run starts from fresh mutants (`--keep` reuses the last run's verdicts).
Runs use one worker and one thread (`OMP_NUM_THREADS=1`): the machines are small.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / ".mutation"

#: module -> (files to mutate, as globs under the repository; pytest arguments selecting the tests that
#: exercise them). The tests are
#: the ones written for the module (plus the few other files that are its only callers in the suite),
#: so that one module's run takes minutes, not the whole suite per mutant.
MODULES: dict[str, tuple[list[str], list[str]]] = {
    "spec": (["src/hypernet/spec.py"], ["tests/test_spec.py"]),
    # the statistical whole-design checks (slow, ~1 min) stay in the suite; the exact rules are per mutant
    "init": (["src/hypernet/init.py"], ["tests/test_init_rules.py", "tests/test_init_variance.py", "-m", "not slow"]),
    "checkpoint": (
        ["src/hypernet/train/checkpoint.py"],
        ["tests/test_checkpoint_integrity.py", "tests/test_train.py"],
    ),
    # the statistical whole-design checks of test_init_variance.py (slow, ~1 min) stay in the suite, as for init
    "hypernetworks": (
        ["src/hypernet/hypernetworks/*"],
        [
            "tests/test_hypernetworks_core.py",
            "tests/test_family.py",
            "tests/test_init_variance.py",
            "tests/test_lowrank_factored.py",
            "tests/test_core_contract.py",
            "-m",
            "not slow",
        ],
    ),
    "kernels-analytic": (
        [
            "src/hypernet/kernels/activations.py",
            "src/hypernet/kernels/analytic.py",
            "src/hypernet/kernels/hyper.py",
            "src/hypernet/kernels/structured.py",
            "src/hypernet/kernels/validate.py",
        ],
        # the Monte-Carlo checks (a third line behind the plain-float recursions and the neural-tangents
        # values, ~35 s together) stay in the suite; per mutant they would triple the run. structured.py
        # is the empirical NTK's dense-layer method: the empirical-NTK tests are its tests
        [
            "tests/test_kernel_references.py",
            "tests/test_kernel_exact.py",
            "tests/test_kernels.py",
            "tests/test_kernels_inputs.py",
            "tests/test_empirical_ntk.py",
            "tests/test_empirical_ntk_reference.py",
            "tests/test_empirical_ntk_exact.py",
            "-m",
            "not slow",
            "-k",
            "not monte_carlo",
        ],
    ),
    "kernels-empirical": (
        [
            "src/hypernet/kernels/autodiff.py",
            "src/hypernet/kernels/empirical.py",
            "src/hypernet/kernels/finite.py",
            "src/hypernet/kernels/ntk_plan.py",
            "src/hypernet/kernels/predict.py",
        ],
        # test_kernels_inputs.py holds the bad-argument tests of empirical_ntk and kernel_predict; the
        # Monte-Carlo MLP checks (they call empirical_ntk, ~25 s) stay in the suite, as for kernels-analytic
        [
            "tests/test_empirical_ntk.py",
            "tests/test_empirical_ntk_reference.py",
            "tests/test_empirical_ntk_exact.py",
            "tests/test_kernel_predict_exact.py",
            "tests/test_kernel_exact.py",
            "tests/test_kernels.py",
            "tests/test_kernels_inputs.py",
            "-k",
            "not monte_carlo",
        ],
    ),
    # the auto engine's fallback, the factored low-rank path and autocast are target.py code tested in
    # those files; the torch.compile tests (~17 s each) are left out, their branches re-tested with --fresh
    "target": (
        ["src/hypernet/target.py"],
        [
            "tests/test_target.py",
            "tests/test_target_exact.py",
            "tests/test_core_contract.py",
            "tests/test_engine_fallback.py",
            "tests/test_lowrank_factored.py",
            "tests/test_compile_autocast.py",
            "-m",
            "not slow",
            "-k",
            "not compiled",
        ],
    ),
    "batched_ops": (
        ["src/hypernet/batched_ops.py"],
        [
            "tests/test_engine_layers.py",
            "tests/test_engine_rules.py",
            "tests/test_engine_fallback.py",
            "tests/test_core_contract.py",
            "-m",
            "not slow",
        ],
    ),
    "data": (
        ["src/hypernet/data/*"],
        ["tests/test_data.py", "tests/test_data_exact.py", "tests/test_images_functions.py"],
    ),
}


#: Lines mutmut leaves alone: they only format an error message (the brief allows exactly this
#: exemption). Whether an error is raised, and of which type, is still mutated on the lines around it;
#: the tests check with `match=` that each message names the offending argument.
MESSAGE_ONLY = [r"^\s*raise \w+\(f?[\"']"]

#: `<module> <mutant name> <reason>` per line: survivors that no test can kill because the mutant
#: computes the same thing as the original on every input (see docs/testing.md).
EQUIVALENT = ROOT / "tools" / "mutation_equivalent.txt"


def _toml_list(values: list[str]) -> str:
    return json.dumps(values)  # a JSON list of strings is a TOML array of basic strings


def equivalent(module: str) -> dict[str, str]:
    """`{mutant name: reason}` of the mutants of `module` marked equivalent."""
    marked: dict[str, str] = {}
    for line in EQUIVALENT.read_text().splitlines() if EQUIVALENT.exists() else []:
        if line.strip() and not line.startswith("#"):
            name, mutant, reason = line.split(maxsplit=2)
            if name == module:
                marked[mutant] = reason
    return marked


def summarize(module: str, work: Path, mutmut: str, env: dict[str, str], show: bool) -> int:
    """Print killed / survived / equivalent / timeout / no tests, and the survivors (with diffs if `show`)."""
    listing = subprocess.run([mutmut, "results", "--all", "true"], cwd=work, env=env, capture_output=True, text=True)
    status: dict[str, str] = {}
    for line in listing.stdout.splitlines():
        name, sep, verdict = line.strip().rpartition(": ")
        if sep:
            status[name] = verdict
    marked = equivalent(module)
    stale = sorted(set(marked) - {n for n, v in status.items() if v != "killed"})
    counts: dict[str, int] = {}
    for name, verdict in status.items():
        key = "equivalent" if name in marked and verdict == "survived" else verdict
        counts[key] = counts.get(key, 0) + 1
    total = len(status)
    killed = counts.get("killed", 0)
    live = total - counts.get("equivalent", 0)
    print(f"{module}: {total} mutants; " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    if live:
        print(f"{module}: killed {killed}/{live} non-equivalent = {100 * killed / live:.1f}%")
    for name in stale:
        print(f"marked equivalent but {status.get(name, 'absent')}: {name}")
    for name, verdict in sorted(status.items()):
        if verdict != "killed" and name not in marked:
            print(f"  {verdict}: {name}")
            if show:
                diff = subprocess.run([mutmut, "show", name], cwd=work, env=env, capture_output=True, text=True)
                lines = diff.stdout.splitlines()
                changed = [d for d in lines if d.startswith(("-", "+")) and not d.startswith(("---", "+++"))]
                print("\n".join("      " + d for d in changed))
    return 0


def fresh(module: str, work: Path, patterns: list[str], select: list[str]) -> int:
    """Test each mutant matching `patterns` in a new Python process started with MUTANT_UNDER_TEST set.

    mutmut switches a mutant on per call, in processes that imported the library before; code that
    runs at import time (a rule built by a factory when the module loads, e.g. `_rnn("gru")`) keeps
    the original there, so every such mutant "survives". Here the mutant is on from the first import.
    Prints one verdict per mutant: killed (a test failed) or survived; the run's stored verdicts are
    left unchanged.
    """
    # mutmut copies the tests into mutants/ when a run starts; test the current ones
    shutil.copytree(ROOT / "tests", work / "mutants" / "tests", dirs_exist_ok=True)
    names = []
    for meta in (work / "mutants").rglob("*.meta"):
        names += json.loads(meta.read_text())["exit_code_by_key"]
    chosen = sorted(n for n in names if any(fnmatch.fnmatch(n, p) for p in patterns))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": "src"}
    counts = {"killed": 0, "survived": 0, "timeout": 0}
    for name in chosen:
        cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:randomly", "-p", "no:cacheprovider", *select]
        try:
            code = subprocess.call(
                cmd,
                cwd=work / "mutants",
                env={**env, "MUTANT_UNDER_TEST": name},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=300,
            )
            verdict = "survived" if code == 0 else "killed"
        except subprocess.TimeoutExpired:
            verdict = "timeout"
        counts[verdict] += 1
        print(f"{verdict}: {name}", flush=True)
    print(f"{module} (fresh processes): {len(chosen)} mutants; " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


def prepare(module: str) -> Path:
    """Create `.mutation/<module>/` with links to the sources and tests and mutmut's settings."""
    globs, tests = MODULES[module]
    work = WORK / module
    work.mkdir(parents=True, exist_ok=True)
    # examples/: a test loads an example script (test_lowrank_factored.py) from beside tests/
    links = {
        "src": ROOT / "src",
        "tests": ROOT / "tests",
        "examples": ROOT / "examples",
        "shared": ROOT.parent / "shared",
    }
    for name, target in links.items():
        link = work / name
        if not link.is_symlink() and target.exists():
            link.symlink_to(target, target_is_directory=True)
    # the tests' own pytest settings (markers, options) travel with mutmut's
    pytest_opts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    lines = [
        "[tool.mutmut]",
        'source_paths = ["src"]',
        f"only_mutate = {_toml_list(globs)}",
        f"pytest_add_cli_args_test_selection = {_toml_list(tests)}",
        # copied into mutants/ beside tests/ (mutmut copies tests/ itself)
        'also_copy = ["examples"]',
        # torch starts threads at import; forking mutmut's own pytest process is not safe with them
        'process_isolation = "forkserver"',
        # a mutant may use (estimated test time + 10 s) * 4 * 2 of CPU time before it counts as a timeout:
        # the 10 s cover starting pytest and collecting the selection in the mutant's process (with
        # mutmut's 1 s, quick tests timed out during collection), the multiplier 4 (not mutmut's 15)
        # stops an endless loop under the MNIST tests in minutes rather than ten
        "timeout_multiplier = 4.0",
        "timeout_constant = 10.0",
        # the one exemption: the message of a `raise` (its text, not whether or what it raises)
        f"do_not_mutate_patterns = {_toml_list(MESSAGE_ONLY)}",
        "",
        "[tool.pytest.ini_options]",
        f"addopts = {json.dumps(pytest_opts.get('addopts', ''))}",
        f"markers = {_toml_list(pytest_opts.get('markers', []))}",
        "",
    ]
    text = "\n".join(lines)
    settings = work / "pyproject.toml"
    if not settings.exists() or settings.read_text() != text:
        settings.write_text(text)
    return work


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("module", nargs="?", choices=sorted(MODULES), help="which module to mutate")
    parser.add_argument("--results", action="store_true", help="summarize the last run only, do not run")
    parser.add_argument("--keep", action="store_true", help="reuse the mutants and verdicts of the last run")
    parser.add_argument("--show", action="store_true", help="print each survivor's diff")
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="MUTANT",
        help="re-test only these mutants (names or globs, e.g. after adding tests), keeping the other verdicts",
    )
    parser.add_argument(
        "--fresh",
        nargs="+",
        metavar="MUTANT",
        help="after a run: test these mutants (names or globs) each in a fresh process that has the mutant on "
        "from import (for code that runs at import time, which mutmut cannot switch), with the module's tests "
        "or --select",
    )
    parser.add_argument(
        "--select", metavar="ARGS", help="pytest arguments for --fresh, one string (default: the module's)"
    )
    parser.add_argument("--list", action="store_true", help="list the modules and their tests")
    parser.add_argument("--children", type=int, default=1, help="mutants tested at once (default 1)")
    args = parser.parse_args(argv)
    if args.list:
        for name, (globs, tests) in MODULES.items():
            print(f"{name}: {' '.join(globs)}  <-  {' '.join(tests)}")
        return 0
    if args.module is None:
        parser.error("name a module (or --list)")
    work = prepare(args.module)
    if args.fresh:
        return fresh(
            args.module, work, args.fresh, shlex.split(args.select) if args.select else MODULES[args.module][1]
        )
    mutmut = str(Path(sys.executable).with_name("mutmut"))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    if not args.results:
        if not args.keep and not args.only:
            shutil.rmtree(work / "mutants", ignore_errors=True)  # a clean measurement: new mutants, new stats
        # mutmut redraws a progress line many times a second; keep that in a log, not on the terminal
        with open(work / "run.log", "w") as log:
            command = [mutmut, "run", "--max-children", str(args.children), *(args.only or [])]
            code = subprocess.call(command, cwd=work, env=env, stdout=log)
        if code != 0:
            print(f"mutmut run failed ({code}); see {work / 'run.log'}", file=sys.stderr)
            return code
    return summarize(args.module, work, mutmut, env, args.show)


if __name__ == "__main__":
    raise SystemExit(main())
