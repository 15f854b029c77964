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
- A tensor (input or output) named by a feature of type `embedding` in the spec is
  one vector per row (its F values, or A*B flattened) in `Record.vectors` (inputs)
  or `Record.output_vectors` (outputs), not F columns; a row holding anything but
  numbers has no vector. Such features take no part in the mapping of a wide
  tensor's columns to feature names above.

Cells are JSON scalars; a cell holding an object (or a list left over by a ragged
nesting) is dropped.

Triton's binary tensor extension (what `tritonclient` sends with `binary_data=True`,
and what a server answers when outputs ask for `"binary_data": true`): the body is
a JSON header followed by the raw bytes of some tensors, which carry
`"parameters": {"binary_data_size": S}` instead of `data`, their bytes in the order
the tensors appear in the header. The HTTP header `Inference-Header-Content-Length`
gives the JSON header's length; the adapter does not need it, since JSON is
self-delimiting: it parses the header and takes the bytes after it. Raw bytes are
row-major and little-endian, as numpy's `tobytes()` on the client gives them:
BOOL one byte, the integers and FP16/FP32/FP64 at their width, BF16 the top half
of an FP32, BYTES each element a 4-byte little-endian length and its bytes. Values
come out as the JSON form would have them: numbers, booleans, and BYTES elements
as UTF-8 strings (an element that is not UTF-8 is left out, like an object cell).
The binary parts must add up to exactly the bytes after the header. Data in
Triton's shared-memory regions (`shared_memory_region`) never passes the
sidecar and is a `ProtocolError`.

Errors: a request that breaks the protocol (no `inputs`, a tensor without a
name, data that does not fill its shape, binary sizes that do not add up) raises
`ProtocolError` naming the field. The response is read leniently: when it is not
JSON or has no `outputs` (an error body), records carry no outputs, and an output
tensor that is malformed or has a batch size other than N is left out.

`Record.request_id` is the response's `id`, else the request's.

`records`, `make_tensor` and `decode_raw` are shared with `v2_grpc`, the same
protocol over gRPC: its tensors become the same records.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from itertools import chain
from typing import Any, Final, NamedTuple

from mlwarden.protocols.json_paths import is_scalar, load_request, load_response
from mlwarden.records import ProtocolError, Record, Value
from mlwarden.records import json_kind as kind_of
from mlwarden.spec import ObservedModelSpec

# The key a binary tensor carries in its parameters; its presence in a body is the
# cheap sign that the body is a JSON header followed by raw bytes.
_BINARY_SIZE: Final = "binary_data_size"
_BINARY_MARK: Final = b'"binary_data_size"'

# struct formats of the fixed-width datatypes, little-endian (`<` is added per call).
_FIXED: Final[dict[str, str]] = {
    "BOOL": "?",
    "UINT8": "B",
    "UINT16": "H",
    "UINT32": "I",
    "UINT64": "Q",
    "INT8": "b",
    "INT16": "h",
    "INT32": "i",
    "INT64": "q",
    "FP16": "e",
    "FP32": "f",
    "FP64": "d",
}
DATATYPES: Final = (*_FIXED, "BF16", "BYTES")

# The types of a JSON scalar, exactly (what `is_scalar` accepts, without subclasses), and
# of a shape's dimensions.
_SCALAR: Final[frozenset[type]] = frozenset({str, int, float, bool, type(None)})
_INT: Final[frozenset[type]] = frozenset({int})

# A BYTES element that is not UTF-8: left out of the record, like an object cell.
_UNREADABLE: Final[Any] = object()


class Tensor(NamedTuple):
    # A named tuple, not a frozen dataclass: built twice or more per exchange, and a
    # frozen dataclass's __init__ costs three times as much.
    name: str
    shape: list[int]
    values: list[Any]  # flat, row-major
    rows: int
    width: int  # values per row


def parse(request: bytes, response: bytes, spec: ObservedModelSpec | None) -> list[Record]:
    """One Record per row of the request's batch, with the response's outputs for that row."""
    body, binary = _split(request, strict=True)
    if not isinstance(body, dict):
        raise ProtocolError(f"request body must be a JSON object with inputs, got {kind_of(body)}")
    raw_inputs = body.get("inputs")
    if raw_inputs is None:
        raise ProtocolError("inputs: required field is missing")
    if not isinstance(raw_inputs, list):
        raise ProtocolError(f"inputs: must be a list of tensors, got {kind_of(raw_inputs)}")
    tensors = [_read_tensor(t, f"inputs[{i}]", binary) for i, t in enumerate(raw_inputs)]
    if binary is not None:
        binary.finish("inputs")

    request_id = _id(body)
    outputs: list[Tensor] | None = None
    reply, reply_binary = _split(response, strict=False)
    if isinstance(reply, dict):
        request_id = _id(reply) or request_id
        outputs = _read_outputs(reply, reply_binary)
        if reply_binary is not None:
            try:
                reply_binary.finish("outputs")
            except ProtocolError:
                outputs = None  # sizes that do not add up: which bytes are whose is unknown
    return records(tensors, outputs, request_id, spec)


