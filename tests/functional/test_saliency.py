"""SalUn's weight saliency without a trainer: against an independent computation, mode and
gradients untouched, the random-label loss, the thresholded mask, bad input."""

import copy

import pytest
import torch
import torch.nn.functional as F

from lightning_unlearn.functional import saliency_masks, topk_mask, weight_saliency
from tests.callbacks.user_module import Tiny, forget_loader


def independent_saliency(model, loader):
    """|sum over batches of the batch-mean CE gradient|, eval mode, via .backward()."""
    model = copy.deepcopy(model).eval()
    total = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for x, y in loader:
        model.zero_grad()
        F.cross_entropy(model(x), y).backward()
        for n, p in model.named_parameters():
            total[n] += p.grad
    return {n: g.abs() for n, g in total.items()}


def test_weight_saliency_equals_independent_computation_and_keeps_mode():
    torch.manual_seed(0)
    net = Tiny().train()
    net(torch.randn(32, 6))  # non-trivial BatchNorm running statistics
    expected = independent_saliency(net, forget_loader())
    running_mean = net.bn.running_mean.clone()
    got = weight_saliency(net, list(net.parameters()), forget_loader())
    for (name, _), value in zip(net.named_parameters(), got):
        torch.testing.assert_close(value, expected[name], rtol=1e-6, atol=1e-7, msg=name)
    assert net.training and torch.equal(net.bn.running_mean, running_mean)
    assert all(p.grad is None for p in net.parameters())


def test_random_label_saliency_differs_from_cross_entropy():
    net = Tiny()
    ce = weight_saliency(net, list(net.parameters()), forget_loader())
    rl = weight_saliency(net, list(net.parameters()), forget_loader(), loss="random_label")
    assert not all(torch.equal(a, b) for a, b in zip(ce, rl))
    again = weight_saliency(net, list(net.parameters()), forget_loader(), loss="random_label")
    assert all(torch.equal(a, b) for a, b in zip(rl, again))  # seeded


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_saliency_masks_threshold_the_saliency(scope):
    net = Tiny()
    params = list(net.parameters())
    masks = saliency_masks(net, params, forget_loader(), threshold=0.3, scope=scope)
    expected = topk_mask(weight_saliency(net, params, forget_loader()), 0.3, scope, rounding="floor")
    assert all(torch.equal(a, b) for a, b in zip(masks, expected))


def test_bad_input():
    net = Tiny()
    with pytest.raises(ValueError, match="`loss` must be one of \\('cross_entropy', 'random_label'\\), got 'kl'"):
        weight_saliency(net, list(net.parameters()), forget_loader(), loss="kl")
    with pytest.raises(ValueError, match="forget data is empty"):
        weight_saliency(net, list(net.parameters()), [])
    with pytest.raises(ValueError, match="`threshold` must be a fraction in \\(0, 1\\]"):
        saliency_masks(net, list(net.parameters()), forget_loader(), threshold=0.0)
