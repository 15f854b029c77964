"""The names of what mlwarden puts into a cluster: objects, containers, ports, labels, annotations.

They are public contracts (docs/architecture.md): `NAME-detector` for the ConfigMap,
ServiceAccount, Role, RoleBinding, Deployment, Service (and, when enabled, the NetworkPolicy),
`NAME-reference` for the stored-reference ConfigMap, `NAME-ingest-token` for the ingest token
Secret (`mlwarden.ingest_auth`), and the container `mlwarden-sidecar` in the target's pod
template. The operator writes them, the reactions and the detector read them: they live here,
below both.
"""

from __future__ import annotations

from typing import Final

SIDECAR_CONTAINER: Final = "mlwarden-sidecar"
SIDECAR_PORT_NAME_DEFAULT: Final = "mlwarden-proxy"  # when the Service targets a port number
MODEL_PORT_RENAMED: Final = "mlwarden-model"  # the model's port once its name moved away
ADMIN_PORT_NAME: Final = "mlwarden-admin"
DETECTOR_PORT_NAME: Final = "http"

# kopf's own annotations on an ObservedModel (handler progress, the last-handled spec) go under
# this prefix. The same spelling as the API group (mlwarden.spec.GROUP), another meaning.
KOPF_ANNOTATION_PREFIX: Final = "mlwarden.io"
# Annotations the operator writes on the objects it changes (never finalizers or timers).
INJECTED_ANNOTATION: Final = "mlwarden.io/injected"  # on the target Deployment: what changed
# On an ObservedModel, set by people: roll its injected sidecar onto this operator's sidecar
# (any new value), and inject again after a stalled rollout was undone (any new value). Not
# under `mlwarden.io/`: kopf keeps its own annotations there and ignores changes to them.
UPGRADE_SIDECAR_ANNOTATION: Final = "sidecar.mlwarden.io/upgrade"
RETRY_INJECTION_ANNOTATION: Final = "sidecar.mlwarden.io/retry"
SERVICE_ANNOTATION: Final = "mlwarden.io/original-ports"  # on the target Service
# Webhook mode: the label a Deployment opts in with; its value names the ObservedModel.
INJECT_LABEL: Final = "mlwarden.io/inject"
# The label the Deployment controller puts on each ReplicaSet and its pods (a hash of the pod
# template): the model revision the sidecar stamps on every record, given to it in the
# variable below through the Downward API.
POD_TEMPLATE_HASH: Final = "pod-template-hash"
REVISION_FIELD: Final = f"metadata.labels['{POD_TEMPLATE_HASH}']"
# The same for the other kinds spec.target may name: the StatefulSet controller labels each
# pod with the name of its ControllerRevision (`controller-revision-hash`, NAME-HASH); Argo
# Rollouts labels each ReplicaSet and its pods with `rollouts-pod-template-hash`.
CONTROLLER_REVISION_HASH: Final = "controller-revision-hash"
ROLLOUTS_POD_TEMPLATE_HASH: Final = "rollouts-pod-template-hash"
REVISION_LABELS: Final = {
    "Deployment": POD_TEMPLATE_HASH,
    "StatefulSet": CONTROLLER_REVISION_HASH,
    "Rollout": ROLLOUTS_POD_TEMPLATE_HASH,
}


def revision_field(kind: str) -> str:
    """The Downward API fieldPath of the revision label of a pod of a workload of `kind`."""
    return f"metadata.labels['{REVISION_LABELS.get(kind, POD_TEMPLATE_HASH)}']"


ENV_MODEL_REVISION: Final = "MLWARDEN_MODEL_REVISION"  # the sidecar's --model-revision
MANIFEST_KEY: Final = "observedmodel.yaml"  # key of the detector ConfigMap
MANIFEST_DIR: Final = "/etc/mlwarden"  # where the ConfigMap is mounted
REFERENCE_DIR: Final = "/etc/mlwarden/reference"  # where a configMap reference is mounted


def detector_name(model_name: str) -> str:
    return f"{model_name}-detector"


def labels(model_name: str) -> dict[str, str]:
    """Labels on every object the operator creates for ObservedModel `model_name`."""
    return {
        "app.kubernetes.io/name": "mlwarden-detector",
        "app.kubernetes.io/instance": model_name,
        "app.kubernetes.io/component": "detector",
        "app.kubernetes.io/managed-by": "mlwarden",
        "mlwarden.io/observed-model": model_name,
    }


def selector_labels(model_name: str) -> dict[str, str]:
    """The immutable subset used as the detector Deployment's selector."""
    return {"app.kubernetes.io/name": "mlwarden-detector", "app.kubernetes.io/instance": model_name}


def reference_store_name(model_name: str) -> str:
    """The ConfigMap the detector stores its reference summary (and alert state) in."""
    return f"{model_name}-reference"
