"""PSI over paired histograms: hand cases, scipy's entropies, epsilon, non-negativity."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import stats

from mlwarden.stats import psi
from mlwarden.stats.sketch import CategoricalSketch, NumericSketch, numeric_edges


def test_by_hand() -> None:
    # p = (.5, .5), q = (.75, .25):
    # (.75 - .5) ln(1.5) + (.25 - .5) ln(.5) = .25 * .405465 + .25 * .693147 = .274653
    ref = CategoricalSketch.from_values(["a"] * 50 + ["b"] * 50)
    cur = CategoricalSketch.from_values(["a"] * 75 + ["b"] * 25)
    r = psi.score(ref, cur)
    assert r.statistic == pytest.approx(0.25 * math.log(1.5) + 0.25 * math.log(2), abs=1e-15)
    assert r.statistic == pytest.approx(0.274653, abs=1e-6)
    assert r.effect == r.statistic and r.p_value is None


def test_by_hand_unseen_category_uses_epsilon() -> None:
    # ref a:100; cur a:50 new:50. p = (1, eps), q = (.5, .5); the `other` column is
    # empty on both sides and adds (eps - eps) ln 1 = 0.
    # (.5 - 1) ln(.5) + (.5 - 1e-4) ln(.5 / 1e-4) = .346574 + 4.257744 = 4.604318
    ref = CategoricalSketch.from_values(["a"] * 100)
    cur = CategoricalSketch.from_values(["a"] * 50 + ["new"] * 50)
    expected = -0.5 * math.log(0.5) + (0.5 - psi.EPSILON) * math.log(0.5 / psi.EPSILON)
    assert psi.score(ref, cur).statistic == pytest.approx(expected, abs=1e-12)
    assert psi.score(ref, cur).statistic == pytest.approx(4.604318, abs=1e-6)


@pytest.mark.parametrize("seed", range(5))
def test_is_the_symmetrised_kl_of_scipy(seed: int) -> None:
    # Same support on both sides (no empty bins): PSI = KL(q||p) + KL(p||q) exactly.
    rng = np.random.default_rng(seed)
    reference = rng.integers(0, 6, 2000).astype(float)
    current = rng.choice(6, 800, p=[0.1, 0.1, 0.2, 0.2, 0.2, 0.2]).astype(float)
    edges = numeric_edges(reference)
    r = psi.score(
        NumericSketch.from_values(reference, edges), NumericSketch.from_values(current, edges)
    )
    p = np.bincount(reference.astype(int), minlength=6) / reference.size
    q = np.bincount(current.astype(int), minlength=6) / current.size
    assert r.statistic == pytest.approx(stats.entropy(q, p) + stats.entropy(p, q), rel=1e-12)
    cats = psi.score(
        CategoricalSketch.from_values(reference.astype(int).astype(str)),
        CategoricalSketch.from_values(current.astype(int).astype(str)),
    )
    assert cats.statistic == pytest.approx(r.statistic, rel=1e-12)


def test_stationary_numeric_stays_small_and_shift_is_large() -> None:
    # Ten reference-quantile bins: under no drift PSI ~ 9 * (1/n + 1/m) = 0.018 here.
    rng = np.random.default_rng(8)
    reference = rng.normal(size=1000)
    edges = numeric_edges(reference)
    ref = NumericSketch.from_values(reference, edges)
    same = psi.score(ref, NumericSketch.from_values(rng.normal(size=1000), edges))
    moved = psi.score(ref, NumericSketch.from_values(rng.normal(1.0, 1.0, 1000), edges))
    assert same.statistic < 0.05
    assert moved.statistic > 0.5


def test_empty_side_and_mixed_kinds() -> None:
    ref = CategoricalSketch.from_values(["a"])
    assert psi.score(ref, ref.empty_like()).statistic == 0.0
    with pytest.raises(TypeError):
        psi.score(ref, NumericSketch(np.array([1.0])))


@given(
    arrays(np.float64, st.integers(0, 80), elements=st.floats(-10, 10) | st.just(np.nan)),
    arrays(np.float64, st.integers(0, 80), elements=st.floats(-20, 20) | st.just(np.inf)),
)
def test_non_negative_numeric(reference: np.ndarray, current: np.ndarray) -> None:
    edges = numeric_edges(reference)
    r = psi.score(
        NumericSketch.from_values(reference, edges), NumericSketch.from_values(current, edges)
    )
    assert r.statistic >= 0.0 and math.isfinite(r.statistic)


@given(st.lists(st.sampled_from("abcdef")), st.lists(st.sampled_from("abcdefgh")))
def test_non_negative_categorical(reference: list[str], current: list[str]) -> None:
    r = psi.score(CategoricalSketch.from_values(reference), CategoricalSketch.from_values(current))
    assert r.statistic >= 0.0
