"""Targets by kind, with the real operator: StatefulSet, Argo Rollout, KServe InferenceService.

The owners' controllers are imitated in emulate_kinds.py (ControllerRevisions and a
StatefulSet's revisions and partition; Argo's ReplicaSets, canary pause, abort and
promotion); KServe's InferenceService is stored as written. For each kind: the injection
(the sidecar, or KServe's own payload logger), the revision variable, a rollback or pause
through the owner's own fields, and the exact undo on deletion. Also: a gRPC Service port
is not rerouted through the HTTP listener.
"""

from __future__ import annotations

import asyncio
import copy
import json
import uuid
from collections.abc import Callable
from typing import Any

from cluster import (
    DEPLOYMENTS,
    FAST,
    NS,
    OM,
    OPERATOR_CALLS,
    REFERENCE,
    SERVICES,
    Cluster,
    Fault,
    ago,
    alert,
    api_call,
    condition,
    events,
    eventually,
    exists,
    iso,
    model_deployment,
    model_service,
    obj,
    patch_status,
    reactions,
    status,
)
from emulate_kinds import INFERENCESERVICES, ROLLOUTS, STATEFULSETS

Start = Callable[..., Any]
Seed = Callable[..., None]


def workload(kind: str, *, partition: int | None = None, steps: bool = False) -> dict[str, Any]:
    obj_ = model_deployment()
    obj_["kind"] = kind
    obj_.pop("status")
    spec = obj_["spec"]
    if kind == "StatefulSet":
        spec["serviceName"] = "fraud-model"
        strategy: dict[str, Any] = {"type": "RollingUpdate"}
        if partition is not None:
            strategy["rollingUpdate"] = {"partition": partition}
        spec["updateStrategy"] = strategy
    if kind == "Rollout":
        obj_["apiVersion"] = "argoproj.io/v1alpha1"
        canary: dict[str, Any] = {}
        if steps:
            canary["steps"] = [{"setWeight": 20}, {"pause": {}}]
        spec["strategy"] = {"canary": canary}
    return obj_


def om(target: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "mlwarden.io/v1alpha1", "kind": "ObservedModel",
        "metadata": {"name": "fraud", "namespace": NS, "uid": str(uuid.uuid4()),
                     "resourceVersion": "1", "generation": 1},
        "spec": {"target": target, "protocol": "v2", **spec},
    }  # fmt: skip


def put(api: Cluster, resource: str, o: dict[str, Any]) -> None:
    api.objects[resource, NS, o["metadata"]["name"]] = o


async def start(
    api: Cluster, start_operator: Start, *objs: tuple[str, dict[str, Any]], model: dict[str, Any],
    **env: str,
) -> Any:  # fmt: skip
    api.emulate_owners()
    for resource, o in objs:
        put(api, resource, o)
    put(api, OM, model)
    api.run_owner_controllers()  # as the controllers had before the operator came
    return await start_operator(env={**FAST, **env})


def template_of(api: Cluster, resource: str) -> dict[str, Any]:
    return copy.deepcopy(obj(api, resource, "fraud-model")["spec"]["template"])


def env_of(template: dict[str, Any]) -> dict[str, Any]:
    sidecar = next(c for c in template["spec"]["containers"] if c["name"] == "mlwarden-sidecar")
    return {e["name"]: e for e in sidecar["env"]}


def reasons_of(api: Cluster) -> list[str]:
    return [str(e.get("reason")) for e in events(api)]


async def delete_om(api: Cluster, server: str) -> None:
    await api_call(
        server, "DELETE", f"/apis/mlwarden.io/v1alpha1/namespaces/{NS}/observedmodels/fraud"
    )
    await eventually(lambda: not exists(api, OM, "fraud"), timeout=30, what="finalizer released")


async def observing(api: Cluster, server: str) -> None:
    await eventually(lambda: status(api).get("phase") == "WarmingUp", timeout=30,
                     what="injected (WarmingUp)")  # fmt: skip
    detector = {"reference": REFERENCE, "updated": iso(ago(seconds=1))}
    await patch_status(server, {"alerts": [], "detector": detector})
    await eventually(lambda: status(api).get("phase") == "Observing", what="Observing")


async def user_patch(server: str, resource_path: str, patch: dict[str, Any]) -> None:
    await api_call(server, "PATCH", resource_path, patch)


