"""Awkward bodies: passed through byte for byte; capture takes them, or skips them and counts why.

The upstream here is a mirror: it answers with exactly the bytes it received
(not decompressed), their SHA-256 and how they were framed, so both directions
are checked byte for byte. Capture is on (`--protocol v1`, a real collector):
every exchange ends up either captured or counted under a drop reason, and a
body over `--max-body-bytes` is never buffered for capture (the sidecar's RSS,
read from /proc, does not grow by the body's size).
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Callable, Iterator

import pytest
import requests
from aiohttp import web
from harness import Collector, SidecarProcess, ThreadedServer, wait_until

PATH = "/v1/models/m:predict"
CAP = 1 << 20  # the sidecar's default --max-body-bytes


def mirror_app() -> web.Application:
    async def mirror(request: web.Request) -> web.StreamResponse:
        body = await request.read()  # raw: this app does not decompress
        headers = {
            "X-Body-SHA256": hashlib.sha256(body).hexdigest(),
            "X-Body-Length": str(len(body)),
            "X-Chunked": str(request.headers.get("Transfer-Encoding", "") == "chunked"),
            "Content-Type": request.headers.get("Content-Type", "application/octet-stream"),
        }
        if "Content-Encoding" in request.headers:
            headers["Content-Encoding"] = request.headers["Content-Encoding"]
        if request.query.get("reply") == "sha":
            return web.Response(
                text=headers["X-Body-SHA256"], headers={"X-Body-Length": str(len(body))}
            )
        return web.Response(body=body, headers=headers)

    async def sized(request: web.Request) -> web.Response:
        size = int(request.query["size"])
        block = hashlib.sha256(b"mlwarden").digest() * 2048  # 64 KiB, deterministic
        body = (block * (size // len(block) + 1))[:size]
        return web.Response(body=body, headers={"X-Body-SHA256": hashlib.sha256(body).hexdigest()})

    app = web.Application(client_max_size=128 << 20, handler_args={"auto_decompress": False})
    app.router.add_route("*", "/sized", sized)
    app.router.add_route("*", "/{tail:.*}", mirror)
    return app


@pytest.fixture(scope="module")
def mirror() -> Iterator[str]:
    server = ThreadedServer(mirror_app()).start()
    yield server.url
    server.stop()


@pytest.fixture
def sidecar(
    mirror: str, collector: Collector, start_sidecar: Callable[..., SidecarProcess]
) -> SidecarProcess:
    return start_sidecar(mirror, "--protocol", "v1", collector=collector.url)


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def send(sidecar: SidecarProcess, body: bytes, **headers: str) -> requests.Response:
    resp = requests.post(sidecar.url + PATH, data=body, headers=headers, stream=True, timeout=60)
    resp.raw_bytes = resp.raw.read(decode_content=False)  # type: ignore[attr-defined]
    return resp


def outcomes(sidecar: SidecarProcess) -> dict[str, float]:
    m = sidecar.metrics()
    return {
        k.split('reason="')[1].rstrip('"}') if "reason" in k else "captured": v
        for k, v in m.items()
        if k.startswith(
            (
                "mlwarden_sidecar_exchanges_dropped_total",
                "mlwarden_sidecar_exchanges_captured_total",
            )
        )
        and v
    }


def settle(sidecar: SidecarProcess, n: int) -> dict[str, float]:
    """Wait until all n exchanges are accounted for (captured or dropped); the split."""
    wait_until(lambda: sum(outcomes(sidecar).values()) == n, what=f"{n} exchanges accounted for")
    return outcomes(sidecar)


SMALL_CASES = {
    "empty": b"",
    "invalid JSON": b'{"instances": [[1.0, 2.0], [3.0',
    "invalid UTF-8": b'{"instances": [["\xff\xfe\xfd", 1.0]]}',
    "not JSON at all": b"\x00\x01\x02 binary \x89PNG",
    "NaN and infinities": b'{"instances": [[NaN, Infinity, -Infinity, 1.5]]}',
}


def test_small_awkward_bodies_pass_byte_for_byte_and_are_accounted_for(
    sidecar: SidecarProcess, collector: Collector
) -> None:
    for name, body in SMALL_CASES.items():
        resp = send(sidecar, body, **{"Content-Type": "application/json"})
        assert resp.status_code == 200, name
        assert resp.raw_bytes == body, name  # the response: the model's bytes, untouched
        assert resp.headers["X-Body-SHA256"] == hashlib.sha256(body).hexdigest(), name
    split = settle(sidecar, len(SMALL_CASES))
    # Only the NaN batch parses as v1; the rest are counted, not lost and not crashing.
    assert split.pop("captured") == 1
    assert set(split) <= {"unparseable", "unrecognized_protocol", "decode_error"}, split
    wait_until(lambda: len(collector.records()) == 1, what="the NaN record shipped")
    features = collector.records()[0]["features"]
    assert features["f3"] == 1.5
    # Non-finite values reach the detector as such (null + a nonFinite entry, in a strict
    # JSON batch: the collector parses it once, with orjson), not as strings or nulls.
    assert features["f0"] != features["f0"] and features["f1"] == float("inf")
    # Every exchange still reached the detector as a request entry (for the SLO checks).
    wait_until(lambda: len(collector.requests()) == len(SMALL_CASES))


def test_gzip_bodies_pass_compressed_and_a_gzip_bomb_is_not_expanded(
    sidecar: SidecarProcess, collector: Collector
) -> None:
    good = gzip.compress(json.dumps({"instances": [[1.0, 2.0]]}).encode(), mtime=0)
    bomb = gzip.compress(b"[" + b" " * (200 << 20) + b"]", mtime=0)  # 200 MiB of spaces
    assert len(bomb) < CAP
    for body in (good, bomb):
        resp = send(sidecar, body, **{"Content-Encoding": "gzip"})
        assert resp.headers["Content-Encoding"] == "gzip"
        assert resp.raw_bytes == body  # still compressed, byte for byte, both ways
        assert resp.headers["X-Body-SHA256"] == hashlib.sha256(body).hexdigest()
    assert settle(sidecar, 2) == {"captured": 1, "decode_error": 1}
    wait_until(lambda: len(collector.records()) == 1)


def test_thousands_of_rows_are_captured_and_too_many_are_skipped(
    sidecar: SidecarProcess, collector: Collector
) -> None:
    rows_5k = json.dumps({"instances": [[float(i), 1.0, 2.0, 3.0] for i in range(5000)]}).encode()
    rows_50k = json.dumps(
        {"instances": [[float(i), 1.0, 2.0, 3.0] for i in range(50_000)]}
    ).encode()
    assert len(rows_5k) < CAP < len(rows_50k)
    for body in (rows_5k, rows_50k):
        resp = send(sidecar, body, **{"Content-Type": "application/json"})
        assert resp.raw_bytes == body
    assert settle(sidecar, 2) == {"captured": 1, "body_too_large": 1}
    assert sidecar.metric("mlwarden_sidecar_records_captured_total") == 5000
    wait_until(lambda: len(collector.records()) == 5000, what="5,000 rows shipped")
    assert [r["row"] for r in collector.records()] == list(range(5000))


def test_50_mb_bodies_stream_through_without_being_buffered(
    sidecar: SidecarProcess, mirror: str
) -> None:
    pid = sidecar.proc.pid
    send(sidecar, b'{"instances": [[1.0]]}')  # warm
    before = rss_kib(pid)
    body = bytes(range(256)) * (50 * 4096)  # 50 MiB
    resp = requests.post(sidecar.url + PATH + "?reply=sha", data=body, timeout=120)
    assert resp.text == hashlib.sha256(body).hexdigest()
    assert resp.headers["X-Body-Length"] == str(len(body))
    big = requests.post(sidecar.url + f"/sized?size={50 << 20}", data=b"{}", timeout=120)
    assert len(big.content) == 50 << 20
    assert hashlib.sha256(big.content).hexdigest() == big.headers["X-Body-SHA256"]
    after = rss_kib(pid)
    print(f"sidecar RSS {before} KiB -> {after} KiB after 2 x 50 MiB")
    assert after - before < 20 * 1024, (before, after)  # chunks in flight, never the body
    assert settle(sidecar, 3) == {"captured": 1, "body_too_large": 2}


def test_chunked_bodies_pass_through_and_are_captured_up_to_the_cap(
    sidecar: SidecarProcess, collector: Collector
) -> None:
    small = json.dumps({"instances": [[float(i), 2.0] for i in range(100)]}).encode()
    large = json.dumps({"instances": [[float(i), 2.0] for i in range(200_000)]}).encode()
    assert len(large) > CAP

    def chunks(body: bytes, size: int) -> Iterator[bytes]:
        for i in range(0, len(body), size):
            yield body[i : i + size]

    for body in (small, large):
        resp = requests.post(sidecar.url + PATH, data=chunks(body, 7919), stream=True, timeout=60)
        assert resp.headers["X-Chunked"] == "True"  # sent upstream chunked, as it came
        assert resp.headers["X-Body-SHA256"] == hashlib.sha256(body).hexdigest()
        assert resp.raw.read(decode_content=False) == body
    assert settle(sidecar, 2) == {"captured": 1, "body_too_large": 1}
    wait_until(lambda: len(collector.records()) == 100, what="the small chunked body's rows")
