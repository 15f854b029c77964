"""Records: the flat rows the sidecar captures and the detector ingests.

A model exchange (one HTTP request and its response) becomes zero or more
`Record`s, one per row the model scored: a batched request of shape [N, F]
becomes N records. A protocol adapter fills `features` (what the model was
given) and `outputs` (what it answered); the sidecar stamps the request id,
timing and status onto the batch it ships (see `docs/records-api.md`).

Values are JSON scalars: numbers (NaN and infinities kept as floats, since they
are data-quality signals), strings, booleans, or None for an explicit null.
A feature of type `embedding` is a vector instead: it is kept apart, in `vectors`
(an input) or `output_vectors` (an output), so that every scalar column stays a
scalar; on the wire it is a list of numbers in the record's `features` or `outputs`
(docs/records-api.md, `with_vectors`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, TypeAlias

Value: TypeAlias = float | int | str | bool | None
Vector: TypeAlias = list[float]


@dataclass(frozen=True, slots=True)
class Record:
    """One scored row: the inputs the model saw and the outputs it returned for them."""

    features: dict[str, Value]
    outputs: dict[str, Value] = field(default_factory=dict)
    row: int = 0
    # The id the protocol carries in the body (Open Inference Protocol v2 `id`,
    # OpenAI `id`), when there is one; the sidecar falls back to the
    # x-request-id header or a generated id.
    request_id: str | None = None
    # Embedding features (spec type `embedding`): one vector per name, inputs and outputs.
    vectors: dict[str, Vector] = field(default_factory=dict)
    output_vectors: dict[str, Vector] = field(default_factory=dict)


def with_vectors(values: dict[str, Value], vectors: dict[str, Vector]) -> dict[str, Any]:
    """A record's `features` (or `outputs`) as shipped: the scalars and the vectors in one
    object (the same object when there are no vectors: the common case costs nothing)."""
    return values | vectors if vectors else values


class ProtocolError(ValueError):
    """The body claims a protocol but does not follow it; the reason says where."""


def json_kind(value: object) -> str:
    """The JSON name of a value's type (`number`, `string`, `object`...), for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def finite_or_none(x: float | None) -> float | None:
    """A figure for JSON and the CRD: NaN and infinities become null (neither has them)."""
    return None if x is None or not math.isfinite(x) else x
