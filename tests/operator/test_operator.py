"""The real operator (`mlwarden operator`, kopf) against kmock's API emulator over HTTP."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from cluster import (
    DEPLOYMENTS,
    NS,
    OM,
    SERVICES,
    Cluster,
    api_call,
    condition,
    events,
    eventually,
    exists,
    model_deployment,
    model_service,
    obj,
    observed_model,
    reasons,
    status,
)
from kubernetes_validate import validate

DETECTOR_KINDS = {
    "v1/configmaps": "ConfigMap",
    "v1/serviceaccounts": "ServiceAccount",
    "rbac.authorization.k8s.io/v1/roles": "Role",
    "rbac.authorization.k8s.io/v1/rolebindings": "RoleBinding",
    "apps/v1/deployments": "Deployment",
    "v1/services": "Service",
}
BOOKKEEPING = ("resourceVersion", "generation", "managedFields", "annotations")


def strip(o: dict[str, Any]) -> dict[str, Any]:
    """An object without what the API server and controllers change on their own."""
    o = json.loads(json.dumps(o, default=dict))  # kmock's ObjectVersion -> plain dicts
    o.pop("status", None)
    for key in BOOKKEEPING:
        o.get("metadata", {}).pop(key, None)
    return o


async def test_reconcile_creates_the_detector_and_injects_the_sidecar(
    cluster: tuple[Cluster, str], warming_up: Callable[..., Any]
) -> None:
    api, _server = cluster
    op = await warming_up()
    om = obj(api, OM, "fraud")
    for resource, kind in DETECTOR_KINDS.items():
        o = obj(api, resource, "fraud-detector")
        assert o["kind"] == kind
        (owner,) = o["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["name"], owner["uid"]) == (
            "ObservedModel",
            "fraud",
            om["metadata"]["uid"],
        )
        validate(strip(o), "1.30", strict=True)
    role = obj(api, "rbac.authorization.k8s.io/v1/roles", "fraud-detector")
    assert role["rules"] == [
        {
            "apiGroups": ["mlwarden.io"],
            "resources": ["observedmodels/status"],
            "resourceNames": ["fraud"],
            "verbs": ["get", "patch"],
        },
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "resourceNames": ["fraud-reference"],
            "verbs": ["get", "patch"],
        },
    ]

    target = obj(api, DEPLOYMENTS, "fraud-model")
    containers = target["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["model", "mlwarden-sidecar"]
    sidecar = containers[1]
    env = {e["name"]: e.get("value") for e in sidecar["env"]}
    assert env["MLWARDEN_COLLECTOR"] == "http://fraud-detector.test.svc:8080"
    assert env["MLWARDEN_UPSTREAM"] == "http://127.0.0.1:8080"
    # The revision each record carries: the pod's pod-template-hash, by the Downward API.
    (revision,) = [e for e in sidecar["env"] if e["name"] == "MLWARDEN_MODEL_REVISION"]
    assert revision["valueFrom"] == {
        "fieldRef": {"fieldPath": "metadata.labels['pod-template-hash']"}
    }
    assert {"name": "http", "containerPort": 18080}.items() <= sidecar["ports"][0].items()
    assert sidecar["securityContext"]["readOnlyRootFilesystem"] is True
    assert "finalizers" not in target["metadata"]  # never on users' objects
    validate(strip(target), "1.30", strict=True)
    assert obj(api, SERVICES, "fraud-model")["spec"]["ports"][0]["targetPort"] == "http"

    st = status(api)
    assert condition(st, "Ready")["status"] == "True"
    assert condition(st, "Drifting")["status"] == "False"
    assert st["observedGeneration"] == 1 and st["alertCount"] == 0
    assert "PhaseWarmingUp" in reasons(api)
    assert await op.stop() == 0, op.log()[-3000:]


async def test_reconcile_is_idempotent_across_restarts(
    cluster: tuple[Cluster, str], warming_up: Callable[..., Any], start_operator: Callable[..., Any]
) -> None:
    api, _ = cluster
    op = await warming_up()
    await op.stop()
    versions = {r: obj(api, r, "fraud-detector")["metadata"]["resourceVersion"]
                for r in DETECTOR_KINDS}  # fmt: skip
    target_version = obj(api, DEPLOYMENTS, "fraud-model")["metadata"]["resourceVersion"]

    op = await start_operator()  # resume: everything is already there
    # The resume handler must have run (and found nothing to do) before versions are compared.
    await eventually(lambda: "Resuming is processed: 1 succeeded" in op.log(), what="resume")
    await _settle(op, seconds=1.0)
    assert {r: obj(api, r, "fraud-detector")["metadata"]["resourceVersion"]
            for r in DETECTOR_KINDS} == versions  # fmt: skip
    assert obj(api, DEPLOYMENTS, "fraud-model")["metadata"]["resourceVersion"] == target_version


async def _settle(op: Any, seconds: float = 3.0) -> None:
    import asyncio

    await asyncio.sleep(seconds)
    assert op.proc.returncode is None, op.log()[-3000:]


async def test_an_invalid_spec_fails_with_the_field_and_the_others_are_served(
    cluster: tuple[Cluster, str], start_operator: Callable[..., Any], seed: Callable[..., None]
) -> None:
    api, _ = cluster
    bad = observed_model("bad", detectors={"drift": {"pValue": 1.5}})
    seed(api, model_deployment(), model_service(), bad, observed_model("good"))
    await start_operator()
    await eventually(lambda: status(api, "bad").get("phase") == "Failed", what="bad: Failed")
    st = status(api, "bad")
    assert "spec.detectors.drift.pValue: must be in (0, 1), got 1.5" in st["message"]
    ready = condition(st, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert "InvalidSpec" in reasons(api)
    await eventually(lambda: status(api, "good").get("phase") == "WarmingUp", what="good served")


async def test_missing_targets_are_pending_then_picked_up(
    cluster: tuple[Cluster, str], start_operator: Callable[..., Any], seed: Callable[..., None]
) -> None:
    api, server = cluster
    seed(api, observed_model())
    await start_operator()
    await eventually(lambda: status(api).get("phase") == "Pending", what="Pending")
    st = status(api)
    assert "Deployment test/fraud-model" in st["message"] and "not found" in st["message"]
    assert condition(st, "Ready")["reason"] == "TargetNotFound"
    await api_call(server, "POST", f"/apis/apps/v1/namespaces/{NS}/deployments",
                   model_deployment())  # fmt: skip
    await api_call(server, "POST", f"/api/v1/namespaces/{NS}/services", model_service())
    await eventually(lambda: status(api).get("phase") == "WarmingUp", timeout=30,
                     what="picked up once the targets exist")  # fmt: skip


async def test_numeric_target_port_takes_two_steps_without_a_gap(
    cluster: tuple[Cluster, str], start_operator: Callable[..., Any], seed: Callable[..., None]
) -> None:
    api, _ = cluster
    api.instant_rollouts = False
    seed(api, model_deployment(port_name=None), model_service(target=8080), observed_model())
    op = await start_operator()
    await eventually(lambda: len(obj(api, DEPLOYMENTS, "fraud-model")["spec"]["template"]["spec"][
        "containers"]) == 2, what="sidecar added")  # fmt: skip
    # While the rollout runs the Service still targets the model's number on every pod.
    await _settle_seconds(2)
    assert obj(api, SERVICES, "fraud-model")["spec"]["ports"][0]["targetPort"] == 8080
    assert status(api)["phase"] == "Pending"
    api.finish_rollouts()
    await eventually(lambda: isinstance(obj(api, SERVICES, "fraud-model")["spec"]["ports"][0][
        "targetPort"], str), timeout=30, what="Service repointed by name")  # fmt: skip
    await eventually(lambda: status(api).get("phase") == "WarmingUp", what="injected")
    # Waiting for the rollout is not an error: no ERROR line, no Warning Event from kopf.
    assert "fraud pending: " in op.log()
    assert "failed temporarily" not in op.log()
    assert not [e for e in events(api) if e.get("type") == "Warning"], events(api)


async def _settle_seconds(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


@pytest.mark.parametrize("numeric", [False, True])
async def test_deletion_restores_the_target_exactly(
    numeric: bool,
    cluster: tuple[Cluster, str],
    warming_up: Callable[..., Any],
) -> None:
    api, server = cluster
    deployment = model_deployment(port_name=None if numeric else "http")
    service = model_service(target=8080 if numeric else "http")
    await warming_up(deployment=deployment, service=service)
    await api_call(
        server, "DELETE", f"/apis/mlwarden.io/v1alpha1/namespaces/{NS}/observedmodels/fraud"
    )
    await eventually(lambda: not exists(api, OM, "fraud"), timeout=30, what="finalizer released")
    assert strip(obj(api, DEPLOYMENTS, "fraud-model")) == strip(deployment)
    assert strip(obj(api, SERVICES, "fraud-model")) == strip(service)
    assert "SidecarRemoved" in reasons(api)


async def test_detector_alerts_become_phase_conditions_and_events(
    cluster: tuple[Cluster, str], warming_up: Callable[..., Any]
) -> None:
    api, server = cluster
    await warming_up()
    om_status = f"/apis/mlwarden.io/v1alpha1/namespaces/{NS}/observedmodels/fraud/status"
    reference = {"id": "warmup@abc", "since": "2026-11-26T15:00:00Z"}
    # What the detector writes (its merge patch on the status subresource):
    await api_call(server, "PATCH", om_status, {"status": {"alerts": [], "detector": {
        "reference": reference, "updated": "2026-11-26T15:00:00Z"}}},
        "application/merge-patch+json")  # fmt: skip
    await eventually(lambda: status(api).get("phase") == "Observing", what="Observing")
    alert = {"type": "FeatureDrift", "feature": "amount", "test": "ks", "statistic": 0.31,
             "pValue": 1.2e-9, "threshold": 0.01, "since": "2026-11-26T15:01:00Z",
             "reference": "warmup@abc"}  # fmt: skip
    await api_call(server, "PATCH", om_status, {"status": {"alerts": [alert]}},
                   "application/merge-patch+json")  # fmt: skip
    await eventually(lambda: status(api).get("phase") == "Degraded", what="Degraded")
    st = status(api)
    drifting = condition(st, "Drifting")
    assert (drifting["status"], drifting["reason"]) == ("True", "FeatureDrift")
    assert "FeatureDrift on amount (ks)" in drifting["message"]
    assert st["alertCount"] == 1
    # kopf posts Events from a queue of its own: the Event may land after the status patch.
    fired = await eventually(
        lambda: [e for e in events(api) if e.get("reason") == "AlertFired"], what="AlertFired"
    )
    assert "FeatureDrift on amount" in fired[0]["message"]
    assert fired[0]["type"] == "Warning"
    await api_call(server, "PATCH", om_status, {"status": {"alerts": []}},
                   "application/merge-patch+json")  # fmt: skip
    await eventually(lambda: status(api).get("phase") == "Observing", what="back to Observing")
    assert "AlertResolved" in reasons(api)
