"""The incident parts of the CRDs: status.incidents, and the Incident CRD (fleet incidents).

A structural schema makes the API server drop the fields it does not declare, so every key
the operator writes must be declared: checked here on what `react.incidents` writes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes_validate import validate as kubernetes_validate

from mlwarden.crd import custom_resource_definition, incident_definition, incident_yaml
from mlwarden.react.incidents import FleetMember, Taken, group_fleets, track, with_action
from mlwarden.spec import MAX_STATUS_INCIDENTS

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 26, 15, 0, tzinfo=UTC)


def _undeclared(value: Any, node: dict[str, Any], where: str) -> list[str]:
    """Keys in `value` that the schema `node` would prune."""
    if isinstance(value, dict) and "properties" in node:
        out = []
        for key, sub in value.items():
            if key not in node["properties"]:
                out.append(f"{where}.{key}")
            else:
                out += _undeclared(sub, node["properties"][key], f"{where}.{key}")
        return out
    if isinstance(value, list) and "items" in node:
        return [
            p for n, v in enumerate(value) for p in _undeclared(v, node["items"], f"{where}[{n}]")
        ]
    return []


def test_the_incident_crd_is_valid_and_its_file_fresh() -> None:
    kubernetes_validate(incident_definition(), "1.30", strict=True)
    committed = (ROOT / "crds" / "incidents.mlwarden.io.yaml").read_text()
    assert committed == incident_yaml(), (
        "crds/incidents.mlwarden.io.yaml is stale: run "
        ".venv/bin/python -m mlwarden.crd --incidents > crds/incidents.mlwarden.io.yaml"
    )
    names = incident_definition()["spec"]["names"]
    assert (names["kind"], names["plural"]) == ("Incident", "incidents")


def test_status_incidents_declares_every_field_written() -> None:
    schema = custom_resource_definition()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    status = schema["properties"]["status"]
    assert status["properties"]["incidents"]["maxItems"] == MAX_STATUS_INCIDENTS
    alerts = [{"type": "FeatureDrift", "feature": "amount", "since": "2026-11-26T14:58:00Z"}]
    tracked = track(previous=[], alerts=alerts, top="CronJob/x", model_uid="u", now=NOW)
    incidents = with_action(tracked.incidents, tracked.incidents[0].id,
                            Taken("scale-1", "scale", "Succeeded", "Fixed"))  # fmt: skip
    written = {"incidents": [i.to_status() for i in incidents], "openIncidents": 1}
    assert _undeclared(written, status, "status") == []


def test_the_fleet_record_declares_every_field_written() -> None:
    schema = incident_definition()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    onset = "2026-11-26T14:58:00Z"
    members = [FleetMember(model=m, uid=m, incident=f"inc-{m}", suspect="CronJob/x",
                           onset=onset, severity="warning") for m in "ab"]  # fmt: skip
    (fleet,) = group_fleets(namespace="ml", members=members)
    body = {
        "suspect": fleet.suspect, "state": fleet.state, "severity": fleet.severity,
        "onset": fleet.onset, "resolved": fleet.resolved, "summary": fleet.summary(),
        "modelCount": len(fleet.models), "members": [m.to_status() for m in fleet.members],
        "notified": {"abc": "2026-11-26T15:00:00Z"},
    }  # fmt: skip
    assert _undeclared(body, schema, "") == []
