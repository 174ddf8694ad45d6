"""A case built so that the forget set alone drives some weights (shared by the un-pruning tests)."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import TensorDataset

from lightning_unlearn.data import ForgetSpec, UnlearningDataModule

D, K, N_RETAIN, N_FORGET = 16, 4, 240, 48


def built_data(seed: int = 0) -> TensorDataset:
    """Retained examples carry their class on features 0-7 and are 0 on features 8-15; forgotten
    examples carry it on features 8-15 only. So a model trained on everything grows large weights on
    features 8-15 that magnitude pruning keeps, while a model trained on the retained data never
    moves them from their (small) initial values."""
    g = torch.Generator().manual_seed(seed)
    y_r, y_f = torch.arange(N_RETAIN) % K, torch.arange(N_FORGET) % K
    x_r, x_f = 0.5 * torch.randn(N_RETAIN, D, generator=g), 0.5 * torch.randn(N_FORGET, D, generator=g)
    x_r[:, 8:] = 0.0
    x_f[:, 8:] = 0.0
    for x, y, offset in ((x_r, y_r, 0), (x_f, y_f, 8)):
        x[torch.arange(len(y)), offset + 2 * y] += 2.0
        x[torch.arange(len(y)), offset + 2 * y + 1] += 2.0
    return TensorDataset(torch.cat([x_r, x_f]), torch.cat([y_r, y_f]))


def built_datamodule() -> UnlearningDataModule:
    return UnlearningDataModule(
        built_data(0), built_data(1), forget=ForgetSpec(indices=list(range(N_RETAIN, N_RETAIN + N_FORGET))), batch_size=32
    )


def linear_net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(D, K))
    with torch.no_grad():
        net[0].weight.mul_(0.1)
    return net


def trained(net: nn.Module, n: int, steps: int = 150) -> nn.Module:
    """Full-batch SGD on the first ``n`` examples (all data, or the retained part only)."""
    x, y = built_data(0).tensors
    opt = torch.optim.SGD(net.parameters(), lr=0.5, momentum=0.9, weight_decay=5e-4)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x[:n]), y[:n]).backward()
        opt.step()
    return net


def built_models():
    """The model trained on all data, the retain-only reference mask (same pruning pipeline: 50 %
    magnitude) and the retain-only model."""
    import copy

    from lightning_unlearn.functional import apply_pruning

    full = trained(linear_net(), N_RETAIN + N_FORGET)
    retained = trained(linear_net(), N_RETAIN)
    return full, apply_pruning(copy.deepcopy(retained), amount=0.5), retained
