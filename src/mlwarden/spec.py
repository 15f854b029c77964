"""The ObservedModel: parse, default and validate a manifest into immutable objects.

This module is the one source of truth for what an ObservedModel means. Every
other component (sidecar, detector, operator, `mlwarden check`) reads the spec
through `parse_observed_model` or `load_observed_model`; none of them looks at
the raw manifest.

Validation collects every problem before failing, and each problem names the
field path and the reason, the way `kubectl` does:

    spec.detectors.drift.pValue: must be in (0, 1), got 1.5

Unknown fields are errors (a typo such as `pvalue` must not silently fall back
to a default), with the closest known field suggested.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, TypeVar

import yaml

from mlwarden.records import json_kind as _kind_of

# The ObservedModel's API: the one place its group, version, kind and plural are spelled.
GROUP: Final = "mlwarden.io"
VERSION: Final = "v1alpha1"
KIND: Final = "ObservedModel"
PLURAL: Final = "observedmodels"
API_VERSION: Final = f"{GROUP}/{VERSION}"

PROTOCOLS: Final = ("auto", "v2", "v1", "openai", "json")
FEATURE_TYPES: Final = ("numeric", "categorical")
DRIFT_TESTS: Final = ("auto", "ks", "wasserstein", "psi", "jensenshannon", "chisquare")
CORRECTIONS: Final = ("bonferroni", "benjamini-hochberg", "none")
REFERENCE_SOURCES: Final = ("warmup", "configMap", "url", "file")
REDACT_ACTIONS: Final = ("drop", "hash")
# The ObservedModel annotation that asks for a new reference: setting it to a new value (a
# timestamp, any token) makes the detector warm up anew instead of reloading the stored
# reference. Outside the `mlwarden.io/` prefix, which kopf's own annotations use (kopf
# ignores annotations under its storage prefix when it looks for changes).
REBASELINE_ANNOTATION: Final = "reference.mlwarden.io/rebaseline"
PERFORMANCE_ESTIMATES: Final = ("cbpe", "none")
PERFORMANCE_METRICS: Final = ("accuracy", "f1", "roc_auc")
ALERT_TYPES: Final = (
    "FeatureDrift",
    "PredictionDrift",
    "DataQuality",
    "Latency",
    "Errors",
    "PerformanceDrop",
)
ACTIONS: Final = ("alert", "rollback", "scale", "shiftTraffic", "pause")
PIPELINE_KINDS: Final = (
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "CronJob",
    "Job",
    "ConfigMap",
    "Secret",
    "ObservedModel",
)
TRAFFIC_ROUTERS: Final = ("httproute", "virtualservice", "replicas")

# Bounds of the status lists: the CRD's maxItems, and what the operator and the detector trim
# to before a write, so that no write is refused and the object (at most 1.5 MiB in etcd) and
# kopf's last-handled annotation (which holds status.alerts; annotations: 256 KiB in all)
# stay far below their limits.
MAX_STATUS_ALERTS: Final = 100
MAX_STATUS_REACTIONS: Final = 50
MAX_STATUS_SUSPECTS: Final = 10
MAX_STATUS_EVIDENCE: Final = 10
MAX_STATUS_CONDITIONS: Final = 16

# The operator names the detector objects NAME-detector, and a Service name is a
# DNS-1035 label of at most 63 characters.
MAX_NAME_LENGTH: Final = 63 - len("-detector")
_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")  # DNS-1035: a Service's name
SERVICE_NAME_HINT: Final = (
    "must be a Service name: a DNS-1035 label (lower-case letters, digits and '-', "
    "starting with a letter, no dots, at most 63 characters)"
)
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
# Patterns are matched whole (fullmatch): `$` alone would accept a trailing newline.
# [0-9], not \d: \d also matches other scripts' digits, which Kubernetes does not.
_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")  # DNS-1123 label
_DURATION = re.compile(r"(?:([0-9]+(?:\.[0-9]+)?)(ms|s|m|h))+")
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_EXPONENT_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")
_UNIT_SECONDS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

FeatureType = Literal["numeric", "categorical"]


# --------------------------------------------------------------------------- errors


@dataclass(frozen=True)
class FieldError:
    """One problem in a manifest: where it is and what is wrong with it."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class SpecError(ValueError):
    """A manifest that is not a valid ObservedModel; `errors` lists every problem."""

    def __init__(self, errors: list[FieldError], source: str | None = None) -> None:
        self.errors = list(errors)
        self.source = source
        where = f"{source}: " if source else ""
        lines = [f"{where}invalid ObservedModel ({len(errors)} problem(s)):"]
        lines += [f"  {e}" for e in errors]
        super().__init__("\n".join(lines))


