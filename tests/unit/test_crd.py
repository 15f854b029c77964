"""Tests for `mlwarden.crd`: the committed CRD, its structural schema, the same verdict as spec.py.

There is no API server here, so the CRD's openAPIV3Schema is applied the way the
API server applies it, step by step:

1. prune null values of fields that are not `nullable` (Kubernetes drops them),
2. apply the schema's defaults,
3. validate with jsonschema (Draft 4: OpenAPI's boolean exclusiveMinimum), with the
   OpenAPI extensions translated: `nullable`, int-or-string, integral floats accepted
   as integers (go-openapi does), patterns matched like Go's RE2, list-type map keys
   unique, and every object with declared properties closed, which is what
   kubectl's Strict field validation does with an unknown field;
4. evaluate the CEL rules with a real CEL implementation (cel-python); each rule is
   declared in spec.py once with its Python check (`spec.Rule`), and
   `test_cel_and_python_agree` requires the same verdict from both on every manifest
   here (a rule calling a Kubernetes CEL extension cel-python lacks is skipped, named).

Every example and a table of good and bad manifests must get the same verdict from
that and from `mlwarden.spec.parse_observed_model`. Where the two deliberately
differ, the case is in one of the two GAP tables with its reason (and in
crds/README.md).
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from kubernetes_validate import validate as kubernetes_validate

from mlwarden import spec as spec_module
from mlwarden.crd import (
    DURATION_PATTERN,
    PERFORMANCE_METRICS,
    POSITIVE_DURATION_PATTERN,
    custom_resource_definition,
    to_yaml,
)
from mlwarden.detector.alerts import Alert
from mlwarden.detector.reporter import status_patch
from mlwarden.diagnose import Diagnosis, Suspect
from mlwarden.react.actions import ActionRecord
from mlwarden.spec import (
    ACTIONS,
    ALERT_TYPES,
    API_VERSION,
    CORRECTIONS,
    DRIFT_TESTS,
    FEATURE_TYPES,
    KIND,
    MAX_FEATURES,
    MAX_NAME,
    MAX_NAME_LENGTH,
    MAX_STATUS_ALERTS,
    MAX_STATUS_CONDITIONS,
    MAX_STATUS_EVIDENCE,
    MAX_STATUS_REACTIONS,
    MAX_STATUS_SUSPECTS,
    MAX_TEXT,
    MAX_URL,
    PERFORMANCE_ESTIMATES,
    PIPELINE_KINDS,
    PREDICTION_TYPES,
    PROTOCOLS,
    TRAFFIC_ROUTERS,
    ObservedModel,
    SpecError,
    parse_duration,
    parse_observed_model,
)

ROOT = Path(__file__).resolve().parents[2]
CRD_FILE = ROOT / "crds" / "observedmodels.mlwarden.io.yaml"
EXAMPLES = ROOT / "examples"
REGENERATE = ".venv/bin/python -m mlwarden.crd > crds/observedmodels.mlwarden.io.yaml"

CRD = custom_resource_definition()
SCHEMA: dict[str, Any] = CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


# --------------------------------------------------------------------------- the file


def test_committed_file_is_generated_from_the_module() -> None:
    committed = CRD_FILE.read_text(encoding="utf-8") if CRD_FILE.exists() else ""
    assert committed == to_yaml(), (
        f"{CRD_FILE.relative_to(ROOT)} is out of date with mlwarden.crd / mlwarden.spec; "
        f"regenerate it: {REGENERATE}"
    )


def test_committed_file_says_it_is_generated_and_how() -> None:
    head = to_yaml().splitlines()[:4]
    assert any("GENERATED" in line for line in head)
    assert any("python -m mlwarden.crd > crds/observedmodels.mlwarden.io.yaml" in h for h in head)
    assert yaml.safe_load(to_yaml()) == CRD


def test_the_crd_is_a_valid_kubernetes_object() -> None:
    kubernetes_validate(CRD, "1.30", strict=True)


def test_names_scope_and_version_are_the_public_contract() -> None:
    assert CRD["metadata"]["name"] == "observedmodels.mlwarden.io"
    s = CRD["spec"]
    assert s["group"] == "mlwarden.io"
    assert s["scope"] == "Namespaced"
    assert s["names"] == {
        "kind": "ObservedModel",
        "listKind": "ObservedModelList",
        "plural": "observedmodels",
        "singular": "observedmodel",
        "shortNames": ["om"],
        "categories": ["mlwarden"],
    }
    [version] = s["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}
    columns = [(c["name"], c["type"], c["jsonPath"]) for c in version["additionalPrinterColumns"]]
    assert columns == [
        ("Target", "string", ".status.target.ref"),
        ("Phase", "string", ".status.phase"),
        ("Incidents", "integer", ".status.openIncidents"),
        ("Alerts", "integer", ".status.alertCount"),
        ("Top Suspect", "string", ".status.topSuspect"),
        ("Last Action", "string", ".status.lastAction"),
        ("Age", "date", ".metadata.creationTimestamp"),
    ]
    # Every printer column points at a field the schema declares.
    for _, _, json_path in columns[:-1]:
        node = SCHEMA
        for part in json_path.strip(".").split("."):
            node = node["properties"][part]


# --------------------------------------------------------------------------- structural


_TYPES = {"object", "array", "string", "integer", "number", "boolean"}
_INT_OR_STRING = [{"type": "integer"}, {"type": "string"}]
# Free-form on purpose, and nothing else: kopf's bookkeeping (its own shape, which kopf
# changes between versions), and each reaction's merge patches (fragments of other kinds'
# objects, keyed by Kind/name: a pod template, route rules; they cannot have a schema here).
_FREE_FORM_ALLOWED = {"status.kopf", "status.reactions[].patch"}


def structural_violations(node: Any, path: str = "") -> list[str]:
    """Where `node` breaks Kubernetes' structural-schema rules (plus this project's own)."""
    where = path or "(root)"
    if not isinstance(node, dict):
        return [f"{where}: a schema must be an object"]
    out: list[str] = []
    int_or_string = node.get("x-kubernetes-int-or-string") is True
    preserve = node.get("x-kubernetes-preserve-unknown-fields") is True
    if "type" not in node and not (int_or_string or preserve):
        out.append(f"{where}: no type")
    if "type" in node and node["type"] not in _TYPES:
        out.append(f"{where}: unknown type {node['type']!r}")
    if int_or_string and "type" in node:
        out.append(f"{where}: int-or-string must not set a type")
    for junctor in ("allOf", "anyOf", "oneOf", "not"):
        if junctor in node and not (int_or_string and junctor == "anyOf"):
            out.append(f"{where}: {junctor} is only used for int-or-string here")
    if int_or_string and node.get("anyOf", _INT_OR_STRING) != _INT_OR_STRING:
        out.append(f"{where}: int-or-string anyOf must be exactly integer | string")
    if "properties" in node and "additionalProperties" in node:
        out.append(f"{where}: properties and additionalProperties together")
    if node.get("nullable") and "type" not in node:
        out.append(f"{where}: nullable without a type")
    if preserve and path not in _FREE_FORM_ALLOWED:
        out.append(f"{where}: x-kubernetes-preserve-unknown-fields outside {_FREE_FORM_ALLOWED}")
    if (
        node.get("type") == "object"
        and not {"properties", "additionalProperties"} & node.keys()
        and not preserve
        and path != "metadata"
    ):
        out.append(f"{where}: an object with no fields: everything in it would be pruned")
    if node.get("type") == "array" and not isinstance(node.get("items"), dict):
        out.append(f"{where}: an array needs one items schema")
    if path not in ("", "apiVersion", "kind", "metadata") and not node.get("description"):
        out.append(f"{where}: no description (kubectl explain shows it)")
    if node.get("x-kubernetes-list-type") == "map":
        items = node.get("items", {})
        for key in node.get("x-kubernetes-list-map-keys", []):
            key_type = items.get("properties", {}).get(key, {}).get("type")
            if key not in items.get("required", []) or key_type not in ("string", "integer"):
                out.append(f"{where}: list-map key {key!r} must be a required scalar")
    for rule in node.get("x-kubernetes-validations", []):
        if "type" not in node or not rule.get("rule") or not rule.get("message"):
            out.append(f"{where}: a CEL rule needs a typed node, a rule and a message")
    if "default" in node:
        if not path or path.startswith("metadata"):
            out.append(f"{where}: no defaults at the root or in metadata")
        value = copy.deepcopy(node["default"])
        prune_nulls(value, node)
        apply_defaults(value, node)
        for error in _validator(node).iter_errors(value):
            out.append(f"{where}: default {node['default']!r} is invalid: {error.message}")
    for name, sub in node.get("properties", {}).items():
        out += structural_violations(sub, f"{path}.{name}" if path else name)
    if isinstance(node.get("items"), dict):
        out += structural_violations(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        out += structural_violations(node["additionalProperties"], f"{path}{{}}")
    return out


def test_the_schema_is_structural() -> None:
    assert structural_violations(SCHEMA) == []


@pytest.mark.parametrize(
    ("node", "fragment"),
    [
        ({"description": "x"}, "no type"),
        (
            {"type": "object", "properties": {}, "additionalProperties": {"type": "string"}},
            "together",
        ),
        ({"type": "object", "x-kubernetes-preserve-unknown-fields": True}, "preserve"),
        ({"nullable": True, "x-kubernetes-int-or-string": True}, "nullable without"),
        ({"type": "integer", "minimum": 1, "default": 0}, "default 0 is invalid"),
        ({"type": "object", "properties": {"a": {"type": "string"}}}, "no description"),
        ({"type": "object"}, "no fields"),
    ],
)
def test_the_structural_checker_catches(node: dict[str, Any], fragment: str) -> None:
    found = structural_violations({"type": "object", "properties": {"x": node}})
    assert any(fragment in v for v in found), found


def test_only_kopf_and_reaction_patches_are_free_form() -> None:
    status = SCHEMA["properties"]["status"]["properties"]
    kopf = status["kopf"]
    patch = status["reactions"]["items"]["properties"]["patch"]
    for node in (kopf, patch):
        assert node == {
            "type": "object",
            "description": node["description"],
            "x-kubernetes-preserve-unknown-fields": True,
        }


# --------------------------------------------------------------------------- the emulator


def go_regex(pattern: str) -> re.Pattern[str]:
    """`pattern` matching as Go's RE2 does: ASCII classes, and `$` is the end of the text.

    (Python's `$` also matches before a trailing newline, which RE2's does not.)
    """
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1] + r"\Z"
    return re.compile(pattern, re.ASCII)


def _is_integer(checker: Any, value: Any) -> bool:
    # go-openapi accepts a float with no fraction where the schema says integer.
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


def _pattern(validator: Any, pattern: str, value: Any, schema: Any) -> Iterator[Any]:
    if isinstance(value, str) and not go_regex(pattern).search(value):
        yield jsonschema.ValidationError(f"{value!r} does not match {pattern!r}")


def _list_map_keys(validator: Any, keys: list[str], value: Any, schema: Any) -> Iterator[Any]:
    if not isinstance(value, list):
        return
    seen: set[tuple[Any, ...]] = set()
    for item in value:
        if isinstance(item, dict):
            key = tuple(repr(item.get(k)) for k in keys)
            if key in seen:
                yield jsonschema.ValidationError(
                    f"duplicate entry for key {dict(zip(keys, key, strict=True))}"
                )
            seen.add(key)


_FORMATS = jsonschema.FormatChecker(formats=())


@_FORMATS.checks("date-time", raises=ValueError)
def _date_time(value: object) -> bool:
    if isinstance(value, str):
        if "T" not in value:
            raise ValueError(f"not an RFC 3339 date-time: {value!r}")
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    return True


_OpenAPIValidator = jsonschema.validators.extend(
    jsonschema.Draft4Validator,
    validators={"pattern": _pattern, "x-list-map-keys": _list_map_keys},
    type_checker=jsonschema.Draft4Validator.TYPE_CHECKER.redefine("integer", _is_integer),
)


def to_jsonschema(node: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI v3 schema `node` as a JSON schema with the same verdicts."""
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "properties":
            out[key] = {name: to_jsonschema(sub) for name, sub in value.items()}
        elif key == "items" or (key == "additionalProperties" and isinstance(value, dict)):
            out[key] = to_jsonschema(value)
        elif key == "anyOf":
            out[key] = [to_jsonschema(sub) for sub in value]
        elif key in ("nullable", "default", "description") or key.startswith("x-kubernetes-"):
            continue
        else:
            out[key] = value
    if node.get("nullable"):
        out["type"] = [node["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    if node.get("x-kubernetes-int-or-string") and "anyOf" not in out:
        out["anyOf"] = _INT_OR_STRING
    # Strict field validation: a field the schema does not declare is an error.
    if (
        "properties" in node
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    if node.get("x-kubernetes-list-type") == "map":
        out["x-list-map-keys"] = node["x-kubernetes-list-map-keys"]
    return out


def _validator(node: dict[str, Any]) -> Any:
    return _OpenAPIValidator(to_jsonschema(node), format_checker=_FORMATS)


def _children(value: Any, node: dict[str, Any]) -> Iterator[tuple[str, Any, dict[str, Any]]]:
    if isinstance(value, dict):
        for key, sub in node.get("properties", {}).items():
            if key in value:
                yield f".{key}", value[key], sub
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):
            for key in value:
                yield f".{key}", value[key], extra
    elif isinstance(value, list) and isinstance(node.get("items"), dict):
        for i, item in enumerate(value):
            yield f"[{i}]", item, node["items"]


def prune_nulls(value: Any, node: dict[str, Any]) -> None:
    """Drop null fields the schema does not call nullable, as the API server does."""
    if isinstance(value, dict):
        declared = dict(node.get("properties", {}))
        for key in list(value):
            sub = declared.get(key, node.get("additionalProperties"))
            if value[key] is None and isinstance(sub, dict) and not sub.get("nullable"):
                del value[key]
    for _, child, sub in _children(value, node):
        prune_nulls(child, sub)


def apply_defaults(value: Any, node: dict[str, Any]) -> None:
    """Fill absent fields with the schema's defaults, outermost first, as the API server does."""
    if isinstance(value, dict):
        for key, sub in node.get("properties", {}).items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
    for _, child, sub in _children(value, node):
        apply_defaults(child, sub)


# Every CEL rule is evaluated by a real CEL implementation (cel-python), next to the Python
# check it is declared with in spec.py (`spec.Rule`); both must give the same verdict on
# every manifest below. Kubernetes' CEL extension functions are not in cel-python: a rule
# that calls one is listed, with the reason, by `test_cel_and_python_agree` (skipped).
K8S_EXTENSIONS = ("quantity(", "url(", "isSorted(", "format.", "ip(", "cidr(", "authorizer")
_CEL_ENV = celpy.Environment()


def _declared_rules() -> dict[str, spec_module.Rule]:
    out = {r.cel: r for r in spec_module.METADATA_RULES}
    todo: list[type[Any]] = [spec_module.ObservedModelSpec]
    while todo:
        cls = todo.pop()
        out.update({r.cel: r for r in spec_module.rules_of(cls)})
        todo += [w.of for _, w in spec_module.wire_fields(cls) if w.of is not None]
    return out


DECLARED = _declared_rules()


def _cel_rules(node: dict[str, Any]) -> Iterator[str]:
    for rule in node.get("x-kubernetes-validations", []):
        yield rule["rule"]
    for sub in node.get("properties", {}).values():
        yield from _cel_rules(sub)
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            yield from _cel_rules(node[key])


CRD_RULES = list(_cel_rules(SCHEMA))


def test_every_cel_rule_is_declared_once_with_its_python_check() -> None:
    assert sorted(set(CRD_RULES)) == sorted(DECLARED)


def _program(rule: str) -> Any:
    if rule not in _PROGRAMS:
        _PROGRAMS[rule] = _CEL_ENV.program(_CEL_ENV.compile(rule))
    return _PROGRAMS[rule]


_PROGRAMS: dict[str, Any] = {}


def _as_typed(value: Any, node: dict[str, Any]) -> Any:
    """The value as the API server hands it to CEL: an integer field's 4096.0 is an int."""
    if node.get("type") == "integer" and isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        props = node.get("properties", {})
        extra = node.get("additionalProperties")
        return {
            k: _as_typed(v, props.get(k, extra if isinstance(extra, dict) else {}))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_as_typed(v, node.get("items", {})) for v in value]
    return value


def cel_verdict(rule: str, value: Any) -> bool:
    """The rule evaluated by cel-python; a runtime error fails it, as in the API server."""
    try:
        return bool(_program(rule).evaluate({"self": celpy.json_to_cel(value)}))
    except celpy.CELEvalError:
        return False


def python_verdict(rule: str, value: Any) -> bool:
    try:
        return bool(DECLARED[rule].check(value))
    except (KeyError, TypeError, AttributeError):
        return False


def rule_nodes(
    value: Any, node: dict[str, Any], path: str = ""
) -> Iterator[tuple[str, str, str, Any]]:
    """(path, rule, message, object) for every CEL rule and the object it applies to."""
    for rule in node.get("x-kubernetes-validations", []):
        yield path or "(root)", rule["rule"], rule["message"], _as_typed(value, node)
    for step, child, sub in _children(value, node):
        yield from rule_nodes(child, sub, path + step)


def cel_violations(value: Any, node: dict[str, Any], path: str = "") -> list[tuple[str, str, str]]:
    """(path, rule, message) of every CEL rule `value` breaks, by cel-python."""
    return [
        (where, rule, message)
        for where, rule, message, obj in rule_nodes(value, node, path)
        if not any(x in rule for x in K8S_EXTENSIONS) and not cel_verdict(rule, obj)
    ]


def as_stored(manifest: Any) -> Any:
    """The object as the API server would store it: nulls pruned, defaults applied."""
    obj = copy.deepcopy(manifest)
    prune_nulls(obj, SCHEMA)
    apply_defaults(obj, SCHEMA)
    return obj


def crd_errors(manifest: Any) -> list[str]:
    """Why the API server (with Strict field validation) would reject `manifest`."""
    obj = as_stored(manifest)
    errors = [
        f"{'.'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
        for e in _validator(SCHEMA).iter_errors(obj)
    ]
    return errors + [f"{where}: {message}" for where, _, message in cel_violations(obj, SCHEMA)]


def spec_errors(manifest: Any) -> list[str]:
    """Why mlwarden.spec would reject `manifest`."""
    try:
        parse_observed_model(manifest)
    except SpecError as exc:
        return [str(e) for e in exc.errors]
    return []


# --------------------------------------------------------------------------- manifests


class _KubectlLoader(yaml.SafeLoader):
    """YAML as kubectl reads it: an unquoted 1e-3 is a number (PyYAML reads a string)."""


_KubectlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def _example_documents() -> list[Any]:
    out = []
    for path in sorted(EXAMPLES.glob("*.y*ml")):
        text = path.read_text(encoding="utf-8")
        pairs = zip(
            yaml.safe_load_all(text), yaml.load_all(text, Loader=_KubectlLoader), strict=True
        )
        for i, (for_spec, for_kubectl) in enumerate(pairs):
            if isinstance(for_spec, dict) and for_spec.get("kind") == KIND:
                out.append(pytest.param(for_spec, for_kubectl, id=f"{path.name}#{i}"))
    return out


EXAMPLE_DOCUMENTS = _example_documents()

BASE: dict[str, Any] = {
    "apiVersion": API_VERSION,
    "kind": KIND,
    "metadata": {"name": "fraud", "namespace": "ml"},
    "spec": {
        "target": {
            "deployment": "fraud-model",
            "service": "fraud-model",
            "container": "model",
            "port": 8080,
        },
        "protocol": "v2",
        "features": [
            {"name": "amount", "type": "numeric"},
            {"name": "merchant_category", "type": "categorical"},
        ],
        "prediction": {"name": "score", "type": "numeric", "probabilities": "probs"},
        "segments": [{"column": "country", "maxLevels": 10}],
        "capture": {"sampleRate": 0.5, "maxBodyBytes": 2 << 20},
        "reference": {"source": "warmup", "size": 1000},
        "window": {"size": 1000},
        "detectors": {
            "drift": {
                "enabled": True,
                "test": "ks",
                "pValue": 0.01,
                "correction": "bonferroni",
                "minEffect": 0.1,
            },
            "predictionDrift": {"test": "psi"},
            "quality": {"maxMissingRate": 0.05, "outOfRange": True, "newCategories": False},
            "latency": {"p99Ms": 250},
            "errors": {"maxRate": 0.02},
            "performance": {"estimate": "cbpe", "metric": "accuracy", "maxDrop": 0.05},
        },
        "alerting": {"evaluationInterval": "30s", "fireAfter": 3, "resolveAfter": 3},
        "pipeline": [
            {"name": "feature-etl", "kind": "CronJob", "produces": ["amount"]},
            {
                "name": "merchant-enricher",
                "kind": "Deployment",
                "produces": ["merchant_category"],
                "dependsOn": ["feature-etl"],
                "namespace": "data",
            },
        ],
        "reactions": [
            {"alert": "PredictionDrift", "action": "rollback", "toRevision": 6},
            {"alert": "Latency", "action": "scale", "minReplicas": 2, "maxReplicas": 10},
            {
                "alert": "FeatureDrift",
                "action": "shiftTraffic",
                "router": "httproute",
                "route": "fraud",
                "stable": "fraud-model",
                "canary": "fraud-model-canary",
                "stepPercent": 25,
                "feature": "amount",
            },
            {"alert": "Errors", "action": "alert", "webhook": "https://hooks.example.com/ml"},
            {"alert": "PerformanceDrop", "action": "pause", "canary": "fraud-model-canary"},
            {"alert": "FeatureDrift", "action": "retrain", "retrain": {"cronJob": "fraud-train"}},
        ],
        "guardrails": {
            "dryRun": False,
            "cooldown": "10m",
            "maxActionsPerHour": 3,
            "requireApproval": False,
        },
        "canary": {
            "baseline": "5d4c3b2a1",
            "minSamples": 300,
            "pValue": 0.01,
            "maxDivergence": 0.1,
            "maxPerformanceDrop": 0.05,
            "qualityMargin": 0.02,
            "latencyMargin": 0.2,
            "latencyMarginMs": 5,
            "errorMargin": 0.01,
            "idleAfter": "10m",
        },
    },
}

DELETE = object()
_STEP = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def variant(changes: dict[str, Any]) -> dict[str, Any]:
    """BASE with fields set (dotted paths, `[i]` for list items) or removed (DELETE)."""
    out = copy.deepcopy(BASE)
    for path, value in changes.items():
        steps: list[Any] = [int(i) if i else k for k, i in _STEP.findall(path)]
        parent: Any = out
        for step in steps[:-1]:
            parent = parent[step]
        if value is DELETE:
            del parent[steps[-1]]
        elif isinstance(parent, list) and steps[-1] == len(parent):
            parent.append(copy.deepcopy(value))
        else:
            parent[steps[-1]] = copy.deepcopy(value)
    return out


def _more_features(n: int) -> dict[str, Any]:
    """BASE's features and `n` more (changes for `variant`)."""
    extra = [{"name": f"f{i}", "type": "numeric"} for i in range(n)]
    return {"spec.features": BASE["spec"]["features"] + extra}


def _case(case_id: str, changes: dict[str, Any]) -> Any:
    return pytest.param(variant(changes), id=case_id)


def _every_enum_value() -> list[Any]:
    """One accepted variant per value of every enum (each value both validators must take)."""
    fields: list[tuple[str, tuple[str, ...]]] = [
        ("spec.protocol", tuple(p for p in PROTOCOLS if p != "json")),
        ("spec.features[0].type", FEATURE_TYPES),
        ("spec.prediction.type", PREDICTION_TYPES),
        ("spec.detectors.drift.test", DRIFT_TESTS),
        ("spec.detectors.predictionDrift.correction", CORRECTIONS),
        ("spec.detectors.performance.estimate", PERFORMANCE_ESTIMATES),
        ("spec.detectors.performance.metric", PERFORMANCE_METRICS),
        ("spec.pipeline[0].kind", PIPELINE_KINDS),
        ("spec.reactions[0].alert", ALERT_TYPES),
        ("spec.reactions[2].router", TRAFFIC_ROUTERS),
    ]
    out = [_case(f"{path}={v}", {path: v}) for path, values in fields for v in values]
    out += [
        _case(f"spec.reactions[3].action={a}", {"spec.reactions[3].action": a})
        for a in ACTIONS
        if a not in ("scale", "shiftTraffic", "pause", "retrain")  # each has one in BASE
    ]
    return out


GOOD = [
    pytest.param(copy.deepcopy(BASE), id="base"),
    _case("name of exactly the maximum length", {"metadata.name": "a" * MAX_NAME_LENGTH}),
    _case("minimal spec", {"spec": {"target": {"deployment": "m"}}}),
    _case(
        "an embedding with its dimensions",
        {
            "spec.features": BASE["spec"]["features"]
            + [{"name": "embedding", "type": "embedding", "dimensions": 384}]
        },
    ),
    # the declared bounds (maxItems, maxLength), at the bound
    _case("features at maxItems", _more_features(MAX_FEATURES - 2)),
    _case(
        "reactions at maxItems", {"spec.reactions": [{"alert": "Errors", "action": "alert"}] * 50}
    ),
    _case("deployment name at maxLength", {"spec.target.deployment": "d" * MAX_NAME}),
    _case("webhook at maxLength", {"spec.reactions[3].webhook": "https://" + "w" * (MAX_URL - 8)}),
    _case("target.port 1", {"spec.target.port": 1}),
    _case("target.port 65535", {"spec.target.port": 65535}),
    _case("target.deployment with dots", {"spec.target.deployment": "fraud.model-v2"}),
    _case("sampleRate 1 (closed upper end)", {"spec.capture.sampleRate": 1}),
    _case("sampleRate just above 0", {"spec.capture.sampleRate": 1e-9}),
    _case("maxBodyBytes 1024", {"spec.capture.maxBodyBytes": 1024}),
    _case("maxBodyBytes 64 MiB", {"spec.capture.maxBodyBytes": 64 << 20}),
    _case("integer written as an integral float", {"spec.capture.maxBodyBytes": 4096.0}),
    _case("reference.size 50", {"spec.reference.size": 50}),
    _case("reference.size 10000000", {"spec.reference.size": 10_000_000}),
    _case(
        "reference from a ConfigMap",
        {"spec.reference": {"source": "configMap", "configMap": {"name": "ref", "key": "r.csv"}}},
    ),
    _case("reference from a URL", {"spec.reference": {"source": "url", "url": "https://x/r.csv"}}),
    _case("reference from a file", {"spec.reference": {"source": "file", "path": "/data/r.csv"}}),
    _case("window.size 50", {"spec.window": {"size": 50}}),
    _case("window.duration 1h30m", {"spec.window": {"duration": "1h30m"}}),
    _case("window.duration 250ms", {"spec.window": {"duration": "250ms"}}),
    _case("window.duration 0.5s", {"spec.window": {"duration": "0.5s"}}),
    _case("window.duration 0m5s", {"spec.window": {"duration": "0m5s"}}),
    _case("window.duration in whole seconds", {"spec.window": {"duration": 300}}),
    _case("window empty", {"spec.window": {}}),
    _case("pValue tiny", {"spec.detectors.drift.pValue": 1e-12}),
    _case("pValue just below 1", {"spec.detectors.drift.pValue": 0.999}),
    _case("minEffect 0", {"spec.detectors.drift.minEffect": 0}),
    _case("maxMissingRate 0", {"spec.detectors.quality.maxMissingRate": 0}),
    _case("maxMissingRate 1", {"spec.detectors.quality.maxMissingRate": 1}),
    _case("errors.maxRate 0", {"spec.detectors.errors.maxRate": 0}),
    _case("errors.maxRate 1", {"spec.detectors.errors.maxRate": 1}),
    _case("performance.maxDrop 1", {"spec.detectors.performance.maxDrop": 1}),
    _case("performance empty", {"spec.detectors.performance": {}}),
    _case("evaluationInterval 1 (whole seconds)", {"spec.alerting.evaluationInterval": 1}),
    _case("fireAfter 1", {"spec.alerting.fireAfter": 1}),
    _case("resolveAfter 100", {"spec.alerting.resolveAfter": 100}),
    _case("cooldown 0s", {"spec.guardrails.cooldown": "0s"}),
    _case("cooldown 0", {"spec.guardrails.cooldown": 0}),
    _case("maxActionsPerHour 0", {"spec.guardrails.maxActionsPerHour": 0}),
    _case("maxActionsPerHour 3600", {"spec.guardrails.maxActionsPerHour": 3600}),
    _case(
        "maxReplicas 1", {"spec.reactions[1].maxReplicas": 1, "spec.reactions[1].minReplicas": 0}
    ),
    _case("maxReplicas 1000", {"spec.reactions[1].maxReplicas": 1000}),
    _case("maxReplicas on an alert reaction", {"spec.reactions[3].maxReplicas": 5}),
    _case("minReplicas 0", {"spec.reactions[1].minReplicas": 0}),
    _case("minReplicas equal to maxReplicas", {"spec.reactions[1].minReplicas": 10}),
    _case("toRevision 1", {"spec.reactions[0].toRevision": 1}),
    _case("stepPercent 1", {"spec.reactions[2].stepPercent": 1}),
    _case("stepPercent 100", {"spec.reactions[2].stepPercent": 100}),
    _case(
        "shiftTraffic by replicas needs no route",
        {"spec.reactions[2].router": "replicas", "spec.reactions[2].route": DELETE},
    ),
    _case(
        "pause through an HTTPRoute needs no route",
        {"spec.reactions[4].router": "httproute"},
    ),
    _case("webhook http", {"spec.reactions[3].webhook": "http://alerts.local/hook"}),
    _case(
        "retrain from a ConfigMap, default key",
        {"spec.reactions[5].retrain": {"configMap": "fraud-train-job"}},
    ),
    _case(
        "retrain from a ConfigMap key",
        {"spec.reactions[5].retrain": {"configMap": "fraud-train-job", "key": "train.job.yaml"}},
    ),
    _case(
        "retrain from a WorkflowTemplate",
        {"spec.reactions[5].retrain": {"workflowTemplate": "fraud-pipeline"}},
    ),
    _case("retrain for one feature", {"spec.reactions[5].feature": "amount"}),
    _case("retrain timeout", {"spec.reactions[5].retrain.timeout": "3h30m"}),
    _case("protocol json with features", {"spec.protocol": "json"}),
    _case(
        "protocol json with capture.json only",
        {
            "spec.protocol": "json",
            "spec.features": DELETE,
            "spec.capture.json": {"requestRows": "data.items", "prediction": "scores.1"},
        },
    ),
    _case(
        "protocol auto with capture.json",
        {"spec.protocol": "auto", "spec.capture.json": {"features": {"amount": "a.b"}}},
    ),
    _case("empty lists", {"spec.features": [], "spec.pipeline": [], "spec.reactions": []}),
    _case("null fields are absent", {"spec.prediction": None, "spec.detectors.latency": None}),
    _case("null protocol takes the default", {"spec.protocol": None}),
    _case("a status", {"status": {"phase": "Observing", "alertCount": 0}}),
    *_every_enum_value(),
]

BAD = [
    # metadata
    _case("name longer than the maximum", {"metadata.name": "a" * (MAX_NAME_LENGTH + 1)}),
    _case("name starts with a digit", {"metadata.name": "1fraud"}),
    _case("name has a dot", {"metadata.name": "fraud.v2"}),
    _case("unknown top-level field", {"extra": 1}),
    # the declared bounds (maxItems, maxLength), one past the bound
    _case("features past maxItems", _more_features(MAX_FEATURES - 1)),
    _case(
        "reactions past maxItems", {"spec.reactions": [{"alert": "Errors", "action": "alert"}] * 51}
    ),
    _case(
        "pipeline past maxItems",
        {"spec.pipeline": [{"name": f"c{i}", "kind": "Job"} for i in range(101)]},
    ),
    _case("deployment name past maxLength", {"spec.target.deployment": "d" * (MAX_NAME + 1)}),
    _case("deployment with another kind", {"spec.target.kind": "StatefulSet"}),
    _case("dimensions of a numeric feature", {"spec.features[0].dimensions": 384}),
    _case(
        "a port for an InferenceService",
        {"spec.target": {"kind": "InferenceService", "name": "m", "port": 8080}},
    ),
    _case(
        "webhook past maxLength", {"spec.reactions[3].webhook": "https://" + "w" * (MAX_URL - 7)}
    ),
    _case(
        "capture.json.features past maxProperties",
        {
            "spec.protocol": "json",
            "spec.capture.json": {"features": {f"f{i}": "a" for i in range(MAX_FEATURES + 1)}},
        },
    ),
    _case("produces item past maxLength", {"spec.pipeline[0].produces[0]": "p" * (MAX_TEXT + 1)}),
    # spec and target
    _case("spec missing", {"spec": DELETE}),
    _case("spec not an object", {"spec": "fraud"}),
    _case("target missing", {"spec.target": DELETE}),
    _case("target.deployment missing", {"spec.target.deployment": DELETE}),
    _case("target.deployment not a name", {"spec.target.deployment": "Fraud_Model"}),
    _case("target.service not a name", {"spec.target.service": "fraud model"}),
    _case("target.service has a dot", {"spec.target.service": "fraud.model"}),
    _case("target.service longer than 63", {"spec.target.service": "s" * 64}),
    _case(
        "target.service defaults to a dotted deployment name",
        {"spec.target.service": DELETE, "spec.target.deployment": "fraud.model"},
    ),
    _case("target.port 0", {"spec.target.port": 0}),
    _case("target.port 65536", {"spec.target.port": 65536}),
    _case("target.port a string", {"spec.target.port": "8080"}),
    _case("target.port fractional", {"spec.target.port": 80.5}),
    _case("target unknown field", {"spec.target.image": "model:1"}),
    _case("spec unknown field (typo)", {"spec.protocl": "v2"}),
    _case("protocol not an enum", {"spec.protocol": "grpc"}),
    _case("protocol not a string", {"spec.protocol": 2}),
    # features, prediction
    _case("features not a list", {"spec.features": {"amount": "numeric"}}),
    _case("feature type not an enum", {"spec.features[0].type": "text"}),
    _case("feature type missing", {"spec.features[0].type": DELETE}),
    _case("feature name missing", {"spec.features[0].name": DELETE}),
    _case(
        "duplicate feature names",
        {"spec.features[2]": {"name": "amount", "type": "categorical"}},
    ),
    _case("feature unknown field", {"spec.features[0].dtype": "float"}),
    _case("feature item null", {"spec.features[1]": None}),
    _case("prediction name missing", {"spec.prediction": {"type": "numeric"}}),
    _case("prediction type not an enum", {"spec.prediction.type": "text"}),
    # capture
    _case("sampleRate 0 (open lower end)", {"spec.capture.sampleRate": 0}),
    _case("sampleRate negative", {"spec.capture.sampleRate": -0.5}),
    _case("sampleRate above 1", {"spec.capture.sampleRate": 1.5}),
    _case("sampleRate a string", {"spec.capture.sampleRate": "0.5"}),
    _case("maxBodyBytes below 1024", {"spec.capture.maxBodyBytes": 1023}),
    _case("maxBodyBytes above 64 MiB", {"spec.capture.maxBodyBytes": (64 << 20) + 1}),
    _case("capture unknown field", {"spec.capture.sample_rate": 0.5}),
    _case("capture.json with protocol v2", {"spec.capture.json": {"requestRows": "data"}}),
    _case(
        "capture.json.features value empty",
        {"spec.protocol": "json", "spec.capture.json": {"features": {"amount": ""}}},
    ),
    _case("capture.json unknown field", {"spec.protocol": "json", "spec.capture.json": {"x": "y"}}),
    _case(
        "protocol json with neither capture.json nor features",
        {"spec.protocol": "json", "spec.features": DELETE},
    ),
    # reference
    _case("reference.size 49", {"spec.reference.size": 49}),
    _case("reference.size above 10000000", {"spec.reference.size": 10_000_001}),
    _case("reference.source not an enum", {"spec.reference.source": "s3"}),
    _case("source configMap without configMap", {"spec.reference.source": "configMap"}),
    _case(
        "configMap without source configMap",
        {"spec.reference.configMap": {"name": "ref", "key": "r.csv"}},
    ),
    _case(
        "configMap.key missing",
        {"spec.reference": {"source": "configMap", "configMap": {"name": "ref"}}},
    ),
    _case(
        "configMap.name not a name",
        {"spec.reference": {"source": "configMap", "configMap": {"name": "Ref_1", "key": "k"}}},
    ),
    _case("source url without url", {"spec.reference.source": "url"}),
    _case("url not http", {"spec.reference": {"source": "url", "url": "s3://bucket/r.csv"}}),
    _case("url with source warmup", {"spec.reference.url": "https://x/r.csv"}),
    _case(
        "url with source configMap",
        {
            "spec.reference": {
                "source": "configMap",
                "configMap": {"name": "ref", "key": "k"},
                "url": "https://x/r.csv",
            }
        },
    ),
    _case("source file without path", {"spec.reference.source": "file"}),
    _case("path with source warmup", {"spec.reference.path": "/data/r.csv"}),
    # window
    _case("window with both size and duration", {"spec.window": {"size": 100, "duration": "5m"}}),
    _case("window.size 49", {"spec.window.size": 49}),
    _case("window.size above 10000000", {"spec.window.size": 10_000_001}),
    _case("window.size a string", {"spec.window.size": "1000"}),
    _case("window.duration in words", {"spec.window": {"duration": "5 minutes"}}),
    _case("window.duration without a unit", {"spec.window": {"duration": "5"}}),
    _case("window.duration unknown unit", {"spec.window": {"duration": "5w"}}),
    _case("window.duration negative", {"spec.window": {"duration": "-5m"}}),
    _case("window.duration 0s", {"spec.window": {"duration": "0s"}}),
    _case("window.duration 0m0.0s", {"spec.window": {"duration": "0m0.0s"}}),
    _case("window.duration 0", {"spec.window": {"duration": 0}}),
    _case("window.duration negative seconds", {"spec.window": {"duration": -5}}),
    _case("window.duration a boolean", {"spec.window": {"duration": True}}),
    # detectors
    _case("pValue 0 (open lower end)", {"spec.detectors.drift.pValue": 0}),
    _case("pValue 1 (open upper end)", {"spec.detectors.drift.pValue": 1}),
    _case("pValue negative", {"spec.detectors.drift.pValue": -0.1}),
    _case("pValue above 1", {"spec.detectors.drift.pValue": 1.5}),
    _case("pValue a plain string", {"spec.detectors.drift.pValue": "0.01"}),
    _case("predictionDrift pValue 1", {"spec.detectors.predictionDrift.pValue": 1}),
    _case("drift test not an enum", {"spec.detectors.drift.test": "chi2"}),
    _case("drift correction not an enum", {"spec.detectors.drift.correction": "holm"}),
    _case("drift minEffect negative", {"spec.detectors.drift.minEffect": -0.1}),
    _case("drift enabled a string", {"spec.detectors.drift.enabled": "yes"}),
    _case("drift unknown field (typo)", {"spec.detectors.drift.pvalue": 0.05}),
    _case("maxMissingRate negative", {"spec.detectors.quality.maxMissingRate": -0.01}),
    _case("maxMissingRate above 1", {"spec.detectors.quality.maxMissingRate": 1.01}),
    _case("quality.outOfRange a number", {"spec.detectors.quality.outOfRange": 1}),
    _case("latency.p99Ms 0 (open lower end)", {"spec.detectors.latency.p99Ms": 0}),
    _case("latency.p99Ms negative", {"spec.detectors.latency.p99Ms": -1}),
    _case("latency.p99Ms missing", {"spec.detectors.latency": {}}),
    _case("errors.maxRate negative", {"spec.detectors.errors.maxRate": -0.1}),
    _case("errors.maxRate above 1", {"spec.detectors.errors.maxRate": 1.5}),
    _case("errors.maxRate missing", {"spec.detectors.errors": {}}),
    _case("performance.estimate not an enum", {"spec.detectors.performance.estimate": "dle"}),
    _case("performance.metric not an enum", {"spec.detectors.performance.metric": "mae"}),
    _case("performance.maxDrop 0 (open lower end)", {"spec.detectors.performance.maxDrop": 0}),
    _case("performance.maxDrop above 1", {"spec.detectors.performance.maxDrop": 1.01}),
    _case("detectors unknown field", {"spec.detectors.drfit": {}}),
    # alerting
    _case("evaluationInterval 0s", {"spec.alerting.evaluationInterval": "0s"}),
    _case("evaluationInterval 0", {"spec.alerting.evaluationInterval": 0}),
    _case("evaluationInterval without a unit", {"spec.alerting.evaluationInterval": "30"}),
    _case("fireAfter 0", {"spec.alerting.fireAfter": 0}),
    _case("fireAfter 101", {"spec.alerting.fireAfter": 101}),
    _case("fireAfter fractional", {"spec.alerting.fireAfter": 2.5}),
    _case("resolveAfter 0", {"spec.alerting.resolveAfter": 0}),
    _case("resolveAfter 101", {"spec.alerting.resolveAfter": 101}),
    # pipeline
    _case("pipeline kind not an enum", {"spec.pipeline[0].kind": "Pod"}),
    _case("pipeline kind missing", {"spec.pipeline[0].kind": DELETE}),
    _case("pipeline name not a name", {"spec.pipeline[0].name": "ETL_job"}),
    _case("pipeline name missing", {"spec.pipeline[1].name": DELETE}),
    _case(
        "duplicate pipeline names",
        {"spec.pipeline[2]": {"name": "feature-etl", "kind": "Job"}},
    ),
    _case("pipeline produces an empty name", {"spec.pipeline[0].produces": [""]}),
    _case("pipeline produces not a list", {"spec.pipeline[0].produces": "amount"}),
    _case("pipeline dependsOn a number", {"spec.pipeline[1].dependsOn": [3]}),
    _case("pipeline not a list", {"spec.pipeline": {"name": "etl", "kind": "Job"}}),
    # reactions
    _case("reaction with `on:`", {"spec.reactions[0]": {"on": "Latency", "action": "alert"}}),
    _case("reaction alert not an enum", {"spec.reactions[0].alert": "Drift"}),
    _case("reaction alert missing", {"spec.reactions[0].alert": DELETE}),
    _case("reaction action not an enum", {"spec.reactions[0].action": "restart"}),
    _case("reaction action missing", {"spec.reactions[0].action": DELETE}),
    _case("scale without maxReplicas", {"spec.reactions[1].maxReplicas": DELETE}),
    _case("shiftTraffic without router", {"spec.reactions[2].router": DELETE}),
    _case("shiftTraffic without stable", {"spec.reactions[2].stable": DELETE}),
    _case("shiftTraffic without canary", {"spec.reactions[2].canary": DELETE}),
    _case("shiftTraffic by httproute without route", {"spec.reactions[2].route": DELETE}),
    _case(
        "shiftTraffic by virtualservice without route",
        {"spec.reactions[2].router": "virtualservice", "spec.reactions[2].route": DELETE},
    ),
    _case("pause without canary", {"spec.reactions[4].canary": DELETE}),
    _case("minReplicas above maxReplicas", {"spec.reactions[1].minReplicas": 11}),
    _case("minReplicas negative", {"spec.reactions[1].minReplicas": -1}),
    _case("minReplicas 1001", {"spec.reactions[1].minReplicas": 1001}),
    _case("toRevision 0", {"spec.reactions[0].toRevision": 0}),
    _case("toRevision a string", {"spec.reactions[0].toRevision": "6"}),
    _case("stepPercent 0", {"spec.reactions[2].stepPercent": 0}),
    _case("stepPercent 101", {"spec.reactions[2].stepPercent": 101}),
    _case("router not an enum", {"spec.reactions[2].router": "nginx"}),
    _case("maxReplicas 0", {"spec.reactions[1].maxReplicas": 0}),
    _case("maxReplicas 1001", {"spec.reactions[1].maxReplicas": 1001}),
    _case("webhook not http", {"spec.reactions[3].webhook": "ftp://hooks.example.com"}),
    _case("webhook and webhookSecret", {"spec.reactions[3].webhookSecret": {"name": "hooks"}}),
    _case("severity not an enum", {"spec.reactions[3].severity": "page"}),
    _case("webhookFormat not an enum", {"spec.reactions[3].webhookFormat": "teams"}),
    _case("retrain without its source", {"spec.reactions[5].retrain": DELETE}),
    _case("retrain with an empty source", {"spec.reactions[5].retrain": {}}),
    _case(
        "retrain with two sources",
        {"spec.reactions[5].retrain": {"cronJob": "a", "workflowTemplate": "b"}},
    ),
    _case("retrain key without configMap", {"spec.reactions[5].retrain.key": "job.yaml"}),
    _case("retrain on a rollback", {"spec.reactions[0].retrain": {"cronJob": "fraud-train"}}),
    _case("retrain cronJob not a name", {"spec.reactions[5].retrain.cronJob": "Fraud_Train"}),
    _case(
        "retrain key not a key",
        {"spec.reactions[5].retrain": {"configMap": "c", "key": "job yaml"}},
    ),
    _case("retrain unknown field", {"spec.reactions[5].retrain.cronjob": "x"}),
    _case("retrain timeout 0s", {"spec.reactions[5].retrain.timeout": "0s"}),
    _case("reactions not a list", {"spec.reactions": {"alert": "Latency", "action": "alert"}}),
    # guardrails
    _case("cooldown negative", {"spec.guardrails.cooldown": "-5m"}),
    _case("cooldown negative seconds", {"spec.guardrails.cooldown": -1}),
    _case("cooldown with a space", {"spec.guardrails.cooldown": "10 m"}),
    _case("maxActionsPerHour negative", {"spec.guardrails.maxActionsPerHour": -1}),
    _case("maxActionsPerHour above 3600", {"spec.guardrails.maxActionsPerHour": 3601}),
    _case("dryRun a string", {"spec.guardrails.dryRun": "false"}),
    _case("requireApproval a number", {"spec.guardrails.requireApproval": 1}),
    _case("guardrails unknown field", {"spec.guardrails.dry_run": True}),
]

# spec.py rejects, the CRD accepts: what OpenAPI and CEL cannot (or should not) check.
_CROSS_LIST = (
    "a reference from one list into another needs CEL to iterate both lists, at a cost of "
    "the product of their maxItems; it is left to the operator's spec.py check"
)
GAP_SPEC_ONLY = [
    pytest.param(
        variant({"spec.pipeline[1].dependsOn": ["no-such-component"]}),
        _CROSS_LIST,
        id="dependsOn names no component",
    ),
    pytest.param(
        variant({"spec.pipeline[0].produces": ["undeclared"]}),
        _CROSS_LIST,
        id="produces names an undeclared feature",
    ),
    pytest.param(
        variant({"spec.reactions[2].feature": "undeclared"}),
        _CROSS_LIST,
        id="reaction feature is not a feature",
    ),
    pytest.param(
        variant({"spec.protocol": "json", "spec.capture.json": {"features": {"nope": "a.b"}}}),
        _CROSS_LIST,
        id="capture.json.features key is not a feature",
    ),
    pytest.param(
        variant({"spec.window": {"duration": "9" * 400 + "h"}}),
        "a pattern cannot bound a number's magnitude; spec.py refuses a duration that "
        "overflows to infinity",
        id="duration that overflows a float",
    ),
]

# The CRD rejects, spec.py accepts: the CRD is deliberately (or unavoidably) stricter.
GAP_CRD_ONLY = [
    pytest.param(
        variant({"spec.guardrails.cooldown": 1.5}),
        "an int-or-string cannot hold a fraction: write 1500ms; spec.py reads 1.5 as seconds",
        id="fractional seconds as a bare number",
    ),
    pytest.param(
        variant({"spec.window": {"duration": " 5m "}}),
        "spec.py strips blanks around a duration before matching; the pattern does not",
        id="duration with surrounding blanks",
    ),
    pytest.param(
        variant({"spec.detectors.drift.pValue": "1e-3"}),
        "spec.py takes a string in exponent notation because PyYAML reads an unquoted 1e-3 "
        "as a string; kubectl reads it as a number, so only a quoted '1e-3' reaches the API "
        "server, where a number field must be a number",
        id="quoted exponent number",
    ),
]


# --------------------------------------------------------------------------- same verdict


def test_the_tables_are_large_enough() -> None:
    assert len(EXAMPLE_DOCUMENTS) >= 5
    assert len(BAD) >= 25


@pytest.mark.parametrize(("for_spec", "for_kubectl"), EXAMPLE_DOCUMENTS)
def test_every_example_is_accepted_by_both(for_spec: Any, for_kubectl: Any) -> None:
    assert spec_errors(for_spec) == []
    assert crd_errors(for_kubectl) == []


@pytest.mark.parametrize("manifest", GOOD)
def test_good_manifest_is_accepted_by_both(manifest: dict[str, Any]) -> None:
    assert spec_errors(manifest) == []
    assert crd_errors(manifest) == []


@pytest.mark.parametrize("manifest", BAD)
def test_bad_manifest_is_rejected_by_both(manifest: dict[str, Any]) -> None:
    assert spec_errors(manifest), "spec.py accepts it"
    assert crd_errors(manifest), "the CRD accepts it"


@pytest.mark.parametrize(("manifest", "reason"), GAP_SPEC_ONLY)
def test_documented_gap_spec_py_rejects_and_the_crd_accepts(
    manifest: dict[str, Any], reason: str
) -> None:
    assert reason
    assert spec_errors(manifest), "spec.py accepts it now: move the case to GOOD"
    assert crd_errors(manifest) == [], "the CRD rejects it now: move the case to BAD"


@pytest.mark.parametrize(("manifest", "reason"), GAP_CRD_ONLY)
def test_documented_gap_the_crd_rejects_and_spec_py_accepts(
    manifest: dict[str, Any], reason: str
) -> None:
    assert reason
    assert crd_errors(manifest), "the CRD accepts it now: move the case to GOOD"
    assert spec_errors(manifest) == [], "spec.py rejects it now: move the case to BAD"


def test_every_cel_rule_rejects_some_bad_manifest() -> None:
    fired = {
        rule for param in BAD for _, rule, _ in cel_violations(as_stored(param.values[0]), SCHEMA)
    }
    assert fired == set(CRD_RULES)


# Per rule, a manifest on each side of it (and on its edge), beyond BASE, GOOD and BAD.
RULE_CASES = [
    variant({"spec.reactions[1].minReplicas": 10}),  # minReplicas == maxReplicas
    variant({"spec.reactions[1].minReplicas": 11}),
    variant(
        {
            "spec.reactions[4].action": "shiftTraffic",
            "spec.reactions[4].router": "replicas",
            "spec.reactions[4].stable": "s",
        }
    ),  # replicas: no route needed
    variant({"spec.reactions[4].canary": DELETE}),
    variant({"spec.reactions[2].router": "virtualservice", "spec.reactions[2].route": DELETE}),
    variant({"spec.reactions[2].stable": DELETE, "spec.reactions[2].router": DELETE}),
    variant({"spec.reactions[1].maxReplicas": DELETE, "spec.reactions[1].minReplicas": DELETE}),
    variant({"spec.reference": {"source": "file"}}),
    variant({"spec.reference": {"source": "url", "path": "/x"}}),
    variant({"spec.reference": {"configMap": {"name": "a", "key": "b"}}}),
    variant({"spec.window": {"size": 100, "duration": "5m"}}),
    variant({"spec.protocol": "json", "spec.features": DELETE}),
    variant({"spec.protocol": "json", "spec.features": []}),
    variant({"spec.protocol": "openai", "spec.capture.json": {"prediction": "p"}}),
    variant({"spec.target": {"deployment": "a" * 64}}),
    variant({"spec.target": {"deployment": "a" * 63}}),
    variant({"spec.target": {"deployment": "a.b", "service": "a"}}),
    variant({"spec.target": {"kind": "StatefulSet", "name": "a"}}),
    variant({"spec.target": {"kind": "StatefulSet", "deployment": "a"}}),
    variant({"spec.target": {"kind": "Rollout", "name": "a.b"}}),
    variant({"spec.target": {"kind": "InferenceService", "name": "a.b"}}),
    variant({"spec.target": {"kind": "InferenceService", "name": "a", "port": 80}}),
    variant({"spec.target": {"kind": "InferenceService", "name": "a", "container": "c"}}),
    variant({"metadata.name": "a" * (MAX_NAME_LENGTH + 1)}),
    variant({"metadata.name": "a-"}),
    variant({"spec.reactions[5].retrain": {"configMap": "c", "key": "k"}}),
    variant(
        {"spec.reactions[5].retrain": {"cronJob": "a", "configMap": "b", "workflowTemplate": "c"}}
    ),
    variant({"spec.reactions[5].action": "alert", "spec.reactions[5].retrain": DELETE}),
]


def _all_manifests() -> list[Any]:
    out = [p.values[1] for p in EXAMPLE_DOCUMENTS]
    out += [p.values[0] for p in GOOD + BAD + GAP_SPEC_ONLY + GAP_CRD_ONLY]
    return out + RULE_CASES


def _required_reads(rule: str, where: str) -> list[str]:
    """Required fields of the rule's object that the rule reads."""
    node = SCHEMA
    for name, index in _STEP.findall(where):
        if name and name != "(root)":
            node = node["properties"][name]
        elif index:
            node = node["items"]
    return [f for f in re.findall(r"self\.(\w+)", rule) if f in node.get("required", [])]


@pytest.mark.parametrize("rule", sorted(set(CRD_RULES)))
def test_cel_and_python_agree(rule: str) -> None:
    """cel-python and the rule's declared Python check: the same verdict on every manifest."""
    missing = [x for x in K8S_EXTENSIONS if x in rule]
    if missing:
        pytest.skip(f"cel-python lacks the Kubernetes CEL extension(s) {missing}: not evaluated")
    verdicts = []
    for manifest in _all_manifests():
        for where, r, _, obj in rule_nodes(as_stored(manifest), SCHEMA):
            if r == rule and isinstance(obj, dict):
                if any(f not in obj for f in _required_reads(rule, where)):
                    continue  # the schema reports the missing field; CEL would fail on it
                cel, python = cel_verdict(rule, obj), python_verdict(rule, obj)
                assert cel == python, f"{where}: CEL says {cel}, Python {python} on {obj}"
                verdicts.append(cel)
    assert True in verdicts and False in verdicts, "the manifests must test both sides"


def test_the_base_manifest_exercises_every_spec_section() -> None:
    assert set(BASE["spec"]) == set(SCHEMA["properties"]["spec"]["properties"])


# --------------------------------------------------------------------------- durations


@given(st.text(alphabet="0123456789.msh", max_size=8))
def test_duration_patterns_agree_with_spec_py(text: str) -> None:
    try:
        seconds: float | None = parse_duration(text)
    except ValueError:
        seconds = None
    assert bool(go_regex(DURATION_PATTERN).search(text)) == (seconds is not None)
    positive = seconds is not None and seconds > 0
    assert bool(go_regex(POSITIVE_DURATION_PATTERN).search(text)) == positive


def test_duration_pattern_is_spec_py_grammar() -> None:
    assert f"^{spec_module._DURATION.pattern}$" == DURATION_PATTERN


# --------------------------------------------------------------------------- defaults


def _parsed(manifest: dict[str, Any]) -> ObservedModel:
    return parse_observed_model(manifest)


def test_minimal_manifest_means_the_same_with_the_crd_defaults() -> None:
    minimal = yaml.safe_load((EXAMPLES / "observedmodel-minimal.yaml").read_text("utf-8"))
    stored = as_stored(minimal)
    assert stored != minimal  # the defaults did something
    assert _parsed(stored) == _parsed(minimal)
    s = stored["spec"]
    assert s["protocol"] == "auto"
    assert s["capture"] == {"sampleRate": 1.0, "maxBodyBytes": 1 << 20}
    assert s["reference"] == {"source": "warmup", "size": 1000}
    assert s["detectors"]["drift"] == {
        "enabled": True,
        "test": "auto",
        "pValue": 0.01,
        "correction": "bonferroni",
    }
    assert s["alerting"] == {"evaluationInterval": "30s", "fireAfter": 3, "resolveAfter": 3,
                             "falseAlarmsPer": 1_000_000, "lookEvery": 50,
                             "lookInterval": "1s"}  # fmt: skip
    assert s["guardrails"]["cooldown"] == "10m"
    # No default where spec.py's depends on other fields or on presence.
    assert "window" not in s
    assert "service" not in s["target"]
    assert not {"latency", "errors", "performance"} & s["detectors"].keys()


@pytest.mark.parametrize(
    "manifest", [p.values[0] for p in EXAMPLE_DOCUMENTS] + [p.values[0] for p in GOOD]
)
def test_defaults_agree_for_every_good_manifest(manifest: dict[str, Any]) -> None:
    assert _parsed(as_stored(manifest)) == _parsed(manifest)


# --------------------------------------------------------------------------- status


STATUS_SCHEMA: dict[str, Any] = SCHEMA["properties"]["status"]


def _diagnosis() -> Diagnosis:
    return Diagnosis(
        suspects=(
            Suspect(
                kind="CronJob",
                name="feature-etl",
                score=0.8234,
                evidence=("produces amount", "last run failed 4m before onset"),
                changed_at="2024-05-01T11:56:00Z",
            ),
            Suspect(
                kind="Deployment",
                name="fraud-model",
                score=0.1,
                evidence=("rolled out",),
                revision="7",
                changed_at="2024-05-01T10:00:00Z",
            ),
        ),
        summary="top suspect CronJob/feature-etl",
        onset="2024-05-01T12:00:00Z",
        updated="2024-05-01T12:01:00Z",
    )


def _status() -> dict[str, Any]:
    alert = Alert(
        type="FeatureDrift",
        test="ks",
        statistic=0.31,
        threshold=0.01,
        since="2024-05-01T12:00:00.000Z",
        reference="warmup@2024-05-01T11:00:00.000Z",
        feature="amount",
        p_value=1.2e-9,
        model_revision="7",
        message="amount moved",
    )
    broken = Alert(
        type="Latency",
        test="p99",
        statistic=math.inf,
        threshold=250.0,
        since="2024-05-01T12:00:00.000Z",
        reference="warmup",
        p_value=math.nan,
    )
    written = status_patch(
        [alert.to_dict(), broken.to_dict()], {"id": None, "since": None}, 1714564800.0
    )["status"]
    return {
        **written,
        "phase": "Degraded",
        "observedGeneration": 3,
        "message": "1 alert",
        "alertCount": 2,
        "topSuspect": "CronJob/feature-etl",
        "lastAction": "rollback fraud-model 7 -> 6",
        "conditions": [
            {"type": "Ready", "status": "True"},
            {
                "type": "Drifting",
                "status": "True",
                "reason": "FeatureDrift",
                "message": "amount",
                "lastTransitionTime": "2024-05-01T12:00:00Z",
                "observedGeneration": 3,
            },
        ],
        "diagnosis": {
            "suspects": [
                {
                    "kind": "CronJob",
                    "name": "feature-etl",
                    "namespace": "ml",
                    "score": 0.82,
                    "evidence": ["produces amount", "last run failed 4m before onset"],
                    "revision": "12",
                }
            ],
            "updated": "2024-05-01T12:01:00Z",
        },
        "reactions": [
            # What the operator writes: ActionRecord.to_status(), with its merge patches.
            ActionRecord(
                id="rollback-0123456789",
                action="rollback",
                target="Deployment/fraud-model",
                from_state="7",
                to_state="6",
                reason="PredictionDrift since 2024-05-01T12:00:00Z",
                result="Running",
                at="2024-05-01T12:02:00Z",
                message="recorded; taking it now",
                patch={
                    "Deployment/fraud-model": {
                        "metadata": {"resourceVersion": "41"},
                        "spec": {"template": {"metadata": {"annotations": {"a": None}}}},
                    }
                },
            ).to_status(),
            {
                "id": "r-1",
                "action": "rollback",
                "target": "Deployment/fraud-model",
                "from": "7",
                "to": "6",
                "at": "2024-05-01T12:02:00Z",
                "result": "Succeeded",
                "reason": "PredictionDrift",
                "dryRun": False,
            },
            {"id": "r-2", "action": "scale", "from": 2, "to": 4, "dryRun": True},
        ],
        "injection": {
            "state": "Injected",
            "mode": "patch",
            "message": "sidecar injected",
            "deployment": "fraud-model",
            "service": "fraud-model",
            "updated": "2024-05-01T11:00:00Z",
        },
        "kopf": {"progress": {"reconcile": {"started": "...", "retries": 0}}},
    }


def _alert(**changes: Any) -> dict[str, Any]:
    alert = {
        "type": "Latency",
        "test": "p99",
        "statistic": 1.0,
        "threshold": 1.0,
        "since": "2024-05-01T12:00:00Z",
        "reference": "warmup",
    }
    return {**alert, **changes}


def _status_errors(status: dict[str, Any]) -> list[str]:
    return [e.message for e in _validator(STATUS_SCHEMA).iter_errors(status)]


def test_the_status_the_detector_and_operator_write_is_valid() -> None:
    status = _status()
    assert status["alerts"][1]["statistic"] is None  # a non-finite figure is null
    assert _status_errors(status) == []


def test_what_diagnosis_and_reactions_write_is_valid() -> None:
    """`Diagnosis.to_status()` and `ActionRecord.to_status()` as the operator writes them."""
    status = _status()
    diagnosis = _diagnosis().to_status()
    assert diagnosis["suspects"][0]["changedAt"] and diagnosis["onset"]
    assert _status_errors({**status, "diagnosis": diagnosis}) == []
    with_alerts = {**diagnosis, "forAlerts": ["FeatureDrift/amount", "Latency"]}
    assert _status_errors({**status, "diagnosis": with_alerts}) == []
    # No alert: no onset (null), no suspect.
    empty = Diagnosis(
        suspects=(), summary="no active alerts", onset=None, updated="2024-05-01T12:01:00Z"
    )
    assert _status_errors({**status, "diagnosis": empty.to_status()}) == []
    for result in ("Planned", "Running", "Succeeded", "Failed", "Skipped"):
        record = ActionRecord.from_status({**status["reactions"][0], "result": result})
        assert _status_errors({**status, "reactions": [record.to_status()]}) == []
    held = {"Deployment/fraud-model": {"/spec/template/spec/containers": "0123456789ab"}}
    succeeded = ActionRecord.from_status({**status["reactions"][0], "result": "Succeeded"})
    entry = replace(succeeded, held=held).to_status()
    assert "patch" not in entry and entry["held"] == held
    assert _status_errors({**status, "reactions": [entry]}) == []
    # retrain: the run it started, kept through a restart (read back as written)
    running = ActionRecord.from_status({**status["reactions"][0], "result": "Running"})
    started = replace(running, run="Job/fraud-train-retrain-0123456789").to_status()
    assert ActionRecord.from_status(started).run == "Job/fraud-train-retrain-0123456789"
    assert _status_errors({**status, "reactions": [started]}) == []


def _arrays(node: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    if node.get("type") == "array":
        yield path, node
        yield from _arrays(node["items"], path + "[]")
    for key, sub in (node.get("properties") or {}).items():
        yield from _arrays(sub, f"{path}.{key}")


def test_every_status_list_is_bounded() -> None:
    """maxItems on each list, so the object and kopf's annotation stay far below their limits."""
    bounds = {p: n.get("maxItems") for p, n in _arrays(STATUS_SCHEMA, "status")}
    assert not [p for p, bound in bounds.items() if bound is None], bounds
    assert {
        "status.conditions": MAX_STATUS_CONDITIONS,
        "status.alerts": MAX_STATUS_ALERTS,
        "status.diagnosis.suspects": MAX_STATUS_SUSPECTS,
        "status.diagnosis.suspects[].evidence": MAX_STATUS_EVIDENCE,
        "status.diagnosis.forAlerts": MAX_STATUS_ALERTS,
        "status.reactions": MAX_STATUS_REACTIONS,
    }.items() <= bounds.items()
    too_many = [_alert(test=f"t{i}") for i in range(MAX_STATUS_ALERTS + 1)]
    assert _status_errors({**_status(), "alerts": too_many})


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("phase", "Running"),
        ("conditions", [{"type": "Ready", "status": "Yes"}]),
        ("conditions", [{"type": "Ready", "status": "True"}, {"type": "Ready", "status": "False"}]),
        ("conditions", [{"status": "True"}]),
        ("alerts", [_alert(type="Drift")]),
        ("alerts", [_alert(statistic="NaN")]),  # the shape before non-finite became null
        ("alerts", [_alert(since="noon")]),
        ("alerts", [_alert(reference=None)]),
        ("alertCount", -1),
        ("reactions", [{"id": "r", "action": "restart"}]),
        ("reactions", [{"id": "r", "action": "scale", "from": 1.5}]),
        ("reactions", [{"id": "r", "action": "scale", "result": "Done"}]),
        ("reactions", [{"id": "r", "action": "scale", "patch": ["not", "an", "object"]}]),
        ("reactions", [{"id": "r", "action": "scale", "held": {"Deployment/m": {"/a": 1}}}]),
        ("diagnosis", {"forAlerts": "Latency"}),
        ("diagnosis", {"onset": "noon"}),
        ("diagnosis", {"suspects": [{"kind": "Job", "name": "etl", "changedAt": "yesterday"}]}),
        ("detector", {"updated": "2024-05-01T12:00:00Z", "extra": 1}),
        ("topSuspect", {"kind": "Job"}),
        ("unknown", "pruned"),
    ],
)
def test_a_malformed_status_is_rejected(field: str, value: Any) -> None:
    assert _status_errors({**_status(), field: value})


@pytest.mark.parametrize(
    ("changes", "accepted"),
    [
        # Namespaces are DNS-1123 labels: they may start with a digit.
        ({"metadata.namespace": "1ml"}, True),
        # Whole-text matches on both sides: no trailing newline sneaks through.
        ({"metadata.name": "fraud\n"}, False),
        # ASCII digits only, as Go's RE2 reads [0-9].
        ({"spec.window": {"duration": "\u0665m"}}, False),
    ],
    ids=["namespace starting with a digit", "name with a trailing newline", "non-ASCII digit"],
)
def test_former_gaps_now_agree(changes: dict[str, Any], accepted: bool) -> None:
    manifest = variant(changes)
    assert (not spec_errors(manifest)) is accepted, spec_errors(manifest)
    assert (not crd_errors(manifest)) is accepted, crd_errors(manifest)