STS_PATH = f"/apis/apps/v1/namespaces/{NS}/statefulsets/fraud-model"
RO_PATH = f"/apis/argoproj.io/v1alpha1/namespaces/{NS}/rollouts/fraud-model"


# --------------------------------------------------------------------------- StatefulSet


async def test_statefulset_injected_rolled_back_and_undone(
    cluster: tuple[Cluster, str], start_operator: Start
) -> None:
    api, server = cluster
    sts, service = workload("StatefulSet"), model_service()
    original = copy.deepcopy(sts["spec"])
    reaction = {"alert": "PredictionDrift", "action": "rollback"}
    model = om({"kind": "StatefulSet", "name": "fraud-model", "container": "model"},
               reactions=[reaction])  # fmt: skip
    op = await start(api, start_operator, (STATEFULSETS, sts), (SERVICES, service), model=model)
    await observing(api, server)
    template = template_of(api, STATEFULSETS)
    assert [c["name"] for c in template["spec"]["containers"]] == ["model", "mlwarden-sidecar"]
    assert env_of(template)["MLWARDEN_MODEL_REVISION"]["valueFrom"] == {
        "fieldRef": {"fieldPath": "metadata.labels['controller-revision-hash']"}
    }
    st = obj(api, STATEFULSETS, "fraud-model")
    assert st["spec"]["updateStrategy"] == original["updateStrategy"]
    assert "finalizers" not in st["metadata"]
    assert len([k for k in api.objects if str(k[0].plural) == "controllerrevisions"]) == 2
    # status.target: what the Target column of kubectl get om shows, and what was resolved.
    await eventually(lambda: "target" in status(api), what="status.target")
    assert status(api)["target"] == {
        "kind": "StatefulSet", "name": "fraud-model", "ref": "StatefulSet/fraud-model",
        "selector": "app=fraud-model", "revisionLabel": "controller-revision-hash",
        "service": "fraud-model",
    }  # fmt: skip
    # The detector's revision (the pods' controller-revision-hash) shown as people know it:
    # the ControllerRevision's number and image.
    hash_ = st["status"]["updateRevision"]
    seen = [{"revision": hash_, "records": 10, "share": 1.0, "role": "baseline"}]
    detector = {"reference": REFERENCE, "updated": iso(ago(seconds=1)), "revisions": seen}
    await patch_status(server, {"detector": detector})
    await eventually(lambda: (status(api).get("revisions") or [{}])[0].get("deploymentRevision")
                     == 2, what="status.revisions resolved", timeout=20)  # fmt: skip
    assert status(api)["revisions"][0]["image"] == "mlserver:1.6.0"

    # A person rolls out a new image; the model drifts; the reaction rolls the StatefulSet
    # back to the ControllerRevision before it, with the sidecar.
    containers = copy.deepcopy(template["spec"]["containers"])
    containers[0]["image"] = "seldonio/mlserver:1.7.0"
    await user_patch(server, STS_PATH, {"spec": {"template": {"spec": {"containers": containers}}}})
    await patch_status(server, {"alerts": [alert("PredictionDrift")]})
    await eventually(lambda: [r["result"] for r in reactions(api)][:1] == ["Succeeded"],
                     what="rollback Succeeded", timeout=30)  # fmt: skip
    (record, *_) = reactions(api)
    assert (record["target"], record["from"], record["to"]) == ("StatefulSet/fraud-model", "3", "2")
    assert template_of(api, STATEFULSETS) == template  # revision 2: the injected 1.6.0
    # Undo on deletion: the template as it was before the injection, partition untouched.
    await delete_om(api, server)
    after = obj(api, STATEFULSETS, "fraud-model")["spec"]
    assert (
        after["template"]["spec"]["containers"][0]["ports"]
        == (original["template"]["spec"]["containers"][0]["ports"])
    )
    assert [c["name"] for c in after["template"]["spec"]["containers"]] == ["model"]
    assert after["updateStrategy"] == original["updateStrategy"]
    assert await op.stop() == 0, op.log()[-3000:]


