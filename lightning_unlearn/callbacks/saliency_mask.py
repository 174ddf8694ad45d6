"""`SaliencyMask`: SalUn's weight saliency; only the weights salient for forgetting may change.

A thin Lightning adapter over :func:`lightning_unlearn.functional.saliency_masks` and the shared
masking adapter; the forget data comes through :func:`lightning_unlearn.data.access.forget_batches`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, Optional

import lightning as L
import torch
from torch import Tensor
from torch.nn import Parameter
from torch.utils.data import DataLoader

from lightning_unlearn.callbacks.masking import MaskedUpdateCallback
from lightning_unlearn.data.access import forget_batches
from lightning_unlearn.functional.masks import ParameterFilter, Scope, check_scope
from lightning_unlearn.functional.saliency import SALIENCY_LOSSES, SaliencyLoss, saliency_masks
from lightning_unlearn.models.network import network_of
from lightning_unlearn.registry import register
from lightning_unlearn.validation import check_choice, check_fraction, check_int

#: ``SaliencyMask(transforms=...)``: which version of the forget images the saliency pass sees.
SaliencyTransforms = Literal["train", "test"]
SALIENCY_TRANSFORMS = ("train", "test")


@register(
    "saliency_mask",
    kind="callback",
    class_labels=False,
    cost="once at fit start: 1 F/B per D_f batch; per step: one masked multiply (+ one restore when strict)",
    paper="Fan et al., SalUn: Empowering Machine Unlearning via Gradient-based Weight Saliency, ICLR 2024",
)
class SaliencyMask(MaskedUpdateCallback):
    """SalUn's weight saliency mask (Fan et al., ICLR 2024): only the weights most salient for
    forgetting may change; all others keep their original values.

    Rule (OPTML-Group/Unlearn-Saliency ``generate_mask.py``): at fit start, before any step,
    with the network in eval mode, accumulate the signed gradient of the forgetting loss over
    every forget batch, ``G = sum_b grad loss_f(b)``; the saliency is ``|G|``; the mask keeps the
    top ``int(threshold * n)`` of the ``n`` entries, as the reference (``scope="global"``: ranked
    over all selected parameters together, as SalUn; ``"layer"``: within each tensor). During training, gradients
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
    :class:`~lightning_unlearn.data.UnlearningDataModule` or, when the trainer has none, from
    ``dataloader`` (used as given). ``transforms="train"`` (default) reads the forget images as
    the reference does (``generate_mask.py`` iterates the forget part of the *training* set, with
    its augmentation) at the training forget batch size; when the datamodule has no separate
    test-time view (``train_eval``) the two are the same images. The pass runs under a forked
    random state seeded by ``seed``, so random augmentations draw the same images on every run;
    the reference's draws follow its global seed instead. ``transforms="test"`` uses
    ``forget_dataloader()`` (test-time transforms, evaluation batch size), this library's earlier
    default. Under DDP every rank computes the same saliency over the whole forget set (no
    all-reduce needed).
    Cost: one forward/backward per forget batch, once; per step an element-wise mask multiply
    (and, when strict, one restore of frozen entries). The mask itself is
    :func:`~lightning_unlearn.functional.saliency_masks` (usable without a trainer).

    Args:
        threshold: fraction of the selected weights allowed to change, in (0, 1].
        scope: ``"global"`` or ``"layer"`` ranking.
        parameters: regex(es) selecting parameters by name (default: all trainable ones).
        strict: keep masked-out weights bit-identical (see above).
        loss: the forgetting loss of the saliency pass: ``"cross_entropy"`` (SalUn) or
            ``"random_label"`` (see :func:`~lightning_unlearn.functional.weight_saliency`).
        dataloader: forget batches ``(x, y)`` to use when the trainer has no UnlearningDataModule.
        seed: seed of the random labels of ``loss="random_label"`` and of the augmentations drawn
            in the saliency pass.
        transforms: ``"train"`` (the reference's inputs) or ``"test"`` (test-time transforms).

    Raises:
        ValueError: ``threshold`` outside (0, 1], unknown ``scope``/``loss``/``transforms``; at setup, a
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
        transforms: SaliencyTransforms = "train",
    ) -> None:
        super().__init__(parameters, strict)
        self.threshold = check_fraction(threshold, "threshold", hint="the fraction of the selected weights allowed to change.")
        self.scope = check_scope(scope)
        self.loss = check_choice(loss, "loss", SALIENCY_LOSSES)
        self.transforms = check_choice(
            transforms,
            "transforms",
            SALIENCY_TRANSFORMS,
            hint="'train' reads the forget images with the training transforms (the reference), 'test' with test-time ones.",
        )
        self.dataloader, self.seed = dataloader, check_int(seed, "seed")

    def key_args(self) -> dict:
        return {**super().key_args(), "threshold": self.threshold, "scope": self.scope, "loss": self.loss}

    def forget_batches(self, trainer: L.Trainer) -> Iterable:
        """The forget data: the trainer's UnlearningDataModule (training or test-time transforms, see
        ``transforms``), else the constructor's ``dataloader``."""
        return forget_batches(trainer, "SaliencyMask", self.dataloader, train_transforms=self.transforms == "train")

    def check_setup(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.forget_batches(trainer)

    def build_masks(self, trainer: L.Trainer, pl_module: L.LightningModule, named: list[tuple[str, Parameter]]) -> list[Tensor]:
        params = [p for _, p in named]
        with torch.random.fork_rng(devices=[]):  # augmentations draw from the seed, the fit's random state is untouched
            torch.manual_seed(self.seed)
            return saliency_masks(
                network_of(pl_module),
                params,
                self.forget_batches(trainer),
                self.threshold,
                self.scope,
                self.loss,
                pl_module.device,
                self.seed,
            )
