"""Maximum mean discrepancy (MMD): a two-sample test for vectors, not one column at a time.

Per-column tests see each marginal distribution alone; they are blind to a change in how
features move together (a correlation that flips while every column keeps its distribution)
and they do not scale to an embedding of a few hundred dimensions. MMD compares two samples
of whole vectors through a kernel (Gretton et al., "A Kernel Two-Sample Test", JMLR 2012):

    MMD^2 = E k(x, x') + E k(y, y') - 2 E k(x, y)

with the Gaussian kernel k(a, b) = exp(-|a - b|^2 / (2 sigma^2)). It is zero exactly when the
two distributions are equal (the Gaussian kernel is characteristic), whatever the dimension.

This module computes the unbiased estimate (the diagonal k(x, x) = 1 left out of the
within-sample means, as Alibi Detect's `mmd2` does) and decides by permutation: the two samples
are pooled, relabelled at random `permutations` times, and the p-value is

    p = (1 + #{permuted MMD^2 >= observed}) / (1 + permutations),

exact under the null (exchangeability), whatever the distribution: a test at level alpha
rejects a stationary pair of samples with probability at most alpha. The kernel matrix of the
pooled sample is computed once (O(N^2 d)); each permutation is then two matrix products over
label indicators (O(N^2) each, all permutations in one product), so 100 permutations of 1,000
rows cost about as much as the kernel matrix itself. Callers bound N (a reservoir of rows).

The bandwidth sigma defaults to the median distance between pooled points (the "median
heuristic", Alibi Detect's default), computed on at most `max_pairs` random pairs so that its
cost is bounded too.

`random_projection` maps vectors of a high dimension (embeddings) to a few dimensions with a
Gaussian random matrix, which keeps distances up to a small factor (Johnson-Lindenstrauss) and
so keeps MMD's power while making the kernel cheap. Pure logic: numpy only; randomness comes
from the caller's `numpy.random.Generator`, so results are reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "MmdResult",
    "gaussian_kernel",
    "median_bandwidth",
    "mmd2_unbiased",
    "mmd_test",
    "random_projection",
]

DEFAULT_PERMUTATIONS = 100
MAX_BANDWIDTH_PAIRS = 20_000


@dataclass(frozen=True, slots=True)
class MmdResult:
    """The outcome of one permutation test.

    statistic: the unbiased MMD^2 of the two samples.
    p_value: the permutation p-value (see the module docstring).
    threshold: the (1 - alpha) quantile of the permuted statistics: the observed statistic is
        significant at level alpha when it exceeds it (up to the permutation granularity).
    sigma: the kernel bandwidth used.
    """

    statistic: float
    p_value: float
    threshold: float
    sigma: float


def _as_2d(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise ValueError(f"expected a 2-D array of rows, got shape {a.shape}")
    return a


def _squared_distances(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    xx = np.einsum("ij,ij->i", x, x)[:, None]
    yy = np.einsum("ij,ij->i", y, y)[None, :]
    d: np.ndarray = xx + yy - 2.0 * (x @ y.T)
    np.maximum(d, 0.0, out=d)
    return d


def gaussian_kernel(x: np.ndarray, y: np.ndarray, sigma: float) -> np.ndarray:
    """k(x_i, y_j) = exp(-|x_i - y_j|^2 / (2 sigma^2)) for every pair of rows."""
    if not sigma > 0:
        raise ValueError(f"the kernel bandwidth must be positive, got {sigma}")
    d = _squared_distances(_as_2d(x), _as_2d(y))
    d *= -1.0 / (2.0 * sigma * sigma)
    np.exp(d, out=d)
    return d


def median_bandwidth(
    z: np.ndarray, rng: np.random.Generator, *, max_pairs: int = MAX_BANDWIDTH_PAIRS
) -> float:
    """The median distance between distinct rows of z, from at most `max_pairs` random pairs.

    Falls back to 1.0 when every sampled pair is identical (a constant sample), so that the
    kernel is defined; the test then finds no difference unless the other sample differs.
    """
    z = _as_2d(z)
    n = len(z)
    if n < 2:
        return 1.0
    i = rng.integers(0, n, size=max_pairs)
    j = rng.integers(0, n, size=max_pairs)
    keep = i != j
    diff = z[i[keep]] - z[j[keep]]
    dist = np.sqrt(np.einsum("ij,ij->i", diff, diff))
    dist = dist[dist > 0]
    if dist.size == 0:
        return 1.0
    return float(np.median(dist))


def _mmd2_from_kernel(k: np.ndarray, labels: np.ndarray, n: int) -> np.ndarray:
    """Unbiased MMD^2 for each column of `labels` (1 = first sample), from the pooled kernel."""
    total = k.shape[0]
    m = total - n
    a = labels.astype(np.float64)
    b = 1.0 - a
    ka = k @ a
    kb = k @ b
    diag = np.diagonal(k)
    xx = np.einsum("ij,ij->j", a, ka) - a.T @ diag
    yy = np.einsum("ij,ij->j", b, kb) - b.T @ diag
    xy = np.einsum("ij,ij->j", a, kb)
    out: np.ndarray = xx / (n * (n - 1)) + yy / (m * (m - 1)) - 2.0 * xy / (n * m)
    return out


def mmd2_unbiased(x: np.ndarray, y: np.ndarray, sigma: float) -> float:
    """The unbiased estimate of MMD^2 between the rows of x and the rows of y."""
    x, y = _as_2d(x), _as_2d(y)
    if len(x) < 2 or len(y) < 2:
        raise ValueError("MMD needs at least two rows in each sample")
    z = np.concatenate([x, y])
    labels = np.zeros((len(z), 1))
    labels[: len(x)] = 1.0
    return float(_mmd2_from_kernel(gaussian_kernel(z, z, sigma), labels, len(x))[0])


def mmd_test(
    x: np.ndarray,
    y: np.ndarray,
    rng: np.random.Generator,
    *,
    permutations: int = DEFAULT_PERMUTATIONS,
    alpha: float = 0.05,
    sigma: float | None = None,
) -> MmdResult:
    """Permutation test of "x and y come from the same distribution" (see the module docstring)."""
    x, y = _as_2d(x), _as_2d(y)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"the samples have different widths: {x.shape[1]} and {y.shape[1]}")
    if len(x) < 2 or len(y) < 2:
        raise ValueError("MMD needs at least two rows in each sample")
    if permutations < 1:
        raise ValueError(f"permutations must be at least 1, got {permutations}")
    z = np.concatenate([x, y])
    n = len(x)
    if sigma is None:
        sigma = median_bandwidth(z, rng)
    k = gaussian_kernel(z, z, sigma)
    labels = np.zeros((len(z), permutations + 1))
    labels[:n, 0] = 1.0
    for p in range(1, permutations + 1):
        labels[rng.permutation(len(z))[:n], p] = 1.0
    stats = _mmd2_from_kernel(k, labels, n)
    observed = float(stats[0])
    permuted = stats[1:]
    p_value = float((1 + np.count_nonzero(permuted >= observed)) / (1 + permutations))
    threshold = float(np.quantile(permuted, 1.0 - alpha))
    return MmdResult(statistic=observed, p_value=p_value, threshold=threshold, sigma=float(sigma))


def random_projection(dim_in: int, dim_out: int, rng: np.random.Generator) -> np.ndarray:
    """A (dim_in, dim_out) Gaussian matrix scaled by 1/sqrt(dim_out): rows @ it projects them.

    Squared distances are preserved in expectation (Johnson-Lindenstrauss); with dim_out of a
    few tens, within a few tens of percent, which a kernel with the median bandwidth tolerates.
    """
    if dim_in < 1 or dim_out < 1:
        raise ValueError(f"projection dimensions must be positive, got {dim_in} -> {dim_out}")
    out: np.ndarray = rng.standard_normal((dim_in, dim_out)) / np.sqrt(dim_out)
    return out
