"""Multivariate drift: rows of several features judged together, not one column at a time.

Per-column tests are blind to a change in how features move together: NannyML's "butterfly"
data rotates two correlated features by 90 degrees, so their correlation flips sign while
every marginal distribution stays the same, and every per-column test passes. This module
holds the pure logic of two checks that see it, over samples of whole rows (a reservoir of
the reference, the latest rows of the current window; `detector/multivariate.py` keeps them):

**Encoding** (`fit_encoding`, `Encoding.encode`): every row becomes a vector of numbers.

- numeric feature: (x - reference mean) / reference standard deviation (1 when the reference
  is constant); a missing or non-finite value becomes 0, the reference mean (imputation, as
  NannyML imputes before its PCA);
- categorical feature: one-hot over the reference's `MAX_LEVELS` most frequent levels plus
  one column for every other level (a level the reference never had lands there too, and so
  does a missing value), centred by the reference's shares of those levels and scaled so
  that the block's total reference variance, sum of p (1 - p), is 1: a categorical feature
  weighs as much as a numeric one whatever its number of levels, and a rare level does not
  get the huge weight a per-column standardisation would give it. (NannyML frequency-encodes
  categories instead: one number per feature, which cannot tell two levels of equal
  frequency apart.)

A feature with no value at all in the reference (no finite number, no category) takes no part.

**PCA reconstruction error** (`fit_pca`, `pca_test`), NannyML's data reconstruction drift:
PCA is fitted on the encoded reference keeping the fewest components that explain `variance`
(0.65) of its variance, as scikit-learn's `PCA(n_components=0.65)` chooses them; a row's error
is the Euclidean distance between the row and its reconstruction from those components, and
the statistic is the mean error over the current rows. When the structure of the data changes
(a correlation flips), the learnt components no longer fit and the error rises.

Where NannyML holds the chunk's mean error against the reference chunks' mean +- 3 standard
deviations (errors computed on the rows the PCA was fitted on, which fit better than new rows
do), here the reference sample is split at random in two: the PCA is fitted on one half, and
the other half's errors (out of sample, like the current rows') are the reference error
distribution. The current errors are compared with them by a two-sided rank-sum
(Mann-Whitney) test, which needs no assumption on the errors' distribution (a heavy-tailed
feature makes a z-test on the means alarm several times too often: measured), so a
stationary window is flagged at rate `alpha` per evaluation. As the per-column tests have an
effect-size floor, the rank-biserial correlation (2 P(current error > reference error) - 1,
in [-1, 1]) must also reach `min_effect` (0.1 by default), so that a huge window does not
alarm on a negligible change, nor an unlucky reference sample alarm for ever (measured: the
relative change of the median error separated stationary from butterfly windows less well).
The statistic is the median error (the mean, NannyML's figure, is reported beside it). The features
that contribute most are ranked by how much their share of the squared residual changed
(each feature's encoded columns summed).

**MMD** (`mmd_check`, over `stats/mmd.py`): the kernel two-sample test on at most `max_rows`
random rows of each side (the kernel matrix is quadratic in the rows), decided by permutation
at `alpha`; the statistic is the unbiased MMD^2 and the threshold the permutations' (1 - alpha)
quantile. A drifted result ranks the features by how much MMD^2 falls when the feature is
left out (the share of the discrepancy it carries), on at most 200 rows a side.

Pure logic: numpy only, no I/O, no clock; randomness from the caller's generator.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from mlwarden.stats import mmd

__all__ = [
    "MAX_LEVELS",
    "REFERENCE_ROWS",
    "Encoding",
    "FeatureEncoding",
    "MultivariateReference",
    "MultivariateResult",
    "PcaModel",
    "build_reference_sample",
    "fit_encoding",
    "fit_pca",
    "mmd_check",
    "pca_test",
    "reference_rows_cap",
]

MAX_LEVELS: Final = 10  # one-hot columns per categorical feature, besides "other"
REFERENCE_ROWS: Final = 5_000  # rows of the reference sample (a reservoir of the reference)
# The reference sample is kept (and stored with the reference) as float16: 2 bytes a value,
# at most this many bytes, so that it fits next to the sketches in a ConfigMap.
SAMPLE_BYTES: Final = 300_000
CLIP: Final = 1.0e4  # encoded values beyond this are clipped (float16 holds up to 65504)
MIN_ROWS: Final = 30  # fewer current rows: not evaluated (not a pass), as MIN_VALUES per column
DEFAULT_MIN_EFFECT: Final = {"pca": 0.1, "mmd": 0.0}
TOP_FEATURES: Final = 5  # contributing features named in an alert
CONTRIBUTION_ROWS: Final = 200  # mmd: rows a side the features' contributions are computed on


# --------------------------------------------------------------------------- encoding


@dataclass(frozen=True)
class FeatureEncoding:
    """How one feature becomes encoded columns (see the module docstring)."""

    name: str
    type: str  # "numeric" | "categorical"
    center: tuple[float, ...]  # numeric: (mean,); categorical: the shares of levels + other
    scale: float
    levels: tuple[str, ...] = ()

    @property
    def width(self) -> int:
        return 1 if self.type == "numeric" else len(self.levels) + 1

    def encode(self, values: Any, n: int) -> np.ndarray:
        """(n, width) encoded columns; `values` None when the feature is absent (all missing)."""
        if self.type == "numeric":
            if values is None:
                return np.zeros((n, 1))
            x = np.asarray(values, dtype=np.float64)
            out = (x - self.center[0]) / self.scale
            out[~np.isfinite(out)] = 0.0
            return out[:, None]
        index = {level: i for i, level in enumerate(self.levels)}
        other = len(self.levels)
        hot = np.zeros((n, other + 1))
        if values is None:
            hot[:, other] = 1.0
        else:
            picks = np.fromiter(
                (index.get(v, other) if v is not None else other for v in values),
                dtype=np.intp,
                count=n,
            )
            hot[np.arange(n), picks] = 1.0
        hot -= np.asarray(self.center)
        hot /= self.scale
        return hot

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "center": list(self.center),
            "scale": self.scale,
            "levels": list(self.levels),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FeatureEncoding:
        return cls(
            name=str(d["name"]),
            type=str(d["type"]),
            center=tuple(float(c) for c in d["center"]),
            scale=float(d["scale"]),
            levels=tuple(str(v) for v in d["levels"]),
        )


@dataclass(frozen=True)
class Encoding:
    """The features taking part, in order, and how each is encoded."""

    features: tuple[FeatureEncoding, ...]

    @property
    def width(self) -> int:
        return sum(f.width for f in self.features)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    def owners(self) -> np.ndarray:
        """The index of the feature each encoded column belongs to."""
        return np.repeat(np.arange(len(self.features)), [f.width for f in self.features])

    def encode(self, columns: Mapping[str, Any], n: int) -> np.ndarray:
        """(n, width) rows from columns (numeric: floats with NaN for missing; categorical:
        strings or None). A column absent from `columns` is all missing."""
        if not self.features:
            return np.zeros((n, 0))
        return np.hstack([f.encode(columns.get(f.name), n) for f in self.features])


def _mean_std(x: np.ndarray) -> tuple[float, float]:
    """The mean and std (ddof=0) of finite values, finite even near the largest float (a
    1.8e308 "missing" sentinel, whose sum and square overflow): over the values scaled
    by a power of two that takes the largest below 1 (exact), then scaled back."""
    top = float(np.max(np.abs(x)))
    if top < 1e100:
        return float(x.mean()), float(x.std())
    e = math.frexp(top)[1]
    with np.errstate(under="ignore"):  # values far below the largest: they add nothing
        scaled = np.ldexp(x, -e)
        return math.ldexp(float(scaled.mean()), e), math.ldexp(float(scaled.std()), e)


def fit_encoding(
    columns: Mapping[str, tuple[str, Any]], *, max_levels: int = MAX_LEVELS
) -> Encoding:
    """The encoding of the reference's columns: {name: (type, values)}, in the given order.

    Numeric values: floats (NaN missing); categorical ones: strings or None.
    """
    features: list[FeatureEncoding] = []
    for name, (kind, values) in columns.items():
        if kind == "numeric":
            x = np.asarray(values, dtype=np.float64)
            x = x[np.isfinite(x)]
            if x.size == 0:
                continue
            mean, std = _mean_std(x)
            features.append(FeatureEncoding(name, "numeric", (mean,), std if std > 0 else 1.0))
            continue
        total = len(values)
        counts = Counter(v for v in values if v is not None)
        if not counts:
            continue
        levels = tuple(v for v, _ in counts.most_common(max_levels))  # ties: first seen first
        shares = [counts[v] / total for v in levels]
        shares.append(max(0.0, 1.0 - sum(shares)))
        variance = sum(p * (1.0 - p) for p in shares)
        scale = math.sqrt(variance) if variance > 0 else 1.0
        features.append(FeatureEncoding(name, "categorical", tuple(shares), scale, levels))
    return Encoding(tuple(features))


def reference_rows_cap(width: int) -> int:
    """How many reference rows are kept for an encoding this wide (float16, SAMPLE_BYTES)."""
    return max(0, min(REFERENCE_ROWS, SAMPLE_BYTES // (2 * max(1, width))))


def quantise(rows: np.ndarray) -> np.ndarray:
    """The float16 form the reference sample is kept and stored in (clipped to +-CLIP)."""
    out: np.ndarray = np.clip(rows, -CLIP, CLIP).astype(np.float16)
    return out


@dataclass(frozen=True)
class MultivariateReference:
    """The reference side of the multivariate check: the encoding and a sample of rows.

    `rows` is float16 (`quantise`), in the form it is stored in, so a reloaded reference
    gives the same fits and the same evidence as the original. `seed` (a digest of the rows)
    makes the random choices of the checks (the PCA's split, MMD's subsample and
    permutations) reproducible.
    """

    encoding: Encoding
    rows: np.ndarray
    seed: int
    total: int  # rows the reference had (the sample is drawn from them)

    def sample(self) -> np.ndarray:
        return self.rows.astype(np.float64)


def build_reference_sample(
    columns: Mapping[str, tuple[str, Any]], n: int, *, seed: int
) -> MultivariateReference:
    """Encode the reference and keep a uniform sample of its rows (without replacement;
    `seed` draws it when there are more than the cap)."""
    encoding = fit_encoding(columns)
    cap = reference_rows_cap(encoding.width)
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(n, size=min(n, cap), replace=False)) if n else np.zeros(0, int)
    picked: dict[str, Any] = {}
    for name, (kind, values) in columns.items():
        if kind == "numeric":
            picked[name] = np.asarray(values, dtype=np.float64)[keep]
        else:
            picked[name] = [values[i] for i in keep]
    rows = quantise(encoding.encode(picked, len(keep)))
    # The checks' random choices follow from the rows themselves: the same reference rows
    # (the detector's warm-up, `mlwarden check`'s file) give the same split and verdicts.
    rows_seed = int.from_bytes(hashlib.sha256(rows.tobytes()).digest()[:8], "little")
    return MultivariateReference(encoding, rows, rows_seed, n)


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class MultivariateResult:
    """One multivariate check's outcome.

    statistic: pca: the current rows' median reconstruction error; mmd: MMD^2.
    threshold: alpha, what the p-value is held against (as for the per-column tests).
    reference_statistic: pca: the reference's (held-out half's) median error; mmd: the
        permutations' (1 - alpha) quantile of MMD^2, the statistic's own limit.
    effect: pca: the rank-biserial correlation of the current errors against the reference's
        (2 AUC - 1); mmd: MMD^2. Drift: p-value <= alpha and |effect| >= min_effect.
    contributions: (feature, share) ranked, shares summing to 1 (empty when none computed).
    """

    method: str
    statistic: float
    threshold: float
    p_value: float
    alpha: float
    effect: float
    min_effect: float
    drift: bool
    reference_rows: int
    current_rows: int
    contributions: tuple[tuple[str, float], ...]
    reference_statistic: float = 0.0
    components: int = 0
    mean_error: float = 0.0  # pca: NannyML's figure, the mean reconstruction error

    def message(self) -> str:
        top = ", ".join(f"{n} {s:.0%}" for n, s in self.contributions[:TOP_FEATURES])
        top = f"; most changed: {top}" if top else ""
        if self.method == "pca":
            verdict = "≤" if self.p_value <= self.alpha else ">"
            return (
                f"PCA reconstruction error (median) {self.statistic:.4g} vs "
                f"{self.reference_statistic:.4g} in the reference, rank-sum p={self.p_value:.2g} "
                f"{verdict} {self.alpha:g} and rank-biserial r={self.effect:+.3f} (floor "
                f"±{self.min_effect:g}) over {self.current_rows} rows, {self.components} "
                f"components{top}"
            )
        verdict = "≤" if self.p_value <= self.alpha else ">"
        return (
            f"MMD^2={self.statistic:.4g} (permutations' limit {self.reference_statistic:.4g}), "
            f"p={self.p_value:.2g} {verdict} {self.alpha:g} over {self.reference_rows} + "
            f"{self.current_rows} rows{top}"
        )


def _shares(names: Sequence[str], amounts: np.ndarray) -> tuple[tuple[str, float], ...]:
    amounts = np.abs(np.nan_to_num(amounts))
    total = float(amounts.sum())
    if total <= 0:
        return ()
    order = np.argsort(-amounts, kind="stable")
    return tuple((names[i], float(amounts[i] / total)) for i in order if amounts[i] > 0)


# --------------------------------------------------------------------------- PCA


@dataclass(frozen=True)
class PcaModel:
    """PCA fitted on one half of the reference sample, and the other half's errors.

    Rows are first rescaled by `mean` and `scale`, the fitting half's own: the encoding's
    standardisation was computed on the whole reference, held-out half included, and a
    scale that depends on the held-out rows makes their errors differ from new rows' (PCA
    keeps the directions where the fitting half varies most; with the total variance fixed
    to 1, the held-out half varies less there and more in the rest, so its errors are larger:
    a stationary window was flagged at twice alpha, measured). Scaling is per feature: a
    numeric column by its standard deviation, a categorical block by the square root of its
    total variance, as in the encoding.
    """

    mean: np.ndarray  # (width,) the fitting half's mean
    scale: np.ndarray  # (width,) the fitting half's per-feature scale
    components: np.ndarray  # (k, width), orthonormal rows, in the rescaled space
    explained: float  # the share of the variance the k components explain
    errors: np.ndarray  # the held-out half's reconstruction errors
    residual_sq: np.ndarray  # (width,) the held-out half's mean squared residual per column

    def rescale(self, rows: np.ndarray) -> np.ndarray:
        out: np.ndarray = (rows - self.mean) / self.scale
        return out

    def residuals(self, rows: np.ndarray) -> np.ndarray:
        """Each row's residual (rescaled row minus its reconstruction from the components)."""
        z = self.rescale(rows)
        out: np.ndarray = z - (z @ self.components.T) @ self.components
        return out


