"""Embedding drift statistics against direct computations (MMD, scikit-learn's k-means) and by
simulation (the sequential permutation test's false-alarm rate, the reservoir's uniformity)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as scipy_stats
from sklearn.cluster import KMeans

from mlwarden.stats import embedding, mmd


def test_the_test_statistic_is_the_unbiased_mmd2_of_the_samples() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(40, 5))
    y = rng.normal(0.3, 1.0, size=(30, 5))
    result = embedding.mmd_permutation_test(
        x, y, np.random.default_rng(4), level=0.01, max_permutations=50
    )
    assert result.statistic == pytest.approx(mmd.mmd2_unbiased(x, y, result.sigma), rel=1e-12)
    # The bandwidth is the median heuristic over the pooled sample, as mmd_test's.
    z = np.concatenate([x, y])
    assert result.sigma == pytest.approx(mmd.median_bandwidth(z, np.random.default_rng(4)))


def test_stopping_early_decides_as_the_full_permutation_test_would() -> None:
    """Same data, same level: the stopped test and all permutations reject together."""
    level = 0.01
    for seed in range(30):
        rng = np.random.default_rng(seed)
        shift = 0.0 if seed % 2 else 0.6
        x = rng.normal(size=(60, 4))
        y = rng.normal(shift, 1.0, size=(60, 4))
        stopped = embedding.mmd_permutation_test(
            x, y, np.random.default_rng(seed), level=level, max_permutations=399
        )
        full = embedding.mmd_permutation_test(
            x, y, np.random.default_rng(seed), level=0.999, max_permutations=399
        )
        assert full.permutations == 399 or full.p_value > 0.99
        assert (stopped.p_value <= level) == (full.p_value <= level), seed
        if stopped.permutations < 399:
            assert stopped.p_value > level


def test_false_alarm_rate_on_stationary_samples_is_at_most_the_level() -> None:
    """400 stationary pairs at level 0.05: rejections within a binomial bound of 5%."""
    level = 0.05
    rejections = 0
    runs = 400
    for seed in range(runs):
        rng = np.random.default_rng(1000 + seed)
        x = rng.standard_normal((40, 8))
        y = rng.standard_normal((40, 8))
        result = embedding.mmd_permutation_test(
            x, y, rng, level=level, max_permutations=embedding.permutations_for(level)
        )
        rejections += result.p_value <= level
    # P(Binomial(400, 0.05) > 31) < 0.01
    assert rejections <= 31, rejections
    assert scipy_stats.binom.sf(31, runs, level) < 0.01


def test_a_shift_of_the_mean_is_found_through_the_projection() -> None:
    rng = np.random.default_rng(5)
    dim = 384
    projection = embedding.projection_for("emb", dim)
    assert projection.shape == (dim, embedding.PROJECTED_DIMS)
    x = rng.standard_normal((500, dim)) @ projection
    y = (rng.standard_normal((500, dim)) + 0.15) @ projection
    result = embedding.mmd_permutation_test(x, y, rng, level=0.005, max_permutations=399)
    assert result.p_value <= 0.005
    assert result.statistic >= embedding.MMD2_FLOOR


def test_the_effect_floor_is_a_mean_shift_of_an_eighth_of_the_rms_spread() -> None:
    """The documented approximation MMD^2 ~= 0.3 |m|^2 / tr(S): at |m| = 0.13 sqrt(tr S)
    (anisotropic S, projected from 384 dimensions) MMD^2 is near 0.005."""
    rng = np.random.default_rng(6)
    dim, n = 384, 2000
    scales = rng.uniform(0.2, 2.0, dim)
    direction = rng.standard_normal(dim)
    direction /= np.linalg.norm(direction)
    shift = 0.13 * np.sqrt(np.sum(scales**2)) * direction
    projection = embedding.projection_for("floor", dim)
    x = (rng.standard_normal((n, dim)) * scales) @ projection
    y = (rng.standard_normal((n, dim)) * scales + shift) @ projection
    sigma = mmd.median_bandwidth(np.concatenate([x, y]), rng)
    value = mmd.mmd2_unbiased(x, y, sigma)
    assert 0.6 * embedding.MMD2_FLOOR <= value <= 1.6 * embedding.MMD2_FLOOR


def test_the_projection_is_fixed_by_the_name() -> None:
    a = embedding.projection_for("emb", 100)
    assert np.array_equal(a, embedding.projection_for("emb", 100))
    assert not np.array_equal(a, embedding.projection_for("other", 100))
    assert np.array_equal(embedding.projection_for("narrow", 16), np.eye(16))


def test_the_reservoir_is_a_uniform_sample() -> None:
    """Each of 100 offered rows is kept with probability 10/100: counts over 2,000 runs
    pass a chi-square test of uniformity."""
    kept = np.zeros(100)
    rng = np.random.default_rng(7)
    rows = np.arange(100, dtype=np.float64)[:, None]
    for _ in range(2000):
        reservoir = embedding.Reservoir(10, 1)
        reservoir.add(rows[:37], rng)
        reservoir.add(rows[37:], rng)
        sample = reservoir.sample()
        assert len(sample) == 10 and reservoir.seen == 100
        kept[sample[:, 0].astype(int)] += 1
    assert scipy_stats.chisquare(kept).pvalue > 0.001


def test_recent_keeps_the_latest_rows_with_their_tags() -> None:
    recent = embedding.Recent(5, 1)
    recent.add(np.arange(3.0)[:, None], np.array([0, 1, 2]))
    recent.add(np.arange(3.0, 10.0)[:, None], np.arange(3, 10))
    assert sorted(recent.sample()[:, 0].tolist()) == [5, 6, 7, 8, 9]
    assert sorted(recent.tag_values().tolist()) == [5, 6, 7, 8, 9]
    assert np.array_equal(recent.sample()[:, 0].astype(int), recent.tag_values())


def test_kmeans_matches_scikit_learn() -> None:
    """On well-separated clusters both find the same partition and the same inertia."""
    rng = np.random.default_rng(8)
    centres = rng.normal(0, 10, size=(5, 6))
    x = np.concatenate([c + rng.normal(size=(80, 6)) for c in centres])
    ours = embedding.kmeans(x, 5, np.random.default_rng(9))
    theirs = KMeans(5, n_init=10, random_state=0).fit(x)
    inertia = float(np.sum((x - ours[embedding.nearest(x, ours)]) ** 2))
    assert inertia == pytest.approx(theirs.inertia_, rel=1e-6)
    # The same partition, up to the clusters' numbering.
    a, b = embedding.nearest(x, ours), theirs.labels_
    assert len({(i, j) for i, j in zip(a.tolist(), b.tolist(), strict=True)}) == 5


def test_nearest_is_the_brute_force_argmin() -> None:
    rng = np.random.default_rng(10)
    x, c = rng.normal(size=(50, 3)), rng.normal(size=(4, 3))
    brute = [int(np.argmin([np.sum((row - ci) ** 2) for ci in c])) for row in x]
    assert embedding.nearest(x, c).tolist() == brute


def test_kmeans_with_fewer_distinct_rows_than_k() -> None:
    x = np.array([[0.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    assert len(embedding.kmeans(x, 8, np.random.default_rng(0))) == 2


def test_permutations_reach_the_level() -> None:
    assert embedding.permutations_for(0.005) == 399
    assert embedding.permutations_for(0.5) == 99
    assert embedding.permutations_for(1e-6) == 1999
    with pytest.raises(ValueError, match="level"):
        embedding.permutations_for(0.0)
