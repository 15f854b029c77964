"""Incidents: grouping one model's alerts by onset and diagnosis; fleets across models."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from mlwarden.react.incidents import (
    FleetMember,
    Incident,
    Member,
    Taken,
    Tracked,
    alert_key,
    fleet_of,
    group_fleets,
    refresh_actions,
    severity_of,
    track,
    trim,
    with_action,
)
from mlwarden.spec import (
    MAX_STATUS_INCIDENT_ALERTS,
    MAX_STATUS_INCIDENTS,
    parse_observed_model,
)
from mlwarden.timestamps import format_time

T0 = datetime(2026, 11, 26, 15, 0, 0, tzinfo=UTC)
UID = "7b4d0a52-52a1-4c39-9d6e-0a3c2b1f9e11"
JOB = "CronJob/feature-job"


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def alert(type_: str = "FeatureDrift", feature: str | None = "amount", *,
          since: float = 0.0) -> dict[str, Any]:  # fmt: skip
    out: dict[str, Any] = {"type": type_, "test": "ks", "statistic": 0.3, "threshold": 0.01,
                           "since": format_time(at(since)), "reference": "warmup@x"}  # fmt: skip
    if feature is not None:
        out["feature"] = feature
    return out


def step(previous: Tracked | None, alerts: list[dict[str, Any]], *, now: float,
         top: str | None = JOB, **kw: Any) -> Tracked:  # fmt: skip
    """One pass: the previous pass's incidents as status has them, the alerts now."""
    status = [i.to_status() for i in previous.incidents] if previous else []
    return track(previous=status, alerts=alerts, top=top, model_uid=UID, now=at(now), **kw)


FEATURES = [f"f{n}" for n in range(10)]


def test_ten_features_that_start_together_are_one_incident() -> None:
    drift = [alert(feature=f, since=n * 0.2) for n, f in enumerate(FEATURES)]
    out = step(None, drift, now=3)
    (incident,) = out.incidents
    assert out.opened == (incident.id,)
    assert incident.state == "Firing" and incident.suspect == JOB
    assert incident.onset == format_time(at(0))
    assert sorted(m.key for m in incident.alerts) == sorted(f"FeatureDrift/{f}" for f in FEATURES)
    assert incident.severity == "warning"
    assert incident.summary().startswith("FeatureDrift on 10 features (f0, f1, f2, f3, f4, …)")
    assert incident.summary().endswith(f"top suspect {JOB}")
    # Stable: the same alerts on the next pass change nothing, the id included.
    again = step(out, drift, now=4)
    assert again.incidents == out.incidents and again.opened == () and again.resolved == ()


def test_the_id_is_the_same_after_a_restart_and_differs_per_onset() -> None:
    first = step(None, [alert()], now=1).incidents[0]
    assert step(None, [alert()], now=5).incidents[0].id == first.id  # status lost: same id
    assert step(None, [alert(since=30)], now=31).incidents[0].id != first.id
    other = track(previous=[], alerts=[alert()], top=JOB, model_uid="other", now=at(1))
    assert other.incidents[0].id != first.id


def test_an_alert_that_starts_later_within_the_window_joins() -> None:
    out = step(None, [alert(feature="amount")], now=1)
    later = step(out, [alert(feature="amount"), alert(feature="age", since=6)], now=7)
    (incident,) = later.incidents
    assert incident.keys == ("FeatureDrift/amount", "FeatureDrift/age")
    assert later.joined == {incident.id: ("FeatureDrift/age",)}
    assert later.opened == ()


def test_an_alert_that_starts_apart_is_another_incident() -> None:
    out = step(None, [alert(feature="amount")], now=1)
    later = step(out, [alert(feature="amount"), alert("Latency", None, since=40)], now=41)
    first, second = later.incidents
    assert first.keys == ("FeatureDrift/amount",) and second.keys == ("Latency",)
    assert later.opened == (second.id,)
    assert second.severity == "warning"


def test_a_different_diagnosis_is_another_incident_even_when_together() -> None:
    out = step(None, [alert(feature="amount")], now=1, top="ConfigMap/features")
    later = step(out, [alert(feature="amount"), alert("Errors", None, since=2)], now=3,
                 top="Deployment/fraud-model")  # fmt: skip
    first, second = later.incidents
    assert (first.suspect, second.suspect) == ("ConfigMap/features", "Deployment/fraud-model")
    assert second.severity == "critical"  # Errors' default


def test_an_unknown_suspect_does_not_split_and_is_filled_in_later() -> None:
    out = step(None, [alert(feature="amount")], now=1, top=None)
    assert out.incidents[0].suspect is None
    later = step(out, [alert(feature="amount"), alert(feature="age", since=2)], now=3)
    (incident,) = later.incidents
    assert incident.suspect == JOB and len(incident.alerts) == 2


