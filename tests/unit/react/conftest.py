"""Builders for the reaction layer's tests: models, alerts, Deployments and their history, routes.

Objects look as the API returns them (resourceVersion, uid, owner references, revisions); tests
apply patches with `apply_merge_patch` and read the result back. The builders are reached
through the `build` fixture (`build.deployment(replicas=3)`, `build.NOW`), since test modules
cannot import a conftest by name under --import-mode=importlib.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from mlwarden.patches import apply_merge_patch
from mlwarden.react.actions import ActionRecord
from mlwarden.spec import ObservedModel, parse_observed_model
from mlwarden.timestamps import format_time

Obj = dict[str, Any]

NOW = datetime(2026, 11, 26, 15, 30, 0, tzinfo=UTC)
ONSET = "2026-11-26T15:02:11.204Z"  # the alert's `since`: 28 minutes before NOW
UID = "7b4d0a52-52a1-4c39-9d6e-0a3c2b1f9e11"
DEPLOYMENT_UID = "3e1f5a8c-0000-4000-8000-00000000000a"


# --------------------------------------------------------------------------- the model


def make_model(
    *reactions: dict[str, Any],
    guardrails: dict[str, Any] | None = None,
    uid: str | None = UID,
) -> ObservedModel:
    """An ObservedModel with these `spec.reactions` (and guardrails: cooldown 10m by default)."""
    meta: dict[str, Any] = {"name": "fraud", "namespace": "ml"}
    if uid is not None:
        meta["uid"] = uid
    return parse_observed_model(
        {
            "apiVersion": "mlwarden.io/v1alpha1",
            "kind": "ObservedModel",
            "metadata": meta,
            "spec": {
                "target": {"deployment": "fraud-model", "service": "fraud-model"},
                "features": [
                    {"name": "amount", "type": "numeric"},
                    {"name": "age", "type": "numeric"},
                ],
                "reactions": list(reactions),
                "guardrails": guardrails or {},
            },
        }
    )


def alert(
    type_: str = "FeatureDrift",
    feature: str | None = "amount",
    *,
    since: str = ONSET,
    revision: str | None = None,
) -> Obj:
    """An entry of status.alerts, as the detector writes it."""
    out: Obj = {
        "type": type_,
        "test": "ks",
        "statistic": 0.31,
        "pValue": 1.2e-9,
        "threshold": 0.01,
        "since": since,
        "reference": "warmup@3f9c2a1b0d4e",
    }
    if feature is not None:
        out["feature"] = feature
    if revision is not None:
        out["modelRevision"] = revision
    return out


# --------------------------------------------------------------------------- Deployments


def pod_template(image: str = "registry.example/fraud:7", *, port_name: str = "http") -> Obj:
    return {
        "metadata": {"labels": {"app": "fraud-model"}},
        "spec": {
            "containers": [
                {
                    "name": "model",
                    "image": image,
                    "ports": [{"name": port_name, "containerPort": 8080, "protocol": "TCP"}],
                    "readinessProbe": {"httpGet": {"path": "/v2/health/ready", "port": port_name}},
                }
            ]
        },
    }


def deployment(
    name: str = "fraud-model",
    *,
    replicas: int | None = 3,
    revision: int | None = 7,
    template: Obj | None = None,
    resource_version: str = "100",
    uid: str = DEPLOYMENT_UID,
) -> Obj:
    meta: Obj = {
        "name": name,
        "namespace": "ml",
        "uid": uid,
        "resourceVersion": resource_version,
        "generation": 9,
        "labels": {"app": name},
    }
    if revision is not None:
        meta["annotations"] = {"deployment.kubernetes.io/revision": str(revision)}
    spec: Obj = {
        "selector": {"matchLabels": {"app": "fraud-model"}},
        "template": copy.deepcopy(template) if template is not None else pod_template(),
    }
    if replicas is not None:
        spec["replicas"] = replicas
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": spec}


def replicaset(owner: Obj, revision: int, template: Obj, *, hash_: str | None = None) -> Obj:
    """A ReplicaSet of `owner` at `revision`, its template labelled with pod-template-hash."""
    hash_ = hash_ or f"{revision:x}5d8f9c7b"
    tpl = copy.deepcopy(template)
    tpl.setdefault("metadata", {}).setdefault("labels", {})["pod-template-hash"] = hash_
    name = owner["metadata"]["name"]
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": f"{name}-{hash_}",
            "namespace": "ml",
            # The Deployment controller labels the ReplicaSet as its template.
            "labels": {"app": "fraud-model", "pod-template-hash": hash_},
            "annotations": {"deployment.kubernetes.io/revision": str(revision)},
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "name": name,
                    "uid": owner["metadata"]["uid"],
                    "controller": True,
                }
            ],
        },
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": "fraud-model", "pod-template-hash": hash_}},
            "template": tpl,
        },
    }


def hpa(target: str = "fraud-model", *, low: int = 2, high: int = 20, running: int = 2) -> Obj:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": target, "namespace": "ml", "resourceVersion": "300"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
            "minReplicas": low,
            "maxReplicas": high,
        },
        "status": {"currentReplicas": running, "desiredReplicas": running},
    }


def service(*, by_name: bool = True) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "fraud-model", "namespace": "ml", "resourceVersion": "901"},
        "spec": {
            "selector": {"app": "fraud-model"},
            "ports": [
                {"name": "web", "port": 80, "targetPort": "http" if by_name else 8080},
            ],
        },
    }


def inject(dep: Obj, *, by_name: bool = True) -> Obj:
    """`dep` after mlwarden's real injection planner put the sidecar in (one template change)."""
    # Imported here: only the tests that inject depend on the operator's injection planner.
    from mlwarden.operator.injection import plan_injection
    from mlwarden.operator.settings import OperatorSettings

    model = parse_observed_model(
        {
            "apiVersion": "mlwarden.io/v1alpha1",
            "kind": "ObservedModel",
            "metadata": {"name": "fraud", "namespace": "ml", "uid": UID},
            "spec": {
                "target": {"deployment": "fraud-model", "service": "fraud-model"},
                "protocol": "v2",
            },
        }
    )
    plan = plan_injection(
        deployment=dep,
        service=service(by_name=by_name),
        model=model,
        settings=OperatorSettings(image="registry.example/mlwarden:1.2.3"),
    )
    assert plan.deployment_patch is not None, plan.message
    out: Obj = apply_merge_patch(dep, plan.deployment_patch)
    return out


