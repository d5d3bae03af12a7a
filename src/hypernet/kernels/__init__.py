"""Infinite-width kernels: analytic NNGP/NTK of MLPs, the hypernetwork GP kernel and hyperkernel,
empirical NTKs of any model, and kernel predictions (GP posterior, infinite-width gradient descent)."""

from hypernet.kernels.activations import ActivationRule, get_rule, quadrature_rule
from hypernet.kernels.analytic import Kernel, MLPDescription, mlp_kernel, mlp_nngp, mlp_ntk, nngp_diagonal
from hypernet.kernels.empirical import empirical_ntk, functional, plan_empirical_ntk
from hypernet.kernels.finite import HyperDescription
from hypernet.kernels.hyper import hyper_kernel, hyper_nngp, hyper_ntk
from hypernet.kernels.ntk_plan import NTKPlan
from hypernet.kernels.predict import Prediction, kernel_predict

__all__ = [
    "ActivationRule",
    "HyperDescription",
    "Kernel",
    "MLPDescription",
    "NTKPlan",
    "Prediction",
    "empirical_ntk",
    "functional",
    "get_rule",
    "hyper_kernel",
    "hyper_nngp",
    "hyper_ntk",
    "kernel_predict",
    "mlp_kernel",
    "mlp_nngp",
    "mlp_ntk",
    "nngp_diagonal",
    "plan_empirical_ntk",
    "quadrature_rule",
]
