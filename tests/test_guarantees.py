"""The bad-input catalogue of README's "Guarantees" section: one test per row.

Each :class:`Case` does one thing a user can get wrong and states the error it must give (a
regex over ``"<ExceptionType>: <message>"``, or over the outcome a case returns when the
guarantee is an outcome, e.g. a report with ``status: diverged``). Cases that touch weights or
files also assert that nothing changed. ``test_readme_catalogue_is_this_list`` keeps README's
table and this list identical.
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset, IterableDataset, TensorDataset

from lightning_unlearn.callbacks import MagnitudePruning, UnlearningEvaluation
from lightning_unlearn.data import DigitsDataModule, ForgetSpec, UnlearningDataModule
from lightning_unlearn.methods import SCRUB, BadTeacher, FineTune, GradientAscent, RandomLabel, Retrain
from lightning_unlearn.metrics import ZRFScore
from lightning_unlearn.models import SmallCNN
from lightning_unlearn.report import build_report, verify_report, write_report
from tests.conftest import quiet_trainer, synthetic_dataset

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------- tiny problem
def tiny_data(**kwargs: Any) -> UnlearningDataModule:
    """100 synthetic examples of 4 classes (6 features), 40 held out; class 1 forgotten."""
    kwargs.setdefault("forget", ForgetSpec(classes=[1]))
    kwargs.setdefault("batch_size", 16)
    return UnlearningDataModule(synthetic_dataset(100), synthetic_dataset(40, seed=1), **kwargs)


def tiny_net(outputs: int = 4) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, outputs))


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def fit(module: L.LightningModule, datamodule: Any, callbacks: list = (), **kwargs: Any) -> L.Trainer:
    trainer = quiet_trainer(max_steps=kwargs.pop("max_steps", 2), callbacks=list(callbacks), **kwargs)
    trainer.fit(module, datamodule=datamodule)
    return trainer


class NaNNet(nn.Module):
    """Returns NaN logits."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) * float("nan")


class DictItems(Dataset):
    def __len__(self) -> int:
        return 10

    def __getitem__(self, i: int) -> dict:
        return {"pixels": torch.zeros(6), "cls": i % 2}


class Stream(IterableDataset):
    def __iter__(self):
        return iter([(torch.zeros(6), 0)])


class Boom(L.Callback):
    """Raises in the second training batch."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 1:
            raise RuntimeError("boom")


class Payload:
    """A pickle that would create a file when loaded with weights_only=False."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


# ---------------------------------------------------------------------------------- outcome cases
def weights_other_architecture(tmp: Path) -> None:
    path = tmp / "w.pt"
    torch.save(nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 4)).state_dict(), path)
    net = tiny_net()
    before = copy.deepcopy(net.state_dict())
    try:
        FineTune(net, weights=str(path))
    finally:
        assert same_weights(net.state_dict(), before)  # the user's model is untouched


def weights_valid_file_leaves_user_model(tmp: Path) -> str:
    path = tmp / "w.pt"
    trained = tiny_net()
    with torch.no_grad():
        trained[0].weight.add_(1.0)
    torch.save(trained.state_dict(), path)
    net = tiny_net()
    before = copy.deepcopy(net.state_dict())
    method = FineTune(net, weights=str(path))
    assert same_weights(net.state_dict(), before)
    assert same_weights(method.model.state_dict(), trained.state_dict())
    assert same_weights(method.original_model.state_dict(), trained.state_dict())
    return "loaded into the copy only; the user's model is untouched"


def weights_malicious(tmp: Path) -> None:
    path, marker = tmp / "evil.pt", tmp / "pwned"
    torch.save({"x": Payload(str(marker))}, path)
    try:
        FineTune(tiny_net(), weights=str(path))
    finally:
        assert not marker.exists()  # the payload never ran


def nan_logits(tmp: Path) -> None:
    net = NaNNet()
    before = copy.deepcopy(net.state_dict())
    try:
        fit(FineTune(net, inplace=True), tiny_data(), [UnlearningEvaluation(verbose=False)])
    finally:
        assert same_weights(net.state_dict(), before)


def wrong_shape_inplace_pruning(tmp: Path) -> None:
    net = tiny_net(outputs=2)
    before = copy.deepcopy(net.state_dict())
    try:
        fit(FineTune(net, inplace=True), tiny_data(), [MagnitudePruning(amount=0.5)])
    finally:
        assert same_weights(net.state_dict(), before)  # not pruned: the check ran first


