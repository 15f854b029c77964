"""What people are told: the incident and fleet messages, and Alertmanager's alert."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from mlwarden.react.incidents import FleetMember, group_fleets, track
from mlwarden.react.notifications import (
    ALERTNAME,
    alertmanager_alert,
    fleet_message,
    incident_message,
    resolved_alert,
)
from mlwarden.timestamps import format_time

NOW = datetime(2026, 11, 26, 15, 30, tzinfo=UTC)
TOP = {"kind": "CronJob", "name": "feature-etl", "score": 0.8,
       "evidence": ["run feature-etl-29000000 failed 3m before the onset"]}  # fmt: skip
VERIFIED = {"signal": "p99", "before": 0.9, "after": 0.2, "verdict": "Fixed"}
SCALE = {"id": "scale-1", "action": "scale", "target": "Deployment/fraud-model", "from": "2",
         "to": "4", "result": "Succeeded", "verification": VERIFIED}  # fmt: skip


def incident(n: int = 12, *, resolved: bool = False) -> Any:
    since = format_time(NOW - timedelta(minutes=3))
    alerts = [{"type": "FeatureDrift", "feature": f"f{i}", "since": since} for i in range(n)]
    out = track(previous=[], alerts=alerts, top="CronJob/feature-etl", model_uid="u", now=NOW)
    if resolved:
        status = [i.to_status() for i in out.incidents]
        out = track(previous=status, alerts=[], top=None, model_uid="u",
                    now=NOW + timedelta(minutes=5))  # fmt: skip
    return out.incidents[0]


def message(**kw: Any) -> dict[str, Any]:
    args: dict[str, Any] = {"incident": incident(), "namespace": "ml", "name": "fraud",
                            "uid": "u", "top": TOP, "actions": [SCALE]}  # fmt: skip
    args.update(kw)
    return incident_message(**args)


def test_the_slack_message_is_one_per_incident_with_the_facts_beside_it() -> None:
    body = message()
    assert body["text"].startswith("[mlwarden] [FIRING:warning] ml/fraud: FeatureDrift on 12")
    header, alerts, suspect, actions, context = body["blocks"]
    assert header["type"] == "header" and len(header["text"]["text"]) <= 150
    assert alerts["text"]["text"].count("• FeatureDrift/") == 10  # then "… and 2 more"
    assert "… and 2 more" in alerts["text"]["text"]
    assert "failed 3m before the onset" in suspect["text"]["text"]
    assert (
        "scale Deployment/fraud-model 2→4 · Succeeded · verified Fixed (p99: 0.9 → 0.2)"
        in (actions["text"]["text"])
    )
    assert "kubectl describe om fraud -n ml" in context["elements"][0]["text"]
    assert body["kind"] == "incident" and body["status"] == "firing"
    assert len(body["incident"]["alerts"]) == 12 and body["incident"]["actions"] == [SCALE]
    assert "thread_ts" not in body


def test_json_is_the_facts_alone_and_a_resolved_message_threads() -> None:
    body = message(fmt="json")
    assert "text" not in body and "blocks" not in body and body["source"] == "mlwarden"
    done = message(incident=incident(resolved=True), thread="1700000000.000100")
    assert done["status"] == "resolved" and done["thread_ts"] == "1700000000.000100"
    assert done["text"].startswith("[mlwarden] [RESOLVED:warning]")


def test_the_fleet_message_names_the_suspect_and_every_model() -> None:
    members = [FleetMember(model=f"m{i}", uid=f"u{i}", incident=f"inc-{i}",
                           suspect="CronJob/feature-etl", onset=format_time(NOW),
                           severity="critical" if i == 3 else "warning")
               for i in range(5)]  # fmt: skip
    (fleet,) = group_fleets(namespace="ml", members=members)
    body = fleet_message(fleet=fleet, top=TOP)
    assert body["text"].startswith("[mlwarden] [FIRING:critical] ml: CronJob/feature-etl")
    assert "5 models: m0, m1, m2, m3, m4" in body["text"]
    assert body["incident"]["id"] == fleet.name and len(body["incident"]["members"]) == 5
    assert body["command"] == f"kubectl get incident {fleet.name} -n ml -o yaml"


def test_the_alertmanager_alert() -> None:
    found = incident()
    alert = alertmanager_alert(incident=found, namespace="ml", name="fraud", top=TOP,
                               actions=[SCALE], now=NOW, ttl_seconds=240)  # fmt: skip
    assert alert["labels"] == {"alertname": ALERTNAME, "namespace": "ml", "observedmodel": "fraud",
                               "incident": found.id, "severity": "warning",
                               "suspect": "CronJob/feature-etl"}  # fmt: skip
    assert alert["startsAt"] == format_time(NOW)  # when it opened, not the onset
    assert alert["annotations"]["onset"] == format_time(NOW - timedelta(minutes=3))
    assert alert["endsAt"] == format_time(NOW + timedelta(seconds=240))  # re-sent before
    assert "failed 3m before the onset" in alert["annotations"]["diagnosis"]
    assert "verified Fixed" in alert["annotations"]["actions"]
    assert all(isinstance(v, str) for v in alert["annotations"].values())
    done = alertmanager_alert(incident=incident(resolved=True), namespace="ml", name="fraud",
                              top=None, actions=[], now=NOW, ttl_seconds=240)  # fmt: skip
    assert done["endsAt"] == format_time(NOW + timedelta(minutes=5))  # when it resolved
    assert done["annotations"]["actions"] == "none"
    ended = resolved_alert(alert, now=NOW + timedelta(seconds=30))
    assert ended["labels"] == alert["labels"]
    assert ended["endsAt"] == format_time(NOW + timedelta(seconds=30))
