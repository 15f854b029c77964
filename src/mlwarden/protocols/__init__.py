"""Protocol adapters: one captured model exchange (request and response bodies) into Records.

Each protocol is one module with one pure function of the same signature,
`parse(request, response, spec) -> list[Record]`; `ADAPTERS` maps the protocol
names of `spec.protocol` to them, and adding a protocol is adding a module:

- `v2`: Open Inference Protocol v2 (KServe v2, MLServer, Triton), `mlwarden.protocols.v2`;
- `v1`: KServe v1 and TF-Serving `:predict`, `mlwarden.protocols.v1`;
- `openai`: OpenAI-compatible chat completions and completions, `mlwarden.protocols.openai`;
- `json`: any JSON, read through field paths in the spec, `mlwarden.protocols.json_paths`.

An adapter raises `ProtocolError` when the request does not follow its protocol
and nothing else; a response it cannot read only leaves the records without
outputs. `parse_exchange` is the entry point the sidecar calls: it resolves
`auto` with `detect_protocol`, which looks at the path and sniffs the request
bytes without decoding them, so it stays cheap on the hot path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, TypeAlias

from mlwarden.protocols import json_paths, openai, v1, v2
from mlwarden.records import ProtocolError, Record
from mlwarden.spec import ObservedModelSpec

__all__ = [
    "ADAPTERS",
    "Adapter",
    "UnrecognizedProtocol",
    "detect_protocol",
    "parse_exchange",
]

Adapter: TypeAlias = Callable[[bytes, bytes, ObservedModelSpec | None], list[Record]]

ADAPTERS: Final[dict[str, Adapter]] = {
    "v2": v2.parse,
    "v1": v1.parse,
    "openai": openai.parse,
    "json": json_paths.parse,
}


class UnrecognizedProtocol(ProtocolError):
    """`auto` found no protocol that fits the exchange; the reason says what was looked at."""


def detect_protocol(path: str, request: bytes, spec: ObservedModelSpec | None) -> str | None:
    """The protocol an exchange most likely speaks, or None; never decodes the body.

    An explicit `spec.capture.json` wins: the user said how to read the body.
    Then by path (`.../infer` is v2, `.../chat/completions` and `.../completions`
    are openai, `...:predict` is v1), then by the request's keys
    (`"inputs"` with `"datatype"` is v2, `"instances"` or `"inputs"` without
    `"datatype"` is v1, `"messages"` or `"prompt"` is openai), and last `json`
    when the spec declares features.
    """
    if spec is not None and spec.capture.json is not None:
        return "json"
    route = path.split("?", 1)[0].rstrip("/")
    if route.endswith("/infer"):
        return "v2"
    if route.endswith("/completions"):
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
    return name, adapter(request, response, spec)
