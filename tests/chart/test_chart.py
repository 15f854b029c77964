"""The Helm chart (charts/mlwarden), rendered and linted by the real Helm engine.

helm-python-sdk binds Helm's own Go SDK (Helm v4), so `Chart.render` and `lint` are what
`helm template` and `helm lint --strict` do, values.schema.json included. Every rendered object is
validated against the Kubernetes 1.30 OpenAPI schemas (`kubernetes-validate`, strict: unknown
fields are errors). The Prometheus Operator kinds (ServiceMonitor, PodMonitor, PrometheusRule) are
not in those schemas: they are checked against the hand-written schemas below, which cover the
fields the chart renders with prometheus-operator's names, types and required keys (unknown
fields are errors there too). kopf's peering objects are checked against the CRDs the chart ships.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import re
import shutil
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import jsonschema
import kmock
import kubernetes_validate
import pytest
import yaml
from prometheus_client import CollectorRegistry

from mlwarden.cli import build_parser
from mlwarden.demo.cluster import ApiServerEmulator
from mlwarden.detector.service import DetectorMetrics
from mlwarden.kube import KINDS
from mlwarden.names import ADMIN_PORT_NAME, DETECTOR_PORT_NAME, selector_labels
from mlwarden.operator.metrics import OperatorMetrics
from mlwarden.operator.settings import ISTIO_PORTS, OperatorSettings
from mlwarden.operator.webhook import INJECT_LABEL, WEBHOOK_ID, server_from_env
from mlwarden.sidecar.metrics import SidecarMetrics

helm = pytest.importorskip(
    "helm_python", reason="helm-python-sdk (the Helm engine as a wheel) is not installed"
)

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "mlwarden"
K8S_VERSION = "1.30"
RELEASE, NAMESPACE = "mlwarden", "mlwarden-system"

EVERYTHING_ON: dict[str, Any] = {
    "serviceMonitor": {"enabled": True},
    "podMonitor": {"enabled": True},
    "prometheusRule": {"enabled": True},
    "grafanaDashboard": {"enabled": True},
    "crd": {"create": True},
}
CASES: dict[str, dict[str, Any]] = {
    "defaults": {},
    "everything-on": EVERYTHING_ON,
    "watch-namespaces": {"watchNamespaces": ["a", "b"]},
    "replicas-2": {"replicas": 2},
    "crd-create": {"crd": {"create": True}},
    "webhook-namespaced": {"injection": "webhook", "watchNamespaces": ["a"]},
    "webhook-cert-manager": {
        "injection": "webhook",
        "webhook": {"certificate": {"source": "cert-manager"}},
    },
    "everything-on-namespaced-peering": {
        **EVERYTHING_ON,
        "watchNamespaces": ["a", "b"],
        "replicas": 3,
    },
}

# --------------------------------------------------------------------------- RBAC, expected
# What the operator does with the API, from src/mlwarden/kube.py (KINDS: the kinds it
# reads, creates, merge-patches and deletes) and handlers.py (kopf watches and patches
# ObservedModels and their status, posts Events; the detector objects are created and patched;
# the target Deployment and Service are read and patched). Exact: the chart grants this and no
# more, so a new API call needs a new line here and in templates/_helpers.tpl.
ENSURE = {"get", "create", "patch"}  # the detector's objects: read, created, patched back
READ = {"get", "list", "watch"}  # what view users get (below)
WATCHED = {"list", "watch"}  # what the operator caches (operator/cache.py)
OPERATOR_API_USE: dict[tuple[str, str], set[str]] = {
    # kopf lists, watches and patches (finalizer, annotations); the operator gets one
    ("mlwarden.io", "observedmodels"): {"get", "list", "watch", "patch"},
    ("mlwarden.io", "observedmodels/status"): {"get", "patch"},
    # Not a call: OwnerReferencesPermissionEnforcement (OpenShift) admits the owner references
    # with blockOwnerDeletion that the operator sets only from a client with this grant.
    ("mlwarden.io", "observedmodels/finalizers"): {"update"},
    # Fleet incidents (operator/incidents.py): kopf watches them (expiry), the pass reads,
    # creates and patches one, and deletes one resolved for a day.
    ("mlwarden.io", "incidents"): ENSURE | WATCHED | {"delete"},
    ("", "configmaps"): ENSURE | WATCHED,  # watched for diagnosis too
    ("", "serviceaccounts"): ENSURE,
    ("", "services"): ENSURE | WATCHED,  # watched for the injection check
    ("apps", "deployments"): ENSURE | WATCHED,
    ("rbac.authorization.k8s.io", "roles"): ENSURE,
    ("rbac.authorization.k8s.io", "rolebindings"): ENSURE,
    # the ingest token Secret, created once and never read; the detector's NetworkPolicy
    ("", "secrets"): {"create"},
    ("networking.k8s.io", "networkpolicies"): ENSURE,
    ("", "events"): {"create"},
    # diagnosis: watch-backed caches (kopf indexes: a paged list, then a watch)
    ("apps", "replicasets"): WATCHED,
    # targets of other kinds: injected and reacted on through their own fields
    ("apps", "statefulsets"): WATCHED | {"get", "patch"},
    ("argoproj.io", "rollouts"): WATCHED | {"get", "patch"},
    ("argoproj.io", "rollouts/status"): {"patch"},  # kubectl argo rollouts abort's patch
    ("serving.kserve.io", "inferenceservices"): WATCHED | {"get", "patch"},
    ("apps", "daemonsets"): WATCHED,
    # retrain also starts Jobs (from a CronJob or a ConfigMap's manifest) and reads them back
    ("batch", "jobs"): WATCHED | {"get", "create"},
    ("batch", "cronjobs"): WATCHED | {"get"},
    ("", "pods"): WATCHED,
    ("apps", "controllerrevisions"): WATCHED,
    # reactions: scale (an HPA's minReplicas), shiftTraffic (route weights); rollback and
    # pause patch Deployments, granted above; get: re-read after a 409 on the patch
    ("autoscaling", "horizontalpodautoscalers"): WATCHED | {"get", "patch"},
    ("gateway.networking.k8s.io", "httproutes"): WATCHED | {"get", "patch"},
    ("networking.istio.io", "virtualservices"): WATCHED | {"get", "patch"},
    # retrain: an Argo Workflow from a WorkflowTemplate (neither watched)
    ("argoproj.io", "workflows"): {"get", "create"},
    ("argoproj.io", "workflowtemplates"): {"get"},
}
# In kube.py's KINDS but deliberately not granted (none now: Secrets are granted `create` only,
# for the ingest token; diagnosis needs no Secret, not even metadata, and cannot read one).
NOT_GRANTED: set[str] = set()
# kopf's own needs: the CRD watch (cluster-wide only: a CRD is cluster-scoped), and peering.
KOPF_CLUSTERWIDE = {("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"}}
# The injection reads the model's Namespace for Istio's labels; a namespaced Role cannot grant
# a cluster-scoped kind, and the operator then goes without (handlers._namespace_labels).
NAMESPACE_LABELS = {("", "namespaces"): {"get"}}
PEERING = {"get", "list", "watch", "patch"}
KOPF_PEERING_CLUSTER = {("kopf.dev", "clusterkopfpeerings"): PEERING}
KOPF_PEERING_NAMESPACED = {("kopf.dev", "kopfpeerings"): PEERING}
# What a detector's Role grants (observedmodels/status by resourceName): the operator must hold
# these itself to create that Role (RBAC's escalation check).
DETECTOR_ROLE = {("mlwarden.io", "observedmodels/status", v) for v in ("get", "patch")} | {
    ("", "configmaps", v) for v in ("get", "patch")
}


def triples(rules: dict[tuple[str, str], set[str]]) -> set[tuple[str, str, str]]:
    return {(g, r, v) for (g, r), verbs in rules.items() for v in verbs}


def granted(role: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {
        (g, r, v)
        for rule in role.get("rules", [])
        for g in rule.get("apiGroups", [])
        for r in rule.get("resources", [])
        for v in rule.get("verbs", [])
    }


# --------------------------------------------------------------------------- rendering


Objects = list[dict[str, Any]]


def is_hook(obj: dict[str, Any]) -> bool:
    return "helm.sh/hook" in (obj["metadata"].get("annotations") or {})


def render(values: dict[str, Any] | None = None, *, hooks: bool = False) -> tuple[Objects, str]:
    """(every object the chart renders, NOTES.txt) for `values`, as `helm install` would.

    Without `hooks`, the objects installed (what `helm template --no-hooks` prints): the hooks
    (the uninstall Job and its RBAC) exist only while `helm uninstall` runs them.
    """
    with helm.Chart.load(CHART) as chart:
        manifests = chart.render(values or {}, name=RELEASE, namespace=NAMESPACE, is_install=True)
    notes = ""
    objects: Objects = []
    for template, text in sorted(manifests.items()):
        if template.endswith("NOTES.txt"):
            notes = text
            continue
        for doc in yaml.safe_load_all(text):
            if doc is not None:
                assert isinstance(doc, dict), f"{template}: not an object: {doc!r}"
                if hooks or not is_hook(doc):
                    objects.append(doc)
    return objects, notes


def of_kind(objects: Objects, kind: str) -> Objects:
    return [o for o in objects if o["kind"] == kind]


def one(objects: Objects, kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in of_kind(objects, kind) if name is None or o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {len(found)}"
    return found[0]


def operator_container(objects: Objects) -> dict[str, Any]:
    deployment = one(objects, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def crd_files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.glob("*.yaml"))}


CHART_CRDS = [yaml.safe_load(p.read_text()) for p in sorted((CHART / "crds").glob("*.yaml"))]


# --------------------------------------------------------------------------- schemas
# Minimal schemas of the monitoring.coreos.com/v1 kinds, for the fields the chart renders; names,
# types and required keys as in prometheus-operator's CRDs (v0.7x).

DURATION = {
    "type": "string",
    "pattern": "^(0|"
    + "".join(rf"(([0-9]+){u})?" for u in ("y", "w", "d", "h", "m", "s", "ms"))
    + ")$",
}
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
RELABEL_ACTIONS = ["replace", "keep", "drop", "hashmod", "labelmap", "labeldrop", "labelkeep"]
RELABEL_ACTIONS += ["lowercase", "uppercase", "keepequal", "dropequal"]
LABEL_NAME = {"type": "string", "pattern": r"^[a-zA-Z_][a-zA-Z0-9_]*$"}
RELABEL = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "action": {"enum": RELABEL_ACTIONS},  # also CamelCase (Replace); the chart writes these
        "sourceLabels": {"type": "array", "items": LABEL_NAME},
        "separator": {"type": "string"},
        "targetLabel": {"type": "string"},
        "regex": {"type": "string"},
        "modulus": {"type": "integer", "minimum": 0},
        "replacement": {"type": "string"},
    },
}
ENDPOINT = {
    "type": "object",
    "additionalProperties": False,
    "required": ["port"],
    "properties": {
        "port": {"type": "string", "minLength": 1},
        "path": {"type": "string", "pattern": "^/"},
        "interval": DURATION,
        "scrapeTimeout": DURATION,
        "relabelings": {"type": "array", "items": RELABEL},
        "metricRelabelings": {"type": "array", "items": RELABEL},
    },
}
LABEL_SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"matchLabels": STRING_MAP, "matchExpressions": {"type": "array"}},
}
NAMESPACE_SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "any": {"type": "boolean"},
        "matchNames": {"type": "array", "items": {"type": "string"}},
    },
}
METADATA = {
    "type": "object",
    "required": ["name", "namespace"],
    "properties": {
        "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
        "namespace": {"type": "string"},
        "labels": STRING_MAP,
        "annotations": STRING_MAP,
    },
}


def _kind(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": kind},
            "metadata": METADATA,
            "spec": spec,
        },
    }


RULE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["expr"],
    "oneOf": [{"required": ["alert"]}, {"required": ["record"]}],
    "properties": {
        "alert": {"type": "string"},
        "record": {"type": "string"},
        "expr": {"type": "string", "minLength": 1},
        "for": DURATION,
        "keep_firing_for": DURATION,
        "labels": STRING_MAP,
        "annotations": STRING_MAP,
    },
}
MONITORING_SCHEMAS = {
    "ServiceMonitor": _kind(
        "ServiceMonitor",
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["selector", "endpoints"],
            "properties": {
                "selector": LABEL_SELECTOR,
                "namespaceSelector": NAMESPACE_SELECTOR,
                "endpoints": {"type": "array", "minItems": 1, "items": ENDPOINT},
                "jobLabel": {"type": "string"},
            },
        },
    ),
    "PodMonitor": _kind(
        "PodMonitor",
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["selector", "podMetricsEndpoints"],
            "properties": {
                "selector": LABEL_SELECTOR,
                "namespaceSelector": NAMESPACE_SELECTOR,
                "podMetricsEndpoints": {"type": "array", "minItems": 1, "items": ENDPOINT},
                "jobLabel": {"type": "string"},
            },
        },
    ),
    "PrometheusRule": _kind(
        "PrometheusRule",
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["groups"],
            "properties": {
                "groups": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["name", "rules"],
                        "properties": {
                            "name": {"type": "string", "minLength": 1},
                            "interval": DURATION,
                            "rules": {"type": "array", "minItems": 1, "items": RULE},
                        },
                    },
                }
            },
        },
    ),
}


# Minimal schemas of the cert-manager.io/v1 kinds the chart renders in webhook mode, for the
# fields it sets; names, types and required keys as in cert-manager's CRDs (v1.x).
ISSUER_REF = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "kind": {"enum": ["Issuer", "ClusterIssuer"]},
        "group": {"type": "string"},
    },
}
CERT_MANAGER_SCHEMAS = {
    kind: {
        "type": "object",
        "additionalProperties": False,
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "cert-manager.io/v1"},
            "kind": {"const": kind},
            "metadata": {**METADATA, "required": ["name", "namespace"]},
            "spec": spec,
        },
    }
    for kind, spec in {
        "Certificate": {
            "type": "object",
            "additionalProperties": False,
            "required": ["secretName", "issuerRef"],
            "properties": {
                "secretName": {"type": "string", "minLength": 1},
                "dnsNames": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                "issuerRef": ISSUER_REF,
            },
        },
        "Issuer": {
            "type": "object",
            "additionalProperties": False,
            "required": ["selfSigned"],
            "properties": {"selfSigned": {"type": "object", "additionalProperties": False}},
        },
    }.items()
}


def validate_custom_resource(obj: dict[str, Any]) -> None:
    """A kopf.dev object against the CRD the chart ships for it (group, kind, scope, schema)."""
    group, version = obj["apiVersion"].split("/")
    (crd,) = [
        c
        for c in CHART_CRDS
        if c["spec"]["group"] == group and c["spec"]["names"]["kind"] == obj["kind"]
    ]
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version and v["served"]]
    namespaced = crd["spec"]["scope"] == "Namespaced"
    assert ("namespace" in obj["metadata"]) == namespaced, f"{obj['kind']}: scope"
    body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}
    jsonschema.validate(body, served["schema"]["openAPIV3Schema"])


def validate(obj: dict[str, Any]) -> str:
    """Validate one object; returns what it was validated against."""
    kind, api_version = obj["kind"], obj["apiVersion"]
    where = f"{kind}/{obj['metadata'].get('name')}"
    if api_version.startswith("monitoring.coreos.com/"):
        try:
            jsonschema.validate(obj, MONITORING_SCHEMAS[kind])
        except jsonschema.ValidationError as exc:
            pytest.fail(f"{where}: {exc.message} at {list(exc.absolute_path)}")
        return "monitoring"
    if api_version.startswith("kopf.dev/"):
        validate_custom_resource(obj)
        return "crd"
    if api_version.startswith("cert-manager.io/"):
        try:
            jsonschema.validate(obj, CERT_MANAGER_SCHEMAS[kind])
        except jsonschema.ValidationError as exc:
            pytest.fail(f"{where}: {exc.message} at {list(exc.absolute_path)}")
        return "cert-manager"
    try:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"{where}: {exc.message} at {list(exc.absolute_path)}")
    return "kubernetes"


# --------------------------------------------------------------------------- lint


@pytest.mark.parametrize(
    "case",
    ["defaults", "everything-on-namespaced-peering", "webhook-namespaced", "webhook-cert-manager"],
)
def test_helm_lint_strict_finds_nothing(case: str) -> None:
    report = helm.lint(CHART, CASES[case], strict=True, kube_version=f"v{K8S_VERSION}.0")
    assert report["total_charts_linted"] == 1
    assert report["errors"] == [] and report["messages"] == [], report


def test_helm_lint_is_not_a_no_op(tmp_path: Path) -> None:
    broken = tmp_path / "mlwarden"
    shutil.copytree(CHART, broken)
    (broken / "templates" / "broken.yaml").write_text("kind: ConfigMap\n{{ .Values.nope.nope }}\n")
    report = helm.lint(broken, strict=True)
    assert report["errors"], report


# --------------------------------------------------------------------------- every object valid


@pytest.mark.parametrize("case", CASES)
def test_every_rendered_object_is_valid(case: str) -> None:
    objects, _ = render(CASES[case], hooks=True)
    assert objects
    checked = [validate(o) for o in objects]
    assert len(checked) == len(objects)
    names = [(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objects]
    assert len(names) == len(set(names)), "two objects with one kind, namespace and name"
    for o in objects:
        labels = o["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/instance") == RELEASE, o["kind"]
        assert all(len(str(v)) <= 63 for v in labels.values()), labels


def test_the_chart_crds_are_valid_crds() -> None:
    assert {c["metadata"]["name"] for c in CHART_CRDS} == {
        "observedmodels.mlwarden.io",
        "incidents.mlwarden.io",
        "kopfpeerings.kopf.dev",
        "clusterkopfpeerings.kopf.dev",
    }
    for crd in CHART_CRDS:
        kubernetes_validate.validate(crd, K8S_VERSION, strict=True)


# --------------------------------------------------------------------------- defaults


def test_defaults_render_the_operator_and_its_rbac_and_nothing_optional() -> None:
    objects, notes = render()
    kinds = sorted(o["kind"] for o in objects)
    assert kinds == [
        "ClusterRole",  # the operator's
        "ClusterRole",  # mlwarden-view
        "ClusterRole",  # mlwarden-edit
        "ClusterRoleBinding",
        "Deployment",
        "Service",
        "ServiceAccount",
    ]
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert "kubectl apply" in notes and "kind: ObservedModel" in notes


def test_the_operator_arguments_parse_with_the_real_cli() -> None:
    objects, _ = render()
    container = operator_container(objects)
    args = build_parser().parse_args(container["args"])
    assert args.command == "operator"
    assert args.all_namespaces and args.namespace == []
    assert args.standalone
    assert args.liveness == "http://0.0.0.0:8080/healthz"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"healthz": 8080, "metrics": 8081}
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "healthz"}


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container["env"]}


def test_the_operator_reads_the_settings_the_values_give() -> None:
    values = {
        "image": {"repository": "registry.example/ml/mlwarden", "tag": "1.2.3"},
        "componentImage": {"tag": "1.2.4", "pullPolicy": "Always"},
        "injection": "webhook",
        "sidecar": {
            "port": 16080,
            "adminPort": 16090,
            "resources": {
                "requests": {"cpu": "20m", "memory": "32Mi"},
                "limits": {"cpu": 1, "memory": "128Mi"},
            },
        },
        "detector": {"port": 9000},
    }
    objects, _ = render(values)
    container = operator_container(objects)
    assert container["image"] == "registry.example/ml/mlwarden:1.2.3"
    env = env_of(container)
    assert env["MLWARDEN_METRICS_PORT"] == "8081"
    settings = OperatorSettings.from_env(env)
    assert settings.image == "registry.example/ml/mlwarden:1.2.4"
    assert settings.sidecar_image == "registry.example/ml/mlwarden-sidecar:1.2.4"
    assert settings.image_pull_policy == "Always"
    assert settings.injection == "webhook"
    assert (settings.sidecar_port, settings.sidecar_admin_port, settings.detector_port) == (
        16080,
        16090,
        9000,
    )
    assert settings.sidecar_resources == {
        "requests": {"cpu": "20m", "memory": "32Mi"},
        "limits": {"cpu": "1", "memory": "128Mi"},
    }
    # the detector's defaults come from values.yaml, which match the operator's own defaults
    assert settings.detector_resources == OperatorSettings().detector_resources


def test_image_pull_secrets_reach_the_operator_and_only_when_given() -> None:
    values = {"componentImage": {"pullSecrets": [{"name": "regcred"}, {"name": "mirror.io"}]}}
    objects, _ = render(values)
    env = env_of(operator_container(objects))
    assert env["MLWARDEN_IMAGE_PULL_SECRETS"] == "regcred,mirror.io"
    assert OperatorSettings.from_env(env).image_pull_secrets == ("regcred", "mirror.io")
    objects, _ = render()
    assert "MLWARDEN_IMAGE_PULL_SECRETS" not in env_of(operator_container(objects))


def test_cpu_limits_of_detector_and_sidecar_are_optional() -> None:
    objects, _ = render()
    settings = OperatorSettings.from_env(env_of(operator_container(objects)))
    assert "cpu" not in settings.sidecar_resources["limits"]
    assert "cpu" not in settings.detector_resources["limits"]
    limited = {"limits": {"cpu": "500m", "memory": "256Mi"}}
    objects, _ = render({"sidecar": {"resources": limited}, "detector": {"resources": limited}})
    settings = OperatorSettings.from_env(env_of(operator_container(objects)))
    assert settings.sidecar_resources["limits"] == {"cpu": "500m", "memory": "256Mi"}
    assert settings.detector_resources["limits"] == {"cpu": "500m", "memory": "256Mi"}


def test_no_fixed_uid_so_openshift_can_assign_one() -> None:
    objects, _ = render()
    (deployment,) = of_kind(objects, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    for context in (pod["securityContext"], operator_container(objects)["securityContext"]):
        assert context["runAsNonRoot"] is True
        assert not {"runAsUser", "runAsGroup", "fsGroup"} & set(context), context
    # The image's user is numeric, so the kubelet can check runAsNonRoot without a runAsUser.
    dockerfile = (CHART.parents[1] / "Dockerfile").read_text()
    assert re.search(r"^USER [1-9][0-9]*$", dockerfile, re.MULTILINE), "USER must be a number"


def test_default_sidecar_ports_stay_clear_of_istio() -> None:
    objects, _ = render()
    settings = OperatorSettings.from_env(env_of(operator_container(objects)))
    for port in (settings.sidecar_port, settings.sidecar_admin_port):
        assert port not in ISTIO_PORTS


def test_default_settings_match_the_operators_defaults() -> None:
    objects, _ = render()
    settings = OperatorSettings.from_env(env_of(operator_container(objects)))
    defaults = OperatorSettings()
    assert settings.image == "mlwarden/mlwarden:0.1.0" == defaults.image
    # The slim sidecar image (the Dockerfile's `sidecar` target) by default.
    assert settings.sidecar_image == "mlwarden/mlwarden-sidecar:0.1.0" == defaults.sidecar_image
    for field in ("image_pull_policy", "sidecar_port", "sidecar_admin_port", "detector_port"):
        assert getattr(settings, field) == getattr(defaults, field), field
    assert settings.sidecar_resources == defaults.sidecar_resources
    assert settings.detector_resources == defaults.detector_resources
    assert settings.injection == "patch"


def test_the_sidecar_image_can_be_named() -> None:
    objects, _ = render({"sidecar": {"image": "mirror.example/sidecar:9"}})
    settings = OperatorSettings.from_env(env_of(operator_container(objects)))
    assert settings.sidecar_image == "mirror.example/sidecar:9"
    assert settings.image == "mlwarden/mlwarden:0.1.0"


def test_an_image_digest_wins_over_the_tag() -> None:
    digest = "sha256:" + "ab" * 32
    objects, _ = render({"image": {"digest": digest}})
    container = operator_container(objects)
    assert container["image"] == f"mlwarden/mlwarden@{digest}"
    assert env_of(container)["MLWARDEN_IMAGE"] == f"mlwarden/mlwarden@{digest}"


def test_the_operator_runs_restricted() -> None:
    tolerations = [{"key": "dedicated", "operator": "Exists"}]
    objects, _ = render({"nodeSelector": {"pool": "system"}, "tolerations": tolerations})
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["nodeSelector"] == {"pool": "system"}
    assert pod["tolerations"] == tolerations
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]


def test_the_metrics_service_selects_the_operator_pods() -> None:
    objects, _ = render()
    service = one(objects, "Service")
    pod_labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 8081, "targetPort": "metrics", "protocol": "TCP"}
    ]


# --------------------------------------------------------------------------- watch scope, peering


def test_watch_namespaces_get_roles_and_no_cluster_rights() -> None:
    objects, _ = render({"watchNamespaces": ["a", "b"]})
    args = build_parser().parse_args(operator_container(objects)["args"])
    assert args.namespace == ["a", "b"] and not args.all_namespaces and args.standalone
    roles = of_kind(objects, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["a", "b"]
    bindings = of_kind(objects, "RoleBinding")
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["a", "b"]
    for binding in bindings:
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": RELEASE,
        }
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": RELEASE, "namespace": NAMESPACE}
        ]
    assert of_kind(objects, "ClusterRoleBinding") == []
    cluster_roles = {r["metadata"]["name"] for r in of_kind(objects, "ClusterRole")}
    assert cluster_roles == {"mlwarden-view", "mlwarden-edit"}  # for users, not the operator


def test_replicas_above_one_peer_through_kopf() -> None:
    objects, _ = render({"replicas": 2})
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 2 and "strategy" not in deployment["spec"]
    args = build_parser().parse_args(operator_container(objects)["args"])
    assert not args.standalone
    peering = one(objects, "ClusterKopfPeering")
    assert peering["metadata"]["name"] == "default"  # kopf's default peering name
    assert triples(KOPF_PEERING_CLUSTER) <= granted(one(objects, "ClusterRole", RELEASE))


def test_namespaced_peering_has_a_kopfpeering_per_namespace() -> None:
    objects, _ = render({"replicas": 2, "watchNamespaces": ["a", "b"]})
    peerings = of_kind(objects, "KopfPeering")
    assert sorted((p["metadata"]["namespace"], p["metadata"]["name"]) for p in peerings) == [
        ("a", "default"),
        ("b", "default"),
    ]
    assert of_kind(objects, "ClusterKopfPeering") == []


def test_no_peering_object_with_one_replica() -> None:
    objects, _ = render({"watchNamespaces": ["a"]})
    assert of_kind(objects, "KopfPeering") == of_kind(objects, "ClusterKopfPeering") == []


# --------------------------------------------------------------------------- RBAC


def roles_of(objects: Objects) -> Objects:
    return [
        o
        for o in objects
        if o["kind"] == "Role" or (o["kind"] == "ClusterRole" and o["metadata"]["name"] == RELEASE)
    ]


@pytest.mark.parametrize("case", CASES)
def test_rbac_has_no_wildcards(case: str) -> None:
    objects, _ = render(CASES[case], hooks=True)
    rules = [r for o in objects if o["kind"] in ("Role", "ClusterRole") for r in o["rules"]]
    assert rules
    for rule in rules:
        for key in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
            assert not any("*" in item for item in rule.get(key, [])), rule


@pytest.mark.parametrize("replicas", [1, 2])
def test_the_cluster_role_grants_exactly_what_the_operator_uses(replicas: int) -> None:
    objects, _ = render({"replicas": replicas})
    (role,) = roles_of(objects)
    expected = triples(OPERATOR_API_USE) | triples(KOPF_CLUSTERWIDE) | triples(NAMESPACE_LABELS)
    if replicas > 1:
        expected |= triples(KOPF_PEERING_CLUSTER)
    assert granted(role) == expected
    assert granted(role) >= DETECTOR_ROLE


@pytest.mark.parametrize("replicas", [1, 2])
def test_each_namespace_role_grants_exactly_what_the_operator_uses(replicas: int) -> None:
    objects, _ = render({"replicas": replicas, "watchNamespaces": ["a", "b"]})
    roles = roles_of(objects)
    assert len(roles) == 2
    expected = triples(OPERATOR_API_USE)
    if replicas > 1:
        expected |= triples(KOPF_PEERING_NAMESPACED)
    for role in roles:
        assert granted(role) == expected, role["metadata"]["namespace"]
        assert granted(role) >= DETECTOR_ROLE


def test_every_kind_the_api_client_knows_is_granted_or_deliberately_not() -> None:
    for kind, (prefix, plural) in KINDS.items():
        group = "" if prefix == "/api/v1" else prefix.split("/")[2]
        if kind in NOT_GRANTED:
            assert (group, plural) not in OPERATOR_API_USE, kind
        else:
            assert (group, plural) in OPERATOR_API_USE, f"{kind}: add it to the chart's RBAC"


def test_view_and_edit_users_can_read_and_manage_observed_models() -> None:
    objects, _ = render()
    view = one(objects, "ClusterRole", "mlwarden-view")
    edit = one(objects, "ClusterRole", "mlwarden-edit")
    assert view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    assert edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    models = ("observedmodels", "observedmodels/status", "incidents")
    assert granted(view) == {("mlwarden.io", r, v) for r in models for v in READ}
    manage = ("create", "update", "patch", "delete")
    assert {("mlwarden.io", "observedmodels", v) for v in manage} <= granted(edit)
    assert not any(r == "observedmodels/status" and v not in READ for _, r, v in granted(edit))
    objects, _ = render({"rbac": {"aggregateToDefaultRoles": False}})
    assert {r["metadata"]["name"] for r in of_kind(objects, "ClusterRole")} == {RELEASE}


def test_rbac_create_false_renders_no_rbac() -> None:
    objects, _ = render(
        {
            "rbac": {"create": False, "aggregateToDefaultRoles": False},
            "serviceAccount": {"create": False, "name": "ops"},
        },
        hooks=True,
    )
    assert not [o for o in objects if o["apiVersion"].startswith("rbac.authorization.k8s.io/")]
    assert of_kind(objects, "ServiceAccount") == []
    spec = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == "ops"


# --------------------------------------------------------------------------- CRDs


def test_the_chart_crds_are_the_top_level_crds() -> None:
    top, chart = crd_files(ROOT / "crds"), crd_files(CHART / "crds")
    assert top, "crds/ is empty: generate it with `python -m mlwarden.crd`"
    for name, content in top.items():
        stale = f"charts/mlwarden/crds/{name} is stale: run charts/sync-crds.py"
        assert chart.get(name) == content, stale
    extra = set(chart) - set(top)
    assert all(n.endswith(".kopf.dev.yaml") for n in extra), extra  # kopf's, the chart's own
    check = subprocess.run(
        [sys.executable, str(ROOT / "charts" / "sync-crds.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stderr


def test_crd_create_renders_the_same_crds_as_templates() -> None:
    objects, notes = render({"crd": {"create": True}})
    rendered = {c["metadata"]["name"]: c for c in of_kind(objects, "CustomResourceDefinition")}
    # kopf's peering CRDs only when the operator peers
    assert set(rendered) == {"observedmodels.mlwarden.io", "incidents.mlwarden.io"}
    source = yaml.safe_load((ROOT / "crds" / "observedmodels.mlwarden.io.yaml").read_text())
    crd = rendered["observedmodels.mlwarden.io"]
    assert crd["spec"] == source["spec"]
    assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    assert crd["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
    assert "--skip-crds" in notes
    objects, _ = render({"crd": {"create": True, "keep": False}, "replicas": 2})
    rendered = {c["metadata"]["name"]: c for c in of_kind(objects, "CustomResourceDefinition")}
    assert set(rendered) == {c["metadata"]["name"] for c in CHART_CRDS}
    assert "annotations" not in rendered["observedmodels.mlwarden.io"]["metadata"]


def test_no_crd_templates_by_default() -> None:
    objects, _ = render()
    assert of_kind(objects, "CustomResourceDefinition") == []


# --------------------------------------------------------------------------- values schema


BAD_VALUES = [
    ({"replicas": "two"}, "/replicas"),
    ({"replicas": -1}, "/replicas"),
    ({"injection": "sideways"}, "/injection"),
    ({"watchNamespaces": "team-a"}, "/watchNamespaces"),
    ({"watchNamespaces": ["Team_A"]}, "/watchNamespaces/0"),
    ({"sidecar": {"port": 70000}}, "/sidecar/port"),
    (
        {"detector": {"resources": {"requests": {"cpu": "lots"}}}},
        "/detector/resources/requests/cpu",
    ),
    ({"sidecar": {"resources": {"requests": {"gpu": 1}}}}, "/sidecar/resources/requests"),
    ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
    ({"componentImage": {"pullSecrets": ["regcred"]}}, "/componentImage/pullSecrets/0"),
    (
        {"componentImage": {"pullSecrets": [{"name": "Reg_Cred"}]}},
        "/componentImage/pullSecrets/0/name",
    ),
    ({"image": {"digest": "latest"}}, "/image/digest"),
    ({"serviceMonitor": {"enabled": "yes"}}, "/serviceMonitor/enabled"),
    ({"podMonitor": {"interval": "30 seconds"}}, "/podMonitor/interval"),
    ({"replica": 2}, "additional properties 'replica'"),
    ({"webhook": {"timeoutSeconds": 60}}, "/webhook/timeoutSeconds"),
    ({"webhook": {"certificate": {"source": "kopf"}}}, "/webhook/certificate/source"),
]


@pytest.mark.parametrize(("values", "where"), BAD_VALUES, ids=[w for _, w in BAD_VALUES])
def test_bad_values_are_rejected_at_install(values: dict[str, Any], where: str) -> None:
    with helm.Chart.load(CHART) as chart:
        with pytest.raises(helm.HelmValuesError, match=re.escape(where)):
            chart.validate_schema(values)
        with pytest.raises(helm.HelmValuesError, match=re.escape(where)):
            chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    assert helm.lint(CHART, values, strict=True)["errors"]


def test_the_defaults_and_every_case_satisfy_the_schema() -> None:
    with helm.Chart.load(CHART) as chart:
        chart.validate_schema(chart.values)
        for values in CASES.values():
            chart.validate_schema(values)


def documented_values() -> tuple[list[str], list[str]]:
    """(value paths, undocumented lines) of values.yaml. Each key needs a comment above it,
    unless it lies inside a value documented as a whole (a `# --` comment above a block, such as
    `resources` or `securityContext`): such a block is one path, its keys are not."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    paths, undocumented = [], []
    blocks: list[tuple[int, str, bool]] = []  # (indent, key, documented as a whole)
    for i, line in enumerate(lines):
        key = re.match(r"^( *)([A-Za-z_][A-Za-z0-9_]*):(.*)$", line)
        if not key:
            continue
        indent, name, rest = len(key.group(1)), key.group(2), key.group(3).strip()
        while blocks and blocks[-1][0] >= indent:
            blocks.pop()
        if any(whole for _, _, whole in blocks):
            continue
        comment = []  # the comment lines right above the key
        j = i - 1
        while j >= 0 and lines[j].strip().startswith("#"):
            comment.append(lines[j].strip())
            j -= 1
        if not comment:
            undocumented.append(f"values.yaml:{i + 1}: {line.strip()}")
        whole = any(c.startswith("# --") for c in comment)
        if rest or whole:
            paths.append(".".join([k for _, k, _ in blocks] + [name]))
        if not rest:
            blocks.append((indent, name, whole))
    return paths, undocumented