def records(
    inputs: list[Tensor],
    outputs: list[Tensor] | None,
    request_id: str | None,
    spec: ObservedModelSpec | None,
) -> list[Record]:
    """The rows of a batch: the inputs' columns, and the outputs' for each row when given.

    Raises `ProtocolError` when the input tensors disagree on the batch size; output
    tensors of another batch size are left out.
    """
    if not inputs:
        return []
    n = inputs[0].rows
    for i, t in enumerate(inputs[1:], start=1):
        if t.rows != n:
            raise ProtocolError(
                f"inputs[{i}].shape: batch size {t.rows} does not match inputs[0] ({n})"
            )
    if not n:
        return []
    embeddings, declared, prediction = _facts(spec)
    vectors: list[dict[str, list[float]]] | None = None
    output_vectors: list[dict[str, list[float]]] | None = None
    if embeddings:
        vectors = _vectors([t for t in inputs if t.name in embeddings], n)
        output_vectors = _vectors([t for t in outputs or () if t.name in embeddings], n)
        inputs = [t for t in inputs if t.name not in embeddings]
        outputs = [t for t in outputs if t.name not in embeddings] if outputs else outputs
    features = _rows(inputs, _input_columns(inputs, declared), n)
    rows = _output_rows(outputs, n, prediction) if outputs else None
    return [
        Record(
            features=f,
            outputs=rows[i] if rows else {},
            row=i,
            request_id=request_id,
            vectors=vectors[i] if vectors else {},
            output_vectors=output_vectors[i] if output_vectors else {},
        )
        for i, f in enumerate(features)
    ]


# What `records` needs from a spec, worked out once per spec object (the capture worker
# passes the same one for every exchange until the ObservedModel changes): the
# embedding features' names, the other features' names in order, the prediction's name.
_Facts = tuple[frozenset[str], tuple[str, ...], str | None]
_NO_FACTS: Final[_Facts] = (frozenset(), (), None)
_last_facts: list[tuple[ObservedModelSpec | None, _Facts]] = [(None, _NO_FACTS)]


def _facts(spec: ObservedModelSpec | None) -> _Facts:
    if spec is None:
        return _NO_FACTS
    # The entry is read once and replaced whole: a thread that replaces it between two
    # reads cannot pair one spec with another's facts.
    cached, facts = _last_facts[0]
    if cached is spec:
        return facts
    facts = (
        frozenset(f.name for f in spec.features if f.type == "embedding"),
        tuple(f.name for f in spec.features if f.type != "embedding"),
        spec.prediction.name if spec.prediction else None,
    )
    # One entry, holding the spec itself: identity cannot be confused with a new object's.
    _last_facts[0] = (spec, facts)
    return facts


def _vectors(tensors: list[Tensor], n: int) -> list[dict[str, list[float]]]:
    """Each row's vector of each tensor (of batch size n; others are left out)."""
    out: list[dict[str, list[float]]] = [{} for _ in range(n)]
    for tensor in tensors:
        if tensor.rows != n:
            continue
        width = tensor.width
        for r, row in enumerate(out):
            cells = tensor.values[r * width : (r + 1) * width]
            if all(c.__class__ is float or c.__class__ is int for c in cells):
                row[tensor.name] = [float(c) for c in cells]
    return out


def make_tensor(name: str, shape: list[int], values: list[Any], where: str) -> Tensor:
    """A tensor from its flat values; `ProtocolError` (naming `where`) when they do not fit."""
    if not _fills(shape, len(values)):
        raise ProtocolError(f"{where}.data: {len(values)} values do not fill shape {_show(shape)}")
    rows = shape[0] if shape else 1
    width = len(values) // rows if rows else 0
    if rows and not width:
        # Rows without values would be records without features; a shape such as
        # [10**12, 0] must not become that many records.
        raise ProtocolError(f"{where}.shape: {_show(shape)} holds no values for its {rows} rows")
    return Tensor(name, shape, values, rows, width)


