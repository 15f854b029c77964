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
    assert times == {
        "Ready": "t1",
        "Drifting": "t2",
        "DataQualityDegraded": "t1",
        "Reacting": "t1",
        "Bypassed": "t1",
        "Promotable": "t1",
    }


def test_promotable_names_the_candidates_and_promotes_nothing() -> None:
    conds = {c["type"]: c for c in desired_conditions(Observation(**READY))}
    assert (conds["Promotable"]["status"], conds["Promotable"]["reason"]) == (
        "False",
        "NoCandidatePassed",
    )
    passed = Observation(promotable=("revision 8 (fraud:1.5)",), **READY)
    conds = {c["type"]: c for c in desired_conditions(passed)}
    assert (conds["Promotable"]["status"], conds["Promotable"]["reason"]) == (
        "True",
        "CanaryPassed",
    )
    assert conds["Promotable"]["message"].startswith("revision 8 (fraud:1.5) passed")
    assert "never promotes" in conds["Promotable"]["message"]


def test_an_alert_event_names_its_revision_as_people_know_it() -> None:
    regression = {"type": "CanaryRegression", "test": "canary", "statistic": 0.4,
                  "threshold": 0.1, "since": "t", "modelRevision": "6b8f7c9d4",
                  "baselineRevision": "5d4c3b2a1"}  # fmt: skip
    names = {"6b8f7c9d4": "revision 8 (fraud:1.5)", "5d4c3b2a1": "revision 7 (fraud:1.4)"}
    ((_, reason, message),) = alert_events([], [regression], names)
    assert reason == "AlertFired"
    assert message.startswith(
        "CanaryRegression [revision 8 (fraud:1.5) against revision 7 (fraud:1.4)]: canary"
    )
    # Unresolved: the hash as it is.
    ((_, _, message),) = alert_events([], [{**regression, "baselineRevision": None}])
    assert message.startswith("CanaryRegression [revision 6b8f7c9d4]: canary")


def test_bypassed_is_a_condition_and_giving_up_fails_with_what_to_do() -> None:
    through = {c["type"]: c for c in desired_conditions(Observation(**READY))}["Bypassed"]
    assert (through["status"], through["reason"]) == ("False", "ThroughSidecar")
    repairing = Observation(
        injection_state="injecting",
        injection_message="adding the sidecar",
        bypass=("SidecarRemoved", "Deployment ml/m: the pod template has no sidecar"),
    )
    conds = {c["type"]: c for c in desired_conditions(repairing)}
    assert (conds["Bypassed"]["status"], conds["Bypassed"]["reason"]) == ("True", "SidecarRemoved")
    assert "no sidecar" in conds["Bypassed"]["message"]
    assert phase(repairing)[0] == "Pending"
    gave_up = Observation(
        injection_state="bypassed",
        injection_message="stopped re-injecting; use ignoreDifferences",
        bypass=("PortRenamedBack", "targetPort 'http' resolves to container 'model'"),
        **{k: v for k, v in READY.items() if k != "injection_state"},
    )
    assert phase(gave_up) == ("Failed", "stopped re-injecting; use ignoreDifferences")
    conds = {c["type"]: c for c in desired_conditions(gave_up)}
    assert (conds["Ready"]["reason"], conds["Bypassed"]["status"]) == ("Bypassed", "True")


def test_a_refused_target_names_its_reason() -> None:
    obs = Observation(
        injection_state="error",
        injection_message="owned by InferenceService 'fraud'",
        injection_reason="ControlledDeployment",
    )
    ready = {c["type"]: c for c in desired_conditions(obs)}["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "ControlledDeployment")
    assert status_patch(obs, None, now="t")["injection"]["reason"] == "ControlledDeployment"


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


@pytest.mark.parametrize(
    ("state", "expected_phase", "reason"),
    [
        ("stalled", "Failed", "RolloutStalled"),
        ("awaiting-approval", "Pending", "AwaitingApproval"),
        ("waiting-for-rollout", "Pending", "Injecting"),
    ],
)
def test_injection_states_a_person_acts_on_are_named(
    state: str, expected_phase: str, reason: str
) -> None:
    obs = Observation(injection_state=state, injection_message="why, and the command")
    assert phase(obs) == (expected_phase, "why, and the command")
    ready = desired_conditions(obs)[0]
    assert (ready["type"], ready["status"], ready["reason"]) == ("Ready", "False", reason)
    assert ready["message"] == "why, and the command"


def test_an_alert_on_a_segment_is_its_own_event_next_to_all_traffic() -> None:
    everywhere = {"type": "FeatureDrift", "feature": "x0", "test": "ks", "statistic": 0.3,
                  "threshold": 0.01, "since": "t"}  # fmt: skip
    brazil = {**everywhere, "segment": {"country": "BR"}}
    ((_, reason, message),) = alert_events([everywhere], [everywhere, brazil])
    assert reason == "AlertFired" and message.startswith(
        "FeatureDrift on x0 in segment country=BR:"
    )
    ((_, reason, message),) = alert_events([everywhere, brazil], [everywhere])
    assert (reason, message) == (
        "AlertResolved",
        "FeatureDrift on x0 in segment country=BR (ks) resolved",
    )
