"""Named experiments: each a typed config (dataclass) plus a run function, in one registry."""

from hypernet.experiments.registry import EXPERIMENTS, Experiment, RunContext, get, register

# Importing the modules registers them.
from hypernet.experiments import (  # noqa: E402, F401  # isort: skip
    continual,
    hyperkernel_images,
    hyperparameter_sweep,
    inr,
    kernel_convergence,
    mip_ablation,
    modularity,
    ntk_drift,
    rotation_widths,
    split_digits,
    transfer,
    uncertainty,
)

__all__ = ["EXPERIMENTS", "Experiment", "RunContext", "get", "register"]
