"""Incidents: the alerts of one ObservedModel grouped by cause, and fleets of them (pure).

An alert storm has one cause more often than not: a feature job that changed a unit drifts
ten features at once, and one upstream CronJob that feeds twelve models drifts all twelve. People
want one page per cause, so the operator groups:

- **An incident** is the alerts of one ObservedModel that start together and share a
  diagnosis. `track` keeps `status.incidents` from one pass to the next: an alert that fires
  joins the open incident it belongs to, else opens one. It belongs to an open incident
    1. that holds an alert of the same key (`Type` or `Type/feature`) already: the alert
       resolved and fired again while the incident stayed open (flapping), or
    2. whose onset is within `window` (GROUP_WINDOW_SECONDS) of the alert's onset (`since`),
       when the incident's top suspect is the current one (or either is unknown);
  else it reopens an incident resolved less than `reopen` (REOPEN_SECONDS) ago that held an
  alert of the same key, with the same suspect (a flapping incident pages once); else it
  opens a new incident. An incident resolves when all its alerts have resolved. Its id is
  `inc-` and a digest of the model's uid, its first alert's key and onset: the same incident
  after an operator restart has the same id, and the records and notifications key on it.
  Its suspect is the diagnosis' top suspect when it opened (or, unknown then, when first
  known); while it is the only open incident, the diagnosis is about exactly its alerts and its
  suspect follows the diagnosis.
- **A fleet incident** is the incidents of several ObservedModels of one namespace that share
  a top suspect (one CronJob, ConfigMap, upstream Deployment) and began within `span`
  (FLEET_SPAN_SECONDS) of the first of them. `group_fleets` forms them from the models'
  incidents (an incident already assigned to a fleet stays there; one that is not joins an
  open fleet of its suspect within the span, else forms one with the others); only a group of
  two models or more is a fleet. Its name is `fleet-` and a digest of the namespace, the
  suspect and its first incident's id.

Severity: each alert type has a default (`DEFAULT_SEVERITY`, documented in docs/operator.md),
which a reaction overrides for the alerts it matches (`reactions[].severity`); an incident's
severity is the highest of its alerts', a fleet's the highest of its incidents'.

No I/O and no clock: the shell passes `now`, the status it read, and the diagnosis' top suspect.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from mlwarden.spec import (
    DEFAULT_SEVERITY,
    MAX_STATUS_INCIDENT_ACTIONS,
    MAX_STATUS_INCIDENT_ALERTS,
    MAX_STATUS_INCIDENTS,
    SEVERITIES,
    Reaction,
)
from mlwarden.timestamps import format_time, parse_time

GROUP_WINDOW_SECONDS: Final = 600.0
REOPEN_SECONDS: Final = 600.0
FLEET_SPAN_SECONDS: Final = 1800.0
FIRING: Final = "Firing"
_LAST: Final = datetime.max.replace(tzinfo=UTC)  # an onset that cannot be read sorts last
RESOLVED: Final = "Resolved"


# --------------------------------------------------------------------------- severity


def severity_rank(severity: str) -> int:
    """Higher is more severe; an unknown severity ranks lowest."""
    return len(SEVERITIES) - SEVERITIES.index(severity) if severity in SEVERITIES else 0


def highest(severities: Iterable[str]) -> str:
    """The most severe of `severities` (`info` when there is none)."""
    return max(severities, key=severity_rank, default=SEVERITIES[-1])


def alert_key(alert: Mapping[str, Any]) -> str:
    """`Type` or `Type/feature`: how an alert is named in incidents, records and messages."""
    feature = alert.get("feature")
    return f"{alert.get('type', '?')}/{feature}" if feature else str(alert.get("type", "?"))


def by_onset(alert: Mapping[str, Any]) -> tuple[datetime, str]:
    """Sort key: the earliest onset first (alerts without one last), then `alert_key`. The
    alert an action answers is the first of those that called for it in this order."""
    onset = parse_time(alert.get("since"))
    return (onset.replace(tzinfo=None) if onset else datetime.max, alert_key(alert))


def matches(reaction: Reaction, alert: Mapping[str, Any]) -> bool:
    """Whether `alert` is one `reaction` answers: its type, and its feature when it names one."""
    return alert.get("type") == reaction.alert and (
        reaction.feature is None or alert.get("feature") == reaction.feature
    )


def severity_of(alert: Mapping[str, Any], reactions: Sequence[Reaction]) -> str:
    """The first matching reaction's `severity`, else the alert type's default."""
    for reaction in reactions:
        if reaction.severity is not None and matches(reaction, alert):
            return reaction.severity
    return DEFAULT_SEVERITY.get(str(alert.get("type")), "warning")


# --------------------------------------------------------------------------- the incident


@dataclass(frozen=True)
class Member:
    """One alert of an incident: its key, onset, severity, and when it resolved."""

    key: str
    since: str
    severity: str
    resolved: str | None = None
    refired: int = 0  # times it resolved and fired again while the incident stayed open

    def to_status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"key": self.key, "since": self.since, "severity": self.severity}
        if self.resolved is not None:
            out["resolved"] = self.resolved
        if self.refired:
            out["refired"] = self.refired
        return out

    @classmethod
    def from_status(cls, entry: Mapping[str, Any]) -> Member:
        return cls(
            key=str(entry.get("key") or "?"),
            since=str(entry.get("since") or ""),
            severity=str(entry.get("severity") or "warning"),
            resolved=_text(entry.get("resolved")),
            refired=_int(entry.get("refired")),
        )


@dataclass(frozen=True)
class Taken:
    """An action taken for an incident, as its record in status.reactions says."""

    id: str
    action: str
    result: str
    verdict: str | None = None  # the record's verification, when it has one

    def to_status(self) -> dict[str, Any]:
        out = {"id": self.id, "action": self.action, "result": self.result}
        if self.verdict is not None:
            out["verdict"] = self.verdict
        return out


@dataclass(frozen=True)
class Incident:
    """One cause's alerts on one ObservedModel (module docstring); a `status.incidents` entry."""

    id: str
    onset: str  # the earliest onset of its alerts
    opened: str  # when the operator first saw it (notifications wait from here)
    alerts: tuple[Member, ...]
    suspect: str | None = None  # Kind/name
    resolved: str | None = None  # when its last alert resolved (None: firing)
    reopened: int = 0
    actions: tuple[Taken, ...] = ()
    fleet: str | None = None  # the fleet incident it is part of
    notified: str | None = None  # when its notification went out (or why none did)
    notified_resolved: str | None = None
    threads: Mapping[str, str] = field(default_factory=dict)  # webhook digest -> Slack ts

    @property
    def state(self) -> str:
        return RESOLVED if self.resolved is not None else FIRING

    @property
    def firing(self) -> bool:
        return self.resolved is None

    @property
    def severity(self) -> str:
        return highest(m.severity for m in self.alerts)

    @property
    def active(self) -> tuple[Member, ...]:
        return tuple(m for m in self.alerts if m.resolved is None)

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(m.key for m in self.alerts)

    def summary(self) -> str:
        """One line: what fired (per type, with features), and the suspect."""
        shown = self.active or self.alerts
        by_type: dict[str, list[str]] = {}
        for member in shown:
            kind, _, feature = member.key.partition("/")
            by_type.setdefault(kind, [])
            if feature:
                by_type[kind].append(feature)
        parts = []
        for kind, features in by_type.items():
            if not features:
                parts.append(kind)
            elif len(features) == 1:
                parts.append(f"{kind} on {features[0]}")
            else:
                listed = ", ".join(features[:5]) + (", …" if len(features) > 5 else "")
                parts.append(f"{kind} on {len(features)} features ({listed})")
        text = "; ".join(parts) or "no alert"
        if self.suspect:
            text += f"; top suspect {self.suspect}"
        return text

    def to_status(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "state": self.state,
            "severity": self.severity,
            "onset": self.onset,
            "opened": self.opened,
            "resolved": self.resolved,
            "suspect": self.suspect,
            "summary": self.summary(),
            "alerts": [m.to_status() for m in self.alerts],
            "actions": [a.to_status() for a in self.actions],
        }
        if self.reopened:
            out["reopened"] = self.reopened
        if self.fleet is not None:
            out["fleet"] = self.fleet
        if self.notified is not None:
            out["notified"] = self.notified
        if self.notified_resolved is not None:
            out["notifiedResolved"] = self.notified_resolved
        if self.threads:
            out["threads"] = dict(self.threads)
        return {k: v for k, v in out.items() if v is not None}

    @classmethod
    def from_status(cls, entry: Mapping[str, Any]) -> Incident:
        return cls(
            id=str(entry["id"]),
            onset=str(entry.get("onset") or ""),
            opened=str(entry.get("opened") or entry.get("onset") or ""),
            alerts=tuple(
                Member.from_status(m) for m in entry.get("alerts") or () if isinstance(m, Mapping)
            ),
            suspect=_text(entry.get("suspect")),
            resolved=_text(entry.get("resolved")),
            reopened=_int(entry.get("reopened")),
            actions=tuple(
                Taken(
                    id=str(a.get("id")),
                    action=str(a.get("action") or "?"),
                    result=str(a.get("result") or "?"),
                    verdict=_text(a.get("verdict")),
                )
                for a in entry.get("actions") or ()
                if isinstance(a, Mapping) and a.get("id")
            ),
            fleet=_text(entry.get("fleet")),
            notified=_text(entry.get("notified")),
            notified_resolved=_text(entry.get("notifiedResolved")),
            threads=(
                {str(k): str(v) for k, v in entry["threads"].items()}
                if isinstance(entry.get("threads"), Mapping)
                else {}
            ),
        )


