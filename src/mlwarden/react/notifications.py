"""What people are told about an incident: webhook messages and Alertmanager alerts (pure).

One message per incident (react/incidents.py), not one per alert, and one when it resolves:

- `incident_message`: the body of a `reactions[].webhook` post about one ObservedModel's
  incident. `webhookFormat: slack` (the default) is Slack's incoming-webhook message (`text`,
  `blocks`) with the facts beside it as JSON (Slack ignores keys it does not know);
  `json` is the facts alone. The facts: `source`, `kind` (`incident` or `fleetIncident`),
  `status` (`firing` or `resolved`), `incident` {id, severity, onset, resolved, summary,
  suspect, alerts, actions}, `observedModel` {name, namespace, uid}, `diagnosis` (the top
  suspect with its evidence), `command` (what to run to see more). A receiver that keeps
  state threads or updates by `incident.id` (the generic JSON), or by Slack's `thread_ts`:
  when the firing message's answer carried a `ts` (a chat.postMessage-compatible endpoint),
  the resolved message is sent with `thread_ts` set to it.
- `fleet_message`: the same for a fleet incident: one message naming the suspect and the
  affected models.
- `alertmanager_alert`: one incident as an alert of Alertmanager's v2 API
  (`POST /api/v2/alerts`: labels, annotations, startsAt, endsAt, generatorURL). Labels
  identify an alert, so they are the incident's fixed facts: `alertname` (`MLWardenIncident`),
  `namespace`, `observedmodel`, `incident`, `severity`, `suspect` (`none` when unknown; a
  change of severity or suspect is a new alert, and the shell resolves the old one).
  `startsAt` is when the operator opened the incident (`onset`, the first failing
  evaluation, is an annotation). Annotations carry the rest: `summary`, `diagnosis` (the
  suspect's evidence), `actions` (each action with its result and verification), `command`,
  `fleet`. While firing, `endsAt`
  lies `ttl` ahead of the send, and the shell re-sends well before it (Alertmanager then
  resolves an alert whose sender went away, as it does Prometheus'); once resolved,
  `endsAt` is when it resolved.

Texts are cut to Slack's limits; nothing here does I/O.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Final

from mlwarden.react.incidents import Fleet, Incident
from mlwarden.timestamps import format_time, parse_time

ALERTNAME: Final = "MLWardenIncident"
FLEET_ALERTNAME: Final = "MLWardenFleetIncident"
NO_SUSPECT: Final = "none"
# Slack's limits (api.slack.com/reference/block-kit/blocks); longer texts are cut.
_HEADER_MAX: Final = 150
_SECTION_MAX: Final = 3000
_ANNOTATION_MAX: Final = 4000
_MAX_LINES: Final = 10


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def describe_command(*, namespace: str, name: str) -> str:
    return f"kubectl describe om {name} -n {namespace}"


def _lines(items: Sequence[str]) -> str:
    shown = [f"• {i}" for i in items[:_MAX_LINES]]
    if len(items) > _MAX_LINES:
        shown.append(f"• … and {len(items) - _MAX_LINES} more")
    return "\n".join(shown)


def _evidence(top: Mapping[str, Any] | None) -> list[str]:
    return [str(e) for e in (top or {}).get("evidence") or ()]


def _action_line(action: Mapping[str, Any]) -> str:
    """`scale Deployment/fraud-model 2→4 · Succeeded · verified Fixed`."""
    line = str(action.get("action", "?"))
    if action.get("target"):
        line += f" {action['target']}"
    if action.get("from") or action.get("to"):
        line += f" {action.get('from', '')}→{action.get('to', '')}"
    line += f" · {action.get('result', '?')}"
    if action.get("dryRun"):
        line += " (dry run)"
    verification = action.get("verification")
    if isinstance(verification, Mapping) and verification.get("verdict"):
        line += f" · verified {verification['verdict']}"
        if verification.get("signal"):
            line += (
                f" ({verification['signal']}: {verification.get('before')} → "
                f"{verification.get('after')})"
            )
    if action.get("message") and action.get("result") in ("Failed", "Skipped"):
        line += f" · {action['message']}"
    return line


def _alert_lines(incident: Incident) -> list[str]:
    out = []
    for member in incident.alerts:
        line = f"{member.key} since {member.since} ({member.severity})"
        if member.resolved:
            line += f", resolved {member.resolved}"
        out.append(line)
    return out


def incident_facts(
    *,
    incident: Incident,
    namespace: str,
    name: str,
    uid: str | None,
    top: Mapping[str, Any] | None,
    actions: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """The facts every format carries (module docstring)."""
    return {
        "source": "mlwarden",
        "kind": "incident",
        "status": "firing" if incident.firing else "resolved",
        "incident": {
            **incident.to_status(),
            "actions": [copy.deepcopy(dict(a)) for a in actions],
        },
        "observedModel": {"name": name, "namespace": namespace, "uid": uid},
        "diagnosis": {"topSuspect": copy.deepcopy(dict(top)) if top else None},
        "command": describe_command(namespace=namespace, name=name),
    }


def incident_message(
    *,
    incident: Incident,
    namespace: str,
    name: str,
    uid: str | None,
    top: Mapping[str, Any] | None,
    actions: Sequence[Mapping[str, Any]],
    fmt: str = "slack",
    thread: str | None = None,
) -> dict[str, Any]:
    """One webhook message about an incident, firing or resolved (module docstring)."""
    facts = incident_facts(
        incident=incident, namespace=namespace, name=name, uid=uid, top=top, actions=actions
    )
    if fmt == "json":
        return facts
    state = "FIRING" if incident.firing else "RESOLVED"
    head = f"[{state}:{incident.severity}] {namespace}/{name}: {incident.summary()}"
    sections = [f"*Alerts*\n{_lines(_alert_lines(incident))}"]
    if incident.suspect:
        evidence = _evidence(top) if top and _label(top) == incident.suspect else []
        sections.append(f"*Top suspect* {incident.suspect}\n{_lines(evidence)}".rstrip())
    if actions:
        sections.append(f"*Actions*\n{_lines([_action_line(a) for a in actions])}")
    context = f"incident `{incident.id}` · onset {incident.onset}"
    if incident.resolved:
        context += f" · resolved {incident.resolved}"
    context += f" · `{facts['command']}`"
    return _slack(head, sections, context, facts, thread)


def fleet_message(
    *,
    fleet: Fleet,
    top: Mapping[str, Any] | None = None,
    fmt: str = "slack",
    thread: str | None = None,
) -> dict[str, Any]:
    """One message about a fleet incident: the suspect and the models it affects."""
    facts: dict[str, Any] = {
        "source": "mlwarden",
        "kind": "fleetIncident",
        "status": "firing" if fleet.firing else "resolved",
        "incident": {
            "id": fleet.name,
            "namespace": fleet.namespace,
            "severity": fleet.severity,
            "onset": fleet.onset,
            "resolved": fleet.resolved,
            "suspect": fleet.suspect,
            "summary": fleet.summary(),
            "members": [m.to_status() for m in fleet.members],
        },
        "diagnosis": {"topSuspect": copy.deepcopy(dict(top)) if top else None},
        "command": f"kubectl get incident {fleet.name} -n {fleet.namespace} -o yaml",
    }
    if fmt == "json":
        return facts
    state = "FIRING" if fleet.firing else "RESOLVED"
    head = f"[{state}:{fleet.severity}] {fleet.namespace}: {fleet.summary()}"
    models = [
        f"{m.model}: incident {m.incident} since {m.onset}"
        + (f", resolved {m.resolved}" if m.resolved else "")
        for m in fleet.members
    ]
    sections = [f"*Models affected*\n{_lines(models)}"]
    evidence = _evidence(top)
    if evidence:
        sections.append(f"*Top suspect* {fleet.suspect}\n{_lines(evidence)}")
    context = f"fleet incident `{fleet.name}` · onset {fleet.onset} · `{facts['command']}`"
    return _slack(head, sections, context, facts, thread)


def _label(suspect: Mapping[str, Any]) -> str:
    return f"{suspect.get('kind', '?')}/{suspect.get('name', '?')}"


def _slack(
    head: str,
    sections: Sequence[str],
    context: str,
    facts: dict[str, Any],
    thread: str | None,
) -> dict[str, Any]:
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _cut(head, _HEADER_MAX)}},
        *(
            {"type": "section", "text": {"type": "mrkdwn", "text": _cut(s, _SECTION_MAX)}}
            for s in sections
        ),
        {
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": _cut(context, _SECTION_MAX)}],
        },
    ]
    out = {"text": _cut(f"[mlwarden] {head}", _SECTION_MAX), "blocks": blocks, **facts}
    if thread is not None:
        out["thread_ts"] = thread
    return out


# --------------------------------------------------------------------------- Alertmanager


def alertmanager_labels(*, incident: Incident, namespace: str, name: str) -> dict[str, str]:
    """The labels that identify one incident's alert in Alertmanager."""
    return {
        "alertname": ALERTNAME,
        "namespace": namespace,
        "observedmodel": name,
        "incident": incident.id,
        "severity": incident.severity,
        "suspect": incident.suspect or NO_SUSPECT,
    }


