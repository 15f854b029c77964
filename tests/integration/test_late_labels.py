"""Labels that come after a detector restart, joined and credited to the prediction's time and
revision: real MLServer, real sidecars (`--model-revision`), the real detector process with a
reference store.

1. Revision rev-a serves through its sidecar: a warm-up, then current traffic. Its sidecar stops,
   then the detector (SIGTERM: it stores the reference and the label ledger).
2. A new detector process starts on the same store and takes back the waiting predictions;
   revision rev-b serves through a new sidecar.
3. Ground truth for rev-a's predictions arrives: right for the warm-up, wrong for the rest.
   They join (after the restart), the labelled accuracy of rev-a's prediction-time buckets is 0,
   a PerformanceDrop fires naming rev-a and a bucket that ended before the restart, and rev-b's
   predictions, made after the restart, stay unlabelled.

In a cluster (the API emulator, `--report-to`), the ledger is kept in ConfigMap NAME-reference
next to the reference, and status.detector.labels shows the coverage.
"""

from __future__ import annotations

import base64
import gzip
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import kmock
import numpy as np
import requests
from harness import (
    DetectorProcess,
    SidecarProcess,
    detector_process,
    emulate_observed_model,
    iris_spec,
    manifest,
    post_records,
    until,
    v2_body,
    wait_until,
)
from sklearn.datasets import load_iris

from mlwarden.detector.store import KEY, LABELS_KEY

WARMUP = 60  # records (20 requests of 3 rows)
ROWS = 3
SPEC = iris_spec(size=WARMUP) + (
    "  detectors:\n"
    "    performance: {metric: accuracy, maxDrop: 0.1, estimate: none, labelJoinWindow: 7d,"
    " labelBucket: 2s}\n"
)


def send(sidecar: SidecarProcess, prefix: str, n: int, rng: np.random.Generator) -> dict[str, Any]:
    """`n` inference requests with ids `prefix-i`; the model's answer per request id."""
    x, _ = load_iris(return_X_y=True)
    answers: dict[str, Any] = {}
    with requests.Session() as http:
        for i in range(n):
            rows = x[rng.choice(len(x), size=ROWS)]
            rid = f"{prefix}-{i}"
            resp = http.post(
                f"{sidecar.url}/v2/models/iris/infer",
                json=v2_body(rows),
                headers={"x-request-id": rid},
                timeout=10,
            )
            assert resp.status_code == 200, resp.text
            answers[rid] = resp.json()["outputs"][0]["data"]
    return answers


def labels(answers: dict[str, Any], *, right: bool) -> list[dict[str, Any]]:
    return [
        {"id": rid, "row": row, "label": y if right else (y + 1) % 3}
        for rid, predicted in answers.items()
        for row, y in enumerate(predicted)
    ]


