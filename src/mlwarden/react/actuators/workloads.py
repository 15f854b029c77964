"""Rollback and pause of targets that are not Deployments, each through its owner's own fields.

- StatefulSet: its history is its ControllerRevisions (`revision`, and the pod template in
  `data.spec.template`, as the StatefulSet controller writes them); a rollback restores the
  previous revision's template into `spec.template`, as `kubectl rollout undo statefulset`
  does, the sidecar kept (`rollback.with_sidecar`). `spec.updateStrategy` (a rolling-update
  `partition`) is never touched: the controller rolls the restored template out under it.
  Pause: a StatefulSet has no pause field; refused, saying so.
- Argo Rollout: its history is its ReplicaSets (`rollouts-pod-template-hash`, the revision in
  `rollout.argoproj.io/revision`). A rollback while a canary or a blue-green preview is in
  progress (status.currentPodHash differs from status.stableRS) aborts it, as
  `kubectl argo rollouts abort` does: the merge patch `{"status": {"abort": true}}` on the
  status subresource (patch key `Rollout/NAME/status`, `react.targets`), with the Rollout's
  resourceVersion as its precondition; Argo then sends all traffic back to the stable
  ReplicaSet. Once a
  revision is fully promoted, a rollback puts the previous revision's template back into
  `spec.template`, as `kubectl argo rollouts undo` does. Pause: `spec.paused: true`, as
  `kubectl argo rollouts pause`. For a canary, prefer failing its analysis: an
  AnalysisTemplate that asks the detector's `GET /v1/canary/{revision}` (see
  examples/argo-rollouts-analysistemplate.yaml) lets Argo abort by itself.
- KServe InferenceService: rollback, pause and shiftTraffic all pin the traffic to the last
  rolled-out revision with `spec.predictor.canaryTrafficPercent: 0`, as KServe's canary
  rollout docs describe (the canary keeps running and can be promoted again by raising it).

Pure: the objects in, `Plan` (the fields of the policy's proposal) out.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any, Final, NamedTuple

from mlwarden.names import ROLLOUTS_POD_TEMPLATE_HASH
from mlwarden.react.actuators.rollback import RollbackError, plan_rollback
from mlwarden.react.revisions import REVISION_ANNOTATION, ROLLOUT_REVISION
from mlwarden.react.targets import PatchTarget

ACTIONS: Final = ("rollback", "pause", "shiftTraffic")
# The target kinds whose actions go through here (a Deployment's through the other actuators).
OWNER_KINDS: Final = ("StatefulSet", "Rollout", "InferenceService")


class Plan(NamedTuple):
    """What the policy proposes: the patches by `Kind/name`, the transition, or why not."""

    target: str
    from_state: str = ""
    to_state: str = ""
    patch: dict[str, dict[str, Any]] = {}
    problem: str | None = None
    idle: str | None = None
    revision: str | None = None
    same_model: tuple[int, ...] = ()


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def _owned(objs: Sequence[Mapping[str, Any]], owner: Mapping[str, Any], kind: str) -> list[Any]:
    uid, name = _meta(owner).get("uid"), _meta(owner).get("name")
    out = []
    for obj in objs:
        for ref in _meta(obj).get("ownerReferences") or []:
            if ref.get("kind") == kind and (
                (uid and ref.get("uid") == uid) or (not uid and ref.get("name") == name)
            ):
                out.append(obj)
                break
    return out


def _as_history(owner: Mapping[str, Any], revisions: list[tuple[int, Any]]) -> list[Any]:
    """(revision, pod template) pairs as the ReplicaSets `plan_rollback` reads."""
    ref = {"kind": "Deployment", "name": _meta(owner).get("name"), "uid": _meta(owner).get("uid")}
    return [
        {
            "metadata": {"annotations": {REVISION_ANNOTATION: str(n)}, "ownerReferences": [ref]},
            "spec": {"template": template},
        }
        for n, template in revisions
    ]


def _view(owner: Mapping[str, Any], current: int | None, paused: bool = False) -> dict[str, Any]:
    """The owner as the Deployment `plan_rollback` reads: its template, revision, version."""
    meta = dict(_meta(owner))
    annotations = {REVISION_ANNOTATION: str(current)} if current is not None else {}
    return {
        "metadata": {**meta, "annotations": annotations},
        "spec": {"template": (owner.get("spec") or {}).get("template") or {}, "paused": paused},
    }


def statefulset_rollback(
    sts: Mapping[str, Any], revisions: Sequence[Mapping[str, Any]], to_revision: int | None
) -> Plan:
    """The previous ControllerRevision's template back into spec.template, sidecar kept."""
    name = str(_meta(sts).get("name", "?"))
    target = f"StatefulSet/{name}"
    history: list[tuple[int, Any]] = []
    by_name: dict[str, int] = {}
    for cr in _owned(revisions, sts, "StatefulSet"):
        template = copy.deepcopy(((cr.get("data") or {}).get("spec") or {}).get("template"))
        if not isinstance(template, dict) or cr.get("revision") is None:
            continue
        template.pop("$patch", None)  # the strategic-merge directive the controller writes
        history.append((int(cr["revision"]), template))
        by_name[str(_meta(cr).get("name"))] = int(cr["revision"])
    status = sts.get("status") or {}
    current = by_name.get(str(status.get("updateRevision") or status.get("currentRevision")))
    try:
        plan = plan_rollback(
            deployment=_view(sts, current),
            replicasets=_as_history(sts, history),
            to_revision=to_revision,
        )
    except RollbackError as exc:
        return Plan(target=target, problem=str(exc).replace("Deployment ", "StatefulSet ", 1))
    return Plan(
        target=target,
        from_state=plan.from_revision,
        to_state=plan.to_revision,
        patch={target: plan.patch},
        revision=None if current is None else str(current),
        same_model=plan.same_model,
    )


