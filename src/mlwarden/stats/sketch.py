"""Sketches: the bounded, mergeable summaries of a feature's values that every test reads.

The detector never keeps raw values. A reference and a sliding current window are
each a sketch per feature, updated per batch; a sliding window is the sum of
per-chunk sketches, so sketches merge and subtract in place. Every test in this
package takes two sketches, never arrays.

Numeric cells
-------------
`numeric_edges` picks k strictly increasing edges e_0 < ... < e_{k-1} from the
reference. A `NumericSketch` over them has 2k + 1 cells::

    cell 0        (-inf, e_0)          below the reference: the lower tail
    cell 2i + 1   {e_i}                exactly the edge value
    cell 2i       (e_{i-1}, e_i)       strictly between two edges, 1 <= i <= k-1
    cell 2k       (e_{k-1}, +inf)      above the reference: the upper tail

so each edge value has its own cell and the values between and beyond the edges
have theirs.

When the reference has at most `max_bins` distinct values the edges *are* those
values and the sketch is lossless for CDF-based tests: the reference CDF is
constant inside every open cell, so the supremum of |F_ref - F_cur| (KS) and the
integral of it (Wasserstein) can be read off cell boundaries exactly, whatever
the current values are. Otherwise the edges are reference quantiles (including
its minimum and maximum, so the tails still mean "outside the reference range").

Each cell also keeps the mean of its values. That makes the Wasserstein integral
over the open tails exact (the mean distance to the outermost edge) without the
running min/max, which cannot be subtracted when a chunk leaves a sliding window.

Moments are kept as means, never as sums: a mean is bounded by the values it
averages, so values near the largest float (1.8e308, a common "missing" sentinel)
give finite moments instead of sums that overflow to inf (and then to NaN).

Categorical counts
------------------
A `CategoricalSketch` counts string categories up to `max_categories`; values of
categories beyond the bound go to `other`, so a feature with a million distinct
values still uses bounded memory. Totals stay exact; once a sketch has
overflowed, which category holds which count is approximate.

`paired_histograms` lines two sketches of one feature up as two count vectors
over the same bins — the input of the distance tests (PSI, Jensen-Shannon) and,
for categories, of the chi-square table.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Final, Self, cast

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

_INF: Final = float("inf")
_NEG_INF: Final = float("-inf")
# Values below this in magnitude sum without overflow (1e18 of them stay below 1e308).
_HUGE: Final = 1e290

DEFAULT_MAX_BINS: Final = 128
DEFAULT_MAX_CATEGORIES: Final = 1000
# Numeric sketches are regrouped into this many reference-quantile bins for the
# histogram distances (PSI, Jensen-Shannon). Their value under no drift grows with
# the bin count, roughly PSI ~ (bins - 1) * (1/n_ref + 1/n_cur): at 128 bins and
# 1000 values a side that is 0.25, above the usual PSI alarm of 0.2, while at 10
# bins (the customary PSI decile binning) it is 0.02.
DISTANCE_BINS: Final = 10


def numeric_edges(reference: npt.ArrayLike, max_bins: int = DEFAULT_MAX_BINS) -> FloatArray:
    """Strictly increasing float64 edges for sketches of one numeric feature.

    Only the finite values of `reference` count. If there are at most `max_bins`
    distinct ones, the edges are exactly those values (lossless sketches);
    otherwise they are `max_bins` order statistics of the reference evenly spaced
    in rank from its minimum to its maximum, deduplicated (so heavy ties, such as
    a zero-inflated feature, give fewer edges, each with its own cell). Either
    way the reference minimum and maximum are edges, so values outside the
    reference range land in the tail cells. No finite values: no edges (a sketch
    with a single cell).
    """
    if max_bins < 1:
        raise ValueError(f"max_bins must be at least 1, got {max_bins}")
    values = np.asarray(reference, dtype=np.float64).ravel()
    return edges_of_sorted(np.sort(values[np.isfinite(values)]), max_bins)


def edges_of_sorted(ordered: FloatArray, max_bins: int = DEFAULT_MAX_BINS) -> FloatArray:
    """`numeric_edges` of finite values that are already sorted (no second sort)."""
    if max_bins < 1:
        raise ValueError(f"max_bins must be at least 1, got {max_bins}")
    if ordered.size == 0:
        return ordered.copy()
    distinct = ordered[np.concatenate(([True], ordered[1:] != ordered[:-1]))]
    if distinct.size <= max_bins:
        return distinct
    ranks = np.round(np.linspace(0, ordered.size - 1, max_bins)).astype(np.intp)
    return np.unique(ordered[ranks])


def _scaled_mean(x: FloatArray) -> float:
    """The mean of finite sorted values whose sum overflows: over the values scaled by a
    power of two below 1 in magnitude (exact), then scaled back."""
    e = math.frexp(max(abs(float(x[0])), abs(float(x[-1]))))[1]
    with np.errstate(under="ignore"):  # values far below the largest: they add nothing
        return math.ldexp(float(np.mean(np.ldexp(x, -e))), e)


def _rms(centred: FloatArray) -> float:
    """sqrt(mean(centred^2)) of sorted values, without overflow (or underflow to 0)."""
    top = max(abs(float(centred[0])), abs(float(centred[-1])))
    if top == 0 or not math.isfinite(top):
        return top
    # einsum, not `@`: a BLAS dot spreads 1M values over threads, which costs ~8 ms
    # instead of 0.3 ms when the machine is busy; the value is the same sum.
    if 1e-100 < top < 1e100:
        return math.sqrt(float(np.einsum("i,i->", centred, centred)) / centred.size)
    e = math.frexp(top)[1]
    with np.errstate(under="ignore"):  # values far below the largest: they add nothing
        scaled = np.ldexp(centred, -e)
        scaled *= scaled
    return math.ldexp(math.sqrt(float(scaled.sum()) / centred.size), e)


def _pooled_rms(a: float, wa: float, b: float, wb: float) -> float:
    """sqrt(wa a^2 + wb b^2), scaled by the larger so that neither square overflows."""
    scale = max(a, b)
    if scale == 0:
        return 0.0
    return scale * math.sqrt(wa * (a / scale) ** 2 + wb * (b / scale) ** 2)


class NumericSketch:
    """A histogram of one numeric feature over fixed edges, with running moments.

    `counts[c]` and `means[c]` are the count and the mean of the finite values in
    cell `c` (0 where the cell is empty; see the module docstring for the cells);
    `missing` counts NaN (and None, which numpy reads as NaN), `infinite` counts
    +-inf. Over the finite values: `n`; `rms`, the root mean square of the values
    less `origin`, a fixed middle edge, so that the variance of values far from zero
    (timestamps) does not cancel catastrophically; and `min`/`max`. The mean is the
    cells' means weighted by their counts. Means, not sums: none of them overflows
    while the values are finite.

    Subtracting is exact for the counts and, cell by cell, close for the means (a cell
    that empties is exactly 0 again). `rms` is one number over all cells: when what
    leaves held values far larger than what stays (a 1.8e308 sentinel leaving a sliding
    window), what stays of it is rounding, and so is the `std` of that window (the
    tests read the reference's `std` only, and references are never subtracted from).
    `min`/`max` cannot be subtracted: after `subtract` they are bounds over everything
    ever added (reset when the sketch becomes empty); no test reads them.
    """

    __slots__ = (
        "_ranges",
        "counts",
        "edges",
        "infinite",
        "max",
        "means",
        "min",
        "missing",
        "n",
        "origin",
        "rms",
    )

    def __init__(self, edges: npt.ArrayLike) -> None:
        if isinstance(edges, np.ndarray) and not edges.flags.writeable and edges.ndim == 1:
            e = edges.astype(np.float64, copy=False)  # another sketch's edges: share them
        else:
            e = np.array(edges, dtype=np.float64).ravel()
        e.setflags(write=False)  # shared by copies; merge checks identity first
        if not np.all(np.isfinite(e)) or np.any(e[1:] <= e[:-1]):
            raise ValueError("sketch edges must be finite and strictly increasing")
        self.edges: FloatArray = e
        # (0 when the middle edge is itself near the largest float, a sentinel: then no
        # value less the origin overflows.)
        middle = float(e[e.size // 2]) if e.size else 0.0
        self.origin = middle if abs(middle) < _HUGE else 0.0
        self.counts: IntArray = np.zeros(2 * e.size + 1, dtype=np.int64)
        self.means: FloatArray = np.zeros(2 * e.size + 1, dtype=np.float64)
        self.missing = 0
        self.infinite = 0
        self.n = 0
        self.rms = 0.0
        self._ranges: tuple[FloatArray, FloatArray] | None = None
        self.min = float("inf")
        self.max = float("-inf")

    @classmethod
    def from_values(
        cls, values: npt.ArrayLike | Sequence[float | None], edges: npt.ArrayLike | None = None
    ) -> Self:
        """A sketch of `values`, over `edges` (default: `numeric_edges(values)`)."""
        x = np.asarray(values, dtype=np.float64)
        sketch = cls(numeric_edges(x) if edges is None else edges)
        sketch.add(x)
        return sketch

    @classmethod
    def from_array(
        cls,
        values: npt.ArrayLike,
        edges: npt.ArrayLike | None = None,
        *,
        max_bins: int = DEFAULT_MAX_BINS,
    ) -> Self:
        """`from_values` for a whole column at once: one sort gives the edges and the counts.

        Equal to `cls(numeric_edges(values, max_bins)).add(values)` (or over `edges`
        when given), with one sort of the values instead of three.
        """
        x = np.array(values, dtype=np.float64).ravel()
        x.sort()  # -inf first; +inf then NaN last
        if edges is None:
            lo = int(x.searchsorted(_NEG_INF, "right"))
            hi = int(x.searchsorted(_INF, "left"))
            edges = edges_of_sorted(x[lo:hi], max_bins)
        sketch = cls(edges)
        sketch._add_sorted(x)
        return sketch

    # ------------------------------------------------------------------ updates

    def add(self, values: npt.ArrayLike | Sequence[float | None]) -> None:
        """Count a batch of values (NaN/None: missing; +-inf: infinite)."""
        # Sort the batch and search the edges in it (k searches), rather than
        # searching each value among the edges: counts per cell are then differences
        # of positions and sums one reduceat over the cells' runs: ~10 numpy calls
        # whatever the batch size (about 16 us for 500 values, 35 us for 5000).
        x = np.array(values, dtype=np.float64).ravel()
        x.sort()  # -inf first; +inf then NaN last
        self._add_sorted(x)

    def _add_sorted(self, x: FloatArray) -> None:
        """`add` for a float64 array already sorted in numpy's order (NaN last)."""
        if x.size == 0:
            return
        if not (x[0] > _NEG_INF and x[-1] < _INF):
            first = int(x.searchsorted(_NEG_INF, "right"))
            last = int(x.searchsorted(_INF, "left"))
            nan_from = int(x.searchsorted(_INF, "right"))
            self.missing += x.size - nan_from
            self.infinite += first + nan_from - last
            x = x[first:last]
            if x.size == 0:
                return
        n = x.size
        k = self.edges.size
        bounds = np.empty(2 * k + 2, dtype=np.intp)
        bounds[0], bounds[-1] = 0, n
        bounds[1:-1:2] = x.searchsorted(self.edges, "left")
        bounds[2:-1:2] = x.searchsorted(self.edges, "right")
        counts = bounds[1:] - bounds[:-1]
        filled = np.flatnonzero(counts)
        # Each filled cell's values are one run of the sorted batch: summed apart (a
        # running sum over all of them loses the small cells' values to a large one) and
        # about the origin (so that values far from zero keep their precision).
        centred = x - self.origin  # never overflows: |origin| < _HUGE
        if x[0] > -_HUGE and x[-1] < _HUGE:  # no sum of fewer than 1e18 of these overflows
            means = np.add.reduceat(centred, bounds[filled]) / counts[filled] + self.origin
        else:
            with np.errstate(over="ignore", invalid="ignore"):
                means = np.add.reduceat(centred, bounds[filled]) / counts[filled] + self.origin
            for j in np.flatnonzero(~np.isfinite(means)).tolist():  # a sum overflowed
                means[j] = _scaled_mean(x[bounds[filled[j]] : bounds[filled[j] + 1]])
        self.counts[filled] += counts[filled]
        # The running mean of each cell (the difference form: equal huge means cancel).
        self.means[filled] += (means - self.means[filled]) * (counts[filled] / self.counts[filled])
        self._combine(n, _rms(centred))
        self.min = min(self.min, float(x[0]))
        self.max = max(self.max, float(x[-1]))

    def _combine(self, n: int, rms: float) -> None:
        """Fold in the root mean square of n more values."""
        total = self.n + n
        self.rms = _pooled_rms(self.rms, self.n / total, rms, n / total)
        self.n = total

    def merge(self, other: NumericSketch) -> None:
        """Add `other` into this sketch (same edges required)."""
        self.require_same_edges(other)
        self.missing += other.missing
        self.infinite += other.infinite
        if other.n == 0:
            pass
        elif self.n == 0:  # a window's view and a copy start empty: take other's as they are
            self.counts = other.counts.copy()
            self.means = other.means.copy()
            self.rms, self.n = other.rms, other.n
        else:
            counts = self.counts + other.counts
            # A cell both leave empty has other.counts 0: weight 0 / 1.
            weight = other.counts / np.maximum(counts, 1)
            self.means = self.means + (other.means - self.means) * weight
            self.counts = counts
            self._combine(other.n, other.rms)
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)

    def subtract(self, other: NumericSketch) -> None:
        """Remove `other` (previously merged in) from this sketch (same edges required).

        Raises ValueError, leaving this sketch unchanged, if any count would go
        negative: `other` was never part of this sketch.
        """
        self.require_same_edges(other)
        counts = self.counts - other.counts
        if (
            counts.min(initial=0) < 0
            or other.missing > self.missing
            or other.infinite > self.infinite
        ):
            raise ValueError("cannot subtract a sketch that was not merged into this one")
        # What stays: mean m + c2 (m - m2) / (c - c2) per cell, kept inside the cell
        # (rounding drifts under add-then-subtract); an empty cell's mean is exactly 0.
        grow = other.counts / np.maximum(counts, 1)  # emptied cells are zeroed below
        means = self.means + (self.means - other.means) * grow
        np.clip(means, *self._cell_ranges(), out=means)
        means[counts == 0] = 0.0
        self.means = means
        self.counts = counts
        self.missing -= other.missing
        self.infinite -= other.infinite
        n = self.n - other.n
        if n == 0:
            self.rms = 0.0
            self.min, self.max = _INF, _NEG_INF
        elif other.n:
            left, gone = n / self.n, other.n / self.n
            # rms^2 = (rms_all^2 - gone rms_other^2) / left, scaled by the larger rms.
            scale = max(self.rms, other.rms)
            if scale > 0:
                rest = ((self.rms / scale) ** 2 - gone * (other.rms / scale) ** 2) / left
                self.rms = scale * math.sqrt(max(rest, 0.0))
        self.n = n

    def _cell_ranges(self) -> tuple[FloatArray, FloatArray]:
        """The lowest and highest value each cell can hold (edge cells: the edge)."""
        if self._ranges is not None:
            return self._ranges
        e = self.edges
        lo = np.empty(2 * e.size + 1)
        hi = np.empty(2 * e.size + 1)
        lo[0], hi[-1] = _NEG_INF, _INF
        lo[1::2] = hi[1::2] = e
        lo[2::2] = e
        hi[:-1:2] = e
        lo.setflags(write=False)
        hi.setflags(write=False)
        self._ranges = (lo, hi)
        return self._ranges

    def copy(self) -> NumericSketch:
        twin = self.empty_like()
        twin.merge(self)
        return twin

    def empty_like(self) -> NumericSketch:
        """An empty sketch over the same edges (shares the read-only edges array)."""
        twin = NumericSketch(self.edges)
        twin._ranges = self._ranges
        return twin

    def require_same_edges(self, other: NumericSketch) -> None:
        if not isinstance(other, NumericSketch):
            raise TypeError(f"expected a NumericSketch, got {type(other).__name__}")
        if other.edges is not self.edges and not np.array_equal(other.edges, self.edges):
            raise ValueError(
                f"sketches have different edges ({self.edges.size} vs {other.edges.size} "
                "edges, or different values); build both from the same numeric_edges()"
            )

    # ------------------------------------------------------------------ summaries

    @property
    def total(self) -> int:
        """The number of finite values."""
        return self.n

    @property
    def shift(self) -> float:
        """The mean of the finite values less `origin` (0 when there are none)."""
        if self.n == 0:
            return 0.0
        return float(np.dot(self.counts / self.n, self.means - self.origin))

    @property
    def mean(self) -> float:
        return self.origin + self.shift if self.n else float("nan")

    @property
    def std(self) -> float:
        """Population standard deviation (ddof=0) of the finite values."""
        if self.n == 0:
            return float("nan")
        # rms^2 - shift^2, scaled by the larger so that neither square overflows.
        shift = abs(self.shift)
        scale = max(self.rms, shift)
        if scale == 0:
            return 0.0
        return scale * math.sqrt(max((self.rms / scale) ** 2 - (shift / scale) ** 2, 0.0))

    def __repr__(self) -> str:
        return (
            f"NumericSketch(edges={self.edges.size}, n={self.n}, missing={self.missing}, "
            f"infinite={self.infinite})"
        )


