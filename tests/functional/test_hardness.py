"""HAMU's hardness and constrained update (no trainer)."""

import math

import torch
from torch import nn

from lightning_unlearn.functional import hamu_update, hardness_thresholds, request_hardness


def test_update_branches_follow_the_reference_formulas():
    g_f = [torch.tensor([1.0, 0.0, 0.0])]
    # easy: retain descent alone raises the forget loss enough (kappa <= kappa_1)
    step = hamu_update([torch.tensor([-1.0, 0.0, 0.0])], g_f, radius=1.0, constraint=0.5)
    assert step.branch == "direct" and torch.allclose(step.delta[0], torch.tensor([1.0, 0.0, 0.0]))
    # rectified: B/||g_f||^2 g_f - sqrt(R^2 - B^2/||g_f||^2) g_r_perp/||g_r_perp||
    g_r = [torch.tensor([1.0, 1.0, 0.0])]
    step = hamu_update(g_r, g_f, radius=1.0, constraint=0.5)
    assert step.branch == "rectified"
    expected = torch.tensor([0.5, -math.sqrt(1 - 0.25), 0.0])
    assert torch.allclose(step.delta[0], expected)
    delta = step.delta[0]
    assert abs(float(delta @ g_f[0]) - 0.5) < 1e-6 and abs(float(delta.norm()) - 1.0) < 1e-6  # constraint tight, on the sphere
    # infeasible: the radius cannot reach B -- capped at R by default, the reference's B/||g_f||^2 g_f on request
    capped = hamu_update(g_r, g_f, radius=0.1, constraint=0.5)
    assert capped.branch == "infeasible" and torch.allclose(capped.delta[0], torch.tensor([0.1, 0.0, 0.0]))
    assert torch.allclose(hamu_update(g_r, g_f, 0.1, 0.5, infeasible="reference").delta[0], torch.tensor([0.5, 0.0, 0.0]))
    assert abs(step.kappa - 1 / math.sqrt(2)) < 1e-9


def test_thresholds_split_the_regimes():
    k1, k2 = hardness_thresholds(constraint=0.5, radius=1.0, forget_grad_norm=1.0)
    assert (k1, round(k2, 6)) == (-0.5, round(math.sqrt(0.75), 6))
    g_f = [torch.tensor([1.0, 0.0])]
    for kappa, rises in ((0.5, False), (0.95, True)):  # past kappa_2 the best step still raises the retain loss
        g_r = [torch.tensor([kappa, math.sqrt(1 - kappa**2)])]
        step = hamu_update(g_r, g_f, radius=1.0, constraint=0.5)
        assert (float(step.delta[0] @ g_r[0]) > 0) == rises
    assert math.isnan(hardness_thresholds(2.0, 1.0, 1.0)[0])


def test_per_example_hardness_equals_a_loop():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    x, y = torch.randn(12, 4), torch.randint(3, (12,))
    summary, per_example = request_hardness(net, [(x[:5], y[:5])], [(x[5:], y[5:])], chunk_size=2)
    params = list(net.parameters())
    g_r = torch.autograd.grad(nn.functional.cross_entropy(net(x[5:]), y[5:]), params)
    g_f = torch.autograd.grad(nn.functional.cross_entropy(net(x[:5]), y[:5]), params)
    flat = lambda gs: torch.cat([g.flatten() for g in gs])  # noqa: E731
    assert abs(summary.kappa - float(torch.cosine_similarity(flat(g_r), flat(g_f), dim=0))) < 1e-5
    for i in range(5):
        g_i = torch.autograd.grad(nn.functional.cross_entropy(net(x[i : i + 1]), y[i : i + 1]), params)
        assert abs(float(per_example[i]) - float(torch.cosine_similarity(flat(g_i), flat(g_r), dim=0))) < 1e-5
    assert summary.forget_examples == 5 and 0 <= summary.fraction_positive <= 1
