"""Weight quantisation: per-channel symmetric round-to-nearest, exact on representable values."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_unlearn.functional import quantize_tensor, quantize_weights


@pytest.mark.parametrize("bits", [8, 4])
def test_representable_values_round_trip_exactly(bits):
    qmax = 2 ** (bits - 1) - 1
    g = torch.Generator().manual_seed(0)
    q = torch.randint(-qmax, qmax + 1, (6, 3, 3, 3), generator=g).float()
    q[:, 0, 0, 0] = qmax  # every channel reaches the top level: its scale is exactly the grid's
    scales = torch.tensor([2.0**-k for k in range(6)]).reshape(6, 1, 1, 1)
    weight = q * scales
    assert torch.equal(quantize_tensor(weight, bits), weight)


def test_rounding_to_the_nearest_level_per_channel():
    weight = torch.tensor([[1.0, 0.26, -0.74], [10.0, 0.0, 5.01]])
    out = quantize_tensor(weight, bits=4)  # levels: row 0 multiples of 1/7, row 1 of 10/7
    assert torch.allclose(out, torch.tensor([[1.0, 2 / 7, -5 / 7], [10.0, 0.0, 40 / 7]]), atol=1e-6)  # 5.01 = 3.51 steps
    assert (quantize_tensor(weight, 8) - weight).abs().max() <= 10 / 127 / 2 + 1e-6  # half a step at most
    assert torch.equal(quantize_tensor(torch.zeros(2, 3), 8), torch.zeros(2, 3))  # a pruned channel stays 0


def test_quantize_weights_copies_and_touches_conv_and_linear_weights_only():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    quantized = quantize_weights(net, bits=4)
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())  # the original is untouched
    changed = {k for k, v in quantized.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {"0.weight", "3.weight"}
    levels = (quantized[3].weight / (net[3].weight.abs().amax(1, keepdim=True) / 7)).detach()
    assert torch.allclose(levels, levels.round(), atol=1e-4) and levels.abs().max() <= 7 + 1e-4
    with pytest.raises(ValueError, match="bits"):
        quantize_tensor(torch.ones(2, 2), 1)
