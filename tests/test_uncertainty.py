"""Uncertainty: the calibration and OOD metrics against hand computations and scikit-learn, the
implicit-posterior hypernetwork's parts against direct computations, and the `uncertainty`
experiment in `--quick` mode (scikit-learn digits, offline): its ensemble's members differ and are
less sure on digits of classes never trained on."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

import hypernet as hn
from hypernet.cli import main
from hypernet.methods import calibration as cal
from hypernet.methods.bayesian import BayesianHyperNetwork, knn_entropy, prior_std

# --- metrics on hand-made examples ---


def test_ece_and_bins_by_hand() -> None:
    # 5 bins (b/5, (b+1)/5]; float64 so that the confidences 0.6 and 0.8 sit exactly on bin edges
    probs = torch.tensor([[0.9, 0.1], [0.7, 0.3], [0.2, 0.8], [0.6, 0.4]], dtype=torch.float64)
    labels = torch.tensor([0, 1, 1, 0])
    bins = cal.reliability_bins(probs, labels, bins=5)
    # 0.9 -> bin 4 (right); 0.7 (wrong) and 0.8 (right, on the edge: right-closed) -> bin 3; 0.6 -> bin 2
    assert bins.counts == [0, 0, 1, 2, 1]
    assert bins.accuracy[2:] == [1.0, 0.5, 1.0] and math.isnan(bins.accuracy[0])
    assert bins.confidence[2:] == pytest.approx([0.6, 0.75, 0.9], abs=1e-12)
    # 1/4 |1 - 0.6| + 2/4 |0.5 - 0.75| + 1/4 |1 - 0.9| = 0.1 + 0.125 + 0.025
    assert cal.expected_calibration_error(probs, labels, bins=5) == pytest.approx(0.25, abs=1e-12)
    # a perfectly calibrated case: confidence 0.75, right on 3 of 4 inputs
    sure = torch.tensor([[0.75, 0.25]] * 4, dtype=torch.float64)
    assert cal.expected_calibration_error(sure, torch.tensor([0, 0, 0, 1]), bins=10) == pytest.approx(0.0, abs=1e-12)


def _ece_loop(probs: list[list[float]], labels: list[int], bins: int) -> float:
    """ECE as the definition reads, in plain Python: an independent implementation."""
    total = 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        members = [
            (max(p), int(p.index(max(p)) == y))
            for p, y in zip(probs, labels)
            if (lo < max(p) <= hi) or (b == 0 and max(p) == 0.0)
        ]
        if members:
            conf = sum(c for c, _ in members) / len(members)
            acc = sum(a for _, a in members) / len(members)
            total += len(members) / len(probs) * abs(acc - conf)
    return total


def test_ece_matches_a_plain_loop_on_random_predictions() -> None:
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(3 * torch.randn(500, 4, generator=g, dtype=torch.float64), -1)
    labels = torch.randint(4, (500,), generator=g)
    for bins in (1, 7, 15):
        expected = _ece_loop(probs.tolist(), labels.tolist(), bins)
        # float64 sums in a different order: agreement to rounding (1e-12 is ~1e4 ulps at this size)
        assert cal.expected_calibration_error(probs, labels, bins) == pytest.approx(expected, abs=1e-12)


def _auroc_pairs(neg: list[float], pos: list[float]) -> float:
    """P(pos > neg) + 1/2 P(pos = neg) over all pairs: the definition, by a double loop."""
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def test_auroc_by_hand_and_edge_cases() -> None:
    neg = torch.tensor([0.1, 0.4, 0.35, 0.8])
    pos = torch.tensor([0.8, 0.9, 0.4])
    # 0.8: 3 wins + 1 tie; 0.9: 4 wins; 0.4: 2 wins + 1 tie -> (3.5 + 4 + 2.5) / 12
    assert cal.auroc(neg, pos) == pytest.approx(10 / 12, abs=1e-12)
    assert cal.auroc(torch.zeros(5), torch.zeros(3)) == 0.5  # every pair tied
    assert cal.auroc(torch.tensor([0.0, 1.0]), torch.tensor([2.0, 3.0])) == 1.0
    assert cal.auroc(torch.tensor([2.0, 3.0]), torch.tensor([0.0, 1.0])) == 0.0
    with pytest.raises(ValueError, match="scores_in, scores_out"):
        cal.auroc(torch.zeros(0), torch.zeros(3))


def test_auroc_matches_sklearn_and_pairs_with_many_ties() -> None:
    g = torch.Generator().manual_seed(1)
    for n_neg, n_pos, levels in ((50, 30, 5), (200, 7, 40), (13, 90, 1000)):
        # integer-valued scores: many ties, which the rank formula must count as one half
        neg = torch.randint(levels, (n_neg,), generator=g).double()
        pos = (torch.randint(levels, (n_pos,), generator=g) + levels // 4).double()
        got = cal.auroc(neg, pos)
        reference = roc_auc_score([0] * n_neg + [1] * n_pos, torch.cat([neg, pos]).tolist())
        # rank sums of at most ~300 small integers are exact in float64: agreement to rounding
        assert got == pytest.approx(reference, abs=1e-12)
        assert got == pytest.approx(_auroc_pairs(neg.tolist(), pos.tolist()), abs=1e-12)


def test_nll_entropy_disagreement_by_hand() -> None:
    probs = torch.tensor([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]], dtype=torch.float64)
    assert cal.nll(probs, torch.tensor([0, 2])) == pytest.approx((math.log(2) + math.log(2)) / 2)
    ent = cal.entropy_of_probs(probs)
    assert ent[0] == pytest.approx(math.log(2))  # 0 log 0 counts as 0
    assert ent[1] == pytest.approx(-(0.2 * math.log(0.2) + 0.3 * math.log(0.3) + 0.5 * math.log(0.5)))
    # three members' predicted classes on four inputs: [0, 1, 1, 2], [0, 1, 2, 2], [1, 1, 2, 0]
    preds = torch.tensor([[0, 1, 1, 2], [0, 1, 2, 2], [1, 1, 2, 0]])
    member_probs = torch.nn.functional.one_hot(preds, 3).double()
    # pairs (1,2): 1/4, (1,3): 3/4, (2,3): 2/4 -> mean 1/2
    assert cal.mean_pairwise_disagreement(member_probs) == pytest.approx(0.5)
    same = member_probs[:1].expand(4, -1, -1)
    assert cal.mean_pairwise_disagreement(same) == 0.0


def _mutual_information_loop(members: list[list[list[float]]]) -> list[float]:
    """H[mean_k p_k] - mean_k H[p_k] per input, as the definition reads, in plain Python."""

    def h(p: list[float]) -> float:
        return -sum(q * math.log(q) for q in p if q > 0)

    k = len(members)
    out = []
    for n in range(len(members[0])):
        mean = [sum(members[j][n][c] for j in range(k)) / k for c in range(len(members[0][n]))]
        out.append(h(mean) - sum(h(members[j][n]) for j in range(k)) / k)
    return out


def test_mutual_information_by_hand_and_against_a_loop() -> None:
    # input 0: two sure members that disagree -> all of the entropy log 2 is epistemic;
    # input 1: two members equally unsure ([0.5, 0.5] both) -> entropy log 2, mutual information 0;
    # input 2: [1, 0] and [0.5, 0.5] -> H([0.75, 0.25]) - (0 + log 2) / 2
    members = torch.tensor(
        [[[1.0, 0.0], [0.5, 0.5], [1.0, 0.0]], [[0.0, 1.0], [0.5, 0.5], [0.5, 0.5]]], dtype=torch.float64
    )
    mi = cal.mutual_information(members)
    third = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25)) - math.log(2) / 2
    assert mi.tolist() == pytest.approx([math.log(2), 0.0, third], abs=1e-12)
    assert cal.entropy_of_probs(members.mean(0))[1] == pytest.approx(math.log(2))  # the entropy does not tell 0 from 1
    assert cal.mutual_information(members[:1]).tolist() == [0.0, 0.0, 0.0]  # one member: no disagreement
    g = torch.Generator().manual_seed(6)
    rand = torch.softmax(2 * torch.randn(5, 30, 4, generator=g, dtype=torch.float64), -1)
    # float64, sums of 4 terms in another order: agreement to rounding
    assert cal.mutual_information(rand).tolist() == pytest.approx(_mutual_information_loop(rand.tolist()), abs=1e-12)
    with pytest.raises(ValueError, match="member_probs"):
        cal.mutual_information(torch.rand(4, 3))


# --- the implicit posterior's parts ---


def _bayes(seed: int = 0) -> BayesianHyperNetwork:
    torch.manual_seed(seed)
    target = hn.TargetNetwork(nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3)))
    return BayesianHyperNetwork(target, noise_dim=3, hidden=(8,), prior_scale=2.0, kl_weight=0.5)


def test_knn_entropy_is_finite_when_draws_coincide() -> None:
    # a collapsed generator (all draws equal) must not give -inf: the loss would be infinite at step 1
    z = torch.zeros(3, 5, dtype=torch.float64, requires_grad=True)
    e = knn_entropy(z)
    e.backward()
    assert torch.isfinite(e) and torch.isfinite(z.grad).all()
    # the floor only touches coinciding draws: distinct ones keep the plain value (distance 1 -> log 1 = 0)
    assert float(knn_entropy(torch.eye(3, dtype=torch.float64) / 2**0.5)) == pytest.approx(
        0.0, abs=1e-12
    )  # rounding of (1/sqrt 2)^2 * 2


def test_knn_entropy_matches_a_loop() -> None:
    x = torch.randn(7, 40, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    logs = []
    for i in range(7):
        dists = [math.dist(x[i].tolist(), x[j].tolist()) for j in range(7) if j != i]
        logs.append(math.log(min(dists)))
    # (d / K) sum_i log rho_i; float64 throughout, so agreement to rounding
    assert float(knn_entropy(x)) == pytest.approx(40 / 7 * sum(logs), rel=1e-12)
    # spreading the samples by a factor s raises the estimate by d log s (the entropy's scaling law)
    assert float(knn_entropy(3 * x) - knn_entropy(x)) == pytest.approx(40 * math.log(3), rel=1e-12)
    with pytest.raises(ValueError, match="samples"):
        knn_entropy(x[:1])


def test_ensemble_is_one_call_equal_to_each_member_alone() -> None:
    model = _bayes()
    x = torch.randn(5, 6)
    weights = model.sample_weights(4, torch.Generator().manual_seed(3))
    logits = model.ensemble_logits(x, weights)
    assert logits.shape == (4, 5, 3)
    for k in range(4):
        # a plain module with member k's weights baked in: an independent path; float32 matmuls in
        # another order agree to ~1e-6 at these sizes
        torch.testing.assert_close(logits[k], model.target.materialize(weights[k])(x), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(logits[0], logits[1])  # different noise, different members


def test_prior_and_loss_parts_by_hand() -> None:
    model = _bayes()
    weights = model.sample_weights(3, torch.Generator().manual_seed(4))
    # by hand from the named tensors: sd = prior_scale / sqrt(fan_in) for a weight, prior_scale for a bias
    parts = model.target.spec.unflatten(weights)
    expected = torch.zeros(3)
    for name, t in parts.items():
        sd = 2.0 / math.sqrt(t.shape[-1]) if name.endswith("weight") else 2.0
        expected += 0.5 * (t / sd).pow(2).flatten(1).sum(-1)
    torch.testing.assert_close(model.neg_log_prior(weights), expected, atol=1e-5, rtol=1e-5)
    assert prior_std(model.target.spec, 2.0)[:24].unique().tolist() == pytest.approx([2.0 / math.sqrt(6)])
    # the loss is its parts put together as the docstring says: nll + beta (prior - entropy)
    x, y = torch.randn(8, 6), torch.randint(3, (8,))
    loss, parts_logged = model.loss(x, y, num_data=100, num=3, generator=torch.Generator().manual_seed(5))
    combined = parts_logged["nll"] + 0.5 * (parts_logged["prior"] - parts_logged["entropy"])
    assert float(loss.detach()) == pytest.approx(combined, rel=1e-5)
    with pytest.raises(ValueError, match="num"):
        model.loss(x, y, num_data=100, num=1)


def _function_bayes(seed: int = 0) -> BayesianHyperNetwork:
    torch.manual_seed(seed)
    target = hn.TargetNetwork(nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3)))
    return BayesianHyperNetwork(
        target, noise_dim=3, hidden=(8,), prior_scale=2.0, kl_weight=0.5, entropy_space="function"
    ).double()


def test_function_space_entropy_is_the_knn_estimate_on_the_members_log_probabilities() -> None:
    model = _function_bayes()
    g = torch.Generator().manual_seed(11)
    x, y = torch.randn(5, 6, generator=g, dtype=torch.float64), torch.randint(3, (5,), generator=g)
    loss, parts = model.loss(x, y, num_data=100, num=4, generator=torch.Generator().manual_seed(12))
    # independently: the same draws (the loss draws first from its generator), each member as a plain
    # module with its weights baked in, log-probabilities by hand, nearest neighbours by a Python loop
    weights = model.sample_weights(4, torch.Generator().manual_seed(12)).detach()
    rows = []
    for k in range(4):
        logits = model.target.materialize(weights[k])(x).detach()
        rows.append((logits - torch.logsumexp(logits, -1, keepdim=True)).flatten().tolist())  # [B*C]
    d = 5 * 3  # B * C: the dimension of the function values, not P
    logs = [math.log(min(math.dist(rows[i], rows[j]) for j in range(4) if j != i)) for i in range(4)]
    expected = d / 4 * sum(logs)
    # float64 throughout, sums in another order: agreement to rounding (1e-10 relative is ~1e6 ulps)
    assert parts["entropy"] * 100 == pytest.approx(expected, rel=1e-10)
    # not the weight-space estimate (a wrong tensor would give that one), which is far from it here
    weight_space = float(knn_entropy(weights / model.prior_sd))
    assert abs(weight_space - expected) > 1.0
    # and the loss is still nll + beta (prior - entropy), the prior on the weights
    assert parts["prior"] == pytest.approx(float(model.neg_log_prior(weights).mean()) / 100, rel=1e-10)
    assert float(loss.detach()) == pytest.approx(parts["nll"] + 0.5 * (parts["prior"] - parts["entropy"]), rel=1e-10)


def test_function_space_entropy_gradients_match_finite_differences() -> None:
    model = _function_bayes(1)
    g = torch.Generator().manual_seed(13)
    weights = model.sample_weights(3, torch.Generator().manual_seed(14)).detach()
    # the estimate as a function of the logits (log_softmax, the nearest-neighbour distances, their logs):
    # random logits have distinct distances, away from the min's kinks
    logits = torch.randn(3, 4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: model.entropy(weights, v), (logits,))
    # and the whole loss as a function of the inputs, with the draws fixed by a fresh generator each call:
    # the gradient through the members, the entropy, the prior and the cross-entropy together
    x = torch.randn(4, 6, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randint(3, (4,), generator=g)

    def loss_of(v: torch.Tensor) -> torch.Tensor:
        return model.loss(v, y, num_data=10, num=3, generator=torch.Generator().manual_seed(15))[0]

    assert torch.autograd.gradcheck(loss_of, (x,))
    # the repulsion reaches the generator: the entropy alone has a nonzero gradient on its parameters
    model.zero_grad()
    w = model.sample_weights(3, torch.Generator().manual_seed(16))
    model.entropy(w, model.ensemble_logits(x.detach(), w)).backward()
    grads = [p.grad for p in model.model.trainable_parameters()]
    assert all(gr is not None for gr in grads) and any(float(gr.abs().max()) > 0 for gr in grads if gr is not None)


def test_function_space_entropy_refuses_bad_input_by_name() -> None:
    model = _function_bayes()
    with pytest.raises(ValueError, match="entropy_space: expected 'weights' or 'function', got 'kernel'"):
        BayesianHyperNetwork(model.target, entropy_space="kernel")  # type: ignore[arg-type]
    weights = model.sample_weights(3).detach()
    with pytest.raises(ValueError, match=r"logits: expected \[K=3, B, C\]"):
        model.entropy(weights, torch.randn(2, 4, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"logits: expected \[K=3, B, C\]"):
        model.entropy(weights, torch.randn(3, 12, dtype=torch.float64))


def test_experiment_setting_reaches_the_model_and_is_checked(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    import hypernet.experiments.uncertainty as unc
    from hypernet.experiments.registry import PhaseTimer, RunContext

    seen = []

    class Spy(BayesianHyperNetwork):
        def entropy(self, weights: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
            seen.append(self.entropy_space)
            return super().entropy(weights, logits)

    monkeypatch.setattr(unc, "BayesianHyperNetwork", Spy)
    cfg = unc.UncertaintyConfig(data="digits", steps=2, batch_size=8, hidden=8, hyper_entropy="function")
    ctx = RunContext(out=tmp_path / "run", seed=0, progress=False)
    unc.run_seed(cfg, ctx, 0, PhaseTimer(ctx), methods=("hypernet",))
    assert seen == ["function", "function"]  # one estimate per training step, in function space
    assert main(["run", "uncertainty", "--quick", "--set", "hyper_entropy=kernel", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "hyper_entropy=kernel" in err[0]
    assert not (tmp_path / "x").exists()


# --- the experiment, --quick (digits) ---

# Floor of the members' mean pairwise disagreement on the held-out digits 5-9 (~450 images): members
# that ignore their noise disagree on none (0); 0.02 asks that two members differ, on average, on at
# least ~9 of those images, far above one image's 0.002. The quick run gives about 0.1.
DISAGREEMENT_FLOOR = 0.02


def test_quick_experiment_members_differ_and_are_unsure_out_of_distribution(tmp_path: Path) -> None:
    out = tmp_path / "unc"
    args = ["run", "uncertainty", "--quick", "--set", "seeds=1", "--out", str(out), "--no-progress"]
    assert main(args) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["experiment"] == "uncertainty" and results["quick"] is True
    assert (out / "figures" / "uncertainty-reliability.png").is_file()
    assert (out / "figures" / "uncertainty-entropy.png").is_file()
    models = results["summary"]["models"]
    assert sorted(models) == ["deep-ensemble", "hypernet", "mc-dropout", "single"]
    hyper = models["hypernet"]
    assert hyper["members"] == 20 and hyper["accuracy"] > 0.9  # it learned digits 0-4
    assert hyper["disagreement_heldout"] > DISAGREEMENT_FLOOR
    # the check: predictive entropy on OOD inputs (classes never trained on) >= 1.5x on test inputs
    assert hyper["entropy_heldout"] >= 1.5 * hyper["entropy_test"]
    # and its epistemic part, the members' mutual information, too (the quick run gives about 10x)
    assert hyper["mi_heldout"] >= 1.5 * hyper["mi_test"]
    assert "mi_auroc_heldout" not in models["single"]  # one network has no members to disagree
    # the criteria are the stated comparisons of the seed means with MC dropout's
    mc, crit = models["mc-dropout"], results["summary"]["criteria"]
    for score in ("auroc", "mi_auroc"):
        for ood in ("heldout", "rotated"):
            assert crit[f"{score}_{ood}_at_least_mc_dropout"] == (hyper[f"{score}_{ood}"] >= mc[f"{score}_{ood}"])
    assert crit["ece_at_most_mc_dropout"] == (hyper["ece"] <= mc["ece"])
    # parameter counts as stated: the ensemble is five of the single network
    assert models["deep-ensemble"]["trainable_parameters"] == 5 * models["single"]["trainable_parameters"]


def test_low_rank_generator_moves_each_matrix_by_rank_r_around_its_learned_base() -> None:
    torch.manual_seed(7)
    target = hn.TargetNetwork(nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3)))
    model = BayesianHyperNetwork(target, noise_dim=3, hidden=(8,), kl_weight=0.5, rank=1)
    weights = model.sample_weights(4, torch.Generator().manual_seed(8))  # [4, P], dense
    theta0 = model.target.spec.unflatten(model.model.hypernetwork.theta0.detach())
    base_start = target.initial_weights()  # theta0 starts at the target's own initial weights
    torch.testing.assert_close(model.model.hypernetwork.theta0.detach(), base_start)
    for name, w in model.target.spec.unflatten(weights).items():
        if name.endswith("weight"):  # 4x6 and 3x4 matrices: rank-1 factors (1 * (out + in) < out * in)
            for k in range(4):
                # an SVD of each draw's deviation, independent of the generator's factor path; singular
                # values below 1e-5 of the largest are float32 rounding of an exact rank-1 matrix
                sv = torch.linalg.svdvals((w[k] - theta0[name]).double())
                assert sv[0] > 1e-4 and bool((sv[1:] < 1e-5 * sv[0]).all())
    # the generator is smaller than the dense head: 8 -> r (out + in) per matrix + biases, plus theta0
    dense = BayesianHyperNetwork(target, noise_dim=3, hidden=(8,), rank=0)
    assert model.num_trainable() < dense.num_trainable() + target.spec.numel
    x, y = torch.randn(8, 6), torch.randint(3, (8,))
    loss, _ = model.loss(x, y, num_data=100, num=3)
    loss.backward()
    assert model.model.hypernetwork.theta0.grad is not None
    with pytest.raises(ValueError, match="rank: expected 0"):
        BayesianHyperNetwork(target, rank=-1)


def test_last_layer_posterior_keeps_the_hidden_layer_a_trained_point() -> None:
    torch.manual_seed(9)
    net = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3))
    model = BayesianHyperNetwork(hn.TargetNetwork(net, generate="2"), noise_dim=3, hidden=(8,))
    assert model.target.spec.numel == 4 * 3 + 3 and model.prior_sd.shape == (15,)  # prior over the last layer only
    x, y = torch.randn(8, 6), torch.randint(3, (8,))
    weights = model.sample_weights(3, torch.Generator().manual_seed(10))
    logits = model.ensemble_logits(x, weights)
    hidden = model.target.module[0]  # the free first layer, shared by every member
    for k in range(3):
        w, b = weights[k, :12].view(3, 4), weights[k, 12:]
        # by hand: relu(x W1^T + b1) W2^T + b2 with the shared first layer and member k's last layer
        torch.testing.assert_close(logits[k], torch.relu(hidden(x)) @ w.T + b, atol=1e-5, rtol=1e-5)
    loss, _ = model.loss(x, y, num_data=100, num=3)
    loss.backward()
    assert hidden.weight.grad is not None and any(p is hidden.weight for p in model.model.trainable_parameters())


def test_bad_input_names_the_argument() -> None:
    model = _bayes()
    with pytest.raises(ValueError, match=r"weights: expected \[K, 43\]"):
        model.ensemble_logits(torch.randn(2, 6), torch.randn(3, 42))
    with pytest.raises(ValueError, match="labels"):
        cal.expected_calibration_error(torch.rand(4, 3).softmax(-1), torch.zeros(5, dtype=torch.long))
    with pytest.raises(TypeError, match="target: expected a hypernet.TargetNetwork"):
        BayesianHyperNetwork(nn.Linear(3, 2))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="hidden: expected a sequence of widths"):
        BayesianHyperNetwork(model.target, hidden=5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"x: expected a float batch \[B, ...\], got shape \[6\]"):
        model(torch.randn(6))
    with pytest.raises(ValueError, match=r"x: expected a float batch .* dtype torch.int64"):
        model(torch.ones(2, 6, dtype=torch.long))
    with pytest.raises(ValueError, match=r"y: expected integer class labels \[4\]"):
        model.loss(torch.randn(4, 6), torch.zeros(5, dtype=torch.long), num_data=10)
    with pytest.raises(ValueError, match=r"y: expected integer class labels"):
        model.loss(torch.randn(4, 6), torch.zeros(4), num_data=10)
    # logits instead of probabilities, float labels, labels outside the classes: refused by name
    logits, labels = torch.randn(4, 3) * 5, torch.tensor([0, 1, 2, 0])
    with pytest.raises(ValueError, match=r"probs: expected probabilities .* logits.softmax"):
        cal.expected_calibration_error(logits, labels)
    with pytest.raises(ValueError, match=r"probs: expected probabilities"):
        cal.nll(logits, labels)
    with pytest.raises(ValueError, match="labels: expected integer class indices"):
        cal.nll(logits.softmax(-1), labels.float())
    with pytest.raises(ValueError, match=r"labels: expected class indices in \[0, 3\), got 0..3"):
        cal.nll(logits.softmax(-1), torch.tensor([0, 1, 3, 0]))
    with pytest.raises(ValueError, match="member_probs"):
        cal.mean_pairwise_disagreement(torch.rand(1, 4, 3))
    with pytest.raises(ValueError, match="kl_weight"):
        BayesianHyperNetwork(model.target, kl_weight=-1.0)
