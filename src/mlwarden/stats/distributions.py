"""The three special functions the tests need, in numpy and the standard library.

`scipy.special` costs about half a second to import (it pulls in scipy's array-API layer),
which `mlwarden check` pays on every run and the detector on every start; these are the
only functions of it the statistics use, each checked against scipy over its whole range in
tests/unit/stats/test_distributions.py (relative error below 1e-10):

    kolmogorov_sf(x)   P(K > x) for Kolmogorov's distribution = scipy.special.kolmogorov
                       = scipy.stats.kstwobign.sf
    chi2_sf(df, x)     P(chi2_df > x) = scipy.special.chdtrc = scipy.stats.chi2.sf
    rel_entr(x, y)     x log(x / y), 0 at x = 0 = scipy.special.rel_entr

Kolmogorov's tail is the alternating series 2 sum (-1)^(k-1) exp(-2 k^2 x^2) from x = 1 on
(8 terms reach double precision) and one minus the theta-function series of its CDF below
it. The chi-square tail is the regularized upper incomplete gamma function Q(df/2, x/2):
its power series for x/2 < df/2 + 1, else its continued fraction (modified Lentz), both as
in Numerical Recipes' `gammq`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

_SQRT_2PI = math.sqrt(2.0 * math.pi)
_K = np.arange(1, 9, dtype=np.float64)


def kolmogorov_sf(x: npt.ArrayLike) -> npt.NDArray[np.float64] | float:
    """P(K > x): the survival function of Kolmogorov's limiting distribution."""
    if isinstance(x, float | int):  # one value: the same series in plain floats, ~20x faster
        return _kolmogorov_sf_scalar(float(x))
    arr = np.asarray(x, dtype=np.float64)
    flat = np.atleast_1d(arr).ravel()
    out = np.ones_like(flat)
    big = flat >= 1.0
    if big.any():
        xb = flat[big][:, None]
        signs = np.where(_K % 2 == 1, 1.0, -1.0)
        out[big] = 2.0 * np.sum(signs * np.exp(-2.0 * _K**2 * xb**2), axis=1)
    small = (flat > 0.0) & ~big
    if small.any():
        xs = flat[small][:, None]
        odd = (2.0 * _K - 1.0) ** 2
        cdf = _SQRT_2PI / xs[:, 0] * np.sum(np.exp(-odd * math.pi**2 / (8.0 * xs**2)), axis=1)
        out[small] = 1.0 - cdf
    out = np.clip(out, 0.0, 1.0)
    out[np.isnan(flat)] = np.nan
    if arr.ndim == 0:
        return float(out[0])
    return out.reshape(arr.shape)


def _kolmogorov_sf_scalar(x: float) -> float:
    if math.isnan(x):
        return math.nan
    if x <= 0.0:
        return 1.0
    if x >= 1.0:
        p = 2.0 * sum(
            (1.0 if k % 2 else -1.0) * math.exp(-2.0 * k * k * x * x) for k in range(1, 9)
        )
    else:
        cdf = (
            _SQRT_2PI
            / x
            * sum(
                math.exp(-((2.0 * k - 1.0) ** 2) * math.pi**2 / (8.0 * x * x)) for k in range(1, 9)
            )
        )
        p = 1.0 - cdf
    return min(max(p, 0.0), 1.0)


def _gamma_q(a: float, z: float) -> float:
    """Q(a, z) = Gamma(a, z) / Gamma(a), the regularized upper incomplete gamma function."""
    if z <= 0.0:
        return 1.0
    if math.isinf(z):
        return 0.0
    log_front = -z + a * math.log(z) - math.lgamma(a)
    if z < a + 1.0:  # series for P(a, z), then Q = 1 - P
        term = total = 1.0 / a
        ap = a
        for _ in range(100_000):
            ap += 1.0
            term *= z / ap
            total += term
            if abs(term) < abs(total) * 1e-17:
                break
        return max(0.0, 1.0 - total * math.exp(log_front))
    tiny = 1e-300  # continued fraction for Q(a, z), modified Lentz
    b = z + 1.0 - a
    c = 1.0 / tiny
    d = 1.0 / b
    h = d
    for i in range(1, 100_000):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1.0 / d
        step = d * c
        h *= step
        if abs(step - 1.0) < 1e-16:
            break
    return min(1.0, math.exp(log_front) * h)


def chi2_sf(df: npt.ArrayLike, x: npt.ArrayLike) -> npt.NDArray[np.float64] | float:
    """P(chi2 with `df` degrees of freedom > x) (NaN for df <= 0)."""
    dfs, xs = np.broadcast_arrays(np.asarray(df, dtype=np.float64), np.asarray(x, np.float64))
    out = np.array(
        [
            math.nan if not d > 0 or math.isnan(v) else _gamma_q(d / 2.0, v / 2.0)
            for d, v in zip(dfs.ravel().tolist(), xs.ravel().tolist(), strict=True)
        ],
        dtype=np.float64,
    )
    if dfs.ndim == 0:
        return float(out[0])
    return out.reshape(dfs.shape)


def rel_entr(x: npt.ArrayLike, y: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Elementwise x log(x / y): 0 where x = 0 and y >= 0, +inf where x > 0 and y = 0."""
    xa, ya = np.broadcast_arrays(np.asarray(x, np.float64), np.asarray(y, np.float64))
    out = np.full(xa.shape, np.inf)
    pos = (xa > 0) & (ya > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        out[pos] = xa[pos] * np.log(xa[pos] / ya[pos])
    out[(xa == 0) & (ya >= 0)] = 0.0
    out[np.isnan(xa) | np.isnan(ya)] = np.nan
    return out


def chi2_sf_int(df: npt.ArrayLike, x: npt.ArrayLike) -> Any:
    """P(chi-square with integer `df` >= 1 degrees of freedom > x), elementwise, exact.

    The closed forms for integer degrees of freedom, terms summed in log space (numpy has no
    incomplete gamma; `chi2_sf` above is one Python call per element): even df = 2m:
    exp(-x/2) sum_{k<m} (x/2)^k / k!; odd df = 2m + 1: erfc(sqrt(x/2)) + exp(-x/2)
    sum_{k<m} (x/2)^(k+1/2) / Gamma(k + 3/2). Checked against scipy in the tests.
    """
    dfs, xs = np.broadcast_arrays(np.asarray(df, dtype=np.int64), np.asarray(x, np.float64))
    half = np.maximum(xs, 0.0) / 2.0
    odd = dfs % 2 == 1
    m = np.where(odd, (dfs - 1) // 2, dfs // 2)
    with np.errstate(divide="ignore"):
        log_half = np.log(half)
    total = np.where(odd, _erfc(np.sqrt(half)), 0.0)
    for k in range(int(m.max(initial=0))):
        shift = np.where(odd, k + 0.5, float(k))
        lg = np.where(odd, math.lgamma(k + 1.5), math.lgamma(k + 1.0))
        with np.errstate(invalid="ignore"):
            term = np.exp(-half + np.where(shift > 0, shift * log_half, 0.0) - lg)
        total = total + np.where(k < m, term, 0.0)
    return np.minimum(total, 1.0)


_erfc = np.vectorize(math.erfc, otypes=[np.float64])
