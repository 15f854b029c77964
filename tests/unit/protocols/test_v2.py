"""Open Inference Protocol v2 adapter, on payloads from the KServe, Triton and MLServer docs."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest

from mlwarden.protocols import v2
from mlwarden.records import ProtocolError, Record
from mlwarden.spec import ObservedModelSpec

Body = Callable[[Any], bytes]
MakeSpec = Callable[..., ObservedModelSpec]

# KServe "sklearn-v2-iris" example: nested data for a [2, 4] tensor, and its response.
IRIS_REQUEST = {
    "inputs": [
        {
            "name": "input-0",
            "shape": [2, 4],
            "datatype": "FP32",
            "data": [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]],
        }
    ]
}
IRIS_RESPONSE = {
    "model_name": "sklearn-v2-iris",
    "model_version": None,
    "id": "823248cc-d770-4a51-9606-16803395569c",
    "parameters": None,
    "outputs": [
        {"name": "output-0", "shape": [2], "datatype": "INT64", "parameters": None, "data": [1, 1]}
    ],
}
IRIS_FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def test_kserve_iris_batch_without_spec(body: Body) -> None:
    records = v2.parse(body(IRIS_REQUEST), body(IRIS_RESPONSE), None)

    assert records == [
        Record(
            features={"input-0_0": 6.8, "input-0_1": 2.8, "input-0_2": 4.8, "input-0_3": 1.4},
            outputs={"output-0": 1},
            row=0,
            request_id="823248cc-d770-4a51-9606-16803395569c",
        ),
        Record(
            features={"input-0_0": 6.0, "input-0_1": 3.4, "input-0_2": 4.5, "input-0_3": 1.6},
            outputs={"output-0": 1},
            row=1,
            request_id="823248cc-d770-4a51-9606-16803395569c",
        ),
    ]


def test_spec_feature_names_and_prediction_name(body: Body, make_spec: MakeSpec) -> None:
    spec = make_spec(IRIS_FEATURES, prediction="species")

    records = v2.parse(body(IRIS_REQUEST), body(IRIS_RESPONSE), spec)

    assert records[1].features == dict(zip(IRIS_FEATURES, [6.0, 3.4, 4.5, 1.6], strict=True))
    assert [r.outputs for r in records] == [{"species": 1}, {"species": 1}]


def test_flat_and_nested_data_read_the_same(body: Body) -> None:
    flat = {
        "inputs": [dict(IRIS_REQUEST["inputs"][0], data=[6.8, 2.8, 4.8, 1.4, 6.0, 3.4, 4.5, 1.6])]
    }

    assert v2.parse(body(flat), b"", None) == v2.parse(body(IRIS_REQUEST), b"", None)


def test_spec_with_other_feature_count_keeps_indexed_names(body: Body, make_spec: MakeSpec) -> None:
    spec = make_spec(["amount", "merchant_category"])

    records = v2.parse(body(IRIS_REQUEST), b"", spec)

    assert list(records[0].features) == ["input-0_0", "input-0_1", "input-0_2", "input-0_3"]


def test_spec_names_skip_features_named_by_other_tensors(body: Body, make_spec: MakeSpec) -> None:
    request = {
        "inputs": [
            {"name": "numeric", "shape": [1, 2], "datatype": "FP64", "data": [[12.5, 3.0]]},
            {"name": "merchant_category", "shape": [1], "datatype": "BYTES", "data": ["grocery"]},
        ]
    }
    spec = make_spec(["amount", "merchant_category", "age"])

    (record,) = v2.parse(body(request), b"", spec)

    assert record.features == {"amount": 12.5, "age": 3.0, "merchant_category": "grocery"}


def test_triton_protocol_example_with_output_wider_than_one(body: Body) -> None:
    # The Triton/KServe protocol doc's request, with its input0 only (see the next test).
    request = {
        "id": "42",
        "inputs": [{"name": "input0", "shape": [2, 2], "datatype": "UINT32", "data": [1, 2, 3, 4]}],
        "outputs": [{"name": "output0"}],
    }
    response = {
        "id": "42",
        "outputs": [
            {"name": "output0", "shape": [2, 2], "datatype": "FP32", "data": [1.0, 1.1, 2.0, 2.1]}
        ],
    }

    records = v2.parse(body(request), body(response), None)

    assert [r.features for r in records] == [
        {"input0_0": 1, "input0_1": 2},
        {"input0_0": 3, "input0_1": 4},
    ]
    assert [r.outputs for r in records] == [
        {"output0_0": 1.0, "output0_1": 1.1},
        {"output0_0": 2.0, "output0_1": 2.1},
    ]
    assert {r.request_id for r in records} == {"42"}


def test_triton_protocol_doc_example_is_inconsistent(body: Body) -> None:
    # The doc's input1 claims shape [3] but sends one value: the reason must say where.
    request = {
        "id": "42",
        "inputs": [
            {"name": "input0", "shape": [2, 2], "datatype": "UINT32", "data": [1, 2, 3, 4]},
            {"name": "input1", "shape": [3], "datatype": "BOOL", "data": [True]},
        ],
        "outputs": [{"name": "output0"}],
    }

    with pytest.raises(ProtocolError, match=r"inputs\[1\]\.data: 1 values do not fill shape \[3\]"):
        v2.parse(body(request), b"", None)


def test_mlserver_pandas_columns_with_bytes(body: Body) -> None:
    # MLServer content-types docs: a DataFrame sent one column per input tensor.
    request = {
        "parameters": {"content_type": "pd"},
        "inputs": [
            {
                "name": "First Name",
                "datatype": "BYTES",
                "parameters": {"content_type": "str"},
                "shape": [2],
                "data": ["Joanne", "Michael"],
            },
            {"name": "Age", "datatype": "INT32", "shape": [2], "data": [34, 22]},
        ],
    }

    records = v2.parse(body(request), b"", None)

    assert [r.features for r in records] == [
        {"First Name": "Joanne", "Age": 34},
        {"First Name": "Michael", "Age": 22},
    ]
    assert all(r.outputs == {} and r.request_id is None for r in records)


def test_mlserver_sklearn_predict_and_predict_proba(body: Body, make_spec: MakeSpec) -> None:
    request = {
        "inputs": [
            {"name": "predict", "shape": [1, 4], "datatype": "FP32", "data": [[5.1, 3.5, 1.4, 0.2]]}
        ],
        "outputs": [{"name": "predict"}, {"name": "predict_proba"}],
    }
    response = {
        "model_name": "iris",
        "model_version": "v0.1.0",
        "id": "6a1e0c4e-8bd6-4ba6-9d4c-5d9e2b1d4c3f",
        "parameters": {},
        "outputs": [
            {
                "name": "predict",
                "shape": [1, 1],
                "datatype": "INT64",
                "parameters": {"content_type": "np"},
                "data": [0],
            },
            {
                "name": "predict_proba",
                "shape": [1, 3],
                "datatype": "FP64",
                "parameters": {"content_type": "np"},
                "data": [0.97, 0.03, 0.0],
            },
        ],
    }

    (record,) = v2.parse(body(request), body(response), make_spec(prediction="species"))

    # The one single-value output takes the prediction's name; the wide one keeps indices.
    assert record.outputs == {
        "species": 0,
        "predict_proba_0": 0.97,
        "predict_proba_1": 0.03,
        "predict_proba_2": 0.0,
    }
    assert record.request_id == "6a1e0c4e-8bd6-4ba6-9d4c-5d9e2b1d4c3f"


def test_prediction_named_like_an_output_is_not_renamed(body: Body, make_spec: MakeSpec) -> None:
    response = {
        "outputs": [
            {"name": "predict", "shape": [2], "datatype": "INT64", "data": [1, 0]},
            {"name": "score", "shape": [2], "datatype": "FP32", "data": [0.9, 0.2]},
        ]
    }

    records = v2.parse(body(IRIS_REQUEST), body(response), make_spec(prediction="score"))

    assert records[0].outputs == {"predict": 1, "score": 0.9}


def test_hugging_face_bytes_input(body: Body) -> None:
    # MLServer HuggingFace runtime: one string in a BYTES tensor of shape [1].
    request = {
        "inputs": [{"name": "args", "shape": [1], "datatype": "BYTES", "data": ["this is a test"]}]
    }

    (record,) = v2.parse(body(request), b"", None)

    assert record.features == {"args": "this is a test"}


def test_three_dimensional_tensor_is_flattened_per_row(body: Body) -> None:
    request = {
        "inputs": [
            {"name": "x", "shape": [2, 2, 2], "datatype": "INT32", "data": [1, 2, 3, 4, 5, 6, 7, 8]}
        ]
    }

    records = v2.parse(body(request), b"", None)

    assert records[1].features == {"x_0": 5, "x_1": 6, "x_2": 7, "x_3": 8}


def test_request_id_used_when_response_has_none(body: Body) -> None:
    request = dict(IRIS_REQUEST, id="req-7")
    response = {k: v for k, v in IRIS_RESPONSE.items() if k != "id"}

    records = v2.parse(body(request), body(response), None)

    assert {r.request_id for r in records} == {"req-7"}


@pytest.mark.parametrize(
    "response",
    [
        b'{"error": "Model iris not found"}',
        b"<html><body>502 Bad Gateway</body></html>",
        b"",
        b'{"outputs": [{"name": "output-0", "shape": [2], "datatype": "INT64", "data": [1',
    ],
)
def test_error_or_truncated_response_leaves_outputs_empty(body: Body, response: bytes) -> None:
    records = v2.parse(body(IRIS_REQUEST), response, None)

    assert len(records) == 2
    assert all(r.outputs == {} for r in records)


def test_output_with_other_batch_size_is_ignored(body: Body) -> None:
    response = {
        "outputs": [
            {"name": "output-0", "shape": [1], "datatype": "INT64", "data": [1]},
            {"name": "latency", "shape": [2], "datatype": "FP32", "data": [0.1, 0.2]},
            {"name": "broken", "shape": [2], "datatype": "FP32", "data": [0.1]},
        ]
    }

    records = v2.parse(body(IRIS_REQUEST), body(response), None)

    assert [r.outputs for r in records] == [{"latency": 0.1}, {"latency": 0.2}]


def test_nan_and_infinity_kept_as_floats() -> None:
    request = (
        b'{"inputs": [{"name": "x", "shape": [3], "datatype": "FP64",'
        b' "data": [NaN, Infinity, -Infinity]}]}'
    )

    values = [r.features["x"] for r in v2.parse(request, b"", None)]

    assert isinstance(values[0], float) and math.isnan(values[0])
    assert values[1:] == [math.inf, -math.inf]


def test_nested_cells_are_dropped(body: Body) -> None:
    request = {
        "inputs": [{"name": "x", "shape": [2], "datatype": "BYTES", "data": ["a", {"b": 1}]}]
    }

    records = v2.parse(body(request), b"", None)

    assert [r.features for r in records] == [{"x": "a"}, {}]


def test_empty_inputs_give_no_records(body: Body) -> None:
    assert v2.parse(body({"inputs": []}), b"", None) == []


@pytest.mark.parametrize(
    ("request_body", "reason"),
    [
        (b"\xff\xfe{}", "not valid UTF-8"),
        (b'{"inputs": [', "not JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"instances": [[1, 2]]}', "inputs: required field is missing"),
        (b'{"inputs": {"x": [1]}}', "inputs: must be a list of tensors, got object"),
        (b'{"inputs": [[1, 2]]}', r"inputs\[0\]: must be a tensor object, got list"),
        (b'{"inputs": [{"shape": [1], "data": [1]}]}', r"inputs\[0\]\.name: required"),
        (b'{"inputs": [{"name": "x", "data": [1]}]}', r"inputs\[0\]\.shape: required"),
        (b'{"inputs": [{"name": "x", "shape": [-1], "data": [1]}]}', "non-negative integers"),
        (b'{"inputs": [{"name": "x", "shape": [1]}]}', r"inputs\[0\]\.data: required"),
        (b'{"inputs": [{"name": "x", "shape": [1], "data": 1}]}', "data: must be a list"),
        (
            b'{"inputs": [{"name": "x", "shape": [2, 4], "data": [1, 2, 3, 4, 5, 6, 7]}]}',
            r"inputs\[0\]\.data: 7 values do not fill shape \[2, 4\]",
        ),
        (
            b'{"inputs": [{"name": "x", "shape": [2], "data": [1, 2]},'
            b' {"name": "y", "shape": [3], "data": [1, 2, 3]}]}',
            r"inputs\[1\]\.shape: batch size 3 does not match inputs\[0\] \(2\)",
        ),
        (
            b'{"inputs": [{"name": "x", "shape": [1000000000000, 0], "data": []}]}',
            "holds no values",
        ),
    ],
)
def test_request_errors_name_the_field(request_body: bytes, reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason):
        v2.parse(request_body, b"", None)


def test_a_tensor_named_by_an_embedding_feature_is_one_vector_per_row(
    body: Body, make_spec: MakeSpec
) -> None:
    """Inputs and outputs: the declared embedding's tensor is a vector, not F columns; the
    other wide tensor still takes the remaining feature names."""
    spec = make_spec(["a", "b"], embeddings=["query", "doc"])
    request = {
        "inputs": [
            {"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]},
            {"name": "query", "shape": [2, 4], "datatype": "FP32", "data": list(range(8))},
        ]
    }
    response = {
        "outputs": [
            {
                "name": "doc",
                "shape": [2, 3],
                "datatype": "FP32",
                "data": [[0.5, 1, 2], [3, "x", 4]],
            },
            {"name": "score", "shape": [2], "datatype": "FP32", "data": [0.1, 0.2]},
        ]
    }
    records = v2.parse(body(request), body(response), spec)
    assert [r.features for r in records] == [{"a": 1, "b": 2}, {"a": 3, "b": 4}]
    assert [r.vectors for r in records] == [
        {"query": [0.0, 1.0, 2.0, 3.0]},
        {"query": [4.0, 5.0, 6.0, 7.0]},
    ]
    # A row holding a non-number has no vector.
    assert [r.output_vectors for r in records] == [{"doc": [0.5, 1.0, 2.0]}, {}]
    assert [r.outputs for r in records] == [{"score": 0.1}, {"score": 0.2}]
