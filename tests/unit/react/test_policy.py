"""plan_reactions: which policies match, what each action plans, the guardrails in the planner."""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

from mlwarden.react.actions import ActionRecord
from mlwarden.react.policy import alerts_for, plan_reactions, replan, webhooks_for
from mlwarden.timestamps import format_time

SCALE = {"alert": "Latency", "action": "scale", "maxReplicas": 10}
ROLLBACK = {"alert": "PredictionDrift", "action": "rollback"}
ALERT = {"alert": "FeatureDrift", "action": "alert", "webhook": "https://hooks.example/T0/B0"}


def plan(
    build: Any,
    model: Any,
    alerts: list[dict[str, Any]],
    snap: dict[Any, Any],
    *,
    history: list[ActionRecord] | None = None,
    annotations: dict[str, str] | None = None,
    ready: bool = True,
    warming: bool = False,
    later: timedelta = timedelta(0),
    top: dict[str, Any] | None = None,
) -> list[ActionRecord]:
    return plan_reactions(
        model=model,
        alerts=alerts,
        diagnosis_top=top,
        snapshot=snap,
        history=history or [],
        annotations=annotations or {},
        detector_ready=ready,
        warming_up=warming,
        now=build.NOW + later,
    )


def _latency(build: Any) -> dict[str, Any]:
    return build.alert("Latency", None)


def _history(build: Any) -> tuple[Any, list[Any]]:
    """fraud-model at revision 7 (fraud:7), with revisions 5 and 6 before it."""
    live = build.deployment(template=build.pod_template("fraud:7"))
    sets = [build.replicaset(live, r, build.pod_template(f"fraud:{r}")) for r in (5, 6, 7)]
    return live, sets


# --------------------------------------------------------------------------- matching


def test_nothing_without_a_matching_alert(build: Any) -> None:
    model = build.model(SCALE, {"alert": "FeatureDrift", "action": "alert", "feature": "age"})
    snap = build.snapshot(build.deployment())
    assert plan(build, model, [], snap) == []
    assert plan(build, model, [build.alert("Errors", None)], snap) == []
    assert plan(build, model, [build.alert("FeatureDrift", "amount")], snap) == []  # not `age`
    assert len(plan(build, model, [build.alert("FeatureDrift", "age")], snap)) == 1


def test_scale(build: Any) -> None:
    model = build.model(SCALE)
    top = {"kind": "Deployment", "name": "fraud-model", "score": 0.9}
    (record,) = plan(build, model, [_latency(build)], build.snapshot(build.deployment()), top=top)
    assert (record.action, record.target, record.from_state, record.to_state, record.result) == (
        "scale",
        "Deployment/fraud-model",
        "3",
        "6",
        "Running",
    )
    assert record.patch == {
        "Deployment/fraud-model": {"metadata": {"resourceVersion": "100"}, "spec": {"replicas": 6}}
    }
    assert record.reason == (f"Latency since {build.ONSET}; top suspect Deployment/fraud-model")
    assert record.at == format_time(build.NOW)
    assert record.id.startswith("scale-") and not record.dry_run


def test_planning_is_pure(build: Any) -> None:
    model = build.model(SCALE, ROLLBACK)
    live, sets = _history(build)
    snap = build.snapshot(live, *sets)
    alerts = [_latency(build), build.alert("PredictionDrift", None)]
    history = [build.record(id="old", target="Deployment/x", ago=timedelta(hours=3))]
    before = copy.deepcopy((snap, alerts, history))
    first = plan(build, model, alerts, snap, history=history)
    assert plan(build, model, alerts, snap, history=history) == first
    assert (snap, alerts, history) == before
    assert len({r.id for r in first}) == 2


def test_a_model_without_uid_still_gets_stable_ids(build: Any) -> None:
    model = build.model(SCALE, uid=None)
    snap = build.snapshot(build.deployment())
    assert plan(build, model, [_latency(build)], snap)[0].id == (
        plan(build, model, [_latency(build)], snap)[0].id
    )


