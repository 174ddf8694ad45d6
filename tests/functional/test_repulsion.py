"""The repulsion forms: the analytic gradient equals autograd's, and descent moves away from the anchor."""

import pytest
import torch

from lightning_unlearn.functional import REPULSION_FORMS, add_repulsion_gradient, repulsion_term


@pytest.mark.parametrize("form", REPULSION_FORMS)
def test_gradient_equals_autograd_and_points_away(form):
    torch.manual_seed(0)
    params = [torch.randn(3, 2, requires_grad=True), torch.randn(4, requires_grad=True)]
    anchors = [p.detach() + 0.3 * torch.randn_like(p) for p in params]
    term, d = repulsion_term(params, anchors, form, gamma=2.0)
    expected = torch.autograd.grad(0.7 * term, params)
    for p in params:
        p.grad = torch.zeros_like(p)
    distance, value = add_repulsion_gradient(params, anchors, form, weight=0.7, gamma=2.0)
    assert abs(distance - float(d)) < 1e-5 and abs(value - float(term)) < 1e-4
    for p, g in zip(params, expected):
        torch.testing.assert_close(p.grad, g)
    with torch.no_grad():  # a small descent step increases the distance
        moved = [p - 1e-3 * p.grad for p in params]
    assert float(repulsion_term(moved, anchors, form)[1]) > float(d)


def test_masks_restrict_the_gradient():
    p = torch.tensor([1.0, 1.0], requires_grad=True)
    add_repulsion_gradient([p], [torch.zeros(2)], "negative_l2", masks={0: torch.tensor([1.0, 0.0])})
    assert p.grad.tolist() == [-2.0, 0.0]
