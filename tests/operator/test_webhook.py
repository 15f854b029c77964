"""Webhook mode: the real operator process serves admission reviews over HTTPS.

The operator runs as the chart runs it with `injection: webhook` (MLWARDEN_INJECTION=webhook,
the certificate and key of a Secret as files), against the API emulator; the tests are the API
server: they POST AdmissionReview v1 requests to its webhook path over HTTPS, trusting only
the test CA, and read the answer as the API server does (a base64 JSONPatch).
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import ssl
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from cluster import (
    DEPLOYMENTS,
    FAST,
    NS,
    OM,
    OPERATOR_CALLS,
    ApiCall,
    Cluster,
    Fault,
    api_call,
    eventually,
    exists,
    free_port,
    model_deployment,
    model_service,
    obj,
    observed_model,
    status,
)
from emulate_admission import MUTATING_WEBHOOKS, apply_json_patch, declare_admission
from emulate_kinds import ROLLOUTS, STATEFULSETS
from kubernetes_validate import validate
from test_kinds import workload

from mlwarden.names import revision_field
from mlwarden.operator import injection
from mlwarden.operator.handlers import FINALIZER
from mlwarden.operator.settings import OperatorSettings
from mlwarden.operator.webhook import INJECT_LABEL, WEBHOOK_ID
from mlwarden.patches import apply_merge_patch
from mlwarden.spec import parse_observed_model


def make_certificates(directory: Path, *, sans: str = "IP:127.0.0.1,DNS:localhost") -> Path:
    """A test CA and a server certificate it signed (tls.crt, tls.key), as a Secret holds them."""
    directory.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run = lambda *args: subprocess.run(["openssl", *args], cwd=directory, check=True,  # noqa: E731
                                       capture_output=True)  # fmt: skip
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "1",
        "-subj", "/CN=mlwarden-test-ca", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign")  # fmt: skip
    run("req", *ec, "-keyout", "tls.key", "-out", "tls.csr", "-subj", "/CN=mlwarden-webhook")
    (directory / "san.ext").write_text(f"subjectAltName={sans}\n")
    run("x509", "-req", "-in", "tls.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "tls.crt", "-days", "1", "-extfile", "san.ext")  # fmt: skip
    return directory


class Webhook:
    """The API server's side of the operator's admission webhook."""

    def __init__(self, port: int, ca: Path) -> None:
        self.url = f"https://127.0.0.1:{port}/{WEBHOOK_ID}"
        self.tls = ssl.create_default_context(cafile=str(ca))

    async def review(self, deployment: dict[str, Any], operation: str = "CREATE") -> dict[str, Any]:
        """POST one AdmissionReview v1; its response."""
        uid = str(uuid.uuid4())
        review = {
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": uid, "operation": operation,
                "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
                "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
                "requestKind": {"group": "apps", "version": "v1", "kind": "Deployment"},
                "requestResource": {"group": "apps", "version": "v1", "resource": "deployments"},
                "name": deployment["metadata"]["name"], "namespace": NS,
                "userInfo": {"username": "system:serviceaccount:ci:deployer"},
                "object": deployment,
                "oldObject": deployment if operation == "UPDATE" else None,
                "dryRun": False,
                "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
            },
        }  # fmt: skip
        async with aiohttp.ClientSession() as http, http.post(
            self.url, json=review, ssl=self.tls, timeout=aiohttp.ClientTimeout(total=10)
        ) as resp:  # fmt: skip
            assert resp.status == 200, await resp.text()
            answer = await resp.json()
        assert answer["apiVersion"] == "admission.k8s.io/v1"
        assert answer["kind"] == "AdmissionReview"
        assert answer["response"]["uid"] == uid
        assert answer["response"]["allowed"] is True, answer
        return dict(answer["response"])

    async def admitted(self, deployment: dict[str, Any], operation: str = "CREATE") -> Any:
        """The Deployment as the API server would store it after this webhook."""
        response = await self.review(deployment, operation)
        if "patch" not in response:
            return deployment
        assert response["patchType"] == "JSONPatch"
        ops = json.loads(base64.b64decode(response["patch"]))
        return apply_json_patch(deployment, ops)

    async def listening(self) -> bool:
        try:
            async with aiohttp.ClientSession() as http, http.post(
                self.url, data=b"{}", ssl=self.tls, timeout=aiohttp.ClientTimeout(total=2)
            ):  # fmt: skip
                return True
        except aiohttp.ClientConnectorError:
            return False


OPERATOR_ENV = {"MLWARDEN_IMAGE": "mlwarden/mlwarden:test"}  # as conftest starts it


def labelled(deployment: dict[str, Any], model: str) -> dict[str, Any]:
    deployment["metadata"]["labels"][INJECT_LABEL] = model
    return deployment


async def start_webhook(tmp_path: Path, start_operator: Callable[..., Any]) -> tuple[Any, Webhook]:
    certs = make_certificates(tmp_path / "certs")
    port = free_port()
    op = await start_operator(env={
        "MLWARDEN_INJECTION": "webhook", "MLWARDEN_WEBHOOK_PORT": str(port),
        "MLWARDEN_WEBHOOK_CERT": str(certs / "tls.crt"),
        "MLWARDEN_WEBHOOK_KEY": str(certs / "tls.key"),
    })  # fmt: skip
    webhook = Webhook(port, certs / "ca.crt")
    deadline = asyncio.get_running_loop().time() + 20
    while not await webhook.listening():
        assert op.proc.returncode is None, op.log()
        assert asyncio.get_running_loop().time() < deadline, op.log()
        await asyncio.sleep(0.2)
    return op, webhook


def om_gets(name: str) -> int:
    """GETs of this ObservedModel the operator has made (all tests' operators: names differ)."""
    return OPERATOR_CALLS.count(ApiCall("get", "mlwarden.io", "observedmodels", NS, name))


def reconciled(api: Cluster, name: str) -> bool:
    """The operator has handled this ObservedModel (so its watch, and index, have seen it)."""
    return FINALIZER in (obj(api, OM, name)["metadata"].get("finalizers") or [])


async def test_a_labelled_deployment_is_injected_over_https_as_patch_mode_would(
    cluster: tuple[Cluster, str], start_operator: Callable[..., Any], seed: Callable[..., None],
    tmp_path: Path,
) -> None:  # fmt: skip
    api, _ = cluster
    om, service = observed_model(), model_service()
    # "other" targets a Deployment opted in the old way, with an annotation only.
    annotated = model_deployment("other-model")
    annotated["metadata"]["annotations"] = {INJECT_LABEL: "other"}
    seed(api, om, service, observed_model("other", target="other-model"), annotated,
         model_service("other-model"))  # fmt: skip
    op, webhook = await start_webhook(tmp_path, start_operator)
    await eventually(lambda: reconciled(api, "fraud") and reconciled(api, "other"))

    gets_before = (om_gets("fraud"), om_gets("missing"))
    deployment = labelled(model_deployment(), "fraud")
    admitted = await webhook.admitted(deployment)
    plan = injection.plan_injection(deployment=deployment, service=service,
                                    model=parse_observed_model(om),
                                    settings=OperatorSettings.from_env(OPERATOR_ENV))  # fmt: skip
    assert plan.deployment_patch is not None
    by_patch = apply_merge_patch(deployment, plan.deployment_patch)
    by_patch["metadata"].pop("resourceVersion", None)
    admitted["metadata"].pop("resourceVersion", None)
    assert json.dumps(admitted["spec"], sort_keys=True) == json.dumps(
        by_patch["spec"], sort_keys=True
    )
    containers = admitted["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["model", "mlwarden-sidecar"]
    # The revision from the pod's pod-template-hash (Downward API), as in patch mode.
    assert {
        "name": "MLWARDEN_MODEL_REVISION",
        "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['pod-template-hash']"}},
    } in containers[1]["env"]
    validate({k: v for k, v in admitted.items() if k != "status"}, "1.30", strict=True)
    # Admitting the injected Deployment again (an UPDATE) changes nothing: no double sidecar.
    assert await webhook.admitted(admitted, "UPDATE") == admitted

    # Not labelled (the old annotation alone included): admitted unchanged.
    plain = model_deployment()
    plain["metadata"]["annotations"] = {INJECT_LABEL: "fraud"}
    assert "patch" not in await webhook.review(plain)
    # Labelled for a model that targets another Deployment, or for no model: unchanged.
    for model in ("other", "missing"):
        assert "patch" not in await webhook.review(labelled(model_deployment(), model)), model
    # The API fails while the webhook reads it: the Deployment is admitted unchanged, never
    # refused (a handler error would answer `allowed: false`, which the API server enforces).
    # The operator's handlers read Services too, with the same client and token (the
    # reconciles of "fraud" and "other" may still be running: only their finalizers were
    # awaited), so a one-shot fault could be theirs. The fault names the webhook's Service
    # and lasts as long as this one review; the webhook's log says the 500 was its own read.
    failing = Fault(verb="get", resource="services", status=500, times=sys.maxsize,
                    name="fraud-model")  # fmt: skip
    api.faults = [failing]
    try:
        review = await webhook.review(labelled(model_deployment(), "fraud"))
    finally:
        api.faults = []
    assert failing.hits and "patch" not in review, review
    failed = [line for line in op.log().splitlines() if "the webhook failed" in line]
    assert len(failed) == 1, failed
    assert "Deployment test/fraud-model: admitted unchanged" in failed[0], failed
    assert "GET" in failed[0] and "/services/fraud-model: HTTP 500" in failed[0], failed

    # The ObservedModel says what is missing.
    wanted = f"label it {INJECT_LABEL}=other"
    await eventually(lambda: wanted in status(api, "other")["injection"]["message"], what=wanted)
    # The reviews read ObservedModels from the operator's watch (a kopf index), not with a GET
    # each; only a name the index lacks is confirmed with one.
    assert (om_gets("fraud"), om_gets("missing")) == (gets_before[0], gets_before[1] + 1)