def test_rollback(build: Any) -> None:
    live, sets = _history(build)
    model = build.model(ROLLBACK)
    alert = build.alert("PredictionDrift", None, revision="7")
    (record,) = plan(build, model, [alert], build.snapshot(live, *sets))
    assert (record.target, record.from_state, record.to_state, record.result) == (
        "Deployment/fraud-model",
        "7",
        "6",
        "Running",
    )
    spec = record.patch["Deployment/fraud-model"]["spec"]["template"]["spec"]
    assert spec["containers"][0]["image"] == "fraud:6"


def test_rollback_to_revision(build: Any) -> None:
    live, sets = _history(build)
    model = build.model({**ROLLBACK, "toRevision": 5})
    (record,) = plan(
        build, model, [build.alert("PredictionDrift", None)], build.snapshot(live, *sets)
    )
    assert record.to_state == "5"


def test_shift_traffic_on_an_httproute(build: Any) -> None:
    model = build.model(
        {
            "alert": "Errors",
            "action": "shiftTraffic",
            "router": "httproute",
            "route": "fraud",
            "stable": "fraud-stable",
            "canary": "fraud-canary",
            "stepPercent": 25,
        }
    )
    route = build.httproute([("fraud-stable", 50), ("fraud-canary", 50)])
    (record,) = plan(build, model, [build.alert("Errors", None)], build.snapshot(route))
    assert (record.target, record.from_state, record.to_state) == (
        "HTTPRoute/fraud",
        "stable 50/canary 50",
        "stable 75/canary 25",
    )
    assert list(record.patch) == ["HTTPRoute/fraud"]


def test_shift_traffic_by_replicas(build: Any) -> None:
    model = build.model(
        {
            "alert": "Errors",
            "action": "shiftTraffic",
            "router": "replicas",
            "stable": "fraud-stable",
            "canary": "fraud-canary",
        }
    )
    snap = build.snapshot(
        build.deployment("fraud-stable", replicas=3), build.deployment("fraud-canary", replicas=1)
    )
    (record,) = plan(build, model, [build.alert("Errors", None)], snap)
    assert record.target == "Deployment/fraud-stable+Deployment/fraud-canary"
    assert (record.from_state, record.to_state) == ("stable 75/canary 25", "stable 100/canary 0")
    assert record.patch["Deployment/fraud-stable"]["spec"] == {"replicas": 4}
    assert record.patch["Deployment/fraud-canary"]["spec"] == {"replicas": 0}


def test_pause(build: Any) -> None:
    model = build.model({"alert": "Errors", "action": "pause", "canary": "fraud-canary"})
    snap = build.snapshot(build.deployment("fraud-canary", replicas=3))
    (record,) = plan(build, model, [build.alert("Errors", None)], snap)
    assert (record.target, record.from_state, record.to_state, record.result) == (
        "Deployment/fraud-canary",
        "3",
        "0",
        "Running",
    )


# --------------------------------------------------------------------------- canaries


def _regression(build: Any, candidate: str, baseline: str = "65d8f9c7b") -> dict[str, Any]:
    """A CanaryRegression as the detector writes it (CONTRACT17): the candidate's hash."""
    return {**build.alert("CanaryRegression", None, revision=candidate), "test": "canary",
            "baselineRevision": baseline}  # fmt: skip


def _mid_rollout(build: Any) -> tuple[Any, list[Any]]:
    """fraud-model rolling from revision 6 to 7: both ReplicaSets have pods."""
    live, sets = _history(build)
    for rs in sets:
        revision = rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
        rs["spec"]["replicas"] = {"6": 2, "7": 1}.get(revision, 0)
    return live, sets


def test_pause_on_a_canary_regression_pauses_the_rollout_of_the_candidate(build: Any) -> None:
    live, sets = _mid_rollout(build)
    model = build.model({"alert": "CanaryRegression", "action": "pause"})  # no canary named
    candidate = sets[2]["metadata"]["labels"]["pod-template-hash"]  # revision 7
    (record,) = plan(build, model, [_regression(build, candidate)], build.snapshot(live, *sets))
    assert (record.target, record.from_state, record.to_state, record.result) == (
        "Deployment/fraud-model", "rolling", "paused", "Running")  # fmt: skip
    assert record.patch == {"Deployment/fraud-model": {
        "spec": {"paused": True}, "metadata": {"resourceVersion": "100"}}}  # fmt: skip
    # Rolled out (no other revision serves): nothing to pause, said once.
    for rs in sets[:2]:
        rs["spec"]["replicas"] = 0
    (record,) = plan(build, model, [_regression(build, candidate)], build.snapshot(live, *sets))
    assert record.result == "Skipped" and "rolled out" in record.reason
    # A hash no ReplicaSet carries, and no canary named: a problem, not a guess.
    (record,) = plan(build, model, [_regression(build, "zz9")], build.snapshot(live, *sets))
    assert record.result == "Skipped" and "pod-template-hash zz9" in record.reason


