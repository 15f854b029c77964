"""Verified remediation: did an executed action fix what triggered it?

After a workload action (rollback, shiftTraffic, pause, scale) succeeds, its record in
`status.reactions` gains a `verification` (`start`), Pending until a verdict. Each later
respond pass judges it (`judge`) from what the detector writes (CONTRACT17 of issue 17):

    status.alerts              is the trigger's alert still active?
    status.detector.signals    the latest evaluation of every tracked check: {type, feature,
                               test, statistic, threshold, failing, at, modelRevision}
    status.detector.revisions  per revision: `records` received since `firstSeen`
                               (cumulative; from 0 again after a detector restart)

The trigger's signal is `type/feature/test` (feature left out when none), the key the
detector's alert state machine uses. What counts is the traffic served *after* the action
by the revision that serves now (`serving`): for a rollback the restored revision (found
through the owner's history, `react.revisions`: the ReplicaSet of a Deployment or a Rollout,
the ControllerRevision of a StatefulSet, numbered as the revision rolled back to); for an
Argo Rollout's abort its stable ReplicaSet (the record's `to`); for any action on a KServe
InferenceService (canaryTrafficPercent pinned to 0) its `default` endpoint (or the alert's
`baselineRevision`); for a shift or a pause of a canary the baseline the alert named
(`baselineRevision`), for a scale the alert's revision. With no revision known, all traffic
counts.

    Fixed         the signal was evaluated after the action (its `at` is later than the
                  action's end), passes, and its alert is gone, with at least
                  `guardrails.verifyMinRecords` records served after the action. For a
                  CanaryRegression (the candidate was paused or its traffic shifted away),
                  the candidate receiving no record since the action counts as its signal
                  passing: nothing of it is left to evaluate (a later evaluation can only be
                  of its records from before the action).
                  A CanaryRegression's alert and evaluations are those naming its candidate.
    NotFixed      at the deadline (the action's end + `guardrails.verifyWithin`), on that
                  many records, the signal's latest evaluation after the action fails (or,
                  not evaluated since, its alert is still active).
    Inconclusive  at the deadline, fewer records than that came, or the signal was not
                  evaluated after the action on the serving revision, or it passes while its
                  alert has not resolved yet (the alert's hysteresis outlasted verifyWithin).

A verdict is only reached early when it is Fixed; NotFixed and Inconclusive wait for the
deadline. Records after the action are the serving revision's counter now minus its counter
at the action's end (`recordsAt`); a counter lower than that (the detector restarted, or
the revision expired and came back) or a revision first seen after the action counts whole.

Everything the judgement needs is in the record (times, counters, the signal), so an
operator restarted while a verification is open judges it on from status. Pure: time
comes in as `now`.

`plan_undo` is the inverse of an action (guardrails.undoIfNotFixed): a rollback rolled
forward to the revision it left, replicas or minReplicas back, a rollout resumed, the
traffic split put back. For the other target kinds, through the owner's own mechanism:

    StatefulSet       the template of the ControllerRevision it left, as `kubectl rollout
                      undo statefulset --to-revision` (its updateStrategy and partition
                      untouched: the controller rolls it out under them)
    Argo Rollout      an abort lifted as `kubectl argo rollouts retry rollout` does (the
                      merge patch `{"status": {"abort": false}}` on the status subresource;
                      refused when the Rollout is no longer aborted); a template rollback
                      rolled forward as `kubectl argo rollouts undo --to-revision`; a pause
                      resumed (`spec.paused: false`)
    InferenceService  `spec.predictor.canaryTrafficPercent` back to what it was, the canary
                      (still the latest ready revision) taking its share again

Its record names the action it undoes (`undoes`) and is never verified itself.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, Final

from mlwarden.react.actions import ActionRecord, action_id
from mlwarden.react.actuators import workloads
from mlwarden.react.actuators.pause import PAUSED_FROM_ANNOTATION
from mlwarden.react.actuators.rollback import RollbackError, plan_rollback
from mlwarden.react.guardrails import WORKLOAD_ACTIONS, LiveObjects
from mlwarden.react.incidents import by_onset
from mlwarden.react.revisions import HISTORY_KINDS, history, long_label, newest, numbered
from mlwarden.react.targets import PatchTarget, object_key, split_target
from mlwarden.react.traffic.registry import ROUTERS
from mlwarden.react.traffic.router import TrafficError, Weights
from mlwarden.spec import Guardrails, ObservedModel
from mlwarden.timestamps import format_time, parse_time

VERDICTS: Final = ("Pending", "Fixed", "NotFixed", "Inconclusive")
CANARY_ALERT: Final = "CanaryRegression"
_WEIGHTS = re.compile(r"^stable (\d+)/canary (\d+)$")
_PREFIXED = re.compile(r"^(?:(\w+) )?(\d+)$")  # "3" or "minReplicas 2"


class UndoError(ValueError):
    """The action cannot be undone from what is recorded and live; the message says why."""


# --------------------------------------------------------------------------- the signal


def signal_key(alert: Mapping[str, Any]) -> str:
    """`type/feature/test`, the feature left out when there is none."""
    parts = [alert.get("type"), alert.get("feature"), alert.get("test")]
    return "/".join(str(p) for p in parts if p)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def trigger(alerts: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The alert an action answered: the earliest of those that called for it (as planned)."""
    found = sorted((a for a in alerts if isinstance(a, Mapping)), key=by_onset)
    return found[0] if found else None