def decode_raw(datatype: str, raw: bytes, where: str) -> list[Any]:
    """The elements of a raw (binary) tensor, row-major, as its JSON form would hold them."""
    code = _FIXED.get(datatype)
    if code is not None:
        size = struct.calcsize(code)
        if len(raw) % size:
            raise ProtocolError(
                f"{where}: {len(raw)} bytes are not a whole number of {datatype} elements "
                f"({size} bytes each)"
            )
        return list(struct.unpack(f"<{len(raw) // size}{code}", raw))
    if datatype == "BF16":
        if len(raw) % 2:
            raise ProtocolError(
                f"{where}: {len(raw)} bytes are not a whole number of BF16 elements"
            )
        # A bfloat16 is the upper half of a float32: pad each with two zero bytes below.
        widened = b"".join(b"\x00\x00" + raw[i : i + 2] for i in range(0, len(raw), 2))
        return list(struct.unpack(f"<{len(raw) // 2}f", widened))
    if datatype == "BYTES":
        out: list[Any] = []
        view = memoryview(raw)
        at, end = 0, len(raw)
        while at < end:
            if end - at < 4:
                raise ProtocolError(f"{where}: BYTES element {len(out)} has a cut-off length")
            (length,) = struct.unpack_from("<I", view, at)
            at += 4
            if length > end - at:
                raise ProtocolError(
                    f"{where}: BYTES element {len(out)} claims {length} bytes, {end - at} remain"
                )
            try:
                out.append(str(view[at : at + length], "utf-8"))
            except UnicodeDecodeError:
                out.append(_UNREADABLE)
            at += length
        return out
    raise ProtocolError(
        f"{where}.datatype: must be one of {', '.join(DATATYPES)} for raw data, got "
        f"{_show(datatype)}"
    )


class _Binary:
    """The raw bytes after a JSON header, handed out to tensors in order."""

    __slots__ = ("at", "data")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def take(self, size: int, where: str) -> bytes:
        if size > len(self.data) - self.at:
            raise ProtocolError(
                f"{where}.parameters.{_BINARY_SIZE}: {size} bytes, but only "
                f"{len(self.data) - self.at} remain after the JSON header"
            )
        chunk = self.data[self.at : self.at + size]
        self.at += size
        return chunk

    def finish(self, what: str) -> None:
        if self.at == 0 and not self.data.strip():
            return  # no binary tensor, at most whitespace after the JSON: a plain body
        if self.at != len(self.data):
            raise ProtocolError(
                f"{what}: the binary parts add up to {self.at} bytes, but "
                f"{len(self.data)} follow the JSON header"
            )


def _split(body: bytes, *, strict: bool) -> tuple[Any, _Binary | None]:
    """The JSON document of a body and, for the binary extension, the bytes after it.

    Strict (a request): a body that is not JSON is a `ProtocolError`. Lenient (a
    response): (None, None) instead.
    """
    if _BINARY_MARK not in body:
        return (load_request(body) if strict else load_response(body)), None
    # Latin-1 maps each byte to one character, so the index where the JSON document
    # ends is its length in bytes; the header is then decoded properly on its own.
    try:
        _, end = json.JSONDecoder().raw_decode(body.decode("latin-1"))
    except (ValueError, RecursionError) as exc:
        if strict:
            raise ProtocolError(f"request body does not start with a JSON header: {exc}") from None
        return None, None
    header = load_request(body[:end]) if strict else load_response(body[:end])
    return header, _Binary(body[end:])


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


def _read_tensor(raw: object, where: str, binary: _Binary | None) -> Tensor:
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
    if type(shape) is not list:
        raise _bad_shape(where, shape)
    for d in shape:  # a loop, not all(...): this runs for every tensor of every exchange
        if type(d) is not int or d < 0:
            raise _bad_shape(where, shape)
    parameters = raw.get("parameters")
    if isinstance(parameters, dict) and (
        _BINARY_SIZE in parameters or "shared_memory_region" in parameters
    ):
        return make_tensor(name, shape, _binary_values(raw, parameters, where, binary), where)
    data = raw.get("data")
    if data is None:
        raise ProtocolError(f"{where}.data: required field is missing")
    if not isinstance(data, list):
        raise ProtocolError(f"{where}.data: must be a list, got {kind_of(data)}")
    return make_tensor(name, shape, _flatten(data), where)


def _bad_shape(where: str, shape: object) -> ProtocolError:
    return ProtocolError(
        f"{where}.shape: must be a list of non-negative integers, got {_show(shape)}"
    )


def _binary_values(
    raw: dict[str, Any], parameters: dict[str, Any], where: str, binary: _Binary | None
) -> list[Any]:
    if "shared_memory_region" in parameters:
        raise ProtocolError(
            f"{where}.parameters.shared_memory_region: the data is in a shared-memory region, "
            "which never passes the sidecar"
        )
    size = parameters[_BINARY_SIZE]
    if type(size) is not int or size < 0:
        raise ProtocolError(
            f"{where}.parameters.{_BINARY_SIZE}: must be a non-negative integer, got {_show(size)}"
        )
    if binary is None:  # pragma: no cover - _split makes one whenever the key is in the body
        raise ProtocolError(f"{where}.parameters.{_BINARY_SIZE}: no binary data follows the JSON")
    chunk = binary.take(size, where)
    datatype = raw.get("datatype")
    if not isinstance(datatype, str):
        raise ProtocolError(
            f"{where}.datatype: required for binary data (one of {', '.join(DATATYPES)}), "
            f"got {kind_of(datatype)}"
        )
    return decode_raw(datatype, chunk, where)


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
    kinds = set(map(type, data))
    if list not in kinds:
        return data
    if len(kinds) == 1:
        # The common nesting, a list of rows of scalars, in one pass at C speed.
        flat = list(chain.from_iterable(data))
        if list not in set(map(type, flat)):
            return flat
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


