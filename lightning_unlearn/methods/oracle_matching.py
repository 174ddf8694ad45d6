"""Oracle matching (Attribute-to-Delete / DMM): fine-tune to reproduce an oracle's logits."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, ClassVar, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_unlearn.methods.base import Batch
from lightning_unlearn.methods.teachers import TeacherStudentMethod
from lightning_unlearn.models.classifier import OptimizerCallable
from lightning_unlearn.models.network import copy_network
from lightning_unlearn.models.weights import load_weights
from lightning_unlearn.registry import register
from lightning_unlearn.validation import check_float

#: ``oracle="reference"``: the runner (compare, sequential) hands over its Retrain model.
REFERENCE_ORACLE = "reference"


@register(
    "oracle_matching",
    kind="method",
    retrain_free=False,
    cost="1 F/B on paired D_f + D_r batches + 1 oracle F (and the oracle itself: a Retrain, or whatever predicts it)",
    paper="Georgiev, Rinberg, Park, Garg, Ilyas, Madry, Neel, Attribute-to-Delete: Machine Unlearning via Datamodel"
    " Matching, ICLR 2025 (oracle matching, OM; DMM = OM with a datamodel-predicted oracle)",
)
class OracleMatching(TeacherStudentMethod):
    """Oracle matching (OM; Georgiev et al., "Attribute-to-Delete", ICLR 2025).

    Unlearning succeeds when the model's outputs cannot be told apart from those of a model
    retrained without D_f. Given such an *oracle* (its logits on the data), fine-tune the model to
    reproduce them on the forget set and on a sample of the retain set:

    ``loss = (MSE(z(x_f), z_o(x_f)) + retain_weight * MSE(z(x_r), z_o(x_r))) / (1 + retain_weight)``

    with ``z`` the model's logits and ``z_o`` the oracle's (mean squared error over the logits, as
    the reference ``oracle_matching``/``finetune`` with ``loss_type="MSE"``). DMM (datamodel
    matching) is the same fine-tuning with the oracle's outputs *predicted* by data attribution;
    pass such a predictor as ``oracle`` (any module or callable ``x -> logits``).

    **What it assumes**: an oracle -- a Retrain checkpoint (``oracle="path.ckpt"``), a model or
    callable the user supplies, or ``oracle="reference"``: the Retrain model of ``compare`` /
    ``lightning-unlearn sequential``, which hand it over. With a real Retrain as the oracle this
    is not an unlearning method (you already have the retrained model) but the **upper bound**
    every cheaper method can be compared with, and a test of how close fine-tuning can get to a
    target in a few epochs. **Where it is useful**: when an oracle is cheap -- a datamodel /
    attribution predictor (DMM), an older model trained without the data, an ensemble of models
    trained on shards that exclude D_f, or a Retrain of a smaller model used to unlearn a larger
    one.

    Data: forget and retain batches paired by the :class:`UnlearningDataModule`; an epoch is one
    pass over D_f (``epoch_split="forget"``) with retain batches drawn alongside, one forward over
    their concatenation (BatchNorm sees mixed batches, as the reference's mixed loader).

    Defaults (reference ``oracle_matching``, CIFAR-10): Adam lr 5e-4, weight decay 0, 5 epochs,
    ``retain_weight = 3`` (the reference fine-tunes on D_f plus ``retain_multiplier = 3`` times
    as many retain examples in one loader, so retain rows weigh 3 : 1). Cost per step: one
    forward/backward of the model and one forward of the oracle on the paired batch.

    Deviations: the retain sample is drawn afresh from all of D_r by the datamodule (the
    reference draws one fixed random subset of ``3 |D_f|`` examples); several oracles (the
    reference averages up to ``num_oracles`` logits) -- pass one module that averages them.
    KLoM (the paper's evaluation) comes from the evidence issue; until then the KL of the
    model's softmax to the oracle's on D_f is the check (``tests/methods/test_oracle_matching.py``).

    Args:
        model: the trained classifier to unlearn.
        oracle: a path of oracle weights for the same architecture, an ``nn.Module`` or callable
            returning logits, or ``"reference"`` (bound by the runner, see above).
        retain_weight: weight of the retain term (>= 0).
        lr: Adam learning rate (ignored when ``optimizer`` is given).
        weight_decay: Adam weight decay.
        Other arguments: see :class:`~lightning_unlearn.methods.UnlearningMethod`.

    Raises:
        ValueError: no oracle, a negative ``retain_weight``; at fit start an unbound
            ``"reference"`` oracle or one whose logits do not match the model's.

    Example::

        >>> from lightning_unlearn.models import SmallCNN
        >>> method = OracleMatching(SmallCNN(in_channels=1, num_classes=10), oracle=SmallCNN(in_channels=1, num_classes=10))
    """

    unlearning_inputs: ClassVar[tuple[str, ...]] = ("forget", "retain")
    default_epoch_split: ClassVar[str] = "forget"

    def __init__(
        self,
        model: nn.Module,
        oracle: Union[str, nn.Module, None] = REFERENCE_ORACLE,
        retain_weight: float = 3.0,
        lr: float = 5e-4,
        weight_decay: float = 0.0,
        optimizer: Optional[OptimizerCallable] = None,
        **kwargs: Any,
    ) -> None:
        retain_weight = check_float(retain_weight, "retain_weight", minimum=0.0, hint="e.g. 3.0 (the reference's ratio)")
        if oracle is None:
            raise ValueError(
                "OracleMatching needs an `oracle`: a weights path, a model/callable returning logits, or"
                " 'reference' (the Retrain model of compare / sequential)."
            )
        adam = functools.partial(torch.optim.Adam, lr=lr, weight_decay=weight_decay)
        super().__init__(model, lr=lr, momentum=0.0, weight_decay=weight_decay, optimizer=optimizer or adam, **kwargs)
        self.retain_weight = retain_weight
        self._oracle_fn: Optional[Callable[[Tensor], Tensor]] = None
        self.oracle_source = oracle if isinstance(oracle, str) else type(oracle).__name__
        if isinstance(oracle, str) and oracle != REFERENCE_ORACLE:
            network = copy_network(self.model)
            load_weights(network, oracle)
            self.add_teacher("oracle", network)
        elif isinstance(oracle, nn.Module):
            self.add_teacher("oracle", oracle)
        elif callable(oracle):
            self._oracle_fn = oracle
        elif oracle != REFERENCE_ORACLE:
            raise ValueError(f"`oracle` must be a path, an nn.Module, a callable or 'reference', got {type(oracle).__name__}.")
        self.save_hyperparameters(ignore=["model", "oracle", "optimizer", "lr_scheduler", "momentum"])

    def use_reference(self, reference: nn.Module) -> None:
        """Binds ``oracle="reference"`` to the runner's Retrain model (compare and sequential call it)."""
        if self.oracle_source == REFERENCE_ORACLE and "oracle" not in self._teachers:
            self.add_teacher("oracle", reference)

    def on_fit_start(self) -> None:
        super().on_fit_start()
        if "oracle" not in self._teachers and self._oracle_fn is None:
            raise ValueError(
                "OracleMatching(oracle='reference') has no reference: run it in `lightning-unlearn compare` or"
                " `sequential` (they pass their Retrain model), or pass oracle=<weights path | model | callable>."
            )

    def oracle_logits(self, x: Tensor) -> Tensor:
        """The oracle's logits on ``x`` (no gradient)."""
        if self._oracle_fn is not None:
            with torch.no_grad():
                return self._oracle_fn(x)
        return self.teacher_logits("oracle", x)

    def unlearning_loss(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        forget_logits, retain_logits = self.forward_splits(batch)
        target_f = self.oracle_logits(batch["forget"][0])
        target_r = self.oracle_logits(batch["retain"][0])
        if target_f.shape != forget_logits.shape:
            raise ValueError(
                f"The oracle returns logits of shape {tuple(target_f.shape[1:])}, the model"
                f" {tuple(forget_logits.shape[1:])}: the oracle must classify the same classes."
            )
        forget_mse = F.mse_loss(forget_logits.float(), target_f.float())
        retain_mse = F.mse_loss(retain_logits.float(), target_r.float())
        loss = (forget_mse + self.retain_weight * retain_mse) / (1.0 + self.retain_weight)
        return loss, {"forget_mse": forget_mse.detach(), "retain_mse": retain_mse.detach()}
