"""ActionRecord: deterministic ids, the status round trip, merge-patch reading, and restarts."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from mlwarden.patches import apply_merge_patch
from mlwarden.react.actions import (
    ActionRecord,
    action_id,
    changed_since,
    fingerprint,
    records_from_status,
)
from mlwarden.react.policy import plan_reactions

ID_ARGS: dict[str, Any] = {
    "model_uid": "uid-1",
    "alert_key": "FeatureDrift/amount",
    "onset": "2026-11-26T15:02:11.204Z",
    "action": "rollback",
    "target": "Deployment/fraud-model",
    "from_state": "7",
    "to_state": "6",
}


# --------------------------------------------------------------------------- ids


def test_the_same_incident_gets_the_same_id() -> None:
    assert action_id(**ID_ARGS) == action_id(**ID_ARGS)
    assert action_id(**ID_ARGS).startswith("rollback-")
    assert len(action_id(**ID_ARGS)) == len("rollback-") + 10


def test_the_onset_is_compared_as_a_time_not_as_text() -> None:
    same = {**ID_ARGS, "onset": "2026-11-26T15:02:11.204+00:00"}
    assert action_id(**same) == action_id(**ID_ARGS)


@pytest.mark.parametrize(
    "change",
    [
        {"model_uid": "uid-2"},
        {"alert_key": "FeatureDrift/age"},
        {"onset": "2026-11-26T16:00:00Z"},
        {"action": "scale"},
        {"target": "Deployment/other"},
        {"from_state": "8"},
        {"to_state": "5"},
        {"dry_run": True},
    ],
)
def test_any_other_input_gives_another_id(change: dict[str, Any]) -> None:
    assert action_id(**{**ID_ARGS, **change}) != action_id(**ID_ARGS)


# --------------------------------------------------------------------------- status


def _record(**kw: Any) -> ActionRecord:
    base: dict[str, Any] = {
        "id": "rollback-0123456789",
        "action": "rollback",
        "target": "Deployment/fraud-model",
        "from_state": "7",
        "to_state": "6",
        "reason": "PredictionDrift since 2026-11-26T15:02:11Z",
        "result": "Succeeded",
        "at": "2026-11-26T15:30:00Z",
        "dry_run": False,
        "message": "done",
        "patch": {"Deployment/fraud-model": {"spec": {"template": {"spec": {"x": None}}}}},
    }
    return ActionRecord(**{**base, **kw})


@pytest.mark.parametrize(
    "record",
    [
        _record(result="Running"),
        _record(patch={}, held={"Deployment/fraud-model": {"/spec/replicas": "0123456789ab"}}),
        _record(patch={}, result="Skipped", message=""),
        _record(dry_run=True, result="Planned"),
        _record(
            action="alert", target="ObservedModel/fraud", from_state="Errors", to_state="", patch={}
        ),
    ],
)
def test_status_round_trip(record: ActionRecord) -> None:
    entry = record.to_status()
    assert ActionRecord.from_status(entry) == record
    # What the API server stores is JSON.
    assert ActionRecord.from_status(json.loads(json.dumps(entry))) == record


def test_status_keys_are_camel_case() -> None:
    entry = _record(result="Running").to_status()
    assert set(entry) == {
        *("id", "action", "target", "from", "to", "reason", "result", "at", "dryRun"),
        *("message", "patch"),
    }
    assert "patch" not in _record(patch={}, result="Running").to_status()


@pytest.mark.parametrize("result", ["Succeeded", "Failed", "Skipped"])
def test_an_ended_record_is_compact(result: Any) -> None:
    held = {"Deployment/fraud-model": {"/spec/template": "0123456789ab"}}
    entry = _record(result=result, held=held).to_status()
    assert "patch" not in entry
    assert entry.get("held") == held
    # Open ones keep the patch (what a restarted operator completes); dry runs show it.
    assert "patch" in _record(result="Planned").to_status()
    assert "patch" in _record(result=result, dry_run=True).to_status()


def test_fingerprint_names_each_field_set_and_notices_a_change() -> None:
    after = {
        "metadata": {"resourceVersion": "9", "annotations": {"mlwarden.io/paused": "3"}},
        "spec": {"replicas": 0, "template": {"spec": {"containers": [{"name": "m"}]}}},
    }
    patch = {
        "metadata": {"resourceVersion": "8", "annotations": {"mlwarden.io/paused": "3", "x": None}},
        "spec": {"replicas": 0},
    }
    held = fingerprint(after, patch)
    assert set(held) == {"/metadata/annotations/mlwarden.io~1paused",
                         "/metadata/annotations/x", "/spec/replicas"}  # fmt: skip
    assert changed_since(after, held) is None
    # Another writer's fields, and a new resourceVersion, are not ours to compare.
    other = {"metadata": {"resourceVersion": "12"}, "spec": {"template": {"spec": {}}}}
    moved_on = apply_merge_patch(after, other)
    assert changed_since(moved_on, held) is None
    assert changed_since(apply_merge_patch(after, {"spec": {"replicas": 2}}), held) == (
        "/spec/replicas changed"
    )
    assert changed_since(apply_merge_patch(after, {"metadata": {"annotations": {"x": "1"}}}),
                         held) == "/metadata/annotations/x changed"  # fmt: skip
    assert changed_since(None, held) == "the object is gone"


def test_from_status_reads_what_an_older_or_pruned_status_holds() -> None:
    record = ActionRecord.from_status(
        {"id": "scale-1", "action": "scale", "from": 3, "to": 6, "result": "Succeeded"}
    )
    assert (record.from_state, record.to_state) == ("3", "6")
    assert (record.message, record.patch, record.dry_run) == ("", {}, False)
    assert record.objects == ()


def test_an_unknown_result_reads_as_failed_never_as_something_to_continue() -> None:
    assert ActionRecord.from_status({"id": "a", "action": "scale", "result": "Bogus"}).result == (
        "Failed"
    )


def test_records_from_status_drops_entries_that_are_not_ours() -> None:
    entries = [{"id": "a", "action": "scale"}, {"action": "scale"}, "junk", {"id": "b"}]
    assert [r.id for r in records_from_status(entries)] == ["a"]  # type: ignore[list-item]
    assert records_from_status(None) == []


def test_metric_result_sets_dry_runs_apart() -> None:
    assert _record().metric_result == "Succeeded"
    assert _record(dry_run=True).metric_result == "DryRun"
    assert _record(dry_run=True, result="Skipped").metric_result == "Skipped"


def test_settle_keeps_the_id_and_the_time() -> None:
    settled = _record(result="Running").settle("Failed", "409 Conflict")
    assert (settled.id, settled.at, settled.result, settled.message) == (
        "rollback-0123456789",
        "2026-11-26T15:30:00Z",
        "Failed",
        "409 Conflict",
    )


def test_objects_of_a_two_deployment_action() -> None:
    record = _record(
        target="Deployment/stable+Deployment/canary",
        patch={"Deployment/stable": {}, "Deployment/canary": {}},
    )
    assert record.objects == ("Deployment/stable", "Deployment/canary")
    assert _record(patch={}, target="Deployment/a+Deployment/b").objects == (
        "Deployment/a",
        "Deployment/b",
    )


# --------------------------------------------------------------------------- restarts


SCALE = {"alert": "Latency", "action": "scale", "maxReplicas": 10}


def _running_scale(build: Any) -> tuple[Any, ActionRecord]:
    """A first pass planned scale 3→6 (Running), and the operator stopped right there."""
    model = build.model(SCALE)
    first = plan_reactions(
        model=model,
        alerts=[build.alert("Latency", None)],
        diagnosis_top=None,
        snapshot=build.snapshot(build.deployment(replicas=3)),
        history=[],
        annotations={},
        detector_ready=True,
        warming_up=False,
        now=build.NOW,
    )
    assert [r.result for r in first] == ["Running"]
    return model, first[0]


def _again(build: Any, model: Any, history: list[ActionRecord], snap: Any) -> list[ActionRecord]:
    return plan_reactions(
        model=model,
        alerts=[build.alert("Latency", None)],
        diagnosis_top=None,
        snapshot=snap,
        history=history,
        annotations={},
        detector_ready=True,
        warming_up=False,
        now=build.NOW + timedelta(seconds=30),
    )


def test_restart_before_the_patch_landed_continues_the_same_action(build: Any) -> None:
    model, running = _running_scale(build)
    history = [ActionRecord.from_status(running.to_status())]
    out = _again(build, model, history, build.snapshot(build.deployment(replicas=3)))
    assert len(out) == 1
    assert (out[0].id, out[0].result, out[0].to_state) == (running.id, "Running", "6")
    assert out[0].patch == running.patch
    assert "resumed" in out[0].message


def test_restart_after_the_patch_landed_reports_it_and_does_not_repeat_it(build: Any) -> None:
    model, running = _running_scale(build)
    history = [ActionRecord.from_status(running.to_status())]
    out = _again(build, model, history, build.applied([build.deployment(replicas=3)], running))
    assert out[0].id == running.id
    assert out[0].result == "Succeeded"
    assert "before an operator restart" in out[0].message
    # No second action is taken: the next step (6→10) waits for the cooldown.
    assert [r.result for r in out[1:]] == ["Skipped"]
    assert out[1].reason.startswith("cooldown")


def test_restart_after_someone_changed_the_target_reports_failed(build: Any) -> None:
    model, running = _running_scale(build)
    history = [ActionRecord.from_status(running.to_status())]
    changed = build.deployment(replicas=4, resource_version="105")
    out = _again(build, model, history, build.snapshot(changed))
    assert (out[0].id, out[0].result) == (running.id, "Failed")
    assert "spec.replicas: set 6, now 4" in out[0].message
    assert all(r.result != "Running" for r in out)


def test_restart_with_a_planned_record_waiting_for_approval_writes_nothing_new(
    build: Any,
) -> None:
    model = build.model(SCALE, guardrails={"requireApproval": True})
    snap = build.snapshot(build.deployment(replicas=3))
    first = plan_reactions(
        model=model,
        alerts=[build.alert("Latency", None)],
        diagnosis_top=None,
        snapshot=snap,
        history=[],
        annotations={},
        detector_ready=True,
        warming_up=False,
        now=build.NOW,
    )
    assert [r.result for r in first] == ["Planned"]
    history = [ActionRecord.from_status(first[0].to_status())]
    assert _again(build, model, history, snap) == []


def test_an_interrupted_alert_is_reported_not_sent_twice(build: Any) -> None:
    model = build.model({"alert": "Errors", "action": "alert"})
    running = build.record(
        id="alert-1", action="alert", target="ObservedModel/fraud", result="Running", patch={}
    )
    out = plan_reactions(
        model=model,
        alerts=[],
        diagnosis_top=None,
        snapshot={},
        history=[running],
        annotations={},
        detector_ready=True,
        warming_up=False,
        now=build.NOW,
    )
    assert [(r.id, r.result) for r in out] == [("alert-1", "Failed")]
