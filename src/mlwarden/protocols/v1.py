"""KServe v1 and TF-Serving REST `:predict`: instances (or columnar inputs) in, one Record per row.

Request forms (TF-Serving REST API):

- row form `{"instances": [...]}`, one element per row;
- columnar form `{"inputs": {"a": [...], "b": [...]}}`, one list per named input,
  each with one element per row, or `{"inputs": [...]}`, the rows of a single
  unnamed input.

How a row becomes features:

- a list is positional: its cells take the spec's feature names when the spec
  declares exactly as many, else `f0`, `f1`, ...; a cell that is itself a list
  or an object (an image row, say) is dropped;
- an object's keys are feature names; a value that is an object or a list is
  flattened one level with dotted names (`merchant.category`, `signal.0`), and
  anything deeper is dropped, as is a binary value `{"b64": "..."}` (also when
  it is the whole instance);
- a scalar is one feature, named by the spec's feature when it declares exactly
  one, else `input`.

Response forms: `{"predictions": [...]}` for the row form, `{"outputs": ...}`
for the columnar form (an object of named outputs, or a list). Per row, a scalar
prediction is named `spec.prediction.name` (else `prediction`), a list gives
`prediction_0`, `prediction_1`, ..., and an object gives its keys, flattened as
for requests. A response that is not JSON, has neither field, or has a number
of rows other than the request's leaves the records without outputs.

Neither protocol carries a request id in the body, so `Record.request_id` is None.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Final

from mlwarden.protocols.json_paths import is_scalar, load_request, load_response
from mlwarden.records import ProtocolError, Record, Value
from mlwarden.records import json_kind as kind_of
from mlwarden.spec import ObservedModelSpec

_SCALAR_FEATURE: Final = "input"
_DEFAULT_OUTPUT: Final = "prediction"


def parse(request: bytes, response: bytes, spec: ObservedModelSpec | None) -> list[Record]:
    """One Record per instance (or per row of the columnar inputs)."""
    body = load_request(request)
    if not isinstance(body, dict):
        raise ProtocolError(
            f"request body must be a JSON object with instances or inputs, got {kind_of(body)}"
        )
    declared = spec.feature_names if spec is not None else ()
    if "instances" in body:
        instances = body["instances"]
        if not isinstance(instances, list):
            raise ProtocolError(f"instances: must be a list, got {kind_of(instances)}")
        features = [_row(x, declared) for x in instances]
    elif "inputs" in body:
        inputs = body["inputs"]
        if isinstance(inputs, dict):
            features = [_object_cells(r) for r in _columns_to_rows(inputs, "inputs")]
        elif isinstance(inputs, list):
            features = [_row(x, declared) for x in inputs]
        else:
            raise ProtocolError(
                "inputs: must be an object of named inputs or a list of rows, "
                f"got {kind_of(inputs)}"
            )
    else:
        raise ProtocolError("instances: required field is missing (or inputs, the columnar form)")
    n = len(features)
    outputs = _outputs(load_response(response), n, spec) if n else None
    return [
        Record(features=f, outputs=outputs[i] if outputs else {}, row=i)
        for i, f in enumerate(features)
    ]


@lru_cache(maxsize=64)
def _positional(count: int) -> tuple[str, ...]:
    return tuple(f"f{i}" for i in range(count))


def _row(instance: object, declared: tuple[str, ...]) -> dict[str, Value]:
    if isinstance(instance, dict):
        return {} if _is_blob(instance) else _object_cells(instance)
    if isinstance(instance, list):
        names = declared if len(declared) == len(instance) else _positional(len(instance))
        return {name: v for name, v in zip(names, instance, strict=True) if is_scalar(v)}
    if is_scalar(instance):
        return {declared[0] if len(declared) == 1 else _SCALAR_FEATURE: instance}
    return {}


def _is_blob(value: dict[str, Any]) -> bool:
    # TF-Serving's binary value `{"b64": "..."}` (an image, audio): not a feature to watch.
    return len(value) == 1 and "b64" in value


def _object_cells(obj: dict[str, Any]) -> dict[str, Value]:
    cells: dict[str, Value] = {}
    for key, value in obj.items():
        if is_scalar(value):
            cells[key] = value
        elif isinstance(value, dict):
            if _is_blob(value):
                continue
            for k, v in value.items():
                if is_scalar(v):
                    cells[f"{key}.{k}"] = v
        elif isinstance(value, list):
            for i, v in enumerate(value):
                if is_scalar(v):
                    cells[f"{key}.{i}"] = v
    return cells


def _columns_to_rows(columns: dict[str, Any], where: str) -> list[dict[str, Any]]:
    """Turn `{"a": [a0, a1], "b": [b0, b1]}` into `[{"a": a0, "b": b0}, {"a": a1, "b": b1}]`."""
    n: int | None = None
    first = ""
    for key, column in columns.items():
        if not isinstance(column, list):
            raise ProtocolError(
                f"{where}.{key}: must be a list with one value per row, got {kind_of(column)}"
            )
        if n is None:
            n, first = len(column), key
        elif len(column) != n:
            raise ProtocolError(f"{where}.{key}: {len(column)} rows, but {where}.{first} has {n}")
    if n is None:
        return []
    return [{key: column[i] for key, column in columns.items()} for i in range(n)]


def _outputs(reply: Any, n: int, spec: ObservedModelSpec | None) -> list[dict[str, Value]] | None:
    if not isinstance(reply, dict):
        return None
    name = spec.prediction.name if spec is not None and spec.prediction else _DEFAULT_OUTPUT
    rows = reply.get("predictions")
    if rows is None:
        rows = reply.get("outputs")
        if isinstance(rows, dict):
            try:
                rows = _columns_to_rows(rows, "outputs")
            except ProtocolError:
                return None
    # Rows that do not line up with the request's cannot be attributed to them.
    if not isinstance(rows, list) or len(rows) != n:
        return None
    return [_output_row(r, name) for r in rows]


def _output_row(prediction: object, name: str) -> dict[str, Value]:
    if is_scalar(prediction):
        return {name: prediction}
    if isinstance(prediction, list):
        return {f"{_DEFAULT_OUTPUT}_{i}": v for i, v in enumerate(prediction) if is_scalar(v)}
    if isinstance(prediction, dict):
        return _object_cells(prediction)
    return {}