def _canary_in_progress(rollout: Mapping[str, Any]) -> bool:
    status = rollout.get("status") or {}
    pod_hash, stable = status.get("currentPodHash"), status.get("stableRS")
    return bool(pod_hash and stable and pod_hash != stable)


def rollout_rollback(
    rollout: Mapping[str, Any], replicasets: Sequence[Mapping[str, Any]], to_revision: int | None
) -> Plan:
    """Abort a canary in progress; else the previous ReplicaSet's template (`undo`)."""
    name = str(_meta(rollout).get("name", "?"))
    target = f"Rollout/{name}"
    status = rollout.get("status") or {}
    if _canary_in_progress(rollout) and to_revision is None:
        if status.get("abort"):
            return Plan(
                target=target,
                from_state="aborted",
                to_state="aborted",
                idle=f"{target}: the update to {status.get('currentPodHash')} is aborted already;"
                f" {status.get('stableRS')} serves",
            )
        abort: dict[str, Any] = {"status": {"abort": True}}
        version = _meta(rollout).get("resourceVersion")
        if version is not None:  # a precondition: a restarted operator re-applies it or not
            abort["metadata"] = {"resourceVersion": version}
        return Plan(
            target=target,
            from_state=str(status.get("currentPodHash")),
            to_state=str(status.get("stableRS")),
            patch={str(PatchTarget("Rollout", name, "status")): abort},
        )
    ref = (rollout.get("spec") or {}).get("workloadRef")
    if ref:
        # Argo refuses spec.template next to spec.workloadRef; the template is the referenced
        # Deployment's, which its owner (a GitOps tool, a pipeline) writes, not us.
        return Plan(
            target=target,
            problem=f"{target} takes its pod template from {ref.get('kind', 'Deployment')}/"
            f"{ref.get('name', '?')} (spec.workloadRef): a promoted revision is rolled back by "
            "restoring that template where it is declared, not by mlwarden; an update in "
            "progress would be aborted",
        )
    history: list[tuple[int, Any]] = []
    for rs in _owned(replicasets, rollout, "Rollout"):
        value = (_meta(rs).get("annotations") or {}).get(ROLLOUT_REVISION)
        template = copy.deepcopy((rs.get("spec") or {}).get("template") or {})
        labels = (template.get("metadata") or {}).get("labels")
        if isinstance(labels, dict):
            labels.pop(ROLLOUTS_POD_TEMPLATE_HASH, None)
        if value is not None and str(value).isdigit():
            history.append((int(value), template))
    value = (_meta(rollout).get("annotations") or {}).get(ROLLOUT_REVISION)
    current = int(value) if value is not None and str(value).isdigit() else None
    paused = bool((rollout.get("spec") or {}).get("paused"))
    try:
        plan = plan_rollback(
            deployment=_view(rollout, current, paused),
            replicasets=_as_history(rollout, history),
            to_revision=to_revision,
        )
    except RollbackError as exc:
        text = str(exc).replace("Deployment ", "Rollout ", 1)
        text = text.replace("kubectl rollout resume deployment/", "kubectl argo rollouts resume ")
        return Plan(target=target, problem=text)
    return Plan(
        target=target,
        from_state=plan.from_revision,
        to_state=plan.to_revision,
        patch={target: plan.patch},
        revision=None if current is None else str(current),
        same_model=plan.same_model,
    )


