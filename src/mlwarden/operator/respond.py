"""The I/O around diagnosis and reaction: collect, diagnose, plan, record, act, report.

One pass for one ObservedModel (`respond`). The handlers run it when the detector's alerts
change and on a timer while an alert is active or a reaction is Planned or Running, one pass
at a time per ObservedModel, on the object as the API has it now:

1. Collect: every object of the kinds the diagnosis and the reactions read, in the model's
   namespace, from the watch-backed cache (`cache.py`: kopf indexes, handed to the handlers
   and passed in here as `lists`); no API request. A kind the cluster does not serve (Gateway
   API or Istio not installed) reads as empty; Secrets are not collected (the one Secret
   read is a `webhookSecret`'s URL, by `notify.secret_url`, when a message is sent).
2. Diagnose (pure) and write `status.diagnosis` and `status.topSuspect` when they changed
   (`diagnosis.updated` is when the diagnosis last changed, not when a pass last ran), and an
   Event `Diagnosed` with the summary when the top suspect changed while alerts are active.
   `diagnosis.forAlerts` names the alerts it was computed for (`alert_keys`); with no alert
   active both fields are removed (written as null), and a diagnosis that fails (a bug) is
   logged, removes a diagnosis made for other alerts, and the reactions go ahead without a
   suspect. This pass is the only writer of both fields (and of `lastAction`): a handler's
   body may be older than what a pass wrote. See `diagnosis_stale` for how the handlers make
   sure a pass follows every change of the alerts.
3. Plan (pure: `react.policy.plan_reactions`), then for each record, in order:
   - write it to `status.reactions` first, as a real API write (a merge patch of the whole
     list on the status subresource), so that an operator stopped after this point finds it
     and completes or reports it instead of acting twice;
   - Running: the same write says phase Reacting; apply the record's merge patches in their
     order (for `alert`: a Warning Event `ReactionAlert` and the webhooks), then write the
     settled record (Succeeded, or Failed with the error) and `status.lastAction`; a patch
     answered 409 Conflict (another writer moved the object on) re-reads it and re-plans the
     action under the same id (`apply_patches`), Skipped when it no longer applies;
   - Running retrain: recorded first when new, then its Job or Workflow started or looked at
     (`runs.advance`), on every pass while it runs; the record is written again only when
     that changed it (started, the run's progress, Succeeded or Failed);
   - Planned (waiting for approval): an Event with the `kubectl annotate` command;
   - Skipped, or a dry run: an Event saying so (the planner returns a Skipped record only
     when its reason is new, so these do not repeat).
   A Running record that patches an object an earlier record of the same pass changed is
   left for the next pass, which plans it against the object as it is then.
   Each final result is counted in `mlwarden_operator_reactions_total{action, result}`.
   Webhooks (`reactions[].webhook`) get the outcome of workload actions; a webhook that
   fails is noted in the record. Delivery (operator/notify.py): the allow-list
   (react/destinations.py, MLWARDEN_WEBHOOK_ALLOW; a refused URL is never requested, a
   `WebhookRefused` Event says why), retries within a bound, answers copied as short excerpts.
4. Incidents (operator/incidents.py, `IncidentStep`): after the diagnosis the alerts are
   grouped into `status.incidents` (and fleets); `alert` records are one per incident, wait
   for MLWARDEN_NOTIFY_WAIT_SECONDS, and their Event and webhook messages are the incident's
   (`IncidentStep.notify`); each record is listed on its incident; at the end of the pass,
   resolved messages and the push to Alertmanager.

`status.revisions` is not written here: its one builder is `react.revisions.status_revisions`
and its one writer the handler on `status.detector.revisions` (handlers.py), which runs on
every report of the detector's revisions (their counters move with traffic), so a rollback's
raised revision number shows at the next report.

A record's patch is keyed by `Kind/name`, or `Kind/name/status` for a patch to the status
subresource (an Argo Rollout's abort); `react.targets.split_target` reads it for the API path,
the re-read after a conflict and the objects a pass has touched.

Nothing here raises because an action failed: the record says Failed and why. An API error
while writing status ends the pass; the next pass starts again from what is
recorded, which is what the records are for.

Known limit: the API server drops `null` inside a list written with a merge patch, so a
record's patch stored in `status.reactions` loses the keys it deletes (a rollback removing
an annotation the newer revision added). The patch applied is the planned one; only a
restart between recording and applying would apply the stored one, without those deletions.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Final

import aiohttp

from mlwarden.diagnose import Diagnosis, Snapshot, Suspect, diagnose
from mlwarden.kube import Conflict, Kube, KubeError, path
from mlwarden.operator import incidents, runs
from mlwarden.operator.incidents import IncidentStep
from mlwarden.operator.metrics import METRICS
from mlwarden.operator.notify import EventPoster, post_webhooks
from mlwarden.operator.status import Observation, phase, status_patch
from mlwarden.patches import apply_merge_patch
from mlwarden.react import verify
from mlwarden.react.actions import OPEN, ActionRecord, fingerprint, records_from_status
from mlwarden.react.actuators.alert import summary as alert_summary
from mlwarden.react.actuators.alert import webhook_payload
from mlwarden.react.actuators.retrain import RETRAIN
from mlwarden.react.guardrails import APPROVE_ANNOTATION
from mlwarden.react.policy import alerts_for, plan_reactions, replan, webhooks_for
from mlwarden.react.targets import object_key, split_target
from mlwarden.spec import (
    MAX_STATUS_ALERTS,
    MAX_STATUS_EVIDENCE,
    MAX_STATUS_REACTIONS,
    MAX_STATUS_SUSPECTS,
    ObservedModel,
)
from mlwarden.timestamps import format_time

log = logging.getLogger(__name__)

# status.reactions keeps this many entries (the CRD's maxItems; the oldest settled ones go
# first, and an open one is never dropped: a new record that finds no room is not taken).
MAX_RECORDS: Final = MAX_STATUS_REACTIONS
# Re-plans of one action per pass after 409 Conflicts on its patch (see apply_patches).
MAX_REPLANS: Final = 5
# Results a record keeps in status.reactions (with its patch) until a later pass moves it on.
OPEN_RESULTS: Final = OPEN


@dataclass(frozen=True)
class Outcome:
    """What a pass leaves: the status as it wrote it, and what the phase is computed from."""

    status: dict[str, Any]
    top_suspect: str | None
    last_action: str | None
    reacting: bool
    for_alerts: tuple[str, ...]  # the alerts this pass diagnosed and reacted to (alert_keys)


def alert_keys(alerts: Sequence[Any] | None) -> list[str]:
    """`Type` or `Type/feature` of each active alert, sorted, once each: `diagnosis.forAlerts`."""
    keys = {
        f"{a.get('type')}/{a['feature']}" if a.get("feature") else str(a.get("type"))
        for a in alerts or ()
        if isinstance(a, Mapping)
    }
    return sorted(keys)


def diagnosis_stale(status: Mapping[str, Any] | None) -> bool:
    """Whether `status.diagnosis` (or its absence) is not the one for `status.alerts`.

    True while alerts are active and no diagnosis names exactly them, and while a diagnosis
    is shown with no alert active. A pass always ends with this False for what it read; the
    handlers run another pass when the alerts moved on meanwhile, and the timer runs one when
    it finds this True.
    """
    status = status or {}
    keys = alert_keys(status.get("alerts"))
    diagnosis = status.get("diagnosis")
    if not isinstance(diagnosis, Mapping):
        return bool(keys)
    return list(diagnosis.get("forAlerts") or ()) != keys or not keys


def has_work(status: Mapping[str, Any] | None) -> bool:
    """Whether a timer pass has anything to do: an active alert, an open reaction, an open
    verification (`react.verify`), a diagnosis that is not the one for the alerts shown, or a
    resolved incident's message still owed."""
    status = status or {}
    if status.get("alerts") or diagnosis_stale(status) or incidents.pending(status):
        return True
    if verify.pending(status.get("reactions")):
        return True
    return any(
        isinstance(e, Mapping) and e.get("result") in OPEN_RESULTS
        for e in status.get("reactions") or ()
    )


