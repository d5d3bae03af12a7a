"""`modularity`: for the same error, does the primary network `g` of a hypernetwork `g(x; f(I))` need
fewer trainable parameters than the network `q` of an embedding method `q([x, e(I)])`?
(Galanti & Wolf, NeurIPS 2020.) Three families of target functions (see `modularity_tasks`):
a synthetic teacher `sigmoid(<w(I), x>)` whose smallest exact `g` is known, MNIST images as
functions of their pixel coordinates, and the paper's rotation prediction on MNIST.

`f` and `e` are the same MLP trunk (large, fixed); `g` and `q` are swept over widths and depths.
Parameters needed at an error level are read off the lower envelope of error against parameters
(log-log linear interpolation between sizes). The levels follow a rule fixed before the runs:
`lo`, `1.5 lo` and `2.25 lo`, `lo` being 1.05 x the larger of the two methods' best errors (so that
both methods reach every level); a level the smallest size of a sweep already reaches gives only a
bound on that method's parameters, and the table says so.

Departures from the paper on the rotation task: batch 64 and 10 epochs as in the paper, but Adam
(lr 1e-3) instead of SGD (lr 0.01) -- in a pilot of 800 SGD steps the embedding method stayed at
chance (error 0.923, q width 40) while the hypernetwork reached 0.334 (g width 10), which leaves no
common error level to compare at -- (`--set rotation_optimizer=sgd,rotation_lr=0.01` restores it);
`rotation_train` training images (default 10,000 of MNIST's training split);
`trunk` widths for both `f` and `e`; `g` of depth 1 as the paper's. The other families use Adam.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import Tensor, nn

from hypernet.data import MNIST_SIZES, check_mnist, load_mnist
from hypernet.experiments.modularity_tasks import EmbeddingMethod, Family, HyperMethod, MNISTImages, Rotations, Teacher
from hypernet.experiments.registry import RunContext, register
from hypernet.experiments.rotation_widths import make_rotations
from hypernet.experiments.settings import Relation, setting
from hypernet.report.table import Table
from hypernet.train import TrainConfig, distributed

FAMILIES = ("teacher", "images", "rotation")
METHODS = ("hypernetwork", "embedding")
# contexts per training step of each family (fixed; the rotation's is the paper's 64)
BATCHES = {"teacher": 32, "images": 32, "rotation": 64}


@dataclass
class ModularityConfig:
    families: tuple[str, ...] = setting(FAMILIES, "families of target functions", min_items=1, choices=FAMILIES)
    depths: tuple[int, ...] = setting(
        (1, 2), "hidden-layer counts of g and q for every width > 0 (teacher, images)", ge=1, min_items=1
    )
    rotation_depths: tuple[int, ...] = setting((1,), "hidden-layer counts, rotation (paper: 1)", ge=1, min_items=1)
    teacher_g_widths: tuple[int, ...] = setting((0, 2, 8), "widths of g, teacher (0: no hidden layer)", ge=0)
    teacher_q_widths: tuple[int, ...] = setting((4, 16, 64, 256), "widths of q, teacher", ge=1)
    images_g_widths: tuple[int, ...] = setting((0, 4, 16), "widths of g, images", ge=0)
    images_q_widths: tuple[int, ...] = setting((4, 16, 64, 256), "widths of q, images", ge=1)
    rotation_g_widths: tuple[int, ...] = setting((2, 5, 10), "widths of g, rotation (paper: 10)", ge=0)
    rotation_q_widths: tuple[int, ...] = setting((10, 40, 160), "widths of q, rotation", ge=1)
    trunk: tuple[int, ...] = setting((128, 128), "hidden widths of f and of e", ge=1, min_items=1)
    embedding: int = setting(64, "size of e(I)", ge=1)
    seeds: int = setting(2, "seeds per size (errors averaged)", ge=1)
    lr: float = setting(1e-3, "Adam learning rate (teacher, images)", gt=0)
    teacher_steps: int = setting(1500, "training steps, teacher", ge=1)
    teacher_dims: int = setting(16, "dimension of I and of x, teacher", ge=1)
    images_steps: int = setting(800, "training steps, images", ge=1)
    images_test: int = setting(300, "held-out digits of the images family (the first of test_images)", ge=1)
    images_train: int = setting(5000, "training digits, images (MNIST training split)", ge=1)
    rotation_optimizer: Literal["sgd", "adam"] = setting("adam", "optimizer, rotation (paper: sgd)")
    rotation_lr: float = setting(1e-3, "learning rate, rotation (paper: SGD 0.01)", gt=0)
    rotation_epochs: int = setting(10, "epochs, rotation (paper: 10)", ge=1)
    rotation_train: int = setting(10000, "training images, rotation", ge=1)
    test_images: int = setting(500, "held-out digits (MNIST test split), images and rotation", ge=1)
    train_split: Literal["train", "test"] = setting(
        "train", "MNIST split of the training images ('test': disjoint parts of the test split)"
    )
    data_dir: str = setting(
        "", "folder with the MNIST files (empty: $HYPERNET_DATA or the user cache, downloading)", folder=True
    )

    RELATIONS: ClassVar[tuple[Relation, ...]] = (
        Relation(
            ("images_train", "rotation_train", "test_images", "train_split"),
            lambda c: (
                max(c.images_train, c.rotation_train) + (c.test_images if c.train_split == "test" else 0)
                <= MNIST_SIZES[c.train_split]
                and c.test_images <= MNIST_SIZES["test"]
            ),
            "max(images_train, rotation_train) (+ test_images when train_split=test) <= the images of the split",
        ),
    )


def sizes(widths: tuple[int, ...], depths: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Hidden widths of every swept network: width 0 is no hidden layer, any other `depth` times."""
    out: list[tuple[int, ...]] = []
    for w in widths:
        for hidden in [()] if w == 0 else [(w,) * d for d in depths]:
            if hidden not in out:
                out.append(hidden)
    return out