class CategoricalSketch:
    """Counts of string categories, at most `max_categories` of them, plus `other`.

    A value whose category is not yet counted and finds no free slot goes to
    `other`. A category whose count falls to zero (by `subtract`) frees its slot.
    `missing` counts None.
    """

    __slots__ = ("counts", "max_categories", "missing", "other")

    def __init__(self, max_categories: int = DEFAULT_MAX_CATEGORIES) -> None:
        if max_categories < 1:
            raise ValueError(f"max_categories must be at least 1, got {max_categories}")
        self.max_categories = max_categories
        self.counts: dict[str, int] = {}
        self.other = 0
        self.missing = 0

    @classmethod
    def from_values(
        cls, values: Iterable[str | None], max_categories: int = DEFAULT_MAX_CATEGORIES
    ) -> Self:
        sketch = cls(max_categories)
        sketch.add(values)
        return sketch

    @classmethod
    def from_counts(
        cls,
        counts: Mapping[str, int],
        *,
        missing: int = 0,
        max_categories: int = DEFAULT_MAX_CATEGORIES,
    ) -> Self:
        """A sketch of values already tallied: `counts` in the order categories first appeared.

        Equal to `from_values` on the values themselves (the same categories get the
        slots), without a pass over them in Python.
        """
        sketch = cls(max_categories)
        sketch.missing = int(missing)
        sketch._add_counts(counts)
        return sketch

    def add(self, values: Iterable[str | None]) -> None:
        """Count a batch of categories (None: missing)."""
        batch: Counter[str | None] = Counter(values)  # C-accelerated tally
        self.missing += batch.pop(None, 0)
        self._add_counts(cast("Mapping[str, int]", batch))

    def _add_counts(self, batch: Mapping[str, int]) -> None:
        counts = self.counts
        for category, c in batch.items():
            if category in counts:
                counts[category] += c
            elif len(counts) < self.max_categories:
                counts[category] = c
            else:
                self.other += c

    def merge(self, other: CategoricalSketch) -> None:
        """Add `other` into this sketch; categories beyond the bound go to `other`."""
        self._check(other)
        self._add_counts(other.counts)
        self.other += other.other
        self.missing += other.missing

    def subtract(self, other: CategoricalSketch) -> None:
        """Remove `other` (previously merged in).

        A category of `other` that this sketch does not count separately was put in
        `other` when merged, so it is taken from there. Raises ValueError, leaving
        this sketch unchanged, if totals would go negative.
        """
        self._check(other)
        counts = dict(self.counts)
        rest = self.other - other.other
        for category, c in other.counts.items():
            left = counts.get(category, 0) - c
            if left > 0:
                counts[category] = left
            else:
                # Never counted separately here (it went to `other` when merged), or
                # overflowed into `other` after a slot was freed: the deficit is there.
                counts.pop(category, None)
                rest += left
        if rest < 0 or other.missing > self.missing:
            raise ValueError("cannot subtract a sketch that was not merged into this one")
        self.counts = counts
        self.other = rest
        self.missing -= other.missing

    def copy(self) -> CategoricalSketch:
        twin = self.empty_like()
        twin.counts = dict(self.counts)
        twin.other = self.other
        twin.missing = self.missing
        return twin

    def empty_like(self) -> CategoricalSketch:
        return CategoricalSketch(self.max_categories)

    @staticmethod
    def _check(other: object) -> None:
        if not isinstance(other, CategoricalSketch):
            raise TypeError(f"expected a CategoricalSketch, got {type(other).__name__}")

    @property
    def total(self) -> int:
        """The number of non-missing values (categories counted plus `other`)."""
        return sum(self.counts.values()) + self.other

    @property
    def overflowed(self) -> bool:
        return self.other > 0

    def __repr__(self) -> str:
        return (
            f"CategoricalSketch(categories={len(self.counts)}, other={self.other}, "
            f"missing={self.missing})"
        )


