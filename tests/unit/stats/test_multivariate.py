"""The multivariate checks against scikit-learn's PCA, a direct MMD, and simulation.

- the PCA (components kept, reconstruction) equals scikit-learn's `PCA(n_components=0.65)`
  on the same rows;
- MMD's statistic equals the definition's on the same subsample (stats/mmd.py's own tests
  check the estimator against Gretton et al.'s pairwise formula);
- NannyML's "butterfly" (two correlated features rotated by 90 degrees: every marginal the
  same, the correlation flipped) is flagged, and the two features are named first;
- on stationary data the per-evaluation rate of significant results is alpha (two-sided
  z-test on out-of-sample errors), measured over many references, and the effect floor
  keeps drift verdicts at none.
"""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
from scipy import stats as sps
from sklearn.decomposition import PCA

from mlwarden.stats import mmd
from mlwarden.stats import multivariate as mv


def butterfly(rng: np.random.Generator, n: int, *, d: int = 25, rotate: bool = False) -> dict:
    """NannyML's butterfly (feature1, feature2 = a shared signal + noise/8), with d - 2 more
    independent features (numeric, one of them heavy-tailed, and a categorical one)."""
    s = rng.standard_normal(n)
    x1 = s + rng.standard_normal(n) / 8
    x2 = s + rng.standard_normal(n) / 8
    if rotate:  # 90 degrees about the z axis: (x1, x2) -> (-x2, x1)
        x1, x2 = -x2, x1
    out: dict[str, tuple[str, object]] = {"f0": ("numeric", x1), "f1": ("numeric", x2)}
    for i in range(2, d - 2):
        out[f"f{i}"] = ("numeric", rng.standard_normal(n))
    out[f"f{d - 2}"] = ("numeric", rng.standard_t(3, n))
    cats = rng.choice(["a", "b", "c", "d"], size=n, p=[0.4, 0.3, 0.2, 0.1])
    out[f"f{d - 1}"] = ("categorical", [str(c) for c in cats])
    return out


def values(columns: dict) -> dict:
    return {name: v for name, (_, v) in columns.items()}


def test_numeric_features_are_standardised_by_the_reference() -> None:
    x = np.array([1.0, 2.0, 3.0, np.nan, 6.0])
    enc = mv.fit_encoding({"x": ("numeric", x), "k": ("numeric", np.full(5, 4.0))})
    finite = x[np.isfinite(x)]
    got = enc.encode({"x": np.array([finite.mean(), np.nan, np.inf, 7.0])}, 4)
    assert got[:, 0] == pytest.approx([0.0, 0.0, 0.0, (7.0 - finite.mean()) / finite.std()])
    assert got[:, 1] == pytest.approx([0.0] * 4)  # absent: missing, imputed with the mean
    assert enc.features[1].scale == 1.0  # a constant reference column is not divided by 0


def test_a_reference_holding_the_largest_float_is_standardised_by_finite_moments() -> None:
    # A 1.8e308 "missing" sentinel: numpy's mean overflowed to inf and its std to NaN, and
    # every encoded value of the column came out -inf (clipped to one constant).
    x = np.random.default_rng(2).normal(size=1000)
    x[::100] = np.finfo(np.float64).max
    enc = mv.fit_encoding({"x": ("numeric", x)})
    (feature,) = enc.features
    assert feature.center == (pytest.approx(statistics.mean(x.tolist()), rel=1e-12),)
    assert feature.scale == pytest.approx(statistics.pstdev(x.tolist()), rel=1e-12)
    got = enc.encode({"x": np.array([0.0, np.finfo(np.float64).max])}, 2)[:, 0]
    assert np.isfinite(got).all() and got[0] < 0 < got[1]


def test_categories_are_one_hot_of_the_top_levels_plus_other_with_unit_block_variance() -> None:
    rng = np.random.default_rng(1)
    levels = [f"l{i}" for i in range(14)]
    ref = [str(v) for v in rng.choice(levels, size=4000)] + [None] * 100
    enc = mv.fit_encoding({"c": ("categorical", ref)}, max_levels=10)
    (feature,) = enc.features
    assert len(feature.levels) == 10 and feature.width == 11
    block = enc.encode({"c": ref}, len(ref))
    assert block.mean(axis=0) == pytest.approx(np.zeros(11), abs=1e-12)
    assert block.var(axis=0).sum() == pytest.approx(1.0)
    rare = next(v for v in levels if v not in feature.levels)
    rows = enc.encode({"c": [feature.levels[0], rare, "never-seen", None]}, 4)
    hot = rows * feature.scale + np.asarray(feature.center)
    assert hot[0] == pytest.approx(np.eye(11)[0])
    for row in hot[1:]:  # another level, an unknown one and a missing value: "other"
        assert row == pytest.approx(np.eye(11)[10])


