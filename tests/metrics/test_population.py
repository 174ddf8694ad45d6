"""Per-example audits over populations: KLoM, the challenge score and U-LiRA on constructed
populations; scipy/numpy references; Metrics merge exactly."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy import stats

from lightning_unlearn.metrics import ChallengeScore, KLoM, ULiRA
from lightning_unlearn.metrics.functional import challenge_score, epsilon_scores, klom, summarise, ulira


def _population(models: int, examples: int, seed: int, shift: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    centre = torch.linspace(-4, 6, examples, dtype=torch.float64)  # each example its own margin
    return centre + shift + torch.randn(models, examples, generator=g, dtype=torch.float64)


def test_klom_is_zero_for_identical_populations_and_grows_with_a_shift():
    oracle = _population(16, 200, 0)
    assert float(klom(oracle.clone(), oracle).abs().max()) == 0.0
    means = [float(klom(oracle + shift, oracle).mean()) for shift in (0.5, 1.0, 2.0, 4.0)]
    assert all(a < b for a, b in itertools.pairwise(means)), means
    assert means[0] > 0


def test_klom_matches_a_scipy_histogram_reference():
    unlearned, oracle = _population(12, 40, 1, shift=0.8), _population(10, 40, 2)

    def reference(p_arr: np.ndarray, q_arr: np.ndarray) -> float:  # data-unlearning-bench, last bin closed
        p_arr, q_arr = np.clip(p_arr, -100, 100), np.clip(q_arr, -100, 100)
        edges = np.linspace(min(p_arr.min(), q_arr.min()), max(p_arr.max(), q_arr.max()), 21)
        p = np.histogram(p_arr, edges)[0] / len(p_arr)
        q = np.histogram(q_arr, edges)[0] / len(q_arr)
        return stats.entropy(p, np.where(p > 0, np.maximum(q, 1e-5), q))

    ours = klom(unlearned, oracle)
    for i in range(40):
        assert float(ours[i]) == pytest.approx(reference(unlearned[:, i].numpy(), oracle[:, i].numpy()), abs=1e-10)
    swapped = klom(unlearned, oracle, direction="oracle_unlearned")
    assert float(swapped[3]) == pytest.approx(reference(oracle[:, 3].numpy(), unlearned[:, 3].numpy()), abs=1e-10)


def test_ulira_separates_a_constructed_case_and_guesses_between_two_retrain_populations():
    retrained = _population(16, 300, 3)
    remembered = _population(16, 300, 4, shift=3.0)  # unlearned models still confident on every example
    assert float(ulira(remembered, retrained)) > 0.9
    other_retrain = _population(16, 300, 5)
    assert abs(float(ulira(other_retrain, retrained)) - 0.5) < 0.05
    per_example = ulira(remembered, retrained, reduction="none", variance="per_example")
    assert per_example.shape == (300,) and float(per_example.mean()) > 0.85


def test_challenge_score_hand_computation_and_extremes():
    # N = 16: buckets [0, .5), [.5, 1), ..., [2.5, 3) worth 1, 1/2, ..., 1/32; epsilon >= 3 scores 0
    assert float(challenge_score(torch.tensor([0.1, 0.7, 5.0]), num_models=16)) == pytest.approx((1 + 0.5 + 0) / 3)
    assert float(challenge_score(torch.tensor([2.9]), num_models=16)) == pytest.approx(1 / 32)
    retrained = _population(16, 100, 6)
    apart = epsilon_scores(_population(16, 100, 7, shift=20.0), retrained)  # separated: perfect attack
    assert float(apart.min()) == 50.0 and float(challenge_score(apart, 16)) == 0.0
    same = epsilon_scores(_population(16, 100, 8), retrained)
    assert 0.1 < float(challenge_score(same, 16)) < 0.3  # the estimator's bias with 16 models (README)
    assert float(same.mean()) < float(epsilon_scores(_population(16, 100, 9, shift=1.5), retrained).mean())
    with pytest.raises(ValueError, match="equal size"):
        epsilon_scores(_population(8, 10, 0), _population(9, 10, 1))


def test_epsilon_of_one_example_by_hand():
    # 4 models each; "positive" = larger median (unlearned). Threshold 2.5 -> TPR 3/4, FPR 1/4:
    # eps = max(log(1 - d - 1/4) - log(1/4), log(1 - d - 1/4) - log(1/4)) = log(3 - 4d)
    unlearned = torch.tensor([[1.0], [3.0], [4.0], [5.0]], dtype=torch.float64)
    retrained = torch.tensor([[0.0], [0.5], [1.5], [3.2]], dtype=torch.float64)
    eps = float(epsilon_scores(unlearned, retrained, delta=1e-5)[0])
    assert eps >= math.log(3 - 4e-5) - 1e-12


@pytest.mark.parametrize("metric_cls", [ChallengeScore, ULiRA])
def test_forget_metrics_merge_halves_exactly(metric_cls):
    unlearned, retrained = _population(8, 60, 10, shift=0.7), _population(8, 60, 11)
    whole, halves = metric_cls(), metric_cls()
    whole.update(unlearned, retrained, index=torch.arange(60))
    halves.update(unlearned[:, 25:], retrained[:, 25:], index=torch.arange(25, 60))
    halves.update(unlearned[:, :25], retrained[:, :25], index=torch.arange(25))
    a, b = whole.compute(), halves.compute()
    assert a == b if isinstance(a, dict) else torch.equal(a, b)


def test_klom_metric_summarises_each_split():
    oracle = _population(8, 50, 12)
    metric = KLoM()
    metric.update(oracle + 3.0, oracle, "forget", index=torch.arange(50))
    metric.update(oracle.clone(), oracle, "test", index=torch.arange(50))
    out = metric.compute()
    assert out["test/mean"] == 0.0 and out["forget/mean"] > 1.0
    assert out["forget/mean"] == pytest.approx(summarise(klom(oracle + 3.0, oracle))["mean"])
    assert set(out) == {f"{s}/{k}" for s in ("forget", "test") for k in ("mean", "median", "p95")}
