"""Open Inference Protocol v2 over gRPC: `ModelInferRequest`/`ModelInferResponse` into Records.

The same protocol as `v2`, in protobuf: the sidecar's gRPC listener captures the
serialized messages of `inference.GRPCInferenceService/ModelInfer` (and of each
request and response of `ModelStreamInfer`) and this adapter decodes them into the
tensors `v2` reads from JSON, so that the same inputs give the same records whichever
way the client called (`v2.records`: batch size, column names, the spec's feature
and prediction names, all as in `v2`).

Tensor data comes from one of two places, as the protocol defines:

- `contents`, the typed field of `InferTensorContents` that goes with the datatype:
  `bool_contents` (BOOL), `int_contents` (INT8, INT16, INT32), `int64_contents`
  (INT64), `uint_contents` (UINT8, UINT16, UINT32), `uint64_contents` (UINT64),
  `fp32_contents` (FP32), `fp64_contents` (FP64), `bytes_contents` (BYTES; UTF-8
  elements become strings, others are left out);
- `raw_input_contents` / `raw_output_contents`, one entry per tensor in order when
  used at all, each the tensor's bytes exactly as Triton's binary extension lays them
  out (`v2.decode_raw`: little-endian, row-major, BYTES length-prefixed; the only
  way to send FP16 and BF16). `tritonclient` always sends raw contents.

`Record.request_id` is the response's `id`, else the request's. Data in a shared
memory region (parameter `shared_memory_region`) never passes the sidecar: a
`ProtocolError`, as a request that is not a `ModelInferRequest` is. The response is
read leniently (a broken one leaves records without outputs). A response to
`ModelStreamInfer` is a `ModelInferResponse` for MLServer and KServe, and a
`ModelStreamInferResponse` wrapping one (`infer_response`, field 2) for Triton; a
message without outputs is tried as the latter.

The messages are declared here, in a private protobuf descriptor pool, from the
protocol's own definition: KServe's `grpc_predict_v2.proto` (the Open Inference
Protocol, package `inference`), which Triton's `grpc_service.proto` and MLServer's
`dataplane.proto` extend with the same field numbers. Only the fields read are
declared (unknown ones are skipped by the parser), no generated code is shipped,
and the pool is private so that a process may also load Triton's or MLServer's own
generated modules. `tests/unit/protocols/test_v2_grpc.py` checks every declared
field against `tritonclient`'s generated module.
"""

from __future__ import annotations

from typing import Any, Final

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError, Message

from mlwarden.protocols.v2 import Tensor, decode_raw, make_tensor, records
from mlwarden.records import ProtocolError, Record
from mlwarden.spec import ObservedModelSpec

SERVICE: Final = "inference.GRPCInferenceService"
# The methods whose messages this adapter reads; every other method passes untouched.
INFER_METHODS: Final = (f"/{SERVICE}/ModelInfer", f"/{SERVICE}/ModelStreamInfer")

# The InferTensorContents field that carries each datatype.
CONTENTS_FIELD: Final[dict[str, str]] = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}

_F = descriptor_pb2.FieldDescriptorProto
_STRING, _BYTES, _MESSAGE = _F.TYPE_STRING, _F.TYPE_BYTES, _F.TYPE_MESSAGE
_OPTIONAL, _REPEATED = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED
_PARAMETER_ONEOF: Final = "parameter_choice"

# (message, [(field, number, type, label, message type or None)]), as in grpc_predict_v2.proto.
_MESSAGES: Final[list[tuple[str, list[tuple[str, int, int, int, str | None]]]]] = [
    (
        "InferParameter",
        [
            ("bool_param", 1, _F.TYPE_BOOL, _OPTIONAL, None),
            ("int64_param", 2, _F.TYPE_INT64, _OPTIONAL, None),
            ("string_param", 3, _STRING, _OPTIONAL, None),
        ],
    ),
    (
        "InferTensorContents",
        [
            ("bool_contents", 1, _F.TYPE_BOOL, _REPEATED, None),
            ("int_contents", 2, _F.TYPE_INT32, _REPEATED, None),
            ("int64_contents", 3, _F.TYPE_INT64, _REPEATED, None),
            ("uint_contents", 4, _F.TYPE_UINT32, _REPEATED, None),
            ("uint64_contents", 5, _F.TYPE_UINT64, _REPEATED, None),
            ("fp32_contents", 6, _F.TYPE_FLOAT, _REPEATED, None),
            ("fp64_contents", 7, _F.TYPE_DOUBLE, _REPEATED, None),
            ("bytes_contents", 8, _BYTES, _REPEATED, None),
        ],
    ),
    (
        "Tensor",  # ModelInferRequest.InferInputTensor and ModelInferResponse.InferOutputTensor
        [
            ("name", 1, _STRING, _OPTIONAL, None),
            ("datatype", 2, _STRING, _OPTIONAL, None),
            ("shape", 3, _F.TYPE_INT64, _REPEATED, None),
            ("parameters", 4, _MESSAGE, _REPEATED, "Tensor.ParametersEntry"),
            ("contents", 5, _MESSAGE, _OPTIONAL, "InferTensorContents"),
        ],
    ),
    (
        "ModelInferRequest",
        [
            ("model_name", 1, _STRING, _OPTIONAL, None),
            ("model_version", 2, _STRING, _OPTIONAL, None),
            ("id", 3, _STRING, _OPTIONAL, None),
            ("inputs", 5, _MESSAGE, _REPEATED, "Tensor"),
            ("raw_input_contents", 7, _BYTES, _REPEATED, None),
        ],
    ),
    (
        "ModelInferResponse",
        [
            ("model_name", 1, _STRING, _OPTIONAL, None),
            ("model_version", 2, _STRING, _OPTIONAL, None),
            ("id", 3, _STRING, _OPTIONAL, None),
            ("outputs", 5, _MESSAGE, _REPEATED, "Tensor"),
            ("raw_output_contents", 6, _BYTES, _REPEATED, None),
        ],
    ),
    (
        "ModelStreamInferResponse",  # Triton's grpc_service.proto
        [
            ("error_message", 1, _STRING, _OPTIONAL, None),
            ("infer_response", 2, _MESSAGE, _OPTIONAL, "ModelInferResponse"),
        ],
    ),
]


