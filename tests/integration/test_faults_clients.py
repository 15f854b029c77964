"""Slow and numerous clients: bounded resources, configurable timeouts, nobody blocks anybody.

Raw sockets play the slow clients (a slowloris dribbling header lines, bodies that
stall or trickle); a real aiohttp client opens 1,000 concurrent connections. The
sidecar's open file descriptors and RSS are read from /proc.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import requests
from harness import SidecarProcess, Upstream, wait_until


def port_of(sidecar: SidecarProcess) -> int:
    return int(sidecar.url.rsplit(":", 1)[1])


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def closed_by_peer(s: socket.socket) -> bytes | None:
    """What the server sent before closing (None while it is still open)."""
    s.setblocking(False)
    data = b""
    try:
        while chunk := s.recv(65536):
            data += chunk
    except BlockingIOError:
        return None
    except ConnectionResetError:
        pass
    return data


def read_response(s: socket.socket) -> bytes:
    """One HTTP response with a Content-Length: head and body."""
    s.settimeout(10)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        assert chunk, data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        chunk = s.recv(65536)
        assert chunk, data
        body += chunk
    return head + b"\r\n\r\n" + body


def test_slowloris_connections_are_closed_and_do_not_block_others(
    upstream: Upstream, start_sidecar: Callable[..., SidecarProcess]
) -> None:
    sidecar = start_sidecar(upstream.url, "--client-header-timeout", "1.5")
    pid = sidecar.proc.pid
    session = requests.Session()
    assert session.post(sidecar.url + "/echo", data=b"x", timeout=5).status_code == 200
    fds_before = open_fds(pid)
    lorises = []
    for _ in range(100):
        s = socket.create_connection(("127.0.0.1", port_of(sidecar)))
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: model\r\n")
        lorises.append(s)
    started = time.monotonic()
    latencies = []
    i = 0
    # Keep dribbling a header line every 0.2 s; meanwhile real requests go through.
    while time.monotonic() - started < 4.0:
        for s in lorises:
            with contextlib.suppress(OSError):  # already closed by the sidecar
                s.sendall(f"X-Drip-{i}: {i}\r\n".encode())
        t = time.perf_counter()
        assert session.post(sidecar.url + "/echo", data=b"ok", timeout=5).status_code == 200
        latencies.append(time.perf_counter() - t)
        i += 1
        time.sleep(0.2)
    # Every loris was cut off (header timeout 1.5 s, however busy it kept dribbling).
    states = [closed_by_peer(s) for s in lorises]
    assert all(state is not None for state in states), sum(s is None for s in states)
    for s in lorises:
        s.close()
    assert max(latencies) < 1.0, max(latencies)  # served alongside, not behind them
    wait_until(lambda: open_fds(pid) <= fds_before + 2, what="the lorises' fds released")


def test_a_stalled_body_gets_408_and_a_trickling_one_completes(
    upstream: Upstream, start_sidecar: Callable[..., SidecarProcess]
) -> None:
    sidecar = start_sidecar(upstream.url, "--client-body-timeout", "1")
    port = port_of(sidecar)
    # Sized body (under the capture cap: read whole), stalls after 10 of 1,000 bytes.
    sized = socket.create_connection(("127.0.0.1", port))
    sized.sendall(b"POST /echo HTTP/1.1\r\nHost: m\r\nContent-Length: 1000\r\n\r\n0123456789")
    # Chunked body (piped to the model as it comes), stalls after one chunk.
    chunked = socket.create_connection(("127.0.0.1", port))
    chunked.sendall(
        b"POST /echo HTTP/1.1\r\nHost: m\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
    )
    started = time.monotonic()
    for s in (sized, chunked):
        # (aiohttp then lingers up to 10 s for the rest of the body before it closes)
        answer = read_response(s)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b"Connection: close" in answer
        assert answer.endswith(b"request body not received: nothing for 1 s\n")
        s.close()
    assert time.monotonic() - started < 5
    assert sidecar.metric("mlwarden_sidecar_client_errors_total", reason="body_timeout") == 2

    # A body that keeps coming, one piece every 0.4 s for 3 s: slow but alive, so it completes.
    for framing in ("sized", "chunked"):
        s = socket.create_connection(("127.0.0.1", port))
        pieces = [b"abcde"] * 8
        if framing == "sized":
            s.sendall(b"POST /echo HTTP/1.1\r\nHost: m\r\nContent-Length: 40\r\n\r\n")
        else:
            s.sendall(b"POST /echo HTTP/1.1\r\nHost: m\r\nTransfer-Encoding: chunked\r\n\r\n")
        for piece in pieces:
            s.sendall(piece if framing == "sized" else b"5\r\n" + piece + b"\r\n")
            time.sleep(0.4)
        if framing == "chunked":
            s.sendall(b"0\r\n\r\n")
        answer = read_response(s)
        assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
        assert b'"body_len": 40' in answer or b'"body_len":40' in answer, answer[-200:]
        s.close()


def test_connections_over_the_limit_get_503_and_the_rest_are_served(
    upstream: Upstream, start_sidecar: Callable[..., SidecarProcess]
) -> None:
    sidecar = start_sidecar(upstream.url, "--max-connections", "20")
    held = [socket.create_connection(("127.0.0.1", port_of(sidecar))) for _ in range(20)]
    time.sleep(0.3)
    extra = socket.create_connection(("127.0.0.1", port_of(sidecar)))
    extra.settimeout(5)
    answer = b""
    while chunk := extra.recv(65536):
        answer += chunk
    assert answer.startswith(b"HTTP/1.1 503"), answer
    assert answer.endswith(b"mlwarden-sidecar: too many open connections\n")
    assert (
        sidecar.metric("mlwarden_sidecar_client_errors_total", reason="too_many_connections") == 1
    )
    # The held ones are real connections that can still be used.
    held[0].sendall(b"GET /echo HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n")
    held[0].settimeout(5)
    assert held[0].recv(65536).startswith(b"HTTP/1.1 200")
    for s in held:
        s.close()
    wait_until(
        lambda: requests.get(sidecar.url + "/echo", timeout=5).status_code == 200,
        what="room again once the held connections closed",
    )


def test_a_thousand_concurrent_connections(
    upstream: Upstream, start_sidecar: Callable[..., SidecarProcess]
) -> None:
    """1,000 clients at once, each waiting 1 s on the model: all served, resources come back."""
    sidecar = start_sidecar(upstream.url)
    pid = sidecar.proc.pid
    requests.get(sidecar.url + "/echo", timeout=5)
    fds_before, rss_before = open_fds(pid), rss_kib(pid)
    peak = {"fds": 0, "rss": 0}

    async def run() -> list[int]:
        connector = aiohttp.TCPConnector(limit=0, force_close=True)
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:

            async def one() -> int:
                async with http.get(sidecar.url + "/slow?seconds=1") as resp:
                    assert await resp.text() == "finally"
                    return resp.status

            async def watch() -> None:
                while True:
                    peak["fds"] = max(peak["fds"], open_fds(pid))
                    peak["rss"] = max(peak["rss"], rss_kib(pid))
                    await asyncio.sleep(0.1)

            watcher = asyncio.create_task(watch())
            try:
                return await asyncio.gather(*(one() for _ in range(1000)))
            finally:
                watcher.cancel()

    statuses = asyncio.run(run())
    assert statuses == [200] * 1000
    print(
        f"1,000 concurrent: fds {fds_before} -> peak {peak['fds']}; "
        f"RSS {rss_before} KiB -> peak {peak['rss']} KiB"
    )
    assert peak["fds"] >= 1000  # they really were concurrent
    assert peak["fds"] < fds_before + 2 * 1000 + 50  # a client socket and an upstream one each
    assert peak["rss"] - rss_before < 150 * 1024
    # The 1,000 client sockets are released at once; what may stay is the pool of upstream
    # connections (one per concurrent request, closed after aiohttp's 15 s keep-alive; the
    # 10-minute soak in benchmarks/soak.py shows fds flat over time).
    wait_until(lambda: open_fds(pid) <= fds_before + 1000 + 5, what="client sockets released")
