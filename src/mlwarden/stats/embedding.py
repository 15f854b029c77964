"""Drift of vectors (embeddings): bounded samples, a projection, MMD, and a topic mix.

An embedding is judged as one object, not as a column per dimension (a few hundred KS
tests would each see a sliver, and their correction would eat the power):

- `Reservoir` keeps a uniform sample of at most `capacity` of the vectors offered
  (Vitter's algorithm R, randomness from the caller's generator): the reference.
- `Recent` keeps the latest `capacity` vectors (a ring): the current window.
- Vectors are projected to `PROJECTED_DIMS` dimensions by one fixed Gaussian random
  projection (`stats.mmd.random_projection`, seeded from the feature's name so that a
  restarted detector projects the same way), which keeps distances up to a small factor
  (Johnson-Lindenstrauss) and makes the kernel's cost independent of the embedding's width.
- `mmd_permutation_test` is MMD's permutation test (`stats.mmd`: unbiased MMD^2, Gaussian
  kernel, median bandwidth) with Besag and Clifford's sequential stopping (J. R. Stat.
  Soc. B 1991): permutations are drawn in batches, and drawing stops as soon as `h`
  permuted statistics have reached the observed one, h chosen so that the p-value can no
  longer fall to the level the caller needs. The p-value is then h / L (L permutations
  drawn), else (1 + exceedances) / (1 + permutations): valid (P(p <= a) <= a under the
  null) either way. Stationary traffic stops after a few permutations, so the test costs
  about one kernel matrix; only a real difference pays for every permutation.
- `kmeans` / `nearest` give the topic mix: the reference's vectors clustered into `k`
  topics (Lloyd's algorithm from a k-means++ start), and each vector assigned to its
  nearest reference centroid. A change in the topic mix is then a categorical drift
  (chi-square, effect TVD), readable by a person ("topic 3: 12% -> 31%").

Effect floor (`MMD2_FLOOR`): MMD^2 >= 0.005. For vectors with covariance S and a mean
shift m, with the median bandwidth in the projected space, MMD^2 ~= 0.3 |m|^2 / tr(S)
(a Gaussian approximation; measured in tests/unit/stats/test_embedding.py), so 0.005 is
a mean shift of about 0.13 times the vectors' root-mean-square spread around their mean:
the same size of change as KS's floor D >= 0.05 on one numeric column (a mean shift of
0.125 standard deviations). With 2,000-vector samples a shift well below it would be
"significant"; nobody should be paged for it.

Pure logic: numpy only, no clock, randomness from the caller.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np

from mlwarden.stats.mmd import _mmd2_from_kernel, gaussian_kernel, median_bandwidth
from mlwarden.stats.mmd import random_projection as gaussian_projection

__all__ = [
    "MMD2_FLOOR",
    "PROJECTED_DIMS",
    "EmbeddingTest",
    "Recent",
    "Reservoir",
    "kmeans",
    "mmd_permutation_test",
    "nearest",
    "projection_for",
]

PROJECTED_DIMS = 32
MMD2_FLOOR = 0.005
PERMUTATION_BATCH = 25


@dataclass(frozen=True, slots=True)
class EmbeddingTest:
    """One MMD permutation test: MMD^2, its p-value, and the permutations it took."""

    statistic: float
    p_value: float
    permutations: int
    sigma: float
    n_reference: int
    n_current: int


def projection_for(name: str, dim_in: int, dim_out: int = PROJECTED_DIMS) -> np.ndarray:
    """The fixed projection of feature `name`: the same matrix in every run (seeded by name).

    When the embedding is no wider than `dim_out`, the identity (nothing to gain).
    """
    if dim_in <= dim_out:
        return np.eye(dim_in)
    seed = int.from_bytes(hashlib.sha256(f"{name}\x1f{dim_in}".encode()).digest()[:8], "little")
    return gaussian_projection(dim_in, dim_out, np.random.default_rng(seed))


class Reservoir:
    """A uniform sample of at most `capacity` of all rows offered (algorithm R)."""

    def __init__(self, capacity: int, width: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self.rows = np.empty((capacity, width), dtype=np.float64)
        self.seen = 0

    def add(self, rows: np.ndarray, rng: np.random.Generator) -> None:
        for row in rows:
            if self.seen < self.capacity:
                self.rows[self.seen] = row
            else:
                j = int(rng.integers(0, self.seen + 1))
                if j < self.capacity:
                    self.rows[j] = row
            self.seen += 1

    def sample(self) -> np.ndarray:
        return self.rows[: min(self.seen, self.capacity)]


class Recent:
    """The latest `capacity` rows offered, each with an integer tag (its topic)."""

    def __init__(self, capacity: int, width: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self.rows = np.empty((capacity, width), dtype=np.float64)
        self.tags = np.zeros(capacity, dtype=np.int64)
        self.seen = 0

    def add(self, rows: np.ndarray, tags: np.ndarray | None = None) -> None:
        rows = rows[-self.capacity :]
        if tags is not None:
            tags = tags[-self.capacity :]
        start = self.seen % self.capacity
        index = (start + np.arange(len(rows))) % self.capacity
        self.rows[index] = rows
        self.tags[index] = 0 if tags is None else tags
        self.seen += len(rows)

    def sample(self) -> np.ndarray:
        return self.rows[: min(self.seen, self.capacity)]

    def tag_values(self) -> np.ndarray:
        return self.tags[: min(self.seen, self.capacity)]


def mmd_permutation_test(
    x: np.ndarray,
    y: np.ndarray,
    rng: np.random.Generator,
    *,
    level: float,
    max_permutations: int,
    batch: int = PERMUTATION_BATCH,
) -> EmbeddingTest:
    """MMD^2 of x against y with a sequentially stopped permutation p-value.

    `level` is the smallest p-value the caller will compare with (its alpha after the
    correction); drawing stops once h = ceil(level * (max_permutations + 1)) + 1 permuted
    statistics reach the observed one: the p-value is then at least h / max_permutations
    > level, and a full run's would have been too, so stopping changes no decision.
    """
    if len(x) < 2 or len(y) < 2:
        raise ValueError("MMD needs at least two rows in each sample")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    z = np.concatenate([x, y])
    n = len(x)
    sigma = median_bandwidth(z, rng)
    k = gaussian_kernel(z, z, sigma)
    observed_labels = np.zeros((len(z), 1))
    observed_labels[:n] = 1.0
    observed = float(_mmd2_from_kernel(k, observed_labels, n)[0])
    h = math.ceil(level * (max_permutations + 1)) + 1
    exceed = drawn = 0
    while drawn < max_permutations and exceed < h:
        size = min(batch, max_permutations - drawn)
        labels = np.zeros((len(z), size))
        for p in range(size):
            labels[rng.permutation(len(z))[:n], p] = 1.0
        stats = _mmd2_from_kernel(k, labels, n)
        for s in stats:  # in order, so that stopping is at the h-th exceedance exactly
            drawn += 1
            if s >= observed:
                exceed += 1
                if exceed >= h:
                    break
    p_value = exceed / drawn if exceed >= h else (1 + exceed) / (1 + drawn)
    return EmbeddingTest(observed, float(min(p_value, 1.0)), drawn, sigma, n, len(y))


def permutations_for(level: float, *, minimum: int = 99, maximum: int = 1999) -> int:
    """Enough permutations that a p-value can reach `level` with room to spare: the smallest
    p-value is 1 / (1 + permutations); ask for half of `level`, so that one permuted statistic
    at or above the observed one still rejects. Drawing every one of them is the cost of a
    drifted feature (the stationary case stops early)."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    return max(minimum, min(maximum, math.ceil(2.0 / level) - 1))


