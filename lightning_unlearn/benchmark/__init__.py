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
    DENSE,
    PRESETS,
    REFERENCE,
    MethodSpec,
    OriginalSpec,
    PipelineSpec,
    build_parser,
    check_methods,
    check_originals,
    load_config,
    parse_config,
    presets,
    resolve_config_args,
    resolve_preset,
)
from lightning_unlearn.benchmark.runner import (
    EpochSnapshots,
    RowRun,
    build_callbacks,
    build_method,
    effective_spec,
    quiet_fit_warnings,
    reference_rows,
    row_topologies,
    row_trainer,
    run_row,
    topology_of,
    train_original,
    train_pipeline_original,
    trainer_options,
    with_shuffle_seed,
)
from lightning_unlearn.benchmark.table import format_table, gaps, percent, print_table, table_row, topology_table

__all__ = [
    "DENSE",
    "PRESETS",
    "REFERENCE",
    "EpochSnapshots",
    "MethodSpec",
    "OriginalSpec",
    "PipelineSpec",
    "RowRun",
    "build_callbacks",
    "build_method",
    "build_parser",
    "check_methods",
    "check_originals",
    "effective_spec",
    "format_table",
    "gaps",
    "load_config",
    "parse_config",
    "percent",
    "presets",
    "print_table",
    "quiet_fit_warnings",
    "reference_rows",
    "resolve_config_args",
    "resolve_preset",
    "row_topologies",
    "row_trainer",
    "run_compare",
    "run_row",
    "table_row",
    "topology_of",
    "topology_table",
    "train_original",
    "train_pipeline_original",
    "trainer_options",
    "with_shuffle_seed",
]
