"""Other people's objects are never taken, and deletion never strands a model.

The real operator against the emulator. An object that happens to carry one of the names the
operator creates (`NAME-detector`, `NAME-reference`, `NAME-ingest-token`) but is not owned by
the ObservedModel is left exactly as it was (same resourceVersion, no ownerReference added),
nothing is injected, and the ObservedModel says why (Failed, reason NameConflict, an Event).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from cluster import (
    DEPLOYMENTS,
    NS,
    OM,
    OPERATOR_CALLS,
    RESOURCES,
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
    status,
)

FOREIGN = {
    "ConfigMap": {"data": {"owner": "the payments team"}},
    "Deployment": {
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "theirs"}},
            "template": {
                "metadata": {"labels": {"app": "theirs"}},
                "spec": {"containers": [{"name": "app", "image": "theirs:1"}]},
            },
        }
    },
    "Secret": {"type": "Opaque", "data": {"token": "dGhlaXJz"}},
}
API_VERSIONS = {"ConfigMap": "v1", "Secret": "v1", "Deployment": "apps/v1"}


def foreign(kind: str, name: str) -> dict[str, Any]:
    """Somebody else's object: no ownerReference to any ObservedModel."""
    return {
        "apiVersion": API_VERSIONS[kind],
        "kind": kind,
        "metadata": {
            "name": name,
            "namespace": NS,
            "uid": str(uuid.uuid4()),
            "resourceVersion": "7",
            "labels": {"team": "payments"},
        },
        **FOREIGN[kind],
    }


@pytest.mark.parametrize(
    ("kind", "name"),
    [
        ("ConfigMap", "fraud-detector"),
        ("Deployment", "fraud-detector"),
        ("ConfigMap", "fraud-reference"),
        ("Secret", "fraud-ingest-token"),
    ],
)
async def test_an_object_of_our_name_that_we_do_not_own_is_left_alone(
    kind: str,
    name: str,
    cluster: tuple[Cluster, str],
    start_operator: Callable[..., Any],
    seed: Callable[..., None],
) -> None:
    api, _ = cluster
    theirs = foreign(kind, name)
    seed(api, model_deployment(), model_service(), theirs, observed_model())
    target_version = obj(api, DEPLOYMENTS, "fraud-model")["metadata"]["resourceVersion"]
    await start_operator(env={"MLWARDEN_RETRY_SECONDS": "0.5"})

    await eventually(lambda: status(api).get("phase") == "Failed", timeout=30, what="Failed")
    st = status(api)
    ready = condition(st, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "NameConflict")
    assert f"{kind} {NS}/{name} already exists" in ready["message"], st
    assert "rename or delete" in ready["message"]
    # kopf posts Events from a queue of its own: one may land a moment after the status.
    warned = await eventually(
        lambda: [e for e in events(api) if e.get("reason") == "NameConflict"],
        what="the NameConflict Event",
    )
    assert f"{kind} {NS}/{name}" in warned[0]["message"]
    assert warned[0]["type"] == "Warning"

    after = obj(api, RESOURCES[kind], name)
    assert after["metadata"]["resourceVersion"] == "7"  # never written
    assert "ownerReferences" not in after["metadata"]
    assert len(api.objects[RESOURCES[kind], NS, name].history) == 1
    # Nothing injected: the sidecar would read their ConfigMap, ship to their Service.
    assert obj(api, DEPLOYMENTS, "fraud-model")["metadata"]["resourceVersion"] == target_version
    # Nor anything else created under our names while one of them is taken.
    if kind != "Secret":
        assert not [
            key
            for key in api.objects
            if str(key[0].plural) != "events"
            and str(key[2]).startswith("fraud-")
            and key[2] != "fraud-model"
            and key[2] != name
        ]


async def test_once_the_other_object_is_gone_the_model_is_observed(
    cluster: tuple[Cluster, str], start_operator: Callable[..., Any], seed: Callable[..., None]
) -> None:
    api, server = cluster
    seed(api, model_deployment(), model_service(), foreign("ConfigMap", "fraud-detector"),
         observed_model())  # fmt: skip
    await start_operator(env={"MLWARDEN_RETRY_SECONDS": "0.5"})  # checked again every 3 s
    await eventually(lambda: status(api).get("phase") == "Failed", timeout=30, what="Failed")
    await api_call(server, "DELETE", f"/api/v1/namespaces/{NS}/configmaps/fraud-detector")
    await eventually(lambda: status(api).get("phase") == "WarmingUp", timeout=30,
                     what="observed once the name is free")  # fmt: skip
    (owner,) = obj(api, RESOURCES["ConfigMap"], "fraud-detector")["metadata"]["ownerReferences"]
    assert owner["uid"] == obj(api, OM, "fraud")["metadata"]["uid"]
    assert condition(status(api), "Ready")["status"] == "True"


async def test_the_ingest_token_secret_we_create_is_recorded_as_ours(
    cluster: tuple[Cluster, str], warming_up: Callable[..., Any], start_operator: Callable[..., Any]
) -> None:
    api, _ = cluster
    op = await warming_up()
    secret = obj(api, RESOURCES["Secret"], "fraud-ingest-token")
    assert status(api)["ingestToken"] == {
        "secret": "fraud-ingest-token",
        "uid": secret["metadata"]["uid"],
    }
    await op.stop()
    # A restart meets the Secret (409 on create) and knows it for its own from the record.
    op = await start_operator()
    await eventually(lambda: "Resuming is processed: 1 succeeded" in op.log(), what="resume")
    assert status(api)["phase"] == "WarmingUp"
    assert obj(api, OM, "fraud")["status"]["injection"]["state"] == "injected"


