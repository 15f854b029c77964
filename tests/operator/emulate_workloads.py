"""What a real cluster does with Deployments, Pods and Services, for the tests that need it.

Imitated, as the Kubernetes API server and kube-controller-manager do it:

- label selectors on list (`?labelSelector=`, always on): equality (`k=v`, `k==v`, `k!=v`),
  set-based (`k in (a,b)`, `k notin (a,b)`), existence (`k`, `!k`), comma-separated and all
  required, as `kubectl get -l` sends them (apimachinery's labels.Parse);
- with `emulate_workloads()` (opt-in: other tests seed ReplicaSets of their own):
  - the Deployment controller: a ReplicaSet per pod template (named NAME-HASH, with the
    `pod-template-hash` label, the Deployment's annotations copied but for the
    `deployment.kubernetes.io/*` ones, and the next `deployment.kubernetes.io/revision`;
    an old template coming back, as after `kubectl rollout undo`, gets its ReplicaSet's
    revision raised: `template_revision`, shared with the demo's cluster), scaled to
    spec.replicas, older ReplicaSets scaled to 0. The rollout is instant: the old pods
    are deleted and the new ones are Running and Ready at once, carrying the template's
    labels (and pod-template-hash), annotations and containers with their ports;
  - the EndpointSlice controller (discovery.k8s.io/v1): for each Service with a selector,
    the selected pods' addresses, grouped by the ports they resolve to. A targetPort number
    is that port on the pod; a targetPort name is looked up in *that pod's* containers (the
    first port of that name, containers in order), and a pod without it has no port for
    it (kube-controller-manager's endpointslice reconciler and podutil.FindPort), so a
    Service whose named port no pod has shows zero endpoints for that port. No pod at all:
    one slice without endpoints, as the controller's placeholder.

The controllers run after every write to a Deployment, Service or Pod (and on
`run_controllers()` after a test seeds objects directly). Their own writes go to the store
directly, as the controllers' writes are not the operator's calls (OPERATOR_CALLS). The
ReplicaSets they create or change after an API write reach watchers as the API server makes
a controller's write known: a new resourceVersion and a watch event (ADDED or MODIFIED), so
the operator's watch-fed caches see a new revision (and a rollback's raised revision number)
as they would on a cluster. Pods and EndpointSlices are not announced (the tests that read
them read the store).
"""

from __future__ import annotations

import copy
import itertools
import re
from collections.abc import Mapping
from typing import Any

from kmock import ResourceInfo
from kmock._internal import enums

from mlwarden.demo.cluster import REVISION, template_hash, template_revision

ENDPOINTSLICES = "discovery.k8s.io/v1/endpointslices"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MANAGED_BY = "endpointslice.kubernetes.io/managed-by"
# The annotations the Deployment controller does not copy to a ReplicaSet (and that
# `kubectl rollout undo` keeps from the Deployment), as deployment/util's annotationsToSkip.
SKIPPED_ANNOTATIONS = {
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    "deployment.kubernetes.io/revision-history",
    "deployment.kubernetes.io/desired-replicas",
    "deployment.kubernetes.io/max-replicas",
    "deprecated.deployment.rollback.to",
}
_WORKLOAD_KINDS = {"deployments", "services", "pods"}


# --------------------------------------------------------------------------- label selectors


_REQUIREMENT = re.compile(
    r"^\s*(?P<neg>!)?\s*(?P<key>[A-Za-z0-9_./-]+)\s*"
    r"(?:(?P<op>==|!=|=|\s+in\s+|\s+notin\s+)\s*(?P<value>\(.*\)|[A-Za-z0-9_.-]*))?\s*$"
)


def _split(selector: str) -> list[str]:
    """Split at the commas that are not inside `( )`."""
    parts, depth, current = [], 0, ""
    for ch in selector:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return [p for p in parts if p.strip()]


def selector_matches(selector: str, labels: Mapping[str, str]) -> bool:
    """Whether `labels` satisfy the label selector string (every requirement)."""
    for requirement in _split(selector):
        m = _REQUIREMENT.match(requirement)
        if m is None:
            raise ValueError(f"unable to parse requirement: {requirement!r}")
        key, op, value = m["key"], (m["op"] or "").strip(), m["value"]
        if m["neg"]:
            if key in labels:
                return False
        elif not op:
            if key not in labels:
                return False
        elif op in ("=", "=="):
            if labels.get(key) != value:
                return False
        elif op == "!=":
            if labels.get(key) == value:
                return False
        else:
            values = {v.strip() for v in (value or "").strip("()").split(",") if v.strip()}
            if op == "in" and labels.get(key) not in values:
                return False
            if op == "notin" and key in labels and labels[key] in values:
                return False
    return True


def _labels(obj: Mapping[str, Any]) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("labels") or {})


# --------------------------------------------------------------------------- the mixin


