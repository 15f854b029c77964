"""The demo's Kubernetes: kmock's API emulator with what the API server and controllers add.

kmock's `KubernetesEmulator` stores objects and merges patches, and nothing more. The
demo needs a little more of a cluster, and this module adds it (in the demo only: the
operator and the detector talk to it over HTTP exactly as to a real API server):

- metadata.uid, resourceVersion, creationTimestamp and generation on create; a new
  resourceVersion on every write and a new generation when the spec changes; a name for
  objects created with generateName (kopf's Events);
- optimistic concurrency: a patch carrying a `metadata.resourceVersion` that is not the
  object's current one is refused with 409 Conflict; a JSON patch whose operation fails
  (kopf adds and removes its finalizer with one that first tests the resourceVersion it
  read) is refused with 422 Unprocessable Entity and nothing is stored, as the API server
  does: kmock answered 500, which kopf retries unchanged for about a minute (a status write
  landing just before the finalizer's removal then held a deleted ObservedModel that long);
  a JSON patch that applies keeps the object's resourceVersion (a gap: kmock's watch sends
  every object again as ADDED when it starts, and kopf's second finalizer patch, made on that
  stale copy, then still applies);
- a Deployment controller: every new pod template gets a ReplicaSet with the next
  `deployment.kubernetes.io/revision` (an old template coming back, as after
  `kubectl rollout undo`, gets its ReplicaSet's revision raised, as Kubernetes does), and
  the rollout is reported complete at once;
- what kubectl needs: the core group's discovery as `v1` (kmock says "/v1"), no short
  names on subresources, list kinds, and `Table` answers with the CRD's printer columns for
  ObservedModels (revision and images for Deployments and ReplicaSets, Events as
  `kubectl get events` prints them);
- /api/v1/namespaces, which kmock's path parser reads as the start of a namespaced path.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonpatch
import jsonpointer
import kmock
from kmock import ResourceInfo
from kmock._internal import enums, parsing
from kmock._internal.k8s import KubernetesError, KubernetesObjectConflictError

from mlwarden.crd import custom_resource_definition
from mlwarden.spec import API_VERSION, PLURAL
from mlwarden.timestamps import now_iso, parse_time

OM = f"{API_VERSION}/{PLURAL}"
DEPLOYMENTS = "apps/v1/deployments"
REPLICASETS = "apps/v1/replicasets"
REVISION = "deployment.kubernetes.io/revision"
# kind -> (the emulator's resource key, short names)
KINDS: dict[str, tuple[str, set[str]]] = {
    "ConfigMap": ("v1/configmaps", {"cm"}),
    "Secret": ("v1/secrets", set()),
    "Service": ("v1/services", {"svc"}),
    "ServiceAccount": ("v1/serviceaccounts", {"sa"}),
    "Event": ("v1/events", {"ev"}),
    "Pod": ("v1/pods", {"po"}),
    "Deployment": (DEPLOYMENTS, {"deploy"}),
    "ReplicaSet": (REPLICASETS, {"rs"}),
    "StatefulSet": ("apps/v1/statefulsets", {"sts"}),
    "DaemonSet": ("apps/v1/daemonsets", {"ds"}),
    "ControllerRevision": ("apps/v1/controllerrevisions", set()),
    "Job": ("batch/v1/jobs", set()),
    "CronJob": ("batch/v1/cronjobs", {"cj"}),
    "Role": ("rbac.authorization.k8s.io/v1/roles", set()),
    "RoleBinding": ("rbac.authorization.k8s.io/v1/rolebindings", set()),
    "HorizontalPodAutoscaler": ("autoscaling/v2/horizontalpodautoscalers", {"hpa"}),
    "NetworkPolicy": ("networking.k8s.io/v1/networkpolicies", {"netpol"}),
}
_WITH_STATUS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "Pod",
                "HorizontalPodAutoscaler"}  # fmt: skip

_original_parse_path = parsing.parse_path


def _parse_path(path: str) -> Any:
    """kmock reads /api/v1/namespaces as the start of a namespaced path; it is the resource."""
    parts = path.split("?", 1)[0].strip("/").split("/")
    if parts[:3] == ["api", "v1", "namespaces"] and len(parts) in (3, 4):
        name = parts[3] if len(parts) == 4 else None
        return parsing.ParsedPath("", "v1", "namespaces", None, name, None)
    return _original_parse_path(path)


parsing.parse_path = _parse_path


def template_hash(template: Mapping[str, Any]) -> str:
    """Like the pod-template-hash: a digest of the template without that label."""
    t = copy.deepcopy(dict(template))
    (t.get("metadata") or {}).get("labels", {}).pop("pod-template-hash", None)
    return hashlib.sha256(json.dumps(t, sort_keys=True).encode()).hexdigest()[:10]


def template_revision(sets: Sequence[Mapping[str, Any]], rs_name: str) -> tuple[int, int | None]:
    """The revision of ReplicaSet `rs_name` among a Deployment's ReplicaSets `sets`.

    As the Deployment controller numbers them: a new pod template gets the next number; an
    old one coming back (as after `kubectl rollout undo`) has its ReplicaSet raised to the next
    number; the newest keeps its own. (revision, the ReplicaSet's revision now, None if new).
    """
    top = max((int(rs["metadata"]["annotations"][REVISION]) for rs in sets), default=0)
    mine = next((rs for rs in sets if rs["metadata"]["name"] == rs_name), None)
    if mine is None:
        return top + 1, None
    current = int(mine["metadata"]["annotations"][REVISION])
    return (current if current == top else top + 1), current


def _age(timestamp: str | None) -> str:
    if not timestamp:
        return "<unknown>"
    then = parse_time(str(timestamp))
    if then is None:
        return "<unknown>"
    seconds = max(0, int((datetime.now(UTC) - then).total_seconds()))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def _path(obj: Mapping[str, Any], json_path: str) -> Any:
    value: Any = obj
    for part in json_path.strip(".").split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


class ApiServerEmulator(kmock.KubernetesEmulator):
    """kmock's emulator with the API server's own bookkeeping, and nothing else.

    uid, resourceVersion, creationTimestamp and generation on create (and a name for
    generateName); a new resourceVersion on every write, a new generation when the spec
    changes; 409 Conflict for a write whose `metadata.resourceVersion` is not the current
    one, 422 for a JSON patch whose operation fails (a `test` that does not hold).
    Controllers are the subclasses' business (the demo's here, the operator tests' in
    tests/operator/cluster.py).
    """

    _versions = itertools.count(1000)

    async def _handle(self, request: Any) -> Any:
        if request.resource is not None and isinstance(request.data, dict):
            if request.action == enums.action.CREATE:
                self._on_create(request)
            elif request.action == enums.action.UPDATE and request.name is not None:
                self._on_update(request)
        try:
            return await super()._handle(request)
        except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
            # kmock applies a JSON patch as it comes, all or nothing, and lets its failure
            # through (a 500). The API server answers 422, which kopf reads as "the object
            # changed since I read it": it keeps the patch for the next watch event.
            raise KubernetesError(
                status=422,
                reason="Invalid",
                message=f"the server rejected our request due to an error in our request: {exc}",
            ) from exc

    def _on_create(self, request: Any) -> None:
        data = request.data
        meta = data.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        meta.setdefault("uid", str(uuid.uuid4()))
        meta["resourceVersion"] = str(next(self._versions))
        meta.setdefault("creationTimestamp", now_iso())
        meta.setdefault("generation", 1)

    def _on_update(self, request: Any) -> int | None:
        """Bookkeeping of a write to an existing object; its new generation if the spec changed."""
        data = request.data
        key = (request.resource, request.namespace, request.name)
        current = self.objects[key] if key in self.objects else None  # noqa: SIM401
        if current is None or current.deleted:
            return None
        if data.get("metadata") is None:
            data["metadata"] = {}
        meta = data["metadata"]
        wanted = meta.get("resourceVersion")
        have = (current.get("metadata") or {}).get("resourceVersion")
        if wanted is not None and str(wanted) != str(have):
            raise KubernetesObjectConflictError(
                reason="Conflict",
                message=(
                    f"Operation cannot be fulfilled on {request.resource.plural} "
                    f'"{request.name}": the object has been modified; please apply your '
                    "changes to the latest version and try again"
                ),
            )
        meta["resourceVersion"] = str(next(self._versions))
        if "spec" in data and not str(request.url.path).endswith("/status"):
            meta["generation"] = int((current.get("metadata") or {}).get("generation", 1)) + 1
            return int(meta["generation"])
        return None


class DemoCluster(ApiServerEmulator):
    """The emulator with the API server's bookkeeping and a Deployment controller."""

    def declare(self, namespace: str) -> None:
        """Serve the kinds the demo and the operator use, and the namespace."""
        crd = custom_resource_definition()
        names = crd["spec"]["names"]
        self.resources[OM] = ResourceInfo(
            kind=names["kind"], singular=names["singular"], namespaced=True,
            verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
            shortnames=set(names.get("shortNames", [])),
            categories=set(names.get("categories", [])), subresources={"status"},
        )  # fmt: skip
        self.resources["v1/namespaces"] = ResourceInfo(
            kind="Namespace", singular="namespace", namespaced=False,
            verbs={"get", "list", "watch"}, shortnames={"ns"},
        )  # fmt: skip
        self.objects["v1/namespaces", None, namespace] = {
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": namespace, "uid": str(uuid.uuid4()), "resourceVersion": "1",
                         "creationTimestamp": now_iso()},
        }  # fmt: skip
        self.resources["apiextensions.k8s.io/v1/customresourcedefinitions"] = ResourceInfo(
            kind="CustomResourceDefinition", singular="customresourcedefinition",
            namespaced=False, verbs={"get", "list", "watch"},
        )  # fmt: skip
        for kind, (res, short) in KINDS.items():
            self.resources[res] = ResourceInfo(
                kind=kind, singular=kind.lower(), namespaced=True, shortnames=short,
                verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
                subresources={"status"} if kind in _WITH_STATUS else set(),
            )  # fmt: skip
        self._printer = crd["spec"]["versions"][0].get("additionalPrinterColumns", [])

    def roll(self, namespace: str, name: str, template: dict[str, Any], *, at: str) -> None:
        """Seed a past rollout: the Deployment gets `template`, its ReplicaSet created `at`."""
        self.objects[DEPLOYMENTS, namespace, name].patch({"spec": {"template": template}})
        self._deployment_controller(DEPLOYMENTS, namespace, name, at=at)

    def seed(self, obj: dict[str, Any]) -> None:
        """Seed an object as if it had been created (a Deployment gets its ReplicaSet)."""
        kind = obj["kind"]
        res = OM if kind == "ObservedModel" else KINDS[kind][0]
        meta = obj.setdefault("metadata", {})
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("resourceVersion", str(next(self._versions)))
        meta.setdefault("creationTimestamp", now_iso())
        meta.setdefault("generation", 1)
        self.objects[res, meta.get("namespace"), meta["name"]] = obj
        if kind == "Deployment":
            self._deployment_controller(
                res, meta.get("namespace"), meta["name"], at=meta["creationTimestamp"]
            )

    async def create_live(self, obj: dict[str, Any]) -> None:
        """Create an object while the operator runs, as a controller would (the CronJob
        controller creating a Job): stored like `seed`, and announced to the watchers."""
        self.seed(obj)
        kind, meta = obj["kind"], obj["metadata"]
        res = OM if kind == "ObservedModel" else KINDS[kind][0]
        await self._announce([("ADDED", (res, meta.get("namespace"), meta["name"]))])

    def read(self, resource: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            obj = self.objects[resource, namespace, name]
        except KeyError:
            return None
        return None if obj.deleted else copy.deepcopy(obj.raw)

    def items(self, plural: str) -> list[dict[str, Any]]:
        return [
            copy.deepcopy(self.objects[key].raw)
            for key in list(self.objects)
            if str(key[0].plural) == plural and not self.objects[key].deleted
        ]

    # ---------------------------------------------------------------- the API server's part

    async def _handle(self, request: Any) -> Any:
        response = await super()._handle(request)
        if (
            request.resource is not None
            and str(request.resource.plural) == "deployments"
            and request.action in (enums.action.CREATE, enums.action.UPDATE)
            and isinstance(request.data, dict)
        ):
            name = request.name or (request.data.get("metadata") or {}).get("name")
            namespace = request.namespace or (request.data.get("metadata") or {}).get("namespace")
            if name:
                changed = self._deployment_controller(DEPLOYMENTS, namespace, name)
                await self._announce(changed)
        return response

    async def _announce(self, changed: list[tuple[str, tuple[str, str | None, str]]]) -> None:
        """What a controller wrote, as the API server makes it known: a new resourceVersion
        and a watch event per object (watchers such as the operator's caches see it)."""
        for event, (resource, namespace, name) in changed:
            obj = self.objects[resource, namespace, name]
            obj.patch({"metadata": {"resourceVersion": str(next(self._versions))}})
            key = next(k for k in self._objects if self._objects[k] is obj)
            await self._buses[key[0]].put({"type": event, "object": copy.deepcopy(obj.raw)})

    def _deployment_controller(
        self, resource: str, namespace: str | None, name: str, *, at: str | None = None
    ) -> list[tuple[str, tuple[str, str | None, str]]]:
        """A ReplicaSet per pod template, the revision annotation, a completed rollout; what
        it wrote (event type, object key), for `_announce` (seeding announces nothing: the
        operator lists what was seeded when it starts)."""
        changed: list[tuple[str, tuple[str, str | None, str]]] = []
        try:
            deployment = self.objects[resource, namespace, name]
        except KeyError:
            return changed
        if deployment.deleted:
            return changed
        dep = copy.deepcopy(deployment.raw)
        template = dep["spec"]["template"]
        digest = template_hash(template)
        sets = [
            rs for rs in self.items("replicasets")
            if rs["metadata"].get("namespace") == namespace
            and any(o.get("uid") == dep["metadata"]["uid"]
                    for o in rs["metadata"].get("ownerReferences", []))
        ]  # fmt: skip
        revision, current = template_revision(sets, f"{name}-{digest}")
        replicas = int(dep["spec"].get("replicas", 1))
        if current is None:
            rs_template = copy.deepcopy(template)
            rs_template.setdefault("metadata", {}).setdefault("labels", {})["pod-template-hash"] = (
                digest
            )
            self.seed({
                "apiVersion": "apps/v1", "kind": "ReplicaSet",
                "metadata": {
                    "name": f"{name}-{digest}", "namespace": namespace,
                    "creationTimestamp": at or now_iso(),
                    "labels": dict(rs_template["metadata"]["labels"]),
                    "annotations": {REVISION: str(revision)},
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
                                         "name": name, "uid": dep["metadata"]["uid"],
                                         "controller": True, "blockOwnerDeletion": True}],
                },
                "spec": {"replicas": replicas, "selector": dep["spec"]["selector"],
                         "template": rs_template},
                "status": {"replicas": replicas, "readyReplicas": replicas},
            })  # fmt: skip
            changed.append(("ADDED", (REPLICASETS, namespace, f"{name}-{digest}")))
        elif revision != current:
            rs_key = (REPLICASETS, namespace, f"{name}-{digest}")
            self.objects[rs_key].patch({"metadata": {"annotations": {REVISION: str(revision)},
                                        "creationTimestamp": now_iso()}})  # fmt: skip
            changed.append(("MODIFIED", rs_key))
        for rs in sets:
            if rs["metadata"]["name"] != f"{name}-{digest}" and rs["spec"].get("replicas"):
                old_key = (REPLICASETS, namespace, rs["metadata"]["name"])
                self.objects[old_key].patch(
                    {"spec": {"replicas": 0}, "status": {"replicas": 0, "readyReplicas": 0}}
                )
                changed.append(("MODIFIED", old_key))
        generation = int(dep["metadata"].get("generation", 1))
        annotations = dep["metadata"].get("annotations") or {}
        status = dep.get("status") or {}
        wanted_status = {
            "observedGeneration": generation, "replicas": replicas, "updatedReplicas": replicas,
            "readyReplicas": replicas, "availableReplicas": replicas,
        }  # fmt: skip
        if annotations.get(REVISION) != str(revision) or any(
            status.get(k) != v for k, v in wanted_status.items()
        ):
            deployment.patch(
                {"metadata": {"annotations": {REVISION: str(revision)}}, "status": wanted_status}
            )
            changed.append(("MODIFIED", (resource, namespace, name)))
        return changed

    # ---------------------------------------------------------------- what kubectl prints

    async def _serve_version(self, request: Any) -> Any:
        """kmock names the core group's version "/v1"; kubectl then finds no core kind."""
        payload: Any = await super()._serve_version(request)
        if isinstance(payload, dict) and str(payload.get("groupVersion", "")).startswith("/"):
            payload["groupVersion"] = payload["groupVersion"][1:]
        # Nor do subresources have short names (kubectl warns "om could also match ...").
        for resource in payload.get("resources", []) if isinstance(payload, dict) else []:
            if "/" in str(resource.get("name", "")):
                resource["shortNames"] = []
                resource["categories"] = []
        return payload

    async def _serve_list(self, request: Any) -> Any:
        payload: Any = await super()._serve_list(request)
        kind = self._kind(request)
        if _wants_table(request):
            return self._table(kind, payload["items"])
        version = _api_version(request)
        return {"apiVersion": version, "kind": f"{kind}List", **payload}

    async def _serve_fetch(self, request: Any) -> Any:
        payload: Any = await super()._serve_fetch(request)
        if _wants_table(request):
            return self._table(self._kind(request), [payload])
        return payload

    def _kind(self, request: Any) -> str:
        for res in self._get_resources():
            if res == request.resource:
                info: Any = self._resources.get(res)
                if info is not None and getattr(info, "kind", None):
                    return str(info.kind)
        return str(request.resource.plural).capitalize()

    def _table(self, kind: str, items: list[Mapping[str, Any]]) -> dict[str, Any]:
        columns: list[tuple[str, str, Any]] = [("Name", "string", None)]
        if kind == "ObservedModel":
            columns += [(c["name"], c["type"], c["jsonPath"]) for c in self._printer]
        elif kind == "Deployment":
            columns += [("Ready", "string", "ready"), ("Revision", "string", "revision"),
                        ("Images", "string", "images"), ("Age", "date", None)]  # fmt: skip
        elif kind == "ReplicaSet":
            columns += [("Revision", "string", "revision"), ("Images", "string", "images"),
                        ("Age", "date", None)]  # fmt: skip
        elif kind == "Event":
            columns = [("Last Seen", "date", None), ("Type", "string", ".type"),
                       ("Reason", "string", ".reason"), ("Object", "string", "object"),
                       ("Message", "string", ".message")]  # fmt: skip
        else:
            columns.append(("Age", "date", None))
        rows = []
        for obj in items:
            cells = []
            for name, _, path in columns:
                meta = obj.get("metadata") or {}
                if name == "Name":
                    cells.append(meta.get("name"))
                elif name in ("Age", "Last Seen") and path is None:
                    cells.append(_age(obj.get("lastTimestamp") or meta.get("creationTimestamp")))
                elif path == "ready":
                    st = obj.get("status") or {}
                    cells.append(f"{st.get('readyReplicas', 0)}/{st.get('replicas', 0)}")
                elif path == "revision":
                    cells.append((meta.get("annotations") or {}).get(REVISION, ""))
                elif path == "images":
                    spec = ((obj.get("spec") or {}).get("template") or {}).get("spec") or {}
                    cells.append(",".join(c.get("image", "") for c in spec.get("containers", [])))
                elif path == "object":
                    inv = obj.get("involvedObject") or {}
                    cells.append(f"{str(inv.get('kind', '')).lower()}/{inv.get('name', '')}")
                elif name == "Age":
                    cells.append(_age(_path(obj, path)))
                else:
                    value = _path(obj, path)
                    cells.append("" if value is None else value)
            rows.append({"cells": cells, "object": {
                "kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                "metadata": obj.get("metadata") or {}}})  # fmt: skip
        return {
            "kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": ""},
            "columnDefinitions": [
                {"name": name, "type": "string" if kind_ == "date" else kind_, "format": "",
                 "description": name, "priority": 0}
                for name, kind_, _ in columns
            ],
            "rows": rows,
        }  # fmt: skip


def _wants_table(request: Any) -> bool:
    accept = str((request.headers or {}).get("Accept") or (request.headers or {}).get("accept"))
    return "as=Table" in accept


def _api_version(request: Any) -> str:
    res = request.resource
    group = str(res.group or "")
    return f"{group}/{res.version}" if group else str(res.version)


def kubeconfig(path: Path, server: str, namespace: str) -> Path:
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: mlwarden-demo\n"
        f"clusters: [{{name: mlwarden-demo, cluster: {{server: '{server}'}}}}]\n"
        "users: [{name: demo, user: {token: demo-token}}]\n"
        "contexts: [{name: mlwarden-demo, context: {cluster: mlwarden-demo, user: demo, "
        f"namespace: {namespace}}}}}]\n"
    )
    return path
