"""The I/O around diagnosis and reaction: collect, diagnose, plan, record, act, report.

One pass for one ObservedModel (`respond`). The handlers run it when the detector's alerts
change and on a timer while an alert is active or a reaction is Planned or Running, one pass
at a time per ObservedModel, on the object as the API has it now:

1. Collect: every object of the kinds the diagnosis and the reactions read, in the model's
   namespace, from the watch-backed cache (`cache.py`: kopf indexes, handed to the handlers
   and passed in here as `lists`); no API request. A kind the cluster does not serve (Gateway
   API or Istio not installed) reads as empty; Secrets are never read.
2. Diagnose (pure) and write `status.diagnosis` and `status.topSuspect` when they changed
   (`diagnosis.updated` is when the diagnosis last changed, not when a pass last ran), and an
   Event `Diagnosed` with the summary when the top suspect changed while alerts are active.
   A diagnosis that fails (a bug) is logged and the reactions go ahead without a suspect.
3. Plan (pure: `react.policy.plan_reactions`), then for each record, in order:
   - write it to `status.reactions` first, as a real API write (a merge patch of the whole
     list on the status subresource), so that an operator stopped after this point finds it
     and completes or reports it instead of acting twice;
   - Running: the same write says phase Reacting; apply the record's merge patches in their
     order (for `alert`: a Warning Event `ReactionAlert` and the webhooks), then write the
     settled record (Succeeded, or Failed with the error) and `status.lastAction`;
   - Planned (waiting for approval): an Event with the `kubectl annotate` command;
   - Skipped, or a dry run: an Event saying so (the planner returns a Skipped record only
     when its reason is new, so these do not repeat).
   A Running record that patches an object an earlier record of the same pass changed is
   left for the next pass, which plans it against the object as it is then.
   Each final result is counted in `mlwarden_operator_reactions_total{action, result}`.
   Webhooks (`reactions[].webhook`) get the alert, and the outcome of workload actions;
   a webhook that fails (5 s timeout) fails an `alert` record and is noted in a workload one.

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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp

from mlwarden.diagnose import Diagnosis, Snapshot, Suspect, diagnose
from mlwarden.operator.kube import Kube, KubeError, path
from mlwarden.operator.metrics import METRICS
from mlwarden.operator.status import Observation, phase, status_patch
from mlwarden.react.actuators.alert import summary as alert_summary
from mlwarden.react.actuators.alert import webhook_payload
from mlwarden.react.guardrails import APPROVE_ANNOTATION
from mlwarden.react.policy import alerts_for, plan_reactions, webhooks_for
from mlwarden.react.records import (
    ActionRecord,
    apply_merge_patch,
    format_time,
    records_from_status,
)
from mlwarden.spec import ObservedModel

log = logging.getLogger(__name__)

# status.reactions keeps this many entries (the oldest settled ones go first).
MAX_RECORDS: Final = 50
WEBHOOK_TIMEOUT_SECONDS: Final = 5.0
# Results a record keeps in status.reactions until a later pass moves it on.
OPEN_RESULTS: Final = frozenset({"Planned", "Running"})

EventPoster = Callable[[str, str, str], None]
"""(type Normal|Warning, reason, message): an Event on the ObservedModel."""


@dataclass(frozen=True)
class Outcome:
    """What a pass leaves: the status as it wrote it, and what the phase is computed from."""

    status: dict[str, Any]
    top_suspect: str | None
    last_action: str | None
    reacting: bool


def has_work(status: Mapping[str, Any] | None) -> bool:
    """Whether a timer pass has anything to do: an active alert, or an open reaction."""
    status = status or {}
    if status.get("alerts"):
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
        if record.from_state or record.to_state:
            text += f" {record.from_state}→{record.to_state}"
    text += f" {record.result}"
    if record.dry_run:
        text += " (dry run)"
    return text


def approve_command(model: ObservedModel, record: ActionRecord) -> str:
    return f"kubectl annotate om {model.name} {APPROVE_ANNOTATION}={record.id} --overwrite"


def _host(url: str) -> str:
    """Where a webhook goes, without its path (webhook URLs usually carry a secret)."""
    try:
        return urlsplit(url).netloc or "?"
    except ValueError:
        return "?"


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


def upsert(entries: Sequence[Mapping[str, Any]], record: ActionRecord) -> list[dict[str, Any]]:
    """`status.reactions` with `record` as its newest entry (one entry per id), trimmed."""
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


def _comparable(diagnosis: Mapping[str, Any]) -> dict[str, Any]:
    """A diagnosis without its time, and without nulls (a merge patch deletes those)."""
    return {k: v for k, v in diagnosis.items() if k != "updated" and v is not None}


# --------------------------------------------------------------------------- acting


async def post_webhooks(urls: Sequence[str], payload: dict[str, Any]) -> list[str]:
    """POST `payload` to each URL; what failed, one line each (never raises)."""
    failures: list[str] = []
    if not urls:
        return failures
    timeout = aiohttp.ClientTimeout(total=WEBHOOK_TIMEOUT_SECONDS)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        for url in urls:
            try:
                async with http.post(url, json=payload) as resp:
                    if resp.status >= 300:
                        body = (await resp.text())[:200]
                        failures.append(f"webhook {_host(url)}: HTTP {resp.status} {body}".strip())
            except TimeoutError:
                failures.append(f"webhook {_host(url)}: no answer in {WEBHOOK_TIMEOUT_SECONDS:g}s")
            except Exception as exc:  # a webhook must never fail the handler
                failures.append(f"webhook {_host(url)}: {type(exc).__name__}: {exc}")
    for failure in failures:
        log.warning("%s", failure)
    return failures


async def apply_patches(api: Kube, model: ObservedModel, record: ActionRecord) -> ActionRecord:
    """Apply a Running record's merge patches in order; the settled record."""
    applied: list[str] = []
    for obj, patch in record.patch.items():
        kind, _, name = obj.partition("/")
        try:
            await api.merge_patch(path(kind, model.namespace, name), copy.deepcopy(dict(patch)))
        except (KubeError, ValueError, aiohttp.ClientError, TimeoutError) as exc:
            before = f" (applied before it: {', '.join(applied)})" if applied else ""
            return record.settle("Failed", f"{obj}: {exc}{before}")
        applied.append(obj)
    if not applied:
        return record.settle("Succeeded", "nothing to apply")
    return record.settle("Succeeded", f"applied to {', '.join(applied)}")


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
    failures = await post_webhooks(urls, payload)
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
        event("Normal", "ReactionDryRun", f"{line}: {record.message} ({', '.join(record.patch)})")
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
) -> Outcome:
    """One pass: diagnose, plan, record, act (see the module docstring).

    `lists`: kind → the objects of that kind in the model's namespace (`cache.lists`).
    """
    status = _Status(api, model, raw.get("status") or {})
    alerts = [a for a in status.current.get("alerts") or () if isinstance(a, Mapping)]
    snapshot = Snapshot.from_lists(model=model, lists=lists, alerts=alerts, now=now)
    top: Suspect | None = None
    try:
        diagnosis = diagnose(snapshot)
    except Exception:  # a diagnosis bug must not stop the reactions
        log.exception("diagnosing %s/%s", model.namespace, model.name)
    else:
        top = diagnosis.top
        await _write_diagnosis(status, diagnosis, top.label if top else None, bool(alerts), event)
    label = top.label if top is not None else None

    annotations = (raw.get("metadata") or {}).get("annotations") or {}
    entries: list[dict[str, Any]] = [
        dict(e) for e in status.current.get("reactions") or () if isinstance(e, Mapping)
    ]
    ready = phase(obs)[0] not in ("Failed", "Pending")
    top_dict = top.to_dict() if top is not None else None
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
    )
    touched: set[str] = set()
    for record in records:
        if record.result == "Running" and touched & set(record.patch):
            log.info("%s waits for the next pass: %s changed in this one", record.id, touched)
            continue
        entries = upsert(entries, record)
        if record.result != "Running":
            await status.write({"reactions": entries})
            _count(record)
            _report(model, record, event)
            if record.action != "alert" and record.result in ("Planned", "Succeeded", "Failed"):
                await _tell_webhooks(model, record, alerts, top_dict)
            continue
        # Recorded (and the phase says Reacting) before anything is changed.
        running = replace(obs, reacting=True, last_action=describe(record), top_suspect=label)
        fields = status_patch(running, status.current, now=format_time(now))
        await status.write({**fields, "reactions": entries})
        if record.action == "alert":
            settled = await notify(
                model=model, record=record, alerts=alerts, top=top_dict, event=event
            )
        else:
            settled = await apply_patches(api, model, record)
            touched |= set(record.patch)
            failures = await _tell_webhooks(model, settled, alerts, top_dict)
            if failures:
                settled = replace(settled, message=f"{settled.message}; {'; '.join(failures)}")
        entries = upsert(entries, settled)
        await status.write({"reactions": entries, "lastAction": describe(settled)})
        _count(settled)
        _report(model, settled, event)
        log.info("%s: %s", settled.id, describe(settled))

    latest = _latest(entries)
    return Outcome(
        status=status.current,
        top_suspect=label,
        last_action=describe(latest) if latest is not None else None,
        reacting=any(e.get("result") == "Running" for e in entries),
    )


async def _write_diagnosis(
    status: _Status, diagnosis: Diagnosis, label: str | None, alerting: bool, event: EventPoster
) -> None:
    before = status.current.get("diagnosis") or {}
    old_label = status.current.get("topSuspect")
    new = diagnosis.to_status()
    if _comparable(before) != _comparable(new) or old_label != label:
        await status.write({"diagnosis": new, "topSuspect": label})
    if alerting and label != old_label:
        event("Normal", "Diagnosed", diagnosis.summary)
    for problem in diagnosis.problems:
        log.debug("diagnosis: %s", problem)


async def _tell_webhooks(
    model: ObservedModel,
    record: ActionRecord,
    alerts: Sequence[Mapping[str, Any]],
    top: Mapping[str, Any] | None,
) -> list[str]:
    """People hear of workload actions too, when a reaction with that action names a webhook."""
    urls = webhooks_for(model=model, record=record)
    if not urls:
        return []
    related = alerts_for(model=model, record=record, alerts=alerts)
    payload = webhook_payload(model=model, alerts=related, diagnosis_top=top, record=record)
    return await post_webhooks(urls, payload)
