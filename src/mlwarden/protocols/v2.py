"""Open Inference Protocol v2 (KServe v2, MLServer, Triton): tensors in, one Record per row out.

Request `{"id"?, "inputs": [{"name", "shape", "datatype", "data", "parameters"?}], ...}`,
response `{"model_name", "id"?, "outputs": [{"name", "shape", "datatype", "data"}]}`.
`data` may be flat (row-major) or nested; it is flattened and read by `shape`.

Rows and columns:

- The batch size N is `shape[0]` (a scalar tensor, shape `[]`, is one row); every
  input tensor must agree on it. N rows give N records, `Record.row` 0..N-1.
- A tensor with one value per row (`[N]`, `[N, 1]`) is one column named by the
  tensor.
- A wider tensor (`[N, F]`, or `[N, A, B]` flattened row-major to A*B values per
  row) gives columns `{tensor}_{i}`, except: when it is the only input tensor
  wider than one value, is of rank 2, and the spec's features not named by
  other input tensors are exactly F, its columns take those feature names in
  order.
- Outputs follow the same rules (`predict_proba` of shape `[N, 2]` gives
  `predict_proba_0`, `predict_proba_1`), without the feature mapping. When the
  spec names a prediction that is not an output tensor, and exactly one output
  tensor has one value per row, that tensor's column takes the prediction's name.
- BYTES elements arrive in JSON as strings and are kept as strings.

Cells are JSON scalars; a cell holding an object (or a list left over by a ragged
nesting) is dropped.

Errors: a request that breaks the protocol (no `inputs`, a tensor without a
name, data that does not fill its shape) raises `ProtocolError` naming the field.
The response is read leniently: when it is not JSON or has no `outputs` (an
error body), records carry no outputs, and an output tensor that is malformed
or has a batch size other than N is left out. Triton's binary tensor extension
(a JSON header followed by raw bytes) is not JSON and is not supported.

`Record.request_id` is the response's `id`, else the request's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from mlwarden.protocols.json_paths import is_scalar, load_request, load_response
from mlwarden.records import ProtocolError, Record, Value
from mlwarden.records import json_kind as kind_of
from mlwarden.spec import ObservedModelSpec


@dataclass(frozen=True, slots=True)
class _Tensor:
    name: str
    shape: list[int]
    values: list[Any]  # flat, row-major
    rows: int
    width: int  # values per row


def parse(request: bytes, response: bytes, spec: ObservedModelSpec | None) -> list[Record]:
    """One Record per row of the request's batch, with the response's outputs for that row."""
    body = load_request(request)
    if not isinstance(body, dict):
        raise ProtocolError(f"request body must be a JSON object with inputs, got {kind_of(body)}")
    raw_inputs = body.get("inputs")
    if raw_inputs is None:
        raise ProtocolError("inputs: required field is missing")
    if not isinstance(raw_inputs, list):
        raise ProtocolError(f"inputs: must be a list of tensors, got {kind_of(raw_inputs)}")
    tensors = [_read_tensor(t, f"inputs[{i}]") for i, t in enumerate(raw_inputs)]
    if not tensors:
        return []
    n = tensors[0].rows
    for i, t in enumerate(tensors[1:], start=1):
        if t.rows != n:
            raise ProtocolError(
                f"inputs[{i}].shape: batch size {t.rows} does not match inputs[0] ({n})"
            )
    features: list[dict[str, Value]] = [{} for _ in range(n)]
    for tensor, names in zip(tensors, _input_columns(tensors, spec), strict=True):
        _fill(features, tensor, names)

    request_id = _id(body)
    outputs: list[dict[str, Value]] | None = None
    reply = load_response(response)
    if isinstance(reply, dict):
        request_id = _id(reply) or request_id
        outputs = _outputs(reply, n, spec)
    return [
        Record(features=f, outputs=outputs[i] if outputs else {}, row=i, request_id=request_id)
        for i, f in enumerate(features)
    ]


def _id(body: dict[str, Any]) -> str | None:
    value = body.get("id")
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _show(value: object) -> str:
    # Only the head of a value goes into a reason: a hostile shape may be megabytes long.
    if isinstance(value, list):
        items = [json.dumps(v) if is_scalar(v) else kind_of(v) for v in value[:8]]
        text = "[" + ", ".join(items) + (", ...]" if len(value) > 8 else "]")
    else:
        text = json.dumps(value) if is_scalar(value) else kind_of(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _read_tensor(raw: object, where: str) -> _Tensor:
    if not isinstance(raw, dict):
        raise ProtocolError(f"{where}: must be a tensor object, got {kind_of(raw)}")
    name = raw.get("name")
    if name is None:
        raise ProtocolError(f"{where}.name: required field is missing")
    if not isinstance(name, str) or not name:
        raise ProtocolError(f"{where}.name: must be a non-empty string, got {kind_of(name)}")
    shape = raw.get("shape")
    if shape is None:
        raise ProtocolError(f"{where}.shape: required field is missing")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise ProtocolError(
            f"{where}.shape: must be a list of non-negative integers, got {_show(shape)}"
        )
    data = raw.get("data")
    if data is None:
        raise ProtocolError(f"{where}.data: required field is missing")
    if not isinstance(data, list):
        raise ProtocolError(f"{where}.data: must be a list, got {kind_of(data)}")
    values = _flatten(data)
    if not _fills(shape, len(values)):
        raise ProtocolError(f"{where}.data: {len(values)} values do not fill shape {_show(shape)}")
    rows = shape[0] if shape else 1
    width = len(values) // rows if rows else 0
    if rows and not width:
        # Rows without values would be records without features; a shape such as
        # [10**12, 0] must not become that many records.
        raise ProtocolError(f"{where}.shape: {_show(shape)} holds no values for its {rows} rows")
    return _Tensor(name=name, shape=shape, values=values, rows=rows, width=width)


def _fills(shape: list[int], count: int) -> bool:
    """Whether `count` values exactly fill `shape`."""
    if 0 in shape:
        return count == 0
    size = 1
    for dim in shape:
        size *= dim
        # Multiplying a hostile shape out in full could build an enormous integer;
        # stop as soon as the product passes the number of values actually sent.
        if size > count:
            return False
    return size == count


def _flatten(data: list[Any]) -> list[Any]:
    if not any(type(x) is list for x in data):
        return data
    out: list[Any] = []
    # Iterative, not recursive: nesting depth is chosen by the client.
    stack = [iter(data)]
    while stack:
        for x in stack[-1]:
            if type(x) is list:
                stack.append(iter(x))
                break
            out.append(x)
        else:
            stack.pop()
    return out


def _indexed(tensor: _Tensor) -> list[str]:
    if tensor.width == 1:
        return [tensor.name]
    return [f"{tensor.name}_{i}" for i in range(tensor.width)]


def _input_columns(tensors: list[_Tensor], spec: ObservedModelSpec | None) -> list[list[str]]:
    wide = [t for t in tensors if t.width > 1]
    declared = spec.feature_names if spec is not None else ()
    columns: list[list[str]] = []
    for t in tensors:
        if declared and len(wide) == 1 and t is wide[0] and len(t.shape) == 2:
            others = {u.name for u in tensors if u is not t}
            remaining = [f for f in declared if f not in others]
            if len(remaining) == t.width:
                columns.append(remaining)
                continue
        columns.append(_indexed(t))
    return columns


def _fill(rows: list[dict[str, Value]], tensor: _Tensor, names: list[str]) -> None:
    values = tensor.values
    if tensor.width == 1:
        name = names[0]
        for row, value in zip(rows, values, strict=True):
            if is_scalar(value):
                row[name] = value
        return
    width = tensor.width
    for r, row in enumerate(rows):
        base = r * width
        for j, name in enumerate(names):
            value = values[base + j]
            if is_scalar(value):
                row[name] = value


def _outputs(
    reply: dict[str, Any], n: int, spec: ObservedModelSpec | None
) -> list[dict[str, Value]] | None:
    raw = reply.get("outputs")
    if not isinstance(raw, list):
        return None
    tensors: list[_Tensor] = []
    for i, t in enumerate(raw):
        try:
            tensor = _read_tensor(t, f"outputs[{i}]")
        except ProtocolError:
            continue
        if tensor.rows == n:
            tensors.append(tensor)
    if not tensors:
        return None
    columns = [_indexed(t) for t in tensors]
    prediction = spec.prediction.name if spec is not None and spec.prediction else None
    if prediction and all(t.name != prediction for t in tensors):
        narrow = [i for i, t in enumerate(tensors) if t.width == 1]
        taken = {name for names in columns for name in names}
        if len(narrow) == 1 and prediction not in taken:
            columns[narrow[0]] = [prediction]
    rows: list[dict[str, Value]] = [{} for _ in range(n)]
    for tensor, names in zip(tensors, columns, strict=True):
        _fill(rows, tensor, names)
    return rows
