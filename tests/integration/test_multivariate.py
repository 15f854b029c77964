"""A correlation-only change through MLServer, the real sidecar and the real detector.

Two inputs of the iris model move together (NannyML's butterfly: a shared signal plus a
little noise each); then the feature pipeline rotates them by 90 degrees, so they move
against each other while every input keeps its distribution. No per-column test can see
it: the detector must raise MultivariateDrift, naming the two features, and no FeatureDrift.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import requests
from harness import DetectorProcess, SidecarProcess, iris_spec, manifest, v2_infer, wait_until

SPEC = iris_spec(size=600)


def test_a_correlation_flip_raises_multivariate_drift_through_the_chain(
    tmp_path: Path,
    mlserver: str,
    start_sidecar: Callable[..., SidecarProcess],
    start_detector: Callable[..., DetectorProcess],
) -> None:
    om = manifest(tmp_path, SPEC, name="iris")
    detector = start_detector(om)
    sidecar = start_sidecar(mlserver, "--observed-model", str(om), collector=detector.url)
    rng = np.random.default_rng(20)
    session = requests.Session()

    def send(n_requests: int, *, rotate: bool) -> None:
        for _ in range(n_requests):
            s = rng.standard_normal(6)
            x1 = s + rng.standard_normal(6) / 8
            x2 = s + rng.standard_normal(6) / 8
            if rotate:
                x1, x2 = -x2, x1
            rows = np.column_stack(
                [5.8 + x1, 3.0 + x2, 3.7 + rng.standard_normal(6), 1.2 + rng.standard_normal(6)]
            )
            v2_infer(session, sidecar.url, rows)

    send(100, rotate=False)  # 600 rows: the warm-up reference
    wait_until(lambda: detector.status()["phase"] == "Observing", what="reference from warm-up")
    send(100, rotate=False)
    detector.wait_evaluations(4)
    assert detector.alerts() == set(), detector.status()["alerts"]
    assert detector.status()["multivariate"]["drift"] is False

    send(100, rotate=True)  # the pipeline now rotates the pair
    wait_until(lambda: ("MultivariateDrift", None) in detector.alerts(), what="MultivariateDrift")
    (alert,) = [a for a in detector.status()["alerts"] if a["type"] == "MultivariateDrift"]
    assert alert["test"] == "pca" and alert["pValue"] <= alert["threshold"]
    assert {f["feature"] for f in alert["features"][:2]} == {"sepal_length", "sepal_width"}
    assert not [a for a in detector.status()["alerts"] if a["type"] == "FeatureDrift"]
