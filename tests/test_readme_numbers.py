"""Every number in the README's tables comes from a committed result file, written by the command the
README names: `docs/benchmarks/{designs,per_sample,kernels}.json` (`make bench`, `benchmarks/kernels.py`)
and `docs/results/<experiment>.json` (each run's `results.json`). Each README number is compared with
the file's unrounded value, the tolerance being half a unit in the last digit the README prints (the
rounding of the formatting, nothing more), so a hand-edited number or a stale table fails here.
"""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
BENCH = ROOT / "docs" / "benchmarks"
RESULTS = ROOT / "docs" / "results"
MB = 2**20  # the benchmarks print MiB


def _json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _section(heading: str) -> str:
    """The README text from the line `heading` to the next heading of the same or a higher level."""
    level = heading.split(" ")[0]
    lines = README.splitlines()
    start = lines.index(heading)
    end = next(
        (i for i in range(start + 1, len(lines)) if re.match(rf"#{{1,{len(level)}}} ", lines[i])),
        len(lines),
    )
    return "\n".join(lines[start + 1 : end])


def _table(text: str, first_column: str) -> list[list[str]]:
    """Rows (cells stripped) of the markdown table in `text` whose header starts with `first_column`."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(rf"\|\s*{re.escape(first_column)}\s*\|", line))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return rows


def _code_block(text: str, first_line: str | None = None) -> list[str]:
    """Lines of the first fenced code block in `text` (with `first_line` as its first line, if given)."""
    blocks = re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S)
    for block in blocks:
        lines = block.rstrip("\n").splitlines()
        if first_line is None or lines[0].strip().startswith(first_line):
            return lines
    raise AssertionError(f"no code block starting with {first_line!r}")


def _half_unit(text: str) -> float:
    """Half a unit in the last printed digit of `text` ("0.967" -> 5e-4, "7.1e-15" -> 5e-17, "1,234" -> 0.5)."""
    mantissa, _, exponent = text.lower().partition("e")
    decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
    return 0.5 * 10.0 ** (-decimals + (int(exponent) if exponent else 0))


def _agrees(text: str, value: float) -> bool:
    """Whether the printed number `text` ("16.0x", "34,763,274", "2.8e-07") is `value` rounded as printed.
    The 1e-9 relative slack covers only binary floating point at the rounding boundary."""
    number = float(text.replace(",", "").rstrip("x"))
    return abs(number - value) <= _half_unit(text.rstrip("x")) * (1 + 1e-9) + 1e-12 * abs(value)


def _check(text: str, value: float, what: str) -> None:
    assert _agrees(text, value), f"README {what}: {text}, but the result file says {value!r}"


def _results(experiment: str) -> dict[str, Any]:
    path = RESULTS / f"{experiment}.json"
    assert path.is_file(), f"{path} is missing: copy the run's results.json there (README, 'All with --seed 0')"
    results: dict[str, Any] = _json(path)
    assert results["experiment"] == experiment and results["seed"] == 0 and results["quick"] is False, path
    return results


def _numbers(text: str) -> list[str]:
    """The numbers of a prose list such as "0.26, 0.36, 0.26" or "256, 1024, 4096"."""
    return re.findall(r"-?\d+(?:\.\d+)?", text)


# --- the checker itself: a number off by more than its rounding is caught, rounding alone is not ---


def test_agrees_tolerates_rounding_and_nothing_more() -> None:
    assert _agrees("0.967", 0.96666) and _agrees("0.967", 0.9674999) and not _agrees("0.967", 0.9676)
    assert _agrees("16.0x", 16.04) and not _agrees("16.0x", 16.06)
    assert _agrees("34,763,274", 34763274) and not _agrees("34,763,274", 34763275)
    assert _agrees("2.8e-07", 2.78e-7) and not _agrees("2.8e-07", 2.86e-7)
    assert _agrees("-0.54", -0.5449) and not _agrees("-0.54", -0.546)


# --- benchmarks ---


def test_designs_table_is_designs_json() -> None:
    data = _json(BENCH / "designs.json")
    text = _section("## Hypernetwork designs")
    target = re.search(r"\(target: ([\d-]+ MLP), P = ([\d,]+); condition: \[B, (\d+)\]\)", text)
    assert target is not None, "README: the designs table's '(target: ..., P = ...; condition: ...)' line"
    assert target[1] == data["target"]
    _check(target[2], data["target_parameters"], "designs: P")
    rows = _table(text, "design")
    assert [r[0].strip("`") for r in rows] == [d["design"] for d in data["designs"]]
    for row, d in zip(rows, data["designs"]):
        assert target[3] == str(d["cond_features"])
        assert row[1] == d["output"], (row, d)
        assert row[2] == f"`[B, {d['cond_features']}] -> {d['weights_shape']}`", (row, d)
        _check(row[3], d["trainable_parameters"], f"{d['design']} trainable parameters")
        _check(row[4], d["numbers_generated"], f"{d['design']} numbers generated")


@pytest.mark.slow
def test_designs_json_is_what_the_script_gives_now() -> None:
    """The committed table is the current code's: a change of a design's size needs `make bench`."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import designs
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    numel, rows = designs.rows()
    data = _json(BENCH / "designs.json")
    assert data["target_parameters"] == numel and data["designs"] == rows, "rerun `make bench` (designs.json)"


