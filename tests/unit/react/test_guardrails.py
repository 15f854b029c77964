"""Every guardrail, both sides: the reason it gives when it stops an action, and None when not."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from mlwarden.react import guardrails
from mlwarden.spec import Guardrails
from mlwarden.timestamps import parse_time

ONSET_OFFSET = timedelta(minutes=28)  # build.ONSET is 28 minutes before build.NOW


def test_not_ready() -> None:
    assert guardrails.not_ready(detector_ready=True, warming_up=False) is None
    assert "warming up" in (guardrails.not_ready(detector_ready=True, warming_up=True) or "")
    assert "not Ready" in (guardrails.not_ready(detector_ready=False, warming_up=False) or "")


def test_exactly_once(build: Any) -> None:
    done = build.record(id="scale-a", result="Succeeded")
    assert "Succeeded" in (guardrails.exactly_once(action_id="scale-a", history=[done]) or "")
    assert guardrails.exactly_once(action_id="scale-b", history=[done]) is None
    skipped = build.record(id="scale-a", result="Skipped")
    assert guardrails.exactly_once(action_id="scale-a", history=[skipped]) is None


@pytest.mark.parametrize("result", ["Planned", "Running", "Failed"])
def test_exactly_once_counts_every_settled_result(build: Any, result: str) -> None:
    history = [build.record(id="x", result=result)]
    assert guardrails.exactly_once(action_id="x", history=history) is not None


def _rollback(
    build: Any, *, ago: timedelta, dry_run: bool = False, result: str = "Succeeded"
) -> Any:
    return build.record(
        id="rollback-a",
        action="rollback",
        from_state="7",
        to_state="6",
        ago=ago,
        dry_run=dry_run,
        result=result,
        patch={"Deployment/fraud-model": {"spec": {"template": {}}}},
    )


def test_once_per_incident(build: Any) -> None:
    onset = parse_time(build.ONSET)
    objects = ["Deployment/fraud-model"]
    kw: dict[str, Any] = {"objects": objects, "onset": onset, "dry_run": False}
    earlier_in_incident = [_rollback(build, ago=timedelta(minutes=5))]
    reason = guardrails.once_per_incident(action="rollback", history=earlier_in_incident, **kw)
    assert reason is not None and "not again" in reason
    # A rollback from a past incident (before this onset) does not count.
    past = [_rollback(build, ago=ONSET_OFFSET + timedelta(hours=2))]
    assert guardrails.once_per_incident(action="rollback", history=past, **kw) is None
    # Stepwise actions may act again in one incident.
    assert guardrails.once_per_incident(action="scale", history=earlier_in_incident, **kw) is None
    # A dry run's rollback does not stop a real one (and the other way round).
    dry = [_rollback(build, ago=timedelta(minutes=5), dry_run=True)]
    assert guardrails.once_per_incident(action="rollback", history=dry, **kw) is None
    # Skipped is not taken.
    skipped = [_rollback(build, ago=timedelta(minutes=5), result="Skipped")]
    assert guardrails.once_per_incident(action="rollback", history=skipped, **kw) is None


def test_revision_moved() -> None:
    assert guardrails.revision_moved(alert_revision=7, current_revision="7") is None
    # Unknown on either side (no modelRevision, a hash no ReplicaSet carries): no objection.
    assert guardrails.revision_moved(alert_revision=None, current_revision="7") is None
    assert guardrails.revision_moved(alert_revision=7, current_revision=None) is None
    reason = guardrails.revision_moved(alert_revision=7, current_revision="8")
    assert reason is not None and "revision 7" in reason and "revision 8" in reason
    shown = "revision 7 (fraud:1.4, pod-template-hash 75d8f9c7b)"
    reason = guardrails.revision_moved(alert_revision=7, current_revision="8", shown=shown)
    assert reason is not None and shown in reason


def test_blames_elsewhere() -> None:
    target = "Deployment/fraud-model"
    assert guardrails.blames_elsewhere(top=None, target=target) is None
    assert guardrails.blames_elsewhere(top={}, target=target) is None
    own = {"kind": "Deployment", "name": "fraud-model"}
    assert guardrails.blames_elsewhere(top=own, target=target) is None
    reason = guardrails.blames_elsewhere(top={"kind": "ConfigMap", "name": "etl"}, target=target)
    assert reason is not None and "ConfigMap/etl" in reason
    # Revision 3 only injected the sidecar around revision 2's model: not the model's fault.
    blamed = {**own, "revision": "3"}
    reason = guardrails.blames_elsewhere(top=blamed, target=target, same_model=(2, 3))
    assert reason is not None and "revision 3" in reason and "revision 2" in reason
    # Revision 2 brought the running model in: a rollback may undo it.
    rolled = {**own, "revision": "2"}
    assert guardrails.blames_elsewhere(top=rolled, target=target, same_model=(2, 3)) is None


def test_person_changed(build: Any) -> None:
    onset = parse_time(build.ONSET)
    ours = build.record(to_state="6")  # set spec.replicas 6, 5 minutes ago
    kw: dict[str, Any] = {"objects": ["Deployment/fraud-model"], "onset": onset}
    still = build.snapshot(build.deployment(replicas=6, resource_version="101"))
    assert guardrails.person_changed(history=[ours], snapshot=still, **kw) is None
    changed = build.snapshot(build.deployment(replicas=4, resource_version="102"))
    reason = guardrails.person_changed(history=[ours], snapshot=changed, **kw)
    assert reason is not None
    assert "spec.replicas: set 6, now 4" in reason and "not acting on it again" in reason
    assert "Deployment/fraud-model" in reason
    gone = guardrails.person_changed(history=[ours], snapshot={}, **kw)
    assert gone is not None and "gone" in gone


def test_person_changed_looks_only_at_our_real_succeeded_actions_in_this_incident(
    build: Any,
) -> None:
    onset = parse_time(build.ONSET)
    kw: dict[str, Any] = {"objects": ["Deployment/fraud-model"], "onset": onset}
    changed = build.snapshot(build.deployment(replicas=4))
    for record in (
        build.record(dry_run=True),
        build.record(result="Failed"),
        build.record(result="Skipped"),
        build.record(ago=ONSET_OFFSET + timedelta(minutes=1)),  # a past incident
        build.record(target="Deployment/other"),
    ):
        assert guardrails.person_changed(history=[record], snapshot=changed, **kw) is None
    assert guardrails.person_changed(history=[], snapshot=changed, **kw) is None


def test_person_changed_compares_the_last_action_only(build: Any) -> None:
    onset = parse_time(build.ONSET)
    history = [
        build.record(id="a", to_state="6", ago=timedelta(minutes=20)),
        build.record(id="b", to_state="10", ago=timedelta(minutes=5)),
    ]
    at_ten = build.snapshot(build.deployment(replicas=10))
    kw: dict[str, Any] = {"objects": ["Deployment/fraud-model"], "onset": onset}
    assert guardrails.person_changed(history=history, snapshot=at_ten, **kw) is None
    # By time, not by list order.
    assert guardrails.person_changed(history=history[::-1], snapshot=at_ten, **kw) is None
    at_six = build.snapshot(build.deployment(replicas=6))
    assert guardrails.person_changed(history=history[::-1], snapshot=at_six, **kw) is not None


def test_cooldown(build: Any) -> None:
    kw: dict[str, Any] = {
        "objects": ["Deployment/fraud-model"],
        "now": build.NOW,
        "cooldown_seconds": 600.0,
        "dry_run": False,
    }
    recent = [build.record(ago=timedelta(minutes=5))]
    reason = guardrails.cooldown(history=recent, **kw)
    assert reason is not None and reason.startswith("cooldown 10m")
    assert "next after 2026-11-26T15:35:00Z" in reason
    # The reason reads the same a minute later: the Skipped record is not rewritten.
    later = {**kw, "now": build.NOW + timedelta(minutes=1)}
    assert guardrails.cooldown(history=recent, **later) == reason
    old = [build.record(ago=timedelta(minutes=11))]
    assert guardrails.cooldown(history=old, **kw) is None
    other = [build.record(ago=timedelta(minutes=5), target="Deployment/other")]
    assert guardrails.cooldown(history=other, **kw) is None
    dry = [build.record(ago=timedelta(minutes=5), dry_run=True)]
    assert guardrails.cooldown(history=dry, **kw) is None
    assert guardrails.cooldown(history=dry, **{**kw, "dry_run": True}) is not None
    skipped = [build.record(ago=timedelta(minutes=5), result="Skipped")]
    assert guardrails.cooldown(history=skipped, **kw) is None
    assert guardrails.cooldown(history=recent, **{**kw, "cooldown_seconds": 0.0}) is None


def test_cooldown_overlaps_on_any_object(build: Any) -> None:
    shift = build.record(
        target="Deployment/stable+Deployment/canary",
        action="shiftTraffic",
        patch={"Deployment/stable": {}, "Deployment/canary": {}},
    )
    kw: dict[str, Any] = {"now": build.NOW, "cooldown_seconds": 600.0, "dry_run": False}
    assert guardrails.cooldown(objects=["Deployment/canary"], history=[shift], **kw) is not None


def test_rate_limit(build: Any) -> None:
    kw: dict[str, Any] = {"now": build.NOW, "max_per_hour": 3, "dry_run": False}
    two = [build.record(id=str(i), ago=timedelta(minutes=10 * i)) for i in (1, 2)]
    assert guardrails.rate_limit(history=two, **kw) is None
    three = [*two, build.record(id="3", ago=timedelta(minutes=30))]
    reason = guardrails.rate_limit(history=three, **kw)
    assert reason is not None and "maxActionsPerHour 3 reached" in reason
    assert "room again after 2026-11-26T16:00:00Z" in reason
    assert guardrails.rate_limit(history=three, **{**kw, "now": build.NOW + timedelta(minutes=1)})
    # Actions older than an hour, alerts, skipped ones and dry runs do not count.
    others = [
        *two,
        build.record(id="old", ago=timedelta(minutes=61)),
        build.record(id="alert", action="alert", patch={}),
        build.record(id="skip", result="Skipped"),
        build.record(id="dry", dry_run=True),
    ]
    assert guardrails.rate_limit(history=others, **kw) is None
    assert guardrails.rate_limit(history=[], **{**kw, "max_per_hour": 0}) is not None


def test_approval() -> None:
    assert guardrails.approval(action_id="scale-a", annotations={}, required=False) is None
    reason = guardrails.approval(
        action_id="scale-a", annotations={}, required=True, model_name="fraud"
    )
    assert reason == (
        "waiting for approval: kubectl annotate observedmodel fraud "
        "mlwarden.io/approve=scale-a --overwrite"
    )
    approved = {"mlwarden.io/approve": "scale-a"}
    assert guardrails.approval(action_id="scale-a", annotations=approved, required=True) is None
    several = {"mlwarden.io/approve": "rollback-b, scale-a"}
    assert guardrails.approval(action_id="scale-a", annotations=several, required=True) is None
    other = {"mlwarden.io/approve": "scale-ab"}
    assert guardrails.approval(action_id="scale-a", annotations=other, required=True) is not None


def test_dry_run() -> None:
    assert guardrails.dry_run(guardrails=Guardrails(dry_run=False)) is None
    assert "dry run" in (guardrails.dry_run(guardrails=Guardrails(dry_run=True)) or "")
