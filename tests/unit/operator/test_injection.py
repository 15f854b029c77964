"""The sidecar injection and its undo, step by step against a simulated API server and rollout.

The central property: at every intermediate state, for an old pod and a new pod alike, each
Service port resolves (by number, or by name among that pod's containers) to a port somebody
listens on, and the connection ends at the same model port as before the injection, through
the sidecar or directly. `assert_no_gap` checks it; `Cluster` plays the API server (merge
patches, defaults, resourceVersion preconditions) and the Deployment controller (old and new
pods side by side until the rollout completes).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from mlwarden.names import (
    ADMIN_PORT_NAME,
    INJECTED_ANNOTATION,
    MANIFEST_DIR,
    MANIFEST_KEY,
    MODEL_PORT_RENAMED,
    SERVICE_ANNOTATION,
    SIDECAR_CONTAINER,
    SIDECAR_PORT_NAME_DEFAULT,
)
from mlwarden.operator import injection
from mlwarden.operator.injection import (
    SIDECAR_VOLUME,
    InjectionError,
    InjectionPlan,
    mutate_pod_template,
    plan_injection,
    plan_removal,
    rollout_complete,
    shutdown_timing,
    sidecar_container,
)
from mlwarden.operator.settings import (
    IMAGE_UID,
    ISTIO_PORTS,
    RESTRICTED_SECURITY_CONTEXT,
    OperatorSettings,
)
from mlwarden.patches import covers
from mlwarden.spec import ObservedModel, parse_observed_model

Obj = dict[str, Any]
Patch = Callable[[Any, Any], Any]
Validate = Callable[[Obj], None]

MODEL_LISTENS = frozenset({8080, 9100})  # what the model process binds, whatever the names


# --------------------------------------------------------------------------- the target


def target_deployment() -> Obj:
    """The model's Deployment as read from the API (server defaults included by Cluster)."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "fraud-model",
            "namespace": "ml",
            "uid": "3e1f5a8c-0000-4000-8000-00000000000a",
            "generation": 4,
            "resourceVersion": "900",
            "labels": {"app": "fraud-model"},
            "annotations": {"deployment.kubernetes.io/revision": "4"},
        },
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "fraud-model"}},
            "template": {
                "metadata": {
                    "labels": {"app": "fraud-model"},
                    "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "9100"},
                },
                "spec": {
                    "containers": [
                        {
                            "name": "model",
                            "image": "seldonio/mlserver:1.6.1",
                            "ports": [
                                {"name": "http", "containerPort": 8080},
                                {"name": "metrics", "containerPort": 9100},
                            ],
                            "readinessProbe": {
                                "httpGet": {"path": "/v2/health/ready", "port": "http"}
                            },
                            "livenessProbe": {"tcpSocket": {"port": 8080}},
                            "lifecycle": {
                                "preStop": {"httpGet": {"path": "/drain", "port": "http"}}
                            },
                            "volumeMounts": [{"name": "models", "mountPath": "/mnt/models"}],
                        },
                        {"name": "log-shipper", "image": "fluent/fluent-bit:3.0"},
                    ],
                    "volumes": [{"name": "models", "emptyDir": {}}],
                },
            },
        },
        "status": {
            "observedGeneration": 4,
            "replicas": 3,
            "updatedReplicas": 3,
            "readyReplicas": 3,
            "availableReplicas": 3,
        },
    }


def target_service(*, by_name: bool) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "fraud-model", "namespace": "ml", "resourceVersion": "901"},
        "spec": {
            "type": "ClusterIP",
            "clusterIP": "10.96.3.4",
            "selector": {"app": "fraud-model"},
            "ports": [
                {"name": "http", "port": 80, "targetPort": "http" if by_name else 8080},
                {"name": "metrics", "port": 9100, "targetPort": 9100},
            ],
        },
    }


def api_defaults(obj: Obj) -> Obj:
    """What the API server adds on every write: the planner must not fight any of it."""
    out = copy.deepcopy(obj)
    if out["kind"] == "Deployment":
        pod = out["spec"]["template"]["spec"]
        pod.setdefault("dnsPolicy", "ClusterFirst")
        pod.setdefault("restartPolicy", "Always")
        pod.setdefault("terminationGracePeriodSeconds", 30)
        for c in pod["containers"]:
            c.setdefault("imagePullPolicy", "IfNotPresent")
            c.setdefault("terminationMessagePath", "/dev/termination-log")
            for p in c.get("ports") or []:
                p.setdefault("protocol", "TCP")
            for probe in ("readinessProbe", "livenessProbe"):
                if probe in c:
                    c[probe].setdefault("timeoutSeconds", 1)
                    c[probe].setdefault("periodSeconds", 10)
                    if "httpGet" in c[probe]:
                        c[probe]["httpGet"].setdefault("scheme", "HTTP")
            for env in c.get("env") or []:
                if "fieldRef" in (env.get("valueFrom") or {}):
                    env["valueFrom"]["fieldRef"].setdefault("apiVersion", "v1")
        for v in pod.get("volumes") or []:
            if "configMap" in v:
                v["configMap"].setdefault("defaultMode", 420)
    if out["kind"] == "Service":
        for p in out["spec"]["ports"]:
            p.setdefault("protocol", "TCP")
    for key in ("annotations", "labels"):
        if out["metadata"].get(key) == {}:
            del out["metadata"][key]  # empty maps are not stored
    return out


# --------------------------------------------------------------------------- the property


def route(service_port: Obj, pod_template: Obj) -> tuple[str, int] | None:
    """Where a connection to `service_port` ends in a pod of `pod_template`.

    ("model", port) directly, ("sidecar", port) through the sidecar to the model's port, or
    None: the name does not resolve in this pod, or nothing listens on that number.
    """
    containers = pod_template["spec"]["containers"]
    target = service_port.get("targetPort", service_port["port"])
    if isinstance(target, str):
        protocol = service_port.get("protocol", "TCP")
        numbers = [
            p["containerPort"]
            for c in containers
            for p in c.get("ports") or []
            if p.get("name") == target and p.get("protocol", "TCP") == protocol
        ]
        if not numbers:
            return None
        number = numbers[0]
    else:
        number = target
    for c in containers:
        if c["name"] != SIDECAR_CONTAINER:
            continue
        env = {e["name"]: e.get("value") for e in c["env"]}
        if number == int(env["MLWARDEN_LISTEN"].rsplit(":", 1)[1]):
            upstream = int(env["MLWARDEN_UPSTREAM"].rsplit(":", 1)[1])
            assert env["MLWARDEN_UPSTREAM"].startswith("http://127.0.0.1:")
            return ("sidecar", upstream) if upstream in MODEL_LISTENS else None
    return ("model", number) if number in MODEL_LISTENS else None


def assert_no_gap(service: Obj, pod_template: Obj, expected: dict[str, int]) -> list[str]:
    """Every Service port reaches the model port it reached before; returns the hops taken."""
    names = [p["name"] for c in pod_template["spec"]["containers"] for p in c.get("ports") or []]
    assert len(names) == len(set(names)), f"duplicate port names in the pod: {names}"
    hops = []
    for sp in service["spec"]["ports"]:
        landed = route(sp, pod_template)
        assert landed is not None, f"Service port {sp['name']} ({sp.get('targetPort')}) is a gap"
        assert landed[1] == expected[sp["name"]], f"Service port {sp['name']} reaches {landed}"
        hops.append(landed[0])
    return hops


