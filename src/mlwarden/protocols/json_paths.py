"""Generic JSON bodies read through dotted field paths, and the JSON reading all adapters share.

The `json` protocol is for model servers that speak no standard protocol. The
ObservedModel says where things are (`spec.capture.json`, see `JsonCapture`):

- `requestRows` points at the list of rows in the request; absent, the body is
  one row when it is an object, the list of rows when it is a list.
- `features` maps a feature name to a path inside one request row; absent, the
  spec's feature names are the paths; with neither (no spec, or a spec without
  features), every top-level scalar field of an object row is a feature.
- `responseRows` and `prediction` do the same for the response. Without a
  `prediction` path the output is read at `spec.prediction.name`; with no
  prediction in the spec either, records carry no outputs. A response row that
  is itself a scalar (a bare `0.87` body, or `{"scores": [0.1, 0.9]}` with
  `responseRows: scores`) is the prediction. The output is named `spec.prediction.name`, else
  `prediction`.

Paths are dotted keys; a segment of ASCII digits indexes a list (`scores.0`).
Keys that contain a dot cannot be addressed, and negative indices are not
supported.

A declared feature whose path is missing from a row, or leads to a list or an
object, is None: that is a data-quality signal for the detector, not a protocol
error. A response row without the prediction path gives no output for that row.
A feature of type `embedding` is the exception: its path leads to a list of
numbers, the row's vector (`Record.vectors`); anything else there gives no vector.

This module also holds what every adapter shares: decoding a request body
(strict: the request is what the model was given, so a body that is not JSON is
a `ProtocolError`) and a response body (lenient: an error page or a truncated
body just means no outputs), and the test for a JSON scalar.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any, Final, TypeGuard

import orjson

from mlwarden.records import ProtocolError, Record, Value
from mlwarden.records import json_kind as kind_of  # re-exported for the other adapters
from mlwarden.spec import JsonCapture, ObservedModelSpec

# Returned by `lookup` for a path that leads nowhere; distinct from a JSON null.
MISSING: Final[Any] = object()

_DEFAULT_OUTPUT: Final = "prediction"


# --------------------------------------------------------------------------- shared JSON helpers


def is_scalar(value: object) -> TypeGuard[Value]:
    """True for a JSON scalar (number, string, boolean, null): what a Record cell may hold."""
    return value is None or isinstance(value, str | int | float)


def load_request(body: bytes) -> Any:
    """Decode a request body; raise `ProtocolError` when it is not UTF-8 JSON."""
    try:
        # orjson first: several times faster, and this runs for every captured request.
        # It refuses what the standard parser still reads (NaN tokens, a byte-order
        # mark, integers beyond 64 bits), and the standard parser words the errors.
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    try:
        # utf-8-sig: a byte-order mark is legal before JSON text and some clients send one.
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"request body is not valid UTF-8 (byte {exc.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        raise ProtocolError(f"request body is not JSON: {exc.msg} at {where}") from None
    except (ValueError, RecursionError) as exc:
        # Integers longer than Python's digit limit (ValueError) and nesting deeper than
        # the interpreter's stack (RecursionError) are JSON the model may accept but we cannot.
        raise ProtocolError(f"request body is JSON this parser cannot hold: {exc}") from None


def load_response(body: bytes) -> Any:
    """Decode a response body; None when it is not JSON (error pages, truncated bodies)."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(body.decode("utf-8-sig"))
    except (ValueError, RecursionError):
        return None


@lru_cache(maxsize=512)
def _segments(path: str) -> tuple[tuple[str, int | None], ...]:
    # Paths come from the spec and are few: split each once, not once per row.
    return tuple(
        (seg, int(seg) if seg.isascii() and seg.isdigit() else None) for seg in path.split(".")
    )


def lookup(value: Any, path: str) -> Any:
    """The value at a dotted path (`merchant.category`, `scores.0`), or `MISSING`."""
    for key, index in _segments(path):
        if isinstance(value, dict):
            value = value.get(key, MISSING)
            if value is MISSING:
                return MISSING
        elif isinstance(value, list) and index is not None and index < len(value):
            value = value[index]
        else:
            return MISSING
    return value


# --------------------------------------------------------------------------- the adapter


def parse(request: bytes, response: bytes, spec: ObservedModelSpec | None) -> list[Record]:
    """One Record per request row, features and prediction read at the spec's field paths."""
    capture = spec.capture.json if spec is not None else None
    rows = _request_rows(load_request(request), capture)
    paths = _feature_paths(spec, capture)
    embeddings = {f.name for f in spec.features if f.type == "embedding"} if spec else set()
    features: list[dict[str, Value]] = []
    vectors: list[dict[str, list[float]]] = []
    for row in rows:
        vectors.append({})
        if paths is None:
            features.append(
                {str(k): v for k, v in row.items() if is_scalar(v)} if isinstance(row, dict) else {}
            )
            continue
        cells: dict[str, Value] = {}
        for name, path in paths.items():
            value = lookup(row, path)
            if name in embeddings:
                if isinstance(value, list) and value and all(map(_is_number, value)):
                    vectors[-1][name] = [float(v) for v in value]
                continue
            cells[name] = value if is_scalar(value) else None
        features.append(cells)
    outputs = _outputs(response, len(rows), spec, capture)
    return [
        Record(features=f, outputs=outputs[i] if outputs else {}, row=i, vectors=vectors[i])
        for i, f in enumerate(features)
    ]


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _request_rows(body: Any, capture: JsonCapture | None) -> list[Any]:
    path = capture.request_rows if capture is not None else None
    if path is None:
        if isinstance(body, dict):
            return [body]
        if isinstance(body, list):
            return body
        raise ProtocolError(
            f"request body must be a JSON object or a list of rows, got {kind_of(body)}"
        )
    found = lookup(body, path)
    if found is MISSING:
        raise ProtocolError(f"{path}: not found in the request (spec.capture.json.requestRows)")
    if isinstance(found, list):
        return found
    if isinstance(found, dict):
        return [found]
    raise ProtocolError(
        f"{path}: must be a list of rows (spec.capture.json.requestRows), got {kind_of(found)}"
    )


def _feature_paths(
    spec: ObservedModelSpec | None, capture: JsonCapture | None
) -> dict[str, str] | None:
    if capture is not None and capture.features:
        return dict(capture.features)
    if spec is not None and spec.features:
        return {name: name for name in spec.feature_names}
    return None


def _outputs(
    response: bytes, n: int, spec: ObservedModelSpec | None, capture: JsonCapture | None
) -> list[dict[str, Value]] | None:
    declared = spec.prediction.name if spec is not None and spec.prediction is not None else None
    path = capture.prediction if capture is not None and capture.prediction else declared
    if path is None or n == 0:
        return None
    body = load_response(response)
    rows_path = capture.response_rows if capture is not None else None
    rows = body if rows_path is None else lookup(body, rows_path)
    if isinstance(rows, dict) or (rows is not None and rows is not MISSING and is_scalar(rows)):
        rows = [rows]
    # A response whose rows do not line up with the request's cannot be attributed row by row.
    if not isinstance(rows, list) or len(rows) != n:
        return None
    name = declared or _DEFAULT_OUTPUT
    out: list[dict[str, Value]] = []
    for row in rows:
        value = row if is_scalar(row) else lookup(row, path)
        out.append({name: value} if value is not MISSING and is_scalar(value) else {})
    return out
