"""Incidents with the real operator against the emulator: status.incidents, fleets of models
(the Incident object and one webhook message for all), and the push to a real Alertmanager
(Debian's prometheus-alertmanager on loopback, skipped with the reason when absent)."""

from __future__ import annotations

import asyncio
import base64
import shutil
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web
from cluster import (
    FAST,
    MERGE,
    NS,
    OM,
    REFERENCE,
    RESOURCES,
    Cluster,
    ago,
    alert,
    api_call,
    events,
    eventually,
    free_port,
    iso,
    model_deployment,
    model_service,
    obj,
    observed_model,
    patch_status,
    status,
)

INCIDENTS = RESOURCES["Incident"]
ALERTMANAGER = shutil.which("prometheus-alertmanager") or "/usr/bin/prometheus-alertmanager"
HAS_ALERTMANAGER = Path(ALERTMANAGER).exists()
FEATURES = [{"name": f"f{n}", "type": "numeric"} for n in range(10)]


def messages(api: Cluster, reason: str) -> list[str]:
    return [str(e.get("message")) for e in events(api) if e.get("reason") == reason]


class Receiver:
    """A webhook receiver on loopback: every JSON body posted to it."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.url = ""

    async def hook(self, request: web.Request) -> web.Response:
        self.received.append(await request.json())
        return web.json_response({"ok": True})


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rcv = Receiver()
    app = web.Application()
    app.router.add_post("/hook", rcv.hook)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    rcv.url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    yield rcv
    await runner.cleanup()


# --------------------------------------------------------------------------- one model


async def test_ten_alerts_that_start_together_are_one_incident_in_status(
    observing: Callable[..., Any], receiver: Receiver
) -> None:
    env = await observing(
        features=FEATURES,
        reactions=[{"alert": "FeatureDrift", "action": "alert", "webhook": receiver.url,
                    "webhookFormat": "json"}],
        operator_env={"MLWARDEN_WEBHOOK_ALLOW": "127.0.0.1"},
    )  # fmt: skip
    api = env.api
    since = iso(ago(minutes=2))
    drift = [alert("FeatureDrift", feature=f["name"], since=since) for f in FEATURES]
    await patch_status(env.server, {"alerts": drift})
    await eventually(lambda: status(api).get("openIncidents") == 1, what="one open incident")
    (incident,) = status(api)["incidents"]
    assert incident["state"] == "Firing" and incident["severity"] == "warning"
    assert len(incident["alerts"]) == 10 and incident["onset"] == since
    assert incident["summary"].startswith("FeatureDrift on 10 features")
    opened = await eventually(lambda: messages(api, "IncidentOpened"), what="IncidentOpened")
    assert len(opened) == 1 and incident["id"] in opened[0]
    await eventually(lambda: len(receiver.received) == 1, what="one message")
    (message,) = receiver.received
    assert "blocks" not in message and message["incident"]["id"] == incident["id"]  # json
    await eventually(lambda: status(api)["incidents"][0].get("actions"), what="the action listed")
    (taken,) = status(api)["incidents"][0]["actions"]
    assert taken["action"] == "alert" and taken["result"] == "Succeeded"

    # Half resolve: the incident stays open; an alert that starts later on joins it.
    later = iso(ago(seconds=30))
    await patch_status(env.server, {"alerts": [
        *drift[:5], alert("FeatureDrift", feature="f9", since=later)]})  # fmt: skip
    await eventually(lambda: messages(api, "IncidentUpdated"), what="f9 joined")
    (incident,) = status(api)["incidents"]
    assert incident["state"] == "Firing" and len(incident["alerts"]) == 10
    assert sum(1 for a in incident["alerts"] if a.get("resolved")) == 4
    # All resolved: Resolved, an Event, and the resolved message.
    await patch_status(env.server, {"alerts": []})
    await eventually(lambda: status(api)["incidents"][0]["state"] == "Resolved", what="Resolved")
    assert status(api)["openIncidents"] == 0
    await eventually(lambda: messages(api, "IncidentResolved"), what="IncidentResolved")
    await eventually(lambda: len(receiver.received) == 2, what="the resolved message")
    assert receiver.received[1]["status"] == "resolved"
    await asyncio.sleep(1.5)
    assert len(receiver.received) == 2 and len(messages(api, "IncidentOpened")) == 1


# --------------------------------------------------------------------------- a fleet


def feature_job(onset: Any) -> list[dict[str, Any]]:
    """A CronJob whose last run failed 3 minutes before `onset`: the features' suspect."""

    def meta(name: str, **extra: Any) -> dict[str, Any]:
        return {"name": name, "namespace": NS, "uid": str(uuid.uuid4()), "resourceVersion": "1",
                "creationTimestamp": iso(ago(days=30)), **extra}  # fmt: skip

    cronjob = {
        "apiVersion": "batch/v1", "kind": "CronJob", "metadata": meta("feature-etl"),
        "spec": {"schedule": "*/30 * * * *", "jobTemplate": {"spec": {"template": {"spec": {
            "containers": [{"name": "etl", "image": "etl:1"}], "restartPolicy": "Never"}}}}},
    }  # fmt: skip
    failed_at = onset - timedelta(minutes=3)
    job = {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": meta("feature-etl-29000000", ownerReferences=[{
            "apiVersion": "batch/v1", "kind": "CronJob", "name": "feature-etl",
            "uid": cronjob["metadata"]["uid"], "controller": True}]),
        "spec": {"template": {"spec": {"containers": [{"name": "etl", "image": "etl:1"}]}}},
        "status": {"startTime": iso(failed_at - timedelta(minutes=2)), "failed": 1,
                   "conditions": [{"type": "Failed", "status": "True",
                                   "reason": "BackoffLimitExceeded",
                                   "lastTransitionTime": iso(failed_at)}]},
    }  # fmt: skip
    return [cronjob, job]


