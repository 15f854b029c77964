"""The model path survives everything observability can do wrong, and the counters say why."""

from __future__ import annotations

import gzip
import json
import socket
import time
from collections.abc import Callable

import pytest
import requests
from harness import Collector, SidecarProcess, Upstream, free_port, wait_until

V1_BODY = json.dumps({"instances": [[1.0, 2.0], [3.0, 4.0]]}).encode()


def _hammer(sidecar: SidecarProcess, n: int, path: str = "/v1/models/m:predict") -> list[float]:
    """n requests through the sidecar; every one must succeed. Returns their latencies."""
    session = requests.Session()
    latencies = []
    for _ in range(n):
        started = time.perf_counter()
        resp = session.post(sidecar.url + path, data=V1_BODY, timeout=10)
        latencies.append(time.perf_counter() - started)
        assert resp.status_code == 200, resp.text
    return latencies


def test_collector_down_every_request_still_succeeds(
    upstream: Upstream, start_sidecar: Callable[..., SidecarProcess]
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    sidecar = start_sidecar(
        upstream.url,
        "--buffer-records",
        "50",
        "--batch-size",
        "20",
        "--ship-attempts",
        "2",
        collector=dead,
    )
    _hammer(sidecar, 200)
    # 400 records captured, at most 50 held: the rest evicted as buffer_full or given up on.
    wait_until(
        lambda: sidecar.metric("mlwarden_sidecar_records_dropped_total", reason="buffer_full") > 0,
        what="buffer_full drops",
    )
    wait_until(
        lambda: (
            sidecar.metric("mlwarden_sidecar_records_dropped_total", reason="retries_exhausted") > 0
        ),
        what="retries_exhausted drops",
    )
    assert sidecar.metric("mlwarden_sidecar_buffer_records") <= 50
    assert sidecar.metric("mlwarden_sidecar_records_shipped_total") == 0
    ready = requests.get(sidecar.admin_url + "/readyz", timeout=5).json()
    assert "ClientConnectorError" in ready["collectorLastError"]


@pytest.mark.parametrize(
    ("mode", "reason"), [("fail", "retries_exhausted"), ("reject", "rejected")]
)
def test_collector_failing_or_rejecting(
    mode: str,
    reason: str,
    upstream: Upstream,
    collector: Collector,
    start_sidecar: Callable[..., SidecarProcess],
) -> None:
    collector.mode = mode
    sidecar = start_sidecar(upstream.url, "--ship-attempts", "2", collector=collector.url)
    _hammer(sidecar, 50)
    wait_until(
        lambda: sidecar.metric("mlwarden_sidecar_records_dropped_total", reason=reason) == 100,
        what=f"all 100 records dropped as {reason}",
    )
    expected_attempts = 2 if mode == "fail" else 1
    assert collector.attempts == expected_attempts * sidecar.metric(
        "mlwarden_sidecar_ship_requests_total",
        outcome="failed" if mode == "fail" else "rejected",
    )


def test_collector_hanging_does_not_slow_the_model(
    upstream: Upstream, collector: Collector, start_sidecar: Callable[..., SidecarProcess]
) -> None:
    collector.mode = "hang"
    sidecar = start_sidecar(
        upstream.url, "--ship-timeout", "0.5", "--ship-attempts", "2", collector=collector.url
    )
    latencies = _hammer(sidecar, 300)
    latencies.sort()
    # Loopback echo through the proxy: milliseconds, not the collector's half-second timeout.
    assert latencies[len(latencies) // 2] < 0.05
    assert max(latencies) < 0.5
    wait_until(
        lambda: sidecar.metric("mlwarden_sidecar_ship_requests_total", outcome="failed") > 0,
        what="a batch given up on after timeouts",
    )


def test_collector_throttling_is_retried_then_delivered(
    upstream: Upstream, collector: Collector, start_sidecar: Callable[..., SidecarProcess]
) -> None:
    collector.throttle_first = 3
    sidecar = start_sidecar(upstream.url, "--ship-attempts", "5", collector=collector.url)
    _hammer(sidecar, 10)
    wait_until(lambda: len(collector.records()) == 20, what="delivery once the collector recovers")
    # The capture worker's counters reach /metrics with its next report (every 0.2 s).
    wait_until(
        lambda: sidecar.metric("mlwarden_sidecar_records_shipped_total") == 20,
        what="the worker's report of the delivery",
    )
    assert sidecar.metric("mlwarden_sidecar_ship_requests_total", outcome="retry") == 3


def test_upstream_down_is_502_and_timeout_is_504(
    upstream: Upstream, collector: Collector, start_sidecar: Callable[..., SidecarProcess]
) -> None:
    dead = start_sidecar(f"http://127.0.0.1:{free_port()}", collector=collector.url)
    resp = requests.post(dead.url + "/v1/models/m:predict", data=V1_BODY, timeout=10)
    assert resp.status_code == 502
    assert "upstream connection failed" in resp.text
    assert dead.metric("mlwarden_sidecar_upstream_errors_total", reason="connect") == 1

    slow = start_sidecar(upstream.url, "--upstream-timeout", "0.3", collector=collector.url)
    resp = requests.post(slow.url + "/slow?seconds=3", data=b"{}", timeout=10)
    assert resp.status_code == 504
    assert "timed out" in resp.text
    assert slow.metric("mlwarden_sidecar_upstream_errors_total", reason="timeout") == 1
    # Both failures still reach the detector as request entries: they are errors it must count.
    wait_until(lambda: {r["status"] for r in collector.requests()} == {502, 504})


def test_model_breaking_off_its_answer_is_502(
    upstream: Upstream, start_sidecar: Callable[..., SidecarProcess]
) -> None:
    sidecar = start_sidecar(upstream.url)
    resp = requests.post(sidecar.url + "/truncated", data=b"{}", timeout=10)
    assert resp.status_code == 502
    assert "broken off" in resp.text
    assert sidecar.metric("mlwarden_sidecar_upstream_errors_total", reason="protocol") == 1
    assert requests.post(sidecar.url + "/echo", data=b"ok", timeout=5).status_code == 200


def test_model_errors_pass_through_unchanged(
    upstream: Upstream, start_sidecar: Callable[..., SidecarProcess]
) -> None:
    sidecar = start_sidecar(upstream.url)
    for code in (400, 404, 429, 500, 503):
        direct = requests.post(f"{upstream.url}/status/{code}", data=b"{}", timeout=5)
        proxied = requests.post(f"{sidecar.url}/status/{code}", data=b"{}", timeout=5)
        assert proxied.status_code == code
        assert proxied.content == direct.content
        assert proxied.headers["X-Status"] == str(code)
    wait_until(
        lambda: (
            sidecar.metric("mlwarden_sidecar_requests_total", code_class="5xx") == 2
            and sidecar.metric("mlwarden_sidecar_requests_total", code_class="4xx") == 3
        )
    )


def test_hop_by_hop_headers_are_not_forwarded(
    upstream: Upstream, start_sidecar: Callable[..., SidecarProcess]
) -> None:
    sidecar = start_sidecar(upstream.url)
    resp = requests.post(
        sidecar.url + "/echo?q=a%2Fb",
        data=b"payload",
        headers={
            "Connection": "keep-alive, X-Secret-Hop",
            "X-Secret-Hop": "must not pass",
            "Keep-Alive": "timeout=5",
            "TE": "trailers",
            "X-End-To-End": "must pass",
            "Authorization": "Bearer abc",
        },
        timeout=5,
    )
    seen = {k.lower(): v for k, v in resp.json()["headers"]}
    assert resp.json()["path"] == "/echo?q=a%2Fb"
    assert seen["x-end-to-end"] == "must pass"
    assert seen["authorization"] == "Bearer abc"
    assert "x-secret-hop" not in seen
    assert "keep-alive" not in seen
    assert "te" not in seen
    assert resp.json()["body_len"] == len(b"payload")


def test_nothing_is_added_to_the_request(
    upstream: Upstream, start_sidecar: Callable[..., SidecarProcess]
) -> None:
    """A bare HTTP/1.1 request reaches the model without client defaults the proxy could add."""
    sidecar = start_sidecar(upstream.url)
    port = int(sidecar.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(
            b"POST /echo HTTP/1.1\r\nHost: model.local\r\nContent-Length: 2\r\n"
            b"Connection: close\r\n\r\nhi"
        )
        raw = b""
        while chunk := s.recv(65536):
            raw += chunk
    echoed = json.loads(raw.split(b"\r\n\r\n", 1)[1])
    names = {k.lower() for k, _ in echoed["headers"]}
    assert names == {"host", "content-length"}, names
    assert dict(echoed["headers"])["Host"] == "model.local"


def test_streaming_responses_stream(
    upstream: Upstream, start_sidecar: Callable[..., SidecarProcess]
) -> None:
    sidecar = start_sidecar(upstream.url)
    started = time.perf_counter()
    with requests.get(sidecar.url + "/stream", stream=True, timeout=10) as resp:
        chunks = resp.iter_content(chunk_size=None)
        first = next(chunks)
        first_at = time.perf_counter() - started
        rest = b"".join(chunks)
        total = time.perf_counter() - started
    assert first.startswith(b"data: {")
    # The upstream takes ~1 s to finish; the first event must arrive long before that.
    assert first_at < 0.5 < total
    assert (first + rest).endswith(b"data: [DONE]\n\n")
    assert resp.headers["Content-Type"] == "text/event-stream"


def test_gzip_bodies_pass_through_compressed_and_are_captured(
    upstream: Upstream, collector: Collector, start_sidecar: Callable[..., SidecarProcess]
) -> None:
    sidecar = start_sidecar(upstream.url, "--protocol", "v1", collector=collector.url)
    body = gzip.compress(V1_BODY)
    direct = requests.post(
        upstream.url + "/gzip",
        data=body,
        headers={"Content-Encoding": "gzip", "Accept-Encoding": "gzip"},
        stream=True,
        timeout=5,
    )
    proxied = requests.post(
        sidecar.url + "/gzip",
        data=body,
        headers={"Content-Encoding": "gzip", "Accept-Encoding": "gzip"},
        stream=True,
        timeout=5,
    )
    assert proxied.headers["Content-Encoding"] == "gzip"
    assert proxied.raw.read() == direct.raw.read()  # still compressed, byte for byte
    wait_until(lambda: len(collector.records()) == 2, what="gzip exchange captured")
    assert collector.records()[0]["features"] == {"f0": 1.0, "f1": 2.0}


def test_big_bodies_pass_through_and_are_not_captured(
    upstream: Upstream, collector: Collector, start_sidecar: Callable[..., SidecarProcess]
) -> None:
    sidecar = start_sidecar(upstream.url, "--max-body-bytes", "65536", collector=collector.url)
    big_request = b"x" * (8 << 20)
    resp = requests.post(sidecar.url + "/echo", data=big_request, timeout=30)
    assert resp.json()["body_len"] == len(big_request)
    resp = requests.post(sidecar.url + "/big?size=6000000", data=b"{}", timeout=30)
    assert len(resp.content) == 6_000_000

    def chunked() -> object:
        yield b'{"instances": '
        yield b"[[1, 2]]}"

    resp = requests.post(sidecar.url + "/echo", data=chunked(), timeout=10)
    assert resp.json()["body_len"] == len(b'{"instances": [[1, 2]]}')
    wait_until(
        lambda: (
            sidecar.metric("mlwarden_sidecar_exchanges_dropped_total", reason="body_too_large") == 2
        ),
        what="the two big exchanges counted as body_too_large",
    )


def test_client_disconnect_is_counted_and_the_sidecar_keeps_serving(
    upstream: Upstream, start_sidecar: Callable[..., SidecarProcess]
) -> None:
    sidecar = start_sidecar(upstream.url)
    port = int(sidecar.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"GET /slow?seconds=5 HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.3)
    wait_until(
        lambda: sidecar.metric("mlwarden_sidecar_client_disconnects_total") == 1,
        what="the disconnect counted",
    )
    assert requests.post(sidecar.url + "/echo", data=b"ok", timeout=5).status_code == 200
