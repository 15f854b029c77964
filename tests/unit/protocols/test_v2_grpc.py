"""The v2 gRPC adapter, on messages built by `tritonclient`'s own generated protobuf module.

Every request here is a `ModelInferRequest` as `tritonclient.grpc` builds it (raw contents,
what the client sends) or as another client may (typed `contents`); every response a
`ModelInferResponse` (or Triton's streaming wrapper) from the same module. The records must
be those the HTTP/JSON adapter gives for the same tensors.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as triton
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc._utils import _get_inference_request
from tritonclient.utils import np_to_triton_dtype, serialize_byte_tensor

from mlwarden.protocols import is_inference, parse_exchange, v2, v2_grpc
from mlwarden.records import ProtocolError, Record
from mlwarden.spec import ObservedModelSpec

MakeSpec = Callable[..., ObservedModelSpec]

IRIS = np.array([[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3]], dtype=np.float64)
IRIS_FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
INFER = "/inference.GRPCInferenceService/ModelInfer"


def _dtype(array: np.ndarray) -> str:
    return "BYTES" if array.dtype == object else str(np_to_triton_dtype(array.dtype))


def grpc_request(arrays: dict[str, np.ndarray], request_id: str = "") -> bytes:
    """What tritonclient.grpc sends: raw_input_contents, one entry per input."""
    inputs = []
    for name, array in arrays.items():
        tensor = triton.InferInput(name, list(array.shape), _dtype(array))
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    message = _get_inference_request(
        "m", inputs, "", request_id, None, 0, False, False, 0, None, None
    )
    return bytes(message.SerializeToString())


_TYPED = {
    "BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents",
    "INT32": "int_contents", "INT64": "int64_contents", "UINT8": "uint_contents",
    "UINT16": "uint_contents", "UINT32": "uint_contents", "UINT64": "uint64_contents",
    "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents",
}  # fmt: skip


def _fill(tensor: Any, array: np.ndarray) -> None:
    tensor.name = tensor.name
    tensor.datatype = _dtype(array)
    tensor.shape.extend(array.shape)
    getattr(tensor.contents, _TYPED[tensor.datatype]).extend(array.flatten().tolist())


def typed_request(arrays: dict[str, np.ndarray], request_id: str = "") -> bytes:
    """A ModelInferRequest with typed contents (as MLServer's and KServe's clients send)."""
    message = pb.ModelInferRequest(model_name="m", id=request_id)
    for name, array in arrays.items():
        _fill(message.inputs.add(name=name), array)
    return bytes(message.SerializeToString())


def grpc_response(
    arrays: dict[str, np.ndarray], *, raw: bool, response_id: str = "", stream: bool = False
) -> bytes:
    message = pb.ModelInferResponse(model_name="m", id=response_id)
    for name, array in arrays.items():
        tensor = message.outputs.add(name=name)
        if raw:
            tensor.datatype = _dtype(array)
            tensor.shape.extend(array.shape)
            message.raw_output_contents.append(
                serialize_byte_tensor(array).item()
                if array.dtype == object
                else array.astype(array.dtype.newbyteorder("<")).tobytes()
            )
        else:
            _fill(tensor, array)
    if stream:
        return bytes(pb.ModelStreamInferResponse(infer_response=message).SerializeToString())
    return bytes(message.SerializeToString())


def json_request(arrays: dict[str, np.ndarray], request_id: str = "") -> bytes:
    inputs = [
        {"name": name, "shape": list(a.shape), "datatype": _dtype(a), "data": _json_values(a)}
        for name, a in arrays.items()
    ]
    body: dict[str, Any] = {"inputs": inputs}
    if request_id:
        body["id"] = request_id
    return json.dumps(body).encode()


def json_response(arrays: dict[str, np.ndarray], response_id: str = "") -> bytes:
    outputs = [
        {"name": name, "shape": list(a.shape), "datatype": _dtype(a), "data": _json_values(a)}
        for name, a in arrays.items()
    ]
    return json.dumps({"model_name": "m", "id": response_id, "outputs": outputs}).encode()


def _json_values(array: np.ndarray) -> list[Any]:
    return [v.decode() if isinstance(v, bytes) else v for v in array.flatten().tolist()]


# --------------------------------------------------------------------------- the proto


def test_declared_fields_match_tritons_generated_module() -> None:
    """Every field the adapter declares has Triton's number, type and cardinality."""
    ours = v2_grpc.ModelInferRequest.DESCRIPTOR.file
    theirs = pb.DESCRIPTOR
    pairs = {
        "InferParameter": "InferParameter",
        "InferTensorContents": "InferTensorContents",
        "Tensor": "ModelInferRequest.InferInputTensor",
        "ModelInferRequest": "ModelInferRequest",
        "ModelInferResponse": "ModelInferResponse",
        "ModelStreamInferResponse": "ModelStreamInferResponse",
    }
    for name, full in pairs.items():
        mine = ours.pool.FindMessageTypeByName(f"inference.{name}")
        reference = theirs.pool.FindMessageTypeByName(f"inference.{full}")
        for field in mine.fields:
            other = reference.fields_by_name[field.name]
            assert (field.number, field.type, field.is_repeated) == (
                other.number,
                other.type,
                other.is_repeated,
            ), f"{name}.{field.name}"
    output = theirs.pool.FindMessageTypeByName("inference.ModelInferResponse.InferOutputTensor")
    tensor = ours.pool.FindMessageTypeByName("inference.Tensor")
    for field in tensor.fields:
        assert output.fields_by_name[field.name].number == field.number


