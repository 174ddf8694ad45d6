"""UnlearningEvaluation: every number equals an independent computation; the report's schema;
loggers (CSV, W&B offline) receive what the callback computed."""

import copy
import json
import re
import time
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
from lightning_unlearn.report import REPORT_KEYS, verify_report
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
    assert (
        report["forget"]
        == digits_random.forget_summary()
        == {
            "count": len(digits_random.forget_indices),
            "retain_count": len(digits_random.retain_indices),
            "fingerprint": digits_random.fingerprint,
            "spec": {"indices": None, "classes": None, "ratio": 0.1, "seed": 0},
        }
    )
    for block in ("before", "after"):
        assert set(report["metrics"][block]) == {"forget_acc", "retain_acc", "test_acc", "unlearning_accuracy", "mia_efficacy"}
        assert all(0.0 <= v <= 1.0 for v in report["metrics"][block].values())
    assert report["metrics"]["reference"] is None and report["metrics"]["gap"] is None
    assert report["runtime_s"] > 0
    assert set(report["versions"]) == {"lightning-unlearn", "torch", "lightning"}
    assert datetime.fromisoformat(report["created"]).tzinfo is not None
    assert len(path.read_text()) < 4500  # summaries only: no data, no index lists (the recipe lists the audit settings)


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
        Retrain(original, lr=0.05), datamodule=digits_classwise
    )
    callback = UnlearningEvaluation(reference_report=str(path))
    quiet_trainer(max_steps=1, callbacks=[callback]).fit(GradientAscent(original), datamodule=digits_classwise)
    assert callback.results["reference"] == json.loads(path.read_text())["metrics"]["after"]


def test_reference_with_other_classes_is_rejected_before_any_step(original, digits_classwise):
    from lightning_unlearn.models import SmallCNN

    method = GradientAscent(original)
    start = copy.deepcopy(method.model.state_dict())
    with pytest.raises(ValueError, match=r"reference.*12 logits"):
        quiet_trainer(max_steps=1, callbacks=[UnlearningEvaluation(reference=SmallCNN(1, 12))]).fit(
            method, datamodule=digits_classwise
        )
    assert all(torch.equal(start[k], v) for k, v in method.model.state_dict().items())


def test_needs_unlearning_data(original, digits_classwise):
    from lightning_unlearn.methods import FineTune

    with pytest.raises(ValueError, match="UnlearningEvaluation needs"):
        quiet_trainer(max_steps=1, callbacks=[UnlearningEvaluation()]).fit(
            FineTune(original), train_dataloaders=digits_classwise.retain_dataloader()
        )


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


def wandb_records(run_file: Path) -> list:
    """The protobuf records of an offline ``.wandb`` file (a LevelDB-style log: a 7-byte header,
    then 32 KiB blocks of chunks ``crc(4) length(2) type(1) data``, type 1 full, 2 first, 3
    middle, 4 last), parsed with wandb's own ``Record`` message."""
    from wandb.proto import wandb_internal_pb2

    data, block, pos = run_file.read_bytes(), 32768, 7
    assert data[:4] == b":W&B"
    raws, pending = [], b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # block trailer
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        if pos + 7 + length > len(data):  # a record still being written
            break
        payload, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 1:
            raws.append(payload)
        elif kind == 2:
            pending = payload
        elif kind == 3:
            pending += payload
        elif kind == 4:
            raws.append(pending + payload)
        elif kind == 0:
            break
    records = []
    for raw in raws:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        records.append(record)
    return records


def _wandb_history(run_file: Path) -> dict:
    """Every logged history value (the last one per key) of an offline run."""
    items = {}
    for record in wandb_records(run_file):
        if record.WhichOneof("record_type") == "history":
            for item in record.history.item:
                key = item.key or "/".join(item.nested_key)
                items[key] = json.loads(item.value_json)
    return items


def _wandb_config(run_file: Path) -> dict:
    """The run's config (the last value per key) of an offline run."""
    config = {}
    for record in wandb_records(run_file):
        if record.WhichOneof("record_type") == "config":
            for item in record.config.update:
                config[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return config


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
    run_file = next(run_dir.glob("run-*.wandb"))
    deadline = time.monotonic() + 60  # W&B's service process may still be flushing the run log
    while not set(callback.flat_metrics()) <= set(_wandb_history(run_file)) and time.monotonic() < deadline:
        time.sleep(0.5)
    history = _wandb_history(run_file)
    for key, value in callback.flat_metrics().items():
        assert history[key] == pytest.approx(value), key
    config = _wandb_config(run_file)  # the report's recipe is the run's config
    recipe = config["unlearn/recipe"]
    recipe = recipe.get("value", recipe)
    assert recipe == json.loads(json.dumps(callback.report["recipe"]))
    assert recipe["method"]["name"] == "gradient_ascent" and recipe["model"]["sha256_after"]
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
        FineTune(original), datamodule=digits_classwise
    )
    topology = json.loads((tmp_path / "r.json").read_text())["metrics"]["topology"]
    assert topology and any(0.75 < v < 0.85 for k, v in topology.items() if "sparsity" in k and isinstance(v, float))
    assert any(k.startswith("unlearn/topology/") for k in callback.flat_metrics())