# --------------------------------------------------------------------------- counting


def _entry(revisions: Sequence[Any] | None, revision: str) -> Mapping[str, Any] | None:
    for e in revisions or ():
        if isinstance(e, Mapping) and str(e.get("revision")) == revision:
            return e
    return None


def counter(revisions: Sequence[Any] | None, revision: str | None) -> int:
    """The detector's records counter of `revision` (all revisions summed for None)."""
    if revision is None:
        return sum(int(e.get("records") or 0) for e in revisions or () if isinstance(e, Mapping))
    e = _entry(revisions, revision)
    return int(e.get("records") or 0) if e is not None else 0


def records_since(
    revisions: Sequence[Any] | None, revision: str | None, *, at: int, since: datetime
) -> int:
    """Records served by `revision` since the action's end (see the module docstring)."""
    now = counter(revisions, revision)
    if revision is not None:
        e = _entry(revisions, revision)
        first = parse_time(e.get("firstSeen")) if e is not None else None
        if first is not None and first > since:
            return now
    return now if now < at else now - at


# --------------------------------------------------------------------------- start


def _lists(snapshot: LiveObjects) -> dict[str, list[Mapping[str, Any]]]:
    """The owners' histories in the snapshot, by kind (what `revisions.history` reads)."""
    return {k: [o for (kk, _), o in snapshot.items() if kk == k] for k in HISTORY_KINDS}


def aborted(record: ActionRecord) -> bool:
    """Whether a Rollout rollback was an abort (its patch went to the status subresource)."""
    for obj in record.objects:
        try:
            if split_target(obj).subresource == "status":
                return True
        except ValueError:
            continue
    return False


def serving_revision(
    record: ActionRecord, alert: Mapping[str, Any], snapshot: LiveObjects
) -> str | None:
    """The revision whose records tell whether the action worked (module docstring)."""
    kind, name = object_key(record.target.split("+")[0])
    if kind == "InferenceService":
        # Pinned to the last rolled-out revision: KServe's `default` endpoint serves it all.
        return str(alert.get("baselineRevision") or "default")
    if record.action == "rollback":
        if aborted(record):
            return record.to_state  # an Argo abort: the stable ReplicaSet's hash serves
        lists = _lists(snapshot)
        # Read before the controller acted, the number is the restored revision's; read later
        # (a verification resumed after an operator restart), the controller has renumbered
        # it to the newest.
        return numbered(record.to_state, (kind, name), lists) or newest((kind, name), lists)
    if record.action in ("shiftTraffic", "pause") and alert.get("baselineRevision"):
        return str(alert["baselineRevision"])
    if record.action == "scale" and alert.get("modelRevision"):
        return str(alert["modelRevision"])
    return None


