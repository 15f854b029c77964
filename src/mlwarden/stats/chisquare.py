"""The chi-square test of homogeneity between two categorical sketches.

The table has two rows (reference, current) and one column per category: the reference's
categories, the categories seen only in the current window (a new category is evidence
of drift, not noise to drop), and `other` (see `sketch.align_categories`); all-zero
columns are dropped. The statistic and p-value are those of
`scipy.stats.chi2_contingency(table, correction=False)`: sum of (observed - expected)^2
/ expected, K - 1 degrees of freedom (the p-value from `distributions.chi2_sf`, equal to
scipy's `chi2.sf` without importing scipy). Like any chi-square test it is approximate
when many expected counts are below ~5.

Effect size: the total variation distance between the two rows' shares,
TVD = 1/2 * sum_k |p_k - q_k|, in [0, 1]: the largest difference, over any set of
categories, between the share the reference and the current window give it. It is
on the scale of the numeric KS D (the largest difference over half-lines): for a
binary column TVD = |p - q| = KS D of the same values coded 0/1, so a rate moving
from 0.30 to 0.36 has effect 0.06 whichever way it is coded (Cramér's V, used
until issue 19, gave it 0.064 against a floor of 0.1 while its 0/1 coding had D =
0.06 against 0.05). A table with fewer than two columns or an empty row has
nothing to compare: statistic 0, p-value 1, effect 0.
"""

from __future__ import annotations

import numpy as np

from mlwarden.stats.distributions import chi2_sf
from mlwarden.stats.result import TestResult
from mlwarden.stats.sketch import CategoricalSketch, Sketch, align_categories


def total_variation(reference: np.ndarray, current: np.ndarray) -> float:
    """1/2 * sum |p - q| between two count vectors over the same categories (0 if one is empty)."""
    n1, n2 = float(reference.sum()), float(current.sum())
    if n1 == 0 or n2 == 0:
        return 0.0
    return min(0.5 * float(np.abs(reference / n1 - current / n2).sum()), 1.0)


def chi2_table(observed: np.ndarray) -> float:
    """Pearson's chi-square of a 2 x K table of counts whose columns are all non-empty."""
    total = observed.sum()
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0)) / total
    return float(np.sum((observed - expected) ** 2 / expected))


def score(reference: Sketch, current: Sketch) -> TestResult:
    """Chi-square statistic, p-value and the total variation distance (the effect)."""
    if not isinstance(reference, CategoricalSketch) or not isinstance(current, CategoricalSketch):
        raise TypeError("the chi-square test compares categorical sketches")
    _, ref, cur = align_categories(reference, current)
    observed = np.stack([ref, cur]).astype(np.float64)
    observed = observed[:, observed.sum(axis=0) > 0]
    n1, n2 = int(ref.sum()), int(cur.sum())
    if observed.shape[1] < 2 or n1 == 0 or n2 == 0:
        return TestResult("chisquare", 0.0, 1.0, 0.0, n1, n2)
    chi2 = chi2_table(observed)
    p = float(np.clip(chi2_sf(observed.shape[1] - 1, chi2), 0.0, 1.0))
    return TestResult("chisquare", chi2, p, total_variation(observed[0], observed[1]), n1, n2)