Sketch = NumericSketch | CategoricalSketch


# ---------------------------------------------------------------------- pairing


def align_categories(
    reference: CategoricalSketch, current: CategoricalSketch
) -> tuple[tuple[str | None, ...], IntArray, IntArray]:
    """Columns of the reference-vs-current table: labels, reference and current counts.

    Columns are the reference's categories, then the categories seen only in the
    current sketch (unseen in the reference), then `other` (label None). If the
    reference itself overflowed, a current category it does not count may be
    hiding in its `other`, so such categories are folded into `other` rather than
    reported as unseen.
    """
    labels: list[str | None] = list(reference.counts)
    ref = list(reference.counts.values())
    cur = [current.counts.get(c, 0) for c in reference.counts]
    other_ref, other_cur = reference.other, current.other
    for category, c in current.counts.items():
        if category in reference.counts:
            continue
        if reference.overflowed:
            other_cur += c
        else:
            labels.append(category)
            ref.append(0)
            cur.append(c)
    labels.append(None)
    ref.append(other_ref)
    cur.append(other_cur)
    return tuple(labels), np.array(ref, dtype=np.int64), np.array(cur, dtype=np.int64)


def quantile_groups(reference: NumericSketch, bins: int = DISTANCE_BINS) -> npt.NDArray[np.intp]:
    """Start cells of at most `bins` groups of adjacent cells, each ~1/bins of the reference.

    A group ends at the first cell where the reference's cumulative count reaches
    j/bins of its total, so the outer groups are open-ended (the tails belong to
    them) and a cell heavier than 1/bins is a group of its own. With at most
    `bins` distinct reference values each value gets its own group. For
    `np.add.reduceat`.
    """
    cumulative = np.cumsum(reference.counts)
    total = int(cumulative[-1])
    if total == 0 or bins <= 1:
        return np.zeros(1, dtype=np.intp)
    targets = total * np.arange(1, bins) / bins
    ends = np.searchsorted(cumulative, targets, "left")
    starts = np.unique(ends + 1)
    starts = starts[starts < reference.counts.size]
    return np.concatenate(([0], starts)).astype(np.intp)


def paired_histograms(
    reference: Sketch, current: Sketch, bins: int = DISTANCE_BINS
) -> tuple[IntArray, IntArray]:
    """Reference and current counts over the same bins, for histogram distances.

    Numeric: the sketch cells regrouped into `bins` reference-quantile groups
    (`quantile_groups`). Categorical: the columns of `align_categories`.
    """
    if isinstance(reference, NumericSketch) and isinstance(current, NumericSketch):
        reference.require_same_edges(current)
        starts = quantile_groups(reference, bins)
        return (
            np.add.reduceat(reference.counts, starts),
            np.add.reduceat(current.counts, starts),
        )
    if isinstance(reference, CategoricalSketch) and isinstance(current, CategoricalSketch):
        _, ref, cur = align_categories(reference, current)
        return ref, cur
    raise TypeError(
        f"reference and current must be sketches of the same kind, got "
        f"{type(reference).__name__} and {type(current).__name__}"
    )
