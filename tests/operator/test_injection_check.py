"""The injection kept true after it is done: other writers of the Deployment, refused targets.

The real operator against the emulator with its workload controllers on
(emulate_workloads.py): ReplicaSets and Pods from the pod template, EndpointSlices that resolve
each Service port against each pod's own containers. The check runs every second
(MLWARDEN_INJECTION_CHECK_SECONDS), repair steps every 0.5 s (MLWARDEN_RETRY_SECONDS).
What the tests read, they read over HTTP as kubectl would (`-l kubernetes.io/service-name=`).
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable
from typing import Any

from cluster import (
    DEPLOYMENTS,
    NS,
    OPERATOR_CALLS,
    SERVICES,
    Cluster,
    api_call,
    condition,
    events,
    eventually,
    model_deployment,
    model_service,
    obj,
    observed_model,
    status,
)
from emulate_workloads import SKIPPED_ANNOTATIONS, selector_matches

from mlwarden.names import INJECTED_ANNOTATION, SIDECAR_CONTAINER

MERGE = "application/merge-patch+json"
CHECK = {
    "MLWARDEN_INJECTION_CHECK_SECONDS": "1",
    "MLWARDEN_RETRY_SECONDS": "0.5",
    "MLWARDEN_RESPOND_INTERVAL": "0.5",
}
DEPLOYMENT_PATH = f"/apis/apps/v1/namespaces/{NS}/deployments/fraud-model"


async def ready_endpoints(server: str, service: str = "fraud-model", port: str = "http") -> int:
    """Ready endpoints of the Service's port, summed over its EndpointSlices (as kube-proxy)."""
    listing = await api_call(
        server,
        "GET",
        f"/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices"
        f"?labelSelector=kubernetes.io/service-name%3D{service}",
    )
    total = 0
    for eps in listing["items"]:
        assert eps["metadata"]["labels"]["kubernetes.io/service-name"] == service
        if any(p.get("name") == port for p in eps.get("ports") or []):
            total += sum(1 for e in eps["endpoints"] if e["conditions"]["ready"])
    return total


def sidecar_in_template(api: Cluster) -> bool:
    containers = obj(api, DEPLOYMENTS, "fraud-model")["spec"]["template"]["spec"]["containers"]
    return any(c["name"] == SIDECAR_CONTAINER for c in containers)


def bypassed(api: Cluster) -> dict[str, Any]:
    """The Bypassed condition ({} while there is none)."""
    found = [c for c in status(api).get("conditions", []) if c["type"] == "Bypassed"]
    return found[0] if found else {}


def warnings(api: Cluster, reason: str) -> list[dict[str, Any]]:
    return [e for e in events(api) if e.get("reason") == reason and e.get("type") == "Warning"]


def replacing(current: Any, wanted: Any) -> Any:
    """A JSON merge patch that makes `current` into `wanted` (keys not wanted become null)."""
    if not isinstance(current, dict) or not isinstance(wanted, dict):
        return copy.deepcopy(wanted)
    out = {k: None for k in current if k not in wanted}
    for k, v in wanted.items():
        if current.get(k) != v:
            out[k] = replacing(current.get(k), v)
    return out


