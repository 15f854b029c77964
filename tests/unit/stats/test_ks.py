"""KS from sketches: exactly scipy's ks_2samp(method="asymp") on lossless sketches."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import stats

from mlwarden.stats import ks
from mlwarden.stats.sketch import CategoricalSketch, NumericSketch, numeric_edges


def sketches(reference: np.ndarray, current: np.ndarray) -> tuple[NumericSketch, NumericSketch]:
    edges = numeric_edges(reference)
    return NumericSketch.from_values(reference, edges), NumericSketch.from_values(current, edges)


def test_by_hand() -> None:
    # x:      1    2    3    4    5    6
    # F_ref:  .25  .5   .75  1    1    1
    # F_cur:  0    0    .25  .5   .75  1      -> D = .5 (at 2, 3 and 4)
    r = ks.score(*sketches(np.array([1.0, 2, 3, 4]), np.array([3.0, 4, 5, 6])))
    assert r.statistic == 0.5 and r.effect == 0.5
    assert (r.n_reference, r.n_current) == (4, 4)
    # en = 4*4/(4+4) = 2: the p-value is P(D_2 >= 0.5) under the Smirnov law.
    assert r.p_value == stats.kstwo.sf(0.5, 2)


@pytest.mark.parametrize("seed", range(8))
def test_matches_scipy_exactly_on_lossless_sketches(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, m = rng.integers(20, 3000, size=2)
    reference = rng.poisson(6, n).astype(float)
    # Shifted, rescaled and half-integer current values: inside gaps and past both tails.
    current = np.round(rng.normal(6 + seed % 3, 2 + seed % 2, m) * 2) / 2
    r = ks.score(*sketches(reference, current))
    s = stats.ks_2samp(reference, current, method="asymp")
    assert r.statistic == pytest.approx(s.statistic, abs=1e-12)
    assert r.p_value == pytest.approx(s.pvalue, rel=1e-12, abs=1e-300)


@pytest.mark.parametrize("seed", range(5))
def test_close_to_scipy_with_quantile_edges(seed: int) -> None:
    # 128 quantile edges, n = m = 5000: the sketch sees the CDFs only at cell
    # boundaries, so D can only be underestimated, by at most the mass of one
    # cell (~1/127 of each sample). Measured over 50 seeds: at most 0.0018.
    rng = np.random.default_rng(seed)
    reference = rng.normal(size=5000)
    current = rng.normal(0.1 * seed, 1.0, 5000)
    r = ks.score(*sketches(reference, current))
    s = stats.ks_2samp(reference, current, method="asymp")
    assert 0 <= s.statistic - r.statistic <= 0.005
    assert r.p_value is not None
    assert (r.p_value < 0.01) == (s.pvalue < 0.01)


def test_empty_side_has_nothing_to_test() -> None:
    ref = NumericSketch.from_values(np.arange(5.0))
    r = ks.score(ref, ref.empty_like())
    assert (r.statistic, r.p_value, r.effect) == (0.0, 1.0, 0.0)


def test_refuses_categorical_sketches() -> None:
    with pytest.raises(TypeError, match="numeric"):
        ks.score(CategoricalSketch(), CategoricalSketch())


values = arrays(
    np.float64,
    st.integers(1, 80),
    elements=st.floats(-1e6, 1e6) | st.sampled_from([np.nan, np.inf, 0.0, 1.0]),
)


@given(values, values)
def test_d_and_p_are_in_range(reference: np.ndarray, current: np.ndarray) -> None:
    r = ks.score(*sketches(reference, current))
    assert 0.0 <= r.statistic <= 1.0
    assert r.p_value is not None and 0.0 <= r.p_value <= 1.0


@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning")  # scipy at n = m = 1
@given(
    arrays(np.int64, st.integers(1, 60), elements=st.integers(-5, 5)),
    arrays(np.int64, st.integers(1, 60), elements=st.integers(-8, 8)),
)
def test_lossless_equals_scipy_for_any_integers(reference: np.ndarray, current: np.ndarray) -> None:
    r = ks.score(*sketches(reference.astype(float), current.astype(float)))
    s = stats.ks_2samp(reference, current, method="asymp")
    assert r.statistic == pytest.approx(s.statistic, abs=1e-12)
    if reference.size == current.size == 1:  # scipy: NaN (kstwo with n = 0)
        assert r.p_value == 1.0
    else:
        assert r.p_value == pytest.approx(s.pvalue, abs=1e-12)


# (n, points on the tail's grid): scipy's kstwo.sf costs about 1 s a call in the tail at
# n = 1M (0.09 s at 100k), so the largest sizes are checked on a coarser tail grid.
@pytest.mark.parametrize(
    ("n", "tail"), [(10_000, 100), (12_345, 100), (30_000, 100), (100_000, 16), (1_000_000, 5)]
)
def test_large_n_p_value_is_the_kolmogorov_limit_never_below_scipy(n: int, tail: int) -> None:
    # From ks.ASYMPTOTIC_N on, kstwo.sf's cost grows with n in the tail; the limit is
    # used instead. It must never be below scipy's (no alarm scipy would not raise) and
    # stay within 1.6% of it where a decision is made (p >= 1e-4), 2.1% down to 1e-6.
    assert n >= ks.ASYMPTOTIC_N
    # sqrt(n) * D: up to 1.2 (p >= 0.11) scipy is quick; the tail reaches p = 4e-22.
    grid = np.concatenate([np.linspace(0.3, 1.2, 20), np.linspace(1.3, 5.0, tail)])
    for x in grid:
        d = x / np.sqrt(n)
        exact = stats.kstwo.sf(d, n)
        ours = ks.p_value(d, n)
        assert ours >= exact * (1 - 1e-12)
        if exact >= 1e-4:
            assert ours <= exact * 1.016
        elif exact >= 1e-6:
            assert ours <= exact * 1.021


def test_small_n_p_value_is_scipys_exactly() -> None:
    for n in (1, 2, 50, 999, ks.ASYMPTOTIC_N - 1):
        for d in (0.0, 0.01, 0.05, 0.3, 1.0):
            assert ks.p_value(d, n) == stats.kstwo.sf(d, n)


@pytest.mark.parametrize("seed", range(3))
def test_large_samples_same_verdicts_as_scipy(seed: int) -> None:
    # 40k a side (n = 20k), lossless sketches (integers): D is scipy's exactly and the
    # p-value within the limit's margin, so the verdict at 0.01 is scipy's.
    rng = np.random.default_rng(seed)
    reference = rng.poisson(40, 40_000).astype(float)
    current = rng.poisson(40 + 0.1 * seed, 40_000).astype(float)
    r = ks.score(*sketches(reference, current))
    s = stats.ks_2samp(reference, current, method="asymp")
    assert r.statistic == pytest.approx(s.statistic, abs=1e-12)
    assert r.p_value == pytest.approx(s.pvalue, rel=0.016, abs=1e-300)
    assert r.p_value >= s.pvalue
    assert (r.p_value < 0.01) == (s.pvalue < 0.01)