async def test_no_injection_for_an_observed_model_being_deleted_or_gone(
    cluster: tuple[Cluster, str], start_operator: Callable[..., Any], seed: Callable[..., None],
    tmp_path: Path,
) -> None:  # fmt: skip
    api, server = cluster
    held = observed_model()
    held["metadata"]["finalizers"] = ["example.com/hold"]  # someone else's: deletion waits
    seed(api, held, model_service())
    _, webhook = await start_webhook(tmp_path, start_operator)
    await eventually(lambda: reconciled(api, "fraud"))
    assert "patch" in await webhook.review(labelled(model_deployment(), "fraud"))

    om_path = f"/apis/mlwarden.io/v1alpha1/namespaces/{NS}/observedmodels/fraud"
    await api_call(server, "DELETE", om_path)
    # The operator has handled the deletion (its finalizer is gone; the other one holds it).
    await eventually(lambda: obj(api, OM, "fraud")["metadata"].get("deletionTimestamp")
                     and not reconciled(api, "fraud"), what="deletion handled")  # fmt: skip
    for operation in ("CREATE", "UPDATE"):
        review = await webhook.review(labelled(model_deployment(), "fraud"), operation)
        assert "patch" not in review, operation

    # Gone altogether.
    await api_call(server, "PATCH", om_path, {"metadata": {"finalizers": []}},
                   "application/merge-patch+json")  # fmt: skip
    await eventually(lambda: not exists(api, OM, "fraud"), what="ObservedModel gone")
    assert "patch" not in await webhook.review(labelled(model_deployment(), "fraud"), "UPDATE")


