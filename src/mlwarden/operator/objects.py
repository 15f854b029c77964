"""The detector's objects for one ObservedModel, and the merge patch that keeps them so.

For ObservedModel NAME the operator owns six objects, all named `NAME-detector` in the
model's namespace, labelled `labels(NAME)` and owned by the ObservedModel (deleting it
garbage-collects them):

    ConfigMap       data[observedmodel.yaml]: the manifest the detector and the sidecar load
    ServiceAccount  the detector's identity
    Role            get/patch on this ObservedModel's status subresource and on ConfigMap
                    NAME-reference, by resourceName, nothing else
    RoleBinding     the Role to the ServiceAccount
    Deployment      one detector replica; a spec change rolls it (`mlwarden.io/config-hash`)
    Service         ClusterIP, port `http`: where the sidecars ship records
    NetworkPolicy   (with MLWARDEN_NETWORK_POLICY) ingress to the detector's port only from
                    the target's pods and the configured metrics scrapers

and two that are created once and then never written again (`created_once`), also owned:

    ConfigMap NAME-reference    the stored reference summary; the detector writes it
    Secret NAME-ingest-token    the ingest token (32 random bytes); the sidecars send it, the
                                detector checks it; never rotated by the operator

Names are shared with everybody else in the namespace: an object of one of these names that
this ObservedModel does not own (no ownerReference with its uid) is somebody else's, and is
never patched nor given our owner reference (`name_conflict`); the ObservedModel goes Failed
with reason NameConflict instead. The Secret cannot be read (the operator may only create
Secrets), so whether it is ours is told by `ingest_token_conflict` from what the operator
recorded before creating it (`status.ingestToken`).

`desired_objects` builds them in creation order. `needs_update(current, desired)` is the JSON
merge patch (RFC 7386) that brings what the API holds back to what is desired. It compares
only what the operator sets: a field the API server defaults (`dnsPolicy`, probe timeouts,
`clusterIP`) or another controller adds (an annotation) is left alone, so a second reconcile
writes nothing. `covers` is that comparison, shared with the sidecar injection.

Every function here is pure: it reads a body (the raw dict, or kopf's mapping view of it)
and returns plain dicts; nothing talks to the API.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from typing import Any, Final

import yaml

from mlwarden.ingest_auth import SECRET_KEY, ingest_token_secret_name
from mlwarden.names import (
    DETECTOR_PORT_NAME,
    MANIFEST_DIR,
    MANIFEST_KEY,
    REFERENCE_DIR,
    detector_name,
    labels,
    reference_store_name,
    selector_labels,
)
from mlwarden.operator.settings import RESTRICTED_SECURITY_CONTEXT, OperatorSettings
from mlwarden.patches import plain
from mlwarden.spec import API_VERSION, GROUP, KIND, PLURAL, REBASELINE_ANNOTATION, ObservedModel

CONFIG_HASH_ANNOTATION: Final = f"{GROUP}/config-hash"
DETECTOR_CONTAINER: Final = "detector"

_MANIFEST_VOLUME: Final = "manifest"
_REFERENCE_VOLUME: Final = "reference"
_TMP_VOLUME: Final = "tmp"
_TOKEN_VOLUME: Final = "ingest-token"
INGEST_TOKEN_DIR: Final = "/var/run/mlwarden/ingest-token"

# --------------------------------------------------------------------------- body


def _name(body: Mapping[str, Any]) -> str:
    return str(body["metadata"]["name"])


def _namespace(body: Mapping[str, Any]) -> str:
    return str(body["metadata"].get("namespace") or "default")


def owner_reference(body: Mapping[str, Any]) -> dict[str, Any]:
    """The reference that makes an object belong to (and be deleted with) this ObservedModel."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": _name(body),
        "uid": str(body["metadata"]["uid"]),
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _metadata(body: Mapping[str, Any]) -> dict[str, Any]:
    name = _name(body)
    return {
        "name": detector_name(name),
        "namespace": _namespace(body),
        "labels": labels(name),
        "ownerReferences": [owner_reference(body)],
    }


# --------------------------------------------------------------------------- objects


