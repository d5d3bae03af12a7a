"""The same MIP hypernetwork trained with hyperlight (the MIP authors' library) and with hypernet:
learning curves side by side, same seeds, same batches.

Task: `mip-ablation`'s regression family, `f_gamma(t) = sin(pi (1 + gamma) t + 2 pi gamma)` on
`t in [-1, 1]`, `gamma in [0, 1]`; target MLP `1 -> 32 -> 32 -> 1`; hypernetwork `[cos, sin](pi gamma / 2)
-> 64 -> 64 -> P` with LeakyReLU, output `theta0 + delta`, `theta0` the target's own initial weights
in both. Each step: 8 values of `gamma`, one generated network each, 32 points each; Adam lr 1e-3.
Held-out loss: 64 fixed `gamma` x 64 points. Needs the `bench` extra (`pip install -e .[bench]`).

    python benchmarks/mip_vs_hyperlight.py            # writes docs/benchmarks/mip_vs_hyperlight.{json,txt}
                                                      # and docs/figures/mip_vs_hyperlight.png
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import hypernet as hn
from hypernet.atomic import atomic_write
from hypernet.experiments.mip_tasks import regression_function

ROOT = Path(__file__).resolve().parents[1]
GROUPS, POINTS, HIDDEN = 8, 32, (64, 64)


def target_module() -> nn.Sequential:
    return nn.Sequential(nn.Linear(1, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 1))


def ours(seed: int) -> tuple[list[nn.Parameter], Callable[[Tensor, Tensor], Tensor]]:
    """hypernet: `predict(gamma [1], t [M, 1]) -> [M, 1]`."""
    torch.manual_seed(seed)
    target = hn.TargetNetwork(target_module())
    hyper = hn.MLPHyperNetwork(
        1, target.spec, hidden=HIDDEN, activation="leaky_relu", parametrization="mip", theta0=target.initial_weights()
    )
    return list(hyper.parameters()), lambda gamma, t: target(t, hyper(gamma))


def theirs(seed: int) -> tuple[list[nn.Parameter], Callable[[Tensor, Tensor], Tensor]]:
    """hyperlight 0.0.5: the documented `hypernetize` + `HyperNet.from_existing` path."""
    import hyperlight as hl

    torch.manual_seed(seed)
    module = target_module()
    names = [n for n, _ in module.named_parameters()]
    mainnet, weights = hl.hypernetize(module, parameters=[p for _, p in module.named_parameters()], return_values=True)
    hyper = hl.HyperNet.from_existing(weights, input_shapes={"gamma": (1,)}, hidden_sizes=list(HIDDEN))
    assert sorted(weights) == sorted(names)

    def predict(gamma: Tensor, t: Tensor) -> Tensor:
        with mainnet.using_externals(hyper(gamma=gamma)):
            out: Tensor = mainnet(t)
        return out

    return list(hyper.parameters()), predict


def train(
    build: Callable[[int], tuple[list[nn.Parameter], Callable[[Tensor, Tensor], Tensor]]],
    seed: int,
    steps: int,
    every: int,
) -> list[float]:
    params, predict = build(seed)
    opt = torch.optim.Adam(params, lr=1e-3)
    g = torch.Generator().manual_seed(seed)  # the same batches for both libraries
    eg = torch.Generator().manual_seed(12345)
    eval_gamma = torch.rand(64, 1, generator=eg)
    eval_t = torch.linspace(-1, 1, 64)[:, None]
    eval_y = regression_function(eval_gamma, eval_t.expand(64, 64, 1))

    def held_out() -> float:
        with torch.no_grad():
            return float(sum(F.mse_loss(predict(eval_gamma[k], eval_t), eval_y[k]) for k in range(64)) / 64)

    curve = [held_out()]
    for step in range(1, steps + 1):
        gamma = torch.rand(GROUPS, 1, generator=g)
        t = torch.rand(GROUPS, POINTS, 1, generator=g) * 2 - 1
        y = regression_function(gamma, t)
        loss = sum(F.mse_loss(predict(gamma[k], t[k]), y[k]) for k in range(GROUPS)) / GROUPS
        opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[union-attr]
        opt.step()
        if step % every == 0:
            curve.append(held_out())
    return curve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--every", type=int, default=25)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    args = parser.parse_args()
    torch.set_num_threads(1)
    curves = {
        name: [train(fn, s, args.steps, args.every) for s in range(args.seeds)]
        for name, fn in (("hypernet", ours), ("hyperlight", theirs))
    }
    steps = list(range(0, args.steps + 1, args.every))
    final = {n: [c[-1] for c in cs] for n, cs in curves.items()}
    mean = {n: statistics.mean(v) for n, v in final.items()}
    sd = {n: statistics.stdev(v) if len(v) > 1 else 0.0 for n, v in final.items()}
    se_diff = math.sqrt(sum(s**2 for s in sd.values()) / args.seeds)
    diff = mean["hypernet"] - mean["hyperlight"]
    # "at least as well": our mean final loss is no more than 2 standard errors of the difference above theirs
    verdict = "holds" if diff <= 2 * se_diff else "does not hold"
    lines = [
        f"MIP hypernetwork, regression task, {args.seeds} seeds, {args.steps} Adam steps (held-out MSE)",
        "| library | final loss, mean | sd over seeds | per seed |",
        "|---|---:|---:|---|",
    ]
    for n in curves:
        lines.append(f"| {n} | {mean[n]:.4g} | {sd[n]:.2g} | {', '.join(f'{v:.4g}' for v in final[n])} |")
    lines.append(
        f"difference hypernet - hyperlight: {diff:+.3g} (2 standard errors: {2 * se_diff:.3g}); "
        f"'hypernet learns at least as well': {verdict}"
    )
    text = "\n".join(lines)
    print(text)
    (args.out / "benchmarks").mkdir(parents=True, exist_ok=True)
    result = {"steps": steps, "curves": curves, "final": final, "difference": diff, "two_se": 2 * se_diff}
    result["verdict"] = verdict
    atomic_write(
        args.out / "benchmarks" / "mip_vs_hyperlight.json", lambda p: p.write_text(json.dumps(result, indent=1))
    )
    atomic_write(args.out / "benchmarks" / "mip_vs_hyperlight.txt", lambda p: p.write_text(text + "\n"))
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for n, color in (("hypernet", "tab:blue"), ("hyperlight", "tab:green")):
        arr = torch.tensor(curves[n])
        ax.plot(steps, arr.median(0).values, color=color, label=n)
        ax.fill_between(steps, arr.min(0).values, arr.max(0).values, color=color, alpha=0.2)
    ax.set(yscale="log", xlabel="step", ylabel="held-out MSE", title="The same MIP hypernetwork in two libraries")
    ax.legend()
    (args.out / "figures").mkdir(parents=True, exist_ok=True)
    atomic_write(
        args.out / "figures" / "mip_vs_hyperlight.png",
        lambda p: fig.savefig(p, format="png", dpi=110, bbox_inches="tight"),
    )


if __name__ == "__main__":
    main()