def test_every_value_is_documented_in_values_yaml_and_the_readme() -> None:
    paths, undocumented = documented_values()
    assert undocumented == []
    readme = (CHART / "README.md").read_text()
    assert [p for p in paths if f"| `{p}` |" not in readme] == []
    assert len(paths) > 50


# --------------------------------------------------------------------------- monitoring


def test_optional_parts_are_off_by_default_and_each_switches_on() -> None:
    objects, _ = render()
    monitoring = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
    assert not [o for o in objects if o["kind"] in monitoring]
    assert of_kind(objects, "ConfigMap") == []
    for key, kind in [
        ("serviceMonitor", "ServiceMonitor"),
        ("podMonitor", "PodMonitor"),
        ("prometheusRule", "PrometheusRule"),
        ("grafanaDashboard", "ConfigMap"),
    ]:
        objects, _ = render({key: {"enabled": True}})
        assert of_kind(objects, kind), key


def relabeled_job(endpoint: dict[str, Any]) -> str:
    (job,) = [r["replacement"] for r in endpoint["relabelings"] if r.get("targetLabel") == "job"]
    return str(job)


def test_monitors_scrape_the_ports_the_operator_names() -> None:
    objects, _ = render(EVERYTHING_ON)
    service_monitor = one(objects, "ServiceMonitor")
    (endpoint,) = service_monitor["spec"]["endpoints"]
    assert endpoint["port"] == "metrics" and relabeled_job(endpoint) == "mlwarden-operator"
    service = one(objects, "Service")
    selected = service_monitor["spec"]["selector"]["matchLabels"]
    assert selected.items() <= service["metadata"]["labels"].items()
    assert service_monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}

    detectors = one(objects, "PodMonitor", "mlwarden-detectors")
    (endpoint,) = detectors["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == DETECTOR_PORT_NAME and relabeled_job(endpoint) == "mlwarden-detector"
    assert detectors["spec"]["selector"]["matchLabels"].items() <= selector_labels("fraud").items()
    assert detectors["spec"]["namespaceSelector"] == {"any": True}

    sidecars = one(objects, "PodMonitor", "mlwarden-sidecars")
    (endpoint,) = sidecars["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == ADMIN_PORT_NAME and relabeled_job(endpoint) == "mlwarden-sidecar"

    objects, _ = render({**EVERYTHING_ON, "watchNamespaces": ["a", "b"]})
    for monitor in of_kind(objects, "PodMonitor"):
        assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["a", "b"]}


RULES_FILE = CHART / "rules" / "mlwarden-rules.yaml"


def alerts_of(rule: dict[str, Any]) -> list[str]:
    return [r["alert"] for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r]


def test_the_prometheus_rule_is_the_rules_file() -> None:
    source = yaml.safe_load(RULES_FILE.read_text())
    objects, _ = render({"prometheusRule": {"enabled": True}, "serviceMonitor": {"enabled": True}})
    rule = one(objects, "PrometheusRule")
    assert rule["spec"]["groups"] == source["groups"]
    # without a ServiceMonitor nothing has job="mlwarden-operator": that alert would always fire
    objects, _ = render({"prometheusRule": {"enabled": True}})
    assert "MLwardenOperatorDown" not in alerts_of(one(objects, "PrometheusRule"))


def test_the_required_alerts_are_there() -> None:
    objects, _ = render(EVERYTHING_ON)
    alerts = alerts_of(one(objects, "PrometheusRule"))
    for name in (
        "MLwardenModelDrifting",
        "MLwardenDetectorDown",
        "MLwardenSidecarDroppingRecords",
        "MLwardenReactionFailed",
    ):
        assert name in alerts
    (drifting,) = [
        r
        for g in one(objects, "PrometheusRule")["spec"]["groups"]
        for r in g["rules"]
        if r.get("alert") == "MLwardenModelDrifting"
    ]
    assert drifting["for"] == "15m"


def test_rule_labels_and_disabled_alerts() -> None:
    values = {
        **EVERYTHING_ON,
        "prometheusRule": {
            "enabled": True,
            "additionalRuleLabels": {"team": "ml-platform", "severity": "page"},
            "disabledAlerts": ["MLwardenSidecarHighOverhead"],
        },
    }
    objects, _ = render(values)
    rule = one(objects, "PrometheusRule")
    assert "MLwardenSidecarHighOverhead" not in alerts_of(rule)
    for group in rule["spec"]["groups"]:
        for r in group["rules"]:
            assert r["labels"]["team"] == "ml-platform" and r["labels"]["severity"] == "page"
    # the rules file itself is untouched
    source = yaml.safe_load(RULES_FILE.read_text())
    source_alerts = [r["alert"] for g in source["groups"] for r in g["rules"]]
    assert "MLwardenSidecarHighOverhead" in source_alerts


def test_the_dashboard_configmap_is_discovered_by_the_grafana_sidecar() -> None:
    folder = {"grafana_folder": "MLOps"}
    objects, _ = render({"grafanaDashboard": {"enabled": True, "annotations": folder}})
    configmap = one(objects, "ConfigMap")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["annotations"] == {"grafana_folder": "MLOps"}
    dashboard = json.loads(configmap["data"]["mlwarden.json"])
    assert dashboard["uid"] == "mlwarden-overview"
    titles = {p["title"] for p in dashboard["panels"]}
    for title in (
        "Request rate by status class",
        "Request latency",
        "Proxy overhead",
        "Records captured, shipped, dropped",
        "Drift statistic per feature",
        "Active alerts",
    ):
        assert title in titles
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


# --------------------------------------------------------------------------- metric names


def metric_names(registries: Iterable[CollectorRegistry]) -> set[str]:
    """Every sample name the registries can expose, including labelled families with no child."""
    suffixes = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_count", "_sum"),
        "gauge": ("",),
        "info": ("_info",),
    }
    names = set()
    for registry in registries:
        for family in registry.collect():
            names.update(family.name + s for s in suffixes.get(family.type, ("",)))
    return names


