"""SalUn's weight saliency (Fan et al., ICLR 2024) and the saliency mask it thresholds.

Pure torch, usable in any training loop::

    masks = saliency_masks(net, params, forget_loader, threshold=0.5)
    masked = MaskedParameters(names, params, masks); masked.capture_anchor()
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn import Parameter

from lightning_unlearn.functional.labels import random_labels
from lightning_unlearn.functional.masks import Scope, check_scope, topk_mask
from lightning_unlearn.validation import check_choice, check_fraction

__all__ = ["SALIENCY_LOSSES", "SaliencyLoss", "saliency_masks", "weight_saliency"]

SaliencyLoss = Literal["cross_entropy", "random_label"]
SALIENCY_LOSSES = ("cross_entropy", "random_label")


def weight_saliency(
    model: nn.Module,
    params: Sequence[Parameter],
    batches: Iterable,
    loss: SaliencyLoss = "cross_entropy",
    device: Optional[torch.device] = None,
    seed: int = 0,
) -> list[Tensor]:
    """SalUn's weight saliency ``|sum over forget batches of grad loss_f|`` for each of ``params``.

    The model runs in eval mode (BatchNorm uses its running statistics); its mode is restored
    after. Gradients are taken with :func:`torch.autograd.grad`, so ``.grad`` fields are untouched.

    Args:
        model: the network; its forward must return ``(batch, classes)`` logits (or ``(batch, classes,
            positions)`` logits with ``(batch, positions)`` targets, e.g. a causal language model).
        params: the parameters to score (of ``model``).
        batches: an iterable of ``(x, y)`` forget batches.
        loss: ``"cross_entropy"``: the batch-mean CE on the true labels (the gradient of SalUn's
            forgetting loss ``-CE``; the sign vanishes under ``|.|``); ``"random_label"``: the CE
            towards random wrong labels (RL's forgetting term), drawn from a generator seeded by
            ``(seed, batch index)``.
        device: where to run (default: the device of the first parameter).
        seed: seed of the random labels.

    Raises:
        ValueError: unknown ``loss``, no batches, or a forward that does not return logits.
    """
    check_choice(loss, "loss", SALIENCY_LOSSES)
    params = list(params)
    device = device if device is not None else params[0].device
    total = [torch.zeros_like(p) for p in params]
    was_training = model.training
    model.eval()
    seen = 0
    try:
        with torch.enable_grad():
            for index, batch in enumerate(batches):
                x, y = batch[0].to(device), batch[1].to(device)
                logits = model(x)
                if not isinstance(logits, Tensor) or logits.ndim < 2 or (loss == "random_label" and logits.ndim != 2):
                    raise ValueError(
                        "The saliency pass needs a forward returning (batch, classes) logits (or (batch, classes,"
                        " positions) for sequences with loss='cross_entropy'); wrap the network so it does."
                    )
                if loss == "random_label":
                    generator = torch.Generator(y.device).manual_seed(seed * 1_000_003 + index)
                    y = random_labels(y, logits.shape[1], True, generator)
                grads = torch.autograd.grad(F.cross_entropy(logits, y), params, allow_unused=True)
                pairs = [(t, g) for t, g in zip(total, grads) if g is not None]
                if pairs:
                    torch._foreach_add_([t for t, _ in pairs], [g for _, g in pairs])
                seen += 1
    finally:
        model.train(was_training)
    if seen == 0:
        raise ValueError("The forget data is empty: the saliency needs at least one forget batch.")
    return list(torch._foreach_abs(total))


def saliency_masks(
    model: nn.Module,
    params: Sequence[Parameter],
    batches: Iterable,
    threshold: float = 0.5,
    scope: Scope = "global",
    loss: SaliencyLoss = "cross_entropy",
    device: Optional[torch.device] = None,
    seed: int = 0,
) -> list[Tensor]:
    """SalUn's mask: the top ``threshold`` fraction of :func:`weight_saliency` (ranked over all
    ``params`` together for ``scope="global"``, within each tensor for ``"layer"``); ``True`` =
    the weight may change.

    The mask keeps ``int(threshold * n)`` of the ``n`` entries, as the reference
    (``generate_mask.py``: rank ``< int(len(all_elements) * i)``), not ``round``; per tensor for
    ``"layer"`` (at least one). Ties are broken by position (the reference's unstable
    ``argsort`` leaves them unspecified).

    Raises:
        ValueError: see :func:`weight_saliency` and :func:`~lightning_unlearn.functional.masks.topk_mask`.
    """
    threshold = check_fraction(threshold, "threshold", hint="the fraction of the weights allowed to change.")
    check_scope(scope)
    return topk_mask(weight_saliency(model, params, batches, loss, device, seed), threshold, scope, rounding="floor")
