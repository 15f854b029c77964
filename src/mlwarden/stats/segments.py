"""Segments: which values of a column are segments of their own, and drift across all of them.

A segment is one value (a level) of a categorical column, e.g. `country = BR`: its records
are judged against its own part of the reference, so a change confined to a small segment is
not diluted by the rest of the traffic. Two pieces of pure logic:

- `SpaceSaving`: the most frequent values of a column in bounded memory, whatever the
  number of distinct values (Metwally, Agrawal and El Abbadi, "Efficient computation of
  frequent and top-k elements in data streams", ICDT 2005). With `capacity` counters over
  N values, every value more frequent than N / capacity is counted, and a count
  overestimates the true one by at most N / capacity. `top_levels` reads the top levels off
  it (the segments); every other value, and a missing one, is the segment `OTHER`.
- `segment_drift`: the drift verdicts of every (segment, column) pair, through the same
  tests, correction and effect floors as the all-traffic check (`stats.drift.evaluate_drift`),
  with ONE multiple-testing correction over all the pairs of all segment columns. With
  Bonferroni (the default), the probability that a stationary evaluation flags any segment
  at all is at most `pValue`, however many segments and columns there are: adding segments
  makes each test stricter, not the family noisier. The segment family is separate from the
  all-traffic one (which keeps its own level), so turning segments on at most adds `pValue`
  per evaluation, before hysteresis (`fireAfter`). Measured in
  `tests/unit/stats/test_segments.py`.

  One difference from the all-traffic tests: KS's p-value is Kolmogorov's limit at every
  sample size (`ks_limit_score`; all traffic switches to it from n = 10,000 on). scipy's
  finite-n `kstwo.sf` costs 0.2-4 ms a call at a segment's sizes, 500 of them an evaluation
  (20 segments x 25 features) would take about a second; the limit costs microseconds. It is
  never below the one-sample finite-n p-value (checked against `kstwo` in the tests), and
  within 1.4% of the two-sample exact one (`ks_2samp(method="exact")`), sometimes just below
  it: very slightly anti-conservative. D, and so the effect floor, are `ks.score`'s.

No I/O, no clock.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np

from mlwarden.stats import ks
from mlwarden.stats.distributions import kolmogorov_sf
from mlwarden.stats.drift import SCORES, DriftSettings, FeatureDrift, Score, evaluate_drift
from mlwarden.stats.result import TestResult
from mlwarden.stats.sketch import Sketch

OTHER: Final = "other"  # the segment of every value that is not a top level (and of missing)
# Counters per kept level: the top levels are read off a counter this many times larger, so
# their order is right unless two levels' frequencies are within N / capacity of each other.
CAPACITY_PER_LEVEL: Final = 4
MIN_CAPACITY: Final = 64


@dataclass
class SpaceSaving:
    """Approximate counts of the most frequent values, in at most `capacity` counters.

    `add` takes a batch as (value, count) pairs (a batch is tallied first, so a value
    repeated in it costs one update). A value not counted yet takes a free counter, or
    replaces the smallest one and inherits its count as its possible overestimate (`error`).
    """

    capacity: int
    counts: dict[str, int]
    errors: dict[str, int]
    total: int = 0

    @classmethod
    def empty(cls, capacity: int) -> SpaceSaving:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        return cls(capacity, {}, {})

    def add(self, tally: Iterable[tuple[str, int]]) -> None:
        counts, errors = self.counts, self.errors
        for value, count in tally:
            self.total += count
            if value in counts:
                counts[value] += count
            elif len(counts) < self.capacity:
                counts[value] = count
                errors[value] = 0
            else:
                smallest = min(counts, key=counts.__getitem__)
                floor = counts.pop(smallest)
                del errors[smallest]
                counts[value] = floor + count
                errors[value] = floor

    def add_values(self, values: Iterable[str | None]) -> None:
        """Count values one by one (missing ones are counted in `total` only)."""
        tally: dict[str, int] = {}
        missing = 0
        for v in values:
            if v is None:
                missing += 1
            else:
                tally[v] = tally.get(v, 0) + 1
        self.total += missing
        self.add(tally.items())

    def top(self, n: int) -> list[tuple[str, int]]:
        """The `n` largest counts, largest first (ties by value, for a stable order)."""
        ranked = sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))
        return ranked[:n]

    def guaranteed(self, value: str) -> int:
        """A lower bound of the value's true count (count - error)."""
        return self.counts.get(value, 0) - self.errors.get(value, 0)