def promql_metrics(expressions: Iterable[str]) -> set[str]:
    return {m for e in expressions for m in re.findall(r"\b(mlwarden_[a-z0-9_]+)", e)}


def dashboard_expressions() -> list[str]:
    dashboard = json.loads((CHART / "dashboards" / "mlwarden.json").read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def rule_expressions() -> list[str]:
    return [r["expr"] for g in yaml.safe_load(RULES_FILE.read_text())["groups"] for r in g["rules"]]


@pytest.mark.parametrize("source", [rule_expressions, dashboard_expressions])
def test_every_metric_queried_exists_in_the_code(source: Callable[[], list[str]]) -> None:
    known = metric_names(
        [
            SidecarMetrics().registry,
            DetectorMetrics().registry,
            OperatorMetrics(CollectorRegistry()).registry,
        ]
    )
    used = promql_metrics(source())
    assert used, "no mlwarden metric found"
    assert used - known == set()


def test_render_does_not_mutate_values() -> None:
    values = copy.deepcopy(EVERYTHING_ON)
    render(values)
    assert values == EVERYTHING_ON


WEBHOOK = {"injection": "webhook"}


def webhook_of(objects: Objects) -> dict[str, Any]:
    (webhook,) = one(objects, "MutatingWebhookConfiguration", RELEASE)["webhooks"]
    return dict(webhook)


def test_webhook_mode_reviews_only_labelled_workloads_fails_open_and_times_out_fast() -> None:
    objects, notes = render({**WEBHOOK, "watchNamespaces": ["a", "b"]})
    assert f"kubectl label deployment my-model {INJECT_LABEL}=my-model" in notes
    webhook = webhook_of(objects)
    assert webhook["rules"] == [
        {
            "apiGroups": ["apps"],
            "apiVersions": ["v1"],
            "resources": ["deployments", "statefulsets"],
            "operations": ["CREATE", "UPDATE"],
            "scope": "Namespaced",
        },
        {
            "apiGroups": ["argoproj.io"],
            "apiVersions": ["v1alpha1"],
            "resources": ["rollouts"],
            "operations": ["CREATE", "UPDATE"],
            "scope": "Namespaced",
        },
    ]
    assert webhook["objectSelector"] == {
        "matchExpressions": [{"key": INJECT_LABEL, "operator": "Exists"}]
    }
    name = "kubernetes.io/metadata.name"
    assert webhook["namespaceSelector"] == {
        "matchExpressions": [
            {"key": name, "operator": "NotIn",
             "values": ["kube-system", "kube-public", "kube-node-lease", NAMESPACE]},
            {"key": name, "operator": "In", "values": ["a", "b"]},
        ]
    }  # fmt: skip
    assert (webhook["failurePolicy"], webhook["timeoutSeconds"]) == ("Ignore", 5)
    assert (webhook["sideEffects"], webhook["matchPolicy"]) == ("None", "Equivalent")
    assert webhook["reinvocationPolicy"] == "IfNeeded"
    assert webhook["admissionReviewVersions"] == ["v1"]
    # The API server calls the operator's handler through the -webhook Service.
    service = one(objects, "Service", f"{RELEASE}-webhook")
    assert webhook["clientConfig"]["service"] == {
        "name": service["metadata"]["name"],
        "namespace": NAMESPACE,
        "path": f"/{WEBHOOK_ID}",
        "port": 443,
    }
    assert service["spec"]["ports"][0] == {
        "name": "webhook", "port": 443, "targetPort": "webhook", "protocol": "TCP",
    }  # fmt: skip
    assert (
        service["spec"]["selector"] == one(objects, "Deployment")["spec"]["selector"]["matchLabels"]
    )
    container = operator_container(objects)
    assert {"name": "webhook", "containerPort": 9443, "protocol": "TCP"} in container["ports"]
    # Extra namespace conditions (an opt-in label) and another timeout.
    objects, _ = render({**WEBHOOK, "webhook": {"timeoutSeconds": 2, "namespaceSelector": {
        "matchLabels": {"mlwarden.io/webhook": "enabled"},
        "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["system"]}],
    }}})  # fmt: skip
    webhook = webhook_of(objects)
    assert webhook["timeoutSeconds"] == 2
    selector = webhook["namespaceSelector"]
    assert selector["matchLabels"] == {"mlwarden.io/webhook": "enabled"}
    assert selector["matchExpressions"][0]["values"] == [
        "kube-system", "kube-public", "kube-node-lease", NAMESPACE,
    ]  # fmt: skip
    assert selector["matchExpressions"][1:] == [
        {"key": "tier", "operator": "NotIn", "values": ["system"]}
    ]
    # Patch mode (the default) has none of it.
    objects, _ = render()
    assert not [o for o in objects if "webhook" in o["metadata"]["name"]]
    assert not of_kind(objects, "MutatingWebhookConfiguration")
    assert "MLWARDEN_WEBHOOK_CERT" not in env_of(operator_container(objects))


@pytest.mark.parametrize("values", [{}, {"watchNamespaces": ["a"]}, {"replicas": 2}])
def test_the_operator_gets_no_rights_on_webhook_configurations(values: dict[str, Any]) -> None:
    """The chart owns the MutatingWebhookConfiguration; kopf's configuration manager is off."""
    objects, _ = render({**WEBHOOK, **values})
    assert of_kind(objects, "MutatingWebhookConfiguration")
    for role in roles_of(objects):
        groups = {g for rule in role["rules"] for g in rule["apiGroups"]}
        assert "admissionregistration.k8s.io" not in groups, role["metadata"]["name"]


def test_every_replica_mounts_the_one_certificate_secret_the_operator_serves_with(
    tmp_path: Path,
) -> None:
    objects, _ = render({**WEBHOOK, "replicas": 3})
    secret = one(objects, "Secret", f"{RELEASE}-webhook-tls")
    assert secret["type"] == "kubernetes.io/tls"
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if "secret" in v]
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]
    (container,) = pod["containers"]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
    assert mount["readOnly"] is True
    env = env_of(container)
    # The files the operator is told to serve are the Secret's, where the volume puts them.
    for var, key in (("MLWARDEN_WEBHOOK_CERT", "tls.crt"), ("MLWARDEN_WEBHOOK_KEY", "tls.key")):
        assert env[var] == f"{mount['mountPath']}/{key}"
    assert "MLWARDEN_WEBHOOK_HOST" not in env
    # The operator accepts them (written where the pod would have them).
    files = {}
    for key in ("tls.crt", "tls.key"):
        files[key] = tmp_path / key
        files[key].write_bytes(base64.b64decode(secret["data"][key]))
    server = server_from_env({**env, "MLWARDEN_WEBHOOK_CERT": str(files["tls.crt"]),
                              "MLWARDEN_WEBHOOK_KEY": str(files["tls.key"])})  # fmt: skip
    assert (server.certfile, server.port) == (str(files["tls.crt"]), 9443)
    assert OperatorSettings.from_env(env).injection == "webhook"


