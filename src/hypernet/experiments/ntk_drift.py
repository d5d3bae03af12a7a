"""`ntk-drift`: how much the empirical NTK of a hypernetwork moves during training.

(a) a wide hypernetwork `f` with a narrow primary network `g` (`n_g` small): the relative change
does not shrink as `n_f` grows, so a wide hypernetwork alone gives no kernel regime and no
convergence guarantee; (b) widening `g` too: the change shrinks (the dually infinite limit).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch

from hypernet.experiments.registry import RunContext, register
from hypernet.experiments.settings import setting
from hypernet.kernels import HyperDescription, empirical_ntk, functional
from hypernet.report.table import Table


@dataclass
class NTKDriftConfig:
    n_f_sweep: tuple[int, ...] = setting((256, 1024, 4096), "(a) hypernetwork widths n_f, g narrow", ge=1, min_items=1)
    narrow_g: int = setting(8, "(a) the narrow primary width n_g", ge=1)
    n_g_sweep: tuple[int, ...] = setting((2, 8, 32, 128), "(b) primary widths n_g, with n_f fixed", ge=1, min_items=1)
    fixed_f: int = setting(1024, "(b) the fixed hypernetwork width n_f", ge=1)
    points: int = setting(16, "training pairs (x, z)", ge=1)
    d_x: int = setting(4, "input size of the primary network g", ge=1)
    d_z: int = setting(4, "input size of the hypernetwork f", ge=1)
    steps: int = setting(300, "full-batch gradient-descent steps", ge=1)
    lr_scale: float = setting(
        0.5, "step size = lr_scale / largest NTK eigenvalue at init (below 2 for stable descent)", gt=0, lt=2
    )
    seeds: int = setting(2, "networks averaged per width pair", ge=1)


def drift(
    desc: HyperDescription, x: torch.Tensor, z: torch.Tensor, y: torch.Tensor, steps: int, lr_scale: float, seed: int
) -> dict[str, float]:
    """Train `desc`'s network by full-batch gradient descent on MSE; relative NTK change and losses."""
    torch.manual_seed(seed)
    model = desc.module().double()
    fn, params = functional(model)
    ntk0 = empirical_ntk(fn, params, (x, z), output="trace")
    lr = lr_scale / float(torch.linalg.eigvalsh(ntk0).max())
    trainable = list(model.hypernetwork.parameters())
    with torch.no_grad():
        loss0 = float(0.5 * (model(x, z)[:, 0] - y).pow(2).sum())
    for _ in range(steps):
        loss = 0.5 * (model(x, z)[:, 0] - y).pow(2).sum()
        grads = torch.autograd.grad(loss, trainable)
        with torch.no_grad():
            for p, g in zip(trainable, grads):
                p.sub_(lr * g)
    fn, params = functional(model)
    ntk1 = empirical_ntk(fn, params, (x, z), output="trace")
    change = float(torch.linalg.norm(ntk1 - ntk0) / torch.linalg.norm(ntk0))
    return {"ntk_rel_change": change, "loss_start": loss0, "loss_end": float(loss.detach())}


@register(
    "ntk-drift",
    "NTK change in training: wide f with narrow g (does not settle) vs wide g (settles)",
    NTKDriftConfig,
    quick={"n_f_sweep": (64, 512), "n_g_sweep": (2, 64), "fixed_f": 256, "steps": 100, "points": 8, "seeds": 1},
    headline=lambda summary: headline(summary),
    captions={
        "ntk_drift": "Relative change of the empirical NTK over training. (a) Widening only the hypernetwork f "
        "(g narrow): the change does not shrink as a kernel regime would (dotted). (b) Widening g too: it shrinks."
    },
)
def run(cfg: NTKDriftConfig, ctx: RunContext) -> dict[str, Any]:
    g = torch.Generator().manual_seed(ctx.seed)
    x = torch.randn(cfg.points, cfg.d_x, generator=g, dtype=torch.float64)
    z = torch.rand(cfg.points, cfg.d_z, generator=g, dtype=torch.float64)
    y = torch.sin(2 * x[:, 0]) * torch.cos(3 * z[:, 0])
    results: dict[str, Any] = {"wide_f_narrow_g": {}, "wide_g": {}}
    sweeps = [
        ("wide_f_narrow_g", [(n, cfg.narrow_g) for n in cfg.n_f_sweep]),
        ("wide_g", [(cfg.fixed_f, n) for n in cfg.n_g_sweep]),
    ]
    for key, pairs in sweeps:
        for n_f, n_g in pairs:
            desc = HyperDescription(cfg.d_x, cfg.d_z, n_f, n_g)
            runs = [drift(desc, x, z, y, cfg.steps, cfg.lr_scale, ctx.seed * 100 + s) for s in range(cfg.seeds)]
            res = {k: float(np.mean([r[k] for r in runs])) for k in runs[0]}
            res.update(n_f=n_f, n_g=n_g)
            results[key][f"n_f={n_f},n_g={n_g}"] = res
            print(
                f"{key}: n_f={n_f:>5} n_g={n_g:>4}  NTK change {res['ntk_rel_change']:.3f}  "
                f"loss {res['loss_start']:.3f} -> {res['loss_end']:.4f}",
                flush=True,
            )
    fig, (ax_a, ax_b) = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    a = list(results["wide_f_narrow_g"].values())
    b = list(results["wide_g"].values())
    n_fs = np.array([r["n_f"] for r in a], dtype=float)
    ax_a.plot(n_fs, [r["ntk_rel_change"] for r in a], "o-", color="C3", label="measured")
    # what a kernel regime would give: the change shrinking like n^(-1/2) from the first point
    ax_a.plot(n_fs, a[0]["ntk_rel_change"] * np.sqrt(n_fs[0] / n_fs), ":", color="gray", label="∝ n_f^(-1/2)")
    ax_a.set(
        xscale="log",
        yscale="log",
        xlabel="hypernetwork width n_f",
        ylabel="relative NTK change",
        title=f"(a) wide f, narrow g (n_g = {cfg.narrow_g})",
    )
    ax_b.plot([r["n_g"] for r in b], [r["ntk_rel_change"] for r in b], "o-", color="C0", label="measured")
    ax_b.set(xscale="log", xlabel="primary width n_g", title=f"(b) n_f = {cfg.fixed_f}, widening g")
    for ax, values in ((ax_a, [r["n_f"] for r in a]), (ax_b, [r["n_g"] for r in b])):
        ax.set_xticks(values, [str(v) for v in values])
        ax.xaxis.set_minor_formatter(plt.NullFormatter())
        ax.legend(fontsize=8)
    fig.suptitle(f"Change of the empirical NTK over {cfg.steps} steps of gradient descent")
    ctx.save_figure(fig, "ntk_drift")
    return results


def headline(summary: dict[str, Any]) -> Table:
    """NTK change and losses for every width pair of both sweeps."""
    labels = {"wide_f_narrow_g": "(a) wide f, narrow g", "wide_g": "(b) widening g"}
    rows = [
        [labels.get(sweep, sweep), r["n_f"], r["n_g"], r["ntk_rel_change"], r["loss_start"], r["loss_end"]]
        for sweep, runs in summary.items()
        for r in runs.values()
    ]
    return Table(
        "NTK drift: relative change of the empirical NTK during training",
        ["sweep", "n_f", "n_g", "relative NTK change", "loss at start", "loss at end"],
        rows,
    )
