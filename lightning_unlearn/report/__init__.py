"""The unlearning report: one machine-readable JSON file per run, never any raw data.

* :mod:`~lightning_unlearn.report.core`: the schema, :func:`build_report`, atomic
  :func:`write_report`/:func:`write_json`, :func:`read_report`;
* :mod:`~lightning_unlearn.report.recipe`: the ``recipe`` (what was run), read back from a trainer;
* :mod:`~lightning_unlearn.report.verify`: :func:`verify_report` (``lightning-unlearn verify-report``);
* :mod:`~lightning_unlearn.report.chain`: hash-linked reports of sequential requests;
* :mod:`~lightning_unlearn.report.audit`: the ``audit`` section's summary and verdicts;
  :mod:`~lightning_unlearn.report.figures`: its pictures (matplotlib, imported when drawing).
"""

from lightning_unlearn.report.chain import chain_report, report_sha256, verify_report_chain
from lightning_unlearn.report.core import (
    LEGACY_KEYS,
    METRIC_BLOCKS,
    OPTIONAL_KEYS,
    REPORT_KEYS,
    SCHEMA_VERSION,
    STATUSES,
    build_report,
    json_safe,
    read_report,
    versions,
    write_json,
    write_report,
)
from lightning_unlearn.report.verify import Check, verify_report

__all__ = [
    "LEGACY_KEYS",
    "METRIC_BLOCKS",
    "OPTIONAL_KEYS",
    "REPORT_KEYS",
    "SCHEMA_VERSION",
    "STATUSES",
    "Check",
    "build_report",
    "chain_report",
    "json_safe",
    "read_report",
    "report_sha256",
    "verify_report",
    "verify_report_chain",
    "versions",
    "write_json",
    "write_report",
]
