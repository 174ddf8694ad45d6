"""`UnlearningMethod`: the LightningModule base every unlearning method wraps a network with."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_unlearn.data.access import batch_xy, require_unlearning_data, unlearning_data
from lightning_unlearn.data.datamodule import LONGEST, SPLITS
from lightning_unlearn.models.classifier import ClassifierModule, LRScheduler, OptimizerCallable
from lightning_unlearn.models.network import check_logits, copy_network, sample_like
from lightning_unlearn.models.weights import load_weights
from lightning_unlearn.validation import check_bool, check_choice, check_optional_path

Batch = dict[str, tuple[Tensor, Tensor]]


class UnlearningMethod(ClassifierModule):
    """Base of the unlearning methods.

    Wraps the user's trained classifier (``model``: any ``nn.Module`` whose forward returns
    ``(batch, classes)`` logits; a LightningModule works as that network, its hooks are not run).
    The network is deep-copied unless ``inplace=True``, so the user's model is never modified
    (also when ``weights=`` is given: the file is loaded into the copy); after ``trainer.fit`` the
    unlearned classifier is ``method.model`` and the original one ``method.original_model`` (the
    user's object, or with ``weights=`` a copy holding the loaded weights).

    Every check that can refuse the input (the network returns finite ``(batch, classes)``
    logits on the data; the data the method needs is there) runs in ``setup``, before any
    callback changes a weight. A non-finite loss stops the fit cleanly (see
    :class:`~lightning_unlearn.models.ClassifierModule`).

    A subclass declares the data it trains on in ``unlearning_inputs`` (``"forget"``,
    ``"retain"``), the split that defines an epoch in ``default_epoch_split``, and implements
    :meth:`unlearning_loss` on a batch ``{"forget": (x, y), "retain": (x, y)}``.
    :class:`~lightning_unlearn.data.UnlearningDataModule` serves exactly those batches.
    Its ``__init__`` declares only its own arguments (and shared ones whose default differs,
    e.g. ``lr``) and forwards the rest by keyword, ``super().__init__(model, lr=lr, **kwargs)``:
    LightningCLI follows the ``**kwargs``, so ``--help`` and ``--print_config`` list every argument.

    Args:
        model: the trained classifier to unlearn.
        weights: optional path of weights to load into the copy of ``model`` (a ``state_dict`` or a
            Lightning checkpoint of ``ImageClassifier``/a method), loaded strictly with
            ``weights_only=True``; every key and shape is checked before any value is copied.
        lr: SGD learning rate (ignored when ``optimizer`` is given).
        momentum: SGD momentum.
        weight_decay: SGD weight decay.
        optimizer: an optimiser factory ``params -> Optimizer`` (LightningCLI ``OptimizerCallable``).
        lr_scheduler: an LR-scheduler factory ``optimizer -> scheduler``.
        epoch_split: the split one epoch passes over (default: the method's recipe), or
            ``"longest"``: the split with more batches per pass.
        inplace: unlearn the given model object itself instead of a copy.
    """

    unlearning_inputs: ClassVar[tuple[str, ...]] = ("forget", "retain")
    default_epoch_split: ClassVar[str] = "forget"

    def __init__(
        self,
        model: nn.Module,
        weights: Optional[str] = None,
        lr: float = 0.01,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        optimizer: Optional[OptimizerCallable] = None,
        lr_scheduler: Optional[LRScheduler] = None,
        epoch_split: Optional[str] = None,
        inplace: bool = False,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise ValueError(f"`model` must be a torch.nn.Module returning logits, got {type(model).__name__}.")
        weights = check_optional_path(weights, "weights", "the path of a state_dict or Lightning checkpoint")
        inplace = check_bool(inplace, "inplace")
        epoch_split = check_choice(
            epoch_split or self.default_epoch_split,
            "epoch_split",
            (*self.unlearning_inputs, LONGEST),
            f"the splits {type(self).__name__} trains on, or 'longest'",
        )
        network = model if inplace else copy_network(model)
        original = None if inplace else model
        if weights is not None:
            load_weights(network, weights)  # strict: a file that does not fit leaves `network` untouched
            original = None if inplace else copy_network(network)  # the loaded original, kept for "before"
        super().__init__(
            network,
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            optimizer=optimizer,
            lr_scheduler=lr_scheduler,
        )
        self.epoch_split = epoch_split
        # The untouched original, kept out of the module tree (not trained, not checkpointed).
        object.__setattr__(self, "original_model", original)
        self.save_hyperparameters(ignore=["model", "optimizer", "lr_scheduler"])

    # ------------------------------------------------------------------ what subclasses write
    def unlearning_loss(self, batch: Batch) -> tuple[Tensor, Mapping[str, Union[Tensor, float]]]:
        """The objective on one batch: returns ``(loss, {name: value to log})``."""
        raise NotImplementedError

    # ------------------------------------------------------------------ Lightning hooks
    def training_step(self, batch: Any, batch_idx: int) -> Optional[Tensor]:  # overrides may return None (a skipped step)
        loss, logs = self.unlearning_loss(self._as_splits(batch))
        self.log_dict({f"train/{k}": v for k, v in {"loss": loss, **logs}.items()}, prog_bar=False)
        return loss

    def setup(self, stage: str) -> None:
        """Refuses what cannot run, before any callback's ``on_fit_start`` changes a weight: forget
        data missing for a method that trains on it, a network that does not return finite
        ``(batch, classes)`` logits on the data."""
        if stage != "fit" or self._trainer is None:
            return
        if "forget" in self.unlearning_inputs:
            require_unlearning_data(self.trainer, f"{type(self).__name__} (it trains on forget data)")
        datamodule = unlearning_data(self.trainer)
        if datamodule is not None:
            x, _ = next(iter(datamodule.retain_dataloader()))
            check_logits(self.model, sample_like(self.model, x[:2]), datamodule.num_classes, "model")

    # ------------------------------------------------------------------ helpers
    def _as_splits(self, batch: Any) -> Batch:
        if isinstance(batch, dict) and batch and set(batch) <= set(SPLITS):
            return batch
        if self.unlearning_inputs == ("retain",):  # plain batches from a user's datamodule
            return {"retain": batch_xy(batch, who=f"{type(self).__name__}'s training loader")}
        raise ValueError(
            f"{type(self).__name__} needs batches {{'forget': ..., 'retain': ...}} from an UnlearningDataModule,"
            f" got {type(batch).__name__}."
        )

    def forward_splits(self, batch: Batch, names: tuple[str, ...] = ("forget", "retain")) -> list[Tensor]:
        """Logits of several splits from ONE forward pass over their concatenation, so BatchNorm
        sees mixed batches (separate forget-only passes would skew its running statistics)."""
        xs = [batch[name][0] for name in names]
        return list(self.model(torch.cat(xs)).split([len(x) for x in xs]))

    @staticmethod
    def cross_entropy(logits: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(logits, y)
