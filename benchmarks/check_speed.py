"""`mlwarden check` speed: file read and check compute, against scipy's per-column loop.

Target (issue 7): at 1M rows x 25 columns (20 numeric, 5 categorical) the check's
compute must be at least 5x faster than scipy's per-column loop (`ks_2samp` for each
numeric column, a category tally and `chi2_contingency` for each categorical one).

For 10k, 100k and 1M rows x 25 columns this writes a reference and a current file
(Parquet, and CSV up to 100k rows: writing 1M-row CSVs takes longer than the check)
to a temporary folder, then prints, each the median of `--repeats` runs:

    read     `check.read_columns` of both files (pyarrow)
    check    `check.check_columns` on the columns read (sketches, tests, quality)
    total    `check.run_check` end to end (read + check)
    scipy    the per-column scipy loop on the same columns as numpy arrays (the
             tally of strings included: scipy has none of its own)

Standalone: `python benchmarks/check_speed.py [--sizes 10000,100000,1000000]`.
It prints figures only; no assertion (timings vary with the machine and its load).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
from scipy import stats

from mlwarden.check import check_columns, read_columns, run_check

N_NUMERIC, N_CATEGORICAL = 20, 5
CATEGORIES = np.array(["web", "app", "pos", "kiosk", "phone", "partner", "batch", "other"])


def make_table(n: int, seed: int, shift: float) -> pa.Table:
    rng = np.random.default_rng(seed)
    columns: dict[str, Any] = {}
    for i in range(N_NUMERIC):
        kind = i % 4
        if kind == 0:
            x = rng.normal(shift * (i < 3), 1.0, n)
        elif kind == 1:
            x = rng.lognormal(0.0, 1.0, n)
        elif kind == 2:
            x = rng.integers(0, 50, n).astype(np.float64)  # few distinct values: exact sketch
        else:
            x = rng.gamma(2.0, 30.0, n).round(2)
        columns[f"num_{i:02d}"] = x
    for j in range(N_CATEGORICAL):
        p = np.full(CATEGORIES.size, 1.0 / CATEGORIES.size)
        if shift and j == 0:
            p = np.roll(p * np.linspace(0.5, 1.5, CATEGORIES.size), 1)
            p /= p.sum()
        columns[f"cat_{j}"] = CATEGORIES[rng.choice(CATEGORIES.size, n, p=p)]
    return pa.table(columns)


def scipy_loop(ref: dict[str, np.ndarray], cur: dict[str, np.ndarray]) -> int:
    """The baseline: what one writes with scipy alone, one column at a time."""
    drifted = 0
    for name, x in ref.items():
        y = cur[name]
        if x.dtype.kind == "f":
            p = stats.ks_2samp(x, y).pvalue
        else:
            labels, counts = np.unique(np.concatenate([x, y]), return_inverse=True)
            table = np.stack(
                [
                    np.bincount(counts[: x.size], minlength=labels.size),
                    np.bincount(counts[x.size :], minlength=labels.size),
                ]
            )
            p = stats.chi2_contingency(table, correction=False).pvalue
        drifted += p < 0.01 / len(ref)
    return drifted


def median_time(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    print(
        f"{'rows':>9} {'format':>7} {'read s':>8} {'check s':>8} {'total s':>8} "
        f"{'scipy s':>8} {'check vs scipy':>15} {'drifted':>8}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            ref_table, cur_table = make_table(n, 1, 0.0), make_table(n, 2, 0.1)
            ref_np = {c: ref_table.column(c).to_numpy() for c in ref_table.column_names}
            cur_np = {c: cur_table.column(c).to_numpy() for c in cur_table.column_names}
            scipy_s = median_time(lambda r=ref_np, c=cur_np: scipy_loop(r, c), args.repeats)
            formats = ["parquet"] + (["csv"] if n <= 100_000 else [])
            for fmt in formats:
                r, c = Path(tmp, f"ref{n}.{fmt}"), Path(tmp, f"cur{n}.{fmt}")
                if fmt == "parquet":
                    pq.write_table(ref_table, r)
                    pq.write_table(cur_table, c)
                else:
                    pcsv.write_csv(ref_table, r)
                    pcsv.write_csv(cur_table, c)
                read_s = median_time(
                    lambda r=r, c=c: (read_columns(str(r)), read_columns(str(c))), args.repeats
                )
                ref_cols, cur_cols = read_columns(str(r)), read_columns(str(c))
                check_s = median_time(
                    lambda a=ref_cols, b=cur_cols: check_columns(a, b), args.repeats
                )
                total_s = median_time(lambda r=r, c=c: run_check(str(r), str(c)), args.repeats)
                report = run_check(str(r), str(c))
                print(
                    f"{n:>9,} {fmt:>7} {read_s:>8.3f} {check_s:>8.3f} {total_s:>8.3f} "
                    f"{scipy_s:>8.3f} {scipy_s / check_s:>14.1f}x {len(report.drifted):>8}"
                )
                sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