def alertmanager_alert(
    *,
    incident: Incident,
    namespace: str,
    name: str,
    top: Mapping[str, Any] | None,
    actions: Sequence[Mapping[str, Any]],
    now: datetime,
    ttl_seconds: float,
    generator_url: str = "",
) -> dict[str, Any]:
    """One postable alert of Alertmanager's v2 API for `incident` (module docstring)."""
    evidence = _evidence(top) if top and _label(top) == incident.suspect else []
    diagnosis = (
        f"top suspect {incident.suspect}" + (": " + "; ".join(evidence) if evidence else "")
        if incident.suspect
        else "no plausible suspect found"
    )
    annotations = {
        "summary": f"{namespace}/{name}: {incident.summary()}",
        "onset": incident.onset,
        "description": "\n".join(_alert_lines(incident)),
        "diagnosis": diagnosis,
        "actions": "\n".join(_action_line(a) for a in actions) or "none",
        "command": describe_command(namespace=namespace, name=name),
    }
    if incident.fleet:
        annotations["fleet"] = incident.fleet
    # When the operator saw it open, not the onset (the first failing evaluation, minutes
    # earlier): Alertmanager flushes a new group at once for an alert that started more than
    # group_wait ago, which would send each model of a fleet on its own.
    started = parse_time(incident.opened) or now
    if incident.firing:
        ends = now + timedelta(seconds=ttl_seconds)
    else:
        ends = parse_time(incident.resolved) or now
    out: dict[str, Any] = {
        "labels": alertmanager_labels(incident=incident, namespace=namespace, name=name),
        "annotations": {k: _cut(v, _ANNOTATION_MAX) for k, v in annotations.items()},
        "startsAt": format_time(started),
        "endsAt": format_time(max(ends, started)),
    }
    if generator_url:
        out["generatorURL"] = generator_url
    return out


def resolved_alert(alert: Mapping[str, Any], *, now: datetime) -> dict[str, Any]:
    """`alert` (as last sent) ended now: sent when its labels changed or it went away."""
    started = parse_time(alert.get("startsAt")) or now
    return {**copy.deepcopy(dict(alert)), "endsAt": format_time(max(now, started))}
