"""Cost of ACU's exact removal per sample vs the feature dimension d (it should grow as d^2).

    python -m benchmarks.analytic_head --dims 64 128 256 512 1024 --remove 512 --out results/analytic_head.json

Synthetic float64 features (N = max(4 d, 2 x removed) examples, C = 10 classes); a memory ``R, Q`` is built once,
then ``--remove`` examples are removed with :func:`lightning_unlearn.functional.forget_rows`, one
row at a time (``chunk_size=1``: Sherman-Morrison, ``O(d^2)`` each) and in chunks of ``d + 1``
rows (Woodbury). Against it: refitting the head by least squares on what remains
(:func:`~lightning_unlearn.functional.least_squares_head`, ``O(N d^2 + d^3)``), and the largest
difference between the two heads. Median of ``--repeats`` runs; the fitted exponent of the
per-sample time against d is printed.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch

from benchmarks.common import emit
from lightning_unlearn.functional.analytic import analytic_memory, forget_rows, least_squares_head


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        fn()
        times.append(time.perf_counter() - tic)
    return statistics.median(times)


def run(dims: list[int], remove: int, repeats: int = 3, classes: int = 10) -> tuple[dict, str]:
    rows = []
    for d in dims:
        g = torch.Generator().manual_seed(d)
        n = max(4 * d, 2 * remove)
        x = torch.randn(n, d, generator=g, dtype=torch.float64)
        y = torch.randint(classes, (n,), generator=g)
        memory = analytic_memory(x, y, classes, gamma=1.0)
        k = min(remove, n // 2)
        single = _median_time(lambda memory=memory, x=x, y=y, k=k: forget_rows(memory, x[:k], y[:k], chunk_size=1), repeats)
        chunked = _median_time(lambda memory=memory, x=x, y=y, k=k: forget_rows(memory, x[:k], y[:k]), repeats)
        refit = _median_time(lambda x=x, y=y, k=k: least_squares_head(x[k:], y[k:], classes, gamma=1.0), repeats)
        error = float((forget_rows(memory, x[:k], y[:k]).weight - least_squares_head(x[k:], y[k:], classes)).abs().max())
        rows.append(
            {
                "d": d,
                "n": n,
                "removed": k,
                "per_sample_rank1_us": 1e6 * single / k,
                "per_sample_chunked_us": 1e6 * chunked / k,
                "refit_ms": 1e3 * refit,
                "max_abs_diff": error,
            }
        )
    slope = lambda key: _slope([r["d"] for r in rows], [r[key] for r in rows])  # noqa: E731
    result = {
        "rows": rows,
        "exponent_rank1": slope("per_sample_rank1_us"),
        "exponent_chunked": slope("per_sample_chunked_us"),
        "classes": classes,
        "threads": torch.get_num_threads(),
    }
    table = (
        "| d | memory N | removed | per sample, one row at a time (us) | per sample, chunks of d+1 (us) |"
        " least-squares refit on the rest (ms) | max abs diff vs refit |\n|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    for r in rows:
        table += (
            f"| {r['d']} | {r['n']} | {r['removed']} | {r['per_sample_rank1_us']:.1f} | {r['per_sample_chunked_us']:.1f} |"
            f" {r['refit_ms']:.1f} | {r['max_abs_diff']:.1e} |\n"
        )
    table += (
        f"\nFitted exponent of the per-sample time in d: {result['exponent_rank1']:.2f} (one row at a time),"
        f" {result['exponent_chunked']:.2f} (chunks)."
    )
    return result, table


def _slope(xs: list[float], ys: list[float]) -> float:
    lx, ly = [math.log(v) for v in xs], [math.log(v) for v in ys]
    mx, my = statistics.mean(lx), statistics.mean(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dims", type=int, nargs="+", default=[64, 128, 256, 512, 1024])
    parser.add_argument("--remove", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    result, table = run(args.dims, args.remove, args.repeats)
    emit("analytic_head", result, table, args.out)


if __name__ == "__main__":
    main()
