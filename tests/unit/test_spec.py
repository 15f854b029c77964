"""Tests for `mlwarden.spec`: the examples, defaults, every kind of error, YAML loading."""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlwarden.spec import (
    API_VERSION,
    KIND,
    MAX_NAME,
    MAX_NAME_LENGTH,
    MAX_REACTIONS,
    MAX_TEXT,
    Alerting,
    Capture,
    DriftCheck,
    ErrorsCheck,
    Feature,
    FieldError,
    Guardrails,
    JsonCapture,
    LatencyCheck,
    ObservedModel,
    PerformanceCheck,
    PipelineComponent,
    Prediction,
    QualityCheck,
    Reaction,
    ReferenceSpec,
    SpecError,
    Target,
    Window,
    load_observed_model,
    loads_observed_model,
    parse_duration,
    parse_observed_model,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _observed_model_files() -> list[Path]:
    # examples/ also holds plain Kubernetes manifests (a sample model Deployment);
    # only the files that are, or contain, an ObservedModel are parsed here.
    files = sorted(p for p in EXAMPLES.iterdir() if p.suffix in (".yaml", ".yml"))
    return [
        p
        for p in files
        if p.name.startswith("observedmodel") or f"kind: {KIND}" in p.read_text(encoding="utf-8")
    ]


def _manifest(**spec: Any) -> dict[str, Any]:
    """A valid manifest (the minimal one) with `spec` fields added or replaced."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": "m"},
        "spec": {"target": {"deployment": "m"}, **spec},
    }


def _with(manifest: dict[str, Any], **top: Any) -> dict[str, Any]:
    """`manifest` with top-level fields replaced; a value of None removes the field."""
    out = copy.deepcopy(manifest)
    for key, value in top.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def _errors(manifest: Any) -> list[FieldError]:
    with pytest.raises(SpecError) as info:
        parse_observed_model(manifest)
    return info.value.errors


def _assert_error(errors: list[FieldError], path: str, fragment: str) -> None:
    matching = [e for e in errors if e.path == path and fragment in e.message]
    listing = "\n".join(f"  {e}" for e in errors)
    assert matching, f"no error at {path!r} containing {fragment!r}; got:\n{listing}"


FRAUD_FEATURES = [
    {"name": "amount", "type": "numeric"},
    {"name": "merchant_category", "type": "categorical"},
]


# --------------------------------------------------------------------------- examples


def test_the_examples_are_found() -> None:
    names = {p.name for p in _observed_model_files()}
    assert {
        "observedmodel-fraud.yaml",
        "observedmodel-minimal.yaml",
        "observedmodel-iris.yaml",
        "observedmodel-llm.yaml",
        "observedmodel-json.yaml",
    } <= names


@pytest.mark.parametrize("path", _observed_model_files(), ids=lambda p: p.name)
def test_every_example_parses(path: Path) -> None:
    model = load_observed_model(path)
    assert isinstance(model, ObservedModel)
    assert model.name
    assert model.spec.target.name


def test_fraud_example_comes_out_typed() -> None:
    model = load_observed_model(EXAMPLES / "observedmodel-fraud.yaml")
    spec = model.spec

    assert (model.name, model.namespace) == ("fraud", "ml")
    assert (model.generation, model.uid) == (None, None)
    assert spec.target == Target(
        deployment="fraud-model",
        name="fraud-model",
        service="fraud-model",
        container="model",
        port=8080,
    )
    assert spec.protocol == "v2"
    assert spec.features == (
        Feature(name="amount", type="numeric"),
        Feature(name="merchant_category", type="categorical"),
    )
    assert spec.feature_names == ("amount", "merchant_category")
    assert spec.prediction == Prediction(name="score", type="numeric", probabilities=None)
    assert spec.reference == ReferenceSpec(source="warmup", size=1000)
    assert spec.window == Window(size=1000, duration_seconds=None)

    detectors = spec.detectors
    assert detectors.drift == DriftCheck(
        enabled=True, test="auto", p_value=0.01, correction="bonferroni", min_effect=None
    )
    assert detectors.quality == QualityCheck(
        enabled=True, max_missing_rate=0.05, out_of_range=True, new_categories=True
    )
    assert detectors.latency == LatencyCheck(p99_ms=250.0)
    assert isinstance(detectors.latency.p99_ms, float)
    assert detectors.errors == ErrorsCheck(max_rate=0.02)
    # Only `estimate` is written; the rest is filled in.
    assert detectors.performance == PerformanceCheck(
        estimate="cbpe", metric="accuracy", max_drop=0.05
    )
    # Not written at all: defaults.
    assert detectors.prediction_drift == DriftCheck(
        enabled=True, test="auto", p_value=0.01, correction="bonferroni", min_effect=None
    )
    assert spec.capture == Capture(sample_rate=1.0, max_body_bytes=1 << 20, json=None)
    assert spec.alerting == Alerting(
        evaluation_interval_seconds=30.0, fire_after=3, resolve_after=3
    )

    assert isinstance(spec.pipeline, tuple)
    assert spec.pipeline == (
        PipelineComponent(name="feature-etl", kind="CronJob", produces=("amount",)),
        PipelineComponent(
            name="merchant-enricher",
            kind="Deployment",
            produces=("merchant_category",),
            depends_on=("feature-etl",),
        ),
    )
    assert isinstance(spec.pipeline[1].depends_on, tuple)

    assert isinstance(spec.reactions, tuple)
    assert spec.reactions == (
        Reaction(alert="PredictionDrift", action="rollback"),
        Reaction(alert="Latency", action="scale", max_replicas=10),
        Reaction(alert="FeatureDrift", action="alert"),
    )

    assert spec.guardrails == Guardrails(
        dry_run=False, cooldown_seconds=600.0, max_actions_per_hour=3, require_approval=False
    )
    assert isinstance(spec.guardrails.cooldown_seconds, float)


def test_minimal_example_gets_every_default() -> None:
    model = load_observed_model(EXAMPLES / "observedmodel-minimal.yaml")
    spec = model.spec

    assert model.name == "my-model"
    assert model.namespace == "default"
    assert spec.target.deployment == "my-model"
    assert spec.target.service == "my-model"  # the service defaults to the deployment's name
    assert (spec.target.container, spec.target.port) == (None, None)
    assert spec.protocol == "auto"
    assert spec.features == ()
    assert spec.feature_names == ()
    assert spec.prediction is None

    assert spec.capture.sample_rate == 1.0
    assert spec.capture.max_body_bytes == 1048576
    assert spec.capture.json is None
    assert (spec.reference.source, spec.reference.size) == ("warmup", 1000)
    assert (spec.window.size, spec.window.duration_seconds) == (1000, None)

    for drift in (spec.detectors.drift, spec.detectors.prediction_drift):
        assert drift.enabled is True
        assert drift.test == "auto"
        assert drift.p_value == 0.01
        assert drift.correction == "bonferroni"
        assert drift.min_effect is None
    quality = spec.detectors.quality
    assert quality.enabled is True
    assert quality.max_missing_rate == 0.05
    assert quality.out_of_range is True
    assert quality.new_categories is True
    assert spec.detectors.latency is None
    assert spec.detectors.errors is None
    assert spec.detectors.performance is None

    assert spec.alerting.evaluation_interval_seconds == 30.0
    assert spec.alerting.fire_after == 3
    assert spec.alerting.resolve_after == 3

    assert spec.pipeline == ()
    assert spec.reactions == ()
    assert spec.guardrails.dry_run is False
    assert spec.guardrails.cooldown_seconds == 600.0
    assert spec.guardrails.max_actions_per_hour == 3
    assert spec.guardrails.require_approval is False


def test_iris_example() -> None:
    spec = load_observed_model(EXAMPLES / "observedmodel-iris.yaml").spec
    assert spec.target == Target(
        deployment="iris", name="iris", service="iris", container="model", port=8080
    )
    assert spec.protocol == "v2"
    assert spec.feature_names == ("sepal_length", "sepal_width", "petal_length", "petal_width")
    assert all(f.type == "numeric" for f in spec.features)
    assert spec.prediction == Prediction(name="predict", type="categorical")
    assert spec.window.size == 500
    assert spec.reference == ReferenceSpec(source="warmup", size=500)


def test_llm_example() -> None:
    spec = load_observed_model(EXAMPLES / "observedmodel-llm.yaml").spec
    assert spec.protocol == "openai"
    assert spec.detectors.latency is not None
    assert spec.detectors.latency.p99_ms > 0
    assert spec.detectors.errors is not None
    assert 0 < spec.detectors.errors.max_rate < 1
    assert spec.window == Window(size=None, duration_seconds=900.0)
    assert spec.alerting.evaluation_interval_seconds == 60.0
    assert spec.guardrails.cooldown_seconds == 900.0


def test_json_example() -> None:
    spec = load_observed_model(EXAMPLES / "observedmodel-json.yaml").spec
    assert spec.protocol == "json"
    assert spec.capture.json == JsonCapture(
        request_rows="data.items",
        response_rows="results",
        features=tuple(
            {
                "amount": "amount",
                "merchant_category": "merchant.category",
                "account_age_days": "account.age_days",
            }.items()
        ),
        prediction="scores.1",
    )
    assert {name for name, _ in spec.capture.json.features} == set(spec.feature_names)
    assert spec.reference.source == "configMap"
    assert (spec.reference.config_map, spec.reference.key) == (
        "risk-scorer-reference",
        "reference.parquet",
    )
    # Only the deployment is given: the service is named after it.
    assert spec.target.service == "risk-scorer"


def test_the_sketch_with_on_keys_is_rejected_with_the_helpful_message() -> None:
    text = (EXAMPLES / "observedmodel-fraud.yaml").read_text(encoding="utf-8")
    assert text.count("{alert: ") == 3
    with pytest.raises(SpecError) as info:
        loads_observed_model(text.replace("{alert: ", "{on: "))
    for i in range(3):
        _assert_error(info.value.errors, f"spec.reactions[{i}].on", "use `alert:`")


# --------------------------------------------------------------------------- accepted variations


def test_kubernetes_metadata_and_status_are_accepted() -> None:
    manifest = _with(
        _manifest(),
        metadata={
            "name": "m",
            "namespace": "ml",
            "generation": 7,
            "uid": "0b7c3a52-1f7e-4d0b-9a2e-1c1f0f6d9a10",
            "resourceVersion": "12345",
            "labels": {"team": "risk"},
            "annotations": {"note": "x"},
            "managedFields": [{"manager": "kubectl"}],
        },
        status={"phase": "Observing", "observedGeneration": 6},
    )
    model = parse_observed_model(manifest)
    assert (model.namespace, model.generation) == ("ml", 7)
    assert model.uid == "0b7c3a52-1f7e-4d0b-9a2e-1c1f0f6d9a10"


def test_name_of_the_maximum_length_is_accepted() -> None:
    name = "a" * MAX_NAME_LENGTH
    assert len(f"{name}-detector") == 63
    model = parse_observed_model(_with(_manifest(), metadata={"name": name}))
    assert model.name == name


def test_window_by_duration() -> None:
    model = parse_observed_model(_manifest(window={"duration": "5m"}))
    assert model.spec.window == Window(size=None, duration_seconds=300.0)


def test_null_sections_mean_defaults() -> None:
    model = parse_observed_model(
        _manifest(detectors=None, window=None, reactions=None, guardrails=None, features=None)
    )
    assert model.spec.window.size == 1000
    assert model.spec.reactions == ()
    assert model.spec.detectors.drift.p_value == 0.01


def test_cooldown_may_be_zero_and_a_bare_number_is_seconds() -> None:
    assert parse_observed_model(_manifest(guardrails={"cooldown": 0})).spec.guardrails == (
        Guardrails(cooldown_seconds=0.0)
    )
    model = parse_observed_model(_manifest(guardrails={"cooldown": 90}))
    assert model.spec.guardrails.cooldown_seconds == 90.0


def test_shift_traffic_and_scale_with_their_settings() -> None:
    model = parse_observed_model(
        _manifest(
            reactions=[
                {
                    "alert": "PredictionDrift",
                    "action": "shiftTraffic",
                    "router": "httproute",
                    "route": "fraud",
                    "stable": "fraud-v1",
                    "canary": "fraud-v2",
                    "stepPercent": 50,
                },
                {"alert": "Latency", "action": "scale", "minReplicas": 2, "maxReplicas": 5},
                {"alert": "PerformanceDrop", "action": "rollback", "toRevision": 3},
                {"alert": "Errors", "action": "pause", "canary": "fraud-v2"},
            ]
        )
    )
    shift, scale, rollback, pause = model.spec.reactions
    assert (shift.router, shift.route, shift.stable, shift.canary, shift.step_percent) == (
        "httproute",
        "fraud",
        "fraud-v1",
        "fraud-v2",
        50,
    )
    assert (scale.min_replicas, scale.max_replicas) == (2, 5)
    assert rollback.to_revision == 3 and pause.canary == "fraud-v2"


@pytest.mark.parametrize(
    ("reaction", "path", "reason"),
    [
        (
            {
                "alert": "Errors",
                "action": "shiftTraffic",
                "router": "httproute",
                "stable": "a",
                "canary": "b",
            },
            "spec.reactions[0].route",
            "required with router httproute",
        ),
        (
            {"alert": "Errors", "action": "shiftTraffic", "router": "replicas", "canary": "b"},
            "spec.reactions[0].stable",
            "required when action is shiftTraffic",
        ),
        ({"alert": "Errors", "action": "pause"}, "spec.reactions[0].canary", "required"),
        (
            {"alert": "Latency", "action": "scale", "minReplicas": 6, "maxReplicas": 5},
            "spec.reactions[0].minReplicas",
            "must not exceed maxReplicas (5)",
        ),
        (
            {"alert": "Latency", "action": "rollback", "toRevision": 0},
            "spec.reactions[0].toRevision",
            "must be >= 1",
        ),
    ],
)
def test_reaction_parameters_are_checked(reaction: dict[str, Any], path: str, reason: str) -> None:
    with pytest.raises(SpecError) as exc:
        parse_observed_model(_manifest(reactions=[reaction]))
    assert any(e.path == path and reason in e.message for e in exc.value.errors), exc.value


# --------------------------------------------------------------------------- bad manifests


_LONG_NAME = "a" * (MAX_NAME_LENGTH + 1)

BAD: list[tuple[str, dict[str, Any], str, str]] = [
    # ranges
    (
        "pValue above 1",
        _manifest(detectors={"drift": {"pValue": 1.5}}),
        "spec.detectors.drift.pValue",
        "must be in (0, 1), got 1.5",
    ),
    (
        "pValue 0 (open interval)",
        _manifest(detectors={"drift": {"pValue": 0}}),
        "spec.detectors.drift.pValue",
        "must be in (0, 1), got 0",
    ),
    (
        "pValue 1 (open interval)",
        _manifest(detectors={"predictionDrift": {"pValue": 1.0}}),
        "spec.detectors.predictionDrift.pValue",
        "must be in (0, 1), got 1",
    ),
    (
        "pValue NaN",
        _manifest(detectors={"drift": {"pValue": math.nan}}),
        "spec.detectors.drift.pValue",
        "must be a finite number",
    ),
    (
        "sampleRate 0",
        _manifest(capture={"sampleRate": 0}),
        "spec.capture.sampleRate",
        "must be in (0, 1], got 0",
    ),
    (
        "sampleRate above 1",
        _manifest(capture={"sampleRate": 1.5}),
        "spec.capture.sampleRate",
        "must be in (0, 1], got 1.5",
    ),
    (
        "port 0",
        _manifest(target={"deployment": "m", "port": 0}),
        "spec.target.port",
        "must be in [1, 65535], got 0",
    ),
    (
        "reference too small",
        _manifest(reference={"size": 10}),
        "spec.reference.size",
        "got 10",
    ),
    (
        "fireAfter 0",
        _manifest(alerting={"fireAfter": 0}),
        "spec.alerting.fireAfter",
        "must be in [1, 100], got 0",
    ),
    (
        "maxActionsPerHour negative",
        _manifest(guardrails={"maxActionsPerHour": -1}),
        "spec.guardrails.maxActionsPerHour",
        "must be in [0, 3600], got -1",
    ),
    (
        "errors maxRate above 1",
        _manifest(detectors={"errors": {"maxRate": 2}}),
        "spec.detectors.errors.maxRate",
        "must be in [0, 1], got 2",
    ),
    # unknown fields
    (
        "unknown field with suggestion",
        _manifest(detectors={"drift": {"pvalue": 0.05}}),
        "spec.detectors.drift.pvalue",
        "unknown field (did you mean 'pValue'?)",
    ),
    (
        "unknown spec field with suggestion",
        _manifest(featurs=FRAUD_FEATURES),
        "spec.featurs",
        "unknown field (did you mean 'features'?)",
    ),
    (
        "unknown top-level field",
        _with(_manifest(), stauts={}),
        "stauts",
        "unknown field (did you mean 'status'?)",
    ),
    (
        "unknown field lists the known ones",
        _manifest(target={"deployment": "m", "replicas": 2}),
        "spec.target.replicas",
        "known fields: allowRecreate, container, deployment, kind, name, port, service",
    ),
    # wrong types
    (
        "string for number",
        _manifest(detectors={"drift": {"pValue": "0.01"}}),
        "spec.detectors.drift.pValue",
        "must be a number, got string '0.01'",
    ),
    (
        "number for string",
        _manifest(protocol=2),
        "spec.protocol",
        "must be a string, got number 2",
    ),
    (
        "bool for number",
        _manifest(detectors={"latency": {"p99Ms": True}}),
        "spec.detectors.latency.p99Ms",
        "must be a number, got boolean true",
    ),
    (
        "bool for integer",
        _manifest(window={"size": True}),
        "spec.window.size",
        "must be an integer, got boolean true",
    ),
    (
        "fraction for integer",
        _manifest(window={"size": 100.5}),
        "spec.window.size",
        "must be an integer, got 100.5",
    ),
    (
        "list for object",
        _manifest(target=["m"]),
        "spec.target",
        "must be an object, got list",
    ),
    (
        "list for nested object",
        _manifest(detectors={"drift": [{"pValue": 0.01}]}),
        "spec.detectors.drift",
        "must be an object, got list",
    ),
    (
        "object for list",
        _manifest(features={"amount": "numeric"}),
        "spec.features",
        "must be a list, got object",
    ),
    (
        "string for boolean",
        _manifest(guardrails={"dryRun": "maybe"}),
        "spec.guardrails.dryRun",
        "must be true or false, got string 'maybe'",
    ),
    (
        "string in a list of names",
        _manifest(pipeline=[{"name": "etl", "kind": "Job", "produces": [3]}]),
        "spec.pipeline[0].produces[0]",
        "must be a non-empty string, got number",
    ),
    # enums
    (
        "bad protocol",
        _manifest(protocol="grpc"),
        "spec.protocol",
        "must be one of auto, v2, v2-grpc, v1, openai, json; got 'grpc'",
    ),
    (
        "bad drift test",
        _manifest(detectors={"drift": {"test": "t-test"}}),
        "spec.detectors.drift.test",
        "got 't-test'",
    ),
    (
        "dimensions of a numeric feature",
        _manifest(features=[{"name": "amount", "type": "numeric", "dimensions": 8}]),
        "spec.features[0].dimensions",
        "only applies to type embedding (a vector per row), not 'numeric'",
    ),
    (
        "a hashed embedding",
        _manifest(
            features=[{"name": "embedding", "type": "embedding"}],
            capture={"redact": [{"field": "embedding", "action": "hash"}]},
        ),
        "spec.capture.redact[0].action",
        "'embedding' is an embedding: a hashed vector is one opaque string",
    ),
    (
        "bad feature type",
        _manifest(features=[{"name": "amount", "type": "text"}]),
        "spec.features[0].type",
        "must be one of numeric, categorical, embedding; got 'text'",
    ),
    (
        "bad alert type",
        _manifest(reactions=[{"alert": "Drift", "action": "alert"}]),
        "spec.reactions[0].alert",
        "got 'Drift'",
    ),
    # target
    (
        "missing target.deployment",
        _manifest(target={"service": "m"}),
        "spec.target.name",
        "is required: the workload's name",
    ),
    (
        "missing target",
        _with(_manifest(), spec={"protocol": "v2"}),
        "spec.target.name",
        "is required: the workload's name",
    ),
    (
        "bad deployment name",
        _manifest(target={"deployment": "Fraud_Model"}),
        "spec.target.deployment",
        "must be a Kubernetes object name; got 'Fraud_Model'",
    ),
    (
        "service name with a dot",
        _manifest(target={"deployment": "m", "service": "fraud.model"}),
        "spec.target.service",
        "must be a Service name: a DNS-1035 label",
    ),
    (
        "service name starting with a digit",
        _manifest(target={"deployment": "m", "service": "1fraud"}),
        "spec.target.service",
        "no dots, at most 63 characters); got '1fraud'",
    ),
    (
        "service name too long",
        _manifest(target={"deployment": "m", "service": "s" * 64}),
        "spec.target.service",
        "must be at most 63 characters (a Service name)",
    ),
    (
        "deployment with another kind",
        _manifest(target={"deployment": "m", "kind": "StatefulSet"}),
        "spec.target.deployment",
        "names a Deployment, but kind is 'StatefulSet'",
    ),
    (
        "name and deployment both",
        _manifest(target={"deployment": "m", "name": "m"}),
        "spec.target.name",
        "and deployment are both set",
    ),
    (
        "port on an InferenceService",
        _manifest(target={"kind": "InferenceService", "name": "m", "port": 8080}),
        "spec.target.port",
        "do not apply to an InferenceService",
    ),
    (
        "unknown target kind",
        _manifest(target={"kind": "DaemonSet", "name": "m"}),
        "spec.target.kind",
        "must be one of",
    ),
    (
        "service defaulting to a dotted deployment name",
        _manifest(target={"deployment": "fraud.model"}),
        "spec.target.service",
        "defaults to the workload's name 'fraud.model', which is not a Service name",
    ),
    # metadata and envelope
    (
        "uppercase name",
        _with(_manifest(), metadata={"name": "Fraud"}),
        "metadata.name",
        "must be a DNS-1035 label",
    ),
    (
        "name starting with a digit",
        _with(_manifest(), metadata={"name": "1fraud"}),
        "metadata.name",
        "must be a DNS-1035 label",
    ),
    (
        "name too long",
        _with(_manifest(), metadata={"name": _LONG_NAME}),
        "metadata.name",
        f"must be at most {MAX_NAME_LENGTH} characters",
    ),
    (
        "missing name",
        _with(_manifest(), metadata={"namespace": "ml"}),
        "metadata.name",
        "required field is missing",
    ),
    (
        "wrong apiVersion",
        _with(_manifest(), apiVersion="mlwarden.io/v1"),
        "apiVersion",
        "must be one of mlwarden.io/v1alpha1; got 'mlwarden.io/v1'",
    ),
    (
        "wrong kind",
        _with(_manifest(), kind="Deployment"),
        "kind",
        "must be one of ObservedModel; got 'Deployment'",
    ),
    (
        "missing spec",
        _with(_manifest(), spec=None),
        "spec",
        "required field is missing",
    ),
    # features and pipeline
    (
        "duplicate feature names",
        _manifest(features=[*FRAUD_FEATURES, {"name": "amount", "type": "categorical"}]),
        "spec.features[2].name",
        "duplicate feature 'amount' (also at spec.features[0])",
    ),
    (
        "dependsOn an unknown component",
        _manifest(pipeline=[{"name": "enricher", "kind": "Deployment", "dependsOn": ["etl"]}]),
        "spec.pipeline[0].dependsOn",
        "'etl' is not a component of spec.pipeline",
    ),
    (
        "produces an unknown feature",
        _manifest(
            features=FRAUD_FEATURES,
            pipeline=[{"name": "etl", "kind": "CronJob", "produces": ["amount", "ammount"]}],
        ),
        "spec.pipeline[0].produces",
        "'ammount' is neither a feature in spec.features nor the prediction",
    ),
    (
        "bad pipeline kind",
        _manifest(pipeline=[{"name": "etl", "kind": "Pod"}]),
        "spec.pipeline[0].kind",
        "got 'Pod'",
    ),
    (
        "duplicate component",
        _manifest(pipeline=[{"name": "etl", "kind": "Job"}, {"name": "etl", "kind": "CronJob"}]),
        "spec.pipeline[1].name",
        "duplicate component 'etl' (also at spec.pipeline[0])",
    ),
    # reactions
    (
        "reaction with on: as YAML reads it",
        _manifest(reactions=[{True: "Latency", "action": "alert"}]),
        "spec.reactions[0].on",
        "use `alert:` to name the alert type",
    ),
    (
        "reaction with a quoted 'on'",
        _manifest(reactions=[{"on": "Latency", "action": "alert"}]),
        "spec.reactions[0].on",
        "use `alert:` to name the alert type",
    ),
    (
        "scale without maxReplicas",
        _manifest(reactions=[{"alert": "Latency", "action": "scale"}]),
        "spec.reactions[0].maxReplicas",
        "required when action is scale",
    ),
    (
        "shiftTraffic without router",
        _manifest(reactions=[{"alert": "PredictionDrift", "action": "shiftTraffic"}]),
        "spec.reactions[0].router",
        "required when action is shiftTraffic",
    ),
    (
        "reaction on an unknown feature",
        _manifest(
            features=FRAUD_FEATURES,
            reactions=[{"alert": "FeatureDrift", "action": "alert", "feature": "ammount"}],
        ),
        "spec.reactions[0].feature",
        "'ammount' is not a feature",
    ),
    (
        "webhook that is not a URL",
        _manifest(reactions=[{"alert": "Errors", "action": "alert", "webhook": "hooks/x"}]),
        "spec.reactions[0].webhook",
        "must be an http:// or https:// URL",
    ),
    # window and durations
    (
        "window with size and duration",
        _manifest(window={"size": 1000, "duration": "5m"}),
        "spec.window",
        "set either size or duration, not both",
    ),
    (
        "bad duration string",
        _manifest(window={"duration": "5 minutes"}),
        "spec.window.duration",
        "must be a duration such as 30s, 5m or 1h30m; got '5 minutes'",
    ),
    (
        "zero window duration",
        _manifest(window={"duration": "0s"}),
        "spec.window.duration",
        "must be longer than 0s",
    ),
    (
        "negative cooldown",
        _manifest(guardrails={"cooldown": "-5m"}),
        "spec.guardrails.cooldown",
        "must be a duration such as 30s",
    ),
    (
        "duration of the wrong type",
        _manifest(alerting={"evaluationInterval": ["30s"]}),
        "spec.alerting.evaluationInterval",
        "must be a duration such as 30s or 5m, got list",
    ),
    # reference
    (
        "configMap source without configMap.name",
        _manifest(reference={"source": "configMap", "configMap": {"key": "ref.csv"}}),
        "spec.reference.configMap.name",
        "required field is missing",
    ),
    (
        "url source with a non-HTTP URL",
        _manifest(reference={"source": "url", "url": "ftp://data/ref.csv"}),
        "spec.reference.url",
        "must be an http:// or https:// URL",
    ),
    (
        "url given with the warmup source",
        _manifest(reference={"source": "warmup", "url": "https://data/ref.csv"}),
        "spec.reference.url",
        "only applies with source url",
    ),
    # capture
    (
        "capture.json with protocol v2",
        _manifest(protocol="v2", capture={"json": {"prediction": "score"}}),
        "spec.capture.json",
        "only applies with protocol json or auto, not 'v2'",
    ),
    (
        "capture.json maps an unknown feature",
        _manifest(
            protocol="json", features=FRAUD_FEATURES, capture={"json": {"features": {"x": "y"}}}
        ),
        "spec.capture.json.features.x",
        "is not a feature in spec.features",
    ),
    (
        "json protocol with nothing to capture",
        _manifest(protocol="json"),
        "spec.protocol",
        "json needs spec.capture.json field paths or spec.features",
    ),
    # bounds that keep the API server's CEL cost estimate low (declared maxItems/maxLength)
    (
        "more reactions than the bound",
        _manifest(reactions=[{"alert": "Errors", "action": "alert"}] * (MAX_REACTIONS + 1)),
        "spec.reactions",
        f"must have at most {MAX_REACTIONS} items, got {MAX_REACTIONS + 1}",
    ),
    (
        "a deployment name longer than a Kubernetes name",
        _manifest(target={"deployment": "d" * (MAX_NAME + 1), "service": "m"}),
        "spec.target.deployment",
        f"must be at most {MAX_NAME} characters, got {MAX_NAME + 1}",
    ),
    (
        "a produced name longer than the bound",
        _manifest(pipeline=[{"name": "etl", "kind": "Job", "produces": ["p" * (MAX_TEXT + 1)]}]),
        "spec.pipeline[0].produces[0]",
        f"must be at most {MAX_TEXT} characters",
    ),
    (
        "latency without p99Ms",
        _manifest(detectors={"latency": {}}),
        "spec.detectors.latency.p99Ms",
        "required field is missing",
    ),
]


@pytest.mark.parametrize(
    ("manifest", "path", "fragment"),
    [pytest.param(m, p, f, id=name) for name, m, p, f in BAD],
)
def test_bad_manifest_names_the_field_and_the_reason(
    manifest: dict[str, Any], path: str, fragment: str
) -> None:
    _assert_error(_errors(manifest), path, fragment)


def test_every_problem_is_reported_at_once() -> None:
    manifest = _with(
        _manifest(protocol="grpc", detectors={"drift": {"pValue": 1.5}}),
        metadata={"name": "Fraud"},
    )
    with pytest.raises(SpecError) as info:
        parse_observed_model(manifest, source="om.yaml")
    errors = info.value.errors
    assert len(errors) == 3
    assert {e.path for e in errors} == {
        "metadata.name",
        "spec.protocol",
        "spec.detectors.drift.pValue",
    }
    message = str(info.value)
    assert message.startswith("om.yaml: invalid ObservedModel (3 problem(s)):")
    assert "  spec.detectors.drift.pValue: must be in (0, 1), got 1.5" in message.splitlines()


def test_a_field_error_reads_like_kubectl() -> None:
    error = FieldError("spec.detectors.drift.pValue", "must be in (0, 1), got 1.5")
    assert str(error) == "spec.detectors.drift.pValue: must be in (0, 1), got 1.5"


def test_a_manifest_that_is_not_an_object() -> None:
    with pytest.raises(SpecError):
        parse_observed_model(["not", "a", "manifest"])  # type: ignore[arg-type]


# --------------------------------------------------------------------------- YAML loading


_MINIMAL_YAML = """\
apiVersion: mlwarden.io/v1alpha1
kind: ObservedModel
metadata: {name: m}
spec:
  target: {deployment: m}
"""


def test_yaml_syntax_error_reports_line_and_column() -> None:
    text = _MINIMAL_YAML.replace("  target", "\ttarget")
    with pytest.raises(SpecError) as info:
        loads_observed_model(text, source="om.yaml")
    [error] = info.value.errors
    assert error.path == "line 5, column 1"
    assert "not valid YAML" in error.message
    assert str(info.value).startswith("om.yaml: ")


def test_yaml_syntax_error_inside_a_line() -> None:
    text = _MINIMAL_YAML + "  protocol: v2: v1\n"
    with pytest.raises(SpecError) as info:
        loads_observed_model(text)
    [error] = info.value.errors
    assert error.path == "line 6, column 15"
    assert "mapping values are not allowed here" in error.message


def test_yaml_syntax_error_in_a_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("spec: [unclosed\n", encoding="utf-8")
    with pytest.raises(SpecError) as info:
        load_observed_model(path)
    assert info.value.source == str(path)
    assert str(path) in str(info.value)
    assert info.value.errors[0].path.startswith("line ")


def test_multi_document_yaml_with_one_observed_model() -> None:
    text = (
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: m}\n"
        "---\n" + _MINIMAL_YAML + "---\n"
        "apiVersion: v1\nkind: Service\nmetadata: {name: m}\n"
        "---\n"  # an empty document is skipped
    )
    model = loads_observed_model(text)
    assert model.name == "m"


def test_two_observed_models_is_an_error() -> None:
    with pytest.raises(SpecError) as info:
        loads_observed_model(_MINIMAL_YAML + "---\n" + _MINIMAL_YAML)
    [error] = info.value.errors
    assert error.path == "kind"
    assert "2 ObservedModel documents found; expected one" in error.message


def test_documents_without_an_observed_model() -> None:
    text = "kind: Deployment\n---\nkind: Service\n"
    with pytest.raises(SpecError) as info:
        loads_observed_model(text)
    assert info.value.errors == [FieldError("kind", "no document of kind ObservedModel found")]


def test_a_single_document_of_another_kind_is_validated() -> None:
    with pytest.raises(SpecError) as info:
        loads_observed_model(_MINIMAL_YAML.replace("kind: ObservedModel", "kind: ObservedModle"))
    _assert_error(info.value.errors, "kind", "got 'ObservedModle'")


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(SpecError) as info:
        load_observed_model(path)
    assert info.value.source == str(path)
    assert str(path) in str(info.value)
    [error] = info.value.errors
    assert "cannot read" in error.message
    assert "No such file" in error.message


def test_load_accepts_a_string_path(tmp_path: Path) -> None:
    path = tmp_path / "om.yaml"
    path.write_text(_MINIMAL_YAML, encoding="utf-8")
    assert load_observed_model(str(path)).spec.target.deployment == "m"


def test_json_is_yaml() -> None:
    text = (
        '{"apiVersion": "mlwarden.io/v1alpha1", "kind": "ObservedModel",'
        ' "metadata": {"name": "m"}, "spec": {"target": {"deployment": "m"}}}'
    )
    assert loads_observed_model(text).name == "m"


# --------------------------------------------------------------------------- durations


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("2m30s", 150.0),
        ("1h0m0s", 3600.0),
        ("1.5h", 5400.0),
        ("1s500ms", 1.5),
        (" 30s ", 30.0),
        ("7d", 604800.0),
        ("1d12h", 129600.0),
        (45, 45.0),
        (0.5, 0.5),
        (0, 0.0),
    ],
)
def test_parse_duration(text: str | float, seconds: float) -> None:
    result = parse_duration(text)
    assert isinstance(result, float)
    assert result == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "30",
        "5 m",
        "1h 30m",
        "5x",
        "1w",
        "-5s",
        "m",
        "ms",
        "1.h",
        ".5s",
        "5m-",
        -1,
        math.inf,
        math.nan,
    ],
)
def test_parse_duration_rejects(text: str | float) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


# Bounded so that every sum is exactly representable as a float: seconds are floats.
_COUNTS = st.integers(min_value=0, max_value=10**9)


@given(h=_COUNTS, m=_COUNTS, s=_COUNTS)
def test_parse_duration_adds_up_hours_minutes_seconds(h: int, m: int, s: int) -> None:
    assert parse_duration(f"{h}h{m}m{s}s") == 3600 * h + 60 * m + s


# --------------------------------------------------------------------------- immutability


_FIELDS: list[tuple[str, Callable[[ObservedModel], Any], str]] = [
    ("model", lambda m: m, "name"),
    ("spec", lambda m: m.spec, "protocol"),
    ("target", lambda m: m.spec.target, "deployment"),
    ("feature", lambda m: m.spec.features[0], "type"),
    ("prediction", lambda m: m.spec.prediction, "name"),
    ("capture", lambda m: m.spec.capture, "sample_rate"),
    ("window", lambda m: m.spec.window, "size"),
    ("drift", lambda m: m.spec.detectors.drift, "p_value"),
    ("latency", lambda m: m.spec.detectors.latency, "p99_ms"),
    ("alerting", lambda m: m.spec.alerting, "fire_after"),
    ("pipeline", lambda m: m.spec.pipeline[0], "produces"),
    ("reaction", lambda m: m.spec.reactions[0], "action"),
    ("guardrails", lambda m: m.spec.guardrails, "dry_run"),
]


@pytest.fixture(scope="module")
def fraud() -> ObservedModel:
    return load_observed_model(EXAMPLES / "observedmodel-fraud.yaml")


@pytest.mark.parametrize(("get", "attribute"), [pytest.param(g, a, id=n) for n, g, a in _FIELDS])
def test_parsed_objects_are_immutable(
    fraud: ObservedModel, get: Callable[[ObservedModel], Any], attribute: str
) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(get(fraud), attribute, None)


def test_collections_are_tuples(fraud: ObservedModel) -> None:
    assert isinstance(fraud.spec.features, tuple)
    assert isinstance(fraud.spec.pipeline, tuple)
    assert isinstance(fraud.spec.reactions, tuple)
    assert all(isinstance(c.produces, tuple) for c in fraud.spec.pipeline)


def test_a_parsed_model_is_hashable(fraud: ObservedModel) -> None:
    assert hash(fraud) == hash(load_observed_model(EXAMPLES / "observedmodel-fraud.yaml"))


# --------------------------------------------------------------------------- known bugs


def test_reaction_with_on_and_another_unknown_field() -> None:
    manifest = _manifest(reactions=[{True: "Latency", "action": "alert", "webhok": "https://x"}])
    errors = _errors(manifest)
    _assert_error(errors, "spec.reactions[0].on", "use `alert:`")
    _assert_error(errors, "spec.reactions[0].webhok", "did you mean 'webhook'?")


def test_produces_error_names_the_right_component_after_an_invalid_one() -> None:
    manifest = _manifest(
        features=FRAUD_FEATURES,
        pipeline=[
            {"name": "Bad_Name", "kind": "Job"},
            {"name": "etl", "kind": "Job", "produces": ["ammount"]},
        ],
    )
    errors = _errors(manifest)
    _assert_error(errors, "spec.pipeline[0].name", "must be a Kubernetes name")
    _assert_error(errors, "spec.pipeline[1].produces", "'ammount' is neither a feature")


def test_reaction_feature_error_names_the_right_reaction_after_an_invalid_one() -> None:
    manifest = _manifest(
        features=FRAUD_FEATURES,
        reactions=[
            {"alert": "Drift", "action": "alert"},
            {"alert": "FeatureDrift", "action": "alert", "feature": "ammount"},
        ],
    )
    errors = _errors(manifest)
    _assert_error(errors, "spec.reactions[0].alert", "got 'Drift'")
    _assert_error(errors, "spec.reactions[1].feature", "'ammount' is not a feature")


def test_exponent_without_a_dot_is_a_number() -> None:
    text = _MINIMAL_YAML + "  detectors: {drift: {pValue: 1e-3}}\n"
    assert loads_observed_model(text).spec.detectors.drift.p_value == 0.001


def test_json_capture_features_cannot_be_changed() -> None:
    model = load_observed_model(EXAMPLES / "observedmodel-json.yaml")
    assert model.spec.capture.json is not None
    with pytest.raises(TypeError):
        model.spec.capture.json.features["amount"] = "elsewhere"  # type: ignore[index]


def test_a_model_with_json_capture_is_hashable() -> None:
    hash(load_observed_model(EXAMPLES / "observedmodel-json.yaml"))


def test_a_huge_integer_is_a_field_error() -> None:
    _assert_error(
        _errors(_manifest(target={"deployment": "m", "port": 10**400})),
        "spec.target.port",
        "must be in [1, 65535]",
    )


def test_a_large_bound_is_written_out() -> None:
    _assert_error(
        _errors(_manifest(reference={"size": 10})),
        "spec.reference.size",
        "must be in [50, 10000000], got 10",
    )


def test_parse_duration_rejects_an_infinite_string() -> None:
    with pytest.raises(ValueError):
        parse_duration("9" * 400 + "s")


def test_segments_slice_by_a_categorical_feature_or_a_request_field() -> None:
    features = [*FRAUD_FEATURES, {"name": "text", "type": "embedding"}]
    ok = parse_observed_model(
        _manifest(
            features=features,
            segments=[{"column": "merchant_category"}, {"column": "tenant", "maxLevels": 5}],
        )
    )
    assert [(s.column, s.max_levels) for s in ok.spec.segments] == [
        ("merchant_category", 20),
        ("tenant", 5),
    ]
    errors = _errors(
        _manifest(
            features=features,
            prediction={"name": "score"},
            segments=[
                {"column": "amount"},
                {"column": "text"},
                {"column": "score"},
                {"column": "tenant", "maxLevels": 51},
            ],
        )
    )
    _assert_error(errors, "spec.segments[0].column", "'amount' is a numeric feature")
    _assert_error(errors, "spec.segments[1].column", "'text' is an embedding feature")
    _assert_error(errors, "spec.segments[2].column", "is the prediction")
    _assert_error(errors, "spec.segments[3].maxLevels", "must be in [1, 50]")
    errors = _errors(_manifest(segments=[{"column": "a"}, {"column": "a"}, {"colum": "b"}]))
    _assert_error(errors, "spec.segments[1].column", "duplicate segment column 'a'")
    _assert_error(errors, "spec.segments[2].colum", "unknown field")
