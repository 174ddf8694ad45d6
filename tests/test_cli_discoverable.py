"""The CLI a Lightning user discovers: short names, help, --version, a user's own datamodule, one
optimiser option, and ``export`` (with ``method.export``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from lightning_unlearn.cli import cli_main, main, wrap_user_datamodule
from lightning_unlearn.models import read_state_dict, weights_sha256

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lightning_unlearn.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={
            **os.environ,
            "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        },
    )


def test_top_level_help_lists_commands_methods_callbacks_and_version(tmp_path: Path) -> None:
    proc = run("--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for name in (
        "compare",
        "verify-report",
        "export",
        "--version",
        "SCRUB",
        "RandomLabel",
        "SaliencyMask",
        "UnPruning",
        "--data=my_pkg.MyDataModule",
        "--optimizer=Adam",
    ):
        assert name in proc.stdout, name
    version = run("--version", cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.strip().startswith("lightning-unlearn 0.")
    assert "not recommended" not in version.stderr


def test_short_names_work_without_a_config(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    proc = run("fit", "--model.help", "RandomLabel", cwd=tmp_path)  # a fresh process: nothing imported before
    assert proc.returncode == 0 and "--model.alpha" in proc.stdout, proc.stderr
    with pytest.raises(SystemExit) as exc:
        cli_main(
            [
                "fit",
                "--model=SCRUB",
                "--model.model=SmallCNN",
                "--data=DigitsDataModule",
                "--data.forget.classes=[3]",
                "--trainer.callbacks+=SaliencyMask",
                "--print_config",
            ]
        )
    assert exc.value.code in (0, None)
    printed = capsys.readouterr().out
    assert "lightning_unlearn.methods.SCRUB" in printed and "lightning_unlearn.callbacks.SaliencyMask" in printed


def test_one_optimiser_option(capsys: pytest.CaptureFixture) -> None:
    base = ["fit", "--config", str(ROOT / "lightning_unlearn" / "configs" / "digits" / "gradient_ascent.yaml")]
    with pytest.raises(SystemExit) as exc:
        cli_main([*base, "--model.optimizer=Adam"])
    assert exc.value.code == 2
    assert "--model.optimizer is not a command-line option: use LightningCLI's --optimizer" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli_main([*base, "--optimizer=Adam", "--optimizer.lr=0.001", "--print_config"])
    assert exc.value.code in (0, None) and "torch.optim.Adam" in capsys.readouterr().out


USER_PACKAGE = """
import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset


def collate(items):
    return {"x": torch.stack([x for x, _ in items]), "y": torch.stack([y for _, y in items])}


class MyDataModule(L.LightningDataModule):
    def __init__(self, size: int = 64, batch_size: int = 8):
        super().__init__()
        self.size, self.batch_size = size, batch_size

    def setup(self, stage):
        g = torch.Generator().manual_seed(0)
        y = torch.arange(self.size) % 4
        self.data = TensorDataset(torch.randn(self.size, 6, generator=g) + torch.nn.functional.one_hot(y, 6) * 3, y)

    def train_dataloader(self):
        return DataLoader(self.data, batch_size=self.batch_size, shuffle=True, collate_fn=collate)

    def test_dataloader(self):
        return DataLoader(self.data, batch_size=16, collate_fn=collate)
"""


def test_users_datamodule_from_the_command_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my_pkg.py").write_text(textwrap.dedent(USER_PACKAGE))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert wrap_user_datamodule(["fit", "--data=my_pkg.MyDataModule", "--data.forget.classes=[3]", "--data.size=48"]) == [
        "fit",
        "--data=lightning_unlearn.data.WrappedDataModule",
        "--data.datamodule=my_pkg.MyDataModule",
        "--data.forget.classes=[3]",
        "--data.datamodule.size=48",
    ]
    assert wrap_user_datamodule(["fit", "--data=DigitsDataModule", "--data.forget.classes=[3]"])[1] == "--data=DigitsDataModule"
    cli = cli_main(
        [
            "fit",
            "--model=FineTune",
            "--model.model=torch.nn.Linear",
            "--model.model.in_features=6",
            "--model.model.out_features=4",
            "--data=my_pkg.MyDataModule",
            "--data.forget.classes=[3]",
            "--data.size=48",
            "--trainer.max_epochs=1",
            "--trainer.logger=false",
            "--trainer.enable_checkpointing=false",
            "--trainer.enable_progress_bar=false",
            "--trainer.accelerator=cpu",
            "--trainer.callbacks+=UnlearningEvaluation",
            "--trainer.callbacks.report_path=report.json",
        ]
    )
    from lightning_unlearn.data import WrappedDataModule

    assert isinstance(cli.datamodule, WrappedDataModule) and len(cli.datamodule.train_set) == 48
    assert len(cli.datamodule.forget_indices) == 12 and cli.datamodule.batch_size == 8
    assert cli.trainer.state.finished and json.loads((tmp_path / "report.json").read_text())["status"] == "completed"
    # export: the method and the command write the same network, loadable into the user's class
    cli.model.export(str(tmp_path / "net.pt"))
    net = torch.nn.Linear(6, 4)
    net.load_state_dict(torch.load(tmp_path / "net.pt", weights_only=True))
    assert weights_sha256(net) == weights_sha256(cli.model.model)
    meta = json.loads((tmp_path / "net.pt.json").read_text())
    assert meta["weights_sha256"] == weights_sha256(net) and meta["report"] == "report.json" and meta["report_matches"]
    cli.trainer.save_checkpoint(tmp_path / "method.ckpt")
    assert any(k.startswith("model.") for k in torch.load(tmp_path / "method.ckpt", weights_only=True)["state_dict"])
    main(["export", str(tmp_path / "method.ckpt"), "--out", str(tmp_path / "out" / "exported.pt"), "--report", "report.json"])
    exported = torch.load(tmp_path / "out" / "exported.pt", weights_only=True)
    assert set(exported) == {"weight", "bias"} and weights_sha256(exported) == meta["weights_sha256"]
    assert json.loads((tmp_path / "out" / "exported.pt.json").read_text())["report_matches"]
    assert not list((tmp_path / "out").glob(".*tmp"))  # atomic: no temporary file left


def test_export_keeps_a_user_lightning_modules_keys(tmp_path: Path) -> None:
    from lightning_unlearn.methods import FineTune
    from tests.callbacks.user_module import UserModule

    method = FineTune(UserModule())
    path = method.export(str(tmp_path / "user.pt"))
    state = torch.load(path, weights_only=True)
    assert all(k.startswith("net.") for k in state)
    UserModule().load_state_dict(state)
    assert read_state_dict(path).keys() == state.keys()
    with pytest.raises(SystemExit):
        main(["export", str(tmp_path / "missing.ckpt"), "--out", str(tmp_path / "x.pt")])
