"""The owners of the other target kinds, imitated for the operator tests (opt-in).

`emulate_owners()` declares the CRDs of Argo Rollouts (`argoproj.io/v1alpha1` Rollout, with
its status subresource) and KServe (`serving.kserve.io/v1beta1` InferenceService), and turns
on, after every API write to a StatefulSet or a Rollout:

- the StatefulSet controller (kube-controller-manager's statefulset controller): a
  ControllerRevision per pod template (named NAME-HASH, `revision` the next number, or an
  old template's revision raised when it comes back as after `kubectl rollout undo`, the
  template in `data.spec.template` with `$patch: replace`, the `controller-revision-hash`
  label), and the status a rolling update reaches at once: `updateRevision` the new one,
  `updatedReplicas` = replicas - partition; `currentRevision` moves to it only when the
  partition is 0 (pods with an ordinal below the partition keep the old template);
- Argo Rollouts' controller: a ReplicaSet per pod template (NAME-HASH, the
  `rollouts-pod-template-hash` label on it and its template, `rollout.argoproj.io/revision`
  the next number, also written on the Rollout), `status.currentPodHash` the new hash; with
  canary steps and a stable ReplicaSet already there, the update stays a canary in
  progress (`phase: Paused` at its pause step, `stableRS` the old hash) until the test calls
  `promote_rollout` (as `kubectl argo rollouts promote --full`); without steps it is promoted
  at once. `status.abort: true` (`kubectl argo rollouts abort`) makes it `Degraded` with
  `RolloutAborted`, the stable ReplicaSet serving; `spec.paused` makes it `Paused`.
  A Rollout with `spec.workloadRef` (a Deployment, no `spec.template`) takes the
  Deployment's `spec.template` as its own, as Argo's "Migrating to Rollouts" documents it,
  and rolls it out the same way, again after every write to that Deployment; it records
  the Deployment's generation it read in the annotation `rollout.argoproj.io/
  workload-generation` and `status.workloadObservedGeneration`. `workloadRef.scaleDown`:
  `never` (the default) leaves the Deployment alone; `onsuccess` scales it to 0 (its
  `spec.replicas`, a new generation, which Argo observes as well) once the Rollout is
  healthy; `progressively` is imitated as `onsuccess` (its end state: the tests here look at
  a finished rollout, not at the steps of the scale-down). The scaled Deployment's status
  says 0 replicas at once (its ReplicaSets are not scaled here); a missing Deployment
  leaves the Rollout as it was (Argo reports InvalidSpec; not imitated).

KServe's controller is not imitated by `emulate_owners()` alone (the InferenceService is
stored as written: the operator only writes its spec, which those tests read back).
`emulate_kserve()` adds what KServe's canary rollout does with the predictor (its "Canary
Rollout Strategy" docs), after every write of an InferenceService:

- a change of `spec.predictor` other than `canaryTrafficPercent` is a new Knative revision,
  `NAME-predictor-0000N` (N the next number), `status.components.predictor.latestReadyRevision`;
- with `canaryTrafficPercent` set, that revision is the canary: `latestRolledoutRevision`
  stays the last one rolled out with 100% (the `default` endpoint), and `traffic` splits
  100 - percent / percent between them (a canaryTrafficPercent change alone only moves the
  split, no new revision); without it (or at 100) the latest ready revision is promoted:
  `latestRolledoutRevision` becomes it and `previousRolledoutRevision` the one before.

The controllers run after every API write to a StatefulSet, a Rollout or a Deployment (a
referenced Deployment's template change starts a rollout of the Rollout). Their writes go to
the store directly and reach the operator's watches as watch events (ADDED / MODIFIED with a
new resourceVersion), as a controller's writes do.
"""

from __future__ import annotations

import copy
from typing import Any

from kmock import ResourceInfo
from kmock._internal import enums

from mlwarden.demo.cluster import template_hash

ROLLOUTS = "argoproj.io/v1alpha1/rollouts"
INFERENCESERVICES = "serving.kserve.io/v1beta1/inferenceservices"
STATEFULSETS = "apps/v1/statefulsets"
CONTROLLERREVISIONS = "apps/v1/controllerrevisions"
REPLICASETS = "apps/v1/replicasets"
DEPLOYMENTS = "apps/v1/deployments"
ROLLOUT_REVISION = "rollout.argoproj.io/revision"
WORKLOAD_GENERATION = "rollout.argoproj.io/workload-generation"
ROLLOUT_HASH = "rollouts-pod-template-hash"
CR_HASH = "controller-revision-hash"
_WATCHED = (
    STATEFULSETS, CONTROLLERREVISIONS, REPLICASETS, ROLLOUTS, DEPLOYMENTS, INFERENCESERVICES
)  # fmt: skip


