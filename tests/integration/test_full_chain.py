"""MLServer behind the real sidecar, shipping to the real detector: the Detect loop end to end."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import requests
from harness import DetectorProcess, SidecarProcess, iris_spec, manifest, v2_infer, wait_until
from sklearn.datasets import load_iris

SPEC = iris_spec(size=300)


def test_a_unit_change_upstream_is_detected_through_the_whole_chain(
    tmp_path: Path,
    mlserver: str,
    start_sidecar: Callable[..., SidecarProcess],
    start_detector: Callable[..., DetectorProcess],
) -> None:
    om = manifest(tmp_path, SPEC, name="iris")
    detector = start_detector(om)
    sidecar = start_sidecar(mlserver, "--observed-model", str(om), collector=detector.url)
    x, _ = load_iris(return_X_y=True)
    rng = np.random.default_rng(11)
    session = requests.Session()

    def send(n_requests: int, unit: float) -> None:
        for _ in range(n_requests):
            rows = x[rng.choice(len(x), size=3)].copy()
            rows[:, 2] *= unit  # petal_length: 1.0 = centimetres, 10.0 = millimetres
            v2_infer(session, sidecar.url, rows)

    send(100, 1.0)  # 300 rows: the warm-up reference
    wait_until(lambda: detector.status()["phase"] == "Observing", what="reference from warm-up")
    send(150, 1.0)
    detector.wait_evaluations(4)
    assert detector.alerts() == set(), detector.status()["alerts"]

    send(100, 10.0)  # the feature job now sends millimetres
    wait_until(
        lambda: ("FeatureDrift", "petal_length") in detector.alerts(), what="drift on petal_length"
    )
    detector.wait_evaluations(3)
    feature_drift = {f for t, f in detector.alerts() if t == "FeatureDrift"}
    assert feature_drift == {"petal_length"}
    assert ("DataQuality", "petal_length") in detector.alerts()  # out of the reference range
    status = detector.status()
    assert status["recordsIngested"] == 1050 and status["requestsIngested"] == 350
    assert sidecar.metric("mlwarden_sidecar_records_dropped_total", reason="buffer_full") == 0
