"""Gradient projection without a trainer: the closed form on toys where g_r and g_f are known, the
retain bound, global vs per-layer scope, fused reductions, bad input."""

import pytest
import torch

from lightning_unlearn.functional import check_tolerance, foreach_dot, foreach_sq_norm, project_gradients


def closed_form(g_f, g_r, eps):
    """The reference rule on flattened float64 vectors."""
    f, r = torch.cat([g.double().flatten() for g in g_f]), torch.cat([g.double().flatten() for g in g_r])
    lam = (-(r @ f) - eps) / (r @ r + 1e-8)
    return f + lam * r if lam > 0 else f, lam


def test_foreach_dot_matches_torch_dot():
    g = torch.Generator().manual_seed(0)
    a = [torch.randn(5, 3, generator=g), torch.randn(7, generator=g), torch.randn(2, 2, 2, generator=g)]
    b = [torch.randn_like(t) for t in a]
    expected = torch.stack([torch.dot(x.flatten(), y.flatten()) for x, y in zip(a, b)])
    torch.testing.assert_close(foreach_dot(a, b), expected, rtol=1e-5, atol=1e-6)
    assert all(torch.equal(x, y) for x, y in zip(a, [t.clone() for t in a]))  # inputs untouched
    torch.testing.assert_close(foreach_sq_norm(a), torch.stack([x.square().sum() for x in a]), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("eps", [0.0, 0.3])
def test_global_projection_equals_closed_form_and_bounds_the_retain_change(eps):
    g_r = [torch.tensor([1.0, 2.0]), torch.tensor([[0.5, -1.0]])]
    g_f = [torch.tensor([-2.0, -1.0]), torch.tensor([[1.0, 0.5]])]  # <g_r, g_f> = -4.5: conflict
    expected, lam = closed_form(g_f, g_r, eps)
    lambda_star = project_gradients(g_f, g_r, tolerance=eps)
    d = torch.cat([g.flatten() for g in g_f]).double()
    torch.testing.assert_close(d, expected, rtol=1e-6, atol=1e-6)
    assert lambda_star.item() == pytest.approx(lam.item(), rel=1e-6)
    lr = 0.1
    first_order_change = -lr * (torch.cat([g.flatten() for g in g_r]).double() @ d)
    assert first_order_change <= lr * eps + 1e-7
    assert first_order_change == pytest.approx(lr * eps, abs=1e-6)  # active constraint: equality


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_no_change_when_the_gradients_do_not_conflict(scope):
    g_r = [torch.tensor([1.0, 2.0]), torch.tensor([0.5])]
    g_f = [torch.tensor([0.5, 0.1]), torch.tensor([3.0])]
    before = [g.clone() for g in g_f]
    lambda_star = project_gradients(g_f, g_r, scope=scope)
    assert (lambda_star <= 0).all()
    assert all(torch.equal(a, b) for a, b in zip(g_f, before))


def test_global_and_layer_scopes_differ_as_expected():
    # tensor a conflicts with the retain gradient, tensor b agrees more strongly: globally no conflict
    g_r = [torch.tensor([1.0, 0.0]), torch.tensor([1.0, 0.0])]
    g_f = [torch.tensor([-1.0, 1.0]), torch.tensor([3.0, 0.0])]
    global_f = [g.clone() for g in g_f]
    project_gradients(global_f, g_r, scope="global")  # <g_r, g_f> = 2 > 0: untouched
    assert all(torch.equal(a, b) for a, b in zip(global_f, g_f))
    layer_f = [g.clone() for g in g_f]
    lambdas = project_gradients(layer_f, g_r, scope="layer")
    torch.testing.assert_close(lambdas, torch.tensor([1.0, -3.0]), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(layer_f[0], torch.tensor([0.0, 1.0]))  # a made orthogonal to its g_r
    assert torch.equal(layer_f[1], g_f[1])  # b untouched
    # and where the global vector conflicts, one lambda scales both tensors' g_r
    g_f = [torch.tensor([-3.0, 1.0]), torch.tensor([1.0, 0.0])]
    expected, lam = closed_form(g_f, g_r, 0.0)
    project_gradients(g_f, g_r, scope="global")
    torch.testing.assert_close(torch.cat(g_f).double(), expected)
    assert lam.item() == pytest.approx(1.0, rel=1e-6)


def test_non_finite_multiplier_leaves_the_gradients_alone():
    g_f = [torch.tensor([1.0, float("nan")])]
    before = g_f[0].clone()
    project_gradients(g_f, [torch.tensor([-1.0, 1.0])])
    assert torch.allclose(g_f[0], before, equal_nan=True)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(tolerance=-0.1), "`tolerance` must be a finite number >= 0, got -0.1: it is eps"),
        (dict(tolerance=float("nan")), "`tolerance` must be a finite number"),
        (dict(scope="neuron"), "`scope` must be one of \\('global', 'layer'\\)"),
    ],
)
def test_bad_input_is_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        project_gradients([torch.ones(2)], [torch.ones(2)], **kwargs)


def test_lists_must_pair_up_and_tolerance_is_normalised():
    with pytest.raises(ValueError, match="must pair up"):
        project_gradients([torch.ones(2)], [])
    assert check_tolerance(0) == 0.0 and isinstance(check_tolerance(0), float)
