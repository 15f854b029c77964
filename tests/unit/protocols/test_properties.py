"""Property tests: adapters never raise anything but ProtocolError, and keep rows and values."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from mlwarden.protocols import ADAPTERS, parse_exchange, v1, v2
from mlwarden.protocols import openai as openai_adapter
from mlwarden.records import ProtocolError, Record
from mlwarden.spec import ObservedModelSpec

MakeSpec = Callable[..., ObservedModelSpec]

# Keys the adapters look for, so that generated JSON reaches past the first check.
KEYS = [
    "inputs", "outputs", "instances", "predictions", "name", "shape", "datatype", "data",
    "id", "parameters", "messages", "content", "role", "text", "type", "prompt", "choices",
    "index", "message", "delta", "finish_reason", "usage", "prompt_tokens", "n", "model",
    "max_tokens", "temperature", "b64", "amount", "merchant", "category", "items", "score",
]  # fmt: skip

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=8)
    | st.sampled_from(KEYS)
)


def _json(max_leaves: int) -> st.SearchStrategy[Any]:
    return st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=4)
            | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=4), inner, max_size=4)
        ),
        max_leaves=max_leaves,
    )


json_values = _json(20)
# Inside the protocol-shaped bodies below, where many fields each draw a value.
small = _json(4)

# Bodies shaped like each protocol, with any part of them wrong.
shapes = st.lists(st.integers(min_value=-1, max_value=4), max_size=3) | small
tensor = st.fixed_dictionaries(
    {},
    optional={
        "name": st.sampled_from(["x", "y", ""]) | small,
        "shape": shapes,
        "datatype": st.sampled_from(["FP32", "BYTES", "BOOL"]),
        "data": st.lists(small, max_size=8) | small,
    },
)


@st.composite
def consistent_tensor(draw: st.DrawFn) -> dict[str, Any]:
    """A tensor whose shape fits its data, so generated bodies reach the row building."""
    data = draw(st.lists(small, min_size=1, max_size=6))
    shape = draw(st.sampled_from([[len(data)], [1, len(data)], [len(data), 1]]))
    return {"name": draw(st.sampled_from(["x", "y"])), "shape": shape, "data": data}


tensor = tensor | consistent_tensor()
v2_like = st.fixed_dictionaries(
    {}, optional={"id": small, "inputs": st.lists(tensor, max_size=3) | small}
) | st.fixed_dictionaries({}, optional={"id": small, "outputs": st.lists(tensor, max_size=3)})
v1_like = st.fixed_dictionaries(
    {},
    optional={
        "instances": st.lists(small, max_size=4) | small,
        "inputs": st.dictionaries(st.sampled_from(["a", "b"]), st.lists(small, max_size=3)) | small,
        "predictions": st.lists(small, max_size=4) | small,
        "outputs": small,
    },
)
openai_like = st.fixed_dictionaries(
    {},
    optional={
        "model": small,
        "messages": st.lists(
            st.fixed_dictionaries({}, optional={"role": small, "content": small}) | small,
            max_size=3,
        )
        | small,
        "prompt": small,
        "n": small,
        "max_tokens": small,
        "id": small,
        "choices": st.lists(
            st.fixed_dictionaries(
                {},
                optional={
                    "index": small,
                    "text": small,
                    "message": small,
                    "delta": small,
                    "finish_reason": small,
                },
            ),
            max_size=3,
        ),
        "usage": small,
    },
)
documents = json_values | v2_like | v1_like | openai_like


@st.composite
def encoded(draw: st.DrawFn) -> bytes:
    """A generated document on the wire: JSON, a server-sent event stream, or cut short."""
    doc = draw(documents)
    text = json.dumps(doc)
    form = draw(st.sampled_from(["json", "sse", "cut"]))
    if form == "sse":
        chunks = [text, *(json.dumps(d) for d in draw(st.lists(documents, max_size=3)))]
        text = "".join(f"data: {c}\n\n" for c in chunks) + draw(
            st.sampled_from(["data: [DONE]", ""])
        )
    if form == "cut":
        text = text[: draw(st.integers(min_value=0, max_value=len(text)))]
    return text.encode()


bodies = st.binary(max_size=200) | encoded()
spec_kinds = st.sampled_from(["none", "features", "json"])


def _spec(make_spec: MakeSpec, kind: str) -> ObservedModelSpec | None:
    if kind == "none":
        return None
    if kind == "features":
        return make_spec(["amount", "merchant_category", "x"], prediction="score")
    return make_spec(
        ["amount", "merchant_category"],
        prediction="score",
        json={
            "requestRows": "inputs",
            "responseRows": "outputs.0.data",
            "features": {"amount": "data.0", "merchant_category": "merchant.category"},
        },
    )


def _check(records: object) -> None:
    assert isinstance(records, list)
    for i, record in enumerate(records):
        assert isinstance(record, Record)
        assert record.row == i
        for cells in (record.features, record.outputs):
            assert all(isinstance(k, str) for k in cells)
            assert all(v is None or isinstance(v, str | int | float) for v in cells.values())
        assert record.request_id is None or isinstance(record.request_id, str)


@given(
    protocol=st.sampled_from(sorted(ADAPTERS)),
    request=bodies,
    response=bodies,
    kind=spec_kinds,
)
def test_adapters_return_records_or_raise_protocol_error(
    make_spec: MakeSpec, protocol: str, request: bytes, response: bytes, kind: str
) -> None:
    try:
        records = ADAPTERS[protocol](request, response, _spec(make_spec, kind))
    except ProtocolError:
        return
    _check(records)


@given(
    path=st.sampled_from(["/", "/v2/models/m/infer", "/v1/models/m:predict", "/v1/completions"])
    | st.text(max_size=20),
    request=bodies,
    response=bodies,
    kind=spec_kinds,
)
def test_parse_exchange_auto_returns_records_or_raises_protocol_error(
    make_spec: MakeSpec, path: str, request: bytes, response: bytes, kind: str
) -> None:
    try:
        name, records = parse_exchange("auto", path, request, response, _spec(make_spec, kind))
    except ProtocolError:
        return
    assert name in ADAPTERS
    _check(records)


cell_values = (
    st.floats(allow_nan=False, width=64)
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.booleans()
    | st.text(max_size=6)
)


@st.composite
def batches(draw: st.DrawFn) -> tuple[int, int, list[list[Any]]]:
    n = draw(st.integers(min_value=1, max_value=12))
    f = draw(st.integers(min_value=1, max_value=6))
    rows = draw(st.lists(st.lists(cell_values, min_size=f, max_size=f), min_size=n, max_size=n))
    return n, f, rows


@given(batch=batches(), nested=st.booleans(), named=st.booleans())
def test_v2_batch_gives_one_record_per_row(
    make_spec: MakeSpec, batch: tuple[int, int, list[list[Any]]], nested: bool, named: bool
) -> None:
    n, f, rows = batch
    data = rows if nested else [v for row in rows for v in row]
    request = {"inputs": [{"name": "x", "shape": [n, f], "datatype": "FP64", "data": data}]}
    response = {
        "id": "r-1",
        "outputs": [{"name": "y", "shape": [n], "datatype": "INT64", "data": list(range(n))}],
    }
    names = [f"feature_{i}" for i in range(f)]
    spec = make_spec(names, prediction="label") if named else None

    records = v2.parse(json.dumps(request).encode(), json.dumps(response).encode(), spec)

    if f == 1:
        names = ["x"]  # one value per row: named by the tensor, whatever the spec says
    elif not named:
        names = [f"x_{i}" for i in range(f)]
    assert len(records) == n
    for i, record in enumerate(records):
        assert record.row == i
        assert record.features == dict(zip(names, rows[i], strict=True))
        assert record.outputs == {"label" if named else "y": i}
        assert record.request_id == "r-1"


@given(batch=batches(), named=st.booleans())
def test_v1_instances_give_one_record_per_row(
    make_spec: MakeSpec, batch: tuple[int, int, list[list[Any]]], named: bool
) -> None:
    n, f, rows = batch
    names = [f"feature_{i}" for i in range(f)]
    spec = make_spec(names, prediction="label") if named else None
    request = json.dumps({"instances": rows}).encode()
    response = json.dumps({"predictions": [[float(i), 1.0 - i] for i in range(n)]}).encode()

    records = v1.parse(request, response, spec)

    if not named:
        names = [f"f{i}" for i in range(f)]
    assert len(records) == n
    for i, record in enumerate(records):
        assert record.row == i
        assert record.features == dict(zip(names, rows[i], strict=True))
        assert record.outputs == {"prediction_0": float(i), "prediction_1": 1.0 - i}


@given(batch=batches())
def test_v1_row_and_columnar_forms_agree(batch: tuple[int, int, list[list[Any]]]) -> None:
    _, f, rows = batch
    instances = [{f"c{j}": row[j] for j in range(f)} for row in rows]
    columns = {f"c{j}": [row[j] for row in rows] for j in range(f)}

    by_row = v1.parse(json.dumps({"instances": instances}).encode(), b"", None)
    by_column = v1.parse(json.dumps({"inputs": columns}).encode(), b"", None)

    assert by_row == by_column


@given(pieces=st.lists(st.text(max_size=10), max_size=8))
def test_openai_stream_folds_like_the_plain_response(pieces: list[str]) -> None:
    request = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()
    text = "".join(pieces)
    plain = {
        "id": "chatcmpl-1",
        "choices": [{"index": 0, "message": {"content": text}, "finish_reason": "stop"}],
    }
    deltas = [{"index": 0, "delta": {"content": p}, "finish_reason": None} for p in pieces]
    chunks = [{"id": "chatcmpl-1", "choices": [d]} for d in deltas]
    chunks.append(
        {"id": "chatcmpl-1", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    )
    stream = "".join(f"data: {json.dumps(c, ensure_ascii=False)}\n\n" for c in chunks)

    from_plain = openai_adapter.parse(request, json.dumps(plain).encode(), None)
    from_stream = openai_adapter.parse(request, (stream + "data: [DONE]\n\n").encode(), None)

    assert from_plain == from_stream
    assert from_plain[0].outputs == {
        "completion_chars": len(text),
        "finish_reason": "stop",
        "refusal": False,
    }


def test_nan_survives_every_json_adapter() -> None:
    # JSON's NaN token is not standard but Python clients send it; it is a quality signal.
    body = b'{"instances": [[NaN]], "amount": NaN}'

    (from_v1,) = v1.parse(body, b"", None)
    (from_json,) = ADAPTERS["json"](body, b"", None)

    for value in (from_v1.features["f0"], from_json.features["amount"]):
        assert isinstance(value, float) and math.isnan(value)


HOSTILE = [
    b"[" * 100_000,  # deeper than the interpreter's stack
    b'{"inputs": ' + b"[" * 5_000 + b"]" * 5_000 + b"}",
    b'{"instances": [' + b"9" * 5_000 + b"]}",  # more digits than int() accepts
    b'{"inputs": [{"name": "x", "shape": [' + b"1000000000000, " * 2_000 + b'1], "data": [1]}]}',
]


def test_hostile_bodies_raise_protocol_error_or_parse() -> None:
    for protocol, adapter in ADAPTERS.items():
        for hostile in HOSTILE:
            try:
                records = adapter(hostile, hostile, None)
            except ProtocolError:
                continue
            assert isinstance(records, list), protocol