# --------------------------------------------------------------------------- words


def describe(record: ActionRecord) -> str:
    """One line for `status.lastAction`: `rollback Deployment/fraud-model 7→6 Succeeded`."""
    if record.action == "alert":
        text = f"alert {record.from_state} → {record.to_state}"
    else:
        text = f"{record.action} {record.target}"
        if record.run:
            text += f" → {record.run}"
        elif record.from_state or record.to_state:
            text += f" {record.from_state}→{record.to_state}"
    text += f" {record.result}"
    if record.dry_run:
        text += " (dry run)"
    return text


def approve_command(model: ObservedModel, record: ActionRecord) -> str:
    return f"kubectl annotate om {model.name} {APPROVE_ANNOTATION}={record.id} --overwrite"


# --------------------------------------------------------------------------- status


class _Status:
    """The ObservedModel's status as this pass last wrote it; each write is an API call."""

    def __init__(self, api: Kube, model: ObservedModel, status: Mapping[str, Any]) -> None:
        self.api = api
        self.path = path("ObservedModel", model.namespace, model.name, subresource="status")
        self.current: dict[str, Any] = copy.deepcopy(dict(status))

    async def write(self, fields: dict[str, Any]) -> None:
        await self.api.merge_patch(self.path, {"status": fields})
        self.current = apply_merge_patch(self.current, fields)