def test_per_sample_table_is_per_sample_json() -> None:
    rows = _json(BENCH / "per_sample.json")
    lines = _code_block(_section("## Per-sample weights: speed"), "B")
    header = lines[0].split()
    assert header[:2] == ["B", "batched"], header
    assert len(lines) - 1 == len(rows)
    for line, r in zip(lines[1:], rows):
        cells = line.split()
        expected = [
            r["B"],
            *(r[k + "_s"] * 1e3 for k in ("batched", "vmap", "bmm", "loop")),
            r["loop_s"] / r["batched_s"],
            r["bmm_s"] / r["batched_s"],
            r["vmap_s"] / r["batched_s"],
            r["saved_bytes_batched"] / MB,
            r["saved_bytes_bmm"] / MB,
        ]
        assert len(cells) == len(expected), line
        for i, (cell, value) in enumerate(zip(cells, expected)):
            _check(cell, value, f"per-sample B = {r['B']}, column {i + 1}")


def test_kernel_table_is_kernels_json() -> None:
    rows = _json(BENCH / "kernels.json")
    lines = _code_block(_section("### Kernel speed"), "threads")
    # the setup line: as the run printed it, with the script's constants
    assert lines[0] == (BENCH / "kernels.txt").read_text().splitlines()[0]
    setup = re.fullmatch(r"threads \d+; d = (\d+), depth (\d+), weight_var ([\d.]+), bias_var ([\d.]+)", lines[0])
    assert setup is not None, lines[0]
    script = (ROOT / "benchmarks" / "kernels.py").read_text()
    assert f"D, DEPTH, WV, BV = {setup[1]}, {setup[2]}, {setup[3]}, {setup[4]}" in script
    body = lines[2:]
    assert [(c.split()[0], int(c.split()[1])) for c in body] == [(r["kernel"], r["N"]) for r in rows]
    for line, r in zip(body, rows):
        cells = line.split()[2:]
        what = f"kernel speed {r['kernel']} N = {r['N']}"
        _check(cells[0], r["ours"]["seconds"], what + ", ours s")
        _check(cells[1], r["ours"]["peak_rss_bytes"] / MB, what + ", peak MB")
        nt = r["neural_tangents"]
        if not nt["available"]:
            assert cells[2:] == ["n/a"] * 4, line
            continue
        _check(cells[2], nt["seconds"], what + ", NT s")
        _check(cells[3], nt["peak_rss_bytes"] / MB, what + ", NT peak MB")
        _check(cells[4], nt["seconds"] / r["ours"]["seconds"], what + ", NT/ours")
        off, diag = cells[5].split("/")
        _check(off, r["max_abs_diff_offdiag"], what + ", off-diagonal difference")
        _check(diag, r["max_abs_diff_diag"], what + ", diagonal difference")
    # the prose under the table: off the diagonal to 1e-14, on it off by up to ~3e-7
    text = _section("### Kernel speed")
    analytic = [r for r in rows if r["kernel"] != "empirical_ntk" and r["neural_tangents"]["available"]]
    assert "agree with neural-tangents to 1e-14" in text
    assert max(r["max_abs_diff_offdiag"] for r in analytic) < 1e-14
    bound = re.search(r"off by up to ~(\S+) there", text.replace("\n", " "))
    assert bound is not None
    _check(bound[1], float(f"{max(r['max_abs_diff_diag'] for r in analytic):.0e}"), "kernel diagonal bound")


# --- experiments: docs/results/<experiment>.json, each the results.json of the run the README names ---


def test_demo_table_is_the_demo_run() -> None:
    results = _results("split-digits")
    assert results["command"] == "hypernet demo --seed 0"
    section = _section("## The main job: `hypernet demo`")
    assert "Results of `hypernet demo --seed 0`" in section
    models = results["summary"]["models"]
    rows = _table(section, "model")
    assert sorted(r[0] for r in rows) == sorted(models)
    for name, params, per_task, mean in rows:
        res = models[name]
        _check(params, res["trainable_parameters"], f"demo {name} parameters")
        accs = per_task.split(", ")
        assert len(accs) == len(res["per_task_acc"]), name
        for i, (text, value) in enumerate(zip(accs, res["per_task_acc"])):
            _check(text, value, f"demo {name} task {i}")
        _check(mean, res["mean_acc"], f"demo {name} mean")
    images = re.search(r"(\d+) training images per\s+task", section)
    assert images is not None and int(images[1]) == results["config"]["train_per_task"]


def _experiment_rows() -> dict[str, list[str]]:
    rows = _table(_section("### The paper's claims, rerun"), "experiment")
    return {r[0].strip("`"): r for r in rows}


def test_experiment_table_lists_runs_with_results() -> None:
    for name, row in _experiment_rows().items():
        assert row[1].strip("`").split()[:3] == ["hypernet", "run", name], row
        if (RESULTS / f"{name}.json").exists():
            assert _results(name)["command"].split()[:3] == ["hypernet", "run", name], name


def test_readme_figures_are_committed() -> None:
    figures = re.findall(r"!\[[^\]]*\]\((docs/figures/[^)]+)\)", README)
    assert len(figures) >= 6
    for path in figures:
        assert (ROOT / path).is_file(), path


def test_kernel_convergence_numbers() -> None:
    results = _results("kernel-convergence")
    row = _experiment_rows()["kernel-convergence"][2]
    slope = re.search(r"error slope (\S+) on log-log axes \(theory: (\S+)\)", row)
    assert slope is not None, row
    _check(slope[1], results["summary"]["fit"]["ntk_single_slope"], "kernel-convergence slope")
    _check(slope[2], results["summary"]["fit"]["expected_slope"], "kernel-convergence theory slope")
    text = _section("### The paper's claims, rerun").replace("\n", " ")
    draws = re.search(r"with (\d+) networks it cannot resolve", text)
    assert draws is not None and int(draws[1]) == results["config"]["nngp_draws"]