# --------------------------------------------------------------------------- the spec


@dataclass(frozen=True)
class Target:
    """The model server to observe: its Deployment, Service, container and port."""

    deployment: str
    service: str
    container: str | None = None
    port: int | None = None
    # Inject into a Deployment with strategy Recreate without asking for approval (that
    # rollout stops every pod before the new ones start).
    allow_recreate: bool = False


@dataclass(frozen=True)
class Feature:
    """An input column the model receives."""

    name: str
    type: FeatureType


@dataclass(frozen=True)
class Prediction:
    """The model output to watch; `probabilities` names an output with class scores."""

    name: str
    type: FeatureType = "numeric"
    probabilities: str | None = None


@dataclass(frozen=True)
class JsonCapture:
    """Field paths for the generic JSON protocol.

    Paths are dotted (`data.items`, `merchant.category`, `scores.0`).
    `request_rows`/`response_rows` point at the list of rows in each body (absent:
    the body itself is the single row, or the list of rows when it is a list);
    `features` maps feature name to a path inside one request row (absent: the
    feature names themselves); `prediction` is a path inside one response row.
    """

    request_rows: str | None = None
    response_rows: str | None = None
    # (feature name, path) pairs: a tuple so the spec stays immutable and hashable.
    features: tuple[tuple[str, str], ...] = ()
    prediction: str | None = None


@dataclass(frozen=True)
class Redaction:
    """A captured field the sidecar drops, or replaces by a keyed hash, before shipping it."""

    field: str  # a feature or output name, as captured
    action: Literal["drop", "hash"] = "drop"


@dataclass(frozen=True)
class Capture:
    """What the sidecar captures: a sample of exchanges with bodies up to a size cap."""

    sample_rate: float = 1.0
    max_body_bytes: int = 1 << 20
    json: JsonCapture | None = None
    redact: tuple[Redaction, ...] = ()


@dataclass(frozen=True)
class Reference:
    """Where the reference (what 'normal' looks like) comes from."""

    source: Literal["warmup", "configMap", "url", "file"] = "warmup"
    size: int = 1000
    config_map: str | None = None
    key: str | None = None
    url: str | None = None
    path: str | None = None


@dataclass(frozen=True)
class Window:
    """The current window: the last `size` records, or the records of the last `duration`."""

    size: int | None = 1000
    duration_seconds: float | None = None


@dataclass(frozen=True)
class DriftCheck:
    enabled: bool = True
    test: str = "auto"
    p_value: float = 0.01
    correction: str = "bonferroni"
    # Effect-size floor: below it a shift is not reported however small its
    # p-value (None: the test's own default, documented with the detector).
    min_effect: float | None = None


@dataclass(frozen=True)
class QualityCheck:
    enabled: bool = True
    max_missing_rate: float = 0.05
    out_of_range: bool = True
    new_categories: bool = True


@dataclass(frozen=True)
class LatencyCheck:
    p99_ms: float


@dataclass(frozen=True)
class ErrorsCheck:
    max_rate: float


@dataclass(frozen=True)
class PerformanceCheck:
    estimate: str = "cbpe"
    metric: str = "accuracy"
    max_drop: float = 0.05


@dataclass(frozen=True)
class Detectors:
    drift: DriftCheck = field(default_factory=DriftCheck)
    prediction_drift: DriftCheck = field(default_factory=DriftCheck)
    quality: QualityCheck = field(default_factory=QualityCheck)
    latency: LatencyCheck | None = None
    errors: ErrorsCheck | None = None
    performance: PerformanceCheck | None = None


@dataclass(frozen=True)
class Alerting:
    """Hysteresis: fire after `fire_after` failing evaluations, resolve after `resolve_after`."""

    evaluation_interval_seconds: float = 30.0
    fire_after: int = 3
    resolve_after: int = 3


@dataclass(frozen=True)
class PipelineComponent:
    """An upstream part of the pipeline, with lineage for diagnosis."""

    name: str
    kind: str
    produces: tuple[str, ...] = ()
    depends_on: tuple[str, ...] = ()
    namespace: str | None = None


