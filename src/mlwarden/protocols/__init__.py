"""Protocol adapters: one captured model exchange (request and response bodies) into Records.

Each protocol is one module with one pure function of the same signature,
`parse(request, response, spec) -> list[Record]`; `ADAPTERS` maps the protocol
names of `spec.protocol` to them, and adding a protocol is adding a module:

- `v2`: Open Inference Protocol v2 (KServe v2, MLServer, Triton) over HTTP, JSON and
  Triton's binary tensor extension, `mlwarden.protocols.v2`;
- `v2-grpc`: the same protocol over gRPC (`ModelInfer`, `ModelStreamInfer`), protobuf
  messages, `mlwarden.protocols.v2_grpc`;
- `v1`: KServe v1 and TF-Serving `:predict`, `mlwarden.protocols.v1`;
- `openai`: OpenAI-compatible chat completions and completions, `mlwarden.protocols.openai`;
- `json`: any JSON, read through field paths in the spec, `mlwarden.protocols.json_paths`.

An adapter raises `ProtocolError` when the request does not follow its protocol
and nothing else; a response it cannot read only leaves the records without
outputs. `parse_exchange` is the entry point the sidecar calls: it resolves
`auto` with `detect_protocol`, which looks at the path and sniffs the request
bytes without decoding them, so it stays cheap on the hot path.

`is_inference` tells the exchanges that are model inferences from those that are
not (health, readiness, metadata, model listings, repository and shared-memory
calls): the sidecar passes the latter through without trying to read them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final, TypeAlias

from mlwarden.protocols import json_paths, openai, v1, v2, v2_grpc
from mlwarden.records import ProtocolError, Record
from mlwarden.spec import ObservedModelSpec

__all__ = [
    "ADAPTERS",
    "Adapter",
    "UnrecognizedProtocol",
    "detect_protocol",
    "is_inference",
    "parse_exchange",
]

Adapter: TypeAlias = Callable[[bytes, bytes, ObservedModelSpec | None], list[Record]]

ADAPTERS: Final[dict[str, Adapter]] = {
    "v2": v2.parse,
    "v2-grpc": v2_grpc.parse,
    "v1": v1.parse,
    "openai": openai.parse,
    "json": json_paths.parse,
}


class UnrecognizedProtocol(ProtocolError):
    """`auto` found no protocol that fits the exchange; the reason says what was looked at."""


# gRPC services whose methods are never inferences: the v2 service's other methods
# (liveness, readiness, metadata, repository, shared memory, statistics, trace and log
# settings), MLServer's model repository, gRPC health checking and server reflection.
_GRPC_NOT_INFERENCE: Final = (
    f"/{v2_grpc.SERVICE}/",
    "/inference.model_repository.ModelRepositoryService/",
    "/grpc.health.v1.Health/",
    "/grpc.reflection.",
)
# HTTP POSTs of the v2 extensions that are not inferences (Triton, MLServer, KServe):
# model repository, shared memory, trace and log settings.
_HTTP_NOT_INFERENCE: Final = re.compile(
    r"/v2/(?:repository/|systemsharedmemory/|cudasharedmemory/|trace/setting$|logging$"
    r"|models/[^/]+(?:/versions/[^/]+)?/trace/setting$)"
)


def is_inference(protocol: str, method: str, path: str) -> bool:
    """Whether an exchange asks a model for an inference (pure, from the request line).

    Over HTTP every protocol here infers with a POST, so any other method (the
    `GET`s of health, readiness, metadata and model listings: `/v2/health/*`,
    `/v2/models/NAME`, `/v2/models/NAME/ready`, `/v1/models`, TF-Serving's model
    status) is not one, and neither are the POSTs of the v2 extensions above. Over
    gRPC (`protocol` `v2-grpc`) the methods of the services above are not, except
    `ModelInfer` and `ModelStreamInfer`; a method of any other service is treated
    as an inference this sidecar cannot read (`unrecognized_protocol`).
    """
    route = path.split("?", 1)[0]
    if protocol == "v2-grpc":
        return route in v2_grpc.INFER_METHODS or not route.startswith(_GRPC_NOT_INFERENCE)
    if method != "POST":
        return False
    return _HTTP_NOT_INFERENCE.search(route.rstrip("/")) is None


def detect_protocol(path: str, request: bytes, spec: ObservedModelSpec | None) -> str | None:
    """The protocol an exchange most likely speaks, or None; never decodes the body.

    An explicit `spec.capture.json` wins: the user said how to read the body.
    Then by path (`.../infer` is v2, `.../chat/completions`, `.../completions` and
    `.../embeddings` are openai, `...:predict` is v1), then by the request's keys
    (`"inputs"` with `"datatype"` is v2, `"instances"` or `"inputs"` without
    `"datatype"` is v1, `"messages"` or `"prompt"` is openai), and last `json`
    when the spec declares features.
    """
    if spec is not None and spec.capture.json is not None:
        return "json"
    route = path.split("?", 1)[0].rstrip("/")
    if route in v2_grpc.INFER_METHODS:
        return "v2-grpc"
    if route.endswith("/infer"):
        return "v2"
    if route.endswith(("/completions", "/embeddings")):
        return "openai"
    if route.endswith(":predict"):
        return "v1"
    # Quoted keys: a key inside a JSON string value would be escaped (\"inputs\")
    # and does not match.
    if b'"inputs"' in request:
        return "v2" if b'"datatype"' in request else "v1"
    if b'"instances"' in request:
        return "v1"
    if b'"messages"' in request or b'"prompt"' in request:
        return "openai"
    if spec is not None and spec.features:
        return "json"
    return None


def parse_exchange(
    protocol: str,
    path: str,
    request: bytes,
    response: bytes,
    spec: ObservedModelSpec | None,
) -> tuple[str, list[Record]]:
    """Parse one exchange with `protocol` (or the detected one for `auto`): (name used, records).

    Raises `UnrecognizedProtocol` when `auto` finds nothing, `ProtocolError`
    when the request breaks the protocol, and `ValueError` for an unknown name.
    """
    name = protocol
    if protocol == "auto":
        detected = detect_protocol(path, request, spec)
        if detected is None:
            route = path.split("?", 1)[0] or "/"
            raise UnrecognizedProtocol(
                f"no protocol recognised for {route}: the request has none of inputs, "
                "instances, messages or prompt; set spec.protocol, or spec.capture.json "
                "field paths for the json protocol"
            )
        name = detected
    adapter = ADAPTERS.get(name)
    if adapter is None:
        known = ", ".join(["auto", *ADAPTERS])
        raise ValueError(f"unknown protocol {protocol!r}; known protocols: {known}")
    if name == "v2-grpc" and path not in v2_grpc.INFER_METHODS:
        # Another service's messages would be read as ModelInferRequests, wrongly.
        raise UnrecognizedProtocol(
            f"gRPC method {path} is not {' or '.join(v2_grpc.INFER_METHODS)}: its messages "
            "are not read"
        )
    return name, adapter(request, response, spec)
