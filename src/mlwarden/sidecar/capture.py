"""Capture: from a served exchange to records, in a process of its own.

The proxy builds an `Exchange` per request and offers it to the capture process
(`mlwarden.sidecar.supervisor.CaptureProcess.offer`: an O(1) append to a `CaptureQueue`,
bounded by count and by body bytes, that never waits). The exchange crosses to the
capture worker process (`mlwarden.sidecar.worker`) as a frame of raw bytes
(`exchange_frame`, `read_exchange`); there `CaptureProcessor` does everything else:
timing metrics, decompression, protocol parsing, redaction, request ids, and hands
the records to the shipper.

`describe_exchange` is the pure core: one exchange in, the per-request entry and
the per-row records of the ingest format out (`docs/records-api.md`). Exchanges that
are not inferences (`mlwarden.protocols.is_inference`: health, readiness, metadata)
are only counted (`exchanges_not_inference`): no request entry, no drop.
"""

from __future__ import annotations

import itertools
import logging
import os
import struct
import zlib
from collections import deque
from dataclasses import dataclass, field, fields
from typing import Any, Protocol

import orjson

from mlwarden.protocols import UnrecognizedProtocol, is_inference, parse_exchange
from mlwarden.records import ProtocolError, with_vectors
from mlwarden.sidecar.metrics import SidecarMetrics, observe_all
from mlwarden.sidecar.redact import Redactor
from mlwarden.spec import ObservedModelSpec

log = logging.getLogger(__name__)


@dataclass(slots=True, kw_only=True)
class Exchange:
    """One request/response pair as the proxy saw it. Bodies are None when not captured."""

    method: str
    path: str
    status: int
    started_at: float
    total_seconds: float
    upstream_seconds: float
    # What the proxy added as a client sees it (first request byte read -> first upstream
    # byte written, plus first answer byte read -> first byte to the client); None: not
    # measured, total minus upstream is used.
    overhead_seconds: float | None = None
    request_id: str | None = None
    request_body: bytes | None = None
    request_encoding: str | None = None
    response_body: bytes | None = None
    response_encoding: str | None = None
    # Why the bodies were not kept (body_too_large, sampled_out), if they were not.
    skip: str | None = None
    # The protocol the listener knows the exchange speaks (the gRPC listener: `v2-grpc`);
    # None: the configured one (--protocol) applies.
    protocol: str | None = None

    @property
    def body_bytes(self) -> int:
        return len(self.request_body or b"") + len(self.response_body or b"")


class CaptureQueue:
    """A FIFO bounded by item count and by body bytes; `offer` never blocks."""

    def __init__(self, *, max_items: int, max_bytes: int) -> None:
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._items: deque[Exchange] = deque()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._items)

    def offer(self, exchange: Exchange, *, in_flight: int = 0) -> bool:
        """Append unless full; `in_flight` is bytes already on their way that still count."""
        size = exchange.body_bytes
        if len(self._items) >= self.max_items or self.bytes + in_flight + size > self.max_bytes:
            return False
        self._items.append(exchange)
        self.bytes += size
        return True

    def take(self) -> Exchange | None:
        if not self._items:
            return None
        exchange = self._items.popleft()
        self.bytes -= exchange.body_bytes
        return exchange


class BodyDecodeError(ValueError):
    pass


def decode_body(body: bytes, encoding: str | None, *, limit: int) -> bytes:
    """Undo a Content-Encoding (gzip, deflate) without ever producing more than `limit` bytes."""
    if not encoding or encoding == "identity":
        return body
    encoding = encoding.strip().lower()
    if encoding in ("gzip", "x-gzip"):
        wbits = 16 + zlib.MAX_WBITS
    elif encoding == "deflate":
        wbits = zlib.MAX_WBITS
    else:
        raise BodyDecodeError(f"unsupported content-encoding {encoding!r}")
    decompressor = zlib.decompressobj(wbits)
    try:
        out = decompressor.decompress(body, limit)
    except zlib.error as exc:
        raise BodyDecodeError(f"corrupt {encoding} body: {exc}") from exc
    if decompressor.unconsumed_tail:
        # A decompression bomb, or just a big body: either way over the cap.
        raise BodyDecodeError(f"{encoding} body expands beyond {limit} bytes")
    return out