def start(
    record: ActionRecord,
    *,
    alert: Mapping[str, Any],
    detector: Mapping[str, Any] | None,
    snapshot: LiveObjects,
    guardrails: Guardrails,
    now: datetime,
) -> dict[str, Any]:
    """The Pending verification of a workload action that just succeeded."""
    revisions = (detector or {}).get("revisions")
    serving = serving_revision(record, alert, snapshot)
    replicasets = history(_lists(snapshot))
    out: dict[str, Any] = {
        "signal": signal_key(alert),
        "before": _number(alert.get("statistic")),
        "verdict": "Pending",
        "since": format_time(now),
        "deadline": format_time(now + timedelta(seconds=guardrails.verify_within_seconds)),
        "recordsAt": counter(revisions, serving),
        "minRecords": guardrails.verify_min_records,
        "message": (
            f"waiting for {guardrails.verify_min_records} records served after the action"
            + (f" by revision {serving}" if serving else "")
        ),
    }
    if serving is not None:
        out["revision"] = serving
        label = long_label(serving, replicasets)
        if label:
            out["revisionLabel"] = label
    if alert.get("type") == CANARY_ALERT and alert.get("modelRevision"):
        candidate = str(alert["modelRevision"])
        out["candidate"] = candidate
        out["candidateRecordsAt"] = counter(revisions, candidate)
    return out


# --------------------------------------------------------------------------- judge


def _latest_signal(
    signals: Sequence[Any] | None, key: str, *, after: datetime, revision: str | None
) -> Mapping[str, Any] | None:
    """The newest evaluation of `key` later than `after`, on the serving revision when the
    evaluation names one (an all-traffic check names the revision with the largest share of
    the newest records)."""
    best: tuple[datetime, Mapping[str, Any]] | None = None
    for s in signals or ():
        if not isinstance(s, Mapping) or signal_key(s) != key:
            continue
        at = parse_time(s.get("at"))
        if at is None or at <= after:
            continue
        named = s.get("modelRevision")
        if revision is not None and named and str(named) != revision:
            continue
        if best is None or at > best[0]:
            best = (at, s)
    return best[1] if best else None


def judge(
    verification: Mapping[str, Any],
    *,
    alerts: Sequence[Mapping[str, Any]],
    detector: Mapping[str, Any] | None,
    now: datetime,
) -> dict[str, Any]:
    """The verification, judged now: the same dict while it stays Pending, else the verdict."""
    current = dict(verification)
    if current.get("verdict") != "Pending":
        return current
    since = parse_time(current.get("since"))
    deadline = parse_time(current.get("deadline"))
    if since is None or deadline is None:
        return {**current, "verdict": "Inconclusive", "message": "no action time recorded"}
    key = str(current.get("signal") or "")
    revision = current.get("revision")
    revisions = (detector or {}).get("revisions")
    minimum = int(current.get("minRecords") or 0)
    records = records_since(revisions, revision, at=int(current.get("recordsAt") or 0), since=since)
    candidate = current.get("candidate")
    # A canary check is about its candidate (one CanaryRegression per candidate, all with the
    # same key): its alert and evaluations are the ones naming it.
    about = str(candidate) if candidate else revision
    active = any(
        signal_key(a) == key
        and not (candidate and a.get("modelRevision") and str(a["modelRevision"]) != candidate)
        for a in alerts
        if isinstance(a, Mapping)
    )
    latest = _latest_signal((detector or {}).get("signals"), key, after=since, revision=about)
    after = _number(latest.get("statistic")) if latest is not None else None
    passes = latest is not None and latest.get("failing") is False
    if candidate and not passes:
        # A paused or shifted-away candidate has nothing left to evaluate: no record of it
        # since the action is its signal passing (an evaluation then can only be of records
        # from before the action).
        got = records_since(
            revisions, str(candidate), at=int(current.get("candidateRecordsAt") or 0), since=since
        )
        passes = got == 0
        if passes and latest is not None and latest.get("failing") is True:
            latest, after = None, None  # judged on records from before the action
    where = f" by revision {revision}" if revision else ""
    counted = f"{records} records served{where} since the action"
    if passes and not active and records >= minimum:
        return _verdict(current, "Fixed", after, records, f"{key} passes on {counted}")
    if now < deadline:
        return current
    if records < minimum:
        why = f"only {counted} by the deadline (verifyMinRecords {minimum})"
        return _verdict(current, "Inconclusive", after, records, why)
    if latest is not None and latest.get("failing") is True:
        return _verdict(current, "NotFixed", after, records, f"{key} still fails on {counted}")
    if latest is None and active:
        why = f"the alert on {key} is still active on {counted}, with no passing evaluation"
        return _verdict(current, "NotFixed", after, records, why)
    if passes:
        why = f"{key} passes on {counted}, but its alert has not resolved by the deadline"
    else:
        on = f" on revision {revision}" if revision else ""
        why = f"{key} was not evaluated{on} after the action ({counted})"
    return _verdict(current, "Inconclusive", after, records, why)