# --------------------------------------------------------------------------- examples


def test_tritonclient_request_gives_the_http_records(make_spec: MakeSpec) -> None:
    spec = make_spec(IRIS_FEATURES, prediction="predict")
    predicted = {"predict": np.array([0, 1], dtype=np.int64)}
    records = v2_grpc.parse(
        grpc_request({"input-0": IRIS}, "req-1"), grpc_response(predicted, raw=False), spec
    )
    assert records == v2.parse(
        json_request({"input-0": IRIS}, "req-1"), json_response(predicted), spec
    )
    assert records[1] == Record(
        features=dict(zip(IRIS_FEATURES, IRIS[1].tolist(), strict=True)),
        outputs={"predict": 1},
        row=1,
        request_id="req-1",
    )


def test_triton_stream_responses_are_unwrapped() -> None:
    request = grpc_request({"x": np.array([1.5, 2.5], dtype=np.float32)})
    reply = grpc_response(
        {"y": np.array([1, 0], dtype=np.int64)}, raw=True, response_id="r", stream=True
    )
    records = v2_grpc.parse(request, reply, None)
    assert [(r.outputs, r.request_id) for r in records] == [({"y": 1}, "r"), ({"y": 0}, "r")]


def test_bytes_contents_become_strings_and_non_utf8_is_left_out() -> None:
    words = np.array([b"travel", "caf\u00e9".encode(), b"\xff"], dtype=object)
    for request in (grpc_request({"merchant": words}), typed_request({"merchant": words})):
        assert [r.features for r in v2_grpc.parse(request, b"", None)] == [
            {"merchant": "travel"},
            {"merchant": "café"},
            {},
        ]


def test_fp16_travels_raw() -> None:
    half = np.array([0.5, -3.0], dtype=np.float16)
    records = v2_grpc.parse(grpc_request({"h": half}), b"", None)
    assert [r.features for r in records] == [{"h": 0.5}, {"h": -3.0}]


def _request_with(**fields: Any) -> bytes:
    message = pb.ModelInferRequest(model_name="m")
    tensor = message.inputs.add(
        name=fields.pop("name", "x"), datatype=fields.pop("datatype", "FP32")
    )
    tensor.shape.extend(fields.pop("shape", [2]))
    if "fp32" in fields:
        tensor.contents.fp32_contents.extend(fields.pop("fp32"))
    if "raw" in fields:
        message.raw_input_contents.extend(fields.pop("raw"))
    if "region" in fields:
        tensor.parameters["shared_memory_region"].string_param = fields.pop("region")
    return bytes(message.SerializeToString())


@pytest.mark.parametrize(
    ("request_bytes", "reason"),
    [
        (b"\xff\xff\xff", "request is not a ModelInferRequest"),
        (_request_with(name=""), r"inputs\[0\]\.name: required field is missing"),
        (_request_with(fp32=[1.0]), r"inputs\[0\]\.data: 1 values do not fill shape \[2\]"),
        (_request_with(raw=[b"\x00" * 8, b"\x00"]), "raw_input_contents: 2 entries for 1 inputs"),
        (_request_with(raw=[b"\x00" * 7]), r"inputs\[0\]: 7 bytes are not a whole number of FP32"),
        (_request_with(datatype="FP16", fp32=[1.0, 2.0]), r"FP16 and BF16 travel only as raw"),
        (_request_with(region="r0"), r"inputs\[0\]\.parameters\.shared_memory_region"),
    ],
)
def test_broken_requests_name_the_field(request_bytes: bytes, reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason):
        v2_grpc.parse(request_bytes, b"", None)