@dataclass(frozen=True)
class Reaction:
    """What to do when an alert of type `alert` fires.

    The field is `alert`, not `on`: YAML 1.1 parsers (PyYAML, and the one inside
    kubectl) read a bare `on` key as the boolean true.
    """

    alert: str
    action: str
    feature: str | None = None
    # rollback: the revision to go back to (default: the previous one)
    to_revision: int | None = None
    # scale: replicas (or an HPA's minReplicas) within [min_replicas, max_replicas]
    min_replicas: int | None = None
    max_replicas: int | None = None
    # shiftTraffic / pause: how traffic reaches the two versions
    router: str | None = None
    route: str | None = None  # the HTTPRoute or VirtualService name
    stable: str | None = None  # the stable backend (Service, or Deployment for router: replicas)
    canary: str | None = None  # the canary backend
    step_percent: int = 100  # traffic moved back to stable per step
    webhook: str | None = None


@dataclass(frozen=True)
class Guardrails:
    dry_run: bool = False
    cooldown_seconds: float = 600.0
    max_actions_per_hour: int = 3
    require_approval: bool = False


@dataclass(frozen=True)
class ObservedModelSpec:
    target: Target
    protocol: str = "auto"
    features: tuple[Feature, ...] = ()
    prediction: Prediction | None = None
    capture: Capture = field(default_factory=Capture)
    reference: Reference = field(default_factory=Reference)
    window: Window = field(default_factory=Window)
    detectors: Detectors = field(default_factory=Detectors)
    alerting: Alerting = field(default_factory=Alerting)
    pipeline: tuple[PipelineComponent, ...] = ()
    reactions: tuple[Reaction, ...] = ()
    guardrails: Guardrails = field(default_factory=Guardrails)

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)


@dataclass(frozen=True)
class ObservedModel:
    name: str
    namespace: str
    spec: ObservedModelSpec
    generation: int | None = None
    uid: str | None = None
    rebaseline: str | None = None  # metadata.annotations[REBASELINE_ANNOTATION]


# --------------------------------------------------------------------------- reader


_T = TypeVar("_T")
_MISSING: Final[Any] = object()


class _Errors:
    def __init__(self) -> None:
        self.items: list[FieldError] = []

    def add(self, path: str, message: str) -> None:
        self.items.append(FieldError(path, message))


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, str) else str(value)


