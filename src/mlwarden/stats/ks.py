"""The two-sample Kolmogorov-Smirnov test, read off two numeric sketches.

D is the largest gap between the reference and current empirical CDFs. The
CDFs are known exactly at every cell boundary of the sketches; when the
reference's distinct values are the edges (a lossless sketch) the reference CDF
is flat inside every open cell, so the supremum is reached at a boundary and D
equals `scipy.stats.ks_2samp`'s exactly. With quantile edges D can only be
underestimated, by at most the mass the two samples put inside one cell.

The p-value is the one `ks_2samp(method="asymp")` gives for that D: the
two-sided Smirnov distribution `kstwo` at D with n = round(n1*n2/(n1+n2)). Ties
(discrete data) make it conservative, as in scipy. With one value a side
(n = round(1/2) = 0) scipy returns NaN; this returns 1. Effect size: D itself.
"""

from __future__ import annotations

import numpy as np
from scipy import stats as _scipy_stats

from mlwarden.stats.result import TestResult
from mlwarden.stats.sketch import NumericSketch, Sketch


def score(reference: Sketch, current: Sketch) -> TestResult:
    """KS D and asymptotic p-value; an empty side gives D=0, p=1."""
    if not isinstance(reference, NumericSketch) or not isinstance(current, NumericSketch):
        raise TypeError("the KS test compares numeric sketches")
    reference.require_same_edges(current)
    n1, n2 = reference.total, current.total
    if n1 == 0 or n2 == 0:
        return TestResult("ks", 0.0, 1.0, 0.0, n1, n2)
    cdf1 = np.cumsum(reference.counts) / n1
    cdf2 = np.cumsum(current.counts) / n2
    d = float(np.max(np.abs(cdf1 - cdf2)))
    # Exactly scipy's asymptotic branch: sizes as floats, larger first.
    m, n = sorted([float(n1), float(n2)], reverse=True)
    en = m * n / (m + n)
    if np.round(en) < 1:  # one value a side: kstwo has no n = 0 (scipy returns NaN)
        return TestResult("ks", d, 1.0, d, n1, n2)
    p = float(np.clip(_scipy_stats.kstwo.sf(d, np.round(en)), 0.0, 1.0))
    return TestResult("ks", d, p, d, n1, n2)
