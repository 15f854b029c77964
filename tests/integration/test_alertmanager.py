"""Incidents through a real Alertmanager: Debian's `prometheus-alertmanager`, on loopback.

The test starts Alertmanager with the route the chart's docs ship
(examples/alertmanager/alertmanager.yaml), its waits shortened to a second and its receivers
pointed at a webhook receiver on loopback, and pushes incidents the way the operator does:
`react.incidents.track` over the alerts, then `operator.alertmanager.Alertmanager` (what is
due, and the POST to /api/v2/alerts). What arrives at the receiver is Alertmanager's own
notification, so each check is about what people would be told:

- a drift on ten features is one incident, one alert, one notification group;
- its resolution arrives (send_resolved) once the incident resolves;
- a silence created through Alertmanager's API suppresses it (and not another model's);
- five models whose incidents share a suspect arrive as one notification naming them all.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web
from harness import ManagedProcess, free_port, start_process

from mlwarden.operator.alertmanager import Alertmanager
from mlwarden.react.incidents import Incident, track
from mlwarden.timestamps import format_time

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "alertmanager" / "alertmanager.yaml"
BINARY = shutil.which("prometheus-alertmanager") or "/usr/bin/prometheus-alertmanager"

pytestmark = pytest.mark.skipif(
    not Path(BINARY).exists(),
    reason="prometheus-alertmanager not found: install Debian's prometheus-alertmanager "
    "package (apt-get install prometheus-alertmanager; .ci/run does)",
)

NS = "ml"
JOB = "CronJob/feature-job"


@dataclass
class Receiver:
    url: str
    received: list[dict[str, Any]]

    async def wait(self, count: int, timeout: float = 15.0) -> list[dict[str, Any]]:
        deadline = asyncio.get_running_loop().time() + timeout
        while len(self.received) < count:
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{len(self.received)} notification(s), wanted {count}")
            await asyncio.sleep(0.1)
        return self.received


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    received: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response()

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield Receiver(f"http://127.0.0.1:{runner.addresses[0][1]}/hook", received)
    await runner.cleanup()


@pytest.fixture
def alertmanager(tmp_path: Path, receiver: Receiver) -> Iterator[ManagedProcess]:
    """The shipped route, waits shortened, every receiver on the loopback webhook."""
    config = yaml.safe_load(EXAMPLE.read_text())
    for route in [config["route"], *config["route"]["routes"]]:
        route.update({"group_wait": "1s", "group_interval": "1s", "repeat_interval": "1h"})
    for rcv in config["receivers"]:
        rcv["webhook_configs"][0]["url"] = receiver.url
    path = tmp_path / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = [
        BINARY,
        f"--config.file={path}",
        f"--storage.path={tmp_path / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",  # one instance, no gossip port
        "--log.level=warn",
    ]
    proc = ManagedProcess(
        start_process(args, tmp_path / "alertmanager.log", f"{url}/-/ready", "alertmanager"),
        url,
        tmp_path / "alertmanager.log",
    )
    yield proc
    proc.stop()


NOW = datetime.now(UTC).replace(microsecond=0)


def drift(features: list[str], *, ago: float = 120) -> list[dict[str, Any]]:
    since = format_time(NOW - timedelta(seconds=ago))
    return [{"type": "FeatureDrift", "feature": f, "test": "ks", "since": since} for f in features]


def incidents(alerts: list[dict[str, Any]], *, model: str, previous: Any = None,
              now: datetime | None = None, top: str = JOB) -> tuple[Incident, ...]:  # fmt: skip
    """What the operator's pass keeps in status.incidents for `alerts` (opened now)."""
    return track(previous=previous, alerts=alerts, top=top, model_uid=f"uid-{model}",
                 now=now or datetime.now(UTC)).incidents  # fmt: skip


async def api(manager: ManagedProcess, method: str, path: str, body: Any = None) -> Any:
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, manager.url + path, json=body) as reply,
    ):
        assert reply.status == 200, await reply.text()
        return await reply.json()


async def push(manager: Alertmanager, model: str, found: tuple[Incident, ...],
               now: datetime | None = None) -> None:  # fmt: skip
    alerts = manager.due(namespace=NS, name=model, incidents=found, top=None, actions={},
                         now=now or datetime.now(UTC))  # fmt: skip
    assert await manager.push(alerts) == []