def rollout_pause(rollout: Mapping[str, Any]) -> Plan:
    """`spec.paused: true`, as `kubectl argo rollouts pause`."""
    target = f"Rollout/{_meta(rollout).get('name', '?')}"
    if (rollout.get("spec") or {}).get("paused"):
        return Plan(target=target, from_state="paused", to_state="paused",
                    idle=f"{target} is paused already")  # fmt: skip
    return Plan(target=target, from_state="rolling", to_state="paused",
                patch={target: {"spec": {"paused": True}}})  # fmt: skip


def inference_service_pin(isvc: Mapping[str, Any]) -> Plan:
    """All traffic to the last rolled-out revision: predictor.canaryTrafficPercent 0."""
    target = f"InferenceService/{_meta(isvc).get('name', '?')}"
    predictor = (isvc.get("spec") or {}).get("predictor") or {}
    percent = predictor.get("canaryTrafficPercent")
    if percent is None or int(percent) == 0:
        what = "no canary (canaryTrafficPercent unset)" if percent is None else "0% on the canary"
        idle = f"{target}: {what}; the rolled-out revision serves everything"
        return Plan(target=target, from_state=str(percent or 0), to_state="0", idle=idle)
    patch: dict[str, Any] = {"spec": {"predictor": {"canaryTrafficPercent": 0}}}
    version = _meta(isvc).get("resourceVersion")
    if version is not None:
        patch["metadata"] = {"resourceVersion": version}
    return Plan(target=target, from_state=str(percent), to_state="0", patch={target: patch})


def propose(
    action: str,
    *,
    kind: str,
    name: str,
    objects: Mapping[tuple[str, str], Mapping[str, Any]],
    to_revision: int | None = None,
) -> Plan:
    """The plan for `action` on the target `kind`/`name`, from the snapshot's objects."""
    target = f"{kind}/{name}"
    obj = objects.get((kind, name))
    if obj is None:
        return Plan(target=target, problem=f"{target} not found")

    def of_kind(k: str) -> list[Mapping[str, Any]]:
        return [o for (kk, _), o in sorted(objects.items()) if kk == k]

    if kind == "InferenceService":
        return inference_service_pin(obj)
    if action == "shiftTraffic":
        return Plan(
            target=target,
            problem=f"shiftTraffic moves route weights between two Deployments; for a {kind} "
            "use rollback (a Rollout's abort sends traffic back to its stable ReplicaSet) or "
            "the Rollout's own analysis (not built for this kind)",
        )
    if kind == "StatefulSet":
        if action == "pause":
            return Plan(
                target=target,
                problem=f"{target}: a StatefulSet has no pause; its rolling-update partition is "
                "its owner's to set (mlwarden does not change it). Use rollback",
            )
        return statefulset_rollback(obj, of_kind("ControllerRevision"), to_revision)
    if kind == "Rollout":
        if action == "pause":
            return rollout_pause(obj)
        return rollout_rollback(obj, of_kind("ReplicaSet"), to_revision)
    return Plan(target=target, problem=f"{action} is not built for kind {kind}")
