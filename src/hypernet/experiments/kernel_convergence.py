"""`kernel-convergence`: the empirical NTK and the Monte-Carlo NNGP of finite hypernetworks approach
`hyper_ntk` / `hyper_nngp` as the widths `n_f` and `n_g` grow together (log-log plot, fitted slope)."""

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
class KernelConvergenceConfig:
    widths: tuple[int, ...] = setting(
        (16, 32, 64, 128, 256, 512), "widths n_f = n_g of the finite networks", ge=1, min_items=2
    )
    seeds: int = setting(20, "random networks per width for the empirical NTK", ge=1)
    nngp_draws: int = setting(500, "random networks per width for the Monte-Carlo NNGP (forward passes)", ge=2)
    points: int = setting(8, "input pairs (x, z) the kernels are evaluated on", ge=1)
    d_x: int = setting(3, "input size of the primary network g", ge=1)
    d_z: int = setting(2, "input size of the hypernetwork f", ge=1)
    f_depth: int = setting(1, "hidden layers of f", ge=0)
    g_depth: int = setting(1, "hidden layers of g", ge=0)
    weight_var: float = setting(2.0, "weight variance sigma_w^2 of every layer", gt=0)
    bias_var: float = setting(0.1, "bias variance sigma_b^2 of every layer", ge=0)


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@register(
    "kernel-convergence",
    "finite hypernetwork NTK/NNGP -> hyper_ntk/hyper_nngp as widths grow",
    KernelConvergenceConfig,
    quick={"widths": (16, 64, 256), "seeds": 6, "points": 5, "nngp_draws": 100},
    headline=lambda summary: headline(summary),
    captions={
        "kernel_convergence": "Relative Frobenius distance between finite hypernetworks' kernels and the analytic "
        "hyperkernel / GP kernel against the width n_f = n_g (log-log). The dotted line is the Monte-Carlo noise "
        "level of the NNGP estimate."
    },
)
def run(cfg: KernelConvergenceConfig, ctx: RunContext) -> dict[str, Any]:
    g = torch.Generator().manual_seed(ctx.seed)
    x = torch.randn(cfg.points, cfg.d_x, generator=g, dtype=torch.float64)
    z = torch.randn(cfg.points, cfg.d_z, generator=g, dtype=torch.float64)
    rows = []
    for width in cfg.widths:
        desc = HyperDescription(
            cfg.d_x, cfg.d_z, width, width, cfg.f_depth, cfg.g_depth, weight_var=cfg.weight_var, bias_var=cfg.bias_var
        )
        ntk_a, nngp_a = desc.ntk(x, z).numpy(), desc.nngp(x, z).numpy()
        ntks = []
        for s in range(cfg.seeds):
            torch.manual_seed(ctx.seed * 10_000 + s)
            model = desc.module().double()
            fn, params = functional(model)
            ntks.append(empirical_ntk(fn, params, (x, z), output="trace").numpy())
        ntks_arr = np.array(ntks)
        outs = []
        with torch.no_grad():
            for s in range(cfg.nngp_draws):
                torch.manual_seed(ctx.seed * 10_000 + 5_000 + s)
                outs.append(desc.module().double()(x, z)[:, 0].numpy())
        products = np.array([np.outer(o, o) for o in outs])
        nngp_mc = products.mean(0)
        # the Monte-Carlo noise floor: relative size of the standard error of the mean
        nngp_floor = float(np.linalg.norm(products.std(0, ddof=1) / np.sqrt(len(products))) / np.linalg.norm(nngp_a))
        row = {
            "width": width,
            "ntk_single_rel_err": float(np.mean([_rel(k, ntk_a) for k in ntks_arr])),
            "ntk_mean_rel_err": _rel(ntks_arr.mean(0), ntk_a),
            "nngp_mc_rel_err": _rel(nngp_mc, nngp_a),
            "nngp_mc_noise_floor": nngp_floor,
        }
        rows.append(row)
        print(
            f"width {width:>5}: NTK error per network {row['ntk_single_rel_err']:.4f}, "
            f"MC-mean NTK {row['ntk_mean_rel_err']:.4f}, MC NNGP {row['nngp_mc_rel_err']:.4f}",
            flush=True,
        )
    widths = np.array(cfg.widths, dtype=float)
    slope = float(np.polyfit(np.log(widths), np.log([r["ntk_single_rel_err"] for r in rows]), 1)[0])
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.loglog(widths, [r["ntk_single_rel_err"] for r in rows], "o-", label=f"NTK, one network (slope {slope:.2f})")
    ax.loglog(widths, [r["ntk_mean_rel_err"] for r in rows], "s--", label=f"NTK, mean of {cfg.seeds} networks")
    ax.loglog(widths, [r["nngp_mc_rel_err"] for r in rows], "^--", label=f"NNGP, Monte Carlo over {cfg.nngp_draws}")
    ax.loglog(widths, [r["nngp_mc_noise_floor"] for r in rows], ":", color="gray", label="NNGP Monte-Carlo noise")
    ax.set(
        xlabel="width n_f = n_g",
        ylabel="relative Frobenius error",
        title="Finite hypernetworks approach the hyperkernel",
    )
    ax.set_xticks(cfg.widths, [str(w) for w in cfg.widths])
    ax.xaxis.set_minor_formatter(plt.NullFormatter())
    ax.legend(fontsize=8)
    ctx.save_figure(fig, "kernel_convergence")
    return {"widths": {str(r["width"]): r for r in rows}, "fit": {"ntk_single_slope": slope, "expected_slope": -0.5}}


def headline(summary: dict[str, Any]) -> Table:
    """Relative kernel errors per width, and the fitted slope."""
    rows = [
        [int(w), r["ntk_single_rel_err"], r["ntk_mean_rel_err"], r["nngp_mc_rel_err"], r["nngp_mc_noise_floor"]]
        for w, r in summary["widths"].items()
    ]
    fit = summary["fit"]
    return Table(
        "Kernel convergence: relative error against the analytic kernels",
        ["width n_f = n_g", "NTK, one network", "NTK, mean of networks", "NNGP, Monte Carlo", "NNGP noise level"],
        rows,
        note=f"log-log slope of the one-network NTK error: {fit['ntk_single_slope']:.2f} "
        f"(theory {fit['expected_slope']:g})",
    )
