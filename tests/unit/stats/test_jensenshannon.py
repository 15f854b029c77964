"""Jensen-Shannon distance over paired histograms: equal to scipy's, in [0, 1]."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.spatial.distance import jensenshannon as scipy_js

from mlwarden.stats import jensenshannon
from mlwarden.stats.sketch import (
    CategoricalSketch,
    NumericSketch,
    numeric_edges,
    paired_histograms,
)


def cats(values: str) -> CategoricalSketch:
    return CategoricalSketch.from_values(list(values))


def test_by_hand() -> None:
    # Disjoint supports: the maximum, 1.
    assert jensenshannon.score(cats("aa"), cats("bbb")).statistic == pytest.approx(1.0)
    # p = (.5, .5), q = (1, 0), m = (.75, .25):
    # KL(p||m) = .5 log2(2/3) + .5 log2(2) = .207519; KL(q||m) = log2(4/3) = .415037
    # JS = sqrt((.207519 + .415037) / 2) = sqrt(.311278) = .557923
    r = jensenshannon.score(cats("ab"), cats("aa"))
    assert r.statistic == pytest.approx(0.557923, abs=1e-6)
    assert r.effect == r.statistic and r.p_value is None
    assert jensenshannon.score(cats("abab"), cats("ba")).statistic == 0.0


@pytest.mark.parametrize("seed", range(5))
def test_equals_scipy_on_categories(seed: int) -> None:
    rng = np.random.default_rng(seed)
    reference = rng.choice(list("abcdefg"), 3000, p=[0.3, 0.2, 0.2, 0.1, 0.1, 0.05, 0.05])
    current = rng.choice(list("abcdefgxy"), 700)  # x, y unseen
    ref, cur = CategoricalSketch.from_values(reference), CategoricalSketch.from_values(current)
    p, q = paired_histograms(ref, cur)
    expected = scipy_js(p, q, base=2)
    assert jensenshannon.score(ref, cur).statistic == pytest.approx(expected, abs=1e-12)
    # and the histogram is the plain count of each category
    labels = sorted(set(reference) | set(current))
    p2 = [int(np.sum(reference == c)) for c in labels]
    q2 = [int(np.sum(current == c)) for c in labels]
    assert expected == pytest.approx(scipy_js(p2, q2, base=2), abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_equals_scipy_on_lossless_numeric(seed: int) -> None:
    # Eight integer values: each is its own quantile bin; the extra (empty) upper-tail
    # bin adds nothing to JS.
    rng = np.random.default_rng(seed)
    reference = rng.integers(0, 8, 4000).astype(float)
    current = rng.binomial(7, 0.4 + 0.05 * seed, 900).astype(float)
    edges = numeric_edges(reference)
    r = jensenshannon.score(
        NumericSketch.from_values(reference, edges), NumericSketch.from_values(current, edges)
    )
    p = np.bincount(reference.astype(int), minlength=8)
    q = np.bincount(current.astype(int), minlength=8)
    assert r.statistic == pytest.approx(scipy_js(p, q, base=2), abs=1e-12)


def test_empty_side() -> None:
    assert jensenshannon.score(cats("ab"), CategoricalSketch()).statistic == 0.0


@given(st.lists(st.sampled_from("abcde")), st.lists(st.sampled_from("abcdefg")))
def test_in_unit_interval_and_symmetric(reference: list[str], current: list[str]) -> None:
    a, b = CategoricalSketch.from_values(reference), CategoricalSketch.from_values(current)
    r = jensenshannon.score(a, b).statistic
    assert 0.0 <= r <= 1.0 and math.isfinite(r)
    assert jensenshannon.score(b, a).statistic == pytest.approx(r, abs=1e-12)


@given(
    arrays(np.float64, st.integers(0, 80), elements=st.floats(-10, 10) | st.just(np.nan)),
    arrays(np.float64, st.integers(0, 80), elements=st.floats(-20, 20) | st.just(-np.inf)),
)
def test_in_unit_interval_numeric(reference: np.ndarray, current: np.ndarray) -> None:
    edges = numeric_edges(reference)
    r = jensenshannon.score(
        NumericSketch.from_values(reference, edges), NumericSketch.from_values(current, edges)
    )
    assert 0.0 <= r.statistic <= 1.0