def tls_handshake(cert: bytes, key: bytes, ca: bytes, hostname: str, tmp_path: Path) -> None:
    """A TLS handshake: a server with cert/key, a client trusting only `ca` and asking for
    `hostname`, as the API server calls the webhook Service (raises ssl.SSLError on mismatch)."""
    (tmp_path / "tls.crt").write_bytes(cert)
    (tmp_path / "tls.key").write_bytes(key)
    server_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_side.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    client_side = ssl.create_default_context(cadata=ca.decode())
    a, b = socket.socketpair()
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            with server_side.wrap_socket(a, server_side=True) as tls:
                tls.recv(1)
        except (ssl.SSLError, OSError) as exc:
            errors.append(exc)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client_side.wrap_socket(b, server_hostname=hostname) as tls:
            tls.sendall(b"x")
    finally:
        thread.join(10)
    assert not errors, errors


def test_the_generated_certificate_is_trusted_by_the_ca_bundle_for_the_service(
    tmp_path: Path,
) -> None:
    objects, _ = render(WEBHOOK)
    secret = one(objects, "Secret", f"{RELEASE}-webhook-tls")
    data = {k: base64.b64decode(v) for k, v in secret["data"].items()}
    ca_bundle = base64.b64decode(webhook_of(objects)["clientConfig"]["caBundle"])
    assert ca_bundle == data["ca.crt"]
    service = f"{RELEASE}-webhook.{NAMESPACE}.svc"  # the name the API server verifies
    tls_handshake(data["tls.crt"], data["tls.key"], ca_bundle, service, tmp_path)
    with pytest.raises(ssl.SSLCertVerificationError):
        tls_handshake(data["tls.crt"], data["tls.key"], ca_bundle, "elsewhere.svc", tmp_path)
    # A certificate from another render (another CA) is not trusted: the bundle is this CA's.
    other, _ = render(WEBHOOK)
    other_secret = one(other, "Secret", f"{RELEASE}-webhook-tls")["data"]
    other_cert, other_key = (base64.b64decode(other_secret[k]) for k in ("tls.crt", "tls.key"))
    with pytest.raises(ssl.SSLCertVerificationError):
        tls_handshake(other_cert, other_key, ca_bundle, service, tmp_path)