def test_pca_equals_scikit_learns() -> None:
    rng = np.random.default_rng(2)
    ref = butterfly(rng, 4000)
    sample = mv.build_reference_sample(ref, 4000, seed=7)
    rows = sample.sample()
    for variance in (0.3, 0.65, 0.9):
        mean, components, explained = mv.pca_components(rows, variance)
        sk = PCA(n_components=variance, svd_solver="full").fit(rows)
        assert len(components) == sk.n_components_
        assert explained == pytest.approx(sk.explained_variance_ratio_.sum())
        ones = np.ones(rows.shape[1])
        model = mv.PcaModel(mean, ones, components, explained, np.zeros(0), 0 * ones)
        cur = sample.encoding.encode(values(butterfly(rng, 300, rotate=True)), 300)
        assert cur - model.residuals(cur) == pytest.approx(
            sk.inverse_transform(sk.transform(cur)), abs=1e-9
        )


def test_the_fit_rescales_by_the_fitting_half_and_calibrates_on_the_other() -> None:
    rng = np.random.default_rng(12)
    sample = mv.build_reference_sample(butterfly(rng, 2000), 2000, seed=4)
    rows, owners = sample.sample(), sample.encoding.owners()
    model = mv.fit_pca(rows, 0.65, np.random.default_rng(4), owners)
    order = np.random.default_rng(4).permutation(2000)
    fit, held = rows[order[:1000]], rows[order[1000:]]
    z = (fit - fit.mean(axis=0)) / model.scale
    sk = PCA(n_components=0.65, svd_solver="full").fit(z)
    assert len(model.components) == sk.n_components_
    zh = (held - fit.mean(axis=0)) / model.scale
    expected = np.linalg.norm(zh - sk.inverse_transform(sk.transform(zh)), axis=1)
    assert model.errors == pytest.approx(expected, abs=1e-9)
    assert model.scale[:24] == pytest.approx(fit[:, :24].std(axis=0))  # numeric columns
    block = fit[:, 24:]
    assert model.scale[24:] == pytest.approx(np.sqrt(block.var(axis=0).sum()))


def test_the_pca_check_flags_the_butterfly_and_names_its_features() -> None:
    rng = np.random.default_rng(3)
    ref = butterfly(rng, 5000)
    sample = mv.build_reference_sample(ref, 5000, seed=11)
    model = mv.fit_pca(sample.sample(), 0.65, np.random.default_rng(11), sample.encoding.owners())
    for n in (300, 1000, 5000):
        cur = butterfly(rng, n, rotate=True)
        # Every marginal is unchanged: KS does not see it.
        for name in ("f0", "f1"):
            assert sps.ks_2samp(ref[name][1], cur[name][1]).pvalue > 1e-3
        rows = sample.encoding.encode(values(cur), n)
        result = mv.pca_test(model, rows, sample.encoding, alpha=0.01, min_effect=0.1)
        assert result.drift, result.message()
        assert {name for name, _ in result.contributions[:2]} == {"f0", "f1"}
        assert result.statistic > result.reference_statistic and result.effect >= 0.1
        assert sum(s for _, s in result.contributions) == pytest.approx(1.0)


def test_the_pca_check_is_a_rank_sum_test_on_out_of_sample_errors() -> None:
    rng = np.random.default_rng(4)
    sample = mv.build_reference_sample(butterfly(rng, 2000), 2000, seed=3)
    model = mv.fit_pca(sample.sample(), 0.65, np.random.default_rng(3), sample.encoding.owners())
    assert len(model.errors) == 1000  # the held-out half
    for rotate in (False, True):
        rows = sample.encoding.encode(values(butterfly(rng, 400, rotate=rotate)), 400)
        result = mv.pca_test(model, rows, sample.encoding, alpha=0.01, min_effect=0.1)
        r = model.residuals(rows)
        errors = np.sqrt((r * r).sum(axis=1))
        assert result.statistic == pytest.approx(np.median(errors))
        assert result.mean_error == pytest.approx(errors.mean())
        scipy_p = sps.mannwhitneyu(
            errors, model.errors, method="asymptotic", use_continuity=False
        ).pvalue
        assert result.p_value == pytest.approx(scipy_p, rel=1e-9, abs=1e-300)
        u = sps.mannwhitneyu(errors, model.errors).statistic
        assert result.effect == pytest.approx(2 * u / (400 * 1000) - 1)
    tied = np.array([1.0, 1.0, 2.0, 3.0, 3.0, 3.0])
    other = np.array([0.5, 1.0, 3.0, 4.0])
    expected = sps.mannwhitneyu(tied, other, method="asymptotic", use_continuity=False).pvalue
    assert mv.rank_sum_test(tied, other)[0] == pytest.approx(expected)


