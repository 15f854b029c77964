"""The sequential scan alone, simulated: how tight its false-alarm bound is, and its delays.

`null` (the default): how tight is the bound? Alarming looks on stationary streams.

The scan (`mlwarden.stats.sequential`) bounds the expected number of alarming looks in N
stationary records by N / falseAlarmsPer (a union bound over looks, rungs and a numeric
column's tests). This counts, on stationary streams, the looks that would alarm at
falseAlarmsPer = 1e2 .. 1e6 (one run gives every rate: a look alarms at rate 1 / per when the
least over its due rungs of p x rungs / r is at most 1 / per, r the records since that rung's
last look), for the column (any test), effect floors applied, and for each test separately
(`location`, the rank-sum or, on windows with a heavy cell, KS; `scale`, the Ansari-Bradley;
`bins`, the binned chi-square), its p-value times the tests run on the window, against a
third of the bound: where fewer than three run (a short or heavy window) a test's share is
larger than that, so its ratio reads high. Before any alert logic: an alert fires once while
its column keeps alarming, so alerts are rarer still.

Each stream kind is one scan of `COLUMNS` independent columns (each with a reference of its
own, `REF` records), the reference's own kind of values arriving `LENGTH` records at a time in
batches of 50, `SEEDS` times.

    PYTHONPATH=src nice -n 19 .venv/bin/python benchmarks/scan_sim.py [null [kind ...]]

Kinds: normal, t2 (Student's t, 2 degrees of freedom), poisson (Poisson 3: ties; cells
over 10%, so KS for location and no scale test), poisson20 (Poisson 20: ties in cells of 9%
at most, so the rank tests), zeros80
(numeric, 80% zeros, the rest exponential), ones10 (numeric 0/1, 10% ones), binary
(p = 0.3, categorical), binary10 (p = 0.1, categorical), levels5 (categorical, shares
.4/.25/.15/.12/.08).

`delays [replicates [lookEvery [out.json]]]`: the delay after the abrupt changes of
benchmarks/stream_delay.py (reference 1,000, window 1,000, batches of 10 records), each
change `replicates` times (300 by default: the benchmark's medians over 2 replicates are too
coarse to choose between variants), at falseAlarmsPer 1,000,000 and 10,000: per change the
median and the mean delay in records (a stream without an alarm counts as its length after
the change, 6,003), and the alarming looks before the change. The replicates are the
columns of one scan, at falseAlarmsPer / replicates so that each column's rate is the
stated one.

Not part of `make bench`: measurements quoted in docs/detector.md and the scan's module
docstring; the detector's own figures are the stream benchmark's.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

import numpy as np

from mlwarden.stats import sequential as sq
from mlwarden.stats.sketch import CategoricalSketch, NumericSketch

COLUMNS, LENGTH, SEEDS, REF, WINDOW, EVERY = 200, 50_000, 4, 1_000, 1_000, 50
RATES = (1e2, 1e3, 1e4, 1e5, 1e6)
NUMERIC = ("normal", "t2", "poisson", "poisson20", "zeros80", "ones10")
LEVELS = np.array([0.40, 0.25, 0.15, 0.12, 0.08])


class _Counting(sq.SequentialScan):
    """The scan, keeping each (look, column)'s least p x rungs / r per test (no findings)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.q: dict[str, list[np.ndarray]] = {"location": [], "scale": [], "bins": [],
                                               "column": []}  # fmt: skip

    def _test(self, kind: str, m: dict[str, Any], windows: Any, due: Any, alphas: Any,
              watch: Collection[str] | None) -> list[sq.Finding]:  # fmt: skip
        _, p, effect, _, valid, (p_rank, p_scale, p_bins, heavy, has_bins) = self._p_values(
            kind, m, windows, due
        )
        tests = 1 + has_bins + ~heavy  # the column's Bonferroni factor on each window
        big = valid & (effect >= m["floors"])
        r = np.array([new for _, new in due], dtype=np.float64)[:, None]
        found = {"column": p}
        if kind == "ks":
            found.update(location=np.minimum(1.0, tests * p_rank),
                         scale=np.minimum(1.0, tests * p_scale),
                         bins=np.minimum(1.0, tests * p_bins))  # fmt: skip
        for name, pv in found.items():
            q = (np.where(big, pv, np.inf) * len(self.sizes) / r).min(axis=0)
            self.q[name].append(q[q <= 1 / RATES[0]])
        return []


