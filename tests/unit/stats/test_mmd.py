"""MMD against a direct computation from its definition, and its false-alarm rate by simulation."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from mlwarden.stats import mmd


def _direct_mmd2(x: np.ndarray, y: np.ndarray, sigma: float) -> float:
    """Gretton et al.'s unbiased MMD^2, pair by pair, as written in the paper."""

    def k(a: np.ndarray, b: np.ndarray) -> float:
        return math.exp(-float(np.sum((a - b) ** 2)) / (2 * sigma * sigma))

    n, m = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i, j in itertools.permutations(range(n), 2)) / (n * (n - 1))
    yy = sum(k(y[i], y[j]) for i, j in itertools.permutations(range(m), 2)) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(n) for j in range(m)) / (n * m)
    return xx + yy - 2 * xy


def test_the_unbiased_estimate_equals_the_definition() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(17, 3))
    y = rng.normal(0.5, 1.2, size=(23, 3))
    for sigma in (0.5, 1.0, 3.0):
        assert mmd.mmd2_unbiased(x, y, sigma) == pytest.approx(_direct_mmd2(x, y, sigma), rel=1e-9)


def test_the_permutation_statistics_equal_the_estimate_of_each_relabelling() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(12, 2))
    y = rng.normal(size=(9, 2))
    z = np.concatenate([x, y])
    labels = np.zeros((21, 4))
    labels[:12, 0] = 1
    picks = [rng.permutation(21)[:12] for _ in range(3)]
    for col, pick in enumerate(picks, start=1):
        labels[pick, col] = 1
    got = mmd._mmd2_from_kernel(mmd.gaussian_kernel(z, z, 1.3), labels, 12)
    for col in range(4):
        mask = labels[:, col] == 1
        assert got[col] == pytest.approx(_direct_mmd2(z[mask], z[~mask], 1.3), rel=1e-9)


def test_the_median_bandwidth_is_the_median_pairwise_distance() -> None:
    rng = np.random.default_rng(3)
    z = rng.normal(size=(60, 4))
    exact = np.median([np.linalg.norm(a - b) for a, b in itertools.combinations(z, 2)])
    assert mmd.median_bandwidth(z, rng) == pytest.approx(exact, rel=0.05)
    assert mmd.median_bandwidth(np.ones((10, 2)), rng) == 1.0


def test_a_correlation_flip_with_unchanged_marginals_is_detected() -> None:
    rng = np.random.default_rng(4)
    ref = rng.multivariate_normal([0, 0], [[1, 0.8], [0.8, 1]], size=400)
    cur = rng.multivariate_normal([0, 0], [[1, -0.8], [-0.8, 1]], size=400)
    result = mmd.mmd_test(ref, cur, rng, permutations=200)
    assert result.p_value < 0.01
    assert result.statistic > result.threshold


def test_the_false_alarm_rate_is_at_most_alpha_on_stationary_samples() -> None:
    """Permutation p-values are exact under exchangeability: at alpha 0.05, about 5% reject."""
    rng = np.random.default_rng(5)
    trials = 300
    rejections = 0
    for t in range(trials):
        if t % 2:  # heavy tails as well as normal draws
            x, y = rng.standard_t(3, size=(60, 3)), rng.standard_t(3, size=(50, 3))
        else:
            x, y = rng.normal(size=(60, 3)), rng.normal(size=(50, 3))
        rejections += mmd.mmd_test(x, y, rng, permutations=99).p_value <= 0.05
    # Binomial(300, 0.05): mean 15, sd 3.8; 30 is four sd above.
    assert rejections <= 30


def test_a_random_projection_keeps_distances_roughly() -> None:
    rng = np.random.default_rng(6)
    x = rng.normal(size=(50, 384))
    p = mmd.random_projection(384, 32, rng)
    before = np.linalg.norm(x[:25] - x[25:], axis=1)
    after = np.linalg.norm(x[:25] @ p - x[25:] @ p, axis=1)
    ratio = after / before
    assert 0.8 < float(np.median(ratio)) < 1.2


def test_bad_input_is_refused_with_the_reason() -> None:
    rng = np.random.default_rng(7)
    with pytest.raises(ValueError, match="different widths"):
        mmd.mmd_test(np.zeros((5, 2)), np.zeros((5, 3)), rng)
    with pytest.raises(ValueError, match="at least two rows"):
        mmd.mmd_test(np.zeros((1, 2)), np.zeros((5, 2)), rng)
    with pytest.raises(ValueError, match="bandwidth must be positive"):
        mmd.gaussian_kernel(np.zeros((2, 2)), np.zeros((2, 2)), 0.0)