def test_ntk_drift_numbers() -> None:
    results = _results("ntk-drift")
    row = _experiment_rows()["ntk-drift"][2]
    found = re.search(
        r"over (\d+) GD steps the NTK moves (.+?) with `n_g = (\d+)` as `n_f` goes (.+?) \(.*?\), "
        r"but (.+?) as `n_g` goes (.+?) at `n_f = (\d+)`",
        row,
    )
    assert found is not None, row
    steps, moves_a, n_g, n_fs, moves_b, n_gs, n_f = found.groups()
    assert int(steps) == results["config"]["steps"]
    sweeps = results["summary"]
    # the README lists each sweep by increasing width (the JSON's keys are sorted as strings)
    a = sorted(sweeps["wide_f_narrow_g"].values(), key=lambda r: r["n_f"])
    b = sorted(sweeps["wide_g"].values(), key=lambda r: r["n_g"])
    assert [int(v) for v in _numbers(n_fs)] == [r["n_f"] for r in a] and {r["n_g"] for r in a} == {int(n_g)}
    assert [int(v) for v in _numbers(n_gs)] == [r["n_g"] for r in b] and {r["n_f"] for r in b} == {int(n_f)}
    for texts, runs in ((moves_a, a), (moves_b, b)):
        values = _numbers(texts)
        assert len(values) == len(runs), texts
        for text, r in zip(values, runs):
            _check(text, r["ntk_rel_change"], f"ntk-drift n_f = {r['n_f']}, n_g = {r['n_g']}")


def test_hyperkernel_images_table() -> None:
    results = _results("hyperkernel-images")
    section = _section("### The paper's claims, rerun")
    psnr = results["summary"]["psnr"]
    rows = _table(section, "method")
    assert sorted(r[0] for r in rows) == sorted(psnr)
    for method, mnist, sample in rows:
        _check(mnist, psnr[method]["mnist_completion_psnr_db"], f"{method} MNIST PSNR")
        _check(sample, psnr[method]["sample_images_psnr_db"], f"{method} sample-images PSNR")
    cfg = results["config"]
    setup = re.search(
        r"bottom halves of (\d+) test digits predicted from their top\s+halves, (\d+) training digits x (\d+) "
        r"pixels; sample images: (\d+)% of pixels predicted from (\d+)%",
        section,
    )
    assert setup is not None
    assert [int(v) for v in setup.groups()[:3]] == [cfg["test_digits"], cfg["train_digits"], cfg["pixels_per_digit"]]
    assert int(setup[5]) == round(100 * cfg["observed_fraction"]) and int(setup[4]) + int(setup[5]) == 100


def test_rotation_widths_setup_and_grid() -> None:
    results = _results("rotation-widths")
    cfg = results["config"]
    text = _section("### The paper's claims, rerun")
    flat = text.replace("\n", " ")
    setup = re.search(
        r"\(([\d,]+) training images from the (\w+) split, ([\d,]+) test images from the test split, "
        r"(SGD|Adam) lr ([\d.]+)( without momentum)?, batch (\d+), (\d+) epochs, angles drawn per batch\)",
        flat,
    )
    assert setup is not None, "README: the rotation-widths setup '(N training images from the ... epochs, ...)'"
    assert (int(setup[1].replace(",", "")), setup[2], int(setup[3].replace(",", ""))) == (
        cfg["n_train"], cfg["train_split"], cfg["n_test"],
    )  # fmt: skip
    assert (setup[4].lower(), float(setup[5]), int(setup[7]), int(setup[8])) == (
        cfg["optimizer"], cfg["lr"], cfg["batch_size"], cfg["epochs"],
    )  # fmt: skip
    assert (setup[6] is not None) == (cfg["momentum"] == 0) and cfg["fresh_angles"] and cfg["standardize"]
    assert math.isclose(results["summary"]["chance_error"], 1 - 1 / cfg["classes"])
    assert f"{results['seconds']:.0f} s" in flat  # the run's own wall time, as the README states it
    rows = _table(text, "hypernetwork width n_f")
    runs = results["summary"]["runs"]
    assert [int(r[0]) for r in rows] == cfg["n_f_values"] and len(rows[0]) == 1 + len(cfg["n_g_values"])
    for row, n_f in zip(rows, cfg["n_f_values"]):
        for cell, n_g in zip(row[1:], cfg["n_g_values"]):
            _check(cell, runs[f"n_f={n_f},n_g={n_g}"]["test_error"], f"rotation-widths n_f={n_f} n_g={n_g}")


