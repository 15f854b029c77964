"""Where the Service's traffic lands in the template's pods, after the injection and after
the writers that undo it (a rollout undo, a GitOps re-apply, a reset Service)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from mlwarden.operator.injection import plan_injection
from mlwarden.operator.settings import OperatorSettings
from mlwarden.operator.traffic import (
    NO_ENDPOINTS,
    PORT_RENAMED_BACK,
    SERVICE_BYPASSES_SIDECAR,
    SIDECAR_REMOVED,
    assess,
    landings,
)
from mlwarden.spec import ObservedModel

Obj = dict[str, Any]


def deployment(*, port_name: str | None) -> Obj:
    port: Obj = {"containerPort": 8080}
    if port_name:
        port["name"] = port_name
    return {
        "kind": "Deployment",
        "metadata": {"name": "fraud-model", "namespace": "ml", "generation": 1},
        "spec": {
            "replicas": 2,
            "template": {
                "metadata": {"labels": {"app": "fraud-model"}},
                "spec": {"containers": [{"name": "model", "image": "m:1", "ports": [port]}]},
            },
        },
        "status": {"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2,
                   "availableReplicas": 2},
    }  # fmt: skip


def service(target: int | str) -> Obj:
    return {
        "kind": "Service",
        "metadata": {"name": "fraud-model", "namespace": "ml"},
        "spec": {"selector": {"app": "fraud-model"},
                 "ports": [{"name": "http", "port": 80, "targetPort": target}]},
    }  # fmt: skip


def injected(
    dep: Obj, svc: Obj, model: ObservedModel, settings: OperatorSettings, patch: Callable[..., Any]
) -> tuple[Obj, Obj]:
    for _ in range(5):
        plan = plan_injection(deployment=dep, service=svc, model=model, settings=settings)
        if plan.done:
            return dep, svc
        if plan.deployment_patch:
            dep = patch(dep, plan.deployment_patch)
        if plan.service_patch:
            svc = patch(svc, plan.service_patch)
    raise AssertionError("never injected")


@pytest.mark.parametrize(("port_name", "target"), [("http", "http"), (None, 8080)])
def test_after_the_injection_traffic_passes_the_sidecar(
    port_name: str | None,
    target: int | str,
    model: ObservedModel,
    settings: OperatorSettings,
    merge_patch: Callable[..., Any],
) -> None:
    before = deployment(port_name=port_name), service(target)
    assert assess(deployment=before[0], service=before[1], model_container="model") is not None
    dep, svc = injected(*before, model, settings, merge_patch)
    assert assess(deployment=dep, service=svc, model_container="model") is None
    (landing,) = landings(deployment=dep, service=svc)
    assert (landing.container, landing.number) == ("mlwarden-sidecar", settings.sidecar_port)


def test_a_rollout_undo_in_case_b_leaves_the_service_without_endpoints(
    model: ObservedModel, settings: OperatorSettings, merge_patch: Callable[..., Any]
) -> None:
    original = deployment(port_name=None)
    _, svc = injected(original, service(8080), model, settings, merge_patch)
    verdict = assess(deployment=original, service=svc, model_container="model")
    assert verdict is not None and verdict.reason == NO_ENDPOINTS
    assert "'mlwarden-proxy'" in verdict.message and "no endpoint" in verdict.message


def test_a_rollout_undo_in_case_a_bypasses_the_sidecar(
    model: ObservedModel, settings: OperatorSettings, merge_patch: Callable[..., Any]
) -> None:
    original = deployment(port_name="http")
    _, svc = injected(original, service("http"), model, settings, merge_patch)
    verdict = assess(deployment=original, service=svc, model_container="model")
    assert verdict is not None and verdict.reason == SIDECAR_REMOVED


def test_a_gitops_reapply_renaming_the_port_back(
    model: ObservedModel, settings: OperatorSettings, merge_patch: Callable[..., Any]
) -> None:
    dep, svc = injected(deployment(port_name="http"), service("http"), model, settings, merge_patch)
    reapplied = copy.deepcopy(dep)
    reapplied["spec"]["template"]["spec"]["containers"][0]["ports"][0]["name"] = "http"
    verdict = assess(deployment=reapplied, service=svc, model_container="model")
    assert verdict is not None and verdict.reason == PORT_RENAMED_BACK
    assert "resolves to container 'model'" in verdict.message


def test_a_service_reset_to_the_model_number(
    model: ObservedModel, settings: OperatorSettings, merge_patch: Callable[..., Any]
) -> None:
    dep, _ = injected(deployment(port_name=None), service(8080), model, settings, merge_patch)
    verdict = assess(deployment=dep, service=service(8080), model_container="model")
    assert verdict is not None and verdict.reason == SERVICE_BYPASSES_SIDECAR