async def test_statefulset_partition_is_respected(
    cluster: tuple[Cluster, str], start_operator: Start
) -> None:
    api, server = cluster
    sts = workload("StatefulSet", partition=1)
    model = om({"kind": "StatefulSet", "name": "fraud-model", "container": "model"})
    op = await start(api, start_operator, (STATEFULSETS, sts), (SERVICES, model_service()),
                     model=model)  # fmt: skip
    await eventually(
        lambda: "partition 1" in str((status(api).get("injection") or {}).get("message")),
        what="waiting on the partition",
        timeout=30,
    )
    st = obj(api, STATEFULSETS, "fraud-model")
    assert st["spec"]["updateStrategy"]["rollingUpdate"] == {"partition": 1}  # not changed
    assert st["status"]["currentRevision"] != st["status"]["updateRevision"]
    assert status(api)["phase"] == "Pending"
    await delete_om(api, server)
    assert [c["name"] for c in template_of(api, STATEFULSETS)["spec"]["containers"]] == ["model"]
    assert await op.stop() == 0, op.log()[-3000:]


# --------------------------------------------------------------------------- Argo Rollout


async def test_rollout_injected_canary_aborted_paused_and_undone(
    cluster: tuple[Cluster, str], start_operator: Start
) -> None:
    api, server = cluster
    ro = workload("Rollout", steps=True)
    original = copy.deepcopy(ro["spec"])
    reactions_ = [{"alert": "PredictionDrift", "action": "rollback"},
                  {"alert": "CanaryRegression", "action": "pause"}]  # fmt: skip
    # No cooldown: the pause follows the abort on the same Rollout at once (the abort's
    # `Rollout/NAME/status` and the pause's `Rollout/NAME` are one object to the guardrails).
    model = om({"kind": "Rollout", "name": "fraud-model", "container": "model"},
               reactions=reactions_, guardrails={"cooldown": "0s"})  # fmt: skip
    op = await start(api, start_operator, (ROLLOUTS, ro), (SERVICES, model_service()), model=model)
    # The injection itself is an update of the Rollout: a canary Argo holds at its pause step
    # until promoted (here by hand, as a person or its analysis would).
    await eventually(lambda: (obj(api, ROLLOUTS, "fraud-model").get("status") or {}).get("phase")
                     == "Paused", what="the injection's canary", timeout=30)  # fmt: skip
    await eventually(
        lambda: "Rollout is Paused" in str((status(api).get("injection") or {}).get("message")),
        what="the wait said why",
    )
    await api.promote_rollout(NS, "fraud-model")
    await observing(api, server)
    template = template_of(api, ROLLOUTS)
    assert env_of(template)["MLWARDEN_MODEL_REVISION"]["valueFrom"] == {
        "fieldRef": {"fieldPath": "metadata.labels['rollouts-pod-template-hash']"}
    }
    assert obj(api, ROLLOUTS, "fraud-model")["spec"]["strategy"] == original["strategy"]

    # A new image goes out as a canary; drift: the rollback aborts the canary as
    # `kubectl argo rollouts abort` does (status.abort), the stable ReplicaSet serving.
    containers = copy.deepcopy(template["spec"]["containers"])
    containers[0]["image"] = "seldonio/mlserver:1.7.0"
    await user_patch(server, RO_PATH, {"spec": {"template": {"spec": {"containers": containers}}}})
    await patch_status(server, {"alerts": [alert("PredictionDrift")]})
    await eventually(lambda: [r["result"] for r in reactions(api)][:1] == ["Succeeded"],
                     what="abort Succeeded", timeout=30)  # fmt: skip
    live = obj(api, ROLLOUTS, "fraud-model")
    assert live["status"]["abort"] is True and live["status"]["phase"] == "Degraded"
    assert reactions(api)[0]["target"] == "Rollout/fraud-model"
    assert any(c.verb == "patch" and c.resource == "rollouts/status" for c in OPERATOR_CALLS)
    # A CanaryRegression: pause through spec.paused.
    canary = {**alert("CanaryRegression"), "modelRevision": "x", "baselineRevision": "y"}
    await patch_status(server, {"alerts": [alert("PredictionDrift"), canary]})
    await eventually(lambda: obj(api, ROLLOUTS, "fraud-model")["spec"].get("paused") is True,
                     what="spec.paused", timeout=30)  # fmt: skip

    await delete_om(api, server)
    back = obj(api, ROLLOUTS, "fraud-model")["spec"]["template"]
    assert [c["name"] for c in back["spec"]["containers"]] == ["model"]
    assert back["spec"]["containers"][0]["ports"] == original["template"]["spec"]["containers"][
        0]["ports"]  # fmt: skip
    assert await op.stop() == 0, op.log()[-3000:]


