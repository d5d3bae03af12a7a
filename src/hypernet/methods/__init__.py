"""Training methods built on the core (library code; never prints): continual learning with a
task-conditioned hypernetwork (`continual`) and the standard baselines (`ewc`, `si`, `learners`)."""

from hypernet.methods.continual import (
    HnetContinual,
    class_incremental_predict,
    infer_task,
    lookahead_step,
    output_regularizer,
    predictive_entropy,
)
from hypernet.methods.ewc import EWCPenalty, fisher_diagonal
from hypernet.methods.learners import EWC, SI, FineTune, HnetLearner, Learner, MultiHeadNet, PerTaskNets
from hypernet.methods.si import SIPenalty

__all__ = [
    "EWC",
    "SI",
    "EWCPenalty",
    "FineTune",
    "HnetContinual",
    "HnetLearner",
    "Learner",
    "MultiHeadNet",
    "PerTaskNets",
    "SIPenalty",
    "class_incremental_predict",
    "fisher_diagonal",
    "infer_task",
    "lookahead_step",
    "output_regularizer",
    "predictive_entropy",
]
