"""Batch validation: good batches become columns; bad ones are refused with the place named."""

from __future__ import annotations

import math
import re

import pytest

from mlwarden.detector.ingest import BatchError, decode, parse_batch, parse_labels


def test_columns_line_up_even_when_records_lack_fields() -> None:
    b = parse_batch(
        {
            "source": {"pod": "p", "modelRevision": "7"},
            "requests": [
                {"id": "r1", "status": 200, "latencySeconds": 0.01},
                {"id": "r2", "status": 503, "latencySeconds": 0.2, "dropped": "unparseable"},
            ],
            "records": [
                {
                    "id": "r1",
                    "row": 0,
                    "ts": 1.0,
                    "features": {"a": 1.0, "b": "x"},
                    "outputs": {"y": 1},
                },
                {"id": "r1", "row": 1, "ts": 1.0, "features": {"b": "y"}},
                {"id": "r1", "row": 2, "ts": 1.0, "features": {"a": math.nan, "c": True}},
            ],
        },
        now=5.0,
    )
    assert b.n_records == 3
    assert b.feature_names == {"a", "b", "c"} and b.output_names == {"y"}
    assert b.feature("nope") is None
    assert b.feature("a")[0] == 1.0 and b.feature("a")[1] is None and math.isnan(b.feature("a")[2])
    assert b.feature("b") == ["x", "y", None]
    assert b.feature("c") == [None, None, True]
    assert b.output("y") == [1, None, None]
    assert b.keys == [("r1", 0), ("r1", 1), ("r1", 2)]
    assert b.statuses == [200, 503] and b.latencies == [0.01, 0.2] and b.dropped_requests == 1
    assert b.source["modelRevision"] == "7"


def test_non_finite_entries_replace_their_nulls() -> None:
    body = (
        b'{"records": [{"features": {"a": null, "b": 1}, "outputs": {"y": null}},'
        b' {"features": {"a": null}}],'
        b' "nonFinite": [{"record": 0, "in": "features", "name": "a", "value": "NaN"},'
        b' {"record": 0, "in": "outputs", "name": "y", "value": "-Infinity"}]}'
    )
    b = parse_batch(decode(body), now=0.0)
    a = b.feature("a")
    assert a is not None and math.isnan(a[0]) and a[1] is None  # the other null stays missing
    assert b.output("y") == [-math.inf, None]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("3", "nonFinite[0]: must be an object, got number"),
        ('{"record": 1, "in": "features", "name": "a", "value": "NaN"}', "nonFinite[0].record"),
        ('{"record": true, "in": "features", "name": "a", "value": "NaN"}', "nonFinite[0].record"),
        ('{"record": 0, "in": "labels", "name": "a", "value": "NaN"}', "nonFinite[0].in"),
        ('{"record": 0, "in": "features", "name": "z", "value": "NaN"}', "nonFinite[0].name"),
        ('{"record": 0, "in": "features", "name": "a", "value": "nan"}', "nonFinite[0].value"),
        (
            '{"record": 0, "in": "features", "name": "b", "value": "NaN"}',
            "records[0].features.b must be null",
        ),
    ],
)
def test_bad_non_finite_entries_name_the_place(entry: str, message: str) -> None:
    body = b'{"records": [{"features": {"a": null, "b": 2}}], "nonFinite": [' + entry.encode()
    with pytest.raises(BatchError, match=re.escape(message)):
        parse_batch(decode(body + b"]}"), now=0.0)


def test_nan_tokens_of_older_producers_still_decode() -> None:
    payload = decode(b'{"records": [{"features": {"a": NaN, "b": Infinity}}]}')
    b = parse_batch(payload, now=0.0)
    assert math.isnan(b.feature("a")[0]) and b.feature("b")[0] == math.inf


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ([], "body: must be an object, got list"),
        ({"records": {}}, "records: must be a list, got object"),
        ({"records": [3]}, "records[0]: must be an object, got number"),
        ({"records": [{"features": []}]}, "records[0].features: must be an object, got list"),
        ({"records": [{"features": {}, "row": "0"}]}, "records[0].row: must be an integer"),
        ({"records": [{"features": {}, "id": 5}]}, "records[0].id: must be a string"),
        ({"requests": [{"status": 999, "latencySeconds": 1}]}, "requests[0].status"),
        ({"requests": [{"status": 200, "latencySeconds": -1}]}, "requests[0].latencySeconds"),
        ({"recrods": []}, "unknown field(s) recrods"),
    ],
)
def test_malformed_batches_name_the_place(payload: object, message: str) -> None:
    with pytest.raises(BatchError) as exc:
        parse_batch(payload, now=0.0)
    assert message in str(exc.value)


@pytest.mark.parametrize(
    ("body", "message"), [(b"{nope", "body is not JSON"), (b"\xff\xfe", "not UTF-8")]
)
def test_undecodable_bodies(body: bytes, message: str) -> None:
    with pytest.raises(BatchError, match=message):
        decode(body)


def test_labels() -> None:
    labels = [{"id": "r1", "label": 1}, {"id": "r1", "row": 1, "label": "b"}]
    assert parse_labels({"labels": labels}) == [("r1", 0, 1), ("r1", 1, "b")]
    with pytest.raises(BatchError, match=r"labels\[0\].id"):
        parse_labels({"labels": [{"label": 1}]})
    with pytest.raises(BatchError, match=r"labels\[0\].label"):
        parse_labels({"labels": [{"id": "x", "label": None}]})
    # A NaN label (Python's JSON reader takes `NaN`) is refused with the field: joined, it
    # made the label store unsavable and stopped every status write after it.
    with pytest.raises(BatchError, match=r"labels\[1\].label: must be a finite number"):
        parse_labels(decode(b'{"labels": [{"id": "x", "label": 1}, {"id": "y", "label": NaN}]}'))
