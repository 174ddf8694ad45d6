"""Fisher forgetting: retrain-free noise injection scaled by the inverse diagonal Fisher of D_r."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_unlearn.data.access import unlearning_data
from lightning_unlearn.functional.per_sample import check_chunk_size, per_sample_gradients
from lightning_unlearn.methods.one_shot import OneShotEdit, PassCounts, Statistics
from lightning_unlearn.registry import register
from lightning_unlearn.validation import check_bool, check_float, check_int


@register(
    "fisher_forgetting",
    kind="method",
    paper="Golatkar, Achille & Soatto, CVPR 2020 (Eternal Sunshine; OPTML `fisher_new`)",
    cost="no optimiser step: C per-sample F/B (C = classes) per D_r sample, one pass, then one edit",
)
class FisherForgetting(OneShotEdit):
    """Fisher forgetting (Golatkar, Achille & Soatto, CVPR 2020, "Eternal Sunshine of the Spotless
    Net"), as in OPTML-Group's ``fisher_new``: retrain-free.

    Fisher: the diagonal of the true Fisher information of the retained data,
    ``F = 1/|D_r| * sum_{x in D_r} sum_y p(y|x) (d log p(y|x) / d theta)^2``, from per-sample
    gradients vectorised with ``torch.func`` (the reference loops over samples with batch size 1
    (Golatkar) or approximates with batch-mean gradients of 32 samples (OPTML)); model in eval mode.
    Update rule, once: ``theta <- mu + sqrt(var) * N(0, 1)`` with ``mu = theta`` and, per parameter
    tensor (reference ``get_mean_var``): ``var = min(1 / (F + 1e-8), 1e3)`` (``1e2`` for output-layer
    tensors), times ``alpha``, averaged over dimension 1 for tensors of 2+ dimensions (per output
    unit); on a class-wise request the forgotten classes' output rows get ``mu = 0, var = 1e-4``
    (``head_reset``); output-layer tensors and 1-D tensors (BatchNorm, biases) have ``var`` x 10.
    Output-layer tensors are those whose first dimension equals the number of logits (the
    reference's rule).

    Defaults: ``alpha = 1e-6`` (Golatkar's code and the SSD repository's FisherForgetting, ResNet-18
    on CIFAR; OPTML's README passes ``--alpha 0.2`` to its batch-averaged Fisher, which is about
    32x smaller than the per-sample one). Cost: one pass over D_r computing ``C`` per-sample
    gradients per sample (C = number of logits), no optimiser step; memory: one Fisher copy of the
    trainable parameters plus ``C x batch x #params`` floats for the per-sample gradients of a
    batch (bound it with ``chunk_size``: ``chunk_size x #params``).
    Data: D_r with labels (and, for ``head_reset``, the forgotten classes of the request).

    Args:
        model: the trained classifier to unlearn.
        weights: optional path of weights to load into ``model`` first.
        alpha: noise scale: the variance is ``alpha`` times the clamped inverse Fisher.
        head_reset: on a class-wise request, zero the forgotten classes' output rows (the
            references' class-wise recipe).
        seed: seed of the noise (a generator on the parameters' device).
        chunk_size: (sample, class) pairs per vectorised per-sample-gradient chunk (``None``: all
            ``C x batch`` pairs of a batch at once).
        inplace: edit the given model object itself instead of a copy.

    Raises:
        ValueError: ``alpha`` not a positive finite number, ``chunk_size < 1``.

    Example::

        trainer = L.Trainer(max_epochs=1, callbacks=[UnlearningEvaluation()])
        trainer.fit(FisherForgetting(net, alpha=1e-6), datamodule=dm)
    """

    unlearning_inputs = ("retain",)

    def __init__(
        self,
        model: nn.Module,
        alpha: float = 1e-6,
        head_reset: bool = True,
        seed: int = 0,
        chunk_size: Optional[int] = None,
        **kwargs: Any,
    ) -> None:
        alpha = check_float(alpha, "alpha", minimum=0.0, open_minimum=True, hint="the reference uses 1e-6")
        head_reset = check_bool(head_reset, "head_reset")
        seed = check_int(seed, "seed")
        check_chunk_size(chunk_size)
        super().__init__(model, **kwargs)
        self.alpha, self.head_reset, self.seed, self.chunk_size = alpha, head_reset, seed, chunk_size
        self._forget_classes: list[int] = []

    def setup(self, stage: str) -> None:
        super().setup(stage)
        datamodule = unlearning_data(self._trainer)
        if datamodule is not None and datamodule.forget.classes:
            self._forget_classes = list(datamodule.forget.classes)

    def init_statistics(self) -> Statistics:
        return {"fisher": [torch.zeros_like(p) for p in self.trainable_parameters()], "num_logits": 0}

    def accumulate(self, split: str, x: Tensor, y: Tensor) -> Tensor:
        with torch.no_grad():
            logits = self.model(x)
        num_logits = logits.shape[1]
        # One vectorised call over every (class, sample) pair: pair c * B + i is sample i with label c.
        classes = torch.arange(num_logits, device=y.device).repeat_interleave(len(x))
        inputs = x.repeat(num_logits, *([1] * (x.ndim - 1)))
        grads = list(per_sample_gradients(self.model, F.cross_entropy, inputs, classes, self.chunk_size).values())
        weights = logits.softmax(dim=1).T.reshape(-1).to(grads[0].dtype)  # p(c | x_i) in the same order
        for acc, sq in zip(self._stats["fisher"], torch._foreach_mul(grads, grads)):
            acc.add_(torch.tensordot(weights, sq, dims=1))  # sum_i sum_c p(c|x_i) * (d log p(c|x_i))^2
        self._stats["num_logits"] = int(num_logits)
        return F.cross_entropy(logits, y)

    def apply_edit(self, statistics: Statistics, counts: PassCounts) -> dict[str, float]:
        fisher = statistics["fisher"]
        torch._foreach_div_(fisher, max(counts.samples["retain"], 1))
        params = self.trainable_parameters()
        generator = torch.Generator(device=params[0].device).manual_seed(self.seed)
        fisher_noise_(
            params,
            fisher,
            self.alpha,
            statistics["num_logits"],
            self._forget_classes if self.head_reset else [],
            generator,
        )
        return {"fisher_mean": float(torch.stack([f.mean() for f in fisher]).mean())}


def fisher_noise_(
    params: Sequence[Tensor],
    fisher: Sequence[Tensor],
    alpha: float,
    num_logits: int,
    forget_classes: Sequence[int] = (),
    generator: Optional[torch.Generator] = None,
) -> None:
    """Golatkar/OPTML Fisher-forgetting noise, in place: ``theta <- mu + sqrt(var) * N(0, 1)``
    (see :class:`FisherForgetting` for ``mu`` and ``var``). The functional core, usable in any loop.

    Args:
        params: the parameters to perturb.
        fisher: the diagonal Fisher of each parameter (same order).
        alpha: noise scale.
        num_logits: the number of logits; tensors whose first dimension equals it are the output layer.
        forget_classes: output rows to reset to 0 (class-wise forgetting); empty for none.
        generator: random generator on the parameters' device.
    """
    with torch.no_grad():
        for p, f in zip(params, fisher):
            head = p.ndim >= 1 and p.shape[0] == num_logits
            var = (1.0 / (f + 1e-8)).clamp(max=1e2 if head else 1e3) * alpha
            if p.ndim > 1:
                var = var.mean(dim=1, keepdim=True).expand_as(p).clone()
            mu = p.detach().clone()
            if head and len(forget_classes):
                mu[list(forget_classes)] = 0.0
                var[list(forget_classes)] = 1e-4
            if head or p.ndim == 1:
                var = var * 10.0
            noise = torch.randn(p.shape, generator=generator, device=p.device, dtype=p.dtype)
            p.copy_(mu + var.sqrt() * noise)
