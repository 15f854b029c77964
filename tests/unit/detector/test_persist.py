"""The stored reference: an exact round trip, a size limit, and when a restart may reuse it."""

from __future__ import annotations

import gzip
import json
from typing import Any

import numpy as np
import pytest

from mlwarden.detector.core import Detector
from mlwarden.detector.ingest import parse_batch
from mlwarden.detector.persist import (
    MAX_STORED_BYTES,
    StoredReferenceError,
    alerts_to_restore,
    decode_alert_state,
    decode_reference,
    encode_alert_state,
    encode_reference,
    from_text,
    reference_basis,
    reuse_decision,
    to_text,
)
from mlwarden.spec import REBASELINE_ANNOTATION, parse_observed_model
from mlwarden.stats.sketch import NumericSketch


def model(rebaseline: str | None = None, **spec: Any) -> Any:
    base: dict[str, Any] = {
        "target": {"deployment": "m"},
        "features": [
            {"name": "x", "type": "numeric"},
            {"name": "z", "type": "numeric"},
            {"name": "k", "type": "categorical"},
        ],
        "prediction": {"name": "p", "type": "numeric"},
        "reference": {"size": 500},
        "window": {"size": 400},
        "detectors": {"drift": {"test": "auto"}, "predictionDrift": {"test": "wasserstein"}},
        "alerting": {"fireAfter": 1, "resolveAfter": 1},
    }
    base.update(spec)
    meta: dict[str, Any] = {"name": "m", "namespace": "ns"}
    if rebaseline is not None:
        meta["annotations"] = {REBASELINE_ANNOTATION: rebaseline}
    return parse_observed_model(
        {
            "apiVersion": "mlwarden.io/v1alpha1",
            "kind": "ObservedModel",
            "metadata": meta,
            "spec": base,
        }
    )


def batch(n: int, seed: int, shift: float = 0.0) -> Any:
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n):
        x = float(rng.normal(shift))
        records.append(
            {
                "id": f"{seed}-{i}",
                "features": {
                    # a heavy-tailed column with NaN, inf and a big offset (sums must survive)
                    "x": x if i % 50 else None,
                    "z": float("inf") if i % 97 == 0 else 1e9 + float(rng.standard_t(2)),
                    "k": str(rng.choice(["a", "b", "c", "ü"], p=[0.5, 0.3, 0.15, 0.05])),
                },
                "outputs": {"p": float(rng.uniform()) + shift / 10},
            }
        )
    return parse_batch({"records": records}, now=1000.0)


def warmed(m: Any) -> Detector:
    d = Detector(m, now=1000.0)
    d.ingest(batch(500, seed=1), now=1000.0)
    assert d.reference is not None
    return d


def evidence(d: Detector) -> list[Any]:
    for seed, shift in ((2, 0.0), (3, 0.4)):
        d.ingest(batch(200, seed=seed, shift=shift), now=1001.0)
    d.evaluate(now=1002.0, now_iso="t")
    return d.last_evidence


def test_a_reloaded_reference_gives_identical_evidence() -> None:
    m = model()
    original = warmed(m)
    data, digest = encode_reference(
        original.reference, basis=reference_basis(m.spec), rebaseline=None
    )
    stored = decode_reference(data, where="test")
    assert stored.digest == digest and stored.rebaseline is None
    assert stored.reference.id == original.reference.id
    assert stored.reference.since == original.reference.since
    reloaded = Detector(m, now=1000.0)
    reloaded.set_reference(stored.reference, now=1000.0)

    expected, got = evidence(original), evidence(reloaded)
    assert len(expected) > 10
    assert {e.type for e in expected} >= {"FeatureDrift", "PredictionDrift", "DataQuality"}
    assert got == expected  # statistics, p-values, messages: every field equal
    # and the drift the shifted window carries is found by both
    assert any(e.failing and e.feature == "x" for e in got)
    # encoding is deterministic: the same reference, the same bytes and digest
    assert encode_reference(stored.reference, basis=reference_basis(m.spec), rebaseline=None) == (
        data,
        digest,
    )


def test_the_stored_form_is_a_summary_not_rows() -> None:
    m = model()
    ref = warmed(m).reference
    assert ref is not None
    data, _ = encode_reference(ref, basis="b", rebaseline="t1")
    doc = json.loads(gzip.decompress(data))
    assert doc["records"] == 500 and doc["rebaseline"] == "t1"
    assert set(doc["sketches"]) == {"x", "z", "k", "p"}
    assert doc["sketches"]["k"]["counts"].keys() == {"a", "b", "c", "ü"}
    assert doc["sketches"]["z"]["infinite"] == 6
    assert len(doc["sketches"]["x"]["counts"]) < 500  # cells, not values
    assert from_text(to_text(data), where="t") == data


def test_a_reference_stored_with_sums_before_sketches_kept_means_still_loads() -> None:
    # Stored before this version: each numeric sketch held its cells' sums, the sum of its
    # values and the sum of their squares about the origin, where it now holds means.
    ref = warmed(model()).reference
    assert ref is not None
    data, _ = encode_reference(ref, basis="b", rebaseline=None)
    doc = json.loads(gzip.decompress(data))
    for name, s in doc["sketches"].items():
        if s["kind"] != "numeric":
            continue
        sketch = ref.sketches[name]
        s["sums"] = (sketch.means * sketch.counts).tolist()
        s["sum"] = sketch.mean * sketch.n
        s["sumsq"] = sketch.rms**2 * sketch.n
        s["min"], s["max"] = sketch.min, sketch.max
        del s["means"], s["rmsAboutOrigin"]
    old = decode_reference(gzip.compress(json.dumps(doc).encode()), where="t").reference
    numeric = [n for n, s in ref.sketches.items() if isinstance(s, NumericSketch)]
    assert sorted(numeric) == ["p", "x", "z"]
    for name in numeric:
        a, b = ref.sketches[name], old.sketches[name]
        assert b.counts.tolist() == a.counts.tolist() and b.n == a.n
        np.testing.assert_allclose(b.means, a.means, rtol=1e-12, atol=0)
        assert b.mean == pytest.approx(a.mean, rel=1e-12)
        assert b.std == pytest.approx(a.std, rel=1e-9)