def test_it_resolves_when_all_its_alerts_have() -> None:
    both = [alert(feature="amount"), alert(feature="age")]
    out = step(None, both, now=1)
    half = step(out, both[:1], now=5)
    (incident,) = half.incidents
    assert incident.firing and half.resolved == ()
    resolved = {m.key: m.resolved for m in incident.alerts}
    assert resolved == {"FeatureDrift/amount": None, "FeatureDrift/age": format_time(at(5))}
    done = step(half, [], now=9)
    (incident,) = done.incidents
    assert incident.state == "Resolved" and incident.resolved == format_time(at(9))
    assert done.resolved == (incident.id,)
    assert step(done, [], now=10).resolved == ()  # said once


def test_an_alert_that_refires_while_the_incident_is_open_rejoins_it() -> None:
    both = [alert(feature="amount"), alert(feature="age")]
    out = step(step(None, both, now=1), both[:1], now=5)
    refired = [both[0], alert(feature="age", since=45)]  # 45 min on: outside the window
    again = step(out, refired, now=46)
    (incident,) = again.incidents
    age = next(m for m in incident.alerts if m.key == "FeatureDrift/age")
    assert age.resolved is None and age.refired == 1 and age.since == format_time(at(45))
    assert again.opened == ()


def test_a_resolved_incident_reopens_when_an_alert_refires_soon_and_not_later() -> None:
    out = step(step(None, [alert()], now=1), [], now=10)
    reopened = step(out, [alert(since=12)], now=13)
    (incident,) = reopened.incidents
    assert incident.firing and incident.reopened == 1 and reopened.reopened == (incident.id,)
    assert reopened.opened == ()
    late = step(out, [alert(since=30)], now=31)  # 21 minutes after it resolved
    assert len(late.incidents) == 2 and late.opened == (late.incidents[1].id,)
    assert late.incidents[0].state == "Resolved"


def test_severity_defaults_and_a_reaction_overrides() -> None:
    model = parse_observed_model({
        "apiVersion": "mlwarden.io/v1alpha1", "kind": "ObservedModel",
        "metadata": {"name": "fraud", "namespace": "ml"},
        "spec": {"target": {"deployment": "fraud-model"},
                 "features": [{"name": "amount", "type": "numeric"},
                              {"name": "age", "type": "numeric"}],
                 "reactions": [{"alert": "FeatureDrift", "feature": "amount",
                                "action": "alert", "severity": "critical"},
                               {"alert": "Errors", "action": "alert",
                                "severity": "info"}]}})  # fmt: skip
    reactions = model.spec.reactions
    assert severity_of(alert(feature="amount"), reactions) == "critical"
    assert severity_of(alert(feature="age"), reactions) == "warning"
    assert severity_of(alert("Errors", None), reactions) == "info"
    assert severity_of(alert("PerformanceDrop", None), ()) == "critical"
    out = step(None, [alert(feature="age"), alert(feature="amount")], now=1, reactions=reactions)
    assert out.incidents[0].severity == "critical"  # the highest of its alerts


def test_bounded_oldest_resolved_first() -> None:
    incidents = [
        Incident(id=f"inc-{n}", onset="", opened="", resolved="x" if n % 2 else None,
                 alerts=(Member("Latency", "", "warning", resolved="x" if n % 2 else None),))
        for n in range(MAX_STATUS_INCIDENTS + 6)
    ]  # fmt: skip
    kept = trim(incidents)
    assert len(kept) == MAX_STATUS_INCIDENTS
    gone = {i.id for i in incidents} - {i.id for i in kept}
    assert gone == {f"inc-{n}" for n in (1, 3, 5, 7, 9, 11)}  # resolved ones, oldest first
    many = Incident(id="inc-x", onset="", opened="", alerts=tuple(
        Member(f"FeatureDrift/f{n}", "", "warning", resolved="x" if n < 10 else None)
        for n in range(MAX_STATUS_INCIDENT_ALERTS + 5)))  # fmt: skip
    (bounded,) = trim([many])
    assert len(bounded.alerts) == MAX_STATUS_INCIDENT_ALERTS
    assert sum(m.resolved is not None for m in bounded.alerts) == 5


def test_status_round_trip_and_actions() -> None:
    out = step(None, [alert()], now=1)
    (incident,) = with_action(
        out.incidents, out.incidents[0].id, Taken("scale-1", "scale", "Running")
    )
    status = incident.to_status()
    assert Incident.from_status(status) == incident
    reactions = [{"id": "scale-1", "result": "Succeeded",
                  "verification": {"verdict": "Fixed"}}]  # fmt: skip
    (refreshed,) = refresh_actions([incident], reactions)
    assert refreshed.actions == (Taken("scale-1", "scale", "Succeeded", "Fixed"),)


# --------------------------------------------------------------------------- fleets


