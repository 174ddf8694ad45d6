"""Golden regression test: ``lightning-unlearn compare`` on ``configs/quickstart.yaml`` reproduces,
to the last bit, every metric recorded in ``tests/golden/`` (in one thread, on the CPU).

The files were recorded before the benchmark package was split out of ``compare.py``; a refactor
must not move a single number. Run times, the total time and versions are not compared. When a
change is *meant* to move the numbers, record the files again (and say why in the commit)::

    OMP_NUM_THREADS=1 lightning-unlearn compare --config configs/quickstart.yaml --accelerator cpu \
        --output /tmp/q.json > /tmp/q.txt

then strip ``runtime_s``, ``total_time_s`` and ``versions`` from the JSON into
``tests/golden/quickstart.json`` and copy the printed table into ``tests/golden/quickstart.md``.

The same run is this suite's end-to-end test of the command (one run of ~12 s for both).
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from lightning_unlearn.metrics.keys import GAP_METRICS

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "lightning_unlearn" / "configs" / "quickstart.yaml"
GOLDEN = Path(__file__).resolve().parent / "golden"
METHODS = ["retrain", "finetune", "gradient_ascent", "neggrad_plus", "random_label"]
COMPARED = ("forget", "original", "rows")  # the config block is the run's input, versions and times vary
EXCLUDED = ("runtime_s",)


def metric_differences(golden: Any, result: Any, path: str = "") -> list[str]:
    """Every place where ``result`` differs from ``golden`` (exact equality, types included),
    ignoring ``runtime_s``; ``path`` names the place, e.g. ``rows[2].gap.test_acc``."""
    if type(golden) is not type(result):
        return [f"{path}: {golden!r} ({type(golden).__name__}) != {result!r} ({type(result).__name__})"]
    if isinstance(golden, dict):
        keys = [k for k in dict.fromkeys([*golden, *result]) if k not in EXCLUDED]
        if [k for k in golden if k in keys] != [k for k in result if k in keys]:
            return [f"{path}: keys {list(golden)} != {list(result)}"]
        return [d for k in keys for d in metric_differences(golden[k], result[k], f"{path}.{k}" if path else k)]
    if isinstance(golden, list):
        if len(golden) != len(result):
            return [f"{path}: {len(golden)} items != {len(result)}"]
        return [d for i, (g, r) in enumerate(zip(golden, result)) for d in metric_differences(g, r, f"{path}[{i}]")]
    return [] if golden == result else [f"{path}: {golden!r} != {result!r}"]


def golden_differences(golden: dict, result: dict) -> list[str]:
    """:func:`metric_differences` over the forget block, the original and every row."""
    return [d for key in COMPARED for d in metric_differences(golden[key], result[key], key)]


def mask_runtimes(table: str) -> str:
    """The table with its run-time column (RTE, the last cell of each row) masked."""
    return re.sub(r"\| [0-9]+\.[0-9]+ \|$", "| * |", table, flags=re.MULTILINE)


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:
    """One run of the console script on the quickstart, one thread, CPU: ``(results, table)``."""
    workdir = tmp_path_factory.mktemp("quickstart")
    output = workdir / "out" / "results.json"
    script = Path(sys.executable).parent / "lightning-unlearn"
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "lightning_unlearn.cli"]
    proc = subprocess.run(
        [*command, "compare", "--config", str(QUICKSTART), "--accelerator", "cpu", "--output", str(output)],
        cwd=workdir,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = proc.stdout[proc.stdout.index("Forget ") :].split("\n\nWrote ")[0]
    return json.loads(output.read_text()), table


def test_quickstart_end_to_end(quickstart: tuple[dict, str]) -> None:
    result, table = quickstart
    rows = {row["name"]: row for row in result["rows"]}
    assert list(rows) == METHODS  # Retrain first, then config order
    for row in rows.values():
        for column in [*GAP_METRICS, "avg_gap", "runtime_s"]:
            assert isinstance(row[column], (int, float)), (row["name"], column)
        for column in GAP_METRICS:
            assert 0.0 <= row[column] <= 100.0  # percent
        assert list(row["gap"]) == list(GAP_METRICS)
        expected = sum(abs(row[c] - rows["retrain"][c]) for c in GAP_METRICS) / 4
        assert row["avg_gap"] == pytest.approx(expected, abs=0.02)
    assert rows["retrain"]["avg_gap"] == 0.0
    assert set(rows["retrain"]["gap"].values()) == {0.0}
    assert rows["retrain"]["max_epochs"] == result["config"]["original"]["max_epochs"]  # ${original.max_epochs}
    assert result["forget"]["count"] == 144 and len(result["forget"]["fingerprint"]) == 64
    assert result["original"]["retain_acc"] > 90.0
    for name in METHODS:
        assert f"| {name} |" in table
    assert "| Method | UA | RA | TA | MIA-Efficacy | Avg. Gap | MIA AUC (best) | RTE (s) |" in table


def test_quickstart_metrics_match_golden(quickstart: tuple[dict, str]) -> None:
    result, _ = quickstart
    golden = json.loads((GOLDEN / "quickstart.json").read_text())
    differences = golden_differences(golden, result)
    assert not differences, "compare's numbers moved:\n" + "\n".join(differences)


def test_quickstart_table_matches_golden(quickstart: tuple[dict, str]) -> None:
    _, table = quickstart
    golden = (GOLDEN / "quickstart.md").read_text().rstrip("\n")
    assert mask_runtimes(table) == mask_runtimes(golden)


def test_golden_comparison_detects_a_moved_metric() -> None:
    """The comparison is exact: one ulp on one metric, a changed gap, a lost or extra key, a
    reordered row or a new row is reported; run times are not."""
    golden = json.loads((GOLDEN / "quickstart.json").read_text())
    assert golden_differences(golden, copy.deepcopy(golden)) == []

    def moved(edit) -> list[str]:
        result = copy.deepcopy(golden)
        edit(result)
        return golden_differences(golden, result)

    one_ulp = moved(lambda r: r["rows"][2].update(test_acc=math.nextafter(r["rows"][2]["test_acc"], math.inf)))
    assert one_ulp and one_ulp[0].startswith("rows[2].test_acc:")
    assert moved(lambda r: r["rows"][4]["gap"].update(mia_efficacy=36.13))[0].startswith("rows[4].gap.mia_efficacy:")
    assert moved(lambda r: r["original"].update(forget_acc=99.99))[0].startswith("original.forget_acc:")
    assert moved(lambda r: r["forget"].update(fingerprint="0" * 64))[0].startswith("forget.fingerprint:")
    assert moved(lambda r: r["rows"][1].pop("avg_gap"))
    assert moved(lambda r: r["rows"][1].update(extra=1.0))
    assert moved(lambda r: r["rows"].reverse())
    assert moved(lambda r: r["rows"].append(copy.deepcopy(r["rows"][0])))
    assert moved(lambda r: r["rows"][0].update(avg_gap=0))  # 0 (int) is not 0.0
    assert moved(lambda r: [row.update(runtime_s=1e9) for row in r["rows"]]) == []
    assert mask_runtimes("| a | 1.00 (0.00) | 2.16 |") == mask_runtimes("| a | 1.00 (0.00) | 0.08 |")
    assert mask_runtimes("| a | 1.00 (0.00) | 2.16 |") != mask_runtimes("| a | 1.01 (0.00) | 2.16 |")