class _Obj:
    """Reads one mapping of a manifest, recording errors under its field path."""

    def __init__(self, value: Any, path: str, errors: _Errors) -> None:
        self.path = path
        self.errors = errors
        self.present = value is not None
        if value is None:
            value = {}
        if not isinstance(value, dict):
            errors.add(path, f"must be an object, got {_kind_of(value)}")
            value = {}
            self.present = False
        self.raw: dict[str, Any] = value
        self.known: set[str] = set()

    def at(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def has(self, key: str) -> bool:
        self.known.add(key)
        return key in self.raw and self.raw[key] is not None

    def error(self, key: str, message: str) -> None:
        self.errors.add(self.at(key), message)

    def _get(self, key: str, default: Any) -> Any:
        self.known.add(key)
        value = self.raw.get(key)
        if value is None:
            if default is _MISSING:
                self.error(key, "required field is missing")
            return _MISSING
        return value

    def text(
        self,
        key: str,
        default: Any = _MISSING,
        *,
        choices: tuple[str, ...] | None = None,
        pattern: re.Pattern[str] | None = None,
        pattern_hint: str = "",
    ) -> Any:
        value = self._get(key, default)
        if value is _MISSING:
            return None if default is _MISSING else default
        if not isinstance(value, str):
            self.error(key, f"must be a string, got {_kind_of(value)} {_show(value)}")
            return None if default is _MISSING else default
        if choices is not None and value not in choices:
            self.error(key, f"must be one of {', '.join(choices)}; got {value!r}")
            return None if default is _MISSING else default
        if pattern is not None and not pattern.fullmatch(value):
            self.error(key, f"{pattern_hint}; got {value!r}")
            return None if default is _MISSING else default
        return value

    def number(
        self,
        key: str,
        default: Any = _MISSING,
        *,
        integer: bool = False,
        low: float | None = None,
        high: float | None = None,
        low_open: bool = False,
        high_open: bool = False,
    ) -> Any:
        value = self._get(key, default)
        if value is _MISSING:
            return default if default is not _MISSING else None
        if isinstance(value, str) and _EXPONENT_NUMBER.match(value):
            # YAML 1.1 (PyYAML) reads 1e-3 as a string; kubectl and JSON read a number.
            value = float(value)
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**63:
            self.error(
                key,
                f"must be {_interval(low, high, low_open, high_open)}, got a "
                f"{len(str(abs(value)))}-digit number",
            )
            return default if default is not _MISSING else None
        if isinstance(value, bool) or not isinstance(value, int | float):
            what = "an integer" if integer else "a number"
            self.error(key, f"must be {what}, got {_kind_of(value)} {_show(value)}")
            return default if default is not _MISSING else None
        if integer and not (isinstance(value, int) or float(value).is_integer()):
            self.error(key, f"must be an integer, got {value}")
            return default if default is not _MISSING else None
        if not math.isfinite(value):
            self.error(key, f"must be a finite number, got {value}")
            return default if default is not _MISSING else None
        too_low = low is not None and (value <= low if low_open else value < low)
        too_high = high is not None and (value >= high if high_open else value > high)
        if too_low or too_high:
            self.error(key, f"must be {_interval(low, high, low_open, high_open)}, got {value}")
            return default if default is not _MISSING else None
        return int(value) if integer else float(value)

    def boolean(self, key: str, default: bool) -> bool:
        value = self._get(key, default)
        if value is _MISSING:
            return default
        if not isinstance(value, bool):
            self.error(key, f"must be true or false, got {_kind_of(value)} {_show(value)}")
            return default
        return value

    def duration(self, key: str, default: float, *, minimum: float = 0.0) -> float:
        """A duration such as `30s`, `5m`, `1h30m`, `250ms`; returns seconds."""
        value = self._get(key, default)
        if value is _MISSING:
            return default
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            self.error(key, f"must be a duration such as 30s or 5m, got {_kind_of(value)}")
            return default
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            self.error(key, str(exc))
            return default
        if seconds <= minimum:
            self.error(key, f"must be longer than {_num(minimum)}s, got {value!r}")
            return default
        return seconds

    def obj(self, key: str) -> _Obj:
        self.known.add(key)
        return _Obj(self.raw.get(key), self.at(key), self.errors)

    def items(self, key: str) -> Iterator[tuple[str, Any]]:
        """The entries of a list field, with their paths (`spec.pipeline[2]`)."""
        self.known.add(key)
        value = self.raw.get(key)
        if value is None:
            return
        if not isinstance(value, list):
            self.error(key, f"must be a list, got {_kind_of(value)}")
            return
        for i, item in enumerate(value):
            yield f"{self.at(key)}[{i}]", item

    def text_list(self, key: str) -> tuple[str, ...]:
        out: list[str] = []
        for path, item in self.items(key):
            if isinstance(item, str) and item:
                out.append(item)
            else:
                self.errors.add(path, f"must be a non-empty string, got {_kind_of(item)}")
        return tuple(out)

    def text_map(self, key: str) -> dict[str, str]:
        inner = self.obj(key)
        out: dict[str, str] = {}
        for k, v in inner.raw.items():
            inner.known.add(k)
            if isinstance(v, str) and v:
                out[str(k)] = v
            else:
                inner.error(str(k), f"must be a non-empty string, got {_kind_of(v)}")
        return out

    def finish(self) -> None:
        """Report fields nobody asked for: typos must not silently become defaults."""
        names = sorted(k for k in self.known if isinstance(k, str))
        for key in self.raw:
            if key in self.known:
                continue
            hint = difflib.get_close_matches(str(key), names, n=1, cutoff=0.6)
            suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
            known = ", ".join(names)
            self.error(str(key), f"unknown field{suggestion}; known fields: {known}")


def _num(x: float) -> str:
    """A limit as a user would write it back into YAML: 10000000, not 1e+07."""
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def _interval(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{_num(low)}, {_num(high)}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {_num(low)}"
    assert high is not None
    return f"{'<' if high_open else '<='} {_num(high)}"


def parse_duration(value: str | int | float) -> float:
    """Seconds in a duration: a bare number is seconds; else `250ms`, `30s`, `5m`, `1h30m`."""
    if isinstance(value, int | float):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"must be a non-negative duration, got {value}")
        return float(value)
    text = value.strip()
    if not _DURATION.fullmatch(text):
        raise ValueError(f"must be a duration such as 30s, 5m or 1h30m; got {value!r}")
    seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text))
    if not math.isfinite(seconds):
        raise ValueError(f"must be a finite duration, got {value[:20]!r}...")
    return seconds