def incidents_from_status(entries: Sequence[Any] | None) -> list[Incident]:
    """`status.incidents` as incidents (entries without an id are not ours: dropped)."""
    return [
        Incident.from_status(e) for e in entries or () if isinstance(e, Mapping) and e.get("id")
    ]


def incident_id(*, model_uid: str, key: str, since: str) -> str:
    """`inc-<10 hex digits>` from the model and the incident's first alert."""
    canonical = parse_time(since)
    stamp = canonical.isoformat() if canonical is not None else since
    digest = hashlib.sha256(json.dumps([model_uid, key, stamp]).encode()).hexdigest()
    return f"inc-{digest[:10]}"


# --------------------------------------------------------------------------- tracking


@dataclass(frozen=True)
class Tracked:
    """What `track` found: the incidents to write, and what changed (for Events)."""

    incidents: tuple[Incident, ...]
    opened: tuple[str, ...] = ()
    resolved: tuple[str, ...] = ()
    reopened: tuple[str, ...] = ()
    joined: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # id -> keys added

    def by_id(self, incident_id: str) -> Incident | None:
        return next((i for i in self.incidents if i.id == incident_id), None)

    def of(self, alert: Mapping[str, Any]) -> Incident | None:
        """The incident holding `alert` (by key and onset) as an active alert."""
        return incident_of(self.incidents, alert)


