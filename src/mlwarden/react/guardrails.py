"""Guardrails: each one a small pure function returning why not to act now, or None.

    not_ready          the detector is warming up or not Ready: its alerts are not to be acted on
    exactly_once       this id is recorded already (Planned, Running, Succeeded or Failed)
    once_per_incident  a rollback, pause or retrain of this target was taken in this incident
                       already (a second `rollout undo` would bring back the faulty revision;
                       a second retraining on the same data would learn the same thing)
    revision_moved     the alert names a revision (a pod-template-hash, resolved to its
                       Deployment revision through the ReplicaSets) that is no longer the
                       Deployment's current one
    blames_elsewhere   the diagnosis' top suspect is upstream of the model (a job, a config,
                       another workload), not the model's Deployment: rolling the model back
                       would not fix the data, and would take away a good version
    person_changed     the target no longer holds what mlwarden's last action in this incident
                       set: someone changed it since, and mlwarden does not undo that
    cooldown           an action on the same object was attempted less than `cooldown` ago
    rate_limit         `maxActionsPerHour` actions attempted in the last rolling hour
    approval           `requireApproval` and the ObservedModel lacks `mlwarden.io/approve: <id>`
    dry_run            `dryRun`: the action is recorded (Succeeded, dryRun true) and not applied

Retrain has two more, in `react.actuators.retrain`: `still_running` (no second run from a
source while one runs) and `blames_a_change` (no retraining while the diagnosis names a
plausible cause).

An incident is what started at the alert's onset (`since`): history from before it is a past
incident. A dry run has its own cooldown and hourly count (its records simulate what a real
run would do); real actions never wait for dry-run records, nor dry runs for real ones.
Only the actions that change the cluster (rollback, scale, shiftTraffic, pause, and retrain,
which starts a Job or Workflow) are limited by cooldown, the hourly limit, approval and
dry-run; `alert` changes nothing in the cluster.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from mlwarden.patches import holds
from mlwarden.react.actions import ATTEMPTED, SETTLED, ActionRecord, changed_since
from mlwarden.react.targets import object_key
from mlwarden.spec import Guardrails
from mlwarden.timestamps import format_time, parse_time

APPROVE_ANNOTATION: Final = "mlwarden.io/approve"
WORKLOAD_ACTIONS: Final = frozenset({"rollback", "scale", "shiftTraffic", "pause", "retrain"})
ONCE_PER_INCIDENT: Final = frozenset({"rollback", "pause", "retrain"})


def _keys(objects: Iterable[str]) -> set[tuple[str, str]]:
    """The objects of patch targets: `Rollout/x/status` and `Rollout/x` are one object."""
    return {object_key(o) for o in objects}


# The objects as last read, by (kind, name): what the planners look at (not diagnose.Snapshot).
LiveObjects = Mapping[tuple[str, str], Mapping[str, Any]]


def _since(record: ActionRecord, onset: datetime | None) -> bool:
    """Is the record part of the incident that began at `onset`? (Unknown times: yes.)"""
    if onset is None:
        return True
    at = parse_time(record.at)
    return at is None or at >= onset


def _time_or_min(text: str) -> datetime:
    return parse_time(text) or datetime.min.replace(tzinfo=UTC)


def _ago(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def not_ready(*, detector_ready: bool, warming_up: bool) -> str | None:
    if warming_up:
        return "the detector is warming up (collecting its reference): not acting yet"
    if not detector_ready:
        return "the detector is not Ready: not acting on its alerts"
    return None


def exactly_once(*, action_id: str, history: Sequence[ActionRecord]) -> str | None:
    for record in reversed(history):
        if record.id == action_id and record.result in SETTLED:
            return f"already recorded as {record.result} at {record.at}"
    return None


def once_per_incident(
    *,
    action: str,
    objects: Iterable[str],
    onset: datetime | None,
    history: Sequence[ActionRecord],
    dry_run: bool,
) -> str | None:
    if action not in ONCE_PER_INCIDENT:
        return None
    mine = _keys(objects)
    for record in reversed(history):
        if (
            record.action == action
            and record.dry_run == dry_run
            and record.result in ATTEMPTED
            and mine & _keys(record.objects)
            and _since(record, onset)
        ):
            return (
                f"{action} of {record.target} was taken in this incident already ({record.id}, "
                f"{record.from_state} → {record.to_state}, {record.result}); not again"
            )
    return None


def revision_moved(
    *,
    alert_revision: int | None,
    current_revision: str | None,
    shown: str | None = None,
) -> str | None:
    """The alert's revision as a Deployment revision number (its `modelRevision`, a
    pod-template-hash, resolved through the ReplicaSets: `react.revisions`) against the
    Deployment's revision now. Unknown on either side: no objection. `shown` is how the
    alert's revision reads (`6b8f7c9d4, revision 7 (fraud:1.4)`)."""
    if alert_revision is None or current_revision is None or not current_revision.isdigit():
        return None
    if alert_revision == int(current_revision):
        return None
    what = shown or f"revision {alert_revision}"
    return (
        f"the alert is about {what} but the Deployment is at revision {current_revision} "
        "now: someone changed it since; not rolling back"
    )


