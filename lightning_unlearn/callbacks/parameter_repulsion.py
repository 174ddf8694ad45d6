"""`ParameterRepulsion`: push the parameters of any LightningModule away from an anchor.

A thin Lightning adapter over :func:`lightning_unlearn.functional.add_repulsion_gradient`: it
resolves the anchor (weights at fit start, a weights file or a module), and adds the repulsion
gradient to every optimiser step.
"""

from __future__ import annotations

from typing import Any, Optional, Union

import lightning as L
from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn
from torch.optim import Optimizer

from lightning_unlearn.callbacks.masking import masked_parameters_of
from lightning_unlearn.functional.masks import grads_finite, parameter_masks
from lightning_unlearn.functional.repulsion import REPULSION_FORMS, RepulsionForm, add_repulsion_gradient, squared_distance
from lightning_unlearn.models.network import copy_network, network_of
from lightning_unlearn.models.weights import load_weights
from lightning_unlearn.registry import register
from lightning_unlearn.validation import check_choice, check_float

#: ``anchor="start"``: the network's weights when the fit starts.
START = "start"


@register(
    "parameter_repulsion",
    kind="callback",
    class_labels=False,
    cost="per step: one fused foreach subtract/norm/scale over the parameters (O(#params)), no forward",
    paper="Tiwary, Guha, Panda, Prathosh, Adapt then Unlearn: Exploring Parameter Space Semantics for Unlearning in"
    " Generative Adversarial Networks, TMLR 2025 (repulsion regulariser)",
)
class ParameterRepulsion(Callback):
    """Adds Adapt-then-Unlearn's repulsion term to any LightningModule's objective: the parameters
    are pushed away from an anchor ``theta_N``.

    With ``d = ||theta - theta_N||^2`` over the network's trainable parameters (matched by name),
    the term is ``weight * L_rep(d)`` with the paper's forms (:mod:`lightning_unlearn.functional.repulsion`):
    ``"negative_l2"`` ``-gamma d``, ``"exponential_l2"`` ``exp(-gamma d)``, ``"inverse_l2"``
    ``1 / (gamma d)``. Its gradient ``weight * L_rep'(d) * 2 (theta - theta_N)`` is added to
    ``.grad`` in ``on_before_optimizer_step`` (after AMP unscaling and DDP all-reduce, once per
    optimiser step: a callback cannot change the loss, adding the gradient is the same for the
    optimiser); with mask callbacks on the trainer it is masked too.

    The anchor: ``"start"`` (default) -- the weights as the fit starts (for our methods the
    untouched original, ``pl_module.original_model``), i.e. "move away from where you were";
    a path of weights for the same network (e.g. a model adapted to the forget data, the paper's
    ``theta_N``); or an ``nn.Module`` of the same architecture. The anchor is checkpointed, so
    resumes are exact. In Adapt-then-Unlearn the anchor is the adapted model
    (:class:`~lightning_unlearn.methods.AdaptThenUnlearn` runs both stages).

    Logged: ``repulsion/distance`` (``d``) and ``repulsion/loss`` (``L_rep``) per step.

    Defaults: ``form="exponential_l2"`` (bounded: the push fades as the distance grows, where NL2
    would push without limit), ``weight = 1``, ``gamma = None``: ``1 / d_0`` with ``d_0`` the
    distance at fit start, so the term depends on ``d / d_0`` and not on the network's size (our
    choice; ``gamma_used`` holds it), or 1 when the fit starts at the anchor (``"start"``). The
    reference's GAN experiments use ``gamma`` 0.8-1.2 on their per-tensor MSE (and a factor 100 on
    EL2).
    Cost per step: fused elementwise work over the parameters, no forward pass.
    Data: none (labels-free).

    Args:
        anchor: ``"start"``, a weights path, or an ``nn.Module``.
        form: ``"negative_l2"``, ``"exponential_l2"`` or ``"inverse_l2"``.
        weight: multiplier of the term (>= 0).
        gamma: scale inside the form (> 0), or ``None`` (see above).

    Raises:
        ValueError: invalid arguments; at fit start an anchor that does not fit the network.

    Example::

        trainer = L.Trainer(max_epochs=5, callbacks=[ParameterRepulsion(anchor="adapted.ckpt")])
        trainer.fit(FineTune(net), datamodule=dm)
    """

    def __init__(
        self,
        anchor: Union[str, nn.Module, None] = START,
        form: RepulsionForm = "exponential_l2",
        weight: float = 1.0,
        gamma: Optional[float] = None,
    ) -> None:
        if anchor is not None and not isinstance(anchor, (str, nn.Module)):
            raise ValueError(f"`anchor` must be 'start', a weights path or an nn.Module, got {type(anchor).__name__}.")
        self.anchor = START if anchor is None else anchor
        self.form = check_choice(form, "form", REPULSION_FORMS)
        self.weight = check_float(weight, "weight", minimum=0.0, hint="e.g. 1.0")
        self.gamma = None if gamma is None else check_float(gamma, "gamma", minimum=0.0, open_minimum=True, hint="e.g. 1.0")
        self.anchors: Optional[dict[str, Tensor]] = None
        self.gamma_used: Optional[float] = self.gamma

    @property
    def state_key(self) -> str:
        return self._generate_state_key(form=self.form, weight=self.weight, gamma=self.gamma)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.anchors is not None:  # restored from a checkpoint
            self.anchors = {k: v.to(pl_module.device) for k, v in self.anchors.items()}
            return
        network = network_of(pl_module)
        if isinstance(self.anchor, nn.Module):
            source = self.anchor
        elif self.anchor == START:
            original = getattr(pl_module, "original_model", None)
            source = original if isinstance(original, nn.Module) else network
        else:
            source = copy_network(network)
            load_weights(source, self.anchor)
        weights = dict(source.named_parameters())
        names = [n for n, p in network.named_parameters() if p.requires_grad]
        shapes = {n: p.shape for n, p in network.named_parameters()}
        missing = [n for n in names if n not in weights or weights[n].shape != shapes[n]]
        if missing:
            raise ValueError(
                f"ParameterRepulsion's anchor does not fit the network: {missing[:5]} missing or of another"
                " shape; give the weights of the same architecture."
            )
        self.anchors = {n: weights[n].detach().clone().to(pl_module.device) for n in names}
        if self.gamma is None:  # scale-free: d / d_0 (d_0 = the distance at fit start), 1 when starting at the anchor
            current = dict(network.named_parameters())
            d0 = float(squared_distance([current[n] for n in names], [self.anchors[n] for n in names]))
            self.gamma_used = 1.0 / d0 if d0 > 0 else 1.0

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Optimizer) -> None:
        if self.anchors is None:
            return
        stepping = {id(p) for group in optimizer.param_groups for p in group["params"]}
        named = [(n, p) for n, p in network_of(pl_module).named_parameters() if n in self.anchors and id(p) in stepping]
        grads = [p.grad for _, p in named if p.grad is not None]
        if not named or not grads_finite(grads):
            return
        params = [p for _, p in named]
        masks = parameter_masks(params, masked_parameters_of(trainer))
        if self.gamma_used is None:
            raise RuntimeError("ParameterRepulsion chooses gamma when the fit starts: on_train_start did not run.")
        distance, value = add_repulsion_gradient(
            params, [self.anchors[n] for n, _ in named], self.form, self.weight, self.gamma_used, masks
        )
        pl_module.log("repulsion/distance", distance, on_step=True, on_epoch=False)
        pl_module.log("repulsion/loss", value, on_step=True, on_epoch=False)

    def state_dict(self) -> dict[str, Any]:
        return {
            "anchors": None if self.anchors is None else {k: v.detach().cpu() for k, v in self.anchors.items()},
            "gamma_used": self.gamma_used,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.anchors = state_dict.get("anchors")
        self.gamma_used = state_dict.get("gamma_used", self.gamma)