def pca_components(rows: np.ndarray, variance: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Mean, the fewest principal axes explaining `variance` of it (as scikit-learn's
    `PCA(n_components=variance, svd_solver="full")` chooses them), and their share."""
    mean = rows.mean(axis=0)
    _, s, vt = np.linalg.svd(rows - mean, full_matrices=False)
    ev = s * s
    total = float(ev.sum())
    if total <= 0:
        return mean, np.zeros((0, rows.shape[1])), 1.0
    ratio = np.cumsum(ev / total)
    k = min(int(np.searchsorted(ratio, variance, side="right")) + 1, len(ev))
    return mean, vt[:k], float(ratio[k - 1])


def feature_scale(rows: np.ndarray, owners: np.ndarray) -> np.ndarray:
    """Per encoded column, its feature's scale on these rows: the square root of the
    feature's total variance (1 where it is constant)."""
    per_feature = np.bincount(owners, weights=rows.var(axis=0))
    scale = np.sqrt(per_feature)
    scale[scale <= 0] = 1.0
    out: np.ndarray = scale[owners]
    return out


def fit_pca(
    sample: np.ndarray, variance: float, rng: np.random.Generator, owners: np.ndarray
) -> PcaModel:
    """Fit on a random half of the reference sample; the other half calibrates the errors.
    `owners`: the feature of each encoded column (`Encoding.owners`)."""
    if len(sample) < 2 * MIN_ROWS:
        raise ValueError(f"the reference sample has {len(sample)} rows, fewer than {2 * MIN_ROWS}")
    order = rng.permutation(len(sample))
    half = len(sample) // 2
    fit, held = sample[order[:half]], sample[order[half:]]
    mean = fit.mean(axis=0)
    scale = feature_scale(fit, owners)
    _, components, explained = pca_components((fit - mean) / scale, variance)
    model = PcaModel(mean, scale, components, explained, np.zeros(0), np.zeros(sample.shape[1]))
    r = model.residuals(held)
    return dataclasses.replace(
        model, errors=np.sqrt(np.einsum("ij,ij->i", r, r)), residual_sq=np.mean(r * r, axis=0)
    )


def rank_sum_test(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Two-sided Mann-Whitney U p-value of x against y (normal approximation, ties averaged
    and corrected for, no continuity correction: scipy's `mannwhitneyu(..., method=
    "asymptotic", use_continuity=False)`), and the rank-biserial correlation 2 U / (n m) - 1
    (in [-1, 1]: the probability that a value of x exceeds one of y, minus the reverse)."""
    n, m = len(x), len(y)
    z = np.concatenate([x, y])
    _, inverse, counts = np.unique(z, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    mid_ranks = ends - (counts - 1) / 2.0  # the average rank of each distinct value
    u = float(mid_ranks[inverse[:n]].sum()) - n * (n + 1) / 2.0
    total = n + m
    ties = float(np.sum(counts.astype(np.float64) ** 3 - counts))
    variance = n * m / 12.0 * ((total + 1) - ties / (total * (total - 1)))
    effect = 2.0 * u / (n * m) - 1.0
    if variance <= 0:
        return 1.0, effect
    return math.erfc(abs(u - n * m / 2.0) / math.sqrt(2.0 * variance)), effect


def pca_test(
    model: PcaModel,
    current: np.ndarray,
    encoding: Encoding,
    *,
    alpha: float,
    min_effect: float,
) -> MultivariateResult:
    """The current rows' reconstruction errors against the held-out reference half's."""
    r = model.residuals(current)
    errors = np.sqrt(np.einsum("ij,ij->i", r, r))
    median_c, median_r = float(np.median(errors)), float(np.median(model.errors))
    p, effect = rank_sum_test(errors, model.errors)
    drift = p <= alpha and abs(effect) >= min_effect
    change = np.bincount(
        encoding.owners(),
        weights=np.mean(r * r, axis=0) - model.residual_sq,
        minlength=len(encoding.features),
    )
    return MultivariateResult(
        method="pca",
        statistic=median_c,
        threshold=alpha,
        p_value=p,
        alpha=alpha,
        effect=effect,
        min_effect=min_effect,
        drift=drift,
        reference_rows=len(model.errors),
        current_rows=len(errors),
        contributions=_shares(encoding.names, change),
        reference_statistic=median_r,
        components=len(model.components),
        mean_error=float(errors.mean()),
    )


# --------------------------------------------------------------------------- MMD


def _subsample(rows: np.ndarray, limit: int, rng: np.random.Generator) -> np.ndarray:
    if len(rows) <= limit:
        return rows
    return rows[np.sort(rng.choice(len(rows), size=limit, replace=False))]


def mmd_check(
    reference: np.ndarray,
    current: np.ndarray,
    encoding: Encoding,
    rng: np.random.Generator,
    *,
    alpha: float,
    min_effect: float,
    permutations: int,
    max_rows: int,
) -> MultivariateResult:
    """MMD's permutation test on at most `max_rows` rows a side (module docstring)."""
    x = _subsample(reference, max_rows, rng)
    y = _subsample(current, max_rows, rng)
    result = mmd.mmd_test(x, y, rng, permutations=permutations, alpha=alpha)
    drift = result.p_value <= alpha and result.statistic >= min_effect
    contributions: tuple[tuple[str, float], ...] = ()
    if drift:
        # Leave each feature out in turn, on at most CONTRIBUTION_ROWS rows a side (d more
        # kernel matrices: on the whole subsample they would cost d times the test).
        xs = x[rng.permutation(len(x))[:CONTRIBUTION_ROWS]]
        ys = y[rng.permutation(len(y))[:CONTRIBUTION_ROWS]]
        whole = mmd.mmd2_unbiased(xs, ys, result.sigma)
        owners = encoding.owners()
        drops = np.zeros(len(encoding.features))
        for i in range(len(encoding.features)):
            keep = owners != i
            if keep.any():
                rest = mmd.mmd2_unbiased(xs[:, keep], ys[:, keep], result.sigma)
                drops[i] = max(0.0, whole - rest)
        contributions = _shares(encoding.names, drops)
    return MultivariateResult(
        method="mmd",
        statistic=result.statistic,
        threshold=alpha,
        p_value=result.p_value,
        alpha=alpha,
        effect=result.statistic,
        min_effect=min_effect,
        drift=drift,
        reference_rows=len(x),
        current_rows=len(y),
        contributions=contributions,
        reference_statistic=result.threshold,
    )
