"""The detector's multivariate drift check: samples of whole rows next to the column sketches.

The per-column sketches throw rows away, so they cannot see a change in how features move
together. This module keeps rows, bounded, and runs `stats/multivariate.py` on them:

- the reference side, `reference_sample`: built with the reference (`core.build_reference`)
  from its raw rows, a uniform sample of at most `stats.multivariate.REFERENCE_ROWS` (5,000)
  of them, encoded (numeric standardised by the reference, categorical one-hot of its top
  levels plus "other") and kept as float16. It is part of the reference: stored with it
  (`persist.py`, about 250 KB for 25 numeric features before compression) and reloaded with
  it, so a restarted detector judges against the same rows and reaches the same evidence; it
  is not rebuilt from new traffic (which, during an incident, would be the drifted traffic).
- the current side, `RowWindow`: the all-traffic window's latest rows, encoded as they are
  ingested, in a ring of at most min(window size, REFERENCE_ROWS) rows (with their arrival
  times, so a window of a duration drops the older ones). Memory: rows × encoded width × 8
  bytes (1 MB for 5,000 rows of 25 numeric features), whatever the traffic.
- `evaluate`: at each evaluation, the method `spec.detectors.multivariate` chooses (pca, mmd
  or off) on the two samples, as `Evidence` of type `MultivariateDrift` (test `pca` or
  `mmd`, no feature) with the contributing features; it is decided like the other periodic
  checks: failing at the check's `pValue` (and effect floor) in `alerting.fireAfter`
  evaluations in a row fires the alert, `resolveAfter` passing ones resolve it.

Only the features take part (not the prediction), and only the all-traffic window (a
revision's own window has no rows). Fewer than two usable features (`stats.multivariate`:
a feature with no value in the reference takes no part): the check is not run, and
`/v1/status` says why. Pure: no I/O, no clock (time comes as an argument).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, Final

import numpy as np

from mlwarden.detector.alerts import Evidence
from mlwarden.records import finite_or_none
from mlwarden.spec import MultivariateCheck
from mlwarden.stats import multivariate as mv

ALERT_TYPE: Final = "MultivariateDrift"


def seed_of(reference_id: str) -> int:
    """A reproducible seed for the reference's random choices (sample, split, permutations)."""
    return int.from_bytes(hashlib.sha256(reference_id.encode()).digest()[:8], "little")


def reference_sample(
    typed: Mapping[str, tuple[str, Any]], n: int, *, seed: int
) -> mv.MultivariateReference | None:
    """The reference's sample of rows over its features ({name: (type, values)}), or None
    when fewer than two features are usable or the reference is too small to split."""
    sample = mv.build_reference_sample(typed, n, seed=seed)
    if len(sample.encoding.features) < 2 or len(sample.rows) < 2 * mv.MIN_ROWS:
        return None
    return sample


def unusable_reason(sample: mv.MultivariateReference | None) -> str:
    return (
        f"not run: fewer than two usable features (or fewer than {2 * mv.MIN_ROWS} reference rows)"
        if sample is None
        else ""
    )


class RowWindow:
    """The current window's latest rows, encoded, in a ring (see the module docstring)."""

    def __init__(
        self, reference: mv.MultivariateReference, *, size: int | None, duration: float | None
    ) -> None:
        self.reference = reference
        self.capacity = min(mv.REFERENCE_ROWS, size or mv.REFERENCE_ROWS)
        self.duration = duration
        self.rows = np.zeros((self.capacity, reference.encoding.width))
        self.times = np.full(self.capacity, -np.inf)
        self.written = 0  # rows written since the start (the ring's position)
        self._pca: tuple[float, mv.PcaModel] | None = None
        self.last: mv.MultivariateResult | None = None

    def add(self, columns: Mapping[str, Any], n: int, now: float) -> None:
        """Encode one batch's columns (numeric: floats; categorical: strings or None; a
        feature absent from `columns` is missing) into the ring."""
        if n == 0:
            return
        encoded = self.reference.encoding.encode(columns, n)[-self.capacity :]
        k = len(encoded)
        at = (self.written + n - k + np.arange(k)) % self.capacity
        self.rows[at] = encoded
        self.times[at] = now
        self.written += n

    def current(self, now: float) -> np.ndarray:
        """The rows in the window now (oldest first)."""
        k = min(self.written, self.capacity)
        at = (self.written - k + np.arange(k)) % self.capacity
        if self.duration is not None:
            at = at[self.times[at] >= now - self.duration]
        out: np.ndarray = self.rows[at]
        return out

    def pca(self, variance: float) -> mv.PcaModel:
        """The PCA fitted on the reference sample (once per `variance`)."""
        if self._pca is None or self._pca[0] != variance:
            self._pca = (variance, fit_pca(self.reference, variance))
        return self._pca[1]

    def evaluate(self, check: MultivariateCheck, *, now: float) -> Evidence | None:
        """The check on the window's rows (None: off, or too few rows: not evaluated)."""
        result = evaluate(self.reference, self.current(now), check, pca=self.pca)
        if result is None:
            return None
        self.last = result
        return to_evidence(result)

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "features": list(self.reference.encoding.names),
            "encodedWidth": self.reference.encoding.width,
            "referenceRows": len(self.reference.rows),
            "windowRows": min(self.written, self.capacity),
        }
        if self.last is not None:
            out.update(result_dict(self.last))
        return out


