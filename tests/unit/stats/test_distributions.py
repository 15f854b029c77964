"""The special functions of stats/distributions.py against scipy's, over their whole range."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import special, stats

from mlwarden.stats.distributions import chi2_sf, kolmogorov_sf, rel_entr


def test_kolmogorov_sf_is_scipys() -> None:
    x = np.concatenate([np.linspace(0.0, 0.3, 31), np.linspace(0.3, 8.0, 2000), [20.0, 40.0]])
    ours = np.asarray(kolmogorov_sf(x))
    ref = special.kolmogorov(x)
    assert np.allclose(ours, ref, rtol=1e-10, atol=1e-300)
    assert np.allclose(ours, stats.kstwobign.sf(x), rtol=1e-10, atol=1e-300)
    assert kolmogorov_sf(1.2) == pytest.approx(special.kolmogorov(1.2), rel=1e-12)
    assert kolmogorov_sf(-1.0) == 1.0 and np.isnan(kolmogorov_sf(float("nan")))


@pytest.mark.parametrize("df", [1, 2, 3, 4, 7, 10, 29, 100, 999, 5000])
def test_chi2_sf_is_scipys(df: int) -> None:
    # From the body to the far tail (p down to ~1e-300), and around the switch at x = df + 2.
    x = np.unique(np.concatenate([np.linspace(0.0, df + 10 * np.sqrt(df) + 50, 400),
                                  [df + 1.9, df + 2.0, df + 2.1, 1e-8, 1e-3],
                                  np.geomspace(df + 1, 60 * df + 1400, 60)]))  # fmt: skip
    ours = np.asarray(chi2_sf(df, x))
    ref = stats.chi2.sf(x, df)
    keep = ref > 1e-290
    assert np.allclose(ours[keep], ref[keep], rtol=1e-10, atol=0.0), df
    assert np.allclose(ours, special.chdtrc(df, x), rtol=1e-10, atol=1e-290)


def test_chi2_sf_edges() -> None:
    assert chi2_sf(3, 0.0) == 1.0 and chi2_sf(3, -1.0) == 1.0
    assert chi2_sf(3, float("inf")) == 0.0
    assert np.isnan(chi2_sf(0, 1.0))
    assert np.asarray(chi2_sf(np.array([1, 2]), np.array([1.0, 2.0]))).shape == (2,)


def test_rel_entr_is_scipys() -> None:
    x = np.array([0.0, 0.0, 0.1, 0.5, 1.0, 0.3, 0.2])
    y = np.array([0.0, 0.4, 0.2, 0.5, 0.0, 0.9, 1e-300])
    assert np.array_equal(rel_entr(x, y), special.rel_entr(x, y))