# --------------------------------------------------------------------------- sections


def _target(o: _Obj) -> Target:
    hint = "must be a Kubernetes object name"
    deployment = o.text("deployment", pattern=_DNS_SUBDOMAIN, pattern_hint=hint) or ""
    service = o.text("service", None, pattern=_DNS_LABEL, pattern_hint=SERVICE_NAME_HINT)
    if service is not None and len(service) > 63:
        o.error("service", f"must be at most 63 characters (a Service name); got {service!r}")
    if service is None:
        service = deployment
        if deployment and not (_DNS_LABEL.fullmatch(deployment) and len(deployment) <= 63):
            o.error(
                "service",
                f"is not set, so it defaults to the Deployment's name {deployment!r}, which is "
                "not a Service name (a DNS-1035 label: lower-case letters, digits and '-', "
                "starting with a letter, no dots, at most 63 characters); set it to the "
                "Service in front of the model",
            )
    container = o.text("container", None)
    port = o.number("port", None, integer=True, low=1, high=65535)
    allow_recreate = o.boolean("allowRecreate", False)
    o.finish()
    return Target(
        deployment=deployment,
        service=service,
        container=container,
        port=port,
        allow_recreate=allow_recreate,
    )


def _features(o: _Obj) -> tuple[Feature, ...]:
    out: list[Feature] = []
    seen: dict[str, str] = {}
    for path, raw in o.items("features"):
        f = _Obj(raw, path, o.errors)
        name = f.text("name")
        ftype = f.text("type", choices=FEATURE_TYPES)
        f.finish()
        if name is None or ftype is None:
            continue
        if name in seen:
            o.errors.add(f"{path}.name", f"duplicate feature {name!r} (also at {seen[name]})")
            continue
        seen[name] = path
        out.append(Feature(name=name, type=ftype))
    return tuple(out)


def _prediction(o: _Obj) -> Prediction | None:
    if not o.present:
        o.finish()
        return None
    name = o.text("name")
    ptype = o.text("type", "numeric", choices=FEATURE_TYPES)
    probabilities = o.text("probabilities", None)
    o.finish()
    return Prediction(name=name or "", type=ptype, probabilities=probabilities)


def _capture(o: _Obj, protocol: str) -> Capture:
    sample_rate = o.number("sampleRate", 1.0, low=0.0, high=1.0, low_open=True)
    max_body = o.number("maxBodyBytes", 1 << 20, integer=True, low=1024, high=64 << 20)
    j = o.obj("json")
    json_capture: JsonCapture | None = None
    if j.present:
        json_capture = JsonCapture(
            request_rows=j.text("requestRows", None),
            response_rows=j.text("responseRows", None),
            features=tuple(j.text_map("features").items()),
            prediction=j.text("prediction", None),
        )
    j.finish()
    redact: list[Redaction] = []
    seen: dict[str, str] = {}
    for path, raw in o.items("redact"):
        r = _Obj(raw, path, o.errors)
        name = r.text("field")
        action = r.text("action", "drop", choices=REDACT_ACTIONS)
        r.finish()
        if name is None or action is None:
            continue
        if not name:
            o.errors.add(f"{path}.field", "must be a non-empty string")
            continue
        if name in seen:
            o.errors.add(f"{path}.field", f"duplicate field {name!r} (also at {seen[name]})")
            continue
        seen[name] = path
        redact.append(Redaction(field=name, action="hash" if action == "hash" else "drop"))
    o.finish()
    if json_capture is not None and protocol not in ("json", "auto"):
        o.error("json", f"only applies with protocol json or auto, not {protocol!r}")
    return Capture(
        sample_rate=sample_rate, max_body_bytes=max_body, json=json_capture, redact=tuple(redact)
    )


def _reference(o: _Obj) -> Reference:
    source = o.text("source", "warmup", choices=REFERENCE_SOURCES)
    size = o.number("size", 1000, integer=True, low=50, high=10_000_000)
    ref = Reference(source=source, size=size)
    if source == "configMap":
        cm = o.obj("configMap")
        name = cm.text("name", pattern=_DNS_SUBDOMAIN, pattern_hint="must be a ConfigMap name")
        key = cm.text("key")
        cm.finish()
        ref = Reference(source=source, size=size, config_map=name, key=key)
    elif source == "url":
        url = o.text("url")
        if url is not None and not re.match(r"^https?://", url):
            o.error("url", f"must be an http:// or https:// URL, got {url!r}")
        ref = Reference(source=source, size=size, url=url)
    elif source == "file":
        ref = Reference(source=source, size=size, path=o.text("path"))
    else:
        for key in ("configMap", "url", "path"):
            if o.has(key):
                o.error(key, f"only applies with source {key if key != 'path' else 'file'}")
    o.finish()
    return ref


