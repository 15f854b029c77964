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

Each field is declared once, as a dataclass field with a `Wire` (how it is written
in a manifest), and each rule between fields once, as a `Rule` (CEL and Python).
One generic reader (`_section`) parses any declared object; the few sections whose
reading depends on another field (target, reference, window, the spec itself) have
a small reader of their own in `_SECTION_READERS`. `mlwarden.crd` generates the CRD
and docs/observedmodel.md from the same declaration. Adding a field is one `_f(...)`
line in its dataclass (and its tests).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Final, Literal

from mlwarden.records import json_kind as _kind_of

# The ObservedModel's API: the one place its group, version, kind and plural are spelled.
GROUP: Final = "mlwarden.io"
VERSION: Final = "v1alpha1"
KIND: Final = "ObservedModel"
PLURAL: Final = "observedmodels"
API_VERSION: Final = f"{GROUP}/{VERSION}"
# The fleet incident (react/incidents.py): a record the operator writes, listed by
# `kubectl get incidents`, one per suspect shared by several models' incidents.
INCIDENT_KIND: Final = "Incident"
INCIDENT_PLURAL: Final = "incidents"

PROTOCOLS: Final = ("auto", "v2", "v2-grpc", "v1", "openai", "json")
FEATURE_TYPES: Final = ("numeric", "categorical", "embedding")
PREDICTION_TYPES: Final = ("numeric", "categorical")
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
    "CanaryRegression",
    "MultivariateDrift",
)
# spec.detectors.multivariate.method: PCA reconstruction error, the kernel test, or none.
MULTIVARIATE_METHODS: Final = ("pca", "mmd", "off")
ACTIONS: Final = ("alert", "rollback", "scale", "shiftTraffic", "pause", "retrain")
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
# The kinds spec.target may name (spec.target.kind).
TARGET_KINDS: Final = ("Deployment", "StatefulSet", "Rollout", "InferenceService")

# Bounds of the status lists: the CRD's maxItems, and what the operator and the detector trim
# to before a write, so that no write is refused and the object (at most 1.5 MiB in etcd) and
# kopf's last-handled annotation (which holds status.alerts; annotations: 256 KiB in all)
# stay far below their limits.
MAX_STATUS_ALERTS: Final = 100
MAX_STATUS_REACTIONS: Final = 50
MAX_STATUS_SUSPECTS: Final = 10
MAX_STATUS_EVIDENCE: Final = 10
MAX_STATUS_CONDITIONS: Final = 16
# status.incidents (react/incidents.py): the newest incidents, each with its alerts and actions.
MAX_STATUS_INCIDENTS: Final = 20
MAX_STATUS_INCIDENT_ALERTS: Final = 100
MAX_STATUS_INCIDENT_ACTIONS: Final = 20

# Severities, most severe first (Alertmanager's customary label values), and each alert type's
# default; `reactions[].severity` overrides it for the alerts a reaction matches.
SEVERITIES: Final = ("critical", "warning", "info")
DEFAULT_SEVERITY: Final[Mapping[str, str]] = {
    "Errors": "critical",
    "PerformanceDrop": "critical",
    "CanaryRegression": "critical",  # a candidate serving users worse than the baseline
    "Latency": "warning",
    "PredictionDrift": "warning",
    "DataQuality": "warning",
    "FeatureDrift": "warning",
    "MultivariateDrift": "warning",
}
MAX_STATUS_REVISIONS: Final = 8  # status.detector.revisions: the detector's live revisions
MAX_STATUS_SIGNALS: Final = 50  # status.detector.signals

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
_DURATION = re.compile(r"(?:([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d))+")
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)")
_EXPONENT_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")
_UNIT_SECONDS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

FeatureType = Literal["numeric", "categorical", "embedding"]
PredictionType = Literal["numeric", "categorical"]


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


# --------------------------------------------------------------------------- the declaration

# Each field of the ObservedModel is declared once, below, as a dataclass field whose
# metadata (a `Wire`) says how it is written in a manifest: its name, type, bounds,
# enum, pattern and description. From that one declaration come the parser further
# down, the CRD's OpenAPI schema (`mlwarden.crd`) and the field reference
# (docs/observedmodel.md, `python -m mlwarden.crd --docs`). Each rule between fields
# is declared once too, as a `Rule`: its CEL expression (the API server's check), its
# Python check (the parser's) and its message; tests/unit/test_crd.py evaluates both
# on the same manifests and requires the same verdict.

_MISSING: Final[Any] = object()
_HTTP_URL: Final = re.compile(r"^https?://")
# Lengths that bound the API server's CEL cost estimate (and the object's size).
MAX_NAME: Final = 253  # a Kubernetes object name (DNS-1123 subdomain)
MAX_TEXT: Final = 253  # a feature, output or container name
MAX_PATH: Final = 1024  # a file path or a dotted JSON path
MAX_URL: Final = 2048
MAX_FEATURES: Final = 1000
MAX_SEGMENT_COLUMNS: Final = 4  # spec.segments: columns to slice by
MAX_SEGMENT_LEVELS: Final = 50  # spec.segments[].maxLevels
MAX_PIPELINE: Final = 100
MAX_REACTIONS: Final = 50

WireKind = Literal[
    "string", "integer", "number", "boolean", "duration", "object", "objects", "strings", "map"
]


@dataclass(frozen=True)
class Wire:
    """How one field is written in a manifest; the metadata of a spec dataclass field."""

    name: str
    description: str
    kind: WireKind = "string"
    required: bool = False
    enum: tuple[str, ...] | None = None
    pattern: re.Pattern[str] | None = None
    hint: str = ""  # the parser's message when `pattern` does not match
    url: bool = False  # an http(s) URL
    max_length: int | None = None
    length_note: str = ""
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    positive: bool = True  # duration: longer than zero (else: zero or longer)
    of: type[Any] | None = None  # object, objects: the nested declaration
    min_length: int | None = None
    max_items: int | None = None
    noun: str = ""  # objects with map_keys: what an item is, in a duplicate's message
    map_keys: tuple[str, ...] = ()
    group: tuple[str, str] | None = None  # (wire name, description) of an enclosing object
    crd_default: bool = True  # give the CRD the default (window.size: no, see there)


def _f(
    name: str,
    description: str,
    kind: WireKind = "string",
    *,
    default: Any = _MISSING,
    factory: Callable[[], Any] | None = None,
    **wire: Any,
) -> Any:
    """A declared field: `default` (or `factory`) absent makes it required."""
    required = default is _MISSING and factory is None and not wire.pop("optional", False)
    meta = {"wire": Wire(name, description, kind, required=required, **wire)}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    if default is _MISSING:
        return field(metadata=meta)
    return field(default=default, metadata=meta)


def _has(s: Mapping[str, Any], key: str) -> bool:
    return s.get(key) is not None


@dataclass(frozen=True)
class Rule:
    """A rule between fields of one object: CEL for the API server, Python for the parser.

    `check(s)` is true when the object `s` (a manifest mapping) keeps the rule, as the CEL
    `cel` evaluated with `self` = s; `field` is where a violation is reported; `message`
    is the CRD's message and `explain(s)` the parser's (None: another check reports it).
    """

    cel: str
    check: Callable[[Mapping[str, Any]], bool]
    message: str
    field: str | None = None
    explain: Callable[[Mapping[str, Any]], str | None] | None = None


def wire_fields(cls: type[Any]) -> list[tuple[str, Wire]]:
    """(attribute, Wire) of each declared field of a spec dataclass, in declaration order."""
    return [(f.name, f.metadata["wire"]) for f in dataclasses.fields(cls) if "wire" in f.metadata]


def rules_of(cls: type[Any]) -> tuple[Rule, ...]:
    return tuple(getattr(cls, "RULES", ()))


