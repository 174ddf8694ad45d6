"""Random labels: the forgetting targets of RL, SalUn and EUPMU."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

__all__ = ["random_labels"]


def random_labels(
    y: Tensor, num_classes: int, exclude_true_label: bool = True, generator: Optional[torch.Generator] = None
) -> Tensor:
    """Uniform random labels for the targets ``y``.

    ``exclude_true_label=False``: ``torch.randint(0, num_classes, y.shape)``, the draw of the SalUn
    reference (``RL.py``: ``torch.randint(0, args.num_classes, target.shape)``), which may return
    the true label (with probability ``1 / num_classes``). ``True``: uniform over the
    ``num_classes - 1`` other classes (the paper's ``y' != y``): one ``randint`` over
    ``num_classes - 1`` values and a shift past the true label.

    Example::

        >>> g = torch.Generator().manual_seed(0)
        >>> y = torch.tensor([0, 1, 2, 3])
        >>> bool((random_labels(y, 4, True, g) != y).all())
        True
    """
    if not exclude_true_label:
        return torch.randint(0, num_classes, y.shape, device=y.device, generator=generator)
    draw = torch.randint(0, num_classes - 1, y.shape, device=y.device, generator=generator)
    return draw + (draw >= y).long()