async def test_rollout_with_workload_ref_injected_into_its_deployment_and_undone(
    cluster: tuple[Cluster, str], start_operator: Start
) -> None:
    """The template of a Rollout with spec.workloadRef is the Deployment's: the sidecar goes
    there, Argo (imitated) rolls it out as the Rollout's pods and scales the Deployment down
    (scaleDown: onsuccess); the operator never writes the Rollout nor the replicas."""
    api, server = cluster
    base = model_deployment()  # its pods' labels (app: fraud-model) are the Service's
    base["metadata"]["name"] = "fraud-base"
    original = copy.deepcopy(base["spec"]["template"])
    ro = workload("Rollout")
    del ro["spec"]["template"]
    ro["spec"]["workloadRef"] = {"apiVersion": "apps/v1", "kind": "Deployment",
                                 "name": "fraud-base", "scaleDown": "onsuccess"}  # fmt: skip
    model = om({"kind": "Rollout", "name": "fraud-model", "container": "model"})
    calls = len(OPERATOR_CALLS)
    op = await start(api, start_operator, (DEPLOYMENTS, base), (ROLLOUTS, ro),
                     (SERVICES, model_service()), model=model,
                     MLWARDEN_INJECTION_CHECK_SECONDS="0.5")  # fmt: skip
    await observing(api, server)
    dep = obj(api, DEPLOYMENTS, "fraud-base")
    template = dep["spec"]["template"]
    assert [c["name"] for c in template["spec"]["containers"]] == ["model", "mlwarden-sidecar"]
    # The pods are the Rollout's: the revision is their rollouts-pod-template-hash.
    assert env_of(template)["MLWARDEN_MODEL_REVISION"]["valueFrom"] == {
        "fieldRef": {"fieldPath": "metadata.labels['rollouts-pod-template-hash']"}
    }
    assert "mlwarden.io/injected" in dep["metadata"]["annotations"]
    live = obj(api, ROLLOUTS, "fraud-model")
    assert "template" not in live["spec"] and live["spec"]["workloadRef"] == ro["spec"][
        "workloadRef"]  # fmt: skip
    assert live["status"]["workloadObservedGeneration"] == str(dep["metadata"]["generation"])
    # Argo's ReplicaSet of the current hash runs the template with the sidecar.
    rs = obj(api, "apps/v1/replicasets", f"fraud-model-{live['status']['currentPodHash']}")
    assert [c["name"] for c in rs["spec"]["template"]["spec"]["containers"]] == [
        "model", "mlwarden-sidecar"]  # fmt: skip
    assert dep["spec"]["replicas"] == 0  # Argo's scaleDown, not fought over
    mine = OPERATOR_CALLS[calls:]
    assert not [c for c in mine if c.resource.startswith("rollouts") and c.verb == "patch"]
    await eventually(lambda: "target" in status(api), what="status.target")
    assert status(api)["target"] == {
        "kind": "Rollout", "name": "fraud-model", "ref": "Rollout/fraud-model",
        "selector": "app=fraud-model", "revisionLabel": "rollouts-pod-template-hash",
        "service": "fraud-model", "template": "Deployment/fraud-base",
    }  # fmt: skip
    # The injection check (every 0.5 s here) reads the sidecar where it is, the Deployment's
    # template, from the watches (no GET while all is well): no bypass, nothing re-injected.
    before = len(OPERATOR_CALLS)
    await asyncio.sleep(3)
    assert not [c for c in OPERATOR_CALLS[before:] if c.verb == "get" and c.name == "fraud-base"]
    assert condition(status(api), "Bypassed")["status"] == "False"
    assert not {"Bypassed", "SidecarReinjected"} & set(reasons_of(api))
    assert obj(api, DEPLOYMENTS, "fraud-base")["metadata"]["generation"] == dep["metadata"][
        "generation"]  # fmt: skip

    await delete_om(api, server)
    after = obj(api, DEPLOYMENTS, "fraud-base")
    assert after["spec"]["template"] == original
    assert "mlwarden.io/injected" not in (after["metadata"].get("annotations") or {})
    assert after["spec"]["replicas"] == 0
    assert "template" not in obj(api, ROLLOUTS, "fraud-model")["spec"]
    assert await op.stop() == 0, op.log()[-3000:]


