"""The detector's sequential drift decisions: the spec and reference in, evidence out.

`build_scan` turns a reference and the ObservedModel's `alerting` and `detectors` settings
into a `stats.sequential.SequentialScan` over the drift columns it can judge as records
arrive: those whose drift test is `auto` (or `ks` / `chisquare`, the tests the scan runs),
with the drift check's effect floors. `findings_to_evidence` turns what a look found into
the `Evidence` the alert state machine reads: an alarm fires its alert at once (the
false-alarm rate is the scan's, per record, not a count of failing evaluations), a column
reported clear counts as a passing evaluation towards `resolveAfter`, and one still drifted
at the ordinary level keeps an active alert from resolving.

With `alerting.falseAlarmsPer: 0` there is no scan, and drift alerts follow the periodic
evaluation and `fireAfter`, as before issue 19. Pure: no clock, no I/O.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from mlwarden.detector.alerts import Evidence
from mlwarden.detector.checks import ReferenceSummary
from mlwarden.spec import DriftCheck, ObservedModel
from mlwarden.stats import DEFAULT_MIN_EFFECT
from mlwarden.stats.sequential import MIN_WINDOW, Finding, ScanColumn, SequentialScan

# Windows much longer than the reference add little (the two-sample test's effective size
# n_ref * n / (n_ref + n) is within 11% of n_ref at 8 n_ref), and every level shares the alpha.
REFERENCE_MULTIPLE = 8
MAX_SCAN_WINDOW = 1 << 20

_TEST_FOR_TYPE = {"numeric": "ks", "categorical": "chisquare"}
_ALERT_TYPE = {"feature": "FeatureDrift", "prediction": "PredictionDrift"}


def _scannable(check: DriftCheck, column_type: str) -> bool:
    return check.enabled and check.test in ("auto", _TEST_FOR_TYPE[column_type])


def build_scan(
    reference: ReferenceSummary, model: ObservedModel, *, now: float
) -> SequentialScan | None:
    """The scan for this reference, or None (sequential decisions off, or nothing to scan)."""
    spec = model.spec
    alerting = spec.alerting
    if alerting.false_alarms_per <= 0:
        return None
    checks = {"feature": spec.detectors.drift, "prediction": spec.detectors.prediction_drift}
    columns: list[ScanColumn] = []
    for name, column in reference.columns.items():
        check = checks[column.kind]
        if not _scannable(check, column.type) or reference.sketches[name].total == 0:
            continue
        test = _TEST_FOR_TYPE[column.type]
        floor = DEFAULT_MIN_EFFECT[test] if check.min_effect is None else check.min_effect
        columns.append(ScanColumn(name, reference.sketches[name], floor))
    if not columns:
        return None
    cap = max(MIN_WINDOW, min(REFERENCE_MULTIPLE * reference.n, MAX_SCAN_WINDOW))
    size = spec.window.size
    max_window = cap if size is None else max(MIN_WINDOW, min(size, cap))
    # "Clear" is the ordinary per-evaluation verdict: pValue, Bonferroni over the columns.
    p_value = min(spec.detectors.drift.p_value, spec.detectors.prediction_drift.p_value)
    return SequentialScan(
        columns,
        false_alarms_per=alerting.false_alarms_per,
        look_every=alerting.look_every,
        look_seconds=alerting.look_interval_seconds,
        max_window=max_window,
        clear_alpha=p_value / len(columns),
        now=now,
    )


def findings_to_evidence(
    findings: Sequence[Finding],
    reference: ReferenceSummary,
    active: Collection[tuple[str, str | None, str]] = (),
) -> list[Evidence]:
    """Each finding as the evidence of its drift check (type, feature, test).

    An alarm is failing evidence, a clear look passing evidence. A "hold" (still drifted at
    the ordinary level, not alarming) is failing evidence only for an alert in `active`: it
    keeps that alert from resolving, and never fires one.
    """
    evidence = [
        Evidence(
            type=_ALERT_TYPE[reference.columns[f.column].kind],
            feature=f.column,
            test=f.test,
            statistic=f.statistic,
            p_value=f.p_value,
            threshold=f.alpha,
            failing=not f.clear,
            message=f.message,
        )
        for f in findings
    ]
    return [
        e for e, f in zip(evidence, findings, strict=True) if f.alarm or f.clear or e.key in active
    ]


def covered(scan: SequentialScan | None) -> frozenset[str]:
    """The columns whose drift alerts the scan decides (the periodic drift evidence of these
    still fills status and metrics, but does not feed their alerts)."""
    return frozenset() if scan is None else frozenset(c.name for c in scan.columns)
