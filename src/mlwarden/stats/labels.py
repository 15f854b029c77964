"""Labelled performance by prediction time: buckets, their metric, and how late labels come.

A label may come days after its prediction. What it says is about the moment the
prediction was made (and the model revision that made it), so it is credited there:

- `bucket_start(at, width)`: the prediction-time bucket a prediction falls in (buckets
  of `width` seconds aligned on the epoch, so every detector run cuts the same ones).
- `Tally`: one bucket of one revision: predictions made, labels joined so far, and the
  joined (label, prediction) pairs as a confusion table (`cells`: count per distinct
  pair, at most `MAX_CELLS` distinct pairs; pairs beyond that are counted in `overflow`
  and left out of the metric, never guessed).
- `cells_metric(metric, cells)`: accuracy or F1 of a confusion table, computed by
  `performance.labelled_metric` on its distinct cells weighted by their counts, so a
  bucket's figure is exactly what scikit-learn gives on the same labels and predictions
  (ROC AUC needs scores, which a confusion table does not keep: NaN).
- `scaled_pairs(cells, limit)`: a table's rows, at most `limit` of them in the same
  proportions (what a canary comparison reads, bounded).
- `newest_judged(tallies, min_labels)`: the newest bucket (all revisions together) with
  at least `min_labels` labels in its confusion table: the one the performance check judges.
- `lag_percentiles(lags)`: percentiles of the time from prediction to label.

Nothing here reads a clock: times come in as arguments.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

import numpy as np

from mlwarden.records import Value
from mlwarden.stats import performance as perf

MAX_CELLS: Final = 1024  # distinct (label, prediction) pairs a bucket counts
LAG_PERCENTILES: Final = (50, 90, 99)

Cell = tuple[Value, Value]  # (label, prediction)


def bucket_start(at: float, width: float) -> float:
    """The start of the `width`-second bucket `at` falls in (aligned on the epoch)."""
    return math.floor(at / width) * width


@dataclass
class Tally:
    """Predictions and joined labels of one prediction-time bucket of one revision."""

    predicted: int = 0
    labelled: int = 0
    cells: Counter[Cell] = field(default_factory=Counter)
    overflow: int = 0  # labelled pairs beyond MAX_CELLS distinct ones: not in the metric

    def add_label(self, label: Value, prediction: Value) -> None:
        self.labelled += 1
        key = (label, prediction)
        if key in self.cells or len(self.cells) < MAX_CELLS:
            self.cells[key] += 1
        else:
            self.overflow += 1

    def merge(self, other: Tally) -> None:
        self.predicted += other.predicted
        self.labelled += other.labelled
        self.overflow += other.overflow
        for key, n in other.cells.items():
            if key in self.cells or len(self.cells) < MAX_CELLS:
                self.cells[key] += n
            else:
                self.overflow += n


def merged(tallies: Iterable[Tally]) -> Tally:
    out = Tally()
    for t in tallies:
        out.merge(t)
    return out


def scaled_pairs(cells: Mapping[Cell, int], limit: int) -> list[tuple[Value, Value]]:
    """The (label, prediction) rows a confusion table counts, one per row; beyond `limit`
    rows, `limit` rows in the same proportions (each cell's share rounded by largest
    remainder, so a metric of them is within about cells / limit of the whole table's)."""
    total = sum(cells.values())
    counts = dict(cells)
    if total > limit:
        exact = {pair: n * limit / total for pair, n in cells.items()}
        counts = {pair: math.floor(x) for pair, x in exact.items()}
        short = limit - sum(counts.values())
        for pair in sorted(exact, key=lambda c: counts[c] - exact[c])[:short]:
            counts[pair] += 1
    return [pair for pair, n in counts.items() for _ in range(n)]


def cells_metric(metric: str, cells: Mapping[Cell, int]) -> float:
    """`metric` over the rows of a confusion table (NaN when empty, or for roc_auc): its
    distinct cells weighted by their counts, so the cost is the table's, not the rows'."""
    if metric == "roc_auc" or not cells:
        return math.nan
    y_true = np.asarray([t for t, _ in cells])
    y_pred = np.asarray([p for _, p in cells])
    weights = np.asarray(list(cells.values()), dtype=np.float64)
    return perf.labelled_metric(metric, y_true, y_pred, weights=weights)


def newest_judged(
    tallies: Mapping[tuple[float, str | None], Tally], min_labels: int
) -> tuple[float, Tally] | None:
    """The newest bucket whose revisions together hold at least `min_labels` labels, with
    their merged tally; None when no bucket has that many yet."""
    by_bucket: dict[float, list[Tally]] = {}
    for (start, _), tally in tallies.items():
        by_bucket.setdefault(start, []).append(tally)
    for start in sorted(by_bucket, reverse=True):
        total = merged(by_bucket[start])
        if sum(total.cells.values()) >= min_labels:
            return start, total
    return None


def lag_percentiles(lags: Sequence[float]) -> dict[str, float | int | None]:
    """p50, p90, p99 of label lags in seconds (numpy's linear interpolation; None without
    lags), and the count."""
    out: dict[str, float | int | None] = {"samples": len(lags)}
    values = np.percentile(np.asarray(lags, dtype=np.float64), LAG_PERCENTILES) if lags else None
    for i, q in enumerate(LAG_PERCENTILES):
        out[f"p{q}"] = None if values is None else round(float(values[i]), 3)
    return out