def has_room(entries: Sequence[Mapping[str, Any]], record: ActionRecord) -> bool:
    """Whether `upsert` can record `record` within MAX_RECORDS without dropping an open one."""
    if any(isinstance(e, Mapping) and e.get("id") == record.id for e in entries):
        return True
    open_entries = sum(
        1 for e in entries if not isinstance(e, Mapping) or e.get("result") in OPEN_RESULTS
    )
    return open_entries < MAX_RECORDS


def upsert(entries: Sequence[Mapping[str, Any]], record: ActionRecord) -> list[dict[str, Any]]:
    """`status.reactions` with `record` as its newest entry (one entry per id), trimmed.

    At most MAX_RECORDS entries, the oldest ended ones dropped first; open ones (Planned,
    Running) are never dropped, so check `has_room` before recording a new one.
    """
    out = [dict(e) for e in entries if not (isinstance(e, Mapping) and e.get("id") == record.id)]
    out.append(record.to_status())
    excess = len(out) - MAX_RECORDS
    if excess <= 0:
        return out
    kept: list[dict[str, Any]] = []
    for entry in out:
        if excess > 0 and entry.get("result") not in OPEN_RESULTS:
            excess -= 1
            continue
        kept.append(entry)
    return kept


def _latest(entries: Sequence[Mapping[str, Any]]) -> ActionRecord | None:
    """The newest record that is not Skipped (Skipped ones say why nothing was done)."""
    for record in reversed(records_from_status(entries)):
        if record.result != "Skipped":
            return record
    return None