def fit_pca(reference: mv.MultivariateReference, variance: float) -> mv.PcaModel:
    """The PCA of the reference sample (its random split from the reference's seed)."""
    rng = np.random.default_rng(reference.seed)
    return mv.fit_pca(reference.sample(), variance, rng, reference.encoding.owners())


def evaluate(
    reference: mv.MultivariateReference,
    current: np.ndarray,
    check: MultivariateCheck,
    *,
    pca: Any = None,
) -> mv.MultivariateResult | None:
    """The chosen method on a reference sample and current encoded rows; None when the
    method is off or the current side has fewer than `stats.multivariate.MIN_ROWS` rows.
    `pca(variance)`: a cached fit (else fitted here)."""
    if check.method == "off" or len(current) < mv.MIN_ROWS:
        return None
    # The current rows in the reference sample's float16 form: with categorical features the
    # reconstruction errors take few distinct values, and rounding on one side only shifted
    # all of them against the reference's (15 of 20 stationary runs alarmed).
    current = mv.quantise(current).astype(np.float64)
    floor = check.min_effect
    if floor is None:
        floor = mv.DEFAULT_MIN_EFFECT[check.method]
    if check.method == "pca":
        model = fit_pca(reference, check.variance) if pca is None else pca(check.variance)
        return mv.pca_test(
            model, current, reference.encoding, alpha=check.p_value, min_effect=floor
        )
    return mv.mmd_check(
        reference.sample(),
        current,
        reference.encoding,
        np.random.default_rng(reference.seed),
        alpha=check.p_value,
        min_effect=floor,
        permutations=check.permutations,
        max_rows=check.max_rows,
    )


def contributing(result: mv.MultivariateResult) -> tuple[dict[str, Any], ...]:
    """The features contributing most, as alerts name them ({feature, share}, at most 5)."""
    return tuple(
        {"feature": name, "share": round(share, 4)}
        for name, share in result.contributions[: mv.TOP_FEATURES]
    )


def to_evidence(result: mv.MultivariateResult) -> Evidence:
    return Evidence(
        type=ALERT_TYPE,
        test=result.method,
        statistic=result.statistic,
        threshold=result.threshold,
        failing=result.drift,
        p_value=result.p_value,
        message=result.message(),
        features=contributing(result),
    )


def result_dict(result: mv.MultivariateResult) -> dict[str, Any]:
    """The result as `mlwarden check`'s JSON and `/v1/status` show it."""
    return {
        "drift": result.drift,
        "method": result.method,
        "statistic": finite_or_none(result.statistic),
        "threshold": finite_or_none(result.threshold),
        "pValue": finite_or_none(result.p_value),
        "alpha": result.alpha,
        "effect": finite_or_none(result.effect),
        "minEffect": result.min_effect,
        "meanError": finite_or_none(result.mean_error) if result.method == "pca" else None,
        "referenceStatistic": finite_or_none(result.reference_statistic),
        "components": result.components if result.method == "pca" else None,
        "referenceRows": result.reference_rows,
        "currentRows": result.current_rows,
        "features": [{"feature": n, "share": s} for n, s in result.contributions],
        "reason": result.message(),
    }
