"""The Jensen-Shannon distance between two sketches (numeric or categorical).

JS = sqrt((KL(p || m) + KL(q || m)) / 2) with m = (p + q) / 2, logarithms base 2, so
it lies in [0, 1] (1: disjoint supports); it is finite with empty bins, needs no
epsilon, and equals `scipy.spatial.distance.jensenshannon(p, q, base=2)` on the same
counts (`rel_entr` from `distributions`, equal to scipy's). Bins are those of
`sketch.paired_histograms`: the categories (with unseen ones and `other`), or ten
reference-quantile bins of a numeric sketch. Statistic and effect: the distance. No
p-value."""

from __future__ import annotations

import math

import numpy as np

from mlwarden.stats.distributions import rel_entr
from mlwarden.stats.result import TestResult
from mlwarden.stats.sketch import Sketch, paired_histograms


def score(reference: Sketch, current: Sketch) -> TestResult:
    """JS distance (base 2) of current against reference; an empty side gives 0."""
    ref, cur = paired_histograms(reference, current)
    n1, n2 = int(ref.sum()), int(cur.sum())
    if n1 == 0 or n2 == 0:
        return TestResult("jensenshannon", 0.0, None, 0.0, n1, n2)
    p = ref / n1
    q = cur / n2
    m = (p + q) / 2.0
    js = (float(np.sum(rel_entr(p, m))) + float(np.sum(rel_entr(q, m)))) / math.log(2.0)
    distance = min(math.sqrt(max(js, 0.0) / 2.0), 1.0)
    return TestResult("jensenshannon", distance, None, distance, n1, n2)