async def patch_model_status(server: str, name: str, fields: dict[str, Any]) -> None:
    path = f"/apis/mlwarden.io/v1alpha1/namespaces/{NS}/observedmodels/{name}/status"
    await api_call(server, "PATCH", path, {"status": fields}, MERGE)


async def test_five_models_sharing_a_suspect_are_one_fleet_incident_and_one_message(
    cluster: tuple[Cluster, str],
    start_operator: Callable[..., Any],
    seed: Callable[..., None],
    receiver: Receiver,
) -> None:
    api, server = cluster
    onset = ago(minutes=2)
    models = [f"m{n}" for n in range(5)]
    spec = {
        "features": [{"name": "amount", "type": "numeric"}],
        "pipeline": [{"name": "feature-etl", "kind": "CronJob", "produces": ["amount"]}],
        "reactions": [{"alert": "FeatureDrift", "action": "alert", "webhook": receiver.url}],
    }
    seed(api, *feature_job(onset))
    for model in models:
        seed(api, model_deployment(f"{model}-model"), model_service(f"{model}-model"),
             observed_model(model, target=f"{model}-model", **spec))  # fmt: skip
    await start_operator(env={**FAST, "MLWARDEN_WEBHOOK_ALLOW": "127.0.0.1",
                              "MLWARDEN_NOTIFY_WAIT_SECONDS": "3"})  # fmt: skip
    for model in models:
        await eventually(lambda m=model: status(api, m).get("phase") == "WarmingUp", timeout=40,
                         what=f"{model} WarmingUp")  # fmt: skip
        await patch_model_status(server, model, {"alerts": [], "detector": {
            "reference": REFERENCE, "updated": iso(ago(seconds=1))}})  # fmt: skip
    for model in models:
        await eventually(lambda m=model: status(api, m).get("phase") == "Observing",
                         what=f"{model} Observing")  # fmt: skip
    drift = {"alerts": [alert("FeatureDrift", feature="amount", since=iso(onset))]}
    await asyncio.gather(*(patch_model_status(server, m, drift) for m in models))

    def fleets() -> list[dict[str, Any]]:
        return [dict(api.objects[k]) for k in api.objects
                if str(k[0].plural) == "incidents" and not api.objects[k].deleted]  # fmt: skip

    await eventually(lambda: len(fleets()) == 1 and fleets()[0].get("modelCount") == 5,
                     what="one fleet incident naming five models", timeout=30)  # fmt: skip
    (fleet,) = fleets()
    name = fleet["metadata"]["name"]
    assert fleet["suspect"] == "CronJob/feature-etl" and fleet["state"] == "Firing"
    assert sorted(m["observedModel"] for m in fleet["members"]) == models
    owners = sorted(o["name"] for o in fleet["metadata"]["ownerReferences"])
    assert owners == models and all(o.get("controller") is None
                                    for o in fleet["metadata"]["ownerReferences"])  # fmt: skip
    for model in models:  # each model's next pass (every 0.5 s) assigns its incident
        await eventually(lambda m=model: status(api, m)["incidents"][0].get("fleet") == name,
                         what=f"{model}'s incident in the fleet")  # fmt: skip
        assert status(api, model)["incidents"][0]["suspect"] == "CronJob/feature-etl"
    # One message for the five, naming the suspect and the models.
    await eventually(lambda: all(any(r["action"] == "alert" and r["result"] == "Succeeded"
                                     for r in status(api, m).get("reactions") or ())
                                 for m in models), what="every model's alert settled",
                     timeout=30)  # fmt: skip
    await asyncio.sleep(1.5)
    assert len(receiver.received) == 1, [r.get("text") for r in receiver.received]
    (message,) = receiver.received
    assert message["kind"] == "fleetIncident" and message["incident"]["id"] == name
    assert "CronJob/feature-etl" in message["text"] and "5 models" in message["text"]
    assert sorted(m["observedModel"] for m in message["incident"]["members"]) == models
    assert len(messages(api, "FleetIncident")) == 5  # one per model, on its own object
    # All resolve: the fleet resolves, and its resolved message goes out once.
    await asyncio.gather(*(patch_model_status(server, m, {"alerts": []}) for m in models))
    await eventually(lambda: fleets()[0].get("state") == "Resolved", what="fleet resolved",
                     timeout=40)  # fmt: skip
    await eventually(lambda: len(receiver.received) == 2, what="the fleet's resolved message")
    assert receiver.received[1]["status"] == "resolved"
    await asyncio.sleep(1.5)
    assert len(receiver.received) == 2
    assert obj(api, OM, "m0")["status"]["openIncidents"] == 0


