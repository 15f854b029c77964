"""`mlwarden demo`: the whole loop on this machine, no cluster.

What runs, all on loopback:

- MLServer serving two versions of a scikit-learn iris classifier: iris-1.0 (logistic
  regression) and iris-2.0 (a one-split decision tree shipped by mistake: it never
  predicts virginica);
- an embedded Kubernetes API (kmock's emulator, see cluster.py) seeded with the model's
  pipeline: the `iris` Deployment and its ReplicaSets, its Service, the `feature-etl`
  CronJob (which produces the petal features) with its past runs, the `enricher`
  Deployment (the sepal features);
- the real `mlwarden operator`, reconciling the demo's ObservedModel against that API:
  it creates the detector's objects and injects the sidecar into the Deployment;
- the demo plays the kubelet for what the operator asked for: it starts the real
  `mlwarden detector` with the manifest from the ConfigMap the operator wrote (reporting to
  the emulated API, as in a cluster) and, for each ReplicaSet of the model's Deployments,
  the real `mlwarden sidecar` (its `--model-revision` the pod-template-hash, as the
  operator's Downward API variable gives it) in front of the model version the template's
  image names (`Pods`); requests spread over the Deployments by replicas, as a Service
  spreads them, so a rollback or a traffic shift the operator makes changes what serves.

The story: steady traffic builds the reference; the feature job's new image starts sending
petal_length in millimetres, which mlwarden detects on that feature, blames on the job (not
on the model, which it therefore does not roll back) and alerts about; the job is fixed.
Then the bad model version goes out as a canary on a tenth of the traffic: it is judged
against the stable revision on its own requests (CanaryRegression), blamed on the canary
Deployment, and its traffic goes back to stable after a few dozen requests, verified. Then
someone rolls the bad version out to all of iris anyway: prediction drift, blamed on the
rollout, rolled back automatically, and the rollback verified Fixed on the restored
revision's traffic. Last, the world changes (wider sepals, nothing changed in the cluster):
with no plausible cause in the cluster, retraining is the answer, and a Job starts from
CronJob iris-train (the demo plays the Job controller and completes it). Each act is one
incident (status.incidents); when Debian's prometheus-alertmanager is installed, the operator
pushes each to a real Alertmanager (the chart docs' route), which notifies a receiver on
loopback once when it fires and once when it resolves. It ends with a summary table and an
HTML report.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import kmock
import numpy as np
import yaml
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from mlwarden.demo.cluster import DEPLOYMENTS, OM, DemoCluster, kubeconfig, template_hash
from mlwarden.kube import Kube, KubeError, StaticToken, path
from mlwarden.names import MANIFEST_KEY, SIDECAR_CONTAINER, detector_name
from mlwarden.spec import parse_observed_model
from mlwarden.timestamps import format_time

FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")
NS = "demo"
MODEL = "iris"
IMAGE = "mlwarden-demo/iris:{}"
OLD, GOOD, BAD = "0.9", "1.0", "2.0"
CANARY = f"{MODEL}-canary"
ETL_IMAGE = "mlwarden-demo/feature-etl:{}"
MANIFEST = """\
apiVersion: mlwarden.io/v1alpha1
kind: ObservedModel
metadata: {name: iris, namespace: demo}
spec:
  target: {deployment: iris, service: iris, container: model, port: 8080}
  protocol: v2
  features:
    - {name: sepal_length, type: numeric}
    - {name: sepal_width, type: numeric}
    - {name: petal_length, type: numeric}
    - {name: petal_width, type: numeric}
  prediction: {name: predict, type: categorical}
  reference: {source: warmup, size: 500}
  window: {size: 500}
  detectors:
    # Generous: the demo shares this machine's cores with everything it starts.
    latency: {p99Ms: 2000}
  # Fast for a demo; in production the defaults are 30s and 3/3.
  alerting: {evaluationInterval: 500ms, fireAfter: 2, resolveAfter: 2}
  pipeline:
    - {name: feature-etl, kind: CronJob, produces: [petal_length, petal_width]}
    - {name: enricher, kind: Deployment, produces: [sepal_length, sepal_width]}
  reactions:
    - {alert: FeatureDrift, action: alert}
    # Retraining is the answer to a world that changed, not to a broken job or a bad
    # version: it waits while the diagnosis names a plausible cause.
    - {alert: FeatureDrift, action: retrain, retrain: {cronJob: iris-train}}
    - {alert: PredictionDrift, action: rollback}
    # A canary worse than stable: all of its traffic back to stable at once.
    - {alert: CanaryRegression, action: shiftTraffic, router: replicas, stable: iris,
       canary: iris-canary, stepPercent: 100}
  # A candidate that stops serving is no candidate any more after this long (default 10m:
  # a quiet canary is not a gone one); the demo's canary is scaled to zero in seconds.
  canary: {idleAfter: 10s}
  # Every applied action is verified: did its trigger recover on the traffic served since?
  # The acts are seconds apart here; in production the cooldown's default is 10m.
  guardrails: {dryRun: false, cooldown: 5s, maxActionsPerHour: 5, verifyWithin: 2m,
               verifyMinRecords: 100}