# --------------------------------------------------------------------------- the spec


@dataclass(frozen=True)
class Target:
    """The model server to observe: its workload (by kind and name), Service, container and port.

    `kind` names the workload's kind (TARGET_KINDS) and `name` the object; `deployment: NAME`
    (the original shape) still means `kind: Deployment, name: NAME`. Read either way, `name`
    holds the workload's name and `deployment` the same name for a Deployment ("" otherwise).
    """

    RULES: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "has(self.name) != has(self.deployment)",
            lambda s: _has(s, "name") != _has(s, "deployment"),
            "set exactly one of name (with kind) and deployment (the original shape)",
            field="name",
            explain=lambda s: (
                "is required: the workload's name (with kind; deployment: NAME is the "
                "original shape for a Deployment)"
                if not _has(s, "deployment")
                else "and deployment are both set; set name (with kind), or deployment alone"
            ),
        ),
        Rule(
            "!has(self.deployment) || !has(self.kind) || self.kind == 'Deployment'",
            lambda s: not _has(s, "deployment") or s.get("kind", "Deployment") == "Deployment",
            "deployment names a Deployment; for another kind set name",
            field="deployment",
            explain=lambda s: (
                f"names a Deployment, but kind is {s.get('kind')!r}; set name: to the "
                f"{s.get('kind')}'s name instead"
            ),
        ),
        Rule(
            "!has(self.kind) || self.kind != 'InferenceService' || "
            "(!has(self.port) && !has(self.container))",
            lambda s: (
                s.get("kind") != "InferenceService"
                or (not _has(s, "port") and not _has(s, "container"))
            ),
            "container and port do not apply to an InferenceService (no sidecar is injected: "
            "its own payload logger sends to the detector)",
            field="port",
            explain=lambda s: (
                "and container do not apply to an InferenceService: no sidecar is injected, "
                "the InferenceService's own payload logger sends to the detector"
            ),
        ),
        Rule(
            "has(self.service) || (has(self.kind) && self.kind == 'InferenceService') || "
            "((has(self.name) ? self.name : has(self.deployment) ? self.deployment : 'x')"
            f".matches('{_DNS_LABEL.pattern}') && "
            "size(has(self.name) ? self.name : has(self.deployment) ? self.deployment : 'x') "
            "<= 63)",
            lambda s: (
                _has(s, "service")
                or s.get("kind") == "InferenceService"
                or not isinstance(s.get("name", s.get("deployment")), str)
                or bool(
                    _DNS_LABEL.fullmatch(s.get("name", s.get("deployment")))
                    and len(s.get("name", s.get("deployment"))) <= 63
                )
            ),
            "service is not set, so it defaults to the workload's name, which is not a "
            "Service name (a DNS-1035 label: no dots, at most 63 characters); set it",
            field="service",
            explain=lambda s: (
                f"is not set, so it defaults to the workload's name "
                f"{s.get('name', s.get('deployment'))!r}, which "
                "is not a Service name (a DNS-1035 label: lower-case letters, digits and '-', "
                "starting with a letter, no dots, at most 63 characters); set it to the "
                "Service in front of the model"
            ),
        ),
    )

    deployment: str = _f(
        "deployment",
        "The Deployment that serves the model (the original shape: the same as kind: "
        "Deployment with name).",
        optional=True,
        pattern=_DNS_SUBDOMAIN,
        hint="must be a Kubernetes object name",
        max_length=MAX_NAME,
    )
    name: str = _f(
        "name",
        "The workload's name (with kind); deployment: NAME is the same as kind: Deployment, "
        "name: NAME.",
        optional=True,
        pattern=_DNS_SUBDOMAIN,
        hint="must be a Kubernetes object name",
        max_length=MAX_NAME,
    )
    service: str = _f(
        "service",
        "The Service in front of it (default: the workload's name); a DNS-1035 label, so no "
        "dots. Not used for an InferenceService (KServe makes its own).",
        optional=True,
        pattern=_DNS_LABEL,
        hint=SERVICE_NAME_HINT,
        max_length=63,
        length_note=" (a Service name)",
    )
    container: str | None = _f(
        "container",
        "The model container (default: the operator picks it).",
        default=None,
        max_length=MAX_TEXT,
    )
    port: int | None = _f(
        "port",
        "The model container's port (default: the operator picks it).",
        "integer",
        default=None,
        low=1,
        high=65535,
    )
    # Inject into a Deployment with strategy Recreate without asking for approval (that
    # rollout stops every pod before the new ones start).
    allow_recreate: bool = _f(
        "allowRecreate",
        "Inject into a Deployment whose strategy is Recreate without asking for approval "
        "(that rollout stops every pod before the new ones start).",
        "boolean",
        default=False,
    )
    kind: str = _f(
        "kind",
        "The workload's kind: Deployment, StatefulSet, Rollout (Argo Rollouts) or "
        "InferenceService (KServe: observed through its own payload logger, no sidecar).",
        default="Deployment",
        enum=TARGET_KINDS,
    )


@dataclass(frozen=True)
class Feature:
    """An input column the model receives."""

    RULES: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "!has(self.dimensions) || self.type == 'embedding'",
            lambda s: not _has(s, "dimensions") or s.get("type") == "embedding",
            "dimensions only applies to an embedding",
            field="dimensions",
            explain=lambda s: (
                f"only applies to type embedding (a vector per row), not {s.get('type')!r}"
            ),
        ),
    )

    name: str = _f("name", "The feature's name.", max_length=MAX_TEXT)
    type: FeatureType = _f(
        "type",
        "numeric, categorical, or embedding (a vector per row: an input or output tensor of "
        "that name, or an OpenAI embeddings response; see docs/detector.md#embeddings).",
        enum=FEATURE_TYPES,
    )
    dimensions: int | None = _f(
        "dimensions",
        "An embedding's length: vectors of another length count as type errors "
        "(absent: the first vector seen sets it).",
        "integer",
        default=None,
        low=1,
        high=65536,
    )


@dataclass(frozen=True)
class Segment:
    """A column whose values slice the traffic: each frequent value is a segment of its own.

    The drift, data-quality and performance checks then also run per segment (its records
    against its own part of the reference), so a change confined to one segment is seen
    (detector/segments.py). The segments are the `maxLevels` most frequent values of the
    reference, counted with bounded memory; every other value (and a missing one) is the
    segment `other`.
    """

    column: str = _f(
        "column",
        "A categorical feature, or any input field the records carry, to slice by.",
        min_length=1,
        max_length=MAX_TEXT,
    )
    max_levels: int = _f(
        "maxLevels",
        "Segments kept: the most frequent values; the rest are one segment, other.",
        "integer",
        default=20,
        low=1,
        high=MAX_SEGMENT_LEVELS,
    )


@dataclass(frozen=True)
class Prediction:
    """The model output to watch; `probabilities` names an output with class scores."""

    name: str = _f("name", "The output's name.", max_length=MAX_TEXT)
    type: PredictionType = _f(
        "type", "numeric or categorical.", default="numeric", enum=PREDICTION_TYPES
    )
    probabilities: str | None = _f(
        "probabilities", "An output holding class scores.", default=None, max_length=MAX_TEXT
    )