class Cluster:
    """A Deployment, its Service and its pods, as the API server and controllers keep them."""

    def __init__(self, deployment: Obj, service: Obj, *, patch: Patch, validate: Validate) -> None:
        self.merge = patch
        self.validate = validate
        self.deployment = api_defaults(deployment)
        self.service = api_defaults(service)
        validate(self.deployment)
        validate(self.service)
        self.original = (copy.deepcopy(self.deployment), copy.deepcopy(self.service))
        self.pods = [self.template]  # templates of the pods running now
        self.expected = {
            sp["name"]: landed[1]
            for sp in self.service["spec"]["ports"]
            if (landed := route(sp, self.template)) is not None
        }
        assert len(self.expected) == len(self.service["spec"]["ports"])
        self.check()

    @property
    def template(self) -> Obj:
        return copy.deepcopy(self.deployment["spec"]["template"])

    def _write(self, obj: Obj, patch: Obj) -> Obj:
        version = (patch.get("metadata") or {}).get("resourceVersion")
        assert version in (None, obj["metadata"]["resourceVersion"]), "409 Conflict"
        out = api_defaults(self.merge(obj, patch))
        out["metadata"]["resourceVersion"] = str(int(obj["metadata"]["resourceVersion"]) + 1)
        self.validate(out)
        return out

    def apply(self, plan: InjectionPlan) -> None:
        if plan.service_patch is not None:
            self.service = self._write(self.service, plan.service_patch)
            self.check()
        if plan.deployment_patch is not None:
            before = self.template
            self.deployment = self._write(self.deployment, plan.deployment_patch)
            if self.template != before:  # a new template: a rollout starts
                meta, status = self.deployment["metadata"], self.deployment["status"]
                meta["generation"] += 1
                status.update(observedGeneration=meta["generation"], updatedReplicas=1)
                status.update(replicas=4, availableReplicas=3)
                self.pods = [*self.pods, self.template]
            self.check()

    def finish_rollout(self) -> None:
        status, replicas = self.deployment["status"], self.deployment["spec"]["replicas"]
        status.update(replicas=replicas, updatedReplicas=replicas, availableReplicas=replicas)
        self.pods = [self.template]
        self.check()

    def check(self) -> list[list[str]]:
        """The no-gap property for every pod running now (old and new)."""
        return [assert_no_gap(self.service, pod, self.expected) for pod in self.pods]

    def without_server_fields(self) -> tuple[Obj, Obj]:
        def strip(obj: Obj) -> Obj:
            out = copy.deepcopy(obj)
            out.pop("status", None)
            out["metadata"].pop("generation", None)
            out["metadata"].pop("resourceVersion", None)
            return out

        return strip(self.deployment), strip(self.service)

    def original_without_server_fields(self) -> tuple[Obj, Obj]:
        now = self.deployment, self.service
        self.deployment, self.service = self.original
        try:
            return self.without_server_fields()
        finally:
            self.deployment, self.service = now


def inject(cluster: Cluster, model: ObservedModel, settings: OperatorSettings) -> list[str]:
    """Plan, apply, roll out, until injected; the states passed through."""
    states: list[str] = []
    for _ in range(10):
        plan = plan_injection(
            deployment=cluster.deployment, service=cluster.service, model=model, settings=settings
        )
        states.append(plan.state)
        if plan.done:
            cluster.finish_rollout()
            return states
        if plan.deployment_patch is None and plan.service_patch is None:
            assert plan.state == "waiting-for-rollout"
            cluster.finish_rollout()
        cluster.apply(plan)
    raise AssertionError(f"never settled: {states}")


def remove(cluster: Cluster) -> list[str]:
    states: list[str] = []
    for _ in range(10):
        plan = plan_removal(deployment=cluster.deployment, service=cluster.service)
        states.append(plan.state)
        if plan.done:
            cluster.finish_rollout()
            return states
        cluster.apply(plan)
    raise AssertionError(f"never settled: {states}")


def settled(cluster: Cluster, model: ObservedModel, settings: OperatorSettings) -> InjectionPlan:
    return plan_injection(
        deployment=cluster.deployment, service=cluster.service, model=model, settings=settings
    )


@pytest.fixture
def make_cluster(merge_patch: Patch, valid_kubernetes: Validate) -> Callable[..., Cluster]:
    def make(
        deployment: Obj | None = None, service: Obj | None = None, *, by_name: bool
    ) -> Cluster:
        return Cluster(
            deployment or target_deployment(),
            service or target_service(by_name=by_name),
            patch=merge_patch,
            validate=valid_kubernetes,
        )

    return make


# --------------------------------------------------------------------------- full sequences


def test_case_a_service_by_name(
    make_cluster: Callable[..., Cluster], model: ObservedModel, settings: OperatorSettings
) -> None:
    cluster = make_cluster(by_name=True)
    before = cluster.original_without_server_fields()
    assert inject(cluster, model, settings) == ["injecting", "waiting-for-rollout", "injected"]
    assert cluster.service == cluster.original[1]  # case A never touches the Service
    assert cluster.check() == [["sidecar", "model"]]  # http through the sidecar, metrics not
    pod = cluster.deployment["spec"]["template"]["spec"]
    model_c, shipper, sidecar = pod["containers"]
    assert [p["name"] for p in model_c["ports"]] == [MODEL_PORT_RENAMED, "metrics"]
    assert [p["containerPort"] for p in model_c["ports"]] == [8080, 9100]
    assert model_c["readinessProbe"]["httpGet"]["port"] == MODEL_PORT_RENAMED
    assert model_c["lifecycle"]["preStop"]["httpGet"]["port"] == MODEL_PORT_RENAMED
    assert model_c["livenessProbe"]["tcpSocket"]["port"] == 8080
    assert shipper == cluster.original[0]["spec"]["template"]["spec"]["containers"][1]
    assert [(p["name"], p["containerPort"]) for p in sidecar["ports"]] == [
        ("http", settings.sidecar_port),
        (ADMIN_PORT_NAME, settings.sidecar_admin_port),
    ]
    record = json.loads(cluster.deployment["metadata"]["annotations"][INJECTED_ANNOTATION])
    frozen = record.pop("sidecar")
    assert record == {
        "model": "fraud",
        "container": "model",
        "port": 8080,
        "ports": cluster.original[0]["spec"]["template"]["spec"]["containers"][0]["ports"],
        "case": "A",
        "sidecarPortName": "http",
        "volumeAdded": True,
        "probes": ["readinessProbe.httpGet", "lifecycle.preStop.httpGet"],
        "inputs": '["ml","fraud","v2",8080,"http",8080]',
        "upgrade": None,
        "pullSecrets": [],
        "podAnnotations": [],
    }
    # The sidecar as injected (before the API server's defaults), frozen in the record.
    assert frozen["name"] == SIDECAR_CONTAINER and frozen["image"] == settings.sidecar_image
    assert covers(sidecar, frozen)
    again = settled(cluster, model, settings)
    assert (again.state, again.deployment_patch, again.service_patch) == ("injected", None, None)

    assert remove(cluster) == ["removing", "removed"]
    assert cluster.without_server_fields() == before
    assert json.dumps(cluster.without_server_fields()) == json.dumps(before)  # byte for byte
    again = plan_removal(deployment=cluster.deployment, service=cluster.service)
    assert (again.state, again.deployment_patch, again.service_patch) == ("removed", None, None)


def test_case_b_service_by_number(
    make_cluster: Callable[..., Cluster], model: ObservedModel, settings: OperatorSettings
) -> None:
    cluster = make_cluster(by_name=False)
    before = cluster.original_without_server_fields()
    states = inject(cluster, model, settings)
    assert states == ["injecting", "waiting-for-rollout", "switching-service", "injected"]
    assert cluster.check() == [["sidecar", "model"]]
    model_c = cluster.deployment["spec"]["template"]["spec"]["containers"][0]
    assert model_c == cluster.original[0]["spec"]["template"]["spec"]["containers"][0]
    assert cluster.service["spec"]["ports"][0]["targetPort"] == SIDECAR_PORT_NAME_DEFAULT
    assert cluster.service["spec"]["ports"][1]["targetPort"] == 9100
    assert (
        json.loads(cluster.service["metadata"]["annotations"][SERVICE_ANNOTATION])
        == (cluster.original[1]["spec"]["ports"])
    )
    record = json.loads(cluster.deployment["metadata"]["annotations"][INJECTED_ANNOTATION])
    assert (record["case"], record["sidecarPortName"], record["probes"]) == (
        "B",
        SIDECAR_PORT_NAME_DEFAULT,
        [],
    )
    again = settled(cluster, model, settings)
    assert (again.state, again.deployment_patch, again.service_patch) == ("injected", None, None)

    assert remove(cluster) == ["restoring-service", "removing", "removed"]
    assert cluster.without_server_fields() == before
    assert json.dumps(cluster.without_server_fields()) == json.dumps(before)


