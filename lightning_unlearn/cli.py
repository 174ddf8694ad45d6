"""The ``lightning-unlearn`` command: LightningCLI for single runs, plus ``compare``.

``lightning-unlearn fit|validate|test|predict --config configs/<dataset>/<method>.yaml`` is a
:class:`~lightning.pytorch.cli.LightningCLI` in subclass mode: ``model`` is any LightningModule
(an unlearning method, ``ImageClassifier`` for the original, or a user's own), ``data`` any
LightningDataModule, configs may interpolate (``${...}``, omegaconf parser mode) and the trainer's
logger is chosen by class name (``--trainer.logger=WandbLogger``).

``lightning-unlearn compare --config configs/quickstart.yaml --output results.json`` trains the
original, unlearns it with several methods, retrains, and prints the comparison table (see
:mod:`lightning_unlearn.benchmark.compare`).

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

    return LightningCLI(
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


def main(args: Optional[Sequence[str]] = None) -> None:
    """Entry point of the ``lightning-unlearn`` console script.

    ``compare`` goes to :func:`lightning_unlearn.benchmark.compare.main`, ``tune`` to
    :func:`lightning_unlearn.benchmark.tuning.main`; every other subcommand
    (``fit``, ``validate``, ``test``, ``predict``) to :func:`cli_main`.

    Args:
        args: the command line without the program name (default: ``sys.argv[1:]``).

    Returns ``None`` (the console script's exit status 0); use :func:`cli_main` for the
    LightningCLI object and :func:`lightning_unlearn.benchmark.run_compare` for the results.
    """
    argv = list(sys.argv[1:] if args is None else args)
    if argv and argv[0] == "compare":
        from lightning_unlearn.benchmark.compare import main as compare_main

        compare_main(argv[1:])
        return
    if argv and argv[0] == "tune":
        from lightning_unlearn.benchmark.tuning import main as tune_main

        tune_main(argv[1:])
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
