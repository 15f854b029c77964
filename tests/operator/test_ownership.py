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
    RESOURCES,
    Cluster,
    condition,
    events,
    eventually,
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
    assert f"{kind} {NS}/{name} already exists" in ready["message"], ready["message"]
    assert "rename or delete" in ready["message"]
    warned = [e for e in events(api) if e.get("reason") == "NameConflict"]
    assert warned and f"{kind} {NS}/{name}" in warned[0]["message"]
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


async def test_the_ingest_token_secret_we_create_is_recorded_as_ours(
    cluster: tuple[Cluster, str], start_operator: Callable[..., Any], seed: Callable[..., None]
) -> None:
    api, _ = cluster
    seed(api, model_deployment(), model_service(), observed_model())
    op = await start_operator()
    await eventually(lambda: status(api).get("phase") == "WarmingUp", timeout=30, what="WarmingUp")
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