async def test_the_generated_certificate_is_kept_on_upgrade() -> None:
    """An upgrade renders against the cluster (Helm's `lookup` reads the installed release's
    Secret, here from the API emulator): the certificate and the caBundle stay what they were,
    so replicas and the API server keep agreeing."""
    kept = {key: base64.b64encode(f"kept {key}".encode()).decode()
            for key in ("ca.crt", "tls.crt", "tls.key")}  # fmt: skip
    name = f"{RELEASE}-webhook-tls"
    async with ApiServerEmulator() as api, kmock.Server(api) as server:
        api.resources["v1/secrets"] = kmock.ResourceInfo(
            kind="Secret", singular="secret", namespaced=True, verbs={"get", "list", "watch"}
        )

        def upgrade() -> Objects:
            url = str(server.url).rstrip("/")
            config = helm.Config(kube_apiserver=url, kube_token="test", namespace=NAMESPACE)
            with config, helm.Chart.load(CHART) as chart:
                manifests = config.render(
                    chart, WEBHOOK, name=RELEASE, namespace=NAMESPACE, is_upgrade=True
                )
            texts = [t for path, t in manifests.items() if not path.endswith("NOTES.txt")]
            return [d for text in texts for d in yaml.safe_load_all(text) if d]

        fresh = await asyncio.to_thread(upgrade)  # no Secret yet: a new certificate
        assert one(fresh, "Secret", name)["data"] != kept
        api.objects["v1/secrets", NAMESPACE, name] = {
            "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": name, "namespace": NAMESPACE}, "data": kept,
        }  # fmt: skip
        objects = await asyncio.to_thread(upgrade)
    assert one(objects, "Secret", name)["data"] == kept
    assert webhook_of(objects)["clientConfig"]["caBundle"] == kept["ca.crt"]


