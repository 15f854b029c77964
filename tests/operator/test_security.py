"""The operator's security objects, with the real operator against kmock's emulator.

The ingest token Secret (created once, owned, never rotated, in the sidecar only), the
reference ConfigMap, the rebaseline annotation, and the detector's NetworkPolicy.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

from cluster import (
    DEPLOYMENTS,
    NS,
    OM,
    SERVICES,
    Cluster,
    api_call,
    eventually,
    exists,
    model_deployment,
    model_service,
    obj,
    observed_model,
    reasons,
)
from kubernetes_validate import validate

from mlwarden.spec import REBASELINE_ANNOTATION

SECRETS = "v1/secrets"
CONFIGMAPS = "v1/configmaps"
POLICIES = "networking.k8s.io/v1/networkpolicies"


def plain(o: Any) -> dict[str, Any]:
    return dict(json.loads(json.dumps(o, default=dict)))


def token_refs(container: dict[str, Any]) -> list[str]:
    return [
        e["valueFrom"]["secretKeyRef"]["name"]
        for e in container.get("env") or []
        if "secretKeyRef" in (e.get("valueFrom") or {})
    ]


async def test_the_ingest_token_is_created_once_owned_and_only_in_this_models_sidecar(
    cluster: tuple[Cluster, str], warming_up: Callable[..., Any], start_operator: Callable[..., Any]
) -> None:
    api, server = cluster
    other = model_deployment("other-model")
    deployment = model_deployment()
    op = await warming_up(other, deployment=deployment)

    secret = obj(api, SECRETS, "fraud-ingest-token")
    om = obj(api, OM, "fraud")
    (owner,) = secret["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["uid"]) == ("ObservedModel", om["metadata"]["uid"])
    token = base64.b64decode(secret["data"]["token"]).decode()
    assert len(base64.urlsafe_b64decode(token + "=")) == 32
    reference = obj(api, CONFIGMAPS, "fraud-reference")
    assert reference["metadata"]["ownerReferences"][0]["uid"] == om["metadata"]["uid"]

    # In the sidecar only; not in the model container, not in another model's pods.
    containers = obj(api, DEPLOYMENTS, "fraud-model")["spec"]["template"]["spec"]["containers"]
    assert {c["name"]: token_refs(c) for c in containers} == {
        "model": [],
        "mlwarden-sidecar": ["fraud-ingest-token"],
    }
    assert plain(obj(api, DEPLOYMENTS, "other-model")) == plain(other)
    detector = obj(api, DEPLOYMENTS, "fraud-detector")["spec"]["template"]["spec"]
    assert {
        "name": "ingest-token",
        "secret": {"secretName": "fraud-ingest-token", "defaultMode": 0o440},
    } in detector["volumes"]
    assert "--ingest-token-file" in detector["containers"][0]["args"]

    # A restarted operator never replaces it (nor the stored reference the detector wrote).
    await api_call(
        server,
        "PATCH",
        f"/api/v1/namespaces/{NS}/configmaps/fraud-reference",
        {"binaryData": {"reference.json.gz": "AAAA"}},
        "application/merge-patch+json",
    )
    version = secret["metadata"]["resourceVersion"]
    await op.stop()
    op = await start_operator()
    await eventually(lambda: "Resuming is processed: 1 succeeded" in op.log(), what="resume")
    again = obj(api, SECRETS, "fraud-ingest-token")
    assert again["metadata"]["resourceVersion"] == version
    assert base64.b64decode(again["data"]["token"]).decode() == token
    assert obj(api, CONFIGMAPS, "fraud-reference")["binaryData"] == {"reference.json.gz": "AAAA"}

    # Deleting the ObservedModel restores the Deployment exactly: the token reference included.
    await api_call(
        server, "DELETE", f"/apis/mlwarden.io/v1alpha1/namespaces/{NS}/observedmodels/fraud"
    )
    await eventually(lambda: not exists(api, OM, "fraud"), timeout=30, what="finalizer released")
    restored = plain(obj(api, DEPLOYMENTS, "fraud-model"))
    for key in ("resourceVersion", "generation", "annotations", "managedFields"):
        restored["metadata"].pop(key, None)
        deployment["metadata"].pop(key, None)
    restored.pop("status"), deployment.pop("status")
    assert restored == deployment
    assert await op.stop() == 0, op.log()[-3000:]


async def test_the_rebaseline_annotation_rolls_the_detector_and_is_recorded(
    cluster: tuple[Cluster, str], warming_up: Callable[..., Any]
) -> None:
    api, server = cluster
    op = await warming_up()

    def config_hash() -> str:
        dep = obj(api, DEPLOYMENTS, "fraud-detector")
        return str(dep["spec"]["template"]["metadata"]["annotations"]["mlwarden.io/config-hash"])

    before = config_hash()
    token = "2026-11-26T17:30:00Z"
    await api_call(
        server,
        "PATCH",
        f"/apis/mlwarden.io/v1alpha1/namespaces/{NS}/observedmodels/fraud",
        {"metadata": {"annotations": {REBASELINE_ANNOTATION: token}}},
        "application/merge-patch+json",
    )
    await eventually(lambda: "RebaselineRequested" in reasons(api), what="the Event")
    manifest = obj(api, CONFIGMAPS, "fraud-detector")["data"]["observedmodel.yaml"]
    assert f"{REBASELINE_ANNOTATION}: '{token}'" in manifest
    assert config_hash() != before  # the detector restarts onto the new token
    assert await op.stop() == 0, op.log()[-3000:]


async def test_a_network_policy_admits_only_the_observed_pods_when_enabled(
    cluster: tuple[Cluster, str], start_operator: Callable[..., Any], seed: Callable[..., None]
) -> None:
    api, _ = cluster
    seed(api, model_deployment(), model_service(), observed_model())
    scrapers = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "mon"}}}]
    op = await start_operator(
        env={
            "MLWARDEN_NETWORK_POLICY": "true",
            "MLWARDEN_NETWORK_POLICY_METRICS_FROM": json.dumps(scrapers),
        }
    )
    await eventually(lambda: exists(api, POLICIES, "fraud-detector"), what="the NetworkPolicy")
    policy = plain(obj(api, POLICIES, "fraud-detector"))
    assert policy["spec"]["ingress"][0]["from"] == [
        {"podSelector": {"matchLabels": {"app": "fraud-model"}}}
    ]
    assert policy["spec"]["ingress"][1]["from"] == scrapers
    assert policy["metadata"]["ownerReferences"][0]["name"] == "fraud"
    for key in ("resourceVersion", "generation", "uid", "creationTimestamp"):
        policy["metadata"].pop(key, None)
    validate(policy, "1.30", strict=True)
    assert obj(api, SERVICES, "fraud-model")["spec"]["ports"][0]["targetPort"] == "http"
    assert await op.stop() == 0, op.log()[-3000:]