def values(kind: str, rng: np.random.Generator, n: int) -> Any:
    if kind == "normal":
        return rng.normal(size=n)
    if kind == "t2":
        return rng.standard_t(2, size=n)
    if kind == "poisson":
        return rng.poisson(3, n).astype(np.float64)
    if kind == "poisson20":
        return rng.poisson(20, n).astype(np.float64)
    if kind == "zeros80":
        return np.where(rng.random(n) < 0.8, 0.0, rng.exponential(size=n))
    if kind == "ones10":
        return (rng.random(n) < 0.1).astype(np.float64)
    if kind == "binary":
        return list(np.where(rng.random(n) < 0.3, "yes", "no"))
    if kind == "binary10":
        return list(np.where(rng.random(n) < 0.1, "yes", "no"))
    levels = (rng.random(n)[:, None] > np.cumsum(LEVELS)).sum(axis=1)
    return [f"l{i}" for i in levels]


def measure(kind: str) -> tuple[dict[str, np.ndarray], int, list[int]]:
    found: dict[str, list[np.ndarray]] = {}
    sizes: list[int] = []
    for seed in range(SEEDS):
        rng = np.random.default_rng([23, seed, sum(map(ord, kind))])
        columns = []
        for c in range(COLUMNS):
            ref = values(kind, rng, REF)
            sketch = (NumericSketch.from_array(ref) if kind in NUMERIC
                      else CategoricalSketch.from_values(ref))  # fmt: skip
            columns.append(sq.ScanColumn(f"c{c}", sketch, 0.05))
        scan = _Counting(columns, false_alarms_per=1e6, look_every=EVERY, look_seconds=0.0,
                         max_window=WINDOW, clear_alpha=0.0, now=0.0)  # fmt: skip
        for start in range(0, LENGTH, 50):
            batch = {f"c{c}": values(kind, rng, 50) for c in range(COLUMNS)}
            scan.add(scan.cells(batch, 50), now=float(start))
        sizes = scan.sizes
        for name, qs in scan.q.items():
            found.setdefault(name, []).extend(qs)
    return ({k: np.concatenate(v) for k, v in found.items() if v},
            SEEDS * COLUMNS * LENGTH, sizes)  # fmt: skip


def main(kinds: list[str]) -> None:
    for kind in kinds:
        t0 = time.process_time()
        found, records, sizes = measure(kind)
        print(f"{kind}: {records:,} records (reference {REF:,}, rungs {sizes}, lookEvery "
              f"{EVERY}; {time.process_time() - t0:.0f} s CPU)")  # fmt: skip
        for name, q in found.items():
            share = 1 / 3 if name in ("location", "scale", "bins") else 1.0
            parts = []
            for per in RATES:
                count, bound = int((q <= 1 / per).sum()), share * records / per
                parts.append(f"1e{np.log10(per):.0f}: {count:,} / {bound:,.0f} = "
                             f"{count / bound:.2f}")  # fmt: skip
            print(f"  {name:8s} alarming looks / share of the bound: " + "; ".join(parts))


# --------------------------------------------------------------------------- delays

PRE, POST, BATCH = 1_517, 6_003, 10  # the change at a record that is no look's
MOVED = LEVELS + np.array([-0.10, 0.0, 0.05, 0.0, 0.05])  # total variation distance 0.1


