"""Membership attacks: against scikit-learn and hand computations on fixed scores; Metrics merge
exactly and equal their functional twins; sign conventions in the logged names."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from lightning_unlearn.metrics import EntropyMIA, LossMIA, MembershipAudit, PerExampleMargins, ThresholdMIA
from lightning_unlearn.metrics.functional import (
    entropy_mia,
    fit_logistic_regression,
    logit_margins,
    loss_mia,
    membership_audit,
    roc_auc,
    roc_curve,
    sample_statistics,
    threshold_attacks,
    tpr_at_fpr,
)
from lightning_unlearn.metrics.functional.attacks import stratified_shuffle_splits
from lightning_unlearn.metrics.keys import audit_log_key, higher_means


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_equals_sklearn_roc_auc_score_with_ties(seed):
    g = torch.Generator().manual_seed(seed)
    members = torch.randint(0, 20, (137,), generator=g).double() / 4  # many ties
    non_members = torch.randint(0, 18, (211,), generator=g).double() / 4
    expected = roc_auc_score([1] * 137 + [0] * 211, torch.cat([members, non_members]).numpy())
    assert float(roc_auc(members, non_members)) == pytest.approx(expected, abs=1e-12)


def test_roc_curve_matches_sklearn_operating_points():
    g = torch.Generator().manual_seed(3)
    members, non_members = torch.randn(80, generator=g) + 0.7, torch.randn(120, generator=g)
    fpr, tpr, _ = roc_curve(members, non_members)
    sk_fpr, sk_tpr, _ = sk_roc_curve([1] * 80 + [0] * 120, torch.cat([members, non_members]).numpy(), drop_intermediate=False)
    np.testing.assert_allclose(fpr.numpy(), sk_fpr, atol=1e-12)
    np.testing.assert_allclose(tpr.numpy(), sk_tpr, atol=1e-12)


def test_tpr_at_low_fpr_on_a_constructed_case():
    # 1,000 non-members 0.000 .. 0.999, plus two high ones (5.0 and 3.0); members at 10, 4, 2.5, 0.5
    non_members = torch.cat([torch.arange(1000.0) / 1000, torch.tensor([5.0, 3.0])])
    members = torch.tensor([10.0, 4.0, 2.5, 0.5])
    # t = 10: TPR 1/4 at FPR 0; t = 4 flags the non-member 5.0: TPR 2/4 at FPR 1/1002; t = 2.5 also
    # flags 3.0: TPR 3/4 at FPR 2/1002; t = 0.5 needs FPR 502/1002
    assert float(tpr_at_fpr(members, non_members, 0.0)) == 0.25
    assert float(tpr_at_fpr(members, non_members, 0.001)) == 0.5  # 1/1002 <= 0.001 < 2/1002
    assert float(tpr_at_fpr(members, non_members, 0.002)) == 0.75  # 2/1002 <= 0.002
    assert float(tpr_at_fpr(members, non_members, 0.01)) == 0.75  # t = 0.5 needs FPR 502/1002
    assert float(tpr_at_fpr(members, non_members, 1.0)) == 1.0


def test_statistics_are_the_paper_quantities():
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0], [30.0, 0.0, -5.0]])
    target = torch.tensor([0, 1, 2])
    stats = sample_statistics(logits, target)
    p = torch.softmax(logits.double(), 1)
    for i, y in enumerate(target.tolist()):
        loss = -math.log(p[i, y])
        entropy = -sum(float(q) * math.log(float(q)) for q in p[i])
        rest = [sum(float(p[i, k]) for k in range(3) if k != j) for j in range(3)]  # 1 - p_j without cancellation
        m_entropy = -rest[y] * math.log(p[i, y]) - sum(float(p[i, j]) * math.log(rest[j]) for j in range(3) if j != y)
        assert float(-stats["log_p"][i]) == pytest.approx(loss, rel=1e-9)
        assert float(stats["entropy"][i]) == pytest.approx(entropy, rel=1e-9, abs=1e-12)
        assert float(stats["modified_entropy"][i]) == pytest.approx(float(m_entropy), rel=1e-7, abs=1e-12)
        assert float(stats["margin"][i]) == pytest.approx(math.log(p[i, y] / (1 - p[i, y])), rel=1e-6)
    # OPTML's m_entropy (log p for log(1 - p), columns indexed by the label vector) is another number
    optml = -((1 - p[:, target]) * torch.log(p[:, target])).sum(1) - (p * torch.log(p)).sum(1)
    assert not torch.allclose(optml, stats["modified_entropy"])


def test_statistics_stay_finite_for_saturated_logits():
    stats = sample_statistics(torch.tensor([[200.0, 0.0, 0.0], [0.0, 200.0, 0.0]]), torch.tensor([0, 0]))
    for value in stats.values():
        assert torch.isfinite(value).all()
    assert float(stats["margin"][0]) == pytest.approx(200 - math.log(2))
    assert float(stats["modified_entropy"][1]) > 190  # the wrong class is certain: log(1 - p) ~ -200
    assert torch.equal(logit_margins(torch.tensor([[3.0, 1.0]]), torch.tensor([0])), torch.tensor([2.0], dtype=torch.float64))


def test_logistic_regression_is_sklearns():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, generator=g, dtype=torch.float64)
    y = (x + torch.randn(400, generator=g, dtype=torch.float64) > 0.8).long()
    for class_weight in (None, "balanced"):
        w, b = fit_logistic_regression(x, y, class_weight=class_weight)
        ref = LogisticRegression(class_weight=class_weight, tol=1e-12, max_iter=10000).fit(x.numpy()[:, None], y.numpy())
        assert float(w[0]) == pytest.approx(float(ref.coef_[0, 0]), rel=1e-5)
        assert float(b) == pytest.approx(float(ref.intercept_[0]), rel=1e-5, abs=1e-7)


def test_entropy_attack_native_equals_sklearn():
    g = torch.Generator().manual_seed(1)
    retain, test = torch.rand(500, generator=g) * 0.6, torch.rand(300, generator=g) * 1.5
    forget = torch.rand(120, generator=g)
    assert float(entropy_mia(retain, test, forget)) == float(entropy_mia(retain, test, forget, backend="sklearn"))


def test_loss_attack_native_equals_sklearn_on_the_same_splits():
    g = torch.Generator().manual_seed(2)
    forget_loss, test_loss = torch.rand(90, generator=g) * 0.5, torch.rand(200, generator=g) * 2.0
    forget_labels, test_labels = torch.randint(0, 3, (90,), generator=g), torch.randint(0, 5, (200,), generator=g)
    native = loss_mia(forget_loss, forget_labels, test_loss, test_labels)
    reference = loss_mia(forget_loss, forget_labels, test_loss, test_labels, backend="sklearn")
    assert float(native) == pytest.approx(float(reference), abs=1e-6)
    assert 0.5 < float(native) <= 1.0  # the forget losses are lower: the attack sees it
    same = loss_mia(test_loss[:90], forget_labels, test_loss[90:], test_labels[90:])
    assert abs(float(same) - 0.5) < 0.2  # two draws of one distribution: about a coin toss
    splits = stratified_shuffle_splits(torch.tensor([0] * 20 + [1] * 20), n_splits=5)
    assert all(len(test) == 4 and len(train) == 36 for train, test in splits)


def _batches(seed: int = 0) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for split, n, scale in (("forget", 60, 2.0), ("retain", 300, 4.0), ("test", 150, 1.5)):
        y = torch.randint(0, 5, (n,), generator=g)
        out[split] = (torch.randn(n, 5, generator=g) + scale * torch.nn.functional.one_hot(y, 5), y)
    return out


@pytest.mark.parametrize("metric_cls", [ThresholdMIA, EntropyMIA, LossMIA, PerExampleMargins, MembershipAudit])
def test_two_halves_in_any_order_equal_one_update(metric_cls):
    data = _batches()
    whole, halves = metric_cls(), metric_cls()
    for split, (x, y) in data.items():
        whole.update(x, y, split, index=torch.arange(len(y)))
        h = len(y) // 3
        halves.update(x[h:], y[h:], split, index=torch.arange(h, len(y)))  # the second part first
        halves.update(x[:h], y[:h], split, index=torch.arange(h))
    a, b = whole.compute(), halves.compute()
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert (
                torch.equal(torch.as_tensor(a[key]), torch.as_tensor(b[key]))
                if not isinstance(a[key], dict)
                else a[key] == b[key]
            )
    else:
        assert torch.equal(a, b)


def test_metrics_equal_their_functional_twins():
    data = _batches(1)
    stats = {s: sample_statistics(x, y) for s, (x, y) in data.items()}
    labels = {s: y for s, (_, y) in data.items()}
    threshold, entropy, loss, audit = ThresholdMIA(), EntropyMIA(), LossMIA(), MembershipAudit()
    for split, (x, y) in data.items():
        for metric in (threshold, entropy, loss, audit):
            metric.update(x, y, split)
    twin = threshold_attacks(stats)
    for key, value in threshold.compute().items():
        attack, pair, stat = key.split("/")
        assert float(value) == float(twin[attack][pair][stat])
    assert float(entropy.compute()) == float(
        entropy_mia(stats["retain"]["entropy"], stats["test"]["entropy"], stats["forget"]["entropy"])
    )
    assert float(loss.compute()) == float(
        loss_mia(-stats["forget"]["log_p"], labels["forget"], -stats["test"]["log_p"], labels["test"])
    )
    assert audit.compute() == membership_audit(stats, labels)


def test_an_attack_on_remembered_data_beats_one_on_unseen_data():
    data = _batches(2)
    metric = ThresholdMIA()
    for split, (x, y) in data.items():
        metric.update(x, y, split)
    out = metric.compute()
    # retain logits are more confident than test ones: every attack calls them members
    assert all(float(out[f"{a}/retain_vs_test/auc"]) > 0.8 for a in ("loss", "confidence", "entropy", "modified_entropy"))
    assert float(out["loss/retain_vs_test/auc"]) == float(out["confidence/retain_vs_test/auc"])  # a monotone map of one score


def test_sign_conventions_are_in_the_logged_names():
    assert (
        audit_log_key("unlearn", "mia/loss/forget_vs_test/auc") == "unlearn/audit/mia/loss/forget_vs_test/auc_higher_remembered"
    )
    assert higher_means("mia/loss_cv/accuracy") == "remembered"
    assert higher_means("population/challenge_score") == "forgotten"
    assert higher_means("population/klom/forget_mean") == "unlike_retrain"
    assert higher_means("representation/cka_retrain/forget") == "like_retrain"
    for cls in (ThresholdMIA, EntropyMIA, LossMIA):
        assert "remembered" in cls.__doc__ or "forgotten" in cls.__doc__


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"attacks": ["loss", "gradient"]}, "attacks"),
        ({"attacks": "loss"}, "attacks"),
        ({"fprs": [0.0]}, "fprs"),
        ({"fprs": 0.01}, "fprs"),
    ],
)
def test_bad_arguments_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ThresholdMIA(**kwargs)


def test_mixing_updates_with_and_without_positions_is_refused():
    metric = ThresholdMIA()
    x, y = _batches()["forget"]
    metric.update(x[:10], y[:10], "forget", index=torch.arange(10))
    with pytest.raises(ValueError, match="always or never"):
        metric.update(x[10:], y[10:], "forget")
    with pytest.raises(ValueError, match="split"):
        metric.update(x, y, "validation")