@dataclass(frozen=True)
class JsonCapture:
    """Field paths for the generic JSON protocol.

    Paths are dotted (`data.items`, `merchant.category`, `scores.0`).
    `request_rows`/`response_rows` point at the list of rows in each body (absent:
    the body itself is the single row, or the list of rows when it is a list);
    `features` maps feature name to a path inside one request row (absent: the
    feature names themselves); `prediction` is a path inside one response row.
    """

    request_rows: str | None = _f(
        "requestRows", "The list of rows in a request body.", default=None, max_length=MAX_PATH
    )
    response_rows: str | None = _f(
        "responseRows", "The list of rows in a response body.", default=None, max_length=MAX_PATH
    )
    # (feature name, path) pairs: a tuple so the spec stays immutable and hashable.
    features: tuple[tuple[str, str], ...] = _f(
        "features",
        "Feature name to its path inside one request row.",
        "map",
        default=(),
        max_length=MAX_PATH,
        max_items=MAX_FEATURES,
    )
    prediction: str | None = _f(
        "prediction",
        "The prediction's path inside one response row.",
        default=None,
        max_length=MAX_PATH,
    )


@dataclass(frozen=True)
class Redaction:
    """A captured field the sidecar drops, or replaces by a keyed hash, before shipping it."""

    field: str = _f(  # a feature or output name, as captured
        "field", "A feature or output name, as captured.", min_length=1, max_length=MAX_TEXT
    )
    action: Literal["drop", "hash"] = _f(
        "action",
        "drop: removed; hash: replaced by a keyed hash (equal values stay equal).",
        default="drop",
        enum=REDACT_ACTIONS,
    )


@dataclass(frozen=True)
class Capture:
    """What the sidecar captures: a sample of exchanges with bodies up to a size cap."""

    sample_rate: float = _f(
        "sampleRate",
        "Fraction of exchanges captured, in (0, 1].",
        "number",
        default=1.0,
        low=0.0,
        high=1.0,
        low_open=True,
    )
    max_body_bytes: int = _f(
        "maxBodyBytes",
        "Bodies larger than this are not captured.",
        "integer",
        default=1 << 20,
        low=1024,
        high=64 << 20,
    )
    json: JsonCapture | None = _f(
        "json",
        "Field paths for the json protocol (dotted: data.items, scores.1).",
        "object",
        default=None,
        of=JsonCapture,
    )
    redact: tuple[Redaction, ...] = _f(
        "redact",
        "Captured fields dropped or hashed (HMAC-SHA256 keyed with the ingest token) in the "
        "pod, before they are shipped.",
        "objects",
        default=(),
        of=Redaction,
        map_keys=("field",),
        noun="field",
        max_items=MAX_FEATURES,
    )


def _only_with(key: str, source: str) -> Rule:
    return Rule(
        f"has(self.{key}) == (has(self.source) && self.source == '{source}')",
        lambda s: _has(s, key) == (s.get("source", "warmup") == source),
        f"{key} is required when source is {source}, and only applies then",
        field=key,
        # Missing where it is required: the reader reports the missing field itself.
        explain=lambda s: f"only applies with source {source}" if _has(s, key) else None,
    )


@dataclass(frozen=True)
class ReferenceSpec:
    """Where the reference (what 'normal' looks like) comes from: spec.reference."""

    RULES: ClassVar[tuple[Rule, ...]] = (
        _only_with("configMap", "configMap"),
        _only_with("url", "url"),
        _only_with("path", "file"),
    )

    source: Literal["warmup", "configMap", "url", "file"] = _f(
        "source",
        "warmup (the first records seen), configMap, url or file.",
        default="warmup",
        enum=REFERENCE_SOURCES,
    )
    size: int = _f(
        "size", "Records in the reference.", "integer", default=1000, low=50, high=10_000_000
    )
    config_map: str | None = _f(
        "name",
        "The ConfigMap's name.",
        default=None,
        pattern=_DNS_SUBDOMAIN,
        hint="must be a ConfigMap name",
        max_length=MAX_NAME,
        group=("configMap", "The ConfigMap holding the reference data (source configMap)."),
    )
    key: str | None = _f(
        "key",
        "The key holding a CSV, Parquet or JSONL file.",
        default=None,
        max_length=MAX_NAME,
        group=("configMap", "The ConfigMap holding the reference data (source configMap)."),
    )
    url: str | None = _f(
        "url",
        "An http(s) URL of the reference data (source url).",
        default=None,
        url=True,
        max_length=MAX_URL,
    )
    path: str | None = _f(
        "path", "A file path inside the detector (source file).", default=None, max_length=MAX_PATH
    )


@dataclass(frozen=True)
class Window:
    """The current window: the last `size` records, or the records of the last `duration`."""

    RULES: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "!(has(self.size) && has(self.duration))",
            lambda s: not (_has(s, "size") and _has(s, "duration")),
            "set either size or duration, not both",
        ),
    )

    # No CRD default for size: a defaulted size would collide with a duration the user
    # set. The parser applies size 1000 when neither is given.
    size: int | None = _f(
        "size",
        "Records in the window (default 1000).",
        "integer",
        default=1000,
        low=50,
        high=10_000_000,
        crd_default=False,
    )
    duration_seconds: float | None = _f(
        "duration", "How far back the window reaches, e.g. 5m.", "duration", default=None
    )


def _p_value(description: str) -> Any:
    """A check's significance level: `pValue`, in (0, 1), 0.01 by default."""
    return _f(
        "pValue",
        description,
        "number",
        default=0.01,
        low=0.0,
        high=1.0,
        low_open=True,
        high_open=True,
    )


@dataclass(frozen=True)
class DriftCheck:
    enabled: bool = _f("enabled", "Run this check.", "boolean", default=True)
    test: str = _f("test", "The test (auto: by column type).", default="auto", enum=DRIFT_TESTS)
    p_value: float = _p_value("Significance level, in (0, 1).")
    correction: str = _f(
        "correction",
        "Multiple-testing correction across columns.",
        default="bonferroni",
        enum=CORRECTIONS,
    )
    # Effect-size floor: below it a shift is not reported however small its
    # p-value (None: the test's own default, documented with the detector).
    min_effect: float | None = _f(
        "minEffect",
        "Effect-size floor below which a shift is not reported (default: the test's).",
        "number",
        default=None,
        low=0.0,
    )


@dataclass(frozen=True)
class QualityCheck:
    enabled: bool = _f("enabled", "Run this check.", "boolean", default=True)
    max_missing_rate: float = _f(
        "maxMissingRate",
        "Highest tolerated fraction of missing values, in [0, 1].",
        "number",
        default=0.05,
        low=0.0,
        high=1.0,
    )
    out_of_range: bool = _f(
        "outOfRange",
        "Alert on numeric values outside the reference range.",
        "boolean",
        default=True,
    )
    new_categories: bool = _f(
        "newCategories", "Alert on categories the reference never had.", "boolean", default=True
    )


@dataclass(frozen=True)
class LatencyCheck:
    p99_ms: float = _f(
        "p99Ms", "Highest tolerated p99 latency, milliseconds.", "number", low=0.0, low_open=True
    )


@dataclass(frozen=True)
class ErrorsCheck:
    max_rate: float = _f(
        "maxRate", "Highest tolerated error rate, in [0, 1].", "number", low=0.0, high=1.0
    )


@dataclass(frozen=True)
class PerformanceCheck:
    estimate: str = _f(
        "estimate", "The label-free estimator.", default="cbpe", enum=PERFORMANCE_ESTIMATES
    )
    metric: str = _f("metric", "The metric.", default="accuracy", enum=PERFORMANCE_METRICS)
    max_drop: float = _f(
        "maxDrop",
        "Highest tolerated drop of the metric, in (0, 1].",
        "number",
        default=0.05,
        low=0.0,
        high=1.0,
        low_open=True,
    )
    label_join_window_seconds: float = _f(
        "labelJoinWindow",
        "How long a prediction waits for its label (POST /v1/labels), e.g. 7d; a label "
        "joined later is unmatched. At most 200,000 predictions wait, whatever the duration "
        "(the oldest dropped and counted beyond).",
        "duration",
        default=7 * 86400.0,
    )
    label_bucket_seconds: float = _f(
        "labelBucket",
        "Width of the prediction-time buckets labels are credited to: labelled performance "
        "is judged per bucket of prediction time, however late its labels came.",
        "duration",
        default=3600.0,
    )


