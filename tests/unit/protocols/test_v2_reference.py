"""Property test: the v2 adapter's records equal a plain cell-by-cell reading of the payload.

`v2.records` takes shortcuts for speed (a row built in one call when every cell is a
scalar, the spec's facts worked out once per spec, one input tensor named without the
general search). The reference below reads the rules of the module docstring the slow,
obvious way, one cell at a time, as the adapter did before those shortcuts; random
valid payloads (several tensors, names that collide, nested or flat data, object and
boolean and null cells, embeddings, output tensors of another batch size) must give
equal records, with the columns in the same order.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from mlwarden.protocols import v2
from mlwarden.records import Record
from mlwarden.spec import ObservedModelSpec

MakeSpec = Callable[..., ObservedModelSpec]

# Tensor and feature names drawn from one small pool, so that they collide: a tensor
# named like a feature, like another tensor's indexed column (`a_0`), or twice.
NAMES = ["a", "b", "a_0", "a_1", "x", "score", "vec"]

cells = (
    st.floats(allow_nan=False, allow_infinity=False, width=64)
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.booleans()
    | st.none()
    | st.text(max_size=4)
    | st.just({"k": 1})  # an object cell: left out
)


@st.composite
def tensors(draw: st.DrawFn, n: int) -> dict[str, Any]:
    name = draw(st.sampled_from(NAMES))
    inner = draw(st.sampled_from([[], [1], [2], [3], [2, 2]]))
    shape = [n, *inner]
    width = 1
    for d in inner:
        width *= d
    rows = draw(st.lists(st.lists(cells, min_size=width, max_size=width), min_size=n, max_size=n))
    data: list[Any] = [v for row in rows for v in row]
    if draw(st.booleans()) and inner:
        data = rows  # nested by row (deeper shapes stay flat within a row)
    return {"name": name, "shape": shape, "datatype": "FP64", "data": data}


@st.composite
def exchanges(draw: st.DrawFn) -> tuple[dict[str, Any], Any, int]:
    n = draw(st.integers(min_value=0, max_value=4))
    inputs = draw(st.lists(tensors(n), min_size=1, max_size=3))
    reply: Any
    kind = draw(st.sampled_from(["outputs", "outputs", "none", "error"]))
    if kind == "outputs":
        outs = draw(st.lists(tensors(draw(st.sampled_from([n, n, n + 1]))), max_size=3))
        reply = {"id": "r-1", "outputs": outs}
    elif kind == "none":
        reply = {"id": 7}
    else:
        reply = "upstream error"
    return {"id": "q-1", "inputs": inputs}, reply, n


def _flat(data: list[Any]) -> list[Any]:
    out: list[Any] = []
    for x in data:
        out.extend(_flat(x) if isinstance(x, list) else [x])
    return out


def _width(t: dict[str, Any], n: int) -> int:
    return len(_flat(t["data"])) // n if n else 0


def _indexed(t: dict[str, Any], n: int) -> list[str]:
    w = _width(t, n)
    return [t["name"]] if w == 1 else [f"{t['name']}_{i}" for i in range(w)]


def _fill(rows: list[dict[str, Any]], t: dict[str, Any], names: list[str]) -> None:
    values, w = _flat(t["data"]), len(names)
    for r, row in enumerate(rows):
        for j, name in enumerate(names):
            value = values[r * w + j]
            if value is None or isinstance(value, str | int | float):
                row[name] = value


def reference(
    request: dict[str, Any],
    reply: Any,
    n: int,
    features: list[str],
    embeddings: list[str],
    prediction: str | None,
) -> list[Record]:
    """The records the module docstring's rules give, read one cell at a time."""
    vectors: list[dict[str, Any]] = [{} for _ in range(n)]
    output_vectors: list[dict[str, Any]] = [{} for _ in range(n)]
    outputs = reply.get("outputs") if isinstance(reply, dict) else None
    for tensors_, into in ((request["inputs"], vectors), (outputs or [], output_vectors)):
        for t in tensors_:
            if t["name"] in embeddings and t["shape"][0] == n:
                values, w = _flat(t["data"]), _width(t, n)
                for r in range(n):
                    cells_ = values[r * w : (r + 1) * w]
                    if all(type(c) in (int, float) for c in cells_):
                        into[r][t["name"]] = [float(c) for c in cells_]
    inputs = [t for t in request["inputs"] if t["name"] not in embeddings]
    rows: list[dict[str, Any]] = [{} for _ in range(n)]
    wide = [t for t in inputs if _width(t, n) > 1]
    for t in inputs:
        names = _indexed(t, n)
        if features and len(wide) == 1 and t is wide[0] and len(t["shape"]) == 2:
            others = {u["name"] for u in inputs if u is not t}
            remaining = [f for f in features if f not in others]
            if len(remaining) == _width(t, n):
                names = remaining
        _fill(rows, t, names)
    out_rows: list[dict[str, Any]] | None = None
    if outputs is not None:
        kept = [t for t in outputs if t["name"] not in embeddings and t["shape"][0] == n]
        if kept:
            columns = [_indexed(t, n) for t in kept]
            if prediction and all(t["name"] != prediction for t in kept):
                narrow = [i for i, t in enumerate(kept) if _width(t, n) == 1]
                taken = {c for names in columns for c in names}
                if len(narrow) == 1 and prediction not in taken:
                    columns[narrow[0]] = [prediction]
            out_rows = [{} for _ in range(n)]
            for t, names in zip(kept, columns, strict=True):
                _fill(out_rows, t, names)
    request_id = request["id"]
    if isinstance(reply, dict) and reply.get("id") is not None:
        request_id = str(reply["id"])
    return [
        Record(
            features=rows[i],
            outputs=out_rows[i] if out_rows else {},
            row=i,
            request_id=request_id,
            vectors=vectors[i],
            output_vectors=output_vectors[i],
        )
        for i in range(n)
    ]


@settings(max_examples=400)
@given(
    exchange=exchanges(),
    features=st.lists(st.sampled_from(NAMES), unique=True, max_size=4),
    embed=st.booleans(),
    prediction=st.sampled_from([None, "score", "a", "label"]),
    with_spec=st.booleans(),
)
def test_v2_records_equal_a_cell_by_cell_reading(
    make_spec: MakeSpec,
    exchange: tuple[dict[str, Any], Any, int],
    features: list[str],
    embed: bool,
    prediction: str | None,
    with_spec: bool,
) -> None:
    request, reply, n = exchange
    embeddings = ["vec"] if embed and "vec" not in features else []
    spec = make_spec(features, prediction=prediction, embeddings=embeddings) if with_spec else None
    if spec is None:
        features, embeddings, prediction = [], [], None

    got = v2.parse(json.dumps(request).encode(), json.dumps(reply).encode(), spec)
    # Twice with the same spec object: the second call reads the spec's facts from the cache.
    again = v2.parse(json.dumps(request).encode(), json.dumps(reply).encode(), spec)

    want = reference(request, reply, n, features, embeddings, prediction)
    assert got == want
    assert again == want
    for g, w in zip(got, want, strict=True):
        assert list(g.features) == list(w.features)  # the same column order
        assert list(g.outputs) == list(w.outputs)
