"""The real detector process: drift on the right feature only, quiet when nothing moved."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import requests
from harness import DetectorProcess, manifest, wait_until

FEATURES = ["a", "b", "c", "d"]
FAST = """\
  target: {deployment: m}
  features:
    - {name: a, type: numeric}
    - {name: b, type: numeric}
    - {name: c, type: numeric}
    - {name: d, type: categorical}
  prediction: {name: y, type: categorical}
  reference: {source: warmup, size: 500}
  window: {size: 500}
  alerting: {evaluationInterval: 200ms, fireAfter: 2, resolveAfter: 2}
"""


def batch(
    rng: np.random.Generator, n: int, *, start: int = 0, shift_c: float = 0.0, null_d: bool = False
) -> dict[str, object]:
    records = []
    for i in range(n):
        d = None if null_d else str(rng.choice(["x", "y", "z"], p=[0.5, 0.3, 0.2]))
        records.append(
            {
                "id": f"r{start + i}",
                "row": 0,
                "features": {
                    "a": float(rng.normal()),
                    "b": float(rng.exponential()),
                    "c": float(rng.normal(shift_c)),
                    "d": d,
                },
                "outputs": {"y": int(rng.integers(0, 2))},
            }
        )
    requests_ = [{"id": r["id"], "status": 200, "latencySeconds": 0.01} for r in records]
    return {"source": {"pod": "test"}, "requests": requests_, "records": records}


def feed(detector: DetectorProcess, payload: dict[str, object]) -> None:
    resp = detector.post(payload)
    assert resp.status_code == 200, resp.text


def test_a_shifted_feature_is_flagged_on_that_feature_alone(
    tmp_path: Path, start_detector: Callable[..., DetectorProcess]
) -> None:
    detector = start_detector(manifest(tmp_path, FAST))
    rng = np.random.default_rng(1)
    feed(detector, batch(rng, 500))
    wait_until(lambda: detector.status()["phase"] == "Observing", what="reference built")
    feed(detector, batch(rng, 500, start=500, shift_c=1.0))
    wait_until(lambda: ("FeatureDrift", "c") in detector.alerts(), what="drift alert on c")
    detector.wait_evaluations(3)
    drift = {f for t, f in detector.alerts() if t == "FeatureDrift"}
    assert drift == {"c"}
    (alert,) = [a for a in detector.status()["alerts"] if a["type"] == "FeatureDrift"]
    # Decided as records arrived: held against the look's alpha (one false alarm per
    # 1,000,000 records spread over the columns, the windows and the looks).
    assert alert["test"] == "ks" and alert["pValue"] < 1e-6 and alert["threshold"] < 1e-4
    assert "sequential" in alert["message"]
    assert alert["reference"].startswith("warmup@") and alert["since"].endswith("Z")
    metrics = requests.get(f"{detector.url}/metrics", timeout=5).text
    assert (
        'mlwarden_detector_alert_active{feature="c",test="ks",type="FeatureDrift"} 1.0' in metrics
    )

    # The upstream fix lands: traffic is back to normal and the alert resolves.
    feed(detector, batch(rng, 500, start=1000))
    wait_until(lambda: ("FeatureDrift", "c") not in detector.alerts(), what="alert resolved")


def test_nothing_is_flagged_on_stationary_traffic(
    tmp_path: Path, start_detector: Callable[..., DetectorProcess]
) -> None:
    detector = start_detector(manifest(tmp_path, FAST))
    rng = np.random.default_rng(2)
    for i in range(5):
        feed(detector, batch(rng, 500, start=500 * i))
    detector.wait_evaluations(6)
    status = detector.status()
    assert status["phase"] == "Observing" and status["window"]["records"] >= 500
    assert status["alerts"] == []
    assert all(not c["failing"] for c in status["checks"]), [
        c for c in status["checks"] if c["failing"]
    ]


def test_a_feature_going_null_is_a_data_quality_alert(
    tmp_path: Path, start_detector: Callable[..., DetectorProcess]
) -> None:
    detector = start_detector(manifest(tmp_path, FAST))
    rng = np.random.default_rng(3)
    feed(detector, batch(rng, 500))
    feed(detector, batch(rng, 500, start=500, null_d=True))
    wait_until(lambda: ("DataQuality", "d") in detector.alerts(), what="missing-rate alert on d")
    (alert,) = [a for a in detector.status()["alerts"] if a["type"] == "DataQuality"]
    assert alert["test"] == "missing_rate" and alert["statistic"] == 1.0


def test_labels_posted_later_are_joined_and_a_drop_alerts(
    tmp_path: Path, start_detector: Callable[..., DetectorProcess]
) -> None:
    spec = FAST + "  detectors:\n    performance: {metric: accuracy, maxDrop: 0.1}\n"
    detector = start_detector(manifest(tmp_path, spec))
    rng = np.random.default_rng(4)
    warm, current = batch(rng, 500), batch(rng, 500, start=500)
    feed(detector, warm)
    feed(detector, current)

    def labels(payload: dict[str, object], correct: bool) -> list[dict[str, object]]:
        out = []
        for r in payload["records"]:  # type: ignore[attr-defined]
            y = r["outputs"]["y"]
            out.append({"id": r["id"], "row": 0, "label": y if correct else 1 - y})
        return out

    # Ground truth arrives later: the model was right during warm-up, wrong now.
    resp = requests.post(
        f"{detector.url}/v1/labels",
        json={
            "labels": labels(warm, True)
            + labels(current, False)
            + [{"id": "never-seen", "label": 1}]
        },
        timeout=30,  # a correctness test, not a latency one: a loaded CI machine took over 5 s
    )
    assert resp.json() == {"joined": 1000, "unmatched": 1}
    wait_until(lambda: ("PerformanceDrop", None) in detector.alerts(), what="performance alert")
    (alert,) = [a for a in detector.status()["alerts"] if a["type"] == "PerformanceDrop"]
    assert alert["test"] == "accuracy_labelled" and alert["statistic"] == 0.0


def test_kserve_cloudevents_are_ingested(
    tmp_path: Path, start_detector: Callable[..., DetectorProcess]
) -> None:
    spec = "  target: {deployment: m}\n  protocol: v1\n  reference: {source: warmup, size: 50}\n"
    detector = start_detector(manifest(tmp_path, spec))
    for i in range(60):
        request = json.dumps({"instances": [[5.1, 3.5, 1.4, 0.2], [6.2, 3.4, 5.4, 2.3]]})
        response = json.dumps({"predictions": [0, 2]})
        for ce_type, body in (
            ("org.kubeflow.serving.inference.request", request),
            ("org.kubeflow.serving.inference.response", response),
        ):
            resp = requests.post(
                detector.url + "/",
                data=body,
                timeout=5,
                headers={
                    "ce-type": ce_type,
                    "ce-id": f"ev-{i}",
                    "ce-specversion": "1.0",
                    "ce-source": "http://localhost:9081/",
                    "content-type": "application/json",
                },
            )
            assert resp.status_code in (200, 202), resp.text
    status = detector.status()
    assert status["recordsIngested"] == 120
    assert status["phase"] == "Observing"
    assert set(status["columns"]) >= {"f0", "f1", "f2", "f3", "prediction"}


def test_kserve_cloudevents_carry_the_endpoint_as_the_revision(
    tmp_path: Path, start_detector: Callable[..., DetectorProcess]
) -> None:
    """KServe's logger sets the CloudEvent extension `endpoint` (default or canary) and
    `component` (kserve pkg/logger/worker.go): the detector keeps a window per endpoint."""
    spec = "  target: {deployment: m}\n  protocol: v1\n  reference: {source: warmup, size: 50}\n"
    detector = start_detector(manifest(tmp_path, spec))
    for i in range(40):
        endpoint = "canary" if i % 4 == 0 else "default"
        for ce_type, body in (
            ("org.kubeflow.serving.inference.request", {"instances": [[5.1, 3.5, 1.4, 0.2]]}),
            ("org.kubeflow.serving.inference.response", {"predictions": [0]}),
        ):
            resp = requests.post(
                detector.url + "/",
                data=json.dumps(body),
                timeout=5,
                headers={
                    "ce-type": ce_type,
                    "ce-id": f"ev-{i}",
                    "ce-specversion": "1.0",
                    "ce-source": "http://localhost:9081/",
                    "ce-inferenceservicename": "iris",
                    "ce-namespace": "ml",
                    "ce-component": "predictor",
                    "ce-endpoint": endpoint,
                    "content-type": "application/json",
                },
            )
            assert resp.status_code in (200, 202), resp.text
    revisions = {r["revision"]: r for r in detector.status()["revisions"]}
    assert set(revisions) == {"default", "canary"}
    assert revisions["default"]["records"] == 30 and revisions["canary"]["records"] == 10
    assert revisions["default"]["role"] == "baseline"


def test_malformed_batches_get_a_400_and_the_detector_keeps_serving(
    tmp_path: Path, start_detector: Callable[..., DetectorProcess]
) -> None:
    detector = start_detector(manifest(tmp_path, FAST))
    for body, message in (
        (b"{not json", "body is not JSON"),
        (b'{"records": [{"features": [1, 2]}]}', "records[0].features: must be an object"),
        (b"\xff" * 100, "not UTF-8"),
    ):
        resp = requests.post(f"{detector.url}/v1/records", data=body, timeout=5)
        assert resp.status_code == 400 and message in resp.json()["error"]
    resp = requests.post(f"{detector.url}/v1/labels", data=b"[]", timeout=5)
    assert resp.status_code == 400
    assert detector.status()["recordsIngested"] == 0
    feed(detector, batch(np.random.default_rng(5), 10))
    assert detector.status()["recordsIngested"] == 10
    metrics = requests.get(f"{detector.url}/metrics", timeout=5).text
    assert 'mlwarden_detector_batches_rejected_total{reason="malformed"} 3.0' in metrics