def manifest_yaml(body: Mapping[str, Any]) -> str:
    """The ObservedModel as the detector loads it: identity and the spec as the user wrote it.

    Keys are sorted so the same spec always gives the same text (and the same config hash).
    """
    metadata: dict[str, Any] = {"name": _name(body), "namespace": _namespace(body)}
    # The rebaseline token travels with the manifest: a new one changes the config hash,
    # the detector restarts and, seeing a token its stored reference was not built under,
    # warms up a new reference.
    rebaseline = ((body.get("metadata") or {}).get("annotations") or {}).get(REBASELINE_ANNOTATION)
    if rebaseline is not None:
        metadata["annotations"] = {REBASELINE_ANNOTATION: str(rebaseline)}
    manifest = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": metadata,
        "spec": plain(body.get("spec") or {}),
    }
    return yaml.safe_dump(manifest, sort_keys=True, default_flow_style=False, allow_unicode=True)


def detector_config_map(body: Mapping[str, Any], model: ObservedModel) -> dict[str, Any]:
    """The ConfigMap holding the manifest; mounted by the detector and by the sidecar."""
    del model  # the manifest is the user's spec verbatim, not the parsed (defaulted) one
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(body),
        "data": {MANIFEST_KEY: manifest_yaml(body)},
    }


def config_hash(config_map: Mapping[str, Any]) -> str:
    """A digest of a ConfigMap's data: in the pod template, a change of it rolls the pods."""
    text = json.dumps(plain(config_map.get("data") or {}), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def detector_service_account(body: Mapping[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _metadata(body)}


def detector_role(body: Mapping[str, Any]) -> dict[str, Any]:
    """The detector may read and patch its own ObservedModel's status and its stored reference.

    Both by resourceName; `create` cannot be limited to a name, so the operator creates the
    reference ConfigMap and the detector only fills it.
    """
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": _metadata(body),
        "rules": [
            {
                "apiGroups": [GROUP],
                "resources": [f"{PLURAL}/status"],
                "resourceNames": [_name(body)],
                "verbs": ["get", "patch"],
            },
            {
                "apiGroups": [""],
                "resources": ["configmaps"],
                "resourceNames": [reference_store_name(_name(body))],
                "verbs": ["get", "patch"],
            },
        ],
    }


def reference_config_map(body: Mapping[str, Any]) -> dict[str, Any]:
    """ConfigMap NAME-reference, created empty; the detector stores its reference in it."""
    meta = _metadata(body)
    meta["name"] = reference_store_name(_name(body))
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta}


def ingest_token_secret(body: Mapping[str, Any], token: str) -> dict[str, Any]:
    """Secret NAME-ingest-token; `token` is made by the caller (secrets.token_urlsafe(32))."""
    meta = _metadata(body)
    meta["name"] = ingest_token_secret_name(_name(body))
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": meta,
        "type": "Opaque",
        "data": {SECRET_KEY: base64.b64encode(token.encode()).decode()},
    }


def created_once(body: Mapping[str, Any], token: str) -> list[dict[str, Any]]:
    """The objects created when absent and never updated (their content is not the operator's)."""
    return [reference_config_map(body), ingest_token_secret(body, token)]


def detector_network_policy(
    body: Mapping[str, Any], target_selector: Mapping[str, Any], settings: OperatorSettings
) -> dict[str, Any]:
    """Ingress to the detector's port from the target's pods and the metrics scrapers only.

    `target_selector` is the target Deployment's spec.selector (a LabelSelector). Records and
    /metrics share the port, so the scrapers (settings.network_policy_metrics_from,
    NetworkPolicyPeers) reach it too; the ingest token keeps them from posting records.
    """
    ingress: list[dict[str, Any]] = [
        {
            "from": [{"podSelector": plain(target_selector)}],
            "ports": [{"protocol": "TCP", "port": DETECTOR_PORT_NAME}],
        }
    ]
    if settings.network_policy_metrics_from:
        ingress.append(
            {
                "from": plain(list(settings.network_policy_metrics_from)),
                "ports": [{"protocol": "TCP", "port": DETECTOR_PORT_NAME}],
            }
        )
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(body),
        "spec": {
            "podSelector": {"matchLabels": selector_labels(_name(body))},
            "policyTypes": ["Ingress"],
            "ingress": ingress,
        },
    }