def test_the_gap_check_catches_a_service_switched_too_early(
    make_cluster: Callable[..., Cluster], model: ObservedModel, settings: OperatorSettings
) -> None:
    """Pointing the Service at the sidecar mid-rollout leaves old pods without that port."""
    cluster = make_cluster(by_name=False)
    cluster.apply(settled(cluster, model, settings))  # step 1: the template
    assert len(cluster.pods) == 2
    assert settled(cluster, model, settings).state == "waiting-for-rollout"
    early = copy.deepcopy(cluster.service)
    early["spec"]["ports"][0]["targetPort"] = SIDECAR_PORT_NAME_DEFAULT
    cluster.service = early
    with pytest.raises(AssertionError, match="is a gap"):
        cluster.check()


def test_case_b_undone_before_the_service_was_switched(
    make_cluster: Callable[..., Cluster], model: ObservedModel, settings: OperatorSettings
) -> None:
    cluster = make_cluster(by_name=False)
    before = cluster.original_without_server_fields()
    cluster.apply(settled(cluster, model, settings))
    assert remove(cluster) == ["removing", "removed"]
    assert cluster.without_server_fields() == before


def test_mixed_service_moves_the_name_then_switches_the_numbers(
    make_cluster: Callable[..., Cluster], model: ObservedModel, settings: OperatorSettings
) -> None:
    service = target_service(by_name=True)
    service["spec"]["ports"].append({"name": "http-alt", "port": 8080, "targetPort": 8080})
    cluster = make_cluster(service=service, by_name=True)
    before = cluster.original_without_server_fields()
    states = inject(cluster, model, settings)
    assert states == ["injecting", "waiting-for-rollout", "switching-service", "injected"]
    assert [p["targetPort"] for p in cluster.service["spec"]["ports"]] == ["http", 9100, "http"]
    assert cluster.check() == [["sidecar", "model", "sidecar"]]
    assert remove(cluster) == ["restoring-service", "removing", "removed"]
    assert cluster.without_server_fields() == before


def test_spec_and_settings_change_while_injected(
    make_cluster: Callable[..., Cluster],
    make_body: Callable[..., Obj],
    model: ObservedModel,
    settings: OperatorSettings,
) -> None:
    for by_name in (True, False):
        cluster = make_cluster(by_name=by_name)
        before = cluster.original_without_server_fields()
        inject(cluster, model, settings)
        service = copy.deepcopy(cluster.service)
        changed = parse_observed_model(make_body(protocol="openai"))
        newer = replace(
            settings,
            image="registry.example/mlwarden:1.2.4",
            sidecar_image="registry.example/mlwarden-sidecar:1.2.4",
            sidecar_port=15081,
        )
        assert inject(cluster, changed, newer) == ["injecting", "waiting-for-rollout", "injected"]
        assert cluster.service == service  # the name already routes through the sidecar
        sidecar = cluster.deployment["spec"]["template"]["spec"]["containers"][-1]
        env = {e["name"]: e.get("value") for e in sidecar["env"]}
        assert env["MLWARDEN_PROTOCOL"] == "openai"
        assert env["MLWARDEN_LISTEN"] == "0.0.0.0:15081"
        assert sidecar["image"] == "registry.example/mlwarden-sidecar:1.2.4"
        remove(cluster)
        assert cluster.without_server_fields() == before


def test_retarget_undoes_then_injects_anew(
    make_cluster: Callable[..., Cluster],
    make_body: Callable[..., Obj],
    model: ObservedModel,
    settings: OperatorSettings,
) -> None:
    cluster = make_cluster(by_name=True)
    before = cluster.original_without_server_fields()
    inject(cluster, model, settings)
    moved = parse_observed_model(
        make_body(target={"deployment": "fraud-model", "container": "model", "port": 9100})
    )
    states = inject(cluster, moved, settings)
    assert states == [
        "retargeting",  # case A undone first (one template change) ...
        "injecting",  # ... then case B on the metrics port
        "waiting-for-rollout",
        "switching-service",
        "injected",
    ]
    assert cluster.check() == [["model", "sidecar"]]  # now metrics (by number) is captured
    record = json.loads(cluster.deployment["metadata"]["annotations"][INJECTED_ANNOTATION])
    assert (record["port"], record["case"]) == (9100, "B")
    remove(cluster)
    assert cluster.without_server_fields() == before


def test_service_pointed_at_a_lost_port_is_repaired_first(
    make_cluster: Callable[..., Cluster], model: ObservedModel, settings: OperatorSettings
) -> None:
    """Someone re-applied the original template (sidecar gone) after the Service switch."""
    cluster = make_cluster(by_name=False)
    before = cluster.original_without_server_fields()
    inject(cluster, model, settings)
    reverted = copy.deepcopy(cluster.deployment)
    reverted["spec"]["template"] = copy.deepcopy(cluster.original[0]["spec"]["template"])
    cluster.deployment = reverted
    cluster.pods = [cluster.template]
    plan = settled(cluster, model, settings)
    assert plan.state == "repairing"
    assert plan.deployment_patch is None
    cluster.apply(plan)  # checks the gap is closed
    assert inject(cluster, model, settings)[-1] == "injected"
    remove(cluster)
    assert cluster.without_server_fields() == before


def test_quantities_and_defaults_do_not_cause_writes(
    make_cluster: Callable[..., Cluster], model: ObservedModel, settings: OperatorSettings
) -> None:
    wants = replace(settings, sidecar_resources={"requests": {"cpu": "0.05", "memory": "64Mi"}})
    cluster = make_cluster(by_name=True)
    inject(cluster, model, wants)
    sidecar = cluster.deployment["spec"]["template"]["spec"]["containers"][-1]
    sidecar["resources"]["requests"]["cpu"] = "50m"  # how the API server stores 0.05
    plan = settled(cluster, model, wants)
    assert (plan.state, plan.deployment_patch) == ("injected", None)


# --------------------------------------------------------------------------- the pieces


def test_sidecar_container(model: ObservedModel, settings: OperatorSettings) -> None:
    plan = plan_injection(
        deployment=target_deployment(),
        service=target_service(by_name=False),
        model=model,
        settings=settings,
    )
    assert plan.deployment_patch is not None
    pod = plan.deployment_patch["spec"]["template"]["spec"]
    sidecar = pod["containers"][-1]
    assert sidecar["name"] == SIDECAR_CONTAINER
    assert sidecar["image"] == settings.sidecar_image
    assert sidecar["args"] == ["sidecar"]
    assert sidecar["env"] == [
        {"name": "MLWARDEN_LISTEN", "value": "0.0.0.0:18080"},
        {"name": "MLWARDEN_UPSTREAM", "value": "http://127.0.0.1:8080"},
        {"name": "MLWARDEN_ADMIN_LISTEN", "value": "0.0.0.0:18090"},
        {"name": "MLWARDEN_COLLECTOR", "value": "http://fraud-detector.ml.svc:8080"},
        {"name": "MLWARDEN_PROTOCOL", "value": "v2"},
        {"name": "MLWARDEN_OBSERVED_MODEL", "value": f"{MANIFEST_DIR}/{MANIFEST_KEY}"},
        # This model's ingest token, from its own Secret, in the sidecar container only;
        # optional, so the pod still starts once the Secret is gone (an uninstall).
        {
            "name": "MLWARDEN_INGEST_TOKEN",
            "valueFrom": {
                "secretKeyRef": {"name": "fraud-ingest-token", "key": "token", "optional": True}
            },
        },
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        # The revision each record is stamped with: the pod's pod-template-hash label,
        # through the Downward API (one revision per ReplicaSet).
        {
            "name": "MLWARDEN_MODEL_REVISION",
            "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['pod-template-hash']"}},
        },
        # The default grace period of 30 s: preStop 5 + drain 5, 19 s for in-flight requests
        # and the last flush, 1 s before SIGKILL.
        {"name": "MLWARDEN_DRAIN_SECONDS", "value": "5"},
        {"name": "MLWARDEN_SHUTDOWN_TIMEOUT", "value": "19"},
    ]
    assert sidecar["lifecycle"] == {"preStop": {"sleep": {"seconds": 5}}}
    assert sidecar["readinessProbe"] == {"httpGet": {"path": "/readyz", "port": ADMIN_PORT_NAME}}
    assert sidecar["livenessProbe"] == {"httpGet": {"path": "/healthz", "port": ADMIN_PORT_NAME}}
    assert sidecar["resources"] == settings.sidecar_resources
    assert sidecar["securityContext"] == RESTRICTED_SECURITY_CONTEXT
    assert sidecar["volumeMounts"] == [
        {"name": SIDECAR_VOLUME, "mountPath": MANIFEST_DIR, "readOnly": True}
    ]
    # Optional too: without the ConfigMap the volume is empty and the sidecar runs without it.
    assert pod["volumes"][-1] == {
        "name": SIDECAR_VOLUME,
        "configMap": {"name": "fraud-detector", "optional": True},
    }
    # the user's pod annotations (their own Prometheus scrape) are not touched
    assert "metadata" not in plan.deployment_patch["spec"]["template"]
    assert plan.deployment_patch["metadata"]["resourceVersion"] == "900"