def test_pause_and_shift_aim_at_the_canary_deployment_the_alert_names(build: Any) -> None:
    stable, canary = build.deployment("fraud-stable", replicas=9, uid="s"), build.deployment(
        "fraud-canary", replicas=1, uid="c")  # fmt: skip
    canary_rs = build.replicaset(canary, 3, build.pod_template("fraud:1.5"), hash_="c4n4ry")
    stable_rs = build.replicaset(stable, 5, build.pod_template("fraud:1.4"), hash_="st4bl3")
    snap = build.snapshot(stable, canary, canary_rs, stable_rs)
    pause = build.model({"alert": "CanaryRegression", "action": "pause"})
    (record,) = plan(build, pause, [_regression(build, "c4n4ry", "st4bl3")], snap)
    assert (record.target, record.from_state, record.to_state) == (
        "Deployment/fraud-canary",
        "1",
        "0",
    )
    # A pause naming another canary than the alert's candidate is refused with the reason.
    other = build.model({"alert": "CanaryRegression", "action": "pause", "canary": "fraud-stable"})
    (record,) = plan(build, other, [_regression(build, "c4n4ry", "st4bl3")], snap)
    assert record.result == "Skipped"
    assert (
        "revision c4n4ry of Deployment fraud-canary, not the canary fraud-stable" in record.reason
    )
    shift = {"alert": "CanaryRegression", "action": "shiftTraffic", "router": "replicas",
             "stable": "fraud-stable", "canary": "fraud-canary"}  # fmt: skip
    (record,) = plan(build, build.model(shift), [_regression(build, "c4n4ry", "st4bl3")], snap)
    assert (record.result, record.to_state) == ("Running", "stable 100/canary 0")
    # The stable's revision regressing is not the canary's traffic to shift.
    (record,) = plan(build, build.model(shift), [_regression(build, "st4bl3", "c4n4ry")], snap)
    assert record.result == "Skipped" and "not the canary fraud-canary" in record.reason


def test_two_reactions_on_one_target_are_one_action(build: Any) -> None:
    live, sets = _history(build)
    model = build.model(ROLLBACK, {"alert": "FeatureDrift", "action": "rollback"})
    early = build.alert("FeatureDrift", "amount", since="2026-11-26T15:00:00Z")
    late = build.alert("PredictionDrift", None)
    out = plan(build, model, [late, early], build.snapshot(live, *sets))
    assert len(out) == 1
    assert out[0].reason.startswith("FeatureDrift on amount since 2026-11-26T15:00:00Z; ")
    assert "PredictionDrift since" in out[0].reason


# --------------------------------------------------------------------------- alert


def test_alert_one_record_per_alert(build: Any) -> None:
    model = build.model(ALERT, {"alert": "FeatureDrift", "action": "alert", "feature": "age"})
    alerts = [build.alert("FeatureDrift", "amount"), build.alert("FeatureDrift", "age")]
    out = plan(build, model, alerts, {})
    # Earliest onset first, then by name.
    assert [(r.target, r.from_state, r.to_state, r.result) for r in out] == [
        ("ObservedModel/fraud", "FeatureDrift/age", "Event+webhook", "Running"),
        ("ObservedModel/fraud", "FeatureDrift/amount", "Event+webhook", "Running"),
    ]
    assert webhooks_for(model=model, record=out[0]) == ("https://hooks.example/T0/B0",)
    assert webhooks_for(model=model, record=out[1]) == ("https://hooks.example/T0/B0",)
    assert alerts_for(model=model, record=out[0], alerts=alerts) == [alerts[1]]
    assert all(r.patch == {} for r in out)
    assert "hooks.example" not in str([r.to_status() for r in out])  # URLs are not recorded