def _changed(kind: str, magnitude: float, rng: np.random.Generator, after: np.ndarray) -> Any:
    n = after.size
    if kind == "mean":
        return rng.normal(size=n) + magnitude * after
    if kind == "scale":
        return rng.normal(size=n) * np.where(after, magnitude, 1.0)
    if kind == "p":
        return np.where(rng.random(n) < np.where(after, magnitude, 0.3), "yes", "no")
    shares = np.where(after[:, None], MOVED, LEVELS)
    return np.array([f"l{i}" for i in range(5)])[(rng.random(n)[:, None] > np.cumsum(
        shares, axis=1)).sum(axis=1)]  # fmt: skip


CHANGES = [("mean +0.25 sd", "mean", 0.25), ("mean +0.5 sd", "mean", 0.5),
           ("mean +1 sd", "mean", 1.0), ("scale x1.5", "scale", 1.5),
           ("p 0.3 -> 0.36", "p", 0.36), ("p 0.3 -> 0.45", "p", 0.45),
           ("5 levels, TVD 0.1", "levels", 0.1)]  # fmt: skip


def delays(kind: str, magnitude: float, per: float, replicates: int, every: int
           ) -> tuple[list[float], int]:  # fmt: skip
    rng = np.random.default_rng([29, sum(map(ord, kind)), int(magnitude * 100)])
    numeric = kind in ("mean", "scale")
    columns = []
    for c in range(replicates):
        ref = _changed(kind, magnitude, rng, np.zeros(REF, dtype=bool))
        sketch = (NumericSketch.from_array(ref) if numeric
                  else CategoricalSketch.from_values(list(ref)))  # fmt: skip
        columns.append(sq.ScanColumn(f"c{c}", sketch, 0.05))
    scan = sq.SequentialScan(
        columns,
        false_alarms_per=per / replicates,
        look_every=every,
        look_seconds=0.0,
        max_window=1_000,
        clear_alpha=0.0,
        now=0.0,
    )
    after = np.arange(PRE + POST) >= PRE
    data = [_changed(kind, magnitude, rng, after) for _ in range(replicates)]
    first: dict[str, int] = {}
    before = 0
    for start in range(0, PRE + POST, BATCH):
        batch = {f"c{c}": (x[start : start + BATCH] if numeric else list(x[start : start + BATCH]))
                 for c, x in enumerate(data)}  # fmt: skip
        for f in scan.add(scan.cells(batch, BATCH), now=float(start), watch=()):
            if f.alarm and start + BATCH <= PRE:
                before += 1
            elif f.alarm:
                first.setdefault(f.column, start + BATCH - PRE)
    return [float(first.get(f"c{c}", POST)) for c in range(replicates)], before


def main_delays(replicates: int, every: int, out: str | None = None) -> None:
    found: dict[str, dict[str, list[float]]] = {}
    for per in (1e6, 1e4):
        print(f"falseAlarmsPer {per:,.0f}, {replicates} replicates, lookEvery {every}: "
              "median / mean delay in records")  # fmt: skip
        before = 0
        found[f"{per:.0f}"] = {}
        for name, kind, magnitude in CHANGES:
            d, b = delays(kind, magnitude, per, replicates, every)
            before += b
            found[f"{per:.0f}"][name] = d
            print(f"  {name}: {statistics.median(d):,.0f} / {statistics.fmean(d):,.0f}")
        print(f"  alarming looks before the changes: {before} in "
              f"{replicates * PRE * len(CHANGES):,} records")  # fmt: skip
        pooled = [x for name, d in found[f"{per:.0f}"].items() for x in d if "levels" not in name]
        print(f"  pooled over the numeric and binary changes: median "
              f"{statistics.median(pooled):,.0f}")  # fmt: skip
    if out:
        Path(out).write_text(json.dumps(found))


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["delays"]:
        main_delays(int(args[1]) if len(args) > 1 else 300, int(args[2]) if len(args) > 2 else 50,
                    args[3] if len(args) > 3 else None)  # fmt: skip
    else:
        kinds = args[1:] if args[:1] == ["null"] else args
        main(
            kinds
            or ["normal", "t2", "poisson", "zeros80", "ones10", "binary", "binary10", "levels5"]
        )
