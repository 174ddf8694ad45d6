"""ACU: exact, gradient-free unlearning of the linear head by a recursive least-squares downdate."""

from __future__ import annotations

from typing import Any, ClassVar, Optional

import torch
from torch import Tensor, nn

from lightning_unlearn.functional.analytic import AnalyticMemory, augment, forget_rows, one_hot
from lightning_unlearn.methods.one_shot import OneShotEdit, PassCounts, Statistics
from lightning_unlearn.registry import register
from lightning_unlearn.validation import check_float, check_int

#: The attribute of the network that carries its analytic memory from one request to the next.
MEMORY_ATTRIBUTE = "analytic_memory"


def memory_of(network: nn.Module) -> Optional[AnalyticMemory]:
    """The :class:`AnalyticMemory` a network carries (set by :class:`ACU`), or ``None``."""
    memory = getattr(network, MEMORY_ATTRIBUTE, None)
    return memory if isinstance(memory, AnalyticMemory) else None


def head_of(network: nn.Module, name: Optional[str] = None) -> tuple[str, nn.Linear]:
    """The linear head: the module called ``name``, else the last ``nn.Linear`` of the network."""
    linears = [(n, m) for n, m in network.named_modules() if isinstance(m, nn.Linear)]
    if name is not None:
        found = dict(network.named_modules()).get(name)
        if not isinstance(found, nn.Linear):
            raise ValueError(f"`head` {name!r} is not an nn.Linear of the network; its linear layers: {[n for n, _ in linears]}.")
        return name, found
    if not linears:
        raise ValueError("ACU needs a network ending in an nn.Linear head (its input are the features); none was found.")
    return linears[-1]