# --------------------------------------------------------------------------- Alertmanager


@pytest.fixture
async def alertmanager(tmp_path: Path, receiver: Receiver) -> AsyncIterator[str]:
    if not HAS_ALERTMANAGER:
        pytest.skip("prometheus-alertmanager not found: install Debian's prometheus-alertmanager "
                    "package (apt-get install prometheus-alertmanager; .ci/run does)")  # fmt: skip
    config = {
        "route": {"receiver": "hook", "group_by": ["namespace", "suspect"], "group_wait": "1s",
                  "group_interval": "1s", "repeat_interval": "1h"},
        "receivers": [{"name": "hook", "webhook_configs": [
            {"url": receiver.url, "send_resolved": True}]}],
    }  # fmt: skip
    (tmp_path / "am.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with open(tmp_path / "alertmanager.log", "wb") as log:
        proc = await asyncio.create_subprocess_exec(
            ALERTMANAGER, f"--config.file={tmp_path / 'am.yml'}",
            f"--storage.path={tmp_path / 'am'}", f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=", "--log.level=warn", stdout=log, stderr=log,
        )  # fmt: skip

    async def ready() -> bool:
        try:
            async with aiohttp.ClientSession() as http, http.get(f"{url}/-/ready") as r:
                return r.status == 200
        except aiohttp.ClientError:
            return False

    for _ in range(100):
        if await ready():
            break
        await asyncio.sleep(0.1)
    yield url
    proc.terminate()
    await proc.wait()


async def test_incidents_are_pushed_to_alertmanager_and_resolved(
    observing: Callable[..., Any], alertmanager: str, receiver: Receiver
) -> None:
    env = await observing(operator_env={"MLWARDEN_ALERTMANAGER_URL": alertmanager})
    api = env.api
    await patch_status(env.server, {"alerts": [alert("Errors"), alert("Latency")]})
    notes = await eventually(lambda: receiver.received, what="Alertmanager's notification")
    (incident,) = status(api)["incidents"]
    (note,) = notes
    assert note["status"] == "firing" and len(note["alerts"]) == 1
    labels = note["alerts"][0]["labels"]
    assert labels == {"alertname": "MLWardenIncident", "namespace": NS, "observedmodel": "fraud",
                      "incident": incident["id"], "severity": "critical",
                      "suspect": "none"}  # fmt: skip
    annotations = note["alerts"][0]["annotations"]
    assert "Errors" in annotations["summary"] and "Latency" in annotations["summary"]
    assert annotations["command"] == f"kubectl describe om fraud -n {NS}"
    await patch_status(env.server, {"alerts": []})
    await eventually(lambda: len(receiver.received) == 2, what="the resolution", timeout=15)
    assert receiver.received[1]["status"] == "resolved"
    assert receiver.received[1]["alerts"][0]["labels"]["incident"] == incident["id"]


# --------------------------------------------------------------------------- Secret URLs


async def test_a_webhook_url_from_a_secret(
    observing: Callable[..., Any], receiver: Receiver
) -> None:
    secret = {
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "team-hooks", "namespace": NS, "uid": str(uuid.uuid4()),
                     "resourceVersion": "1"},
        "data": {"url": base64.b64encode(receiver.url.encode()).decode()},
    }  # fmt: skip
    env = await observing(
        secret,
        reactions=[
            {"alert": "Errors", "action": "alert", "webhookSecret": {"name": "team-hooks"}},
            {"alert": "Errors", "action": "alert", "webhookSecret": {"name": "gone"}},
        ],
        operator_env={"MLWARDEN_WEBHOOK_ALLOW": "127.0.0.1"},
    )  # fmt: skip
    api = env.api
    await patch_status(env.server, {"alerts": [alert("Errors")]})
    await eventually(lambda: len(receiver.received) == 1, what="the message via the Secret's URL")
    assert receiver.received[0]["incident"]["severity"] == "critical"
    record = await eventually(
        lambda: next((r for r in status(api).get("reactions") or ()
                      if r["action"] == "alert" and r["result"] == "Failed"), None),
        what="the record",
    )  # fmt: skip
    assert "1 webhook(s) notified" in record["message"]
    assert "webhook Secret gone/url: Secret test/gone not found" in record["message"]
    assert receiver.url not in str(status(api))  # the URL is a secret: never in status