def test_peers_tables_are_the_committed_runs() -> None:
    """The peers tables are the `table` text `benchmarks/peers.py` wrote into its JSON files, verbatim
    (the full run with its load line; the one-thread shared run from its first table on: the ratios
    with their interquartile ranges, and where each library's step goes)."""
    section = _section("## Beside the other libraries")
    full = _json(BENCH / "peers.json")
    assert full["table"] in section
    shared = _json(BENCH / "peers_shared.json")
    table = shared["table"]
    assert table[table.index("Shared weights, task-conditioned") :] in section
    rows = [line for line in table.splitlines() if line.startswith("| 784")]
    libraries = len(shared["shared"][0]["seconds"])
    assert len(rows) == 2 * (1 + libraries), f"expected the ratio rows and {libraries} phase rows per target"
    # the prose: the range of the peers' medians, each target's span of interquartile ranges, and
    # "every range holds 1.00x" (a rerun that breaks it must change the prose)
    quartiles = {
        row["target"]: {k: v for k, v in row["ratio_quartiles"].items() if k != "hypernet"} for row in shared["shared"]
    }
    medians = [q[1] for by_peer in quartiles.values() for q in by_peer.values()]
    assert f"medians lie between {min(medians):.2f}x and {max(medians):.2f}x" in section
    for target, by_peer in quartiles.items():
        low, high = min(q[0] for q in by_peer.values()), max(q[2] for q in by_peer.values())
        assert f"{low:.2f} to {high:.2f} on {target}" in section
        assert all(q[0] <= 1.0 <= q[2] for q in by_peer.values()), f"{target}: a range excludes 1.00x"
    # the fastest peer's medians in both runs, the full run's range of medians
    for run, before, after in ((shared, "(", ")"), (full, "hyperlight ", ")")):
        low, high = sorted(row["ratio_quartiles"]["hyperlight"][1] for row in run["shared"])
        assert f"{before}{low:.2f}x and {high:.2f}x{after}" in section
    full_medians = [q[1] for row in full["shared"] for k, q in row["ratio_quartiles"].items() if k != "hypernet"]
    assert f"medians {min(full_medians):.2f}x to {max(full_medians):.2f}x" in section
    # the fixed build orders: each peer's median on the small target, as the prose lists them
    for name in ("peers_shared_hypernet_first", "peers_shared_hypernet_last"):
        fixed = _json(BENCH / f"{name}.json")
        assert len(fixed["shared"][0]["build_orders"]) == 1, f"{name}: expected one fixed build order"
        q = fixed["shared"][0]["ratio_quartiles"]
        listed = ", ".join(f"{k} {q[k][1]:.2f}x" for k in ("hyperlight", "hypnettorch", "hyper-nn"))
        assert f"`docs/benchmarks/{name}.json`" in section and listed in " ".join(section.split())
    # the prose's trainable-parameter counts are those of both runs, every library alike
    for run in (full, shared):
        for row in run["shared"]:
            counts = set(row["trainable_parameters"].values())
            assert len(counts) == 1, f"{row['target']}: libraries differ in trainable parameters {counts}"
            assert f"{counts.pop():,}" in section


def test_inr_table() -> None:
    results = _results("inr")
    section = _section("### Functional representations: `inr`")
    summary, cfg = results["summary"], results["config"]
    digits, patches = summary["digits"], summary["patches"]
    sr = patches["super_resolution"]
    rows = {r[0]: r[1:] for r in _table(section, "method")}
    assert sorted(rows) == ["embedding (equal parameters)", "hypernetwork", "one network per image"]
    for name, key in (("hypernetwork", "hypernetwork"), ("embedding (equal parameters)", "embedding")):
        mean_sd, first, patch, patch_first, up, params, seconds = rows[name]
        mean, sd = mean_sd.split(" ± ")
        _check(mean, digits[key]["psnr_db"]["mean"], f"inr {name} digits PSNR")
        _check(sd, digits[key]["psnr_db"]["std"], f"inr {name} digits PSNR sd")
        _check(first, digits[key]["fit_subset_psnr_db"]["mean"], f"inr {name} digits subset PSNR")
        _check(patch, patches[key]["psnr_db"]["mean"], f"inr {name} patches PSNR")
        _check(patch_first, patches[key]["fit_subset_psnr_db"]["mean"], f"inr {name} patches subset PSNR")
        _check(up, sr[key]["fit_subset_psnr_db"], f"inr {name} 2x PSNR")
        _check(params, digits[key]["trainable_parameters"], f"inr {name} parameters")
        _check(seconds, digits[key]["train_seconds"]["mean"], f"inr {name} seconds")
    _, first, _, patch_first, up, params, seconds = rows["one network per image"]
    fit = digits["per_image_fit"]
    _check(first, fit["fit_subset_psnr_db"], "inr per-image digits PSNR")
    _check(patch_first, patches["per_image_fit"]["fit_subset_psnr_db"], "inr per-image patches PSNR")
    _check(up, sr["per-image fit"]["fit_subset_psnr_db"], "inr per-image 2x PSNR")
    _check(params, fit["weights_per_image"], "inr per-image weights")
    _check(seconds, fit["seconds_per_image"], "inr per-image seconds")
    text = section.replace("\n", " ")
    setup = re.search(
        r"(\d+) seeds, ([\d,]+) training and ([\d,]+) held-out MNIST digits, ([\d,]+) steps; the first (\d+) "
        r"held-out images fitted one network each \(([\d,]+) steps\)",
        text,
    )
    assert setup is not None
    numbers = [int(v.replace(",", "")) for v in setup.groups()]
    assert numbers == [
        cfg["seeds"],
        cfg["train_images"],
        cfg["test_images"],
        cfg["steps"],
        cfg["fit_images"],
        cfg["fit_steps"],
    ]
    assert len(digits["hypernetwork"]["psnr_db"]["per_seed"]) == cfg["seeds"]
    bicubic = re.search(r"bicubic upsampling reaches ([\d.]+) dB", text)
    assert bicubic is not None
    _check(bicubic[1], sr["bicubic"]["fit_subset_psnr_db"], "inr bicubic PSNR")
    hyper, embed = digits["hypernetwork"]["psnr_db"], digits["embedding"]["psnr_db"]
    gap = re.search(r"by ([\d.]+) dB on the mean", text)
    assert gap is not None
    _check(gap[1], hyper["mean"] - embed["mean"], "inr PSNR gap")
    assert min(hyper["per_seed"]) > max(embed["per_seed"])  # "in each of the 3 seeds"
    assert hyper["mean"] - embed["mean"] > 5 * max(hyper["std"], embed["std"])
    sizes = re.search(r"to the ([\d,]+) weights of the network.*widened to (\d+) so", text)
    assert sizes is not None
    assert int(sizes[1].replace(",", "")) == digits["hypernetwork"]["generated_weights"]
    assert int(sizes[2]) == digits["embedding"]["width"]
    split = re.search(r"(\d+) for training, (\d+) held out", text)
    assert split is not None and [int(split[1]), int(split[2])] == [patches["train_images"], patches["test_images"]]
    wall = re.search(r"([\d,]+) s wall", text)
    assert wall is not None
    _check(wall[1], results["seconds"], "inr wall time")
    assert "hypernet run inr --data-dir" in text and results["command"].startswith("hypernet run inr")


