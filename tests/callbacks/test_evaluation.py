"""UnlearningEvaluation: every number equals an independent computation; the report's schema;
loggers (CSV, W&B offline) receive what the callback computed."""

import copy
import json
import re
from datetime import datetime
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import CSVLogger

from lightning_unlearn.callbacks import UnlearningEvaluation
from lightning_unlearn.methods import GradientAscent, Retrain
from lightning_unlearn.report import REPORT_KEYS
from tests.conftest import QUIET, quiet_trainer


def independent_metrics(model, dm):
    """Accuracies by a plain loop and MIA-efficacy by sklearn's SVC, as in OPTML's SVC_MIA.py."""
    from sklearn.svm import SVC

    model.eval()
    out, conf = {}, {}
    with torch.no_grad():
        for split, loader in dm.evaluation_dataloaders().items():
            logits, ys = zip(*[(model(x), y) for x, y in loader])
            logits, ys = torch.cat(logits), torch.cat(ys)
            out[f"{split}_acc"] = (logits.argmax(-1) == ys).double().mean().item()
            conf[split] = F.softmax(logits, -1).gather(1, ys[:, None]).numpy()
    n = len(conf["test"])
    x = np.concatenate([conf["retain"][:n], conf["test"]])
    y = np.concatenate([np.ones(n), np.zeros(n)])
    svc = SVC(C=3, gamma="auto", kernel="rbf").fit(x, y)
    out["mia_efficacy"] = float((svc.predict(conf["forget"]) == 0).mean())
    out["unlearning_accuracy"] = 1 - out["forget_acc"]
    return out


def test_reported_numbers_equal_independent_computation(original, digits_classwise, tmp_path):
    callback = UnlearningEvaluation(report_path=str(tmp_path / "report.json"), mia_backend="sklearn")
    method = GradientAscent(original, lr=2e-3)
    quiet_trainer(max_epochs=3, callbacks=[callback]).fit(method, datamodule=digits_classwise)
    before = independent_metrics(copy.deepcopy(original), digits_classwise)
    after = independent_metrics(method.model, digits_classwise)
    for key, value in before.items():
        assert callback.results["before"][key] == pytest.approx(value, abs=1e-6), key
    for key, value in after.items():
        assert callback.results["after"][key] == pytest.approx(value, abs=1e-6), key
    assert callback.results["after"]["unlearning_accuracy"] > callback.results["before"]["unlearning_accuracy"] + 0.5


def test_report_schema(original, digits_random, tmp_path):
    path = tmp_path / "sub" / "report.json"
    L.seed_everything(7)
    quiet_trainer(max_steps=2, callbacks=[UnlearningEvaluation(report_path=str(path))]).fit(
        GradientAscent(original), datamodule=digits_random
    )
    report = json.loads(path.read_text())
    assert tuple(report) == REPORT_KEYS
    assert report["method"] == "GradientAscent" and report["seed"] == 7
    assert report["hyperparameters"]["lr"] == 1e-3 and "model" not in report["hyperparameters"]
    assert report["forget"] == digits_random.forget_summary() == {
        "count": len(digits_random.forget_indices),
        "retain_count": len(digits_random.retain_indices),
        "fingerprint": digits_random.fingerprint,
        "spec": {"indices": None, "classes": None, "ratio": 0.1, "seed": 0},
    }
    for block in ("before", "after"):
        assert set(report["metrics"][block]) == {
            "forget_acc", "retain_acc", "test_acc", "unlearning_accuracy", "mia_efficacy"}
        assert all(0.0 <= v <= 1.0 for v in report["metrics"][block].values())
    assert report["metrics"]["reference"] is None and report["metrics"]["gap"] is None
    assert report["runtime_s"] > 0
    assert set(report["versions"]) == {"lightning-unlearn", "torch", "lightning"}
    assert datetime.fromisoformat(report["created"]).tzinfo is not None
    assert len(path.read_text()) < 4000  # summaries only: no data, no index lists


def test_gap_against_a_reference_model(original, digits_classwise, tmp_path):
    reference = Retrain(original, lr=0.05)
    quiet_trainer(max_epochs=5).fit(reference, datamodule=digits_classwise)
    callback = UnlearningEvaluation(reference=reference.model)
    quiet_trainer(max_epochs=2, callbacks=[callback]).fit(GradientAscent(original, lr=2e-3), datamodule=digits_classwise)
    after, ref, gap = (callback.results[k] for k in ("after", "reference", "gap"))
    for key in ref:
        assert gap[key] == pytest.approx(after[key] - ref[key])
    keys = ("unlearning_accuracy", "retain_acc", "test_acc", "mia_efficacy")
    assert gap["avg_gap"] == pytest.approx(sum(abs(after[k] - ref[k]) for k in keys) / 4)
    # a saved report serves as the reference of a later run
    path = tmp_path / "ref.json"
    quiet_trainer(max_epochs=1, callbacks=[UnlearningEvaluation(report_path=str(path))]).fit(
        Retrain(original, lr=0.05), datamodule=digits_classwise)
    callback = UnlearningEvaluation(reference_report=str(path))
    quiet_trainer(max_steps=1, callbacks=[callback]).fit(GradientAscent(original), datamodule=digits_classwise)
    assert callback.results["reference"] == json.loads(path.read_text())["metrics"]["after"]


def test_reference_with_other_classes_is_rejected_before_any_step(original, digits_classwise):
    from lightning_unlearn.models import SmallCNN

    method = GradientAscent(original)
    start = copy.deepcopy(method.model.state_dict())
    with pytest.raises(ValueError, match="reference.*12 logits"):
        quiet_trainer(max_steps=1, callbacks=[UnlearningEvaluation(reference=SmallCNN(1, 12))]).fit(
            method, datamodule=digits_classwise)
    assert all(torch.equal(start[k], v) for k, v in method.model.state_dict().items())