# --------------------------------------------------------------------------- routes


def httproute(*rules: list[tuple[str, int | None]], name: str = "fraud") -> Obj:
    """An HTTPRoute; each rule is a list of (backend, weight or None for absent)."""
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": "ml", "resourceVersion": "500"},
        "spec": {
            "parentRefs": [{"name": "gateway"}],
            "rules": [
                {
                    "backendRefs": [
                        {"name": backend, "port": 80}
                        | ({} if weight is None else {"weight": weight})
                        for backend, weight in rule
                    ]
                }
                for rule in rules
            ],
        },
    }


def virtualservice(*routes: list[tuple[str, str | None, int | None]], name: str = "fraud") -> Obj:
    """A VirtualService; each http entry is a list of (host, subset, weight)."""
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": name, "namespace": "ml", "resourceVersion": "600"},
        "spec": {
            "hosts": ["fraud.example.com"],
            "http": [
                {
                    "route": [
                        {"destination": {"host": host} | ({"subset": subset} if subset else {})}
                        | ({} if weight is None else {"weight": weight})
                        for host, subset, weight in entry
                    ]
                }
                for entry in routes
            ],
        },
    }


# --------------------------------------------------------------------------- snapshot, history


def snapshot(*objs: Obj) -> dict[tuple[str, str], Obj]:
    return {(o["kind"], o["metadata"]["name"]): o for o in objs}


def record(
    *,
    id: str = "scale-0000000001",
    action: str = "scale",
    target: str = "Deployment/fraud-model",
    from_state: str = "3",
    to_state: str = "6",
    result: str = "Succeeded",
    ago: timedelta = timedelta(minutes=5),
    dry_run: bool = False,
    patch: dict[str, dict[str, Any]] | None = None,
) -> ActionRecord:
    """A history entry `ago` before NOW."""
    return ActionRecord(
        id=id,
        action=action,
        target=target,
        from_state=from_state,
        to_state=to_state,
        reason="FeatureDrift on amount",
        result=result,  # type: ignore[arg-type]
        at=format_time(NOW - ago),
        dry_run=dry_run,
        patch=patch if patch is not None else {target: {"spec": {"replicas": int(to_state)}}},
    )


def applied(objs: Iterable[Obj], rec: ActionRecord) -> dict[tuple[str, str], Obj]:
    """The snapshot after the shell applied `rec.patch`, bumping resourceVersions."""
    out = snapshot(*objs)
    for target, patch in rec.patch.items():
        kind, _, name = target.partition("/")
        obj = apply_merge_patch(out[(kind, name)], patch)
        obj["metadata"]["resourceVersion"] = str(int(obj["metadata"]["resourceVersion"]) + 1)
        out[(kind, name)] = obj
    return out


class Builders:
    """Every builder above, as attributes of one fixture."""

    NOW = NOW
    ONSET = ONSET
    UID = UID
    model = staticmethod(make_model)
    alert = staticmethod(alert)
    pod_template = staticmethod(pod_template)
    deployment = staticmethod(deployment)
    replicaset = staticmethod(replicaset)
    hpa = staticmethod(hpa)
    service = staticmethod(service)
    inject = staticmethod(inject)
    httproute = staticmethod(httproute)
    virtualservice = staticmethod(virtualservice)
    snapshot = staticmethod(snapshot)
    record = staticmethod(record)
    applied = staticmethod(applied)


@pytest.fixture
def build() -> type[Builders]:
    return Builders