def test_planning_is_pure(model: ObservedModel, settings: OperatorSettings) -> None:
    deployment, service = target_deployment(), target_service(by_name=True)
    frozen = copy.deepcopy((deployment, service))
    first = plan_injection(deployment=deployment, service=service, model=model, settings=settings)
    second = plan_injection(deployment=deployment, service=service, model=model, settings=settings)
    assert first == second
    assert (deployment, service) == frozen


def test_defaults_first_container_and_its_first_port(
    make_body: Callable[..., Obj], settings: OperatorSettings
) -> None:
    model = parse_observed_model(make_body(target={"deployment": "fraud-model"}))
    plan = plan_injection(
        deployment=target_deployment(),
        service=target_service(by_name=True),
        model=model,
        settings=settings,
    )
    assert plan.deployment_patch is not None
    record = json.loads(plan.deployment_patch["metadata"]["annotations"][INJECTED_ANNOTATION])
    assert (record["container"], record["port"], record["case"]) == ("model", 8080, "A")


def test_absent_target_port_means_the_port_number(
    model: ObservedModel, settings: OperatorSettings, merge_patch: Patch
) -> None:
    deployment = target_deployment()
    service = target_service(by_name=False)
    service["spec"]["ports"] = [{"name": "http", "port": 8080}]
    step1 = plan_injection(deployment=deployment, service=service, model=model, settings=settings)
    deployment = merge_patch(deployment, step1.deployment_patch)  # no template rollout status
    step2 = plan_injection(deployment=deployment, service=service, model=model, settings=settings)
    assert step2.state == "switching-service"
    switched = merge_patch(service, step2.service_patch)
    assert switched["spec"]["ports"] == [
        {"name": "http", "port": 8080, "targetPort": SIDECAR_PORT_NAME_DEFAULT}
    ]
    undo = plan_removal(deployment=deployment, service=switched)
    assert merge_patch(switched, undo.service_patch) == service | {
        "metadata": {**service["metadata"], "annotations": {}}
    }


def test_removal_with_objects_gone() -> None:
    assert plan_removal(deployment=None, service=None).state == "removed"
    plan = plan_removal(deployment=target_deployment(), service=None)
    assert (plan.state, plan.deployment_patch) == ("removed", None)


def _status(generation: int, replicas: int, updated: int, available: int) -> Obj:
    return {
        "observedGeneration": generation,
        "replicas": replicas,
        "updatedReplicas": updated,
        "availableReplicas": available,
    }


@pytest.mark.parametrize(
    ("status", "generation", "complete"),
    [
        (_status(4, 3, 3, 3), 4, True),
        (_status(3, 3, 3, 3), 4, False),  # the controller has not seen the change yet
        (_status(4, 4, 3, 4), 4, False),  # an old replica is left
        (_status(4, 3, 3, 2), 4, False),  # not all available
        (_status(4, 2, 2, 2), 4, False),  # fewer than spec.replicas
        ({"observedGeneration": 4}, 4, False),  # missing counts are 0
        ({}, 0, False),
    ],
)
def test_rollout_complete(status: Obj, generation: int, complete: bool) -> None:
    deployment = {"metadata": {"generation": generation}, "spec": {"replicas": 3}, "status": status}
    assert rollout_complete(deployment) is complete


def test_rollout_complete_when_scaled_to_zero() -> None:
    scaled_to_zero = {
        "metadata": {"generation": 2},
        "spec": {"replicas": 0},
        "status": {"observedGeneration": 2},
    }
    assert rollout_complete(scaled_to_zero)


# --------------------------------------------------------------------------- webhook


def apply_json_patch(doc: Any, ops: list[Obj]) -> Any:
    """RFC 6902 add, replace and remove (enough for admission patches)."""
    doc = copy.deepcopy(doc)
    for op in ops:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        parent = doc
        for part in parts[:-1]:
            parent = parent[int(part)] if isinstance(parent, list) else parent[part]
        last = parts[-1]
        if op["op"] == "add":
            if isinstance(parent, list):
                if last == "-":
                    parent.append(copy.deepcopy(op["value"]))
                else:
                    parent.insert(int(last), copy.deepcopy(op["value"]))
            else:
                parent[last] = copy.deepcopy(op["value"])
        elif op["op"] == "replace":
            index: Any = int(last) if isinstance(parent, list) else last
            assert index in (range(len(parent)) if isinstance(parent, list) else parent)
            parent[index] = copy.deepcopy(op["value"])
        elif op["op"] == "remove":
            del parent[int(last) if isinstance(parent, list) else last]
        else:
            raise AssertionError(f"unexpected op {op['op']}")
    return doc


@pytest.mark.parametrize("by_name", [True, False], ids=["case-A", "case-B"])
@pytest.mark.parametrize("volumes", [True, False], ids=["volumes", "no-volumes"])
def test_webhook_patch_equals_the_merge_patch(
    by_name: bool,
    volumes: bool,
    model: ObservedModel,
    settings: OperatorSettings,
    merge_patch: Patch,
    valid_kubernetes: Validate,
) -> None:
    deployment = target_deployment()
    if not volumes:
        pod = deployment["spec"]["template"]["spec"]
        del pod["volumes"]
        del pod["containers"][0]["volumeMounts"]
    plan = plan_injection(
        deployment=deployment,
        service=target_service(by_name=by_name),
        model=model,
        settings=settings,
    )
    merged = merge_patch(deployment, plan.deployment_patch)
    template = deployment["spec"]["template"]
    ops = mutate_pod_template(
        template, model=model, settings=settings, service_targets_name="http" if by_name else None
    )
    assert all(op["op"] in ("add", "replace") for op in ops)
    assert apply_json_patch(template, ops) == merged["spec"]["template"]
    pod = {"apiVersion": "v1", "kind": "Pod", **apply_json_patch(template, ops)}
    valid_kubernetes(pod)
    injected_template = merged["spec"]["template"]
    again = mutate_pod_template(
        injected_template, model=model, settings=settings, service_targets_name=None
    )
    assert again == []  # already injected: nothing to do (webhook reinvocation)


def test_webhook_name_must_be_the_model_ports(
    model: ObservedModel, settings: OperatorSettings
) -> None:
    with pytest.raises(InjectionError, match=r"targets port name 'web'.*named 'http'"):
        mutate_pod_template(
            target_deployment()["spec"]["template"],
            model=model,
            settings=settings,
            service_targets_name="web",
        )