@dataclass(frozen=True)
class MultivariateCheck:
    """Drift of the features' joint distribution, over samples of whole rows
    (`stats/multivariate.py`, `detector/multivariate.py`; docs/detector.md)."""

    method: str = _f(
        "method",
        "pca: PCA reconstruction error (NannyML's method); mmd: the kernel two-sample test; "
        "off: not checked.",
        default="pca",
        enum=MULTIVARIATE_METHODS,
    )
    p_value: float = _p_value("Significance level of one evaluation, in (0, 1).")
    min_effect: float | None = _f(
        "minEffect",
        "Effect floor (pca: rank-biserial correlation of the reconstruction errors against "
        "the reference's, default 0.1; mmd: MMD^2, default 0).",
        "number",
        default=None,
        low=0.0,
    )
    variance: float = _f(
        "variance",
        "pca: share of the reference's variance the kept components explain, in (0, 1).",
        "number",
        default=0.65,
        low=0.0,
        high=1.0,
        low_open=True,
        high_open=True,
    )
    permutations: int = _f(
        "permutations",
        "mmd: permutations of the test.",
        "integer",
        default=100,
        low=20,
        high=2000,
    )
    max_rows: int = _f(
        "maxRows",
        "mmd: rows of each side the test runs on (a random subsample).",
        "integer",
        default=500,
        low=50,
        high=5000,
    )


@dataclass(frozen=True)
class Detectors:
    drift: DriftCheck = _f(
        "drift",
        "Drift of the input features: a statistical test per column against the reference.",
        "object",
        factory=DriftCheck,
        of=DriftCheck,
    )
    prediction_drift: DriftCheck = _f(
        "predictionDrift",
        "Drift of the prediction: a statistical test per column against the reference.",
        "object",
        factory=DriftCheck,
        of=DriftCheck,
    )
    quality: QualityCheck = _f(
        "quality",
        "Data quality: missing values, values out of the reference range, new categories.",
        "object",
        factory=QualityCheck,
        of=QualityCheck,
    )
    latency: LatencyCheck | None = _f(
        "latency",
        "A latency objective (absent: not checked).",
        "object",
        default=None,
        of=LatencyCheck,
    )
    errors: ErrorsCheck | None = _f(
        "errors",
        "An error-rate objective (absent: not checked).",
        "object",
        default=None,
        of=ErrorsCheck,
    )
    performance: PerformanceCheck | None = _f(
        "performance",
        "Model performance, estimated without labels or measured with them.",
        "object",
        default=None,
        of=PerformanceCheck,
    )
    multivariate: MultivariateCheck = _f(
        "multivariate",
        "Drift of the features together (a changed correlation), over samples of whole rows.",
        "object",
        factory=MultivariateCheck,
        of=MultivariateCheck,
    )


@dataclass(frozen=True)
class Alerting:
    """When alerts fire and resolve.

    Drift is decided sequentially as records arrive (`false_alarms_per`, `look_every`,
    `look_interval_seconds`; docs/detector.md); everything else, and drift when
    `false_alarms_per` is 0, by hysteresis: fire after `fire_after` failing evaluations,
    resolve after `resolve_after` passing ones.
    """

    evaluation_interval_seconds: float = _f(
        "evaluationInterval", "How often the checks run.", "duration", default=30.0
    )
    fire_after: int = _f(
        "fireAfter",
        "Failing evaluations in a row before an alert fires.",
        "integer",
        default=3,
        low=1,
        high=100,
    )
    resolve_after: int = _f(
        "resolveAfter",
        "Passing evaluations in a row before an alert resolves.",
        "integer",
        default=3,
        low=1,
        high=100,
    )
    false_alarms_per: int = _f(
        "falseAlarmsPer",
        "Drift is decided as records arrive, with at most one false alarm expected per this "
        "many records; 0: drift follows evaluationInterval and fireAfter instead.",
        "integer",
        default=1_000_000,
        low=0,
        high=1_000_000_000_000,
    )
    look_every: int = _f(
        "lookEvery",
        "Sequential drift decisions: look every this many records (or lookInterval).",
        "integer",
        default=50,
        low=10,
        high=100_000,
    )
    look_interval_seconds: float = _f(
        "lookInterval",
        "Sequential drift decisions: look at least this often while records arrive.",
        "duration",
        default=1.0,
    )


@dataclass(frozen=True)
class Canary:
    """Canary analysis: each candidate revision judged against the baseline revision.

    A signal fails only when the difference is significant (at `pValue`, Bonferroni over the
    signals) and its effect reaches the margin; the rules are in docs/detector.md.
    """

    enabled: bool = _f(
        "enabled", "Judge candidate revisions against the baseline.", "boolean", default=True
    )
    baseline: str | None = _f(
        "baseline",
        "The baseline revision (a pod-template-hash, or the KServe endpoint `default`); absent: "
        "the revision that carried the traffic before the candidate appeared.",
        default=None,
        max_length=MAX_TEXT,
    )
    min_samples: int = _f(
        "minSamples",
        "Records of its own a candidate needs before it can pass.",
        "integer",
        default=200,
        low=30,
        high=1_000_000,
    )
    p_value: float = _f(
        "pValue",
        "Significance level of each comparison, in (0, 1), before the correction over signals.",
        "number",
        default=0.01,
        low=0.0,
        high=1.0,
        low_open=True,
        high_open=True,
    )
    max_divergence: float = _f(
        "maxDivergence",
        "Largest tolerated divergence of the prediction distribution from the baseline's "
        "(KS D for a numeric prediction, Cramér's V for a categorical one), in (0, 1].",
        "number",
        default=0.1,
        low=0.0,
        high=1.0,
        low_open=True,
    )
    max_performance_drop: float = _f(
        "maxPerformanceDrop",
        "Largest tolerated drop of the performance metric (labelled, else CBPE) below the "
        "baseline's, in (0, 1].",
        "number",
        default=0.05,
        low=0.0,
        high=1.0,
        low_open=True,
    )
    quality_margin: float = _f(
        "qualityMargin",
        "Largest tolerated increase of the share of answers without a valid prediction "
        "(missing or of the wrong type) over the baseline's, in [0, 1].",
        "number",
        default=0.02,
        low=0.0,
        high=1.0,
    )
    latency_margin: float = _f(
        "latencyMargin",
        "Largest tolerated relative increase of the p99 latency over the baseline's "
        "(0.2: 20% slower).",
        "number",
        default=0.2,
        low=0.0,
    )
    latency_margin_ms: float = _f(
        "latencyMarginMs",
        "Absolute slack added to the latency margin, milliseconds (ignores jitter of fast models).",
        "number",
        default=5.0,
        low=0.0,
    )
    error_margin: float = _f(
        "errorMargin",
        "Largest tolerated increase of the 5xx rate over the baseline's, in [0, 1].",
        "number",
        default=0.01,
        low=0.0,
        high=1.0,
    )
    idle_after_seconds: float = _f(
        "idleAfter",
        "A revision that sent no records for this long is forgotten (its window and verdict).",
        "duration",
        default=600.0,
    )