def report_path_under_file(tmp: Path) -> None:
    (tmp / "file").write_text("x")
    net = tiny_net()
    before = copy.deepcopy(net.state_dict())
    try:
        fit(
            FineTune(net, inplace=True),
            tiny_data(),
            [MagnitudePruning(amount=0.5), UnlearningEvaluation(report_path=str(tmp / "file" / "r.json"))],
        )
    finally:
        assert same_weights(net.state_dict(), before)


def reference_report_diverged(tmp: Path) -> None:
    dm = tiny_data()
    report = build_report(
        "Retrain",
        {},
        dm.forget_summary(),
        {k: 0.5 for k in ("forget_acc", "retain_acc", "test_acc", "unlearning_accuracy", "mia_efficacy")},
        None,
        status="diverged",
        failure={"reason": "non-finite loss"},
    )
    write_report(tmp / "ref.json", report)
    fit(FineTune(tiny_net()), dm, [UnlearningEvaluation(reference_report=str(tmp / "ref.json"), verbose=False)])


def diverging_lr(tmp: Path) -> str:
    path = tmp / "r.json"
    evaluation = UnlearningEvaluation(report_path=str(path), verbose=False)
    trainer = fit(GradientAscent(tiny_net(), lr=1e8, momentum=0.0), tiny_data(), [evaluation], max_steps=30)
    report = json.loads(path.read_text())
    assert trainer.global_step < 30 and report["status"] == "diverged"
    assert report["metrics"]["before"]["retain_acc"] is not None
    failure = report["failure"]
    return f"status {report['status']}: {failure['reason']} at step {failure['step']}"