@dataclass
class RequestIds:
    """Request ids for exchanges that carry none: unique per sidecar, cheap to make."""

    prefix: str = field(default_factory=lambda: os.urandom(6).hex())
    counter: itertools.count[int] = field(default_factory=itertools.count)

    def next(self) -> str:
        return f"{self.prefix}-{next(self.counter)}"


@dataclass(frozen=True)
class Described:
    """What one exchange becomes in the ingest format."""

    request: dict[str, Any]
    records: list[dict[str, Any]]
    protocol: str | None
    dropped: str | None  # the drop reason when the bodies could not be turned into records


def describe_exchange(
    exchange: Exchange,
    *,
    protocol: str,
    spec: ObservedModelSpec | None,
    max_body_bytes: int,
    ids: RequestIds,
    redactor: Redactor | None = None,
) -> Described:
    """Turn one exchange into its request entry and records (pure apart from the id counter).

    `redactor` (spec.capture.redact) drops or hashes fields before the records exist
    anywhere else: what it removes never reaches the shipper.
    """
    used_protocol: str | None = None
    dropped = exchange.skip if exchange.skip != "sampled_out" else None
    records: list[dict[str, Any]] = []
    body_id: str | None = None
    if exchange.request_body is not None and dropped is None:
        try:
            request = decode_body(
                exchange.request_body, exchange.request_encoding, limit=max_body_bytes
            )
            response = decode_body(
                exchange.response_body or b"", exchange.response_encoding, limit=max_body_bytes
            )
        except BodyDecodeError:
            dropped = "decode_error"
        else:
            try:
                used_protocol, rows = parse_exchange(
                    exchange.protocol or protocol, exchange.path, request, response, spec
                )
            except UnrecognizedProtocol:
                dropped = "unrecognized_protocol"
            except ProtocolError:
                dropped = "unparseable"
            else:
                if rows:
                    body_id = rows[0].request_id
                request_id = exchange.request_id or body_id or ids.next()
                ts = exchange.started_at
                records = [
                    {
                        "id": request_id,
                        "row": r.row,
                        "ts": ts,
                        "features": with_vectors(r.features, r.vectors),
                        "outputs": with_vectors(r.outputs, r.output_vectors),
                    }
                    for r in rows
                ]
                if redactor is not None:
                    redactor.apply(records)
    request_id = exchange.request_id or body_id or (records[0]["id"] if records else ids.next())
    entry: dict[str, Any] = {
        "id": request_id,
        "ts": exchange.started_at,
        "method": exchange.method,
        "status": exchange.status,
        "latencySeconds": exchange.upstream_seconds,
        "rows": len(records),
        "protocol": used_protocol,
    }
    if dropped is not None:
        entry["dropped"] = dropped
    return Described(request=entry, records=records, protocol=used_protocol, dropped=dropped)


def _status_class(status: int) -> str:
    return f"{min(max(status // 100, 1), 5)}xx"


def _overhead(exchange: Exchange) -> float:
    overhead = exchange.overhead_seconds
    if overhead is None:  # the exchange did not measure it (the gRPC listener)
        overhead = max(0.0, exchange.total_seconds - exchange.upstream_seconds)
    return overhead


@dataclass(frozen=True)
class WorkerSettings:
    """Everything the capture worker needs, sent by the proxy process as its first frame
    (defined here, not in `worker`, so that the proxy process never imports the shipper)."""

    protocol: str
    spec: ObservedModelSpec | None
    max_body_bytes: int
    redaction_key: bytes | None = field(default=None, repr=False)
    records_url: str | None = None
    batch_size: int = 500
    batch_interval_seconds: float = 1.0
    buffer_records: int = 50_000
    ship_timeout_seconds: float = 5.0
    ship_max_attempts: int = 5
    source: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    report_interval_seconds: float = 0.2
    log_level: int = logging.INFO


class RecordSink(Protocol):
    def add(self, request: dict[str, Any], records: list[dict[str, Any]]) -> None: ...


