"""Random labels: the forgetting targets of RL, SalUn and EUPMU."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

__all__ = ["random_labels"]


def random_labels(
    y: Tensor, num_classes: int, exclude_true_label: bool = True, generator: Optional[torch.Generator] = None
) -> Tensor:
    """Uniform random labels in ``[0, num_classes)``, different from ``y`` when asked (one
    ``randint`` and a shift past the true label: uniform over the other classes)."""
    if not exclude_true_label:
        return torch.randint(0, num_classes, y.shape, device=y.device, generator=generator)
    draw = torch.randint(0, num_classes - 1, y.shape, device=y.device, generator=generator)
    return draw + (draw >= y).long()
