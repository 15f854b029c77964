"""Segments through the real sidecar and detector on loopback: a drift confined to the 5% of
traffic from one country is flagged with its segment named, while all traffic shows none."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import requests
from harness import DetectorProcess, SidecarProcess, Upstream, manifest, wait_until

LEVELS = ["BR"] + [f"c{i:02d}" for i in range(19)]
SHARE = [0.05] + [0.95 / 19] * 19
ROWS = 20  # rows per request
SPEC = (
    "  target: {deployment: scorer}\n  protocol: json\n  features:\n"
    + "".join(f"    - {{name: x{i}, type: numeric}}\n" for i in range(3))
    + "    - {name: country, type: categorical}\n"
    # country: a feature; tenant: a request field the spec does not declare as one
    "  segments:\n    - {column: country}\n    - {column: tenant, maxLevels: 3}\n"
    "  reference: {source: warmup, size: 2000}\n  window: {size: 2000}\n"
    "  alerting: {evaluationInterval: 200ms, fireAfter: 2, resolveAfter: 2}\n"
    # Segments follow the periodic rule: at most pValue family-wise per evaluation. Evaluated
    # every 200 ms, the test's ~100 evaluations at 0.01 would risk a false finding elsewhere
    # now and then; at 0.001 Brazil's p (about 1e-13) still fails it by far.
    "  detectors: {drift: {pValue: 0.001}}\n"
)


def test_a_drift_in_a_five_percent_segment_is_flagged_with_its_segment_named(
    tmp_path: Path,
    upstream: Upstream,
    start_sidecar: Callable[..., SidecarProcess],
    start_detector: Callable[..., DetectorProcess],
) -> None:
    om = manifest(tmp_path, SPEC, name="scorer")
    detector = start_detector(om)
    sidecar = start_sidecar(upstream.url, "--observed-model", str(om), collector=detector.url)
    rng = np.random.default_rng(20)
    session = requests.Session()

    def send(n_requests: int, shift: float) -> None:
        for _ in range(n_requests):
            country = rng.choice(LEVELS, size=ROWS, p=SHARE)
            x = rng.normal(size=(ROWS, 3))
            x[country == "BR", 0] += shift  # only Brazil's x0 moves
            rows = [
                {
                    **{f"x{i}": float(x[j, i]) for i in range(3)},
                    "country": str(country[j]),
                    "tenant": str(rng.choice(["t1", "t2", "t3", "t4"])),
                }
                for j in range(ROWS)
            ]
            resp = session.post(
                f"{sidecar.url}/predict",
                data=json.dumps(rows),
                headers={"Content-Type": "application/json"},
                timeout=10,
            )
            assert resp.status_code == 200

    def segment_alerts() -> list[dict[str, Any]]:
        return [a for a in detector.status()["alerts"] if "segment" in a]

    send(100, 0.0)  # 2,000 rows: the warm-up reference, split by segment
    wait_until(lambda: detector.status()["phase"] == "Observing", what="reference from warm-up")
    send(100, 0.0)
    wait_until(lambda: detector.status()["recordsIngested"] >= 4000, what="stationary records")
    detector.wait_evaluations(4)
    assert detector.status()["alerts"] == []

    send(110, 1.5)  # the whole window: Brazil's x0 up by 1.5 sd (5% of the traffic)
    wait_until(lambda: bool(segment_alerts()), what="a segment's drift alert")
    detector.wait_evaluations(3)
    status = detector.status()
    # Only Brazil alerts: its drift (and, as its x0 now passes the reference's maximum more
    # often, possibly its out-of-range rate); nothing on all traffic.
    assert all(a.get("segment") == {"country": "BR"} for a in status["alerts"]), json.dumps(
        status["alerts"]
    )
    (alert,) = [a for a in status["alerts"] if a["type"] == "FeatureDrift"]
    assert alert["feature"] == "x0" and alert["test"] == "ks"
    assert alert["message"].startswith("segment country=BR: KS adjusted p=")
    everywhere = [
        c
        for c in status["checks"]
        if c["type"] == "FeatureDrift"
        and c["feature"] == "x0"
        and "segment country" not in c["message"]
    ]
    assert everywhere and not everywhere[0]["failing"], everywhere  # all traffic misses it
    columns = {c["column"]: c for c in status["segments"]["columns"]}
    br = next(s for s in columns["country"]["segments"] if s["level"] == "BR")
    assert 0.02 < br["share"] < 0.09 and br["referenceRecords"] > 50
    assert len(columns["tenant"]["segments"]) == 4  # 3 levels and other, from the request field
    assert status["recordsIngested"] == 310 * ROWS
    assert not any(c["test"] == "schema" and c["failing"] for c in status["checks"])
    assert sidecar.metric("mlwarden_sidecar_records_dropped_total", reason="buffer_full") == 0
