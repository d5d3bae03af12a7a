"""How sure a classifier is, measured: negative log-likelihood, expected calibration error with its
reliability-diagram bins, predictive entropy, members' disagreement, and the area under the ROC
curve of an out-of-distribution score.

Predictions are class probabilities `probs: [N, C]` (an ensemble's mean over members, or one
network's softmax); members' predictions are `[K, N, C]`.

* ECE (Naeini et al., AAAI 2015; Guo et al., ICML 2017): `M` equal-width bins of the confidence
  `max_c p`, bin `b` holding `(b/M, (b+1)/M]` (the first also holds 0);
  `ECE = Σ_b (n_b / N) · |accuracy_b − confidence_b|`.
* AUROC by ranks (the Mann–Whitney U statistic): `(R_pos − n_pos(n_pos + 1)/2) / (n_pos · n_neg)`,
  `R_pos` the sum of the positives' ranks among all scores, ties given their mean rank; it equals
  `P(s_pos > s_neg) + ½ P(s_pos = s_neg)`.
* Two OOD scores from an ensemble's members `p_k = p(y | x, θ_k)`, `p̄ = mean_k p_k`: the predictive
  entropy `H[p̄]` (total uncertainty), and its epistemic part, the mutual information between the
  label and the weights, `I(y; θ | x) = H[p̄] − mean_k H[p_k]` (the BALD score of Houlsby et al.,
  arXiv:1112.5745, 2011; the split into aleatoric `mean_k H[p_k]` and epistemic parts of Depeweg et
  al., ICML 2018, used for OOD and adversarial detection by Smith & Gal, UAI 2018). It is zero when
  the members agree, however unsure each is; the entropy is high also where every member is unsure.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


def _check_probs(probs: Tensor, labels: Tensor | None = None) -> None:
    if probs.ndim != 2 or probs.shape[0] == 0:
        raise ValueError(f"probs: expected [N, C] with N >= 1, got {list(probs.shape)}")
    if labels is not None and (labels.ndim != 1 or labels.shape[0] != probs.shape[0]):
        raise ValueError(
            f"labels: expected [{probs.shape[0]}] to match probs {list(probs.shape)}, got {list(labels.shape)}"
        )
    # logits passed by mistake would give an ECE above 1 and a meaningless NLL: refuse them by name
    # (rows summing to 1 within 1e-3 allows float32 softmax outputs and averages of them)
    sums = probs.sum(-1)
    if bool((probs < 0).any() | (probs > 1).any()) or not torch.allclose(sums, torch.ones_like(sums), atol=1e-3):
        raise ValueError("probs: expected probabilities (in [0, 1], each row summing to 1); pass logits.softmax(-1)")
    if labels is not None:
        if labels.dtype.is_floating_point or labels.dtype == torch.bool:
            raise ValueError(f"labels: expected integer class indices, got dtype {labels.dtype}")
        if bool((labels < 0).any() | (labels >= probs.shape[1]).any()):
            raise ValueError(
                f"labels: expected class indices in [0, {probs.shape[1]}), got {labels.min()}..{labels.max()}"
            )


def nll(probs: Tensor, labels: Tensor, eps: float = 1e-12) -> float:
    """Mean negative log-likelihood of the labels, `−mean log p_y` (nats); `p_y` floored at `eps`."""
    _check_probs(probs, labels)
    p = probs.gather(1, labels.long().unsqueeze(1)).squeeze(1)
    return float(-torch.log(p.clamp_min(eps)).double().mean())


def entropy_of_probs(probs: Tensor, eps: float = 1e-12) -> Tensor:
    """Entropy (nats) of each prediction given as probabilities (an ensemble's mean): `probs: [..., C] -> [...]`;
    `0 · log 0 = 0`. From logits: `hypernet.methods.continual.predictive_entropy`."""
    return -(probs * torch.log(probs.clamp_min(eps))).sum(-1)


def mutual_information(member_probs: Tensor, eps: float = 1e-12) -> Tensor:
    """Mutual information between label and weights per input, `H[mean_k p_k] − mean_k H[p_k]`
    (nats, >= 0 by Jensen's inequality): `member_probs: [K, N, C] -> [N]`, K >= 1 (one member: 0)."""
    if member_probs.ndim != 3 or member_probs.shape[0] < 1:
        raise ValueError(f"member_probs: expected [K, N, C] with K >= 1, got {list(member_probs.shape)}")
    mi = entropy_of_probs(member_probs.mean(0), eps) - entropy_of_probs(member_probs, eps).mean(0)
    # the two terms are equal up to float rounding when the members agree: no negative information
    return mi.clamp_min(0.0)


@dataclass
class ReliabilityBins:
    """Per bin `b` of `(b/M, (b+1)/M]`: `counts[b]` predictions, their mean confidence and accuracy
    (NaN in an empty bin)."""

    edges: list[float]
    counts: list[int]
    confidence: list[float]
    accuracy: list[float]

    @property
    def ece(self) -> float:
        total = sum(self.counts)
        return sum(n / total * abs(a - c) for n, a, c in zip(self.counts, self.accuracy, self.confidence) if n)


def reliability_bins(probs: Tensor, labels: Tensor, bins: int = 15) -> ReliabilityBins:
    """The reliability diagram's bins of `probs: [N, C]` against `labels: [N]`."""
    _check_probs(probs, labels)
    if bins < 1:
        raise ValueError(f"bins: expected at least 1, got {bins}")
    conf, pred = probs.double().max(dim=1)
    correct = (pred == labels.long()).double()
    # right-closed bins: a confidence of exactly b/M belongs to bin b - 1
    index = (torch.ceil(conf * bins) - 1).clamp(0, bins - 1).long()
    counts = torch.bincount(index, minlength=bins)
    conf_sum = torch.zeros(bins, dtype=torch.float64).index_add_(0, index, conf)
    acc_sum = torch.zeros(bins, dtype=torch.float64).index_add_(0, index, correct)
    nan = float("nan")
    return ReliabilityBins(
        edges=[b / bins for b in range(bins + 1)],
        counts=[int(n) for n in counts],
        confidence=[float(s / n) if n else nan for s, n in zip(conf_sum, counts)],
        accuracy=[float(s / n) if n else nan for s, n in zip(acc_sum, counts)],
    )


def expected_calibration_error(probs: Tensor, labels: Tensor, bins: int = 15) -> float:
    """ECE of `probs: [N, C]` against `labels: [N]` with `bins` equal-width confidence bins."""
    return reliability_bins(probs, labels, bins).ece


def auroc(scores_in: Tensor, scores_out: Tensor) -> float:
    """Area under the ROC curve for telling `scores_out: [N_out]` (positives, e.g. OOD inputs) from
    `scores_in: [N_in]` (negatives) by a higher score; ties count one half (Mann–Whitney U)."""
    if scores_in.ndim != 1 or scores_out.ndim != 1 or not len(scores_in) or not len(scores_out):
        raise ValueError(
            f"scores_in, scores_out: expected two non-empty 1-D tensors, got {list(scores_in.shape)} and "
            f"{list(scores_out.shape)}"
        )
    scores = torch.cat([scores_in, scores_out]).double()
    if bool(torch.isnan(scores).any()):
        raise ValueError("scores_in, scores_out: NaN scores cannot be ranked")
    values, inverse, counts = torch.unique(scores, sorted=True, return_inverse=True, return_counts=True)
    below = torch.cumsum(counts, 0) - counts  # how many scores are smaller than each distinct value
    mean_rank = below.double() + (counts.double() + 1) / 2  # ranks from 1, ties share their mean
    n_in, n_out = len(scores_in), len(scores_out)
    rank_sum = float(mean_rank[inverse[n_in:]].sum())
    return (rank_sum - n_out * (n_out + 1) / 2) / (n_in * n_out)


def mean_pairwise_disagreement(member_probs: Tensor) -> float:
    """Mean over pairs of members `j < k` of the fraction of inputs where their predicted classes
    differ: `member_probs: [K, N, C]`, K >= 2."""
    if member_probs.ndim != 3 or member_probs.shape[0] < 2:
        raise ValueError(f"member_probs: expected [K, N, C] with K >= 2, got {list(member_probs.shape)}")
    pred = member_probs.argmax(-1)  # [K, N]
    differ = (pred.unsqueeze(0) != pred.unsqueeze(1)).double().mean(-1)  # [K, K], zero diagonal
    k = pred.shape[0]
    return float(differ.sum() / (k * (k - 1)))