# ---------------------------------------------------------------------------------- provenance
def test_recipe_says_what_ran(original, digits_classwise, tmp_path):
    """SalUn shows as RandomLabel + SaliencyMask; the optimiser and scheduler are those in force
    (an Adam factory, not the SGD arguments); trainer settings and hashes are read back."""
    from functools import partial

    from lightning_unlearn.callbacks import SaliencyMask
    from lightning_unlearn.methods import RandomLabel
    from lightning_unlearn.models import weights_sha256

    path = tmp_path / "r.json"
    method = RandomLabel(
        original, optimizer=partial(torch.optim.Adam, lr=2e-4), lr_scheduler=partial(torch.optim.lr_scheduler.StepLR, step_size=3)
    )
    trainer = quiet_trainer(
        max_epochs=2,
        limit_train_batches=3,
        accumulate_grad_batches=2,
        gradient_clip_val=1.0,
        callbacks=[SaliencyMask(threshold=0.3), UnlearningEvaluation(report_path=str(path), verbose=False)],
    )
    trainer.fit(method, datamodule=digits_classwise)
    report = json.loads(path.read_text())
    recipe = report["recipe"]
    assert recipe["method"] == {
        "name": "random_label",
        "class": "lightning_unlearn.methods.RandomLabel",
        "hyperparameters": recipe["method"]["hyperparameters"],
    }
    assert [c["name"] for c in recipe["callbacks"]] == ["saliency_mask", "evaluation"]
    assert recipe["callbacks"][0]["init_args"]["threshold"] == 0.3
    assert recipe["optimizers"][0]["class"] == "torch.optim.Adam"
    assert recipe["optimizers"][0]["param_groups"][0]["lr"] == 2e-4
    assert recipe["lr_schedulers"][0]["class"] == "torch.optim.lr_scheduler.StepLR"
    assert recipe["lr_schedulers"][0]["settings"]["step_size"] == 3
    # the top-level hyper-parameters are those in force: Adam's lr, no SGD momentum
    assert report["hyperparameters"]["lr"] == 2e-4 and "momentum" not in report["hyperparameters"]
    assert report["hyperparameters"]["optimizer"] == "torch.optim.Adam"
    t = recipe["trainer"]
    assert (t["epochs_run"], t["steps_run"], t["accumulate_grad_batches"], t["gradient_clip_val"]) == (2, 4, 2, 1.0)
    assert (t["precision"], t["strategy"], t["world_size"], t["accelerator"]) == ("32-true", "SingleDeviceStrategy", 1, "cpu")
    d = recipe["data"]
    assert (d["forget_count"], d["retain_count"], d["test_count"]) == (146, 1291, 360)
    assert d["fingerprint"] == report["forget"]["fingerprint"] == digits_classwise.fingerprint
    assert recipe["model"]["sha256_before"] == weights_sha256(original)
    assert recipe["model"]["sha256_after"] == weights_sha256(method.model) != weights_sha256(original)
    assert report["schema_version"] == 2 and report["status"] == "completed" and report["failure"] is None


def test_a_users_module_is_named_by_class(original, digits_classwise, tmp_path):
    from lightning_unlearn.callbacks import SparsityRegularization

    callback = UnlearningEvaluation(datamodule=digits_classwise, verbose=False)
    trainer = L.Trainer(**QUIET, max_epochs=1, callbacks=[SparsityRegularization(alpha=1e-4), callback])
    trainer.fit(UserModule(original), train_dataloaders=digits_classwise.retain_dataloader())
    recipe = callback.report["recipe"]
    assert recipe["method"]["name"] is None and recipe["method"]["class"].endswith("test_evaluation.UserModule")
    assert [c["name"] for c in recipe["callbacks"]] == ["sparsity_regularization", "evaluation"]
    assert recipe["optimizers"][0]["param_groups"][0]["lr"] == 0.01


# ---------------------------------------------------------------------------------- Lightning-visible
def test_results_reach_callback_metrics_and_model_checkpoint(original, digits_classwise, tmp_path, caplog):
    """With logger=False too: the numbers land in trainer.callback_metrics, every_n_epochs feeds
    ModelCheckpoint(monitor=...), and rank 0 prints the table and the report's path."""
    import logging

    from lightning.pytorch.callbacks import ModelCheckpoint

    checkpoint = ModelCheckpoint(dirpath=tmp_path, monitor="unlearn/forget_acc", mode="min", filename="best")
    callback = UnlearningEvaluation(report_path=str(tmp_path / "r.json"), every_n_epochs=1)
    trainer = L.Trainer(**{**QUIET, "enable_checkpointing": True}, max_epochs=2, callbacks=[callback, checkpoint])
    with caplog.at_level(logging.INFO):
        trainer.fit(GradientAscent(original, lr=2e-3), datamodule=digits_classwise)
    for key, value in callback.flat_metrics().items():
        assert float(trainer.callback_metrics[key]) == value, key
    assert float(checkpoint.best_model_score) == pytest.approx(callback.results["after"]["forget_acc"], abs=1e-6)
    assert (tmp_path / "best.ckpt").is_file()
    printed = caplog.text
    assert "UnlearningEvaluation: completed" in printed and f"Report: {tmp_path / 'r.json'}" in printed
    assert re.search(r"forget_acc\s+1\.0000\s+0\.\d{4}", printed)


