"""Embedding features in the detector: sampled apart from the columns, tested with MMD and the
topic mix, raised as FeatureDrift naming the feature, quiet on stationary vectors."""

from __future__ import annotations

from typing import Any

import numpy as np
from test_core import model as core_model

from mlwarden.detector.core import Detector
from mlwarden.detector.embedding import CAPACITY, MIN_VECTORS, TOPIC_SUFFIX, EmbeddingMonitor
from mlwarden.detector.ingest import parse_batch

DIM = 48


def model(**spec: Any) -> Any:
    """test_core's model with a numeric feature and an embedding."""
    features = [
        {"name": "x", "type": "numeric"},
        {"name": "emb", "type": "embedding", "dimensions": DIM},
    ]
    base = {"features": features, "reference": {"size": 300}, "window": {"size": 300}}
    return core_model(**(base | spec))


def topics(rng: np.random.Generator, n: int, weights: list[float]) -> np.ndarray:
    """Vectors around four well-separated topic centres, mixed by `weights`."""
    centres = np.random.default_rng(99).normal(0, 4, size=(4, DIM))
    which = rng.choice(4, size=n, p=weights)
    out: np.ndarray = centres[which] + rng.normal(size=(n, DIM))
    return out


def batch(vectors: np.ndarray, seed: int, *, where: str = "outputs", **extra: Any) -> Any:
    rng = np.random.default_rng(seed)
    records = []
    for i, v in enumerate(vectors):
        rec: dict[str, Any] = {"id": f"r{seed}-{i}", "features": {"x": float(rng.normal())}}
        rec.setdefault(where, {})["emb"] = v.tolist()
        rec["features"].update(extra)
        records.append(rec)
    return parse_batch({"records": records}, now=0.0)


EVEN = [0.25, 0.25, 0.25, 0.25]


def test_stationary_vectors_raise_nothing_and_a_topic_shift_is_flagged() -> None:
    d = Detector(model(), now=0.0)
    rng = np.random.default_rng(1)
    d.ingest(batch(topics(rng, 300, EVEN), 0), now=0.0)
    assert not d.warming_up
    status = d.status()["embeddings"]["emb"]
    assert status["referenceVectors"] == 300 and status["topics"] == 8
    assert "emb" not in d.columns  # no sketch, no column per dimension
    for step in range(1, 4):
        d.ingest(batch(topics(rng, 200, EVEN), step), now=float(step))
        d.evaluate(now=float(step), now_iso="t")
        emb = [e for e in d.last_evidence if e.feature in ("emb", "emb" + TOPIC_SUFFIX)]
        assert {(e.feature, e.test) for e in emb} == {("emb", "mmd"), ("emb.topic", "chisquare")}
        assert not any(e.failing for e in emb), [e.message for e in emb]
    assert not d.alerts.active
    # The same vectors, in another mix of topics: the embedding drifts.
    d.ingest(batch(topics(rng, 400, [0.7, 0.1, 0.1, 0.1]), 9), now=9.0)
    transitions = d.evaluate(now=9.0, now_iso="t9")
    fired = {(a.type, a.feature, a.test) for a in d.alerts.active}
    assert ("FeatureDrift", "emb", "mmd") in fired
    assert ("FeatureDrift", "emb.topic", "chisquare") in fired
    assert transitions
    mmd = next(e for e in d.last_evidence if e.test == "mmd")
    assert mmd.p_value is not None and mmd.p_value <= 0.01 and mmd.statistic >= 0.005
    # Unexpected-field accounting does not count the declared embedding.
    assert d.window is not None and "emb" not in d.window.view().unexpected


def test_vectors_as_features_and_malformed_ones_are_type_errors() -> None:
    d = Detector(model(), now=0.0)
    rng = np.random.default_rng(2)
    d.ingest(batch(topics(rng, 100, EVEN), 0, where="features"), now=0.0)
    bad = parse_batch(
        {
            "records": [
                {"features": {"x": 1.0, "emb": [1.0] * (DIM - 1)}},  # wrong length
                {"features": {"x": 1.0, "emb": [1.0] * (DIM - 1) + ["a"]}},  # a string
                {"features": {"x": 1.0, "emb": [1.0] * (DIM - 1) + [None]}},  # non-finite
                {"features": {"x": 1.0, "emb": "text"}},
                {"features": {"x": 1.0, "emb": None}},
            ]
        },
        now=0.0,
    )
    d.ingest(bad, now=0.0)
    status = d.status()["embeddings"]["emb"]
    assert status["referenceVectors"] == 100
    assert status["typeErrors"] == 4 and status["missing"] == 1


