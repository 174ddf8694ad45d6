"""`SaliencyMask`: SalUn's weight saliency; only the weights salient for forgetting may change."""

from __future__ import annotations

from typing import Iterable, Literal, Optional, Sequence

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn import Parameter
from torch.utils.data import DataLoader

from lightning_unlearn.callbacks.masking import (
    MaskedUpdateCallback,
    ParameterFilter,
    Scope,
    check_fraction,
    check_scope,
    topk_mask,
)
from lightning_unlearn.data.datamodule import UnlearningDataModule
from lightning_unlearn.models.network import network_of
from lightning_unlearn.functional.labels import random_labels
from lightning_unlearn.registry import register

SaliencyLoss = Literal["cross_entropy", "random_label"]
LOSSES = ("cross_entropy", "random_label")


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
        model: the network; its forward must return ``(batch, classes)`` logits.
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
    if loss not in LOSSES:
        raise ValueError(f"`loss` must be one of {LOSSES}, got {loss!r}.")
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
                if not isinstance(logits, Tensor) or logits.ndim != 2:
                    raise ValueError("The saliency pass needs a forward returning (batch, classes) logits; wrap the network so it does.")
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
    return torch._foreach_abs(total)


@register(
    "saliency_mask", kind="callback",
    cost="once at fit start: 1 F/B per D_f batch; per step: one masked multiply (+ one restore when strict)",
    paper="Fan et al., SalUn: Empowering Machine Unlearning via Gradient-based Weight Saliency, ICLR 2024",
)
class SaliencyMask(MaskedUpdateCallback):
    """SalUn's weight saliency mask (Fan et al., ICLR 2024): only the weights most salient for
    forgetting may change; all others keep their original values.

    Rule (OPTML-Group/Unlearn-Saliency ``generate_mask.py``): at fit start, before any step,
    with the network in eval mode, accumulate the signed gradient of the forgetting loss over
    every forget batch, ``G = sum_b grad loss_f(b)``; the saliency is ``|G|``; the mask keeps the
    top ``threshold`` fraction of entries (``scope="global"``: ranked over all selected
    parameters together, as SalUn; ``"layer"``: within each tensor). During training, gradients
    of masked-out weights are zeroed in ``on_before_optimizer_step``; with ``strict=True`` they
    are also put back to their starting values after every optimiser step and their optimiser
    state (momentum, Adam moments) is zeroed, so weight decay and momentum cannot move them
    either (the reference code's Feb-2026 fix); ``strict=False`` is gradient masking only, the
    behaviour behind the paper's numbers.

    SalUn = :class:`~lightning_unlearn.methods.RandomLabel` + ``SaliencyMask()``
    (``configs/digits/salun.yaml``); it composes with any method or a user's LightningModule
    (the network is ``pl_module.model`` when it exists, else ``pl_module``; its forward must
    return logits).

    Defaults: ``threshold=0.5`` (the paper's default for classification, "with_0.5.pt"), global
    ranking over every trainable parameter (conv, linear, BatchNorm, biases) as the reference.
    Data: the forget set, from the trainer's
    :class:`~lightning_unlearn.data.UnlearningDataModule` (``forget_dataloader()``, test-time
    transforms) or, when the trainer has none, from ``dataloader``. Under DDP every rank
    computes the same saliency over the whole forget set (no all-reduce needed).
    Cost: one forward/backward per forget batch, once; per step an element-wise mask multiply
    (and, when strict, one restore of frozen entries).

    Args:
        threshold: fraction of the selected weights allowed to change, in (0, 1].
        scope: ``"global"`` or ``"layer"`` ranking.
        parameters: regex(es) selecting parameters by name (default: all trainable ones).
        strict: keep masked-out weights bit-identical (see above).
        loss: the forgetting loss of the saliency pass: ``"cross_entropy"`` (SalUn) or
            ``"random_label"`` (see :func:`weight_saliency`).
        dataloader: forget batches ``(x, y)`` to use when the trainer has no UnlearningDataModule.
        seed: seed of the random labels of ``loss="random_label"``.

    Raises:
        ValueError: ``threshold`` outside (0, 1], unknown ``scope``/``loss``; at setup, a
            ``parameters`` filter matching nothing or no forget data.

    Example::

        trainer = L.Trainer(max_epochs=3, callbacks=[SaliencyMask(threshold=0.5)])
        trainer.fit(RandomLabel(model=net), datamodule=dm)   # SalUn
    """

    def __init__(
        self,
        threshold: float = 0.5,
        scope: Scope = "global",
        parameters: ParameterFilter = None,
        strict: bool = True,
        loss: SaliencyLoss = "cross_entropy",
        dataloader: Optional[DataLoader] = None,
        seed: int = 0,
    ) -> None:
        super().__init__(parameters, strict)
        self.threshold = check_fraction(threshold, "threshold")
        self.scope = check_scope(scope)
        if loss not in LOSSES:
            raise ValueError(f"`loss` must be one of {LOSSES}, got {loss!r}.")
        self.loss, self.dataloader, self.seed = loss, dataloader, seed

    def key_args(self) -> dict:
        return {**super().key_args(), "threshold": self.threshold, "scope": self.scope, "loss": self.loss}

    def forget_batches(self, trainer: L.Trainer) -> Iterable:
        """The forget data: the trainer's UnlearningDataModule, else the constructor's ``dataloader``."""
        datamodule = getattr(trainer, "datamodule", None)
        if isinstance(datamodule, UnlearningDataModule):
            return datamodule.forget_dataloader()
        if self.dataloader is not None:
            return self.dataloader
        raise ValueError(
            "SaliencyMask needs forget data: train with an UnlearningDataModule"
            " (`trainer.fit(module, datamodule=UnlearningDataModule(...))`) or pass"
            " `SaliencyMask(dataloader=<forget DataLoader>)`."
        )

    def check_setup(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.forget_batches(trainer)

    def build_masks(self, trainer: L.Trainer, pl_module: L.LightningModule, named: list) -> list[Tensor]:
        saliency = weight_saliency(
            network_of(pl_module), [p for _, p in named], self.forget_batches(trainer), self.loss, pl_module.device, self.seed
        )
        return topk_mask(saliency, self.threshold, self.scope)
