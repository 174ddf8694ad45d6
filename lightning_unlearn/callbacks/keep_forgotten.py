"""`KeepForgotten`: earlier deletion requests stay forgotten while a later one is unlearned.

A thin Lightning adapter over :mod:`lightning_unlearn.functional.consolidation`: it reads the
earlier forget sets from the trainer's :class:`~lightning_unlearn.data.UnlearningDataModule`
(built with ``requests=[...]``), fixes the previous step's outputs on them at fit start, and adds
the gradient of the distillation term to every optimiser step.
"""

from __future__ import annotations

from typing import Any, Optional

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn
from torch.optim import Optimizer

from lightning_unlearn.callbacks.masking import masked_parameters_of
from lightning_unlearn.data.access import require_unlearning_data
from lightning_unlearn.functional.consolidation import consolidation_gradients, teacher_probabilities
from lightning_unlearn.functional.masks import grads_finite, parameter_masks
from lightning_unlearn.models.network import copy_network, eval_mode, network_of
from lightning_unlearn.registry import register
from lightning_unlearn.validation import check_float, check_int


@register(
    "keep_forgotten",
    kind="callback",
    class_labels=False,
    cost="once at fit start: 1 F over the earlier forget sets; per step: +1 F/B on a batch of earlier forget data",
    paper="Thakral et al., Continual Unlearning for Foundational Text-to-Image Models without Generalization Erosion, 2025"
    " (DUGE's regulariser, adapted to classifiers); relapse: Adhikari et al., UnCLe, 2025",
)
class KeepForgotten(Callback):
    """Keeps the forget sets of earlier requests forgotten while a later request is unlearned.

    In a chain of deletion requests (``UnlearningDataModule(requests=[...], step=k)``), unlearning
    request ``k`` can bring back what requests ``0..k-1`` removed: *relapse* (UnCLe). DUGE (Thakral
    et al., 2025) keeps earlier-unlearned concepts unlearned with a term that ties the model being
    unlearned to the previous step's model on them. Here, for a classifier: at fit start the
    network (the output of step ``k-1``: ``pl_module.original_model`` for our methods, else the
    network as the fit starts) gives the targets ``p_prev(x) = softmax(z_prev(x) / T)`` on every
    example of the earlier forget sets (eval mode, test-time transforms); at every optimiser step
    a random batch of them adds

    ``weight * T^2 * mean KL(p_prev(x) || softmax(z(x) / T))``

    to the objective, i.e. its gradient is added to ``.grad`` in ``on_before_optimizer_step``
    (after AMP unscaling and DDP all-reduce, once per optimiser step under accumulation; a
    callback cannot change the loss, adding the gradient is the same for the optimiser). The extra
    forward runs in eval mode (BatchNorm running statistics, no dropout), the mode the targets were
    taken in and the model is used in: a batch of earlier forget data alone (often one class) would
    otherwise normalise with its own statistics, and matching those outputs constrains nothing the
    deployed model does. Float32, outside autocast. With mask callbacks on the trainer
    the added gradient is masked too. At step 0 (no earlier request) the callback does nothing.

    Deviations from DUGE: DUGE is a text-to-image diffusion method (cross-attention and
    prior-preservation terms besides); only its "stay where the previous step left the earlier
    concepts" idea is kept, as output distillation on the earlier forget sets. Needs the earlier
    forget data at unlearning time (the deletion requests themselves, which the operator of a
    chain holds).

    Defaults: ``weight = 1``, ``T = 1``, batches of the datamodule's batch size, every step.
    Cost: one inference pass over the earlier forget sets at fit start; per optimiser step one
    forward/backward on ``batch_size`` earlier examples. State (the targets, a few floats per
    earlier example) is checkpointed, so resumes are exact.

    Args:
        weight: weight of the distillation term (> 0).
        temperature: softmax temperature ``T`` (> 0).
        batch_size: earlier examples per step (default: the datamodule's ``batch_size``).
        seed: seed of the random batches (drawn per optimiser step from ``(seed, global_step)``).

    Raises:
        ValueError: at construction for invalid arguments; at setup when the trainer has no
            :class:`UnlearningDataModule`.

    Example::

        dm = DigitsDataModule(forget=ForgetSpec(classes=[0])).with_requests(
            [ForgetSpec(classes=[3]), ForgetSpec(classes=[5])], step=1)
        L.Trainer(max_epochs=3, callbacks=[KeepForgotten(weight=1.0)]).fit(GradientAscent(step0_model), datamodule=dm)
    """

    def __init__(self, weight: float = 1.0, temperature: float = 1.0, batch_size: Optional[int] = None, seed: int = 0) -> None:
        self.weight = check_float(weight, "weight", minimum=0.0, open_minimum=True, hint="e.g. 1.0")
        self.temperature = check_float(temperature, "temperature", minimum=0.0, open_minimum=True, hint="e.g. 1.0")
        self.batch_size = None if batch_size is None else check_int(batch_size, "batch_size", minimum=1, hint="e.g. 128")
        self.seed = check_int(seed, "seed")
        self.targets: Optional[Tensor] = None
        self._dataset: Any = None

    @property
    def state_key(self) -> str:
        return self._generate_state_key(weight=self.weight, temperature=self.temperature)

    # ------------------------------------------------------------------ hooks
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":
            require_unlearning_data(trainer, "KeepForgotten (it reads the earlier forget sets of a request chain)")

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        data = require_unlearning_data(trainer, "KeepForgotten")
        self._dataset = data.earlier_split(eval_transforms=True)
        self._batch = self.batch_size or data.batch_size
        if len(self._dataset) == 0 or self.targets is not None:  # step 0, or restored from a checkpoint
            return
        previous = getattr(pl_module, "original_model", None)
        teacher = previous if isinstance(previous, nn.Module) else network_of(pl_module)
        loader = data.make_loader(self._dataset, data.eval_batch_size, evaluation=True)
        device = pl_module.device
        if teacher is previous:  # the user's / previous step's model: never moved or modified
            teacher = copy_network(previous).to(device)
        self.targets = teacher_probabilities(teacher, loader, self.temperature, device)

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Optimizer) -> None:
        if self.targets is None or self._dataset is None or len(self._dataset) == 0:
            return
        params = [p for group in optimizer.param_groups for p in group["params"] if p.requires_grad and p.grad is not None]
        if not params or not grads_finite([p.grad for p in params]):
            return
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + trainer.global_step)
        idx = torch.randint(len(self._dataset), (min(self._batch, len(self._dataset)),), generator=generator)
        x = torch.stack([self._dataset[int(i)][0] for i in idx]).to(pl_module.device)
        network = network_of(pl_module)
        with torch.autocast(x.device.type, enabled=False), eval_mode(network):
            grads = consolidation_gradients(
                network, params, x, self.targets[idx.to(self.targets.device)], self.weight, self.temperature
            )
        pairs = [(p, g) for p, g in zip(params, grads) if g is not None]
        if not pairs:
            return
        masks = parameter_masks([p for p, _ in pairs], masked_parameters_of(trainer))
        added = [g if i not in masks else g * masks[i] for i, (_, g) in enumerate(pairs)]
        torch._foreach_add_([p.grad for p, _ in pairs], added)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {"targets": None if self.targets is None else self.targets.detach().cpu()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        targets = state_dict.get("targets")
        self.targets = None if targets is None else targets

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.targets is not None:
            self.targets = self.targets.to(pl_module.device)
