"""Compare as a user watches it: W&B offline and read back from the run directories (``compare
--logger wandb`` logs one run per row (group: the comparison, job_type: the row), each with the
metrics, the JSON report and the config as artifacts and the accuracy figure as an image; the
CLI's W&B project is not ``lightning_logs``; the rows' and evaluation's progress bars stay quiet off a
terminal; the table prints as markdown off a terminal and through rich on one."""

from __future__ import annotations

import io
import sys
import time
import types
from pathlib import Path

import pytest
import yaml

from lightning_unlearn.benchmark import PRESETS, print_table, run_compare
from tests.callbacks.test_evaluation import wandb_records


def tiny_compare() -> dict:
    config = yaml.safe_load((PRESETS / "quickstart.yaml").read_text())
    config["original"]["max_epochs"] = 1
    config["methods"] = {"retrain": {"method": "retrain", "max_epochs": 1}, "finetune": {"method": "finetune", "max_epochs": 1}}
    config["accelerator"] = "cpu"
    return config


def run_records(run_dir: Path, timeout: float = 60.0) -> list:
    """The records of an offline run, once W&B's service has flushed its artifacts and summary."""
    deadline = time.monotonic() + timeout
    while True:
        records = wandb_records(next(run_dir.glob("run-*.wandb")))
        kinds = [r.WhichOneof("record_type") for r in records]
        if kinds.count("artifact") >= 2 or time.monotonic() > deadline:
            return records
        time.sleep(0.5)


def test_compare_logs_one_wandb_run_per_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    pytest.importorskip("wandb")
    pytest.importorskip("matplotlib")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    result = run_compare(tiny_compare(), logger="wandb", group="cmp-1", progress=False)
    assert [row["name"] for row in result["rows"]] == ["retrain", "finetune"]
    assert capsys.readouterr().err.count("%|") == 0  # no progress bars off a terminal
    runs = sorted((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 2
    seen = {}
    for run_dir in runs:
        records = run_records(run_dir)
        run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
        artifacts = {r.artifact.type: r.artifact.name for r in records if r.WhichOneof("record_type") == "artifact"}
        assert run.run_group == "cmp-1" and run.project == "lightning-unlearn"
        assert set(artifacts) >= {"unlearning-report", "config"}, artifacts
        assert list(run_dir.glob("files/media/images/unlearn/figures/accuracy_*.png")), "the accuracy figure"
        history = {}
        for r in records:
            if r.WhichOneof("record_type") == "history":
                history.update({item.key or "/".join(item.nested_key): item.value_json for item in r.history.item})
        assert "unlearn/forget_acc" in history
        seen[run.job_type] = run.display_name
    assert seen == {"retrain": "cmp-1/retrain", "finetune": "cmp-1/finetune"}


def test_cli_wandb_logger_defaults_to_our_project(monkeypatch: pytest.MonkeyPatch) -> None:
    from jsonargparse import Namespace

    from lightning_unlearn.cli import default_wandb_project

    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    config = Namespace(
        trainer=Namespace(logger=Namespace(class_path="lightning.pytorch.loggers.WandbLogger", init_args=Namespace(project=None)))
    )
    default_wandb_project(config)
    assert config.trainer.logger.init_args.project == "lightning-unlearn"
    named = Namespace(
        trainer=Namespace(
            logger=[Namespace(class_path="lightning.pytorch.loggers.WandbLogger", init_args=Namespace(project="mine"))]
        )
    )
    default_wandb_project(named)
    assert named.trainer.logger[0].init_args.project == "mine"


RESULT = {
    "original": {"unlearning_accuracy": 1.0, "retain_acc": 99.0, "test_acc": 98.0, "mia_efficacy": 3.0, "runtime_s": 1.0},
    "rows": [
        {
            "name": "retrain",
            "unlearning_accuracy": 100.0,
            "retain_acc": 99.0,
            "test_acc": 97.0,
            "mia_efficacy": 100.0,
            "gap": {"unlearning_accuracy": 0.0, "retain_acc": 0.0, "test_acc": 0.0, "mia_efficacy": 0.0},
            "avg_gap": 0.0,
            "runtime_s": 2.0,
        }
    ],
    "forget": {"count": 10, "retain_count": 90, "fingerprint": "ab" * 32, "spec": {"classes": [3]}},
}


def test_table_is_markdown_off_a_terminal_and_rich_on_one(monkeypatch: pytest.MonkeyPatch) -> None:
    plain = io.StringIO()
    print_table(RESULT, file=plain)
    assert "| retrain | 100.00 (0.00)" in plain.getvalue()

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    printed = []

    class Table:
        def __init__(self, **kwargs):
            self.columns, self.rows = [], []

        def add_column(self, title, **kwargs):
            self.columns.append(title)

        def add_row(self, *cells):
            self.rows.append(cells)

    class Console:
        def __init__(self, file=None):
            pass

        def print(self, table):
            printed.append(table)

    fake = types.ModuleType("rich")
    monkeypatch.setitem(sys.modules, "rich", fake)
    monkeypatch.setitem(sys.modules, "rich.console", types.SimpleNamespace(Console=Console))
    monkeypatch.setitem(sys.modules, "rich.table", types.SimpleNamespace(Table=Table))
    print_table(RESULT, file=Terminal())
    table = printed[0]
    assert table.columns[0] == "Method" and [row[0] for row in table.rows] == ["original (before)", "retrain"]
    monkeypatch.setitem(sys.modules, "rich.console", None)  # rich missing: markdown on a terminal too
    terminal = Terminal()
    print_table(RESULT, file=terminal)
    assert "| Method |" in terminal.getvalue()


def test_evaluation_progress_bar_shows_on_a_terminal_only(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch
    from torch.utils.data import DataLoader

    from lightning_unlearn.metrics.evaluation import evaluate_loaders
    from tests.conftest import synthetic_dataset

    loaders = {
        split: DataLoader(synthetic_dataset(16, seed=i), batch_size=4) for i, split in enumerate(("forget", "retain", "test"))
    }
    net = torch.nn.Linear(6, 4)

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    for stream, shown in ((io.StringIO(), False), (Terminal(), True)):
        monkeypatch.setattr(sys, "stderr", stream)
        evaluate_loaders(net, loaders, progress="evaluating after unlearning")
        assert ("evaluating after unlearning" in stream.getvalue()) is shown
        assert ("/12 " in stream.getvalue()) is shown  # one bar over all 12 batches