def test_a_workload_action_is_posted_to_its_reactions_webhook(build: Any) -> None:
    model = build.model({**SCALE, "webhook": "https://hooks.example/scale"}, ALERT)
    alerts = [_latency(build), build.alert()]
    out = plan(build, model, alerts, build.snapshot(build.deployment()))
    scale = next(r for r in out if r.action == "scale")
    assert webhooks_for(model=model, record=scale) == ("https://hooks.example/scale",)
    assert alerts_for(model=model, record=scale, alerts=alerts) == [alerts[0]]


def test_alert_is_not_held_back_by_dry_run_approval_or_rate(build: Any) -> None:
    model = build.model(
        {"alert": "Errors", "action": "alert"},
        guardrails={"dryRun": True, "requireApproval": True, "maxActionsPerHour": 0},
    )
    (record,) = plan(build, model, [build.alert("Errors", None)], {})
    assert (record.result, record.dry_run, record.to_state) == ("Running", False, "Event")
    assert webhooks_for(model=model, record=record) == ()


def test_alert_once_per_incident(build: Any) -> None:
    model = build.model(ALERT)
    (first,) = plan(build, model, [build.alert()], {})
    sent = first.settle("Succeeded", "sent")
    assert plan(build, model, [build.alert()], {}, history=[sent], later=timedelta(hours=1)) == []
    again = build.alert(since="2026-11-26T17:00:00Z")  # a new incident
    (second,) = plan(build, model, [again], {}, history=[sent], later=timedelta(hours=2))
    assert second.id != first.id


# --------------------------------------------------------------------------- guardrails


def test_dry_run_records_the_plan_and_applies_nothing(build: Any) -> None:
    model = build.model(SCALE, guardrails={"dryRun": True})
    snap = build.snapshot(build.deployment())
    (record,) = plan(build, model, [_latency(build)], snap)
    assert (record.result, record.dry_run, record.to_state) == ("Succeeded", True, "6")
    assert record.patch  # what would have been set
    assert record.message == "dry run: planned and recorded, nothing applied"
    assert record.metric_result == "DryRun"
    # Planned once per incident...
    assert plan(build, model, [_latency(build)], snap, history=[record]) == []
    # ...and switching dry run off acts on it for real.
    live = build.model(SCALE)
    (real,) = plan(build, live, [_latency(build)], snap, history=[record])
    assert (real.result, real.dry_run) == ("Running", False)
    assert real.id != record.id


def test_approval_plans_then_acts_on_the_annotation(build: Any) -> None:
    model = build.model(SCALE, guardrails={"requireApproval": True})
    snap = build.snapshot(build.deployment())
    (planned,) = plan(build, model, [_latency(build)], snap)
    assert planned.result == "Planned"
    assert f"mlwarden.io/approve={planned.id}" in planned.message
    annotations = {"mlwarden.io/approve": planned.id}
    (running,) = plan(
        build,
        model,
        [_latency(build)],
        snap,
        history=[planned],
        annotations=annotations,
        later=timedelta(minutes=3),
    )
    assert (running.id, running.result, running.at) == (planned.id, "Running", planned.at)


def test_a_planned_action_no_longer_called_for_is_skipped(build: Any) -> None:
    model = build.model(SCALE, guardrails={"requireApproval": True})
    snap = build.snapshot(build.deployment())
    (planned,) = plan(build, model, [_latency(build)], snap)
    (skipped,) = plan(build, model, [], snap, history=[planned])
    assert (skipped.id, skipped.result) == (planned.id, "Skipped")
    assert skipped.reason.startswith("no longer called for")
    # The target moved on: the old plan is dropped and a new one waits for approval.
    moved = build.snapshot(build.deployment(replicas=4, resource_version="120"))
    out = plan(build, model, [_latency(build)], moved, history=[planned])
    assert [(r.result, r.to_state) for r in out] == [("Planned", "8"), ("Skipped", "6")]