def _window(o: _Obj) -> Window:
    has_size, has_duration = o.has("size"), o.has("duration")
    if has_size and has_duration:
        o.errors.add(o.path, "set either size or duration, not both")
    if has_duration:
        window = Window(size=None, duration_seconds=o.duration("duration", 300.0))
    else:
        window = Window(size=o.number("size", 1000, integer=True, low=50, high=10_000_000))
    o.finish()
    return window


def _drift(o: _Obj) -> DriftCheck:
    check = DriftCheck(
        enabled=o.boolean("enabled", True),
        test=o.text("test", "auto", choices=DRIFT_TESTS),
        p_value=o.number("pValue", 0.01, low=0.0, high=1.0, low_open=True, high_open=True),
        correction=o.text("correction", "bonferroni", choices=CORRECTIONS),
        min_effect=o.number("minEffect", None, low=0.0),
    )
    o.finish()
    return check


def _detectors(o: _Obj) -> Detectors:
    drift = _drift(o.obj("drift"))
    prediction_drift = _drift(o.obj("predictionDrift"))
    q = o.obj("quality")
    quality = QualityCheck(
        enabled=q.boolean("enabled", True),
        max_missing_rate=q.number("maxMissingRate", 0.05, low=0.0, high=1.0),
        out_of_range=q.boolean("outOfRange", True),
        new_categories=q.boolean("newCategories", True),
    )
    q.finish()
    latency = errors = performance = None
    lat = o.obj("latency")
    if lat.present:
        latency = LatencyCheck(p99_ms=lat.number("p99Ms", low=0.0, low_open=True) or 0.0)
    lat.finish()
    err = o.obj("errors")
    if err.present:
        errors = ErrorsCheck(max_rate=err.number("maxRate", low=0.0, high=1.0) or 0.0)
    err.finish()
    perf = o.obj("performance")
    if perf.present:
        performance = PerformanceCheck(
            estimate=perf.text("estimate", "cbpe", choices=PERFORMANCE_ESTIMATES),
            metric=perf.text("metric", "accuracy", choices=PERFORMANCE_METRICS),
            max_drop=perf.number("maxDrop", 0.05, low=0.0, high=1.0, low_open=True),
        )
    perf.finish()
    o.finish()
    return Detectors(
        drift=drift,
        prediction_drift=prediction_drift,
        quality=quality,
        latency=latency,
        errors=errors,
        performance=performance,
    )


def _alerting(o: _Obj) -> Alerting:
    alerting = Alerting(
        evaluation_interval_seconds=o.duration("evaluationInterval", 30.0),
        fire_after=o.number("fireAfter", 3, integer=True, low=1, high=100),
        resolve_after=o.number("resolveAfter", 3, integer=True, low=1, high=100),
    )
    o.finish()
    return alerting


def _pipeline(o: _Obj) -> tuple[tuple[PipelineComponent, ...], dict[str, str]]:
    """The components, and each one's field path in the manifest (for later cross-checks)."""
    out: list[PipelineComponent] = []
    paths: dict[str, str] = {}
    for path, raw in o.items("pipeline"):
        c = _Obj(raw, path, o.errors)
        name = c.text("name", pattern=_DNS_SUBDOMAIN, pattern_hint="must be a Kubernetes name")
        kind = c.text("kind", choices=PIPELINE_KINDS)
        component = PipelineComponent(
            name=name or "",
            kind=kind or "",
            produces=c.text_list("produces"),
            depends_on=c.text_list("dependsOn"),
            namespace=c.text("namespace", None),
        )
        c.finish()
        if name is None or kind is None:
            continue
        if name in paths:
            o.errors.add(f"{path}.name", f"duplicate component {name!r} (also at {paths[name]})")
            continue
        paths[name] = path
        out.append(component)
    for component in out:
        for dep in component.depends_on:
            if dep not in paths:
                known = ", ".join(sorted(paths)) or "none"
                o.errors.add(
                    f"{paths[component.name]}.dependsOn",
                    f"{dep!r} is not a component of spec.pipeline (components: {known})",
                )
    return tuple(out), paths


