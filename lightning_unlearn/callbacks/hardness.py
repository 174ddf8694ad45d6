"""`UnlearningHardness`: how hard a deletion request is, measured before unlearning (HAMU's kappa).

A thin Lightning adapter over :func:`lightning_unlearn.functional.request_hardness`: it reads the
forget set and a sample of the retain set through :mod:`lightning_unlearn.data.access`, scores
the network at fit start, logs the summary and hands it to the unlearning report.
"""

from __future__ import annotations

from typing import Any, Optional

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from lightning_unlearn.data.access import forget_batches, retain_batches
from lightning_unlearn.functional.hardness import request_hardness
from lightning_unlearn.models.network import network_of
from lightning_unlearn.registry import register
from lightning_unlearn.validation import check_int


@register(
    "hardness",
    kind="callback",
    cost="once at fit start: 1 F/B per D_f and per sampled D_r batch + per-example gradients of D_f (vectorised)",
    paper="Chen, Niu, Sim, Liu, Chen, Low, How Hard Can It Be? Hardness-Aware Multi-Objective Unlearning, ICML 2026"
    " (the hardness measure kappa = cos(g_r, g_f))",
)
class UnlearningHardness(Callback):
    """Measures how hard the request is before any weight changes, and writes it to the report.

    HAMU (Chen, Niu et al., ICML 2026) quantifies the hardness of reconciling forgetting with
    utility by the alignment of the retain- and forget-loss gradients, ``kappa = cos(g_r, g_f)``:
    forget data that resemble retained data have aligned gradients, and raising their loss raises
    the retain loss too (see :mod:`lightning_unlearn.functional.hardness` for the thresholds
    ``kappa_1 < kappa_2`` that separate the easy, rectifiable and collateral regimes). At fit start
    (before any step, on the network as handed over; the network in eval mode) this callback
    computes

    * the request's ``kappa`` from the mean gradient over all of D_f and over ``retain_batches``
      random batches of D_r (evaluation batch size, seeded), and the two gradient norms;
    * the per-example hardness ``kappa_i = cos(grad l(x_i), g_r)`` of every forget example
      (vectorised per-example gradients), summarised by its mean, median, 10 % / 90 % quantiles and
      the fraction of examples with ``kappa_i > 0``.

    Logged as ``hardness/<key>`` to every logger; kept in :attr:`results` (and the per-example
    values in :attr:`per_example`); added to the unlearning report of an
    :class:`UnlearningEvaluation` on the same trainer as ``metrics.hardness``
    (:meth:`report_section`). Usable on any LightningModule (the network is ``pl_module.model``
    when it exists).

    Cost: once, one forward/backward per D_f batch and per sampled D_r batch, plus vectorised
    per-example gradients of D_f in chunks of ``chunk_size``. Data: D_f and D_r with labels.

    Args:
        retain_batches: random D_r batches for ``g_r`` (default 4).
        chunk_size: examples per vectorised per-example gradient chunk.
        seed: seed of the D_r sample.

    Example::

        trainer = L.Trainer(max_epochs=3, callbacks=[UnlearningHardness(), UnlearningEvaluation(report_path="r.json")])
        trainer.fit(GradientAscent(net), datamodule=dm)     # r.json: metrics.hardness
    """

    def __init__(self, retain_batches: int = 4, chunk_size: int = 64, seed: int = 0) -> None:
        self.retain_batches = check_int(retain_batches, "retain_batches", minimum=1, hint="e.g. 4")
        self.chunk_size = check_int(chunk_size, "chunk_size", minimum=1, hint="e.g. 64")
        self.seed = check_int(seed, "seed")
        self.results: Optional[dict[str, float]] = None
        self.per_example: Optional[torch.Tensor] = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":
            forget_batches(trainer, "UnlearningHardness")  # fail before any weight changes

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.results is not None:  # resumed: measured before the first step
            return
        device = pl_module.device
        retain = retain_batches(trainer, self.retain_batches, self.seed, device, "UnlearningHardness")
        summary, per_example = request_hardness(
            network_of(pl_module), forget_batches(trainer, "UnlearningHardness"), retain, device, self.chunk_size
        )
        self.results, self.per_example = summary.as_dict(), per_example
        for logger in trainer.loggers:
            logger.log_metrics({f"hardness/{k}": float(v) for k, v in self.results.items()}, step=trainer.global_step)

    def report_section(self) -> Optional[tuple[str, dict[str, Any]]]:
        """``("hardness", summary)`` for the unlearning report, once measured."""
        return None if self.results is None else ("hardness", dict(self.results))

    def state_dict(self) -> dict[str, Any]:
        return {"results": self.results}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.results = state_dict.get("results")
