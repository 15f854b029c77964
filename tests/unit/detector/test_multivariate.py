"""The detector's multivariate check: rows kept bounded, the alert, stored with the reference.

A correlation flip (NannyML's butterfly: every marginal the same) fires MultivariateDrift
after `fireAfter` evaluations, naming the two features, while the per-column drift checks
stay quiet; stationary streams fire none (the periodic rule: `pValue` per evaluation and
`fireAfter` in a row, as tests/unit/detector/test_false_alarms.py measures for drift); the
reference's sample survives the store and gives the same evidence.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
from typing import Any

import numpy as np
import pytest

from mlwarden.detector import multivariate as mvd
from mlwarden.detector import persist
from mlwarden.detector.core import Detector
from mlwarden.detector.ingest import parse_batch
from mlwarden.spec import ObservedModel, parse_observed_model
from mlwarden.stats import multivariate as mv


def model(**detectors: object) -> ObservedModel:
    return parse_observed_model(
        {
            "apiVersion": "mlwarden.io/v1alpha1",
            "kind": "ObservedModel",
            "metadata": {"name": "m"},
            "spec": {
                "target": {"deployment": "m"},
                "reference": {"size": 2000},
                "window": {"size": 1000},
                "alerting": {"fireAfter": 3, "resolveAfter": 3, "falseAlarmsPer": 0},
                "detectors": detectors,
            },
        }
    )


def batch(rng: np.random.Generator, n: int, *, rotate: bool = False) -> dict[str, object]:
    s = rng.standard_normal(n)
    x1 = s + rng.standard_normal(n) / 8
    x2 = s + rng.standard_normal(n) / 8
    if rotate:
        x1, x2 = -x2, x1
    x3 = rng.standard_normal(n)
    x4 = rng.standard_normal(n)
    colour = rng.choice(["red", "green", "blue"], size=n, p=[0.5, 0.3, 0.2])
    return {
        "records": [
            {
                "features": {
                    "x1": float(x1[j]),
                    "x2": float(x2[j]),
                    "x3": float(x3[j]),
                    "x4": float(x4[j]),
                    "colour": str(colour[j]),
                },
                "outputs": {"score": float(x3[j])},
            }
            for j in range(n)
        ]
    }


def warmed(rng: np.random.Generator, om: ObservedModel) -> Detector:
    detector = Detector(om, now=0.0)
    detector.ingest(parse_batch(batch(rng, 2000), now=0.0), now=0.0)
    assert not detector.warming_up
    return detector


def test_the_reference_sample_holds_the_features_not_the_prediction() -> None:
    detector = warmed(np.random.default_rng(1), model())
    assert detector.reference is not None and detector.reference.multivariate is not None
    sample = detector.reference.multivariate
    assert set(sample.encoding.names) == {"x1", "x2", "x3", "x4", "colour"}
    assert sample.rows.shape == (2000, 4 + 4)  # 4 numeric, 3 colours + other


def test_a_correlation_flip_fires_multivariate_drift_and_names_the_pair() -> None:
    rng = np.random.default_rng(2)
    detector = warmed(rng, model())
    fired = []
    for step in range(1, 8):
        now = float(step)
        detector.ingest(parse_batch(batch(rng, 300, rotate=True), now=now), now=now)
        fired += [
            t.alert for t in detector.evaluate(now=now, now_iso=str(now)) if t.kind == "fired"
        ]
    (alert,) = fired
    assert alert.type == "MultivariateDrift" and alert.test == "pca"
    assert alert.p_value is not None and alert.p_value <= 0.01
    assert alert.threshold == 0.01
    assert {f["feature"] for f in alert.features[:2]} == {"x1", "x2"}
    shown = alert.to_dict()
    assert shown["features"][0]["feature"] in ("x1", "x2") and "x1" in shown["message"]
    assert not any(e.failing for e in detector.last_evidence if e.type == "FeatureDrift")
    status = detector.status()["multivariate"]
    assert status["method"] == "pca" and status["drift"] is True
    assert status["windowRows"] == 1000  # the window's size, not more


def test_mmd_is_chosen_by_the_spec_and_off_runs_nothing() -> None:
    rng = np.random.default_rng(3)
    detector = warmed(rng, model(multivariate={"method": "mmd", "maxRows": 300}))
    detector.ingest(parse_batch(batch(rng, 600, rotate=True), now=1.0), now=1.0)
    detector.evaluate(now=1.0, now_iso="1")
    (ev,) = [e for e in detector.last_evidence if e.type == "MultivariateDrift"]
    assert ev.test == "mmd" and ev.failing and ev.p_value is not None and ev.p_value <= 0.01
    off = warmed(rng, model(multivariate={"method": "off"}))
    off.ingest(parse_batch(batch(rng, 600, rotate=True), now=1.0), now=1.0)
    off.evaluate(now=1.0, now_iso="1")
    assert not [e for e in off.last_evidence if e.type == "MultivariateDrift"]


def test_stationary_streams_fire_no_multivariate_alert() -> None:
    failing = evaluations = fired = 0
    for seed in range(12):
        rng = np.random.default_rng(50 + seed)
        detector = warmed(rng, model())
        for step in range(1, 31):
            now = float(step)
            detector.ingest(parse_batch(batch(rng, 250), now=now), now=now)
            transitions = detector.evaluate(now=now, now_iso=str(now))
            fired += sum(
                t.kind == "fired" and t.alert.type == "MultivariateDrift" for t in transitions
            )
            (ev,) = [e for e in detector.last_evidence if e.type == "MultivariateDrift"]
            failing += ev.failing
            evaluations += 1
    print(
        f"\nmultivariate, stationary: {evaluations} evaluations, {failing} failing, {fired} fired"
    )
    assert failing <= evaluations * 0.02
    assert fired == 0


def test_the_row_window_is_a_ring_of_the_latest_rows() -> None:
    rng = np.random.default_rng(4)
    detector = warmed(rng, model())
    assert detector.reference is not None and detector.reference.multivariate is not None
    window = mvd.RowWindow(detector.reference.multivariate, size=100, duration=None)
    assert window.capacity == 100
    x = np.arange(250, dtype=np.float64)
    for lo in (0, 70, 140):  # 70 rows at a time, then 110 at once (more than the ring)
        hi = 250 if lo == 140 else lo + 70
        window.add({"x1": x[lo:hi]}, hi - lo, now=float(lo))
    rows = window.current(now=300.0)
    sample = detector.reference.multivariate.encoding.features[0]
    assert sample.name == "colour"  # sorted names: colour, x1, x2, x3, x4
    x1 = detector.reference.multivariate.encoding.features[1]
    got = rows[:, 4] * x1.scale + x1.center[0]
    assert got == pytest.approx(x[150:250])
    timed = mvd.RowWindow(detector.reference.multivariate, size=None, duration=10.0)
    timed.add({"x1": x[:5]}, 5, now=0.0)
    timed.add({"x1": x[5:8]}, 3, now=20.0)
    assert len(timed.current(now=25.0)) == 3


def test_the_sample_is_stored_with_the_reference_and_gives_the_same_evidence() -> None:
    rng = np.random.default_rng(5)
    om = model()
    detector = warmed(rng, om)
    assert detector.reference is not None
    data, _ = persist.encode_reference(detector.reference, basis="b", rebaseline=None)
    stored = persist.decode_reference(data, where="test").reference
    assert stored.multivariate is not None and detector.reference.multivariate is not None
    assert stored.multivariate.encoding == detector.reference.multivariate.encoding
    assert np.array_equal(stored.multivariate.rows, detector.reference.multivariate.rows)
    restarted = Detector(om, now=0.0)
    restarted.set_reference(stored, now=0.0)
    payload = batch(rng, 400, rotate=True)
    evidence = []
    for d in (detector, restarted):
        d.ingest(parse_batch(payload, now=1.0), now=1.0)
        d.evaluate(now=1.0, now_iso="1")
        evidence += [e for e in d.last_evidence if e.type == "MultivariateDrift"]
    first, second = evidence
    assert first == second
    assert len(data) < persist.MAX_STORED_BYTES


def test_fewer_than_two_usable_features_runs_no_check() -> None:
    typed = {"x": ("numeric", np.arange(500.0)), "empty": ("numeric", np.full(500, np.nan))}
    assert mvd.reference_sample(typed, 500, seed=1) is None
    assert mv.fit_encoding(typed).names == ("x",)


def test_a_reference_too_large_with_its_sample_is_stored_without_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    detector = warmed(np.random.default_rng(6), model())
    assert detector.reference is not None
    full, _ = persist.encode_reference(detector.reference, basis="b", rebaseline=None)
    lean = dataclasses.replace(detector.reference, multivariate=None)
    bare, _ = persist.encode_reference(lean, basis="b", rebaseline=None)
    monkeypatch.setattr(persist, "MAX_STORED_BYTES", (len(full) + len(bare)) // 2)
    encoded = persist.encode_stored(detector.reference, basis="b", rebaseline=None)
    assert encoded.left_out == ("multivariate sample",)
    stored = persist.decode_reference(encoded.data, where="t")
    assert stored.reference.multivariate is None
    assert stored.parts.left_out == ("multivariate sample",)
    # the rest is the lean reference's, byte for byte once the note is set aside
    doc = json.loads(gzip.decompress(encoded.data))
    assert doc.pop("leftOut") == ["multivariate sample"]
    lean_doc = json.loads(gzip.decompress(bare))
    assert lean_doc.pop("leftOut") == [] and doc == lean_doc


def test_stationary_categorical_rows_do_not_alarm() -> None:
    """Regression: the reference sample is float16, the current rows were float64. With
    categorical features the reconstruction errors take few values, and rounding one side
    only shifted them all: 15 of 20 stationary runs alarmed. Both sides are now in one form."""
    from mlwarden.spec import MultivariateCheck

    def cats(rng: np.random.Generator, n: int, levels: list[str], p: list[float]) -> list[str]:
        return [levels[i] for i in rng.choice(len(levels), size=n, p=p)]

    fired = 0
    for trial in range(20):
        rng = np.random.default_rng(trial)

        def side(n: int, rng: np.random.Generator = rng) -> dict[str, Any]:
            return {
                "a": ("categorical", cats(rng, n, ["x", "y", "z"], [0.5, 0.3, 0.2])),
                "b": ("categorical", cats(rng, n, ["u", "v", "w"], [0.6, 0.25, 0.15])),
            }

        sample = mvd.reference_sample(side(5000), 5000, seed=1)
        assert sample is not None
        current = side(2000)
        rows = sample.encoding.encode({k: v for k, (_, v) in current.items()}, 2000)
        result = mvd.evaluate(sample, rows, MultivariateCheck())
        assert result is not None
        fired += result.drift
    assert fired <= 1, fired  # pValue 0.01: 20 runs, expected 0.2
