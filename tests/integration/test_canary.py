"""Two real MLServer model versions, each behind its own real sidecar (`--model-revision`), and
one real detector: the canary analysis end to end.

- a bad candidate (a model that answers class 0 to everything) on 5% and on 10% of the traffic
  is a CanaryRegression naming the candidate, not the baseline;
- an A/A pair (both revisions the same MLServer model) raises nothing, over repeated runs;
- an input change shared by both revisions is FeatureDrift, not CanaryRegression.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import joblib
import numpy as np
import pytest
import requests
from harness import DetectorProcess, SidecarProcess, manifest, serve_mlserver, wait_until
from sklearn.datasets import load_iris
from sklearn.dummy import DummyClassifier

FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")
SPEC = (
    "  target: {deployment: iris}\n  protocol: v2\n  features:\n"
    + "".join(f"    - {{name: {f}, type: numeric}}\n" for f in FEATURES)
    + "  prediction: {name: predict, type: categorical}\n"
    "  reference: {source: warmup, size: 300}\n  window: {size: 600}\n"
    "  alerting: {evaluationInterval: 200ms, fireAfter: 2, resolveAfter: 2}\n"
    "  canary: {minSamples: 60}\n"
)
ROWS = 3  # rows per request
BASELINE, CANDIDATE = "5d4c3b2a1", "6b8f7c9d4"  # the two sidecars' --model-revision


@pytest.fixture(scope="module")
def bad_mlserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A second MLServer serving `iris` version 2: a model that answers class 0 to anything."""
    root = tmp_path_factory.mktemp("mlserver-bad")
    model_dir = root / "iris"
    model_dir.mkdir()
    x, y = load_iris(return_X_y=True)
    joblib.dump(DummyClassifier(strategy="constant", constant=0).fit(x, y), model_dir / "m.joblib")
    (model_dir / "model-settings.json").write_text(
        json.dumps(
            {
                "name": "iris",
                "implementation": "mlserver_sklearn.SKLearnModel",
                "parameters": {"uri": "./m.joblib", "version": "v2"},
            }
        )
    )
    with serve_mlserver(root, what="the bad iris model") as url:
        yield url


class Traffic:
    """Clients of the model Service: each request goes to the candidate with `share`."""

    def __init__(self, baseline: SidecarProcess, candidate: SidecarProcess, seed: int) -> None:
        self.urls = (baseline.url, candidate.url)
        self.x, _ = load_iris(return_X_y=True)
        self.rng = np.random.default_rng(seed)
        self.session = requests.Session()
        self.sent = [0, 0]

    def send(self, n: int, *, share: float, scale: float = 1.0) -> None:
        for _ in range(n):
            which = int(self.rng.random() < share)
            rows = self.x[self.rng.choice(len(self.x), size=ROWS)].copy()
            rows[:, 2] *= scale  # petal_length in millimetres when 10
            body = {
                "inputs": [
                    {
                        "name": "input-0",
                        "shape": list(rows.shape),
                        "datatype": "FP64",
                        "data": rows.ravel().tolist(),
                    }
                ]
            }
            resp = self.session.post(
                f"{self.urls[which]}/v2/models/iris/infer", json=body, timeout=10
            )
            assert resp.status_code == 200
            self.sent[which] += 1

    def send_delivered(
        self, detector: DetectorProcess, n: int, *, share: float, scale: float = 1.0
    ) -> None:
        """`send`, 30 requests at a time, each lot waited for until the detector has every
        record of both revisions: the two sidecars ship independently, and on a loaded
        machine one may lag the other by seconds, during which the two windows hold the
        change in different proportions (a lag between revisions' records is not a
        regression; see docs/detector.md, canary analysis)."""
        for lot in range(0, n, 30):
            self.send(min(30, n - lot), share=share, scale=scale)
            want = {BASELINE: self.sent[0] * ROWS, CANDIDATE: self.sent[1] * ROWS}

            def delivered(want: dict[str, int] = want) -> bool:
                got = {r["revision"]: r["records"] for r in detector.status()["revisions"]}
                return all(got.get(rev, 0) >= k for rev, k in want.items() if k)

            wait_until(delivered, timeout=20, what="both revisions' records")


def canary_alerts(detector: DetectorProcess) -> list[dict[str, object]]:
    return [a for a in detector.status()["alerts"] if a["type"] == "CanaryRegression"]


def pair(
    tmp_path: Path,
    start_sidecar: Callable[..., SidecarProcess],
    start_detector: Callable[..., DetectorProcess],
    baseline_url: str,
    candidate_url: str,
    name: str,
) -> tuple[DetectorProcess, SidecarProcess, SidecarProcess]:
    om = manifest(tmp_path, SPEC, name=name)
    detector = start_detector(om)
    base = start_sidecar(
        baseline_url, "--observed-model", str(om), "--model-revision", "5d4c3b2a1",
        collector=detector.url,
    )  # fmt: skip
    cand = start_sidecar(
        candidate_url, "--observed-model", str(om), "--model-revision", "6b8f7c9d4",
        collector=detector.url,
    )  # fmt: skip
    return detector, base, cand