@dataclass(frozen=True)
class PipelineComponent:
    """An upstream part of the pipeline, with lineage for diagnosis."""

    name: str = _f(
        "name",
        "The object's name.",
        pattern=_DNS_SUBDOMAIN,
        hint="must be a Kubernetes name",
        max_length=MAX_NAME,
    )
    kind: str = _f("kind", "The object's kind.", enum=PIPELINE_KINDS)
    produces: tuple[str, ...] = _f(
        "produces",
        "Features (or the prediction) this component produces.",
        "strings",
        default=(),
        max_length=MAX_TEXT,
        max_items=MAX_FEATURES,
    )
    depends_on: tuple[str, ...] = _f(
        "dependsOn",
        "Other components of spec.pipeline this one reads from.",
        "strings",
        default=(),
        max_length=MAX_NAME,
        max_items=MAX_PIPELINE,
    )
    namespace: str | None = _f(
        "namespace", "The object's namespace (default: the model's).", default=None, max_length=63
    )


def _int(s: Mapping[str, Any], key: str) -> bool:
    return isinstance(s.get(key), int | float) and not isinstance(s.get(key), bool)


_SHIFTING = "self.action != 'shiftTraffic'"
WEBHOOK_FORMATS: Final = ("slack", "json")


@dataclass(frozen=True)
class SecretKeyRef:
    """A key of a Secret in the ObservedModel's namespace."""

    name: str = _f(
        "name",
        "The Secret's name.",
        pattern=_DNS_SUBDOMAIN,
        hint="must be a Kubernetes name",
        max_length=MAX_NAME,
    )
    key: str = _f("key", "The key in the Secret's data.", default="url", max_length=MAX_TEXT)


_RETRAIN_SOURCES: Final = ("cronJob", "configMap", "workflowTemplate")
# action retrain, source configMap: the key holding the Job manifest when `key` is not given.
RETRAIN_CONFIG_KEY: Final = "job.yaml"
RETRAIN_TIMEOUT_SECONDS: Final = 86400.0  # retrain.timeout: 24h
_CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")  # a ConfigMap key


@dataclass(frozen=True)
class Retrain:
    """Where a retraining run comes from (action retrain): exactly one source.

    The run is started in the ObservedModel's namespace with the incident passed in
    (environment variables of a Job's containers, or a Workflow's arguments.parameters;
    docs/operator.md, "Retraining").
    """

    RULES: ClassVar[tuple[Rule, ...]] = (
        Rule(
            " + ".join(f"(has(self.{k}) ? 1 : 0)" for k in _RETRAIN_SOURCES) + " == 1",
            lambda s: sum(_has(s, k) for k in _RETRAIN_SOURCES) == 1,
            "set exactly one of cronJob, configMap and workflowTemplate",
            explain=lambda s: (
                "set exactly one of cronJob, configMap and workflowTemplate (where the run "
                "comes from), not "
                + (" and ".join(k for k in _RETRAIN_SOURCES if _has(s, k)) or "none")
            ),
        ),
        Rule(
            "!has(self.key) || has(self.configMap)",
            lambda s: not _has(s, "key") or _has(s, "configMap"),
            "key applies only with configMap",
            field="key",
            explain=lambda s: "applies only with configMap (the key holding the Job manifest)",
        ),
    )

    cron_job: str | None = _f(
        "cronJob",
        "Start a Job from this CronJob's jobTemplate, as `kubectl create job "
        "--from=cronjob/NAME` does.",
        default=None,
        pattern=_DNS_SUBDOMAIN,
        hint="must be a CronJob name",
        max_length=MAX_NAME,
    )
    config_map: str | None = _f(
        "configMap",
        "Start a Job from the Job manifest (YAML or JSON) held in this ConfigMap, under key.",
        default=None,
        pattern=_DNS_SUBDOMAIN,
        hint="must be a ConfigMap name",
        max_length=MAX_NAME,
    )
    key: str | None = _f(
        "key",
        f"configMap: the key holding the Job manifest (default {RETRAIN_CONFIG_KEY}).",
        default=None,
        pattern=_CONFIG_KEY,
        hint="must be a ConfigMap key (letters, digits, '-', '_' and '.')",
        max_length=MAX_NAME,
    )
    workflow_template: str | None = _f(
        "workflowTemplate",
        "Submit an Argo Workflows Workflow that runs this WorkflowTemplate "
        "(spec.workflowTemplateRef; Kubeflow Pipelines v2 runs on Argo).",
        default=None,
        pattern=_DNS_SUBDOMAIN,
        hint="must be a WorkflowTemplate name",
        max_length=MAX_NAME,
    )
    timeout_seconds: float = _f(
        "timeout",
        "How long a run may take: after that its record is Failed and the run is left as it "
        "is (a Job suspended by a queue, a Workflow no Argo controller picks up).",
        "duration",
        default=RETRAIN_TIMEOUT_SECONDS,
    )

    @property
    def source(self) -> tuple[str, str]:
        """(kind, name) of the object the run is made from."""
        if self.cron_job is not None:
            return "CronJob", self.cron_job
        if self.config_map is not None:
            return "ConfigMap", self.config_map
        return "WorkflowTemplate", self.workflow_template or ""

    @property
    def config_key(self) -> str:
        return self.key or RETRAIN_CONFIG_KEY