async def test_a_ten_feature_incident_is_one_notification_and_its_resolution_arrives(
    alertmanager: ManagedProcess, receiver: Receiver
) -> None:
    manager = Alertmanager(urls=(alertmanager.url,), resend_seconds=60)
    features = [f"f{n}" for n in range(10)]
    firing = incidents(drift(features), model="fraud")
    assert len(firing) == 1
    await push(manager, "fraud", firing)
    (note,) = await receiver.wait(1)
    assert note["status"] == "firing" and len(note["alerts"]) == 1
    assert note["groupLabels"] == {"namespace": NS, "suspect": JOB}
    (alert,) = note["alerts"]
    assert alert["labels"] == {
        "alertname": "MLWardenIncident", "namespace": NS, "observedmodel": "fraud",
        "incident": firing[0].id, "severity": "warning", "suspect": JOB,
    }  # fmt: skip
    assert all(f"FeatureDrift/{f} since" in alert["annotations"]["description"] for f in features)
    assert alert["annotations"]["summary"].startswith("ml/fraud: FeatureDrift on 10 features")
    assert alert["annotations"]["command"] == "kubectl describe om fraud -n ml"
    # Re-sent while firing: nothing new for people (Alertmanager deduplicates).
    later = datetime.now(UTC) + timedelta(seconds=61)
    await push(manager, "fraud", firing, later)
    await asyncio.sleep(2.5)
    assert len(receiver.received) == 1
    # Resolved: sent with endsAt, and Alertmanager tells the receiver.
    status = [i.to_status() for i in firing]
    ended = datetime.now(UTC)  # endsAt must not lie ahead of Alertmanager's clock
    resolved = incidents([], model="fraud", previous=status, now=ended)
    assert resolved[0].state == "Resolved"
    await push(manager, "fraud", resolved, ended)
    notes = await receiver.wait(2)
    assert notes[1]["status"] == "resolved"
    assert notes[1]["alerts"][0]["labels"]["incident"] == firing[0].id


async def test_a_silence_suppresses_the_incident(
    alertmanager: ManagedProcess, receiver: Receiver
) -> None:
    silence = {
        "matchers": [{"name": "observedmodel", "value": "fraud", "isRegex": False,
                      "isEqual": True}],
        "startsAt": format_time(datetime.now(UTC)),
        "endsAt": format_time(datetime.now(UTC) + timedelta(hours=1)),
        "createdBy": "test", "comment": "maintenance of the fraud model",
    }  # fmt: skip
    silence_id = (await api(alertmanager, "POST", "/api/v2/silences", silence))["silenceID"]
    manager = Alertmanager(urls=(alertmanager.url,))
    silenced = incidents(drift(["amount"]), model="fraud")
    heard = incidents([{"type": "Errors", "test": "rate", "since": format_time(NOW)}],
                      model="payments")  # fmt: skip
    await push(manager, "fraud", silenced)
    await push(manager, "payments", heard)
    (note,) = await receiver.wait(1)
    assert [a["labels"]["observedmodel"] for a in note["alerts"]] == ["payments"]
    assert note["alerts"][0]["labels"]["severity"] == "critical"
    await asyncio.sleep(2.5)
    assert len(receiver.received) == 1
    state = await api(alertmanager, "GET", "/api/v2/alerts")
    fraud = next(a for a in state if a["labels"]["observedmodel"] == "fraud")
    assert fraud["status"]["state"] == "suppressed"
    assert fraud["status"]["silencedBy"] == [silence_id]


async def test_five_models_sharing_a_suspect_are_one_fleet_notification(
    alertmanager: ManagedProcess, receiver: Receiver
) -> None:
    manager = Alertmanager(urls=(alertmanager.url,))
    models = [f"model-{n}" for n in range(5)]
    for model in models:
        await push(manager, model, incidents(drift(["amount", "age"]), model=model))
    other = incidents(drift(["zip"]), model="geo", top="ConfigMap/zips")
    await push(manager, "geo", other)
    await receiver.wait(2)
    await asyncio.sleep(2.0)
    # One group per suspect. On a loaded machine the six pushes can straddle group_wait (1 s
    # here): Alertmanager then sends the group's first alerts, and the rest group_interval
    # later as an update of the same group (as it would in a cluster): the group's last
    # notification holds all five models.
    groups: dict[str, list[dict[str, Any]]] = {}
    for note in receiver.received:
        groups.setdefault(note["groupKey"], []).append(note)
    assert len(groups) == 2, receiver.received
    (fleet_notes,) = [g for g in groups.values() if g[0]["groupLabels"]["suspect"] == JOB]
    (alone_notes,) = [g for g in groups.values() if g is not fleet_notes]
    fleet = fleet_notes[-1]
    assert sorted(a["labels"]["observedmodel"] for a in fleet["alerts"]) == models
    assert fleet["commonLabels"]["suspect"] == JOB
    assert [[a["labels"]["observedmodel"] for a in n["alerts"]] for n in alone_notes] == [["geo"]]
