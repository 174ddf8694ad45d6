"""ZRF (zero retrain forgetting) score of Chundawat et al. (Bad Teacher, AAAI 2023).

``ZRF = 1 - mean_i JS(M(x_i), T_d(x_i))`` over the forget set, with ``M`` the unlearned model and
``T_d`` a randomly initialised (incompetent) model of the same architecture; 1 means the model
answers on D_f like a random network. ``JS`` is the textbook Jensen-Shannon divergence
``JS(p, q) = KL(p || m) / 2 + KL(q || m) / 2`` with ``m = (p + q) / 2``. With base-2 logarithms
(the default) ``JS`` lies in ``[0, 1]`` and so does ``ZRF``; with natural logarithms
(``log_base=math.e``, the paper's formula taken literally) ``JS <= ln 2`` and ``ZRF >= 1 - ln 2``.
The reference code's ``JSDiv`` instead averages ``F.kl_div`` elementwise over samples AND
classes (a class-count-dependent scale): its values are not comparable with these.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lightning_unlearn.validation import check_float


def _probabilities(x: Tensor, from_logits: bool, name: str) -> Tensor:
    x = x.to(torch.promote_types(x.dtype, torch.float32))
    if from_logits:
        return x.softmax(dim=1)
    if (x < 0).any():
        raise ValueError(f"`{name}` holds negative probabilities; pass logits with `from_logits=True`.")
    total = x.sum(dim=1, keepdim=True)
    if (total <= 0).any():
        raise ValueError(f"`{name}` has a row of zeros: every row must be a (non-normalised) distribution.")
    return x / total


def jensen_shannon(p: Tensor, q: Tensor, log_base: float = 2.0) -> Tensor:
    """Per-row Jensen-Shannon divergence of two ``(N, C)`` tensors of probabilities.

    ``0 * log 0`` counts as 0. Equals ``scipy.spatial.distance.jensenshannon(p, q, base=log_base,
    axis=1) ** 2`` (scipy returns the square root, the JS *distance*).

    Returns:
        ``(N,)`` tensor in ``[0, log_base(2)]``.
    """
    m = 0.5 * (p + q)
    kl_pm = (torch.xlogy(p, p) - torch.xlogy(p, m)).sum(dim=1)
    kl_qm = (torch.xlogy(q, q) - torch.xlogy(q, m)).sum(dim=1)
    return (0.5 * (kl_pm + kl_qm)).clamp_min(0.0) / math.log(log_base)


def _check_log_base(log_base: float) -> None:
    check_float(log_base, "log_base", minimum=0.0, open_minimum=True, hint="use 2.0 (ZRF in [0, 1]) or math.e")
    if log_base == 1:
        raise ValueError(f"`log_base` must be > 0 and != 1, got {log_base}: use 2.0 (ZRF in [0, 1]) or math.e.")


def _zrf_update(preds: Tensor, reference: Tensor, from_logits: bool = True, log_base: float = 2.0) -> tuple[Tensor, Tensor]:
    """Sum of the per-sample JS divergences and the number of samples.

    Args:
        preds: ``(N, C)`` outputs of the unlearned model.
        reference: ``(N, C)`` outputs of the incompetent (random) model on the same inputs.
        from_logits: the inputs are logits (softmax is applied); else probabilities (rows are
            normalised to sum to 1, like scipy).
        log_base: base of the logarithm.

    Raises:
        ValueError: on mismatched or non-2-D shapes, negative probabilities, or a bad ``log_base``.
    """
    if not isinstance(preds, Tensor) or not isinstance(reference, Tensor):
        raise ValueError("`preds` and `reference` must be torch.Tensor objects.")
    if preds.ndim != 2 or preds.shape != reference.shape:
        raise ValueError(
            f"`preds` and `reference` must both have shape (N, C), got {tuple(preds.shape)} and {tuple(reference.shape)}."
        )
    _check_log_base(log_base)
    p = _probabilities(preds, from_logits, "preds")
    q = _probabilities(reference, from_logits, "reference").to(p.device)
    js = jensen_shannon(p, q, log_base)
    return js.sum(), torch.tensor(js.shape[0], device=js.device)


def _zrf_compute(js_sum: Tensor, total: Tensor) -> Tensor:
    """``1 - js_sum / total`` (NaN when ``total == 0``)."""
    return 1.0 - js_sum / total


def zrf_score(preds: Tensor, reference: Tensor, from_logits: bool = True, log_base: float = 2.0) -> Tensor:
    """ZRF score ``1 - mean_i JS(preds_i, reference_i)``; evaluate on the forget set.

    Args:
        preds: ``(N, C)`` logits (or probabilities) of the unlearned model on D_f.
        reference: ``(N, C)`` logits (or probabilities) of the incompetent model on the same inputs.
        from_logits: the inputs are logits; ``False`` for probabilities.
        log_base: logarithm base; 2 gives ``ZRF`` in ``[0, 1]``, ``math.e`` in ``[1 - ln 2, 1]``.

    Returns:
        0-d float tensor; 1 = indistinguishable from the random model on D_f. Compare with the
        retrained model's value.

    Raises:
        ValueError: on mismatched shapes, negative probabilities or a bad ``log_base``.

    Example:
        >>> import torch
        >>> p = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
        >>> zrf_score(p, torch.tensor([[0.0, 1.0], [0.5, 0.5]]), from_logits=False)
        tensor(0.5000)
    """
    js_sum, total = _zrf_update(preds, reference, from_logits, log_base)
    return _zrf_compute(js_sum, total)