def test_too_large_a_summary_is_refused_naming_the_columns() -> None:
    m = model(
        features=[{"name": "user", "type": "categorical"}],
        prediction=None,
        reference={"size": 1000},
    )
    d = Detector(m, now=0.0)
    rng = np.random.default_rng(0)
    # 1000 distinct random 2 KB categories: incompressible, far beyond a ConfigMap
    values = [rng.bytes(1500).hex() for _ in range(1000)]
    d.ingest(
        parse_batch({"records": [{"features": {"user": v}} for v in values]}, now=0.0), now=0.0
    )
    assert d.reference is not None
    with pytest.raises(StoredReferenceError, match=r"over the 700 KiB.*largest columns: user"):
        encode_reference(d.reference, basis="b", rebaseline=None)
    assert MAX_STORED_BYTES < 1 << 20


# Fixed gzip mtimes: the test ids must be the same in every pytest-xdist worker.
@pytest.mark.parametrize(
    "data, message",
    [
        (b"not gzip", "not a stored reference"),
        (gzip.compress(b'{"format": "other"}', mtime=0), "format 'other'"),
        (gzip.compress(b'{"format": "mlwarden.io/reference/v1"}', mtime=0), "KeyError"),
    ],
)
def test_an_unreadable_stored_reference_is_a_clear_error(data: bytes, message: str) -> None:
    with pytest.raises(StoredReferenceError, match=message):
        decode_reference(data, where="ConfigMap ns/m-reference")


def test_reuse_only_without_an_explicit_rebaseline() -> None:
    m = model()
    ref = warmed(m).reference
    assert ref is not None
    basis = reference_basis(m.spec)
    stored = decode_reference(encode_reference(ref, basis=basis, rebaseline="t1")[0], where="x")
    assert reuse_decision(None, basis=basis, rebaseline=None).reuse is False
    assert reuse_decision(stored, basis=basis, rebaseline="t1").reuse is True
    new_token = reuse_decision(stored, basis=basis, rebaseline="t2")
    assert not new_token.reuse and "rebaseline requested" in new_token.reason
    removed = reuse_decision(stored, basis=basis, rebaseline=None)
    assert not removed.reuse
    # spec.reference / features / prediction shape the reference; thresholds do not
    assert reference_basis(model(reference={"size": 600}).spec) != basis
    assert reference_basis(model(features=[{"name": "x", "type": "numeric"}]).spec) != basis
    assert reference_basis(model(detectors={"drift": {"pValue": 0.001}}).spec) == basis
    spec_change = reuse_decision(stored, basis="other", rebaseline="t1")
    assert not spec_change.reuse and "spec.reference" in spec_change.reason


def test_the_rebaseline_annotation_is_read_from_the_manifest() -> None:
    assert model().rebaseline is None
    assert model(rebaseline="2026-11-26T17:00Z").rebaseline == "2026-11-26T17:00Z"


# --------------------------------------------------------------------------- alert state


def _state() -> list[dict[str, Any]]:
    from mlwarden.detector.alerts import AlertStateMachine, Evidence

    m = AlertStateMachine(fire_after=1, resolve_after=1)
    for type_, feature, test in (("FeatureDrift", "b", "ks"), ("Latency", None, "p99")):
        m.observe(
            [Evidence(type_, test, 0.5, 0.1, failing=True, feature=feature)],
            now="2026-11-26T15:02:11.204Z",
            reference="warmup@aaa",
        )
    return m.state()


def test_the_alert_state_round_trips() -> None:
    data = encode_alert_state(_state(), reference="warmup@aaa", saved_at="2026-11-26T15:03:00Z")
    stored = decode_alert_state(data, where="ConfigMap test/m-reference (alerts)")
    assert (stored.reference, stored.saved_at) == ("warmup@aaa", "2026-11-26T15:03:00Z")
    assert stored.state == _state()
    assert json.loads(data)["format"] == "mlwarden.io/alerts/v1"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"{", "not a stored alert state"),
        (b'{"format": "mlwarden.io/reference/v1"}', "expected 'mlwarden.io/alerts/v1'"),
        (b'{"format": "mlwarden.io/alerts/v1", "tracks": {}}', "tracks: expected a list"),
    ],
)
def test_an_unreadable_alert_state_is_a_clear_error(data: bytes, message: str) -> None:
    with pytest.raises(StoredReferenceError, match="^cm alerts: .*" + message.replace("(", r"\(")):
        decode_alert_state(data, where="cm alerts")


def test_alerts_judged_against_another_reference_end_and_slo_alerts_stay() -> None:
    """Same reference: everything comes back. A rebaseline (or a restart during the warm-up):
    only latency and error checks, which need no reference."""
    stored = decode_alert_state(
        encode_alert_state(_state(), reference="warmup@aaa", saved_at="t"), where="x"
    )
    tracks, reason = alerts_to_restore(stored, reference="warmup@aaa")
    assert [t["type"] for t in tracks] == ["FeatureDrift", "Latency"]
    assert reason == "restored the alert state stored at t"
    for reference in ("warmup@bbb", None):
        tracks, reason = alerts_to_restore(stored, reference=reference)
        assert [t["type"] for t in tracks] == ["Latency"]
        assert "kept 1 latency/error check(s), ended 1 judged against that reference" in reason
