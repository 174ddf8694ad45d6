"""UnlearningEvaluation(audits=...): the audit numbers equal an independent pass, reach the logs
with their sign convention, the report's audit section verifies, the verdict leads with topology
for sparse models, figures are written and logged as images."""

from __future__ import annotations

import copy
import json
from types import SimpleNamespace
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import Logger

from lightning_unlearn.callbacks import MagnitudePruning, UnlearningEvaluation
from lightning_unlearn.methods import FineTune
from lightning_unlearn.metrics import evaluate_pass
from lightning_unlearn.metrics.keys import audit_log_key
from lightning_unlearn.report import verify_report
from tests.conftest import QUIET, quiet_trainer


class WandbLogger(Logger):
    """Stands in for Lightning's WandbLogger (the callback recognises it by name): records tables and images."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, Any] = {}
        self.images: dict[str, list] = {}
        self.experiment = SimpleNamespace(id="fake", log_artifact=lambda artifact: None)

    name = "fake"
    version = 0

    def log_metrics(self, metrics: dict, step: int = 0) -> None:
        pass

    def log_hyperparams(self, params: Any) -> None:
        pass

    def log_table(self, key: str, columns: list, data: list) -> None:
        self.tables[key] = (columns, data)

    def log_image(self, key: str, images: list) -> None:
        self.images[key] = images


def _reference(original: torch.nn.Module) -> torch.nn.Module:
    reference = copy.deepcopy(original)
    with torch.no_grad():
        reference.classifier.weight.mul_(0.3)  # less confident everywhere: a visibly different reference
    return reference


def test_standard_audits_equal_an_independent_pass_and_reach_logs_and_report(original, digits_random, tmp_path):
    path = tmp_path / "report.json"
    reference = _reference(original)
    callback = UnlearningEvaluation(report_path=str(path), reference=reference, audits="standard")
    method = FineTune(original, lr=0.05)
    quiet_trainer(max_steps=3, callbacks=[callback]).fit(method, datamodule=digits_random)
    loaders = digits_random.evaluation_dataloaders()
    after, ref = evaluate_pass(method.model, loaders), evaluate_pass(reference, loaders)
    report = json.loads(path.read_text())
    audit = report["audit"]
    assert list(report)[:7] == ["schema_version", "status", "method", "hyperparameters", "forget", "metrics", "audit"]
    assert audit["audits"] == ["attacks", "margins"]
    for key, value in after.audit.items():
        assert audit["after"][key] == value, key  # exact: the same pass, the same arithmetic
        assert audit["reference"][key] == ref.audit[key], key
    gap = float((after.margins["forget"].double() - ref.margins["forget"].double()).abs().mean())
    assert audit["after"]["per_example/margin_gap/forget"] == pytest.approx(gap)
    assert torch.equal(callback.margins["after"]["forget"], after.margins["forget"])
    entries = {e["quantity"]: e for e in audit["summary"]}
    assert entries["forget_acc"]["reference"] == report["metrics"]["reference"]["forget_acc"]
    assert all(e["verdict"] for e in audit["summary"])
    assert entries["mia/loss/forget_vs_test/auc"]["difference"] == pytest.approx(
        after.audit["mia/loss/forget_vs_test/auc"] - ref.audit["mia/loss/forget_vs_test/auc"]
    )
    checks = verify_report(path)
    assert all(c.ok for c in checks), [c.line() for c in checks]
    edited = json.loads(path.read_text())
    edited["audit"]["summary"][0]["difference"] += 0.5
    (tmp_path / "edited.json").write_text(json.dumps(edited))
    assert not all(c.ok for c in verify_report(tmp_path / "edited.json"))


def test_audit_values_reach_callback_metrics_with_their_sign_convention(original, digits_random):
    callback = UnlearningEvaluation(audits="attacks", verbose=False)
    trainer = quiet_trainer(max_steps=1, callbacks=[callback])
    trainer.fit(FineTune(original), datamodule=digits_random)
    key = audit_log_key("unlearn", "mia/entropy_lr/member_rate")
    assert key == "unlearn/audit/mia/entropy_lr/member_rate_higher_remembered"
    assert float(trainer.callback_metrics[key]) == callback.audit["after"]["mia/entropy_lr/member_rate"]
    assert not any(k.startswith("unlearn/audit/reference/") for k in trainer.callback_metrics)  # no reference given


def test_full_audits_with_a_reseeded_reference_write_figures_and_a_verdict(original, digits_classwise, tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "full.json"
    reference = _reference(original)
    reseeded = _reference(original)
    with torch.no_grad():
        reseeded.classifier.bias.add_(0.01)
    logger = WandbLogger()
    callback = UnlearningEvaluation(
        report_path=str(path),
        reference=reference,
        reseeded_reference=reseeded,
        audits="full",
        representation_samples=100,
        relearn_steps=2,
        quantization_bits=[8],
        verbose=False,
    )
    L.Trainer(**{**QUIET, "logger": logger}, accelerator="cpu", max_steps=2, callbacks=[callback]).fit(
        FineTune(original), datamodule=digits_classwise
    )
    audit = json.loads(path.read_text())["audit"]
    after = audit["after"]
    for key in (
        "representation/cka_retrain/forget",
        "representation/cka_original/test",
        "representation/knn/forget_acc",
        "representation/linear_probe/forget_acc",
        "relearn/forget_acc",
        "quantization/int8/forget_acc_change",
    ):
        assert key in after, key
    assert audit["reference"]["representation/cka_retrain/forget"] == pytest.approx(1.0)
    assert audit["reseeded"]["representation/cka_retrain/forget"] > 0.9
    floors = [e for e in audit["summary"] if e["floor_from"] == "reseeded Retrain"]
    assert floors and all(e["noise_floor"] >= 0 for e in floors)
    assert set(audit["figures"]) == {"mia_scores", "roc", "margins", "accuracy"}
    for name, png in audit["figures"].items():
        assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n" and png.startswith(str(tmp_path / "full_"))
        assert logger.images[f"unlearn/audit/figures/{name}"] == [png]
    columns, rows = logger.tables["unlearn/audit_summary"]
    assert columns[0] == "quantity" and len(rows) == len(audit["summary"])
    assert all(c.ok for c in verify_report(path))


def test_a_sparse_model_summary_leads_with_topology_and_per_example_numbers(original, digits_classwise):
    callback = UnlearningEvaluation(reference=_reference(original), audits="standard", verbose=False)
    quiet_trainer(max_steps=1, callbacks=[MagnitudePruning(amount=0.8), callback]).fit(
        FineTune(original), datamodule=digits_classwise
    )
    order = [e["quantity"] for e in callback.audit["summary"]]
    first_other = next(i for i, q in enumerate(order) if not q.startswith(("topology/", "per_example/")))
    assert order[0].startswith("topology/") and first_other >= 3
    assert any(q.startswith("per_example/") for q in order[:first_other])


def test_a_reference_reports_audit_block_is_the_reference(original, digits_random, tmp_path):
    first = tmp_path / "retrain.json"
    quiet_trainer(max_steps=1, callbacks=[UnlearningEvaluation(report_path=str(first), audits="attacks", verbose=False)]).fit(
        FineTune(original), datamodule=digits_random
    )
    callback = UnlearningEvaluation(reference_report=str(first), audits="attacks", verbose=False)
    quiet_trainer(max_steps=1, callbacks=[callback]).fit(FineTune(original, lr=0.05), datamodule=digits_random)
    assert callback.audit["reference"] == json.loads(first.read_text())["audit"]["after"]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"audits": "everything"}, "audits"),
        ({"audits": ["attacks", "sharpness"]}, "audits"),
        ({"relearn_data": "retain"}, "relearn_data"),
        ({"relearn_fraction": 1.0}, "relearn_fraction"),
        ({"quantization_bits": 8}, "quantization_bits"),
        ({"quantization_bits": [1]}, "quantization_bits"),
        ({"reseeded_reference": 3}, "reseeded_reference"),
        ({"representation_samples": 1}, "representation_samples"),
    ],
)
def test_bad_audit_arguments_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        UnlearningEvaluation(**kwargs)
