"""What the Alertmanager pusher sends when (operator/alertmanager.py `Alertmanager.due`), and
its POST against a loopback server that fails first: Prometheus' contract with Alertmanager."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web

from mlwarden.operator.alertmanager import Alertmanager
from mlwarden.react.incidents import Incident, track
from mlwarden.timestamps import format_time

T0 = datetime(2026, 11, 26, 15, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def step(alerts: list[dict[str, Any]], now: datetime, previous: Any = None,
         top: str | None = "CronJob/etl") -> tuple[Incident, ...]:  # fmt: skip
    status = [i.to_status() for i in previous] if previous else []
    return track(previous=status, alerts=alerts, top=top, model_uid="u", now=now).incidents


def due(manager: Alertmanager, incidents: tuple[Incident, ...], now: datetime) -> list[Any]:
    return manager.due(namespace="ml", name="fraud", incidents=incidents, top=None, actions={},
                       now=now)  # fmt: skip


DRIFT = [{"type": "FeatureDrift", "feature": "amount", "since": format_time(T0)}]


def test_firing_is_sent_then_again_only_when_due_or_changed_and_resolved_once() -> None:
    manager = Alertmanager(urls=("http://am:9093",), resend_seconds=60, pass_seconds=30)
    assert manager.ttl_seconds == 240
    firing = step(DRIFT, at(0))
    (first,) = due(manager, firing, at(0))
    assert first["endsAt"] == format_time(at(240))
    assert due(manager, firing, at(30)) == []  # not yet: Alertmanager has it until 240
    (again,) = due(manager, firing, at(61))
    assert again["endsAt"] == format_time(at(301))
    resolved = step([], at(90), previous=firing)
    (ended,) = due(manager, resolved, at(90))
    assert ended["endsAt"] == format_time(at(90)) and ended["labels"] == first["labels"]
    assert due(manager, resolved, at(120)) == []  # said once
    # A restarted operator sends a recently resolved incident once more, not an old one.
    assert len(due(Alertmanager(urls=("x",)), resolved, at(120))) == 1
    assert due(Alertmanager(urls=("x",)), resolved, at(90 + 241)) == []


def test_a_label_that_changes_resolves_the_old_alert() -> None:
    manager = Alertmanager(urls=("http://am:9093",))
    unknown = step(DRIFT, at(0), top=None)
    (first,) = due(manager, unknown, at(0))
    assert first["labels"]["suspect"] == "none"
    known = step(DRIFT, at(10), previous=unknown, top="CronJob/etl")
    old, new = due(manager, known, at(10))
    assert old["labels"]["suspect"] == "none" and old["endsAt"] == format_time(at(10))
    assert new["labels"]["suspect"] == "CronJob/etl" and new["endsAt"] > format_time(at(10))


@pytest.fixture
async def flaky() -> AsyncIterator[tuple[str, list[Any]]]:
    seen: list[Any] = []

    async def alerts(request: web.Request) -> web.Response:
        seen.append(await request.json())
        return web.Response(status=503 if len(seen) == 1 else 200)

    app = web.Application()
    app.router.add_post("/api/v2/alerts", alerts)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}", seen
    await runner.cleanup()


async def test_a_push_is_retried_and_goes_to_every_replica(flaky: tuple[str, list[Any]]) -> None:
    url, seen = flaky
    manager = Alertmanager(urls=(url, url + "/"))
    alerts = due(manager, step(DRIFT, datetime.now(UTC)), datetime.now(UTC))
    assert await manager.push(alerts) == []
    assert len(seen) == 3 and seen[0] == seen[1] == seen[2] == alerts  # 503, then 2 replicas
    refused = Alertmanager(urls=("http://127.0.0.1:9",))
    (failure,) = await refused.push(alerts)
    assert failure.startswith("Alertmanager http://127.0.0.1:9: ")
