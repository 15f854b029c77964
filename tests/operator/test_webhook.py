"""Webhook mode: the admission handler injects the same template as patch mode."""

from __future__ import annotations

import copy
import json
from typing import Any

import kopf
import pytest
from cluster import (
    DEPLOYMENTS,
    NS,
    OM,
    SERVICES,
    Cluster,
    model_deployment,
    model_service,
    observed_model,
)
from kubernetes_validate import validate

from mlwarden.kube import Kube, StaticToken
from mlwarden.operator import handlers, injection
from mlwarden.operator.settings import OperatorSettings
from mlwarden.operator.webhook import INJECT_ANNOTATION, inject_at_admission
from mlwarden.react.records import apply_merge_patch
from mlwarden.spec import parse_observed_model


def apply_json_patch(doc: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    """RFC 6902 add/replace/remove, enough for what kopf emits."""
    doc = copy.deepcopy(doc)
    for op in ops:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        parent = doc
        for part in parts[:-1]:
            parent = parent[int(part)] if isinstance(parent, list) else parent.setdefault(part, {})
        last = parts[-1]
        if op["op"] == "remove":
            del parent[int(last) if isinstance(parent, list) else last]
        elif isinstance(parent, list):
            parent.insert(len(parent) if last == "-" else int(last), op["value"])
        else:
            parent[last] = op["value"]
    return doc


async def test_admission_injects_what_patch_mode_would(cluster: tuple[Cluster, str]) -> None:
    api, server = cluster
    om = observed_model()
    service = model_service()
    api.objects[OM, NS, "fraud"] = om
    api.objects[SERVICES, NS, "fraud-model"] = service
    deployment = model_deployment()
    deployment["metadata"]["annotations"] = {INJECT_ANNOTATION: "fraud"}
    handlers.STATE.kube = Kube(StaticToken(server))
    handlers.STATE.settings = OperatorSettings()
    try:
        patch = kopf.Patch()
        await inject_at_admission(body=kopf.Body(copy.deepcopy(deployment)), patch=patch)
        admitted = apply_json_patch(deployment, patch.as_json_patch(body=kopf.Body(deployment)))
    finally:
        await handlers.STATE.kube.close()
        handlers.STATE.kube = None
    plan = injection.plan_injection(
        deployment=deployment,
        service=service,
        model=parse_observed_model(om),
        settings=OperatorSettings(),
    )
    assert plan.deployment_patch is not None
    by_patch = apply_merge_patch(deployment, plan.deployment_patch)
    by_patch["metadata"].pop("resourceVersion", None)
    admitted["metadata"].pop("resourceVersion", None)
    assert json.dumps(admitted["spec"], sort_keys=True) == json.dumps(
        by_patch["spec"], sort_keys=True
    )
    containers = admitted["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["model", "mlwarden-sidecar"]
    validate({k: v for k, v in admitted.items() if k != "status"}, "1.30", strict=True)


async def test_deployments_that_did_not_opt_in_or_name_another_model_are_untouched(
    cluster: tuple[Cluster, str],
) -> None:
    api, server = cluster
    api.objects[OM, NS, "fraud"] = observed_model(target="other-model")
    api.objects[SERVICES, NS, "fraud-model"] = model_service()
    handlers.STATE.kube = Kube(StaticToken(server))
    try:
        for annotations in ({INJECT_ANNOTATION: "fraud"}, {INJECT_ANNOTATION: "missing"}):
            deployment = model_deployment()
            deployment["metadata"]["annotations"] = annotations
            patch = kopf.Patch()
            await inject_at_admission(body=kopf.Body(deployment), patch=patch)
            assert not patch, annotations
    finally:
        await handlers.STATE.kube.close()
        handlers.STATE.kube = None
    # Admission only answers with a patch: the handler itself wrote nothing to the API.
    with pytest.raises(KeyError):
        api.objects[DEPLOYMENTS, NS, "fraud-model"]
