"""The ``lightning-unlearn`` command: LightningCLI for single runs, plus ``compare``.

``lightning-unlearn fit|validate|test|predict --config configs/<dataset>/<method>.yaml`` is a
:class:`~lightning.pytorch.cli.LightningCLI` in subclass mode: ``model`` is any LightningModule
(an unlearning method, ``ImageClassifier`` for the original, or a user's own), ``data`` any
LightningDataModule, configs may interpolate (``${...}``, omegaconf parser mode) and the trainer's
logger is chosen by class name (``--trainer.logger=WandbLogger``).

``lightning-unlearn compare --config configs/quickstart.yaml --output results.json`` trains the
original, unlearns it with several methods, retrains, and prints the comparison table (see
:mod:`lightning_unlearn.benchmark.compare`).

``lightning-unlearn verify-report REPORT [--forget-indices FILE] [--checkpoint CKPT]`` checks a
report (schema, arithmetic, status, the forget set's fingerprint, the weights' SHA-256) and
exits 0 when every check passes, 1 otherwise (see :func:`lightning_unlearn.report.verify_report`).

A ``fit`` embeds the resolved configuration (``--print_config``'s content) in the report of every
:class:`~lightning_unlearn.callbacks.UnlearningEvaluation` on the trainer (``recipe.config``).

jsonargparse, omegaconf and wandb are imported only when the command runs, so importing the
package needs torch, lightning and torchmetrics alone.
"""

from __future__ import annotations

import sys
from typing import Any, Optional, Sequence

DESCRIPTION = """Machine unlearning for PyTorch Lightning.

Single runs (LightningCLI):
  lightning-unlearn fit --config configs/digits/original.yaml       # train the original
  lightning-unlearn fit --config configs/digits/random_label.yaml   # unlearn it, write the report
  lightning-unlearn fit --config configs/digits/random_label.yaml --trainer.logger=WandbLogger

The whole story (original, every method, retrain, table):
  lightning-unlearn compare --config configs/quickstart.yaml --output results.json
  lightning-unlearn compare --help

Check a report (schema, arithmetic, status, forget-set fingerprint, weights hash; exit 0/1):
  lightning-unlearn verify-report artifacts/digits/random_label_report.json \
      --forget-indices forget.json --checkpoint artifacts/digits/random_label.ckpt

Sequential deletion requests (a chain; relapse on earlier forget sets; chained reports):
  lightning-unlearn sequential --config configs/sequential_digits.yaml --output results_sequential.json

Hyper-parameters on your model and request, without a retrained model:
  lightning-unlearn tune --config configs/quickstart.yaml --rows random_label --budget 0.5 --output tune.json
"""


def cli_main(args: Optional[Sequence[str]] = None, run: bool = True) -> Any:
    """Runs LightningCLI with the project's defaults.

    Args:
        args: the command line without the program name (default: ``sys.argv[1:]``).
        run: run the subcommand (``False``: only parse and instantiate, for tests and notebooks;
            then ``args`` holds no subcommand).

    Returns:
        The :class:`~lightning.pytorch.cli.LightningCLI` object.
    """
    _require_cli_dependencies()
    from argparse import RawDescriptionHelpFormatter

    from jsonargparse import DefaultHelpFormatter
    from lightning.pytorch.cli import LightningCLI

    class HelpFormatter(RawDescriptionHelpFormatter, DefaultHelpFormatter):
        """Keeps the line breaks of the top-level description (its command examples)."""

    class UnlearnCLI(LightningCLI):
        """LightningCLI that hands the resolved configuration to the reports of the fit."""

        def before_fit(self) -> None:
            attach_config(self.trainer, self.parser, self.config, self.subcommand)

    return UnlearnCLI(
        model_class=None,
        datamodule_class=None,
        subclass_mode_model=True,
        subclass_mode_data=True,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={
            "parser_mode": "omegaconf", "prog": "lightning-unlearn", "description": DESCRIPTION,
            "formatter_class": HelpFormatter,
        },
        args=list(args) if args is not None else None,
        run=run,
    )


