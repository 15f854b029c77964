"""The Wasserstein-1 (earth mover's) distance between two numeric sketches.

W = integral of |F_ref(x) - F_cur(x)| dx. Both CDFs are known at every edge;
edge cells are single points and add no area. Inside each open cell (a gap
between two edges, or a tail) the sketch knows each sample's count and the mean
of its values there, and models that mass as a point mass at its centroid.
That model keeps the integral of F_ref - F_cur over the cell exact, so the cell
contributes exactly whenever the difference keeps its sign inside it, or each
sample's values in it are one distinct value. In particular:

* the tails are exact, with no need for the running min/max (which a sliding
  window cannot subtract): only the reference's own extremes bound them;
* on a lossless sketch (edges = the reference's distinct values) W equals
  `scipy.stats.wasserstein_distance` whenever the current values are reference
  values or lie outside the reference range; it is approximate only in a gap
  where the current CDF crosses the flat reference CDF through several values;
* with 128 quantile edges it is within about 0.01 reference standard
  deviations of the exact distance (measured on normal, lognormal and t3 data,
  n = 5000 a side).

Statistic: W in the feature's units. Effect: W divided by the reference standard
deviation (ddof=0), so one floor fits every feature; a constant reference gives
0 if nothing moved and +inf otherwise. No p-value.
"""

from __future__ import annotations

import numpy as np

from mlwarden.stats.result import TestResult
from mlwarden.stats.sketch import NumericSketch, Sketch


def score(reference: Sketch, current: Sketch) -> TestResult:
    """W1 distance, normalised by the reference std for the effect size."""
    if not isinstance(reference, NumericSketch) or not isinstance(current, NumericSketch):
        raise TypeError("the Wasserstein distance compares numeric sketches")
    reference.require_same_edges(current)
    n1, n2 = reference.total, current.total
    if n1 == 0 or n2 == 0:
        return TestResult("wasserstein", 0.0, None, 0.0, n1, n2)
    w = _distance(reference, current)
    std = reference.std
    if std > 0:
        effect = w / std
    elif w == 0:
        effect = 0.0
    else:
        effect = float("inf")
    return TestResult("wasserstein", w, None, effect, n1, n2)


def _distance(reference: NumericSketch, current: NumericSketch) -> float:
    edges = reference.edges
    k = edges.size
    n1, n2 = reference.total, current.total
    if k == 0:  # one unbounded cell: the centroid model is the difference of the means
        return abs(reference.mean - current.mean)
    open_cells = np.arange(0, 2 * k + 1, 2)
    cnt1, cnt2 = reference.counts[open_cells], current.counts[open_cells]
    # D = F_ref - F_cur just inside the left end of each open cell.
    below1 = np.cumsum(reference.counts)[open_cells] - cnt1
    below2 = np.cumsum(current.counts)[open_cells] - cnt2
    d_left = below1 / n1 - below2 / n2
    # Each sample's mass in the cell, as a point mass at the centroid of its values.
    # (NaN where a sample has none: the bounds below skip it.)
    at1 = np.where(cnt1 > 0, reference.means[open_cells], np.nan)
    at2 = np.where(cnt2 > 0, current.means[open_cells], np.nan)
    lo = np.concatenate(([np.fmin(np.fmin(at1[0], at2[0]), edges[0])], edges))
    hi = np.concatenate((edges, [np.fmax(np.fmax(at1[-1], at2[-1]), edges[-1])]))
    at1 = np.clip(np.where(cnt1 > 0, at1, lo), lo, hi)
    at2 = np.clip(np.where(cnt2 > 0, at2, lo), lo, hi)
    jump1, jump2 = cnt1 / n1, -cnt2 / n2
    first, second = np.minimum(at1, at2), np.maximum(at1, at2)
    d_middle = d_left + np.where(at1 <= at2, jump1, jump2)
    d_right = d_left + jump1 + jump2
    # Over half-widths, doubled at the end (both exact): a width from -1.8e308 to
    # +1.8e308 (a sentinel value below a positive feature's edges) does not overflow.
    area = (
        np.abs(d_left) * (first * 0.5 - lo * 0.5)
        + np.abs(d_middle) * (second * 0.5 - first * 0.5)
        + np.abs(d_right) * (hi * 0.5 - second * 0.5)
    )
    return 2.0 * float(area.sum())
