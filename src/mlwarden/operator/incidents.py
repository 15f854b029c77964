"""The incident step of a diagnosis and reaction pass: status.incidents, fleets, notifications.

respond.py runs it inside each pass (`IncidentStep`), around the reactions:

1. `track`, after the diagnosis: `react.incidents.track` groups the active alerts into
   incidents; the step assigns each to its fleet (`group_fleets` over every ObservedModel of
   the namespace, read from a kopf index of their `status.incidents`), writes
   `status.incidents` and `status.openIncidents` when they changed, posts `IncidentOpened`,
   `IncidentUpdated` (alerts joined), `IncidentReopened`, `IncidentResolved` and
   `FleetIncident` Events, and creates or updates the fleet's `Incident` object.
2. The planner groups `alert` reactions per incident (`incident_of`): one record per
   incident, whatever number of alerts it has. An incident's notification waits until it is
   MLWARDEN_NOTIFY_WAIT_SECONDS old (`due`; 30 s), so that alerts arriving together and the
   other models sharing its cause are in the one message. `notify` then posts the Warning
   Event `ReactionAlert` and one message to each webhook of the alert reactions its alerts
   match (inline or from a Secret, operator/notify.py). An incident in a fleet is told once
   per webhook for the whole fleet: the first model to be due sends the fleet message to its
   webhooks and records each (by a digest of its URL) in the `Incident` object; the others
   skip a webhook already told. Models with other webhooks (another team) get the fleet
   message too, once per webhook.
3. `took`: each action a pass records is listed on the incident its alerts belong to.
4. `finish`: the actions' results (and verification verdicts) are refreshed from
   `status.reactions`; an incident that resolved after it was notified gets a resolved message
   (threaded under the first one where the receiver gave a `ts`); a fleet whose every member
   resolved gets one per webhook told; and, with MLWARDEN_ALERTMANAGER_URL, the model's
   incidents are pushed to Alertmanager (operator/alertmanager.py).

The `Incident` object (`kubectl get incidents`): named after the fleet (`fleet-<digest>`),
in the models' namespace, owned by every ObservedModel it names (no controller), so that the
garbage collector deletes it with the last of them; the operator deletes one that has been
resolved for MLWARDEN_INCIDENT_RETENTION_SECONDS (a day) at the next pass in its namespace.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Final, Protocol

import aiohttp
import kopf

from mlwarden.kube import Conflict, Kube, KubeError, path
from mlwarden.operator.alertmanager import Alertmanager
from mlwarden.operator.notify import Delivery, Destination, EventPoster, deliver, destinations
from mlwarden.operator.settings import OperatorSettings
from mlwarden.react.actions import ActionRecord
from mlwarden.react.incidents import (
    Fleet,
    FleetMember,
    Incident,
    Taken,
    Tracked,
    alert_key,
    fleet_of,
    group_fleets,
    incident_of,
    incidents_from_status,
    refresh_actions,
    track,
    with_action,
)
from mlwarden.react.notifications import fleet_message, incident_message
from mlwarden.spec import (
    API_VERSION,
    GROUP,
    INCIDENT_KIND,
    INCIDENT_PLURAL,
    KIND,
    PLURAL,
    VERSION,
    ObservedModel,
    Reaction,
)
from mlwarden.timestamps import format_time, parse_time

log = logging.getLogger(__name__)

INDEX: Final = "mlwarden_incident_peers"
FLEET_INDEX: Final = "mlwarden_fleet_records"
RETENTION_SECONDS: Final = 86400.0
LOOK_AGAIN_SECONDS: Final = 60.0
# What the operator writes in an Incident object besides its metadata.
_FLEET_FIELDS: Final = (
    "suspect", "state", "severity", "onset", "resolved", "summary", "modelCount", "members",
)  # fmt: skip


@dataclass
class _Config:
    alertmanager: Alertmanager | None = None
    notify_wait_seconds: float = 30.0
    fleet_span_seconds: float = 1800.0
    retention_seconds: float = RETENTION_SECONDS
    locks: dict[str, asyncio.Lock] = field(default_factory=dict)


CONFIG = _Config()


def configure(settings: OperatorSettings, *, pass_seconds: float, retention: float) -> None:
    """From the operator's settings, at start-up (handlers.configure)."""
    CONFIG.alertmanager = (
        Alertmanager(
            urls=settings.alertmanager_urls,
            resend_seconds=settings.alertmanager_resend_seconds,
            pass_seconds=pass_seconds,
        )
        if settings.alertmanager_urls
        else None
    )
    CONFIG.notify_wait_seconds = float(settings.notify_wait_seconds)
    CONFIG.fleet_span_seconds = float(settings.fleet_span_seconds)
    CONFIG.retention_seconds = retention