def attach_config(trainer: Any, parser: Any, config: Any, subcommand: Optional[str]) -> Optional[dict]:
    """Gives every :class:`~lightning_unlearn.callbacks.UnlearningEvaluation` on ``trainer`` the
    resolved configuration of the run (what ``--print_config`` shows), for its report's
    ``recipe.config``. Returns that configuration."""
    import yaml

    from lightning_unlearn.callbacks import UnlearningEvaluation

    resolved = yaml.safe_load(parser.dump(config, skip_none=False, skip_link_targets=False, format="yaml"))
    if subcommand is not None and isinstance(resolved, dict) and isinstance(resolved.get(subcommand), dict):
        resolved = resolved[subcommand]
    for callback in trainer.callbacks:
        if isinstance(callback, UnlearningEvaluation):
            callback.run_config = resolved
    return resolved


def verify_main(args: Sequence[str]) -> int:
    """``lightning-unlearn verify-report``: prints one verdict per check and returns the exit
    status (0: every check passed; 1: at least one failed)."""
    import argparse

    from lightning_unlearn.report import verify_report

    parser = argparse.ArgumentParser(
        prog="lightning-unlearn verify-report",
        description="Verify an unlearning report: its schema and arithmetic, that the run completed, and optionally"
        " that FILE's forget indices hash to its fingerprint and CKPT holds the weights it describes.",
    )
    parser.add_argument("report", metavar="REPORT", help="the JSON report written by UnlearningEvaluation")
    parser.add_argument("--forget-indices", metavar="FILE", default=None,
                        help="the forget-set positions (JSON list, .npy, .pt or whitespace/comma-separated text)")
    parser.add_argument("--checkpoint", metavar="CKPT", default=None,
                        help="the unlearned model (Lightning checkpoint or state_dict), read with weights_only=True")
    options = parser.parse_args(list(args))
    checks = verify_report(options.report, options.forget_indices, options.checkpoint)
    for check in checks:
        print(check.line(), flush=True)
    failed = sum(not check.ok for check in checks)
    print(f"{'NOT VERIFIED' if failed else 'VERIFIED'}: {len(checks) - failed} of {len(checks)} checks passed", flush=True)
    return 1 if failed else 0


#: Subcommands served by the benchmark layer: name -> module with a ``main(argv)``.
BENCHMARK_COMMANDS = {
    "compare": "lightning_unlearn.benchmark.compare",
    "sequential": "lightning_unlearn.benchmark.sequential",
    "tune": "lightning_unlearn.benchmark.tuning",
}


def main(args: Optional[Sequence[str]] = None) -> None:
    """Entry point of the ``lightning-unlearn`` console script.

    ``compare`` goes to :func:`lightning_unlearn.benchmark.compare.main`, ``tune`` to
    :func:`lightning_unlearn.benchmark.tuning.main`, ``sequential`` to
    :func:`lightning_unlearn.benchmark.sequential.main`, ``verify-report`` to :func:`verify_main`
    (a failed verification exits with status 1); every other subcommand
    (``fit``, ``validate``, ``test``, ``predict``) to :func:`cli_main`.

    Args:
        args: the command line without the program name (default: ``sys.argv[1:]``).

    Returns ``None`` (the console script's exit status 0); use :func:`cli_main` for the
    LightningCLI object and :func:`lightning_unlearn.benchmark.run_compare` for the results.
    """
    argv = list(sys.argv[1:] if args is None else args)
    if argv and argv[0] in BENCHMARK_COMMANDS:
        import importlib

        importlib.import_module(BENCHMARK_COMMANDS[argv[0]]).main(argv[1:])
        return
    if argv and argv[0] == "verify-report":
        status = verify_main(argv[1:])
        if status:
            raise SystemExit(status)
        return
    # LightningCLI reads sys.argv itself when args is None (and warns when given both).
    cli_main(None if args is None else argv)


def _require_cli_dependencies() -> None:
    missing = []
    for name in ("jsonargparse", "omegaconf"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ImportError(
            f"The lightning-unlearn command needs {', '.join(missing)}: run `pip install \"jsonargparse[signatures]\" omegaconf`."
        )


if __name__ == "__main__":  # python -m lightning_unlearn.cli
    main()
