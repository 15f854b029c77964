"""Triton's binary tensor extension in the v2 adapter, on bodies `tritonclient` itself builds.

`tritonclient.http.InferenceServerClient.generate_request_body` is the code a client runs
to put a request on the wire (a JSON header, then the raw tensors); responses are built as
Triton's binary_data extension describes them (a JSON header whose outputs carry
`binary_data_size`, then their bytes in order), from numpy's own `tobytes()`.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import tritonclient.http as triton
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from tritonclient.utils import serialize_byte_tensor

from mlwarden.protocols import detect_protocol, parse_exchange, v2
from mlwarden.records import ProtocolError, Record
from mlwarden.spec import ObservedModelSpec

MakeSpec = Callable[..., ObservedModelSpec]

IRIS = np.array([[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3]], dtype=np.float32)
IRIS_FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def request_body(arrays: dict[str, np.ndarray], *, binary: bool, request_id: str = "") -> bytes:
    """What tritonclient sends for these inputs, binary or JSON."""
    inputs = []
    for name, array in arrays.items():
        datatype = "BYTES" if array.dtype == object else _triton_dtype(array)
        tensor = triton.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array, binary_data=binary)
        inputs.append(tensor)
    body, _ = triton.InferenceServerClient.generate_request_body(inputs, request_id=request_id)
    return bytes(body) if not isinstance(body, str) else body.encode()


def _triton_dtype(array: np.ndarray) -> str:
    from tritonclient.utils import np_to_triton_dtype

    return str(np_to_triton_dtype(array.dtype))


def response_body(arrays: dict[str, np.ndarray], *, binary: set[str], response_id: str) -> bytes:
    """A v2 response as a server writes it, the outputs named in `binary` as raw bytes."""
    outputs: list[dict[str, Any]] = []
    tail = b""
    for name, array in arrays.items():
        datatype = "BYTES" if array.dtype == object else _triton_dtype(array)
        out: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        if name in binary:
            raw = (
                serialize_byte_tensor(array).item()
                if array.dtype == object
                else array.astype(array.dtype.newbyteorder("<")).tobytes()
            )
            out["parameters"] = {"binary_data_size": len(raw)}
            tail += raw
        else:
            values = array.flatten().tolist()
            out["data"] = [v.decode() if isinstance(v, bytes) else v for v in values]
        outputs.append(out)
    header = json.dumps({"model_name": "m", "id": response_id, "outputs": outputs}).encode()
    return header + tail


def test_tritonclient_binary_request_gives_the_json_records(make_spec: MakeSpec) -> None:
    spec = make_spec(IRIS_FEATURES, prediction="predict")
    reply = response_body(
        {"predict": np.array([0, 1], dtype=np.int64)}, binary={"predict"}, response_id="r-1"
    )
    plain = reply_json = response_body(
        {"predict": np.array([0, 1], dtype=np.int64)}, binary=set(), response_id="r-1"
    )
    binary_body = request_body({"input-0": IRIS}, binary=True)
    json_body = request_body({"input-0": IRIS}, binary=False)
    assert b'"binary_data_size":32' in binary_body
    assert binary_body.endswith(IRIS.tobytes())

    from_binary = v2.parse(binary_body, reply, spec)
    from_json = v2.parse(json_body, reply_json, spec)

    assert from_binary == from_json == v2.parse(binary_body, plain, spec)
    assert from_binary[1] == Record(
        features=dict(zip(IRIS_FEATURES, IRIS[1].tolist(), strict=True)),
        outputs={"predict": 1},
        row=1,
        request_id="r-1",
    )


def test_auto_detection_reads_a_binary_body_as_v2() -> None:
    body = request_body({"x": np.array([1, 2], dtype=np.int32)}, binary=True)
    assert detect_protocol("/v2/models/m/infer", body, None) == "v2"
    assert detect_protocol("/", body, None) == "v2"
    name, records = parse_exchange("auto", "/v2/models/m/infer", body, b"", None)
    assert name == "v2"
    assert [r.features for r in records] == [{"x": 1}, {"x": 2}]


def test_several_binary_inputs_take_their_bytes_in_header_order() -> None:
    body = request_body(
        {
            "a": np.array([[1, 2], [3, 4]], dtype=np.int16),
            "b": np.array([True, False]),
            "c": np.array([0.5, -1.25], dtype=np.float16),
        },
        binary=True,
    )
    records = v2.parse(body, b"", None)
    assert [r.features for r in records] == [
        {"a_0": 1, "a_1": 2, "b": True, "c": 0.5},
        {"a_0": 3, "a_1": 4, "b": False, "c": -1.25},
    ]


def test_bytes_elements_become_strings_and_non_utf8_ones_are_left_out() -> None:
    words = np.array([b"grocery", "caf\u00e9".encode(), b"\xff\xfe"], dtype=object)
    body = request_body({"merchant": words}, binary=True)
    records = v2.parse(body, b"", None)
    assert [r.features for r in records] == [{"merchant": "grocery"}, {"merchant": "café"}, {}]


def test_mixed_json_and_binary_tensors_and_binary_outputs() -> None:
    header = {
        "id": "req-7",
        "inputs": [
            {"name": "amount", "shape": [2], "datatype": "FP64", "data": [12.5, 99.0]},
            {"name": "count", "shape": [2], "datatype": "UINT32",
             "parameters": {"binary_data_size": 8}},
        ],
    }  # fmt: skip
    body = json.dumps(header).encode() + struct.pack("<2I", 3, 4000000000)
    reply = response_body(
        {
            "label": np.array([b"fraud", b"ok"], dtype=object),
            "proba": np.array([[0.9, 0.1], [0.2, 0.8]], dtype=np.float64),
        },
        binary={"label", "proba"},
        response_id="",
    )
    records = v2.parse(body, reply, None)
    assert records == [
        Record(
            features={"amount": 12.5, "count": 3},
            outputs={"label": "fraud", "proba_0": 0.9, "proba_1": 0.1},
            row=0,
            request_id="req-7",
        ),
        Record(
            features={"amount": 99.0, "count": 4000000000},
            outputs={"label": "ok", "proba_0": 0.2, "proba_1": 0.8},
            row=1,
            request_id="req-7",
        ),
    ]


def test_bf16_is_the_top_half_of_an_fp32() -> None:
    values = np.array([1.5, -2.0, 3.140625], dtype=np.float32)
    bf16 = b"".join(v.tobytes()[2:] for v in values)  # little-endian: the high two bytes
    header = {
        "inputs": [{"name": "x", "shape": [3], "datatype": "BF16",
                    "parameters": {"binary_data_size": 6}}]
    }  # fmt: skip
    records = v2.parse(json.dumps(header).encode() + bf16, b"", None)
    assert [r.features["x"] for r in records] == [1.5, -2.0, 3.140625]


def _header(size: int, datatype: str = "INT32", shape: list[int] | None = None) -> bytes:
    tensor = {
        "name": "x",
        "shape": shape or [2],
        "datatype": datatype,
        "parameters": {"binary_data_size": size},
    }
    return json.dumps({"inputs": [tensor]}).encode()


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (_header(8) + b"\x00" * 4, r"\[0\]\.parameters\.binary_data_size: 8 bytes, but only 4"),
        (_header(8) + b"\x00" * 12, "binary parts add up to 8 bytes, but 12 follow the JSON"),
        (_header(7) + b"\x00" * 7, r"inputs\[0\]: 7 bytes are not a whole number of INT32"),
        (_header(8, "INT64") + b"\x00" * 8, r"inputs\[0\]\.data: 1 values do not fill shape \[2\]"),
        (_header(8, "COMPLEX") + b"\x00" * 8, r"inputs\[0\]\.datatype: must be one of BOOL"),
        (_header(3, "BYTES", [1]) + b"\x05\x00\x00", r"BYTES element 0 has a cut-off length"),
        (_header(6, "BYTES", [1]) + b"\x05\x00\x00\x00ab", r"claims 5 bytes, 2 remain"),
        (_header(-1) + b"", r"binary_data_size: must be a non-negative integer, got -1"),
        (b'{"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", '
         b'"parameters": {"shared_memory_region": "r0", "binary_data_size": 0}}]}',
         r"inputs\[0\]\.parameters\.shared_memory_region: the data is in a shared-memory"),
        (b'{"inputs": [{"parameters": {"binary_data_size": 1}}', "does not start with a JSON"),
    ],
)  # fmt: skip
def test_broken_binary_requests_name_the_field(body: bytes, reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason):
        v2.parse(body, b"", None)


def test_a_plain_body_that_mentions_the_key_is_still_read() -> None:
    body = (
        b'{"inputs": [{"name": "binary_data_size", "shape": [1], "datatype": "FP32", '
        b'"data": [1]}]}\n'
    )
    assert [r.features for r in v2.parse(body, b"", None)] == [{"binary_data_size": 1}]


def test_a_broken_binary_response_leaves_records_without_outputs() -> None:
    body = request_body({"x": np.array([1, 2], dtype=np.int32)}, binary=True)
    good = response_body({"y": np.array([7, 8], dtype=np.int64)}, binary={"y"}, response_id="r")
    for reply in (good[:-3], good + b"junk", b"\xff" + good, good.replace(b"INT64", b"NOPE")):
        records = v2.parse(body, reply, None)
        assert [r.features for r in records] == [{"x": 1}, {"x": 2}]
        assert all(r.outputs == {} for r in records)
    assert [r.outputs for r in v2.parse(body, good, None)] == [{"y": 7}, {"y": 8}]


# --------------------------------------------------------------------------- properties

NUMERIC = ["BOOL", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64",
           "FP16", "FP32", "FP64"]  # fmt: skip
_NUMPY = {
    "BOOL": np.bool_, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
    "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
    "FP16": np.float16, "FP32": np.float32, "FP64": np.float64,
}  # fmt: skip


@st.composite
def tensors(draw: st.DrawFn) -> np.ndarray:
    datatype = draw(st.sampled_from([*NUMERIC, "BYTES"]))
    shape = draw(st.sampled_from([(3,), (2, 2), (1, 5), (2, 1, 3)]))
    if datatype == "BYTES":
        words = draw(
            st.lists(
                st.text(max_size=5), min_size=int(np.prod(shape)), max_size=int(np.prod(shape))
            )
        )
        return np.array([w.encode() for w in words], dtype=object).reshape(shape)
    elements = None
    if datatype.startswith("FP"):
        # JSON cannot carry NaN or infinities in what tritonclient writes; binary can.
        elements = st.floats(
            allow_nan=False, allow_infinity=False, width=16 if datatype == "FP16" else 32
        )
    return draw(hnp.arrays(_NUMPY[datatype], shape, elements=elements))


@settings(max_examples=150, deadline=None)
@given(
    inputs=st.lists(tensors(), min_size=1, max_size=3),
    outputs=st.lists(tensors(), min_size=0, max_size=2),
    binary_outputs=st.booleans(),
    request_id=st.sampled_from(["", "req-1"]),
)
def test_binary_and_json_bodies_give_the_same_records(
    inputs: list[np.ndarray],
    outputs: list[np.ndarray],
    binary_outputs: bool,
    request_id: str,
) -> None:
    # One batch size for every tensor of the request, as a model would require.
    n = inputs[0].shape[0]
    inputs = [t for t in inputs if t.shape[0] == n]
    named_in = {f"in{i}": t for i, t in enumerate(inputs)}
    named_out = {f"out{i}": t for i, t in enumerate(outputs)}
    binary = request_body(named_in, binary=True, request_id=request_id)
    plain = request_body(named_in, binary=False, request_id=request_id)
    reply_binary = response_body(
        named_out, binary=set(named_out) if binary_outputs else set(), response_id=""
    )
    reply_plain = response_body(named_out, binary=set(), response_id="")

    assert v2.parse(binary, reply_binary, None) == v2.parse(plain, reply_plain, None)


@settings(max_examples=200, deadline=None)
@given(header=tensors(), tail=st.binary(max_size=64), cut=st.integers(min_value=0, max_value=400))
def test_any_binary_body_gives_records_or_a_protocol_error(
    header: np.ndarray, tail: bytes, cut: int
) -> None:
    body = request_body({"x": header}, binary=True) + tail
    for candidate in (body, body[:cut], body[cut:]):
        try:
            records = v2.parse(candidate, candidate, None)
        except ProtocolError:
            continue
        assert all(isinstance(r, Record) for r in records)
