"""ZRF score: the textbook Jensen-Shannon divergence against scipy, the Metric against the functional."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon

from lightning_unlearn.metrics import ZRFScore
from lightning_unlearn.metrics.functional import jensen_shannon, zrf_score


def random_probs(n, c, seed, zeros=True):
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(n, c, generator=g, dtype=torch.float64)
    if zeros:  # some exact zeros: 0 * log 0 must count as 0
        p[torch.rand(n, c, generator=g) < 0.3] = 0.0
        p[:, 0] += 1e-3
    return p / p.sum(1, keepdim=True)


@pytest.mark.parametrize("base", [2.0, math.e, 10.0])
def test_jensen_shannon_equals_scipy_squared(base):
    p, q = random_probs(50, 7, 0), random_probs(50, 7, 1)
    expected = jensenshannon(p.numpy(), q.numpy(), base=base, axis=1) ** 2
    np.testing.assert_allclose(jensen_shannon(p, q, base).numpy(), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("base", [2.0, math.e])
def test_zrf_from_logits_is_one_minus_mean_scipy_js(base):
    g = torch.Generator().manual_seed(2)
    logits, reference = torch.randn(64, 10, generator=g), 3 * torch.randn(64, 10, generator=g)
    p, q = logits.softmax(1).double().numpy(), reference.softmax(1).double().numpy()
    js = jensenshannon(p, q, base=base, axis=1) ** 2
    assert zrf_score(logits, reference, log_base=base).item() == pytest.approx(1 - js.mean(), abs=1e-6)
    probs = zrf_score(logits.softmax(1), reference.softmax(1), from_logits=False, log_base=base)
    assert probs.item() == pytest.approx(1 - js.mean(), abs=1e-6)


def test_zrf_range_and_normalisation():
    one_hot = torch.eye(4, dtype=torch.float64)
    shifted = one_hot.roll(1, dims=1)  # disjoint supports: the largest JS
    assert zrf_score(one_hot, one_hot, from_logits=False).item() == pytest.approx(1.0)
    assert zrf_score(one_hot, shifted, from_logits=False).item() == pytest.approx(0.0, abs=1e-12)
    assert zrf_score(one_hot, shifted, from_logits=False, log_base=math.e).item() == pytest.approx(1 - math.log(2))
    g = torch.Generator().manual_seed(5)
    scores = [zrf_score(torch.randn(8, 5, generator=g) * 5, torch.randn(8, 5, generator=g) * 5) for _ in range(20)]
    assert all(0.0 <= s.item() <= 1.0 for s in scores)


def test_unnormalised_probabilities_are_normalised_like_scipy():
    p, q = random_probs(10, 3, 3, zeros=False) * 7.0, random_probs(10, 3, 4, zeros=False)
    expected = 1 - (jensenshannon(p.numpy(), q.numpy(), base=2, axis=1) ** 2).mean()
    assert zrf_score(p, q, from_logits=False).item() == pytest.approx(expected, abs=1e-10)


def test_metric_over_batches_equals_functional_on_concatenation():
    g = torch.Generator().manual_seed(6)
    batches = [(torch.randn(n, 10, generator=g), torch.randn(n, 10, generator=g)) for n in (7, 16, 1, 30)]
    metric = ZRFScore()
    for preds, reference in batches:
        metric.update(preds, reference)
    expected = zrf_score(torch.cat([p for p, _ in batches]), torch.cat([r for _, r in batches]))
    assert metric.compute().item() == pytest.approx(expected.item(), abs=1e-6)
    assert metric._reductions["js_sum"].__name__ == metric._reductions["total"].__name__ == "dim_zero_sum"
    metric.reset()
    assert math.isnan(metric.compute().item())


def test_half_precision_inputs_are_computed_in_float32():
    g = torch.Generator().manual_seed(7)
    logits, reference = torch.randn(32, 10, generator=g), torch.randn(32, 10, generator=g)
    full = zrf_score(logits, reference)
    half = zrf_score(logits.to(torch.bfloat16), reference.to(torch.bfloat16))
    assert half.dtype == torch.float32 and half.item() == pytest.approx(full.item(), abs=1e-2)


@pytest.mark.parametrize(
    "preds, reference, kwargs, match",
    [
        (torch.randn(4, 3), torch.randn(4, 2), {}, "shape"),
        (torch.randn(4), torch.randn(4), {}, "shape"),
        (torch.rand(4, 3) - 1, torch.rand(4, 3), {"from_logits": False}, "preds"),
        (torch.rand(4, 3), torch.zeros(4, 3), {"from_logits": False}, "reference"),
        (torch.randn(4, 3), torch.randn(4, 3), {"log_base": 1.0}, "log_base"),
        (torch.randn(4, 3), torch.randn(4, 3), {"log_base": 0.0}, "log_base"),
    ],
)
def test_invalid_input_raises_value_error_naming_the_argument(preds, reference, kwargs, match):
    with pytest.raises(ValueError, match=match):
        zrf_score(preds, reference, **kwargs)
    with pytest.raises(ValueError, match=match):
        ZRFScore(**kwargs).update(preds, reference)
