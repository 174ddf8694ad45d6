"""Retrain: re-initialise and train on the retained data only (the gold standard), dense or on a
given sparse topology."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional, Union

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from lightning_unlearn.functional.masks import MaskedParameters
from lightning_unlearn.functional.pruning import canonical_name, sync_prune_buffers
from lightning_unlearn.methods.finetune import FineTune
from lightning_unlearn.metrics.functional.topology import TopologySource, resolve_topology
from lightning_unlearn.models.network import reinitialise
from lightning_unlearn.models.weights import load_weights
from lightning_unlearn.registry import register
from lightning_unlearn.validation import check_int


@register(
    "retrain",
    kind="method",
    retrain_free=False,
    cost="1 F/B on a D_r batch, full training",
    paper="exact unlearning baseline (every paper's reference)",
)
class Retrain(FineTune):
    """Retrain from scratch on D_r: the model every unlearning metric is compared against.

    A copy of the network gets fresh parameters (every submodule's ``reset_parameters``, seeded by
    ``init_seed``; or the weights at ``init``) and is trained with cross-entropy on D_r.

    **On a sparse topology** (``mask``): the Retrain of a sparse model trains a fresh network under
    *that model's* mask, as OPTML Unlearn-Sparse ``main_forget.py`` does (``prune_model_custom``
    with the sparse checkpoint's mask on a freshly built network, then training on D_r). The mask
    is read before re-initialisation, the pruned weights are set to 0 and stay *bit-identically* 0
    through training: their gradients are masked in ``on_before_optimizer_step`` (after AMP
    unscaling and accumulation) and, after every optimiser step, they are put back to 0 and their
    optimiser state (momentum, Adam moments) cleared, so neither weight decay nor momentum moves
    them. ``mask`` is ``None`` (dense; a network reparametrised by ``torch.nn.utils.prune`` keeps
    its ``weight_mask`` buffers, which are part of its architecture), ``"model"`` (the topology of
    the network you pass: its zero conv/linear weights and ``torch.nn.utils.prune`` masks), the
    path of a sparse model or of a ``MagnitudePruning``/``UnPruning`` run's checkpoint (its
    recorded masks), a mapping ``{parameter name: bool mask}`` (e.g.
    ``MagnitudePruning.masks()``), or a callable ``network -> mapping`` (or its dotted path),
    called with the network you pass. Deviation from the reference: its pruned ``weight_orig``
    entries keep drifting under weight decay (only ``weight_orig * mask`` is used); here they are
    exactly 0, which changes nothing the network computes.

    ``init`` (a path, or a state dict in Python) starts from given weights instead of drawing new
    ones, e.g. the original's initialisation when a pipeline is replayed from the same start (the
    lottery-ticket reference of the un-pruning protocol). Then ``init_seed`` is not used.

    Defaults (OPTML, CIFAR-10 ResNet-18): SGD lr 0.1, momentum 0.9, weight decay 5e-4; the
    papers train 160-182 epochs (set ``max_epochs``; pair with a cosine or step schedule).
    Cost: a full training run on D_r (with a mask: plus one masked multiply per step and one
    restore). ``inplace=True`` is refused: retraining never touches the user's model. Other
    arguments (forwarded by keyword): see :class:`UnlearningMethod`.

    Args:
        init_seed: seed of the re-initialisation (``None`` draws from the global RNG).
        mask: the topology to train under (see above); ``None``: dense.
        init: weights to start from instead of a fresh draw (path or state dict).

    Raises:
        ValueError: ``inplace`` given, a mask naming parameters the network does not have or of
            the wrong shape, or one that prunes nothing it can find.

    Example::

        sparse = ...                                  # a 95 % sparse model (zeros)
        Retrain(sparse, mask="model")                 # fresh weights, the same mask, trained on D_r
    """

    def __init__(
        self,
        model: nn.Module,
        init_seed: Optional[int] = 0,
        mask: Optional[Union[TopologySource, Mapping[str, Tensor]]] = None,
        init: Optional[Union[str, Mapping[str, Tensor]]] = None,
        lr: float = 0.1,
        **kwargs: Any,
    ) -> None:
        if init_seed is not None:
            init_seed = check_int(init_seed, "init_seed", hint="an integer seed, or None to draw from the global RNG")
        if "inplace" in kwargs:
            raise ValueError(
                "Retrain always trains a re-initialised copy (`inplace` would re-initialise your model object): drop `inplace`."
            )
        topology = None if mask is None else resolve_topology(mask, model)  # read before anything changes
        super().__init__(model, lr=lr, inplace=False, **kwargs)
        if mask is not None and not isinstance(mask, (str, type(None))):
            self.hparams["mask"] = f"<{type(mask).__name__}>"  # the checkpoint keeps a description, not tensors or code
        if init is not None and not isinstance(init, str):
            self.hparams["init"] = "<state dict>"
        if init is None:
            reinitialise(self.model, init_seed)
        elif isinstance(init, str):
            load_weights(self.model, init)
        else:
            self.model.load_state_dict(dict(init))
        self.masked: Optional[MaskedParameters] = None
        if topology is not None:
            self.masked = _masked_parameters(self.model, topology)
            with torch.no_grad():
                self.masked.apply()
                sync_prune_buffers(self.model, self.masked)

    def topology_masks(self) -> dict[str, Tensor]:
        """The kept masks (``True`` = kept) by parameter name; empty when dense."""
        return {} if self.masked is None else self.masked.by_name()

    def on_fit_start(self) -> None:
        super().on_fit_start()
        if self.masked is not None:
            self.masked.set_masks(self.masked.masks)  # onto the parameters' device
            self.masked.apply()

    def on_before_optimizer_step(self, optimizer: Optimizer) -> None:
        if self.masked is not None:
            self.masked.mask_gradients()

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        if self.masked is not None:
            optimizer = kwargs.get("optimizer", args[2] if len(args) > 2 else None)
            self.masked.restore_frozen(optimizer if optimizer is not None else self.trainer.optimizers)


def _masked_parameters(network: nn.Module, topology: Mapping[str, Tensor]) -> MaskedParameters:
    """The parameters of ``network`` that ``topology`` (by canonical name) masks, pinned at zero."""
    named = [(n, p) for n, p in network.named_parameters() if canonical_name(n) in topology]
    known = {canonical_name(n) for n, _ in named}
    unknown = sorted(set(topology) - known)
    if unknown:
        names = [canonical_name(n) for n, _ in network.named_parameters()]
        raise ValueError(
            f"`mask` names parameters {unknown[:5]} that {type(network).__name__} does not have (it has {names[:8]}):"
            " give the mask of a model of the same architecture."
        )
    for name, param in named:
        if topology[canonical_name(name)].shape != param.shape:
            raise ValueError(
                f"`mask` of {canonical_name(name)!r} has shape {tuple(topology[canonical_name(name)].shape)},"
                f" the parameter {tuple(param.shape)}: give the mask of a model of the same architecture."
            )
    masks = [topology[canonical_name(n)].to(device=p.device, dtype=torch.bool) for n, p in named]
    masked = MaskedParameters([n for n, _ in named], [p for _, p in named], masks)
    masked.set_anchor_zero()
    return masked
