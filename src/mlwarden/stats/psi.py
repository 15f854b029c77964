"""The population stability index between two sketches (numeric or categorical).

PSI = sum over bins of (q - p) * ln(q / p), with p the reference and q the
current proportions: the symmetrised Kullback-Leibler divergence. Bins are the
categories (with unseen ones and `other`) or, for numeric sketches, ten
reference-quantile bins (`sketch.paired_histograms`): PSI's value under no drift
grows with the number of bins, and deciles are how PSI is conventionally read
(< 0.1 stable, 0.1-0.25 moderate shift, > 0.25 major shift).

A proportion of zero on either side would make PSI infinite, so a zero
proportion is read as EPSILON (0.01 %), the common convention: a bin seen in one
sample only then adds (q - p) * ln(q / 1e-4). Every term is >= 0, so PSI >= 0.
Statistic and effect: PSI. No p-value.
"""

from __future__ import annotations

from typing import Final

import numpy as np

from mlwarden.stats.result import TestResult
from mlwarden.stats.sketch import Sketch, paired_histograms

EPSILON: Final = 1e-4


def score(reference: Sketch, current: Sketch) -> TestResult:
    """PSI of current against reference; an empty side gives 0."""
    ref, cur = paired_histograms(reference, current)
    n1, n2 = int(ref.sum()), int(cur.sum())
    if n1 == 0 or n2 == 0:
        return TestResult("psi", 0.0, None, 0.0, n1, n2)
    p = np.maximum(ref / n1, EPSILON)
    q = np.maximum(cur / n2, EPSILON)
    psi = float(np.sum((q - p) * np.log(q / p)))
    return TestResult("psi", psi, None, psi, n1, n2)