def test_hyperparameter_sweep_numbers() -> None:
    results = _results("hyperparameter-sweep")
    s, cfg = results["summary"], results["config"]
    section = _section("### Hyperparameter-conditioned training: `hyperparameter-sweep`")
    text = section.replace("\n", " ")
    setup = re.search(
        r"784-(\d+)-10\) trained on ([\d,]+) MNIST training images.*?validation loss on ([\d,]+) other.*?"
        r"Separate: (\d+) runs of ([\d,]+) steps.*?over \[(\S+), (\S+)\].*?"
        r"weights `theta0 \+ A enc\(z\)`, ([\d,]+) steps with (\d+) `lambda`",
        text,
    )
    assert setup is not None, "README: the hyperparameter-sweep setup sentence"
    got = [int(setup[i].replace(",", "")) for i in (1, 2, 3, 4, 5, 8, 9)]
    assert got == [
        cfg["hidden"][0],
        cfg["n_train"],
        cfg["n_val"],
        cfg["grid"],
        cfg["steps"],
        cfg["cond_steps"],
        cfg["values_per_step"],
    ]
    assert cfg["hyper_hidden"] == [] and (float(setup[6]), float(setup[7])) == (cfg["wd_low"], cfg["wd_high"])
    rows = _table(section, "seed")
    expected = [(str(r["seed"]), r["picks"], r["gaps"], r) for r in s["per_seed"]]
    expected.append(("mean curve", s["mean"]["picks"], s["mean"]["gaps"], None))
    assert [r[0] for r in rows] == [e[0] for e in expected]
    for row, (label, p, g, run) in zip(rows, expected):
        what = f"hyperparameter-sweep {label}"
        _check(row[1], p["separate_best"], what + " separate pick")
        _check(row[2], p["conditioned_best"], what + " conditioned pick")
        _check(row[3], p["distance_grid_steps"], what + " distance")
        _check(row[4], p["separate_min_loss"], what + " separate min loss")
        _check(row[5], p["conditioned_min_loss"], what + " conditioned loss")
        _check(row[6], g["mean_abs_gap"], what + " gap")
        _check(row[7].rstrip("%"), 100 * p["separate_variation"], what + " variation")
        if run is None:
            assert row[8] == "-"
            continue
        sep_test, cond_test = row[8].split(" / ")
        _check(sep_test, run["separate_test_loss_at_pick"], what + " separate test loss")
        _check(cond_test, run["conditioned"]["test_loss_at_pick"], what + " conditioned test loss")
    cost = {r[0]: r[1:] for r in _table(section, "arm")}
    for arm in ("separate", "conditioned"):
        c = s["cost"][arm]
        for cell, value in zip(cost[arm], (c["steps"], c["wall_s"], c["cpu_s"])):
            _check(cell, value, f"hyperparameter-sweep {arm} cost")
    ratio = s["cost"]["ratio"]
    for cell, value in zip(cost["conditioned / separate"], (ratio["steps"], ratio["wall"], ratio["cpu"])):
        _check(cell, value, "hyperparameter-sweep cost ratio")
    assert f"`{results['command']}`" in text
    wall = re.search(r"`, ([\d,.]+) s wall", text)
    assert wall is not None
    _check(wall[1], results["seconds"], "hyperparameter-sweep wall time")


UNCERTAINTY_LABELS = {
    "single network": "single",
    "MC dropout": "mc-dropout",
    "deep ensemble": "deep-ensemble",
    "hypernetwork": "hypernet",
}
UNCERTAINTY_COLUMNS = (
    "accuracy",
    "nll",
    "ece",
    "auroc_heldout",
    "auroc_rotated",
    "mi_auroc_heldout",
    "mi_auroc_rotated",
)


def _mean_sd(cell: str, mean: float, sd: float, what: str, scale: float = 1.0) -> None:
    """A README cell "98.40 ± 0.10" against a mean and sd (times `scale`, e.g. 100 for %)."""
    m, s = (c.strip() for c in cell.split("±"))
    _check(m.replace("−", "-").lstrip("+"), scale * mean, what + " mean")
    _check(s, scale * sd, what + " sd")


