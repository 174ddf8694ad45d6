"""Evaluating a classifier on the forget, retain and test sets: the numbers every report shows."""

from __future__ import annotations

from typing import Any, Iterable, Literal, Mapping, Union

import torch
from torch import nn

from lightning_unlearn.metrics.accuracy import Accuracy
from lightning_unlearn.metrics.mia import MIAEfficacy

EVAL_SPLITS = ("forget", "retain", "test")


@torch.no_grad()
def evaluate_loaders(
    model: nn.Module,
    loaders: Mapping[str, Iterable],
    device: Union[str, torch.device, None] = None,
    mia_backend: Literal["torch", "sklearn"] = "torch",
) -> dict[str, float]:
    """Measures ``model`` on ``{"forget": ..., "retain": ..., "test": ...}`` loaders of ``(x, y)``.

    One forward pass per example in eval mode (BatchNorm running statistics, no dropout) feeds
    both the accuracies and the MIA-efficacy features; the model's train/eval mode is restored.

    Returns:
        ``forget_acc``, ``retain_acc``, ``test_acc``, ``unlearning_accuracy`` (1 - forget_acc) and
        ``mia_efficacy`` (OPTML definition, see :class:`~lightning_unlearn.metrics.MIAEfficacy`),
        all fractions in [0, 1].

    Raises:
        ValueError: when a split is missing from ``loaders``.
    """
    missing = [s for s in EVAL_SPLITS if s not in loaders]
    if missing:
        raise ValueError(f"`loaders` lacks the {missing} split(s): pass loaders for {EVAL_SPLITS}.")
    if device is None:
        device = next(model.parameters()).device
    accuracy = {split: Accuracy().to(device) for split in EVAL_SPLITS}
    mia = MIAEfficacy(backend=mia_backend).to(device)
    was_training = model.training
    model.eval()
    try:
        for split in EVAL_SPLITS:
            for x, y in loaders[split]:
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                logits = model(x)
                accuracy[split].update(logits, y)
                mia.update(logits, y, split)
    finally:
        model.train(was_training)
    out = {f"{split}_acc": float(accuracy[split].compute()) for split in EVAL_SPLITS}
    out["unlearning_accuracy"] = 1.0 - out["forget_acc"]
    out["mia_efficacy"] = float(mia.compute())
    return out


def evaluate(
    model: nn.Module,
    datamodule: Any,
    device: Union[str, torch.device, None] = None,
    mia_backend: Literal["torch", "sklearn"] = "torch",
) -> dict[str, float]:
    """:func:`evaluate_loaders` on the evaluation loaders of ``datamodule`` (anything with
    ``evaluation_dataloaders()``, e.g. an :class:`~lightning_unlearn.data.UnlearningDataModule`)."""
    return evaluate_loaders(model, datamodule.evaluation_dataloaders(), device, mia_backend)