def incident_of(incidents: Iterable[Incident], alert: Mapping[str, Any]) -> Incident | None:
    key, since = alert_key(alert), _same_time(alert.get("since"))
    for incident in incidents:
        for member in incident.active:
            if member.key == key and _same_time(member.since) == since:
                return incident
    return None


def _same_time(value: Any) -> Any:
    when = parse_time(value)
    return when if when is not None else value


def track(
    *,
    previous: Sequence[Any] | None,
    alerts: Sequence[Mapping[str, Any]],
    top: str | None,
    model_uid: str,
    reactions: Sequence[Reaction] = (),
    now: datetime,
    window_seconds: float = GROUP_WINDOW_SECONDS,
    reopen_seconds: float = REOPEN_SECONDS,
) -> Tracked:
    """The incidents after this pass, from those in status and the active alerts.

    `previous`: `status.incidents` as read; `alerts`: `status.alerts`; `top`: the diagnosis' top
    suspect (`Kind/name`, None when there is no plausible one). See the module docstring.
    """
    at = format_time(now)
    incidents = incidents_from_status(previous)
    window = timedelta(seconds=window_seconds)
    reopen = timedelta(seconds=reopen_seconds)
    active: dict[tuple[str, Any], Mapping[str, Any]] = {}
    for alert in alerts:
        active.setdefault((alert_key(alert), _same_time(alert.get("since"))), alert)

    # Alerts that are gone resolve; those still active stay where they are.
    kept: set[tuple[str, Any]] = set()
    for i, incident in enumerate(incidents):
        members = []
        for member in incident.alerts:
            ident = (member.key, _same_time(member.since))
            if member.resolved is None and ident not in active:
                member = replace(member, resolved=at)
            elif member.resolved is None:
                kept.add(ident)
            members.append(member)
        incidents[i] = replace(incident, alerts=tuple(members))

    opened: list[str] = []
    reopened: list[str] = []
    joined: dict[str, list[str]] = {}
    was_open = {i.id for i in incidents if i.firing}
    fresh = sorted(
        (a for ident, a in active.items() if ident not in kept),
        key=lambda a: (_when(a.get("since"), now), alert_key(a)),
    )
    for alert in fresh:
        key = alert_key(alert)
        since = str(alert.get("since") or at)
        onset = _when(since, now)
        member = Member(key=key, since=since, severity=severity_of(alert, reactions))
        n: int | None = _home(incidents, key, onset, top, window)
        if n is None:
            n = _reopenable(incidents, key, top, now, reopen)
            if n is not None:
                reopened.append(incidents[n].id)
                incidents[n] = replace(
                    incidents[n], resolved=None, reopened=incidents[n].reopened + 1
                )
        if n is None:
            incidents.append(
                Incident(
                    id=incident_id(model_uid=model_uid, key=key, since=since),
                    onset=since,
                    opened=at,
                    alerts=(member,),
                    suspect=top,
                )
            )
            opened.append(incidents[-1].id)
            continue
        incidents[n] = _join(incidents[n], member)
        if incidents[n].id in was_open:
            joined.setdefault(incidents[n].id, []).append(key)

    # An incident resolves when its last alert has.
    resolved: list[str] = []
    for n, incident in enumerate(incidents):
        if incident.firing and not incident.active:
            last = max((m.resolved or at for m in incident.alerts), default=at)
            incidents[n] = replace(incident, resolved=last)
            if incident.id not in opened:
                resolved.append(incident.id)

    # The suspect: known when it opened, else when first known; the diagnosis is about
    # exactly the one open incident's alerts, so that one follows it.
    firing = [n for n, i in enumerate(incidents) if i.firing]
    for n in firing:
        incident = incidents[n]
        if top is not None and (incident.suspect is None or len(firing) == 1):
            incidents[n] = replace(incident, suspect=top)

    return Tracked(
        incidents=tuple(trim(incidents)),
        opened=tuple(opened),
        resolved=tuple(resolved),
        reopened=tuple(reopened),
        joined={k: tuple(v) for k, v in joined.items()},
    )


