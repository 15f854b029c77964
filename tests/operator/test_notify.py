"""Webhook delivery (operator/notify.py) against real HTTP servers on loopback: retries with
backoff within a bound, final answers not retried, short cleaned excerpts, Slack threads."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from aiohttp import web

from mlwarden.operator.notify import (
    WEBHOOK_TEXT_LIMIT,
    Destination,
    deliver,
    excerpt,
    webhook_allow_list,
)


@pytest.fixture
def allow_loopback(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("MLWARDEN_WEBHOOK_ALLOW", "127.0.0.1")
    webhook_allow_list.cache_clear()
    yield
    webhook_allow_list.cache_clear()


@pytest.fixture
async def server() -> AsyncIterator[Callable[..., Any]]:
    """`await server(handler)` -> the URL of a loopback server answering with `handler`."""
    runners: list[web.AppRunner] = []

    async def start(handler: Callable[[web.Request], Any]) -> str:
        app = web.Application()
        app.router.add_post("/hook", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        return f"http://127.0.0.1:{runner.addresses[0][1]}/hook"

    yield start
    for runner in runners:
        await runner.cleanup()


async def test_a_failing_receiver_is_retried_with_backoff_then_delivered(
    allow_loopback: None, server: Callable[..., Any]
) -> None:
    times: list[float] = []

    async def flaky(request: web.Request) -> web.Response:
        times.append(time.monotonic())
        if len(times) < 3:
            return web.Response(status=503, text="busy")
        return web.json_response({"ok": True, "ts": "1700000000.000100"})

    url = await server(flaky)
    (done,) = await deliver([Destination(url, "127.0.0.1")], {"text": "hi"})
    assert done.ok and done.thread == "1700000000.000100"
    assert len(times) == 3
    # 0.5 s, then 1 s between attempts.
    assert times[1] - times[0] >= 0.45 and times[2] - times[1] >= 0.95


async def test_a_refusal_is_final_and_its_answer_kept_short_and_clean(
    allow_loopback: None, server: Callable[..., Any]
) -> None:
    calls: list[int] = []

    async def no(request: web.Request) -> web.Response:
        calls.append(1)
        return web.Response(status=400, text="bad\x1b[31m\n\n" + "x" * 5000)

    url = await server(no)
    (done,) = await deliver([Destination(url, "127.0.0.1:1")], {"text": "hi"})
    assert not done.ok and calls == [1]
    assert done.detail.startswith("webhook 127.0.0.1:1: HTTP 400 bad")
    assert len(done.detail) <= WEBHOOK_TEXT_LIMIT and "\x1b" not in done.detail
    assert "/hook" not in done.detail


async def test_retries_stop_within_the_budget(
    allow_loopback: None, server: Callable[..., Any]
) -> None:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.Response()

    url = await server(slow)
    start = time.monotonic()
    (done,) = await deliver([Destination(url, "127.0.0.1")], {}, per_attempt=0.3, budget=1.5)
    assert not done.ok and "no answer" in done.detail
    assert time.monotonic() - start < 2.5


async def test_a_destination_without_a_url_says_why_and_sends_nothing() -> None:
    (done,) = await deliver([Destination(None, "Secret ml/hooks", "Secret ml/hooks not found")], {})
    assert not done.ok and done.detail == "webhook Secret ml/hooks: Secret ml/hooks not found"


def test_excerpt() -> None:
    assert excerpt("a\tb\r\n\x00c") == "a b c"
    assert len(excerpt("y" * 500)) == WEBHOOK_TEXT_LIMIT