class WorkloadsEmulation:
    """Label selectors on list; opt-in Deployment and EndpointSlice controllers (see above)."""

    workload_controllers: bool = False
    _pod_ips = itertools.count(10)
    _versions: Any
    objects: Any
    resources: Any

    def emulate_workloads(self) -> None:
        """Turn the controllers on (serving EndpointSlices) and run them on what is seeded."""
        self.workload_controllers = True
        self.resources[ENDPOINTSLICES] = ResourceInfo(
            kind="EndpointSlice", singular="endpointslice", namespaced=True,
            verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
        )  # fmt: skip
        self.run_controllers()

    async def _serve_list(self, request: Any) -> Any:
        payload: Any = await super()._serve_list(request)  # type: ignore[misc]
        selector = str((request.params or {}).get("labelSelector") or "")
        if selector and isinstance(payload, dict):
            payload["items"] = [
                i for i in payload["items"] if selector_matches(selector, _labels(i))
            ]
        return payload

    async def _handle(self, request: Any) -> Any:
        response = await super()._handle(request)  # type: ignore[misc]
        if (
            self.workload_controllers
            and request.resource is not None
            and str(request.resource.plural) in _WORKLOAD_KINDS
            and request.action in (enums.action.CREATE, enums.action.UPDATE, enums.action.DELETE)
        ):
            before = self._replicasets_now()
            self.run_controllers()
            await self._announce(before)
        return response

    def _replicasets_now(self) -> dict[Any, Any]:
        return {key: copy.deepcopy(rs.raw) for key, rs in self._live("replicasets")}

    async def _announce(self, before: dict[Any, Any]) -> None:
        """The ReplicaSets the controller created or changed, as watch events (see above)."""
        for key, rs in self._live("replicasets"):
            old = before.get(key)
            if old is not None and old == rs.raw:
                continue
            rs.patch({"metadata": {"resourceVersion": str(next(self._versions))}})
            event = {"type": "ADDED" if old is None else "MODIFIED",
                     "object": copy.deepcopy(rs.raw)}  # fmt: skip
            await self._buses[key[0]].put(event)  # type: ignore[attr-defined]

    # ---------------------------------------------------------------- reading the store

    def _live(self, plural: str, namespace: str | None = None) -> list[tuple[Any, Any]]:
        out = []
        for key in list(self.objects):
            resource, ns, _ = key
            if str(resource.plural) != plural or (namespace is not None and ns != namespace):
                continue
            obj = self.objects[key]
            if not obj.deleted:
                out.append((key, obj))
        return out

    def _put(self, resource: str, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        key = (resource, meta["namespace"], meta["name"])
        try:
            current = self.objects[key]
        except KeyError:
            current = None
        if current is not None and not current.deleted:
            mine = {k: v for k, v in current.raw.items() if k != "metadata"}
            if mine == {k: v for k, v in obj.items() if k != "metadata"}:
                return
        self.objects[key] = obj

    # ---------------------------------------------------------------- the controllers

    def run_controllers(self) -> None:
        if not self.workload_controllers:
            return
        for _, dep in self._live("deployments"):
            self._deployment_controller(copy.deepcopy(dep.raw))
        for _, svc in self._live("services"):
            self._endpointslice_controller(copy.deepcopy(svc.raw))

    def _deployment_controller(self, dep: dict[str, Any]) -> None:
        meta = dep["metadata"]
        name, namespace, uid = meta["name"], meta.get("namespace"), meta.get("uid")
        template = copy.deepcopy((dep.get("spec") or {}).get("template") or {})
        digest = template_hash(template)
        rs_name = f"{name}-{digest}"
        owned = [
            (key, rs) for key, rs in self._live("replicasets", namespace)
            if any(o.get("uid") == uid and o.get("controller")
                   for o in (rs.get("metadata") or {}).get("ownerReferences") or [])
        ]  # fmt: skip
        revision, current = template_revision([rs.raw for _, rs in owned], rs_name)
        replicas = int((dep.get("spec") or {}).get("replicas", 1))
        if current is None:
            labels = {**_labels(template), "pod-template-hash": digest}
            template.setdefault("metadata", {})["labels"] = labels
            copied = {k: v for k, v in (meta.get("annotations") or {}).items()
                      if k not in SKIPPED_ANNOTATIONS}  # fmt: skip
            self._put("apps/v1/replicasets", {
                "apiVersion": "apps/v1", "kind": "ReplicaSet",
                "metadata": {
                    "name": rs_name, "namespace": namespace, "uid": f"rs-{rs_name}",
                    "resourceVersion": "1", "labels": labels,
                    "annotations": {**copied, REVISION: str(revision)},
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
                                         "name": name, "uid": uid, "controller": True,
                                         "blockOwnerDeletion": True}],
                },
                "spec": {"replicas": replicas, "selector": (dep.get("spec") or {}).get("selector"),
                         "template": template},
                "status": {"replicas": replicas, "readyReplicas": replicas},
            })  # fmt: skip
        mine = self.objects["apps/v1/replicasets", namespace, rs_name]
        if current is not None and revision != current:
            mine.patch({"metadata": {"annotations": {REVISION: str(revision)}}})
        for _, rs in owned:
            if rs["metadata"]["name"] != rs_name and (rs.get("spec") or {}).get("replicas"):
                rs.patch({"spec": {"replicas": 0}, "status": {"replicas": 0, "readyReplicas": 0}})
        if ((meta.get("annotations") or {}).get(REVISION)) != str(revision):
            self.objects["apps/v1/deployments", namespace, name].patch(
                {"metadata": {"annotations": {REVISION: str(revision)}}}
            )
        self._pods_of(dict(mine.raw), replicas, [rs for _, rs in owned])

    def _pods_of(self, rs: dict[str, Any], replicas: int, owned: list[Any]) -> None:
        """The ReplicaSet's pods (`replicas` of them); the other ReplicaSets' pods gone."""
        namespace = rs["metadata"]["namespace"]
        uids = {r["metadata"]["uid"] for r in owned} | {rs["metadata"]["uid"]}
        keep = {f"{rs['metadata']['name']}-{i}" for i in range(replicas)}
        for key, pod in self._live("pods", namespace):
            owner = {o.get("uid") for o in (pod.get("metadata") or {}).get("ownerReferences") or []}
            if owner & uids and key[2] not in keep:
                del self.objects[key]
        template = rs["spec"]["template"]
        for pod_name in sorted(keep):
            try:
                exists = not self.objects["v1/pods", namespace, pod_name].deleted
            except KeyError:
                exists = False
            if exists:
                continue
            spec = copy.deepcopy(template.get("spec") or {})
            self._put("v1/pods", {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {
                    "name": pod_name, "namespace": namespace, "uid": f"pod-{pod_name}",
                    "resourceVersion": "1", "labels": _labels(template),
                    "annotations": dict((template.get("metadata") or {}).get("annotations") or {}),
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                         "name": rs["metadata"]["name"],
                                         "uid": rs["metadata"]["uid"], "controller": True}],
                },
                "spec": spec,
                "status": {
                    "phase": "Running", "podIP": f"10.0.0.{next(self._pod_ips) % 250 + 2}",
                    "conditions": [{"type": "Ready", "status": "True"}],
                    "containerStatuses": [{"name": c.get("name"), "ready": True,
                                           "restartCount": 0}
                                          for c in spec.get("containers") or []],
                },
            })  # fmt: skip

    def _endpointslice_controller(self, svc: dict[str, Any]) -> None:
        meta = svc["metadata"]
        name, namespace = meta["name"], meta.get("namespace")
        selector = (svc.get("spec") or {}).get("selector") or {}
        if not selector:
            return  # a Service without a selector: its slices are the user's
        groups: dict[tuple[tuple[str, int, str], ...], list[dict[str, Any]]] = {}
        for _, pod in self._live("pods", namespace):
            labels = _labels(pod)
            if any(labels.get(k) != v for k, v in selector.items()):
                continue
            ports = resolve_ports(svc, pod.raw)
            groups.setdefault(ports, []).append({
                "addresses": [(pod.get("status") or {}).get("podIP", "10.0.0.1")],
                "conditions": {"ready": True, "serving": True, "terminating": False},
                "targetRef": {"kind": "Pod", "namespace": namespace,
                              "name": pod["metadata"]["name"], "uid": pod["metadata"]["uid"]},
            })  # fmt: skip
        wanted: dict[str, dict[str, Any]] = {}
        if not groups:
            groups[()] = []
        for ports, endpoints in groups.items():
            slice_name = f"{name}-{template_hash({'ports': [list(p) for p in ports]})[:5]}"
            wanted[slice_name] = {
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {
                    "name": slice_name, "namespace": namespace, "uid": f"eps-{slice_name}",
                    "resourceVersion": "1",
                    "labels": {SERVICE_NAME_LABEL: name,
                               MANAGED_BY: "endpointslice-controller.k8s.io"},
                    "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": name,
                                         "uid": meta.get("uid"), "controller": True}],
                },
                "addressType": "IPv4",
                "endpoints": sorted(endpoints, key=lambda e: e["targetRef"]["name"]),
                "ports": [{"name": n, "port": number, "protocol": proto}
                          for n, number, proto in ports] if ports or endpoints else None,
            }  # fmt: skip
        for key, eps in self._live("endpointslices", namespace):
            if _labels(eps).get(SERVICE_NAME_LABEL) == name and key[2] not in wanted:
                del self.objects[key]
        for body in wanted.values():
            self._put(ENDPOINTSLICES, body)


def resolve_ports(
    service: Mapping[str, Any], pod: Mapping[str, Any]
) -> tuple[tuple[str, int, str], ...]:
    """(service port name, pod port number, protocol) for each port the pod resolves."""
    containers = ((pod.get("spec") or {}).get("containers")) or []
    out = []
    for sp in (service.get("spec") or {}).get("ports") or []:
        target = sp.get("targetPort", sp.get("port"))
        if isinstance(target, str):
            number = next(
                (int(p["containerPort"]) for c in containers for p in c.get("ports") or []
                 if p.get("name") == target),
                None,
            )  # fmt: skip
            if number is None:
                continue  # FindPort fails: this pod has no endpoint for this port
        else:
            number = int(target)
        out.append((str(sp.get("name") or ""), number, str(sp.get("protocol", "TCP"))))
    return tuple(out)
