"""Generic JSON adapter: rows and values read through the spec's dotted field paths."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from mlwarden.protocols import json_paths
from mlwarden.protocols.json_paths import MISSING, lookup
from mlwarden.records import ProtocolError, Record
from mlwarden.spec import ObservedModelSpec

Body = Callable[[Any], bytes]
MakeSpec = Callable[..., ObservedModelSpec]

FRAUD_CAPTURE = {
    "requestRows": "data.items",
    "responseRows": "results",
    "features": {"amount": "amount", "merchant_category": "merchant.category", "first": "scores.0"},
    "prediction": "fraud.score",
}
FRAUD_REQUEST = {
    "data": {
        "items": [
            {"amount": 12.5, "merchant": {"category": "grocery"}, "scores": [0.3, 0.1]},
            {"amount": 830.0, "merchant": {"category": "travel"}, "scores": [0.9]},
            {"amount": None, "merchant": {}},
        ]
    }
}
FRAUD_RESPONSE = {
    "results": [{"fraud": {"score": 0.02}}, {"fraud": {"score": 0.91}}, {"fraud": {}}]
}


def test_paths_from_capture(body: Body, make_spec: MakeSpec) -> None:
    spec = make_spec(
        ["amount", "merchant_category", "first"], prediction="score", json=FRAUD_CAPTURE
    )

    records = json_paths.parse(body(FRAUD_REQUEST), body(FRAUD_RESPONSE), spec)

    assert records == [
        Record(
            features={"amount": 12.5, "merchant_category": "grocery", "first": 0.3},
            outputs={"score": 0.02},
            row=0,
        ),
        Record(
            features={"amount": 830.0, "merchant_category": "travel", "first": 0.9},
            outputs={"score": 0.91},
            row=1,
        ),
        # Missing paths are None (a data-quality signal); a missing prediction is no output.
        Record(features={"amount": None, "merchant_category": None, "first": None}, row=2),
    ]


def test_defaults_body_is_one_row_and_feature_names_are_paths(
    body: Body, make_spec: MakeSpec
) -> None:
    spec = make_spec(["amount", "merchant_category"], prediction="score")
    request = {"amount": 42.0, "merchant_category": "grocery", "customer": {"id": 7}}

    (record,) = json_paths.parse(body(request), body({"score": 0.4, "model": "v3"}), spec)

    assert record.features == {"amount": 42.0, "merchant_category": "grocery"}
    assert record.outputs == {"score": 0.4}


def test_list_body_is_the_rows(body: Body, make_spec: MakeSpec) -> None:
    spec = make_spec(["amount"], prediction="score")
    request = [{"amount": 1.0}, {"amount": 2.0}]
    response = [{"score": 0.1}, {"score": 0.2}]

    records = json_paths.parse(body(request), body(response), spec)

    assert [(r.features, r.outputs) for r in records] == [
        ({"amount": 1.0}, {"score": 0.1}),
        ({"amount": 2.0}, {"score": 0.2}),
    ]


def test_scalar_response_rows_are_the_prediction(body: Body, make_spec: MakeSpec) -> None:
    spec = make_spec(["amount"], prediction="score", json={"responseRows": "scores"})
    request = [{"amount": 1.0}, {"amount": 2.0}]

    records = json_paths.parse(body(request), body({"scores": [0.1, 0.2]}), spec)
    bare = json_paths.parse(
        body({"amount": 1.0}), b"0.87", make_spec(["amount"], prediction="score")
    )

    assert [r.outputs for r in records] == [{"score": 0.1}, {"score": 0.2}]
    assert bare[0].outputs == {"score": 0.87}


def test_prediction_path_without_spec_prediction_is_named_prediction(
    body: Body, make_spec: MakeSpec
) -> None:
    spec = make_spec(["amount"], json={"prediction": "result.label"})

    (record,) = json_paths.parse(body({"amount": 3}), body({"result": {"label": "fraud"}}), spec)

    assert record.outputs == {"prediction": "fraud"}


def test_no_prediction_configured_gives_no_outputs(body: Body, make_spec: MakeSpec) -> None:
    (record,) = json_paths.parse(body({"amount": 3}), body({"score": 1}), make_spec(["amount"]))

    assert record.outputs == {}


def test_without_spec_every_top_level_scalar_is_a_feature(body: Body) -> None:
    request = {"amount": 3, "currency": "EUR", "tags": ["a"], "customer": {"id": 1}, "vip": False}

    (record,) = json_paths.parse(body(request), body({"score": 1}), None)

    assert record.features == {"amount": 3, "currency": "EUR", "vip": False}
    assert record.outputs == {}


def test_nested_value_at_a_feature_path_is_none(body: Body, make_spec: MakeSpec) -> None:
    (record,) = json_paths.parse(body({"amount": [1, 2]}), b"", make_spec(["amount"]))

    assert record.features == {"amount": None}


def test_response_rows_that_do_not_line_up_are_ignored(body: Body, make_spec: MakeSpec) -> None:
    spec = make_spec(
        ["amount", "merchant_category", "first"], prediction="score", json=FRAUD_CAPTURE
    )
    response = {"results": [{"fraud": {"score": 0.02}}]}

    records = json_paths.parse(body(FRAUD_REQUEST), body(response), spec)

    assert len(records) == 3 and all(r.outputs == {} for r in records)


@pytest.mark.parametrize(
    ("request_body", "capture", "reason"),
    [
        (b"\xfe", None, "not valid UTF-8"),
        (b"{", None, "not JSON"),
        (b"12", None, "must be a JSON object or a list of rows, got number"),
        (b'{"data": {}}', {"requestRows": "data.items"}, r"data\.items: not found in the request"),
        (b'{"data": {"items": 3}}', {"requestRows": "data.items"}, "must be a list of rows"),
    ],
)
def test_request_errors(
    make_spec: MakeSpec, request_body: bytes, capture: dict[str, str] | None, reason: str
) -> None:
    spec = make_spec(["amount"], json=capture)

    with pytest.raises(ProtocolError, match=reason):
        json_paths.parse(request_body, b"", spec)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("a", {"b": [10, {"c": "x"}]}),
        ("a.b.0", 10),
        ("a.b.1.c", "x"),
        ("a.b.2", MISSING),
        ("a.b.c", MISSING),
        ("a.b.-1", MISSING),
        ("a.x", MISSING),
        ("n", None),
        ("n.deeper", MISSING),
        ("7", "seven"),
    ],
)
def test_lookup(path: str, expected: Any) -> None:
    value = {"a": {"b": [10, {"c": "x"}]}, "n": None, "7": "seven"}

    found = lookup(value, path)

    if expected is MISSING:
        assert found is MISSING
    else:
        assert found == expected


def test_an_embedding_feature_is_the_rows_vector(body: Body, make_spec: MakeSpec) -> None:
    spec = make_spec(["amount"], embeddings=["query"])
    rows = [
        {"amount": 1.0, "query": [0.5, -1, 2]},
        {"amount": 2.0, "query": [0.5, "x"]},  # not all numbers: no vector
        {"amount": 3.0},
    ]
    records = json_paths.parse(body(rows), b"", spec)
    assert [r.features for r in records] == [{"amount": 1.0}, {"amount": 2.0}, {"amount": 3.0}]
    assert [r.vectors for r in records] == [{"query": [0.5, -1.0, 2.0]}, {}, {}]