def _reactions(o: _Obj) -> tuple[tuple[Reaction, ...], list[str]]:
    """The reactions, and each one's field path in the manifest."""
    out: list[Reaction] = []
    paths: list[str] = []
    for path, raw in o.items("reactions"):
        r = _Obj(raw, path, o.errors)
        if isinstance(raw, dict) and (True in raw or "on" in raw):
            r.known.update({True, "on"})  # type: ignore[arg-type]
            o.errors.add(
                f"{path}.on",
                "use `alert:` to name the alert type; YAML reads a bare `on` key as true",
            )
        on = r.text("alert", choices=ALERT_TYPES)
        action = r.text("action", choices=ACTIONS)
        reaction = Reaction(
            alert=on or "",
            action=action or "",
            feature=r.text("feature", None),
            to_revision=r.number("toRevision", None, integer=True, low=1),
            min_replicas=r.number("minReplicas", None, integer=True, low=0, high=1000),
            max_replicas=r.number("maxReplicas", None, integer=True, low=1, high=1000),
            router=r.text("router", None, choices=TRAFFIC_ROUTERS),
            route=r.text("route", None),
            stable=r.text("stable", None),
            canary=r.text("canary", None),
            step_percent=r.number("stepPercent", 100, integer=True, low=1, high=100),
            webhook=r.text("webhook", None),
        )
        if (
            reaction.min_replicas is not None
            and reaction.max_replicas is not None
            and reaction.min_replicas > reaction.max_replicas
        ):
            r.error("minReplicas", f"must not exceed maxReplicas ({reaction.max_replicas})")
        if action in ("shiftTraffic", "pause") and reaction.canary is None and not r.has("canary"):
            r.error("canary", f"required when action is {action}: the canary backend")
        if action == "shiftTraffic" and reaction.stable is None and not r.has("stable"):
            r.error("stable", "required when action is shiftTraffic: the stable backend")
        if (
            action == "shiftTraffic"
            and reaction.router in ("httproute", "virtualservice")
            and (reaction.route is None and not r.has("route"))
        ):
            r.error("route", f"required with router {reaction.router}: the route's name")
        if action == "scale" and reaction.max_replicas is None and not r.has("maxReplicas"):
            r.error("maxReplicas", "required when action is scale")
        if action == "shiftTraffic" and reaction.router is None and not r.has("router"):
            r.error(
                "router", f"required when action is shiftTraffic ({', '.join(TRAFFIC_ROUTERS)})"
            )
        if reaction.webhook is not None and not re.match(r"^https?://", reaction.webhook):
            r.error("webhook", f"must be an http:// or https:// URL, got {reaction.webhook!r}")
        r.finish()
        if on is not None and action is not None:
            out.append(reaction)
            paths.append(path)
    return tuple(out), paths


def _guardrails(o: _Obj) -> Guardrails:
    g = Guardrails(
        dry_run=o.boolean("dryRun", False),
        cooldown_seconds=o.duration("cooldown", 600.0, minimum=-1.0),
        max_actions_per_hour=o.number("maxActionsPerHour", 3, integer=True, low=0, high=3600),
        require_approval=o.boolean("requireApproval", False),
    )
    o.finish()
    return g


