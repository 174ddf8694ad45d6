"""The lottery-ticket networks: LeNet-300-100 ("fc1") and LeNet-5, as in the code the un-pruning
paper builds its sparse models with (rahulvigneswaran/Lottery-Ticket-Hypothesis-in-Pytorch)."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn


class LeNet300100(nn.Module):
    """LeNet-300-100, the fully connected network of the lottery-ticket experiments (``fc1`` in
    the reference code): flatten, ``in_features -> 300 -> 100 -> num_classes`` with ReLU.

    Parameters are ``fc1``, ``fc2``, ``fc3``; structured (neuron) pruning acts on the rows of
    ``fc1``/``fc2`` (pruning rows of ``fc3`` would delete classes).

    Args:
        in_features: input size (784 for 28x28 images, 64 for digits).
        num_classes: number of logits.
        hidden: the two hidden widths.

    Example::

        >>> import torch
        >>> LeNet300100(in_features=64)(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """

    def __init__(self, in_features: int = 784, num_classes: int = 10, hidden: Sequence[int] = (300, 100)) -> None:
        super().__init__()
        hidden = list(hidden)
        if len(hidden) != 2 or min([in_features, num_classes, *hidden]) <= 0:
            raise ValueError(
                f"`in_features`, `num_classes` and the two `hidden` widths must be positive, got {in_features}, {num_classes}, {hidden}."
            )
        self.fc1 = nn.Linear(in_features, hidden[0])
        self.fc2 = nn.Linear(hidden[0], hidden[1])
        self.fc3 = nn.Linear(hidden[1], num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.fc1(x.flatten(1)))
        return self.fc3(F.relu(self.fc2(x)))


class LeNet5(nn.Module):
    """LeNet-5 (LeCun et al. 1998) for 28x28 images: conv 6@5x5 (padding 2), max-pool, conv 16@5x5,
    max-pool, ``400 -> 120 -> 84 -> num_classes`` with ReLU. (The lottery-ticket repository's
    "LeNet5" is a wider 3.3M-parameter variant; this is the classic 61k-parameter one.)

    Example::

        >>> import torch
        >>> LeNet5()(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        if min(in_channels, num_classes) <= 0:
            raise ValueError("`in_channels` and `num_classes` must be positive integers.")
        self.conv1 = nn.Conv2d(in_channels, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2).flatten(1)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))