def test_cert_manager_makes_the_certificate_and_injects_the_ca() -> None:
    objects, _ = render({**WEBHOOK, "webhook": {"certificate": {"source": "cert-manager"}}})
    assert not of_kind(objects, "Secret")  # cert-manager writes it
    certificate = one(objects, "Certificate")
    issuer = one(objects, "Issuer")
    assert issuer["spec"] == {"selfSigned": {}}
    assert certificate["spec"]["issuerRef"] == {
        "name": issuer["metadata"]["name"], "kind": "Issuer", "group": "cert-manager.io",
    }  # fmt: skip
    assert f"{RELEASE}-webhook.{NAMESPACE}.svc" in certificate["spec"]["dnsNames"]
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if "secret" in v]
    assert volume["secret"]["secretName"] == certificate["spec"]["secretName"]
    configuration = one(objects, "MutatingWebhookConfiguration")
    assert configuration["metadata"]["annotations"] == {
        "cert-manager.io/inject-ca-from": f"{NAMESPACE}/{certificate['metadata']['name']}"
    }
    assert "caBundle" not in configuration["webhooks"][0]["clientConfig"]
    # Your own issuer: no Issuer of the chart's.
    own = {"name": "corp-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}
    objects, _ = render({**WEBHOOK, "webhook": {"certificate": {
        "source": "cert-manager", "certManager": {"issuerRef": own}}}})  # fmt: skip
    assert not of_kind(objects, "Issuer")
    assert one(objects, "Certificate")["spec"]["issuerRef"] == own


def test_network_policy_values_reach_the_operator() -> None:
    def env(values: dict[str, Any] | None = None) -> dict[str, str]:
        objects, _ = render(values)
        (dep,) = [o for o in of_kind(objects, "Deployment")]
        (container,) = dep["spec"]["template"]["spec"]["containers"]
        return {e["name"]: e.get("value") for e in container["env"]}

    off = env()
    assert off["MLWARDEN_NETWORK_POLICY"] == "false"
    assert "MLWARDEN_NETWORK_POLICY_METRICS_FROM" not in off
    peers = [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}]
    on = env({"networkPolicy": {"enabled": True, "metricsFrom": peers}})
    assert on["MLWARDEN_NETWORK_POLICY"] == "true"
    assert json.loads(on["MLWARDEN_NETWORK_POLICY_METRICS_FROM"]) == peers
    # and the operator reads them as the chart wrote them
    from mlwarden.operator.settings import OperatorSettings

    settings = OperatorSettings.from_env(on)
    assert settings.network_policy and list(settings.network_policy_metrics_from) == peers


