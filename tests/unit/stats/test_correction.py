"""Multiple-testing correction: Bonferroni and BH, equal to scipy's adjusted p-values."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from mlwarden.stats.correction import adjusted, benjamini_hochberg, bonferroni

# A textbook set (m = 10, alpha = 0.05). Bonferroni rejects p <= 0.005: only 0.001.
# BH compares p_(i) with i * 0.05 / 10 = 0.005, 0.010, 0.015, ...: p_(1) = 0.001 and
# p_(2) = 0.008 pass, p_(3) = 0.039 > 0.015 and no later one passes -> two rejections.
KNOWN = [0.001, 0.008, 0.039, 0.041, 0.042, 0.06, 0.074, 0.205, 0.212, 0.216]


def test_known_set() -> None:
    assert bonferroni(KNOWN, 0.05) == [True] + [False] * 9
    assert benjamini_hochberg(KNOWN, 0.05) == [True, True] + [False] * 8


def test_adjusted_by_hand() -> None:
    p = [0.01, 0.02, 0.03, 0.04, 0.05]
    assert adjusted(p, "bonferroni") == pytest.approx([0.05, 0.1, 0.15, 0.2, 0.25])
    # p_(i) * 5 / i = 0.05 for every i.
    assert adjusted(p, "benjamini-hochberg") == pytest.approx([0.05] * 5)
    assert adjusted([0.5, 0.9], "bonferroni") == [1.0, 1.0]
    assert adjusted(p, "none") == p


def test_none_is_not_tested_and_not_counted() -> None:
    p = [None, 0.01, None, 0.02]
    assert adjusted(p, "bonferroni") == [None, pytest.approx(0.02), None, pytest.approx(0.04)]
    assert bonferroni(p, 0.05) == [False, True, False, True]
    assert adjusted([None, None], "benjamini-hochberg") == [None, None]
    assert adjusted([], "bonferroni") == []


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="unknown correction"):
        adjusted([0.1], "holm")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        adjusted([1.5], "bonferroni")


@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=40))
def test_bh_equals_scipy(p: list[float]) -> None:
    expected = stats.false_discovery_control(p, method="bh")
    got = adjusted(p, "benjamini-hochberg")
    assert got == pytest.approx(list(expected), abs=1e-12)


@given(st.lists(st.floats(0.0, 1.0) | st.none(), max_size=40), st.floats(0.001, 0.2))
def test_properties(p: list[float | None], alpha: float) -> None:
    bon = adjusted(p, "bonferroni")
    bh = adjusted(p, "benjamini-hochberg")
    for raw, b, h in zip(p, bon, bh, strict=True):
        assert (raw is None) == (b is None) == (h is None)
        if raw is not None and b is not None and h is not None:
            assert 0.0 <= raw <= h <= b <= 1.0 or h == pytest.approx(b)
    # BH rejects everything Bonferroni rejects.
    assert all(
        h or not b for b, h in zip(bonferroni(p, alpha), benjamini_hochberg(p, alpha), strict=True)
    )
    tested = np.array([x for x in p if x is not None])
    assert sum(bonferroni(p, alpha)) == int(np.sum(tested * len(tested) <= alpha))
