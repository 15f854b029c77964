"""The real sidecar in front of a real MLServer: transparent answers, faithful capture."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import requests
from harness import IRIS_FEATURES, Collector, SidecarProcess, wait_until
from sklearn.datasets import load_iris

INFER = "/v2/models/iris/infer"


def v2_request(rows: np.ndarray, request_id: str | None = None) -> bytes:
    body: dict[str, object] = {
        "inputs": [
            {
                "name": "input-0",
                "shape": list(rows.shape),
                "datatype": "FP64",
                "data": rows.ravel().tolist(),
            }
        ]
    }
    if request_id is not None:
        body["id"] = request_id
    return json.dumps(body).encode()


# Every method and path a client might send, good and bad; each must come back as if
# the sidecar were not there.
CASES: list[tuple[str, str, bytes | None, dict[str, str]]] = [
    ("GET", "/v2/health/live", None, {}),
    ("GET", "/v2/health/ready", None, {}),
    ("GET", "/v2/models/iris", None, {}),
    ("GET", "/v2/models/iris/ready", None, {}),
    ("GET", "/v2/models/nope", None, {}),
    ("GET", "/no/such/path?x=1&y=%20z", None, {}),
    (
        "POST",
        INFER,
        v2_request(np.array([[5.1, 3.5, 1.4, 0.2]]), "fixed-id"),
        {"Content-Type": "application/json"},
    ),
    (
        "POST",
        INFER,
        b'{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [1]}]}',
        {"Content-Type": "application/json"},
    ),
    ("POST", INFER, b"this is not json", {"Content-Type": "application/json"}),
    ("POST", INFER, b"\xff\xfe\xfa not utf-8", {"Content-Type": "application/json"}),
    ("POST", INFER, b"", {"Content-Type": "application/json"}),
    (
        "POST",
        INFER,
        b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [NaN]}]}',
        {"Content-Type": "application/json"},
    ),
    ("PUT", INFER, b"{}", {}),
    ("DELETE", "/v2/models/iris", None, {}),
    ("PATCH", "/v2/models/iris", b"{}", {}),
    ("OPTIONS", INFER, None, {}),
    ("HEAD", "/v2/health/ready", None, {}),
]


def _comparable(resp: requests.Response) -> tuple[int, str, bytes, list[tuple[str, str]]]:
    # Date is the only header allowed to differ: the two calls happen at different times.
    headers = sorted((k.lower(), v) for k, v in resp.headers.items() if k.lower() != "date")
    return resp.status_code, resp.reason, resp.content, headers


def test_answers_are_identical_to_direct_calls(
    mlserver: str,
    collector: Collector,
    start_sidecar: Callable[..., SidecarProcess],
    iris_manifest: Path,
) -> None:
    sidecar = start_sidecar(
        mlserver, "--observed-model", str(iris_manifest), collector=collector.url
    )
    for method, path, body, headers in CASES:
        direct = requests.request(method, mlserver + path, data=body, headers=headers, timeout=10)
        proxied = requests.request(
            method, sidecar.url + path, data=body, headers=headers, timeout=10
        )
        if body and b'"id"' not in body and direct.status_code == 200 and "infer" in path:
            # MLServer invents a fresh id per call when the request has none.
            continue
        assert _comparable(proxied) == _comparable(direct), f"{method} {path} {body!r}"


def test_records_shipped_match_requests_served(
    mlserver: str,
    collector: Collector,
    start_sidecar: Callable[..., SidecarProcess],
    iris_manifest: Path,
) -> None:
    sidecar = start_sidecar(
        mlserver, "--observed-model", str(iris_manifest), collector=collector.url
    )
    x, _ = load_iris(return_X_y=True)
    rng = np.random.default_rng(7)
    sizes = rng.integers(1, 9, size=40)
    expected_rows = 0
    session = requests.Session()
    for i, n in enumerate(sizes):
        rows = x[rng.choice(len(x), size=n)]
        headers = {"Content-Type": "application/json"}
        if i % 2 == 0:
            headers["X-Request-Id"] = f"req-{i}"
        resp = session.post(sidecar.url + INFER, data=v2_request(rows), headers=headers, timeout=10)
        assert resp.status_code == 200
        predicted = resp.json()["outputs"][0]["data"]
        assert len(predicted) == n
        expected_rows += n
    wait_until(lambda: len(collector.records()) == expected_rows, what="all records shipped")

    requests_seen = collector.requests()
    assert len(requests_seen) == len(sizes)
    assert [r["rows"] for r in requests_seen] == sizes.tolist()
    assert all(r["status"] == 200 and r["protocol"] == "v2" for r in requests_seen)
    assert {f"req-{i}" for i in range(0, len(sizes), 2)} <= {r["id"] for r in requests_seen}
    record = collector.records()[0]
    assert set(record["features"]) == set(IRIS_FEATURES)
    assert "predict" in record["outputs"]
    # Records of a request share its id and number its rows.
    first = [r for r in collector.records() if r["id"] == "req-0"]
    assert [r["row"] for r in first] == list(range(sizes[0]))

    # The capture worker's counters reach /metrics with its next report (every 0.2 s).
    wait_until(
        lambda: sidecar.metric("mlwarden_sidecar_records_shipped_total") == expected_rows,
        what="the worker's report of the shipped records",
    )
    assert sidecar.metric("mlwarden_sidecar_records_captured_total") == expected_rows
    assert sidecar.metric("mlwarden_sidecar_requests_total", code_class="2xx") == len(sizes)
    assert sidecar.metric("mlwarden_sidecar_upstream_duration_seconds_count") == len(sizes)


def test_malformed_bodies_pass_through_and_are_counted(
    mlserver: str, collector: Collector, start_sidecar: Callable[..., SidecarProcess]
) -> None:
    sidecar = start_sidecar(mlserver, "--protocol", "v2", collector=collector.url)
    bad = [b"not json", b"\xff\xfe", b'{"inputs": 3}', b"[1, 2"]
    for body in bad:
        direct = requests.post(mlserver + INFER, data=body, timeout=10)
        proxied = requests.post(sidecar.url + INFER, data=body, timeout=10)
        assert (proxied.status_code, proxied.content) == (direct.status_code, direct.content)
    wait_until(
        lambda: (
            sidecar.metric("mlwarden_sidecar_exchanges_dropped_total", reason="unparseable")
            == len(bad)
        ),
        what="unparseable exchanges counted",
    )
    # The request entries still reach the detector: error rates need them.
    wait_until(lambda: len(collector.requests()) == len(bad), what="request entries shipped")
    assert all(r["dropped"] == "unparseable" and r["rows"] == 0 for r in collector.requests())


def test_sample_rate_captures_a_fraction(
    mlserver: str, collector: Collector, start_sidecar: Callable[..., SidecarProcess]
) -> None:
    sidecar = start_sidecar(mlserver, "--sample-rate", "0.25", collector=collector.url)
    body = v2_request(np.array([[5.1, 3.5, 1.4, 0.2]]))
    session = requests.Session()
    for _ in range(400):
        assert session.post(sidecar.url + INFER, data=body, timeout=10).status_code == 200
    wait_until(
        lambda: (
            sidecar.metric("mlwarden_sidecar_exchanges_sampled_out_total")
            + sidecar.metric("mlwarden_sidecar_exchanges_captured_total", protocol="v2")
            == 400
        ),
        what="every exchange accounted for",
    )
    captured = sidecar.metric("mlwarden_sidecar_exchanges_captured_total", protocol="v2")
    # Binomial(400, 0.25): mean 100, sd 8.7; 60..140 is beyond 4.5 sd on either side.
    assert 60 <= captured <= 140
