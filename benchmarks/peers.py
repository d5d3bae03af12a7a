"""hypernet beside its peers (hyperlight, hypnettorch, hyper-nn) on the same work, in one run.

1. Shared weights, task-conditioned training step: a task embedding (8) -> hypernetwork 8 -> 64 -> P
   -> target MLP 784-256-10 or 784-256-256-10, batch 128, cross-entropy, Adam; one task per step.
2. Per-sample weights: forward + backward of a target with one weight set per sample, w: [B, P],
   B = 32, 256, 1024, for an MLP (784-256-10) and a small CNN (hypnettorch's LeNet "mnist_small"):
   hypernet's engine against hyper-nn's functional target under `torch.func.vmap`, hypnettorch's
   target called in a Python loop over samples, and a hand-written `torch.baddbmm` / grouped-conv
   limit. hyperlight holds one weight set per forward, so it has no per-sample path.

Times are medians of round-robin rounds (every path sampled in turn, so machine drift hits all
alike); figures are ratios to hypernet in the same run. The shared step visits the libraries in a
shuffled order each round and gives, for each, the median and the interquartile range over the
rounds of its time / hypernet's time in the same round: the range is the noise of the comparison
(`round_seconds` in the JSON holds every sample). Peak memory is the growth of this
process's peak resident set during one step (Linux `clear_refs` resets the peak; glibc is told to
give large blocks back to the system, so each step's peak is its own). The load average is
recorded: the machine is shared.

    python benchmarks/peers.py [--threads 2] [--json docs/benchmarks/peers.json] [--quick]
    python benchmarks/peers.py --parts shared --threads 1 --repeat 9 --json docs/benchmarks/peers_shared.json

Peers come from the `bench` extra (`pip install -e ".[bench]"`); hyper-nn declares jax and flax
as dependencies, so it is not in the extra: `pip install --no-deps hyper-nn==0.2.2` installs its
torch path without them (`make bench` does). A missing peer is reported as such in the table.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from importlib import metadata
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import hypernet as hn

from common import exec_with_malloc_trim, interleaved_medians, interleaved_samples, peak_growth

NUM_TASKS, EMB, HIDDEN, BATCH = 10, 8, 64, 128
LOOP_ROUNDS_UP_TO = 32  # above this B, the per-sample loop (seconds per call) is timed by one call
#: the parts of a shared training step, timed one by one (medians over the timed calls)
PHASES = ("zero_grad", "forward", "backward", "optimizer")
LENET_SHAPES = [[10, 1, 5, 5], [10], [20, 10, 5, 5], [20], [50, 320], [50], [10, 50], [10]]

# --------------------------------------------------------------------------------------------
# targets


def mlp(sizes: tuple[int, ...]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def lenet() -> nn.Sequential:
    """hypnettorch's LeNet "mnist_small" as a plain module (same parameter order and shapes)."""
    return nn.Sequential(
        nn.Conv2d(1, 10, 5), nn.MaxPool2d(2), nn.ReLU(),
        nn.Conv2d(10, 20, 5), nn.MaxPool2d(2), nn.ReLU(),
        nn.Flatten(), nn.Linear(320, 50), nn.ReLU(), nn.Linear(50, 10),
    )  # fmt: skip


def bmm_mlp(sizes: tuple[int, ...], x: Tensor, w: Tensor) -> Tensor:
    """Hand-written limit: the MLP with `torch.baddbmm`, weights `w: [B, P]`."""
    B, h = x.shape[0], x.unsqueeze(1)
    split = []
    for i in range(len(sizes) - 1):
        split += [sizes[i] * sizes[i + 1], sizes[i + 1]]
    parts = w.split(split, dim=1)
    for i in range(len(sizes) - 1):
        W = parts[2 * i].view(B, sizes[i + 1], sizes[i])
        h = torch.baddbmm(parts[2 * i + 1].view(B, 1, -1), h, W.transpose(1, 2))
        if i < len(sizes) - 2:
            h = F.relu(h)
    return h.squeeze(1)


