"""An implicit distribution over target weights: a noise-conditioned hypernetwork trained as
variational inference, and the ensemble it generates.

`θ = h(z; Φ)`, `z ~ N(0, I_m)`: the hypernetwork pushes Gaussian noise forward into weight space,
a distribution `q_Φ(θ)` without a tractable density (Krueger et al., "Bayesian Hypernetworks",
arXiv:1710.04759, 2017; Pawlowski et al., "Implicit Weight Uncertainty in Neural Networks",
arXiv:1711.01297, 2017). It is fitted by maximising the evidence lower bound

    ELBO(Φ) = E_q[log p(D | θ)] − KL(q ‖ p) = E_q[log p(D | θ)] + E_q[log p(θ)] + H[q],

divided here by the number of training examples `N` (so the data term is a mean cross-entropy):

    loss = mean_k CE(θ_k; batch) + (β / N) · (mean_k −log p(θ_k) − Ĥ(θ_1..θ_K)),

with `K` weight draws per step, a Gaussian prior `p(θ) = N(0, diag(σ²))` with
`σ = prior_scale / sqrt(fan_in)` per tensor (the scale of standard initialisations; Neal, 1996),
and the entropy `H[q]`, which an implicit `q` cannot evaluate, replaced by the sample-based
Kozachenko–Leonenko nearest-neighbour estimator (Kozachenko & Leonenko, 1987; in the form of
Kraskov, Stögbauer & Grassberger, Phys. Rev. E 69, 2004):

    Ĥ = (d / K) · Σ_i log ρ_i + const(d, K),   ρ_i = min_{j≠i} ‖u_i − u_j‖,

computed in prior-whitened coordinates `u = θ / σ` (a linear map: it shifts the entropy by a
constant, so the gradient is that of `H[q]`), `d = P`. Its gradient pushes each draw away from its
nearest neighbour with force `d / ρ_i²`; the prior pulls every draw back: the balance is the
posterior's spread in the directions the data do not pin down. `β = 1` is the ELBO itself;
`β < 1` a tempered posterior, down-weighting prior and entropy against the data (Wenzel et al.,
"How Good is the Bayes Posterior in Deep Neural Networks Really?", ICML 2020).

The entropy in function space (`entropy_space="function"`): in `d = P` (~79k for a 784 -> 100 -> 5
network) dimensions from `K = 5` draws, the weight-space estimate is a poor one (a
nearest-neighbour estimator's error grows with `d` at fixed `K`), and pushing draws apart in
weight space need not make their predictions differ (many weight directions leave the function
unchanged). The option replaces `Ĥ(θ_1..θ_K)` by the same
Kozachenko–Leonenko estimator on the members' function values at the step's training batch,
`f_k = log_softmax(logits_k)` flattened to `[K, B·C]`:

    loss = mean_k CE(θ_k; batch) + (β / N) · (mean_k −log p(θ_k) − Ĥ(f_1..f_K)),   d = B·C.

This follows the function-space repulsion of D'Angelo & Fortuin ("Repulsive Deep Ensembles are
Bayesian", NeurIPS 2021: a kernel-density repulsion between members' outputs on a batch) and Wang
et al. ("Function Space Particle Optimization for Bayesian Neural Networks", ICLR 2019), with the
nearest-neighbour estimator in place of a kernel. What it approximates: `Ĥ(f)` estimates the
entropy of the push-forward of `q` to the `B·C` log-probabilities on the batch (a different
distribution from `q(θ)`; `θ -> f` is many-to-one), so the objective is no longer the ELBO of
either space: the prior stays in weight space (those papers put the prior on functions too, which
would need a score estimator for the implicit function-space prior). Read it as a
weight-regularised, function-repulsive objective. Log-probabilities, not logits: adding a constant
to one member's logits changes no prediction, and log_softmax removes that direction from the
repulsion. Scale: the estimate is `d` times a mean log-distance, `d = B·C` (640 for batches of
128 and 5 classes) instead of `P`, so at the same `β` a unit change of log-distance is worth
`P / (B·C)` times (~120x) less against the prior and the data than in weight space; the `β` that
gives it the weight-space weight is `β_w · P / (B·C)`, which also makes the prior that many times
stronger. `Ĥ(f)` grows with the batch size `B`: `β` is tied to it.

A smaller generator (`rank=r`): `θ = θ0 + δ(z)`, each matrix's `δ = U(z) V(z)ᵀ` of rank `r`
(`LowRankHyperNetwork`, `θ0` learned), so `q` is spread around a learned mean along low-rank
directions, and the output layer produces `r (out + in)` numbers per matrix instead of
`out · in`. Krueger et al. (above) likewise keep the generator's output small (they generate only
weight-norm scales); rank-1 multiplicative posteriors around shared weights are Dusenberry et al.,
"Efficient and Scalable Bayesian Neural Nets with Rank-1 Factors", ICML 2020. The objective is
unchanged: prior and entropy act on the dense `θ`.

Only some weights random (`TargetNetwork(module, generate=...)`, e.g. the last layer): `q` and the
prior then cover the generated weights alone and the others are trained point estimates; a
posterior over the last layer alone already removes a ReLU network's asymptotic overconfidence far
from the data (Kristiadi, Hein & Hennig, "Being Bayesian, Even Just a Bit, Fixes Overconfidence in
ReLU Networks", ICML 2020), and the entropy estimate works in `d` = the last layer's size instead
of every weight's.

The ensemble: `K` members `θ_k = h(z_k)` sampled at once, `[K, P]`, and all of them applied to a
batch in ONE call of the target with per-sample weights (`x` expanded to `[K, B, d]`, one weight
set per leading index: `bmm` in the batched engine), no Python loop over members.

Use::

    bayes = BayesianHyperNetwork(hn.TargetNetwork(net), noise_dim=8, hidden=(32,), kl_weight=1e-3)
    opt = torch.optim.Adam(bayes.parameters(), lr=1e-3)
    loss, parts = bayes.loss(x, y, num_data=len(train_set), num=5)   # x: [B, ...], y: [B]
    loss.backward(); opt.step()
    probs = bayes(x_test, num=20).softmax(-1).mean(0)                 # [B, C]: the ensemble's prediction
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hypernet.conditioning import NoiseConditioner
from hypernet.hypernetworks.lowrank import LowRankHyperNetwork
from hypernet.hypernetworks.mlp import MLPHyperNetwork
from hypernet.model import HyperModel
from hypernet.spec import ParamSpec
from hypernet.target import TargetNetwork
from hypernet.train.distributed import ObjectiveModule


def prior_std(spec: ParamSpec, prior_scale: float = 1.0) -> Tensor:
    """Per-weight prior standard deviation `[P]`: `prior_scale / sqrt(fan_in)` for each tensor
    (a bias or other 1-D tensor has fan-in 1, so `prior_scale`)."""
    if not prior_scale > 0:
        raise ValueError(f"prior_scale: must be positive, got {prior_scale}")
    std = torch.empty(spec.numel)
    for info in spec.tensors:
        fan_in = info.fan_in if len(info.shape) > 1 else 1
        std[info.offset : info.stop] = prior_scale / math.sqrt(max(1, fan_in))
    return std


def knn_entropy(samples: Tensor) -> Tensor:
    """Kozachenko–Leonenko entropy estimate of the distribution of `samples: [K, d]` (K >= 2), up
    to the additive constant `const(d, K)`: `(d / K) · Σ_i log ρ_i`, `ρ_i` the distance from
    sample `i` to its nearest other sample. Differentiable (through both ends of each `ρ_i`)."""
    if samples.ndim != 2 or samples.shape[0] < 2:
        raise ValueError(f"samples: expected [K, d] with K >= 2, got {list(samples.shape)}")
    k, d = samples.shape
    # squared distances from the Gram matrix would cancel catastrophically at d ~ 1e5; take differences
    diff = samples.unsqueeze(0) - samples.unsqueeze(1)  # [K, K, d]
    sq = diff.pow(2).sum(-1)
    sq = sq + torch.diag(torch.full((k,), float("inf"), dtype=sq.dtype, device=sq.device))
    # two coinciding draws (a collapsed or tiny generator) would give log 0 = -inf and an infinite
    # loss: the distance is floored at the dtype's resolution instead, so the entropy term pushes
    # the draws apart with a finite gradient
    nearest = sq.min(dim=1).values.clamp_min(torch.finfo(sq.dtype).tiny)  # [K]
    return 0.5 * d * torch.log(nearest).mean()


class BayesianHyperNetwork(nn.Module):
    """A noise-conditioned hypernetwork `z: [K, m] -> θ: [K, P]` over the weights of `target`,
    trained by `loss` (the ELBO above, per example).

    Args:
        target: the network whose weights are generated (all of them).
        noise_dim: `m`, the size of the noise `z`.
        hidden: hidden widths of the hypernetwork (`MLPHyperNetwork`, hyperfan-in initialisation).
        prior_scale: the prior's `σ · sqrt(fan_in)`.
        kl_weight: `β` (1: the ELBO).
        rank: 0 generates every weight whole (an MLP head `hidden[-1] -> P`); `r >= 1` generates
            `θ0 + U Vᵀ` with rank-`r` factors per matrix around learned `θ0` (initialised to the
            target's own weights).
        entropy_space: where the entropy is estimated: `"weights"` (the ELBO's `H[q(θ)]`, in
            prior-whitened weights) or `"function"` (the members' log-probabilities on the
            training batch, `[K, B·C]`; the prior stays in weight space; see the module docstring).
    """

    prior_sd: Tensor

    def __init__(
        self,
        target: TargetNetwork,
        noise_dim: int = 8,
        hidden: Sequence[int] = (32,),
        prior_scale: float = 1.0,
        kl_weight: float = 1.0,
        rank: int = 0,
        entropy_space: Literal["weights", "function"] = "weights",
    ) -> None:
        super().__init__()
        if not isinstance(target, TargetNetwork):
            raise TypeError(f"target: expected a hypernet.TargetNetwork (wrap the module), got {type(target).__name__}")
        if isinstance(hidden, int) or not all(isinstance(h, int) and h >= 1 for h in hidden):
            raise ValueError(f"hidden: expected a sequence of widths >= 1, e.g. (32,), got {hidden!r}")
        if kl_weight < 0:
            raise ValueError(f"kl_weight: must be >= 0, got {kl_weight}")
        if not isinstance(rank, int) or rank < 0:
            raise ValueError(f"rank: expected 0 (generate whole) or a rank >= 1, got {rank!r}")
        if entropy_space not in ("weights", "function"):
            raise ValueError(f"entropy_space: expected 'weights' or 'function', got {entropy_space!r}")
        hyper: MLPHyperNetwork | LowRankHyperNetwork
        if rank:
            # dense weights [K, P] out of forward (θ0 + U Vᵀ formed): the prior and entropy need them
            hyper = LowRankHyperNetwork(
                noise_dim, target.spec, rank=rank, hidden=hidden, init="hyperfan_in", theta0=target.initial_weights()
            )
        else:
            hyper = MLPHyperNetwork(noise_dim, target.spec, hidden=hidden, init="hyperfan_in")
        self.noise = NoiseConditioner(noise_dim)
        self.model = HyperModel(target, hyper, self.noise)
        self.noise_dim, self.kl_weight, self.rank = noise_dim, kl_weight, rank
        self.entropy_space = entropy_space
        self.register_buffer("prior_sd", prior_std(target.spec, prior_scale))

    @property
    def target(self) -> TargetNetwork:
        return self.model.target

    def sample_weights(self, num: int, generator: torch.Generator | None = None) -> Tensor:
        """`num` weight draws `θ_k = h(z_k)`: `[num, P]`."""
        if num < 1:
            raise ValueError(f"num: expected at least 1 draw, got {num}")
        noise = self.noise(num, generator=generator)
        out: Tensor = self.model.weights(noise)
        return out

    def ensemble_logits(self, x: Tensor, weights: Tensor) -> Tensor:
        """Every member on the whole batch in one per-sample call: `x: [B, ...]`, `weights: [K, P]`
        -> logits `[K, B, C]`."""
        if weights.ndim != 2 or weights.shape[1] != self.target.spec.numel:
            raise ValueError(f"weights: expected [K, {self.target.spec.numel}], got {list(weights.shape)}")
        if x.ndim < 2 or not x.is_floating_point():
            raise ValueError(f"x: expected a float batch [B, ...], got shape {list(x.shape)} and dtype {x.dtype}")
        xs = x.unsqueeze(0).expand(weights.shape[0], *x.shape)
        out: Tensor = self.target(xs, weights)
        return out

    def forward(self, x: Tensor, num: int = 10, generator: torch.Generator | None = None) -> Tensor:
        """Logits of `num` freshly drawn members: `x: [B, ...] -> [num, B, C]`."""
        return self.ensemble_logits(x, self.sample_weights(num, generator))

    def neg_log_prior(self, weights: Tensor) -> Tensor:
        """`−log p(θ)` up to a constant, per draw: `weights: [K, P] -> [K]`."""
        return 0.5 * (weights / self.prior_sd).pow(2).sum(-1)

    def entropy(self, weights: Tensor, logits: Tensor) -> Tensor:
        """The entropy estimate `Ĥ` (up to its constant, not yet divided by `N`) of one step's
        draws `weights: [K, P]`, whose logits on the batch are `logits: [K, B, C]`: in prior-whitened
        weights, or on the log-probabilities `[K, B·C]` (`entropy_space`)."""
        if self.entropy_space == "function":
            if logits.ndim != 3 or logits.shape[0] != weights.shape[0]:
                raise ValueError(
                    f"logits: expected [K={weights.shape[0]}, B, C] (one row per draw), got {list(logits.shape)}"
                )
            return knn_entropy(F.log_softmax(logits, dim=-1).flatten(1))
        return knn_entropy(weights / self.prior_sd)

    def loss(
        self,
        x: Tensor,
        y: Tensor,
        num_data: int,
        num: int = 5,
        generator: torch.Generator | None = None,
        gather_logits: Callable[[Tensor], Tensor] | None = None,
    ) -> tuple[Tensor, dict[str, float]]:
        """The negative ELBO per training example on batch `x: [B, ...]`, `y: [B]`, with `num`
        (>= 2) weight draws; `num_data` is `N`, the size of the training set. Also returns its
        parts for logging: `nll` (mean cross-entropy), `prior` and `entropy` (per example; in the
        space `entropy_space` names).

        `gather_logits`: in a multi-process run, where `x` is this process's part of the step's
        batch, maps this part's logits `[K, b, C]` to the whole batch's `[K, B, C]`, which the
        function-space entropy is estimated on (the weight-space entropy and the prior need no
        batch; unused then)."""
        if num < 2:
            raise ValueError(f"num: the entropy estimate needs at least 2 draws, got {num}")
        if num_data < 1:
            raise ValueError(f"num_data: expected the training-set size (>= 1), got {num_data}")
        if y.ndim != 1 or y.shape[0] != x.shape[0] or y.dtype.is_floating_point:
            raise ValueError(
                f"y: expected integer class labels [{x.shape[0]}] (one per row of x), got shape {list(y.shape)} "
                f"and dtype {y.dtype}"
            )
        weights = self.sample_weights(num, generator)
        logits = self.ensemble_logits(x, weights)  # [K, B, C]
        nll = F.cross_entropy(logits.flatten(0, 1), y.repeat(num))
        prior = self.neg_log_prior(weights).mean() / num_data
        whole = gather_logits(logits) if gather_logits is not None and self.entropy_space == "function" else logits
        entropy = self.entropy(weights, whole) / num_data
        loss = nll + self.kl_weight * (prior - entropy)
        return loss, {"nll": float(nll.detach()), "prior": float(prior.detach()), "entropy": float(entropy.detach())}

    def num_trainable(self) -> int:
        return self.model.num_trainable()


class ELBOLoss(ObjectiveModule):
    """`bayes.loss` as a module's forward, so that DDP wraps the whole objective (data term, prior
    and entropy): `forward(x, y, num_data, num, generator, gather_logits) -> (loss, parts)`; its
    state is `bayes`'s (`distributed.ObjectiveModule`)."""

    def __init__(self, bayes: BayesianHyperNetwork) -> None:
        super().__init__(bayes, bayes.loss)