def _when(value: Any, default: datetime) -> datetime:
    return parse_time(value) or default


def _compatible(suspect: str | None, top: str | None) -> bool:
    return suspect is None or top is None or suspect == top


def _home(
    incidents: Sequence[Incident],
    key: str,
    onset: datetime,
    top: str | None,
    window: timedelta,
) -> int | None:
    """The open incident a newly fired alert joins, if any (rules 1 and 2 of the docstring)."""
    for n, incident in enumerate(incidents):
        if incident.firing and key in incident.keys:
            return n
    best: tuple[timedelta, int] | None = None
    for n, incident in enumerate(incidents):
        if not incident.firing or not _compatible(incident.suspect, top):
            continue
        start = parse_time(incident.onset)
        if start is None:
            continue
        gap = abs(onset - start)
        if gap <= window and (best is None or gap < best[0]):
            best = (gap, n)
    return None if best is None else best[1]


def _reopenable(
    incidents: Sequence[Incident],
    key: str,
    top: str | None,
    now: datetime,
    reopen: timedelta,
) -> int | None:
    for n in range(len(incidents) - 1, -1, -1):
        incident = incidents[n]
        ended = parse_time(incident.resolved)
        if (
            ended is not None
            and key in incident.keys
            and _compatible(incident.suspect, top)
            and now - ended <= reopen
        ):
            return n
    return None