def test_needs_unlearning_data(original, digits_classwise):
    from lightning_unlearn.methods import FineTune

    with pytest.raises(ValueError, match="UnlearningEvaluation needs"):
        quiet_trainer(max_steps=1, callbacks=[UnlearningEvaluation()]).fit(
            FineTune(original), train_dataloaders=digits_classwise.retain_dataloader())


class UserModule(L.LightningModule):
    """A user's own classifier module: no `model` attribute, its own training_step."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_works_on_a_users_module_and_logs_to_csv(original, digits_classwise, tmp_path):
    logger = CSVLogger(tmp_path)
    callback = UnlearningEvaluation(datamodule=digits_classwise)
    trainer = L.Trainer(**{**QUIET, "logger": logger}, max_epochs=1, callbacks=[callback])
    trainer.fit(UserModule(original), train_dataloaders=digits_classwise.retain_dataloader())
    rows = (Path(logger.log_dir) / "metrics.csv").read_text()
    assert "unlearn/forget_acc" in rows and "unlearn/before/mia_efficacy" in rows
    assert callback.results["before"]["forget_acc"] > 0.95


def _wandb_history(run_file: Path) -> dict:
    """Reads history items (key -> value) out of an offline .wandb file: each item is a protobuf
    message with the key as field 2 and the JSON value as field 16."""
    data = run_file.read_bytes()
    items = {}
    for match in re.finditer(rb"\x12([\x01-\x7f])", data):
        n = match.group(1)[0]
        start = match.end()
        key = data[start:start + n]
        rest = data[start + n:]
        if rest[:2] == b"\x82\x01" and re.fullmatch(rb"[\w/.\-]+", key or b"-"):
            try:
                items[key.decode()] = json.loads(rest[3:3 + rest[2]])
            except ValueError:
                continue
    return items


def test_wandb_offline_run_is_read_back(original, digits_classwise, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    import wandb
    from lightning.pytorch.loggers import WandbLogger

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    logger = WandbLogger(save_dir=str(tmp_path), offline=True, project="lightning-unlearn-test")
    callback = UnlearningEvaluation()
    trainer = L.Trainer(**{**QUIET, "logger": logger}, max_epochs=2, callbacks=[callback])
    trainer.fit(GradientAscent(original, lr=2e-3), datamodule=digits_classwise)
    wandb.finish()
    run_dir = next((tmp_path / "wandb").glob("offline-run-*"))
    history = _wandb_history(next(run_dir.glob("run-*.wandb")))
    for key, value in callback.flat_metrics().items():
        assert history[key] == pytest.approx(value), key
    table = json.loads(next(run_dir.glob("files/media/table/unlearn/summary_*.table.json")).read_text())
    assert table["columns"] == ["metric", "before", "after", "reference", "gap"]
    rows = {row[0]: row for row in table["data"]}
    assert rows["forget_acc"][1] == pytest.approx(callback.results["before"]["forget_acc"])
    assert rows["forget_acc"][2] == pytest.approx(callback.results["after"]["forget_acc"])


def test_sparse_models_get_topology_figures(original, digits_classwise, tmp_path):
    from lightning_unlearn.callbacks import MagnitudePruning
    from lightning_unlearn.methods import FineTune

    callback = UnlearningEvaluation(report_path=str(tmp_path / "r.json"))
    quiet_trainer(max_steps=2, callbacks=[MagnitudePruning(amount=0.8), callback]).fit(
        FineTune(original), datamodule=digits_classwise)
    topology = json.loads((tmp_path / "r.json").read_text())["metrics"]["topology"]
    assert topology and any(0.75 < v < 0.85 for k, v in topology.items() if "sparsity" in k and isinstance(v, float))
    assert any(k.startswith("unlearn/topology/") for k in callback.flat_metrics())


def test_fit_end_warns_when_the_forget_set_is_still_recognised(original, digits_classwise, tmp_path):
    """Class-wise request, a model the method did not move: a warning with the figures and the remedy,
    and the finding in the report; a run that forgets the class gets neither."""
    path = tmp_path / "unchanged.json"
    callback = UnlearningEvaluation(report_path=str(path))
    with pytest.warns(UserWarning, match=r"forgotten class is still recognised: forget accuracy (0\.9\d\d|1\.000) after.*lightning-unlearn tune"):
        quiet_trainer(max_steps=1, callbacks=[callback]).fit(GradientAscent(original, lr=1e-9), datamodule=digits_classwise)
    finding = json.loads(path.read_text())["metrics"]["forgetting_check"]
    assert finding == callback.results["forgetting_check"]
    assert finding["kind"] == "classwise" and finding["figures"]["kept"] > 0.95 and "tune" in finding["remedy"]
    assert finding["figures"]["after_forget_acc"] == pytest.approx(callback.results["after"]["forget_acc"])

    path = tmp_path / "forgotten.json"
    callback = UnlearningEvaluation(report_path=str(path))
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_trainer(max_epochs=3, callbacks=[callback]).fit(GradientAscent(original, lr=2e-3), datamodule=digits_classwise)
    assert callback.results["after"]["forget_acc"] < 0.5 * callback.results["before"]["forget_acc"]
    assert not [w for w in caught if "still recognised" in str(w.message) or "still classified" in str(w.message)]
    assert callback.results["forgetting_check"] is None
    assert "forgetting_check" not in json.loads(path.read_text())["metrics"]