def detector_role_binding(body: Mapping[str, Any]) -> dict[str, Any]:
    name = detector_name(_name(body))
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": _metadata(body),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        # apiGroup is left out: the API server stores "" for a ServiceAccount and reads it
        # back absent, so writing it would make every comparison differ.
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": _namespace(body)}],
    }


def detector_deployment(
    body: Mapping[str, Any], model: ObservedModel, settings: OperatorSettings
) -> dict[str, Any]:
    """One detector replica running `mlwarden detector` on the ConfigMap's manifest."""
    name = _name(body)
    dname = detector_name(name)
    manifest_path = f"{MANIFEST_DIR}/{MANIFEST_KEY}"
    args = ["detector", "--observed-model", manifest_path]
    args += ["--listen", f"0.0.0.0:{settings.detector_port}"]
    volumes: list[dict[str, Any]] = [
        {"name": _MANIFEST_VOLUME, "configMap": {"name": dname}},
        {"name": _TMP_VOLUME, "emptyDir": {}},
    ]
    manifest_mount: dict[str, Any] = {
        "name": _MANIFEST_VOLUME,
        "mountPath": MANIFEST_DIR,
        "readOnly": True,
    }
    mounts = [manifest_mount, {"name": _TMP_VOLUME, "mountPath": "/tmp"}]
    # The ingest token: records without it are refused. Not for an InferenceService: KServe's
    # payload logger sends no bearer token (its CloudEvents would all be refused); that
    # detector takes posts from anyone who reaches it, which the NetworkPolicy (when on)
    # limits to the InferenceService's pods (docs/operator.md, "Targets by kind").
    if model.spec.target.kind != "InferenceService":
        args += ["--ingest-token-file", f"{INGEST_TOKEN_DIR}/{SECRET_KEY}"]
        volumes.append(
            {
                "name": _TOKEN_VOLUME,
                "secret": {"secretName": ingest_token_secret_name(name), "defaultMode": 0o440},
            }
        )
        mounts.append({"name": _TOKEN_VOLUME, "mountPath": INGEST_TOKEN_DIR, "readOnly": True})
    reference = model.spec.reference
    if reference.source == "configMap" and reference.config_map:
        args += ["--reference-dir", REFERENCE_DIR]
        volumes.append({"name": _REFERENCE_VOLUME, "configMap": {"name": reference.config_map}})
        mounts.append({"name": _REFERENCE_VOLUME, "mountPath": REFERENCE_DIR, "readOnly": True})
        # REFERENCE_DIR lies inside MANIFEST_DIR, and a ConfigMap volume is read-only: the
        # runtime could not create the nested mount point in it. Mount the one file instead.
        manifest_mount["mountPath"] = manifest_path
        manifest_mount["subPath"] = MANIFEST_KEY
    port = settings.detector_port
    container = {
        "name": DETECTOR_CONTAINER,
        "image": settings.image,
        "imagePullPolicy": settings.image_pull_policy,
        "args": args,
        "ports": [{"name": DETECTOR_PORT_NAME, "containerPort": port, "protocol": "TCP"}],
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": DETECTOR_PORT_NAME}},
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": DETECTOR_PORT_NAME}},
        "resources": plain(settings.detector_resources),
        "securityContext": plain(RESTRICTED_SECURITY_CONTEXT),
        "volumeMounts": mounts,
    }
    annotations = {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(port),
        "prometheus.io/path": "/metrics",
        CONFIG_HASH_ANNOTATION: config_hash(detector_config_map(body, model)),
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(body),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": selector_labels(name)},
            # Two detectors side by side would each get half the records and both write
            # status; the sidecars buffer while the one detector restarts.
            "strategy": {"type": "Recreate"},
            "template": {
                "metadata": {"labels": labels(name), "annotations": annotations},
                "spec": {
                    "serviceAccountName": dname,
                    "automountServiceAccountToken": True,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [container],
                    "volumes": volumes,
                    **(
                        {"imagePullSecrets": [{"name": n} for n in settings.image_pull_secrets]}
                        if settings.image_pull_secrets
                        else {}
                    ),
                },
            },
        },
    }