def _join(incident: Incident, member: Member) -> Incident:
    members = list(incident.alerts)
    for n, old in enumerate(members):
        if old.key == member.key:
            members[n] = replace(
                member,
                refired=old.refired + 1,
                severity=highest((old.severity, member.severity)),
            )
            break
    else:
        members.append(member)
    onset = incident.onset
    start, since = parse_time(onset), parse_time(member.since)
    if since is not None and (start is None or since < start):
        onset = member.since
    return replace(incident, alerts=tuple(members), onset=onset)


def trim(incidents: Sequence[Incident]) -> list[Incident]:
    """Within the CRD's bounds: at most MAX_STATUS_INCIDENTS (the oldest resolved go first,
    then the oldest firing), each with at most MAX_STATUS_INCIDENT_ALERTS alerts (resolved ones
    go first) and MAX_STATUS_INCIDENT_ACTIONS actions (the oldest go)."""
    out = [
        replace(
            i,
            alerts=_bounded_members(i.alerts),
            actions=i.actions[-MAX_STATUS_INCIDENT_ACTIONS:],
        )
        for i in incidents
    ]
    for state in (RESOLVED, FIRING):
        while len(out) > MAX_STATUS_INCIDENTS:
            oldest = next((n for n, i in enumerate(out) if i.state == state), None)
            if oldest is None:
                break
            out.pop(oldest)
    return out


def _bounded_members(members: tuple[Member, ...]) -> tuple[Member, ...]:
    if len(members) <= MAX_STATUS_INCIDENT_ALERTS:
        return members
    excess = len(members) - MAX_STATUS_INCIDENT_ALERTS
    kept = []
    for member in members:
        if excess > 0 and member.resolved is not None:
            excess -= 1
            continue
        kept.append(member)
    return tuple(kept[-MAX_STATUS_INCIDENT_ALERTS:])


# --------------------------------------------------------------------------- actions


def with_action(
    incidents: Sequence[Incident], incident_id: str, taken: Taken
) -> tuple[Incident, ...]:
    """The incidents with `taken` recorded on incident `incident_id` (one entry per id)."""
    out = []
    for incident in incidents:
        if incident.id == incident_id:
            actions = [a for a in incident.actions if a.id != taken.id] + [taken]
            incident = replace(incident, actions=tuple(actions[-MAX_STATUS_INCIDENT_ACTIONS:]))
        out.append(incident)
    return tuple(out)


def refresh_actions(
    incidents: Sequence[Incident], reactions: Sequence[Any] | None
) -> tuple[Incident, ...]:
    """Each incident's actions with the result (and verification verdict) their records have
    now in `status.reactions`."""
    records = {
        str(r.get("id")): r for r in reactions or () if isinstance(r, Mapping) and r.get("id")
    }
    out = []
    for incident in incidents:
        actions = []
        for taken in incident.actions:
            record = records.get(taken.id)
            if record is not None:
                verification = record.get("verification")
                verdict = (
                    _text(verification.get("verdict"))
                    if isinstance(verification, Mapping)
                    else taken.verdict
                )
                taken = replace(
                    taken, result=str(record.get("result") or taken.result), verdict=verdict
                )
            actions.append(taken)
        out.append(replace(incident, actions=tuple(actions)))
    return tuple(out)


# --------------------------------------------------------------------------- fleets