def test_not_ready_or_warming_up(build: Any) -> None:
    model = build.model(SCALE, ALERT)
    snap = build.snapshot(build.deployment())
    alerts = [_latency(build), build.alert()]
    for kw in ({"ready": False}, {"warming": True}):
        out = plan(build, model, alerts, snap, **kw)
        assert [r.result for r in out] == ["Skipped", "Skipped"]
        assert "detector" in out[0].reason
        assert out[0].message.startswith("Latency since")
        # The same pass again writes nothing.
        assert plan(build, model, alerts, snap, history=out, **kw) == []
    out = plan(build, model, alerts, snap, history=plan(build, model, alerts, snap, ready=False))
    assert [r.result for r in out] == ["Running", "Running"]


def test_person_changed_after_our_action(build: Any) -> None:
    model = build.model(SCALE, guardrails={"cooldown": "1s"})
    ours = build.record(to_state="6")
    snap = build.snapshot(build.deployment(replicas=4, resource_version="130"))
    (record,) = plan(build, model, [_latency(build)], snap, history=[ours])
    assert record.result == "Skipped"
    assert "spec.replicas: set 6, now 4" in record.reason
    assert "not acting on it again in this incident" in record.reason
    # Still changed on the next pass: nothing new is written.
    assert plan(build, model, [_latency(build)], snap, history=[ours, record]) == []


def test_cooldown_then_the_next_step(build: Any) -> None:
    model = build.model(SCALE)
    ours = build.record(to_state="6", ago=timedelta(minutes=5))
    snap = build.snapshot(build.deployment(replicas=6, resource_version="101"))
    (waiting,) = plan(build, model, [_latency(build)], snap, history=[ours])
    assert waiting.result == "Skipped" and waiting.reason.startswith("cooldown 10m")
    assert (waiting.from_state, waiting.to_state) == ("6", "10")
    (step,) = plan(
        build, model, [_latency(build)], snap, history=[ours, waiting], later=timedelta(minutes=6)
    )
    assert (step.id, step.result, step.to_state) == (waiting.id, "Running", "10")
    # At the cap: nothing to do, said once.
    at_cap = build.snapshot(build.deployment(replicas=10, resource_version="102"))
    done = step.settle("Succeeded", "applied")
    history = [ours, done]
    (idle,) = plan(
        build, model, [_latency(build)], at_cap, history=history, later=timedelta(hours=1)
    )
    assert idle.result == "Skipped" and "no step up" in idle.reason
    history.append(idle)
    assert (
        plan(build, model, [_latency(build)], at_cap, history=history, later=timedelta(hours=2))
        == []
    )


def test_max_actions_per_hour(build: Any) -> None:
    model = build.model(SCALE, guardrails={"maxActionsPerHour": 2})
    history = [
        build.record(id=f"r{i}", target=f"Deployment/other-{i}", ago=timedelta(minutes=20 + i))
        for i in range(2)
    ]
    snap = build.snapshot(build.deployment())
    (record,) = plan(build, model, [_latency(build)], snap, history=history)
    assert record.result == "Skipped" and "maxActionsPerHour 2 reached" in record.reason


def test_the_hourly_limit_counts_actions_planned_in_the_same_pass(build: Any) -> None:
    model = build.model(
        SCALE,
        {"alert": "Errors", "action": "pause", "canary": "fraud-canary"},
        guardrails={"maxActionsPerHour": 1},
    )
    snap = build.snapshot(build.deployment(), build.deployment("fraud-canary", replicas=2))
    out = plan(build, model, [_latency(build), build.alert("Errors", None)], snap)
    assert [r.result for r in out] == ["Running", "Skipped"]


