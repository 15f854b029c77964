"""Multiple-testing correction across the features checked in one evaluation.

Checking 25 features at alpha = 0.01 each raises a false alarm in about 22 % of
evaluations; a correction keeps the whole evaluation's error rate at alpha.
Bonferroni bounds the family-wise error rate (any false alarm) and suits alerts
that page someone; Benjamini-Hochberg bounds the expected fraction of false
alarms among the features flagged and keeps more power when many features
drift at once.

p-values may be None (distance-only tests, or a feature that was skipped): they
are "not tested", do not count towards m, come back as None from `adjusted` and
are never rejected. A hypothesis is rejected when its adjusted p-value is <= alpha.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import numpy as np

METHODS: Final = ("bonferroni", "benjamini-hochberg", "none")


def adjusted(p_values: Sequence[float | None], method: str) -> list[float | None]:
    """Adjusted p-values, in input order.

    bonferroni: min(1, p * m); benjamini-hochberg: the step-up adjusted p-values
    of `scipy.stats.false_discovery_control(p, method="bh")` (as R's p.adjust);
    none: p unchanged. m is the number of p-values that are not None.
    """
    if method not in METHODS:
        raise ValueError(f"unknown correction {method!r}; expected one of {', '.join(METHODS)}")
    tested = [i for i, p in enumerate(p_values) if p is not None]
    out: list[float | None] = [None] * len(p_values)
    if not tested:
        return out
    ps = np.array([p_values[i] for i in tested], dtype=np.float64)
    if np.any((ps < 0) | (ps > 1)) or np.any(np.isnan(ps)):
        raise ValueError("p-values must be in [0, 1]")
    m = ps.size
    if method == "bonferroni":
        adj = np.minimum(ps * m, 1.0)
    elif method == "benjamini-hochberg":
        order = np.argsort(ps)
        ranked = ps[order] * (m / np.arange(1, m + 1, dtype=np.float64))
        np.minimum.accumulate(ranked[::-1], out=ranked[::-1])
        adj = np.empty(m)
        adj[order] = np.clip(ranked, 0.0, 1.0)
    else:
        adj = ps
    for i, a in zip(tested, adj.tolist(), strict=True):
        out[i] = a
    return out


def rejected(p_values: Sequence[float | None], alpha: float, method: str) -> list[bool]:
    """Which hypotheses `method` rejects at level alpha (None: never)."""
    return [a is not None and a <= alpha for a in adjusted(p_values, method)]


def bonferroni(p_values: Sequence[float | None], alpha: float) -> list[bool]:
    """Rejections controlling the family-wise error rate at alpha: p <= alpha / m."""
    return rejected(p_values, alpha, "bonferroni")


def benjamini_hochberg(p_values: Sequence[float | None], alpha: float) -> list[bool]:
    """Rejections controlling the false discovery rate at alpha (step-up procedure)."""
    return rejected(p_values, alpha, "benjamini-hochberg")