# --------------------------------------------------------------------------- errors


def _plan(
    model: ObservedModel,
    settings: OperatorSettings,
    *,
    deployment: Obj | None = None,
    service: Obj | None = None,
) -> InjectionPlan:
    return plan_injection(
        deployment=deployment or target_deployment(),
        service=service or target_service(by_name=True),
        model=model,
        settings=settings,
    )


def test_error_container_not_found(
    make_body: Callable[..., Obj], settings: OperatorSettings
) -> None:
    model = parse_observed_model(
        make_body(target={"deployment": "fraud-model", "container": "server"})
    )
    with pytest.raises(
        InjectionError,
        match=r"Deployment ml/fraud-model: spec.template.spec.containers has no container named "
        r"'server' \(containers: model, log-shipper\)",
    ):
        _plan(model, settings)


def test_error_no_port(make_body: Callable[..., Obj], settings: OperatorSettings) -> None:
    model = parse_observed_model(
        make_body(target={"deployment": "fraud-model", "container": "log-shipper"})
    )
    with pytest.raises(
        InjectionError,
        match=r"Deployment ml/fraud-model: container 'log-shipper' declares no ports "
        r"\(spec.template.spec.containers\[1\].ports\).*set spec.target.port",
    ):
        _plan(model, settings)


def test_error_service_does_not_route_to_the_model(
    model: ObservedModel, settings: OperatorSettings
) -> None:
    service = target_service(by_name=False)
    service["spec"]["ports"] = [{"name": "http", "port": 80, "targetPort": 8081}]
    with pytest.raises(
        InjectionError,
        match=r"Service ml/fraud-model: no entry of spec.ports routes to port 8080 \(name "
        r"'http'\) of container 'model' in Deployment ml/fraud-model \(ports: 80→8081\)",
    ):
        _plan(model, settings, service=service)


def test_error_foreign_sidecar(model: ObservedModel, settings: OperatorSettings) -> None:
    deployment = target_deployment()
    deployment["spec"]["template"]["spec"]["containers"].append(
        {"name": SIDECAR_CONTAINER, "image": "someone/else:1"}
    )
    with pytest.raises(
        InjectionError,
        match=r"Deployment ml/fraud-model: spec.template.spec.containers already has a "
        r"container named 'mlwarden-sidecar' that mlwarden did not put there",
    ):
        _plan(model, settings, deployment=deployment)


def test_error_sidecar_port_collides(model: ObservedModel, settings: OperatorSettings) -> None:
    with pytest.raises(
        InjectionError,
        match=r"Deployment ml/fraud-model: the sidecar's port 9100 collides with "
        r"spec.template.spec.containers\[0\].ports\[1\] of container 'model'",
    ):
        _plan(model, replace(settings, sidecar_admin_port=9100))


def test_error_model_port_is_the_sidecars(
    make_body: Callable[..., Obj], settings: OperatorSettings
) -> None:
    model = parse_observed_model(
        make_body(target={"deployment": "fraud-model", "container": "model", "port": 8080})
    )
    with pytest.raises(InjectionError, match=r"model port 8080 .* is one of the sidecar's ports"):
        _plan(model, replace(settings, sidecar_port=8080))


def test_error_port_name_taken(model: ObservedModel, settings: OperatorSettings) -> None:
    deployment = target_deployment()
    deployment["spec"]["template"]["spec"]["containers"][1]["ports"] = [
        {"name": ADMIN_PORT_NAME, "containerPort": 2020}
    ]
    with pytest.raises(
        InjectionError,
        match=r"the port name 'mlwarden-admin' at spec.template.spec.containers\[1\].ports\[0\]",
    ):
        _plan(model, settings, deployment=deployment)


def test_error_volume_name_taken(model: ObservedModel, settings: OperatorSettings) -> None:
    deployment = target_deployment()
    deployment["spec"]["template"]["spec"]["volumes"].append(
        {"name": SIDECAR_VOLUME, "emptyDir": {}}
    )
    with pytest.raises(InjectionError, match=r"spec.template.spec.volumes already has a volume"):
        _plan(model, settings, deployment=deployment)


def test_error_observed_by_another_model(
    make_body: Callable[..., Obj], model: ObservedModel, settings: OperatorSettings
) -> None:
    plan = _plan(model, settings)
    assert plan.deployment_patch is not None
    deployment = target_deployment()
    deployment["metadata"]["annotations"].update(plan.deployment_patch["metadata"]["annotations"])
    other = parse_observed_model(make_body(name="fraud-v2"))
    with pytest.raises(InjectionError, match=r"already observed by ObservedModel ml/fraud"):
        _plan(other, settings, deployment=deployment)


def test_error_mangled_annotation(model: ObservedModel, settings: OperatorSettings) -> None:
    deployment = target_deployment()
    deployment["metadata"]["annotations"][INJECTED_ANNOTATION] = "{not json"
    with pytest.raises(
        InjectionError,
        match=r"Deployment ml/fraud-model: metadata.annotations\[mlwarden.io/injected\]",
    ):
        plan_removal(deployment=deployment, service=None)
    assert issubclass(injection.InjectionError, ValueError)


def test_error_service_does_not_select_the_pods(
    model: ObservedModel, settings: OperatorSettings
) -> None:
    service = target_service(by_name=True)
    service["spec"]["selector"] = {"app": "fraud-model-canary"}
    with pytest.raises(
        InjectionError,
        match=r"Service ml/fraud-model: spec.selector .* does not select the pods of "
        r"Deployment ml/fraud-model",
    ):
        _plan(model, settings, service=service)


@pytest.mark.parametrize(
    ("by_name", "model_port_name"),
    [(True, ADMIN_PORT_NAME), (True, MODEL_PORT_RENAMED), (False, SIDECAR_PORT_NAME_DEFAULT)],
)
def test_error_model_port_named_like_ours(
    by_name: bool, model_port_name: str, model: ObservedModel, settings: OperatorSettings
) -> None:
    deployment = target_deployment()
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["ports"][0]["name"] = model_port_name
    container["readinessProbe"]["httpGet"]["port"] = 8080
    container["lifecycle"]["preStop"]["httpGet"]["port"] = 8080
    service = target_service(by_name=by_name)
    if by_name:
        service["spec"]["ports"][0]["targetPort"] = model_port_name
    with pytest.raises(InjectionError, match=rf"the port name '{model_port_name}' at "):
        _plan(model, settings, deployment=deployment, service=service)


@pytest.mark.parametrize(
    ("grace", "expected"),
    [
        (None, (5, 5, 19)),  # the API server's default, 30 s
        (30, (5, 5, 19)),
        (120, (5, 5, 109)),  # a long grace period is for requests in flight
        (12, (3, 5, 3)),  # preStop gives way first ...
        (8, (0, 4, 3)),  # ... then the drain
        (2, (0, 0, 1)),
        (0, (0, 0, 1)),
    ],
)
def test_shutdown_fits_the_grace_period(
    settings: OperatorSettings, grace: int | None, expected: tuple[int, int, int]
) -> None:
    timing = shutdown_timing(grace=grace, settings=settings)
    assert (timing.pre_stop, timing.drain, timing.shutdown) == expected
    budget = 30 if grace is None else grace
    assert timing.pre_stop + timing.drain + timing.shutdown < max(budget, 2)
    assert bool(timing.note) == (expected[:2] != (5, 5))


def test_a_short_grace_period_is_kept_and_said(
    model: ObservedModel, settings: OperatorSettings
) -> None:
    deployment = target_deployment()
    deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 8
    plan = plan_injection(
        deployment=deployment, service=target_service(by_name=False), model=model, settings=settings
    )
    assert plan.deployment_patch is not None
    pod = plan.deployment_patch["spec"]["template"]["spec"]
    assert "terminationGracePeriodSeconds" not in pod  # the user's, not ours to change
    sidecar = pod["containers"][-1]
    assert "lifecycle" not in sidecar
    env = {e["name"]: e.get("value") for e in sidecar["env"]}
    assert (env["MLWARDEN_DRAIN_SECONDS"], env["MLWARDEN_SHUTDOWN_TIMEOUT"]) == ("4", "3")
    assert "terminationGracePeriodSeconds 8 leaves the sidecar preStop 0s and drain 4s" in (
        plan.message
    )
    assert "at least 14s" in plan.message


