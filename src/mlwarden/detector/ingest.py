"""Ingest: validate a records batch (docs/records-api.md) into columns, or say what is wrong.

Pure. A malformed batch is rejected whole with a reason that names the place
(`records[3].features: must be an object, got list`), so a broken producer is
told exactly what to fix and nothing half-ingested pollutes the windows.
Values are not judged here (a string, or a nested list, where a number belongs
is a data-quality finding, not a malformed batch); that happens when columns
meet the spec. Columns are cut from the rows lazily, only for the columns the
detector knows: this is the detector's hot path.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

import orjson

from mlwarden.records import Value, json_kind

MAX_RECORDS_PER_BATCH = 100_000
MAX_KEY_LENGTH = 200
# A producer's batches re-sent within its retries (the sidecar: 5 attempts, at most about a
# minute) are well inside its last 4,096 batches at any rate a sidecar ships (about 25 a
# second at 12,000 requests a second in batches of 500).
KEYS_PER_PRODUCER = 4096
MAX_PRODUCERS = 1024


class BatchError(ValueError):
    """A batch that cannot be ingested; the message says where and why."""


@dataclass
class Batch:
    """A validated batch: rows as sent, columns on demand."""

    n_records: int = 0
    feature_rows: list[dict[str, Any]] = field(default_factory=list)
    output_rows: list[dict[str, Any]] = field(default_factory=list)
    keys: list[tuple[str, int]] = field(default_factory=list)  # (request id, row) per record
    # Per request: status code and model latency, for the SLO checks.
    statuses: list[int] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    dropped_requests: int = 0
    source: dict[str, Any] = field(default_factory=dict)
    _feature_names: set[str] | None = None
    _output_names: set[str] | None = None

    @property
    def feature_names(self) -> set[str]:
        if self._feature_names is None:
            self._feature_names = set().union(*self.feature_rows)
        return self._feature_names

    @property
    def output_names(self) -> set[str]:
        if self._output_names is None:
            self._output_names = set().union(*self.output_rows)
        return self._output_names

    def feature(self, name: str) -> list[Value] | None:
        """One feature's values (None where a record lacks it); None if no record has it."""
        if name not in self.feature_names:
            return None
        return [row.get(name) for row in self.feature_rows]

    def output(self, name: str) -> list[Value] | None:
        if name not in self.output_names:
            return None
        return [row.get(name) for row in self.output_rows]


class BatchKeys:
    """The `Idempotency-Key`s of the batches ingested lately: a batch re-sent after a
    timeout (ingested the first time, the answer lost) is then ingested once.

    A key is `PRODUCER.REST`: the part before the first dot names the producer (the
    sidecar's shipper, a random id per process). Memory is bounded whatever is posted: per
    producer its last `per_producer` keys, for at most `producers` producers, the one heard
    from least recently forgotten first. Pure: no clock, no I/O.
    """

    def __init__(
        self, *, per_producer: int = KEYS_PER_PRODUCER, producers: int = MAX_PRODUCERS
    ) -> None:
        self.per_producer = per_producer
        self.producers = producers
        self._by_producer: OrderedDict[str, tuple[set[str], deque[str]]] = OrderedDict()

    @staticmethod
    def check(key: str) -> None:
        """Raise `BatchError` for a key that cannot be one (empty, or too long)."""
        if not key or len(key) > MAX_KEY_LENGTH:
            raise BatchError(
                f"Idempotency-Key: must be 1 to {MAX_KEY_LENGTH} characters, got {len(key)}"
            )

    def seen(self, key: str) -> bool:
        """Whether a batch with this key was ingested lately."""
        kept = self._by_producer.get(key.split(".", 1)[0])
        return kept is not None and key in kept[0]

    def add(self, key: str) -> None:
        """Remember the key of a batch just ingested."""
        producer = key.split(".", 1)[0]
        kept = self._by_producer.get(producer)
        if kept is None:
            kept = self._by_producer[producer] = (set(), deque())
            if len(self._by_producer) > self.producers:
                self._by_producer.popitem(last=False)
        else:
            self._by_producer.move_to_end(producer)
        keys, order = kept
        if key in keys:
            return
        keys.add(key)
        order.append(key)
        if len(order) > self.per_producer:
            keys.discard(order.popleft())


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BatchError(f"{where}: must be an object, got {json_kind(value)}")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise BatchError(f"{where}: must be a list, got {json_kind(value)}")
    return value


