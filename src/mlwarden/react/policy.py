"""The planner: active alerts, the spec's reactions and guardrails → the action records to write.

`plan_reactions` is pure: the operator shell reads the ObservedModel (spec, annotations,
`status.reactions` as history, `status.alerts`, the top suspect), the objects the reactions
act on (the snapshot, keyed by (kind, name)) and the time, and gets back the records to
upsert into `status.reactions` by id. Then, for each record whose result is Running (and
only those), it writes the record first, applies `record.patch` in order (for `alert`: the
Event and the condition), posts `webhook_payload` to `webhooks_for(...)`, writes the
record again as Succeeded or Failed (`record.settle`), and counts it in
`mlwarden_operator_reactions_total{action, result=record.metric_result}`.

The snapshot must hold the target Deployment and its ReplicaSets, the HPAs, the route or the
stable/canary Deployments a reaction names, and every object a record of the current
incident patched (to see whether a person changed it since).

One pass, in order:

1. In-flight records (Running: an operator stopped between writing and finishing one) are
   completed or reported, never repeated blindly: when every object already holds the patch,
   Succeeded; when none changed since it was planned (same `resourceVersion`), Running again
   to apply the very same patch; else Failed, saying what changed. A retrain is Running for
   as long as its Job or Workflow runs: it is returned as it is, for the shell to start or
   follow its run (`operator/runs.py`).
2. Each reaction whose alert type (and feature, when it names one) matches an active alert
   plans one action (a retrain acts on its source: `CronJob/NAME`, `ConfigMap/NAME` or
   `WorkflowTemplate/NAME`, `to` the kind it starts). Workload actions (rollback, scale,
   shiftTraffic, pause, retrain) of different reactions on the same target are one action
   (the first reaction in spec order sets its parameters). `alert` plans one action per
   matched alert (`from` is the alert, e.g. `FeatureDrift/amount`), whatever number of
   reactions ask for it; given `incident_of`
   (the operator's incidents, react/incidents.py), one per incident (`from` is its id).
3. The action's id is computed from the incident (the earliest matched alert: type, feature,
   onset) and the transition. An id recorded as Planned, Running, Succeeded or Failed is not
   planned again (a Planned one proceeds once approved); then the guardrails (see
   `guardrails`) in order: not ready, once per incident (for retrain then: a run from the
   same source still running, a diagnosis that names a plausible cause), revision moved,
   person changed, cooldown, hourly limit (a planning error or "nothing to do" counts as a
   guardrail too); one that says no gives a Skipped record with its reason.
   Then a dry run gives Succeeded with `dry_run` true (the patch is recorded, not applied;
   no approval needed); with `requireApproval` and no approval, Planned; else Running.
4. A Planned record whose action is no longer planned (the alert resolved, or the target
   changed so the transition differs) is Skipped.

A record identical to the one in history (same result and reason) is not returned again, so a
pass that changes nothing writes nothing.

`reason` says why a record has its result: for an action, the alerts (and the top suspect)
that called for it; for a Skipped one, what stopped it (the alerts are then in `message`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Final

from mlwarden.patches import apply_merge_patch, holds
from mlwarden.react import guardrails, revisions
from mlwarden.react.actions import ActionRecord, Result, action_id, held_by
from mlwarden.react.actuators import retrain, workloads
from mlwarden.react.actuators.pause import PauseError, plan_pause
from mlwarden.react.actuators.rollback import RollbackError, plan_rollback
from mlwarden.react.actuators.scale import HPA_KIND, ScaleError, plan_scale
from mlwarden.react.guardrails import WORKLOAD_ACTIONS, LiveObjects
from mlwarden.react.incidents import alert_key, by_onset, matches
from mlwarden.react.revisions import revision_of
from mlwarden.react.targets import object_key
from mlwarden.react.traffic.registry import ROUTERS
from mlwarden.react.traffic.router import TrafficError, next_step
from mlwarden.spec import ObservedModel, Reaction
from mlwarden.timestamps import format_time, parse_time

IncidentOf = Callable[[Mapping[str, Any]], str | None]
# The alert whose `modelRevision` names the candidate that shiftTraffic and pause aim at.
CANARY_ALERT: Final = "CanaryRegression"


# --------------------------------------------------------------------------- what to do


@dataclass(frozen=True)
class _Proposal:
    """One action as its actuator planned it, before any guardrail."""

    target: str
    from_state: str = ""
    to_state: str = ""
    patch: dict[str, dict[str, Any]] = field(default_factory=dict)
    problem: str | None = None  # the actuator cannot plan it: Skipped with this reason
    idle: str | None = None  # nothing to do: Skipped with this reason
    revision: str | None = None  # rollback: the Deployment's current revision
    same_model: tuple[int, ...] = ()  # rollback: the revisions running the current model


@dataclass
class _Candidate:
    action: str
    reaction: Reaction
    alerts: list[Mapping[str, Any]]
    proposal: _Proposal


@dataclass(frozen=True)
class _Draft:
    """What every record of one planned action shares; `record` adds the outcome."""

    id: str
    action: str
    proposal: _Proposal
    at: str
    dry_run: bool

    def record(self, result: Result, reason: str, message: str) -> ActionRecord:
        return ActionRecord(
            id=self.id,
            action=self.action,
            target=self.proposal.target,
            from_state=self.proposal.from_state,
            to_state=self.proposal.to_state,
            reason=reason,
            result=result,
            at=self.at,
            dry_run=self.dry_run,
            message=message,
            patch=self.proposal.patch,
        )


def _kind_of(snapshot: LiveObjects, kind: str) -> list[Mapping[str, Any]]:
    return [obj for (k, _), obj in snapshot.items() if k == kind]


def _history(snapshot: LiveObjects) -> list[Mapping[str, Any]]:
    """Every owner's revisions in the snapshot, as `revisions.resolve` reads them."""
    return revisions.history({k: _kind_of(snapshot, k) for k in revisions.HISTORY_KINDS})