"""


class DemoError(RuntimeError):
    pass


def _free_port() -> int:
    """A free port for a server the demo starts in another process (its sidecars).

    Chosen below the kernel's ephemeral range and checked free by binding it: a port from
    `bind(0)` is an ephemeral one, which any outgoing connection on the machine may take as
    its source port before the sidecar binds it ("address already in use"). The demo's own
    servers bind port 0 themselves (`_serve`), which has no such gap."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    rng = random.Random()
    for _ in range(100 if low > 12_000 else 0):
        port = rng.randrange(10_000, low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    with socket.socket() as s:  # an unusual ephemeral range: the kernel's choice
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _serve(runner: web.AppRunner) -> int:
    """Start `runner` on 127.0.0.1 at a port the kernel picks at bind time; returns it."""
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return int(runner.addresses[-1][1])


def _wait_http(url: str, timeout: float, what: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DemoError(f"{what} exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise DemoError(f"{what} did not become ready within {timeout:.0f}s ({url})")


def write_iris_model(root: Path) -> Path:
    """An MLServer model repository under `root`: iris/ (logistic regression), for the tests."""
    try:  # reason: scikit-learn is the demo extra; without it, a DemoError says so
        import joblib
        from sklearn.datasets import load_iris
        from sklearn.linear_model import LogisticRegression
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise DemoError("needs scikit-learn: pip install 'mlwarden[demo]'") from exc
    model_dir = root / MODEL
    model_dir.mkdir(parents=True)
    x, y = load_iris(return_X_y=True)
    joblib.dump(LogisticRegression(max_iter=1000).fit(x, y), model_dir / "model.joblib")
    (model_dir / "model-settings.json").write_text(
        json.dumps({
            "name": MODEL,
            "implementation": "mlserver_sklearn.SKLearnModel",
            "parameters": {"uri": "./model.joblib", "version": "v1"},
        })
    )  # fmt: skip
    return model_dir


def write_models(root: Path) -> None:
    """An MLServer model repository under `root`: iris-1.0 and iris-2.0."""
    try:  # reason: scikit-learn is the demo extra; without it, a DemoError says so
        import joblib
        from sklearn.datasets import load_iris
        from sklearn.linear_model import LogisticRegression
        from sklearn.tree import DecisionTreeClassifier
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise DemoError(
            "the demo needs scikit-learn and MLServer: pip install 'mlwarden[demo]'"
        ) from exc
    x, y = load_iris(return_X_y=True)
    models = {
        GOOD: LogisticRegression(max_iter=1000).fit(x, y),
        BAD: DecisionTreeClassifier(max_depth=1, random_state=0).fit(x, y),
    }
    for version, estimator in models.items():
        model_dir = root / f"{MODEL}-{version}"
        model_dir.mkdir(parents=True)
        joblib.dump(estimator, model_dir / "model.joblib")
        (model_dir / "model-settings.json").write_text(
            json.dumps({
                "name": f"{MODEL}-{version}",
                "implementation": "mlserver_sklearn.SKLearnModel",
                "parameters": {"uri": "./model.joblib", "version": version},
            })
        )  # fmt: skip


# --------------------------------------------------------------------------- the pipeline


def _meta(name: str, created: datetime, **extra: Any) -> dict[str, Any]:
    return {"name": name, "namespace": NS, "creationTimestamp": format_time(created), **extra}


def _model_deployment(created: datetime) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": _meta(MODEL, created, labels={"app": MODEL}),
        "spec": {
            "replicas": 9, "selector": {"matchLabels": {"app": MODEL}},
            "template": {
                "metadata": {"labels": {"app": MODEL}},
                "spec": {"containers": [{
                    "name": "model", "image": IMAGE.format(GOOD),
                    "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                }]},
            },
        },
    }  # fmt: skip


def _etl_job(cronjob: dict[str, Any], started: datetime, image: str, n: int) -> dict[str, Any]:
    finished = started + timedelta(seconds=40)
    owner = {"apiVersion": "batch/v1", "kind": "CronJob", "name": "feature-etl",
             "uid": cronjob["metadata"]["uid"], "controller": True}  # fmt: skip
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": _meta(f"feature-etl-{n}", started, ownerReferences=[owner]),
        "spec": {"template": {"spec": {"restartPolicy": "Never",
                                       "containers": [{"name": "etl", "image": image}]}}},
        "status": {"startTime": format_time(started), "completionTime": format_time(finished),
                   "succeeded": 1,
                   "conditions": [{"type": "Complete", "status": "True",
                                   "lastTransitionTime": format_time(finished)}]},
    }  # fmt: skip


def seed_pipeline(api: Any) -> dict[str, Any]:
    """The objects a cluster running this model would hold before mlwarden arrives."""
    now = datetime.now(UTC).replace(microsecond=0)
    week = now - timedelta(days=7)
    # The model's history: iris:0.9 a week ago (revision 1), iris:1.0 three days ago (2).
    first = _model_deployment(week)
    first["spec"]["template"]["spec"]["containers"][0]["image"] = IMAGE.format(OLD)
    api.seed(first)
    api.roll(NS, MODEL, _model_deployment(week)["spec"]["template"],
             at=format_time(now - timedelta(days=3)))  # fmt: skip
    api.seed({
        "apiVersion": "v1", "kind": "Service", "metadata": _meta(MODEL, week),
        "spec": {"selector": {"app": MODEL}, "type": "ClusterIP",
                 "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]},
    })  # fmt: skip
    enricher = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": _meta("enricher", week, labels={"app": "enricher"}),
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "enricher"}},
                 "template": {"metadata": {"labels": {"app": "enricher"}}, "spec": {
                     "containers": [{"name": "enricher", "image": "mlwarden-demo/enricher:3.2"}]}}},
    }  # fmt: skip
    api.seed(enricher)
    hour = now.replace(minute=0, second=0)
    cronjob = {
        "apiVersion": "batch/v1", "kind": "CronJob", "metadata": _meta("feature-etl", week),
        "spec": {"schedule": "0 * * * *", "jobTemplate": {"spec": {"template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "etl", "image": ETL_IMAGE.format("2.0")}]}}}}},
        "status": {"lastScheduleTime": format_time(hour), "lastSuccessfulTime": format_time(hour)},
    }  # fmt: skip
    api.seed(cronjob)
    api.seed({
        "apiVersion": "batch/v1", "kind": "CronJob", "metadata": _meta("iris-train", week),
        "spec": {"schedule": "0 3 * * 0", "suspend": True, "jobTemplate": {"spec": {
            "template": {"spec": {"restartPolicy": "Never", "containers": [
                {"name": "train", "image": "mlwarden-demo/iris-train:1"}]}}}}},
    })  # fmt: skip
    for back in (3, 2, 1, 0):
        started = hour - timedelta(hours=back)
        api.seed(_etl_job(cronjob, started, ETL_IMAGE.format("2.0"), int(started.timestamp())))
    return cronjob


# --------------------------------------------------------------------------- traffic


class Traffic:
    """Clients of the model: iris rows, 1-4 per request, through the Service, all the time."""

    def __init__(self, pods: Pods, rate: float) -> None:
        from sklearn.datasets import load_iris  # reason: the demo extra (see write_models)

        self.x, _ = load_iris(return_X_y=True)
        self.rng = np.random.default_rng(0)
        self.pods = pods
        self.path = f"/v2/models/{MODEL}/infer"
        # Requests sent to each Deployment's pods: {deployment: {revision: count}}.
        self.by_pods: dict[str, dict[str, int]] = {}
        self.rate = rate
        self.petal_length_unit = 1.0
        self.sepal_width_shift = 0.0  # cm added to every row's sepal width
        self.counts = {"sent": 0, "ok": 0, "model_4xx": 0, "failed": 0}
        self.rows: list[list[float]] = []  # what was sent, for the report
        self.phase = "steady"
        self.by_phase: dict[str, list[list[float]]] = {}
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:

        period = 1.0 / self.rate
        async with aiohttp.ClientSession() as session:
            next_at = time.monotonic()
            while not self._stop.is_set():
                await self._one(session)
                next_at += period
                delay = next_at - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                else:
                    next_at = time.monotonic()

    async def _one(self, session: Any) -> None:

        pod = self.pods.pick(self.rng)
        if pod is None:
            return
        i = self.counts["sent"]
        sent_to = self.by_pods.setdefault(pod.deployment, {})
        sent_to[pod.revision] = sent_to.get(pod.revision, 0) + 1
        rows = self.x[self.rng.choice(len(self.x), size=int(self.rng.integers(1, 5)))].copy()
        rows[:, 2] *= self.petal_length_unit
        rows[:, 1] += self.sepal_width_shift
        tensor = {"name": "input-0", "shape": list(rows.shape), "datatype": "FP64",
                  "data": rows.ravel().tolist()}  # fmt: skip
        body = json.dumps({"inputs": [tensor]}).encode()
        malformed = i % 50 == 25
        if malformed:
            body = b'{"inputs": "this is not a tensor"'  # a malformed request, on purpose
        else:
            self.by_phase.setdefault(self.phase, []).extend(rows.tolist())
        self.counts["sent"] += 1
        headers = {"Content-Type": "application/json", "X-Request-Id": f"demo-{i}"}
        try:
            async with session.post(pod.url + self.path, data=body, headers=headers) as resp:
                await resp.read()
                if resp.status == 200:
                    self.counts["ok"] += 1
                elif resp.status < 500 and malformed:
                    self.counts["model_4xx"] += 1
                else:
                    self.counts["failed"] += 1
        except aiohttp.ClientError:
            self.counts["failed"] += 1


# --------------------------------------------------------------------------- the kubelet's part


async def start_routers(mlserver_url: str) -> tuple[list[Any], dict[str, int], dict[str, int]]:
    """The model containers: one port per model version, each answering as that version.

    A pod's container runs one image; here each image (iris:1.0, iris:2.0) is a port in front
    of MLServer that serves the model of that version under the name clients use (`iris`).
    Returns the runners, the port of each version and the requests served by each version.
    """

    served: dict[str, int] = {}
    session = aiohttp.ClientSession()
    runners: list[Any] = []
    ports: dict[str, int] = {}

    def app_for(version: str) -> web.Application:
        async def handle(request: web.Request) -> web.Response:
            path = request.path
            prefix = f"/v2/models/{MODEL}/"
            if path.startswith(prefix):
                served[version] = served.get(version, 0) + 1
                path = f"/v2/models/{MODEL}-{version}/" + path[len(prefix) :]
            body = await request.read()
            headers = {k: v for k, v in request.headers.items() if k.lower() in
                       ("content-type", "x-request-id", "content-encoding")}  # fmt: skip
            async with session.request(
                request.method, mlserver_url + path, data=body, headers=headers
            ) as resp:
                payload = await resp.read()
                return web.Response(
                    body=payload, status=resp.status,
                    headers={"Content-Type": resp.headers.get("Content-Type", "application/json")},
                )  # fmt: skip

        app = web.Application(client_max_size=64 * 1024**2)
        app.router.add_route("*", "/{tail:.*}", handle)
        return app

    async def close(_: web.Application) -> None:
        await session.close()

    for version in (GOOD, BAD):
        app = app_for(version)
        if not runners:
            app.on_cleanup.append(close)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        port = await _serve(runner)
        runners.append(runner)
        ports[version] = port
    return runners, ports, served


@dataclass
class Pod:
    """One ReplicaSet's pods as the demo runs them: its sidecar in front of its model version."""

    deployment: str
    revision: str  # the pod-template-hash, which the sidecar stamps on every record
    version: str
    url: str
    admin_url: str
    ready: bool = False


class Pods:
    """The kubelet's and kube-proxy's part for the model's Deployments.

    For each Deployment in `deployments` whose pod template carries the sidecar, the current
    ReplicaSet's pods are one sidecar process (`--model-revision` set to the template's
    pod-template-hash, as the operator's Downward API variable sets it in a cluster) in front
    of the model version the template's image names. Until a new ReplicaSet's sidecar is
    ready, the previous one keeps serving, as a rolling update keeps old pods until new ones
    are ready. `pick` spreads requests over the Deployments in proportion to their replicas,
    as a Service spreads them over its endpoints. Sidecars of old ReplicaSets keep running
    (a rollback to them is instant, as it is when Kubernetes scales an old ReplicaSet up).
    """

    def __init__(self, demo: Demo, api: Any, routers: dict[str, int], sidecar_argv: list[str]):
        self.demo, self.api, self.routers, self.sidecar_argv = demo, api, routers, sidecar_argv
        self.deployments: list[str] = [MODEL]
        self.pods: dict[tuple[str, str], Pod] = {}
        self.serving: dict[str, Pod] = {}  # deployment -> the pod set serving now
        self.replicas: dict[str, int] = {}
        self._starting: set[asyncio.Task[None]] = set()

    def sync(self) -> None:
        for name in self.deployments:
            dep = self.api.read(DEPLOYMENTS, NS, name)
            if dep is None:
                self.replicas[name] = 0
                continue
            self.replicas[name] = int(dep["spec"].get("replicas", 1))
            template = dep["spec"]["template"]
            containers = template["spec"]["containers"]
            if not any(c.get("name") == SIDECAR_CONTAINER for c in containers):
                continue
            key = (name, template_hash(template))
            pod = self.pods.get(key)
            if pod is None:
                version = _model_image(dep).rpartition(":")[2] or GOOD
                pod = self._start(name, key[1], version)
            if pod.ready:
                self.serving[name] = pod

    def _start(self, name: str, revision: str, version: str) -> Pod:
        port, admin = _free_port(), _free_port()
        pod = Pod(name, revision, version, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin}")
        self.pods[name, revision] = pod
        proc = self.demo._spawn(f"sidecar-{name}-{revision}", [
            *self.sidecar_argv, "--listen", f"127.0.0.1:{port}",
            "--admin-listen", f"127.0.0.1:{admin}",
            "--upstream", f"http://127.0.0.1:{self.routers[version]}",
            "--model-revision", revision,
        ])  # fmt: skip

        async def wait() -> None:
            await asyncio.to_thread(_wait_http, f"{pod.admin_url}/readyz", 30, "a sidecar", proc)
            pod.ready = True
            self.sync()

        task = asyncio.create_task(wait())
        self._starting.add(task)
        task.add_done_callback(self._starting.discard)
        return pod

    async def ready(self, name: str, seconds: float = 60) -> Pod:
        """The pod set of Deployment `name`'s current template, once it serves."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.sync()
            dep = self.api.read(DEPLOYMENTS, NS, name) or {}
            template = (dep.get("spec") or {}).get("template")
            pod = self.pods.get((name, template_hash(template))) if template else None
            if pod is not None and pod.ready:
                return pod
            for task in list(self._starting):
                if task.done() and task.exception() is not None:
                    raise DemoError(str(task.exception()))
            await asyncio.sleep(0.1)
        raise DemoError(f"the pods of Deployment {name} did not become ready in {seconds:.0f}s")

    async def run(self) -> None:
        while True:
            self.sync()
            await asyncio.sleep(0.1)

    def pick(self, rng: np.random.Generator) -> Pod | None:
        pods = [(p, self.replicas.get(n, 0)) for n, p in self.serving.items()]
        pods = [(p, w) for p, w in pods if w > 0]
        if not pods:
            return None
        weights = np.asarray([w for _, w in pods], dtype=float)
        return pods[int(rng.choice(len(pods), p=weights / weights.sum()))][0]

    def admin_urls(self) -> list[str]:
        return [p.admin_url for p in self.pods.values() if p.ready]


class Notifications:
    """A notification receiver on loopback (what Slack or a pager would be), fed by a real
    Alertmanager when Debian's `prometheus-alertmanager` is installed: the operator pushes
    each incident to Alertmanager (MLWARDEN_ALERTMANAGER_URL), which routes it here with the
    route the chart's docs ship (examples/alertmanager/alertmanager.yaml, waits shortened)."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.runner: Any = None
        self.url = ""

    async def start(self) -> None:
        async def hook(request: web.Request) -> web.Response:
            self.received.append(await request.json())
            return web.Response()

        app = web.Application()
        app.router.add_post("/hook", hook)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        port = await _serve(self.runner)
        self.url = f"http://127.0.0.1:{port}/hook"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    def about(self, incident: str) -> tuple[int, int]:
        """Notifications naming `incident`: (firing, resolved)."""
        firing = resolved = 0
        for n in self.received:
            if any((a.get("labels") or {}).get("incident") == incident for a in n["alerts"]):
                if n.get("status") == "resolved":
                    resolved += 1
                else:
                    firing += 1
        return firing, resolved


def alertmanager_config(receiver: str) -> dict[str, Any]:
    """The chart docs' route with its waits shortened and every receiver the demo's."""
    example = Path(__file__).resolve().parents[3] / "examples/alertmanager/alertmanager.yaml"
    if example.exists():
        config = yaml.safe_load(example.read_text())
    else:  # an installed package has no examples/: the same route, written here
        config = {
            "route": {"receiver": "ml-team", "routes": [{
                "matchers": ['alertname = "MLWardenIncident"'],
                "group_by": ["namespace", "suspect"], "receiver": "ml-team"}]},
            "receivers": [{"name": "ml-team", "webhook_configs": [{"url": receiver}]}],
        }  # fmt: skip
    for route in [config["route"], *config["route"].get("routes", [])]:
        route.update({"group_wait": "1s", "group_interval": "1s", "repeat_interval": "1h"})
    for rcv in config["receivers"]:
        for hook in rcv.get("webhook_configs", []):
            hook.update({"url": receiver, "send_resolved": True})
    config.pop("inhibit_rules", None)  # every incident of the story is shown
    return dict(config)


# --------------------------------------------------------------------------- results


@dataclass
class Incident:
    name: str
    onset: float = 0.0  # seconds since the demo started
    onset_at: str = ""  # the same, as a timestamp
    detected: float | None = None
    diagnosed: float | None = None
    reacted: float | None = None
    resolved: float | None = None
    alerts: list[str] = field(default_factory=list)
    features: list[str] = field(default_factory=list)
    top_suspect: str | None = None
    evidence: list[str] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    action_details: list[str] = field(default_factory=list)
    requests_to_detect: int = 0
    canary_requests: int | None = None  # requests the canary served in all
    incident: str | None = None  # the id of the incident the operator opened
    notifications: int | None = None  # firing notifications the receiver got of it
    verification: str | None = None  # the verdict on the incident's action


@dataclass
class DemoResult:
    incidents: list[Incident] = field(default_factory=list)
    requests: dict[str, int] = field(default_factory=dict)
    served_by_version: dict[str, int] = field(default_factory=dict)
    records: dict[str, float] = field(default_factory=dict)
    final_image: str = ""
    report: str | None = None
    seconds: float = 0.0
    kubeconfig: str = ""

    def ok(self) -> bool:
        return (
            self.requests.get("failed", 1) == 0
            and len(self.incidents) == 4
            and all(i.detected is not None for i in self.incidents)
        )


# --------------------------------------------------------------------------- the run


def run_demo(
    *,
    keep_running: bool = False,
    fast: bool = False,
    report: str | None = "mlwarden-demo-report.html",
    summary_json: str | None = None,
) -> int:
    console = Console(stderr=False, highlight=False)
    mlserver_bin = shutil.which("mlserver") or str(Path(sys.executable).with_name("mlserver"))
    if not Path(mlserver_bin).exists():
        console.print("[red]the demo needs MLServer:[/] pip install 'mlwarden[demo]'")
        return 2
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="mlwarden-demo-") as tmp:
        root = Path(tmp)
        demo = Demo(root, mlserver_bin, procs, console, fast=fast, keep_running=keep_running)
        try:
            result = asyncio.run(demo.run(report))
        except DemoError as exc:
            console.print(f"[red]demo failed:[/] {exc}")
            for log in sorted(root.glob("*.log")):
                console.print(f"--- {log.name} (last lines) ---\n" + log.read_text()[-3000:])
            return 1
        except KeyboardInterrupt:
            return 130
        finally:
            stop_processes(procs)  # what a failure before the emulator left (MLServer starts first)
    if summary_json:
        Path(summary_json).write_text(json.dumps(asdict(result), indent=2) + "\n")
    return 0 if result.ok() else 1


# Started in front of every server of the demo: on Linux, the child asks the kernel for
# SIGTERM when the demo goes (PR_SET_PDEATHSIG, kept across exec), then becomes the server.
# A demo killed with SIGKILL runs no cleanup of its own; without this its MLServer, operator,
# detector and sidecars were left running, holding their ports. The signal is tied to the
# thread that started the child: every `_spawn` runs on the demo's main thread. Elsewhere
# (no prctl) the server is started the same way, without the guard.
_ORPHAN_GUARD = """\
import ctypes, os, signal, sys
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
except (OSError, AttributeError):
    pass
if os.getppid() != int(sys.argv[1]):
    sys.exit(0)  # the demo went before the guard was set
os.execvp(sys.argv[2], sys.argv[2:])
"""


def orphan_guarded(argv: list[str]) -> list[str]:
    """`argv`, run so that the child is sent SIGTERM when this process dies (Linux)."""
    return [sys.executable, "-c", _ORPHAN_GUARD, str(os.getpid()), *argv]


def stop_processes(procs: list[subprocess.Popen[bytes]], grace: float = 15.0) -> None:
    """SIGTERM every process still running, then SIGKILL what is left after `grace` s."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in procs:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Demo:
    def __init__(
        self,
        root: Path,
        mlserver_bin: str,
        procs: list[subprocess.Popen[bytes]],
        console: Any,
        *,
        fast: bool,
        keep_running: bool,
    ) -> None:
        self.root, self.mlserver_bin, self.procs, self.console = root, mlserver_bin, procs, console
        self.fast, self.keep_running = fast, keep_running
        self.started = time.monotonic()
        self.result = DemoResult()
        self.log: list[str] = []
        self.api: Any = None
        self.traffic: Traffic | None = None
        self.pods: Pods | None = None
        self.notifications = Notifications()
        self.alertmanager: str | None = None
        self.live: Any = None
        self.timeline: list[tuple[float, str, str, str]] = []

    # ------------------------------------------------------------------ output

    def t(self) -> float:
        return time.monotonic() - self.started

    def say(self, text: str = "") -> None:
        self.log.append(text)
        if self.live is not None:
            self.live.console.print(text)
        else:
            self.console.print(text)

    def mark(self, kind: str, title: str, detail: str = "") -> None:
        self.timeline.append((self.t(), kind, title, detail))

    def _panel(self) -> Any:

        om = self.api.read(OM, NS, MODEL) or {} if self.api is not None else {}
        st = om.get("status") or {}
        dep = self.api.read(DEPLOYMENTS, NS, MODEL) or {} if self.api is not None else {}
        images = [c.get("image", "") for c in
                  dep.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])
                  if c.get("name") == "model"]  # fmt: skip
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold")
        grid.add_column()
        c = self.traffic.counts if self.traffic else {}
        grid.add_row("ObservedModel", f"{NS}/{MODEL}  phase [bold]{st.get('phase', '-')}[/]")
        alerts = ", ".join(f"{a.get('type')}{'/' + a['feature'] if a.get('feature') else ''}"
                           for a in st.get("alerts") or []) or "none"  # fmt: skip
        grid.add_row("alerts", alerts)
        grid.add_row("top suspect", str(st.get("topSuspect") or "-"))
        grid.add_row("last action", str(st.get("lastAction") or "-"))
        grid.add_row(
            "model serving",
            f"{images[0] if images else '-'} (revision "
            f"{(dep.get('metadata', {}).get('annotations') or {}).get(REVISION_KEY, '-')})",
        )
        grid.add_row(
            "requests",
            f"{c.get('sent', 0)} sent · {c.get('ok', 0)} ok · "
            f"{c.get('model_4xx', 0)} malformed on purpose (4xx) · "
            f"[{'red' if c.get('failed') else 'green'}]{c.get('failed', 0)} failed[/]",
        )
        return Panel(grid, title=f"mlwarden demo · {self.t():.0f}s", border_style="blue")

    # ------------------------------------------------------------------ processes

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Any:
        with open(self.root / f"{name}.log", "wb") as log:
            proc = subprocess.Popen(
                orphan_guarded(argv),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env or os.environ.copy(),
            )
        self.procs.append(proc)
        return proc

    async def _start_mlserver(self) -> str:
        models = self.root / "models"
        write_models(models)
        port = _free_port()
        (models / "settings.json").write_text(
            json.dumps({"host": "127.0.0.1", "http_port": port, "grpc_port": _free_port(),
                        "metrics_port": _free_port(), "parallel_workers": 0})
        )  # fmt: skip
        proc = self._spawn("mlserver", [self.mlserver_bin, "start", str(models)])
        url = f"http://127.0.0.1:{port}"
        for version in (GOOD, BAD):
            await asyncio.to_thread(
                _wait_http, f"{url}/v2/models/{MODEL}-{version}/ready", 120, "MLServer", proc
            )
        return url

    async def _start_alertmanager(self, receiver: str) -> str | None:
        """A real Alertmanager on loopback when the binary is here; its URL, else None."""
        binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
        if binary is None:
            self.console.print(
                "• no prometheus-alertmanager here: incidents stay in status.incidents and "
                "Events (apt-get install prometheus-alertmanager to see them delivered)"
            )
            return None
        config = self.root / "alertmanager.yml"
        config.write_text(yaml.safe_dump(alertmanager_config(receiver)))
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        proc = self._spawn("alertmanager", [
            binary, f"--config.file={config}", f"--storage.path={self.root / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=",
            "--log.level=warn",
        ])  # fmt: skip
        await asyncio.to_thread(_wait_http, f"{url}/-/ready", 30, "Alertmanager", proc)
        self.console.print(
            f"• Alertmanager on {url} (the chart docs' route), notifying a receiver on {receiver}"
        )
        return url

    async def _notified(self, incident: Incident, st: Callable[[], dict[str, Any]]) -> None:
        """The incident the operator opened for this act, and what the receiver got of it."""

        def opened() -> dict[str, Any] | None:
            since = incident.onset_at[:19]
            found = [
                i for i in st().get("incidents") or []
                if str(i.get("opened") or i.get("onset") or "") >= since
            ]  # fmt: skip
            return found[-1] if found else None

        entry = await self._eventually("the incident", opened, 30)
        incident.incident = str(entry.get("id"))
        line = f"   [bold]incident[/] {incident.incident}: {entry.get('summary')}"
        if self.alertmanager is not None:

            def delivered() -> tuple[int, int] | None:
                firing, resolved = self.notifications.about(incident.incident or "")
                return (firing, resolved) if firing and resolved else None

            counts = await self._eventually("its notifications", delivered, 60)
            incident.notifications = counts[0]
            line += (
                f"; through Alertmanager the receiver got {counts[0]} notification(s) of it "
                f"and {counts[1]} when it resolved"
            )
        self.say(line)

    async def _eventually(self, what: str, check: Callable[[], Any], seconds: float) -> Any:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            value = check()
            if value:
                return value
            for proc in self.procs:
                if proc.poll() is not None:
                    raise DemoError(f"{proc.args!r} exited with code {proc.returncode}")
            await asyncio.sleep(0.1)
        raise DemoError(f"timed out after {seconds:.0f}s waiting for {what}")

    # ------------------------------------------------------------------ the story

    async def run(self, report: str | None) -> DemoResult:

        for noisy in ("aiohttp.access", "aiohttp.server", "kmock"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        self.console.print(
            "[bold]mlwarden demo[/]: a real model server, the mlwarden sidecar, detector and "
            "operator, and a Kubernetes API emulator, all on this machine\n"
        )
        mlserver = asyncio.create_task(self._start_mlserver())
        async with DemoCluster() as api, kmock.Server(api) as server:
            try:
                await self._run_against(api, str(server.url).rstrip("/"), mlserver, report)
            finally:
                # While the API emulator still answers: the operator's watches and the
                # detector's status writes are open connections to it, and the emulator's
                # server would otherwise wait out its shutdown timeout (60 s) for them.
                await asyncio.to_thread(stop_processes, self.procs)
        return self.result

    async def _run_against(
        self, api: Any, url: str, mlserver: asyncio.Task[str], report: str | None
    ) -> None:

        self.api = api
        api.declare(NS)
        cronjob = seed_pipeline(api)
        kc = kubeconfig(self.root / "kubeconfig", url, NS)
        self.result.kubeconfig = str(kc)
        self.console.print(
            f"• Kubernetes API emulator on {url}, seeded with namespace [bold]{NS}[/]: "
            "Deployment iris (the model), Service iris, CronJob feature-etl, Deployment "
            "enricher\n  Try it while the demo runs:\n"
            f"    [bold]export KUBECONFIG={kc}[/]\n"
            "    kubectl get om,deploy,rs     kubectl describe om iris\n"
        )
        mlserver_url = await mlserver
        self.console.print(f"• MLServer serving iris-{GOOD} and iris-{BAD} on {mlserver_url}")
        runners, routers, served = await start_routers(mlserver_url)
        self.notifications = Notifications()
        await self.notifications.start()
        self.alertmanager = await self._start_alertmanager(self.notifications.url)
        try:
            await self._story(api, url, cronjob, routers)
        finally:
            await self.notifications.stop()
            if self.traffic is not None:
                self.traffic.stop()
            self.result.served_by_version = dict(served)
            for runner in runners:
                await runner.cleanup()
        self.result.seconds = round(self.t(), 1)
        if report:
            self.result.report = self._write_report(report)
        self._summary()
        if self.keep_running:
            self.console.print(
                f"\nStill running. Try:\n  export KUBECONFIG={kc}\n"
                "  kubectl get om,deploy,rs,events\nCtrl-C to stop."
            )
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.Event().wait()

    async def _story(
        self, api: Any, server: str, cronjob: dict[str, Any], routers: dict[str, int]
    ) -> None:

        env = {k: v for k, v in os.environ.items() if not k.startswith("MLWARDEN_")}
        env.update(KUBECONFIG=self.result.kubeconfig, MLWARDEN_IMAGE="mlwarden/mlwarden:demo",
                   MLWARDEN_METRICS_PORT=str(_free_port()), MLWARDEN_RESPOND_INTERVAL="0.5",
                   MLWARDEN_RETRY_SECONDS="0.5",
                   MLWARDEN_NOTIFY_WAIT_SECONDS="1")  # fmt: skip
        if self.alertmanager is not None:
            env["MLWARDEN_ALERTMANAGER_URL"] = self.alertmanager
        self._spawn("operator", [sys.executable, "-m", "mlwarden.cli", "operator",
                                 "--namespace", NS, "--standalone"], env)  # fmt: skip
        self.console.print("• mlwarden operator watching namespace demo")
        (self.root / "iris.yaml").write_text(MANIFEST)
        await _kubectl_apply(server, MANIFEST)
        self.console.print("• applied the ObservedModel [bold]demo/iris[/] (kubectl apply)")

        def detector_config() -> Any:
            cm = api.read("v1/configmaps", NS, detector_name(MODEL))
            return cm and cm.get("data", {}).get(MANIFEST_KEY)

        def injected() -> bool:
            dep = api.read(DEPLOYMENTS, NS, MODEL) or {}
            names = [c["name"] for c in dep["spec"]["template"]["spec"]["containers"]]
            return SIDECAR_CONTAINER in names

        manifest = await self._eventually("the operator's detector ConfigMap", detector_config, 60)
        await self._eventually("the sidecar injection", injected, 60)
        dep = api.read(DEPLOYMENTS, NS, MODEL)
        revision = dep["metadata"]["annotations"][REVISION_KEY]
        self.console.print(
            f"• the operator created iris-detector (ConfigMap, ServiceAccount, Role, "
            f"RoleBinding, Deployment, Service), the ingest token Secret and the reference "
            f"ConfigMap, and injected the sidecar into Deployment iris (revision {revision})"
        )
        (self.root / "detector.yaml").write_text(manifest)

        def token() -> Any:
            secret = api.read("v1/secrets", NS, f"{MODEL}-ingest-token")
            return secret and (secret.get("data") or {}).get("token")

        # The Secret the operator made: mounted into the detector and the sidecar only.
        encoded = await self._eventually("the ingest token Secret", token, 60)
        (self.root / "ingest-token").write_bytes(base64.b64decode(encoded))
        detector_port = _free_port()
        detector_url = f"http://127.0.0.1:{detector_port}"
        proc = self._spawn("detector", [
            sys.executable, "-m", "mlwarden.cli", "detector",
            "--observed-model", str(self.root / "detector.yaml"),
            "--listen", f"127.0.0.1:{detector_port}", "--report-to", server,
            "--ingest-token-file", str(self.root / "ingest-token"),
        ])  # fmt: skip
        await asyncio.to_thread(_wait_http, f"{detector_url}/readyz", 30, "the detector", proc)
        self.pods = pods = Pods(self, api, routers, [
            sys.executable, "-m", "mlwarden.cli", "sidecar", "--collector", detector_url,
            "--observed-model", str(self.root / "detector.yaml"), "--batch-interval", "0.2",
            "--ingest-token-file", str(self.root / "ingest-token"),
            "--drain-seconds", "0",  # no load balancer to leave on this machine
        ])  # fmt: skip
        pod = await pods.ready(MODEL)
        syncing = asyncio.create_task(pods.run())
        self.console.print(
            f"• as the kubelet would: started the detector ({detector_url}, reporting to the "
            f"API, storing its reference in ConfigMap iris-reference) with the operator's "
            f"ConfigMap and the ingest token, and the pods of ReplicaSet iris-{pod.revision}: "
            f"the sidecar ({pod.url}, metrics on {pod.admin_url}/metrics, revision "
            f"{pod.revision} from the pod-template-hash) in front of iris:{pod.version}\n"
        )

        rate = 150.0 if self.fast else 60.0
        self.traffic = traffic = Traffic(pods, rate)
        sender = asyncio.create_task(traffic.run())

        def om() -> dict[str, Any]:
            return api.read(OM, NS, MODEL) or {}

        def st() -> dict[str, Any]:
            return dict(om().get("status") or {})

        pause = 0.5 if self.fast else 3.0
        live_ctx = (
            Live(
                self._panel(),
                console=self.console,
                refresh_per_second=4,
                get_renderable=self._panel,
            )
            if self.console.is_terminal
            else contextlib.nullcontext()
        )
        with live_ctx as live:
            self.live = live
            try:
                await self._act1(st)
                await asyncio.sleep(pause)
                await self._act2(api, st, cronjob)
                await asyncio.sleep(pause)
                await self._act3(api, server, st)
                await asyncio.sleep(pause)
                await self._act4(api, server, st)
                await asyncio.sleep(pause)
                await self._act5(api, server, st)
            finally:
                self.live = None
                traffic.stop()
                await sender
                syncing.cancel()
        await self._kubectl()
        self.result.requests = dict(traffic.counts)
        self.result.final_image = _model_image(api.read(DEPLOYMENTS, NS, MODEL) or {})
        self.result.records = await asyncio.to_thread(
            _settled_counts, pods.admin_urls(), detector_url
        )

    async def _act1(self, st: Callable[[], dict[str, Any]]) -> None:
        self.say("[bold]1. Steady traffic[/]: the detector builds its reference from 500 rows")
        self.mark("info", "traffic starts", "iris rows, 1-4 per request, through the sidecar")
        await self._eventually("phase Observing", lambda: st().get("phase") == "Observing", 90)
        ref = (st().get("detector") or {}).get("reference") or {}
        self.mark("info", "reference ready", str(ref.get("id", "")))
        self.say(
            f"   reference in force: {ref.get('id', '?')}; the ObservedModel is "
            f"[bold]Observing[/] ({self.t():.0f}s)"
        )
        await asyncio.sleep(2.0 if self.fast else 5.0)
        alerts = st().get("alerts") or []
        self.say(f"   all quiet: {len(alerts)} alerts\n")

    async def _act2(
        self, api: Any, st: Callable[[], dict[str, Any]], cronjob: dict[str, Any]
    ) -> None:
        assert self.traffic is not None
        incident = Incident("feature job sends petal_length in mm")
        self.result.incidents.append(incident)
        self.say(
            "[bold red]2. Upstream incident[/]: feature-etl's new image (2.1) sends petal_length "
            "in millimetres instead of centimetres"
        )
        started = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=50)
        await api.create_live(
            _etl_job(cronjob, started, ETL_IMAGE.format("2.1"), int(started.timestamp()))
        )
        self.traffic.phase = "incident"
        self.traffic.petal_length_unit = 10.0
        incident.onset = self.t()
        incident.onset_at = format_time(datetime.now(UTC) - timedelta(seconds=1))
        sent = self.traffic.counts["sent"]
        self.mark("onset", "feature-etl 2.1: petal_length in mm", "Job feature-etl run, new image")
        # The policy rolls back on PredictionDrift, which mm-sized petals cause a few seconds
        # after the feature drift: wait for it, so the guardrail's refusal is always shown.
        await self._follow(incident, st, sent, alert_type="FeatureDrift",
                           reactions=frozenset({"alert", "rollback", "retrain"}))  # fmt: skip
        self.say(
            "   retraining is not the answer here: a model retrained on millimetres would learn "
            "the job's bug; the job is to be fixed"
        )
        self.say("   the job's owners fix the unit; traffic is back to centimetres")
        self.traffic.phase = "fixed"
        self.traffic.petal_length_unit = 1.0
        await self._eventually("the alerts to resolve", lambda: not st().get("alerts"), 120)
        incident.resolved = self.t()
        self.mark("info", "alerts resolved", "")
        await self._eventually("phase Observing", lambda: st().get("phase") == "Observing", 30)
        await self._notified(incident, st)
        self.say(f"   resolved; phase {st().get('phase')} ({self.t():.0f}s)\n")

    async def _act3(self, api: Any, server: str, st: Callable[[], dict[str, Any]]) -> None:

        assert self.traffic is not None and self.pods is not None
        incident = Incident(f"canary of iris:{BAD} on a tenth of the traffic")
        self.result.incidents.append(incident)
        self.say(
            f"[bold red]3. Canary[/]: iris:{BAD} goes out as a canary, Deployment {CANARY} with "
            "1 pod next to iris's 9 behind the same Service (a tenth of the requests; its "
            "manifest is a copy of iris's, the sidecar included)"
        )
        stable = api.read(DEPLOYMENTS, NS, MODEL) or {}
        template = json.loads(json.dumps(stable["spec"]["template"]))
        template["metadata"]["labels"] = {"app": MODEL, "track": "canary"}
        for c in template["spec"]["containers"]:
            if c["name"] == "model":
                c["image"] = IMAGE.format(BAD)
        canary = {
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": CANARY, "namespace": NS, "labels": {"app": MODEL}},
            "spec": {"replicas": 1,
                     "selector": {"matchLabels": {"app": MODEL, "track": "canary"}},
                     "template": template},
        }  # fmt: skip
        await _kubectl_apply(server, yaml.safe_dump(canary))
        self.pods.deployments.append(CANARY)
        pod = await self.pods.ready(CANARY)
        incident.onset = self.t()
        incident.onset_at = format_time(datetime.now(UTC) - timedelta(seconds=1))
        self.traffic.phase = "canary"
        sent = self.traffic.counts["sent"]
        self.mark("onset", f"canary iris:{BAD}", f"Deployment {CANARY}, revision {pod.revision}")
        await self._follow(incident, st, sent, alert_type="CanaryRegression",
                           reactions=frozenset({"shiftTraffic"}))  # fmt: skip

        def drained() -> bool:
            dep = api.read(DEPLOYMENTS, NS, CANARY) or {}
            return int((dep.get("spec") or {}).get("replicas", 1)) == 0

        await self._eventually("the canary's traffic back to stable", drained, 60)
        served = sum(self.traffic.by_pods.get(CANARY, {}).values())
        incident.canary_requests = served
        self.say(
            f"   traffic is back on stable: the canary served {served} requests in all "
            f"({self.t() - incident.onset:.1f}s)"
        )
        self.say("   no retraining: the canary is a bad version, and stable still answers well")
        self.traffic.phase = "canary stopped"
        await self._verified(incident, st, "shiftTraffic")
        await self._eventually("the alerts to resolve", lambda: not st().get("alerts"), 120)
        incident.resolved = self.t()
        self.mark("info", "alerts resolved", "the canary serves nothing")
        await self._eventually("phase Observing", lambda: st().get("phase") == "Observing", 30)
        await self._notified(incident, st)
        self.say(f"   resolved; phase {st().get('phase')} ({self.t():.0f}s)\n")

    async def _act4(self, api: Any, server: str, st: Callable[[], dict[str, Any]]) -> None:

        assert self.traffic is not None
        incident = Incident("bad model rollout iris:2.0")
        self.result.incidents.append(incident)
        self.say(
            f"[bold red]4. Bad rollout[/]: someone rolls iris:{BAD} out to all of iris anyway "
            "(kubectl set image)"
        )
        # What `kubectl set image deployment/iris model=...` changes; as a merge patch the
        # container list is sent whole (the emulator has no strategic merge).
        containers = (api.read(DEPLOYMENTS, NS, MODEL) or {})["spec"]["template"]["spec"][
            "containers"
        ]
        for c in containers:
            if c["name"] == "model":
                c["image"] = IMAGE.format(BAD)
        await _patch(server, "Deployment", MODEL,
                     {"spec": {"template": {"spec": {"containers": containers}}}})  # fmt: skip
        self.traffic.phase = "rollout"
        incident.onset = self.t()
        incident.onset_at = format_time(datetime.now(UTC) - timedelta(seconds=1))
        sent = self.traffic.counts["sent"]
        rev = (api.read(DEPLOYMENTS, NS, MODEL) or {})["metadata"]["annotations"][REVISION_KEY]
        self.mark("onset", f"iris:{BAD} rolled out", f"Deployment iris revision {rev}")
        await self._follow(incident, st, sent, alert_type="PredictionDrift",
                           reactions=frozenset({"rollback"}))  # fmt: skip

        def rolled_back() -> bool:
            return _model_image(api.read(DEPLOYMENTS, NS, MODEL) or {}) == IMAGE.format(GOOD)

        await self._eventually("the rollback", rolled_back, 60)
        self.traffic.phase = "rolled back"
        await self._verified(incident, st, "rollback")
        self.say("   no retraining: the previous version answers well; rolling back fixed it")
        await self._eventually("the alerts to resolve", lambda: not st().get("alerts"), 120)
        incident.resolved = self.t()
        self.mark("info", "alerts resolved", "the good version serves again")
        await self._eventually("phase Observing", lambda: st().get("phase") == "Observing", 30)
        await self._notified(incident, st)
        self.say(f"   resolved; phase {st().get('phase')} ({self.t():.0f}s)\n")

    async def _act5(self, api: Any, server: str, st: Callable[[], dict[str, Any]]) -> None:

        assert self.traffic is not None
        incident = Incident("the world changes: wider sepals")
        self.result.incidents.append(incident)
        self.say(
            "[bold red]5. The world changes[/]: the flowers people measure now have sepals "
            "0.6 cm wider, and nothing changed in the cluster"
        )
        self.traffic.phase = "world changed"
        self.traffic.sepal_width_shift = 0.6
        incident.onset = self.t()
        incident.onset_at = format_time(datetime.now(UTC) - timedelta(seconds=1))
        sent = self.traffic.counts["sent"]
        self.mark("onset", "sepal_width +0.6 cm", "no change in the cluster")
        await self._follow(incident, st, sent, alert_type="FeatureDrift",
                           reactions=frozenset({"retrain"}), diagnosis=False)  # fmt: skip

        def job() -> dict[str, Any] | None:
            runs = [j for j in api.items("jobs") if str(j["metadata"]["name"]).startswith(
                "iris-train-retrain-")]  # fmt: skip
            return runs[-1] if runs else None

        run = await self._eventually("the retraining Job", job, 30)
        name = run["metadata"]["name"]
        env = {e["name"]: e.get("value") for e in
               run["spec"]["template"]["spec"]["containers"][0].get("env", [])}  # fmt: skip
        self.say(
            f"   retraining is the answer here: Job {name} started from CronJob iris-train "
            f"(drifted features: {env.get('MLWARDEN_DRIFTED_FEATURES', '?')})"
        )
        # The Job controller's part: the training run completes.
        done = format_time(datetime.now(UTC))
        await _patch_status(server, "Job", name, {"status": {
            "startTime": done, "completionTime": done, "succeeded": 1,
            "conditions": [{"type": "Complete", "status": "True", "lastTransitionTime": done}],
        }})  # fmt: skip

        def finished() -> dict[str, Any] | None:
            for r in st().get("reactions") or []:
                if r.get("action") == "retrain" and r.get("result") == "Succeeded":
                    return dict(r)
            return None

        await self._eventually("the retraining run to succeed", finished, 60)
        incident.actions.append("retrain Succeeded")
        self.say(
            f"   [bold]retrained[/]: Job {name} Succeeded; its model would go out as the next "
            "canary. The demo's traffic goes back to the reference"
        )
        self.traffic.phase = "retrained"
        self.traffic.sepal_width_shift = 0.0
        await self._eventually("the alerts to resolve", lambda: not st().get("alerts"), 120)
        incident.resolved = self.t()
        self.mark("info", "alerts resolved", "")
        await self._notified(incident, st)
        await self._eventually("phase Observing", lambda: st().get("phase") == "Observing", 30)
        self.say(f"   resolved; phase {st().get('phase')} ({self.t():.0f}s)\n")

    async def _follow(
        self,
        incident: Incident,
        st: Callable[[], dict[str, Any]],
        sent: int,
        *,
        alert_type: str,
        reactions: frozenset[str],
        diagnosis: bool = True,
    ) -> None:
        """Detection, diagnosis and reaction of one incident, as the ObservedModel shows them.

        Waits for `alert_type` to fire, then for every action in `reactions` to be recorded
        (Succeeded, Skipped or Failed); alerts that fire meanwhile are reported as they come.
        """
        traffic = self.traffic
        assert traffic is not None

        def fired() -> list[dict[str, Any]]:
            return [a for a in st().get("alerts") or [] if a.get("type") == alert_type]

        await self._eventually(f"a {alert_type} alert", fired, 90)
        incident.detected = self.t()
        incident.requests_to_detect = traffic.counts["sent"] - sent
        alerts = st().get("alerts") or []
        reported: set[tuple[str, str]] = set()

        def report(alerts: list[dict[str, Any]]) -> None:
            for a in alerts:
                key = (str(a.get("type")), str(a.get("feature", "")))
                if key in reported:
                    continue
                reported.add(key)
                incident.alerts = sorted({*incident.alerts, key[0]})
                if key[1]:
                    incident.features = sorted({*incident.features, key[1]})
                p = a.get("pValue")
                on = f" on {a['feature']}" if a.get("feature") else ""
                self.say(
                    f"   [bold]detected[/] {a['type']}{on}"
                    f": {a.get('test')} statistic {float(a.get('statistic', 0)):.3g}"
                    + (f", p = {float(p):.2g}" if p is not None else "")
                    + f" ({self.t() - incident.onset:.1f}s, "
                    f"{traffic.counts['sent'] - sent} requests after onset)"
                )

        report(alerts)
        self.mark("detection", ", ".join(
            f"{a['type']}{'/' + a['feature'] if a.get('feature') else ''}" for a in alerts),
            f"{incident.detected - incident.onset:.1f}s after onset")  # fmt: skip

        def diagnosed() -> Any:
            return st().get("topSuspect")

        if not diagnosis:  # no plausible cause: wait for the diagnosis of this onset

            def this_onset() -> bool:
                onset = str((st().get("diagnosis") or {}).get("onset") or "")
                return onset[:19] >= incident.onset_at[:19]

            await self._eventually("a diagnosis", this_onset, 60)
            incident.diagnosed = self.t()
            suspects = (st().get("diagnosis") or {}).get("suspects") or []
            best = (
                f" (the best, {suspects[0].get('kind')}/{suspects[0].get('name')}, scores "
                f"{float(suspects[0].get('score', 0)):.2f})"
                if suspects
                else ""
            )
            incident.top_suspect = str(st().get("topSuspect") or "none")
            self.say(
                f"   [bold]diagnosed[/]: top suspect {incident.top_suspect}: no change in the "
                f"cluster explains it{best}"
            )
        else:
            top = await self._eventually("a diagnosis", diagnosed, 60)
            incident.diagnosed = self.t()
            incident.top_suspect = str(top)
            suspects = (st().get("diagnosis") or {}).get("suspects") or []
            first = suspects[0] if suspects else {}
            incident.evidence = [str(e) for e in first.get("evidence", [])]
            self.say(f"   [bold]diagnosed[/]: top suspect [bold]{top}[/] "
                     f"(score {float(first.get('score', 0)):.2f})")  # fmt: skip
            for e in incident.evidence[:3]:
                self.say(f"     · {e}")
            self.mark("diagnosis", f"top suspect {top}", "; ".join(incident.evidence[:2]))

        def acted() -> list[dict[str, Any]]:
            records = st().get("reactions") or []
            done = [
                r
                for r in records
                # A retraining run is Running until its Job ends: started is what is shown.
                if (
                    r.get("result") in ("Succeeded", "Skipped", "Failed")
                    or (r.get("action") == "retrain" and r.get("result") == "Running")
                )
                and str(r.get("at", "")) >= incident.onset_at
            ]
            report(st().get("alerts") or [])
            return done if reactions <= {r.get("action") for r in done} else []

        records = await self._eventually("the reaction", acted, 60)
        incident.reacted = self.t()
        seen: set[str] = set()
        for r in records:
            if r.get("id") in seen:
                continue
            seen.add(str(r.get("id")))
            short = f"{r.get('action')} {r.get('result')}"
            line = f"{r.get('action')} {r.get('target', '')}: {r.get('result')}"
            if r.get("action") == "rollback" and (r.get("from") or r.get("to")):
                short = f"{r.get('action')} {r.get('from')}→{r.get('to')} {r.get('result')}"
                line += f" (revision {r.get('from')} → {r.get('to')})"
            if r.get("result") == "Skipped":
                line += f": {r.get('reason')}"
            elif r.get("message"):
                line += f": {r.get('message')}"
            incident.actions.append(short)
            incident.action_details.append(line)
            self.say(f"   [bold]reacted[/]: {line}")
            self.mark("reaction", f"{r.get('action')} {r.get('result')}", str(r.get("target")))

    async def _verified(
        self, incident: Incident, st: Callable[[], dict[str, Any]], action: str
    ) -> None:
        """Wait for the verdict on the incident's `action` (react/verify.py) and say it."""

        def verdict() -> dict[str, Any] | None:
            for r in st().get("reactions") or []:
                v = r.get("verification") or {}
                if (
                    r.get("action") == action
                    and str(r.get("at", "")) >= incident.onset_at
                    and v.get("verdict") not in (None, "Pending")
                ):
                    return dict(v)
            return None

        v = await self._eventually(f"the verification of the {action}", verdict, 150)
        incident.verification = str(v.get("verdict"))
        incident.actions.append(f"{action} verified {incident.verification}")
        before, after = v.get("before"), v.get("after")
        figures = (
            f": {v.get('signal')} {float(before):.3g} before, {float(after):.3g} after"
            if isinstance(before, int | float) and isinstance(after, int | float)
            else f": {v.get('message', '')}"
        )
        self.say(f"   [bold]verified[/]: {action} {incident.verification}{figures}")
        self.mark("reaction", f"{action} verified {incident.verification}", str(v.get("signal")))

    # ------------------------------------------------------------------ the end

    async def _kubectl(self) -> None:
        """What a user sees with kubectl, printed by the real kubectl when there is one."""
        kubectl = shutil.which("kubectl")
        if kubectl is None:
            self.console.print("[dim](no kubectl here: skipping what `kubectl get om` shows)[/]")
            return
        env = {**os.environ, "KUBECONFIG": self.result.kubeconfig}
        for args in (["get", "om"], ["get", "deploy", MODEL], ["get", "events"]):
            proc = await asyncio.create_subprocess_exec(
                kubectl, *args, env=env, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            out, err = await proc.communicate()
            text = (out or err).decode(errors="replace").rstrip()
            self.console.print(f"[bold]$ kubectl {' '.join(args)}[/]\n{text}\n", markup=True,
                               highlight=False, soft_wrap=True)  # fmt: skip

    def _summary(self) -> None:

        table = Table(title="What happened", expand=True)
        for col in ("incident", "detected after", "alerts", "top suspect", "actions"):
            table.add_column(col, overflow="fold")
        for i in self.result.incidents:
            detected = "-" if i.detected is None else (
                f"{i.detected - i.onset:.1f}s / {i.requests_to_detect} req")  # fmt: skip
            if i.canary_requests is not None:
                detected += f" (the canary served {i.canary_requests} in all)"
            alerts = ", ".join(i.alerts) + (f" ({', '.join(i.features)})" if i.features else "")
            table.add_row(i.name, detected, alerts, i.top_suspect or "-", "\n".join(i.actions))
        self.console.print(table)
        c, r = self.result.requests, self.result.records
        accounting = Table(title="Accounting")
        accounting.add_column("")
        accounting.add_column("count", justify="right")
        for label, value in (
            ("requests sent through the sidecar", c.get("sent", 0)),
            ("answered 200 by the model", c.get("ok", 0)),
            ("malformed on purpose, answered 4xx by the model", c.get("model_4xx", 0)),
            ("failed", c.get("failed", 0)),
            ("served by iris:" + GOOD, self.result.served_by_version.get(GOOD, 0)),
            ("served by iris:" + BAD, self.result.served_by_version.get(BAD, 0)),
            ("records captured by the sidecar", int(r.get("captured", 0))),
            ("records the detector ingested", int(r.get("ingested", 0))),
            ("records dropped", int(r.get("dropped", 0))),
            ("sidecar overhead p50 / p99 (ms)", r.get("overhead", "n/a")),
        ):
            accounting.add_row(label, str(value))
        self.console.print(accounting)
        self.console.print(f"model image at the end: [bold]{self.result.final_image}[/]")
        if self.result.report:
            self.console.print(f"HTML report: [bold]{self.result.report}[/]")
        self.console.print(f"[dim]Demo finished in {self.result.seconds:.0f}s.[/]")

    def _write_report(self, path: str) -> str | None:
        assert self.traffic is not None
        try:  # reason: pyarrow and matplotlib load at the end, and the demo runs without them
            from mlwarden.check import check_columns
            from mlwarden.report import TimelineEvent, render_html
        except ImportError as exc:
            self.console.print(f"[yellow]no HTML report: {exc}[/]")
            return None
        phases = self.traffic.by_phase
        if not phases.get("steady") or not phases.get("incident"):
            return None
        ref = {f: [row[i] for row in phases["steady"]] for i, f in enumerate(FEATURES)}
        cur = {f: [row[i] for row in phases["incident"]] for i, f in enumerate(FEATURES)}
        report = check_columns(ref, cur, manifest=parse_observed_model(yaml.safe_load(MANIFEST)))
        timeline = [TimelineEvent(at, kind, title, detail)
                    for at, kind, title, detail in self.timeline]  # fmt: skip
        summary = [("incidents", str(len(self.result.incidents)))]
        for i in self.result.incidents:
            detected = f"detected after {(i.detected or 0) - i.onset:.1f}s"
            summary.append((i.name, f"{detected}; top suspect {i.top_suspect}; "
                                    f"{'; '.join(i.actions)}"))  # fmt: skip
        summary.append(("requests failed", str(self.result.requests.get("failed", 0))))
        html = render_html(
            report, title="mlwarden demo: reference vs the feature-job incident",
            timeline=timeline, summary=summary,
        )  # fmt: skip
        out = Path(path).resolve()
        out.write_text(html)
        return str(out)


REVISION_KEY = "deployment.kubernetes.io/revision"


def _model_image(dep: dict[str, Any]) -> str:
    for c in dep.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
        if c.get("name") == "model":
            return str(c.get("image", ""))
    return ""


async def _kubectl_apply(server: str, manifest: str) -> None:

    await _api(server, lambda kube: kube.create(yaml.safe_load(manifest)))


async def _patch(server: str, kind: str, name: str, body: Any) -> None:

    await _api(server, lambda kube: kube.merge_patch(path(kind, NS, name), body))


async def _patch_status(server: str, kind: str, name: str, body: Any) -> None:

    await _api(server, lambda kube: kube.merge_patch(path(kind, NS, name, "status"), body))


async def _api(server: str, call: Callable[[Any], Awaitable[Any]]) -> Any:
    """One call through mlwarden's Kubernetes client, as kubectl would make it."""

    kube = Kube(StaticToken(server))
    try:
        return await call(kube)
    except KubeError as exc:
        raise DemoError(str(exc)) from None
    finally:
        await kube.close()


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.load(resp)


def _metrics(admin_url: str) -> str:
    with urllib.request.urlopen(f"{admin_url}/metrics", timeout=5) as resp:
        return str(resp.read().decode())


def _settled_counts(admin_urls: list[str], detector_url: str) -> dict[str, Any]:
    """The sidecars' and detector's counters once the last batches have landed."""

    out: dict[str, Any] = {}
    for _ in range(50):
        values: dict[str, float] = {}
        texts = [_metrics(url) for url in admin_urls]
        for text in texts:
            for family in text_string_to_metric_families(text):
                for s in family.samples:
                    name = {
                        "mlwarden_sidecar_records_dropped_total": "dropped",
                        "mlwarden_sidecar_records_captured_total": "captured",
                        "mlwarden_sidecar_records_shipped_total": "shipped",
                    }.get(s.name)
                    if name is not None:
                        values[name] = values.get(name, 0) + s.value
        ingested = _get_json(f"{detector_url}/v1/status").get("recordsIngested", 0)
        out = {**values, "ingested": ingested, "overhead": _overhead(texts)}
        if values.get("captured") == values.get("shipped") == ingested:
            break
        time.sleep(0.1)
    return out


def _overhead(texts: list[str]) -> str:
    """p50 and p99 of the sidecars' overhead histograms summed, interpolated like
    histogram_quantile."""

    summed: dict[float, float] = {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            if family.name == "mlwarden_sidecar_overhead_seconds":
                for s in family.samples:
                    if s.name.endswith("_bucket"):
                        le = float(s.labels["le"])
                        summed[le] = summed.get(le, 0) + s.value
    buckets = sorted(summed.items())
    total = buckets[-1][1] if buckets else 0

    def quantile(q: float) -> float:
        rank, prev_le, prev_count = q * total, 0.0, 0.0
        for le, count in buckets:
            if count >= rank:
                if le == float("inf"):
                    return prev_le
                span = count - prev_count
                return prev_le + (le - prev_le) * ((rank - prev_count) / span if span else 0)
            prev_le, prev_count = le, count
        return float("nan")

    return f"{quantile(0.5) * 1000:.2f} / {quantile(0.99) * 1000:.2f}" if total else "n/a"


__all__ = ["DemoError", "DemoResult", "run_demo", "write_iris_model", "write_models"]
