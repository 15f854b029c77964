"""Phase, conditions and events from an observation: what kubectl get/describe will say."""

from __future__ import annotations

import pytest

from mlwarden.operator.status import (
    Observation,
    alert_events,
    desired_conditions,
    merge_conditions,
    phase,
    status_patch,
)

READY = {"injection_state": "injected", "detector_available": True}
DRIFT = {
    "type": "FeatureDrift",
    "feature": "amount",
    "test": "ks",
    "statistic": 0.31,
    "pValue": 1.2e-9,
    "threshold": 0.01,
    "since": "t0",
    "reference": "warmup@x",
}
QUALITY = {
    "type": "DataQuality",
    "feature": "merchant",
    "test": "missing_rate",
    "statistic": 1.0,
    "threshold": 0.05,
    "since": "t0",
    "reference": "warmup@x",
}


@pytest.mark.parametrize(
    ("obs", "expected"),
    [
        (Observation(spec_error="spec.x: bad", **READY), "Failed"),
        (Observation(injection_state="error", injection_message="no port"), "Failed"),
        (Observation(target_missing="Deployment test/m not found"), "Pending"),
        (Observation(injection_state="waiting-for-rollout"), "Pending"),
        (Observation(injection_state="injected"), "Pending"),  # detector not available yet
        (Observation(**READY), "WarmingUp"),
        (Observation(reference_id="warmup@x", **READY), "Observing"),
        (Observation(reference_id="warmup@x", alerts=(DRIFT,), **READY), "Degraded"),
        (Observation(reference_id="warmup@x", alerts=(DRIFT,), reacting=True, **READY), "Reacting"),
    ],
)
def test_phase_precedence(obs: Observation, expected: str) -> None:
    assert phase(obs)[0] == expected


def test_conditions_name_the_alerts() -> None:
    conds = {
        c["type"]: c
        for c in desired_conditions(Observation(reference_id="r", alerts=(DRIFT, QUALITY), **READY))
    }
    assert conds["Ready"]["status"] == "True"
    assert (conds["Drifting"]["status"], conds["Drifting"]["reason"]) == ("True", "FeatureDrift")
    assert conds["Drifting"]["message"] == "FeatureDrift on amount (ks)"
    assert conds["DataQualityDegraded"]["status"] == "True"
    assert conds["Reacting"]["status"] == "False"


def test_last_transition_time_only_moves_when_the_status_flips() -> None:
    first = merge_conditions(None, desired_conditions(Observation(**READY)), now="t1", generation=1)
    second = merge_conditions(
        first,
        desired_conditions(Observation(reference_id="r", alerts=(DRIFT,), **READY)),
        now="t2",
        generation=1,
    )
    times = {c["type"]: c["lastTransitionTime"] for c in second}
    assert times == {"Ready": "t1", "Drifting": "t2", "DataQualityDegraded": "t1", "Reacting": "t1"}


def test_status_patch_fills_the_printer_columns() -> None:
    p = status_patch(
        Observation(
            generation=3,
            reference_id="r",
            alerts=(DRIFT,),
            top_suspect="CronJob/feature-etl",
            **READY,
        ),
        None,
        now="t",
    )
    assert (p["phase"], p["observedGeneration"], p["alertCount"]) == ("Degraded", 3, 1)
    assert "alerts" not in p  # the detector owns status.alerts
    # The diagnosis and reaction pass owns these: a handler's (older) body never writes them.
    assert not {"topSuspect", "lastAction", "diagnosis", "reactions"} & set(p)


def test_events_for_fired_and_resolved_alerts() -> None:
    fired = alert_events([], [DRIFT])
    assert fired[0][:2] == ("Warning", "AlertFired")
    assert "FeatureDrift on amount: ks statistic 0.31, p=1.2e-09" in fired[0][2]
    assert alert_events([DRIFT], [DRIFT]) == []
    resolved = alert_events([DRIFT, QUALITY], [QUALITY])
    assert resolved == [("Normal", "AlertResolved", "FeatureDrift on amount (ks) resolved")]
