"""Helpers for the operator tests: the real operator against kmock, with the gaps filled.

kmock's `KubernetesEmulator` stores objects and merges patches, and nothing
more. `Cluster` adds, outside the operator (the product is not bent to suit
it), what the API server and its controllers would do:

- the API server's bookkeeping, shared with the demo's cluster
  (`mlwarden.demo.cluster.ApiServerEmulator`): metadata.uid, resourceVersion,
  creationTimestamp, generation, a name for generateName, 409 Conflict on a stale
  `metadata.resourceVersion`, 422 for a JSON patch whose `test` fails (kopf's finalizer
  patches), and /api/v1/namespaces read as the resource it is;
- a Deployment controller: on create or spec change the Deployment's status
  says the rollout completed (or, with `instant_rollouts = False`, that it is
  in progress until `finish_rollouts()`);
- an audit log: every call the operator makes (it authenticates with the test
  kubeconfig's token) is appended to `OPERATOR_CALLS` as RBAC sees it (verb,
  API group, resource[/subresource], namespace, name), for test_rbac_audit.py;
- label selectors on list, and (opt-in, `emulate_workloads()`) ReplicaSets, Pods and
  EndpointSlices from Deployments and Services (emulate_workloads.py);
- the progress deadline, on demand (emulate_progress.py): a rollout of a pod template with a
  container named in `unready_containers` reports Progressing=False,
  ProgressDeadlineExceeded;
- paged lists: `limit` and `continue` (emulate_paging.py);
- fault injection: `faults` holds `Fault`s that answer matching operator calls
  with an error status, a delay, or a watch stream that stalls (test_api_faults.py);
- token expiry (emulate_tokens.py): `rotate_token(old, new)` and the old token gets 401;
- mutating admission through a stored MutatingWebhookConfiguration, calling the
  webhook over HTTPS as the API server does (emulate_admission.py; test_webhook.py);
- the StatefulSet and Argo Rollouts controllers, and the Rollout and InferenceService CRDs,
  on demand (emulate_kinds.py);
- owner-reference garbage collection and namespace deletion (emulate_gc.py), and
  controllers writing status concurrently, on demand (emulate_writers.py);
- Argo Workflows' CRDs, on demand, and the status the Job controller and Argo's controller
  write, written by the retrain tests through the API (emulate_runs.py).

The custom resources the reactions change (Gateway API HTTPRoute, Istio
VirtualService) are declared like any other kind: the emulator serves whatever
it is told exists, and a test deletes one from `resources` to see it not served.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from emulate_admission import MutatingAdmission
from emulate_gc import GarbageCollection
from emulate_kinds import OwnerControllers
from emulate_paging import PagedLists
from emulate_progress import ProgressDeadline
from emulate_schema import SchemaLimits
from emulate_tokens import TokenRotation
from emulate_workloads import WorkloadsEmulation
from emulate_writers import ConcurrentWriters
from kmock import ResourceInfo
from ports import free_port

from mlwarden.demo.cluster import ApiServerEmulator

OM = "mlwarden.io/v1alpha1/observedmodels"
DEPLOYMENTS = "apps/v1/deployments"
SERVICES = "v1/services"
NS = "test"
# kind -> the emulator's resource key (group/version/plural), for every kind the tests use.
RESOURCES: dict[str, str] = {
    "ObservedModel": OM,
    "ConfigMap": "v1/configmaps",
    "Secret": "v1/secrets",
    "Service": SERVICES,
    "ServiceAccount": "v1/serviceaccounts",
    "Event": "v1/events",
    "Pod": "v1/pods",
    "Deployment": DEPLOYMENTS,
    "ReplicaSet": "apps/v1/replicasets",
    "StatefulSet": "apps/v1/statefulsets",
    "DaemonSet": "apps/v1/daemonsets",
    "ControllerRevision": "apps/v1/controllerrevisions",
    "Job": "batch/v1/jobs",
    "CronJob": "batch/v1/cronjobs",
    "Role": "rbac.authorization.k8s.io/v1/roles",
    "RoleBinding": "rbac.authorization.k8s.io/v1/rolebindings",
    "NetworkPolicy": "networking.k8s.io/v1/networkpolicies",
    "HorizontalPodAutoscaler": "autoscaling/v2/horizontalpodautoscalers",
    "HTTPRoute": "gateway.networking.k8s.io/v1/httproutes",
    "VirtualService": "networking.istio.io/v1beta1/virtualservices",
    "Incident": "mlwarden.io/v1alpha1/incidents",
    # Argo Workflows (retrain): served only once a test installs them (emulate_runs.py)
    "Workflow": "argoproj.io/v1alpha1/workflows",
    "WorkflowTemplate": "argoproj.io/v1alpha1/workflowtemplates",
    # Argo Rollouts and KServe (targets by kind): served once a test asks (emulate_kinds.py)
    "Rollout": "argoproj.io/v1alpha1/rollouts",
    "InferenceService": "serving.kserve.io/v1beta1/inferenceservices",
}
ARGO = {"Workflow", "WorkflowTemplate", "Rollout", "InferenceService"}  # declared on demand
HTTPROUTES = RESOURCES["HTTPRoute"]
VIRTUALSERVICES = RESOURCES["VirtualService"]
HPAS = RESOURCES["HorizontalPodAutoscaler"]


TOKEN = "test-token"  # the operator's bearer token, from kubeconfig() below


@dataclass(frozen=True)
class ApiCall:
    """One API request as RBAC authorizes it."""

    verb: str  # get list watch create update patch delete deletecollection
    group: str  # "" for the core group
    resource: str  # plural, or plural/subresource
    namespace: str | None
    name: str | None


# Every call the operator made against any emulator in this test session.
OPERATOR_CALLS: list[ApiCall] = []
# Calls of an operator run cluster-wide (without --namespace), moved here from OPERATOR_CALLS
# by the test that runs it: audited against the ClusterRole only.
CLUSTER_WIDE_CALLS: list[ApiCall] = []
# Calls made with other bearer tokens (a detector reporting its status), by token.
CALLS_BY_TOKEN: dict[str, list[ApiCall]] = {}
# What the API server's OwnerReferencesPermissionEnforcement admission plugin (on in OpenShift)
# asks of the operator, not a call it makes: an ownerReference with blockOwnerDeletion: true is
# admitted only from a client allowed to `update` the owner's `finalizers` subresource.
ADMISSION_CHECKS: list[ApiCall] = []


@dataclass
class EveryCall:
    """The calls of every operator test of a session, gathered for the RBAC audit (conftest.py)."""

    operator: list[ApiCall] = field(default_factory=list)  # OPERATOR_CALLS
    cluster_wide: list[ApiCall] = field(default_factory=list)  # CLUSTER_WIDE_CALLS
    admission: list[ApiCall] = field(default_factory=list)  # ADMISSION_CHECKS


def _method(request: Any) -> str:
    return str(getattr(request.method, "value", request.method))


def api_call_of(method: str, path: str, params: Any) -> ApiCall | None:
    """The RBAC view of a request path (None for discovery and other non-resource paths)."""
    parts = path.strip("/").split("/")
    if parts[:2] == ["api", "v1"]:
        group, rest = "", parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        group, rest = parts[1], parts[3:]
    else:
        return None
    namespace = None
    if len(rest) >= 2 and rest[0] == "namespaces" and len(rest) != 2:
        namespace, rest = rest[1], rest[2:]
    if not rest:
        return None  # discovery of a group version
    plural, name, sub = rest[0], rest[1] if len(rest) > 1 else None, rest[2:3]
    method = method.upper()
    if method == "GET":
        watch = str(params.get("watch", "")).lower() in ("true", "1")
        verb = "get" if name else ("watch" if watch else "list")
    else:
        verb = {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(method, "")
        if method == "DELETE":
            verb = "delete" if name else "deletecollection"
    resource = f"{plural}/{sub[0]}" if sub else plural
    return ApiCall(verb, group, resource, namespace, name)


@dataclass
class Fault:
    """Answer matching operator calls with `status` (or stall them), `times` times."""

    verb: str
    resource: str  # plural or plural/subresource, as in ApiCall
    status: int = 500  # 0: no error, only the delay
    times: int = 1
    delay: float = 0.0  # seconds before answering (or before failing)
    stall_seconds: float = 0.0  # a watch: answer 200, then send nothing for this long
    name: str | None = None
    # Set while a call is held in `delay`: the call is then refused (503), never applied,
    # as when the caller died waiting (a SIGKILLed operator's request never lands).
    abandoned: bool = False
    # Hold the answer instead: the call is applied at once, its response held for `delay`
    # (a caller killed meanwhile has changed the cluster without knowing it).
    answer_late: bool = False
    hits: list[ApiCall] = field(default_factory=list)
    at: list[float] = field(default_factory=list)  # loop time of each hit

    def matches(self, call: ApiCall) -> bool:
        return (
            len(self.hits) < self.times
            and call.verb == self.verb
            and call.resource == self.resource
            and (self.name is None or call.name == self.name)
        )


class Cluster(
    SchemaLimits,
    TokenRotation,
    OwnerControllers,
    WorkloadsEmulation,
    MutatingAdmission,
    ProgressDeadline,
    GarbageCollection,
    ConcurrentWriters,
    PagedLists,
    ApiServerEmulator,
):
    instant_rollouts: bool = True
    faults: list[Fault]

    async def _handle(self, request: Any) -> Any:
        call = None
        auth = str(request.headers.get("Authorization", ""))
        if auth.startswith("Bearer "):
            call = api_call_of(_method(request), str(request.url.path), request.params)
            if call is not None and auth != f"Bearer {TOKEN}":
                CALLS_BY_TOKEN.setdefault(auth.removeprefix("Bearer "), []).append(call)
                call = None  # another client (a detector): audited, never faulted
        if call is not None:
            OPERATOR_CALLS.append(call)
            for fault in self.__dict__.get("faults", []):
                if fault.matches(call):
                    fault.hits.append(call)
                    fault.at.append(asyncio.get_running_loop().time())
                    if fault.answer_late:
                        response = await super()._handle(request)
                        await asyncio.sleep(fault.delay)
                        return response
                    deadline = asyncio.get_running_loop().time() + fault.delay
                    while asyncio.get_running_loop().time() < deadline and not fault.abandoned:
                        await asyncio.sleep(0.05)
                    if fault.abandoned:
                        return _error(503, call)
                    if fault.stall_seconds:
                        # Headers, then nothing at all for `delay` seconds, then the end.
                        stream = aiohttp.web.StreamResponse(
                            status=200, headers={"Content-Type": "application/json"}
                        )
                        await stream.prepare(request._raw_request)
                        await asyncio.sleep(fault.stall_seconds)
                        return stream
                    if fault.status:
                        return _error(fault.status, call)
                    break
        return await super()._handle(request)

    def _on_create(self, request: Any) -> None:
        super()._on_create(request)
        if str(request.resource.plural) == "deployments":
            data = request.data
            data["status"] = self._rollout(data, data["metadata"]["generation"])

    def _on_update(self, request: Any) -> int | None:
        generation = super()._on_update(request)
        if generation is not None and str(request.resource.plural) == "deployments":
            current = self.objects[request.resource, request.namespace, request.name]
            spec = request.data["spec"] or {}
            replicas = spec.get("replicas", (current.get("spec") or {}).get("replicas", 1))
            request.data["status"] = self._rollout({"spec": {"replicas": replicas}}, generation)
        return generation

    def _rollout(self, deployment: dict[str, Any], generation: int) -> dict[str, Any]:
        replicas = int((deployment.get("spec") or {}).get("replicas", 1))
        done = replicas if self.instant_rollouts else 0
        return {
            "observedGeneration": generation,
            "replicas": replicas,
            "updatedReplicas": done,
            "readyReplicas": replicas,
            "availableReplicas": replicas,
        }

    def finish_rollouts(self) -> None:
        for key in list(self._objects):
            obj = self._objects[key]
            if str(key[0].plural) == "deployments" and not obj.deleted:
                status = dict(obj.get("status") or {})
                status["updatedReplicas"] = status.get("replicas", 1)
                obj["status"] = status


def _error(status: int, call: ApiCall) -> Any:
    reason = {409: "Conflict", 429: "TooManyRequests", 500: "InternalError",
              503: "ServiceUnavailable", 504: "Timeout"}.get(status, "InternalError")  # fmt: skip
    body = {
        "apiVersion": "v1", "kind": "Status", "status": "Failure", "code": status,
        "reason": reason, "message": f"injected fault: {status} on {call.verb} {call.resource}",
    }  # fmt: skip
    headers = {"Retry-After": "1"} if status in (429, 503) else {}
    return aiohttp.web.json_response(body, status=status, headers=headers)


def declare(cluster: Cluster) -> None:
    cluster.resources[OM] = ResourceInfo(
        kind="ObservedModel", singular="observedmodel", namespaced=True,
        verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
        shortnames={"om"}, categories={"mlwarden"}, subresources={"status"},
    )  # fmt: skip
    # kopf's backbone: it does not start watching until it has seen these in discovery,
    # and with --namespace it lists the namespaces (see _parse_path for kmock's gap there).
    cluster.resources["v1/namespaces"] = ResourceInfo(
        kind="Namespace", singular="namespace", namespaced=False, verbs={"get", "list", "watch"}
    )
    cluster.objects["v1/namespaces", None, NS] = {
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": NS, "uid": str(uuid.uuid4()), "resourceVersion": "1"},
    }  # fmt: skip
    cluster.resources["apiextensions.k8s.io/v1/customresourcedefinitions"] = ResourceInfo(
        kind="CustomResourceDefinition", singular="customresourcedefinition", namespaced=False,
        verbs={"get", "list", "watch"},
    )  # fmt: skip
    with_status = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob",
                   "Pod", "HorizontalPodAutoscaler", "HTTPRoute"}  # fmt: skip
    for kind, res in RESOURCES.items():
        if kind == "ObservedModel" or kind in ARGO:
            continue
        cluster.resources[res] = ResourceInfo(
            kind=kind, singular=kind.lower(), namespaced=True,
            verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
            subresources={"status"} if kind in with_status else set(),
        )  # fmt: skip


def kubeconfig(tmp_path: Path, server: str) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: test\n"
        f"clusters: [{{name: test, cluster: {{server: '{server}'}}}}]\n"
        f"users: [{{name: test, user: {{token: {TOKEN}}}}}]\n"
        "contexts: [{name: test, context: {cluster: test, user: test, namespace: test}}]\n"
    )
    return path


class OperatorProcess:
    def __init__(self, proc: asyncio.subprocess.Process, log: Path) -> None:
        self.proc = proc
        self.log_path = log

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def stop(self) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 20)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        return int(self.proc.returncode or 0)


# Passes every 0.5 s, retries of the reconciliation every 0.5 s (defaults: 30 s and 5 s).
FAST = {"MLWARDEN_RESPOND_INTERVAL": "0.5", "MLWARDEN_RETRY_SECONDS": "0.5",
        "MLWARDEN_NOTIFY_WAIT_SECONDS": "0"}  # fmt: skip


async def launch_operator(
    directory: Path,
    server: str,
    *extra: str,
    namespace: str | None = NS,
    env: Mapping[str, str] | None = None,
    log_name: str = "operator.log",
) -> OperatorProcess:
    """`mlwarden operator --standalone` against the emulator at `server`, logging to a file.

    Its environment is this one without MLWARDEN_* settings, plus a kubeconfig in `directory`,
    the test image, a metrics port of its own (a fixed one collides between runs), then `env`.
    Without `namespace`, kopf watches every namespace.
    """
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MLWARDEN_")}
    environ.update(KUBECONFIG=str(kubeconfig(directory, server)),
                   MLWARDEN_IMAGE="mlwarden/mlwarden:test",
                   MLWARDEN_METRICS_PORT=str(free_port()))  # fmt: skip
    environ.update(env or {})  # a test's own (MLWARDEN_METRICS_PORT to scrape it, say)
    scope = ["--namespace", namespace] if namespace is not None else []
    log = directory / log_name
    with open(log, "wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "mlwarden.cli", "operator", *scope, "--standalone", *extra,
            stdout=out, stderr=asyncio.subprocess.STDOUT, env=environ,
        )  # fmt: skip
    return OperatorProcess(proc, log)


async def eventually(check: Callable[[], Any], *, timeout: float = 20.0, what: str = "") -> Any:
    """Poll `check` until it returns something truthy (an AssertionError counts as not yet)."""
    deadline = asyncio.get_running_loop().time() + timeout
    last: BaseException | None = None
    while asyncio.get_running_loop().time() < deadline:
        try:
            result = check()
            if result:
                return result
        except (AssertionError, KeyError, TypeError) as exc:
            last = exc
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what or check}: {last!r}")


def model_deployment(
    name: str = "fraud-model", *, port_name: str | None = "http"
) -> dict[str, Any]:
    port: dict[str, Any] = {"containerPort": 8080, "protocol": "TCP"}
    if port_name:
        port["name"] = port_name
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS, "uid": str(uuid.uuid4()),
                     "resourceVersion": "1", "generation": 1, "labels": {"app": name}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{
                    "name": "model", "image": "seldonio/mlserver:1.6.0", "ports": [port],
                }]},
            },
        },
        "status": {"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2,
                   "readyReplicas": 2, "availableReplicas": 2},
    }  # fmt: skip


def model_service(name: str = "fraud-model", *, target: str | int = "http") -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": NS, "uid": str(uuid.uuid4()),
                     "resourceVersion": "1"},
        "spec": {"selector": {"app": name}, "type": "ClusterIP",
                 "ports": [{"name": "http", "port": 80, "targetPort": target,
                            "protocol": "TCP"}]},
    }  # fmt: skip


def observed_model(name: str = "fraud", *, target: str = "fraud-model",
                   **spec: Any) -> dict[str, Any]:  # fmt: skip
    return {
        "apiVersion": "mlwarden.io/v1alpha1", "kind": "ObservedModel",
        "metadata": {"name": name, "namespace": NS, "uid": str(uuid.uuid4()),
                     "resourceVersion": "1", "generation": 1},
        "spec": {"target": {"deployment": target, "container": "model"}, "protocol": "v2",
                 **spec},
    }  # fmt: skip


# --------------------------------------------------------------------------- reading the cluster


def obj(api: Cluster, resource: str, name: str) -> dict[str, Any]:
    return dict(api.objects[resource, NS, name])


def exists(api: Cluster, resource: str, name: str) -> bool:
    # Item access parses "group/version/plural"; `in` on string keys does not.
    try:
        return not api.objects[resource, NS, name].deleted
    except KeyError:
        return False


def status(api: Cluster, name: str = "fraud") -> dict[str, Any]:
    return dict(obj(api, OM, name).get("status") or {})


def events(api: Cluster) -> list[dict[str, Any]]:
    return [dict(api.objects[key]) for key in api.objects if str(key[0].plural) == "events"
            and not api.objects[key].deleted]  # fmt: skip


def reasons(api: Cluster) -> list[str]:
    return [e.get("reason", "") for e in events(api)]


def condition(st: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in st.get("conditions", []) if c["type"] == kind)


async def api_call(server: str, method: str, path: str, body: Any = None,
                   content_type: str = "application/json") -> Any:  # fmt: skip
    async with aiohttp.ClientSession() as http, http.request(
        method, server + path, data=json.dumps(body) if body is not None else None,
        headers={"Content-Type": content_type},
    ) as resp:  # fmt: skip
        assert resp.status < 300, await resp.text()
        return await resp.json()


# --------------------------------------------------------------------------- the detector's side

OM_PATH = f"/apis/mlwarden.io/v1alpha1/namespaces/{NS}/observedmodels/fraud"
MERGE = "application/merge-patch+json"
REFERENCE = {"id": "warmup@abc", "since": "2026-11-26T15:00:00Z"}


def iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def ago(**delta: float) -> datetime:
    return datetime.now(UTC) - timedelta(**delta)


def alert(kind: str, *, feature: str | None = None, since: str | None = None) -> dict[str, Any]:
    """An alert as the detector writes it into the ObservedModel's status."""
    out: dict[str, Any] = {
        "type": kind, "test": {"Latency": "p99"}.get(kind, "ks"), "statistic": 0.4,
        "threshold": 0.1, "since": since or iso(ago(minutes=1)), "reference": REFERENCE["id"],
    }  # fmt: skip
    if feature:
        out["feature"] = feature
    return out


async def patch_status(server: str, fields: dict[str, Any]) -> None:
    """Write status fields of ObservedModel `fraud` as the detector does (a merge patch)."""
    await api_call(server, "PATCH", OM_PATH + "/status", {"status": fields}, MERGE)


def reactions(api: Cluster) -> list[dict[str, Any]]:
    return list(status(api).get("reactions") or [])


def writes(api: Cluster, resource: str, name: str) -> int:
    """How many versions the emulator holds of an object: one per create or write."""
    return len(api.objects[resource, NS, name].history)


@dataclass
class Observing:
    """A running operator with ObservedModel `fraud` in phase Observing."""

    api: Cluster
    server: str
    op: OperatorProcess
    metrics: int  # the operator's metrics port