def test_no_prestop_hook_when_turned_off(model: ObservedModel) -> None:
    """Clusters before 1.30 have the sleep action off: the API server would refuse the hook."""
    settings = OperatorSettings.from_env({"MLWARDEN_SIDECAR_PRESTOP_SECONDS": "0"})
    sidecar = sidecar_container(
        model=model, settings=settings, upstream_port=8080, port_name="http"
    )
    assert "lifecycle" not in sidecar
    env = {e["name"]: e.get("value") for e in sidecar["env"]}
    assert (env["MLWARDEN_DRAIN_SECONDS"], env["MLWARDEN_SHUTDOWN_TIMEOUT"]) == ("5", "24")
    with pytest.raises(ValueError, match="MLWARDEN_SIDECAR_DRAIN_SECONDS: must be a whole"):
        OperatorSettings.from_env({"MLWARDEN_SIDECAR_DRAIN_SECONDS": "2.5"})


@pytest.mark.parametrize(
    ("kind", "api_version"),
    [
        ("InferenceService", "serving.kserve.io/v1beta1"),  # KServe raw deployment mode
        ("SeldonDeployment", "machinelearning.seldon.io/v1"),
        ("Canary", "flagger.app/v1beta1"),  # Flagger's -primary
        ("Rollout", "argoproj.io/v1alpha1"),  # Argo Rollouts' workloadRef
    ],
)
def test_error_deployment_with_a_controller_owner(
    kind: str, api_version: str, model: ObservedModel, settings: OperatorSettings
) -> None:
    deployment = target_deployment()
    owner = {
        "apiVersion": api_version,
        "kind": kind,
        "name": "fraud",
        "uid": "u",
        "controller": True,
    }
    deployment["metadata"]["ownerReferences"] = [owner]
    with pytest.raises(InjectionError, match=rf"names {kind} 'fraud' .* as its controller") as e:
        _plan(model, settings, deployment=deployment)
    assert e.value.reason == "ControlledDeployment"
    # An owner that is not the controller (a plain reference) is no reason to refuse.
    deployment["metadata"]["ownerReferences"] = [{**owner, "controller": False}]
    assert _plan(model, settings, deployment=deployment).state == "injecting"


def test_error_service_also_selects_another_deployments_pods() -> None:
    mine = target_deployment()
    canary = copy.deepcopy(mine)
    canary["metadata"]["name"] = "fraud-model-canary"
    canary["spec"]["template"]["metadata"]["labels"] = {"app": "fraud-model", "track": "canary"}
    elsewhere = copy.deepcopy(mine)
    elsewhere["metadata"]["name"] = "other-model"
    elsewhere["spec"]["template"]["metadata"]["labels"] = {"app": "other-model"}
    service = target_service(by_name=True)
    everything = [mine, canary, elsewhere]
    assert injection.other_selected(service=service, deployment=mine, deployments=everything) == [
        "fraud-model-canary"
    ]
    with pytest.raises(
        InjectionError, match=r"also selects the pods of Deployment fraud-model-c"
    ) as e:
        injection.check_selects_only(service=service, deployment=mine, deployments=everything)
    assert e.value.reason == "ServiceSelectsOtherPods"
    injection.check_selects_only(service=service, deployment=mine, deployments=[mine, elsewhere])


# --------------------------------------------------------------------------- no surprise restarts


def upgraded_operator(settings: OperatorSettings) -> OperatorSettings:
    """The operator after an upgrade: a new image, new defaults, other ports."""
    return replace(
        settings,
        image="registry.example/mlwarden:2.0.0",
        sidecar_image="registry.example/mlwarden-sidecar:2.0.0",
        image_pull_policy="Always",
        sidecar_port=19080,
        sidecar_admin_port=19090,
        sidecar_resources={
            "requests": {"cpu": "80m", "memory": "96Mi"},
            "limits": {"memory": "1Gi"},
        },
    )


@pytest.mark.parametrize("by_name", [True, False])
def test_a_changed_operator_leaves_an_injected_sidecar_alone(
    by_name: bool,
    make_cluster: Callable[..., Cluster],
    model: ObservedModel,
    settings: OperatorSettings,
) -> None:
    cluster = make_cluster(by_name=by_name)
    inject(cluster, model, settings)
    plan = settled(cluster, model, upgraded_operator(settings))
    assert (plan.state, plan.deployment_patch, plan.service_patch) == ("injected", None, None)
    # An upgrade the caller holds back (another model's upgrade is rolling) changes nothing.
    plan = plan_injection(
        deployment=cluster.deployment,
        service=cluster.service,
        model=model,
        settings=upgraded_operator(settings),
        upgrade="2",
        upgrade_now=False,
    )
    assert (plan.state, plan.deployment_patch) == ("injected", None)


def test_an_upgrade_asked_for_renders_the_sidecar_once(
    make_cluster: Callable[..., Cluster], model: ObservedModel, settings: OperatorSettings
) -> None:
    cluster = make_cluster(by_name=True)
    inject(cluster, model, settings)
    new = upgraded_operator(settings)
    states: list[str] = []
    for _ in range(5):
        plan = plan_injection(deployment=cluster.deployment, service=cluster.service,
                              model=model, settings=new, upgrade="2026-12-01")  # fmt: skip
        states.append(plan.state)
        if plan.done:
            break
        if plan.deployment_patch is None:
            cluster.finish_rollout()
        cluster.apply(plan)
    assert states == ["injecting", "waiting-for-rollout", "injected"]
    sidecar = cluster.deployment["spec"]["template"]["spec"]["containers"][-1]
    assert (sidecar["image"], sidecar["ports"][0]["containerPort"]) == (new.sidecar_image, 19080)
    assert cluster.check() == [["sidecar", "model"]]
    record = injection.read_record(cluster.deployment)
    assert record is not None and record.upgrade == "2026-12-01"
    assert not injection.upgrade_requested(cluster.deployment, "2026-12-01")
    assert injection.upgrade_requested(cluster.deployment, "again")
    # Frozen again: the operator before the upgrade does not take it back.
    assert settled(cluster, model, settings).deployment_patch is None
    assert remove(cluster)[-1] == "removed"
    assert cluster.without_server_fields() == cluster.original_without_server_fields()


def test_a_sidecar_frozen_without_the_revision_variable_gets_it_on_upgrade_only(
    make_cluster: Callable[..., Cluster], model: ObservedModel, settings: OperatorSettings
) -> None:
    """Injections made before the sidecar took its revision from the pod do not roll for it:
    the variable comes with the next upgrade asked for (sidecar.mlwarden.io/upgrade)."""
    cluster = make_cluster(by_name=True)
    inject(cluster, model, settings)
    record = injection.read_record(cluster.deployment)
    assert record is not None and record.sidecar is not None

    def without_revision(container: Obj) -> Obj:
        env = [e for e in container["env"] if e["name"] != "MLWARDEN_MODEL_REVISION"]
        assert len(env) == len(container["env"]) - 1
        return {**container, "env": env}

    old = without_revision(record.sidecar)
    template = cluster.deployment["spec"]["template"]
    template["spec"]["containers"][-1] = without_revision(template["spec"]["containers"][-1])
    cluster.deployment["metadata"]["annotations"]["mlwarden.io/injected"] = replace(
        record, sidecar=old
    ).to_annotation()
    plan = settled(cluster, model, settings)
    assert (plan.state, plan.deployment_patch) == ("injected", None)
    for _ in range(5):
        plan = plan_injection(deployment=cluster.deployment, service=cluster.service,
                              model=model, settings=settings, upgrade="rev")  # fmt: skip
        if plan.done:
            break
        if plan.deployment_patch is None:
            cluster.finish_rollout()
        cluster.apply(plan)
    sidecar = cluster.deployment["spec"]["template"]["spec"]["containers"][-1]
    env = {e["name"]: e for e in sidecar["env"]}
    assert env["MLWARDEN_MODEL_REVISION"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.labels['pod-template-hash']"
    )