def _missing(model: ObservedModel, kind: str, name: str | None) -> _Proposal:
    return _Proposal(
        target=f"{kind}/{name}",
        problem=f"{kind} {model.namespace}/{name} not found",
    )


def _applied(obj: Mapping[str, Any], patches: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """`obj` (or each item of a List) with the patches for it applied."""
    if obj.get("kind") == "List":
        items = [_applied(item, patches) for item in obj.get("items") or []]
        return {**obj, "items": items}
    key = f"{obj.get('kind', 'Deployment')}/{(obj.get('metadata') or {}).get('name')}"
    patched: dict[str, Any] = apply_merge_patch(obj, patches.get(key) or {})
    return patched


def _candidate_of(
    alert: Mapping[str, Any] | None, model: ObservedModel, snapshot: LiveObjects
) -> tuple[str, str | None] | None:
    """A CanaryRegression's candidate: (its revision, the Deployment owning its ReplicaSet)."""
    if alert is None or alert.get("type") != CANARY_ALERT or not alert.get("modelRevision"):
        return None
    revision = str(alert["modelRevision"])
    found = revisions.resolve(revision, _history(snapshot), deployments=revisions.owners(model))
    return revision, found.deployment


def _serving(rs: Mapping[str, Any]) -> int:
    spec, st = rs.get("spec") or {}, rs.get("status") or {}
    return max(int(spec.get("replicas") or 0), int(st.get("replicas") or 0))


def _pause_rollout(
    model: ObservedModel, snapshot: LiveObjects, name: str, revision: str
) -> _Proposal:
    """A candidate that is the target's own new ReplicaSet, mid-rollout: pause the rollout.

    As `kubectl rollout pause`: `spec.paused: true` stops the Deployment controller from
    moving further pods to the candidate (those already on it keep serving; resuming or
    rolling back is a person's call, or a rollback reaction's)."""
    target = f"Deployment/{name}"
    deployment = snapshot.get(("Deployment", name))
    if deployment is None:
        return _missing(model, "Deployment", name)
    label = revisions.label(revision, _kind_of(snapshot, "ReplicaSet"), deployments=[name])
    if (deployment.get("spec") or {}).get("paused"):
        return _Proposal(
            target=target, from_state="paused", to_state="paused",
            idle=f"the rollout of {target} to {label} is paused already",
        )  # fmt: skip
    owned = [
        rs
        for rs in _kind_of(snapshot, "ReplicaSet")
        if any(
            o.get("kind") == "Deployment" and o.get("name") == name
            for o in (rs.get("metadata") or {}).get("ownerReferences") or ()
        )
    ]
    others = [
        rs
        for rs in owned
        if ((rs.get("metadata") or {}).get("labels") or {}).get("pod-template-hash") != revision
        and _serving(rs) > 0
    ]
    if not others:
        return _Proposal(
            target=target,
            from_state="rolled out",
            to_state="paused",
            idle=(
                f"{label} of {target} is rolled out (no other revision serves): nothing to "
                "pause; a rollback reaction takes it back"
            ),
        )
    meta = deployment.get("metadata") or {}
    patch: dict[str, Any] = {"spec": {"paused": True}}
    if meta.get("resourceVersion") is not None:
        patch["metadata"] = {"resourceVersion": meta["resourceVersion"]}
    return _Proposal(target=target, from_state="rolling", to_state="paused", patch={target: patch})


def _propose(
    reaction: Reaction,
    model: ObservedModel,
    snapshot: LiveObjects,
    alert: Mapping[str, Any] | None = None,
) -> _Proposal:
    name = model.spec.target.deployment
    if model.spec.target.kind != "Deployment" and reaction.action in workloads.ACTIONS:
        # StatefulSet, Rollout, InferenceService: through the owner's own fields.
        other = workloads.propose(reaction.action, kind=model.spec.target.kind,
                                 name=model.spec.target.name, objects=snapshot,
                                 to_revision=reaction.to_revision)  # fmt: skip
        return _Proposal(**other._asdict())
    candidate = _candidate_of(alert, model, snapshot)
    if reaction.action == "rollback":
        deployment = snapshot.get(("Deployment", name))
        if deployment is None:
            return _missing(model, "Deployment", name)
        target = f"Deployment/{name}"
        try:
            plan = plan_rollback(
                deployment=deployment,
                replicasets=_kind_of(snapshot, "ReplicaSet"),
                to_revision=reaction.to_revision,
            )
        except RollbackError as exc:
            return _Proposal(target=target, problem=str(exc))
        revision = revision_of(deployment)
        return _Proposal(
            target=target,
            from_state=plan.from_revision,
            to_state=plan.to_revision,
            patch={target: plan.patch},
            revision=None if revision is None else str(revision),
            same_model=plan.same_model,
        )
    if reaction.action == "scale":
        deployment = snapshot.get(("Deployment", name))
        if deployment is None:
            return _missing(model, "Deployment", name)
        if reaction.max_replicas is None:
            return _Proposal(target=f"Deployment/{name}", problem="scale needs maxReplicas")
        try:
            scale = plan_scale(
                deployment=deployment,
                hpas=_kind_of(snapshot, HPA_KIND),
                min_replicas=reaction.min_replicas,
                max_replicas=reaction.max_replicas,
            )
        except ScaleError as exc:
            return _Proposal(target=f"Deployment/{name}", problem=str(exc))
        prefix = "" if scale.field == "replicas" else f"{scale.field} "
        if scale.patch is None:
            return _Proposal(
                target=scale.target,
                from_state=f"{prefix}{scale.from_replicas}",
                to_state=f"{prefix}{scale.to_replicas}",
                idle=(
                    f"{scale.target} is at {scale.field} {scale.from_replicas}: no step up within "
                    f"maxReplicas {reaction.max_replicas}"
                ),
            )
        return _Proposal(
            target=scale.target,
            from_state=f"{prefix}{scale.from_replicas}",
            to_state=f"{prefix}{scale.to_replicas}",
            patch={scale.target: scale.patch},
        )
    if reaction.action == "pause":
        canary = reaction.canary
        if candidate is not None:
            wanted, owner = candidate
            if owner is None and canary is None:
                return _Proposal(
                    target=f"Deployment/{name}",
                    problem=(
                        f"no ReplicaSet carries pod-template-hash {wanted} (the candidate "
                        "the alert names): cannot tell which Deployment to pause"
                    ),
                )
            if owner == name:  # the target's own new revision, mid-rollout
                return _pause_rollout(model, snapshot, name, wanted)
            if owner is not None and canary is not None and owner != canary:
                return _Proposal(
                    target=f"Deployment/{canary}",
                    problem=(
                        f"the alert names revision {wanted} of Deployment {owner}, not the "
                        f"canary {canary}: not pausing {canary}"
                    ),
                )
            canary = owner or canary
        deployment = snapshot.get(("Deployment", canary or ""))
        if deployment is None:
            return _missing(model, "Deployment", canary)
        target = f"Deployment/{canary}"
        try:
            pause = plan_pause(deployment=deployment, hpas=_kind_of(snapshot, HPA_KIND))
        except PauseError as exc:
            return _Proposal(target=target, problem=str(exc))
        if pause.patch is None:
            return _Proposal(
                target=target, from_state="0", to_state="0", idle=f"{target} is at 0 replicas"
            )
        return _Proposal(
            target=target,
            from_state=str(pause.from_replicas),
            to_state="0",
            patch={target: pause.patch},
        )
    if reaction.action == "shiftTraffic":
        if candidate is not None:
            wanted, owner = candidate
            router = ROUTERS.get(reaction.router or "")
            if router is not None and router.kind == "Deployment" and owner != reaction.canary:
                where = f"of Deployment {owner}" if owner else "(no ReplicaSet carries it)"
                return _Proposal(
                    target=f"Deployment/{reaction.stable}+Deployment/{reaction.canary}",
                    problem=(
                        f"the alert names revision {wanted} {where}, not the canary "
                        f"{reaction.canary}: its traffic is not this route's to shift"
                    ),
                )
        return _propose_shift(reaction, model, snapshot)
    if reaction.action == retrain.RETRAIN:
        return _propose_retrain(reaction, model, snapshot)
    return _Proposal(target="?", problem=f"unknown action {reaction.action!r}")


def _propose_retrain(reaction: Reaction, model: ObservedModel, snapshot: LiveObjects) -> _Proposal:
    """Retrain acts on its source (cooldown, once per incident); the shell starts the run.

    CronJobs and ConfigMaps are in the snapshot (watched); a WorkflowTemplate is read when
    the run is started (operator/runs.py).
    """
    kind, name = retrain.source_of(reaction)
    proposal = _Proposal(target=f"{kind}/{name}", to_state=retrain.RUN_KIND[kind])
    if kind in ("CronJob", "ConfigMap") and (kind, name) not in snapshot:
        return replace(proposal, problem=_missing(model, kind, name).problem)
    return proposal


def _propose_shift(reaction: Reaction, model: ObservedModel, snapshot: LiveObjects) -> _Proposal:
    router = ROUTERS.get(reaction.router or "")
    stable, canary = reaction.stable or "", reaction.canary or ""
    if router is None:
        return _Proposal(target="?", problem=f"unknown router {reaction.router!r}")
    obj: Mapping[str, Any]
    if router.kind == "Deployment":
        target = f"Deployment/{stable}+Deployment/{canary}"
        items = []
        for backend in (stable, canary):
            found = snapshot.get(("Deployment", backend))
            if found is None:
                return _Proposal(
                    target=target, problem=_missing(model, "Deployment", backend).problem
                )
            items.append(found)
        obj = {"apiVersion": "v1", "kind": "List", "items": items}
    else:
        target = f"{router.kind}/{reaction.route}"
        found = snapshot.get((router.kind, reaction.route or ""))
        if found is None:
            return _Proposal(
                target=target, problem=_missing(model, router.kind, reaction.route).problem
            )
        obj = found
    try:
        current = router.get_weights(obj, stable=stable, canary=canary)
        wanted = next_step(current, reaction.step_percent)
        if wanted == current:
            return _Proposal(
                target=target,
                from_state=str(current),
                to_state=str(current),
                idle=f"{target}: all traffic is on {stable!r} already",
            )
        patch = router.set_weights(obj, stable=stable, canary=canary, weights=wanted)
        after = router.get_weights(_applied(obj, patch), stable=stable, canary=canary)
    except TrafficError as exc:
        return _Proposal(target=target, problem=str(exc))
    return _Proposal(target=target, from_state=str(current), to_state=str(after), patch=patch)


def _candidates(
    model: ObservedModel,
    alerts: Sequence[Mapping[str, Any]],
    snapshot: LiveObjects,
    incident_of: IncidentOf | None = None,
) -> list[_Candidate]:
    out: list[_Candidate] = []
    notified: dict[str, _Candidate] = {}
    workload: dict[tuple[str, str], _Candidate] = {}
    for reaction in model.spec.reactions:
        matched = sorted((a for a in alerts if matches(reaction, a)), key=by_onset)
        if not matched:
            continue
        if reaction.action == "alert":
            for alert in matched:
                # One notification per incident (react/incidents.py) when the shell groups them.
                key = (incident_of(alert) if incident_of else None) or alert_key(alert)
                if key in notified:
                    if alert not in notified[key].alerts:
                        notified[key].alerts.append(alert)
                    continue
                to = "Event+webhook" if _has_webhook(model, alert) else "Event"
                proposal = _Proposal(
                    target=f"ObservedModel/{model.name}", from_state=key, to_state=to
                )
                notified[key] = _Candidate("alert", reaction, [alert], proposal)
                out.append(notified[key])
            continue
        proposal = _propose(reaction, model, snapshot, matched[0])
        same = workload.get((reaction.action, proposal.target))
        if same is not None:
            known = {alert_key(a) for a in same.alerts}
            same.alerts.extend(a for a in matched if alert_key(a) not in known)
            same.alerts.sort(key=by_onset)
            continue
        candidate = _Candidate(reaction.action, reaction, list(matched), proposal)
        workload[(reaction.action, proposal.target)] = candidate
        out.append(candidate)
    return out


def _has_webhook(model: ObservedModel, alert: Mapping[str, Any]) -> bool:
    return any(
        r.action == "alert" and r.webhook and matches(r, alert) for r in model.spec.reactions
    )


def _planned_by(model: ObservedModel, record: ActionRecord) -> list[Reaction]:
    """The reactions that call for `record`'s action: for `alert`, those matching its alert."""
    if record.action == "alert":
        kind, _, feature = record.from_state.partition("/")
        alert = {"type": kind, "feature": feature or None}
        return [r for r in model.spec.reactions if r.action == "alert" and matches(r, alert)]
    return [r for r in model.spec.reactions if r.action == record.action]


def webhooks_for(*, model: ObservedModel, record: ActionRecord) -> tuple[str, ...]:
    """The webhook URLs to post a record to: the `webhook` of each reaction calling for it.

    For `alert`, every alert reaction matching its alert; for a workload action, every
    reaction with that action that names a webhook (people hear of a rollback too). URLs are
    secrets more often than not: they are read from the spec, never recorded.
    """
    urls = (r.webhook for r in _planned_by(model, record))
    return tuple(dict.fromkeys(u for u in urls if u))


def alerts_for(
    *, model: ObservedModel, record: ActionRecord, alerts: Sequence[Mapping[str, Any]]
) -> list[Mapping[str, Any]]:
    """The active alerts a record is about (for its Event and webhook payload)."""
    if record.action == "alert":
        return [a for a in alerts if alert_key(a) == record.from_state]
    reactions = _planned_by(model, record)
    return [a for a in alerts if any(matches(r, a) for r in reactions)]


# --------------------------------------------------------------------------- words


def _describe(alert: Mapping[str, Any], names: Mapping[str, str] | None = None) -> str:
    """`PredictionDrift since ... (model revision 7 (fraud:1.4))`; `names`: hash → label."""
    names = names or {}
    text = str(alert.get("type", "?"))
    if alert.get("feature"):
        text += f" on {alert['feature']}"
    if alert.get("since"):
        text += f" since {alert['since']}"
    revision = alert.get("modelRevision")
    if revision:
        shown = names.get(str(revision))
        text += f" (model {shown})" if shown else f" (model revision {revision})"
    return text


def _trigger(
    alerts: Sequence[Mapping[str, Any]],
    top: Mapping[str, Any] | None,
    snapshot: LiveObjects | None = None,
    deployments: Sequence[str] = (),
) -> str:
    replicasets = _history(snapshot or {})
    names = {
        str(a["modelRevision"]): revisions.resolve(
            str(a["modelRevision"]), replicasets, deployments=deployments
        ).label
        for a in alerts
        if a.get("modelRevision")
    }
    text = "; ".join(_describe(a, names) for a in alerts)
    if top:
        text += f"; top suspect {top.get('kind', '?')}/{top.get('name', '?')}"
    return text


# --------------------------------------------------------------------------- in flight


def _version(obj: Mapping[str, Any] | None) -> Any:
    return None if obj is None else (obj.get("metadata") or {}).get("resourceVersion")


def _resume(record: ActionRecord, snapshot: LiveObjects) -> ActionRecord:
    """An action that was Running when the operator stopped: completed or reported."""
    if record.dry_run:  # never written as Running; should one be, nothing was applied
        return record.settle("Succeeded", "dry run: planned and recorded, nothing applied")
    if record.action == "alert":
        return record.settle(
            "Failed",
            "interrupted by an operator restart; the notification may not have been sent and "
            "is not repeated",
        )
    if record.action == retrain.RETRAIN:
        return record  # Running while its run runs: the shell follows it (operator/runs.py)
    if not record.patch:
        return record.settle(
            "Failed",
            "interrupted by an operator restart, with no patch recorded to check it against; "
            "not repeated (check the target)",
        )
    changed: list[str] = []
    resumed: dict[str, dict[str, Any]] = {}
    done = True
    for obj, patch in record.patch.items():
        live = snapshot.get(object_key(obj))
        held = holds(live, patch)
        planned_at = (patch.get("metadata") or {}).get("resourceVersion")
        if held is None:
            # Applied already (say, the first of two): applying it again is a no-op, against
            # the version the object has now.
            resumed[obj] = _with_version(patch, _version(live))
        elif planned_at is not None and planned_at == _version(live):
            resumed[obj] = dict(patch)
            done = False
        elif planned_at is None:
            changed.append(f"{obj}: {held}, and no resourceVersion was recorded to tell why")
        else:
            changed.append(f"{obj}: {held}")
    if changed:
        return record.settle(
            "Failed",
            "interrupted by an operator restart, and changed since it was planned ("
            + "; ".join(changed)
            + "); not repeated",
        )
    if done:
        settled = record.settle("Succeeded", "completed before an operator restart")
        return replace(settled, held=held_by(record, lambda obj: snapshot.get(object_key(obj))))
    return replace(
        record,
        patch=resumed,
        message="resumed after an operator restart: unchanged since it was planned",
    )


def _with_version(patch: Mapping[str, Any], version: Any) -> dict[str, Any]:
    out = dict(patch)
    meta = dict(out.get("metadata") or {})
    if version is None:
        meta.pop("resourceVersion", None)
    else:
        meta["resourceVersion"] = version
    if meta:
        out["metadata"] = meta
    else:
        out.pop("metadata", None)
    return out


# --------------------------------------------------------------------------- after a conflict


def replan(*, model: ObservedModel, record: ActionRecord, snapshot: LiveObjects) -> ActionRecord:
    """A Running record whose patch met 409 Conflict, planned again on the objects as they are.

    The API refused the patch because its `metadata.resourceVersion` precondition was stale:
    the object was written meanwhile (an HPA's or the Deployment controller's status write,
    every few seconds). `snapshot` holds the objects re-read since. When the actuator plans
    the same transition (target, from → to) again, the record comes back Running with the new
    patch (and the fresh precondition), under the same id: the action is still taken once.
    When the action is no longer what the record says (the target moved on, nothing to do, a
    problem), it comes back Skipped saying why; a later pass plans afresh.
    """
    why = "re-planned after a conflict (the object was written meanwhile)"
    for reaction in _planned_by(model, record):
        if record.action not in WORKLOAD_ACTIONS:
            break
        proposal = _propose(reaction, model, snapshot)
        if proposal.target != record.target:
            continue
        stop = proposal.problem or proposal.idle
        if stop is None and (proposal.from_state, proposal.to_state) != (
            record.from_state,
            record.to_state,
        ):
            stop = (
                f"{record.target} is now {proposal.from_state} → {proposal.to_state}, not "
                f"{record.from_state} → {record.to_state} as recorded"
            )
        if stop is not None:
            return replace(
                record,
                result="Skipped",
                reason=f"{why}: no longer applicable: {stop}",
                message=record.reason,
            )
        return replace(record, patch=proposal.patch, message=why)
    return replace(
        record,
        result="Skipped",
        reason=f"{why}: no reaction calls for {record.action} on {record.target} any more",
        message=record.reason,
    )


# --------------------------------------------------------------------------- the planner


def plan_reactions(
    *,
    model: ObservedModel,
    alerts: Sequence[Mapping[str, Any]],
    diagnosis_top: Mapping[str, Any] | None,
    snapshot: LiveObjects,
    history: Sequence[ActionRecord],
    annotations: Mapping[str, str],
    detector_ready: bool,
    warming_up: bool,
    now: datetime,
    incident_of: IncidentOf | None = None,
) -> list[ActionRecord]:
    """The records to upsert into `status.reactions` (by id); act on the Running ones.

    `incident_of(alert)`: the id of the incident an alert belongs to; with it, `alert` plans
    one record per incident (`from` is the incident's id) instead of one per alert.
    """
    guard = model.spec.guardrails
    dry_message = guardrails.dry_run(guardrails=guard)
    at = format_time(now)
    uid = model.uid or f"{model.namespace}/{model.name}"
    out: list[ActionRecord] = []
    latest: dict[str, ActionRecord] = {r.id: r for r in history}

    def emit(record: ActionRecord) -> None:
        prev = latest.get(record.id)
        if (
            prev is not None
            and record.result in ("Skipped", "Planned")
            and (prev.result, prev.reason, prev.message)
            == (record.result, record.reason, record.message)
        ):
            return
        out.append(record)
        # One entry per id, the newest last: guardrails count an action once, not per update.
        latest.pop(record.id, None)
        latest[record.id] = record

    # 1. in flight before a restart
    for record in list(latest.values()):
        if record.result == "Running":
            emit(_resume(record, snapshot))

    # 2-3. what the alerts call for
    planned_ids: set[str] = set()
    for candidate in _candidates(model, alerts, snapshot, incident_of):
        proposal = candidate.proposal
        primary = candidate.alerts[0]
        onset = parse_time(primary.get("since"))
        workload = candidate.action in WORKLOAD_ACTIONS
        dry = workload and dry_message is not None
        rid = action_id(
            model_uid=uid,
            alert_key=alert_key(primary),
            onset=str(primary.get("since") or ""),
            action=candidate.action,
            target=proposal.target,
            from_state=proposal.from_state,
            to_state=proposal.to_state,
            dry_run=dry,
        )
        planned_ids.add(rid)
        prev = latest.get(rid)
        if (
            prev is not None
            and prev.result != "Planned"
            and guardrails.exactly_once(action_id=rid, history=list(latest.values()))
        ):
            continue
        working = list(latest.values())
        trigger = _trigger(candidate.alerts, diagnosis_top, snapshot, revisions.owners(model))
        draft = _Draft(
            id=rid,
            action=candidate.action,
            proposal=proposal,
            at=prev.at if prev is not None and prev.result == "Planned" else at,
            dry_run=dry,
        )

        objects = tuple(proposal.patch) or (proposal.target,)
        stop = guardrails.not_ready(detector_ready=detector_ready, warming_up=warming_up)
        stop = stop or proposal.problem or proposal.idle
        if workload:
            stop = stop or guardrails.once_per_incident(
                action=candidate.action,
                objects=objects,
                onset=onset,
                history=working,
                dry_run=dry,
            )
            if candidate.action == retrain.RETRAIN:
                stop = stop or retrain.still_running(
                    target=proposal.target, history=working, dry_run=dry
                )
                stop = stop or retrain.blames_a_change(top=diagnosis_top)
            if candidate.action == "rollback":
                named = _text(primary.get("modelRevision"))
                replicasets = _history(snapshot)
                deployment = [model.spec.target.name]
                stop = stop or guardrails.revision_moved(
                    alert_revision=revisions.deployment_revision(
                        named, replicasets, deployments=deployment
                    ),
                    current_revision=proposal.revision,
                    shown=revisions.long_label(named, replicasets, deployments=deployment),
                )
                stop = stop or guardrails.blames_elsewhere(
                    top=diagnosis_top, target=proposal.target, same_model=proposal.same_model
                )
            stop = stop or guardrails.person_changed(
                objects=objects, onset=onset, history=working, snapshot=snapshot
            )
            stop = stop or guardrails.cooldown(
                objects=objects,
                history=working,
                now=now,
                cooldown_seconds=guard.cooldown_seconds,
                dry_run=dry,
            )
            stop = stop or guardrails.rate_limit(
                history=working, now=now, max_per_hour=guard.max_actions_per_hour, dry_run=dry
            )
        if stop is not None:
            emit(draft.record("Skipped", stop, trigger))
            continue
        if dry and dry_message is not None:
            emit(draft.record("Succeeded", trigger, dry_message))
            continue
        if workload:
            waiting = guardrails.approval(
                action_id=rid,
                annotations=annotations,
                required=guard.require_approval,
                model_name=model.name,
            )
            if waiting is not None:
                emit(draft.record("Planned", trigger, waiting))
                continue
        emit(draft.record("Running", trigger, "recorded; taking it now"))

    # 4. waiting for approval, and no longer called for
    for waiting_record in list(latest.values()):
        if waiting_record.result == "Planned" and waiting_record.id not in planned_ids:
            emit(
                replace(
                    waiting_record,
                    result="Skipped",
                    reason=(
                        "no longer called for: the alert resolved or the target changed before "
                        "it was approved"
                    ),
                    message=waiting_record.reason,
                )
            )
    return out


def _text(value: Any) -> str | None:
    return None if value is None else str(value)