@dataclass(frozen=True)
class Reaction:
    """What to do when an alert of type `alert` fires.

    The field is `alert`, not `on`: YAML 1.1 parsers (PyYAML, and the one inside
    kubectl) read a bare `on` key as the boolean true.
    """

    RULES: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "!has(self.minReplicas) || !has(self.maxReplicas)"
            " || self.minReplicas <= self.maxReplicas",
            lambda s: (
                not (_int(s, "minReplicas") and _int(s, "maxReplicas"))
                or s["minReplicas"] <= s["maxReplicas"]
            ),
            "minReplicas must not exceed maxReplicas",
            field="minReplicas",
            explain=lambda s: f"must not exceed maxReplicas ({s['maxReplicas']})",
        ),
        Rule(
            "!(self.action in ['shiftTraffic', 'pause']) || has(self.canary)"
            " || (self.action == 'pause' && self.alert == 'CanaryRegression')",
            lambda s: (
                s.get("action") not in ("shiftTraffic", "pause")
                or _has(s, "canary")
                or (s.get("action") == "pause" and s.get("alert") == "CanaryRegression")
            ),
            "canary is required when action is shiftTraffic, or pause on another alert than "
            "CanaryRegression (whose modelRevision names the candidate)",
            field="canary",
            explain=lambda s: f"required when action is {s['action']}: the canary backend",
        ),
        Rule(
            f"{_SHIFTING} || has(self.stable)",
            lambda s: s.get("action") != "shiftTraffic" or _has(s, "stable"),
            "stable is required when action is shiftTraffic",
            field="stable",
            explain=lambda s: "required when action is shiftTraffic: the stable backend",
        ),
        Rule(
            f"{_SHIFTING} || !has(self.router)"
            " || !(self.router in ['httproute', 'virtualservice']) || has(self.route)",
            lambda s: (
                s.get("action") != "shiftTraffic"
                or s.get("router") not in ("httproute", "virtualservice")
                or _has(s, "route")
            ),
            "route is required when action shiftTraffic uses router httproute or virtualservice",
            field="route",
            explain=lambda s: f"required with router {s['router']}: the route's name",
        ),
        Rule(
            "self.action != 'scale' || has(self.maxReplicas)",
            lambda s: s.get("action") != "scale" or _has(s, "maxReplicas"),
            "maxReplicas is required when action is scale",
            field="maxReplicas",
            explain=lambda s: "required when action is scale",
        ),
        Rule(
            f"{_SHIFTING} || has(self.router)",
            lambda s: s.get("action") != "shiftTraffic" or _has(s, "router"),
            "router is required when action is shiftTraffic",
            field="router",
            explain=lambda s: (
                f"required when action is shiftTraffic ({', '.join(TRAFFIC_ROUTERS)})"
            ),
        ),
        Rule(
            "self.action != 'retrain' || has(self.retrain)",
            lambda s: s.get("action") != "retrain" or _has(s, "retrain"),
            "retrain is required when action is retrain",
            field="retrain",
            explain=lambda s: (
                "required when action is retrain: where the run comes from (cronJob, "
                "configMap or workflowTemplate)"
            ),
        ),
        Rule(
            "!has(self.retrain) || self.action == 'retrain'",
            lambda s: not _has(s, "retrain") or s.get("action") == "retrain",
            "retrain applies only with action retrain",
            field="retrain",
            explain=lambda s: f"applies only with action retrain, not {s.get('action')!r}",
        ),
        Rule(
            "!has(self.webhook) || !has(self.webhookSecret)",
            lambda s: not (_has(s, "webhook") and _has(s, "webhookSecret")),
            "webhook and webhookSecret are alternatives: give one",
            field="webhookSecret",
            explain=lambda s: "give webhook or webhookSecret, not both",
        ),
    )

    alert: str = _f("alert", "The alert type.", enum=ALERT_TYPES)
    action: str = _f("action", "The action.", enum=ACTIONS)
    feature: str | None = _f(
        "feature", "Only for alerts on this feature.", default=None, max_length=MAX_TEXT
    )
    # rollback: the revision to go back to (default: the previous one)
    to_revision: int | None = _f(
        "toRevision",
        "rollback: the revision to go back to (default: the previous one).",
        "integer",
        default=None,
        low=1,
    )
    # scale: replicas (or an HPA's minReplicas) within [min_replicas, max_replicas]
    min_replicas: int | None = _f(
        "minReplicas",
        "scale: lower bound of the replicas (or an HPA's minReplicas).",
        "integer",
        default=None,
        low=0,
        high=1000,
    )
    max_replicas: int | None = _f(
        "maxReplicas",
        "scale: upper bound of the replicas.",
        "integer",
        default=None,
        low=1,
        high=1000,
    )
    # shiftTraffic / pause: how traffic reaches the two versions
    router: str | None = _f(
        "router",
        "shiftTraffic, pause: how traffic reaches the two versions.",
        default=None,
        enum=TRAFFIC_ROUTERS,
    )
    route: str | None = _f(  # the HTTPRoute or VirtualService name
        "route", "The HTTPRoute or VirtualService name.", default=None, max_length=MAX_NAME
    )
    stable: str | None = _f(  # the stable backend (Service, or Deployment for router: replicas)
        "stable",
        "The stable backend (a Service, or a Deployment for router replicas).",
        default=None,
        max_length=MAX_NAME,
    )
    canary: str | None = _f(
        "canary",
        "The canary backend (pause on CanaryRegression: default the Deployment of the "
        "candidate the alert names).",
        default=None,
        max_length=MAX_NAME,
    )
    step_percent: int = _f(  # traffic moved back to stable per step
        "stepPercent",
        "shiftTraffic: traffic moved back to stable per step, in percent.",
        "integer",
        default=100,
        low=1,
        high=100,
    )
    webhook: str | None = _f(
        "webhook", "An http(s) URL to notify.", default=None, url=True, max_length=MAX_URL
    )
    webhook_secret: SecretKeyRef | None = _f(
        "webhookSecret",
        "The URL to notify, from a key of a Secret in the model's namespace (instead of "
        "webhook; the operator needs get on that Secret: see docs/operator.md).",
        "object",
        default=None,
        of=SecretKeyRef,
    )
    webhook_format: str = _f(
        "webhookFormat",
        "The webhook's message: slack (Slack's text and blocks, with the facts as JSON beside "
        "them) or json (the facts alone).",
        default="slack",
        enum=WEBHOOK_FORMATS,
    )
    severity: str | None = _f(
        "severity",
        "The severity of the alerts this reaction matches (default: the alert type's, see "
        "docs/operator.md).",
        default=None,
        enum=SEVERITIES,
    )
    retrain: Retrain | None = _f(
        "retrain",
        "retrain: where the retraining run comes from (a CronJob, a Job manifest in a "
        "ConfigMap, or an Argo WorkflowTemplate).",
        "object",
        default=None,
        of=Retrain,
    )


@dataclass(frozen=True)
class Guardrails:
    dry_run: bool = _f(
        "dryRun", "Plan and record actions without taking them.", "boolean", default=False
    )
    cooldown_seconds: float = _f(
        "cooldown",
        "Quiet time after an action on the same target.",
        "duration",
        default=600.0,
        positive=False,
    )
    max_actions_per_hour: int = _f(
        "maxActionsPerHour", "Rate limit on actions.", "integer", default=3, low=0, high=3600
    )
    require_approval: bool = _f(
        "requireApproval", "Wait for a person to approve each action.", "boolean", default=False
    )
    verify_within_seconds: float = _f(
        "verifyWithin",
        "How long after an action its trigger's signal must have recovered (Fixed) on the "
        "traffic served since; judged at the latest then.",
        "duration",
        default=600.0,
    )
    verify_min_records: int = _f(
        "verifyMinRecords",
        "Records served after an action (by the revision serving now) that a verdict needs; "
        "fewer by verifyWithin: Inconclusive.",
        "integer",
        default=200,
        low=1,
        high=10_000_000,
    )
    undo_if_not_fixed: bool = _f(
        "undoIfNotFixed",
        "Undo an action whose verification is NotFixed (and alert a person); false: only alert.",
        "boolean",
        default=False,
    )


@dataclass(frozen=True)
class ObservedModelSpec:
    RULES: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "!(has(self.capture) && has(self.capture.json))"
            " || !has(self.protocol) || self.protocol in ['json', 'auto']",
            lambda s: (
                not (isinstance(s.get("capture"), dict) and _has(s["capture"], "json"))
                or s.get("protocol", "auto") in ("json", "auto")
            ),
            "capture.json only applies with protocol json or auto",
            field="capture.json",
            explain=lambda s: f"only applies with protocol json or auto, not {s['protocol']!r}",
        ),
        Rule(
            "!has(self.protocol) || self.protocol != 'json'"
            " || (has(self.capture) && has(self.capture.json))"
            " || (has(self.features) && size(self.features) > 0)",
            lambda s: (
                s.get("protocol") != "json"
                or (isinstance(s.get("capture"), dict) and _has(s["capture"], "json"))
                or bool(s.get("features"))
            ),
            "protocol json needs capture.json field paths or features to know what to capture",
            field="protocol",
            explain=lambda s: (
                "json needs spec.capture.json field paths or spec.features to know what to capture"
            ),
        ),
    )

    target: Target = _f(
        "target",
        "The model server to observe: its workload (by kind and name), Service, container and "
        "port.",
        "object",
        of=Target,
    )
    protocol: str = _f(
        "protocol",
        "How request and response bodies are read (auto: detected per request; v2-grpc: "
        "the model's port speaks the Open Inference Protocol v2 over gRPC, proxied as such).",
        default="auto",
        enum=PROTOCOLS,
    )
    features: tuple[Feature, ...] = _f(
        "features",
        "Input columns the model receives (absent: inferred from the reference).",
        "objects",
        default=(),
        of=Feature,
        map_keys=("name",),
        noun="feature",
        max_items=MAX_FEATURES,
    )
    prediction: Prediction | None = _f(
        "prediction", "The model output to watch.", "object", default=None, of=Prediction
    )
    segments: tuple[Segment, ...] = _f(
        "segments",
        "Columns to slice the traffic by: drift, quality and performance per frequent value.",
        "objects",
        default=(),
        of=Segment,
        map_keys=("column",),
        noun="segment column",
        max_items=MAX_SEGMENT_COLUMNS,
    )
    capture: Capture = _f(
        "capture", "What the sidecar captures.", "object", factory=Capture, of=Capture
    )
    reference: ReferenceSpec = _f(
        "reference",
        "Where the reference (what normal looks like) comes from.",
        "object",
        factory=ReferenceSpec,
        of=ReferenceSpec,
    )
    window: Window = _f(
        "window",
        "The current window: the last `size` records, or the records of the last `duration`.",
        "object",
        factory=Window,
        of=Window,
        crd_default=False,
    )
    detectors: Detectors = _f(
        "detectors", "The checks the detector runs.", "object", factory=Detectors, of=Detectors
    )
    alerting: Alerting = _f(
        "alerting",
        "Hysteresis: when an alert fires and when it resolves.",
        "object",
        factory=Alerting,
        of=Alerting,
    )
    canary: Canary = _f(
        "canary",
        "Canary analysis: candidate revisions judged against the baseline revision.",
        "object",
        factory=Canary,
        of=Canary,
    )
    pipeline: tuple[PipelineComponent, ...] = _f(
        "pipeline",
        "The upstream components that feed the model, with lineage for diagnosis.",
        "objects",
        default=(),
        of=PipelineComponent,
        map_keys=("name",),
        noun="component",
        max_items=MAX_PIPELINE,
    )
    reactions: tuple[Reaction, ...] = _f(
        "reactions",
        "What to do when an alert fires.",
        "objects",
        default=(),
        of=Reaction,
        max_items=MAX_REACTIONS,
    )
    guardrails: Guardrails = _f(
        "guardrails",
        "Limits on automatic actions.",
        "object",
        factory=Guardrails,
        of=Guardrails,
    )

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)


