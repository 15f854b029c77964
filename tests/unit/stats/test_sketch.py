"""Sketches: cell layout, edges, running moments, merge/subtract, bounded categories."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mlwarden.stats.sketch import (
    CategoricalSketch,
    NumericSketch,
    align_categories,
    numeric_edges,
    paired_histograms,
    quantile_groups,
)

# Finite values up to 1e150: squares of larger ones overflow the running moments
# (a RuntimeWarning and an infinite std, not an error).
floats_with_specials = arrays(
    np.float64,
    st.integers(0, 60),
    elements=st.floats(-1e150, 1e150) | st.sampled_from([0.0, 1.0, 2.0, np.nan, np.inf, -np.inf]),
)
small_floats = arrays(
    np.float64,
    st.integers(0, 60),
    elements=st.floats(-1e6, 1e6) | st.sampled_from([np.nan, np.inf, -np.inf, 1.0, 2.0]),
)
categories = st.lists(st.sampled_from(["a", "b", "c", "d", "e", "f", "g"]) | st.none())


# ---------------------------------------------------------------------- edges


def test_edges_are_the_distinct_values_when_few() -> None:
    ref = np.array([3.0, 1.0, 2.0, 2.0, np.nan, np.inf, -np.inf, 1.0])
    assert numeric_edges(ref).tolist() == [1.0, 2.0, 3.0]


def test_edges_are_quantiles_with_min_and_max_when_many() -> None:
    ref = np.random.default_rng(0).normal(size=10_000)
    edges = numeric_edges(ref, max_bins=128)
    assert edges.size == 128
    assert edges[0] == ref.min() and edges[-1] == ref.max()
    assert np.all(np.diff(edges) > 0)
    # Evenly spaced in rank: each gap holds ~1/127 of the reference.
    inside = np.histogram(ref, bins=edges)[0] / ref.size
    assert inside.max() < 1.5 / 127


def test_edges_dedupe_heavy_ties() -> None:
    ref = np.concatenate([np.zeros(7000), np.random.default_rng(1).exponential(size=3000)])
    edges = numeric_edges(ref, max_bins=50)
    assert edges[0] == 0.0 and np.all(np.diff(edges) > 0) and edges.size < 50


def test_edges_of_nothing_finite_is_a_single_cell() -> None:
    edges = numeric_edges(np.array([np.nan, np.inf]))
    assert edges.size == 0
    sketch = NumericSketch(edges)
    sketch.add(np.array([1.0, 2.0, np.nan]))
    assert sketch.counts.tolist() == [2] and sketch.missing == 1


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="max_bins"):
        numeric_edges(np.arange(3.0), max_bins=0)
    with pytest.raises(ValueError, match="strictly increasing"):
        NumericSketch(np.array([1.0, 1.0]))
    with pytest.raises(ValueError, match="max_categories"):
        CategoricalSketch(0)


# ---------------------------------------------------------------------- numeric


def test_cells_by_hand() -> None:
    # edges 1, 2, 3 -> cells (-inf,1) {1} (1,2) {2} (2,3) {3} (3,inf)
    sketch = NumericSketch(np.array([1.0, 2.0, 3.0]))
    sketch.add(np.array([0.0, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0]))
    assert sketch.counts.tolist() == [1, 1, 1, 1, 1, 1, 2]
    assert sketch.means.tolist() == [0.0, 1.0, 1.5, 2.0, 2.5, 3.0, 4.5]
    assert (sketch.n, sketch.min, sketch.max, sketch.mean) == (8, 0.0, 5.0, 19.0 / 8)


def test_add_matches_per_value_lookup() -> None:
    rng = np.random.default_rng(2)
    edges = numeric_edges(rng.normal(size=5000))
    x = rng.normal(size=3000) * 1.3
    sketch = NumericSketch.from_values(x, edges)
    cells = np.searchsorted(edges, x, "left") + np.searchsorted(edges, x, "right")
    assert sketch.counts.tolist() == np.bincount(cells, minlength=2 * edges.size + 1).tolist()
    expected_sums = np.bincount(cells, weights=x, minlength=2 * edges.size + 1)
    counts = np.maximum(sketch.counts, 1)
    np.testing.assert_allclose(sketch.means, expected_sums / counts, rtol=0, atol=1e-12)


def test_missing_and_infinite_are_counted_apart() -> None:
    sketch = NumericSketch(np.array([0.0]))
    sketch.add(np.array([1.0, np.nan, np.inf, -np.inf, -1.0, np.nan]))
    sketch.add([None, 2.0])  # numpy reads None as NaN
    assert (sketch.missing, sketch.infinite, sketch.total) == (3, 2, 3)
    assert sketch.counts.tolist() == [1, 0, 2]


def test_mean_and_std_match_numpy_even_far_from_zero() -> None:
    x = 1.7e9 + np.random.default_rng(3).normal(scale=0.5, size=10_000)
    sketch = NumericSketch(numeric_edges(x))
    for chunk in np.array_split(x, 7):
        sketch.add(chunk)
    assert sketch.mean == pytest.approx(x.mean(), rel=1e-15)
    # sum(x^2)/n - mean^2 would cancel to garbage here (mean^2 ~ 3e18, eps * 3e18 ~ 600);
    # moments about a middle edge keep the std to the precision of the mean itself.
    assert sketch.std == pytest.approx(x.std(), rel=1e-7)


def test_empty_sketch_summaries() -> None:
    sketch = NumericSketch(np.array([1.0]))
    assert sketch.total == 0 and np.isnan(sketch.mean) and np.isnan(sketch.std)


def test_merge_requires_same_edges() -> None:
    a = NumericSketch(np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="different edges"):
        a.merge(NumericSketch(np.array([1.0, 3.0])))
    with pytest.raises(ValueError, match="different edges"):
        a.subtract(NumericSketch(np.array([1.0])))
    a.merge(NumericSketch(np.array([1.0, 2.0])))  # equal values, different arrays: fine


def test_subtract_what_was_never_added_raises_and_changes_nothing() -> None:
    a = NumericSketch.from_values(np.array([1.0, 2.0]))
    b = NumericSketch.from_values(np.array([1.0, 1.0]), a.edges)
    before = a.counts.copy()
    with pytest.raises(ValueError, match="not merged"):
        a.subtract(b)
    assert a.counts.tolist() == before.tolist()


def test_copy_is_independent_and_empty_like_is_empty() -> None:
    a = NumericSketch.from_values(np.arange(10.0))
    b = a.copy()
    b.add(np.array([3.0]))
    assert a.total == 10 and b.total == 11
    e = a.empty_like()
    assert e.total == 0 and e.edges is a.edges and e.counts.sum() == 0


def test_sliding_window_is_sum_of_chunks() -> None:
    rng = np.random.default_rng(4)
    edges = numeric_edges(rng.normal(size=2000))
    chunks = [rng.normal(size=500) for _ in range(6)]
    sketches = [NumericSketch.from_values(c, edges) for c in chunks]
    window = NumericSketch(edges)
    for s in sketches[:4]:
        window.merge(s)
    window.subtract(sketches[0])
    window.merge(sketches[4])
    direct = NumericSketch.from_values(np.concatenate(chunks[1:5]), edges)
    assert window.counts.tolist() == direct.counts.tolist()
    np.testing.assert_allclose(window.means, direct.means, atol=1e-12)
    assert window.mean == pytest.approx(direct.mean, abs=1e-12)
    assert window.std == pytest.approx(direct.std, rel=1e-9)


@given(floats_with_specials)
def test_numeric_add_never_raises_and_conserves_totals(values: np.ndarray) -> None:
    sketch = NumericSketch(np.array([-1.0, 0.0, 1e300]))
    sketch.add(values)
    assert sketch.total + sketch.missing + sketch.infinite == values.size
    assert int(sketch.counts.sum()) == sketch.total == int(np.isfinite(values).sum())
    assert sketch.missing == int(np.isnan(values).sum())


@given(small_floats, small_floats, small_floats)
def test_numeric_merge_subtract_round_trip(
    reference: np.ndarray, a_values: np.ndarray, b_values: np.ndarray
) -> None:
    edges = numeric_edges(reference, max_bins=8)
    a = NumericSketch.from_values(a_values, edges)
    b = NumericSketch.from_values(b_values, edges)
    ab = a.copy()
    ab.merge(b)
    assert ab.total == a.total + b.total
    assert ab.counts.tolist() == (a.counts + b.counts).tolist()
    ab.subtract(b)
    assert ab.counts.tolist() == a.counts.tolist()
    assert (ab.n, ab.missing, ab.infinite) == (a.n, a.missing, a.infinite)
    np.testing.assert_allclose(ab.means, a.means, rtol=1e-9, atol=1e-3)
    if a.n:
        assert ab.mean == pytest.approx(a.mean, rel=1e-9, abs=1e-3)


# ---------------------------------------------------------------------- categorical


def test_categorical_counts_missing_and_other() -> None:
    sketch = CategoricalSketch(max_categories=2)
    sketch.add(["a", "b", None, "a", "c", "d", "b"])
    assert sketch.counts == {"a": 2, "b": 2}
    assert (sketch.other, sketch.missing, sketch.total) == (2, 1, 6)
    assert sketch.overflowed


def test_categorical_subtract_frees_slots() -> None:
    a = CategoricalSketch.from_values(["x"], max_categories=2)
    b = CategoricalSketch.from_values(["y", "z"], max_categories=2)
    a.merge(b)  # y takes the free slot, z overflows into other
    assert a.counts == {"x": 1, "y": 1} and a.other == 1
    a.subtract(b)
    assert a.counts == {"x": 1} and a.other == 0
    a.add(["w"])
    assert a.counts == {"x": 1, "w": 1}


def test_categorical_subtract_what_was_never_added_raises() -> None:
    a = CategoricalSketch.from_values(["x"])
    with pytest.raises(ValueError, match="not merged"):
        a.subtract(CategoricalSketch.from_values(["y"]))
    assert a.counts == {"x": 1} and a.other == 0


def test_kinds_do_not_mix() -> None:
    with pytest.raises(TypeError):
        CategoricalSketch().merge(NumericSketch(np.array([1.0])))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        NumericSketch(np.array([1.0])).merge(CategoricalSketch())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="same kind"):
        paired_histograms(CategoricalSketch(), NumericSketch(np.array([1.0])))


@given(categories, categories, st.integers(1, 4))
def test_categorical_merge_subtract_round_trip(
    a_values: list[str | None], b_values: list[str | None], bound: int
) -> None:
    a = CategoricalSketch.from_values(a_values, max_categories=bound)
    b = CategoricalSketch.from_values(b_values, max_categories=bound)
    ab = a.copy()
    ab.merge(b)
    assert len(ab.counts) <= bound
    assert ab.total == a.total + b.total and ab.missing == a.missing + b.missing
    ab.subtract(b)
    assert (ab.counts, ab.other, ab.missing) == (a.counts, a.other, a.missing)


@given(categories, st.integers(1, 4))
def test_categorical_add_conserves_totals(values: list[str | None], bound: int) -> None:
    sketch = CategoricalSketch.from_values(values, max_categories=bound)
    assert sketch.total + sketch.missing == len(values)
    assert len(sketch.counts) <= bound


# ---------------------------------------------------------------------- pairing


def test_align_categories_puts_unseen_then_other() -> None:
    ref = CategoricalSketch.from_values(["a", "a", "b"])
    cur = CategoricalSketch.from_values(["b", "new", "new"])
    labels, r, c = align_categories(ref, cur)
    assert labels == ("a", "b", "new", None)
    assert r.tolist() == [2, 1, 0, 0] and c.tolist() == [0, 1, 2, 0]


def test_align_categories_folds_unknowns_into_other_when_reference_overflowed() -> None:
    ref = CategoricalSketch.from_values(["a", "b", "c"], max_categories=2)  # c in other
    cur = CategoricalSketch.from_values(["c", "a"])
    labels, r, c = align_categories(ref, cur)
    assert labels == ("a", "b", None)
    assert r.tolist() == [1, 1, 1] and c.tolist() == [1, 0, 1]


def test_quantile_groups_give_each_value_a_group_when_few() -> None:
    # 5 values at 20 % each: groups {tail, 0} {gap, 1} ... {gap, 4} {upper tail}.
    ref = NumericSketch.from_values(np.repeat(np.arange(5.0), 20))
    assert quantile_groups(ref, 10).tolist() == [0, 2, 4, 6, 8, 10]
    cur = NumericSketch.from_values(np.array([0.0, 0.5, 9.0]), ref.edges)
    r, c = paired_histograms(ref, cur)
    assert r.tolist() == [20, 20, 20, 20, 20, 0] and c.tolist() == [1, 1, 0, 0, 0, 1]


def test_quantile_groups_split_continuous_reference_evenly() -> None:
    x = np.random.default_rng(5).normal(size=10_000)
    ref = NumericSketch.from_values(x)
    r, _ = paired_histograms(ref, ref.copy(), bins=10)
    assert r.size == 10
    assert np.all(np.abs(r / x.size - 0.1) < 1 / 127)  # one 1/127 quantile cell


# ----------------------------------------------- values near the largest float (sentinels)

LARGEST = float(np.finfo(np.float64).max)


@pytest.mark.parametrize("big", [LARGEST, -LARGEST, 1e200])
def test_values_near_the_largest_float_keep_the_moments_finite_and_right(big: float) -> None:
    # 1.8e308 is a common "missing" sentinel. Its sums (and 1e200's squares) overflow a
    # float; kept as means, the moments stay finite, checked against exact arithmetic
    # (statistics.mean and pstdev work in fractions).
    rng = np.random.default_rng(5)
    x = rng.normal(size=1000)
    x[::10] = big
    sketch = NumericSketch(numeric_edges(rng.normal(size=2000)))
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # none, even hidden
        for chunk in np.array_split(x, 3):
            sketch.add(chunk)
    assert sketch.mean == pytest.approx(statistics.mean(x.tolist()), rel=1e-12)
    assert sketch.std == pytest.approx(statistics.pstdev(x.tolist()), rel=1e-12)
    tail = 0 if big < 0 else -1
    in_tail = x[x < sketch.edges[0]] if big < 0 else x[x > sketch.edges[-1]]
    assert sketch.means[tail] == pytest.approx(statistics.mean(in_tail.tolist()), rel=1e-12)
    assert np.isfinite(sketch.means).all()


def test_a_sentinel_leaving_a_sliding_window_leaves_it_as_if_never_there() -> None:
    rng = np.random.default_rng(6)
    edges = numeric_edges(rng.normal(size=2000))
    chunks = [rng.normal(size=300) for _ in range(4)]
    chunks[0][::3] = LARGEST
    window = NumericSketch(edges)
    parts = [NumericSketch.from_values(c, edges) for c in chunks]
    for part in parts:
        window.merge(part)
    assert math.isfinite(window.mean) and math.isfinite(window.std) and window.std > 1e307
    window.subtract(parts[0])
    direct = NumericSketch.from_values(np.concatenate(chunks[1:]), edges)
    assert window.counts.tolist() == direct.counts.tolist()
    # The sentinel's cell empties, so its mean is exactly 0 again; the other cells and
    # the mean never held it. The std's square cancels what remains (the sentinel's
    # square is 1e616 times the rest), so only a bound is kept: within the cell range.
    np.testing.assert_allclose(window.means, direct.means, rtol=1e-12, atol=1e-12)
    assert window.mean == pytest.approx(direct.mean, rel=1e-9, abs=1e-12)
    assert 0.0 <= window.std < 1e307


any_finite = arrays(
    np.float64,
    st.integers(1, 60),
    elements=st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([LARGEST, -LARGEST, 0.0, 1.0]),
)


@given(any_finite, any_finite)
def test_moments_of_any_finite_values_are_finite_and_right_to_the_largest_value(
    reference: np.ndarray, values: np.ndarray
) -> None:
    # Exact arithmetic (fractions) as the oracle. Moments are kept about the origin (a
    # middle edge of the reference): the mean is right to the rounding of the largest of
    # the values and the origin, the std to about the square root of that (rms^2 - mean^2).
    sketch = NumericSketch(numeric_edges(reference, max_bins=8))
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        for chunk in np.array_split(values, 3):
            sketch.add(chunk)
    top = max(float(np.max(np.abs(values))), abs(sketch.origin))
    assert abs(sketch.mean - statistics.mean(values.tolist())) <= 1e-12 * top
    assert abs(sketch.std - statistics.pstdev(values.tolist())) <= 1e-7 * top
    assert np.isfinite(sketch.means).all()
