"""Compare, tune and quality benchmarks share one pipeline: a checked config
(:mod:`~lightning_unlearn.benchmark.config`), one row at a time (:func:`run_row`, in
:mod:`~lightning_unlearn.benchmark.runner`) and the table (:mod:`~lightning_unlearn.benchmark.table`).

:func:`run_compare` is ``lightning-unlearn compare`` as a function: the original, Retrain first,
then every row, and the results as a dict; :func:`format_table` prints them.

Example::

    from lightning_unlearn.benchmark import format_table, run_compare

    print(format_table(run_compare("configs/quickstart.yaml")))

Importing this package needs torch and lightning alone (jsonargparse and omegaconf are imported
when a config is parsed).
"""

from lightning_unlearn.benchmark.compare import run_compare
from lightning_unlearn.benchmark.config import (
    PRESETS, REFERENCE, MethodSpec, OriginalSpec, build_parser, check_methods, load_config, parse_config, presets,
    resolve_config_args, resolve_preset,
)
from lightning_unlearn.benchmark.runner import (
    RowRun, build_callbacks, build_method, quiet_fit_warnings, row_trainer, run_row, train_original, trainer_options,
)
from lightning_unlearn.benchmark.table import format_table, gaps, percent, print_table, table_row

__all__ = [
    "PRESETS",
    "REFERENCE",
    "MethodSpec",
    "OriginalSpec",
    "RowRun",
    "build_callbacks",
    "build_method",
    "build_parser",
    "check_methods",
    "format_table",
    "gaps",
    "load_config",
    "parse_config",
    "percent",
    "presets",
    "print_table",
    "quiet_fit_warnings",
    "resolve_config_args",
    "resolve_preset",
    "row_trainer",
    "run_compare",
    "run_row",
    "table_row",
    "train_original",
    "trainer_options",
]