def detector_service(body: Mapping[str, Any], settings: OperatorSettings) -> dict[str, Any]:
    """Where sidecars ship records: `http://NAME-detector.NAMESPACE.svc:PORT`."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(body),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(_name(body)),
            "ports": [
                {
                    "name": DETECTOR_PORT_NAME,
                    # The same number as the container port, so the collector URL the
                    # sidecar is given (settings.detector_port) is right either way.
                    "port": settings.detector_port,
                    "targetPort": DETECTOR_PORT_NAME,
                    "protocol": "TCP",
                }
            ],
        },
    }


def desired_objects(
    body: Mapping[str, Any], model: ObservedModel, settings: OperatorSettings
) -> list[dict[str, Any]]:
    """Every object the detector needs, in creation order (a thing before what uses it)."""
    return [
        detector_config_map(body, model),
        detector_service_account(body),
        detector_role(body),
        detector_role_binding(body),
        detector_deployment(body, model, settings),
        detector_service(body, settings),
    ]


# --------------------------------------------------------------------------- ownership


def owned_by(obj: Mapping[str, Any], uid: str) -> bool:
    """Whether `obj` carries an ownerReference to the object with this uid."""
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return any(isinstance(r, Mapping) and r.get("uid") == uid for r in refs)


def _fix_hint(kind: str, where: str, model: str) -> str:
    return (
        f"mlwarden never takes over an object it did not create: rename or delete {kind} "
        f"{where} (if it is left over from an earlier ObservedModel {model}, delete it), or "
        "give the ObservedModel another name"
    )


def name_conflict(body: Mapping[str, Any], current: Mapping[str, Any] | None) -> str | None:
    """Why `current` (an object of one of our names, as read) is not ours to write; None if it is.

    Absent (None) or owned by this ObservedModel: ours. Anything else, another ObservedModel's
    of the same name included, is somebody else's.
    """
    if current is None or owned_by(current, str(body["metadata"]["uid"])):
        return None
    meta = current.get("metadata") or {}
    kind = str(current.get("kind") or "object")
    where = f"{meta.get('namespace') or _namespace(body)}/{meta.get('name')}"
    owners = [
        f"{r.get('kind')}/{r.get('name')}"
        for r in meta.get("ownerReferences") or []
        if isinstance(r, Mapping)
    ]
    owned = f"owned by {', '.join(owners)}" if owners else "not created by mlwarden"
    return (
        f"{kind} {where} already exists and is {owned}, not by ObservedModel {_name(body)}; "
        + _fix_hint(kind, where, _name(body))
    )


def ingest_token_recorded(body: Mapping[str, Any]) -> bool:
    """Whether `status.ingestToken` says this ObservedModel created (or is creating) its Secret."""
    record = (body.get("status") or {}).get("ingestToken") or {}
    return bool(record.get("secret") == ingest_token_secret_name(_name(body)))


def ingest_token_conflict(
    body: Mapping[str, Any], *, created: bool, detector: Mapping[str, Any] | None
) -> str | None:
    """Whether Secret NAME-ingest-token is ours, without reading it; None if it is.

    `body` is the ObservedModel as it was before this attempt; `created`: our create just
    succeeded. Otherwise the create answered 409 (it exists), and it is ours when
    `status.ingestToken` already recorded it before this attempt (the operator records the
    name before its first create: that create, or a later one, landed), or when our own
    detector Deployment already exists (it mounts the Secret and is created after it: an
    ObservedModel made by an operator that kept no such record).
    """
    if created or ingest_token_recorded(body):
        return None
    if detector is not None and owned_by(detector, str(body["metadata"]["uid"])):
        return None
    where = f"{_namespace(body)}/{ingest_token_secret_name(_name(body))}"
    return (
        f"Secret {where} already exists and ObservedModel {_name(body)} did not create it "
        "(status.ingestToken records no such Secret, and the operator may not read Secrets "
        "to look); " + _fix_hint("Secret", where, _name(body))
    )