# CEL at the root may read metadata.name (and nothing else of metadata). The parser
# checks them in this order and stops at the first broken one.
METADATA_RULES: Final = (
    Rule(
        f"self.metadata.name.matches('{_DNS_LABEL.pattern}')",
        lambda s: bool(_DNS_LABEL.fullmatch(s["metadata"]["name"])),
        "metadata.name must be a DNS-1035 label (lower-case letters, digits and '-', starting "
        "with a letter), as it names the detector's Service",
        field="name",
        explain=lambda s: (
            "must be a DNS-1035 label (lower-case letters, digits and '-'); "
            f"got {s['metadata']['name']!r}"
        ),
    ),
    Rule(
        f"size(self.metadata.name) <= {MAX_NAME_LENGTH}",
        lambda s: len(s["metadata"]["name"]) <= MAX_NAME_LENGTH,
        f"metadata.name must be at most {MAX_NAME_LENGTH} characters so that NAME-detector is "
        "a valid Service name",
        field="name",
        explain=lambda s: (
            f"must be at most {MAX_NAME_LENGTH} characters so that "
            f"{s['metadata']['name']}-detector is a valid Service name; "
            f"got {len(s['metadata']['name'])}"
        ),
    ),
)


@dataclass(frozen=True)
class ObservedModel:
    name: str
    namespace: str
    spec: ObservedModelSpec
    generation: int | None = None
    uid: str | None = None
    rebaseline: str | None = None  # metadata.annotations[REBASELINE_ANNOTATION]


# --------------------------------------------------------------------------- reader


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
        # Lists of objects read so far: their items with their paths (for cross-checks).
        self.item_paths: dict[str, list[tuple[str, Any]]] = {}

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
        """A duration such as `30s`, `5m`, `1h30m`, `250ms`, `7d`; returns seconds."""
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

    def text_list(
        self, key: str, *, max_items: int | None = None, max_length: int | None = None
    ) -> tuple[str, ...]:
        out: list[str] = []
        items = list(self.items(key))
        if max_items is not None and len(items) > max_items:
            self.error(key, f"must have at most {max_items} items, got {len(items)}")
        for path, item in items:
            if not (isinstance(item, str) and item):
                self.errors.add(path, f"must be a non-empty string, got {_kind_of(item)}")
            elif max_length is not None and len(item) > max_length:
                self.errors.add(path, f"must be at most {max_length} characters, got {len(item)}")
            else:
                out.append(item)
        return tuple(out)

    def text_map(
        self, key: str, *, max_items: int | None = None, max_length: int | None = None
    ) -> dict[str, str]:
        inner = self.obj(key)
        out: dict[str, str] = {}
        if max_items is not None and len(inner.raw) > max_items:
            self.error(key, f"must have at most {max_items} entries, got {len(inner.raw)}")
        for k, v in inner.raw.items():
            inner.known.add(k)
            if not (isinstance(v, str) and v):
                inner.error(str(k), f"must be a non-empty string, got {_kind_of(v)}")
            elif max_length is not None and len(v) > max_length:
                inner.error(str(k), f"must be at most {max_length} characters, got {len(v)}")
            else:
                out[str(k)] = v
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
    """Seconds in a duration: a bare number is seconds; else `250ms`, `30s`, `5m`, `1h30m`, `7d`."""
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


def _bad(o: _Obj, key: str) -> bool:
    """Whether field `key` of `o` (or anything inside it) was reported as wrong."""
    at = o.at(key)
    return any(e.path == at or e.path.startswith((f"{at}.", f"{at}[")) for e in o.errors.items)


def _check_rules(cls: type[Any], o: _Obj) -> None:
    """Report the broken rules of `cls` in `o`; a rule is judged only on fields that are valid."""
    raw = {k: v for k, v in o.raw.items() if v is not None}
    for rule in rules_of(cls):
        if any(_bad(o, key) for key in re.findall(r"self\.(\w+)", rule.cel)):
            continue
        if rule.check(raw):
            continue
        message = rule.explain(raw) if rule.explain is not None else rule.message
        if message is not None:
            o.errors.add(o.at(rule.field) if rule.field else o.path, message)


def _value(o: _Obj, w: Wire, default: Any, *, required: bool | None = None) -> Any:
    """Read one declared field of `o`."""
    need = w.required if required is None else required
    given = _MISSING if need else default
    if w.kind == "string":
        value = o.text(w.name, given, choices=w.enum, pattern=w.pattern, pattern_hint=w.hint)
        if not isinstance(value, str) or value == default:
            return value
        if w.min_length is not None and len(value) < w.min_length:
            o.error(w.name, "must be a non-empty string")
            return None
        if w.url and not _HTTP_URL.match(value):
            o.error(w.name, f"must be an http:// or https:// URL, got {value!r}")
        elif w.max_length is not None and len(value) > w.max_length:
            if w.length_note:
                note = f"must be at most {w.max_length} characters{w.length_note}; got {value!r}"
            else:
                note = f"must be at most {w.max_length} characters, got {len(value)}"
            o.error(w.name, note)
            return None if need else default
        return value
    if w.kind in ("integer", "number"):
        return o.number(
            w.name,
            given,
            integer=w.kind == "integer",
            low=w.low,
            high=w.high,
            low_open=w.low_open,
            high_open=w.high_open,
        )
    if w.kind == "boolean":
        return o.boolean(w.name, default)
    if w.kind == "duration":
        return o.duration(w.name, default, minimum=0.0 if w.positive else -1.0)
    if w.kind == "strings":
        return o.text_list(w.name, max_items=w.max_items, max_length=w.max_length)
    if w.kind == "map":
        return tuple(o.text_map(w.name, max_items=w.max_items, max_length=w.max_length).items())
    assert w.of is not None
    if w.kind == "objects":
        o.item_paths[w.name] = _items(o, w)
        return tuple(item for _, item in o.item_paths[w.name])
    sub = o.obj(w.name)
    if sub.present or need or default is not None:
        return _section(w.of, sub)
    sub.finish()
    return None