def write_fault(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    path = tmp / "r.json"
    fit(FineTune(tiny_net()), tiny_data(), [UnlearningEvaluation(report_path=str(path), verbose=False)])
    earlier = path.read_bytes()

    def fail(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(OSError, match="disk full"):
        fit(FineTune(tiny_net(), lr=0.5), tiny_data(), [UnlearningEvaluation(report_path=str(path), verbose=False)])
    assert path.read_bytes() == earlier  # the earlier report is intact
    assert sorted(p.name for p in tmp.iterdir()) == ["r.json"]  # and no temporary file is left
    return "earlier report intact, no temporary file left"


def exception_mid_fit(tmp: Path) -> str:
    path = tmp / "r.json"
    with pytest.raises(RuntimeError, match="boom"):
        fit(FineTune(tiny_net()), tiny_data(), [Boom(), UnlearningEvaluation(report_path=str(path), verbose=False)])
    report = json.loads(path.read_text())
    assert report["metrics"]["after"] is None and report["metrics"]["before"]["test_acc"] is not None
    return f"status {report['status']}: {report['failure']['reason']}"


def verified_run(tmp: Path) -> tuple[Path, Path, UnlearningDataModule, nn.Module]:
    dm, net = tiny_data(), tiny_net()
    method = FineTune(net, lr=0.1)
    trainer = fit(method, dm, [UnlearningEvaluation(report_path=str(tmp / "r.json"), verbose=False)])
    trainer.save_checkpoint(tmp / "u.ckpt")
    return tmp / "r.json", tmp / "u.ckpt", dm, net


def verify_tampered(tmp: Path) -> str:
    report, _, _, _ = verified_run(tmp)
    data = json.loads(report.read_text())
    after = data["metrics"]["after"]
    after["forget_acc"] = 0.25 if after["forget_acc"] != 0.25 else 0.5  # another number, edited by hand
    report.write_text(json.dumps(data))
    return "\n".join(c.line() for c in verify_report(report) if not c.ok)


def verify_original_checkpoint(tmp: Path) -> str:
    report, _, _, net = verified_run(tmp)
    torch.save(net.state_dict(), tmp / "original.pt")
    return "\n".join(c.line() for c in verify_report(report, checkpoint=tmp / "original.pt") if not c.ok)


def verify_other_indices(tmp: Path) -> str:
    report, _, dm, _ = verified_run(tmp)
    (tmp / "forget.json").write_text(json.dumps(dm.forget_indices.tolist()[:-1]))  # one index short
    return "\n".join(c.line() for c in verify_report(report, forget_indices=tmp / "forget.json") if not c.ok)


def compare_output_folder(tmp: Path, capsys: pytest.CaptureFixture) -> str:
    from lightning_unlearn.benchmark.compare import main as compare_main

    with pytest.raises(SystemExit) as exit_info:
        compare_main(["--config", str(ROOT / "lightning_unlearn" / "configs" / "quickstart.yaml"), "--output", str(tmp)])
    assert exit_info.value.code == 2
    err = capsys.readouterr()
    assert "| Method |" not in err.out  # refused before anything trained
    return err.err


def reference_other_classes(tmp: Path) -> None:
    fit(FineTune(tiny_net()), tiny_data(), [UnlearningEvaluation(reference=tiny_net(outputs=5), verbose=False)])


def forget_method_plain_loader(tmp: Path) -> None:
    dm = tiny_data()
    quiet_trainer(max_steps=1).fit(GradientAscent(tiny_net()), train_dataloaders=dm.retain_dataloader())


# ---------------------------------------------------------------------------------- the catalogue
@dataclass(frozen=True)
class Case:
    id: str
    run: Callable[..., Any]
    error: str  # regex over "<ExceptionType>: <message>" or the returned outcome


def _x() -> torch.Tensor:
    return torch.randn(100, 6)


CASES = [
    # the request
    Case("spec-none", lambda: ForgetSpec(), r"ValueError: ForgetSpec takes exactly one of `indices`, `classes` or `ratio`"),
    Case("spec-two-kinds", lambda: ForgetSpec(classes=[1], ratio=0.1), r"ValueError: ForgetSpec takes exactly one of"),
    Case("ratio-out-of-range", lambda: ForgetSpec(ratio=1.5), r"ValueError: `ratio` must be a fraction in \(0, 1\), got 1.5"),
    Case("ratio-nan", lambda: ForgetSpec(ratio=float("nan")), r"ValueError: `ratio` must be a fraction in \(0, 1\), got nan"),
    Case("seed-string", lambda: ForgetSpec(ratio=0.1, seed="abc"), r"ValueError: `seed` must be an integer, got 'abc' \(str\)"),
    Case(
        "indices-bool-tensor",
        lambda: ForgetSpec(indices=torch.tensor([True, False, True])),
        r"ValueError: `indices` got a boolean array \(a mask\?\), not positions: .*mask.nonzero\(\)",
    ),
    Case("indices-bool-numpy", lambda: ForgetSpec(indices=np.array([True, False])), r"ValueError: `indices` got a boolean array"),
    Case("indices-floats", lambda: ForgetSpec(indices=[0.5, 1]), r"ValueError: `indices` must hold integers, got 0.5"),
    Case("indices-string", lambda: ForgetSpec(indices="0,1"), r"ValueError: `indices` must be a list of integers"),
    Case(
        "index-out-of-range",
        lambda: tiny_data(forget=ForgetSpec(indices=[1000])),
        r"ValueError: `indices` contains 1000, out of range for a training set of 100 examples: use positions 0..99",
    ),
    Case("index-negative", lambda: tiny_data(forget=ForgetSpec(indices=[-1])), r"ValueError: `indices` must be non-negative"),
    Case("index-duplicated", lambda: tiny_data(forget=ForgetSpec(indices=[3, 3])), r"ValueError: `indices` contains duplicates"),
    Case("class-absent", lambda: tiny_data(forget=ForgetSpec(classes=[9])), r"ValueError: `classes` \[9\] do not occur"),
    Case(
        "forget-everything",
        lambda: tiny_data(forget=ForgetSpec(classes=[0, 1, 2, 3])),
        r"ValueError: The forget set is the whole",
    ),
    Case(
        "forget-unknown-field",
        lambda: tiny_data(forget={"classes": [1], "clases": [2]}),
        r"ValueError: `forget` has unknown field\(s\) \['clases'\]",
    ),
    # the data
    Case("batch-size-float", lambda: tiny_data(batch_size=2.5), r"ValueError: `batch_size` must be an integer >= 1, got 2.5"),
    Case("num-workers-string", lambda: tiny_data(num_workers="2"), r"ValueError: `num_workers` must be an integer >= 0, got '2'"),
    Case("eval-batch-size-zero", lambda: tiny_data(eval_batch_size=0), r"ValueError: `eval_batch_size` must be an integer >= 1"),
    Case(
        "no-test-set",
        lambda: UnlearningDataModule(synthetic_dataset(), None, ForgetSpec(classes=[1])),
        r"ValueError: `test` is required",
    ),
    Case(
        "one-hot-labels",
        lambda: UnlearningDataModule(
            TensorDataset(_x(), torch.eye(4)[torch.arange(100) % 4]), synthetic_dataset(), ForgetSpec(classes=[1])
        ),
        r"ValueError: `train` yields labels like \(4,\), not class indices.*argmax",
    ),
    Case(
        "dataset-yields-x-only",
        lambda: UnlearningDataModule(TensorDataset(_x()), synthetic_dataset(), ForgetSpec(classes=[1])),
        r"ValueError: `train` must yield \(x, y\) pairs \(input, class index\), got a tuple of 1",
    ),
    Case(
        "dict-items-without-keys",
        lambda: UnlearningDataModule(DictItems(), DictItems(), ForgetSpec(classes=[1])),
        r"ValueError: `train` yields dicts with keys \['cls', 'pixels'\], none of the known .*keys=\('image', 'label'\)",
    ),
    Case(
        "fractional-labels",
        lambda: UnlearningDataModule(TensorDataset(_x(), torch.rand(100)), synthetic_dataset(), ForgetSpec(classes=[1])),
        r"ValueError: `train` yields labels like .*not class indices",
    ),
    Case(
        "iterable-dataset",
        lambda: UnlearningDataModule(Stream(), synthetic_dataset(), ForgetSpec(classes=[1])),
        r"ValueError: `train` must be a map-style Dataset",
    ),
    Case(
        "test-fraction-string",
        lambda: DigitsDataModule(ForgetSpec(classes=[3]), test_fraction="0.2"),
        r"ValueError: `test_fraction` must be a fraction in \(0, 1\)",
    ),
    # the method
    Case("lr-nan", lambda: FineTune(tiny_net(), lr=float("nan")), r"ValueError: `lr` must be a finite number >= 0, got nan"),
    Case(
        "lr-string", lambda: FineTune(tiny_net(), lr="0.1"), r"ValueError: `lr` must be a finite number >= 0, got '0.1' \(str\)"
    ),
    Case("temperature-string", lambda: SCRUB(tiny_net(), temperature="4"), r"ValueError: `temperature` must be a finite number"),
    Case("epoch-split-unknown", lambda: RandomLabel(tiny_net(), epoch_split="test"), r"ValueError: `epoch_split` must be one of"),
    Case(
        "inplace-string", lambda: FineTune(tiny_net(), inplace="yes"), r"ValueError: `inplace` must be True or False, got 'yes'"
    ),
    Case(
        "model-not-a-module", lambda: FineTune("net"), r"ValueError: `model` must be a torch.nn.Module returning logits, got str"
    ),
    Case(
        "momentum-for-adam",
        lambda: BadTeacher(tiny_net(), momentum=0.9),
        r"ValueError: BadTeacher trains with Adam.*drop `momentum`",
    ),
    Case(
        "retrain-inplace", lambda: Retrain(tiny_net(), inplace=True), r"ValueError: Retrain always trains a re-initialised copy"
    ),
    Case(
        "network-size-float", lambda: SmallCNN(1, num_classes=2.5), r"ValueError: `num_classes` must be an integer >= 1, got 2.5"
    ),
    Case("zrf-log-base-string", lambda: ZRFScore(log_base="2"), r"ValueError: `log_base` must be a finite number > 0"),
    # weights= files
    Case(
        "weights-not-a-path",
        lambda: FineTune(tiny_net(), weights=torch.zeros(2)),
        r"ValueError: `weights` must be None or a file path",
    ),
    Case(
        "weights-missing-file",
        lambda: FineTune(tiny_net(), weights="missing.ckpt"),
        r"FileNotFoundError: weights='missing.ckpt' does not exist: train the original model first",
    ),
    Case(
        "weights-other-architecture",
        weights_other_architecture,
        r"ValueError: weights='.*w.pt' do not fit Sequential: '0.weight' has shape \(8, 6\) in the file but \(16, 6\)",
    ),
    Case("weights-valid-file", weights_valid_file_leaves_user_model, r"loaded into the copy only; the user's model is untouched"),
    Case(
        "weights-file-holds-tensor",
        lambda tmp: (torch.save(torch.zeros(3), tmp / "t.pt"), FineTune(tiny_net(), weights=str(tmp / "t.pt"))),
        r"ValueError: weights='.*t.pt' holds a Tensor, not a state_dict",
    ),
    Case(
        "weights-file-holds-list",
        lambda tmp: (torch.save([1, 2], tmp / "l.pt"), FineTune(tiny_net(), weights=str(tmp / "l.pt"))),
        r"ValueError: weights='.*l.pt' holds a list, not a state_dict",
    ),
    Case(
        "weights-corrupt-file",
        lambda tmp: ((tmp / "c.pt").write_bytes(b"\x80\x02garbage" * 10), FineTune(tiny_net(), weights=str(tmp / "c.pt"))),
        r"ValueError: weights='.*c.pt' cannot be read as weights: torch.load\(weights_only=True\) refused it",
    ),
    Case(
        "weights-malicious-pickle",
        weights_malicious,
        r"ValueError: weights='.*evil.pt' cannot be read as weights: .*never unpickles arbitrary objects",
    ),
    # the fit
    Case("network-returns-nan", nan_logits, r"ValueError: `model` returns non-finite logits \(NaN or inf\)"),
    Case(
        "wrong-logits-inplace-pruning",
        wrong_shape_inplace_pruning,
        r"ValueError: `model` returns 2 logits but the data has 4 classes",
    ),
    Case(
        "forget-method-plain-loader",
        forget_method_plain_loader,
        r"ValueError: GradientAscent \(it trains on forget data\) needs the forget/retain split",
    ),
    Case("diverging-learning-rate", diverging_lr, r"status diverged: non-finite loss at step \d+"),
    Case("exception-mid-fit", exception_mid_fit, r"status interrupted: RuntimeError: boom"),
    # the evaluation and the report
    Case(
        "report-path-int",
        lambda: UnlearningEvaluation(report_path=123),
        r"ValueError: `report_path` must be None or a file path, got 123",
    ),
    Case("report-path-under-a-file", report_path_under_file, r"ValueError: `report_path`=.* lies under .*file', which is a file"),
    Case(
        "report-path-is-a-folder",
        lambda tmp: fit(FineTune(tiny_net()), tiny_data(), [UnlearningEvaluation(report_path=str(tmp))]),
        r"ValueError: `report_path`=.* is a folder: pass a file path inside it",
    ),
    Case(
        "reference-report-invalid-json",
        lambda tmp: (
            (tmp / "ref.json").write_text("{oops"),
            fit(FineTune(tiny_net()), tiny_data(), [UnlearningEvaluation(reference_report=str(tmp / "ref.json"))]),
        ),
        r"ValueError: `reference_report`=.*ref.json' is not valid JSON \(Expecting property name",
    ),
    Case(
        "reference-report-missing",
        lambda tmp: fit(FineTune(tiny_net()), tiny_data(), [UnlearningEvaluation(reference_report=str(tmp / "none.json"))]),
        r"ValueError: `reference_report`=.*none.json' does not exist",
    ),
    Case(
        "reference-report-diverged",
        reference_report_diverged,
        r"ValueError: `reference_report`=.* is the report of a run that diverged",
    ),
    Case("reference-other-classes", reference_other_classes, r"ValueError: `reference` returns 5 logits but the model returns 4"),
    Case(
        "reference-and-report",
        lambda: UnlearningEvaluation(reference=tiny_net(), reference_report="r.json"),
        r"ValueError: Give either `reference` \(a model\) or `reference_report`",
    ),
    Case(
        "mia-backend-unknown",
        lambda: UnlearningEvaluation(mia_backend="gpu"),
        r"ValueError: `mia_backend` must be one of \('torch', 'sklearn'\)",
    ),
    Case(
        "every-n-epochs-zero",
        lambda: UnlearningEvaluation(every_n_epochs=0),
        r"ValueError: `every_n_epochs` must be an integer >= 1",
    ),
    Case("write-fault", write_fault, r"earlier report intact, no temporary file left"),
    Case("compare-output-folder", compare_output_folder, r"--output`=.* is a folder: pass a file path inside it"),
    # verification
    Case("verify-tampered-report", verify_tampered, r"FAIL arithmetic: metrics.after.unlearning_accuracy != 1 - forget_acc"),
    Case("verify-original-checkpoint", verify_original_checkpoint, r"FAIL weights: .* holds the ORIGINAL weights"),
    Case("verify-other-forget-set", verify_other_indices, r"FAIL fingerprint: the \d+ indices .* the report names \d+ indices"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_catalogue(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    params = case.run.__code__.co_varnames[: case.run.__code__.co_argcount]
    available = {"tmp": tmp_path, "monkeypatch": monkeypatch, "capsys": capsys}
    try:
        outcome = case.run(**{name: available[name] for name in params})
    except Exception as err:  # the refusal: its type and message
        outcome = f"{type(err).__name__}: {err}"
    assert re.search(case.error, str(outcome), flags=re.DOTALL), f"{case.id}: {outcome}"
    assert "weights_only=False" not in str(outcome)


def test_readme_catalogue_is_this_list() -> None:
    readme = (ROOT / "README.md").read_text()
    table = readme.split("<!-- catalogue:start -->")[1].split("<!-- catalogue:end -->")[0]
    ids = re.findall(r"^\| `([a-z0-9-]+)` \|", table, flags=re.MULTILINE)
    assert ids == [case.id for case in CASES], "README's bad-input catalogue and tests/test_guarantees.py differ"
    assert len(ids) >= 40
