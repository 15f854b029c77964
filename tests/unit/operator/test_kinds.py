"""Targets by kind: StatefulSet and Argo Rollout pod templates, KServe's logger, gRPC ports.

The planners are pure; these tests hand them the objects as the API returns them (the
StatefulSet's and Rollout's status fields as their controllers write them) and apply the
merge patches with an RFC 7386 applier.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest

from mlwarden.names import INJECTED_ANNOTATION, SIDECAR_CONTAINER, revision_field
from mlwarden.operator import kserve
from mlwarden.operator.injection import (
    InjectionError,
    plan_injection,
    plan_removal,
    rollout_complete,
    workload_ref,
)
from mlwarden.operator.settings import OperatorSettings
from mlwarden.spec import ObservedModel, parse_observed_model

from .test_injection import target_deployment, target_service

Patch = Callable[[Any, Any], Any]
MakeBody = Callable[..., dict[str, Any]]


def workload(kind: str) -> dict[str, Any]:
    obj = target_deployment()
    obj["kind"] = kind
    if kind == "StatefulSet":
        obj["apiVersion"] = "apps/v1"
        obj["spec"].pop("strategy", None)
        obj["spec"]["serviceName"] = "fraud-model"
        obj["spec"]["updateStrategy"] = {"type": "RollingUpdate"}
        obj["status"] = {
            "observedGeneration": 4, "replicas": 3, "updatedReplicas": 3, "readyReplicas": 3,
            "availableReplicas": 3, "currentRevision": "fraud-model-5d8f", "updateRevision":
            "fraud-model-5d8f",
        }  # fmt: skip
    if kind == "Rollout":
        obj["apiVersion"] = "argoproj.io/v1alpha1"
        obj["spec"].pop("strategy", None)
        obj["spec"]["strategy"] = {"canary": {"steps": [{"setWeight": 20}, {"pause": {}}]}}
        obj["status"] = {
            "observedGeneration": "7c9f", "replicas": 3, "updatedReplicas": 3,
            "availableReplicas": 3, "currentPodHash": "6b8f", "stableRS": "6b8f",
            "phase": "Healthy",
        }  # fmt: skip
    return obj


def model_of(make_body: MakeBody, kind: str, **spec: Any) -> ObservedModel:
    target = {"kind": kind, "name": "fraud-model", "container": "model"}
    return parse_observed_model(make_body(target=target, **spec))


@pytest.mark.parametrize("kind", ["StatefulSet", "Rollout"])
def test_pod_template_kinds_inject_and_undo_like_a_deployment(
    kind: str, make_body: MakeBody, settings: OperatorSettings, merge_patch: Patch
) -> None:
    model = model_of(make_body, kind)
    obj, service = workload(kind), target_service(by_name=True)
    plan = plan_injection(deployment=obj, service=service, model=model, settings=settings)
    assert plan.state == "injecting"
    assert plan.message.startswith(f"{kind} ml/fraud-model:")
    assert plan.deployment_patch is not None
    injected = merge_patch(copy.deepcopy(obj), plan.deployment_patch)
    containers = injected["spec"]["template"]["spec"]["containers"]
    sidecar = next(c for c in containers if c["name"] == SIDECAR_CONTAINER)
    env = {e["name"]: e for e in sidecar["env"]}
    assert env["MLWARDEN_MODEL_REVISION"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        revision_field(kind)
    )
    # the owner's other fields are not touched: partition, strategy, serviceName
    assert injected["spec"].get("updateStrategy") == obj["spec"].get("updateStrategy")
    assert injected["spec"].get("strategy") == obj["spec"].get("strategy")
    removal = plan_removal(deployment=injected, service=service)
    assert removal.deployment_patch is not None
    back = merge_patch(copy.deepcopy(injected), removal.deployment_patch)
    assert back["spec"]["template"] == obj["spec"]["template"]
    assert INJECTED_ANNOTATION not in (back["metadata"].get("annotations") or {})


def test_revision_variables_by_kind() -> None:
    assert revision_field("Deployment") == "metadata.labels['pod-template-hash']"
    assert revision_field("StatefulSet") == "metadata.labels['controller-revision-hash']"
    assert revision_field("Rollout") == "metadata.labels['rollouts-pod-template-hash']"


def test_statefulset_rollout_complete_follows_its_revisions() -> None:
    sts = workload("StatefulSet")
    assert rollout_complete(sts)
    sts["status"]["updateRevision"] = "fraud-model-77aa"
    assert not rollout_complete(sts)  # a partition holds pods on the current revision


def test_statefulset_partition_is_reported_and_never_changed(
    make_body: MakeBody, settings: OperatorSettings, merge_patch: Patch
) -> None:
    model = model_of(make_body, "StatefulSet")
    sts = workload("StatefulSet")
    sts["spec"]["updateStrategy"] = {"type": "RollingUpdate", "rollingUpdate": {"partition": 2}}
    service = target_service(by_name=True)
    plan = plan_injection(deployment=sts, service=service, model=model, settings=settings)
    assert plan.deployment_patch is not None
    assert "updateStrategy" not in plan.deployment_patch["spec"]
    injected = merge_patch(copy.deepcopy(sts), plan.deployment_patch)
    injected["status"]["updateRevision"] = "fraud-model-77aa"  # pods 2.. updated, 0-1 not
    waiting = plan_injection(deployment=injected, service=service, model=model, settings=settings)
    assert waiting.state == "waiting-for-rollout"
    assert "rollingUpdate.partition 2" in waiting.message
    assert "does not change it" in waiting.message


def test_rollout_complete_only_once_promoted() -> None:
    ro = workload("Rollout")
    assert rollout_complete(ro)  # a string observedGeneration is Argo's, not compared
    ro["status"].update(currentPodHash="7d1e", phase="Paused")
    assert not rollout_complete(ro)


def test_rollout_with_workload_ref_is_injected_through_its_deployment(
    make_body: MakeBody, settings: OperatorSettings, merge_patch: Patch
) -> None:
    ro = workload("Rollout")
    del ro["spec"]["template"]
    ro["spec"]["workloadRef"] = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "base"}
    base = target_deployment()
    base["metadata"]["name"] = "base"
    assert workload_ref(ro) == "base"
    assert workload_ref(base) is None and workload_ref(workload("Rollout")) is None
    model, service = model_of(make_body, "Rollout"), target_service(by_name=True)
    # Planned on the Rollout itself, the template is not there: refused, never patched.
    with pytest.raises(InjectionError, match="workloadRef") as info:
        plan_injection(deployment=ro, service=service, model=model, settings=settings)
    assert info.value.reason == "WorkloadRefNotSupported"

    plan = plan_injection(deployment=base, service=service, model=model, settings=settings,
                          rollout=ro)  # fmt: skip
    assert plan.state == "injecting" and plan.deployment_patch is not None
    assert "(the pod template of Rollout ml/fraud-model, spec.workloadRef)" in plan.message
    injected = merge_patch(copy.deepcopy(base), plan.deployment_patch)
    sidecar = injected["spec"]["template"]["spec"]["containers"][-1]
    env = {e["name"]: e for e in sidecar["env"]}
    assert env["MLWARDEN_MODEL_REVISION"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.labels['rollouts-pod-template-hash']"  # the pods are the Rollout's
    )
    assert "replicas" not in plan.deployment_patch["spec"]  # Argo's scaleDown owns them
    injected["metadata"]["generation"] = 5
    injected["status"]["observedGeneration"] = 5
    # Argo has not read generation 5 yet: waiting, and saying so.
    ro["status"]["workloadObservedGeneration"] = "4"
    waiting = plan_injection(deployment=injected, service=service, model=model,
                             settings=settings, rollout=ro)  # fmt: skip
    assert waiting.state == "waiting-for-rollout"
    assert "status.workloadObservedGeneration is 4" in waiting.message
    ro["status"].update(workloadObservedGeneration="5", currentPodHash="7d1e", phase="Paused",
                        message="CanaryPauseStep")  # fmt: skip
    waiting = plan_injection(deployment=injected, service=service, model=model,
                             settings=settings, rollout=ro)  # fmt: skip
    assert waiting.state == "waiting-for-rollout" and "Rollout is Paused" in waiting.message
    ro["status"].update(stableRS="7d1e", phase="Healthy")
    done = plan_injection(deployment=injected, service=service, model=model, settings=settings,
                          rollout=ro)  # fmt: skip
    assert done.state == "injected", done.message


def test_a_workload_ref_to_another_kind_is_refused() -> None:
    ro = workload("Rollout")
    del ro["spec"]["template"]
    ro["spec"]["workloadRef"] = {"apiVersion": "v1", "kind": "PodTemplate", "name": "base"}
    with pytest.raises(InjectionError, match="PodTemplate") as info:
        workload_ref(ro)
    assert info.value.reason == "WorkloadRefNotSupported"


def test_argo_managed_selector_hash_is_not_a_mismatch(
    make_body: MakeBody, settings: OperatorSettings
) -> None:
    service = target_service(by_name=True)
    service["spec"]["selector"]["rollouts-pod-template-hash"] = "6b8f"
    plan = plan_injection(
        deployment=workload("Rollout"),
        service=service,
        model=model_of(make_body, "Rollout"),
        settings=settings,
    )
    assert plan.state == "injecting"


@pytest.mark.parametrize(
    "port",
    [
        {"name": "http", "port": 80, "targetPort": "http", "appProtocol": "grpc"},
        {"name": "http", "port": 80, "targetPort": "http", "appProtocol": "kubernetes.io/h2c"},
        {"name": "grpc-infer", "port": 80, "targetPort": 8080},
    ],
)
def test_a_grpc_port_is_not_rerouted_through_the_http_listener(
    port: dict[str, Any], model: ObservedModel, make_body: MakeBody, settings: OperatorSettings
) -> None:
    service = target_service(by_name=True)
    service["spec"]["ports"][0] = port
    with pytest.raises(InjectionError, match="carries gRPC") as info:
        plan_injection(deployment=target_deployment(), service=service, model=model,
                       settings=settings)  # fmt: skip
    assert info.value.reason == "GrpcPortNotProxied"
    assert "spec.protocol is 'v2'" in str(info.value)
    grpc = parse_observed_model(
        make_body(target={"deployment": "fraud-model", "container": "model"}, protocol="v2-grpc")
    )
    plan = plan_injection(
        deployment=target_deployment(), service=service, model=grpc, settings=settings
    )
    assert plan.state == "injecting"


# --------------------------------------------------------------------------- KServe


def isvc(logger: dict[str, Any] | None = None) -> dict[str, Any]:
    predictor: dict[str, Any] = {
        "model": {"modelFormat": {"name": "sklearn"}, "storageUri": "gs://m/fraud"}
    }
    if logger is not None:
        predictor["logger"] = logger
    return {
        "apiVersion": kserve.API_VERSION,
        "kind": "InferenceService",
        "metadata": {"name": "fraud", "namespace": "ml", "resourceVersion": "12"},
        "spec": {"predictor": predictor, "canaryTrafficPercent": 10},
    }


def isvc_model(make_body: MakeBody) -> ObservedModel:
    return parse_observed_model(make_body(target={"kind": "InferenceService", "name": "fraud"}))


@pytest.mark.parametrize("before", [None, {"mode": "request", "metadataHeaders": ["x-id"]}])
def test_kserve_logger_configured_and_undone_exactly(
    before: dict[str, Any] | None, make_body: MakeBody, merge_patch: Patch
) -> None:
    model = isvc_model(make_body)
    obj = isvc(copy.deepcopy(before))
    plan = kserve.plan_logger(obj, model, 8080)
    assert plan.state == "configuring" and plan.patch is not None
    on = merge_patch(copy.deepcopy(obj), plan.patch)
    assert on["spec"]["predictor"]["logger"] == {
        "mode": "all",
        "url": "http://fraud-detector.ml.svc:8080/",
    }
    assert on["spec"]["canaryTrafficPercent"] == 10  # KServe's own fields untouched
    record = json.loads(on["metadata"]["annotations"][kserve.LOGGER_ANNOTATION])
    assert record == {"model": "fraud", "was": before}
    assert kserve.plan_logger(on, model, 8080).state == "injected"
    undo = kserve.plan_logger_removal(on)
    assert undo.patch is not None
    back = merge_patch(copy.deepcopy(on), undo.patch)
    assert back["spec"] == obj["spec"]
    assert kserve.LOGGER_ANNOTATION not in (back["metadata"].get("annotations") or {})
    assert kserve.plan_logger_removal(back).state == "removed"


def test_kserve_logger_of_someone_else_is_not_taken_over(make_body: MakeBody) -> None:
    obj = isvc({"mode": "all", "url": "http://their-collector/"})
    with pytest.raises(InjectionError, match="already sends to") as info:
        kserve.plan_logger(obj, isvc_model(make_body), 8080)
    assert info.value.reason == "LoggerInUse"


def test_kserve_logger_changed_by_another_writer_is_set_again(
    make_body: MakeBody, merge_patch: Patch
) -> None:
    model = isvc_model(make_body)
    plan = kserve.plan_logger(isvc(), model, 8080)
    assert plan.patch is not None
    on = merge_patch(isvc(), plan.patch)
    on["spec"]["predictor"]["logger"]["mode"] = "request"
    again = kserve.plan_logger(on, model, 8080)
    assert again.state == "configuring"
    assert again.patch is not None
    fixed = merge_patch(copy.deepcopy(on), again.patch)
    assert json.loads(fixed["metadata"]["annotations"][kserve.LOGGER_ANNOTATION])["was"] is None


def test_rollout_with_argo_string_observed_generation_is_planned(
    make_body: MakeBody, settings: OperatorSettings, merge_patch: Patch
) -> None:
    """Argo writes status.observedGeneration as a string (older versions: a hash)."""
    model = model_of(make_body, "Rollout")
    ro, service = workload("Rollout"), target_service(by_name=True)
    plan = plan_injection(deployment=ro, service=service, model=model, settings=settings)
    assert plan.deployment_patch is not None
    injected = merge_patch(copy.deepcopy(ro), plan.deployment_patch)
    injected["status"].update(currentPodHash="9a9a", phase="Paused", message="CanaryPauseStep")
    waiting = plan_injection(deployment=injected, service=service, model=model, settings=settings)
    assert waiting.state == "waiting-for-rollout"
    assert "Rollout is Paused: CanaryPauseStep" in waiting.message