@dataclass(frozen=True)
class FleetMember:
    """One model's incident, as a fleet sees it."""

    model: str
    uid: str
    incident: str
    suspect: str | None
    onset: str
    severity: str
    resolved: str | None = None
    fleet: str | None = None  # the fleet it was assigned to before

    @classmethod
    def of(cls, *, model: str, uid: str, incident: Incident) -> FleetMember:
        return cls(
            model=model,
            uid=uid,
            incident=incident.id,
            suspect=incident.suspect,
            onset=incident.onset,
            severity=incident.severity,
            resolved=incident.resolved,
            fleet=incident.fleet,
        )

    def to_status(self) -> dict[str, Any]:
        return {
            "observedModel": self.model,
            "incident": self.incident,
            "onset": self.onset,
            "severity": self.severity,
            "state": RESOLVED if self.resolved is not None else FIRING,
            "resolved": self.resolved,
        }


@dataclass(frozen=True)
class Fleet:
    """Incidents of several models of one namespace with one top suspect (module docstring)."""

    name: str
    namespace: str
    suspect: str
    members: tuple[FleetMember, ...]

    @property
    def onset(self) -> str:
        return min((m.onset for m in self.members), key=lambda t: _when(t, _LAST), default="")

    @property
    def firing(self) -> bool:
        return any(m.resolved is None for m in self.members)

    @property
    def state(self) -> str:
        return FIRING if self.firing else RESOLVED

    @property
    def resolved(self) -> str | None:
        if self.firing:
            return None
        return max((m.resolved or "" for m in self.members), default=None)

    @property
    def severity(self) -> str:
        return highest(m.severity for m in self.members)

    @property
    def models(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(m.model for m in self.members))

    def summary(self) -> str:
        models = self.models
        shown = ", ".join(models[:10]) + (
            f" and {len(models) - 10} more" if len(models) > 10 else ""
        )
        return f"{self.suspect} is the top suspect of incidents on {len(models)} models: {shown}"


def fleet_name(*, namespace: str, suspect: str, first_incident: str) -> str:
    digest = hashlib.sha256(json.dumps([namespace, suspect, first_incident]).encode()).hexdigest()
    return f"fleet-{digest[:10]}"


def group_fleets(
    *,
    namespace: str,
    members: Sequence[FleetMember],
    span_seconds: float = FLEET_SPAN_SECONDS,
) -> list[Fleet]:
    """The fleets among the incidents of one namespace's models (module docstring).

    `members`: every incident of every ObservedModel in the namespace that has a suspect,
    firing or recently resolved (what their `status.incidents` hold). A member with `fleet`
    set stays in that fleet; the others join an existing fleet of their suspect whose onset is
    within `span_seconds` before theirs, else are grouped among themselves by suspect, a group
    starting at its earliest onset and taking those within the span. A group of one model is
    no fleet.
    """
    span = timedelta(seconds=span_seconds)
    groups: dict[str, list[FleetMember]] = {}
    suspects: dict[str, str] = {}
    loose: list[tuple[str, FleetMember]] = []
    for member in members:
        if member.suspect is None:
            continue
        if member.fleet is not None:
            groups.setdefault(member.fleet, []).append(member)
            suspects[member.fleet] = member.suspect
        else:
            loose.append((member.suspect, member))
    loose.sort(key=lambda sm: (_when(sm[1].onset, _LAST), sm[1].model, sm[1].incident))
    for suspect, member in loose:
        onset = _when(member.onset, _LAST)
        home = None
        for name, group in groups.items():
            start = min(_when(m.onset, _LAST) for m in group)
            if suspects[name] == suspect and start <= onset <= start + span:
                home = name
                break
        if home is None:
            home = fleet_name(namespace=namespace, suspect=suspect, first_incident=member.incident)
            suspects[home] = suspect
        groups.setdefault(home, []).append(member)
    fleets = []
    for name, group in groups.items():
        unique = list({(m.model, m.incident): m for m in group}.values())
        fleet = Fleet(name=name, namespace=namespace, suspect=suspects[name], members=tuple(unique))
        if len(fleet.models) >= 2 or any(m.fleet == name for m in unique):
            fleets.append(fleet)
    return fleets


def fleet_of(fleets: Sequence[Fleet], *, model: str, incident: str) -> Fleet | None:
    return next(
        (f for f in fleets if any(m.model == model and m.incident == incident for m in f.members)),
        None,
    )


# --------------------------------------------------------------------------- helpers


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
