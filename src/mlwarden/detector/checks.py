"""The detector's checks as pure functions of (reference summary, window view, check spec).

Drift, data quality, SLOs and model performance: each check reads what normal looks like
(`ReferenceSummary`), what the current window holds (`WindowView`) and the ObservedModel's
settings for it, and returns `Evidence` for the alert state machine. Nothing here keeps
state, reads a clock or does I/O, so two callers share every rule and every threshold:

- the streaming detector (`detector.core.Detector`), once per evaluation, on its window;
- `mlwarden check` (`mlwarden.check.run`), once, on a whole data set as one window.

A window view only needs what its checks read: `mlwarden check` has no requests, so its
view leaves the request fields (counts, latencies, probabilities, labels) at their empty
defaults, and it runs the drift and quality checks only.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlwarden.detector.alerts import Evidence
from mlwarden.records import Value
from mlwarden.spec import DriftCheck, ErrorsCheck, LatencyCheck, PerformanceCheck, QualityCheck
from mlwarden.stats import (
    DEFAULT_MIN_EFFECT,
    CategoricalSketch,
    FeatureDrift,
    NumericSketch,
    TestResult,
    evaluate_drift,
)
from mlwarden.stats import performance as perf
from mlwarden.stats.multivariate import MultivariateReference
from mlwarden.stats.sketch import Sketch

MIN_VALUES = 30  # fewer current values than this: a check is not evaluated (not a pass)
OUT_OF_RANGE_MAX_RATE = 0.05
NEW_CATEGORY_MAX_RATE = 0.05
TYPE_ERROR_MAX_RATE = 0.01
MIN_LABELS = 50
# Latency histogram: log-spaced from 0.1 ms to 100 s, ~5% resolution.
LATENCY_EDGES = np.geomspace(1e-4, 100.0, 281)


@dataclass(frozen=True)
class Column:
    """One observed column: a feature or the prediction, numeric or categorical."""

    name: str
    kind: str  # "feature" | "prediction"
    type: str  # "numeric" | "categorical"


@dataclass
class ReferenceSummary:
    """What normal looks like: sketches of the reference per column, fixed once built.

    Also what the quality checks compare against (the sketches' ranges and categories)
    and the reference level of model performance.
    """

    id: str
    source: str
    since: float
    n: int
    columns: dict[str, Column]
    sketches: dict[str, Sketch]
    performance: dict[str, float] = field(default_factory=dict)
    performance_estimated: bool = True
    # A sample of whole rows for the multivariate check (detector/multivariate.py); None
    # with fewer than two usable features.
    multivariate: MultivariateReference | None = None


def _no_latencies() -> np.ndarray:
    return np.zeros(len(LATENCY_EDGES) + 1, dtype=np.int64)


@dataclass
class WindowView:
    """The merged current window, what one evaluation looks at.

    Records (sketches per column, type errors, values out of range, fields no column
    expects) feed the drift and quality checks; requests (counts, latencies) the SLO
    checks; probabilities and labelled predictions the performance check.
    """

    sketches: dict[str, Sketch]
    type_errors: Counter[str] = field(default_factory=Counter)
    out_of_range: Counter[str] = field(default_factory=Counter)
    absent: Counter[str] = field(default_factory=Counter)
    unexpected: Counter[str] = field(default_factory=Counter)
    n_records: int = 0
    n_requests: int = 0
    n_errors: int = 0
    latency_counts: np.ndarray = field(default_factory=_no_latencies)
    probabilities: np.ndarray | None = None
    labelled: list[tuple[Value, Value]] = field(default_factory=list)


def latency_quantile(counts: np.ndarray, q: float) -> float:
    """The q-quantile (seconds) of a latency histogram over LATENCY_EDGES (upper bin edge)."""
    total = int(counts.sum())
    if total == 0:
        return math.nan
    rank = q * total
    index = int(np.searchsorted(np.cumsum(counts), rank, side="left"))
    if index >= len(LATENCY_EDGES):
        return float("inf")
    return float(LATENCY_EDGES[index])


def safe_metric(fn: Any) -> float:
    """A metric's value, NaN when it is undefined on this data (one class, no rows)."""
    try:
        return float(fn())
    except ValueError:
        return math.nan


# --------------------------------------------------------------------------- drift


def drift_threshold(check: DriftCheck, result: TestResult) -> float:
    """What a drift verdict was held against: the p-value level, or the effect floor."""
    if result.p_value is not None:
        return check.p_value
    if check.min_effect is not None:
        return check.min_effect
    return DEFAULT_MIN_EFFECT[result.test]


def drift_evidence(alert_type: str, check: DriftCheck, verdict: FeatureDrift) -> Evidence:
    """One evaluated drift verdict as the evidence the alert state machine reads."""
    res = verdict.result
    return Evidence(
        type=alert_type,
        feature=verdict.feature,
        test=res.test,
        statistic=res.statistic,
        p_value=res.p_value,
        threshold=drift_threshold(check, res),
        failing=verdict.drifted,
        message=verdict.reason,
    )


def drift_verdicts(
    reference: ReferenceSummary, view: WindowView, drift: DriftCheck, prediction_drift: DriftCheck
) -> list[tuple[str, DriftCheck, FeatureDrift]]:
    """Every drift verdict of one evaluation, skipped ones included, with its alert type.

    Features are judged by `drift`, the prediction by `prediction_drift` (the spec's
    `detectors.drift` and `detectors.predictionDrift`).
    """
    out: list[tuple[str, DriftCheck, FeatureDrift]] = []
    for kind, check, alert_type in (
        ("feature", drift, "FeatureDrift"),
        ("prediction", prediction_drift, "PredictionDrift"),
    ):
        if not check.enabled:
            continue
        names = [n for n, c in reference.columns.items() if c.kind == kind]
        if not names:
            continue
        results = evaluate_drift(
            {n: reference.sketches[n] for n in names},
            {n: view.sketches[n] for n in names},
            {n: reference.columns[n].type for n in names},
            check,
            min_current=MIN_VALUES,
        )
        out.extend((alert_type, check, r) for r in results)
    return out


def check_drift(
    reference: ReferenceSummary, view: WindowView, drift: DriftCheck, prediction_drift: DriftCheck
) -> list[Evidence]:
    """The evaluated drift verdicts as evidence (skipped ones are not a pass: left out)."""
    out: list[Evidence] = []
    for alert_type, check, r in drift_verdicts(reference, view, drift, prediction_drift):
        cur, ref = view.sketches[r.feature], reference.sketches[r.feature]
        if cur.total < MIN_VALUES or ref.total == 0:
            continue  # not evaluated: too little data is not a pass
        out.append(drift_evidence(alert_type, check, r))
    return out


# --------------------------------------------------------------------------- quality


def check_quality(
    reference: ReferenceSummary, view: WindowView, quality: QualityCheck
) -> list[Evidence]:
    """The data-quality checks: missing values, type errors, out of range, new categories,
    and fields no column expects."""
    if not quality.enabled or view.n_records < MIN_VALUES:
        return []
    out: list[Evidence] = []
    n = view.n_records
    for name, column in reference.columns.items():
        if column.kind != "feature":
            continue
        sketch = view.sketches[name]
        missing_rate = sketch.missing / n
        out.append(
            Evidence(
                type="DataQuality",
                feature=name,
                test="missing_rate",
                statistic=missing_rate,
                threshold=quality.max_missing_rate,
                failing=missing_rate > quality.max_missing_rate,
                message=f"{missing_rate:.1%} of values missing "
                f"(limit {quality.max_missing_rate:.1%})",
            )
        )
        type_rate = view.type_errors[name] / n
        out.append(
            Evidence(
                type="DataQuality",
                feature=name,
                test="type_errors",
                statistic=type_rate,
                threshold=TYPE_ERROR_MAX_RATE,
                failing=type_rate > TYPE_ERROR_MAX_RATE,
                message=f"{type_rate:.1%} of values are not {column.type}",
            )
        )
        ref = reference.sketches[name]
        if (
            quality.out_of_range
            and isinstance(sketch, NumericSketch)
            and sketch.total >= MIN_VALUES
        ):
            assert isinstance(ref, NumericSketch)
            rate = view.out_of_range[name] / sketch.total
            out.append(
                Evidence(
                    type="DataQuality",
                    feature=name,
                    test="out_of_range",
                    statistic=rate,
                    threshold=OUT_OF_RANGE_MAX_RATE,
                    failing=rate > OUT_OF_RANGE_MAX_RATE,
                    message=f"{rate:.1%} of values outside the reference range "
                    f"[{ref.min:g}, {ref.max:g}]",
                )
            )
        if (
            quality.new_categories
            and isinstance(sketch, CategoricalSketch)
            and sketch.total >= MIN_VALUES
        ):
            assert isinstance(ref, CategoricalSketch)
            unseen = sum(c for k, c in sketch.counts.items() if k not in ref.counts)
            rate = unseen / sketch.total
            out.append(
                Evidence(
                    type="DataQuality",
                    feature=name,
                    test="new_categories",
                    statistic=rate,
                    threshold=NEW_CATEGORY_MAX_RATE,
                    failing=rate > NEW_CATEGORY_MAX_RATE,
                    message=f"{rate:.1%} of values are categories the reference never had",
                )
            )
    unexpected = sorted(view.unexpected)
    out.append(
        Evidence(
            type="DataQuality",
            feature=None,
            test="schema",
            statistic=float(len(unexpected)),
            threshold=0.0,
            failing=bool(unexpected),
            message=("unexpected fields: " + ", ".join(unexpected[:10]))
            if unexpected
            else "every field is a known feature",
        )
    )
    return out


# --------------------------------------------------------------------------- SLOs


def check_slo(
    view: WindowView, latency: LatencyCheck | None, errors: ErrorsCheck | None
) -> list[Evidence]:
    """Latency and error-rate SLOs over the window's requests (no reference needed).

    `latency` and `errors` are the spec's `detectors.latency` and `detectors.errors`;
    None: that SLO is not checked.
    """
    out: list[Evidence] = []
    if view.n_requests < MIN_VALUES:
        return out
    if latency is not None:
        p99_ms = latency_quantile(view.latency_counts, 0.99) * 1000
        out.append(
            Evidence(
                type="Latency",
                test="p99",
                statistic=p99_ms,
                threshold=latency.p99_ms,
                failing=p99_ms > latency.p99_ms,
                message=f"p99 {p99_ms:.1f} ms over {view.n_requests} requests "
                f"(limit {latency.p99_ms:g} ms)",
            )
        )
    if errors is not None:
        rate = view.n_errors / view.n_requests
        out.append(
            Evidence(
                type="Errors",
                test="error_rate",
                statistic=rate,
                threshold=errors.max_rate,
                failing=rate > errors.max_rate,
                message=f"{rate:.2%} of {view.n_requests} requests answered 5xx "
                f"(limit {errors.max_rate:.2%})",
            )
        )
    return out


# --------------------------------------------------------------------------- performance


def check_performance(
    reference: ReferenceSummary,
    view: WindowView,
    check: PerformanceCheck | None,
    *,
    reference_labelled: Sequence[tuple[Value, Value]] = (),
) -> list[Evidence]:
    """Model performance against the reference's: labelled when enough labels joined,
    else estimated from probabilities (CBPE) when the check asks for it.

    `reference_labelled`: (label, prediction) pairs joined during the warm-up; with
    enough of them the reference level is computed from labels too (like with like).
    """
    if check is None:
        return []
    metric = check.metric
    level = reference.performance.get(metric, math.nan)
    if len(view.labelled) >= MIN_LABELS:
        level = labelled_level(reference, metric, reference_labelled)
        y_true = np.asarray([t for t, _ in view.labelled])
        y_pred = np.asarray([p for _, p in view.labelled])
        current = safe_metric(lambda: perf.labelled_metric(metric, y_true, y_pred))
        estimated, n = False, len(view.labelled)
    elif (
        check.estimate == "cbpe"
        and view.probabilities is not None
        and len(view.probabilities) >= MIN_VALUES
    ):
        current = safe_metric(lambda: perf.estimate_metric(metric, view.probabilities))
        estimated, n = True, len(view.probabilities)
    else:
        return []
    return performance_drop(check, level=level, current=current, estimated=estimated, rows=n)


def labelled_level(
    reference: ReferenceSummary, metric: str, reference_labelled: Sequence[tuple[Value, Value]]
) -> float:
    """The reference level a labelled figure is judged against: from the labels of warm-up
    predictions when at least MIN_LABELS joined (like with like), else the reference's."""
    if len(reference_labelled) < MIN_LABELS:
        return reference.performance.get(metric, math.nan)
    ref_true = np.asarray([t for t, _ in reference_labelled])
    ref_pred = np.asarray([p for _, p in reference_labelled])
    return safe_metric(lambda: perf.labelled_metric(metric, ref_true, ref_pred))


def performance_drop(
    check: PerformanceCheck,
    *,
    level: float,
    current: float,
    estimated: bool,
    rows: int,
    over: str = "",
) -> list[Evidence]:
    """The PerformanceDrop evidence of `current` against the reference `level` (none when
    either is undefined); `over` says which rows, after their count."""
    if math.isnan(level) or math.isnan(current):
        return []
    metric = check.metric
    how = "estimated (CBPE)" if estimated else "labelled"
    # A drop equal to maxDrop passes (performance.compare absorbs float noise such as
    # 0.90 - 0.85 = 0.05000000000000004).
    _, failing = perf.compare(metric, level, current, check.max_drop, estimated, rows)
    return [
        Evidence(
            type="PerformanceDrop",
            test=f"{metric}_{'cbpe' if estimated else 'labelled'}",
            statistic=current,
            threshold=level - check.max_drop,
            failing=failing,
            message=f"{metric} {current:.3f} {how} over {rows} rows{over} vs {level:.3f} in the "
            f"reference (allowed drop {check.max_drop:g})",
        )
    ]
