"""Adapt-then-Unlearn: adapt a copy on D_f, then train on D_r while repelled from the adapted weights."""

from __future__ import annotations

from typing import Any, ClassVar, Optional

import torch
from torch import Tensor, nn
from torch.utils.data import RandomSampler

from lightning_unlearn.data.access import convert_input, require_unlearning_data
from lightning_unlearn.functional.repulsion import REPULSION_FORMS, RepulsionForm, repulsion_term
from lightning_unlearn.methods.base import Batch
from lightning_unlearn.methods.teachers import TeacherStudentMethod
from lightning_unlearn.models.network import copy_network
from lightning_unlearn.registry import register
from lightning_unlearn.validation import check_choice, check_float, check_int


@register(
    "adapt_then_unlearn",
    kind="method",
    cost="stage 1 (once): adapt_epochs passes of F/B over D_f on a copy; stage 2: 1 F/B on a D_r batch + O(#params) repulsion",
    paper="Tiwary, Guha, Panda, Prathosh, Adapt then Unlearn: Exploring Parameter Space Semantics for Unlearning in"
    " Generative Adversarial Networks, TMLR 2025 (atriguha/Adapt_Unlearn)",
)
class AdaptThenUnlearn(TeacherStudentMethod):
    """Adapt-then-Unlearn (Tiwary, Guha, Panda & Prathosh, TMLR 2025), for a classifier.

    **Stage 1, adapt**: a copy of the original is fine-tuned on the forget data alone (cross-entropy,
    ``adapt_epochs`` passes over D_f, SGD ``adapt_lr`` with momentum 0.9, training transforms,
    batches of the datamodule's ``forget_batch_size`` in an order seeded by ``seed``), giving
    ``theta_N``: the parameter-space direction ``theta_N - theta`` is what learning D_f "looks
    like". **Stage 2, unlearn**: the original is trained on retained data with the repulsion term

    ``loss = CE(x_r, y_r) + weight * L_rep(||theta - theta_N||^2)``,

    ``L_rep`` one of the paper's forms (``"negative_l2"`` ``-gamma d``, ``"exponential_l2"``
    ``exp(-gamma d)``, ``"inverse_l2"`` ``1 / (gamma d)``;
    :mod:`lightning_unlearn.functional.repulsion`). The repulsion is part of the loss (autograd);
    the same term for any LightningModule is the :class:`~lightning_unlearn.callbacks.ParameterRepulsion`
    callback.

    Stage 1 runs at fit start from the original weights (a frozen snapshot taken at construction),
    so it is the same whatever the resume point; ``theta_N`` is also saved in checkpoints and a
    resumed run takes it from there. The adapted model is :attr:`adapted` (frozen, not trained).

    Defaults: ``form="exponential_l2"`` (EL2: bounded, so the push fades instead of growing
    without limit as NL2's does; the reference runs NL2 with ``gamma`` 1.2 and EL2 with 0.8),
    ``weight = 1``, ``gamma = None``: ``1 / d_0`` with ``d_0 = ||theta_start - theta_N||^2``, so the
    term depends on ``d / d_0`` and not on the network's size (our choice: ``d`` sums over all
    parameters; used value in :attr:`gamma_used`), ``adapt_epochs = 1``, ``adapt_lr = 0.01``, SGD
    lr 0.01 momentum 0.9 weight decay 5e-4 for stage 2 (FineTune's), epochs over D_r.
    Cost: stage 1 ``adapt_epochs`` passes of forward/backward over D_f on a copy; stage 2 per step
    one forward/backward on a D_r batch plus the repulsion (elementwise over the parameters).
    Memory: two extra copies of the network (the snapshot and ``theta_N``, not trained).
    Data: D_f (stage 1) and D_r (stage 2), with labels.

    Deviations from the reference: the paper adapts a GAN with few-shot EWC-regularised adversarial
    training on negative samples and unlearns with the adversarial loss on positive ones; here both
    stages are cross-entropy on labelled D_f / D_r (no EWC). ``d`` is the squared L2 distance over
    all trainable parameters, as the paper writes it (the reference code averages per-tensor MSEs).
    Forget batches are loaded alongside the retain batches (the datamodule pairs them) but stage 2
    uses only the retain part.

    Args:
        form: the repulsion form.
        weight: weight of the repulsion term (>= 0).
        gamma: scale inside the form (> 0), or ``None``: ``1 / d_0`` (see above).
        adapt_epochs: passes over D_f in stage 1 (>= 1).
        adapt_lr: SGD learning rate of stage 1 (> 0).
        seed: seed of stage 1's batch order.
        Other arguments: see :class:`~lightning_unlearn.methods.UnlearningMethod`.

    Example::

        >>> from lightning_unlearn.models import SmallCNN
        >>> method = AdaptThenUnlearn(SmallCNN(in_channels=1, num_classes=10), form="exponential_l2")
    """

    unlearning_inputs: ClassVar[tuple[str, ...]] = ("forget", "retain")
    default_epoch_split: ClassVar[str] = "retain"

    def __init__(
        self,
        model: nn.Module,
        form: RepulsionForm = "exponential_l2",
        weight: float = 1.0,
        gamma: Optional[float] = None,
        adapt_epochs: int = 1,
        adapt_lr: float = 0.01,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        self_form = check_choice(form, "form", REPULSION_FORMS)
        weight = check_float(weight, "weight", minimum=0.0, hint="e.g. 1e-3")
        if gamma is not None:
            gamma = check_float(gamma, "gamma", minimum=0.0, open_minimum=True, hint="e.g. 1.0, or None: 1 / d at the start")
        adapt_epochs = check_int(adapt_epochs, "adapt_epochs", minimum=1, hint="passes over D_f in stage 1, e.g. 1")
        adapt_lr = check_float(adapt_lr, "adapt_lr", minimum=0.0, open_minimum=True, hint="e.g. 0.01")
        super().__init__(model, **kwargs)
        self.form, self.weight, self.gamma = self_form, weight, gamma
        self.adapt_epochs, self.adapt_lr, self.seed = adapt_epochs, adapt_lr, check_int(seed, "seed")
        self.add_teacher("start", self.model)  # stage 1 starts from these weights, whatever the resume point
        self._restored: Optional[dict[str, Tensor]] = None
        self.gamma_used: Optional[float] = gamma

    @property
    def adapted(self) -> Optional[nn.Module]:
        """``theta_N``: the copy adapted to D_f (after fit start)."""
        return self._teachers.get("adapted")

    # ------------------------------------------------------------------ stage 1
    def on_fit_start(self) -> None:
        super().on_fit_start()
        if "adapted" in self._teachers:
            return
        adapted = copy_network(self._teachers["start"])
        if self._restored is not None:
            adapted.load_state_dict(self._restored)
        else:
            self._adapt(adapted)
        adapted_teacher = self.add_teacher("adapted", adapted)
        if self.gamma is None:  # scale-free: d / d_0, d_0 = the distance stage 2 starts at
            start = [p for p in self._teachers["start"].parameters()]
            d0 = float(sum(((a.float() - b.float()) ** 2).sum() for a, b in zip(start, adapted_teacher.parameters())))
            self.gamma_used = 1.0 / max(d0, 1e-12)
        else:
            self.gamma_used = self.gamma

    def _adapt(self, network: nn.Module) -> None:
        data = require_unlearning_data(self.trainer, "AdaptThenUnlearn (stage 1 adapts a copy on the forget set)")
        forget = data.split("forget")
        generator = torch.Generator().manual_seed(self.seed)
        loader = data.make_loader(forget, data.forget_batch_size, RandomSampler(forget, generator=generator))  # type: ignore[arg-type]
        network.train().requires_grad_(True)
        optimizer = torch.optim.SGD(network.parameters(), lr=self.adapt_lr, momentum=0.9)
        with torch.enable_grad():
            for _ in range(self.adapt_epochs):
                for batch in loader:
                    x, y = convert_input(self.trainer, batch)  # the fit's precision (bf16-true weights take bf16 inputs)
                    optimizer.zero_grad()
                    self.cross_entropy(network(x.to(self.device)), y.to(self.device)).backward()
                    optimizer.step()
        network.eval()

    # ------------------------------------------------------------------ stage 2
    def unlearning_loss(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        x, y = batch["retain"]
        ce = self.cross_entropy(self.model(x), y)
        if self.adapted is None or self.gamma_used is None:
            raise RuntimeError(f"{type(self).__name__}: stage 1 (adaptation, at fit start) has not run.")
        params, anchors = zip(*[(p, a) for p, a in zip(self.model.parameters(), self.adapted.parameters()) if p.requires_grad])
        rep, d = repulsion_term(params, anchors, self.form, self.gamma_used)
        return ce + self.weight * rep, {"retain_ce": ce.detach(), "distance": d.detach(), "repulsion": rep.detach()}

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint.get("teacher_fingerprints", {}).pop("adapted", None)  # made at fit start, not by the constructor
        if self.adapted is not None:
            checkpoint["adapt_then_unlearn_adapted"] = {k: v.detach().cpu() for k, v in self.adapted.state_dict().items()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        self._restored = checkpoint.get("adapt_then_unlearn_adapted")