def member(model: str, *, suspect: str | None = JOB, onset: float = 0.0,
           resolved: float | None = None, fleet: str | None = None) -> FleetMember:  # fmt: skip
    return FleetMember(model=model, uid=f"uid-{model}", incident=f"inc-{model}", suspect=suspect,
                       onset=format_time(at(onset)), severity="warning",
                       resolved=None if resolved is None else format_time(at(resolved)),
                       fleet=fleet)  # fmt: skip


def test_a_suspect_shared_by_five_models_is_one_fleet() -> None:
    members = [member(f"model-{n}", onset=n * 0.5) for n in range(5)]
    members += [member("loner", suspect="ConfigMap/other"), member("unknown", suspect=None)]
    (fleet,) = group_fleets(namespace="ml", members=members)
    assert fleet.suspect == JOB and fleet.models == tuple(f"model-{n}" for n in range(5))
    assert fleet.name.startswith("fleet-") and fleet.state == "Firing"
    assert fleet.onset == format_time(at(0))
    assert "5 models" in fleet.summary() and JOB in fleet.summary()
    assert fleet_of([fleet], model="model-3", incident="inc-model-3") is fleet
    assert fleet_of([fleet], model="loner", incident="inc-loner") is None
    # The same name whatever order the models are listed in.
    again = group_fleets(namespace="ml", members=list(reversed(members)))
    assert [f.name for f in again] == [fleet.name]
    assert group_fleets(namespace="other", members=members)[0].name != fleet.name


def test_one_model_is_no_fleet_and_incidents_far_apart_are_two() -> None:
    assert group_fleets(namespace="ml", members=[member("a")]) == []
    far = [member("a"), member("b", onset=10), member("c", onset=50), member("d", onset=55)]
    first, second = sorted(group_fleets(namespace="ml", members=far), key=lambda f: f.onset)
    assert first.models == ("a", "b") and second.models == ("c", "d")


def test_an_assigned_fleet_keeps_its_members_and_takes_late_ones() -> None:
    (fleet,) = group_fleets(namespace="ml", members=[member("a"), member("b", onset=1)])
    assigned = [member("a", fleet=fleet.name), member("b", onset=1, fleet=fleet.name),
                member("c", onset=20)]  # fmt: skip
    (grown,) = group_fleets(namespace="ml", members=assigned)
    assert grown.name == fleet.name and grown.models == ("a", "b", "c")
    # Model a's incident is gone (the model was deleted): the fleet keeps its name.
    (kept,) = group_fleets(namespace="ml", members=assigned[1:])
    assert kept.name == fleet.name


def test_a_fleet_resolves_when_every_member_has() -> None:
    members = [member("a", resolved=5), member("b", onset=1)]
    (fleet,) = group_fleets(namespace="ml", members=members)
    assert fleet.state == "Firing" and fleet.resolved is None
    (done,) = group_fleets(namespace="ml", members=[members[0], member("b", onset=1, resolved=7)])
    assert done.state == "Resolved" and done.resolved == format_time(at(7))


# --------------------------------------------------------------------------- the planner's hook


def test_alert_reactions_plan_one_record_per_incident(build: Any) -> None:
    from mlwarden.react.policy import plan_reactions

    model = build.model({"alert": "FeatureDrift", "action": "alert", "webhook": "https://h/x"},
                        {"alert": "Latency", "action": "alert"})  # fmt: skip
    alerts = [build.alert("FeatureDrift", "amount"), build.alert("FeatureDrift", "age"),
              build.alert("Latency", None)]  # fmt: skip
    tracked = track(previous=[], alerts=alerts[:2], top=JOB, model_uid="u", now=build.NOW)
    later = track(previous=[i.to_status() for i in tracked.incidents], alerts=alerts, top="x/y",
                  model_uid="u", now=build.NOW)  # fmt: skip
    drift, latency = later.incidents

    def plan(incident_of: Any) -> list[Any]:
        return plan_reactions(model=model, alerts=alerts, diagnosis_top=None, snapshot={},
                              history=[], annotations={}, detector_ready=True, warming_up=False,
                              now=build.NOW, incident_of=incident_of)  # fmt: skip

    def incident_of(alert: dict[str, Any]) -> str | None:
        found = later.of(alert)
        return found.id if found is not None else None

    grouped = plan(incident_of)
    assert sorted(r.from_state for r in grouped) == sorted([drift.id, latency.id])
    assert all(r.result == "Running" for r in grouped)
    assert len(plan(None)) == 3  # without incidents: one per alert, as before
    assert [r.id for r in plan(incident_of)] == [r.id for r in grouped]  # stable ids


def test_an_alert_on_a_segment_is_named_with_its_segment() -> None:
    assert alert_key({"type": "FeatureDrift", "feature": "x0"}) == "FeatureDrift/x0"
    segment = {"type": "FeatureDrift", "feature": "x0", "segment": {"country": "BR"}}
    assert alert_key(segment) == "FeatureDrift/x0@country=BR"
