"""Top-1 accuracy and unlearning accuracy (UA), OPTML convention, as fractions in ``[0, 1]``.

SalUn / Unlearn-Sparse report ``UA = 100 - Acc(D_f)``, ``RA = Acc(D_r)`` and ``TA = Acc(D_t)`` in
percent; here every value is a fraction (multiply by 100 to compare with the papers).
"""

from __future__ import annotations

import torch
from torch import Tensor


def _accuracy_update(preds: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Count correct top-1 predictions.

    Args:
        preds: ``(N, C)`` logits or probabilities (argmax is taken), or ``(N,)`` integer labels.
        target: ``(N,)`` integer labels.

    Returns:
        ``(correct, total)``: 0-d integer tensors on the device of ``target``.

    Raises:
        ValueError: if the shapes are not ``(N, C)``/``(N,)`` vs ``(N,)``, ``target`` is not an
            integer tensor, or ``preds`` is a 1-D floating tensor (ambiguous: scores or labels?).
    """
    if not isinstance(preds, Tensor) or not isinstance(target, Tensor):
        raise ValueError("`preds` and `target` must be torch.Tensor objects.")
    if target.ndim != 1:
        raise ValueError(f"`target` must have shape (N,) with integer class labels, got {tuple(target.shape)}.")
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise ValueError(f"`target` must hold integer class labels, got dtype {target.dtype}; use `target.long()`.")
    if preds.ndim == 2:
        labels = preds.argmax(dim=1)
    elif preds.ndim == 1:
        if preds.is_floating_point():
            raise ValueError(
                "`preds` of shape (N,) must hold integer labels, got a floating tensor; pass (N, C) "
                "logits/probabilities or `preds.long()` labels."
            )
        labels = preds
    else:
        raise ValueError(f"`preds` must have shape (N, C) (logits/probabilities) or (N,) (labels), got {tuple(preds.shape)}.")
    if labels.shape[0] != target.shape[0]:
        raise ValueError(
            f"`preds` and `target` must have the same number of samples, got {labels.shape[0]} and {target.shape[0]}."
        )
    correct = (labels.to(target.device) == target).sum()
    total = torch.tensor(target.shape[0], device=target.device)
    return correct, total


def _accuracy_compute(correct: Tensor, total: Tensor) -> Tensor:
    """``correct / total`` as a float tensor (NaN when ``total == 0``)."""
    return correct.float() / total


def _unlearning_accuracy_compute(correct: Tensor, total: Tensor) -> Tensor:
    """``1 - correct / total`` (NaN when ``total == 0``)."""
    return 1.0 - _accuracy_compute(correct, total)


def classification_accuracy(preds: Tensor, target: Tensor) -> Tensor:
    """Top-1 accuracy, a fraction in ``[0, 1]``.

    Args:
        preds: ``(N, C)`` logits or probabilities (argmax over classes), or ``(N,)`` integer labels.
        target: ``(N,)`` integer class labels.

    Returns:
        0-d float tensor on the device of ``target``; NaN for ``N == 0``.

    Raises:
        ValueError: on mismatched or unsupported shapes or dtypes (the message names the argument).

    Example:
        >>> import torch
        >>> preds = torch.tensor([[2.0, 0.1], [0.3, 1.0], [0.9, 0.2], [0.0, 3.0]])
        >>> target = torch.tensor([0, 1, 1, 1])
        >>> classification_accuracy(preds, target)
        tensor(0.7500)
    """
    correct, total = _accuracy_update(preds, target)
    return _accuracy_compute(correct, total)


def unlearning_accuracy(preds: Tensor, target: Tensor) -> Tensor:
    """Unlearning accuracy ``UA = 1 - accuracy`` (evaluate on the forget set ``D_f``).

    Args:
        preds: ``(N, C)`` logits or probabilities, or ``(N,)`` integer labels.
        target: ``(N,)`` integer class labels.

    Returns:
        0-d float tensor in ``[0, 1]``; higher means more forgetting. Compare with the retrained
        model's value, not with 1.

    Raises:
        ValueError: on mismatched or unsupported shapes or dtypes.

    Example:
        >>> import torch
        >>> unlearning_accuracy(torch.tensor([0, 1, 1, 0]), torch.tensor([0, 1, 0, 1]))
        tensor(0.5000)
    """
    correct, total = _accuracy_update(preds, target)
    return _unlearning_accuracy_compute(correct, total)