# --------------------------------------------------------------------------- deletion


def namespace_exists(api: Cluster) -> bool:
    try:
        return not api.objects["v1/namespaces", None, NS].deleted
    except KeyError:
        return False


async def test_a_deleted_namespace_does_not_wait_on_our_finalizer(
    cluster: tuple[Cluster, str], warming_up: Callable[..., Any]
) -> None:
    api, _ = cluster
    op = await warming_up(env={"MLWARDEN_RETRY_SECONDS": "0.5"})
    assert "mlwarden.io/finalizer" in obj(api, OM, "fraud")["metadata"]["finalizers"]
    started = len(OPERATOR_CALLS)
    version = api.objects["v1/namespaces", None, NS]["metadata"]["resourceVersion"]

    await api.terminate_namespace(NS)
    # Marking is a write: a new resourceVersion, as on a cluster (watchers key on it).
    marked = api.objects["v1/namespaces", None, NS]["metadata"]
    assert marked["deletionTimestamp"] and marked["resourceVersion"] != version
    # Everything else in it is deleted at once; the ObservedModel waits for our finalizer.
    await eventually(lambda: not exists(api, OM, "fraud"), timeout=5,
                     what="the ObservedModel released promptly")  # fmt: skip
    await eventually(lambda: not namespace_exists(api), timeout=5, what="the namespace gone")
    # Nothing was written to objects that were going away with their namespace.
    writes = [c for c in OPERATOR_CALLS[started:] if c.verb in ("patch", "create")
              and c.resource in ("deployments", "services")]  # fmt: skip
    assert writes == [], writes
    assert op.proc.returncode is None, op.log()[-3000:]


async def test_deleting_the_observed_model_collects_its_detector_objects(
    cluster: tuple[Cluster, str], warming_up: Callable[..., Any]
) -> None:
    api, server = cluster
    await warming_up(env={"MLWARDEN_RETRY_SECONDS": "0.5"})
    await api_call(
        server, "DELETE", f"/apis/mlwarden.io/v1alpha1/namespaces/{NS}/observedmodels/fraud"
    )
    await eventually(lambda: not exists(api, OM, "fraud"), timeout=10, what="released")
    # The garbage collector takes what the ObservedModel owned; the target stays, restored.
    for kind in ("ConfigMap", "ServiceAccount", "Role", "RoleBinding", "Deployment", "Service"):
        assert not exists(api, RESOURCES[kind], "fraud-detector"), kind
    assert not exists(api, RESOURCES["ConfigMap"], "fraud-reference")
    assert not exists(api, RESOURCES["Secret"], "fraud-ingest-token")
    containers = obj(api, DEPLOYMENTS, "fraud-model")["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["model"]


async def test_a_status_write_racing_the_finalizer_removal_does_not_hold_the_model(
    cluster: tuple[Cluster, str], warming_up: Callable[..., Any]
) -> None:
    api, server = cluster
    await warming_up(env={"MLWARDEN_RETRY_SECONDS": "0.5"})
    # The detector (or any writer) writes the status between kopf's read of the deleted
    # ObservedModel and its JSON patch removing the finalizer, twice: the patch's resourceVersion
    # test fails (422), and kopf applies it again on the watch event that write brought.
    api.racing_patches(OM, NS, "fraud", times=2)
    await api_call(
        server, "DELETE", f"/apis/mlwarden.io/v1alpha1/namespaces/{NS}/observedmodels/fraud"
    )
    await eventually(lambda: not exists(api, OM, "fraud"), timeout=10,
                     what="the ObservedModel released promptly")  # fmt: skip
    # The race did happen: a finalizer patch's resourceVersion test failed (422).
    assert api.failed_tests.count(("observedmodels", "fraud")) >= 1, api.conflicts


async def test_targets_being_deleted_are_not_written_and_do_not_hold_the_finalizer(
    cluster: tuple[Cluster, str], warming_up: Callable[..., Any]
) -> None:
    api, server = cluster
    deployment, service = model_deployment(), model_service()
    # Held by somebody else's finalizers while they go: a GitOps tool's on the Deployment,
    # the cloud controller's on a LoadBalancer Service (until the load balancer is gone).
    deployment["metadata"]["finalizers"] = ["example.com/gitops-prune"]
    service["metadata"]["finalizers"] = ["service.kubernetes.io/load-balancer-cleanup"]
    await warming_up(deployment=deployment, service=service, env={"MLWARDEN_RETRY_SECONDS": "0.5"})
    apps, core = f"/apis/apps/v1/namespaces/{NS}", f"/api/v1/namespaces/{NS}"
    await api_call(server, "DELETE", f"{apps}/deployments/fraud-model")
    await api_call(server, "DELETE", f"{core}/services/fraud-model")
    assert obj(api, DEPLOYMENTS, "fraud-model")["metadata"]["deletionTimestamp"]
    started = len(OPERATOR_CALLS)
    # Its pods terminating, the Deployment controller writes its status all the while.
    async with api.writing_status(DEPLOYMENTS, NS, "fraud-model", every=0.02):
        await api_call(
            server, "DELETE", f"/apis/mlwarden.io/v1alpha1/namespaces/{NS}/observedmodels/fraud"
        )
        await eventually(lambda: not exists(api, OM, "fraud"), timeout=3,
                         what="the ObservedModel released promptly")  # fmt: skip
    writes = [c for c in OPERATOR_CALLS[started:] if c.verb == "patch"
              and c.resource in ("deployments", "services")]  # fmt: skip
    assert writes == [], writes