def test_webhook_mode_does_not_start_without_a_certificate(tmp_path: Path) -> None:
    """kopf's self-signed fallback would differ per replica and match no caBundle: refuse."""
    env = {"MLWARDEN_INJECTION": "webhook", "MLWARDEN_IMAGE": "mlwarden/mlwarden:test",
           "PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path)}  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "mlwarden.cli", "operator", "--standalone"],
                          env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "MLWARDEN_WEBHOOK_CERT and MLWARDEN_WEBHOOK_KEY not set" in done.stderr
    env["MLWARDEN_WEBHOOK_CERT"] = env["MLWARDEN_WEBHOOK_KEY"] = str(tmp_path / "absent.pem")
    done = subprocess.run([sys.executable, "-m", "mlwarden.cli", "operator", "--standalone"],
                          env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "is not a file (is the certificate Secret mounted?)" in done.stderr


CHART = Path(__file__).resolve().parents[2] / "charts" / "mlwarden"
RELEASE_NS = "mlwarden-system"


def chart_objects(values: dict[str, Any]) -> list[dict[str, Any]]:
    """What `helm install mlwarden charts/mlwarden -n mlwarden-system` creates, by the real Helm."""
    helm = pytest.importorskip("helm_python", reason="helm-python-sdk is not installed")
    with helm.Chart.load(CHART) as chart:
        manifests = chart.render(values, name="mlwarden", namespace=RELEASE_NS, is_install=True)
    texts = [t for p, t in manifests.items() if not p.endswith("NOTES.txt")]
    return [d for text in texts for d in yaml.safe_load_all(text) if d]


def containers(api: Cluster, name: str) -> list[str]:
    return [
        c["name"] for c in obj(api, DEPLOYMENTS, name)["spec"]["template"]["spec"]["containers"]
    ]


async def test_admission_through_the_api_server_with_the_charts_configuration_and_certificate(
    cluster: tuple[Cluster, str], start_operator: Callable[..., Any], seed: Callable[..., None],
    tmp_path: Path,
) -> None:  # fmt: skip
    """The chart's MutatingWebhookConfiguration in the emulated API server, the chart's Secret
    as the operator's certificate: Deployments are created and updated through the API, and
    admission calls the real webhook server over HTTPS (verified for the Service's name)."""
    api, server = cluster
    objects = chart_objects({"injection": "webhook", "watchNamespaces": [NS]})
    (secret,) = [o for o in objects if o["kind"] == "Secret"]
    (configuration,) = [o for o in objects if o["kind"] == "MutatingWebhookConfiguration"]
    files = {}
    for key in ("tls.crt", "tls.key"):
        files[key] = tmp_path / key
        files[key].write_bytes(base64.b64decode(secret["data"][key]))
    declare_admission(api)
    api.objects[MUTATING_WEBHOOKS, None, configuration["metadata"]["name"]] = configuration
    port = free_port()
    service = configuration["webhooks"][0]["clientConfig"]["service"]
    api.service_routes = {(service["namespace"], service["name"]): f"127.0.0.1:{port}"}
    seed(api, observed_model(), model_service())
    op = await start_operator(env={
        "MLWARDEN_INJECTION": "webhook", "MLWARDEN_WEBHOOK_PORT": str(port),
        "MLWARDEN_WEBHOOK_CERT": str(files["tls.crt"]),
        "MLWARDEN_WEBHOOK_KEY": str(files["tls.key"]),
    })  # fmt: skip
    await eventually(lambda: reconciled(api, "fraud"), what="ObservedModel handled")
    deployments = f"/apis/apps/v1/namespaces/{NS}/deployments"

    # Created with the label: stored with the sidecar.
    created = await api_call(server, "POST", deployments, labelled(model_deployment(), "fraud"))
    assert [c["name"] for c in created["spec"]["template"]["spec"]["containers"]] == [
        "model", "mlwarden-sidecar",
    ], op.log()  # fmt: skip
    # Without it: the API server does not even call the operator (objectSelector).
    await api_call(server, "POST", deployments, model_deployment("plain"))
    assert containers(api, "plain") == ["model"]
    assert [c.name for c in api.admission_calls] == ["fraud-model"]
    assert api.admission_calls[0].outcome == "patched"
    # Labelling an existing Deployment is an UPDATE the webhook sees: injected then.
    await api_call(server, "POST", f"/api/v1/namespaces/{NS}/services", model_service("plain"))
    await api_call(server, "POST", f"/apis/mlwarden.io/v1alpha1/namespaces/{NS}/observedmodels",
                   observed_model("plain", target="plain"))  # fmt: skip
    await eventually(lambda: reconciled(api, "plain"), what="ObservedModel plain handled")
    await api_call(server, "PATCH", f"{deployments}/plain",
                   {"metadata": {"labels": {INJECT_LABEL: "plain"}}},
                   "application/merge-patch+json")  # fmt: skip
    assert containers(api, "plain") == ["model", "mlwarden-sidecar"]

    # The ObservedModel is deleted: the operator takes the sidecar out with an UPDATE that goes
    # through the webhook, which must not put it back.
    await api_call(
        server, "DELETE", f"/apis/mlwarden.io/v1alpha1/namespaces/{NS}/observedmodels/fraud"
    )
    await eventually(lambda: not exists(api, OM, "fraud"), what="ObservedModel gone")
    assert containers(api, "fraud-model") == ["model"], op.log()
    updates = [c for c in api.admission_calls if (c.operation, c.name) == ("UPDATE", "fraud-model")]
    assert updates and all(c.outcome == "unchanged" for c in updates), updates

    # The operator down: the Deployment is admitted unchanged (failurePolicy Ignore), at once.
    await op.stop()
    seed(api, observed_model("late", target="late-model"), model_service("late-model"))
    started = asyncio.get_running_loop().time()
    await api_call(server, "POST", deployments, labelled(model_deployment("late-model"), "late"))
    assert (
        asyncio.get_running_loop().time() - started < configuration["webhooks"][0]["timeoutSeconds"]
    )
    assert containers(api, "late-model") == ["model"]
    assert api.admission_calls[-1].outcome.endswith("(ignored)"), api.admission_calls[-1]


@pytest.mark.parametrize("kind", ["StatefulSet", "Rollout", "Rollout with workloadRef"])
async def test_statefulsets_and_rollouts_are_injected_at_admission_and_undone(
    kind: str, cluster: tuple[Cluster, str], start_operator: Callable[..., Any],
    seed: Callable[..., None], tmp_path: Path,
) -> None:  # fmt: skip
    """The chart's webhook configuration in the emulated API server, the StatefulSet and Argo
    controllers imitated (emulate_kinds.py): a labelled StatefulSet or Rollout (or, for a
    Rollout with spec.workloadRef, the Deployment it reads) is stored with the sidecar, whose
    revision reads the kind's own pod label; deleting the ObservedModel takes it out through
    the webhook, which lets that update pass unchanged."""
    api, server = cluster
    api.emulate_owners()
    objects = chart_objects({"injection": "webhook", "watchNamespaces": [NS]})
    (secret,) = [o for o in objects if o["kind"] == "Secret"]
    (configuration,) = [o for o in objects if o["kind"] == "MutatingWebhookConfiguration"]
    for key in ("tls.crt", "tls.key"):
        (tmp_path / key).write_bytes(base64.b64decode(secret["data"][key]))
    declare_admission(api)
    api.objects[MUTATING_WEBHOOKS, None, configuration["metadata"]["name"]] = configuration
    port = free_port()
    route = configuration["webhooks"][0]["clientConfig"]["service"]
    api.service_routes = {(route["namespace"], route["name"]): f"127.0.0.1:{port}"}
    owner = "Rollout" if kind.startswith("Rollout") else kind
    om = observed_model()
    om["spec"]["target"] = {"kind": owner, "name": "fraud-model", "container": "model"}
    seed(api, om, model_service())
    calls = len(OPERATOR_CALLS)  # the session's: this test's start here
    op = await start_operator(env={
        **FAST, "MLWARDEN_INJECTION": "webhook", "MLWARDEN_WEBHOOK_PORT": str(port),
        "MLWARDEN_WEBHOOK_CERT": str(tmp_path / "tls.crt"),
        "MLWARDEN_WEBHOOK_KEY": str(tmp_path / "tls.key"),
    })  # fmt: skip
    await eventually(lambda: reconciled(api, "fraud"), what="ObservedModel handled")

    labelled_workload = labelled(workload(owner), "fraud")
    resource = {"StatefulSet": STATEFULSETS, "Rollout": ROLLOUTS}[owner]
    plural = resource.rsplit("/", 1)[1]
    group = "/apis/apps/v1" if owner == "StatefulSet" else "/apis/argoproj.io/v1alpha1"
    holder, holder_name = resource, "fraud-model"
    if kind == "Rollout with workloadRef":
        ro = workload("Rollout")
        original = ro["spec"].pop("template")
        ro["spec"]["workloadRef"] = {"apiVersion": "apps/v1", "kind": "Deployment",
                                     "name": "fraud-base"}  # fmt: skip
        await api_call(server, "POST", f"{group}/namespaces/{NS}/{plural}", ro)
        base = labelled(model_deployment(), "fraud")
        base["metadata"]["name"] = "fraud-base"
        base.pop("status")
        await api_call(server, "POST", f"/apis/apps/v1/namespaces/{NS}/deployments", base)
        holder, holder_name = DEPLOYMENTS, "fraud-base"
        # Labelled for the same ObservedModel, but not the Deployment the Rollout reads.
        stray = labelled(model_deployment("stray"), "fraud")
        await api_call(server, "POST", f"/apis/apps/v1/namespaces/{NS}/deployments", stray)
        assert containers(api, "stray") == ["model"]
        assert [(c.name, c.outcome) for c in api.admission_calls][-1] == ("stray", "unchanged")
    else:
        original = copy.deepcopy(labelled_workload["spec"]["template"])
        await api_call(server, "POST", f"{group}/namespaces/{NS}/{plural}", labelled_workload)
    template = obj(api, holder, holder_name)["spec"]["template"]
    assert [c["name"] for c in template["spec"]["containers"]] == [
        "model", "mlwarden-sidecar"], op.log()[-3000:]  # fmt: skip
    sidecar = template["spec"]["containers"][1]
    assert {
        "name": "MLWARDEN_MODEL_REVISION",
        "valueFrom": {"fieldRef": {"fieldPath": revision_field(owner)}},
    } in sidecar["env"]
    assert (holder_name, "patched") in [(c.name, c.outcome) for c in api.admission_calls]
    # The operator has nothing to patch: the webhook did it; it waits for the rollout.
    await eventually(lambda: status(api).get("phase") == "WarmingUp", timeout=30,
                     what="injected (WarmingUp)")  # fmt: skip
    assert status(api)["target"]["ref"] == f"{owner}/fraud-model"
    assert not [c for c in OPERATOR_CALLS[calls:] if c.verb == "patch"
                and c.name == holder_name and c.resource in (plural, "deployments")]  # fmt: skip

    await api_call(
        server, "DELETE", f"/apis/mlwarden.io/v1alpha1/namespaces/{NS}/observedmodels/fraud"
    )
    await eventually(lambda: not exists(api, OM, "fraud"), what="ObservedModel gone")
    after = obj(api, holder, holder_name)["spec"]["template"]
    assert after == original, op.log()[-3000:]
    updates = [c for c in api.admission_calls if (c.operation, c.name) == ("UPDATE", holder_name)]
    assert updates and all(c.outcome == "unchanged" for c in updates), updates
    assert await op.stop() == 0, op.log()[-3000:]