# --------------------------------------------------------------------------- what others have


def _peer(body: Mapping[str, Any]) -> dict[str, Any]:
    """What fleets need of an ObservedModel: its name, uid and incidents with a suspect."""
    status = body.get("status") or {}
    meta = body.get("metadata") or {}
    kept = [i for i in status.get("incidents") or () if isinstance(i, Mapping) and i.get("suspect")]
    return {
        "index": INDEX,
        "name": str(meta.get("name")),
        "uid": meta.get("uid"),
        "incidents": kept,
    }


@kopf.index(GROUP, VERSION, PLURAL, id=INDEX)
def mlwarden_incident_peers(
    namespace: str | None, name: str | None, body: kopf.Body, **_: Any
) -> dict[str, dict[str, Any]]:
    """Every ObservedModel's incidents that have a suspect, by namespace (for fleets).

    Fed by the watch, so it lags the other passes' writes by up to a few seconds under load
    (kopf handles an object's events after its running handler): good enough to assign an
    incident to its fleet on every pass; a notification reads the namespace's
    ObservedModels from the API instead (`IncidentStep.refresh`).
    """
    return {str(namespace or ""): _peer(body)}


@kopf.index(GROUP, VERSION, INCIDENT_PLURAL, id=FLEET_INDEX)
def mlwarden_fleet_records(
    namespace: str | None, name: str | None, body: kopf.Body, **_: Any
) -> dict[str, dict[str, Any]]:
    """Every Incident object, by namespace: its name, state and when it resolved."""
    kept = {key: body.get(key) for key in _FLEET_FIELDS}
    owners = (body.get("metadata") or {}).get("ownerReferences")
    return {str(namespace or ""): {"name": str(name), "owners": owners, **kept}}


def peers(indexes: Mapping[str, Any], namespace: str) -> list[Mapping[str, Any]]:
    """The index entries of `namespace` (from the handler's keyword arguments)."""
    found: list[Mapping[str, Any]] = []
    for name in (INDEX, FLEET_INDEX):
        index = indexes.get(name)
        store = index.get(namespace) if index is not None else None
        found += [{"index": name, **entry} for entry in store or ()]
    return found


# --------------------------------------------------------------------------- the step


class StatusWriter(Protocol):
    """The pass's view of the ObservedModel's status (respond._Status)."""

    current: dict[str, Any]

    async def write(self, fields: dict[str, Any]) -> None: ...


