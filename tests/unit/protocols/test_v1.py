"""KServe v1 / TF-Serving `:predict` adapter, on payloads from the KServe and TF-Serving docs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from mlwarden.protocols import v1
from mlwarden.records import ProtocolError, Record
from mlwarden.spec import ObservedModelSpec

Body = Callable[[Any], bytes]
MakeSpec = Callable[..., ObservedModelSpec]

# KServe v1 sklearn iris example.
IRIS_REQUEST = {"instances": [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]]}
IRIS_RESPONSE = {"predictions": [1, 1]}

# TF-Serving REST API docs: the same two rows in row form and in columnar form.
TF_ROW_REQUEST = {
    "instances": [
        {"tag": "foo", "signal": [1, 2, 3, 4, 5], "sensor": [[1, 2], [3, 4]]},
        {"tag": "bar", "signal": [3, 4, 1, 2, 5], "sensor": [[4, 5], [6, 8]]},
    ]
}
TF_COLUMNAR_REQUEST = {
    "inputs": {
        "tag": ["foo", "bar"],
        "signal": [[1, 2, 3, 4, 5], [3, 4, 1, 2, 5]],
        "sensor": [[[1, 2], [3, 4]], [[4, 5], [6, 8]]],
    }
}


def test_kserve_iris_without_spec(body: Body) -> None:
    records = v1.parse(body(IRIS_REQUEST), body(IRIS_RESPONSE), None)

    assert records == [
        Record(features={"f0": 6.8, "f1": 2.8, "f2": 4.8, "f3": 1.4}, outputs={"prediction": 1}),
        Record(
            features={"f0": 6.0, "f1": 3.4, "f2": 4.5, "f3": 1.6}, outputs={"prediction": 1}, row=1
        ),
    ]


def test_kserve_iris_with_spec_names(body: Body, make_spec: MakeSpec) -> None:
    names = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    spec = make_spec(names, prediction="species")

    records = v1.parse(body(IRIS_REQUEST), body(IRIS_RESPONSE), spec)

    assert records[0].features == dict(zip(names, [6.8, 2.8, 4.8, 1.4], strict=True))
    assert records[1].outputs == {"species": 1}


def test_positional_names_when_spec_count_differs(body: Body, make_spec: MakeSpec) -> None:
    records = v1.parse(body(IRIS_REQUEST), b"", make_spec(["amount", "age"]))

    assert list(records[0].features) == ["f0", "f1", "f2", "f3"]


def test_tf_serving_row_form_flattens_one_level(body: Body) -> None:
    records = v1.parse(body(TF_ROW_REQUEST), b"", None)

    # signal is flattened with dotted names; sensor's cells are lists again and are dropped.
    assert records[0].features == {
        "tag": "foo",
        "signal.0": 1,
        "signal.1": 2,
        "signal.2": 3,
        "signal.3": 4,
        "signal.4": 5,
    }
    assert records[1].features["tag"] == "bar"


def test_tf_serving_columnar_form_matches_row_form(body: Body) -> None:
    columnar = v1.parse(body(TF_COLUMNAR_REQUEST), b"", None)

    assert columnar == v1.parse(body(TF_ROW_REQUEST), b"", None)


def test_tf_serving_half_plus_three_scalar_instances(body: Body, make_spec: MakeSpec) -> None:
    # TF-Serving's half_plus_three example model.
    request = {"instances": [1.0, 2.0, 5.0]}
    response = {"predictions": [3.5, 4.0, 5.5]}

    records = v1.parse(body(request), body(response), None)
    named = v1.parse(body(request), body(response), make_spec(["x"], prediction="y"))

    assert [(r.features, r.outputs) for r in records] == [
        ({"input": 1.0}, {"prediction": 3.5}),
        ({"input": 2.0}, {"prediction": 4.0}),
        ({"input": 5.0}, {"prediction": 5.5}),
    ]
    assert named[2].features == {"x": 5.0} and named[2].outputs == {"y": 5.5}


def test_tf_serving_binary_values_are_dropped(body: Body) -> None:
    request = {
        "instances": [
            {"image": {"b64": "aW1hZ2UgYnl0ZXM="}, "caption": "seaside"},
            {"image": {"b64": "YXdlc29tZSBpbWFnZSBieXRlcw=="}, "caption": "mountains"},
        ]
    }

    records = v1.parse(body(request), b"", None)

    assert [r.features for r in records] == [{"caption": "seaside"}, {"caption": "mountains"}]
    assert v1.parse(body({"instances": [{"b64": "aW1hZ2U="}]}), b"", None)[0].features == {}


def test_nested_object_flattened_with_dotted_names(body: Body) -> None:
    request = {
        "instances": [{"amount": 12.5, "merchant": {"category": "grocery", "geo": {"x": 1}}}]
    }

    (record,) = v1.parse(body(request), b"", None)

    assert record.features == {"amount": 12.5, "merchant.category": "grocery"}


def test_per_row_list_and_object_predictions(body: Body) -> None:
    probabilities = {"predictions": [[0.1, 0.9], [0.8, 0.2]]}
    multi_head = {
        "predictions": [
            {"scores": [0.1, 0.9], "classes": 1},
            {"scores": [0.8, 0.2], "classes": 0},
        ]
    }

    lists = v1.parse(body(IRIS_REQUEST), body(probabilities), None)
    objects = v1.parse(body(IRIS_REQUEST), body(multi_head), None)

    assert lists[1].outputs == {"prediction_0": 0.8, "prediction_1": 0.2}
    assert objects[0].outputs == {"scores.0": 0.1, "scores.1": 0.9, "classes": 1}


def test_columnar_outputs(body: Body) -> None:
    named = {"outputs": {"scores": [[0.1, 0.9], [0.8, 0.2]], "classes": [1, 0]}}
    unnamed = {"outputs": [3.5, 4.0]}

    by_name = v1.parse(body(TF_COLUMNAR_REQUEST), body(named), None)
    single = v1.parse(body(TF_COLUMNAR_REQUEST), body(unnamed), None)

    assert by_name[1].outputs == {"scores.0": 0.8, "scores.1": 0.2, "classes": 0}
    assert [r.outputs for r in single] == [{"prediction": 3.5}, {"prediction": 4.0}]


def test_columnar_inputs_as_list_of_rows(body: Body) -> None:
    records = v1.parse(body({"inputs": [[1, 2], [3, 4]]}), body({"outputs": [0, 1]}), None)

    assert [(r.features, r.outputs) for r in records] == [
        ({"f0": 1, "f1": 2}, {"prediction": 0}),
        ({"f0": 3, "f1": 4}, {"prediction": 1}),
    ]


@pytest.mark.parametrize(
    "response",
    [
        b'{"error": "Failed to process element: 0 of instances list"}',
        b'{"predictions": [1]}',
        b'{"outputs": {"a": [1, 2], "b": [1]}}',
        b"upstream connect error",
        b"",
    ],
)
def test_unusable_response_leaves_outputs_empty(body: Body, response: bytes) -> None:
    records = v1.parse(body(IRIS_REQUEST), response, None)

    assert len(records) == 2
    assert all(r.outputs == {} for r in records)


def test_no_request_id_in_body(body: Body) -> None:
    assert {r.request_id for r in v1.parse(body(IRIS_REQUEST), b"", None)} == {None}


@pytest.mark.parametrize(
    ("request_body", "reason"),
    [
        (b"\xc3\x28", "not valid UTF-8"),
        (b"{instances: []}", "not JSON"),
        (b'"instances"', "must be a JSON object"),
        (b'{"signature_name": "serving_default"}', "instances: required field is missing"),
        (b'{"instances": {"a": 1}}', "instances: must be a list, got object"),
        (b'{"inputs": 3}', "inputs: must be an object of named inputs or a list of rows"),
        (b'{"inputs": {"a": [1, 2], "b": 3}}', "inputs.b: must be a list"),
        (b'{"inputs": {"a": [1, 2], "b": [3]}}', r"inputs\.b: 1 rows, but inputs\.a has 2"),
    ],
)
def test_request_errors_name_the_field(request_body: bytes, reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason):
        v1.parse(request_body, b"", None)
