"""SIGTERM on the real sidecar: a drain in which no client of the model sees an error.

A rolling update as the clients see it. Pod A (the real `mlwarden sidecar` before the session's
upstream) is terminated; pod B (the upstream itself, another replica) keeps serving. A load
balancer stands in for the endpoints, kube-proxy and ingresses: it polls A's `/readyz` and
drops A from its list `PROPAGATION` seconds after A turns unready (propagation is not
instant on a cluster). Its clients behave as HTTP clients behind a Service do:

- keep-alive clients stay on the connection they have (conntrack pins it to A whatever the
  endpoints say) and pick a backend from the list again only when a response says
  `Connection: close` or the connection is gone;
- one client opens a new connection per request, to a backend from the list.

Every request must succeed, and a slow request sent just before SIGTERM must complete.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from harness import SidecarProcess, Upstream

DRAIN = 1.5
PROPAGATION = 0.5  # from A unready to A out of the load balancer's list


@dataclass
class Balancer:
    backends: list[str]
    removed_at: float | None = None

    def pick(self, n: int) -> str:
        return self.backends[n % len(self.backends)]


@dataclass
class Client:
    """Sends requests in a loop until told to stop; counts what came back, and from where."""

    name: str
    balancer: Balancer
    keep_alive: bool
    ok: int = 0
    errors: list[str] = field(default_factory=list)
    closes_from: list[str] = field(default_factory=list)  # backends that said Connection: close
    served_by: list[str] = field(default_factory=list)

    async def run(self, stop: asyncio.Event) -> None:
        connector = aiohttp.TCPConnector(limit=1, force_close=not self.keep_alive)
        n = 0
        backend = self.balancer.pick(0)
        async with aiohttp.ClientSession(connector=connector) as http:
            while not stop.is_set():
                if not self.keep_alive:
                    backend = self.balancer.pick(n)
                n += 1
                try:
                    async with http.get(f"{backend}/predict/{self.name}/{n}") as resp:
                        await resp.read()
                        if resp.status != 200:
                            self.errors.append(f"{backend}: HTTP {resp.status}")
                        else:
                            self.ok += 1
                            self.served_by.append(backend)
                        if resp.headers.get("Connection", "").lower() == "close":
                            self.closes_from.append(backend)
                            backend = self.balancer.pick(n)
                except aiohttp.ClientError as exc:
                    self.errors.append(f"{backend}: {type(exc).__name__}: {exc}")
                    backend = self.balancer.pick(n)
                await asyncio.sleep(0.02)


async def watch_readiness(
    admin_url: str, balancer: Balancer, a: str, seen: list[tuple[float, int]], done: asyncio.Event
) -> None:
    """The endpoints controller and its propagation: A leaves the list once unready."""
    unready_at: float | None = None
    async with aiohttp.ClientSession() as http:
        while not done.is_set():
            try:
                async with http.get(f"{admin_url}/readyz") as resp:
                    seen.append((time.monotonic(), resp.status))
                    ready = resp.status == 200
            except aiohttp.ClientError:
                ready = False
                seen.append((time.monotonic(), 0))
            if not ready and unready_at is None:
                unready_at = time.monotonic()
            if (
                unready_at is not None
                and a in balancer.backends
                and time.monotonic() - unready_at >= PROPAGATION
            ):
                balancer.backends.remove(a)
                balancer.removed_at = time.monotonic()
            await asyncio.sleep(0.05)


async def test_sigterm_drains_without_a_failed_request(
    start_sidecar: Callable[..., SidecarProcess],
    upstream: Upstream,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MLWARDEN_DRAIN_SECONDS", str(DRAIN))
    monkeypatch.setenv("MLWARDEN_SHUTDOWN_TIMEOUT", "5")
    sidecar = start_sidecar(upstream.url)
    a, b = sidecar.url, upstream.url
    balancer = Balancer([a, b])
    clients = [Client(f"k{i}", balancer, keep_alive=True) for i in range(4)]
    clients.append(Client("fresh", balancer, keep_alive=False))
    stop = asyncio.Event()
    readiness: list[tuple[float, int]] = []
    tasks = [asyncio.create_task(c.run(stop)) for c in clients]
    watcher = asyncio.create_task(watch_readiness(sidecar.admin_url, balancer, a, readiness, stop))
    await asyncio.sleep(0.5)  # steady traffic, keep-alive connections open on A
    assert all(a in c.served_by for c in clients if c.keep_alive), "every client reached A"

    async def slow() -> tuple[int, str]:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{a}/slow", params={"seconds": "1.0"}) as resp,
        ):
            return resp.status, await resp.text()

    slow_request = asyncio.create_task(slow())
    await asyncio.sleep(0.1)  # the slow request is in flight at A
    sigterm = time.monotonic()
    sidecar.proc.send_signal(signal.SIGTERM)
    code: Any = None
    while code is None and time.monotonic() - sigterm < DRAIN + 5:
        code = sidecar.proc.poll()
        await asyncio.sleep(0.05)
    exited = time.monotonic() - sigterm
    await asyncio.sleep(0.3)  # traffic goes on after A is gone
    stop.set()
    await asyncio.gather(*tasks, watcher)

    log = sidecar.log()
    assert code == 0, f"the sidecar exited with {code}:\n{log[-3000:]}"
    errors = [f"{c.name}: {e}" for c in clients for e in c.errors]
    assert errors == [], "\n".join(errors)
    assert DRAIN <= exited < DRAIN + 2.0, f"exited {exited:.2f}s after SIGTERM (drain {DRAIN}s)"
    assert await slow_request == (200, "finally")
    # /readyz said 503 while A still served, before the load balancer let it go.
    unready = [t for t, status in readiness if t >= sigterm and status == 503]
    assert unready and unready[0] - sigterm < 0.5, readiness[-10:]
    assert balancer.removed_at is not None and balancer.removed_at - sigterm < DRAIN
    # Each keep-alive client was told to leave A, and then was served by B.
    for c in clients:
        if c.keep_alive:
            assert a in c.closes_from, f"{c.name} never got Connection: close from A"
            assert c.served_by[-1] == b, c.served_by[-5:]
    assert "draining for 1.5 s" in log
