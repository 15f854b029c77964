"""Wasserstein-1 from sketches: exactly scipy's wasserstein_distance on lossless sketches."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import stats

from mlwarden.stats import wasserstein
from mlwarden.stats.sketch import CategoricalSketch, NumericSketch, numeric_edges

Draw = Callable[[np.random.Generator, float], np.ndarray]


def sketches(reference: np.ndarray, current: np.ndarray) -> tuple[NumericSketch, NumericSketch]:
    edges = numeric_edges(reference)
    return NumericSketch.from_values(reference, edges), NumericSketch.from_values(current, edges)


def test_by_hand_shift_by_one() -> None:
    # Every unit of mass moves by 1: W = 1. Reference std (ddof=0) of 0,1,2 is sqrt(2/3).
    r = wasserstein.score(*sketches(np.array([0.0, 1, 2]), np.array([1.0, 2, 3])))
    assert r.statistic == pytest.approx(1.0, abs=1e-15)
    assert r.effect == pytest.approx(1 / math.sqrt(2 / 3), abs=1e-15)
    assert r.p_value is None


def test_by_hand_tail_is_closed_by_cell_sums() -> None:
    # ref {0, 1}, cur {5}: F_ref = .5 on [0,1), 1 on [1,5); F_cur = 0 below 5.
    # W = .5*1 + 1*4 = 4.5 (half the mass moves 5, half moves 4). std_ref = .5 -> 9.
    r = wasserstein.score(*sketches(np.array([0.0, 1.0]), np.array([5.0])))
    assert r.statistic == pytest.approx(4.5, abs=1e-15)
    assert r.effect == pytest.approx(9.0, abs=1e-14)


def test_by_hand_one_missing_value_inside_a_gap() -> None:
    # ref {1, 1, 3}, cur {2}: F_ref = 2/3 on [1, 3); F_cur jumps 0 -> 1 at 2, so
    # F_ref - F_cur changes sign inside the gap (1, 3). |.| = 2/3 on [1,2), 1/3 on [2,3):
    # W = 2/3 + 1/3 = 1, exact because the current's gap mass is a single value.
    r = wasserstein.score(*sketches(np.array([1.0, 1, 3]), np.array([2.0])))
    assert r.statistic == pytest.approx(1.0, abs=1e-15)


def lossless_current(rng: np.random.Generator, reference: np.ndarray, m: int) -> np.ndarray:
    """Reference values plus values past both ends: what lossless W is exact on."""
    inside = rng.choice(np.unique(reference), m)
    outside = np.round(rng.normal(reference.mean(), 3 * reference.std() + 1, m) * 4) / 4
    past = (outside < reference.min()) | (outside > reference.max())
    return np.where(past, outside, inside)


@pytest.mark.parametrize("seed", range(8))
def test_matches_scipy_exactly_on_lossless_sketches(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, m = rng.integers(20, 3000, size=2)
    reference = rng.poisson(6, n).astype(float)
    current = lossless_current(rng, reference, m)
    r = wasserstein.score(*sketches(reference, current))
    assert r.statistic == pytest.approx(
        stats.wasserstein_distance(reference, current), rel=1e-12, abs=1e-12
    )
    assert r.effect == pytest.approx(r.statistic / reference.std(), rel=1e-12)


@pytest.mark.parametrize(
    "draw",
    [
        lambda rng, shift: rng.normal(shift, 1.0, 5000),
        lambda rng, shift: rng.lognormal(shift, 1.0, 5000),
        lambda rng, shift: rng.standard_t(3, 5000) + shift,
    ],
    ids=["normal", "lognormal", "t3"],
)
@pytest.mark.parametrize("shift", [0.0, 0.1, 0.5])
def test_close_to_scipy_with_quantile_edges(draw: Draw, shift: float) -> None:
    # 128 quantile edges, n = m = 5000: the centroid model is inexact only in cells
    # where the two CDFs cross. Measured over 30 seeds x 3 shifts: at most 0.0018
    # (normal), 0.0071 (lognormal), 0.0088 (t3) reference standard deviations.
    rng = np.random.default_rng(7)
    reference, current = draw(rng, 0.0), draw(rng, shift)
    r = wasserstein.score(*sketches(reference, current))
    exact = stats.wasserstein_distance(reference, current)
    assert abs(r.statistic - exact) <= 0.02 * reference.std()


def test_constant_reference() -> None:
    same = wasserstein.score(*sketches(np.full(10, 3.0), np.full(5, 3.0)))
    moved = wasserstein.score(*sketches(np.full(10, 3.0), np.full(5, 4.0)))
    assert same.effect == 0.0
    assert moved.statistic == 1.0 and moved.effect == math.inf


def test_single_cell_sketch_uses_the_means() -> None:
    ref = NumericSketch(np.array([]))
    ref.add(np.array([0.0, 2.0]))
    cur = ref.empty_like()
    cur.add(np.array([5.0, 7.0]))
    assert wasserstein.score(ref, cur).statistic == 5.0


def test_empty_side_and_wrong_kind() -> None:
    ref = NumericSketch.from_values(np.arange(5.0))
    assert wasserstein.score(ref, ref.empty_like()).statistic == 0.0
    with pytest.raises(TypeError, match="numeric"):
        wasserstein.score(CategoricalSketch(), CategoricalSketch())


@given(
    arrays(np.int64, st.integers(1, 60), elements=st.integers(-5, 5)),
    arrays(np.int64, st.integers(1, 60), elements=st.integers(-9, 9)),
)
def test_lossless_equals_scipy_for_integers(reference: np.ndarray, current: np.ndarray) -> None:
    # Current values inside the reference range that the reference never took would
    # fall in a gap; map them onto a reference value to stay in the exact case.
    inside = (current >= reference.min()) & (current <= reference.max())
    current = np.where(inside & ~np.isin(current, reference), reference[0], current)
    r = wasserstein.score(*sketches(reference.astype(float), current.astype(float)))
    assert r.statistic == pytest.approx(
        stats.wasserstein_distance(reference, current), rel=1e-12, abs=1e-12
    )


@given(
    arrays(np.float64, st.integers(1, 60), elements=st.floats(-1e3, 1e3)),
    arrays(np.float64, st.integers(1, 60), elements=st.floats(-1e3, 1e3)),
)
def test_between_mean_shift_and_a_crossing_bound(
    reference: np.ndarray, current: np.ndarray
) -> None:
    # Whatever the data, the centroid model keeps the integral of F_ref - F_cur, so
    # W >= |mean difference|; and it never exceeds moving every current value to
    # every reference value, max |x - y|.
    r = wasserstein.score(*sketches(reference, current))
    shift = abs(reference.mean() - current.mean())
    assert r.statistic >= shift - 1e-9 * (1 + shift)
    spread = max(current.max(), reference.max()) - min(current.min(), reference.min())
    assert r.statistic <= spread + 1e-9 * (1 + spread)
    assert r.effect >= 0


LARGEST = float(np.finfo(np.float64).max)


@pytest.mark.parametrize("sentinel", [LARGEST, -LARGEST])
def test_a_sentinel_near_the_largest_float_in_the_current_window_is_a_finite_huge_distance(
    sentinel: float,
) -> None:
    # A feature of 0..12 whose upstream starts writing 1.8e308 ("missing") into a tenth of
    # the records: the cell sums of 1.8e308 overflowed to inf and W came out NaN, which
    # no floor catches. Below a positive feature, the tail's width itself passes 1.8e308.
    rng = np.random.default_rng(9)
    reference = rng.poisson(6, 2000).astype(float)
    current = rng.choice(np.unique(reference), 1000)
    current[::10] = sentinel
    with np.errstate(over="raise", invalid="raise"):
        r = wasserstein.score(*sketches(reference, current))
    assert r.statistic == pytest.approx(stats.wasserstein_distance(reference, current), rel=1e-12)
    assert r.statistic > 1e306 and math.isfinite(r.effect) and r.effect > 1e306


def test_a_sentinel_in_the_reference_gives_it_a_huge_std_not_a_nan_one() -> None:
    # The sum of squares of a reference holding 1.8e308 overflowed: its std was NaN and
    # every window's effect +inf (an alarm on every look). Its std is now the true one,
    # M sqrt(p (1 - p)) for a share p at M; a window without the sentinel is W = p M
    # away, an effect of sqrt(p / (1 - p)) = 0.032 here: under the 0.1 floor.
    rng = np.random.default_rng(10)
    reference = rng.normal(size=5000)
    reference[:5] = LARGEST
    ref, cur = sketches(reference, rng.normal(size=1000))
    assert ref.std == pytest.approx(float(np.std(reference / 2**1023)) * 2**1023, rel=1e-9)
    r = wasserstein.score(ref, cur)
    assert r.statistic == pytest.approx(0.001 * LARGEST, rel=1e-3)
    assert r.effect == pytest.approx(math.sqrt(0.001 / 0.999), rel=1e-3) and r.effect < 0.1
