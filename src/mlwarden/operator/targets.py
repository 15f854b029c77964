"""What `spec.target` resolved to, for `status.target` and the `Target` column of `kubectl get om`.

`spec.target` names a workload two ways (`deployment: NAME`, or `kind` and `name`), so no one
spec field can feed a printer column for every kind. The operator writes what it resolved
instead, on every reconcile:

    kind, name      the workload (for `deployment: NAME`, kind Deployment)
    ref             `Kind/name`, the `Target` column
    selector        the label selector of the pods that serve: the workload's
                    spec.selector, or KServe's `serving.kserve.io/inferenceservice=NAME`
    revisionLabel   the pod label each record's revision comes from (a sidecar's kinds)
    service         the Service whose traffic passes the sidecar (a sidecar's kinds)
    template        `Deployment/NAME` when the pod template lives elsewhere (an Argo Rollout's
                    spec.workloadRef), the object the sidecar goes into
    components      an InferenceService's components (predictor, transformer, explainer)

Pure: the parsed ObservedModel and the objects as read in, a dict out, every field present
(null where it does not apply, which the status merge patch clears). A workload not read yet
(absent) resolves to its kind, name and ref (and what the spec says) alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from mlwarden.names import REVISION_LABELS
from mlwarden.operator.kserve import ISVC_LABEL
from mlwarden.spec import ObservedModel

KSERVE_COMPONENTS: Final = ("predictor", "transformer", "explainer")
# Every field, so that the merge patch clears one that no longer applies (null).
FIELDS: Final = ("kind", "name", "ref", "selector", "revisionLabel", "service", "template",
                 "components")  # fmt: skip


def label_selector(selector: Mapping[str, Any] | None) -> str:
    """A LabelSelector as `kubectl get -l` takes it: `k=v`, `k in (a,b)`, `k`, `!k`."""
    selector = selector or {}
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "Exists":
            parts.append(str(key))
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
        else:
            parts.append(f"{key} {str(op).lower()} ({','.join(str(v) for v in values)})")
    return ",".join(parts)


def resolved(
    model: ObservedModel,
    workload: Mapping[str, Any] | None,
    *,
    template: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """`status.target`: what the operator resolved of `model.spec.target`.

    `workload` is the target as read (None: not read, or absent); `template` the object
    whose spec.template the pods come from when it is not the workload (`injection.
    workload_ref`).
    """
    target = model.spec.target
    out: dict[str, Any] = {
        "kind": target.kind,
        "name": target.name,
        "ref": f"{target.kind}/{target.name}",
    }
    if target.kind == "InferenceService":
        out["selector"] = f"{ISVC_LABEL}={target.name}"
        if workload is not None:
            spec = workload.get("spec") or {}
            out["components"] = [c for c in KSERVE_COMPONENTS if spec.get(c)]
        return {k: out.get(k) for k in FIELDS}
    out["service"] = target.service
    out["revisionLabel"] = REVISION_LABELS.get(target.kind, REVISION_LABELS["Deployment"])
    if workload is not None:
        selector = label_selector((workload.get("spec") or {}).get("selector"))
        if selector:
            out["selector"] = selector
    if template is not None:
        meta = template.get("metadata") or {}
        out["template"] = f"{template.get('kind') or 'Deployment'}/{meta.get('name')}"
    return {k: out.get(k) for k in FIELDS}