def grouped_lenet(x: Tensor, w: Tensor) -> Tensor:
    """Hand-written limit: LeNet with grouped convolutions (one group per sample) and `bmm`."""
    B = x.shape[0]
    p = w.split([int(torch.tensor(s).prod()) for s in LENET_SHAPES], dim=1)
    h = F.conv2d(x.reshape(1, B, 28, 28), p[0].reshape(B * 10, 1, 5, 5), p[1].reshape(-1), groups=B)
    h = F.relu(F.max_pool2d(h, 2))
    h = F.conv2d(h, p[2].reshape(B * 20, 10, 5, 5), p[3].reshape(-1), groups=B)
    h = F.relu(F.max_pool2d(h, 2)).reshape(B, 1, 320)
    h = F.relu(torch.baddbmm(p[5].view(B, 1, 50), h, p[4].view(B, 50, 320).transpose(1, 2)))
    return torch.baddbmm(p[7].view(B, 1, 10), h, p[6].view(B, 10, 50).transpose(1, 2)).squeeze(1)


# --------------------------------------------------------------------------------------------
# peers (each optional)


def peer_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for dist in ("hyperlight", "hypnettorch", "hyper-nn"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def _hyper_mlp(out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(EMB, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, out))


class HypernetShared(nn.Module):
    def __init__(self, sizes: tuple[int, ...]) -> None:
        super().__init__()
        target = hn.TargetNetwork(mlp(sizes))
        self.model = hn.HyperModel(
            target, hn.MLPHyperNetwork(EMB, target.spec, hidden=(HIDDEN,)), hn.TaskEmbedding(NUM_TASKS, EMB)
        )

    def forward(self, x: Tensor, task: int) -> Tensor:
        out: Tensor = self.model(x, torch.tensor(task))
        return out


class HyperlightShared(nn.Module):
    def __init__(self, sizes: tuple[int, ...]) -> None:
        import hyperlight as hl

        super().__init__()
        main = mlp(sizes)
        self.main = hl.hypernetize(main, modules=hl.find_modules_of_type(main, [nn.Linear]))
        self.embedding = nn.Embedding(NUM_TASKS, EMB)
        self.hyper = hl.HyperNet(
            input_shapes={"z": (EMB,)}, output_shapes=self.main.external_shapes(), hidden_sizes=[HIDDEN], encoding=None
        )

    def forward(self, x: Tensor, task: int) -> Tensor:
        params = self.hyper(z=self.embedding.weight[task])
        with self.main.using_externals(params):
            out: Tensor = self.main(x)
        return out


class HypnettorchShared(nn.Module):
    def __init__(self, sizes: tuple[int, ...]) -> None:
        from hypnettorch.hnets import HMLP
        from hypnettorch.mnets import MLP

        super().__init__()
        self.main = MLP(sizes[0], sizes[-1], hidden_layers=list(sizes[1:-1]), no_weights=True, verbose=False)
        self.hyper = HMLP(
            self.main.param_shapes, uncond_in_size=0, cond_in_size=EMB, layers=[HIDDEN], num_cond_embs=NUM_TASKS,
            verbose=False,
        )  # fmt: skip

    def forward(self, x: Tensor, task: int) -> Tensor:
        out: Tensor = self.main.forward(x, weights=self.hyper(cond_id=task))
        return out


def _hypernn_base() -> type:
    from hypernn.torch import TorchHyperNetwork

    return TorchHyperNetwork  # type: ignore[no-any-return]


class HypernnShared(nn.Module):
    def __init__(self, sizes: tuple[int, ...]) -> None:
        base = _hypernn_base()

        class TaskHyper(base):  # type: ignore[misc, valid-type]
            def __init__(self, target: nn.Module) -> None:
                super().__init__(target)
                self.embedding = nn.Embedding(NUM_TASKS, EMB)
                self.generator = _hyper_mlp(int(self.num_target_parameters))

            def generate_params(self, task: int) -> tuple[Tensor, dict[str, Any]]:
                return self.generator(self.embedding.weight[task]), {}

        super().__init__()
        self.hyper = TaskHyper(mlp(sizes))

    def forward(self, x: Tensor, task: int) -> Tensor:
        out: Tensor = self.hyper(x, generate_params_kwargs={"task": task})
        return out


SHARED = {"hypernet": HypernetShared, "hyperlight": HyperlightShared, "hypnettorch": HypnettorchShared}
SHARED["hyper-nn"] = HypernnShared


# --------------------------------------------------------------------------------------------
# 1. shared weights


def _build_shared_step(
    cls: type[nn.Module], sizes: tuple[int, ...], x: Tensor, y: Tensor, parts: dict[str, list[float]]
) -> tuple[Callable[[], None], int]:
    """One library's training step (Adam on its model, seeded alike) recording the seconds of each
    part in `parts`, and its trainable parameter count."""
    torch.manual_seed(0)
    model = cls(sizes)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    counter = [0]

    def step() -> None:
        counter[0] += 1
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        t1 = time.perf_counter()
        loss = F.cross_entropy(model(x, counter[0] % NUM_TASKS), y)
        t2 = time.perf_counter()
        loss.backward()
        t3 = time.perf_counter()
        opt.step()
        t4 = time.perf_counter()
        for part, seconds in zip(PHASES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            parts[part].append(seconds)

    step()  # any failure shows here, not in the timing
    return step, sum(p.numel() for p in model.parameters() if p.requires_grad)


def shared_rows(sizes: tuple[int, ...], repeat: int, build_order: list[str] | None = None) -> dict[str, Any]:
    """The shared-weights step of every library, `repeat` rounds in each of len(SHARED) blocks.

    Each block builds the models anew in a rotated order, so that every library is built first
    once: with one fixed order, the model built first in the process ran its step a few percent
    slower than the same model built last, whichever library it was (`--build-order` measures one
    fixed order: one block), an effect of where its tensors were placed in memory, not of the
    library."""
    x = torch.randn(BATCH, sizes[0])
    y = torch.randint(0, sizes[-1], (BATCH,))
    names = list(SHARED)
    notes: dict[str, str] = {}
    params: dict[str, int] = {}
    rounds: dict[str, list[float]] = {name: [] for name in names}
    phases: dict[str, dict[str, list[float]]] = {name: {p: [] for p in PHASES} for name in names}
    mem: dict[str, list[int | None]] = {name: [] for name in names}
    orders = [build_order] if build_order else [names[b:] + names[:b] for b in range(len(names))]
    for block, order in enumerate(orders):
        steps: dict[str, Callable[[], None]] = {}
        block_parts: dict[str, dict[str, list[float]]] = {}
        for name in order:
            if name in notes:
                continue
            block_parts[name] = {p: [] for p in PHASES}
            try:
                steps[name], params[name] = _build_shared_step(SHARED[name], sizes, x, y, block_parts[name])
            except Exception as exc:  # a peer that cannot run this: the table says why
                notes[name] = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
                for done in (rounds, phases, mem):
                    done.pop(name, None)
        for parts in block_parts.values():  # only the calls of the timed rounds (after the warm-up call below)
            for v in parts.values():
                v.clear()
        # a shuffled visiting order per round: no library always runs first (or right after the same one)
        block_rounds = interleaved_samples(steps, repeat=repeat, seed=block)
        for name, seconds in block_rounds.items():
            rounds[name] += seconds
            for p, v in block_parts[name].items():
                phases[name][p] += v[1:]  # the warm-up call of interleaved_samples is the first: left out
        for name, fn in steps.items():
            mem[name].append(peak_growth(fn))
        del steps, block_parts
        gc.collect()
    times = {name: statistics.median(v) for name, v in rounds.items()}
    phase_medians = {name: {p: statistics.median(v) for p, v in parts.items()} for name, parts in phases.items()}
    peak = {name: _median_or_none(v) for name, v in mem.items()}
    return {"target": "-".join(map(str, sizes)), "seconds": times, "round_seconds": rounds,
            "ratio_quartiles": ratio_quartiles(rounds), "phase_seconds": phase_medians, "peak_growth_bytes": peak,
            "notes": notes, "trainable_parameters": params, "blocks": len(orders),
            "rounds_per_block": repeat, "build_orders": orders}  # fmt: skip


def _median_or_none(values: list[int | None]) -> int | None:
    known = [v for v in values if v is not None]
    return int(statistics.median(known)) if known and len(known) == len(values) else None


def ratio_quartiles(rounds: dict[str, list[float]]) -> dict[str, list[float]]:
    """Quartiles [q1, median, q3] over the rounds of each path's time / hypernet's time in the same
    round: the median is the figure, q1..q3 the noise of that comparison on this machine."""
    if "hypernet" not in rounds:
        return {}
    base = rounds["hypernet"]
    out = {}
    for name, seconds in rounds.items():
        ratios = [s / b for s, b in zip(seconds, base, strict=True)]
        out[name] = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
    return out


# --------------------------------------------------------------------------------------------
# 2. per-sample weights


def per_sample_paths(kind: str, B: int) -> tuple[dict[str, Callable[[], Tensor]], dict[str, str], Tensor]:
    """Forward functions of every path on the same x, w (w: [B, P] requiring grad)."""
    torch.manual_seed(0)
    module = mlp((784, 256, 10)) if kind == "mlp" else lenet()
    target = hn.TargetNetwork(module)
    P = target.spec.numel
    w = (target.initial_weights() + 0.01 * torch.randn(B, P)).requires_grad_(True)
    x = torch.randn(B, 784) if kind == "mlp" else torch.randn(B, 1, 28, 28)
    paths: dict[str, Callable[[], Tensor]] = {"hypernet": lambda: target(x, w)}
    notes: dict[str, str] = {"hyperlight": "no per-sample weights: one weight set per forward"}
    if kind == "mlp":
        paths["bmm limit"] = lambda: bmm_mlp((784, 256, 10), x, w)
    else:
        paths["grouped-conv limit"] = lambda: grouped_lenet(x, w)
    try:
        from hypernn.torch.utils import FunctionalParamVectorWrapper

        functional = FunctionalParamVectorWrapper(module)
        one = torch.func.vmap(lambda wi, xi: functional(wi, xi[None])[0])
        paths["hyper-nn vmap"] = lambda: one(w, x)
    except Exception as exc:
        notes["hyper-nn vmap"] = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
    try:
        from hypnettorch.mnets import MLP, LeNet

        if kind == "mlp":
            mnet = MLP(784, 10, hidden_layers=[256], no_weights=True, verbose=False)
        else:
            mnet = LeNet(in_shape=(28, 28, 1), arch="mnist_small", no_weights=True, verbose=False)
        shapes = [tuple(s) for s in mnet.param_shapes]
        sizes = [int(torch.tensor(s).prod()) for s in shapes]
        # hypnettorch's LeNet reads images as [B, H, W, C]: the same numbers for one channel
        xs = x if kind == "mlp" else x.permute(0, 2, 3, 1).reshape(B, -1)

        def loop() -> Tensor:
            outs = []
            for i in range(B):
                weights = [p.view(s) for p, s in zip(w[i].split(sizes), shapes)]
                outs.append(mnet.forward(xs[i : i + 1], weights=weights))
            return torch.cat(outs)

        paths["hypnettorch loop"] = loop
    except Exception as exc:
        notes["hypnettorch loop"] = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
    ref = paths["hypernet"]().detach()
    for name in list(paths):  # the same numbers from every path, or it is not timed
        try:
            got = paths[name]().detach()
            if not torch.allclose(got, ref, atol=1e-4, rtol=1e-4):
                raise AssertionError(f"differs from hypernet by {float((got - ref).abs().max()):.2e}")
        except Exception as exc:
            notes[name] = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
            del paths[name]
    return paths, notes, w


def per_sample_row(kind: str, B: int, repeat: int) -> dict[str, Any]:
    paths, notes, w = per_sample_paths(kind, B)

    def train_step(forward: Callable[[], Tensor]) -> Callable[[], None]:
        def run() -> None:
            w.grad = None
            forward().square().mean().backward()

        return run

    steps = {name: train_step(fn) for name, fn in paths.items()}
    loop_calls = 0
    if B > LOOP_ROUNDS_UP_TO and "hypnettorch loop" in steps:
        # a Python loop over 1024 samples takes seconds per call: timed by itself, once
        loop_calls, loop = 1, steps.pop("hypnettorch loop")
    times = interleaved_medians(steps, repeat=repeat, slow={"hypnettorch loop"})
    if loop_calls:
        start = time.perf_counter()
        loop()
        times["hypnettorch loop"] = time.perf_counter() - start
        steps["hypnettorch loop"] = loop
    mem = {}
    for name, fn in steps.items():
        w.grad = None
        mem[name] = peak_growth(fn)
    if loop_calls:
        notes["hypnettorch loop"] = f"at B = {B} timed by one call outside the rounds"
    return {"target": kind, "B": B, "P": int(w.shape[1]), "seconds": times, "peak_growth_bytes": mem, "notes": notes}


# --------------------------------------------------------------------------------------------
# table


def _ratio(seconds: dict[str, float], name: str) -> str:
    return f"{seconds[name] / seconds['hypernet']:.2f}x" if name in seconds else "n/a"


def _mb(mem: dict[str, int | None], name: str) -> str:
    value = mem.get(name)
    return f"{value / 2**20:.0f}" if value is not None else "n/a"


def render(result: dict[str, Any]) -> str:
    lines = [
        f"threads {result['threads']}; load average {result['load_before']} before, {result['load_after']} after; "
        f"torch {result['torch']}; peers {result['peers']}",
    ]
    if result["shared"]:
        lines += _shared_table(result)
    if result["per_sample"]:
        lines += _per_sample_table(result)
    return "\n".join(lines)


def _shared_table(result: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "Shared weights, task-conditioned training step (batch 128, Adam); each library's time / hypernet's in the "
        "same round (> 1: hypernet faster), median over the rounds (interquartile range in brackets); hypernet ms "
        "= median (q1-q3); peak MB = growth of the resident set during one step",
        "",
        "| target | hypernet ms | hyperlight | hypnettorch | hyper-nn | peak MB: hypernet / hyperlight / hypnettorch / "
        "hyper-nn |",
        "|---|---:|---:|---:|---:|---|",
    ]
    orders = {json.dumps(row.get("build_orders")) for row in result["shared"]}
    if len(orders) == 1 and (built := json.loads(orders.pop())):  # (files from before the blocks have none)
        rounds = result["shared"][0]["rounds_per_block"]
        lines[1] += (
            f"; {len(built)} blocks of {rounds} rounds, the models built anew in each block in a rotated order "
            "(each library built first once)"
            if len(built) > 1
            else f"; {rounds} rounds, the models built once in the order {', '.join(built[0])}"
        )
    for row in result["shared"]:
        s, m = row["seconds"], row["peak_growth_bytes"]
        peers = ["hyperlight", "hypnettorch", "hyper-nn"]
        cells = [_ratio_spread(row, p) if p in s else "fails" for p in peers]
        mems = " / ".join(_mb(m, p) for p in ["hypernet", *peers])
        lines.append(f"| {row['target']} | {_ms_spread(row)} | {' | '.join(cells)} | {mems} |")
    notes = {f"{p} ({row['target']}): {n}" for row in result["shared"] for p, n in row["notes"].items()}
    lines += [f"- {n}" for n in sorted(notes)]
    lines += [
        "",
        "Where the step goes: median ms of each part over the timed steps (Adam = `optimizer.step()`)",
        "",
        "| target | library | zero_grad | forward | backward | Adam | Adam share |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in result["shared"]:
        for name, parts in row.get("phase_seconds", {}).items():
            ms = [parts[p] * 1e3 for p in PHASES]
            text = " | ".join(f"{v:.1f}" for v in ms)
            lines.append(f"| {row['target']} | {name} | {text} | {ms[-1] / sum(ms):.0%} |")
    return lines


def _ratio_spread(row: dict[str, Any], name: str) -> str:
    q1, median, q3 = row["ratio_quartiles"][name]
    return f"{median:.2f}x ({q1:.2f}-{q3:.2f})"


def _ms_spread(row: dict[str, Any]) -> str:
    rounds = row["round_seconds"]["hypernet"]
    q1, median, q3 = statistics.quantiles(rounds, n=4) if len(rounds) > 1 else rounds * 3
    return f"{median * 1e3:.1f} ({q1 * 1e3:.0f}-{q3 * 1e3:.0f})"


def _per_sample_table(result: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "Per-sample weights, forward + backward, w: [B, P]; time / hypernet's (> 1: hypernet faster); peak MB as above",
        "",
        "| target | B | hypernet ms | limit | hyper-nn vmap | hypnettorch loop | hyperlight | peak MB: hypernet / "
        "limit / hyper-nn / hypnettorch |",
        "|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for row in result["per_sample"]:
        s, m = row["seconds"], row["peak_growth_bytes"]
        limit = "bmm limit" if row["target"] == "mlp" else "grouped-conv limit"
        names = [limit, "hyper-nn vmap", "hypnettorch loop"]
        cells = [_ratio(s, n) for n in names]
        mems = " / ".join(_mb(m, n) for n in ["hypernet", *names])
        target = "MLP 784-256-10" if row["target"] == "mlp" else "LeNet (small CNN)"
        lines.append(f"| {target} | {row['B']} | {s['hypernet'] * 1e3:.2f} | {' | '.join(cells)} | cannot | {mems} |")
    notes = {f"{p}: {n}" for row in result["per_sample"] for p, n in row["notes"].items() if "B = " not in n}
    once = sorted({row["B"] for row in result["per_sample"] if "B = " in row["notes"].get("hypnettorch loop", "")})
    if once:
        notes.add(f"hypnettorch loop at B = {', '.join(map(str, once))}: one call, outside the rounds")
    lines += [f"- {n}" for n in sorted(notes)]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batches", default="32,256,1024")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="B = 32 only, 3 rounds: checks that every path runs")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument(
        "--parts", default="shared,per-sample", help="which tables to measure: shared, per-sample or both (default)"
    )
    ap.add_argument(
        "--build-order",
        default="",
        help="shared part: build the models once in this order (comma-separated library names), one block "
        "of --repeat rounds, instead of one block per rotation of the libraries (the default)",
    )
    args = ap.parse_args()
    build_order = [n.strip() for n in args.build_order.split(",")] if args.build_order else None
    if build_order is not None and sorted(build_order) != sorted(SHARED):
        ap.error(f"--build-order: expected each of {', '.join(SHARED)} once, got {args.build_order!r}")
    exec_with_malloc_trim()  # each step's peak resident set is its own
    warnings.filterwarnings("ignore")  # peers' deprecation warnings (functorch, numpy) are not ours
    torch.set_num_threads(args.threads)
    batches = [32] if args.quick else [int(b) for b in args.batches.split(",")]
    parts = {p.strip() for p in args.parts.split(",")}
    if not parts or not parts <= {"shared", "per-sample"}:
        ap.error(f"--parts: expected shared, per-sample or both, got {args.parts!r}")
    repeat = 3 if args.quick else args.repeat
    result: dict[str, Any] = {
        "threads": torch.get_num_threads(),
        "load_before": [round(v, 2) for v in os.getloadavg()],
        "torch": torch.__version__,
        "python": platform.python_version(),
        "peers": peer_versions(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "shared": [],
        "per_sample": [],
    }
    for sizes in ((784, 256, 10), (784, 256, 256, 10)) if "shared" in parts else ():
        result["shared"].append(shared_rows(sizes, repeat, build_order))
        print(f"shared {sizes}: done", file=sys.stderr, flush=True)
    for kind in ("mlp", "cnn") if "per-sample" in parts else ():
        for B in batches:
            result["per_sample"].append(per_sample_row(kind, B, repeat))
            print(f"per-sample {kind} B={B}: done", file=sys.stderr, flush=True)
    result["load_after"] = [round(v, 2) for v in os.getloadavg()]
    table = render(result)
    result["table"] = table
    print(table)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)


if __name__ == "__main__":
    main()
