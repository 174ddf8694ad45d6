"""LightningModules around a plain classifier network: the shared base and `ImageClassifier`."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, Literal, Optional, Union

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities.model_helpers import is_overridden
from lightning.pytorch.utilities.types import OptimizerLRScheduler
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler as LRSchedulerBase

from lightning_unlearn.data.access import batch_xy
from lightning_unlearn.models.divergence import DivergenceGuard
from lightning_unlearn.models.weights import export_weights
from lightning_unlearn.validation import check_float

# Same shapes as lightning.pytorch.cli.OptimizerCallable / LRSchedulerCallable, defined here so
# the core does not import the CLI stack (jsonargparse); LightningCLI recognises them alike.
OptimizerCallable = Callable[[Iterable], Optimizer]
LRSchedulerCallable = Callable[[Optimizer], LRSchedulerBase]
#: ``lr_scheduler`` of every module: a factory, or "cosine" (see :class:`ClassifierModule`).
LRScheduler = Union[Literal["cosine"], LRSchedulerCallable]


class ClassifierModule(L.LightningModule):
    """Shared base: holds the network (``self.model``, returning logits), builds the optimiser,
    and measures top-1 accuracy in validation and test.

    The optimiser is ``optimizer(params)`` when given (the LightningCLI way:
    ``--model.optimizer=torch.optim.Adam --model.optimizer.lr=1e-3``), else
    ``SGD(lr, momentum, weight_decay)``, the optimiser of all the reference recipes.
    ``lr_scheduler`` is a factory ``optimizer -> scheduler`` (stepped once per epoch) or the
    string ``"cosine"``: cosine annealing from ``lr`` to 0 over the whole fit, stepped after every
    optimizer step (``T_max = trainer.estimated_stepping_batches``), the schedule of the
    reference Retrain recipes, usable from YAML where a callable is not.

    A non-finite loss (NaN or inf) stops the fit cleanly: that optimiser step and every later
    one are refused, so the weights stay those of the last finite step, and
    :attr:`divergence` says where it happened (see :class:`~lightning_unlearn.models.divergence.DivergenceGuard`).
    """

    def __init__(
        self,
        model: nn.Module,
        lr: float = 0.01,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        optimizer: Optional[OptimizerCallable] = None,
        lr_scheduler: Optional[LRScheduler] = None,
    ) -> None:
        super().__init__()
        if isinstance(lr_scheduler, str) and lr_scheduler != "cosine":
            raise ValueError(f"`lr_scheduler` must be a factory optimizer -> scheduler or 'cosine', got {lr_scheduler!r}.")
        if not isinstance(model, nn.Module):
            raise ValueError(f"`model` must be a torch.nn.Module returning logits, got {type(model).__name__}.")
        lr = check_float(lr, "lr", minimum=0.0, hint="a learning rate such as 0.01")
        momentum = check_float(momentum, "momentum", minimum=0.0, hint="e.g. 0.9 (0 for plain SGD)")
        weight_decay = check_float(weight_decay, "weight_decay", minimum=0.0, hint="e.g. 5e-4 (0 for none)")
        for name, factory in (("optimizer", optimizer), ("lr_scheduler", lr_scheduler)):
            if factory is not None and not isinstance(factory, str) and not callable(factory):
                raise ValueError(f"`{name}` must be None or a factory (a callable), got {type(factory).__name__}.")
        self.model = model
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self.optimizer_factory, self.lr_scheduler_factory = optimizer, lr_scheduler
        self.divergence_guard = DivergenceGuard()

    @property
    def divergence(self) -> Optional[dict[str, Any]]:
        """``None``, or where the fit diverged: ``{"reason", "step", "epoch", "loss"}``."""
        return self.divergence_guard.record

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> Optional[int]:
        self.divergence_guard.snapshot(self.trainer, self)
        return None

    def on_before_backward(self, loss: Tensor) -> None:
        self.divergence_guard.check_loss(self.trainer, loss)

    def on_before_optimizer_step(self, optimizer: Optimizer) -> None:
        self.divergence_guard.before_optimizer_step(self.trainer, optimizer)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def on_fit_start(self) -> None:
        # A trained network usually arrives in eval mode; Lightning keeps submodule modes, so put it
        # in train mode (BatchNorm batch statistics), as every reference recipe trains.
        self.model.train()

    def export(self, path: str, report: Optional[str] = None) -> str:
        """Writes the network (``self.model``: the unlearned classifier after a method's fit) as a
        plain ``state_dict`` with the keys of the network's own class, atomically, plus a sidecar
        ``<path>.json`` with its SHA-256 and the report's (``report``: default the ``report_path`` of
        a callback on the trainer, e.g. :class:`~lightning_unlearn.callbacks.UnlearningEvaluation`).
        Load it back with ``MyNet().load_state_dict(torch.load(path, weights_only=True))``.
        Returns ``path`` (see :func:`~lightning_unlearn.models.weights.export_weights`)."""
        if report is None and self._trainer is not None:
            found = [getattr(cb, "report_path", None) for cb in self.trainer.callbacks]  # type: ignore[attr-defined]
            report = next((r for r in found if r and os.path.isfile(r)), None)
        return str(export_weights(self.model, path, report=report, source=type(self).__name__))

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters handed to the optimiser."""
        return [p for p in self.model.parameters() if p.requires_grad]

    def configure_optimizers(self) -> OptimizerLRScheduler:
        params = self.trainable_parameters()
        if self.optimizer_factory is not None:
            optimizer = self.optimizer_factory(params)
        else:
            optimizer = torch.optim.SGD(params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)
        if self.lr_scheduler_factory is None:
            return optimizer
        if self.lr_scheduler_factory == "cosine":
            steps = max(1, int(self.trainer.estimated_stepping_batches))
            cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": cosine, "interval": "step"}}
        return {"optimizer": optimizer, "lr_scheduler": self.lr_scheduler_factory(optimizer)}

    def _accuracy_step(self, batch: Any, stage: str) -> None:
        x, y = batch_xy(batch, who=f"The {stage} loader")
        logits = self(x)
        self.log(f"{stage}/loss", F.cross_entropy(logits, y), prog_bar=False)
        self.log(f"{stage}/acc", (logits.argmax(-1) == y).float().mean(), prog_bar=True)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._accuracy_step(batch, "val")

    def configure_callbacks(self) -> list[L.Callback]:
        """No callbacks; a fit on a datamodule without validation data runs this module without a
        validation step (so Lightning does not warn that it has no ``val_dataloader``)."""
        self.__dict__.pop("validation_step", None)
        trainer = self._trainer
        datamodule = getattr(trainer, "datamodule", None)
        if (
            trainer is not None
            and trainer.state.fn == "fit"
            and datamodule is not None
            and not is_overridden("val_dataloader", datamodule)
        ):
            self.validation_step = functools.partial(L.LightningModule.validation_step, self)  # type: ignore[method-assign, assignment]
        return []

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._accuracy_step(batch, "test")


class ImageClassifier(ClassifierModule):
    """Trains a classifier with cross-entropy: the *original* model that is later unlearned
    (and the architecture Retrain re-trains). Same arguments as :class:`ClassifierModule`.

    Example::

        >>> from lightning_unlearn.models import SmallCNN
        >>> module = ImageClassifier(SmallCNN(in_channels=1, num_classes=10), lr=0.05)
    """

    # An UnlearningDataModule serves it the whole training set (the original sees D_f too).
    unlearning_inputs: ClassVar[tuple[str, ...]] = ("train",)

    def __init__(
        self,
        model: nn.Module,
        lr: float = 0.05,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        optimizer: Optional[OptimizerCallable] = None,
        lr_scheduler: Optional[LRScheduler] = None,
    ) -> None:
        super().__init__(model, lr, momentum, weight_decay, optimizer, lr_scheduler)
        self.save_hyperparameters(ignore=["model", "optimizer", "lr_scheduler"])

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x, y = batch_xy(batch, who="The training loader")
        loss = F.cross_entropy(self(x), y)
        self.log("train/loss", loss, prog_bar=True)
        return loss
