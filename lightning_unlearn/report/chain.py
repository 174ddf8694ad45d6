"""Chains of reports for sequential deletion requests: each report carries the SHA-256 of the
previous one, so altering or reordering any earlier report breaks every later link."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, Optional

from lightning_unlearn.report.core import json_safe

__all__ = ["chain_report", "report_sha256", "verify_report_chain"]


def report_sha256(report: Mapping[str, Any]) -> str:
    """SHA-256 of a report's canonical JSON (sorted keys, no whitespace): the hash the next report
    of a chain of sequential requests carries as ``chain.previous_sha256``."""
    canonical = json.dumps(json_safe(dict(report)), sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def chain_report(
    report: Mapping[str, Any], previous: Optional[Mapping[str, Any]], chain: Optional[Mapping[str, Any]] = None
) -> dict[str, Any]:
    """``report`` with a ``chain`` block: ``previous_sha256`` (the :func:`report_sha256` of the
    previous step's report, ``None`` at the first step) plus ``chain`` (e.g.
    :meth:`UnlearningDataModule.chain_summary`: step, steps, fingerprints, deleted count).

    Each report's hash covers its own ``chain`` block, so changing any earlier report breaks every
    later link (:func:`verify_report_chain`)."""
    out = dict(report)
    out["chain"] = {**json_safe(dict(chain or {})), "previous_sha256": None if previous is None else report_sha256(previous)}
    return out


def verify_report_chain(reports: list[Mapping[str, Any]]) -> list[str]:
    """Checks that every report of a chain carries its predecessor's hash (the first carries
    ``None``) and that steps count up from 0; returns the reports' hashes.

    Raises:
        ValueError: a report without a ``chain`` block, a broken link or steps out of order (the
            message names the first bad step).
    """
    hashes, previous = [], None
    for i, report in enumerate(reports):
        chain = report.get("chain")
        if not isinstance(chain, Mapping):
            raise ValueError(f"report {i} has no `chain` block: it was not written as part of a chain (chain_report).")
        expected: Optional[str] = None if previous is None else report_sha256(previous)
        if chain.get("previous_sha256") != expected:
            raise ValueError(
                f"report {i} (step {chain.get('step')}) carries previous_sha256 {chain.get('previous_sha256')!r}, but the"
                f" previous report hashes to {expected!r}: the chain was altered or reordered."
            )
        if "step" in chain and chain["step"] != i:
            raise ValueError(f"report {i} says step {chain['step']}: steps must count 0, 1, 2, ... in order.")
        hashes.append(report_sha256(report))
        previous = report
    return hashes
