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
from hypernet.kernels import HyperDescription, empirical_ntk, functional


@dataclass
class NTKDriftConfig:
    n_f_sweep: tuple[int, ...] = (256, 1024, 4096)  # (a): g narrow
    narrow_g: int = 8
    n_g_sweep: tuple[int, ...] = (2, 8, 32, 128)  # (b): f fixed
    fixed_f: int = 1024
    points: int = 16
    d_x: int = 4
    d_z: int = 4
    steps: int = 300
    lr_scale: float = 0.5  # gradient-descent step = lr_scale / largest NTK eigenvalue at init
    seeds: int = 2


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