# --------------------------------------------------------------------------- uninstall


def hooks_of(values: dict[str, Any] | None = None) -> Objects:
    objects, _ = render(values, hooks=True)
    return [o for o in objects if is_hook(o)]


def test_uninstall_deletes_every_observed_model_first_with_rights_for_nothing_else() -> None:
    hooks = hooks_of()
    assert sorted(o["kind"] for o in hooks) == [
        "ClusterRole",
        "ClusterRoleBinding",
        "Job",
        "ServiceAccount",
    ]
    for o in hooks:
        annotations = o["metadata"]["annotations"]
        assert annotations["helm.sh/hook"] == "pre-delete"  # before the operator goes
        assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
        validate(o)
    weight = {o["kind"]: int(o["metadata"]["annotations"]["helm.sh/hook-weight"]) for o in hooks}
    assert weight["ServiceAccount"] < weight["ClusterRoleBinding"] < weight["Job"]
    role = one(hooks, "ClusterRole")
    assert granted(role) == {
        ("mlwarden.io", "observedmodels", v) for v in ("get", "list", "watch", "delete")
    }
    binding = one(hooks, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"] != RELEASE
    job = one(hooks, "Job")
    pod = job["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == one(hooks, "ServiceAccount")["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": pod["serviceAccountName"], "namespace": NAMESPACE}
    ]
    (container,) = pod["containers"]
    args = container["args"]
    # kubectl waits until each ObservedModel is gone: its finalizer ran (the injection undone).
    assert args[:3] == ["delete", "observedmodels.mlwarden.io", "--all"]
    assert "--wait=true" in args and "--all-namespaces" in args and "--timeout=300s" in args
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert job["spec"]["activeDeadlineSeconds"] == 300


def test_a_namespaced_uninstall_deletes_in_each_watched_namespace() -> None:
    hooks = hooks_of({"watchNamespaces": ["a", "b", "c"], "uninstall": {"timeoutSeconds": 60}})
    assert of_kind(hooks, "ClusterRole") == of_kind(hooks, "ClusterRoleBinding") == []
    assert sorted(r["metadata"]["namespace"] for r in of_kind(hooks, "Role")) == ["a", "b", "c"]
    assert sorted(b["metadata"]["namespace"] for b in of_kind(hooks, "RoleBinding")) == [
        "a",
        "b",
        "c",
    ]
    pod = one(hooks, "Job")["spec"]["template"]["spec"]
    steps = [*pod.get("initContainers", []), *pod["containers"]]
    assert [c["args"][-2:] for c in steps] == [
        ["--namespace", "a"],
        ["--namespace", "b"],
        ["--namespace", "c"],
    ]
    assert all("--timeout=60s" in c["args"] for c in steps)
    for o in hooks:
        validate(o)


def test_the_uninstall_hook_can_be_switched_off() -> None:
    assert hooks_of({"uninstall": {"deleteObservedModels": False}}) == []