async def rollout_undo(server: str, to_revision: int) -> None:
    """`kubectl rollout undo --to-revision`: the ReplicaSet's template and annotations back.

    As kubectl does it: spec.template becomes the ReplicaSet's (without pod-template-hash),
    metadata.annotations the ReplicaSet's, but for the ones the Deployment controller does not
    copy, which the Deployment keeps.
    """
    deployment = await api_call(server, "GET", DEPLOYMENT_PATH)
    sets = await api_call(
        server, "GET", f"/apis/apps/v1/namespaces/{NS}/replicasets?labelSelector=app%3Dfraud-model"
    )
    (rs,) = [
        r for r in sets["items"]
        if r["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == str(to_revision)
    ]  # fmt: skip
    template = copy.deepcopy(rs["spec"]["template"])
    template["metadata"]["labels"].pop("pod-template-hash")
    annotations = {k: v for k, v in deployment["metadata"]["annotations"].items()
                   if k in SKIPPED_ANNOTATIONS}  # fmt: skip
    annotations.update({k: v for k, v in rs["metadata"].get("annotations", {}).items()
                        if k not in SKIPPED_ANNOTATIONS})  # fmt: skip
    patch = {
        "metadata": {"annotations": replacing(deployment["metadata"]["annotations"], annotations)},
        "spec": {"template": replacing(deployment["spec"]["template"], template)},
    }
    await api_call(server, "PATCH", DEPLOYMENT_PATH, patch, MERGE)


def test_label_selectors_as_the_api_server_reads_them() -> None:
    labels = {"app": "fraud-model", "tier": "serving"}
    assert selector_matches("app=fraud-model", labels)
    assert selector_matches("app==fraud-model,tier", labels)
    assert not selector_matches("app!=fraud-model", labels)
    assert selector_matches("tier in (serving, batch),!canary", labels)
    assert not selector_matches("tier notin (serving)", labels)
    assert selector_matches("track notin (canary)", labels)
    assert not selector_matches("app in (other)", labels)


async def test_a_rollout_undo_keeps_the_endpoints_and_the_sidecar_comes_back(
    cluster: tuple[Cluster, str], start_operator: Callable[..., Any], seed: Callable[..., None]
) -> None:
    api, server = cluster
    # Case B: the Service targets the model's number; after the injection, `mlwarden-proxy`.
    seed(api, model_deployment(port_name=None), model_service(target=8080), observed_model())
    api.emulate_workloads()
    await start_operator(env=CHECK)
    await eventually(lambda: status(api).get("phase") == "WarmingUp", timeout=30, what="injected")
    assert obj(api, SERVICES, "fraud-model")["spec"]["ports"][0]["targetPort"] == "mlwarden-proxy"
    assert await ready_endpoints(server) == 2

    await rollout_undo(server, to_revision=1)
    # The pods lost the sidecar's port, the Service still names it: no endpoint at all.
    assert not sidecar_in_template(api)
    assert await ready_endpoints(server) == 0
    undone = asyncio.get_running_loop().time()

    async def serving() -> None:
        while await ready_endpoints(server) != 2:
            await asyncio.sleep(0.05)

    await asyncio.wait_for(serving(), timeout=8)
    took = asyncio.get_running_loop().time() - undone
    # One check interval (1 s), with slack for a loaded machine.
    assert took < 4, f"the Service was without endpoints for {took:.1f} s"
    await eventually(lambda: bypassed(api)["status"] == "True", what="Bypassed")
    assert bypassed(api)["reason"] in ("NoEndpoints", "SidecarRemoved")
    assert warnings(api, "Bypassed"), events(api)
    assert "no endpoint" in warnings(api, "Bypassed")[0]["message"]

    # Then the sidecar is put back, one safe step at a time, and Bypassed clears.
    await eventually(lambda: sidecar_in_template(api), timeout=15, what="re-injected")
    await eventually(lambda: bypassed(api)["status"] == "False", timeout=15, what="not Bypassed")
    assert obj(api, SERVICES, "fraud-model")["spec"]["ports"][0]["targetPort"] == "mlwarden-proxy"
    assert await ready_endpoints(server) == 2
    assert status(api)["phase"] == "WarmingUp"
    assert len(status(api)["injection"]["repairs"]) == 1
    assert [e["reason"] for e in events(api) if e["reason"] in ("Bypassed", "ThroughSidecar")
            ] == ["Bypassed", "ThroughSidecar"]  # fmt: skip


async def test_a_gitops_reapply_renaming_the_port_back_is_bypassed_and_not_fought_forever(
    cluster: tuple[Cluster, str], start_operator: Callable[..., Any], seed: Callable[..., None]
) -> None:
    api, server = cluster
    # Case A: the Service targets the name `http`, which the injection moves to the sidecar.
    seed(api, model_deployment(), model_service(), observed_model())
    api.emulate_workloads()
    await start_operator(env={**CHECK, "MLWARDEN_INJECTION_MAX_REPAIRS": "1"})
    await eventually(lambda: status(api).get("phase") == "WarmingUp", timeout=30, what="injected")

    async def reapply_from_git() -> None:
        """What `kubectl apply` of the manifest in git leaves: the port named `http` again."""
        deployment = await api_call(server, "GET", DEPLOYMENT_PATH)
        containers = deployment["spec"]["template"]["spec"]["containers"]
        model = next(c for c in containers if c["name"] == "model")
        model["ports"] = model_deployment()["spec"]["template"]["spec"]["containers"][0]["ports"]
        patch = {"spec": {"template": {"spec": {"containers": containers}}}}
        await api_call(server, "PATCH", DEPLOYMENT_PATH, patch, MERGE)

    await reapply_from_git()
    assert sidecar_in_template(api)  # the sidecar is there, and traffic passes it by
    await eventually(lambda: bypassed(api)["status"] == "True", timeout=5, what="Bypassed")
    assert bypassed(api)["reason"] == "PortRenamedBack"
    assert "resolves to container 'model'" in bypassed(api)["message"]
    assert warnings(api, "Bypassed")
    await eventually(lambda: bypassed(api)["status"] == "False", timeout=15, what="repaired")
    assert len(status(api)["injection"]["repairs"]) == 1

    # Again: the operator has put it back once this hour (the limit here), so it stops.
    mark = len(OPERATOR_CALLS)
    await reapply_from_git()
    await eventually(lambda: status(api).get("phase") == "Failed", timeout=10, what="gave up")
    st = status(api)
    assert (bypassed(api)["status"], condition(st, "Ready")["reason"]) == ("True", "Bypassed")
    assert "stopped re-injecting" in st["message"] and "ignoreDifferences" in st["message"]
    await asyncio.sleep(2.5)  # two more checks
    patched = [c for c in OPERATOR_CALLS[mark:] if (c.verb, c.resource) == ("patch", "deployments")
               and c.name == "fraud-model"]  # fmt: skip
    assert patched == [], patched
    assert await ready_endpoints(server) == 2  # the model keeps serving, around the sidecar


async def test_a_deployment_owned_by_a_controller_is_refused_and_never_patched(
    cluster: tuple[Cluster, str], start_operator: Callable[..., Any], seed: Callable[..., None]
) -> None:
    api, _ = cluster
    deployment = model_deployment()
    deployment["metadata"]["ownerReferences"] = [{
        "apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
        "name": "fraud", "uid": "0d1c2b3a", "controller": True, "blockOwnerDeletion": True,
    }]  # fmt: skip
    seed(api, deployment, model_service(), observed_model())
    mark = len(OPERATOR_CALLS)
    await start_operator(env=CHECK)
    await eventually(lambda: status(api).get("phase") == "Failed", timeout=20, what="refused")
    ready = condition(status(api), "Ready")
    assert ready["reason"] == "ControlledDeployment"
    assert "InferenceService 'fraud'" in ready["message"]
    assert "GitOps, rollout undo and other writers" in ready["message"]
    await asyncio.sleep(1.5)
    writes = [
        c for c in OPERATOR_CALLS[mark:] if c.verb in ("patch", "update")
        and c.resource in ("deployments", "services") and c.name == "fraud-model"
    ]  # fmt: skip
    assert writes == []
    assert obj(api, DEPLOYMENTS, "fraud-model")["metadata"]["resourceVersion"] == "1"
    assert INJECTED_ANNOTATION not in (obj(api, DEPLOYMENTS, "fraud-model")["metadata"].get(
        "annotations") or {})  # fmt: skip


async def test_a_service_selecting_another_deployments_pods_is_refused_before_any_change(
    cluster: tuple[Cluster, str], start_operator: Callable[..., Any], seed: Callable[..., None]
) -> None:
    api, server = cluster
    canary = model_deployment("fraud-model-canary")
    canary["spec"]["selector"]["matchLabels"]["track"] = "canary"
    canary["spec"]["template"]["metadata"]["labels"] = {"app": "fraud-model", "track": "canary"}
    # The Service selects app=fraud-model: the model's pods and the canary's.
    seed(api, model_deployment(), canary, model_service(), observed_model())
    api.emulate_workloads()
    assert await ready_endpoints(server) == 4
    mark = len(OPERATOR_CALLS)
    await start_operator(env=CHECK)
    await eventually(lambda: status(api).get("phase") == "Failed", timeout=20, what="refused")
    ready = condition(status(api), "Ready")
    assert ready["reason"] == "ServiceSelectsOtherPods"
    assert "fraud-model-canary" in ready["message"]
    await asyncio.sleep(1.5)
    writes = [c for c in OPERATOR_CALLS[mark:] if c.verb in ("patch", "update")
              and c.resource in ("deployments", "services")
              and c.name in ("fraud-model", "fraud-model-canary")]  # fmt: skip
    assert writes == []
    assert await ready_endpoints(server) == 4
