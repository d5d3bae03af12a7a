"""Training methods built on the core (library code; never prints): continual learning with a
task-conditioned hypernetwork (`continual`) and the standard baselines (`ewc`, `si`, `learners`);
uncertainty from a noise-conditioned hypernetwork (`bayesian`, metrics in `calibration`);
hyperparameter-conditioned training (`conditional`); functional representations (`inr`)."""

from hypernet.methods import bayesian, calibration, conditional, inr
from hypernet.methods.bayesian import BayesianHyperNetwork
from hypernet.methods.calibration import auroc, expected_calibration_error
from hypernet.methods.conditional import ConditionalModel, HyperparameterRange, LossMixing, WeightDecay
from hypernet.methods.continual import (
    HnetContinual,
    class_incremental_predict,
    infer_task,
    lookahead_step,
    output_regularizer,
    predictive_entropy,
)
from hypernet.methods.ewc import EWCPenalty, fisher_diagonal
from hypernet.methods.inr import EmbeddingINR, INRHyperNetwork, psnr
from hypernet.methods.learners import EWC, SI, FineTune, HnetLearner, Learner, MultiHeadNet, PerTaskNets
from hypernet.methods.si import SIPenalty

__all__ = [
    "BayesianHyperNetwork",
    "ConditionalModel",
    "EmbeddingINR",
    "HyperparameterRange",
    "INRHyperNetwork",
    "LossMixing",
    "WeightDecay",
    "auroc",
    "bayesian",
    "calibration",
    "conditional",
    "expected_calibration_error",
    "inr",
    "psnr",
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