def test_a_spec_change_the_sidecar_follows_renders_it_anew(
    make_cluster: Callable[..., Cluster], make_body: Callable[..., Obj], settings: OperatorSettings
) -> None:
    """The pods roll for the new protocol anyway: that rollout takes the current sidecar."""
    cluster = make_cluster(by_name=True)
    inject(cluster, parse_observed_model(make_body()), settings)
    new = upgraded_operator(settings)
    v1 = parse_observed_model(make_body(protocol="v1"))
    plan = settled(cluster, v1, new)
    assert plan.state == "injecting" and plan.deployment_patch is not None
    sidecar = plan.deployment_patch["spec"]["template"]["spec"]["containers"][-1]
    assert sidecar["image"] == new.sidecar_image
    assert {"name": "MLWARDEN_PROTOCOL", "value": "v1"} in sidecar["env"]


def test_a_record_without_a_frozen_sidecar_freezes_the_running_one(
    make_cluster: Callable[..., Cluster], model: ObservedModel, settings: OperatorSettings
) -> None:
    """Injected by an operator that froze nothing: the record is completed, no pod restarts."""
    cluster = make_cluster(by_name=True)
    inject(cluster, model, settings)
    meta = cluster.deployment["metadata"]
    old = json.loads(meta["annotations"][INJECTED_ANNOTATION])
    for key in ("sidecar", "inputs", "upgrade", "pullSecrets", "podAnnotations"):
        del old[key]
    meta["annotations"][INJECTED_ANNOTATION] = json.dumps(old)
    plan = settled(cluster, model, upgraded_operator(settings))
    assert plan.deployment_patch is not None and "spec" not in plan.deployment_patch
    cluster.apply(plan)
    record = injection.read_record(cluster.deployment)
    assert record is not None and record.sidecar is not None
    assert (
        record.sidecar["image"] == settings.sidecar_image
    )  # the one running, not the new operator's
    assert settled(cluster, model, upgraded_operator(settings)).state == "injected"


def test_a_recreate_deployment_waits_for_approval(
    make_body: Callable[..., Obj], settings: OperatorSettings
) -> None:
    deployment = target_deployment()
    deployment["spec"]["strategy"] = {"type": "Recreate"}
    model = parse_observed_model(make_body())
    plan = plan_injection(deployment=deployment, service=target_service(by_name=True),
                          model=model, settings=settings)  # fmt: skip
    assert (plan.state, plan.deployment_patch, plan.service_patch) == (
        "awaiting-approval", None, None)  # fmt: skip
    assert "strategy Recreate" in plan.message
    assert "kubectl annotate om fraud -n ml mlwarden.io/approve=inject-fraud-model --overwrite" in (
        plan.message
    )
    approved = plan_injection(deployment=deployment, service=target_service(by_name=True),
                              model=model, settings=settings,
                              approvals=frozenset({"inject-fraud-model"}))  # fmt: skip
    assert approved.state == "injecting" and approved.deployment_patch is not None
    target = {"deployment": "fraud-model", "container": "model", "allowRecreate": True}
    opted_in = parse_observed_model(make_body(target=target))
    assert opted_in.spec.target.allow_recreate is True
    plan = plan_injection(deployment=deployment, service=target_service(by_name=True),
                          model=opted_in, settings=settings)  # fmt: skip
    assert plan.state == "injecting"


