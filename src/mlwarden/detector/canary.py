"""Canary analysis: a candidate revision judged against the baseline, on the same time span.

While two or more revisions of the model serve at once, the detector hands each candidate's
window view and the baseline's (`detector.core`, over the same time span) to `compare`, which
returns one `Signal` per comparison it could make:

    prediction   the prediction's distribution: KS (numeric) or chi-square (categorical),
                 the drift tests of `mlwarden.stats`, baseline as the reference; effect KS D,
                 or Cramér's V of the balanced table (`balanced_cramers_v`: the same whatever
                 the traffic split), margin `maxDivergence`
    quality      the share of answers without a valid prediction (missing, wrong type):
                 one-sided Fisher exact test; effect = candidate rate - baseline rate,
                 margin `qualityMargin`
    latency      p99: the share of the candidate's requests slower than the baseline's p99,
                 one-sided Fisher exact test against the baseline's own share; effect =
                 p99 ratio - 1, margin `latencyMargin` (plus `latencyMarginMs` of slack)
    errors       5xx rate: one-sided Fisher exact test; effect = rate difference,
                 margin `errorMargin`
    performance  when `detectors.performance` is set: labelled when both revisions have
                 >= 50 labelled rows, else CBPE from the class probabilities (the latest
                 20,000 rows of each); effect = baseline level - candidate level, margin
                 `maxPerformanceDrop`; accuracy is tested (Fisher on correct answers, or a
                 one-sided z test on the per-row confidence for CBPE); F1 and ROC AUC have
                 no test here and are judged on the effect alone

The discipline is drift's: a signal fails only when it is significant after a Bonferroni
correction over the signals that have a p-value *and* its effect exceeds the margin. The
level is `pValue` spent over the doublings of the candidate's sample (`look_level`), because
the candidate is looked at again at every evaluation while its sample grows. So a candidate
that differs from the baseline within the configured margins is not a regression however many
samples it has, and a small canary is judged on its own samples as soon as they make a
difference significant. Each side needs `MIN_VALUES` (30) values for a
signal to be evaluated. A candidate can *pass* only with `minSamples` of its own records.

Pure: no clock, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from mlwarden.detector.alerts import Evidence
from mlwarden.detector.checks import (
    MIN_LABELS,
    MIN_VALUES,
    Column,
    WindowView,
    latency_quantile,
    safe_metric,
)
from mlwarden.spec import Canary, PerformanceCheck
from mlwarden.stats import CategoricalSketch, NumericSketch
from mlwarden.stats import performance as perf
from mlwarden.stats.correction import adjusted
from mlwarden.stats.drift import SCORES, pick_test
from mlwarden.stats.sketch import align_categories

ALERT_TYPE: Final = "CanaryRegression"
TEST: Final = "canary"
MAX_EVIDENCE: Final = 10  # the CRD's bound on an alert's evidence list
MAX_CBPE_ROWS: Final = 20_000  # rows of class probabilities per side an estimate reads
VERDICTS: Final = ("Pending", "Pass", "Fail")


@dataclass(frozen=True)
class Signal:
    """One comparison of the candidate with the baseline."""

    signal: str  # prediction | quality | latency | errors | performance
    test: str
    statistic: float  # the candidate's figure (D, rate, p99 ms, metric level)
    baseline: float  # the baseline's figure on the same scale (D: 0)
    effect: float  # on the margin's scale
    threshold: float  # the margin
    p_value: float | None  # raw; None: judged on the effect alone
    adjusted_p: float | None = None
    failing: bool = False
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "signal": self.signal,
            "test": self.test,
            "statistic": _finite(self.statistic),
            "baseline": _finite(self.baseline),
            "effect": _finite(self.effect),
            "threshold": self.threshold,
            "failing": self.failing,
        }
        if self.adjusted_p is not None:
            out["pValue"] = _finite(self.adjusted_p)
        if self.message:
            out["message"] = self.message
        return out


@dataclass(frozen=True)
class CanaryResult:
    """Every signal of one candidate, judged; `evidence()` is what the alert machine reads."""

    candidate: str
    baseline: str
    samples: int
    min_samples: int
    signals: tuple[Signal, ...]

    @property
    def failing(self) -> bool:
        return any(s.failing for s in self.signals)

    @property
    def ready(self) -> bool:
        """Enough of its own records to pass."""
        return self.samples >= self.min_samples

    def worst(self) -> Signal | None:
        """The failing signal furthest past its margin (else the closest to it)."""
        if not self.signals:
            return None
        return max(self.signals, key=lambda s: (s.failing, _ratio(s)))

    def evidence(self) -> Evidence | None:
        """None when no signal could be evaluated (not a pass: no evidence either way)."""
        worst = self.worst()
        if worst is None:
            return None
        failing = [s for s in self.signals if s.failing]
        if failing:
            message = (
                f"candidate {self.candidate} worse than baseline {self.baseline}: "
                + "; ".join(s.message for s in failing)
            )
        else:
            message = (
                f"candidate {self.candidate} within the margins of baseline {self.baseline} "
                f"on {len(self.signals)} signal(s) over {self.samples} records"
            )
        return Evidence(
            type=ALERT_TYPE,
            test=TEST,
            statistic=worst.effect,
            threshold=worst.threshold,
            failing=bool(failing),
            p_value=worst.adjusted_p,
            message=message,
            model_revision=self.candidate,
            baseline_revision=self.baseline,
            details=tuple(s.to_dict() for s in self.signals[:MAX_EVIDENCE]),
        )


def verdict(result: CanaryResult | None, *, alert_active: bool, pending_failure: bool) -> str:
    """Pending | Pass | Fail of a candidate (pure).

    Fail while its CanaryRegression alert is active (the same hysteresis as every alert);
    Pending while it has fewer than minSamples records, no evaluated signal, or a signal
    failing that has not fired yet; Pass otherwise.
    """
    if alert_active:
        return "Fail"
    if result is None or not result.ready or not result.signals or pending_failure:
        return "Pending"
    return "Pass"


# --------------------------------------------------------------------------- comparisons


def compare(
    candidate: str,
    baseline: str,
    cand: WindowView,
    base: WindowView,
    *,
    columns: Mapping[str, Column],
    spec: Canary,
    performance: PerformanceCheck | None,
    samples: int,
) -> CanaryResult:
    """Judge `cand` (the candidate's window view) against `base` (the baseline's, same span).

    `columns`: the reference's columns (the prediction ones are compared); `performance`:
    the spec's performance check (its metric and estimator; None: no performance signal);
    `samples`: the candidate's own records in its window (requests when it has no records).
    """
    raw: list[Signal] = []
    for name, column in columns.items():
        if column.kind != "prediction":
            continue
        c, b = cand.sketches.get(name), base.sketches.get(name)
        if c is None or b is None:
            continue
        raw += _prediction(name, column, c, b, cand, base, spec)
    raw += _slo(cand, base, spec)
    raw += _performance(cand, base, spec, performance)
    ps = adjusted([s.p_value for s in raw], "bonferroni")
    alpha = look_level(spec.p_value, max(cand.n_records, cand.n_requests))
    judged = []
    for s, adj in zip(raw, ps, strict=True):
        big = s.effect > s.threshold
        failing = big and (adj is None or adj <= alpha)
        if s.signal == "latency":
            # The slack in milliseconds as well as the relative margin.
            failing = failing and s.statistic > s.baseline * (1 + spec.latency_margin) + (
                spec.latency_margin_ms
            )
        judged.append(_judge(s, adj, failing, alpha))
    return CanaryResult(candidate, baseline, samples, spec.min_samples, tuple(judged))


def look_level(p_value: float, n: int) -> float:
    """The level a candidate with `n` values in its window is tested at (pure).

    The candidate is looked at every evaluation while its sample grows, and a test repeated
    on a growing sample rejects a true null far more often than once (optional stopping).
    The level is therefore spent over the doublings of the sample, the epochs in which the
    evidence can change materially: epoch k = 1 + floor(log2(n / 30)) gets
    p_value * 6 / (pi^2 k^2), which sums to p_value over all epochs (a union bound). Repeated
    looks within one epoch see mostly the same records; once the window is full, the
    epoch stays that of the window size and each evaluation is a sliding window, like drift's.
    """
    k = 1 + math.floor(math.log2(max(n, MIN_VALUES) / MIN_VALUES))
    return p_value * 6.0 / (math.pi**2 * k * k)


def _judge(s: Signal, adj: float | None, failing: bool, alpha: float) -> Signal:
    p = "" if adj is None else f", p={adj:.2g}{' ≤' if adj <= alpha else ' >'} {alpha:g}"
    message = (
        f"{s.signal} {s.test}: {s.statistic:.4g} vs baseline {s.baseline:.4g} "
        f"(effect {s.effect:.3g} {'>' if s.effect > s.threshold else '≤'} margin "
        f"{s.threshold:g}{p})"
    )
    return Signal(
        s.signal,
        s.test,
        s.statistic,
        s.baseline,
        s.effect,
        s.threshold,
        s.p_value,
        adjusted_p=adj,
        failing=failing,
        message=message,
    )


def _prediction(
    name: str,
    column: Column,
    c: Any,
    b: Any,
    cand: WindowView,
    base: WindowView,
    spec: Canary,
) -> list[Signal]:
    out: list[Signal] = []
    present_c = c.total
    present_b = b.total
    if present_c >= MIN_VALUES and present_b >= MIN_VALUES:
        kind = NumericSketch if column.type == "numeric" else CategoricalSketch
        if isinstance(c, kind) and isinstance(b, kind):
            test = pick_test(column.type, "auto")
            result = SCORES[test](b, c)
            effect = result.effect
            if isinstance(c, CategoricalSketch) and isinstance(b, CategoricalSketch):
                effect = balanced_cramers_v(b, c)
            out.append(
                Signal(
                    "prediction",
                    test,
                    result.statistic,
                    0.0,
                    effect,
                    spec.max_divergence,
                    result.p_value,
                )
            )
    n_c, n_b = cand.n_records, base.n_records
    if n_c >= MIN_VALUES and n_b >= MIN_VALUES:
        # A numeric column's type errors are NaN in its sketch, so its `missing` counts them
        # already (adding them again doubled them and halved the quality margin).
        errors_c = 0 if column.type == "numeric" else int(cand.type_errors[name])
        errors_b = 0 if column.type == "numeric" else int(base.type_errors[name])
        bad_c = min(n_c, int(c.missing) + errors_c)
        bad_b = min(n_b, int(b.missing) + errors_b)
        rate_c, rate_b = bad_c / n_c, bad_b / n_b
        out.append(
            Signal(
                "quality",
                "invalid_rate",
                rate_c,
                rate_b,
                rate_c - rate_b,
                spec.quality_margin,
                fisher_greater(bad_c, n_c, bad_b, n_b),
            )
        )
    return out


def _slo(cand: WindowView, base: WindowView, spec: Canary) -> list[Signal]:
    out: list[Signal] = []
    n_c, n_b = cand.n_requests, base.n_requests
    if n_c < MIN_VALUES or n_b < MIN_VALUES:
        return out
    p99_c = latency_quantile(cand.latency_counts, 0.99) * 1000
    p99_b = latency_quantile(base.latency_counts, 0.99) * 1000
    # The cut: the upper edge of the baseline's p99 bin. How many requests of each
    # revision are slower than that: the candidate's share must be significantly larger.
    cut = int(np.searchsorted(np.cumsum(base.latency_counts), 0.99 * n_b, side="left")) + 1
    slow_c = int(cand.latency_counts[cut:].sum())
    slow_b = int(base.latency_counts[cut:].sum())
    if p99_b > 0 and math.isfinite(p99_b):
        out.append(
            Signal(
                "latency",
                "p99",
                p99_c,
                p99_b,
                p99_c / p99_b - 1,
                spec.latency_margin,
                fisher_greater(slow_c, n_c, slow_b, n_b),
            )
        )
    rate_c, rate_b = cand.n_errors / n_c, base.n_errors / n_b
    out.append(
        Signal(
            "errors",
            "error_rate",
            rate_c,
            rate_b,
            rate_c - rate_b,
            spec.error_margin,
            fisher_greater(cand.n_errors, n_c, base.n_errors, n_b),
        )
    )
    return out


def _performance(
    cand: WindowView, base: WindowView, spec: Canary, check: PerformanceCheck | None
) -> list[Signal]:
    if check is None:
        return []  # performance is a signal where the spec enables the performance check
    metric = check.metric
    if len(cand.labelled) >= MIN_LABELS and len(base.labelled) >= MIN_LABELS:
        yc = np.asarray([t for t, _ in cand.labelled])
        pc = np.asarray([p for _, p in cand.labelled])
        yb = np.asarray([t for t, _ in base.labelled])
        pb = np.asarray([p for _, p in base.labelled])
        level_c = safe_metric(lambda: perf.labelled_metric(metric, yc, pc))
        level_b = safe_metric(lambda: perf.labelled_metric(metric, yb, pb))
        p: float | None = None
        if metric == "accuracy":
            wrong_c = round((1 - level_c) * len(yc)) if math.isfinite(level_c) else 0
            wrong_b = round((1 - level_b) * len(yb)) if math.isfinite(level_b) else 0
            p = fisher_greater(wrong_c, len(yc), wrong_b, len(yb))
        test = f"{metric}_labelled"
    elif (
        check.estimate == "cbpe"
        and cand.probabilities is not None
        and base.probabilities is not None
        and len(cand.probabilities) >= MIN_VALUES
        and len(base.probabilities) >= MIN_VALUES
    ):
        # The latest MAX_CBPE_ROWS of each: the estimate's cost stays bounded.
        probs_c = cand.probabilities[-MAX_CBPE_ROWS:]
        probs_b = base.probabilities[-MAX_CBPE_ROWS:]
        level_c = safe_metric(lambda: perf.estimate_metric(metric, probs_c))
        level_b = safe_metric(lambda: perf.estimate_metric(metric, probs_b))
        p = None
        if metric == "accuracy":
            p = mean_lower(_confidence(probs_c), _confidence(probs_b))
        test = f"{metric}_cbpe"
    else:
        return []
    if not (math.isfinite(level_c) and math.isfinite(level_b)):
        return []
    return [
        Signal(
            "performance",
            test,
            level_c,
            level_b,
            level_b - level_c,
            spec.max_performance_drop,
            p,
        )
    ]


# --------------------------------------------------------------------------- tests


def balanced_cramers_v(base: CategoricalSketch, cand: CategoricalSketch) -> float:
    """Cramér's V of the two revisions' category distributions as if both had sent as many
    answers: sqrt(1/2 · Σ (p_c − p_b)² / (p_c + p_b)) (pure).

    Cramér's V of the observed 2 × k table depends on the traffic split: with a 5% canary the
    baseline's counts dominate and V shrinks by about sqrt(0.05), so a margin on it would mean
    something else at every split. This is V of the balanced table (equal rows), the same
    scale as drift's Cramér's V (0: identical, 1: disjoint), whatever the split. The p-value
    stays the chi-square test's on the counts observed.
    """
    _, b, c = align_categories(base, cand)
    nb, nc = b.sum(), c.sum()
    if nb == 0 or nc == 0:
        return math.nan
    pb, pc = b / nb, c / nc
    both = pb + pc
    keep = both > 0
    return float(math.sqrt(0.5 * float(np.sum((pc[keep] - pb[keep]) ** 2 / both[keep]))))


def fisher_greater(k1: int, n1: int, k2: int, n2: int) -> float:
    """One-sided Fisher exact p-value that rate 1 (k1 of n1) exceeds rate 2 (k2 of n2).

    The same as `scipy.stats.fisher_exact([[k1, n1-k1], [k2, n2-k2]], alternative="greater")`:
    the hypergeometric upper tail of k1 given the margins.
    """
    if n1 <= 0 or n2 <= 0:
        return 1.0
    total_bad = k1 + k2
    from scipy.stats import hypergeom  # reason: scipy.stats costs ~0.6 s to import; only here

    return float(hypergeom.sf(k1 - 1, n1 + n2, total_bad, n1))


def mean_lower(x: np.ndarray, y: np.ndarray) -> float:
    """One-sided p-value that mean(x) < mean(y): Welch's z (large samples, n >= 30)."""
    x, y = x[np.isfinite(x)], y[np.isfinite(y)]
    if len(x) < 2 or len(y) < 2:
        return 1.0
    se = math.sqrt(float(np.var(x, ddof=1)) / len(x) + float(np.var(y, ddof=1)) / len(y))
    diff = float(np.mean(y) - np.mean(x))
    if se == 0:
        return 0.0 if diff > 0 else 1.0
    return 0.5 * math.erfc(diff / se / math.sqrt(2.0))  # the normal upper tail, norm.sf


def _confidence(probabilities: np.ndarray) -> np.ndarray:
    """Per row, the probability of the predicted class (what CBPE's accuracy averages)."""
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim == 1:
        return np.maximum(p, 1 - p)
    return np.asarray(p.max(axis=1))


def _ratio(s: Signal) -> float:
    if s.threshold > 0:
        return s.effect / s.threshold if math.isfinite(s.effect) else 0.0
    return math.inf if s.effect > 0 else 0.0


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


__all__ = [
    "ALERT_TYPE",
    "TEST",
    "VERDICTS",
    "CanaryResult",
    "Signal",
    "compare",
    "fisher_greater",
    "mean_lower",
    "verdict",
]