def capacity_for(max_levels: int) -> int:
    return max(MIN_CAPACITY, CAPACITY_PER_LEVEL * max_levels)


def top_levels(counter: SpaceSaving, max_levels: int) -> tuple[str, ...]:
    """The segments of a column: its `max_levels` most frequent values, largest first.

    `OTHER` is never a level of its own: the value "other" falls into the rest segment.
    """
    return tuple(v for v, _ in counter.top(max_levels + 1) if v != OTHER)[:max_levels]


def level_index(values: Sequence[str | None], levels: Sequence[str]) -> np.ndarray:
    """Per value, the index of its segment in `levels`; len(levels) for `OTHER`."""
    position = {level: i for i, level in enumerate(levels)}
    rest = len(levels)
    return np.fromiter(
        (rest if v is None else position.get(v, rest) for v in values),
        dtype=np.intp,
        count=len(values),
    )


def segment_label(column: str, level: str) -> str:
    """How a segment is written in the key of its alerts and in messages: `country=BR`."""
    return f"{column}={level}"


def ks_limit_score(reference: Sketch, current: Sketch) -> TestResult:
    """KS D (`ks.statistic`) with Kolmogorov's limiting p-value,
    `scipy.stats.kstwobign.sf(D * sqrt(n))`, n = round(n1 n2 / (n1 + n2))."""
    d, en = ks.statistic(reference, current)
    n1, n2 = reference.total, current.total
    if en < 1:
        return TestResult("ks", d, 1.0, d, n1, n2)
    return TestResult("ks", d, float(kolmogorov_sf(d * math.sqrt(en))), d, n1, n2)


SEGMENT_SCORES: Final[Mapping[str, Score]] = {**SCORES, "ks": ks_limit_score}


@dataclass(frozen=True)
class SegmentDrift:
    """One column's drift verdict in one segment."""

    column: str  # the segment column
    level: str  # its value (or OTHER)
    verdict: FeatureDrift


def segment_drift(
    reference: Mapping[tuple[str, str], Mapping[str, Sketch]],
    current: Mapping[tuple[str, str], Mapping[str, Sketch]],
    types: Mapping[str, str],
    check: DriftSettings,
    min_current: int = 30,
) -> list[SegmentDrift]:
    """Drift verdicts of every feature in `types` in every segment `(column, level)` of
    `current`, against the same segment's reference sketches.

    One correction spans all the (segment, feature) pairs that have a p-value; the tests,
    skips (fewer than `min_current` values) and effect floors are `evaluate_drift`'s.
    """
    if not check.enabled or not types:
        return []
    flat_ref: dict[str, Sketch] = {}
    flat_cur: dict[str, Sketch] = {}
    flat_types: dict[str, str] = {}
    where: dict[str, tuple[str, str, str]] = {}
    for segment, sketches in current.items():
        ref = reference[segment]
        for feature, feature_type in types.items():
            key = f"{len(where)}"
            flat_ref[key], flat_cur[key] = ref[feature], sketches[feature]
            flat_types[key] = feature_type
            where[key] = (segment[0], segment[1], feature)
    verdicts = evaluate_drift(
        flat_ref,
        flat_cur,
        flat_types,
        check,
        min_current,
        family="segment × feature test",
        scores=SEGMENT_SCORES,
    )
    out = []
    for key, verdict in zip(flat_types, verdicts, strict=True):
        column, level, feature = where[key]
        out.append(
            SegmentDrift(
                column,
                level,
                FeatureDrift(
                    feature, verdict.result, verdict.adjusted_p, verdict.drifted, verdict.reason
                ),
            )
        )
    return out
