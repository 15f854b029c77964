"""A KServe InferenceService observed through its own payload logger: no sidecar of ours.

KServe's agent logs every request and response of a component as CloudEvents to
`spec.predictor.logger.url` when `logger.mode` is `all` (KServe's "Inference Logger"
docs); the detector ingests them on `POST /` and keeps the default and the canary
component apart as revisions (`ce-endpoint`). So injecting into an InferenceService is one
merge patch of its predictor's logger, recorded on the object, and the undo puts back the
logger exactly as it was (absent, or the user's own):

    InferenceService  mlwarden.io/logger: {"model": the ObservedModel, "was": the
                      spec.predictor.logger before (null: there was none)}

The KServe controller owns the predictor's Knative Service or Deployment and rolls a new
revision for the change (with `canaryTrafficPercent` set, the new revision is the canary);
mlwarden writes only the InferenceService's spec, never what the controller makes from it.

KServe's logger sends no bearer token, so the detector of an InferenceService accepts
CloudEvents without the ingest token (`objects.detector_deployment`); with the operator's
NetworkPolicy on, only the InferenceService's pods (`serving.kserve.io/inferenceservice`)
reach it.

Pure: the InferenceService in, the next merge patch out (the caller applies it, reads the
object back and plans again).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from mlwarden.names import detector_name
from mlwarden.operator.injection import InjectionError
from mlwarden.patches import plain
from mlwarden.spec import ObservedModel

LOGGER_ANNOTATION: Final = "mlwarden.io/logger"
# The label KServe puts on every pod of an InferenceService (its components' pods).
ISVC_LABEL: Final = "serving.kserve.io/inferenceservice"
API_VERSION: Final = "serving.kserve.io/v1beta1"

State = Literal["configuring", "injected", "restoring", "removed"]


@dataclass(frozen=True)
class LoggerPlan:
    state: State
    message: str
    patch: dict[str, Any] | None = None


def detector_url(model: ObservedModel, port: int) -> str:
    """Where the payload logger posts: the detector's Service (it takes CloudEvents on /)."""
    return f"http://{detector_name(model.name)}.{model.namespace}.svc:{port}/"


def desired_logger(model: ObservedModel, port: int) -> dict[str, Any]:
    return {"mode": "all", "url": detector_url(model, port)}


def _where(isvc: Mapping[str, Any]) -> str:
    meta = isvc.get("metadata") or {}
    return f"InferenceService {meta.get('namespace', 'default')}/{meta.get('name', '?')}"


def _predictor(isvc: Mapping[str, Any]) -> dict[str, Any]:
    return dict(((isvc.get("spec") or {}).get("predictor")) or {})


def read_record(isvc: Mapping[str, Any]) -> dict[str, Any] | None:
    """The logger record, or None when mlwarden has not configured this InferenceService."""
    text = ((isvc.get("metadata") or {}).get("annotations") or {}).get(LOGGER_ANNOTATION)
    if text is None:
        return None
    try:
        record = json.loads(str(text))
    except ValueError as exc:
        raise InjectionError(
            f"{_where(isvc)}: metadata.annotations[{LOGGER_ANNOTATION}] is not JSON ({exc}); "
            "restore it or reset spec.predictor.logger by hand"
        ) from exc
    if not isinstance(record, dict) or not isinstance(record.get("model"), str):
        raise InjectionError(
            f"{_where(isvc)}: metadata.annotations[{LOGGER_ANNOTATION}] must be "
            '{"model": NAME, "was": the previous logger or null}'
        )
    return record


def _logger_patch(current: Mapping[str, Any] | None, wanted: Mapping[str, Any] | None) -> Any:
    """A merge patch turning the logger `current` into `wanted` exactly (keys not wanted: null)."""
    if wanted is None:
        return None
    patch: dict[str, Any] = {k: None for k in (current or {}) if k not in wanted}
    patch.update(plain(dict(wanted)))
    return patch


def _patch(isvc: Mapping[str, Any], logger: Any, annotation: str | None) -> dict[str, Any]:
    meta = isvc.get("metadata") or {}
    return {
        "metadata": {
            "annotations": {LOGGER_ANNOTATION: annotation},
            "resourceVersion": meta.get("resourceVersion"),
        },
        "spec": {"predictor": {"logger": logger}},
    }


def plan_logger(isvc: Mapping[str, Any], model: ObservedModel, port: int) -> LoggerPlan:
    """The next step towards the predictor's payload logger sending everything to the detector."""
    where = _where(isvc)
    record = read_record(isvc)
    if record is not None and record["model"] != model.name:
        raise InjectionError(
            f"{where}: already observed by ObservedModel {model.namespace}/{record['model']} "
            f"(metadata.annotations[{LOGGER_ANNOTATION}]); one ObservedModel per "
            "InferenceService"
        )
    predictor = _predictor(isvc)
    if not predictor:
        raise InjectionError(f"{where}: spec.predictor is missing; nothing to log")
    current = predictor.get("logger")
    wanted = desired_logger(model, port)
    if record is None and current and current.get("url") and current.get("url") != wanted["url"]:
        raise InjectionError(
            f"{where}: spec.predictor.logger already sends to {current.get('url')!r}; KServe's "
            "logger has one url, and mlwarden does not take it over. Remove that logger (or "
            "forward its CloudEvents to the detector) to observe this InferenceService",
            reason="LoggerInUse",
        )
    if current == wanted and record is not None:
        return LoggerPlan(
            state="injected",
            message=f"{where}: its payload logger sends every request and response to the "
            f"detector ({wanted['url']})",
        )
    was = record.get("was") if record is not None else current
    annotation = json.dumps({"model": model.name, "was": was}, sort_keys=True)
    return LoggerPlan(
        state="configuring",
        message=f"{where}: spec.predictor.logger set to mode all, url {wanted['url']} "
        "(KServe rolls a new predictor revision)",
        patch=_patch(isvc, _logger_patch(current, wanted), annotation),
    )


def plan_logger_removal(isvc: Mapping[str, Any] | None) -> LoggerPlan:
    """The undo: the logger as it was before (absent, or the user's own), the record removed."""
    if isvc is None:
        return LoggerPlan(state="removed", message="nothing of mlwarden's is left")
    record = read_record(isvc)
    if record is None:
        return LoggerPlan(state="removed", message="nothing of mlwarden's is left")
    was = record.get("was")
    current = _predictor(isvc).get("logger")
    return LoggerPlan(
        state="restoring",
        message=f"{_where(isvc)}: spec.predictor.logger restored "
        + ("(removed: there was none)" if was is None else "to the one it had"),
        patch=_patch(isvc, _logger_patch(current, was), None),
    )


def pod_selector(isvc_name: str) -> dict[str, Any]:
    """The LabelSelector of the InferenceService's pods (for the detector's NetworkPolicy)."""
    return {"matchLabels": {ISVC_LABEL: isvc_name}}