class CaptureProcessor:
    """One exchange at a time: metrics for every exchange, records for the captured ones.

    Runs in the capture worker process (`mlwarden.sidecar.worker`), never beside forwarding.
    """

    def __init__(
        self,
        *,
        metrics: SidecarMetrics,
        sink: RecordSink | None,
        protocol: str,
        spec: ObservedModelSpec | None,
        max_body_bytes: int,
        redaction_key: bytes | None = None,
    ) -> None:
        self.metrics = metrics
        self.sink = sink
        self.protocol = protocol
        self.spec = spec
        self.max_body_bytes = max_body_bytes
        self.ids = RequestIds()
        self._by_class: dict[str, Any] = {}
        self._by_protocol: dict[str, Any] = {}
        rules = spec.capture.redact if spec is not None else ()
        self.redactor = Redactor.from_rules(rules, redaction_key)
        if redaction_key is None and any(r.action == "hash" for r in rules):
            log.warning(
                "spec.capture.redact asks to hash %s but no ingest token keys the hash: "
                "dropping those fields instead",
                ", ".join(sorted(r.field for r in rules if r.action == "hash")),
            )

    def _requests(self, status: int) -> Any:
        """The request counter's child for `status` (looked up once per status class: a
        `labels()` call costs more than the increment)."""
        cls = _status_class(status)
        child = self._by_class.get(cls)
        if child is None:
            child = self._by_class[cls] = self.metrics.requests.labels(cls)
        return child

    def _captured(self, protocol: str) -> Any:
        child = self._by_protocol.get(protocol)
        if child is None:
            child = self._by_protocol[protocol] = self.metrics.exchanges_captured.labels(protocol)
        return child

    def process(self, exchange: Exchange) -> None:
        m = self.metrics
        self._requests(exchange.status).inc()
        m.request_duration.observe(exchange.total_seconds)
        m.upstream_duration.observe(exchange.upstream_seconds)
        m.overhead.observe(_overhead(exchange))
        self._route(exchange)

    def process_all(self, exchanges: list[Exchange]) -> None:
        """`process` for each, in order, their request metrics added up first: one increment
        per counter and histogram bucket for the batch (what capture off spends per
        exchange is mostly these metrics)."""
        m = self.metrics
        by_class: dict[str, int] = {}
        for exchange in exchanges:
            cls = _status_class(exchange.status)
            by_class[cls] = by_class.get(cls, 0) + 1
        for cls, n in by_class.items():
            child = self._by_class.get(cls)
            if child is None:
                child = self._by_class[cls] = m.requests.labels(cls)
            child.inc(n)
        observe_all(m.request_duration, [e.total_seconds for e in exchanges])
        observe_all(m.upstream_duration, [e.upstream_seconds for e in exchanges])
        observe_all(m.overhead, [_overhead(e) for e in exchanges])
        not_inference = sampled_out = 0
        for exchange in exchanges:
            if not self._inference(exchange):
                not_inference += 1
            elif exchange.skip == "sampled_out":
                sampled_out += 1
            else:
                self._capture(exchange)
        if not_inference:
            m.exchanges_not_inference.inc(not_inference)
        if sampled_out:
            m.exchanges_sampled_out.inc(sampled_out)

    def _inference(self, exchange: Exchange) -> bool:
        # Health, readiness, metadata are not: passed through, neither a drop nor shipped.
        return is_inference(exchange.protocol or self.protocol, exchange.method, exchange.path)

    def _route(self, exchange: Exchange) -> None:
        """What follows the request metrics: counted as not an inference or sampled out,
        or described into records for the sink (`_capture`)."""
        if not self._inference(exchange):
            self.metrics.exchanges_not_inference.inc()
        elif exchange.skip == "sampled_out":
            self.metrics.exchanges_sampled_out.inc()
        else:
            self._capture(exchange)

    def _capture(self, exchange: Exchange) -> None:
        m = self.metrics
        if exchange.request_body is None and exchange.skip is None:
            # The model never answered (502/504): a request entry, no rows.
            if self.sink is not None:
                self.sink.add(self._describe(exchange).request, [])
            return
        described = self._describe(exchange)
        if described.dropped is not None:
            m.exchanges_dropped.labels(described.dropped).inc()
        else:
            self._captured(described.protocol or "unknown").inc()
            m.records_captured.inc(len(described.records))
        if self.sink is not None:
            self.sink.add(described.request, described.records)

    def _describe(self, exchange: Exchange) -> Described:
        return describe_exchange(
            exchange,
            protocol=self.protocol,
            spec=self.spec,
            max_body_bytes=self.max_body_bytes,
            ids=self.ids,
            redactor=self.redactor,
        )