# ---------------------------------------------------------------------------------- resume
def test_resumed_run_reports_like_an_uninterrupted_one(original, digits_classwise, tmp_path):
    """Epoch-boundary resume: the resumed run's report has the same before/after numbers as a
    straight run (the before pass is not re-measured on resumed weights)."""

    def run(epochs, ckpt=None, save=None):
        L.seed_everything(0)
        callback = UnlearningEvaluation(verbose=False)
        trainer = quiet_trainer(max_epochs=epochs, limit_train_batches=2, callbacks=[callback])
        trainer.fit(GradientAscent(copy.deepcopy(original), lr=2e-3), datamodule=digits_classwise, ckpt_path=ckpt)
        if save:
            trainer.save_checkpoint(save)
        return callback

    straight = run(2)
    run(1, save=tmp_path / "mid.ckpt")
    resumed = run(2, ckpt=str(tmp_path / "mid.ckpt"))
    assert resumed.results["before"] == straight.results["before"]
    assert resumed.results["after"] == straight.results["after"]
    assert resumed.report["recipe"]["model"]["sha256_after"] == straight.report["recipe"]["model"]["sha256_after"]
    assert resumed.report["recipe"]["trainer"]["resumed_from"].endswith("mid.ckpt")


# ---------------------------------------------------------------------------------- verify-report
def test_verify_report_command(original, digits_classwise, tmp_path, capsys):
    from lightning_unlearn.cli import main

    path = tmp_path / "r.json"
    trainer = quiet_trainer(max_steps=2, callbacks=[UnlearningEvaluation(report_path=str(path), verbose=False)])
    trainer.fit(GradientAscent(original), datamodule=digits_classwise)
    trainer.save_checkpoint(tmp_path / "u.ckpt")
    (tmp_path / "forget.txt").write_text("\n".join(map(str, digits_classwise.forget_indices.tolist())))
    main(["verify-report", str(path), "--forget-indices", str(tmp_path / "forget.txt"), "--checkpoint", str(tmp_path / "u.ckpt")])
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "PASS schema",
        "PASS arithmetic",
        "PASS status",
        "PASS fingerprint",
        "PASS weights",
        "VERIFIED",
    ]
    path.write_text(path.read_text().replace('"status": "completed"', '"status": "finished"'))
    with pytest.raises(SystemExit) as exit_info:
        main(["verify-report", str(path)])
    assert exit_info.value.code == 1
    assert capsys.readouterr().out.startswith("FAIL schema: status 'finished' is not one of")


def test_the_report_never_lists_the_forget_indices(original, digits_classwise, tmp_path):
    """Not in the spec, not through a configuration embedded by the CLI, not in callback arguments."""
    from lightning_unlearn.data import ForgetSpec, UnlearningDataModule

    indices = digits_classwise.forget_indices.tolist()
    dm = UnlearningDataModule(digits_classwise.train_set, digits_classwise.test_set, ForgetSpec(indices=indices), batch_size=64)
    callback = UnlearningEvaluation(report_path=str(tmp_path / "r.json"), verbose=False)
    callback.run_config = {"data": {"init_args": {"forget": {"indices": indices[:5]}}}}
    quiet_trainer(max_steps=1, callbacks=[callback]).fit(GradientAscent(original), datamodule=dm)
    text = (tmp_path / "r.json").read_text()
    report = json.loads(text)
    assert report["forget"]["spec"]["indices"] == f"<{len(indices)} indices>"
    assert report["recipe"]["config"]["data"]["init_args"]["forget"]["indices"] == "<5 indices>"
    assert ",".join(map(str, indices[:3])) not in text.replace("\n", "").replace(" ", "")
    assert all(check.ok for check in verify_report(tmp_path / "r.json"))


def test_fit_end_warns_when_the_forget_set_is_still_recognised(original, digits_classwise, tmp_path):
    """Class-wise request, a model the method did not move: a warning with the figures and the remedy,
    and the finding in the report; a run that forgets the class gets neither."""
    path = tmp_path / "unchanged.json"
    callback = UnlearningEvaluation(report_path=str(path))
    with pytest.warns(
        UserWarning, match=r"forgotten class is still recognised: forget accuracy (0\.9\d\d|1\.000) after.*lightning-unlearn tune"
    ):
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
