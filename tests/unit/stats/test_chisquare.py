"""Chi-square homogeneity over the reference-vs-current table: equal to scipy's."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from mlwarden.stats import chisquare
from mlwarden.stats.sketch import CategoricalSketch, NumericSketch


def cats(values: list[str]) -> CategoricalSketch:
    return CategoricalSketch.from_values(values)


def test_by_hand() -> None:
    # table [[10, 10], [20, 0]]: rows 20, 20; columns 30, 10; N = 40
    # expected [[15, 5], [15, 5]]; chi2 = 25/15 + 25/5 + 25/15 + 25/5 = 13.333...
    # dof 1; shares (.5, .5) vs (1, 0): TVD = (|.5 - 1| + |.5 - 0|) / 2 = 0.5
    r = chisquare.score(cats(["a"] * 10 + ["b"] * 10), cats(["a"] * 20))
    assert r.statistic == pytest.approx(40 / 3, abs=1e-12)
    assert r.p_value == pytest.approx(stats.chi2.sf(40 / 3, 1), abs=1e-15)
    assert r.effect == pytest.approx(0.5, abs=1e-12)


@pytest.mark.parametrize("seed", range(6))
def test_equals_scipy_chi2_contingency(seed: int) -> None:
    rng = np.random.default_rng(seed)
    reference = rng.choice(list("abcdef"), 2000, p=[0.3, 0.25, 0.2, 0.1, 0.1, 0.05])
    current = rng.choice(list("abcdefz"), 600)  # z unseen; uniform: drifted
    r = chisquare.score(cats(list(reference)), cats(list(current)))
    labels = sorted(set(reference) | set(current))
    table = np.array(
        [[np.sum(reference == c) for c in labels], [np.sum(current == c) for c in labels]]
    )
    s = stats.chi2_contingency(table, correction=False)
    assert r.statistic == pytest.approx(s.statistic, rel=1e-12)
    assert r.p_value == pytest.approx(s.pvalue, rel=1e-9, abs=1e-300)
    shares = table / table.sum(axis=1, keepdims=True)
    assert r.effect == pytest.approx(0.5 * np.abs(shares[0] - shares[1]).sum(), rel=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_binary_tvd_is_ks_d_of_the_01_coding(seed: int) -> None:
    rng = np.random.default_rng(seed)
    ref = rng.random(3000) < 0.30
    cur = rng.random(2000) < 0.36
    r = chisquare.score(
        cats(["y" if v else "n" for v in ref]), cats(["y" if v else "n" for v in cur])
    )
    d = stats.ks_2samp(ref.astype(float), cur.astype(float)).statistic
    assert r.effect == pytest.approx(d, abs=1e-12)
    assert r.effect == pytest.approx(abs(ref.mean() - cur.mean()), abs=1e-12)


@pytest.mark.parametrize("x", [0.0, 0.5, 3.0, 40.0, 400.0])
@pytest.mark.parametrize("dof", [1, 3, 20])
def test_p_value_is_scipy_stats_chi2_sf(x: float, dof: int) -> None:
    from scipy.special import chdtrc

    assert chdtrc(dof, x) == pytest.approx(stats.chi2.sf(x, dof), rel=1e-12, abs=1e-300)


def test_unseen_categories_are_columns_and_other_too() -> None:
    # ref: a, b (and c, d in `other` with max_categories=2); cur: a, new.
    ref = CategoricalSketch.from_values(list("aabbcd"), max_categories=2)
    cur = CategoricalSketch.from_values(list("aa") + ["x"] * 4)
    # Reference overflowed: x could hide in its `other`, so it is counted there:
    # columns a, b, other -> [[2, 2, 2], [2, 0, 4]].
    table = np.array([[2, 2, 2], [2, 0, 4]])
    r = chisquare.score(ref, cur)
    assert r.statistic == pytest.approx(stats.chi2_contingency(table, correction=False).statistic)
    # No overflow: x is its own column; the all-zero `other` column is dropped.
    ref2 = cats(list("aabb"))
    table2 = np.array([[2, 2, 0], [2, 0, 4]])
    r2 = chisquare.score(ref2, cur)
    assert r2.statistic == pytest.approx(
        stats.chi2_contingency(table2, correction=False).statistic, rel=1e-12
    )


def test_degenerate_tables() -> None:
    assert chisquare.score(cats(["a"] * 5), cats(["a"] * 3)).p_value == 1.0
    empty = chisquare.score(cats(["a", "b"]), CategoricalSketch())
    assert (empty.statistic, empty.p_value, empty.effect) == (0.0, 1.0, 0.0)


def test_refuses_numeric_sketches() -> None:
    with pytest.raises(TypeError, match="categorical"):
        chisquare.score(NumericSketch(np.array([1.0])), NumericSketch(np.array([1.0])))


@given(
    st.lists(st.sampled_from("abcd") | st.none(), max_size=80),
    st.lists(st.sampled_from("abcdef") | st.none(), max_size=80),
)
def test_p_and_tvd_in_unit_interval(reference: list[str | None], current: list[str | None]) -> None:
    r = chisquare.score(
        CategoricalSketch.from_values(reference), CategoricalSketch.from_values(current)
    )
    assert r.p_value is not None and 0.0 <= r.p_value <= 1.0
    assert 0.0 <= r.effect <= 1.0