def test_uncertainty_tables_are_uncertainty_json() -> None:
    results = _results("uncertainty")
    assert results["command"].split()[:3] == ["hypernet", "run", "uncertainty"]
    section = _section("### Uncertainty: `uncertainty`")
    assert results["command"] in section.replace("\n", " ")
    summary = results["summary"]
    models = summary["models"]
    rows = _table(section, "method")
    assert sorted(UNCERTAINTY_LABELS[r[0]] for r in rows) == sorted(models)
    for label, *cells, params, seconds in rows:
        res = models[UNCERTAINTY_LABELS[label]]
        for key, cell in zip(UNCERTAINTY_COLUMNS, cells, strict=True):
            if key not in res:  # the single network has no members, so no mutual information
                assert cell == "-", f"uncertainty {label} {key}: expected '-', got {cell!r}"
                continue
            _mean_sd(
                cell, res[key], res[key + "_std"], f"uncertainty {label} {key}", 100.0 if key == "accuracy" else 1.0
            )
        _check(params, res["trainable_parameters"], f"uncertainty {label} parameters")
        _mean_sd(seconds, res["train_seconds"], res["train_seconds_std"], f"uncertainty {label} training seconds")
    gap = _table(section, "difference")
    assert len(gap) == 1 and len(gap[0]) == 1 + len(UNCERTAINTY_COLUMNS)
    for key, cell in zip(UNCERTAINTY_COLUMNS, gap[0][1:], strict=True):
        g = summary["gap_hypernet_minus_ensemble"][key]
        _mean_sd(cell, g["mean"], g["std"], f"uncertainty gap {key}", 100.0 if key == "accuracy" else 1.0)
    verdicts = re.search(
        r"AUROC on digits 5–9 (reached|not reached), AUROC on rotated digits (reached|not reached), "
        r"ECE (reached|not reached); by mutual information, AUROC on digits 5–9 (reached|not reached), "
        r"AUROC on rotated digits (reached|not reached)",
        section.replace("\n", " "),
    )
    assert verdicts is not None, "README: the verdict sentence on the issue's bar against MC dropout"
    crit = summary["criteria"]
    flags = [
        crit["auroc_heldout_at_least_mc_dropout"],
        crit["auroc_rotated_at_least_mc_dropout"],
        crit["ece_at_most_mc_dropout"],
        crit["mi_auroc_heldout_at_least_mc_dropout"],
        crit["mi_auroc_rotated_at_least_mc_dropout"],
    ]
    assert [v == "reached" for v in verdicts.groups()] == flags
    wall = re.search(r"([\d,]+) s wall", section)
    assert wall is not None and int(wall[1].replace(",", "")) == round(results["seconds"])
    setup = re.search(r"(\d+) seeds", section)
    assert setup is not None and int(setup[1]) == results["config"]["seeds"] == len(summary["seeds"])
    text = section.replace("\n", " ")
    images = re.search(
        r"all ([\d,]+) training images.*?on the ([\d,]+) test digits 0–4.*?the ([\d,]+) test digits 5–9", text
    )
    assert images is not None
    counts = [int(v.replace(",", "")) for v in images.groups()]
    assert counts == [summary["images"][k] for k in ("train", "test", "heldout")]
    cfg = results["config"]
    assert f"`β = {cfg['kl_weight']:g}`" in text and f"dropout rate {cfg['dropout']:g}" in text
    assert f"{cfg['steps']:,} Adam steps" in text and f"of {cfg['batch_size']} images" in text
    assert f"`K = {cfg['train_members']}`" in text and f"draws {cfg['eval_members']} members" in text
    spread = re.search(
        r"disagreement is (\d+(?:\.\d+)?) on the test digits and (\d+(?:\.\d+)?) on digits 5–9, "
        r"where the deep ensemble's is (\d+(?:\.\d+)?)",
        text,
    )
    assert spread is not None
    hyper, ens = models["hypernet"], models["deep-ensemble"]
    _check(spread[1], hyper["disagreement_test"], "uncertainty disagreement on test digits")
    _check(spread[2], hyper["disagreement_heldout"], "uncertainty disagreement on digits 5-9")
    _check(spread[3], ens["disagreement_heldout"], "uncertainty ensemble disagreement on digits 5-9")
    best = re.search(r"seed 2 reaches (\d+(?:\.\d+)?) on digits 5–9", text)
    assert best is not None and summary["seeds"][2] == 2
    _check(best[1], hyper["seeds"][2]["auroc_heldout"], "uncertainty seed 2 AUROC")
    mutual = re.search(
        r"mutual information on digits 5–9 is (\d+\.\d+) nats, against (\d+\.\d+) for MC dropout and "
        r"(\d+\.\d+) for the deep ensemble.*?test digits \(mutual information (\d+\.\d+), against "
        r"(\d+\.\d+) for the deep ensemble\)",
        text,
    )
    assert mutual is not None
    mc = models["mc-dropout"]
    for cell, value in zip(
        mutual.groups(), (hyper["mi_heldout"], mc["mi_heldout"], ens["mi_heldout"], hyper["mi_test"], ens["mi_test"])
    ):
        _check(cell, value, "uncertainty mean mutual information")
    tuning = _json(RESULTS / "uncertainty-tuning.json")
    total = re.search(r"([\d,]+) s of wall time in all", text)
    parts = [p["seconds"] for m in ("hypernet", "mc-dropout") for p in tuning[m]["parts"]]
    assert total is not None and int(total[1].replace(",", "")) == round(sum(parts))
    chosen = re.search(r"scores above the chosen MC dropout \((\d+\.\d+) against (\d+\.\d+)", text)
    assert chosen is not None
    for cell, m in zip(chosen.groups(), ("hypernet", "mc-dropout")):
        _check(cell, tuning[m]["grid"][tuning[m]["chosen"]]["score"], f"uncertainty tuning {m} chosen score")
    checked = re.search(r"hypernetwork scores (\d+\.\d+) ± (\d+\.\d+) and MC dropout (\d+\.\d+) ± (\d+\.\d+)", text)
    assert checked is not None
    for cells, m in ((checked.groups()[:2], "hypernet"), (checked.groups()[2:], "mc-dropout")):
        check = tuning[m]["seed_check"]
        assert check["seeds"] == [100, 101, 102] and check["rows"][0]["setting"] == tuning[m]["chosen_setting"]
        _mean_sd(" ± ".join(cells), check["score_mean"], check["score_std"], f"uncertainty seed check {m}")
    extra = re.search(r"the seed check took another (\d+) s", text)
    seconds = sum(tuning[m]["seed_check"]["seconds"] for m in ("hypernet", "mc-dropout"))
    assert extra is not None and int(extra[1]) == round(seconds)
    ratio = re.search(r"has (\d+) times the trainable parameters", text)
    assert ratio is not None
    _check(ratio[1], hyper["trainable_parameters"] / models["single"]["trainable_parameters"], "parameter ratio")


