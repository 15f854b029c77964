"""The detector's sequential drift decisions: alerts fire as records arrive, at ingest, with the
effect floors; they resolve on clear looks; `falseAlarmsPer: 0` keeps the periodic rule."""

from __future__ import annotations

from typing import Any

import numpy as np

from mlwarden.detector.core import Detector
from mlwarden.detector.ingest import parse_batch
from mlwarden.spec import parse_observed_model


def model(alerting: dict[str, Any] | None = None, **spec: Any) -> Any:
    base: dict[str, Any] = {
        "target": {"deployment": "m"},
        "features": [{"name": "x", "type": "numeric"}, {"name": "k", "type": "categorical"}],
    }
    if alerting is not None:
        base["alerting"] = alerting
    base.update(spec)
    return parse_observed_model({"apiVersion": "mlwarden.io/v1alpha1", "kind": "ObservedModel",
                                 "metadata": {"name": "m", "namespace": "ml"},
                                 "spec": base})  # fmt: skip


def batch(rng: np.random.Generator, n: int, *, shift: float = 0.0, p_b: float = 0.3) -> Any:
    xs = rng.normal(shift, 1.0, n)
    ks = np.where(rng.random(n) < p_b, "b", "a")
    records = [{"features": {"x": float(x), "k": str(k)}} for x, k in zip(xs, ks, strict=True)]
    return records


def feed(d: Detector, records: list[Any], t: float) -> list[Any]:
    d.ingest(parse_batch({"records": records}, now=t), now=t)
    return d.take_transitions()


def warmed(m: Any, seed: int = 0) -> tuple[Detector, np.random.Generator]:
    rng = np.random.default_rng(seed)
    d = Detector(m, now=0.0)
    for _ in range(10):
        feed(d, batch(rng, 100), 0.0)
    assert not d.warming_up
    return d, rng


def test_defaults_scan_every_drift_column() -> None:
    d, _ = warmed(model())
    assert d.scan is not None
    assert sorted(c.name for c in d.scan.columns) == ["k", "x"]
    assert d.scan.false_alarms_per == 1_000_000
    assert d.scan.sizes == [32, 64, 128, 256, 512, 1000]  # up to the window (1,000 records)
    status = d.status()["sequential"]
    assert status["falseAlarmsPer"] == 1_000_000 and status["windows"] == d.scan.sizes


def test_an_abrupt_shift_fires_at_ingest_within_a_few_hundred_records() -> None:
    d, rng = warmed(model())
    t = 1.0
    for _ in range(100):  # 5,000 stationary records: nothing
        assert feed(d, batch(rng, 50), t) == []
        t += 0.5
    fired_after = None
    for i in range(40):
        transitions = feed(d, batch(rng, 25, shift=1.0), t)
        t += 0.25
        if transitions:
            [tr] = transitions
            assert tr.kind == "fired" and tr.alert.type == "FeatureDrift"
            assert tr.alert.feature == "x" and tr.alert.test == "ks"
            assert "sequential" in tr.alert.message and "D=" in tr.alert.message
            fired_after = 25 * (i + 1)
            break
    assert fired_after is not None and fired_after <= 300
    assert [a.feature for a in d.alerts.active] == ["x"]


def test_a_binary_rate_030_to_045_fires_and_resolves_when_it_returns() -> None:
    d, rng = warmed(model(alerting={"resolveAfter": 2}))
    t = 1.0
    fired = False
    for _ in range(200):
        fired |= any(tr.kind == "fired" for tr in feed(d, batch(rng, 25, p_b=0.45), t))
        t += 0.25
    assert fired and [a.feature for a in d.alerts.active] == ["k"]
    resolved = False
    for _ in range(400):  # back to 0.3: the largest window clears, looks resolve it
        resolved |= any(tr.kind == "resolved" for tr in feed(d, batch(rng, 25), t))
        t += 0.25
    assert resolved and d.alerts.active == []


def test_a_shift_below_the_floor_never_fires() -> None:
    # +0.05 sd: KS D about 0.02, below the floor 0.05, whatever the evidence.
    d, rng = warmed(model(), seed=3)
    t = 1.0
    for _ in range(400):
        assert feed(d, batch(rng, 50, shift=0.05), t) == []
        t += 0.5


def test_the_periodic_evaluation_does_not_feed_scanned_drift_alerts() -> None:
    d, rng = warmed(model(alerting={"fireAfter": 1}))
    for _ in range(20):
        feed(d, batch(rng, 50, shift=2.0), 1.0)
    d.take_transitions()
    active = [a for a in d.alerts.active if a.feature == "x"]
    assert active  # fired by the scan
    transitions = d.evaluate(now=2.0, now_iso="t2")
    assert not [tr for tr in transitions if tr.alert.type == "FeatureDrift"]
    assert any(e.feature == "x" and e.failing for e in d.last_evidence)  # still in status


def test_false_alarms_per_zero_keeps_the_periodic_rule() -> None:
    d = Detector(model(alerting={"falseAlarmsPer": 0, "fireAfter": 2}), now=0.0)
    rng = np.random.default_rng(1)
    for _ in range(10):
        feed(d, batch(rng, 100), 0.0)
    assert d.scan is None and d.status()["sequential"] is None
    for _ in range(20):
        assert feed(d, batch(rng, 50, shift=2.0), 1.0) == []  # nothing at ingest
    assert d.evaluate(now=2.0, now_iso="t2") == []  # fireAfter 2: one failing evaluation
    fired = d.evaluate(now=3.0, now_iso="t3")
    drift = [(tr.kind, tr.alert.feature) for tr in fired if tr.alert.type == "FeatureDrift"]
    assert drift == [("fired", "x")]  # (the multivariate check sees the shift too)


def test_only_auto_ks_and_chisquare_columns_are_scanned() -> None:
    d, _ = warmed(model(detectors={"drift": {"test": "psi"}}))
    assert d.scan is None
