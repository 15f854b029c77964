"""Fuzzing the records endpoint's parser: arbitrary bodies give a Batch or a BatchError.

`decode` then `parse_batch` is what `POST /v1/records` runs. Whatever the bytes,
the only exception is `BatchError`, with a message naming where the problem is;
and whatever batch it accepts, the detector core ingests and evaluates it
without raising (a wrong type or NaN is a data-quality finding, not a crash).
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlwarden.detector.core import Detector
from mlwarden.detector.ingest import Batch, BatchError, decode, parse_batch, parse_labels
from mlwarden.spec import parse_observed_model

KEYS = ["source", "requests", "records", "features", "outputs", "id", "row", "status",
        "latencySeconds", "dropped", "ts", "x", "k", "y", "labels", "label"]  # fmt: skip
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=6)
    | st.sampled_from(KEYS)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=4), inner, max_size=5)
    ),
    max_leaves=20,
)
values = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=4)
    | st.lists(st.integers(), max_size=2)
)
records = st.fixed_dictionaries(
    {"features": st.dictionaries(st.sampled_from(["x", "k", "z"]), values, max_size=3)},
    optional={
        "id": st.text(max_size=4) | st.integers(),
        "row": st.integers(min_value=-2, max_value=5),
        "outputs": st.dictionaries(st.sampled_from(["y", "p"]), values, max_size=2),
    },
)
requests = st.fixed_dictionaries(
    {
        "status": st.integers(min_value=0, max_value=700),
        "latencySeconds": st.floats() | st.integers(min_value=-1, max_value=5),
    }
)
# Batches shaped like the real thing, with arbitrary values where values go.
plausible = st.fixed_dictionaries(
    {},
    optional={
        "source": st.dictionaries(st.sampled_from(["pod", "modelRevision"]), scalars),
        "requests": st.lists(requests, max_size=5),
        "records": st.lists(records, max_size=40),
    },
)


def _model(features: bool) -> Any:
    spec: dict[str, Any] = {
        "target": {"deployment": "m"},
        "reference": {"size": 50},
        "window": {"size": 50},
        "prediction": {"name": "y", "type": "numeric"},
    }
    if features:
        spec["features"] = [{"name": "x", "type": "numeric"}, {"name": "k", "type": "categorical"}]
    return parse_observed_model(
        {"apiVersion": "mlwarden.io/v1alpha1", "kind": "ObservedModel",
         "metadata": {"name": "m"}, "spec": spec}
    )  # fmt: skip


def _parse(payload: Any) -> Batch | None:
    try:
        batch = parse_batch(payload, now=0.0)
    except BatchError as exc:
        message = str(exc)
        assert message and ":" in message, message  # "records[3].features: must be ..."
        return None
    assert isinstance(batch, Batch)
    return batch


@settings(max_examples=200, deadline=None)
@given(body=st.binary(max_size=200))
def test_arbitrary_bytes_decode_or_raise_batch_error(body: bytes) -> None:
    try:
        payload = decode(body)
    except BatchError as exc:
        assert str(exc).startswith("body is not"), exc
        return
    _parse(payload)


@settings(max_examples=200, deadline=None)
@given(payload=json_values)
def test_arbitrary_json_parses_or_raises_batch_error(payload: Any) -> None:
    _parse(payload)
    with contextlib.suppress(BatchError):
        parse_labels(payload)


@settings(max_examples=200, deadline=None)
@given(payload=json_values)
def test_the_wire_format_round_trips_through_decode(payload: Any) -> None:
    """What older producers send (NaN and infinities as bare tokens) still decodes."""
    body = json.dumps(payload).encode()
    _parse(decode(body))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=st.lists(plausible, min_size=1, max_size=6), features=st.booleans())
def test_accepted_batches_never_crash_the_detector(
    batches: list[dict[str, Any]], features: bool
) -> None:
    detector = Detector(_model(features), now=0.0)
    accepted = 0
    for i, payload in enumerate(batches):
        batch = _parse(json.loads(json.dumps(payload)))
        if batch is None:
            continue
        assert batch.n_records == len(payload.get("records", []))
        detector.ingest(batch, now=float(i))
        accepted += batch.n_records
        detector.evaluate(now=float(i) + 0.5, now_iso="t")
    status = detector.status()
    assert status["recordsIngested"] == accepted
    json.dumps(status, default=str)  # the status stays serialisable
    for check in status["checks"]:
        assert isinstance(check["statistic"], float | int), check