def _spec(o: _Obj) -> ObservedModelSpec:
    target = _target(o.obj("target"))
    protocol = o.text("protocol", "auto", choices=PROTOCOLS)
    features = _features(o)
    prediction = _prediction(o.obj("prediction"))
    capture = _capture(o.obj("capture"), protocol)
    reference = _reference(o.obj("reference"))
    window = _window(o.obj("window"))
    detectors = _detectors(o.obj("detectors"))
    alerting = _alerting(o.obj("alerting"))
    pipeline, pipeline_paths = _pipeline(o)
    reactions, reaction_paths = _reactions(o)
    spec = ObservedModelSpec(
        target=target,
        protocol=protocol,
        features=features,
        prediction=prediction,
        capture=capture,
        reference=reference,
        window=window,
        detectors=detectors,
        alerting=alerting,
        pipeline=pipeline,
        reactions=reactions,
        guardrails=_guardrails(o.obj("guardrails")),
    )
    numeric = {f.name for f in features if f.type == "numeric"}
    if prediction is not None and prediction.type == "numeric":
        numeric.add(prediction.name)
    for i, rule in enumerate(capture.redact):
        if rule.action == "hash" and rule.field in numeric:
            o.errors.add(
                f"spec.capture.redact[{i}].action",
                f"hashing turns the numeric {rule.field!r} into text; drop it, or declare it "
                "categorical",
            )
    if features:
        known = {f.name for f in features} | ({prediction.name} if prediction else set())
        for component in spec.pipeline:
            for name in component.produces:
                if name not in known:
                    o.errors.add(
                        f"{pipeline_paths[component.name]}.produces",
                        f"{name!r} is neither a feature in spec.features nor the prediction",
                    )
        if capture.json is not None:
            for name, _ in capture.json.features:
                if name not in known:
                    o.errors.add(
                        f"spec.capture.json.features.{name}", "is not a feature in spec.features"
                    )
        for path, reaction in zip(reaction_paths, spec.reactions, strict=True):
            if reaction.feature is not None and reaction.feature not in known:
                o.errors.add(f"{path}.feature", f"{reaction.feature!r} is not a feature")
    if protocol == "json" and capture.json is None and not features:
        o.errors.add(
            "spec.protocol",
            "json needs spec.capture.json field paths or spec.features to know what to capture",
        )
    o.finish()
    return spec


# --------------------------------------------------------------------------- entry points


def parse_observed_model(
    manifest: Mapping[str, Any], *, source: str | None = None
) -> ObservedModel:
    """Validate a manifest (already decoded) into an `ObservedModel`; raise `SpecError`."""
    errors = _Errors()
    root = _Obj(dict(manifest) if isinstance(manifest, Mapping) else manifest, "", errors)
    root.text("apiVersion", choices=(API_VERSION,))
    root.text("kind", choices=(KIND,))
    meta = root.obj("metadata")
    name = meta.text(
        "name",
        pattern=_DNS_LABEL,
        pattern_hint="must be a DNS-1035 label (lower-case letters, digits and '-')",
    )
    if name is not None and len(name) > MAX_NAME_LENGTH:
        meta.error(
            "name",
            f"must be at most {MAX_NAME_LENGTH} characters so that {name}-detector is a valid "
            f"Service name; got {len(name)}",
        )
    namespace = meta.text(
        "namespace",
        "default",
        pattern=_NAMESPACE,
        pattern_hint="must be a namespace name (a DNS-1123 label: lower-case letters, digits, '-')",
    )
    if namespace is not None and len(namespace) > 63:
        meta.error("namespace", f"must be at most 63 characters, got {len(namespace)}")
    generation = meta.number("generation", None, integer=True)
    uid = meta.text("uid", None)
    annotations = meta.raw.get("annotations")
    rebaseline = None
    if isinstance(annotations, dict) and annotations.get(REBASELINE_ANNOTATION) is not None:
        rebaseline = str(annotations[REBASELINE_ANNOTATION])
    # Kubernetes puts many fields in metadata; none of them change the meaning of the spec.
    meta.known.update(meta.raw)
    spec_obj = root.obj("spec")
    if not spec_obj.present and "spec" not in root.raw:
        errors.add("spec", "required field is missing")
    spec = _spec(spec_obj)
    root.known.add("status")
    root.finish()
    if errors.items:
        raise SpecError(errors.items, source)
    return ObservedModel(
        name=name,
        namespace=namespace,
        spec=spec,
        generation=generation,
        uid=uid,
        rebaseline=rebaseline,
    )


def load_observed_model(path: str | Path) -> ObservedModel:
    """Read a YAML (or JSON) manifest file holding one ObservedModel."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError([FieldError("(file)", f"cannot read: {exc.strerror}")], str(path)) from exc
    return loads_observed_model(text, source=str(path))


def loads_observed_model(text: str, *, source: str | None = None) -> ObservedModel:
    """Parse YAML text holding one ObservedModel (other documents in the stream are skipped)."""
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(yaml)"
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError([FieldError(where, f"not valid YAML: {problem}")], source) from exc
    models = [d for d in docs if isinstance(d, dict) and d.get("kind") == KIND]
    if not models:
        if len(docs) == 1:
            return parse_observed_model(docs[0], source=source)
        raise SpecError([FieldError("kind", f"no document of kind {KIND} found")], source)
    if len(models) > 1:
        raise SpecError(
            [FieldError("kind", f"{len(models)} ObservedModel documents found; expected one")],
            source,
        )
    return parse_observed_model(models[0], source=source)