def kmeans(x: np.ndarray, k: int, rng: np.random.Generator, *, iterations: int = 50) -> np.ndarray:
    """k centroids of the rows of x: k-means++ seeding, then Lloyd's iterations to a fixed
    point (or `iterations`). Fewer distinct rows than k: as many centroids as there are."""
    x = np.asarray(x, dtype=np.float64)
    distinct = np.unique(x, axis=0)
    k = min(k, len(distinct))
    if k < 1:
        raise ValueError("k-means needs at least one row")
    centroids = np.empty((k, x.shape[1]))
    centroids[0] = x[int(rng.integers(0, len(x)))]
    d2 = np.sum((x - centroids[0]) ** 2, axis=1)
    for c in range(1, k):
        total = d2.sum()
        i = int(rng.choice(len(x), p=d2 / total)) if total > 0 else int(rng.integers(0, len(x)))
        centroids[c] = x[i]
        d2 = np.minimum(d2, np.sum((x - centroids[c]) ** 2, axis=1))
    labels = nearest(x, centroids)
    for _ in range(iterations):
        for c in range(k):
            members = x[labels == c]
            if len(members):
                centroids[c] = members.mean(axis=0)
        new = nearest(x, centroids)
        if np.array_equal(new, labels):
            break
        labels = new
    return centroids


def nearest(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """The index of each row's nearest centroid (squared Euclidean distance)."""
    x = np.asarray(x, dtype=np.float64)
    d = (
        np.einsum("ij,ij->i", x, x)[:, None]
        + np.einsum("ij,ij->i", centroids, centroids)[None, :]
        - 2.0 * (x @ centroids.T)
    )
    out: np.ndarray = np.argmin(d, axis=1)
    return out