def params_at(points: list[tuple[int, float]], level: float) -> tuple[float | None, str]:
    """Parameters needed to reach error `level`, from `(parameters, error)` points.

    The lower envelope (best error with at most that many parameters) is interpolated linearly in
    log-log coordinates; `"at most"` when the smallest size already reaches `level`, None if no size does.
    """
    pts = sorted(points)
    env: list[tuple[int, float]] = []
    for p, e in pts:
        env.append((p, min(e, env[-1][1]) if env else e))
    for k, (p, e) in enumerate(env):
        if e <= level:
            if k == 0:
                return float(p), "at most"
            p0, e0 = env[k - 1]
            if e == e0:
                return float(p), ""
            t = (math.log(level) - math.log(e0)) / (math.log(e) - math.log(e0))
            return float(math.exp(math.log(p0) + t * (math.log(p) - math.log(p0)))), ""
    return None, "not reached"


def levels_for(errors: dict[str, list[float]]) -> list[float]:
    """The error levels of the table (the rule in the module docstring): `lo`, `1.5 lo`, `2.25 lo` with
    `lo` 1.05 x the larger of the methods' best errors (so both reach every level), those above the
    largest error of the sweeps dropped (no size is needed there)."""
    lo = 1.05 * max(min(v) for v in errors.values())
    top = max(max(v) for v in errors.values())
    return [lo * f for f in (1.0, 1.5, 2.25) if f == 1.0 or lo * f <= top]


def ratio_bound(hyper_how: str, embed_how: str) -> str:
    """How to read `embedding / hypernetwork` parameters: `">="` when only the hypernetwork's count is
    an upper bound (its smallest size already reached the level), `"<="` when only the embedding's
    is, `"?"` when both are, `""` when both are interpolated."""
    h, e = hyper_how == "at most", embed_how == "at most"
    return "?" if h and e else ">=" if h else "<=" if e else ""


def _family(name: str, cfg: ModularityConfig, seed: int) -> Family:
    if name == "teacher":
        return Teacher(cfg.teacher_dims, cfg.teacher_dims, 2000, 1000, points=16, batch=BATCHES["teacher"], seed=seed)
    test = load_mnist("test", cfg.data_dir or None)
    g = torch.Generator().manual_seed(seed)
    test_order = torch.randperm(len(test), generator=g)
    test_x = test.x[test_order[: cfg.test_images]]
    n = max(cfg.images_train, cfg.rotation_train)
    if cfg.train_split == "test":
        train_x = test.x[test_order[cfg.test_images : cfg.test_images + n]]
    else:
        train = load_mnist("train", cfg.data_dir or None)
        train_x = train.x[torch.randperm(len(train), generator=g)[:n]]
    if name == "images":
        return MNISTImages(
            train_x[: cfg.images_train], test_x[: cfg.images_test], frequencies=8, points=64, batch=BATCHES["images"]
        )
    train_rot = make_rotations(train_x[: cfg.rotation_train].view(-1, 28, 28), 12, g)
    test_rot = make_rotations(test_x.view(-1, 28, 28), 12, g)
    return Rotations(train_rot, test_rot, classes=12, batch=BATCHES["rotation"])


def _steps(name: str, cfg: ModularityConfig) -> int:
    if name == "teacher":
        return cfg.teacher_steps
    if name == "images":
        return cfg.images_steps
    return cfg.rotation_epochs * math.ceil(cfg.rotation_train / BATCHES["rotation"])


