"""Write `nt_mlp_kernels.npz`: neural-tangents' NNGP and NTK of MLPs, the reference that
`tests/test_kernel_references.py` holds `hypernet.kernels.mlp_nngp` / `mlp_ntk` to.

Run once, by hand, in a side environment that has neural-tangents (JAX is not a hypernet
dependency, so this script is never imported by the tests):

    python3 -m venv /tmp/ntvenv
    /tmp/ntvenv/bin/pip install neural-tangents==0.6.5 jax==0.4.30 jaxlib==0.4.30
    /tmp/ntvenv/bin/python tests/data/make_nt_reference.py

The versions of Python, NumPy, JAX, jaxlib and neural-tangents that made the file are stored in it
(key `versions`). Keys `x1: [5, 4]`, `x2: [3, 4]` are the inputs; for every configuration
`{act}_d{depth}_b{bias}` there are `..._{nngp|ntk}_cross: [5, 3]` (x1 against x2) and
`..._{nngp|ntk}_sym: [5, 5]` (x1 against itself, `x2=None` in neural-tangents).
"""

from __future__ import annotations

import platform
import sys
from pathlib import Path

import jax
import jaxlib
import neural_tangents
import numpy as np
from neural_tangents import stax

jax.config.update("jax_enable_x64", True)

OUT = Path(__file__).resolve().parent / "nt_mlp_kernels.npz"
#: weight variance per activation: 2 (He) for ReLU, a non-default 1.7 for erf so a hard-coded 2 shows
WEIGHT_VAR = {"relu": 2.0, "erf": 1.7}
BIAS_VARS = (0.0, 0.1)
DEPTHS = (1, 2, 3)


def key(act: str, depth: int, bias_var: float) -> str:
    return f"{act}_d{depth}_b{bias_var:g}"


def network(act: str, depth: int, bias_var: float):  # type: ignore[no-untyped-def]
    w_std, b_std = WEIGHT_VAR[act] ** 0.5, bias_var**0.5
    nonlin = stax.Relu() if act == "relu" else stax.Erf()
    layers = []
    for _ in range(depth):
        layers += [stax.Dense(512, W_std=w_std, b_std=b_std), nonlin]
    layers.append(stax.Dense(1, W_std=w_std, b_std=b_std))
    return stax.serial(*layers)[2]


def main() -> None:
    rng = np.random.RandomState(2024)
    # Inputs of different norms and no near-parallel pairs, so the off-diagonal is well conditioned.
    x1 = rng.randn(5, 4) * np.array([[0.5], [1.0], [1.5], [2.0], [0.8]])
    x2 = rng.randn(3, 4)
    arrays: dict[str, np.ndarray] = {"x1": x1, "x2": x2}
    for act in WEIGHT_VAR:
        for depth in DEPTHS:
            for bias_var in BIAS_VARS:
                kernel_fn = network(act, depth, bias_var)
                cross = kernel_fn(x1, x2, ("nngp", "ntk"))
                sym = kernel_fn(x1, None, ("nngp", "ntk"))
                k = key(act, depth, bias_var)
                arrays[f"{k}_nngp_cross"] = np.asarray(cross.nngp, dtype=np.float64)
                arrays[f"{k}_ntk_cross"] = np.asarray(cross.ntk, dtype=np.float64)
                arrays[f"{k}_nngp_sym"] = np.asarray(sym.nngp, dtype=np.float64)
                arrays[f"{k}_ntk_sym"] = np.asarray(sym.ntk, dtype=np.float64)
                arrays[f"{k}_weight_var"] = np.float64(WEIGHT_VAR[act])
    arrays["versions"] = np.array(
        [
            f"python={platform.python_version()}",
            f"numpy={np.__version__}",
            f"jax={jax.__version__}",
            f"jaxlib={jaxlib.__version__}",
            f"neural_tangents={neural_tangents.__version__}",
        ]
    )
    np.savez(OUT, **arrays)
    print(f"wrote {OUT} ({len(arrays)} arrays)", file=sys.stderr)


if __name__ == "__main__":
    main()
