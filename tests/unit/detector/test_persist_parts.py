"""The segments' and embedding features' references stored with the reference: a restarted
detector judges them against the same references and reaches the same evidence; an older
store still loads; over the size budget parts are left out, least valuable first, and said;
an embedding reference missing from the store is never rebuilt from the traffic after it."""

from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import test_embedding as emb

from mlwarden.detector import persist
from mlwarden.detector.core import Detector
from mlwarden.detector.ingest import parse_batch
from mlwarden.detector.persist import StoredReference, decode_reference, encode_stored
from mlwarden.stats.segments import segment_label


def _sibling(name: str) -> Any:
    """A test module beside this one (`import test_segments` finds the integration test's)."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


seg = _sibling("test_segments")  # its model (segments by country and tenant) and traffic


def store(d: Detector) -> persist.EncodedReference:
    assert d.reference is not None
    return encode_stored(
        d.reference,
        basis="b",
        rebaseline=None,
        segments=d.segments.references() if d.segments is not None else (),
        embeddings=d.embeddings.reference_states() if d.embeddings is not None else None,
        warming=d.embeddings.warming() if d.embeddings is not None else (),
    )


def reload(model: Any, data: bytes, *, now: float = 0.0) -> tuple[Detector, StoredReference]:
    """A restarted detector: the stored reference and its parts, as the service restores them."""
    stored = decode_reference(data, where="test")
    d = Detector(model, now=now)
    d.set_reference(stored.reference, now=now)
    p = stored.parts
    d.restore_parts(
        segments=p.segments, embeddings=p.embeddings, warming=p.warming, left_out=p.left_out_reason
    )
    return d, stored


def old_format(data: bytes) -> bytes:
    """The same reference as a detector without stored segments and embeddings wrote it."""
    doc = json.loads(gzip.decompress(data))
    for key in ("segments", "embeddings", "embeddingsWarming", "leftOut"):
        del doc[key]
    return gzip.compress(json.dumps(doc).encode(), mtime=0)


# --------------------------------------------------------------------------- segments


def test_segments_reloaded_from_the_store_give_identical_evidence() -> None:
    original, rng = seg.warmed(11)
    encoded = store(original)
    assert encoded.left_out == ()
    reloaded, stored = reload(seg.model(), encoded.data)
    assert stored.digest == encoded.digest
    assert reloaded.segments is not None and reloaded.segments.unavailable is None
    # the same traffic (Brazil's x0 moved by 1.5 sd) into both, evaluated twice
    batches = [seg.batch(rng, 100, shift=1.5) for _ in range(40)]
    evidence = []
    for d in (original, reloaded):
        for b in batches:
            d.ingest(b, now=1.0)
        d.evaluate(now=1.0, now_iso="t1")
        d.evaluate(now=2.0, now_iso="t2")
        evidence.append(d.last_evidence)
    expected, got = evidence
    segmented = [e for e in expected if e.segment is not None]
    assert len(segmented) > 50
    assert got == expected  # every field, the segments' included
    assert [a.segment for a in reloaded.alerts.active] == [("country", "BR")]
    assert reloaded.status()["segments"] == original.status()["segments"]
    # stored again from the reloaded detector: the same bytes
    assert store(reloaded).data == encoded.data


def test_segments_from_an_older_store_are_not_judged_and_say_why() -> None:
    original, rng = seg.alerting_on_brazil(12)
    reloaded, stored = reload(seg.model(), old_format(store(original).data))
    assert stored.parts.segments is None and stored.parts.embeddings is None
    reloaded.alerts.restore(original.alerts.state())
    for _ in range(40):
        reloaded.ingest(seg.batch(rng, 100, shift=1.5), now=3.0)
    transitions = reloaded.evaluate(now=4.0, now_iso="t4") + reloaded.evaluate(
        now=5.0, now_iso="t5"
    )
    # as before segments were stored: not judged, its alert resolves with a "not judged" note
    assert [(t.kind, t.alert.segment) for t in transitions] == [("resolved", ("country", "BR"))]
    unavailable = reloaded.status()["segments"]["unavailable"]
    assert "store written before segment references were stored" in unavailable


def test_over_the_budget_the_least_frequent_segments_are_left_out_and_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    original, rng = seg.alerting_on_brazil(13)
    full = store(original)
    assert original.segments is not None
    n = {
        (r.column, level): r.summaries[level].n
        for r in original.segments.references()
        for level in r.segments
    }
    monkeypatch.setattr(persist, "MAX_STORED_BYTES", len(full.data) - 20_000)
    lean = store(original)
    assert len(lean.data) <= persist.MAX_STORED_BYTES
    assert lean.left_out and all(x.startswith("segment ") for x in lean.left_out)
    left = {tuple(x.removeprefix("segment ").split("=", 1)) for x in lean.left_out}
    kept = n.keys() - left
    # the least frequent first, and no more than needed
    assert max(n[k] for k in left) <= min(n[k] for k in kept)
    assert len(store(original).left_out) == len(left)  # deterministic
    reloaded, stored = reload(seg.model(), lean.data)
    assert stored.parts.left_out == lean.left_out
    status = reloaded.status()["segments"]
    for column in status["columns"]:
        for s in column["segments"]:
            stored_n = s["referenceRecords"]
            key = (column["column"], s["level"])
            assert stored_n == (None if key in left else n[key])
    first = segment_label(*sorted(left)[0])
    assert (
        first in status["unavailable"]
        and "left out of the stored reference for size" in (status["unavailable"])
    )
    for _ in range(40):
        reloaded.ingest(seg.batch(rng, 100), now=3.0)
    reloaded.evaluate(now=4.0, now_iso="t4")
    judged = {e.segment for e in reloaded.last_evidence if e.segment is not None}
    assert judged and not judged & left


# --------------------------------------------------------------------------- embeddings


def warmed_embedding(seed: int = 21) -> tuple[Detector, np.random.Generator]:
    d = Detector(emb.model(), now=0.0)
    rng = np.random.default_rng(seed)
    d.ingest(emb.batch(emb.topics(rng, 300, emb.EVEN), 0), now=0.0)
    assert not d.warming_up and d.embeddings is not None
    assert d.embeddings.columns["emb"].ready
    return d, rng


def test_an_embedding_reference_reloaded_from_the_store_gives_identical_evidence() -> None:
    original, rng = warmed_embedding()
    encoded = store(original)
    doc = json.loads(gzip.decompress(encoded.data))
    assert set(doc["embeddings"]) == {"emb"} and doc["embeddings"]["emb"]["shape"] == [300, 32]
    reloaded, _ = reload(emb.model(), encoded.data)
    assert reloaded.status()["embeddings"] == original.status()["embeddings"]
    for step, weights in enumerate((emb.EVEN, emb.EVEN, [0.7, 0.1, 0.1, 0.1]), start=1):
        b = emb.batch(emb.topics(rng, 200, weights), step)
        found = []
        for d in (original, reloaded):
            d.ingest(b, now=float(step))
            d.evaluate(now=float(step), now_iso=f"t{step}")
            found.append([e for e in d.last_evidence if e.feature in ("emb", "emb.topic")])
        expected, got = found
        assert len(expected) == 2 and got == expected
    assert any(e.failing and e.test == "mmd" for e in got)  # the shifted mix is found by both
    assert store(reloaded).data == encoded.data


def test_a_missing_embedding_reference_is_not_rebuilt_from_new_traffic() -> None:
    original, rng = warmed_embedding(22)
    # an alert on the embedding, then a restart on a store without its reference
    for step in range(1, 4):
        original.ingest(emb.batch(emb.topics(rng, 400, [0.7, 0.1, 0.1, 0.1]), step), now=1.0)
        original.evaluate(now=float(step), now_iso=f"t{step}")
    assert ("FeatureDrift", "emb") in {(a.type, a.feature) for a in original.alerts.active}
    reloaded, _ = reload(emb.model(), old_format(store(original).data))
    reloaded.alerts.restore(original.alerts.state())
    # the drifted traffic after the restart is not taken as the embedding's reference
    notes = []
    for step in range(4, 8):
        reloaded.ingest(emb.batch(emb.topics(rng, 400, [0.7, 0.1, 0.1, 0.1]), step), now=4.0)
        reloaded.evaluate(now=float(step), now_iso=f"t{step}")
        notes += [e for e in reloaded.last_evidence if e.feature in ("emb", "emb.topic")]
    status = reloaded.status()["embeddings"]["emb"]
    assert status["referenceVectors"] == 0 and status["topics"] == 0
    assert status["unavailable"] == (
        "not judged: reference not stored (the store was written before embedding references "
        "were stored); rebaseline to rebuild it"
    )
    assert notes and not any(e.failing for e in notes)
    assert all("not judged: reference not stored" in e.message for e in notes)
    # its alerts resolved (resolveAfter 1 in test_core's model); the tabular ones are judged
    assert "emb" not in {a.feature for a in reloaded.alerts.active}


def test_a_first_start_and_a_reference_warming_when_stored_warm_up_from_traffic() -> None:
    d = Detector(emb.model(), now=0.0)
    rng = np.random.default_rng(23)
    # the tabular reference completes first: records without vectors
    plain = [{"features": {"x": float(v)}} for v in rng.normal(size=300)]
    d.ingest(parse_batch({"records": plain}, now=0.0), now=0.0)
    assert not d.warming_up and d.embeddings is not None
    assert d.embeddings.warming() == ["emb"]
    encoded = store(d)
    reloaded, stored = reload(emb.model(), encoded.data)
    assert stored.parts.warming == {"emb"} and stored.parts.embeddings == {}
    reloaded.ingest(emb.batch(emb.topics(rng, 300, emb.EVEN), 1), now=1.0)
    status = reloaded.status()["embeddings"]["emb"]
    assert "unavailable" not in status and status["topics"] == 8


def test_over_the_budget_embeddings_go_after_segments_and_before_the_multivariate_sample(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = emb.model(
        features=[
            {"name": "x", "type": "numeric"},
            {"name": "y", "type": "numeric"},
            {"name": "k", "type": "categorical"},
            {"name": "emb", "type": "embedding", "dimensions": emb.DIM},
        ],
        segments=[{"column": "k"}],
    )
    rng = np.random.default_rng(24)
    vectors = emb.topics(rng, 300, emb.EVEN)
    records = [
        {
            "features": {
                "x": float(rng.normal()),
                "y": float(rng.normal()),
                "k": str(rng.choice(["a", "b", "c"])),
                "emb": v.tolist(),
            }
        }
        for v in vectors
    ]
    d = Detector(model, now=0.0)
    d.ingest(parse_batch({"records": records}, now=0.0), now=0.0)
    assert d.reference is not None and d.reference.multivariate is not None
    full = store(d)
    assert full.left_out == ()  # nothing left out at the real budget
    # budgets that leave out segments; then the embedding too; then the multivariate sample
    without_segments = encode_stored(
        d.reference,
        basis="b",
        rebaseline=None,
        embeddings=d.embeddings.reference_states() if d.embeddings else None,
    )
    without_embeddings = encode_stored(d.reference, basis="b", rebaseline=None)
    assert len(full.data) > len(without_segments.data) > len(without_embeddings.data)
    # (+300: what a stored form without them still says of them: their levels, `leftOut`)
    monkeypatch.setattr(persist, "MAX_STORED_BYTES", len(without_segments.data) + 300)
    assert {x.split(" ")[0] for x in store(d).left_out} == {"segment"}
    monkeypatch.setattr(persist, "MAX_STORED_BYTES", len(without_embeddings.data) + 300)
    out = store(d).left_out
    assert out[-1] == "embedding emb" and "multivariate sample" not in out
    monkeypatch.setattr(persist, "MAX_STORED_BYTES", len(without_embeddings.data) - 1)
    out = store(d).left_out
    assert out[-2:] == ("embedding emb", "multivariate sample")
    reloaded, stored = reload(model, store(d).data)
    assert stored.reference.multivariate is None
    assert reloaded.status()["embeddings"]["emb"]["unavailable"] == (
        "not judged: reference not stored (left out of the stored reference for size (with it "
        f"the reference is over the {persist.MAX_STORED_BYTES >> 10} KiB a ConfigMap can "
        "hold)); rebaseline to rebuild it"
    )
    assert (
        "left out of the stored reference for size"
        in (reloaded.status()["segments"]["unavailable"])
    )


def test_a_malformed_stored_part_is_a_clear_error() -> None:
    original, _ = warmed_embedding(25)
    doc = json.loads(gzip.decompress(store(original).data))
    doc["embeddings"]["emb"]["shape"] = [300, 31]
    with pytest.raises(persist.StoredReferenceError, match=r"^cm: .*ValueError"):
        decode_reference(gzip.compress(json.dumps(doc).encode()), where="cm")