def test_no_second_rollback_in_one_incident(build: Any) -> None:
    """After our rollback 7→6 the Deployment is at revision 8 (6's template): undoing again
    would bring back 7, the faulty one."""
    live, sets = _history(build)
    model = build.model(ROLLBACK, guardrails={"cooldown": "1s"})
    alert = build.alert("PredictionDrift", None)
    (ours,) = plan(build, model, [alert], build.snapshot(live, *sets))
    done = ours.settle("Succeeded", "applied")
    after = build.applied([live, *sets], done)
    rolled = after[("Deployment", "fraud-model")]
    rolled["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = "8"
    six = [
        s for s in sets if s["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "6"
    ]
    six[0]["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = "8"
    (record,) = plan(build, model, [alert], after, history=[done], later=timedelta(minutes=5))
    assert (record.result, record.from_state, record.to_state) == ("Skipped", "8", "7")
    assert "not again" in record.reason


def test_no_rollback_when_the_alerting_revision_is_gone(build: Any) -> None:
    live, sets = _history(build)
    model = build.model(ROLLBACK)
    alert = build.alert("PredictionDrift", None, revision="6")
    (record,) = plan(build, model, [alert], build.snapshot(live, *sets))
    assert record.result == "Skipped"
    assert "revision 6" in record.reason and "revision 7" in record.reason


def test_revision_moved_reads_a_pod_template_hash_through_the_replicasets(build: Any) -> None:
    """The sidecar stamps the pod-template-hash; its ReplicaSet says which revision it is."""
    live, sets = _history(build)
    model = build.model(ROLLBACK)
    by_revision = {
        int(rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"]): rs["metadata"][
            "name"
        ].rsplit("-", 1)[-1]
        for rs in sets
    }
    old = build.alert("PredictionDrift", None, revision=by_revision[6])
    (record,) = plan(build, model, [old], build.snapshot(live, *sets))
    assert record.result == "Skipped"
    assert f"revision 6 (fraud:6, pod-template-hash {by_revision[6]})" in record.reason
    assert "at revision 7 now" in record.reason
    current = build.alert("PredictionDrift", None, revision=by_revision[7])
    (record,) = plan(build, model, [current], build.snapshot(live, *sets))
    assert (record.result, record.to_state) == ("Running", "6")
    assert "(model revision 7 (fraud:7))" in record.reason  # the hash as people know it
    # A hash no ReplicaSet carries: unknown, no objection.
    unknown = build.alert("PredictionDrift", None, revision="zz9zz9zz9")
    (record,) = plan(build, model, [unknown], build.snapshot(live, *sets))
    assert record.result == "Running"


def test_no_rollback_when_the_diagnosis_blames_the_feature_job(build: Any) -> None:
    """Input drift moves the predictions too; the model is not at fault, so it stays."""
    live, sets = _history(build)
    model = build.model(ROLLBACK)
    alert = build.alert("PredictionDrift", None, revision="7")
    job = {"kind": "CronJob", "name": "feature-etl", "score": 0.8}
    (record,) = plan(build, model, [alert], build.snapshot(live, *sets), top=job)
    assert record.result == "Skipped"
    assert "CronJob/feature-etl" in record.reason and "not rolling back" in record.reason
    # Blaming the model's own Deployment (its new revision), the rollback goes ahead.
    own = {"kind": "Deployment", "name": "fraud-model", "score": 0.9}
    (record,) = plan(build, model, [alert], build.snapshot(live, *sets), top=own)
    assert (record.result, record.to_state) == ("Running", "6")


def test_a_missing_target_is_skipped_once_with_the_reason(build: Any) -> None:
    model = build.model(SCALE)
    (record,) = plan(build, model, [_latency(build)], {})
    assert (record.result, record.reason) == ("Skipped", "Deployment ml/fraud-model not found")
    assert plan(build, model, [_latency(build)], {}, history=[record]) == []
    # Once it is there, the action goes ahead.
    (running,) = plan(
        build, model, [_latency(build)], build.snapshot(build.deployment()), history=[record]
    )
    assert running.result == "Running"


def test_an_actuator_error_is_skipped_with_its_message(build: Any) -> None:
    live = build.deployment()
    model = build.model(ROLLBACK)
    (record,) = plan(build, model, [build.alert("PredictionDrift", None)], build.snapshot(live))
    assert record.result == "Skipped"
    assert "no revision before 7" in record.reason


def test_an_action_resumed_after_a_restart_counts_once_towards_the_hourly_limit(
    build: Any,
) -> None:
    model = build.model(
        SCALE,
        {"alert": "Errors", "action": "pause", "canary": "fraud-canary"},
        guardrails={"maxActionsPerHour": 2},
    )
    running = build.record(result="Running", ago=timedelta(minutes=1))
    running = ActionRecord.from_status(
        running.to_status()
        | {"patch": {"Deployment/fraud-model": {"spec": {"replicas": 6}}}, "id": "scale-x"}
    )
    snap = build.snapshot(
        build.deployment(replicas=6), build.deployment("fraud-canary", replicas=2)
    )
    out = plan(build, model, [build.alert("Errors", None)], snap, history=[running])
    assert [(r.action, r.result) for r in out] == [("scale", "Succeeded"), ("pause", "Running")]


def test_a_restarted_detector_is_the_same_incident_only_with_the_same_onset(build: Any) -> None:
    """The detector stores its alert state so that, restarted after our rollback 7→6, it
    reports the alert with the same `since`: no second rollback (to 7, the faulty one). A
    detector that forgot its onset would start a new incident, and the guardrail would let
    the second rollback through: this is what `since` must not do."""
    live, sets = _history(build)
    model = build.model(ROLLBACK, guardrails={"cooldown": "1s"})
    before = build.alert("PredictionDrift", None)
    (ours,) = plan(build, model, [before], build.snapshot(live, *sets))
    done = ours.settle("Succeeded", "applied")
    after = build.applied([live, *sets], done)
    after[("Deployment", "fraud-model")]["metadata"]["annotations"][
        "deployment.kubernetes.io/revision"
    ] = "8"
    restarted = copy.deepcopy(before)  # the same alert, as the restarted detector reports it
    (record,) = plan(build, model, [restarted], after, history=[done], later=timedelta(minutes=5))
    assert record.result == "Skipped" and "not again" in record.reason
    forgot = {**before, "since": format_time(build.NOW + timedelta(minutes=4))}
    (record,) = plan(build, model, [forgot], after, history=[done], later=timedelta(minutes=5))
    assert (record.result, record.to_state) == ("Running", "7")


# --------------------------------------------------------------------------- after a conflict


def _moved(obj: dict[str, Any], version: str, **spec: Any) -> dict[str, Any]:
    """`obj` after somebody else's write: a new resourceVersion (and `spec` changes)."""
    out = copy.deepcopy(obj)
    out["metadata"]["resourceVersion"] = version
    out["spec"].update(spec)
    return out


def test_a_conflict_replans_the_same_transition_under_the_same_id(build: Any) -> None:
    model = build.model(SCALE)
    dep = build.deployment()
    (record,) = plan(build, model, [_latency(build)], build.snapshot(dep))
    after = replan(model=model, record=record, snapshot=build.snapshot(_moved(dep, "101")))
    assert (after.id, after.result, after.from_state, after.to_state, after.at) == (
        record.id,
        "Running",
        "3",
        "6",
        record.at,
    )
    assert after.patch == {
        "Deployment/fraud-model": {"metadata": {"resourceVersion": "101"}, "spec": {"replicas": 6}}
    }
    assert "re-planned after a conflict" in after.message


def test_a_conflict_whose_replan_differs_is_skipped_with_the_reason(build: Any) -> None:
    model = build.model(SCALE)
    dep = build.deployment()
    (record,) = plan(build, model, [_latency(build)], build.snapshot(dep))
    moved = _moved(dep, "101", replicas=5)  # a person scaled it meanwhile
    after = replan(model=model, record=record, snapshot=build.snapshot(moved))
    assert (after.id, after.result) == (record.id, "Skipped")
    assert "no longer applicable: Deployment/fraud-model is now 5 → 10, not 3 → 6" in after.reason
    assert after.message == record.reason  # the alerts that called for it
    gone = replan(model=model, record=record, snapshot={})
    assert gone.result == "Skipped" and "not found" in gone.reason


def test_a_rollback_replanned_after_a_conflict(build: Any) -> None:
    model = build.model(ROLLBACK)
    live, sets = _history(build)
    (record,) = plan(
        build, model, [build.alert("PredictionDrift", None)], build.snapshot(live, *sets)
    )
    assert (record.from_state, record.to_state) == ("7", "6")
    moved = _moved(live, "555")
    after = replan(model=model, record=record, snapshot=build.snapshot(moved, *sets))
    assert after.result == "Running"
    patch = after.patch["Deployment/fraud-model"]
    assert patch["metadata"] == {"resourceVersion": "555"}
    assert patch["spec"] == record.patch["Deployment/fraud-model"]["spec"]
