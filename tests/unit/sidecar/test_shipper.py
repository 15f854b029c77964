"""Shipper pieces that need no network: backoff, batch encoding, buffer bounds."""

from __future__ import annotations

import json
import math
import random

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlwarden.detector import ingest
from mlwarden.detector.ingest import decode, parse_batch
from mlwarden.sidecar.metrics import SidecarMetrics
from mlwarden.sidecar.shipper import (
    BACKOFF_CAP_SECONDS,
    RETRY_AFTER_CAP_SECONDS,
    Shipper,
    backoff_seconds,
    encode_batch,
    encode_item,
)


def test_backoff_is_full_jitter_under_a_growing_cap() -> None:
    rng = random.Random(1)
    for attempt in range(12):
        cap = min(BACKOFF_CAP_SECONDS, 0.1 * 2**attempt)
        samples = [backoff_seconds(attempt, rng=rng) for _ in range(500)]
        assert all(0.0 <= s <= cap for s in samples)
        # Full jitter: spread over the whole interval, mean near cap/2.
        assert abs(sum(samples) / len(samples) - cap / 2) < cap * 0.1


def test_retry_after_wins_but_is_capped() -> None:
    rng = random.Random(1)
    assert backoff_seconds(0, rng=rng, retry_after=2.5) == 2.5
    assert backoff_seconds(0, rng=rng, retry_after=10_000) == RETRY_AFTER_CAP_SECONDS
    assert backoff_seconds(0, rng=rng, retry_after=-3) == 0.0


def test_batch_encoding_keeps_non_finite_values() -> None:
    item = encode_item(
        {"id": "r", "status": 200},
        [{"id": "r", "row": 0, "features": {"a": math.nan, "b": math.inf, "c": None}}],
    )
    empty = encode_item({"id": "q", "status": 502}, [])
    later = encode_item(
        {"id": "s", "status": 200},
        [
            {"id": "s", "row": 0, "features": {"a": 1.0}, "outputs": {"y": 2}},
            {"id": "s", "row": 1, "features": {"a": 2.0}, "outputs": {"y": -math.inf}},
        ],
    )
    body = encode_batch([item, empty, later], {"pod": "p"})
    # Strict JSON: orjson (and any standard parser) reads it; non-finite values are null
    # in place, and the nonFinite entries (with each record's index in the batch) say what.
    decoded = orjson.loads(body)
    assert decoded["source"] == {"pod": "p"}
    assert decoded["requests"] == [
        {"id": "r", "status": 200},
        {"id": "q", "status": 502},
        {"id": "s", "status": 200},
    ]
    assert len(decoded["records"]) == 3
    assert decoded["records"][0]["features"] == {"a": None, "b": None, "c": None}
    assert decoded["nonFinite"] == [
        {"record": 0, "in": "features", "name": "a", "value": "NaN"},
        {"record": 0, "in": "features", "name": "b", "value": "Infinity"},
        {"record": 2, "in": "outputs", "name": "y", "value": "-Infinity"},
    ]
    assert json.loads(body) == decoded


def test_the_detector_parses_a_batch_with_nan_once_and_keeps_the_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Today's semantics: NaN and infinities arrive as such, null stays missing."""
    item = encode_item(
        {"id": "r", "status": 200, "latencySeconds": 0.01},
        [
            {"id": "r", "row": 0, "features": {"a": math.nan, "b": math.inf, "c": None}},
            {"id": "r", "row": 1, "features": {"a": 1.5, "b": -math.inf, "c": "x"}},
        ],
    )
    body = encode_batch([item], {"pod": "p"})
    parses: list[bytes] = []
    real = orjson.loads

    def counting(data: bytes) -> object:
        parses.append(data)
        return real(data)

    def no_fallback(*_: object, **__: object) -> object:
        raise AssertionError("the detector fell back to a second parse")

    monkeypatch.setattr(ingest.orjson, "loads", counting)
    monkeypatch.setattr(ingest.json, "loads", no_fallback)
    batch = parse_batch(decode(body), now=0.0)
    assert len(parses) == 1
    a, b, c = batch.feature("a"), batch.feature("b"), batch.feature("c")
    assert a is not None and b is not None
    assert math.isnan(a[0]) and a[1] == 1.5
    assert b == [math.inf, -math.inf]
    assert c == [None, "x"]


scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(), st.text(max_size=5)
)
rows = st.lists(
    st.fixed_dictionaries(
        {
            "features": st.dictionaries(st.text(max_size=4), scalars, max_size=4),
            "outputs": st.dictionaries(st.text(max_size=4), scalars, max_size=2),
        }
    ),
    max_size=4,
)


@given(exchanges=st.lists(rows, max_size=4))
def test_every_value_survives_the_wire_as_it_was(exchanges: list[list[dict[str, object]]]) -> None:
    request = {"status": 200, "latencySeconds": 0.0}
    items = [encode_item({"id": str(i), **request}, rs) for i, rs in enumerate(exchanges)]
    batch = parse_batch(decode(encode_batch(items, {})), now=0.0)
    sent = [r for rs in exchanges for r in rs]
    assert batch.n_records == len(sent)
    for got_f, got_o, want in zip(batch.feature_rows, batch.output_rows, sent, strict=True):
        for got, expected in ((got_f, want["features"]), (got_o, want["outputs"])):
            assert isinstance(expected, dict) and got.keys() == expected.keys()
            for k, v in expected.items():
                assert got[k] == v or (v != v and got[k] != got[k]), (k, v, got[k])
                assert type(got[k]) is type(v)


def test_integers_beyond_64_bits_travel_as_floats() -> None:
    """orjson writes no such integer; a JSON detector reads them as floats anyway."""
    item = encode_item(
        {"id": "r", "status": 200, "latencySeconds": 0.0},
        [{"id": "r", "features": {"big": 2**70, "huge": -(10**400), "ok": 2**63}}],
    )
    batch = parse_batch(decode(encode_batch([item], {})), now=0.0)
    assert batch.feature("big") == [float(2**70)]
    assert batch.feature("huge") == [-math.inf]
    assert batch.feature("ok") == [2**63]


def test_finite_batches_carry_no_non_finite_field() -> None:
    item = encode_item({"id": "r"}, [{"id": "r", "features": {"a": 1.0, "b": "NaN"}}])
    assert b"nonFinite" not in encode_batch([item], {})
    # A string that reads "NaN" stays a string.
    assert orjson.loads(encode_batch([item], {}))["records"][0]["features"]["b"] == "NaN"


async def test_buffer_evicts_oldest_and_counts_the_rows() -> None:
    metrics = SidecarMetrics()
    shipper = Shipper(
        "http://127.0.0.1:9/v1/records", metrics=metrics, buffer_records=10, batch_size=1000
    )
    for i in range(8):
        shipper.add({"id": str(i)}, [{"row": 0}, {"row": 1}])
    assert shipper.buffered <= 10
    value = metrics.registry.get_sample_value
    assert value("mlwarden_sidecar_records_dropped_total", {"reason": "buffer_full"}) == 6
    assert value("mlwarden_sidecar_buffer_records") == shipper.buffered