def _verdict(
    current: dict[str, Any], verdict: str, after: float | None, records: int, message: str
) -> dict[str, Any]:
    out = {**current, "verdict": verdict, "records": records, "message": message}
    if after is not None:
        out["after"] = after
    return out


def pending(entries: Sequence[Any] | None) -> bool:
    """Whether any record of `status.reactions` has a verification still open."""
    return any(
        isinstance(e, Mapping)
        and isinstance(e.get("verification"), Mapping)
        and e["verification"].get("verdict") == "Pending"
        for e in entries or ()
    )


def verifiable(record: ActionRecord) -> bool:
    """A workload action that was applied (not a dry run, not itself an undo). A retrain is
    not: it changes nothing that serves until a person deploys what it trained."""
    return (
        record.action in WORKLOAD_ACTIONS
        and record.action != "retrain"
        and record.result == "Succeeded"
        and not record.dry_run
        and not record.undoes
    )


# --------------------------------------------------------------------------- undo


def _with_version(obj: Mapping[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    version = (obj.get("metadata") or {}).get("resourceVersion")
    if version is not None:
        patch.setdefault("metadata", {})["resourceVersion"] = version
    return patch


def _owner_undo(
    record: ActionRecord, kind: str, name: str, snapshot: LiveObjects
) -> dict[str, dict[str, Any]]:
    """The undo of an action on a StatefulSet, Rollout or InferenceService, each through the
    owner's own mechanism (as react/actuators/workloads.py took it)."""
    target = f"{kind}/{name}"
    obj = snapshot.get((kind, name))
    if obj is None:
        raise UndoError(f"{target} is gone")
    if kind == "InferenceService":
        # The pin undone: canaryTrafficPercent back, the canary serving its share again.
        if not record.from_state.isdigit():
            raise UndoError(f"the canaryTrafficPercent it left, {record.from_state!r}, is not "
                            "a number")  # fmt: skip
        patch = {"spec": {"predictor": {"canaryTrafficPercent": int(record.from_state)}}}
        return {target: _with_version(obj, patch)}
    if kind == "Rollout" and record.action == "pause" and record.from_state == "rolling":
        return {target: _with_version(obj, {"spec": {"paused": False}})}  # argo rollouts resume
    if record.action != "rollback":
        raise UndoError(f"{record.action} on a {kind} cannot be undone")
    if kind == "Rollout" and aborted(record):
        # `kubectl argo rollouts retry rollout`: the abort lifted, the update goes on.
        if not (obj.get("status") or {}).get("abort"):
            raise UndoError(f"{target} is no longer aborted (a person retried or moved it on)")
        retry = _with_version(obj, {"status": {"abort": False}})
        return {str(PatchTarget(kind, name, "status")): retry}
    if not record.from_state.isdigit():
        raise UndoError(f"the revision it left, {record.from_state!r}, is not a number")
    # Rolled forward to the revision it left, through the owner's history (a StatefulSet's
    # ControllerRevisions under its partition, a Rollout's ReplicaSets: `undo --to-revision`).
    plan = workloads.propose("rollback", kind=kind, name=name, objects=snapshot,
                             to_revision=int(record.from_state))  # fmt: skip
    if plan.problem is not None or plan.idle is not None:
        raise UndoError(str(plan.problem or plan.idle))
    return dict(plan.patch)


def _undo_patch(
    record: ActionRecord, model: ObservedModel, snapshot: LiveObjects
) -> dict[str, dict[str, Any]]:
    first = record.target.split("+")[0]
    kind, name = object_key(first)
    if kind in workloads.OWNER_KINDS:
        return _owner_undo(record, kind, name, snapshot)
    if record.action == "rollback":
        deployment = snapshot.get(("Deployment", name))
        if deployment is None:
            raise UndoError(f"Deployment {name} is gone")
        replicasets = [o for (k, _), o in snapshot.items() if k == "ReplicaSet"]
        if not record.from_state.isdigit():
            raise UndoError(f"the revision it left, {record.from_state!r}, is not a number")
        # The revision left is found by its template (its ReplicaSet keeps the number).
        try:
            plan = plan_rollback(
                deployment=deployment, replicasets=replicasets, to_revision=int(record.from_state)
            )
        except RollbackError as exc:
            raise UndoError(str(exc)) from exc
        return {first: plan.patch}
    if record.action in ("scale", "pause"):
        obj = snapshot.get((kind, name))
        if obj is None:
            raise UndoError(f"{first} is gone")
        if record.action == "pause" and record.from_state == "rolling":  # a rollout resumed
            return {first: _with_version(obj, {"spec": {"paused": False}})}
        found = _PREFIXED.match(record.from_state)
        if found is None:
            raise UndoError(f"the state it left, {record.from_state!r}, is not a count")
        field, count = found.group(1) or "replicas", int(found.group(2))
        patch: dict[str, Any] = {"spec": {field: count}}
        if record.action == "pause":
            patch["metadata"] = {"annotations": {PAUSED_FROM_ANNOTATION: None}}
        return {first: _with_version(obj, patch)}
    if record.action == "shiftTraffic":
        found = _WEIGHTS.match(record.from_state)
        if found is None:
            raise UndoError(f"the split it left, {record.from_state!r}, cannot be read")
        weights = Weights(stable=int(found.group(1)), canary=int(found.group(2)))

        def routes(r: Any) -> bool:
            found = ROUTERS.get(r.router or "")
            return found is not None and record.target in (
                f"{found.kind}/{r.route}",
                f"Deployment/{r.stable}+Deployment/{r.canary}",
            )

        reaction = next(
            (r for r in model.spec.reactions if r.action == "shiftTraffic" and routes(r)), None
        )
        if reaction is None:
            raise UndoError("no shiftTraffic reaction names this route any more")
        router = ROUTERS[reaction.router or ""]
        stable, canary = reaction.stable or "", reaction.canary or ""
        route: Mapping[str, Any]
        if router.kind == "Deployment":
            items = [snapshot.get(("Deployment", n)) for n in (stable, canary)]
            if any(i is None for i in items):
                raise UndoError(f"Deployment {stable} or {canary} is gone")
            route = {"apiVersion": "v1", "kind": "List", "items": items}
        else:
            found_route = snapshot.get((router.kind, reaction.route or ""))
            if found_route is None:
                raise UndoError(f"{router.kind} {reaction.route} is gone")
            route = found_route
        try:
            return router.set_weights(route, stable=stable, canary=canary, weights=weights)
        except TrafficError as exc:
            raise UndoError(str(exc)) from exc
    raise UndoError(f"{record.action} cannot be undone")


def plan_undo(
    record: ActionRecord, *, model: ObservedModel, snapshot: LiveObjects, now: datetime
) -> ActionRecord:
    """The action that undoes `record` (Running), or a Failed record saying why it cannot."""
    rid = action_id(
        model_uid=model.uid or f"{model.namespace}/{model.name}",
        alert_key=f"undo:{record.id}",
        onset=record.at,
        action=record.action,
        target=record.target,
        from_state=record.to_state,
        to_state=record.from_state,
    )
    undo = ActionRecord(
        id=rid,
        action=record.action,
        target=record.target,
        from_state=record.to_state,
        to_state=record.from_state,
        reason=f"undo of {record.id}: its verification is NotFixed (guardrails.undoIfNotFixed)",
        result="Running",
        at=format_time(now),
        message="recorded; undoing it now",
        undoes=record.id,
    )
    try:
        patch = _undo_patch(record, model, snapshot)
    except UndoError as exc:
        return undo.settle("Failed", f"cannot undo {record.id}: {exc}")
    return replace(undo, patch=patch)
