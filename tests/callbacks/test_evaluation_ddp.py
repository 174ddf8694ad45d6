"""UnlearningEvaluation under DDP: every reported number of a 2-process ``ddp_spawn`` fit (CPU,
gloo) equals the single-process evaluation of the very same weights, exactly — the audits'
membership attacks and per-example margin gaps included.

Marked ``ddp`` and part of the default run (CI included); about 20-30 s on a 2-core machine.
"""

import copy
import json

import lightning as L
import pytest
import torch

from lightning_unlearn.callbacks import UnlearningEvaluation
from lightning_unlearn.data import DigitsDataModule, ForgetSpec
from lightning_unlearn.methods import FineTune
from lightning_unlearn.metrics import evaluate, evaluate_pass
from lightning_unlearn.metrics.keys import METRICS
from lightning_unlearn.report import verify_report
from tests.conftest import QUIET


@pytest.mark.ddp
def test_ddp_spawn_reports_the_single_process_numbers_exactly(original, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the spawned ranks compute like this process (one thread)
    # small evaluation batches: 3 forget, 21 retain and 6 test batches, shared unevenly over the 2 ranks
    dm = DigitsDataModule(forget=ForgetSpec(ratio=0.1, seed=0), eval_batch_size=64)
    reference = copy.deepcopy(original)
    with torch.no_grad():
        reference.classifier.weight.mul_(0.2)  # less confident: its MIA-efficacy is 0.215, not 0
    path = tmp_path / "report.json"
    method = FineTune(original, lr=0.05)
    trainer = L.Trainer(
        **QUIET,
        accelerator="cpu",
        devices=2,
        strategy="ddp_spawn",
        max_steps=3,
        callbacks=[UnlearningEvaluation(report_path=str(path), reference=reference, verbose=False, audits="standard")],
    )
    trainer.fit(method, datamodule=dm)  # ddp_spawn loads rank 0's final weights back into `method`

    report = json.loads(path.read_text())
    assert report["recipe"]["trainer"]["world_size"] == 2 and report["recipe"]["trainer"]["strategy"] == "DDPStrategy"
    single = {
        "before": evaluate(original, dm),
        "after": evaluate(method.model, dm),
        "reference": evaluate(reference, dm),
    }
    for block, values in single.items():
        for key in METRICS:
            assert report["metrics"][block][key] == values[key], (block, key)  # exact, not approximate
    assert 0.1 < single["reference"]["mia_efficacy"] < 0.5  # an attack that decides something
    for key in METRICS:
        assert float(trainer.callback_metrics[f"unlearn/{key}"]) == single["after"][key]
    assert report["status"] == "completed" and report["recipe"]["trainer"]["steps_run"] == 3
    loaders = dm.evaluation_dataloaders()
    passes = {
        "before": evaluate_pass(original, loaders),
        "after": evaluate_pass(method.model, loaders),
        "reference": evaluate_pass(reference, loaders),
    }
    for block, result in passes.items():
        for key, value in result.audit.items():
            assert report["audit"][block][key] == value, (block, key)  # exact, not approximate
    gap = (passes["after"].margins["forget"].double() - passes["reference"].margins["forget"].double()).abs().mean()
    assert report["audit"]["after"]["per_example/margin_gap/forget"] == float(gap)
    assert all(check.ok for check in verify_report(path)), [c.line() for c in verify_report(path)]