def _indexed(tensor: Tensor) -> list[str]:
    if tensor.width == 1:
        return [tensor.name]
    return [f"{tensor.name}_{i}" for i in range(tensor.width)]


def _input_columns(tensors: list[Tensor], declared: tuple[str, ...]) -> list[Sequence[str]]:
    if len(tensors) == 1:
        # One input tensor (the common case): the declared features name its columns
        # when they are exactly as many as its values per row.
        t = tensors[0]
        if declared and t.width > 1 and len(t.shape) == 2 and len(declared) == t.width:
            return [declared]
        return [_indexed(t)]
    wide = [t for t in tensors if t.width > 1]
    columns: list[Sequence[str]] = []
    for t in tensors:
        if declared and len(wide) == 1 and t is wide[0] and len(t.shape) == 2:
            others = {u.name for u in tensors if u is not t}
            remaining = [f for f in declared if f not in others]
            if len(remaining) == t.width:
                columns.append(remaining)
                continue
        columns.append(_indexed(t))
    return columns


def _rows(tensors: list[Tensor], columns: list[Sequence[str]], n: int) -> list[dict[str, Value]]:
    """n rows holding the tensors' scalar cells under their column names (a later tensor's
    cell replaces an earlier one's of the same name; an object cell is left out)."""
    rows: list[dict[str, Value]] | None = None
    # zip without strict=: the lengths agree by construction (one name per value of a
    # row), and the keyword costs a measurable share of a one-row exchange.
    for tensor, names in zip(tensors, columns):  # noqa: B905
        values = tensor.values
        width = tensor.width
        fresh: list[dict[str, Value]]
        if set(map(type, values)) <= _SCALAR:
            # Every cell is kept: each row is built in one call.
            if width == 1:
                name = names[0]
                fresh = [{name: value} for value in values]
            elif n == 1:
                fresh = [dict(zip(names, values))]  # noqa: B905
            else:
                fresh = [
                    dict(zip(names, values[base : base + width]))  # noqa: B905
                    for base in range(0, n * width, width)
                ]
        else:
            fresh = [{} for _ in range(n)]
            for r, row in enumerate(fresh):
                base = r * width
                for j, name in enumerate(names):
                    value = values[base + j]
                    if is_scalar(value):
                        row[name] = value
        if rows is None:
            rows = fresh
        else:
            for row, more in zip(rows, fresh, strict=True):
                row.update(more)
    return rows if rows is not None else [{} for _ in range(n)]


def _read_outputs(reply: dict[str, Any], binary: _Binary | None) -> list[Tensor] | None:
    """The response's well-formed output tensors (leniently: a broken one is left out)."""
    raw = reply.get("outputs")
    if not isinstance(raw, list):
        return None
    tensors: list[Tensor] = []
    for i, t in enumerate(raw):
        try:
            tensors.append(_read_tensor(t, f"outputs[{i}]", binary))
        except ProtocolError:
            # A binary tensor that cannot be read leaves the position of the ones after
            # it unknown: they are left out too.
            if _is_binary(t):
                break
    return tensors


def _is_binary(raw: object) -> bool:
    return (
        isinstance(raw, dict)
        and isinstance(p := raw.get("parameters"), dict)
        and (_BINARY_SIZE in p)
    )


def _output_rows(
    outputs: list[Tensor], n: int, prediction: str | None
) -> list[dict[str, Value]] | None:
    tensors = [t for t in outputs if t.rows == n]
    if not tensors:
        return None
    if len(tensors) == 1 and tensors[0].width == 1:
        # The common answer, one value per row (a class, a score): the rule below, short.
        name = tensors[0].name
        return _rows(tensors, [[prediction if prediction else name]], n)
    columns: list[Sequence[str]] = [_indexed(t) for t in tensors]
    if prediction and all(t.name != prediction for t in tensors):
        narrow = [i for i, t in enumerate(tensors) if t.width == 1]
        taken = {name for names in columns for name in names}
        if len(narrow) == 1 and prediction not in taken:
            columns[narrow[0]] = [prediction]
    return _rows(tensors, columns, n)
