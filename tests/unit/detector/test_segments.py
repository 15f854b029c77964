"""Checks per segment in the detector: a drift confined to a 5% segment is flagged and named
while the all-traffic test misses it, stationary traffic raises no segment alert, memory is
bounded whatever the distinct values, and a segment's alert survives the state round trip."""

from __future__ import annotations

from typing import Any

import numpy as np

from mlwarden.detector.alerts import Alert, AlertStateMachine
from mlwarden.detector.core import Detector
from mlwarden.detector.ingest import parse_batch
from mlwarden.spec import parse_observed_model

LEVELS = ["BR"] + [f"c{i:02d}" for i in range(19)]
SHARE = np.array([0.05] + [0.95 / 19] * 19)


def model(**extra: Any) -> Any:
    spec: dict[str, Any] = {
        "target": {"deployment": "m"},
        "features": [{"name": f"x{i}", "type": "numeric"} for i in range(4)]
        + [{"name": "country", "type": "categorical"}, {"name": "k", "type": "categorical"}],
        "reference": {"size": 4000},
        "window": {"size": 4000},
        "alerting": {"fireAfter": 2, "resolveAfter": 2},
        "segments": [{"column": "country"}, {"column": "tenant", "maxLevels": 3}],
    }
    spec.update(extra)
    return parse_observed_model(
        {
            "apiVersion": "mlwarden.io/v1alpha1",
            "kind": "ObservedModel",
            "metadata": {"name": "m"},
            "spec": spec,
        }
    )


def batch(rng: np.random.Generator, n: int, shift: float = 0.0, tenant: Any = None) -> Any:
    country = rng.choice(LEVELS, size=n, p=SHARE)
    x = rng.normal(size=(n, 4))
    x[country == "BR", 0] += shift
    k = rng.choice(["a", "b", "c"], size=n)
    tenants = tenant if tenant is not None else rng.choice(["t1", "t2", "t3", "t4"], size=n)
    payload = {
        "records": [
            {
                "features": {
                    **{f"x{i}": float(x[j, i]) for i in range(4)},
                    "country": str(country[j]),
                    "k": str(k[j]),
                    "tenant": str(tenants[j]),  # a request field, not a feature
                }
            }
            for j in range(n)
        ]
    }
    return parse_batch(payload, now=0.0)


def warmed(seed: int, **extra: Any) -> tuple[Detector, np.random.Generator]:
    rng = np.random.default_rng(seed)
    d = Detector(model(**extra), now=0.0)
    for _ in range(40):
        d.ingest(batch(rng, 100), now=0.0)
    assert not d.warming_up
    return d, rng


def alerting_on_brazil(seed: int) -> tuple[Detector, np.random.Generator]:
    """A detector whose window holds Brazil's x0 moved by 1.5 sd, evaluated twice (fireAfter 2)."""
    d, rng = warmed(seed)
    for _ in range(40):
        d.ingest(batch(rng, 100, shift=1.5), now=1.0)
    d.evaluate(now=1.0, now_iso="t1")
    d.evaluate(now=2.0, now_iso="t2")
    return d, rng


def test_a_drift_in_a_five_percent_segment_is_flagged_and_named_where_all_traffic_misses_it() -> (
    None
):
    d, rng = warmed(1)
    for _ in range(40):
        d.ingest(batch(rng, 100), now=1.0)
    d.evaluate(now=1.0, now_iso="t1")
    assert not [e for e in d.last_evidence if e.failing], "stationary: nothing fails"
    for _ in range(40):  # the whole window now: BR's x0 moved by 1.5 sd
        d.ingest(batch(rng, 100, shift=1.5), now=2.0)
    transitions = d.evaluate(now=2.0, now_iso="t2") + d.evaluate(now=3.0, now_iso="t3")
    failing = {(e.type, e.feature, e.segment) for e in d.last_evidence if e.failing}
    assert failing == {("FeatureDrift", "x0", ("country", "BR"))}
    everywhere = [
        e
        for e in d.last_evidence
        if e.feature == "x0" and e.segment is None and e.type == "FeatureDrift"
    ]
    assert everywhere and not everywhere[0].failing  # D ~ 0.05 x 0.55: below the floor
    assert [t.kind for t in transitions] == ["fired"]
    shape = transitions[0].alert.to_dict()
    assert shape["segment"] == {"country": "BR"} and shape["feature"] == "x0"
    assert "segment country=BR: KS adjusted p=" in shape["message"]
    assert [a.to_dict() for a in d.alerts.active] == [shape]
    # status: the segments, the signal naming the segment; the request field is no schema error
    status = d.status()
    country = status["segments"]["columns"][0]
    assert country["column"] == "country" and len(country["segments"]) == 21
    assert {s["level"] for s in country["segments"]} == {*LEVELS, "other"}
    # a segment's window is the all-traffic window's records of that segment, chunk for chunk
    for column in status["segments"]["columns"]:
        assert sum(s["windowRecords"] for s in column["segments"]) == status["window"]["records"]
    tenant = status["segments"]["columns"][1]
    assert [s["level"] for s in tenant["segments"]][-1] == "other"
    assert len(tenant["segments"]) == 4
    assert not any(e.test == "schema" and e.failing for e in d.last_evidence)
    assert any(s.get("segment") == {"country": "BR"} for s in d.signals())