def test_a_broken_response_leaves_records_without_outputs() -> None:
    request = grpc_request({"x": np.array([1, 2], dtype=np.int32)})
    good = grpc_response({"y": np.array([7, 8], dtype=np.int64)}, raw=True)
    for reply in (b"", b"\xff\x01", good[:-3]):
        assert [r.outputs for r in v2_grpc.parse(request, reply, None)] == [{}, {}]
    # One unreadable output leaves the others.
    mixed = pb.ModelInferResponse()
    mixed.ParseFromString(grpc_response({"a": np.array([1, 2]), "b": np.array([3, 4])}, raw=False))
    mixed.outputs[0].datatype = "FP16"  # not allowed in typed contents
    assert [r.outputs for r in v2_grpc.parse(request, mixed.SerializeToString(), None)] == [
        {"b": 3},
        {"b": 4},
    ]


def test_only_the_inference_methods_are_read() -> None:
    request = grpc_request({"x": np.array([1], dtype=np.int32)})
    assert parse_exchange("v2-grpc", INFER, request, b"", None)[0] == "v2-grpc"
    assert parse_exchange("auto", INFER, request, b"", None)[0] == "v2-grpc"
    stream = "/inference.GRPCInferenceService/ModelStreamInfer"
    assert parse_exchange("auto", stream, request, b"", None)[0] == "v2-grpc"
    with pytest.raises(ProtocolError, match=r"gRPC method /tensorflow\.serving\.PredictionService"):
        parse_exchange(
            "v2-grpc", "/tensorflow.serving.PredictionService/Predict", request, b"", None
        )


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        ("ModelInfer", True),
        ("ModelStreamInfer", True),
        ("ServerLive", False),
        ("ServerReady", False),
        ("ModelReady", False),
        ("ServerMetadata", False),
        ("ModelMetadata", False),
        ("ModelConfig", False),
        ("RepositoryIndex", False),
        ("SystemSharedMemoryRegister", False),
    ],
)
def test_grpc_methods_that_are_inferences(method: str, expected: bool) -> None:
    assert is_inference("v2-grpc", "POST", f"/inference.GRPCInferenceService/{method}") is expected


# --------------------------------------------------------------------------- properties

_NUMPY = {
    "BOOL": np.bool_, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
    "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
    "FP32": np.float32, "FP64": np.float64,
}  # fmt: skip


@st.composite
def tensors(draw: st.DrawFn) -> np.ndarray:
    datatype = draw(st.sampled_from([*_NUMPY, "BYTES"]))
    shape = draw(st.sampled_from([(3,), (2, 2), (1, 5), (2, 1, 3)]))
    size = int(np.prod(shape))
    if datatype == "BYTES":
        words = draw(st.lists(st.text(max_size=5), min_size=size, max_size=size))
        return np.array([w.encode() for w in words], dtype=object).reshape(shape)
    elements = None
    if datatype.startswith("FP"):
        elements = st.floats(allow_nan=False, allow_infinity=False, width=32)
    return draw(hnp.arrays(_NUMPY[datatype], shape, elements=elements))


@settings(max_examples=150, deadline=None)
@given(
    inputs=st.lists(tensors(), min_size=1, max_size=3),
    outputs=st.lists(tensors(), max_size=2),
    raw_outputs=st.booleans(),
    typed_inputs=st.booleans(),
    request_id=st.sampled_from(["", "req-1"]),
)
def test_grpc_and_json_give_the_same_records(
    inputs: list[np.ndarray],
    outputs: list[np.ndarray],
    raw_outputs: bool,
    typed_inputs: bool,
    request_id: str,
) -> None:
    n = inputs[0].shape[0]
    named_in = {f"in{i}": t for i, t in enumerate(inputs) if t.shape[0] == n}
    named_out = {f"out{i}": t for i, t in enumerate(outputs)}
    request = (typed_request if typed_inputs else grpc_request)(named_in, request_id)
    reply = grpc_response(named_out, raw=raw_outputs)

    expected = v2.parse(json_request(named_in, request_id), json_response(named_out), None)
    assert v2_grpc.parse(request, reply, None) == expected


@settings(max_examples=300, deadline=None)
@given(request=st.binary(max_size=120), response=st.binary(max_size=120))
def test_any_bytes_give_records_or_a_protocol_error(request: bytes, response: bytes) -> None:
    try:
        records = v2_grpc.parse(request, response, None)
    except ProtocolError:
        return
    assert all(isinstance(r, Record) for r in records)