def test_uncertainty_tuning_table_is_its_json() -> None:
    """The validation grid of tools/uncertainty_tuning.py as the README shows it, row by row in grid
    order, and the chosen settings being the experiment's defaults in the full run."""
    tuning = _json(RESULTS / "uncertainty-tuning.json")
    section = _section("### Uncertainty: `uncertainty`")
    rows = _table(section, "tuned")
    grid = [("hypernetwork", r) for r in tuning["hypernet"]["grid"]] + [
        ("MC dropout", r) for r in tuning["mc-dropout"]["grid"]
    ]
    assert len(rows) == len(grid)
    for (method, entry), (label, setting, score, nll, ece) in zip(grid, rows, strict=True):
        assert label.strip("*") == method
        chosen = tuning["hypernet" if method == "hypernetwork" else "mc-dropout"]["chosen_setting"]
        assert label.startswith("**") == (entry["setting"] == chosen), f"tuning row {setting}: bold marks the choice"
        for key, value in entry["setting"].items():
            word = {
                "kl_weight": "β",
                "dropout": "rate",
                "hyper_rank": "rank",
                "noise_dim": "noise",
                "train_members": "draws",
                "hyper_generate": "",
                "hyper_entropy": "",
            }[key]
            text = f"{word} {value:g}" if isinstance(value, (int, float)) and word else str(value)
            if key == "hyper_rank" and value == 0:
                text = "all weights"
            assert text in setting, f"tuning row {setting}: {key}={value}"
        _check(score, entry["score"], f"tuning {setting} score")
        _check(nll, entry["metrics"]["nll"], f"tuning {setting} NLL")
        _check(ece, entry["metrics"]["ece"], f"tuning {setting} ECE")
    cfg = _results("uncertainty")["config"]
    for method in ("hypernet", "mc-dropout"):
        for key, value in tuning[method]["chosen_setting"].items():
            assert cfg[key] == value, f"the full run's {key} is not the tuned choice"


# --- continual learning (issue #14): split-MNIST, permuted-MNIST-10, few-shot transfer ---

CONTINUAL_LABELS = {
    "joint (upper bound)": "joint",
    "one network per task": "per-task",
    "**hnet**": "hnet",
    "online EWC": "online-ewc",
    "EWC": "ewc",
    "fine-tuning (lower bound)": "finetune",
    "SI": "si",
}


def _summary(experiment: str) -> dict[str, Any]:
    """The run's summary from docs/results: a results.json (summary inside) or, for runs committed
    before results.json existed, the summary itself."""
    data: dict[str, Any] = _json(RESULTS / f"{experiment}.json")
    if "summary" in data:
        assert data["experiment"] == experiment and data["quick"] is False, experiment
        return data["summary"]  # type: ignore[no-any-return]
    return data


def _pm(cell: str, mean: float, sd: float, what: str) -> None:
    printed_mean, printed_sd = (c.strip().strip("*") for c in cell.split("±"))
    _check(printed_mean, mean, what)
    _check(printed_sd, sd, what + " sd")


@pytest.mark.parametrize(
    ("experiment", "marker"), [("split-mnist", "**split-MNIST**"), ("permuted-mnist", "**permuted-MNIST-10**")]
)
def test_continual_tables_are_their_results(experiment: str, marker: str) -> None:
    section = _section("## Continual learning: `split-mnist`, `permuted-mnist`")
    text = section[section.index(marker) :]
    rows = _table(text, "method")
    summary = _summary(experiment)
    methods = summary["methods"]
    assert sorted(CONTINUAL_LABELS[r[0]] for r in rows) == sorted(methods), experiment
    for label, acc, forgetting, class_il, params, stored in rows:
        r = methods[CONTINUAL_LABELS[label]]
        what = f"{experiment} {label}"
        _pm(acc, 100 * r["mean_acc"], 100 * r["mean_acc_std"], what + " task-IL")
        if forgetting == "–":  # joint training has no "right after learning a task"
            assert CONTINUAL_LABELS[label] == "joint"
        elif "±" in forgetting:
            _pm(forgetting.replace("−", "-"), 100 * r["forgetting"], 100 * r["forgetting_std"], what + " forgetting")
        else:
            _check(forgetting, 100 * r["forgetting"], what + " forgetting")
            assert r["forgetting_std"] == 0, what
        _pm(class_il, 100 * r["class_il_acc"], 100 * r["class_il_acc_std"], what + " class-IL")
        assert int(params.replace(",", "")) == r["trainable_parameters"], what
        _check(stored, r["stored_bytes"] / 1024, what + " stored KiB")
    # the rows are in the order of task-IL accuracy, best first
    accs = [methods[CONTINUAL_LABELS[r[0]]]["mean_acc"] for r in rows]
    assert accs == sorted(accs, reverse=True), experiment