def test_stationary_false_alarm_rate_by_simulation() -> None:
    """300 references (1,000 rows of 25 features: normal, heavy-tailed, categorical, a
    correlated pair), one stationary window of 300 rows each: the rate of p <= alpha is
    alpha within binomial error, and the effect floor leaves at most a rare drift verdict."""
    significant = {0.05: 0, 0.01: 0}
    drifts = runs = 0
    for seed in range(300):
        rng = np.random.default_rng(100 + seed)
        sample = mv.build_reference_sample(butterfly(rng, 1000), 1000, seed=seed)
        model = mv.fit_pca(sample.sample(), 0.65, rng, sample.encoding.owners())
        rows = sample.encoding.encode(values(butterfly(rng, 300)), 300)
        result = mv.pca_test(model, rows, sample.encoding, alpha=0.01, min_effect=0.1)
        for alpha in significant:
            significant[alpha] += result.p_value <= alpha
        drifts += result.drift
        runs += 1
    rates = {a: k / runs for a, k in significant.items()}
    print(f"\nPCA, stationary: {runs} windows, p <= alpha: {rates}, {drifts} drift verdicts")
    # binomial(300, 0.05): sd 1.3%; binomial(300, 0.01): sd 0.6%. Three sd above.
    assert rates[0.05] <= 0.05 + 0.038
    assert rates[0.01] <= 0.01 + 0.018
    # At these sizes the floor (0.1) is below what p <= 0.01 needs already: drift verdicts
    # are the significant windows, at alpha per evaluation; alerts need fireAfter in a row
    # (tests/unit/detector/test_multivariate.py measures that).
    assert drifts <= significant[0.01]


def test_mmd_check_equals_the_direct_statistic_and_names_the_butterfly() -> None:
    rng = np.random.default_rng(5)
    ref = butterfly(rng, 600, d=4)
    sample = mv.build_reference_sample(ref, 600, seed=5)
    cur = sample.encoding.encode(values(butterfly(rng, 400, d=4, rotate=True)), 400)
    result = mv.mmd_check(
        sample.sample(),
        cur,
        sample.encoding,
        np.random.default_rng(9),
        alpha=0.01,
        min_effect=0.0,
        permutations=200,
        max_rows=300,
    )
    # The same subsample and bandwidth as the check draws.
    again = np.random.default_rng(9)
    x = sample.sample()[np.sort(again.choice(600, size=300, replace=False))]
    y = cur[np.sort(again.choice(400, size=300, replace=False))]
    sigma = mmd.median_bandwidth(np.concatenate([x, y]), again)
    assert result.statistic == pytest.approx(mmd.mmd2_unbiased(x, y, sigma), rel=1e-9)
    assert result.drift and result.p_value <= 0.01
    assert {name for name, _ in result.contributions[:2]} == {"f0", "f1"}


def test_mmd_check_stays_quiet_on_stationary_rows() -> None:
    alpha, flagged, runs = 0.1, 0, 40
    for seed in range(runs):
        rng = np.random.default_rng(300 + seed)
        sample = mv.build_reference_sample(butterfly(rng, 400, d=5), 400, seed=seed)
        cur = sample.encoding.encode(values(butterfly(rng, 200, d=5)), 200)
        result = mv.mmd_check(
            sample.sample(),
            cur,
            sample.encoding,
            rng,
            alpha=alpha,
            min_effect=0.0,
            permutations=50,
            max_rows=200,
        )
        flagged += result.drift
    # The permutation test is exact: binomial(40, 0.1) > 10 has probability < 0.3%.
    assert flagged <= 10


def test_the_reference_sample_is_bounded_and_float16() -> None:
    rng = np.random.default_rng(6)
    sample = mv.build_reference_sample(butterfly(rng, 12_000), 12_000, seed=1)
    assert sample.rows.dtype == np.float16
    assert len(sample.rows) == mv.REFERENCE_ROWS
    assert sample.encoding.width == 24 + 5  # 24 numeric, one categorical of 4 levels + other
    wide = mv.reference_rows_cap(200)
    assert wide * 200 * 2 <= mv.SAMPLE_BYTES and wide < mv.REFERENCE_ROWS
    assert math.isfinite(float(sample.rows.astype(np.float64).sum()))