# --- the exchange on the wire between the proxy and the capture worker ----------------------
#
# A frame is a 4-byte big-endian length, then a kind byte, then the payload. An exchange's
# payload is a 4-byte length of its metadata (every `Exchange` field but the bodies, as an
# orjson list in field order, then the two body lengths, -1 for None), the metadata, then the
# request and the response body as raw bytes: no parsing or encoding of a body on the proxy.

FRAME_HEADER = struct.Struct(">IB")
META_LENGTH = struct.Struct(">I")
KIND_EXCHANGE = ord("X")
KIND_SETTINGS = ord("S")
KIND_DRAIN = ord("D")
KIND_REPORT = ord("R")  # the worker's report to the proxy
META_FIELDS = tuple(
    f.name for f in fields(Exchange) if f.name not in ("request_body", "response_body")
)
# exchange_frame and read_exchange name these one by one (a loop over names costs more per
# exchange than the rest of the frame): a field added to Exchange must be added there too.
if META_FIELDS != (
    "method", "path", "status", "started_at", "total_seconds", "upstream_seconds",
    "overhead_seconds", "request_id", "request_encoding", "response_encoding", "skip", "protocol",
):  # fmt: skip
    raise RuntimeError("Exchange's fields changed: update exchange_frame, read_exchange")


def exchange_frame(exchange: Exchange) -> list[bytes]:
    """The frame of one exchange, as pieces to write in order (the bodies are not copied)."""
    request, response = exchange.request_body, exchange.response_body
    e = exchange
    meta = orjson.dumps(
        [  # META_FIELDS, in order (written out: this runs on the forwarding loop)
            e.method, e.path, e.status, e.started_at, e.total_seconds, e.upstream_seconds,
            e.overhead_seconds, e.request_id, e.request_encoding, e.response_encoding, e.skip,
            e.protocol,
            -1 if request is None else len(request),
            -1 if response is None else len(response),
        ]
    )  # fmt: skip
    size = 1 + META_LENGTH.size + len(meta) + len(request or b"") + len(response or b"")
    head = FRAME_HEADER.pack(size, KIND_EXCHANGE) + META_LENGTH.pack(len(meta)) + meta
    return [head, request, response] if request and response else [head, request or response or b""]


def read_exchange(payload: bytes) -> Exchange:
    """An exchange back from its frame's payload (the part after the kind byte)."""
    (meta_length,) = META_LENGTH.unpack_from(payload)
    at = META_LENGTH.size + meta_length
    (method, path, status, started_at, total_seconds, upstream_seconds, overhead_seconds,
     request_id, request_encoding, response_encoding, skip, protocol,
     request_length, response_length) = orjson.loads(payload[META_LENGTH.size : at])  # fmt: skip
    request_body = response_body = None
    if request_length >= 0:
        request_body = payload[at : at + request_length]
        at += request_length
    if response_length >= 0:
        response_body = payload[at : at + response_length]
    return Exchange(
        method=method, path=path, status=status, started_at=started_at,
        total_seconds=total_seconds, upstream_seconds=upstream_seconds,
        overhead_seconds=overhead_seconds, request_id=request_id, request_body=request_body,
        request_encoding=request_encoding, response_body=response_body,
        response_encoding=response_encoding, skip=skip, protocol=protocol,
    )  # fmt: skip


def frame(kind: int, payload: bytes) -> bytes:
    return FRAME_HEADER.pack(1 + len(payload), kind) + payload
