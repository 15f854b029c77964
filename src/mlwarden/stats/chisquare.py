"""The chi-square test of homogeneity between two categorical sketches.

The table has two rows (reference, current) and one column per category: the
reference's categories, the categories seen only in the current window (a new
category is evidence of drift, not noise to drop), and `other` (see
`sketch.align_categories`); all-zero columns are dropped. The statistic and
p-value are those of `scipy.stats.chi2_contingency(table, correction=False)`:
sum of (observed - expected)^2 / expected, K - 1 degrees of freedom. Like any
chi-square test it is approximate when many expected counts are below ~5.

Effect size: Cramér's V = sqrt(chi2 / (N * (min(2, K) - 1))) = sqrt(chi2 / N),
in [0, 1]. A table with fewer than two columns or an empty row has nothing to
compare: statistic 0, p-value 1, effect 0.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats as _scipy_stats

from mlwarden.stats.result import TestResult
from mlwarden.stats.sketch import CategoricalSketch, Sketch, align_categories


def score(reference: Sketch, current: Sketch) -> TestResult:
    """Chi-square statistic, p-value and Cramér's V."""
    if not isinstance(reference, CategoricalSketch) or not isinstance(current, CategoricalSketch):
        raise TypeError("the chi-square test compares categorical sketches")
    _, ref, cur = align_categories(reference, current)
    observed = np.stack([ref, cur]).astype(np.float64)
    observed = observed[:, observed.sum(axis=0) > 0]
    n1, n2 = int(ref.sum()), int(cur.sum())
    if observed.shape[1] < 2 or n1 == 0 or n2 == 0:
        return TestResult("chisquare", 0.0, 1.0, 0.0, n1, n2)
    total = observed.sum()
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0)) / total
    chi2 = float(np.sum((observed - expected) ** 2 / expected))
    p = float(_scipy_stats.chi2.sf(chi2, observed.shape[1] - 1))
    v = min(math.sqrt(chi2 / total), 1.0)
    return TestResult("chisquare", chi2, p, v, n1, n2)
