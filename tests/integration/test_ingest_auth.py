"""Authenticated ingest and privacy, with real sidecar and detector processes on loopback.

- With the right token the records arrive; with a wrong one the detector answers 401 (counted
  on both sides) and the model's clients notice nothing.
- spec.capture.redact: dropped fields never leave the sidecar, hashed ones leave keyed-hashed.
- Payload values never appear in the sidecar's or the detector's logs, even at debug level.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import requests
from harness import (
    Collector,
    DetectorProcess,
    SidecarProcess,
    Upstream,
    manifest,
    wait_until,
)

from mlwarden.sidecar.redact import hash_value

TOKEN = "dGhpcy1pcy1hLXRlc3QtdG9rZW4tb2YtMzItYnl0ZXM"
SPEC = """\
  target: {deployment: m}
  protocol: json
  features:
    - {name: amount, type: numeric}
    - {name: email, type: categorical}
    - {name: user, type: categorical}
  capture:
    redact:
      - {field: email, action: drop}
      - {field: user, action: hash}
  reference: {source: warmup, size: 50}
  window: {size: 50}
  alerting: {evaluationInterval: 200ms}
"""


def token_file(tmp: Path, token: str, name: str = "token") -> str:
    path = tmp / name
    path.write_text(token + "\n")
    return str(path)


def call_model(sidecar: SidecarProcess, n: int, marker: str = "") -> None:
    for i in range(n):
        body = {
            "amount": 10.0 + i,
            "email": f"{marker}alice{i}@example.com",
            "user": f"{marker}user-{i}",
        }
        resp = requests.post(f"{sidecar.url}/predict", json=body, timeout=10)
        assert resp.status_code == 200  # the model path, whatever happens to the records
        assert resp.headers["X-Upstream"] == "echo"


def detector_metric(detector: DetectorProcess, name: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    text = requests.get(f"{detector.url}/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0


def test_records_arrive_with_the_token_and_are_refused_without_it(
    tmp_path: Path,
    upstream: Upstream,
    start_sidecar: Callable[..., SidecarProcess],
    start_detector: Callable[..., DetectorProcess],
) -> None:
    om = manifest(tmp_path, SPEC)
    detector = start_detector(om, "--ingest-token-file", token_file(tmp_path, TOKEN))
    assert detector.status()["ingestAuth"] == "bearer"
    assert detector_metric(detector, "mlwarden_detector_ingest_authenticated") == 1

    # No header, a wrong one: 401 with a JSON body, counted; nothing ingested.
    bare = requests.post(f"{detector.url}/v1/records", json={"records": []}, timeout=5)
    assert bare.status_code == 401 and "missing ingest token" in bare.json()["error"]
    wrong = requests.post(
        f"{detector.url}/v1/records",
        json={"records": []},
        timeout=5,
        headers={"Authorization": "Bearer " + "x" * len(TOKEN)},
    )
    assert wrong.status_code == 401 and "wrong ingest token" in wrong.json()["error"]
    labels = requests.post(f"{detector.url}/v1/labels", json={"labels": []}, timeout=5)
    assert labels.status_code == 401
    assert (
        detector_metric(detector, "mlwarden_detector_batches_rejected_total", reason="unauthorized")
        == 3
    )
    assert requests.get(f"{detector.url}/v1/status", timeout=5).status_code == 200  # reads open

    # A sidecar with the right token: records arrive.
    good = start_sidecar(
        upstream.url,
        "--observed-model",
        str(om),
        "--ingest-token-file",
        token_file(tmp_path, TOKEN, "good"),
        collector=detector.url,
    )
    call_model(good, 10)
    wait_until(lambda: detector.status()["recordsIngested"] == 10, what="records ingested")

    # A sidecar with a wrong token: the model answers as before, the records are refused.
    bad = start_sidecar(
        upstream.url,
        "--observed-model",
        str(om),
        "--ingest-token-file",
        token_file(tmp_path, "W" * 43, "bad"),
        collector=detector.url,
    )
    started = time.monotonic()
    call_model(bad, 10)
    assert time.monotonic() - started < 10
    wait_until(
        lambda: bad.metric("mlwarden_sidecar_records_dropped_total", reason="unauthorized") == 10,
        what="dropped as unauthorized",
    )
    assert bad.metric("mlwarden_sidecar_ship_requests_total", outcome="unauthorized") >= 1
    assert (
        detector_metric(detector, "mlwarden_detector_batches_rejected_total", reason="unauthorized")
        >= 4
    )
    assert detector.status()["recordsIngested"] == 10
    # The token is never logged, by either side.
    assert TOKEN not in good.log() and TOKEN not in detector.log()


def test_without_a_token_ingest_is_open_and_says_so(
    tmp_path: Path, start_detector: Callable[..., DetectorProcess]
) -> None:
    detector = start_detector(manifest(tmp_path, SPEC))
    assert detector.post({"records": [{"features": {"amount": 1.0}}]}).status_code == 200
    assert detector.status()["ingestAuth"] == "none"
    assert detector_metric(detector, "mlwarden_detector_ingest_authenticated") == 0
    assert detector.log().count("no ingest token") == 1  # warned once


def test_redacted_fields_never_leave_the_sidecar_and_payloads_are_not_logged(
    tmp_path: Path,
    upstream: Upstream,
    collector: Collector,
    start_sidecar: Callable[..., SidecarProcess],
    start_detector: Callable[..., DetectorProcess],
) -> None:
    om = manifest(tmp_path, SPEC)
    marker = "PAYLOADMARKER"
    sidecar = start_sidecar(
        upstream.url,
        "--observed-model",
        str(om),
        "--log-level",
        "debug",
        "--ingest-token-file",
        token_file(tmp_path, TOKEN),
        collector=collector.url,
    )
    call_model(sidecar, 5, marker)
    wait_until(lambda: len(collector.records()) == 5, what="5 records shipped")
    for i, record in enumerate(sorted(collector.records(), key=lambda r: r["features"]["amount"])):
        assert record["features"] == {
            "amount": 10.0 + i,
            "user": hash_value(f"{marker}user-{i}", TOKEN.encode()),
        }
    shipped = repr(collector.batches)
    assert marker not in shipped and "example.com" not in shipped

    # The detector, at debug level too, fed the same kind of values directly.
    detector = start_detector(om, "--log-level", "debug")
    assert (
        detector.post(
            {"records": [{"features": {"amount": 1.0, "email": f"{marker}@x", "user": marker}}]}
        ).status_code
        == 200
    )
    assert detector.post(
        {"records": [{"features": {"amount": f"{marker}-not-a-number"}}], "junk": marker}
    ).status_code in (200, 400)
    sidecar.stop()
    detector.stop()
    assert "DEBUG" in sidecar.log()  # debug logging was on, and said things
    for log in (sidecar.log(), detector.log()):
        assert marker not in log
        assert "example.com" not in log