def test_continual_published_figures_are_the_quoted_ones() -> None:
    section = _section("## Continual learning: `split-mnist`, `permuted-mnist`")
    for experiment in ("split-mnist", "permuted-mnist"):
        published = _summary(experiment)["published"]["task_incremental_pct"]
        for method, value in published.items():
            shown = f"{value:.2f}%" if experiment == "split-mnist" and method == "hnet" else f"{value}%"
            assert shown in section, (experiment, method, shown)


def test_transfer_table_is_its_results() -> None:
    section = _section("## Continual learning: `split-mnist`, `permuted-mnist`")
    rows = _table(section, "arm")
    summary = _summary("split-mnist-transfer")
    labels = {
        "hypernetwork, new embedding only": "hnet-embedding",
        "plain network, fine-tuned": "finetune-plain",
        "plain network, from scratch": "scratch",
    }
    assert sorted(labels[r[0]] for r in rows) == sorted(summary["arms"])
    assert summary["shots"] == [10, 50, 200, 1000]
    for label, trained, *cells in rows:
        arm = labels[label]
        assert int(trained.replace(",", "")) == summary["trainable_on_new_task"][arm], label
        for shots, cell in zip(summary["shots"], cells, strict=True):
            res = summary["arms"][arm][str(shots)]
            _pm(cell, 100 * res["mean"], 100 * res["std"], f"transfer {label} n={shots}")


# --- MIP + modularity (issue #13) and the low-rank memory benchmark (issue #16) ---


def _bounded(cell: str) -> tuple[str, str]:
    """("<=", "33") from "<= 33"; ("", "414") from "414"; "?" marks a ratio of a bound and a value."""
    for prefix in ("<= ", ">= ", "? "):
        if cell.startswith(prefix):
            return prefix.strip(), cell[len(prefix) :]
    return "", cell


def test_modularity_table_is_modularity_json() -> None:
    rows = _table(_section("### MIP and modularity, measured"), "family")
    families = _summary("modularity")["families"]
    seen: dict[str, int] = {}
    for family, error, *cells in rows:
        level = families[family]["levels"][seen.setdefault(family, 0)]
        seen[family] += 1
        _check(error, level["error"], f"modularity {family} error")
        keys = ("hypernetwork_primary", "embedding_primary", "ratio_primary")
        keys += ("hypernetwork_total", "embedding_total", "ratio_total")
        for key, text in zip(keys, cells, strict=True):
            mark, number = _bounded(text)
            _check(number, level[key], f"modularity {family} {key}")
            how = level.get(f"{key}_how", level.get(f"{key}_bound", ""))
            assert bool(mark) == bool(how), (family, key, text, how)  # a bound is printed as one
    assert seen == {name: len(f["levels"]) for name, f in families.items()}


def test_mip_ablation_table_is_mip_ablation_json() -> None:
    rows = _table(_section("### MIP and modularity, measured"), "task")
    summary = _summary("mip-ablation")
    runs, comparison = summary["runs"], {(c["task"], c["configuration"]): c for c in summary["comparison"]}
    assert len(rows) == len(runs) == len(comparison)
    for task, configuration, steps, final, speedup in rows:
        variants = runs[f"{task} | {configuration}"]["variants"]
        what = f"mip-ablation {task} {configuration}"
        for name, text in zip(("standard", "encoding", "residual", "mip"), steps.split(" / "), strict=True):
            median = variants[name]["median_steps_to_target"]
            if text == "never":
                assert median is None or math.isinf(median), (what, name)
            else:
                _check(text, median, f"{what} {name} steps")
        for name, text in zip(("standard", "mip"), final.split(" / "), strict=True):
            _check(text, variants[name]["final_loss_geomean"], f"{what} {name} final loss")
        c = comparison[(task, configuration)]
        if c["speedup"] is None:
            assert speedup.startswith("- (") and c["speedup_note"] in speedup, what
        else:
            mark, number = _bounded(speedup)
            _check(number, c["speedup"], f"{what} speed-up")
            assert mark == {"": "", "standard does not reach the target: a lower bound": ">="}.get(
                c["speedup_note"], "<="
            ), (what, c["speedup_note"])


def test_lowrank_memory_table_is_its_json() -> None:
    section = _section("## Large targets: low-rank generation")
    rows = _table(section, "path")
    bench = _json(ROOT / "docs" / "benchmarks" / "lowrank_memory.json")
    seconds, peak = bench["seconds"], bench["peak_bytes"]
    assert sorted(r[0] for r in rows) == sorted(seconds)
    for path, ms, time_ratio, mb, peak_ratio in rows:
        _check(ms, 1000 * seconds[path], f"low-rank {path} ms")
        _check(time_ratio, seconds[path] / seconds["plain model"], f"low-rank {path} time ratio")
        _check(mb, peak[path] / 2**20, f"low-rank {path} peak MB")
        _check(peak_ratio, peak[path] / peak["plain model"], f"low-rank {path} peak ratio")
    assert f"P = {bench['generated_weights']:,} generated weights" in section


def test_mip_vs_hyperlight_block_is_its_committed_output() -> None:
    block = _code_block(_section("### MIP and modularity, measured"), "MIP hypernetwork, regression task")
    committed = (ROOT / "docs" / "benchmarks" / "mip_vs_hyperlight.txt").read_text(encoding="utf-8").splitlines()
    assert block == committed