def _comparable(diagnosis: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A diagnosis without its time, and without nulls (a merge patch deletes those)."""
    if not isinstance(diagnosis, Mapping):
        return None
    return {k: v for k, v in diagnosis.items() if k != "updated" and v is not None}


# --------------------------------------------------------------------------- acting


def _spec_and_metadata(obj: Mapping[str, Any]) -> tuple[Any, ...]:
    """What a controller's status write leaves alone: spec, labels, annotations, identity."""
    meta = obj.get("metadata") or {}
    return (obj.get("spec"), meta.get("labels"), meta.get("annotations"), meta.get("uid"))


def _precondition(patch: Mapping[str, Any], version: Any) -> dict[str, Any]:
    out = copy.deepcopy(dict(patch))
    out["metadata"] = {**(out.get("metadata") or {}), "resourceVersion": version}
    return out


async def apply_patches(
    api: Kube,
    model: ObservedModel,
    record: ActionRecord,
    snapshot: Mapping[tuple[str, str], Mapping[str, Any]] | None = None,
) -> ActionRecord:
    """Apply a Running record's merge patches in order; the settled record.

    A 409 Conflict means the patch's resourceVersion precondition is stale: somebody wrote
    the object since it was planned (an HPA's or the Deployment controller's status write,
    every few seconds). On the first patch, the objects are re-read and the action planned
    again (`policy.replan`, on `snapshot` with them replaced), at most MAX_REPLANS times: the
    same transition is applied with the fresh preconditions, under the same id; one that no
    longer applies is Skipped with the reason. On a later patch (an earlier one of the same
    action landed, so a re-plan would see that change), the object is re-read and the same
    patch applied with its fresh resourceVersion when only its status moved; otherwise the
    action fails, naming what was applied.
    """
    fresh: dict[tuple[str, str], Mapping[str, Any]] = dict(snapshot or {})
    conflicts = replans = 0

    async def reread(obj: str) -> Mapping[str, Any] | None:
        kind, name = split_target(obj).key  # the object itself, whatever subresource
        found = await api.get(path(kind, model.namespace, name))
        if found is None:
            fresh.pop((kind, name), None)
            return None
        fresh[(kind, name)] = {"kind": kind, **found}
        return fresh[(kind, name)]

    while True:
        applied: list[str] = []
        held: dict[str, dict[str, str]] = {}
        pending = [(obj, dict(patch)) for obj, patch in record.patch.items()]
        replanning = False
        while pending:
            obj, patch = pending[0]
            before = f" (applied before it: {', '.join(applied)})" if applied else ""
            try:
                target = split_target(obj)
                kind, name = target.key
                written = await api.merge_patch(
                    path(kind, model.namespace, name, subresource=target.subresource),
                    copy.deepcopy(patch),
                )
            except Conflict as exc:
                if conflicts >= MAX_REPLANS:
                    again = f" after {conflicts} re-read(s)"
                    return record.settle("Failed", f"{obj}: {exc}{again}{before}")
                conflicts += 1
                log.info("%s: %s conflicted; re-reading it", record.id, obj)
                planned = fresh.get((kind, name))
                replannable = not applied and not record.undoes  # an undo is not re-planned
                try:
                    for other in record.patch if replannable else (obj,):
                        now = await reread(other)
                except (KubeError, ValueError, aiohttp.ClientError, TimeoutError) as err:
                    return record.settle("Failed", f"{obj}: re-reading after a conflict: {err}")
                if replannable:
                    replans += 1
                    replanning = True
                    break
                now = fresh.get((kind, name))
                if (
                    now is None
                    or planned is None
                    or _spec_and_metadata(now) != _spec_and_metadata(planned)
                ):
                    return record.settle(
                        "Failed", f"{obj}: {exc}, and changed since it was planned{before}"
                    )
                version = (now.get("metadata") or {}).get("resourceVersion")
                pending[0] = (obj, _precondition(patch, version))
                continue
            except (KubeError, ValueError, aiohttp.ClientError, TimeoutError) as exc:
                return record.settle("Failed", f"{obj}: {exc}{before}")
            applied.append(obj)
            # What the settled record keeps instead of the patch: digests of what it set.
            held[obj] = fingerprint(written, patch)
            pending.pop(0)
        if not replanning:
            break
        record = replan(model=model, record=record, snapshot=fresh)
        if record.result != "Running":
            return record
    after = ""
    if replans:
        after = f" (re-planned after {replans} conflict(s))"
    if conflicts > replans:
        after += f" (re-applied after {conflicts - replans} status write(s) moved it on)"
    if not applied:
        return record.settle("Succeeded", "nothing to apply" + after)
    settled = record.settle("Succeeded", f"applied to {', '.join(applied)}{after}")
    return replace(settled, held=held)


async def notify(
    *,
    model: ObservedModel,
    record: ActionRecord,
    alerts: Sequence[Mapping[str, Any]],
    top: Mapping[str, Any] | None,
    event: EventPoster,
) -> ActionRecord:
    """An `alert` action: the Event, then the webhooks; the settled record."""
    related = alerts_for(model=model, record=record, alerts=alerts) or list(alerts)
    message = alert_summary(model=model, alerts=related)
    if top:
        message += f"; top suspect {top.get('kind')}/{top.get('name')}"
    event("Warning", "ReactionAlert", message)
    urls = webhooks_for(model=model, record=record)
    payload = webhook_payload(model=model, alerts=related, diagnosis_top=top, record=record)
    failures = await post_webhooks(urls, payload, event=event)
    if failures:
        return record.settle("Failed", "Event posted; " + "; ".join(failures))
    sent = f" and {len(urls)} webhook(s) notified" if urls else ""
    return record.settle("Succeeded", f"Event posted{sent}")


def _report(model: ObservedModel, record: ActionRecord, event: EventPoster) -> None:
    """The Event for a record's final result (an alert's own Event is its notification)."""
    line = describe(record)
    if record.result == "Planned":
        event(
            "Normal",
            "ReactionAwaitingApproval",
            f"{line}: approve with `{approve_command(model, record)}` ({record.reason})",
        )
    elif record.result == "Skipped":
        event("Normal", "ReactionSkipped", f"{line}: {record.reason}")
    elif record.result == "Failed":
        event("Warning", "ReactionFailed", f"{line}: {record.message}")
    elif record.result == "Succeeded" and record.dry_run:
        applies = ", ".join(record.patch) or record.target
        event("Normal", "ReactionDryRun", f"{line}: {record.message} ({applies})")
    elif record.result == "Succeeded" and record.action != "alert":
        event("Normal", "ReactionSucceeded", f"{line}: {record.message}")


def _count(record: ActionRecord) -> None:
    METRICS.reactions.labels(record.action, record.metric_result).inc()


# --------------------------------------------------------------------------- the pass


async def respond(
    *,
    api: Kube,
    raw: Mapping[str, Any],
    lists: Mapping[str, Sequence[Mapping[str, Any]]],
    model: ObservedModel,
    obs: Observation,
    now: datetime,
    event: EventPoster,
    others: Sequence[Mapping[str, Any]] = (),
) -> Outcome:
    """One pass: diagnose, plan, record, act (see the module docstring).

    `lists`: kind → the objects of that kind in the model's namespace (`cache.lists`);
    `others`: what the other ObservedModels of the namespace have (`incidents.peers`).
    """
    status = _Status(api, model, raw.get("status") or {})
    alerts = [a for a in status.current.get("alerts") or () if isinstance(a, Mapping)]
    snapshot = Snapshot.from_lists(model=model, lists=lists, alerts=alerts, now=now)
    top: Suspect | None = None
    try:
        diagnosis = diagnose(snapshot)
    except Exception:  # a diagnosis bug must not stop the reactions
        log.exception("diagnosing %s/%s", model.namespace, model.name)
        if diagnosis_stale(status.current):  # made for other alerts: not shown any longer
            await status.write({"diagnosis": None, "topSuspect": None})
    else:
        top = diagnosis.top
        await _write_diagnosis(status, diagnosis, top.label if top else None, alerts, event)
    label = top.label if top is not None else None

    annotations = (raw.get("metadata") or {}).get("annotations") or {}
    entries: list[dict[str, Any]] = [
        dict(e) for e in status.current.get("reactions") or () if isinstance(e, Mapping)
    ]
    ready = phase(obs)[0] not in ("Failed", "Pending")
    top_dict = top.to_dict() if top is not None else None
    step = IncidentStep(api=api, model=model, status=status, event=event, now=now, others=others)
    await step.track(alerts, top_dict)
    records = plan_reactions(
        model=model,
        alerts=alerts,
        diagnosis_top=top_dict,
        snapshot=snapshot.objects,
        history=records_from_status(entries),
        annotations={str(k): str(v) for k, v in annotations.items()},
        detector_ready=ready,
        warming_up=obs.reference_id is None,
        now=now,
        incident_of=step.incident_of,
    )
    touched: set[tuple[str, str]] = set()  # the objects this pass patched, by (kind, name)
    for record in records:
        if record.result == "Running" and step.incident(record) and not step.due(record):
            continue  # an incident's notification waits for what arrives with it
        if record.result == "Running" and touched & {object_key(o) for o in record.patch}:
            log.info("%s waits for the next pass: %s changed in this one", record.id, touched)
            continue
        if not has_room(entries, record):
            # Never acted on unless recorded first; the API would refuse a longer list.
            event(
                "Warning",
                "ReactionNotRecorded",
                f"{describe(record)}: not recorded and not taken: status.reactions holds "
                f"{MAX_RECORDS} open actions (Planned or Running); approve or resolve them",
            )
            continue
        if record.action == RETRAIN and record.result == "Running":
            entries = await _retrain(
                api, status, model, obs, record, entries,
                alerts=alerts, top=top_dict, label=label, jobs=lists.get("Job") or (),
                now=now, event=event,
            )  # fmt: skip
            step.took(record, alerts_for(model=model, record=record, alerts=alerts))
            continue
        if record.result != "Running":
            trigger = verify.trigger(alerts_for(model=model, record=record, alerts=alerts))
            if verify.verifiable(record) and record.verification is None and trigger is not None:
                # Completed before an operator restart (policy._resume): verified from now.
                record = replace(record, verification=verify.start(
                    record, alert=trigger, detector=status.current.get("detector"),
                    snapshot=snapshot.objects, guardrails=model.spec.guardrails, now=now,
                ))  # fmt: skip
        entries = upsert(entries, record)
        if record.result != "Running":
            await status.write({"reactions": entries})
            _count(record)
            _report(model, record, event)
            if record.action != "alert" and record.result in ("Planned", "Succeeded", "Failed"):
                await _tell_webhooks(model, record, alerts, top_dict, event)
            if record.result != "Skipped":
                step.took(record, alerts_for(model=model, record=record, alerts=alerts))
            continue
        # Recorded (and the phase says Reacting) before anything is changed.
        running = replace(obs, reacting=True, last_action=describe(record), top_suspect=label)
        fields = status_patch(running, status.current, now=format_time(now))
        await status.write({**fields, "reactions": entries, "lastAction": running.last_action})
        if record.action == "alert" and step.incident(record) is not None:
            settled = await step.notify(record)
        elif record.action == "alert":
            settled = await notify(
                model=model, record=record, alerts=alerts, top=top_dict, event=event
            )
        else:
            settled = await apply_patches(api, model, record, snapshot.objects)
            touched |= {object_key(o) for o in record.patch}
            failures = await _tell_webhooks(model, settled, alerts, top_dict, event)
            if failures:
                settled = replace(settled, message=f"{settled.message}; {'; '.join(failures)}")
            trigger = verify.trigger(alerts_for(model=model, record=record, alerts=alerts))
            if verify.verifiable(settled) and trigger is not None:
                # Judged by later passes from this record alone (restarts included).
                settled = replace(settled, verification=verify.start(
                    settled, alert=trigger, detector=status.current.get("detector"),
                    snapshot=snapshot.objects, guardrails=model.spec.guardrails,
                    now=datetime.now(UTC),  # the action's end: evaluations after it count
                ))  # fmt: skip
        entries = upsert(entries, settled)
        await status.write({"reactions": entries, "lastAction": describe(settled)})
        _count(settled)
        _report(model, settled, event)
        step.took(settled, alerts_for(model=model, record=settled, alerts=alerts))
        log.info("%s: %s", settled.id, describe(settled))

    entries = await _verify(api, status, model, entries, alerts, top_dict, snapshot, now, event)
    await step.finish()
    latest = _latest(entries)
    if latest is not None and status.current.get("lastAction") != describe(latest):
        await status.write({"lastAction": describe(latest)})
    return Outcome(
        status=status.current,
        top_suspect=label,
        last_action=describe(latest) if latest is not None else None,
        reacting=any(e.get("result") == "Running" for e in entries),
        for_alerts=tuple(alert_keys(alerts)),
    )


async def _retrain(
    api: Kube,
    status: _Status,
    model: ObservedModel,
    obs: Observation,
    record: ActionRecord,
    entries: list[dict[str, Any]],
    *,
    alerts: Sequence[Mapping[str, Any]],
    top: Mapping[str, Any] | None,
    label: str | None,
    jobs: Sequence[Mapping[str, Any]],
    now: datetime,
    event: EventPoster,
) -> list[dict[str, Any]]:
    """A retrain record that is Running: recorded first when new, then its run started or
    followed (runs.py); written again only when that changed it. `status.reactions` after."""
    known = next((e for e in entries if e.get("id") == record.id), None)
    if known is None or ActionRecord.from_status(known).to_status() != record.to_status():
        entries = upsert(entries, record)
        running = replace(obs, reacting=True, last_action=describe(record), top_suspect=label)
        fields = status_patch(running, status.current, now=format_time(now))
        await status.write({**fields, "reactions": entries, "lastAction": running.last_action})
    after = await runs.advance(
        api, model, record, alerts=alerts, reference_id=obs.reference_id, now=now, jobs=jobs,
        incidents=[i for i in status.current.get("incidents") or () if isinstance(i, Mapping)],
    )  # fmt: skip
    if after.to_status() == record.to_status():
        return entries
    if after.result != "Running":
        failures = await _tell_webhooks(model, after, alerts, top, event)
        if failures:
            after = replace(after, message=f"{after.message}; {'; '.join(failures)}")
    entries = upsert(entries, after)
    await status.write({"reactions": entries, "lastAction": describe(after)})
    if after.result == "Running" and after.run and not record.run:
        event("Normal", "RetrainStarted", f"{describe(after)}: {after.message}")
    if after.result != "Running":
        _count(after)
        _report(model, after, event)
        log.info("%s: %s", after.id, describe(after))
    return entries


def _in_place(entries: list[dict[str, Any]], record: ActionRecord) -> list[dict[str, Any]]:
    """`status.reactions` with `record`'s entry replaced where it is (not moved to the end)."""
    return [
        record.to_status() if isinstance(e, Mapping) and e.get("id") == record.id else e
        for e in entries
    ]


_VERDICT_EVENTS: Final = {
    "Fixed": ("Normal", "ReactionFixed"),
    "NotFixed": ("Warning", "ReactionNotFixed"),
    "Inconclusive": ("Warning", "ReactionInconclusive"),
}


async def _verify(
    api: Kube,
    status: _Status,
    model: ObservedModel,
    entries: list[dict[str, Any]],
    alerts: Sequence[Mapping[str, Any]],
    top: Mapping[str, Any] | None,
    snapshot: Snapshot,
    now: datetime,
    event: EventPoster,
) -> list[dict[str, Any]]:
    """Judge every open verification (`react.verify.judge`); on a verdict, write it and post
    an Event; a NotFixed one alerts a person (its reactions' webhooks) and, with
    `guardrails.undoIfNotFixed`, is undone (recorded first, like every action)."""
    detector = status.current.get("detector")
    for record in records_from_status(entries):
        if record.verification is None or record.verification.get("verdict") != "Pending":
            continue
        judged = verify.judge(record.verification, alerts=alerts, detector=detector, now=now)
        if judged == dict(record.verification):
            continue  # still Pending, unchanged: nothing written
        verdict = str(judged["verdict"])
        shown = judged.get("revisionLabel") or judged.get("revision")
        line = f"{describe(record)}: verification {verdict}: {judged.get('message')}" + (
            f" (serving {shown})" if shown else ""
        )
        undo: ActionRecord | None = None
        if verdict == "NotFixed" and model.spec.guardrails.undo_if_not_fixed:
            undo = verify.plan_undo(record, model=model, snapshot=snapshot.objects, now=now)
            judged["undo"] = undo.id
        record = replace(record, verification=judged)
        entries = _in_place(entries, record)
        await status.write({"reactions": entries})
        kind, reason = _VERDICT_EVENTS.get(verdict, ("Normal", "ReactionVerified"))
        event(kind, reason, line)
        log.info("%s", line)
        if verdict != "NotFixed":
            continue
        # A person hears of it: the webhooks of the reactions that call for this action.
        payload = webhook_payload(
            model=model, alerts=list(alerts), diagnosis_top=top, record=record
        )
        urls = webhooks_for(model=model, record=record)
        if urls:
            await post_webhooks(urls, payload, event=event)
        if undo is None:
            continue
        if not has_room(entries, undo):
            event("Warning", "ReactionNotRecorded", f"{describe(undo)}: not recorded, not taken")
            continue
        entries = upsert(entries, undo)
        await status.write({"reactions": entries})
        if undo.result == "Running":
            undo = await apply_patches(api, model, undo, snapshot.objects)
            entries = upsert(entries, undo)
            await status.write({"reactions": entries, "lastAction": describe(undo)})
        _count(undo)
        kind = "Normal" if undo.result == "Succeeded" else "Warning"
        event(kind, "ReactionUndone" if kind == "Normal" else "ReactionFailed",
              f"{describe(undo)}: {undo.message} ({undo.reason})")  # fmt: skip
        if urls:
            payload = webhook_payload(model=model, alerts=list(alerts), diagnosis_top=top,
                                      record=undo)  # fmt: skip
            await post_webhooks(urls, payload, event=event)
    return entries


async def _write_diagnosis(
    status: _Status,
    diagnosis: Diagnosis,
    label: str | None,
    alerts: Sequence[Mapping[str, Any]],
    event: EventPoster,
) -> None:
    """`status.diagnosis` (with the alerts it is for) and `status.topSuspect`, when changed.

    With no alert active both go (null: a merge patch that left them out would keep them).
    """
    before = status.current.get("diagnosis")
    old_label = status.current.get("topSuspect")
    new: dict[str, Any] | None = None
    if alerts:
        new = _bounded({**diagnosis.to_status(), "forAlerts": alert_keys(alerts)})
    else:
        label = None
    if _comparable(before) != _comparable(new) or old_label != label:
        await status.write({"diagnosis": new, "topSuspect": label})
    if alerts and label != old_label:
        event("Normal", "Diagnosed", diagnosis.summary)
    for problem in diagnosis.problems:
        log.debug("diagnosis: %s", problem)


def _bounded(diagnosis: dict[str, Any]) -> dict[str, Any]:
    """The diagnosis within the CRD's maxItems (a longer list would be refused)."""
    suspects = [
        {**s, "evidence": list(s.get("evidence") or ())[:MAX_STATUS_EVIDENCE]}
        if isinstance(s, Mapping)
        else s
        for s in diagnosis.get("suspects") or ()
    ]
    return {
        **diagnosis,
        "suspects": suspects[:MAX_STATUS_SUSPECTS],
        "forAlerts": list(diagnosis.get("forAlerts") or ())[:MAX_STATUS_ALERTS],
    }


async def _tell_webhooks(
    model: ObservedModel,
    record: ActionRecord,
    alerts: Sequence[Mapping[str, Any]],
    top: Mapping[str, Any] | None,
    event: EventPoster,
) -> list[str]:
    """People hear of workload actions too, when a reaction with that action names a webhook."""
    urls = webhooks_for(model=model, record=record)
    if not urls:
        return []
    related = alerts_for(model=model, record=record, alerts=alerts)
    payload = webhook_payload(model=model, alerts=related, diagnosis_top=top, record=record)
    return await post_webhooks(urls, payload, event=event)
