"""The built-in ``lr_scheduler="cosine"``: per-step cosine annealing to 0 over the whole fit."""

from __future__ import annotations

import math

import lightning as L
import pytest

from lightning_unlearn.methods import SCRUB, FineTune, Retrain
from tests.conftest import quiet_trainer


class LearningRates(L.Callback):
    """The learning rate each optimizer step used (read before the step)."""

    def __init__(self) -> None:
        self.rates: list[float] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.rates.append(optimizer.param_groups[0]["lr"])


@pytest.mark.parametrize("cls", [Retrain, FineTune])
def test_cosine_follows_the_closed_form_over_all_steps(original, digits_random, cls):
    rates = LearningRates()
    trainer = quiet_trainer(max_epochs=2, limit_train_batches=5, callbacks=[rates])
    trainer.fit(cls(original, lr=0.1, lr_scheduler="cosine"), datamodule=digits_random)
    total = trainer.estimated_stepping_batches
    assert len(rates.rates) == total == 10
    expected = [0.05 * (1 + math.cos(math.pi * t / total)) for t in range(total)]
    assert rates.rates == pytest.approx(expected, rel=1e-6)
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)  # annealed to 0


def test_scrub_steps_cosine_once_per_batch(original, digits_random):
    trainer = quiet_trainer(max_epochs=2, limit_train_batches=4)
    trainer.fit(SCRUB(original, lr=0.1, msteps=1, lr_scheduler="cosine"), datamodule=digits_random)
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_unknown_schedule_name_is_rejected(original):
    with pytest.raises(ValueError, match="`lr_scheduler` must be a factory optimizer -> scheduler or 'cosine'"):
        FineTune(original, lr_scheduler="step")