def _read(cls: type[Any], o: _Obj, *, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """The declared fields of `cls` read from `o`, as constructor arguments."""
    out: dict[str, Any] = {}
    groups: dict[str, _Obj] = {}
    for f in dataclasses.fields(cls):
        w = f.metadata.get("wire")
        if w is None or f.name in skip:
            continue
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        default = None if default is dataclasses.MISSING else default
        where = o
        if w.group is not None:
            if w.group[0] not in groups:
                groups[w.group[0]] = o.obj(w.group[0])
            where = groups[w.group[0]]
        out[f.name] = _value(where, w, default)
    for g in groups.values():
        g.finish()
    return out


def _section(cls: type[Any], o: _Obj) -> Any:
    """Read one object of the manifest into the spec dataclass `cls`, checking its rules."""
    reader = _SECTION_READERS.get(cls)
    result = reader(o) if reader is not None else cls(**_read(cls, o))
    _check_rules(cls, o)
    o.finish()
    return result


def _items(o: _Obj, w: Wire) -> list[tuple[str, Any]]:
    """The items of a list of objects, with their paths; duplicates of the map key refused."""
    assert w.of is not None
    out: list[tuple[str, Any]] = []
    seen: dict[str, str] = {}
    raws = list(o.items(w.name))
    if w.max_items is not None and len(raws) > w.max_items:
        o.error(w.name, f"must have at most {w.max_items} items, got {len(raws)}")
    for path, raw in raws:
        item_obj = _Obj(raw, path, o.errors)
        # A reaction's `on:` (read as the key True by YAML 1.1) gets its own hint.
        if w.of is Reaction and isinstance(raw, dict) and (True in raw or "on" in raw):
            item_obj.known.update({True, "on"})  # type: ignore[arg-type]
            o.errors.add(
                f"{path}.on",
                "use `alert:` to name the alert type; YAML reads a bare `on` key as true",
            )
        item = _section(w.of, item_obj)
        required = [n for n, fw in wire_fields(w.of) if fw.required]
        if any(getattr(item, n) is None for n in required):
            continue
        if w.map_keys:
            key_attr = next(n for n, fw in wire_fields(w.of) if fw.name == w.map_keys[0])
            key = getattr(item, key_attr)
            if key in seen:
                o.errors.add(
                    f"{path}.{w.map_keys[0]}",
                    f"duplicate {w.noun} {key!r} (also at {seen[key]})",
                )
                continue
            seen[key] = path
        out.append((path, item))
    return out


def _target(o: _Obj) -> Target:
    kw = _read(Target, o)
    kw["name"] = kw["name"] or kw["deployment"] or ""
    if kw["service"] is None:
        kw["service"] = kw["name"]
    kw["deployment"] = kw["name"] if kw["kind"] == "Deployment" else ""
    return Target(**kw)


def _reference(o: _Obj) -> ReferenceSpec:
    kw = _read(ReferenceSpec, o, skip=("config_map", "key", "url", "path"))
    wires = dict(wire_fields(ReferenceSpec))
    source = kw["source"]
    if source == "configMap":
        cm = o.obj("configMap")
        kw["config_map"] = _value(cm, wires["config_map"], None, required=True)
        kw["key"] = _value(cm, wires["key"], None, required=True)
        cm.finish()
    elif source in ("url", "file"):
        name = "url" if source == "url" else "path"
        kw[name] = _value(o, wires[name], None, required=True)
    o.known.update({"configMap", "url", "path"})  # the rules report them where they do not apply
    return ReferenceSpec(**kw)


def _window(o: _Obj) -> Window:
    o.known.add("size")  # with a duration too: the rule reports it, not "unknown field"
    if o.has("duration"):  # no size then, not even the default
        return Window(**_read(Window, o, skip=("size",)), size=None)
    return Window(**_read(Window, o, skip=("duration_seconds",)))


def _spec(o: _Obj) -> ObservedModelSpec:
    kw = _read(ObservedModelSpec, o)
    kw["target"] = kw["target"] or Target(deployment="", service="", name="")
    spec = ObservedModelSpec(**kw)
    pipeline_paths = {c.name: path for path, c in o.item_paths["pipeline"]}
    _cross_checks(o, spec, pipeline_paths, o.item_paths["reactions"])
    return spec


def _cross_checks(
    o: _Obj,
    spec: ObservedModelSpec,
    pipeline_paths: dict[str, str],
    reaction_items: list[tuple[str, Reaction]],
) -> None:
    """What neither OpenAPI nor CEL checks: references from one list into another."""
    for component in spec.pipeline:
        for dep in component.depends_on:
            if dep not in pipeline_paths:
                known = ", ".join(sorted(pipeline_paths)) or "none"
                o.errors.add(
                    f"{pipeline_paths[component.name]}.dependsOn",
                    f"{dep!r} is not a component of spec.pipeline (components: {known})",
                )
    features, prediction = spec.features, spec.prediction
    numeric = {f.name for f in features if f.type == "numeric"}
    if prediction is not None and prediction.type == "numeric":
        numeric.add(prediction.name)
    embeddings = {f.name for f in features if f.type == "embedding"}
    for i, rule in enumerate(spec.capture.redact):
        if rule.action == "hash" and rule.field in embeddings:
            o.errors.add(
                f"spec.capture.redact[{i}].action",
                f"{rule.field!r} is an embedding: a hashed vector is one opaque string, no "
                "drift can be measured on it; drop it to keep it in the pod",
            )
        if rule.action == "hash" and rule.field in numeric:
            o.errors.add(
                f"spec.capture.redact[{i}].action",
                f"hashing turns the numeric {rule.field!r} into text; drop it, or declare it "
                "categorical",
            )
    for i, segment in enumerate(spec.segments):
        problem = _segment_problem(segment.column, features, prediction)
        if problem:
            o.errors.add(f"spec.segments[{i}].column", problem)
    if features:
        names = {f.name for f in features} | ({prediction.name} if prediction else set())
        for component in spec.pipeline:
            for name in component.produces:
                if name not in names:
                    o.errors.add(
                        f"{pipeline_paths[component.name]}.produces",
                        f"{name!r} is neither a feature in spec.features nor the prediction",
                    )
        if spec.capture.json is not None:
            for name, _ in spec.capture.json.features:
                if name not in names:
                    o.errors.add(
                        f"spec.capture.json.features.{name}", "is not a feature in spec.features"
                    )
        for path, reaction in reaction_items:
            if reaction.feature is not None and reaction.feature not in names:
                o.errors.add(f"{path}.feature", f"{reaction.feature!r} is not a feature")


def _segment_problem(
    column: str, features: tuple[Feature, ...], prediction: Prediction | None
) -> str | None:
    """Why `column` cannot slice the traffic (None: it can)."""
    if prediction is not None and column == prediction.name:
        return f"{column!r} is the prediction; segments slice by inputs"
    declared = {f.name: f.type for f in features}
    if declared.get(column, "categorical") != "categorical":
        return (
            f"{column!r} is a{'n' if declared[column] == 'embedding' else ''} "
            f"{declared[column]} feature; segments slice by categorical values "
            "(declare it categorical, or slice by another column)"
        )
    return None


_SECTION_READERS: Final[dict[type[Any], Callable[[_Obj], Any]]] = {
    Target: _target,
    ReferenceSpec: _reference,
    Window: _window,
    ObservedModelSpec: _spec,
}


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
    name = meta.text("name")
    for rule in METADATA_RULES:
        named = {"metadata": {"name": name}}
        if name is not None and not rule.check(named):
            meta.error("name", (rule.explain(named) if rule.explain else None) or rule.message)
            name = None
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
    spec = _section(ObservedModelSpec, spec_obj)
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
    import yaml  # reason: `mlwarden check` without a manifest starts without PyYAML's import

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