async def test_a_workload_ref_rollout_deleted_first_still_has_its_deployment_restored(
    cluster: tuple[Cluster, str], start_operator: Start
) -> None:
    """Moving back to a plain Deployment (Argo's docs) or a GitOps prune deletes the Rollout
    before the ObservedModel: the undo finds the template where status.target last saw it,
    in the Deployment that carries this model's injection record, and restores it."""
    api, server = cluster
    base = model_deployment()
    base["metadata"]["name"] = "fraud-base"
    original = copy.deepcopy(base["spec"]["template"])
    ro = workload("Rollout")
    del ro["spec"]["template"]
    ro["spec"]["workloadRef"] = {"apiVersion": "apps/v1", "kind": "Deployment",
                                 "name": "fraud-base", "scaleDown": "onsuccess"}  # fmt: skip
    model = om({"kind": "Rollout", "name": "fraud-model", "container": "model"})
    op = await start(api, start_operator, (DEPLOYMENTS, base), (ROLLOUTS, ro),
                     (SERVICES, model_service()), model=model)  # fmt: skip
    await observing(api, server)
    await eventually(lambda: "target" in status(api), what="status.target")
    containers = obj(api, DEPLOYMENTS, "fraud-base")["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["model", "mlwarden-sidecar"]
    await api_call(server, "DELETE", RO_PATH)
    await delete_om(api, server)
    after = obj(api, DEPLOYMENTS, "fraud-base")
    assert after["spec"]["template"] == original
    assert "mlwarden.io/injected" not in (after["metadata"].get("annotations") or {})
    assert await op.stop() == 0, op.log()[-3000:]


async def test_rollout_with_a_workload_ref_to_another_kind_is_refused(
    cluster: tuple[Cluster, str], start_operator: Start
) -> None:
    api, _ = cluster
    ro = workload("Rollout")
    del ro["spec"]["template"]
    ro["spec"]["workloadRef"] = {"apiVersion": "v1", "kind": "PodTemplate", "name": "base"}
    model = om({"kind": "Rollout", "name": "fraud-model", "container": "model"})
    op = await start(api, start_operator, (ROLLOUTS, ro), (SERVICES, model_service()), model=model)
    await eventually(lambda: status(api).get("phase") == "Failed", what="Failed", timeout=30)
    assert condition(status(api), "Ready")["reason"] == "WorkloadRefNotSupported"
    assert "PodTemplate" in condition(status(api), "Ready")["message"]
    await eventually(lambda: "WorkloadRefNotSupported" in reasons_of(api), what="the Event")
    await eventually(lambda: "target" in status(api), what="status.target")
    assert status(api)["target"]["ref"] == "Rollout/fraud-model"
    assert await op.stop() == 0, op.log()[-3000:]


# --------------------------------------------------------------------------- KServe


def inference_service(logger: dict[str, Any] | None = None) -> dict[str, Any]:
    predictor: dict[str, Any] = {
        "model": {"modelFormat": {"name": "sklearn"}, "storageUri": "gs://models/fraud/2"},
        "canaryTrafficPercent": 10,
    }
    if logger is not None:
        predictor["logger"] = logger
    return {
        "apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
        "metadata": {"name": "fraud", "namespace": NS, "uid": str(uuid.uuid4()),
                     "resourceVersion": "1", "generation": 1},
        "spec": {"predictor": predictor},
    }  # fmt: skip


async def test_inference_service_logger_configured_rolled_back_and_undone(
    cluster: tuple[Cluster, str], start_operator: Start
) -> None:
    api, server = cluster
    isvc = inference_service({"mode": "request", "url": "http://fraud-detector.test.svc:8080/"})
    before = copy.deepcopy(isvc["spec"])
    model = om({"kind": "InferenceService", "name": "fraud"},
               reactions=[{"alert": "CanaryRegression", "action": "rollback"}])  # fmt: skip
    op = await start(api, start_operator, (INFERENCESERVICES, isvc), model=model)

    def logger() -> Any:
        return obj(api, INFERENCESERVICES, "fraud")["spec"]["predictor"].get("logger", {})

    await eventually(lambda: logger().get("mode") == "all", what="logger", timeout=30)
    live = obj(api, INFERENCESERVICES, "fraud")
    assert live["spec"]["predictor"]["logger"] == {
        "mode": "all",
        "url": "http://fraud-detector.test.svc:8080/",
    }
    assert (
        json.loads(live["metadata"]["annotations"]["mlwarden.io/logger"])["was"]
        == (before["predictor"]["logger"])
    )
    await eventually(lambda: "LoggerConfigured" in reasons_of(api), what="the Event")
    await eventually(lambda: "target" in status(api), what="status.target")
    assert status(api)["target"] == {
        "kind": "InferenceService", "name": "fraud", "ref": "InferenceService/fraud",
        "selector": "serving.kserve.io/inferenceservice=fraud", "components": ["predictor"],
    }  # fmt: skip
    # KServe's logger sends no token: this detector runs without one.
    detector = obj(api, DEPLOYMENTS, "fraud-detector")
    assert "--ingest-token-file" not in detector["spec"]["template"]["spec"]["containers"][0][
        "args"]  # fmt: skip
    await observing(api, server)
    canary = {**alert("CanaryRegression"), "modelRevision": "canary", "baselineRevision": "default"}
    await patch_status(server, {"alerts": [canary]})
    await eventually(lambda: [r["result"] for r in reactions(api)][:1] == ["Succeeded"],
                     what="rollback Succeeded", timeout=30)  # fmt: skip
    assert obj(api, INFERENCESERVICES, "fraud")["spec"]["predictor"]["canaryTrafficPercent"] == 0
    assert (reactions(api)[0]["from"], reactions(api)[0]["to"]) == ("10", "0")

    await delete_om(api, server)
    after = obj(api, INFERENCESERVICES, "fraud")
    assert after["spec"]["predictor"]["logger"] == before["predictor"]["logger"]
    assert "mlwarden.io/logger" not in (after["metadata"].get("annotations") or {})
    assert await op.stop() == 0, op.log()[-3000:]


async def test_a_timer_pass_in_flight_when_the_model_is_deleted_does_not_hold_it(
    cluster: tuple[Cluster, str], start_operator: Start
) -> None:
    """kopf keeps the finalizer until the ObservedModel's timers have exited. A pass still
    waiting on the API when the deletion comes (here the injection check's read of the
    InferenceService, answered 3 s late) exits once its read returns; kopf looks again after
    `background.cancellation_polling`: 60 s by default, with no event to wake it if the pass
    writes nothing. The operator looks again after MLWARDEN_RETRY_SECONDS."""
    api, server = cluster
    isvc = inference_service({"mode": "request", "url": "http://fraud-detector.test.svc:8080/"})
    model = om({"kind": "InferenceService", "name": "fraud"})
    op = await start(api, start_operator, (INFERENCESERVICES, isvc), model=model,
                     MLWARDEN_INJECTION_CHECK_SECONDS="0.5")  # fmt: skip
    await eventually(lambda: status(api).get("phase") == "WarmingUp", what="WarmingUp", timeout=30)
    slow = Fault("get", "inferenceservices", status=0, delay=3.0, name="fraud")
    api.faults = [slow]
    await eventually(lambda: slow.hits, what="the injection check reading the InferenceService")
    await api_call(
        server, "DELETE", f"/apis/mlwarden.io/v1alpha1/namespaces/{NS}/observedmodels/fraud"
    )
    await eventually(lambda: not exists(api, OM, "fraud"), timeout=10,
                     what="released once the pass is over")  # fmt: skip
    assert obj(api, INFERENCESERVICES, "fraud")["spec"]["predictor"]["logger"]["mode"] == "request"
    assert await op.stop() == 0, op.log()[-3000:]


# --------------------------------------------------------------------------- gRPC ports


async def test_a_grpc_port_is_not_rerouted_without_v2_grpc(
    cluster: tuple[Cluster, str], start_operator: Start
) -> None:
    api, _ = cluster
    service = model_service()
    service["spec"]["ports"][0]["appProtocol"] = "grpc"
    model = om({"deployment": "fraud-model", "container": "model"})
    op = await start(api, start_operator, (DEPLOYMENTS, model_deployment()), (SERVICES, service),
                     model=model)  # fmt: skip
    await eventually(lambda: status(api).get("phase") == "Failed", what="Failed", timeout=30)
    ready = condition(status(api), "Ready")
    assert ready["reason"] == "GrpcPortNotProxied"
    assert "spec.protocol: v2-grpc" in ready["message"]
    await eventually(lambda: "GrpcPortNotProxied" in reasons_of(api), what="the Event")
    dep = obj(api, DEPLOYMENTS, "fraud-model")
    assert [c["name"] for c in dep["spec"]["template"]["spec"]["containers"]] == ["model"]
    assert obj(api, SERVICES, "fraud-model")["spec"] == service["spec"]
    assert await op.stop() == 0, op.log()[-3000:]