def _phase(family: str, method: str, hidden: tuple[int, ...], seed: int) -> str:
    """The training phase of one fit (its checkpoints and metrics): `teacher-hypernetwork-h8x8-seed0`."""
    return f"{family}-{method}-h{'x'.join(map(str, hidden)) or '0'}-seed{seed}"


def _fit(
    family: Family, model: nn.Module, cfg: ModularityConfig, steps: int, seed: int, ctx: RunContext, phase: str
) -> float:
    """Train `model` on `family` through the training loop (phase `phase`: checkpointed, so a
    killed run resumes; DDP on several processes); its mean error on the held-out set.

    One process does exactly what the plain loop of earlier versions did (one optimizer over
    `model.parameters()`, the batch drawn from the seeded generator, zero_grad, backward, step).
    On several, every process draws the same global batch and keeps its strided part: each loss
    is a mean over equally many points per sample, so DDP's mean of the parts' means is the whole
    batch's mean. The models have no dropout or other randomness of their own. The held-out error
    is computed by every process alike on the whole model (all hold the same weights)."""
    rotation = family.name == "rotation"
    optimizer = cfg.rotation_optimizer if rotation else "adam"
    config = TrainConfig(
        steps=steps,
        lr=cfg.rotation_lr if rotation else cfg.lr,
        optimizer=optimizer,
        momentum=0.0,  # plain SGD (the paper's `optim.SGD(params, lr)`); Adam ignores it
        checkpoint_every=max(1, steps // 2),
        log_every=max(1, steps // 4),
        eval_every=steps,
    )
    trained = ctx.distribute(model)

    def step(_: int, g: torch.Generator) -> tuple[Tensor, dict[str, float]]:
        context, x, y = ctx.shard(*family.batch(g))
        return family.loss(trained(x, context), y), {}

    ctx.train(phase, trained, model.parameters(), step, config, generator=torch.Generator().manual_seed(seed))
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for context, x, y in family.test_batches():
            total += float(family.error(model(x, context), y))
            count += y.shape[0] * y.shape[1]
    return total / count


def _prepare(cfg: ModularityConfig) -> None:
    if any(f != "teacher" for f in cfg.families):
        check_mnist("test", cfg.data_dir or None)
        if cfg.train_split == "train":
            check_mnist("train", cfg.data_dir or None)


@register(
    "modularity",
    "error against trainable parameters: hypernetwork g(x; f(I)) vs embedding method q(x, e(I))",
    ModularityConfig,
    quick={
        "teacher_g_widths": (0, 4),
        "teacher_q_widths": (4, 32),
        "rotation_g_widths": (2,),
        "rotation_q_widths": (10,),
        "images_g_widths": (0,),
        "images_q_widths": (4,),
        "images_steps": 100,
        "images_train": 200,
        "images_test": 50,
        "depths": (1,),
        "trunk": (64, 64),
        "teacher_steps": 700,
        "teacher_dims": 8,
        "rotation_train": 640,
        "rotation_epochs": 1,
        "test_images": 300,
        "train_split": "test",
        "seeds": 2,
    },
    headline=lambda summary: headline(summary),
    captions={},
    prepare=_prepare,
    distributed=True,
    # every family's batch must split evenly: N divides each batch exactly when it divides their gcd
    global_batch=lambda cfg: math.gcd(*(BATCHES[f] for f in cfg.families)),
    batch_setting=None,  # fixed batches per family (BATCHES)
)
def run(cfg: ModularityConfig, ctx: RunContext) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for name in cfg.families:
        steps = _steps(name, cfg)
        family = _family(name, cfg, ctx.seed)
        depths = cfg.rotation_depths if name == "rotation" else cfg.depths
        g_sizes = sizes(getattr(cfg, f"{name}_g_widths"), depths)
        q_sizes = sizes(getattr(cfg, f"{name}_q_widths"), depths)
        runs: dict[str, list[dict[str, Any]]] = {"hypernetwork": [], "embedding": []}
        for method, size_list in (("hypernetwork", g_sizes), ("embedding", q_sizes)):
            for hidden in size_list:
                errors, primary, total = [], 0, 0
                for k in range(cfg.seeds):
                    seed = ctx.seed + k
                    torch.manual_seed(seed)
                    model: HyperMethod | EmbeddingMethod
                    if method == "hypernetwork":
                        model = HyperMethod(family.d_i, family.d_x, family.d_out, hidden, cfg.trunk, family.bias)
                    else:
                        model = EmbeddingMethod(
                            family.d_i, family.d_x, family.d_out, hidden, cfg.trunk, cfg.embedding, family.bias
                        )
                    primary, total = model.primary_parameters, model.total_parameters
                    errors.append(_fit(family, model, cfg, steps, seed, ctx, _phase(name, method, hidden, seed)))
                runs[method].append(
                    {
                        "hidden": list(hidden),
                        "primary_parameters": primary,
                        "total_parameters": total,
                        "errors": errors,
                        "error": float(np.mean(errors)),
                    }
                )
                if ctx.progress and distributed.is_main():  # one line per size, not one per process
                    print(f"{name} {method} {hidden}: {primary:,} / {total:,} parameters, error {errors}", flush=True)
        levels = levels_for({m: [r["error"] for r in rs] for m, rs in runs.items()})
        table = []
        for level in levels:
            row: dict[str, Any] = {"error": level}
            for method, rs in runs.items():
                for kind in ("primary", "total"):
                    p, how = params_at([(r[f"{kind}_parameters"], r["error"]) for r in rs], level)
                    row[f"{method}_{kind}"] = p
                    row[f"{method}_{kind}_how"] = how
            for kind in ("primary", "total"):
                h, e = row[f"hypernetwork_{kind}"], row[f"embedding_{kind}"]
                row[f"ratio_{kind}"] = e / h if h is not None and e is not None else None
                row[f"ratio_{kind}_bound"] = ratio_bound(row[f"hypernetwork_{kind}_how"], row[f"embedding_{kind}_how"])
            table.append(row)
        results[name] = {
            "runs": runs,
            "levels": table,
            "steps": steps,
            "error": _error_name(name),
            "chance_error": 1 - 1 / family.d_out if name == "rotation" else None,
        }
    _figures(ctx, results)
    return {"families": results}


def _error_name(family: str) -> str:
    return "classification error" if family == "rotation" else "mean squared error"


def _figures(ctx: RunContext, results: dict[str, Any]) -> None:
    colors = {"hypernetwork": "tab:blue", "embedding": "tab:red"}
    names = {"hypernetwork": "hypernetwork: g", "embedding": "embedding: q"}
    fig, axs = plt.subplots(2, len(results), figsize=(4.2 * len(results), 7.0), squeeze=False)
    for j, (family, res) in enumerate(results.items()):
        for i, kind in enumerate(("primary", "total")):
            ax = axs[i][j]
            for method, rs in res["runs"].items():
                pts = sorted((r[f"{kind}_parameters"], r["error"]) for r in rs)
                ax.plot(
                    *zip(*pts), marker="o", color=colors[method], label=names[method] if kind == "primary" else method
                )
            for row in res["levels"]:
                ax.axhline(row["error"], color="k", lw=0.6, ls=":")
            what = "parameters of g or q" if kind == "primary" else "all trainable parameters"
            ax.set(xscale="log", yscale="log", xlabel=what, ylabel=f"test {res['error']}", title=family)
            ax.legend(fontsize=8)
    fig.suptitle("Test error against parameters (dotted: the error levels of the table)", fontsize=10)
    fig.tight_layout()
    ctx.save_figure(fig, "modularity")


def headline(summary: dict[str, Any]) -> Table:
    """Parameters each method needs at each error level, and their ratio (embedding / hypernetwork)."""

    def p(v: float | None, how: str) -> str:
        if v is None:
            return "not reached"
        return ("<= " if how == "at most" else "") + f"{v:,.0f}"

    def r(v: float | None, bound: str) -> str:
        if v is None:
            return "-"
        return f"{bound} {v:.3g}".strip()

    rows = []
    for family, res in summary["families"].items():
        for row in res["levels"]:
            rows.append(
                [
                    family,
                    row["error"],
                    p(row["hypernetwork_primary"], row["hypernetwork_primary_how"]),
                    p(row["embedding_primary"], row["embedding_primary_how"]),
                    r(row["ratio_primary"], row["ratio_primary_bound"]),
                    p(row["hypernetwork_total"], row["hypernetwork_total_how"]),
                    p(row["embedding_total"], row["embedding_total_how"]),
                    r(row["ratio_total"], row["ratio_total_bound"]),
                ]
            )
    return Table(
        "Modularity: trainable parameters needed for the same test error",
        ["family", "error", "g", "q", "q / g", "hypernetwork total", "embedding total", "embedding / hypernetwork"],
        rows,
        note="interpolated on the lower envelope in log-log; '<= N': the smallest size swept (N) already reaches "
        "the level; a ratio with '>=' / '<=' is a bound, '?' unknown (both smallest sizes reach it)"
        + "".join(
            f"; {f}: chance error {r['chance_error']:.3f}"
            for f, r in summary["families"].items()
            if r.get("chance_error") is not None
        ),
    )