def _digest(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()[:16]


@dataclass
class IncidentStep:
    """One pass's incident work for one ObservedModel (module docstring)."""

    api: Kube
    model: ObservedModel
    status: StatusWriter
    event: EventPoster
    now: datetime
    others: Sequence[Mapping[str, Any]] = ()
    tracked: Tracked | None = None
    fleets: list[Fleet] = field(default_factory=list)
    top: Mapping[str, Any] | None = None
    placed_before: dict[str, str | None] = field(default_factory=dict)

    @property
    def incidents(self) -> tuple[Incident, ...]:
        return self.tracked.incidents if self.tracked is not None else ()

    @property
    def uid(self) -> str:
        return self.model.uid or f"{self.model.namespace}/{self.model.name}"

    # ----------------------------------------------------------------- 1. track

    async def track(
        self, alerts: Sequence[Mapping[str, Any]], top: Mapping[str, Any] | None
    ) -> None:
        self.top = top
        label = f"{top.get('kind')}/{top.get('name')}" if top else None
        tracked = track(
            previous=self.status.current.get("incidents"),
            alerts=alerts,
            top=label,
            model_uid=self.uid,
            reactions=self.model.spec.reactions,
            now=self.now,
        )
        self.placed_before = {
            i.id: i.fleet for i in incidents_from_status(self.status.current.get("incidents"))
        }
        self.fleets = self._fleets(tracked.incidents)
        self.tracked = tracked
        self._place()
        await self._write()
        self._tell()
        for fleet in self.fleets:
            if any(m.model == self.model.name for m in fleet.members) and self._stale(fleet):
                await self._record_fleet(fleet)
        await self._expire_fleets()

    def _stale(self, fleet: Fleet) -> bool:
        """Whether the watch's view of the fleet's Incident object differs from what it should
        say (so a steady fleet costs no request; a stale view costs one GET)."""
        seen = next(
            (
                e
                for e in self.others
                if e.get("index") == FLEET_INDEX and e.get("name") == fleet.name
            ),
            None,
        )
        if seen is None:
            return True
        wanted = self._fleet_body(fleet)
        if seen.get("owners") != wanted["metadata"]["ownerReferences"]:
            return True
        return any(seen.get(k) != wanted.get(k) for k in _FLEET_FIELDS)

    def _fleets(self, own: Sequence[Incident]) -> list[Fleet]:
        members = [
            FleetMember.of(model=self.model.name, uid=self.uid, incident=i)
            for i in own
            if i.suspect
        ]
        for entry in self.others:
            if entry.get("index") != INDEX or entry.get("name") == self.model.name:
                continue
            for incident in incidents_from_status(entry.get("incidents")):
                if incident.suspect:
                    members.append(
                        FleetMember.of(
                            model=str(entry["name"]),
                            uid=str(entry.get("uid") or ""),
                            incident=incident,
                        )
                    )
        return group_fleets(
            namespace=self.model.namespace,
            members=members,
            span_seconds=CONFIG.fleet_span_seconds,
        )

    async def _write(self) -> None:
        incidents = [i.to_status() for i in self.incidents]
        firing = sum(1 for i in self.incidents if i.firing)
        current = self.status.current
        if current.get("incidents") != incidents or current.get("openIncidents") != firing:
            await self.status.write({"incidents": incidents, "openIncidents": firing})

    def _place(self) -> None:
        """Each own incident in its fleet; a `FleetIncident` Event when it joins one."""
        assert self.tracked is not None
        placed = []
        for incident in self.tracked.incidents:
            fleet = fleet_of(self.fleets, model=self.model.name, incident=incident.id)
            if fleet is not None:
                incident = replace(incident, fleet=fleet.name)
                if self.placed_before.get(incident.id) != fleet.name and len(fleet.models) > 1:
                    self.placed_before[incident.id] = fleet.name
                    self.event(
                        "Warning",
                        "FleetIncident",
                        f"incident {incident.id} is part of fleet incident {fleet.name}: "
                        f"{fleet.summary()} (kubectl get incident {fleet.name})",
                    )
            placed.append(incident)
        self.tracked = replace(self.tracked, incidents=tuple(placed))

    def _tell(self) -> None:
        tracked = self.tracked
        assert tracked is not None
        for incident_id in tracked.opened:
            incident = tracked.by_id(incident_id)
            if incident is not None:
                self.event(
                    "Warning",
                    "IncidentOpened",
                    f"incident {incident.id} ({incident.severity}): {incident.summary()}",
                )
        for incident_id in tracked.reopened:
            incident = tracked.by_id(incident_id)
            if incident is not None:
                self.event(
                    "Warning",
                    "IncidentReopened",
                    f"incident {incident.id} fired again ({incident.reopened} time(s)): "
                    f"{incident.summary()}",
                )
        for incident_id, keys in tracked.joined.items():
            self.event(
                "Normal", "IncidentUpdated", f"incident {incident_id}: {', '.join(keys)} joined"
            )
        for incident_id in tracked.resolved:
            incident = tracked.by_id(incident_id)
            if incident is not None:
                self.event(
                    "Normal",
                    "IncidentResolved",
                    f"incident {incident.id} resolved: every alert of it has "
                    f"({len(incident.alerts)}; onset {incident.onset})",
                )

    # ----------------------------------------------------------------- the Incident object

    def _fleet_body(self, fleet: Fleet) -> dict[str, Any]:
        owners = [
            {"apiVersion": API_VERSION, "kind": KIND, "name": m.model, "uid": m.uid}
            for m in {m.model: m for m in fleet.members if m.uid and "/" not in m.uid}.values()
        ]
        return {
            "apiVersion": API_VERSION,
            "kind": INCIDENT_KIND,
            "metadata": {
                "name": fleet.name,
                "namespace": fleet.namespace,
                "labels": {"app.kubernetes.io/managed-by": "mlwarden"},
                "ownerReferences": owners,
            },
            "suspect": fleet.suspect,
            "state": fleet.state,
            "severity": fleet.severity,
            "onset": fleet.onset,
            "summary": fleet.summary(),
            "modelCount": len(fleet.models),
            "members": [
                {k: v for k, v in m.to_status().items() if v is not None} for m in fleet.members
            ],
            **({"resolved": fleet.resolved} if fleet.resolved else {}),
        }

    async def _record_fleet(self, fleet: Fleet) -> dict[str, Any] | None:
        """Create or update the fleet's Incident object; it as the API has it (None: failed)."""
        wanted = self._fleet_body(fleet)
        where = path(INCIDENT_KIND, fleet.namespace, fleet.name)
        try:
            found = await self.api.get(where)
            if found is None:
                try:
                    return await self.api.create(wanted)
                except Conflict:
                    found = await self.api.get(where)
                    if found is None:
                        return None
            change = {
                k: v
                for k, v in wanted.items()
                if k not in ("apiVersion", "kind", "metadata") and found.get(k) != v
            }
            if "resolved" not in wanted and found.get("resolved") is not None:
                change["resolved"] = None
            owners = wanted["metadata"]["ownerReferences"]
            if (found.get("metadata") or {}).get("ownerReferences") != owners:
                change["metadata"] = {"ownerReferences": owners}
            if not change:
                return found
            return await self.api.merge_patch(where, change)
        except (KubeError, aiohttp.ClientError, TimeoutError) as exc:
            log.warning("fleet incident %s/%s: %s", fleet.namespace, fleet.name, exc)
            return None

    async def _expire_fleets(self) -> None:
        keep = timedelta(seconds=CONFIG.retention_seconds)
        for entry in self.others:
            if entry.get("index") != FLEET_INDEX or entry.get("state") != "Resolved":
                continue
            ended = parse_time(entry.get("resolved"))
            if ended is None or self.now - ended < keep:
                continue
            try:
                await self.api.delete(path(INCIDENT_KIND, self.model.namespace, str(entry["name"])))
                log.info(
                    "fleet incident %s/%s: resolved since %s, deleted",
                    self.model.namespace,
                    entry["name"],
                    ended,
                )
            except (KubeError, aiohttp.ClientError, TimeoutError) as exc:
                log.warning("deleting fleet incident %s: %s", entry.get("name"), exc)

    async def refresh(self) -> None:
        """Fleets from the namespace's ObservedModels as the API has them now (one list):
        before a notification, so that the fleet it names is the one people see."""
        try:
            found = await self.api.list(KIND, self.model.namespace)
        except (KubeError, aiohttp.ClientError, TimeoutError) as exc:
            log.warning("listing ObservedModels for fleets: %s (the watch's view is used)", exc)
            return
        self.others = [
            *(_peer(body) for body in found),
            *(e for e in self.others if e.get("index") != INDEX),
        ]
        self.fleets = self._fleets(self.incidents)
        self._place()

    # ----------------------------------------------------------------- 2. notify

    def incident_of(self, alert: Mapping[str, Any]) -> str | None:
        """The id of the incident holding `alert` (the planner's grouping of `alert` actions)."""
        found = incident_of(self.incidents, alert)
        return found.id if found is not None else None

    def incident(self, record: ActionRecord) -> Incident | None:
        return next((i for i in self.incidents if i.id == record.from_state), None)

    def due(self, record: ActionRecord) -> bool:
        """Whether an `alert` record's incident has waited MLWARDEN_NOTIFY_WAIT_SECONDS."""
        incident = self.incident(record)
        if incident is None:
            return True
        opened = parse_time(incident.opened) or self.now
        return self.now >= opened + timedelta(seconds=CONFIG.notify_wait_seconds)

    def _reactions(self, incident: Incident) -> list[Reaction]:
        keys = {m.key for m in incident.alerts}
        out = []
        for reaction in self.model.spec.reactions:
            if reaction.action != "alert":
                continue
            for key in keys:
                kind, _, feature = key.partition("/")
                if reaction.alert == kind and reaction.feature in (None, feature or None):
                    out.append(reaction)
                    break
        return out

    def _actions(self, incident: Incident) -> list[Mapping[str, Any]]:
        records = {
            str(r.get("id")): r
            for r in self.status.current.get("reactions") or ()
            if isinstance(r, Mapping)
        }
        return [records[a.id] for a in incident.actions if a.id in records and a.action != "alert"]

    async def notify(self, record: ActionRecord) -> ActionRecord:
        """An `alert` record of one incident: the Event, then one message per webhook."""
        if self.incident(record) is not None and any(i.suspect for i in self.incidents):
            await self.refresh()
        incident = self.incident(record)
        if incident is None:
            return record.settle("Skipped", f"incident {record.from_state} is no longer open")
        where = f"{self.model.namespace}/{self.model.name}"
        line = f"incident {incident.id} ({incident.severity}): {where}: {incident.summary()}"
        self.event("Warning", "ReactionAlert", line)
        targets = await destinations(self.api, self.model.namespace, self._reactions(incident))
        fleet = next(
            (f for f in self.fleets if f.name == incident.fleet and len(f.models) > 1), None
        )
        if fleet is not None:
            done, skipped = await self._notify_fleet(fleet, targets)
        else:
            done = await deliver(targets, self._message(incident), event=self.event)
            skipped = 0
        threads = {
            _digest(t.url): d.thread
            for t, d in zip(targets, done, strict=False)
            if t.url and d.thread
        }
        await self._mark(incident.id, notified=format_time(self.now), threads=threads)
        failed = [d.detail for d in done if not d.ok]
        sent = sum(1 for d in done if d.ok)
        text = "Event posted"
        if sent:
            text += f"; {sent} webhook(s) notified"
        if fleet is not None:
            text += f" with fleet incident {fleet.name} ({len(fleet.models)} models)"
            if skipped:
                text += f"; {skipped} webhook(s) told of the fleet already"
        if failed:
            return record.settle("Failed", text + "; " + "; ".join(failed))
        return record.settle("Succeeded", text)

    def _message(
        self, incident: Incident, thread: Mapping[str, str] | None = None
    ) -> Callable[[Destination], Mapping[str, Any]]:
        def body(target: Destination) -> Mapping[str, Any]:
            ts = (thread or {}).get(_digest(target.url or ""))
            return incident_message(
                incident=incident,
                namespace=self.model.namespace,
                name=self.model.name,
                uid=self.model.uid,
                top=self.top,
                actions=self._actions(incident),
                fmt=target.fmt,
                thread=ts,
            )

        return body

    async def _notify_fleet(
        self, fleet: Fleet, targets: Sequence[Destination], *, resolved: bool = False
    ) -> tuple[list[Delivery], int]:
        """Tell each webhook not yet told of `fleet` (its Incident object keeps who was)."""
        key = "notifiedResolved" if resolved else "notified"
        lock = CONFIG.locks.setdefault(fleet.name, asyncio.Lock())
        async with lock:
            record = await self._record_fleet(fleet)
            told = dict((record or {}).get(key) or {})
            firing_told = dict((record or {}).get("notified") or {})
            todo = [
                t
                for t in targets
                if t.url is None
                or (_digest(t.url) not in told and (not resolved or _digest(t.url) in firing_told))
            ]
            skipped = len(targets) - len(todo)

            def body(target: Destination) -> Mapping[str, Any]:
                return fleet_message(fleet=fleet, top=self.top, fmt=target.fmt)

            done = await deliver(todo, body, event=self.event)
            sent = {
                _digest(t.url): format_time(self.now)
                for t, d in zip(todo, done, strict=True)
                if d.ok and t.url
            }
            if sent and record is not None:
                where = path(INCIDENT_KIND, fleet.namespace, fleet.name)
                try:
                    await self.api.merge_patch(where, {key: sent})
                except (KubeError, aiohttp.ClientError, TimeoutError) as exc:
                    log.warning("fleet incident %s: recording who was told: %s", fleet.name, exc)
        return done, skipped

    async def _mark(
        self,
        incident_id: str,
        *,
        notified: str | None = None,
        notified_resolved: str | None = None,
        threads: Mapping[str, str] | None = None,
    ) -> None:
        incidents = []
        for incident in self.incidents:
            if incident.id == incident_id:
                incident = replace(
                    incident,
                    notified=notified or incident.notified,
                    notified_resolved=notified_resolved or incident.notified_resolved,
                    threads={**incident.threads, **(threads or {})},
                )
            incidents.append(incident)
        assert self.tracked is not None
        self.tracked = replace(self.tracked, incidents=tuple(incidents))

    # ----------------------------------------------------------------- 3. took

    def took(self, record: ActionRecord, alerts: Sequence[Mapping[str, Any]]) -> None:
        """List `record` on the incident of its alerts (for `alert`: the one it names)."""
        if self.tracked is None:
            return
        target = self.incident(record) if record.action == "alert" else None
        if target is None:
            keys = {alert_key(a) for a in alerts}
            for incident in self.incidents:
                if incident.firing and keys & {m.key for m in incident.active}:
                    target = incident
                    break
        if target is None:
            return
        taken = Taken(id=record.id, action=record.action, result=record.result)
        self.tracked = replace(
            self.tracked, incidents=with_action(self.incidents, target.id, taken)
        )

    # ----------------------------------------------------------------- 4. finish

    async def finish(self) -> None:
        if self.tracked is None:
            return
        self.tracked = replace(
            self.tracked,
            incidents=refresh_actions(self.incidents, self.status.current.get("reactions")),
        )
        ending = [
            i for i in self.incidents if not i.firing and i.notified and not i.notified_resolved
        ]
        if any(self._look_again(i) for i in ending):
            await self.refresh()
            for own in self.fleets:
                if any(m.model == self.model.name for m in own.members) and self._stale(own):
                    await self._record_fleet(own)
        for incident in self.incidents:
            if incident.firing or not incident.notified or incident.notified_resolved:
                continue
            targets = await destinations(self.api, self.model.namespace, self._reactions(incident))
            fleet = next(
                (f for f in self.fleets if f.name == incident.fleet and len(f.models) > 1), None
            )
            if fleet is not None:
                if fleet.firing:
                    continue  # the fleet's resolved message waits for its last member
                done, _ = await self._notify_fleet(fleet, targets, resolved=True)
            else:
                done = await deliver(
                    targets, self._message(incident, incident.threads), event=self.event
                )
            for delivery in done:
                if not delivery.ok:
                    self.event(
                        "Warning",
                        "NotificationFailed",
                        f"incident {incident.id} resolved: {delivery.detail}",
                    )
            await self._mark(incident.id, notified_resolved=format_time(self.now))
        await self._write()
        await self._push()

    def _look_again(self, incident: Incident) -> bool:
        """Whether to list the namespace's models for a resolved incident's fleet: within a
        minute of its resolution (models resolving together each see the others firing in
        the watch's view, which lags), and later when the watch's view shows the fleet
        resolved. A fleet that keeps firing costs no list per pass."""
        if not incident.fleet:
            return False
        ended = parse_time(incident.resolved)
        if ended is None or self.now - ended < timedelta(seconds=LOOK_AGAIN_SECONDS):
            return True
        fleet = next((f for f in self.fleets if f.name == incident.fleet), None)
        return fleet is None or not fleet.firing

    async def _push(self) -> None:
        manager = CONFIG.alertmanager
        if manager is None:
            return
        actions = {i.id: self._actions(i) for i in self.incidents}
        alerts = manager.due(
            namespace=self.model.namespace,
            name=self.model.name,
            incidents=self.incidents,
            top=self.top,
            actions=actions,
            now=self.now,
        )
        for failure in await manager.push(alerts):
            log.warning("%s/%s: %s", self.model.namespace, self.model.name, failure)


def pending(status: Mapping[str, Any] | None) -> bool:
    """Whether a resolved incident still owes a message: its fleet's resolved message waits for
    the fleet's last model, and the timer checks again until it has gone (by any model)."""
    return any(
        isinstance(i, Mapping)
        and i.get("state") == "Resolved"
        and i.get("notified")
        and not i.get("notifiedResolved")
        for i in (status or {}).get("incidents") or ()
    )


__all__ = ["CONFIG", "IncidentStep", "configure", "peers", "pending"]