@pytest.mark.parametrize("share", [0.05, 0.10])
def test_a_bad_candidate_is_flagged_naming_the_candidate(
    share: float,
    tmp_path: Path,
    mlserver: str,
    bad_mlserver: str,
    start_sidecar: Callable[..., SidecarProcess],
    start_detector: Callable[..., DetectorProcess],
) -> None:
    detector, base, cand = pair(
        tmp_path, start_sidecar, start_detector, mlserver, bad_mlserver, f"c{int(share * 100)}"
    )
    traffic = Traffic(base, cand, seed=int(share * 100))
    traffic.send(110, share=0.0)  # the baseline alone: the warm-up reference
    wait_until(lambda: detector.status()["phase"] == "Observing", what="the reference")
    for _ in range(40):
        traffic.send(100, share=share)
        if canary_alerts(detector):
            break
    detector.wait_evaluations(2)
    alerts = canary_alerts(detector)
    assert len(alerts) == 1, detector.status()["alerts"]
    alert = alerts[0]
    assert alert["modelRevision"] == "6b8f7c9d4" and alert["baselineRevision"] == "5d4c3b2a1"
    assert any(e["signal"] == "prediction" and e["failing"] for e in alert["evidence"])
    status = detector.status()
    roles = {r["revision"]: r for r in status["revisions"]}
    assert roles["5d4c3b2a1"]["role"] == "baseline"
    assert roles["6b8f7c9d4"]["canary"]["verdict"] == "Fail"
    # The candidate's own requests it took (the target: a few hundred).
    assert traffic.sent[1] * ROWS <= 500, traffic.sent
    verdict = requests.get(f"{detector.url}/v1/canary/6b8f7c9d4", timeout=5)
    assert verdict.status_code == 200 and verdict.json()["verdict"] == "Fail"
    flagger = requests.post(
        f"{detector.url}/v1/canary",
        json={"name": "iris", "namespace": "test", "phase": "Progressing", "metadata": {}},
        timeout=5,
    )
    assert flagger.status_code == 412


def test_an_aa_pair_raises_nothing_over_repeated_runs(
    tmp_path: Path,
    mlserver: str,
    start_sidecar: Callable[..., SidecarProcess],
    start_detector: Callable[..., DetectorProcess],
) -> None:
    """Three A/A runs (both revisions the same MLServer model, 10% candidate): no alert at all,
    and the candidate passes; the false-alarm rate over many runs is the benchmark's."""
    for run in range(3):
        detector, base, cand = (
            pair(
                tmp_path / f"r{run}", start_sidecar, start_detector, mlserver, mlserver, f"aa{run}"
            )
            if (tmp_path / f"r{run}").mkdir() is None
            else (None, None, None)
        )  # type: ignore[misc]
        assert detector is not None and base is not None and cand is not None
        traffic = Traffic(base, cand, seed=100 + run)
        traffic.send(110, share=0.0)
        wait_until(lambda d=detector: d.status()["phase"] == "Observing", what="the reference")
        traffic.send(700, share=0.1)
        detector.wait_evaluations(3)
        status = detector.status()
        assert status["alerts"] == [], status["alerts"]
        cand_status = {r["revision"]: r for r in status["revisions"]}["6b8f7c9d4"]
        assert cand_status["canary"]["verdict"] == "Pass", cand_status
        assert requests.post(f"{detector.url}/v1/canary", timeout=5).status_code == 200


def test_an_input_change_shared_by_both_revisions_is_feature_drift_not_a_regression(
    tmp_path: Path,
    mlserver: str,
    start_sidecar: Callable[..., SidecarProcess],
    start_detector: Callable[..., DetectorProcess],
) -> None:
    detector, base, cand = pair(tmp_path, start_sidecar, start_detector, mlserver, mlserver, "sh")
    traffic = Traffic(base, cand, seed=7)
    traffic.send(110, share=0.0)
    wait_until(lambda: detector.status()["phase"] == "Observing", what="the reference")
    traffic.send_delivered(detector, 200, share=0.1)
    # The feature job now sends millimetres, to both revisions.
    traffic.send_delivered(detector, 300, share=0.1, scale=10.0)
    wait_until(
        lambda: ("FeatureDrift", "petal_length") in detector.alerts(),
        what="drift on petal_length",
    )
    detector.wait_evaluations(3)
    assert canary_alerts(detector) == []
    drift = [a for a in detector.status()["alerts"] if a["type"] == "FeatureDrift"]
    assert drift[0]["modelRevision"] == "5d4c3b2a1"  # the largest share of the window