class OwnerControllers:
    """Opt-in StatefulSet and Argo Rollouts controllers; the two CRDs (see above)."""

    owner_controllers: bool = False
    kserve_controller: bool = False
    objects: Any
    resources: Any
    _versions: Any

    def emulate_owners(self) -> None:
        self.owner_controllers = True
        self.resources[ROLLOUTS] = ResourceInfo(
            kind="Rollout", singular="rollout", namespaced=True,
            verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
            subresources={"status"}, shortnames={"ro"},
        )  # fmt: skip
        self.resources[INFERENCESERVICES] = ResourceInfo(
            kind="InferenceService", singular="inferenceservice", namespaced=True,
            verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
            subresources={"status"}, shortnames={"isvc"},
        )  # fmt: skip

    async def _handle(self, request: Any) -> Any:
        response = await super()._handle(request)  # type: ignore[misc]
        if (
            self.owner_controllers
            and request.resource is not None
            and str(request.resource.plural) in self._controlled()
            and request.action in (enums.action.CREATE, enums.action.UPDATE)
        ):
            before = self._snapshot()
            self.run_owner_controllers()
            await self._announce_owned(before)
        return response

    # ---------------------------------------------------------------- store helpers

    def _all(self, resource: str) -> list[tuple[Any, Any]]:
        out = []
        for key in list(self.objects):
            if str(key[0].plural) != resource.rsplit("/", 1)[1]:
                continue
            obj = self.objects[key]
            if not obj.deleted:
                out.append((key, obj))
        return out

    def _snapshot(self) -> dict[Any, Any]:
        return {key: copy.deepcopy(o.raw) for r in _WATCHED for key, o in self._all(r)}

    async def _announce_owned(self, before: dict[Any, Any]) -> None:
        for resource in _WATCHED:
            for key, obj in self._all(resource):
                old = before.get(key)
                if old is not None and old == obj.raw:
                    continue
                obj.patch({"metadata": {"resourceVersion": str(next(self._versions))}})
                event = {"type": "ADDED" if old is None else "MODIFIED",
                         "object": copy.deepcopy(obj.raw)}  # fmt: skip
                await self._buses[key[0]].put(event)  # type: ignore[attr-defined]

    def _controlled(self) -> tuple[str, ...]:
        kserve = ("inferenceservices",) if self.kserve_controller else ()
        return ("statefulsets", "rollouts", "deployments", *kserve)

    def run_owner_controllers(self) -> None:
        for _, sts in self._all(STATEFULSETS):
            self._statefulset_controller(copy.deepcopy(sts.raw))
        for _, ro in self._all(ROLLOUTS):
            self._rollout_controller(copy.deepcopy(ro.raw))
        if self.kserve_controller:
            for _, isvc in self._all(INFERENCESERVICES):
                self._kserve_controller(copy.deepcopy(isvc.raw))

    def _owned(self, resource: str, namespace: str, uid: str) -> list[Any]:
        return [
            o for key, o in self._all(resource) if key[1] == namespace
            and any(r.get("uid") == uid for r in (o.get("metadata") or {}).get("ownerReferences")
                    or [])
        ]  # fmt: skip

    # ---------------------------------------------------------------- StatefulSet

    def _statefulset_controller(self, sts: dict[str, Any]) -> None:
        meta, spec = sts["metadata"], sts.get("spec") or {}
        name, ns, uid = meta["name"], meta["namespace"], meta["uid"]
        template = copy.deepcopy(spec.get("template") or {})
        digest = template_hash(template)
        cr_name = f"{name}-{digest}"
        owned = self._owned(CONTROLLERREVISIONS, ns, uid)
        top = max((int(o["revision"]) for o in owned), default=0)
        mine = next((o for o in owned if o["metadata"]["name"] == cr_name), None)
        if mine is None:
            self.objects[CONTROLLERREVISIONS, ns, cr_name] = {
                "apiVersion": "apps/v1", "kind": "ControllerRevision",
                "metadata": {"name": cr_name, "namespace": ns, "uid": f"cr-{cr_name}",
                             "resourceVersion": "1", "labels": {CR_HASH: cr_name},
                             "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet",
                                                  "name": name, "uid": uid, "controller": True}]},
                "revision": top + 1,
                "data": {"spec": {"template": {**template, "$patch": "replace"}}},
            }  # fmt: skip
        elif int(mine["revision"]) != top:
            mine.patch({"revision": top + 1})
        status = sts.get("status") or {}
        replicas = int(spec.get("replicas", 1))
        partition = int(((spec.get("updateStrategy") or {}).get("rollingUpdate") or {}).get(
            "partition") or 0)  # fmt: skip
        partition = min(partition, replicas)
        current = status.get("currentRevision") or cr_name
        if partition == 0:
            current = cr_name
        updated = replicas - partition if current != cr_name else replicas
        self.objects[STATEFULSETS, ns, name].patch({"status": {
            "observedGeneration": meta.get("generation", 1), "replicas": replicas,
            "readyReplicas": replicas, "availableReplicas": replicas,
            "currentReplicas": replicas - updated if current != cr_name else replicas,
            "updatedReplicas": updated, "currentRevision": current, "updateRevision": cr_name,
        }})  # fmt: skip

    # ---------------------------------------------------------------- Argo Rollout

    def _rollout_controller(self, ro: dict[str, Any]) -> None:
        meta, spec = ro["metadata"], ro.get("spec") or {}
        name, ns, uid = meta["name"], meta["namespace"], meta["uid"]
        status = dict(ro.get("status") or {})
        ref = spec.get("workloadRef") if not spec.get("template") else None
        annotations: dict[str, str] = {}
        referenced = None
        if ref:
            try:
                referenced = self.objects[DEPLOYMENTS, ns, ref["name"]]
            except KeyError:
                return  # Argo: InvalidSpec, the Deployment not found (not imitated)
            if referenced.deleted:
                return
            raw = copy.deepcopy(referenced.raw)
            template = (raw.get("spec") or {}).get("template") or {}
            generation = str((raw.get("metadata") or {}).get("generation", 1))
            annotations[WORKLOAD_GENERATION] = generation
            status["workloadObservedGeneration"] = generation
        else:
            template = copy.deepcopy(spec.get("template") or {})
        (template.get("metadata") or {}).get("labels", {}).pop(ROLLOUT_HASH, None)
        digest = template_hash(template)
        rs_name = f"{name}-{digest}"
        owned = self._owned(REPLICASETS, ns, uid)
        revisions = [int(o["metadata"]["annotations"][ROLLOUT_REVISION]) for o in owned]
        top = max(revisions, default=0)
        mine = next((o for o in owned if o["metadata"]["name"] == rs_name), None)
        replicas = int(spec.get("replicas", 1))
        if mine is None:
            revision = top + 1
            labels = {**((template.get("metadata") or {}).get("labels") or {}),
                      ROLLOUT_HASH: digest}  # fmt: skip
            rs_template = copy.deepcopy(template)
            rs_template.setdefault("metadata", {})["labels"] = labels
            self.objects[REPLICASETS, ns, rs_name] = {
                "apiVersion": "apps/v1", "kind": "ReplicaSet",
                "metadata": {"name": rs_name, "namespace": ns, "uid": f"rs-{rs_name}",
                             "resourceVersion": "1", "labels": labels,
                             "annotations": {ROLLOUT_REVISION: str(revision)},
                             "ownerReferences": [{"apiVersion": "argoproj.io/v1alpha1",
                                                  "kind": "Rollout", "name": name, "uid": uid,
                                                  "controller": True}]},
                "spec": {"replicas": replicas, "template": rs_template},
                "status": {"replicas": replicas, "readyReplicas": replicas},
            }  # fmt: skip
        else:
            revision = int(mine["metadata"]["annotations"][ROLLOUT_REVISION])
            if status.get("currentPodHash") != digest and revision != top:
                revision = top + 1  # an old template back (undo): its ReplicaSet raised
                mine.patch({"metadata": {"annotations": {ROLLOUT_REVISION: str(revision)}}})
        steps = ((spec.get("strategy") or {}).get("canary") or {}).get("steps")
        stable = status.get("stableRS")
        new_update = status.get("currentPodHash") != digest
        if new_update:
            status["abort"] = None  # a new update resets it (the status is merge-patched)
        if stable is None or (not steps and new_update) or stable == digest:
            stable = digest
        phase, message = "Healthy", ""
        if status.get("abort") and stable != digest:
            phase, message = "Degraded", "RolloutAborted: Rollout aborted update to revision"
        elif spec.get("paused") or stable != digest:
            phase, message = "Paused", "CanaryPauseStep" if stable != digest else "manually paused"
        status.update({
            "currentPodHash": digest, "stableRS": stable, "phase": phase, "message": message,
            "replicas": replicas, "updatedReplicas": replicas, "readyReplicas": replicas,
            "availableReplicas": replicas, "observedGeneration": str(meta.get("generation", 1)),
        })  # fmt: skip
        if referenced is not None and phase == "Healthy":
            self._scale_down(referenced, ref.get("scaleDown") or "never", status, annotations)
        annotations[ROLLOUT_REVISION] = str(revision)
        self.objects[ROLLOUTS, ns, name].patch(
            {"metadata": {"annotations": annotations}, "status": status}
        )

    @staticmethod
    def _scale_down(
        deployment: Any, scale_down: str, status: dict[str, Any], annotations: dict[str, str]
    ) -> None:
        """workloadRef.scaleDown once the Rollout is healthy: the Deployment to 0 replicas."""
        raw = deployment.raw
        if scale_down not in ("onsuccess", "progressively") or raw["spec"].get("replicas") == 0:
            return
        generation = int(raw["metadata"].get("generation", 1)) + 1
        deployment.patch({
            "metadata": {"generation": generation}, "spec": {"replicas": 0},
            "status": {"observedGeneration": generation, "replicas": 0, "updatedReplicas": 0,
                       "readyReplicas": 0, "availableReplicas": 0},
        })  # fmt: skip
        annotations[WORKLOAD_GENERATION] = str(generation)
        status["workloadObservedGeneration"] = str(generation)

    async def promote_rollout(self, namespace: str, name: str) -> None:
        """`kubectl argo rollouts promote --full`: the canary becomes stable."""
        before = self._snapshot()
        ro = self.objects[ROLLOUTS, namespace, name]
        pod_hash = (ro.get("status") or {}).get("currentPodHash")
        ro.patch({"status": {"stableRS": pod_hash, "phase": "Healthy", "message": ""}})
        await self._announce_owned(before)

    # ---------------------------------------------------------------- KServe

    def emulate_kserve(self) -> None:
        """KServe's canary rollout of the predictor (the module docstring); with the CRDs."""
        self.emulate_owners()
        self.kserve_controller = True
        self._knative: dict[tuple[str, str], tuple[str, int]] = {}  # (spec digest, revisions)

    def _kserve_controller(self, isvc: dict[str, Any]) -> None:
        meta, ns = isvc["metadata"], isvc["metadata"]["namespace"]
        predictor = copy.deepcopy((isvc.get("spec") or {}).get("predictor") or {})
        percent = predictor.pop("canaryTrafficPercent", None)
        state = dict(((isvc.get("status") or {}).get("components") or {}).get("predictor") or {})
        digest = template_hash({"spec": predictor})
        seen, number = self._knative.get((ns, meta["name"]), ("", 0))
        if seen != digest:  # a new Knative revision
            number += 1
            self._knative[ns, meta["name"]] = (digest, number)
            state["latestReadyRevision"] = f"{meta['name']}-predictor-{number:05d}"
        ready, rolled = state["latestReadyRevision"], state.get("latestRolledoutRevision")
        if rolled is None or percent is None or int(percent) >= 100:
            if rolled != ready:
                state["previousRolledoutRevision"] = rolled
            rolled = state["latestRolledoutRevision"] = ready
        canary = 0 if rolled == ready else int(percent or 0)
        state["traffic"] = [{"revisionName": rolled, "percent": 100 - canary, "tag": "prev"}] + (
            [{"revisionName": ready, "percent": canary, "latestRevision": True}] if canary or
            rolled != ready else [])  # fmt: skip
        self.objects[INFERENCESERVICES, ns, meta["name"]].patch(
            {"status": {"components": {"predictor": state}}}
        )