def blames_elsewhere(
    *, top: Mapping[str, Any] | None, target: str, same_model: Sequence[int] = ()
) -> str | None:
    """A rollback of `target` ("Deployment/NAME") waits when the diagnosis blames something else.

    Something else is another object (a feature job's change before the onset, say), or a
    revision of the target that did not change the model: `same_model` lists the revisions
    whose template is the running one, sidecar aside; any but the first of them only
    re-packaged the model (mlwarden's injection, a restart annotation), and rolling back would
    take away a model version nobody blamed. No diagnosis lets the rollback go ahead: the
    guard only holds back a rollback the evidence speaks against.
    """
    if not top or not top.get("kind") or not top.get("name"):
        return None
    suspect = f"{top['kind']}/{top['name']}"
    if suspect == target:
        revision = str(top.get("revision") or "")
        if revision.isdigit() and len(same_model) > 1 and int(revision) in same_model[1:]:
            return (
                f"the diagnosis blames revision {revision} of {target}, which runs the same "
                f"model as revision {same_model[0]} (it only changed the pod around it, such "
                "as the sidecar's injection); not rolling the model back"
            )
        return None
    return (
        f"the diagnosis blames {suspect}, not {target}: rolling the model back would not fix "
        "that; not rolling back"
    )


def person_changed(
    *,
    objects: Iterable[str],
    onset: datetime | None,
    history: Sequence[ActionRecord],
    snapshot: LiveObjects,
) -> str | None:
    """Does an object still hold what our last (real, succeeded) action in this incident set?

    The snapshot must hold every object that action patched; a missing one counts as changed.
    """
    mine = _keys(objects)
    ours = [
        r
        for r in history
        if not r.dry_run
        and r.result == "Succeeded"
        and (r.patch or r.held)
        and mine & _keys(r.objects)
        and _since(r, onset)
    ]
    if not ours:
        return None
    # The newest by time (history order breaks ties: status.reactions is appended to).
    last = max(enumerate(ours), key=lambda p: (_time_or_min(p[1].at), p[0]))[1]
    # A settled record keeps digests of what it set (`held`); an older one its whole patch.
    found_in = (
        ((o, changed_since(snapshot.get(object_key(o)), held)) for o, held in last.held.items())
        if last.held
        else ((o, holds(snapshot.get(object_key(o)), patch)) for o, patch in last.patch.items())
    )
    for obj, found in found_in:
        if found is not None:
            return (
                f"{obj} was changed after mlwarden's {last.action} {last.id} set it ({found}); "
                "mlwarden does not undo a person's change: not acting on it again in this incident"
            )
    return None


def _attempts(
    history: Sequence[ActionRecord], *, dry_run: bool
) -> Iterable[tuple[ActionRecord, datetime | None]]:
    for record in history:
        if (
            record.action in WORKLOAD_ACTIONS
            and record.result in ATTEMPTED
            and record.dry_run == dry_run
        ):
            yield record, parse_time(record.at)


def cooldown(
    *,
    objects: Iterable[str],
    history: Sequence[ActionRecord],
    now: datetime,
    cooldown_seconds: float,
    dry_run: bool,
) -> str | None:
    if cooldown_seconds <= 0:
        return None
    mine = _keys(objects)
    latest: tuple[ActionRecord, float] | None = None
    for record, at in _attempts(history, dry_run=dry_run):
        if not mine & _keys(record.objects):
            continue
        age = 0.0 if at is None else (now - at).total_seconds()
        if latest is None or age < latest[1]:
            latest = (record, age)
    if latest is None or latest[1] >= cooldown_seconds:
        return None
    record, _ = latest
    # No "N minutes ago" here: the reason must read the same on every pass until it lifts.
    until = parse_time(record.at)
    after = (
        ""
        if until is None
        else f"; next after {format_time(until + timedelta(seconds=cooldown_seconds))}"
    )
    return (
        f"cooldown {_ago(cooldown_seconds)}: {record.action} of {record.target} at "
        f"{record.at}{after}"
    )


def rate_limit(
    *, history: Sequence[ActionRecord], now: datetime, max_per_hour: int, dry_run: bool
) -> str | None:
    if max_per_hour <= 0:
        return "maxActionsPerHour is 0: automatic actions are off"
    hour_ago = now - timedelta(hours=1)
    times = [at for _, at in _attempts(history, dry_run=dry_run) if at is None or at > hour_ago]
    if len(times) < max_per_hour:
        return None
    known = sorted(t for t in times if t is not None)
    freed = len(times) - max_per_hour  # the one whose hour ends first makes room
    # Stable from pass to pass (no "now" in it), so the Skipped record is written once.
    until = (
        f"; room again after {format_time(known[freed] + timedelta(hours=1))}"
        if freed < len(known)
        else ""
    )
    return f"maxActionsPerHour {max_per_hour} reached ({len(times)} in the last hour{until})"


def approved_ids(annotations: Mapping[str, str]) -> frozenset[str]:
    """The ids `mlwarden.io/approve` names (one, or several separated by commas or spaces)."""
    return frozenset(i for i in re.split(r"[\s,]+", annotations.get(APPROVE_ANNOTATION, "")) if i)


def approval(
    *,
    action_id: str,
    annotations: Mapping[str, str],
    required: bool,
    model_name: str = "<name>",
) -> str | None:
    if not required or action_id in approved_ids(annotations):
        return None
    return (
        f"waiting for approval: kubectl annotate observedmodel {model_name} "
        f"{APPROVE_ANNOTATION}={action_id} --overwrite"
    )


def dry_run(*, guardrails: Guardrails) -> str | None:
    """The message of a dry-run record, or None when actions are taken for real."""
    if not guardrails.dry_run:
        return None
    return "dry run: planned and recorded, nothing applied"