def test_nothing_is_evaluated_before_the_reference_and_enough_current_vectors() -> None:
    d = Detector(model(), now=0.0)
    rng = np.random.default_rng(3)
    d.ingest(batch(topics(rng, 299, EVEN), 0), now=0.0)
    d.evaluate(now=1.0, now_iso="t")
    assert not [e for e in d.last_evidence if e.feature == "emb"]
    d.ingest(batch(topics(rng, MIN_VECTORS, EVEN), 1), now=1.0)  # 1 to the reference
    d.evaluate(now=2.0, now_iso="t")
    assert not [e for e in d.last_evidence if e.feature == "emb"]
    d.ingest(batch(topics(rng, 1, EVEN), 2), now=2.0)
    d.evaluate(now=3.0, now_iso="t")
    assert [e.test for e in d.last_evidence if e.feature == "emb"] == ["mmd"]


def test_drift_disabled_runs_no_embedding_test() -> None:
    d = Detector(model(detectors={"drift": {"enabled": False}}), now=0.0)
    rng = np.random.default_rng(4)
    d.ingest(batch(topics(rng, 500, EVEN), 0), now=0.0)
    d.evaluate(now=1.0, now_iso="t")
    assert not [e for e in d.last_evidence if e.feature == "emb"]


def test_false_alarms_on_stationary_vectors_stay_within_the_level() -> None:
    """60 independent stationary runs at pValue 0.05 (2 tests each, Bonferroni): the
    evaluations flagging anything stay within a binomial bound of 5%."""
    m = model(detectors={"drift": {"pValue": 0.05}})
    flagged = 0
    for run in range(60):
        monitor = EmbeddingMonitor.from_spec(m.spec, capacity=200)
        assert monitor is not None
        rng = np.random.default_rng(500 + run)
        monitor.ingest(batch(topics(rng, 300, EVEN), run))
        monitor.ingest(batch(topics(rng, 200, EVEN), 1000 + run))
        evidence = monitor.evidence(m.spec.detectors.drift)
        assert len(evidence) == 2
        flagged += any(e.failing for e in evidence)
    assert flagged <= 8  # P(Binomial(60, 0.05) > 8) < 0.01


def test_memory_is_bounded_by_the_capacity() -> None:
    d = Detector(model(), now=0.0)
    rng = np.random.default_rng(5)
    for step in range(4):
        d.ingest(batch(topics(rng, 1500, EVEN), step), now=float(step))
    assert d.embeddings is not None
    column = d.embeddings.columns["emb"]
    assert column.reference is not None and column.current is not None
    assert len(column.current.sample()) == CAPACITY
    assert column.current.rows.shape == (CAPACITY, 32)  # projected from 48 dimensions


def test_computed_off_the_loop_the_evidence_is_the_same_and_ingest_may_go_on_meanwhile() -> None:
    """The service's path (snapshot on the loop, compute in a thread, prepare) gives what the
    direct call gives, and vectors ingested between snapshot and prepare do not reach it."""
    from concurrent.futures import ThreadPoolExecutor

    from mlwarden.detector.embedding import compute

    direct, threaded = Detector(model(), now=0.0), Detector(model(), now=0.0)
    for d in (direct, threaded):
        rng = np.random.default_rng(3)
        d.ingest(batch(topics(rng, 300, EVEN), 0), now=0.0)
        d.ingest(batch(topics(rng, 300, [0.7, 0.1, 0.1, 0.1]), 1), now=1.0)
    direct.evaluate(now=2.0, now_iso="t")
    assert threaded.embeddings is not None
    snap = threaded.embeddings.snapshot(threaded.model.spec.detectors.drift)
    assert snap is not None
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(compute, snap)
        # Ingest goes on while the thread computes: the snapshot's copies do not move.
        threaded.ingest(batch(topics(np.random.default_rng(4), 300, EVEN), 2), now=1.5)
        threaded.embeddings.prepare(future.result())
    threaded.evaluate(now=2.0, now_iso="t")
    pick = [("FeatureDrift", "emb", "mmd"), ("FeatureDrift", "emb.topic", "chisquare")]

    def emb(d: Detector) -> list[tuple[Any, ...]]:
        return [(e.feature, e.test, e.statistic, e.p_value, e.failing) for e in d.last_evidence
                if (e.type, e.feature, e.test) in pick]  # fmt: skip

    assert emb(direct) == emb(threaded) and len(emb(direct)) == 2
    assert all(f for *_, f in emb(direct))  # the mix changed: both flag it
    assert threaded.embeddings.prepared is None  # taken by the evaluation, used once


def test_a_malformed_first_vector_does_not_set_the_width() -> None:
    """Regression: without `dimensions`, the width came from the first vector even when it
    was malformed, and every later well-formed vector then counted as a type error."""
    from mlwarden.detector.embedding import EmbeddingColumn

    column = EmbeddingColumn("e", reference_size=100, capacity=100)
    column.add([["oops", "x", "y"], [1.0, float("nan"), 2.0]])
    rng = np.random.default_rng(0)
    column.add([list(rng.normal(size=16)) for _ in range(150)])
    status = column.status()
    assert status["dimensions"] == 16 and status["typeErrors"] == 2, status
    assert status["referenceVectors"] == 100