def test_stationary_traffic_raises_no_segment_alert() -> None:
    """25 segments x 6 features, 3 streams of 20 evaluations each (windows overlapping by
    75%), at the defaults (pValue 0.01, Bonferroni over the family, the effect floors)."""
    findings = evaluations = 0
    for seed in range(3):
        d, rng = warmed(100 + seed)
        for i in range(20):
            for _ in range(10):
                d.ingest(batch(rng, 100), now=float(i))
            transitions = d.evaluate(now=float(i), now_iso=str(i))
            assert not [t for t in transitions if t.alert.segment is not None]
            findings += any(e.failing and e.segment is not None for e in d.last_evidence)
            evaluations += 1
    print(f"segment findings in {findings} of {evaluations} stationary evaluations")
    assert findings <= 0.02 * evaluations + 1


def test_memory_is_bounded_whatever_the_number_of_distinct_values() -> None:
    d, rng = warmed(3)
    for i in range(30):  # every record a new tenant: a user id
        ids = [f"user-{i}-{j}" for j in range(100)]
        d.ingest(batch(rng, 100, tenant=ids), now=1.0)
    assert d.segments is not None
    tenant = d.segments.columns[1]
    assert len(tenant.live.counts) <= tenant.live.capacity == 64
    assert len(tenant.reference.segments) == 4  # the reference's 3 levels and other
    other = tenant.view(3)
    assert other.n_records >= 3000  # every new id falls in other
    d.evaluate(now=2.0, now_iso="t")


def test_a_segment_alert_is_tracked_apart_and_survives_the_state_round_trip() -> None:
    d, _ = alerting_on_brazil(4)
    (alert,) = d.alerts.active
    assert alert.segment == ("country", "BR")
    assert Alert.from_dict(alert.to_dict()) == alert
    restored = AlertStateMachine(2, 2)
    restored.restore(d.alerts.state())
    assert restored.active == [alert]
    assert restored.onsets() == d.alerts.onsets()
    keys = [(e["type"], e["feature"], e["test"]) for e in d.alerts.state()]
    assert ("FeatureDrift", "x0", "ks@country=BR") in keys


def test_a_reference_without_rows_judges_no_segment_says_why_and_resolves_its_alerts() -> None:
    d, rng = alerting_on_brazil(5)
    assert [a.segment for a in d.alerts.active] == [("country", "BR")]
    assert d.reference is not None
    d.set_reference(d.reference, now=3.0)  # as a reference reloaded from the store: no rows
    for _ in range(40):
        d.ingest(batch(rng, 100, shift=1.5), now=3.0)
    transitions = d.evaluate(now=4.0, now_iso="t4") + d.evaluate(now=5.0, now_iso="t5")
    assert [(t.kind, t.alert.segment) for t in transitions] == [("resolved", ("country", "BR"))]
    assert not [e for e in d.last_evidence if e.segment is not None and e.failing]
    (note,) = [e for e in d.last_evidence if e.segment is not None]
    assert "not judged: the reference was reloaded from the store" in note.message
    assert "reloaded from the store" in d.status()["segments"]["unavailable"]


def test_segment_windows_keep_in_step_when_the_first_batch_seals_a_chunk() -> None:
    d, rng = warmed(6)
    d.ingest(batch(rng, 500), now=1.0)  # more than a chunk (400): sealed at once
    for _ in range(60):
        d.ingest(batch(rng, 100), now=1.0)
        status = d.status()
        for column in status["segments"]["columns"]:
            assert (
                sum(s["windowRecords"] for s in column["segments"]) == status["window"]["records"]
            )
