"""Packaged presets: the configs ship inside the wheel, and a wheel installed outside the repo runs
the README's first command by preset name."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lightning_unlearn.benchmark import PRESETS, presets, resolve_config_args, resolve_preset

ROOT = Path(__file__).resolve().parents[1]


def test_presets_resolve_by_name_and_by_the_readme_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert "quickstart" in presets() and "digits/random_label" in presets()
    monkeypatch.chdir(tmp_path)  # outside the repo: no configs/ folder here
    for name in ("quickstart", "quickstart.yaml", "configs/quickstart.yaml"):
        assert resolve_preset(name) == str(PRESETS / "quickstart.yaml")
    assert resolve_preset("digits/random_label") == str(PRESETS / "digits" / "random_label.yaml")
    assert resolve_preset("no_such_preset") == "no_such_preset"
    (tmp_path / "quickstart").write_text("seed: 1\n")  # an existing file wins over a preset
    assert resolve_preset("quickstart") == "quickstart"
    assert resolve_config_args(["fit", "-c", "digits/retrain", "--config=configs/quickstart.yaml"]) == [
        "fit",
        "-c",
        str(PRESETS / "digits" / "retrain.yaml"),
        f"--config={PRESETS / 'quickstart.yaml'}",
    ]


def test_fit_and_compare_accept_preset_names(capsys: pytest.CaptureFixture) -> None:
    from lightning_unlearn.cli import cli_main

    with pytest.raises(SystemExit):
        cli_main(["fit", "--config", "digits/random_label", "--print_config"])
    assert "lightning_unlearn.methods.RandomLabel" in capsys.readouterr().out
    from lightning_unlearn.benchmark import load_config

    cfg, specs, _ = load_config("quickstart")
    assert "retrain" in specs and cfg.seed == 0


def test_wheel_installed_outside_the_repo_runs_the_quickstart_preset(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "lightning_unlearn", source / "lightning_unlearn", ignore=shutil.ignore_patterns("__pycache__"))
    wheels, site, work = tmp_path / "wheels", tmp_path / "site", tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "WANDB_SERVICE")}
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    if built.returncode != 0:
        pytest.skip(f"cannot build a wheel offline here: {built.stderr[-500:]}")
    wheel = next(wheels.glob("lightning_unlearn-*.whl"))
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
        env=env,
    )
    assert (site / "lightning_unlearn" / "configs" / "quickstart.yaml").is_file()
    assert (site / "lightning_unlearn" / "configs" / "digits" / "random_label.yaml").is_file()
    env = {**env, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1"}
    where = subprocess.run(
        [sys.executable, "-c", "import lightning_unlearn; print(lightning_unlearn.__file__)"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert where.stdout.strip().startswith(str(site)), where.stdout + where.stderr
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "lightning_unlearn.cli",
            "compare",
            "--config",
            "configs/quickstart.yaml",
            "--original.max_epochs=1",
            "--accelerator=cpu",
            "--output=results.json",
            "--methods={retrain: {method: retrain, max_epochs: 1}, finetune: {method: finetune, max_epochs: 1}}",
        ],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| retrain |" in proc.stdout and "| finetune |" in proc.stdout and (work / "results.json").is_file()