def decode(body: bytes) -> Any:
    """One parse with orjson: the sidecar sends strict JSON, with non-finite values as `null`
    plus a `nonFinite` entry each (docs/records-api.md), applied by `parse_batch`.

    Older producers wrote bare `NaN`/`Infinity` tokens, which orjson refuses; the standard
    parser still reads those (a second parse, only for such bodies), and words the errors.
    """
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass  # NaN/Infinity tokens of an older producer (or a real error): json says which
    try:
        # Decode explicitly: json.loads(bytes) would guess UTF-16/32 from the first bytes.
        return json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise BatchError(f"body is not UTF-8: {exc.reason} at byte {exc.start}") from None
    except json.JSONDecodeError as exc:
        raise BatchError(
            f"body is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None


def parse_batch(payload: Any, *, now: float) -> Batch:
    """Validate one decoded batch; raise `BatchError` naming the first problem."""
    top = _object(payload, "body")
    unknown = set(top) - {"source", "requests", "records", "nonFinite"}
    if unknown:
        raise BatchError(
            f"body: unknown field(s) {', '.join(sorted(unknown))}; "
            "expected source, requests, records, nonFinite"
        )
    records = _list(top.get("records", []), "records")
    requests = _list(top.get("requests", []), "requests")
    if len(records) > MAX_RECORDS_PER_BATCH:
        raise BatchError(
            f"records: {len(records)} records in one batch; at most {MAX_RECORDS_PER_BATCH}"
        )
    batch = Batch(n_records=len(records))
    source = top.get("source", {})
    batch.source = _object(source, "source") if source is not None else {}

    for i, req in enumerate(requests):
        if req.__class__ is not dict:
            raise BatchError(f"requests[{i}]: must be an object, got {json_kind(req)}")
        status = req.get("status")
        latency = req.get("latencySeconds")
        if status.__class__ is not int or not 100 <= status <= 599:
            raise BatchError(f"requests[{i}].status: must be an HTTP status code, got {status!r}")
        if latency.__class__ is not float and latency.__class__ is not int:
            raise BatchError(
                f"requests[{i}].latencySeconds: must be a non-negative number, got {latency!r}"
            )
        if not 0 <= latency < math.inf:  # also false for NaN
            raise BatchError(
                f"requests[{i}].latencySeconds: must be a non-negative number, got {latency!r}"
            )
        batch.statuses.append(status)
        batch.latencies.append(latency)
        if req.get("dropped") is not None:
            batch.dropped_requests += 1

    empty: dict[str, Any] = {}
    for i, rec in enumerate(records):
        if rec.__class__ is not dict:
            raise BatchError(f"records[{i}]: must be an object, got {json_kind(rec)}")
        f = rec.get("features")
        if f.__class__ is not dict:
            raise BatchError(f"records[{i}].features: must be an object, got {json_kind(f)}")
        o = rec.get("outputs")
        if o is None:
            o = empty
        elif o.__class__ is not dict:
            raise BatchError(f"records[{i}].outputs: must be an object, got {json_kind(o)}")
        rid = rec.get("id")
        row = rec.get("row", 0)
        if rid is not None and rid.__class__ is not str:
            raise BatchError(f"records[{i}].id: must be a string, got {json_kind(rid)}")
        if row.__class__ is not int:
            raise BatchError(f"records[{i}].row: must be an integer, got {json_kind(row)}")
        batch.keys.append((rid or "", row))
        batch.feature_rows.append(f)
        batch.output_rows.append(o)
    non_finite = top.get("nonFinite")
    if non_finite is not None:
        _apply_non_finite(_list(non_finite, "nonFinite"), records)
    return batch


NON_FINITE: dict[str, float] = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _apply_non_finite(entries: list[Any], records: list[Any]) -> None:
    """Put each `nonFinite` entry's value in place of the null its record holds (validated).

    Its cost is per entry, not per value: a batch without non-finite values pays nothing.
    """
    for i, item in enumerate(entries):
        where = f"nonFinite[{i}]"
        entry = _object(item, where)
        index, part, name, token = (entry.get(k) for k in ("record", "in", "name", "value"))
        if index.__class__ is not int or not 0 <= index < len(records):
            raise BatchError(
                f"{where}.record: must be the index of a record in this batch "
                f"(0 to {len(records) - 1}), got {index!r}"
            )
        if part not in ("features", "outputs"):
            raise BatchError(f"{where}.in: must be features or outputs, got {part!r}")
        if token not in NON_FINITE:
            raise BatchError(f"{where}.value: must be NaN, Infinity or -Infinity, got {token!r}")
        values = records[index].get(part)
        if not isinstance(values, dict) or not isinstance(name, str) or name not in values:
            raise BatchError(f"{where}.name: records[{index}].{part} has no field {name!r}")
        if values[name] is not None:
            raise BatchError(
                f"{where}: records[{index}].{part}.{name} must be null where the value is "
                f"non-finite, got {json_kind(values[name])}"
            )
        values[name] = NON_FINITE[token]


def parse_labels(payload: Any) -> list[tuple[str, int, Value]]:
    """`{"labels": [{"id": "req-1", "row": 0, "label": 1}, ...]}` → (id, row, label)."""
    top = _object(payload, "body")
    out: list[tuple[str, int, Value]] = []
    for i, item in enumerate(_list(top.get("labels"), "labels")):
        entry = _object(item, f"labels[{i}]")
        rid, row, label = entry.get("id"), entry.get("row", 0), entry.get("label")
        if not isinstance(rid, str) or not rid:
            raise BatchError(f"labels[{i}].id: must be the request id the sidecar recorded")
        if isinstance(row, bool) or not isinstance(row, int):
            raise BatchError(f"labels[{i}].row: must be an integer, got {json_kind(row)}")
        if isinstance(label, dict | list) or label is None:
            raise BatchError(f"labels[{i}].label: must be a number, string or boolean")
        if isinstance(label, float) and not math.isfinite(label):
            # NaN or Infinity (Python's JSON reader takes them): no metric can use one, and the
            # label store, which is standard JSON, could not be saved with it.
            raise BatchError(f"labels[{i}].label: must be a finite number, got {label}")
        out.append((rid, row, label))
    return out
