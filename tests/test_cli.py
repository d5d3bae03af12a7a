from __future__ import annotations

import dataclasses
import html.parser
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import typing
from pathlib import Path
from typing import Any

import pytest

from hypernet.cli import main

CHANCE = 0.5  # binary tasks


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "hypernet", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=600
    )


class _Page(html.parser.HTMLParser):
    """The report's structure: headings, table header cells, figure captions, tags in order."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.text: dict[str, list[str]] = {"h1": [], "h2": [], "th": [], "figcaption": [], "summary": []}
        self._open: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self._open.append(tag)
        if tag in self.text:
            self.text[tag].append("")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._open:
            while self._open.pop() != tag:
                pass

    def handle_data(self, data: str) -> None:
        for tag in reversed(self._open):
            if tag in self.text:
                self.text[tag][-1] += data
                break


def test_demo_quick_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    for name, res in summary["models"].items():
        assert res["mean_acc"] > CHANCE + 0.3, (name, res)  # far above chance after 150 steps
        assert len(res["per_task_acc"]) == 5
    # the terminal ends with the headline table: every model with its mean accuracy as in summary.json
    printed = capsys.readouterr().out
    table = printed[printed.index("Split digits: test accuracy") :]
    for name, res in summary["models"].items():
        row = next(line for line in table.splitlines() if f" {name} " in line)
        assert f"{res['mean_acc']:#.4g}" in row and f"{res['trainable_parameters']:,}" in row
    page = _Page()
    page.feed((out / "report.html").read_text())
    assert page.text["h1"] == ["split-digits"]
    assert "What was run" in page.text["h2"] and "Figures" in page.text["h2"]
    assert {"model", "mean", "digits 0/1", "trainable parameters", "command", "seed"} <= set(page.text["th"])
    assert len(page.text["figcaption"]) == 2 and all("accuracy" in c for c in page.text["figcaption"])
    assert page.tags.count("img") == 2
    assert page.text["summary"] == ["Raw summary.json", "Raw config.json"]  # collapsed, at the end
    assert "details" not in page.tags[: page.tags.index("figure")]
    assert {p.name for p in (out / "figures").iterdir()} == {"learning_curves.png", "per_task_accuracy.png"}
    assert any((out / "checkpoints").glob("hyper-mip-*.safetensors"))
    # results.json (what docs/results/ copies): the run's command and seed, the summary, and the
    # headline table with its numbers unrounded
    results = json.loads((out / "results.json").read_text())
    assert results["experiment"] == "split-digits" and results["seed"] == 0 and results["quick"] is True
    assert results["command"].startswith("hypernet demo --quick") and results["summary"] == summary
    rows = {row[0]: row for row in results["headline"]["rows"]}
    for name, res in summary["models"].items():
        assert rows[name][1:] == [res["mean_acc"], *res["per_task_acc"], res["trainable_parameters"]]
    (out / "report.html").unlink()
    assert main(["report", str(out)]) == 0 and (out / "report.html").exists()
    # rebuilt from summary.json, the report's table is the run's own, rows in the same order
    order = [row[0] for row in results["headline"]["rows"]]
    html = (out / "report.html").read_text()
    assert sorted(order, key=lambda name: html.index(f">{name}<")) == order


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "nope"], "unknown experiment 'nope'"),
        (["run", "split-digits", "--set", "colour=red"], "--set colour: unknown key for split-digits"),
        (["run", "split-digits", "--set", "steps=many"], "--set steps=many: expected int"),
        (["run", "split-digits", "--set", "steps"], "--set steps: expected key=value"),
        (["run", "split-digits", "--device", "tpu"], "--device tpu: expected cpu or cuda"),
        (["run", "split-digits", "--seed", "-1"], "argument --seed: must be in [0, 2**32), got -1"),
        (["run", "split-digits", "--seed", "4294967296"], "argument --seed: must be in [0, 2**32), got 4294967296"),
        (["run", "split-digits", "--seed", "1.5"], "argument --seed: expected an integer, got '1.5'"),
        (["report", "/nonexistent/dir"], "not a run directory"),
        (["frobnicate"], "invalid choice"),
        (
            ["run", "split-digits", "--set", "optimizer=lbfgs"],
            "--set optimizer=lbfgs: expected one of adam, adamw, sgd",
        ),
        (
            ["run", "split-digits", "--set", "parametrizations=mip,foo"],
            "--set parametrizations=mip,foo: expected at least 1 item; each one of standard, ntk, mip",
        ),
        (
            # a repeated item would train the same model twice into one set of metrics and checkpoints
            ["run", "split-digits", "--set", "parametrizations=mip,mip"],
            "--set parametrizations=mip,mip: expected at least 1 item; each one of standard, ntk, mip, at most once",
        ),
        (["run", "split-mnist", "--method", "hnet,ewc,hnet"], "--set methods=hnet,ewc,hnet: expected at least 1"),
        # empty values (an unset shell variable) are refused, not taken as "not given"; the bad lr
        # makes a run that ignored them stop at once (and offline) with another message
        (["demo", "--out", "", "--set", "lr=abc"], "--out: empty; give a folder, or leave --out out"),
        (["run", "split-mnist", "--data-dir", "", "--set", "lr=abc"], "--data-dir: empty; give a folder"),
        (
            ["run", "split-digits", "--set", "lr=abc", "--set", "lr=0.1"],
            "--set lr: given twice (lr=abc and lr=0.1); give it once",
        ),
        (["run", "split-digits", "--set", "lr=0"], "--set lr=0: expected > 0"),
        (["run", "split-digits", "--set", "lr=nan"], "--set lr=nan: expected float"),
        (["run", "ntk-drift", "--method", "hnet"], "--method: ntk-drift has no methods to choose from"),
        (["run", "split-mnist", "--method", "hnet,bogus"], "--set methods=hnet,bogus: expected at least 1 item"),
        (["run", "split-mnist", "--method", "hnet", "--set", "methods=ewc"], "--method and --set methods=...: give"),
        (["run", "split-digits", "--set", "lr=inf"], "--set lr=inf: expected float"),
        (["run", "split-digits", "--set", "test_fraction=-inf"], "--set test_fraction=-inf: expected float"),
        (["run", "split-digits", "--set", "test_fraction=2"], "--set test_fraction=2: expected in (0, 1)"),
        (
            ["run", "uncertainty", "--set", "hyper_hidden=4,,4"],
            "--set hyper_hidden=4,,4: an empty item in the list; expected ints, comma-separated",
        ),
        (
            ["run", "rotation-widths", "--set", "n_f_values=(800,x)"],
            "--set n_f_values=(800,x): expected ints, comma-separated, e.g. 800 or 50,200",
        ),
        (
            ["run", "rotation-widths", "--set", "n_train=9500", "--set", "n_test=1000", "--set", "train_split=test"],
            "--set n_train=9500 n_test=1000 train_split=test: expected n_train <= 60,000 with train_split=train, "
            "n_train + n_test <= 10,000 with train_split=test",
        ),
        (
            ["run", "rotation-widths", "--set", "n_train=60001"],
            "--set n_train=60001 n_test=10000 train_split=train: expected n_train <= 60,000 with train_split=train",
        ),
        (["run", "rotation-widths", "--set", "n_test=10001"], "--set n_test=10001: expected an integer in [1, 10000]"),
        (
            ["run", "rotation-widths", "--set", "optimizer=adam", "--set", "momentum=0.9"],
            "--set optimizer=adam momentum=0.9: expected momentum 0 with optimizer=adam",
        ),
        (
            ["run", "rotation-widths", "--set", "n_test=500"],
            "--set curve_images=1000 n_test=500: expected curve_images <= n_test",
        ),
        (
            ["run", "rotation-widths", "--quick", "--set", "data_dir=/nonexistent"],
            "--set data_dir=/nonexistent: expected empty or an existing folder",
        ),
        (["run", "split-digits", "--data-dir", "/tmp"], "--data-dir: split-digits reads no data files"),
        (
            ["run", "uncertainty", "--quick", "--data-dir", "/tmp"],
            "--set data=digits data_dir=/tmp: expected no data_dir with data=digits (the digits are built in",
        ),
        (["run", "inr", "--set", "dataset=digits", "--data-dir", "/tmp"], "expected no data_dir with dataset=digits"),
        (["run", "uncertainty", "--quick", "--set", "n_train=100000"], "--set n_train=100000: only 676 training"),
        (
            ["run", "hyperparameter-sweep", "--quick", "--set", "data_dir=/tmp"],
            "add --set dataset=mnist to read MNIST from the folder",
        ),
        (["run", "rotation-widths", "--data-dir", "/nonexistent"], "--data-dir /nonexistent: not a folder"),
    ],
)
def test_bad_input_exits_2_with_one_line(args: list[str], message: str, tmp_path: Path) -> None:
    res = _cli(*args, "--out", str(tmp_path / "x")) if args[0] == "run" else _cli(*args, cwd=tmp_path)
    assert res.returncode == 2, res
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], res.stderr
    assert "Traceback" not in res.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written


def _numeric(tp: Any) -> bool:
    item = typing.get_args(tp)[0] if typing.get_origin(tp) is tuple else tp
    return item in (int, float)


def _out_of_range(rule: Any, tp: Any) -> str:
    """A value the rule must refuse: just past a bound (the bound itself where it is exclusive)."""
    from hypernet.experiments.settings import show

    if rule.ge is not None:
        bad: float = rule.ge - 1
    elif rule.gt is not None:
        bad = rule.gt
    elif rule.le is not None:
        bad = rule.le + 1
    else:
        bad = rule.lt
    is_int = (typing.get_args(tp)[0] if typing.get_origin(tp) is tuple else tp) is int
    value = int(bad) if is_int else float(bad)
    return show((value,)) if typing.get_origin(tp) is tuple else show(value)


def _cases() -> list[tuple[str, str, str]]:
    from hypernet.experiments import EXPERIMENTS
    from hypernet.experiments.settings import rule_of

    cases = []
    for name, exp in sorted(EXPERIMENTS.items()):
        hints = typing.get_type_hints(exp.config_cls)
        for f in dataclasses.fields(exp.config_cls):
            if _numeric(hints[f.name]):
                cases.append((name, f.name, _out_of_range(rule_of(f), hints[f.name]) if rule_of(f).bounded else ""))
    return cases


@pytest.mark.parametrize(("name", "key", "value"), _cases())
def test_every_numeric_setting_out_of_range_exits_2_and_writes_nothing(
    name: str, key: str, value: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert value, f"{name}: numeric setting {key} declares no range"
    monkeypatch.chdir(tmp_path)  # the default run folder would be made under ./runs
    for out in ([], ["--out", str(tmp_path / "out")]):
        assert main(["run", name, "--set", f"{key}={value}", *out]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"hypernet: error: --set {key}={value}: expected "), err
    assert list(tmp_path.iterdir()) == []


def test_every_setting_is_listed_by_help(capsys: pytest.CaptureFixture[str]) -> None:
    from hypernet.experiments import EXPERIMENTS
    from hypernet.experiments.settings import rule_of, show, type_text

    for name, exp in EXPERIMENTS.items():
        assert main(["run", name, "--help"]) == 0
        text = capsys.readouterr().out
        assert f"{name}: {exp.description}" in text and "--set" in text
        hints = typing.get_type_hints(exp.config_cls)
        for f in dataclasses.fields(exp.config_cls):
            meaning = rule_of(f).meaning
            assert meaning, f"{name}.{f.name} has no meaning"
            default = show(f.default) if f.default != "" else '""'
            assert f"  {f.name} ({type_text(hints[f.name])}, default {default}" in text, (name, f.name)
            assert meaning in text
    assert main(["demo", "--help"]) == 0 and "parametrizations (words, comma-separated" in capsys.readouterr().out


def test_tuples_parse_in_the_friendly_forms() -> None:
    from hypernet.experiments import get

    exp = get("rotation-widths")
    for raw, expected in (("800", (800,)), ("50,200", (50, 200)), ("(800,)", (800,)), ("[50, 200]", (50, 200))):
        assert exp.make_config({"n_f_values": raw}).n_f_values == expected


def test_out_folder_that_is_not_a_run_is_refused_and_untouched(tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    (out / "summary.json").write_text('{"mine": true}')
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir()}
    res = _cli("run", "split-digits", "--quick", "--out", str(out))
    assert res.returncode == 2 and "not empty and not a run" in res.stderr, res.stderr
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir()} == before
    (tmp_path / "file").write_text("x")
    assert main(["run", "split-digits", "--out", str(tmp_path / "file")]) == 2
    # a folder below a file cannot be created: refused before anything runs, naming the file
    res = _cli("run", "split-digits", "--quick", "--out", str(tmp_path / "file" / "sub"))
    assert res.returncode == 2 and f"{tmp_path / 'file'} is a file" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr


def test_run_folders_of_runs_started_together_differ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import secrets

    from hypernet.experiments.rundir import new_run_dir

    # two runs in the same second drawing the same suffix: the second must not reuse the folder
    suffixes = iter(["aaaaaa", "aaaaaa", "bbbbbb"])
    monkeypatch.setattr(secrets, "token_hex", lambda n: next(suffixes))
    monkeypatch.setattr(time, "strftime", lambda fmt: "20250101-000000")
    a, b = new_run_dir(tmp_path, "x"), new_run_dir(tmp_path, "x")
    assert (a.name, b.name) == ("x-20250101-000000-aaaaaa", "x-20250101-000000-bbbbbb")
    monkeypatch.undo()
    # and for real: two processes started at once, no --out
    args = [sys.executable, "-m", "hypernet", "run", "split-digits", "--quick", "--set", "steps=3", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL) for _ in range(2)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    runs = sorted((tmp_path / "runs").iterdir())
    assert len(runs) == 2 and all((r / "summary.json").exists() for r in runs)


def test_two_claims_of_one_folder_cannot_both_win(tmp_path: Path) -> None:
    from hypernet.experiments.rundir import RunDirError, claim

    claim(tmp_path / "r", {"experiment": "a"})
    with pytest.raises(RunDirError, match="another run claimed"):
        claim(tmp_path / "r", {"experiment": "b"})
    assert json.loads((tmp_path / "r" / "config.json").read_text()) == {"experiment": "a"}
    assert [p.name for p in (tmp_path / "r").iterdir()] == ["config.json"]


def test_occupied_out_dir_is_protected(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(["run", "split-digits", "--quick", "--set", "steps=10", "--out", str(out), "--no-progress"]) == 0
    res = _cli("run", "split-digits", "--quick", "--set", "steps=10", "--out", str(out))
    assert res.returncode == 2 and "already holds a run; pass --resume" in res.stderr
    res = _cli("run", "ntk-drift", "--quick", "--out", str(out))
    assert res.returncode == 2 and "holds a run of split-digits; choose another folder" in res.stderr
    res = _cli("run", "ntk-drift", "--quick", "--out", str(out), "--resume")
    assert res.returncode == 2 and "holds a run of split-digits, not ntk-drift" in res.stderr
    (out / "config.json").write_text("{broken")
    res = _cli("report", str(out))
    assert res.returncode == 2 and f"{out / 'config.json'}: not a readable run config" in res.stderr


def test_killed_run_resumes_to_identical_summary_and_leftovers_are_cleaned(tmp_path: Path) -> None:
    args = ["run", "split-digits", "--quick", "--set", "steps=300", "--set", "checkpoint_every=20", "--no-progress"]
    ref = _cli(*args, "--out", str(tmp_path / "ref"))
    assert ref.returncode == 0, ref.stderr
    out = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "hypernet", *args, "--out", str(out)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while not list((out / "checkpoints").glob("hyper-mip-*.json")) and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (out / "summary.json").exists()
    # what a kill can leave: unfinished atomic writes, a tensor file whose JSON was never written,
    # and a third checkpoint when the kill came between writing a new one and removing the oldest
    ckpts = out / "checkpoints"
    leftovers = [out / ".summary.json.x1.tmp", ckpts / ".hyper-mip-00000099.safetensors.x2.tmp"]
    leftovers += [ckpts / "hyper-mip-00099999.safetensors"]
    newest = sorted(ckpts.glob("hyper-standard-*.json"))[-1]
    leftovers += [ckpts / "hyper-standard-00000001.json", ckpts / "hyper-standard-00000001.safetensors"]
    for path in leftovers:
        path.write_bytes(b"left over")
    kept = newest.read_bytes()
    resumed = _cli(*args, "--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "removed 5 leftover file(s)" in resumed.stdout
    assert not any(p.exists() for p in leftovers)
    assert newest.read_bytes() == kept
    assert json.loads((out / "summary.json").read_text()) == json.loads((tmp_path / "ref" / "summary.json").read_text())
    ref_metrics = (tmp_path / "ref" / "metrics.jsonl").read_text()
    assert (out / "metrics.jsonl").read_text() == ref_metrics


def test_sigterm_during_a_checkpoint_write_stops_with_a_line_and_leaves_nothing_half_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """SIGTERM (a scheduler stopping the job) arriving while a checkpoint's tensor file is being
    written: the run ends with exit 143 and one line, the temporary file is removed, the checkpoint
    never appears, the handler the caller had is put back, and `--resume` finishes the run."""
    import hypernet.train.checkpoint as checkpoint

    real_save = checkpoint.save_file
    calls = [0]

    def save_then_terminated(tensors: dict[str, Any], path: str) -> None:
        calls[0] += 1
        real_save(tensors, path)
        if calls[0] == 2:  # the second checkpoint: its tensors are in the temporary file
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises at once; this never finishes

    monkeypatch.setattr(checkpoint, "save_file", save_then_terminated)
    out = tmp_path / "run"
    args = ["run", "split-digits", "--quick", "--set", "steps=60", "--set", "checkpoint_every=20", "--no-progress"]
    before = signal.getsignal(signal.SIGTERM)
    assert main([*args, "--out", str(out)]) == 143
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "hypernet: stopped by SIGTERM; rerun with --resume to continue"
    )
    assert signal.getsignal(signal.SIGTERM) == before
    assert calls[0] == 2 and not list(out.rglob("*.tmp"))
    written = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert written == ["hyper-standard-00000020.json", "hyper-standard-00000020.safetensors"], written
    monkeypatch.setattr(checkpoint, "save_file", real_save)
    assert main([*args, "--out", str(out), "--resume"]) == 0
    assert (out / "summary.json").exists()


def test_resume_says_when_the_run_was_complete_or_has_no_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--resume of a finished run re-completes it, and of a run with no checkpoint (mip-ablation keeps
    none) starts over: each says so instead of doing it silently (from the new-user trial)."""
    out = tmp_path / "run"
    args = ["run", "split-digits", "--quick", "--set", "steps=10", "--no-progress", "--out", str(out)]
    assert main(args) == 0
    summary = (out / "summary.json").read_text()
    capsys.readouterr()
    assert main([*args, "--resume"]) == 0
    assert "the run was complete: each phase loads its last checkpoint" in capsys.readouterr().out
    assert (out / "summary.json").read_text() == summary
    shutil.rmtree(out / "checkpoints")
    (out / "summary.json").unlink()
    assert main([*args, "--resume"]) == 0
    assert f"no checkpoint in {out / 'checkpoints'} to resume from: the run starts" in capsys.readouterr().out
    assert (out / "summary.json").read_text() == summary


def test_set_data_dir_is_stored_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hypernet.cli import _absolute_data_dir

    (tmp_path / "mnist").mkdir()
    monkeypatch.chdir(tmp_path)
    sets = {"data_dir": "mnist", "lr": "0.1"}
    _absolute_data_dir(sets)
    assert sets == {"data_dir": str(tmp_path.resolve() / "mnist"), "lr": "0.1"}
    missing = {"data_dir": "nope"}
    _absolute_data_dir(missing)  # left for the setting's "expected empty or an existing folder"
    assert missing == {"data_dir": "nope"}
    empty = {"data_dir": ""}
    _absolute_data_dir(empty)
    assert empty == {"data_dir": ""}