def _file() -> descriptor_pb2.FileDescriptorProto:
    proto = descriptor_pb2.FileDescriptorProto(
        name="mlwarden/grpc_predict_v2.proto", package="inference", syntax="proto3"
    )
    for name, fields in _MESSAGES:
        message = proto.message_type.add(name=name)
        for field, number, kind, label, type_name in fields:
            entry = message.field.add(name=field, number=number, type=kind, label=label)
            if type_name is not None:
                entry.type_name = f".inference.{type_name}"
        if name == "InferParameter":
            message.oneof_decl.add(name=_PARAMETER_ONEOF)
            for entry in message.field:
                entry.oneof_index = 0
        if name == "Tensor":
            # map<string, InferParameter> parameters = 4: a nested map-entry message.
            map_entry = message.nested_type.add(name="ParametersEntry")
            map_entry.options.map_entry = True
            map_entry.field.add(name="key", number=1, type=_STRING, label=_OPTIONAL)
            map_entry.field.add(
                name="value",
                number=2,
                type=_MESSAGE,
                label=_OPTIONAL,
                type_name=".inference.InferParameter",
            )
    return proto


def _classes() -> dict[str, type[Message]]:
    pool = descriptor_pool.DescriptorPool()
    pool.Add(_file())
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"inference.{name}"))
        for name, _ in _MESSAGES
    }


_CLASSES: Final = _classes()
ModelInferRequest: Final = _CLASSES["ModelInferRequest"]
ModelInferResponse: Final = _CLASSES["ModelInferResponse"]
ModelStreamInferResponse: Final = _CLASSES["ModelStreamInferResponse"]


def parse(request: bytes, response: bytes, spec: ObservedModelSpec | None) -> list[Record]:
    """One Record per row of the request's batch, with the response's outputs for that row."""
    message: Any = ModelInferRequest()
    try:
        message.ParseFromString(request)
    except DecodeError as exc:
        raise ProtocolError(f"request is not a ModelInferRequest: {exc}") from None
    inputs = _tensors(message.inputs, message.raw_input_contents, "inputs", "raw_input_contents")
    request_id: str | None = message.id or None
    outputs: list[Tensor] | None = None
    reply = _reply(response)
    if reply is not None:
        request_id = reply.id or request_id
        try:
            outputs = _tensors(
                reply.outputs, reply.raw_output_contents, "outputs", "raw_output_contents"
            )
        except ProtocolError:
            outputs = _lenient(reply)
    return records(inputs, outputs, request_id, spec)


def _reply(response: bytes) -> Any:
    """The ModelInferResponse in a response message, or None."""
    reply: Any = ModelInferResponse()
    try:
        reply.ParseFromString(response)
    except DecodeError:
        reply = None
    if reply is not None and (reply.outputs or reply.raw_output_contents):
        return reply
    wrapped: Any = ModelStreamInferResponse()
    try:
        wrapped.ParseFromString(response)
    except DecodeError:
        return reply
    return wrapped.infer_response if wrapped.HasField("infer_response") else reply


def _lenient(reply: Any) -> list[Tensor]:
    """The output tensors that can be read when some cannot (each on its own)."""
    raw = list(reply.raw_output_contents)
    if raw and len(raw) != len(reply.outputs):
        return []  # which bytes belong to which tensor is unknown
    out: list[Tensor] = []
    for i, t in enumerate(reply.outputs):
        try:
            out.append(_tensor(t, raw[i] if raw else None, f"outputs[{i}]"))
        except ProtocolError:
            continue
    return out


def _tensors(tensors: Any, raw: Any, what: str, raw_field: str) -> list[Tensor]:
    if raw and len(raw) != len(tensors):
        raise ProtocolError(
            f"{raw_field}: {len(raw)} entries for {len(tensors)} {what}; "
            "raw contents must hold one per tensor"
        )
    return [_tensor(t, raw[i] if raw else None, f"{what}[{i}]") for i, t in enumerate(tensors)]


def _tensor(t: Any, raw: bytes | None, where: str) -> Tensor:
    if not t.name:
        raise ProtocolError(f"{where}.name: required field is missing")
    if "shared_memory_region" in t.parameters:
        raise ProtocolError(
            f"{where}.parameters.shared_memory_region: the data is in a shared-memory region, "
            "which never passes the sidecar"
        )
    shape = list(t.shape)
    if any(d < 0 for d in shape):
        raise ProtocolError(f"{where}.shape: must be non-negative integers, got {shape[:8]}")
    datatype: str = t.datatype
    if raw is not None:
        values = decode_raw(datatype, raw, where)
    else:
        field = CONTENTS_FIELD.get(datatype)
        if field is None:
            raise ProtocolError(
                f"{where}.datatype: must be one of {', '.join(CONTENTS_FIELD)} for contents "
                f"(FP16 and BF16 travel only as raw contents), got {datatype!r}"
            )
        values = list(getattr(t.contents, field))
        if datatype == "BYTES":
            values = [_text(v) for v in values]
    return make_tensor(t.name, shape, values, where)


def _text(value: bytes) -> Any:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return _UNREADABLE


# A BYTES element that is not UTF-8: not a JSON scalar, so `v2` leaves it out of the record.
_UNREADABLE: Final[Any] = object()
