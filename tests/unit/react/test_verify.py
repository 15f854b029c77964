"""The verification decision (react/verify.py), on status as the detector writes it
(CONTRACT17: status.detector.signals and .revisions), with a fixed clock."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

import pytest

from mlwarden.patches import apply_merge_patch
from mlwarden.react import verify
from mlwarden.react.actions import ActionRecord
from mlwarden.timestamps import format_time

GOOD, BAD = "65d8f9c7b", "75d8f9c7b"  # the replicaset builder's hashes of revisions 6 and 7
KEY = "PredictionDrift/ks"


def at(build: Any, seconds: float) -> str:
    return format_time(build.NOW + timedelta(seconds=seconds))


def detector(build: Any, *, records: dict[str, int], signals: list[dict[str, Any]] = (),
             first: float = -3600) -> dict[str, Any]:  # type: ignore[assignment]  # fmt: skip
    return {
        "revisions": [
            {
                "revision": r,
                "records": n,
                "share": 0.5,
                "firstSeen": at(build, first),
                "lastSeen": at(build, 0),
                "role": "baseline",
            }
            for r, n in records.items()
        ],
        "signals": list(signals),
    }


def signal(build: Any, seconds: float, *, failing: bool, revision: str | None = GOOD,
           statistic: float = 0.02) -> dict[str, Any]:  # fmt: skip
    out = {"type": "PredictionDrift", "feature": None, "test": "ks", "statistic": statistic,
           "threshold": 0.1, "failing": failing, "at": at(build, seconds)}  # fmt: skip
    if revision:
        out["modelRevision"] = revision
    return out


def rolled_back(build: Any) -> tuple[ActionRecord, dict[Any, Any], dict[str, Any]]:
    """A rollback 7 -> 6 that just succeeded, the snapshot it was planned on, its trigger."""
    live = build.deployment(template=build.pod_template("fraud:7"))
    sets = [build.replicaset(live, r, build.pod_template(f"fraud:{r}")) for r in (5, 6, 7)]
    record = ActionRecord(
        id="rollback-1", action="rollback", target="Deployment/fraud-model", from_state="7",
        to_state="6", reason="PredictionDrift", result="Succeeded", at=at(build, -1),
    )  # fmt: skip
    trigger = {**build.alert("PredictionDrift", None, revision=BAD), "statistic": 0.31}
    return record, build.snapshot(live, *sets), trigger


def started(build: Any, **guard: Any) -> dict[str, Any]:
    record, snap, trigger = rolled_back(build)
    model = build.model(guardrails={"verifyWithin": "10m", "verifyMinRecords": 200, **guard})
    return verify.start(
        record, alert=trigger, detector=detector(build, records={GOOD: 1000, BAD: 5000}),
        snapshot=snap, guardrails=model.spec.guardrails, now=build.NOW,
    )  # fmt: skip


def test_a_rollback_is_judged_on_the_restored_revisions_records(build: Any) -> None:
    v = started(build)
    assert v == {
        "signal": KEY, "before": 0.31, "verdict": "Pending", "since": at(build, 0),
        "deadline": at(build, 600), "recordsAt": 1000, "minRecords": 200,
        "revision": GOOD,
        "revisionLabel": f"revision 6 (fraud:6, pod-template-hash {GOOD})",
        "message": f"waiting for 200 records served after the action by revision {GOOD}",
    }  # fmt: skip


def judge(build: Any, v: dict[str, Any], seconds: float, *, records: int,
          signals: list[dict[str, Any]], alerts: list[dict[str, Any]] = (),
          **kw: Any) -> dict[str, Any]:  # type: ignore[assignment]  # fmt: skip
    return verify.judge(
        v, alerts=list(alerts), detector=detector(build, records={GOOD: records}, signals=signals,
                                                  **kw),
        now=build.NOW + timedelta(seconds=seconds),
    )  # fmt: skip


def test_fixed_as_soon_as_it_passes_on_enough_records_and_the_alert_is_gone(build: Any) -> None:
    v = started(build)
    passing = [signal(build, 60, failing=False)]
    # Too few records yet, or the alert still active: still Pending (no early NotFixed).
    assert judge(build, v, 90, records=1100, signals=passing) == v
    trigger = build.alert("PredictionDrift", None)
    assert judge(build, v, 90, records=1300, signals=passing, alerts=[trigger]) == v
    # An evaluation from before the action does not count.
    assert judge(build, v, 90, records=1300, signals=[signal(build, -5, failing=False)]) == v
    fixed = judge(build, v, 90, records=1300, signals=passing)
    assert (fixed["verdict"], fixed["after"], fixed["records"]) == ("Fixed", 0.02, 300)
    assert (
        fixed["message"]
        == f"{KEY} passes on 300 records served by revision {GOOD} since the action"
    )
    # A verdict is final.
    assert judge(build, fixed, 700, records=0, signals=[]) == fixed


def test_not_fixed_only_at_the_deadline_on_enough_records(build: Any) -> None:
    v = started(build)
    failing = [signal(build, 500, failing=True, statistic=0.29)]
    assert judge(build, v, 599, records=5000, signals=failing)["verdict"] == "Pending"
    done = judge(build, v, 600, records=5000, signals=failing)
    assert (done["verdict"], done["after"], done["records"]) == ("NotFixed", 0.29, 4000)
    # Not evaluated since, but the alert is still active: NotFixed too.
    trigger = build.alert("PredictionDrift", None)
    done = judge(build, v, 600, records=5000, signals=[], alerts=[trigger])
    assert done["verdict"] == "NotFixed" and "still active" in done["message"]


@pytest.mark.parametrize(
    ("records", "signals", "alerts", "why"),
    [
        (1150, "failing", False, "only 150 records"),
        (5000, "none", False, "was not evaluated on revision"),
        (5000, "other revision", False, "was not evaluated on revision"),
        (5000, "passing", True, "has not resolved"),
    ],
)
def test_inconclusive_at_the_deadline(
    build: Any, records: int, signals: str, alerts: bool, why: str
) -> None:
    v = started(build)
    found = {
        "failing": [signal(build, 500, failing=True)],
        "none": [],
        "other revision": [signal(build, 500, failing=True, revision=BAD)],
        "passing": [signal(build, 500, failing=False)],
    }[signals]
    trigger = [build.alert("PredictionDrift", None)] if alerts else []
    done = judge(build, v, 601, records=records, signals=found, alerts=trigger)
    assert done["verdict"] == "Inconclusive" and why in done["message"], done


def test_a_detector_restart_counts_the_records_since_it(build: Any) -> None:
    """The counter restarts from 0 with the detector: every record of it came after."""
    v = started(build)
    passing = [signal(build, 300, failing=False)]
    assert judge(build, v, 400, records=250, signals=passing, first=120)["verdict"] == "Fixed"
    # Lower than at the action (restarted, firstSeen unknown): counted whole as well.
    assert judge(build, v, 400, records=150, signals=passing)["verdict"] == "Pending"


def test_a_canary_turned_away_is_fixed_when_the_candidate_gets_no_more_records(
    build: Any,
) -> None:
    model = build.model(guardrails={"verifyMinRecords": 100})
    record = ActionRecord(id="pause-1", action="pause", target="Deployment/fraud-canary",
                          from_state="1", to_state="0", reason="", result="Succeeded",
                          at=at(build, -1))  # fmt: skip
    regression = {"type": "CanaryRegression", "test": "canary", "statistic": 0.4,
                  "threshold": 0.1, "since": build.ONSET, "modelRevision": BAD,
                  "baselineRevision": GOOD}  # fmt: skip
    v = verify.start(record, alert=regression,
                     detector=detector(build, records={GOOD: 9000, BAD: 900}),
                     snapshot={}, guardrails=model.spec.guardrails, now=build.NOW)  # fmt: skip
    assert (v["signal"], v["revision"], v["candidate"], v["candidateRecordsAt"]) == (
        "CanaryRegression/canary",
        GOOD,
        BAD,
        900,
    )
    later = build.NOW + timedelta(seconds=120)
    still = detector(build, records={GOOD: 9200, BAD: 950})
    assert verify.judge(v, alerts=[], detector=still, now=later)["verdict"] == "Pending"
    quiet = detector(build, records={GOOD: 9200, BAD: 900})
    assert verify.judge(v, alerts=[], detector=quiet, now=later)["verdict"] == "Fixed"
    # Gone from the detector's revisions (expired): no record of it either.
    gone = detector(build, records={GOOD: 9200})
    assert verify.judge(v, alerts=[], detector=gone, now=later)["verdict"] == "Fixed"
    # Still alerting at the deadline: NotFixed.
    late = build.NOW + timedelta(seconds=601)
    assert verify.judge(v, alerts=[regression], detector=still, now=late)["verdict"] == "NotFixed"
    # Another candidate's regression (same key) is not this one's.
    other = {**regression, "modelRevision": "0th3r"}
    assert verify.judge(v, alerts=[other], detector=quiet, now=later)["verdict"] == "Fixed"
    # The canary check's evaluations name the candidate, not the baseline: failing on its new
    # records, NotFixed at the deadline; with no new record of it, only its old ones were
    # evaluated, and the traffic left it: Fixed.
    failing = {"type": "CanaryRegression", "test": "canary", "statistic": 0.5, "failing": True,
               "at": format_time(later), "modelRevision": BAD}  # fmt: skip
    evaluated = {**still, "signals": [failing]}
    assert verify.judge(v, alerts=[], detector=evaluated, now=later)["verdict"] == "Pending"
    assert verify.judge(v, alerts=[], detector=evaluated, now=late)["verdict"] == "NotFixed"
    stale = {**quiet, "signals": [failing]}
    assert verify.judge(v, alerts=[], detector=stale, now=later)["verdict"] == "Fixed"


def test_pending_and_verifiable(build: Any) -> None:
    record, _, _ = rolled_back(build)
    assert verify.verifiable(record)
    assert not verify.verifiable(ActionRecord(**{**record.__dict__, "dry_run": True}))
    assert not verify.verifiable(ActionRecord(**{**record.__dict__, "undoes": "x"}))
    assert not verify.verifiable(ActionRecord(**{**record.__dict__, "action": "alert"}))
    assert verify.pending([{"verification": {"verdict": "Pending"}}])
    assert not verify.pending([{"verification": {"verdict": "Fixed"}}, {"id": "x"}, None])
    assert verify.signal_key({"type": "FeatureDrift", "feature": "amount", "test": "ks"}) == (
        "FeatureDrift/amount/ks"
    )


# --------------------------------------------------------------------------- undo


def test_a_rollback_is_undone_by_rolling_forward_to_the_revision_it_left(build: Any) -> None:
    record, _, _ = rolled_back(build)
    # After the rollback: revision 6's template is back as revision 8 (its ReplicaSet's
    # number raised), revision 7's ReplicaSet keeps 7.
    live = build.deployment(revision=8, template=build.pod_template("fraud:6"))
    sets = [build.replicaset(live, 5, build.pod_template("fraud:5")),
            build.replicaset(live, 8, build.pod_template("fraud:6"), hash_=GOOD),
            build.replicaset(live, 7, build.pod_template("fraud:7"))]  # fmt: skip
    snap = build.snapshot(live, *sets)
    model = build.model({"alert": "PredictionDrift", "action": "rollback"})
    undo = verify.plan_undo(record, model=model, snapshot=snap, now=build.NOW)
    assert (undo.result, undo.undoes, undo.from_state, undo.to_state) == (
        "Running",
        "rollback-1",
        "6",
        "7",
    )
    after = apply_merge_patch(snap[("Deployment", "fraud-model")],
                              undo.patch["Deployment/fraud-model"])  # fmt: skip
    assert after["spec"]["template"]["spec"]["containers"][0]["image"] == "fraud:7"
    assert verify.plan_undo(record, model=model, snapshot=snap, now=build.NOW).id == undo.id
    # The Deployment gone: Failed, saying why; never a guess.
    failed = verify.plan_undo(record, model=model, snapshot={}, now=build.NOW)
    assert failed.result == "Failed" and "gone" in failed.message
    # A StatefulSet's, a Rollout's or an InferenceService's action is not undone as a
    # Deployment's would be (test_verify_kinds.py: through the owner's own fields); with
    # the owner gone, Failed, saying so, and nothing patched.
    for kind in ("StatefulSet", "Rollout", "InferenceService"):
        other = dataclasses.replace(record, target=f"{kind}/fraud-model")
        failed = verify.plan_undo(other, model=model, snapshot=snap, now=build.NOW)
        assert failed.result == "Failed" and f"{kind}/fraud-model is gone" in failed.message
        assert not failed.patch


def test_scale_pause_and_shift_are_undone(build: Any) -> None:
    model = build.model(
        {"alert": "Latency", "action": "shiftTraffic", "router": "httproute", "route": "fraud",
         "stable": "stable", "canary": "canary"},
    )  # fmt: skip
    dep = build.deployment(replicas=5)
    scale = ActionRecord(
        id="scale-1",
        action="scale",
        target="Deployment/fraud-model",
        from_state="3",
        to_state="5",
        reason="",
        result="Succeeded",
        at="",
    )
    undo = verify.plan_undo(scale, model=model, snapshot=build.snapshot(dep), now=build.NOW)
    assert undo.patch == {"Deployment/fraud-model": {
        "spec": {"replicas": 3}, "metadata": {"resourceVersion": "100"}}}  # fmt: skip
    hpa = build.hpa(low=4)
    minimum = ActionRecord(id="scale-2", action="scale",
                           target="HorizontalPodAutoscaler/fraud-model",
                           from_state="minReplicas 2", to_state="minReplicas 4", reason="",
                           result="Succeeded", at="")  # fmt: skip
    undo = verify.plan_undo(minimum, model=model, snapshot=build.snapshot(hpa), now=build.NOW)
    assert undo.patch["HorizontalPodAutoscaler/fraud-model"]["spec"] == {"minReplicas": 2}
    canary = build.deployment("canary", replicas=0)
    pause = ActionRecord(id="pause-1", action="pause", target="Deployment/canary", from_state="2",
                         to_state="0", reason="", result="Succeeded", at="")  # fmt: skip
    undo = verify.plan_undo(pause, model=model, snapshot=build.snapshot(canary), now=build.NOW)
    assert undo.patch["Deployment/canary"]["spec"] == {"replicas": 2}
    route = build.httproute([("stable", 100), ("canary", 0)])
    shift = ActionRecord(id="shift-1", action="shiftTraffic", target="HTTPRoute/fraud",
                         from_state="stable 90/canary 10", to_state="stable 100/canary 0",
                         reason="", result="Succeeded", at="")  # fmt: skip
    undo = verify.plan_undo(shift, model=model, snapshot=build.snapshot(route), now=build.NOW)
    after = apply_merge_patch(route, undo.patch["HTTPRoute/fraud"])
    weights = [b["weight"] for b in after["spec"]["rules"][0]["backendRefs"]]
    assert weights == [90, 10]
    rollout = ActionRecord(id="pause-2", action="pause", target="Deployment/fraud-model",
                           from_state="rolling", to_state="paused", reason="",
                           result="Succeeded", at="")  # fmt: skip
    undo = verify.plan_undo(rollout, model=model, snapshot=build.snapshot(dep), now=build.NOW)
    assert undo.patch["Deployment/fraud-model"]["spec"] == {"paused": False}
