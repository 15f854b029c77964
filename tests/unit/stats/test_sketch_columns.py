"""Whole-column sketch construction (`mlwarden check`) equals the batch-by-batch one."""

from __future__ import annotations

from collections import Counter

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from mlwarden.stats.sketch import CategoricalSketch, NumericSketch, edges_of_sorted, numeric_edges

values = st.lists(
    st.one_of(
        st.floats(allow_nan=True, allow_infinity=True, width=64),
        st.integers(-5, 5).map(float),
        st.none(),
    ),
    max_size=400,
)


def same(a: NumericSketch, b: NumericSketch) -> None:
    assert np.array_equal(a.edges, b.edges)
    assert np.array_equal(a.counts, b.counts)
    np.testing.assert_allclose(a.means, b.means, rtol=1e-12, atol=0)
    assert (a.missing, a.infinite, a.n) == (b.missing, b.infinite, b.n)
    assert (a.min, a.max) == (b.min, b.max)
    np.testing.assert_allclose([a.shift, a.rms], [b.shift, b.rms], rtol=1e-12, atol=1e-300)


@settings(max_examples=200, deadline=None)
@given(values, st.integers(1, 40))
def test_from_array_is_edges_then_add(xs: list[float | None], max_bins: int) -> None:
    x = np.array([np.nan if v is None else v for v in xs], dtype=np.float64)
    slow = NumericSketch(numeric_edges(x, max_bins))
    slow.add(x)
    same(NumericSketch.from_array(x, max_bins=max_bins), slow)


@settings(max_examples=100, deadline=None)
@given(values, values)
def test_from_array_over_given_edges_is_add(
    ref: list[float | None], cur: list[float | None]
) -> None:
    r = np.array([np.nan if v is None else v for v in ref], dtype=np.float64)
    c = np.array([np.nan if v is None else v for v in cur], dtype=np.float64)
    edges = numeric_edges(r)
    slow = NumericSketch(edges)
    slow.add(c)
    same(NumericSketch.from_array(c, edges), slow)


def test_edges_of_sorted_is_numeric_edges() -> None:
    rng = np.random.default_rng(0)
    for x in (rng.normal(size=5000), rng.integers(0, 50, 5000).astype(float), np.zeros(10)):
        assert np.array_equal(edges_of_sorted(np.sort(x)), numeric_edges(x))
    assert edges_of_sorted(np.array([])).size == 0


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.one_of(st.sampled_from("abcdefghij"), st.none()), max_size=300), st.integers(1, 6)
)
def test_from_counts_is_from_values(cats: list[str | None], bound: int) -> None:
    tally = Counter(c for c in cats if c is not None)  # first-appearance order
    fast = CategoricalSketch.from_counts(tally, missing=cats.count(None), max_categories=bound)
    slow = CategoricalSketch.from_values(cats, max_categories=bound)
    assert list(fast.counts.items()) == list(slow.counts.items())
    assert (fast.other, fast.missing) == (slow.other, slow.missing)