@register(
    "acu",
    kind="method",
    cost="no optimiser step: 1 F per D_f sample (+ per D_r sample once, when the network has no memory yet), then"
    " O(d^2) per removed sample (Woodbury downdate); no gradient",
    paper="Tang et al., ACU: Analytic Continual Unlearning for Efficient and Exact Forgetting with Privacy Preservation,"
    " arXiv 2505.12239, 2025",
)
class ACU(OneShotEdit):
    """Analytic Continual Unlearning (Tang et al., 2025): exact, gradient-free unlearning of the head.

    The backbone (everything before the last ``nn.Linear``) is frozen; the head is the ridge
    least-squares solution on the backbone's features ``x`` (bias as a constant feature) with
    one-hot targets ``Y``: ``W = R Q``, ``R = (X^T X + gamma I)^-1``, ``Q = X^T Y``. The network
    keeps only ``R`` (``d x d``) and ``Q`` (``d x C``) -- its *analytic memory*, no raw data -- and
    each deletion request ``(X_u, Y_u)`` is removed exactly by the recursive Woodbury downdate

    ``R <- R + R X_u^T (I - X_u R X_u^T)^-1 X_u R``, ``Q <- Q - X_u^T Y_u``, ``W <- R Q``

    (:func:`~lightning_unlearn.functional.forget_rows`, float64, chunks of ``d + 1`` rows: ``O(d^2)``
    per removed sample; ``benchmarks/analytic_head.py`` measures it). The new head equals the head
    refitted by least squares on the retained data (to round-off, ~1e-12; tested to 1e-5), after
    any chain of requests.

    The memory travels with the network: after the fit ``method.model.analytic_memory`` holds it
    (an attribute, not a ``state_dict`` entry, so the network's checkpoints keep their format;
    the method's checkpoints store it, and a network deep-copied for the next request carries it).
    A network that has no memory yet gets one first: the *learning phase* over the whole training
    set (D_r and D_f, one inference pass), which replaces the trained head by the least-squares
    head -- the analytic-learning model ACU assumes. From then on a request reads only its own
    forget data (``epoch_split="forget"``; D_r is never revisited).

    One Lightning fit with no optimiser step (:class:`OneShotEdit`): one pass accumulates the
    features (eval mode) and the edit writes the head at the end of the epoch.

    Defaults: ``gamma = 1`` (the analytic-learning papers tune it in ``[1e-3, 1e3]``); the head is
    the network's last ``nn.Linear``. Data: D_f (and D_r once, for the learning phase). Cost: one
    forward per sample; ``O(d^2)`` per removed sample, plus ``O(d^3)`` once in the learning phase.

    Deviations from the paper: no random feature-expansion ("buffer") layer -- the head sits on
    the network's own features; the ridge term also regularises the bias; the learning phase is
    run at the first request when the network has no memory (the paper's models are analytic from
    their continual-learning phase on). Class-wise forgetting zeroes the forgotten class's column
    of ``Q``, so its output is 0 (the least-squares head of a class with no examples). Single
    device only (the downdate is cheap; DDP is refused with a clear error).

    Args:
        model: the trained classifier (its last ``nn.Linear`` is the head).
        gamma: ridge regularisation ``> 0`` of a new memory (an existing memory keeps its own).
        head: name of the head module (default: the last ``nn.Linear``).
        chunk_size: rows per Woodbury downdate (default ``d + 1``).
        weights: optional path of weights to load into ``model`` first.
        inplace: edit the given model object itself instead of a copy.

    Example::

        >>> from lightning_unlearn.models import SmallCNN
        >>> method = ACU(SmallCNN(in_channels=1, num_classes=10), gamma=1.0)
    """

    unlearning_inputs: ClassVar[tuple[str, ...]] = ("forget", "retain")

    def __init__(
        self,
        model: nn.Module,
        gamma: float = 1.0,
        head: Optional[str] = None,
        chunk_size: Optional[int] = None,
        weights: Optional[str] = None,
        inplace: bool = False,
    ) -> None:
        super().__init__(model, weights=weights, inplace=inplace)
        self.gamma = check_float(gamma, "gamma", minimum=0.0, open_minimum=True, hint="the ridge regularisation, e.g. 1.0")
        self.chunk_size = None if chunk_size is None else check_int(chunk_size, "chunk_size", minimum=1)
        self.head_name, self._head = head_of(self.model, head)
        if self._head.bias is None:
            raise ValueError(f"ACU's head {self.head_name!r} has no bias: the least-squares head needs one (bias=True).")
        if memory_of(self.model) is not None:  # later requests: only the forget set is read
            self.epoch_split = "forget"
        self._features: Optional[Tensor] = None
        self._hook = None

    @property
    def memory(self) -> Optional[AnalyticMemory]:
        """The network's analytic memory (``None`` before the first fit of a network without one)."""
        return memory_of(self.model)

    # ------------------------------------------------------------------ OneShotEdit
    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage == "fit" and self._trainer is not None and self.trainer.world_size > 1:
            raise ValueError("ACU runs on one device (its downdate is O(d^2) per removed sample): use devices=1.")
        if self.memory is not None:
            self._budget["retain"] = 0  # a network with a memory never revisits retained data

    def init_statistics(self) -> Statistics:
        d, c = self._head.in_features + 1, self._head.out_features
        return {
            "xx": torch.zeros(d, d, dtype=torch.float64, device="cpu"),
            "xy": torch.zeros(d, c, dtype=torch.float64, device="cpu"),
            "forget_x": [],
            "forget_y": [],
        }

    def reduce_statistics(self, statistics: Statistics) -> Statistics:
        return statistics  # one device (see setup)

    def accumulate(self, split: str, x: Tensor, y: Tensor) -> Tensor:
        features = self._head_input(x)
        if self.memory is None:  # the learning phase sees the whole training set
            rows = augment(features).cpu()
            self._stats["xx"] += rows.T @ rows
            self._stats["xy"] += rows.T @ one_hot(y.cpu(), self._head.out_features)
        if split == "forget":
            self._stats["forget_x"].append(features.detach().double().cpu())
            self._stats["forget_y"].append(y.detach().cpu())
        return torch.zeros((), device=x.device)

    def apply_edit(self, statistics: Statistics, counts: PassCounts) -> dict[str, float]:
        memory = self.memory
        learned = memory is None
        if memory is None:
            eye = torch.eye(statistics["xx"].shape[0], dtype=torch.float64)
            r = torch.cholesky_inverse(torch.linalg.cholesky(statistics["xx"] + self.gamma * eye))
            memory = AnalyticMemory(r, statistics["xy"], self.gamma, int(sum(counts.samples.values())))
        removed = 0
        if statistics["forget_x"]:
            x, y = torch.cat(statistics["forget_x"]), torch.cat(statistics["forget_y"])
            memory = forget_rows(memory, x, y, self.chunk_size)
            removed = len(x)
        self._write_head(memory)
        return {"removed": removed, "remaining": memory.count, "learning_phase": float(learned)}

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        memory = self.memory
        checkpoint["analytic_memory"] = None if memory is None else memory.state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        state = checkpoint.get("analytic_memory")
        if state is not None:
            setattr(self.model, MEMORY_ATTRIBUTE, AnalyticMemory.from_state(state))

    # ------------------------------------------------------------------ helpers
    def _head_input(self, x: Tensor) -> Tensor:
        captured: list[Tensor] = []
        handle = self._head.register_forward_pre_hook(lambda module, args: captured.append(args[0].detach()))
        try:
            with torch.no_grad():
                self.model(x)
        finally:
            handle.remove()
        return captured[-1].flatten(1)

    @torch.no_grad()
    def _write_head(self, memory: AnalyticMemory) -> None:
        weight, bias = memory.head()
        self._head.weight.copy_(weight.to(self._head.weight))
        self._head.bias.copy_(bias.to(self._head.bias))
        setattr(self.model, MEMORY_ATTRIBUTE, memory)