def epoch(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def test_labels_after_a_restart_are_credited_to_the_predictions_time_and_revision(
    tmp_path: Path,
    start_sidecar: Callable[..., SidecarProcess],
    start_detector: Callable[..., DetectorProcess],
    mlserver: str,
) -> None:
    rng = np.random.default_rng(7)
    om = manifest(tmp_path, SPEC, name="late")
    store = ("--reference-store", str(tmp_path / "store"))
    detector = start_detector(om, *store)
    a = start_sidecar(
        mlserver, "--observed-model", str(om), "--model-revision", "rev-a",
        collector=detector.url,
    )  # fmt: skip
    warm = send(a, "warm", WARMUP // ROWS, rng)
    wait_until(lambda: detector.status()["phase"] == "Observing", what="the warm-up reference")
    current = send(a, "cur", 150, rng)
    made = WARMUP + 150 * ROWS
    wait_until(lambda: detector.status()["recordsIngested"] >= made, what="rev-a's records")
    assert a.stop() == 0
    before = detector.status()["labels"]
    assert before["waiting"] == made and before["joined"] == 0
    time.sleep(2.5)  # the next predictions fall in later 2 s buckets
    assert detector.stop() == 0
    restarted_at = time.time()

    detector = start_detector(om, *store)
    status = detector.status()
    assert status["reference"]["origin"] == "restored"
    assert status["labels"]["store"]["restored"] == made
    b = start_sidecar(
        mlserver, "--observed-model", str(om), "--model-revision", "rev-b",
        collector=detector.url,
    )  # fmt: skip
    send(b, "new", 40, rng)
    wait_until(lambda: detector.status()["recordsIngested"] >= 40 * ROWS, what="rev-b's records")
    time.sleep(1.0)

    # Ground truth for rev-a's predictions, after the restart: the warm-up's right, the rest wrong.
    body = {"labels": labels(warm, right=True) + labels(current, right=False)}
    body["labels"].append({"id": "never-made", "row": 0, "label": 1})
    resp = requests.post(f"{detector.url}/v1/labels", json=body, timeout=10)
    assert resp.json() == {"joined": made, "unmatched": 1}
    labelled_at = time.time()

    wait_until(
        lambda: any(a["type"] == "PerformanceDrop" for a in detector.status()["alerts"]),
        what="the labelled performance drop",
    )
    status = detector.status()
    (alert,) = [a for a in status["alerts"] if a["type"] == "PerformanceDrop"]
    assert alert["test"] == "accuracy_labelled" and alert["statistic"] == 0.0
    assert alert["modelRevision"] == "rev-a"
    coverage = status["labels"]
    judged = epoch(coverage["judgedBucket"])
    assert judged + 2.0 <= restarted_at, "judged a bucket of predictions made before the restart"
    assert coverage["judgedBucket"] in alert["message"]
    by_revision = {r["revision"]: r for r in coverage["revisions"]}
    assert by_revision["rev-a"]["predicted"] == made
    assert by_revision["rev-a"]["labelled"] == made and by_revision["rev-a"]["coverage"] == 1.0
    assert by_revision["rev-a"]["value"] == 0.0
    assert by_revision["rev-b"]["predicted"] == 40 * ROWS
    assert by_revision["rev-b"]["labelled"] == 0 and by_revision["rev-b"]["coverage"] == 0.0
    # Each label is at least as late as the gap from its prediction to the restart.
    assert by_revision["rev-a"]["lagSeconds"]["p50"] >= labelled_at - restarted_at
    assert coverage["unmatched"] == 1 and coverage["waiting"] == 40 * ROWS
    for bucket in coverage["buckets"]:
        if epoch(bucket["start"]) >= restarted_at:  # rev-b's, after the restart
            assert bucket["labelled"] == 0


CM_SPEC = """\
  target: {deployment: m}
  features:
    - {name: a, type: numeric}
  prediction: {name: y, type: categorical}
  reference: {source: warmup, size: 100}
  window: {size: 300}
  alerting: {evaluationInterval: 200ms, fireAfter: 2, resolveAfter: 2}
  detectors:
    performance: {metric: accuracy, maxDrop: 0.1, estimate: none, labelJoinWindow: 2d}
"""
RESOURCE = "mlwarden.io/v1alpha1/observedmodels"
CONFIGMAPS = "v1/configmaps"


def batch(prefix: str, n: int, rng: np.random.Generator) -> dict[str, Any]:
    return {
        "source": {"modelRevision": "r1"},
        "records": [
            {
                "id": f"{prefix}-{i}",
                "row": 0,
                "features": {"a": float(rng.normal())},
                "outputs": {"y": int(rng.integers(0, 2))},
            }
            for i in range(n)
        ],
    }


async def test_in_a_cluster_the_ledger_is_kept_in_the_reference_configmap_and_status_shows_coverage(
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(3)
    om = manifest(tmp_path, CM_SPEC)
    async with kmock.KubernetesEmulator() as api, kmock.Server(api) as server:
        emulate_observed_model(api, "5e1f0a4c-0000-4000-8000-0002")
        report = ("--report-to", str(server.url))
        warm, current = batch("w", 100, rng), batch("c", 200, rng)
        async with detector_process(om, *report) as (url, _):
            await post_records(url, warm)
            await post_records(url, current)
            await until(
                lambda: _get(
                    url,
                    "/v1/status",
                    lambda s: s["recordsIngested"] == 300 and s["reference"].get("storedIn"),
                ),
                "the records, and the reference stored",
            )
        cm = api.objects[CONFIGMAPS, "test", "m-reference"]
        ledger = json.loads(gzip.decompress(base64.b64decode(cm["binaryData"][LABELS_KEY])))
        assert len(ledger["waiting"]["id"]) == 300 and ledger["revisions"] == ["r1"]
        assert cm["binaryData"][KEY]  # next to the reference

        async with detector_process(om, *report) as (url, _):
            answer = await _post(
                url,
                "/v1/labels",
                {
                    "labels": [
                        {"id": r["id"], "row": 0, "label": r["outputs"]["y"]}
                        for r in warm["records"]
                    ]
                    + [
                        {"id": r["id"], "row": 0, "label": 1 - r["outputs"]["y"]}
                        for r in current["records"]
                    ]
                },
            )
            assert answer == {"joined": 300, "unmatched": 0}

            def labels() -> dict[str, Any] | None:
                status = api.objects[RESOURCE, "test", "m"].get("status") or {}
                found = (status.get("detector") or {}).get("labels")
                fired = any(a["type"] == "PerformanceDrop" for a in status.get("alerts") or [])
                return found if fired and found and found["labelled"] == 300 else None

            written = await until(labels, "status.detector.labels after the drop alert")
        assert written["predicted"] == 300 and written["coverage"] == 1.0
        assert written["value"] == 0.0 and written["unmatched"] == 0
        assert written["store"]["restored"] == 300
        (rev,) = written["revisions"]
        assert rev["revision"] == "r1" and rev["labelled"] == 300 and rev["value"] == 0.0
        status = api.objects[RESOURCE, "test", "m"]["status"]
        (alert,) = [a for a in status["alerts"] if a["type"] == "PerformanceDrop"]
        assert alert["modelRevision"] == "r1" and alert["statistic"] == 0.0


async def _get(url: str, path: str, check: Callable[[dict[str, Any]], bool]) -> bool:
    async with aiohttp.ClientSession() as http, http.get(f"{url}{path}") as resp:
        return check(await resp.json())


async def _post(url: str, path: str, body: dict[str, Any]) -> Any:
    async with aiohttp.ClientSession() as http, http.post(f"{url}{path}", json=body) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()
