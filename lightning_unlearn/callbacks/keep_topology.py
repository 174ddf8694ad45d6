"""`KeepTopology`: unlearn a sparse model with any method and keep its topology (prune first, then unlearn)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Optional

import lightning as L
import torch
from torch import Tensor
from torch.nn import Parameter

from lightning_unlearn.callbacks.masking import TopologyCallback
from lightning_unlearn.functional.masks import ParameterFilter, select_parameters
from lightning_unlearn.functional.pruning import canonical_name, prunable_weights, sync_prune_buffers
from lightning_unlearn.functional.unpruning import sparse_masks
from lightning_unlearn.metrics.functional.topology import resolve_topology
from lightning_unlearn.models.network import network_of
from lightning_unlearn.registry import register
from lightning_unlearn.validation import check_optional_path


@register(
    "keep_topology",
    kind="callback",
    cost="once at fit start: one read of the weights; per step: one masked multiply + one restore",
    paper="Jia et al., Model Sparsity Can Simplify Machine Unlearning, NeurIPS 2023 (prune first, then unlearn;"
    " OPTML-Group/Unlearn-Sparse keeps the mask through unlearning with torch.nn.utils.prune)",
)
class KeepTopology(TopologyCallback):
    """Prune first, then unlearn (Jia et al., NeurIPS 2023): the model arrives sparse (pruned
    earlier, e.g. by the ``omp`` pipeline of ``compare`` or any pruning tool) and every method
    unlearns it *under its topology*, as OPTML Unlearn-Sparse ``main_forget.py`` does (it
    re-applies the sparse checkpoint's mask with ``prune_model_custom`` before unlearning).

    Rule: at fit start the topology is read (``mask="model"``: the weights that are exactly zero,
    and ``torch.nn.utils.prune`` masks, among the selected weights; or any source
    :func:`~lightning_unlearn.metrics.functional.resolve_topology` takes: a checkpoint path, the
    dotted path of a callable); nothing is pruned that was not. Then the pruned weights stay
    exactly 0 through unlearning: gradients masked after AMP unscaling and accumulation, and with
    ``strict`` (default) put back to 0 with their optimiser state cleared after every step, so
    neither weight decay nor momentum moves them (the shared masking core). Without it a method
    trains the zeros back and the model is dense again after one step.

    An :class:`~lightning_unlearn.callbacks.UnPruning` on the same trainer re-derives the topology
    and this callback adopts it (:meth:`~lightning_unlearn.callbacks.TopologyCallback.adopt_topology`).
    Methods that edit the weights outside an optimiser step (``InfluenceUnlearning``,
    ``FisherForgetting``, ``SSD``) get the mask applied once more at train end.
    Deviations from the reference: ``torch.nn.utils.prune`` keeps the pruned ``weight_orig``
    entries and lets weight decay move them (unused, ``weight = weight_orig * mask``); here the
    pruned weights themselves are 0. Under its reparametrisation the gradients of pruned weights
    are 0 *inside* a method's own computations (the per-sample gradients of a Newton step); here
    such a method sees the gradients of the (zero) pruned weights, and only its edit is masked. Defaults: the conv and linear weights, strict. Cost: a read
    of the weights at fit start, then one masked multiply and one restore per step. Data: none.

    Args:
        mask: ``"model"`` or a path / dotted path of the topology to keep.
        parameters: regex(es) selecting the weights (default: conv and linear weights).
        strict: restore pruned entries to 0 and clear their optimiser state after every step.

    Raises:
        ValueError: a ``parameters`` filter matching nothing; at fit start, a ``mask`` naming
            weights the network does not have.

    Example::

        sparse = ...                                   # e.g. a 95 % sparse model (zeros)
        L.Trainer(max_epochs=3, callbacks=[KeepTopology()]).fit(FineTune(sparse), datamodule=dm)
    """

    anchor: ClassVar[Literal["values", "zero"]] = "zero"

    def __init__(self, mask: Optional[str] = "model", parameters: ParameterFilter = None, strict: bool = True) -> None:
        super().__init__(parameters, strict)
        self.mask = (
            check_optional_path(mask, "mask", hint="'model' (the zeros of the network) or a checkpoint / dotted path.") or "model"
        )

    def key_args(self) -> dict[str, Any]:
        return {**super().key_args(), "mask": self.mask}

    def selected(self, trainer: L.Trainer, pl_module: L.LightningModule) -> list[tuple[str, Parameter]]:
        network = network_of(pl_module)
        return select_parameters(network, self.parameters, prunable_weights(network))

    def build_masks(self, trainer: L.Trainer, pl_module: L.LightningModule, named: list[tuple[str, Parameter]]) -> list[Tensor]:
        network = network_of(pl_module)
        if self.mask == "model":
            return sparse_masks(network, named)
        topology = resolve_topology(self.mask, network)
        unknown = sorted(set(topology) - {canonical_name(n) for n, _ in named})
        if unknown:
            raise ValueError(
                f"KeepTopology(mask={self.mask!r}) names weights {unknown[:5]} that are not among the selected ones."
            )
        return [topology.get(canonical_name(n), torch.ones_like(p, dtype=torch.bool)).to(p.device) for n, p in named]

    @torch.no_grad()
    def change_topology(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Pins the pruned weights at zero (a no-op for ``mask="model"``: they already are)."""
        self._masked.set_anchor_zero()
        self._masked.apply()
        sync_prune_buffers(network_of(pl_module), self._masked)

    @torch.no_grad()
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Pins the pruned weights at zero once more: an edit made outside an optimiser step (the
        one-shot methods' Newton or dampening step at epoch end) cannot leave them non-zero."""
        if self.masked is not None:
            self.masked.apply()

    def topology_masks(self) -> dict[str, Tensor]:
        """The kept masks (``True`` = kept) by parameter name, for the topology metrics."""
        return self.masks()