def test_a_stalled_rollout_is_reported(
    make_cluster: Callable[..., Cluster], model: ObservedModel, settings: OperatorSettings
) -> None:
    cluster = make_cluster(by_name=False)
    cluster.apply(settled(cluster, model, settings))
    assert settled(cluster, model, settings).state == "waiting-for-rollout"
    cluster.deployment["status"]["conditions"] = [
        {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
        {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
         "message": 'ReplicaSet "fraud-model-7d9" has timed out progressing.'},
    ]  # fmt: skip
    plan = settled(cluster, model, settings)
    assert (plan.state, plan.deployment_patch, plan.service_patch) == (
        "rollout-stalled", None, None)  # fmt: skip
    assert "ProgressDeadlineExceeded" in plan.message and "fraud-model-7d9" in plan.message
    # A condition from before the current template was observed says nothing about it.
    cluster.deployment["metadata"]["generation"] += 1
    assert injection.rollout_stalled(cluster.deployment) is None


# --------------------------------------------------------------------------- pods start everywhere


def test_default_ports_are_clear_of_istio() -> None:
    d = OperatorSettings()
    assert d.sidecar_port not in ISTIO_PORTS and d.sidecar_admin_port not in ISTIO_PORTS


@pytest.mark.parametrize(
    ("namespace_labels", "template_meta", "istio"),
    [
        ({"istio-injection": "enabled"}, {}, True),
        ({"istio.io/rev": "1-22"}, {}, True),
        ({"istio-injection": "disabled", "istio.io/rev": "1-22"}, {}, False),
        ({}, {"annotations": {"sidecar.istio.io/inject": "true"}}, True),
        ({}, {"labels": {"sidecar.istio.io/inject": "true"}}, True),
        ({}, {"labels": {"istio.io/rev": "canary"}}, True),
        ({"istio-injection": "enabled"}, {"labels": {"sidecar.istio.io/inject": "false"}}, False),
        ({}, {}, False),
    ],
)
def test_istio_injection_is_detected(
    namespace_labels: dict[str, str], template_meta: Obj, istio: bool
) -> None:
    assert (injection.istio_injection(namespace_labels, template_meta) is not None) == istio


def test_istio_ports_are_refused_when_istio_injects(
    model: ObservedModel, settings: OperatorSettings
) -> None:
    old_defaults = replace(settings, sidecar_port=15080, sidecar_admin_port=15090)
    args = {"deployment": target_deployment(), "service": target_service(by_name=True),
            "model": model}  # fmt: skip
    with pytest.raises(InjectionError) as err:
        plan_injection(
            **args, settings=old_defaults, namespace_labels={"istio-injection": "enabled"}
        )
    message = str(err.value)
    assert "Istio" in message and "[15080, 15090]" in message and "sidecar.adminPort" in message
    # Without Istio in the pod those ports are the operator's to choose.
    assert plan_injection(**args, settings=old_defaults).state == "injecting"


def test_istio_pods_get_the_admin_port_excluded_and_it_is_undone_exactly(
    make_cluster: Callable[..., Cluster], model: ObservedModel, settings: OperatorSettings
) -> None:
    deployment = target_deployment()
    deployment["spec"]["template"]["metadata"]["annotations"].update(
        {"sidecar.istio.io/inject": "true", injection.ISTIO_EXCLUDE_INBOUND: "9100"}
    )
    cluster = make_cluster(deployment, by_name=False)
    inject(cluster, model, settings)
    annotations = cluster.deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations[injection.ISTIO_EXCLUDE_INBOUND] == f"9100,{settings.sidecar_admin_port}"
    record = injection.read_record(cluster.deployment)
    assert record is not None
    assert record.pod_annotations == ((injection.ISTIO_EXCLUDE_INBOUND, "9100",
                                       f"9100,{settings.sidecar_admin_port}"),)  # fmt: skip
    assert settled(cluster, model, upgraded_operator(settings)).state == "injected"
    remove(cluster)
    assert cluster.without_server_fields() == cluster.original_without_server_fields()


def test_istio_namespace_without_the_annotation_gets_it_and_loses_it(
    make_cluster: Callable[..., Cluster], model: ObservedModel, settings: OperatorSettings
) -> None:
    cluster = make_cluster(by_name=True)
    plan = plan_injection(
        deployment=cluster.deployment,
        service=cluster.service,
        model=model,
        settings=settings,
        namespace_labels={"istio-injection": "enabled"},
    )
    assert plan.deployment_patch is not None
    assert plan.deployment_patch["spec"]["template"]["metadata"] == {
        "annotations": {injection.ISTIO_EXCLUDE_INBOUND: str(settings.sidecar_admin_port)}
    }
    assert "Istio injects these pods" in plan.message
    cluster.apply(plan)
    removal = plan_removal(deployment=cluster.deployment, service=cluster.service)
    assert removal.deployment_patch is not None
    assert removal.deployment_patch["spec"]["template"]["metadata"] == {
        "annotations": {injection.ISTIO_EXCLUDE_INBOUND: None}
    }
    cluster.apply(removal)
    assert cluster.without_server_fields() == cluster.original_without_server_fields()


def test_pull_secrets_are_added_and_only_those_removed(
    make_cluster: Callable[..., Cluster], model: ObservedModel, settings: OperatorSettings
) -> None:
    deployment = target_deployment()
    deployment["spec"]["template"]["spec"]["imagePullSecrets"] = [{"name": "team-registry"}]
    cluster = make_cluster(deployment, by_name=False)
    with_secrets = replace(settings, image_pull_secrets=("mlwarden-registry", "team-registry"))
    inject(cluster, model, with_secrets)
    pod = cluster.deployment["spec"]["template"]["spec"]
    assert pod["imagePullSecrets"] == [{"name": "team-registry"}, {"name": "mlwarden-registry"}]
    record = injection.read_record(cluster.deployment)
    assert record is not None and record.pull_secrets == ("mlwarden-registry",)
    assert settled(cluster, model, settings).state == "injected"  # frozen with the record
    remove(cluster)
    assert cluster.without_server_fields() == cluster.original_without_server_fields()


def test_pull_secrets_on_a_pod_without_any_are_removed_with_the_field(
    make_cluster: Callable[..., Cluster], model: ObservedModel, settings: OperatorSettings
) -> None:
    cluster = make_cluster(by_name=True)
    inject(cluster, model, replace(settings, image_pull_secrets=("regcred",)))
    assert cluster.deployment["spec"]["template"]["spec"]["imagePullSecrets"] == [
        {"name": "regcred"}
    ]
    remove(cluster)
    assert "imagePullSecrets" not in cluster.deployment["spec"]["template"]["spec"]
    assert cluster.without_server_fields() == cluster.original_without_server_fields()


def test_no_fixed_uid_unless_the_pod_runs_as_root(
    model: ObservedModel, settings: OperatorSettings
) -> None:
    assert "runAsUser" not in RESTRICTED_SECURITY_CONTEXT
    assert RESTRICTED_SECURITY_CONTEXT["runAsNonRoot"] is True

    def sidecar_of(deployment: Obj) -> Obj:
        plan = plan_injection(deployment=deployment, service=target_service(by_name=True),
                              model=model, settings=settings)  # fmt: skip
        assert plan.deployment_patch is not None
        return dict(plan.deployment_patch["spec"]["template"]["spec"]["containers"][-1])

    assert "runAsUser" not in sidecar_of(target_deployment())["securityContext"]
    root = target_deployment()
    root["spec"]["template"]["spec"]["securityContext"] = {"runAsUser": 0}
    assert sidecar_of(root)["securityContext"]["runAsUser"] == IMAGE_UID


def test_a_person_s_edit_of_the_excluded_ports_is_kept(
    make_cluster: Callable[..., Cluster], model: ObservedModel, settings: OperatorSettings
) -> None:
    deployment = target_deployment()
    deployment["spec"]["template"]["metadata"]["annotations"][injection.ISTIO_INJECT] = "true"
    cluster = make_cluster(deployment, by_name=True)
    inject(cluster, model, settings)
    annotations = cluster.deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations[injection.ISTIO_EXCLUDE_INBOUND] == "18090"
    annotations[injection.ISTIO_EXCLUDE_INBOUND] = "18090,9100"  # a person adds a port
    plan = settled(cluster, model, settings)
    assert plan.deployment_patch is None or "spec" not in plan.deployment_patch
    cluster.apply(plan)
    assert annotations == cluster.deployment["spec"]["template"]["metadata"]["annotations"]
    remove(cluster)
    after = cluster.deployment["spec"]["template"]["metadata"]["annotations"]
    assert after[injection.ISTIO_EXCLUDE_INBOUND] == "9100"  # theirs kept, ours gone


def test_a_frozen_sidecar_is_not_judged_by_the_new_operator_s_settings(
    make_cluster: Callable[..., Cluster], model: ObservedModel, settings: OperatorSettings
) -> None:
    """Istio arriving in the namespace later, or a new port setting, rolls nothing by itself."""
    cluster = make_cluster(by_name=True)
    inject(cluster, model, settings)
    istio_ports = replace(settings, sidecar_port=15080, sidecar_admin_port=15090)
    istio = {"istio-injection": "enabled"}
    args = {"deployment": cluster.deployment, "service": cluster.service, "model": model,
            "settings": istio_ports, "namespace_labels": istio}  # fmt: skip
    plan = plan_injection(**args)
    assert (plan.state, plan.deployment_patch) == ("injected", None)
    # An upgrade asked for renders anew, and is refused with what to change.
    with pytest.raises(InjectionError, match="Istio injects its proxy"):
        plan_injection(**args, upgrade="1")


@pytest.mark.parametrize("by_name", [True, False])
@pytest.mark.parametrize("by_label", [True, False])
def test_webhook_patch_equals_the_merge_patch_with_istio_and_pull_secrets(
    by_name: bool,
    by_label: bool,
    model: ObservedModel,
    settings: OperatorSettings,
    merge_patch: Patch,
) -> None:
    deployment = target_deployment()
    template_meta = deployment["spec"]["template"]["metadata"]
    if by_label:  # and no annotations at all: the patch adds the map
        del template_meta["annotations"]
        template_meta["labels"][injection.ISTIO_INJECT] = "true"
    else:
        template_meta["annotations"][injection.ISTIO_INJECT] = "true"
    deployment["spec"]["template"]["spec"]["imagePullSecrets"] = [{"name": "team"}]
    with_secrets = replace(settings, image_pull_secrets=("regcred", "team"))
    plan = plan_injection(deployment=deployment, service=target_service(by_name=by_name),
                          model=model, settings=with_secrets)  # fmt: skip
    merged = merge_patch(deployment, plan.deployment_patch)
    template = deployment["spec"]["template"]
    ops = mutate_pod_template(template, model=model, settings=with_secrets,
                              service_targets_name="http" if by_name else None)  # fmt: skip
    assert apply_json_patch(template, ops) == merged["spec"]["template"]
    pod = merged["spec"]["template"]
    assert pod["spec"]["imagePullSecrets"] == [{"name": "team"}, {"name": "regcred"}]
    assert pod["metadata"]["annotations"][injection.ISTIO_EXCLUDE_INBOUND] == "18090"


@pytest.mark.parametrize(
    ("image", "sidecar"),
    [
        ("mlwarden/mlwarden:0.1.0", "mlwarden/mlwarden-sidecar:0.1.0"),
        ("registry:5000/ml/mlwarden:1.2", "registry:5000/ml/mlwarden-sidecar:1.2"),
        ("registry:5000/ml/mlwarden", "registry:5000/ml/mlwarden-sidecar"),
        ("mlwarden/mlwarden@sha256:" + "a" * 64, "mlwarden/mlwarden@sha256:" + "a" * 64),
    ],
)
def test_the_sidecar_image_is_the_slim_one_beside_the_operator_image(
    image: str, sidecar: str
) -> None:
    assert OperatorSettings.from_env({"MLWARDEN_IMAGE": image}).sidecar_image == sidecar
    explicit = {"MLWARDEN_IMAGE": image, "MLWARDEN_SIDECAR_IMAGE": "x/y:z"}
    assert OperatorSettings.from_env(explicit).sidecar_image == "x/y:z"
    assert OperatorSettings.from_env({}).sidecar_image == OperatorSettings().sidecar_image
