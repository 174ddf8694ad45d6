"""NPO: negative preference optimisation on the forget set, for classifiers and language models."""

from __future__ import annotations

from typing import Any, ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

from lightning_unlearn.methods.base import Batch
from lightning_unlearn.methods.teachers import TeacherStudentMethod
from lightning_unlearn.registry import register
from lightning_unlearn.validation import check_float


def sequence_log_likelihood(logits: Tensor, targets: Tensor) -> Tensor:
    """``log p(y | x)`` per example: the sum of the target log-probabilities over every position
    (``(batch, classes)`` logits: one label; ``(batch, vocab, positions)``: a token sequence,
    ``-100`` targets ignored). Returns ``(batch,)`` float32."""
    nll = F.cross_entropy(logits.float(), targets, reduction="none")
    return -nll.reshape(len(nll), -1).sum(dim=1)


@register(
    "npo",
    kind="method",
    class_labels=False,
    cost="1 F/B on a D_f batch (+ the D_r batch when retain_weight > 0) + 1 reference F",
    paper="Zhang, Lin, Bai, Mei, Negative Preference Optimization: From Catastrophic Collapse to Effective Unlearning, COLM 2024",
)
class NPO(TeacherStudentMethod):
    """Negative preference optimisation (Zhang, Lin, Bai & Mei, COLM 2024).

    Gradient ascent's loss ``-log p(y|x)`` is unbounded and collapses the model. NPO treats every
    forget example as a *dispreferred* response of DPO, without a preferred one:

    ``L_NPO = (2 / beta) * mean_{(x, y) in D_f} log(1 + (p_theta(y|x) / p_ref(y|x))^beta)``
    ``      = -(2 / beta) * mean log sigmoid(-beta * (log p_theta(y|x) - log p_ref(y|x)))``,

    with ``p_ref`` the frozen original. Its gradient is gradient ascent's weighted by
    ``2 p_theta^beta / (p_theta^beta + p_ref^beta)``, which vanishes once an example is forgotten
    (bounded loss, slower divergence); ``beta -> 0`` recovers gradient ascent. ``log p(y|x)`` is the
    label's log-probability for a classifier and the sum of the token log-probabilities of the
    sequence for a language model (:func:`sequence_log_likelihood`): NPO needs no class labels,
    only the targets the model was trained on. ``retain_weight > 0`` adds the retain NLL
    (``NPO+RT``: ``L_NPO + retain_weight * CE(D_r)``).

    Defaults: ``beta = 0.1`` (the paper's), ``retain_weight = 0`` (plain NPO; the paper's TOFU
    runs use NPO+RT with weight 1), SGD lr 1e-3 with momentum 0.9 and no weight decay
    (GradientAscent's; the paper uses AdamW 1e-5 on LLMs), an epoch is one pass over D_f.
    Cost per step: one forward/backward on a forget batch (and a retain batch when
    ``retain_weight > 0``), one forward of the reference. Memory: one frozen copy (the reference).
    Data: D_f (and D_r for NPO+RT), with their targets.

    Args:
        beta: inverse temperature (> 0).
        retain_weight: weight of the retain cross-entropy (>= 0).
        Other arguments: see :class:`~lightning_unlearn.methods.UnlearningMethod`.

    Example::

        >>> from lightning_unlearn.models import SmallCNN
        >>> method = NPO(SmallCNN(in_channels=1, num_classes=10), beta=0.1)
    """

    unlearning_inputs: ClassVar[tuple[str, ...]] = ("forget", "retain")
    default_epoch_split: ClassVar[str] = "forget"

    def __init__(
        self,
        model: nn.Module,
        beta: float = 0.1,
        retain_weight: float = 0.0,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        **kwargs: Any,
    ) -> None:
        self.beta = check_float(beta, "beta", minimum=0.0, open_minimum=True, hint="e.g. 0.1 (the paper's)")
        self.retain_weight = check_float(retain_weight, "retain_weight", minimum=0.0, hint="0 (NPO) or e.g. 1.0 (NPO+RT)")
        super().__init__(model, lr=lr, weight_decay=weight_decay, **kwargs)
        self.add_teacher("reference", self.model)

    def unlearning_loss(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        x, y = batch["forget"]
        log_ratio = sequence_log_likelihood(self.model(x), y) - sequence_log_likelihood(self.teacher_logits("reference", x), y)
        npo = (2.0 / self.beta) * F.softplus(self.beta * log_ratio).mean()
        logs = {"npo": npo.detach(), "log_ratio": log_ratio.mean().detach()}
        if self.retain_weight == 0.0:
            return npo, logs
        xr, yr = batch["retain"]
        retain_ce = self.cross_entropy(self.model(xr), yr)
        logs["retain_ce"] = retain_ce.detach()
        return npo + self.retain_weight * retain_ce, logs
