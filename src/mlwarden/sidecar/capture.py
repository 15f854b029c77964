"""Capture: from a served exchange to records, off the model's hot path.

The proxy calls `CaptureQueue.offer` once per request, an O(1) append that never
waits; everything else (timing metrics, decompression, protocol parsing, request
ids) happens in `CaptureWorker`, which drains the queue in slices so that no
parse holds the event loop for long. The queue is bounded twice, by count and by
body bytes; what does not fit is counted, never waited for.

`describe_exchange` is the pure core: one exchange in, the per-request entry and
the per-row records of the ingest format out (`docs/records-api.md`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time
import zlib
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

from mlwarden.protocols import UnrecognizedProtocol, parse_exchange
from mlwarden.records import ProtocolError
from mlwarden.sidecar.metrics import SidecarMetrics
from mlwarden.sidecar.redact import Redactor
from mlwarden.spec import ObservedModelSpec

log = logging.getLogger(__name__)

# Parse for at most this long before letting the proxy run again: the longest a
# request can wait on capture work (plus one exchange's parse, bounded by the body cap).
SLICE_SECONDS = 0.0005
DRAIN_INTERVAL_SECONDS = 0.02


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

    def offer(self, exchange: Exchange) -> bool:
        size = exchange.body_bytes
        if len(self._items) >= self.max_items or self.bytes + size > self.max_bytes:
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
                    protocol, exchange.path, request, response, spec
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
                        "features": r.features,
                        "outputs": r.outputs,
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


class RecordSink(Protocol):
    def add(self, request: dict[str, Any], records: list[dict[str, Any]]) -> None: ...


class CaptureWorker:
    """Drains the queue: metrics for every exchange, records for the captured ones."""

    def __init__(
        self,
        queue: CaptureQueue,
        *,
        metrics: SidecarMetrics,
        sink: RecordSink | None,
        protocol: str,
        spec: ObservedModelSpec | None,
        max_body_bytes: int,
        redaction_key: bytes | None = None,
    ) -> None:
        self.queue = queue
        self.metrics = metrics
        self.sink = sink
        self.protocol = protocol
        self.spec = spec
        self.max_body_bytes = max_body_bytes
        self.ids = RequestIds()
        rules = spec.capture.redact if spec is not None else ()
        self.redactor = Redactor.from_rules(rules, redaction_key)
        if redaction_key is None and any(r.action == "hash" for r in rules):
            log.warning(
                "spec.capture.redact asks to hash %s but no ingest token keys the hash: "
                "dropping those fields instead",
                ", ".join(sorted(r.field for r in rules if r.action == "hash")),
            )
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="mlwarden-capture")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.drain_all()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(DRAIN_INTERVAL_SECONDS)
            try:
                while self.drain_slice():  # noqa: ASYNC110
                    # Not a poll: a zero sleep lets the proxy serve between parse slices.
                    await asyncio.sleep(0)
            except Exception:  # pragma: no cover - a bug must not stop capture for good
                log.exception("capture worker failed on an exchange; continuing")

    def drain_all(self) -> None:
        while self.drain_slice():
            pass

    def drain_slice(self, budget: float = SLICE_SECONDS) -> bool:
        """Process exchanges for about `budget` seconds; True if some are left."""
        deadline = time.perf_counter() + budget
        m = self.metrics
        while True:
            exchange = self.queue.take()
            if exchange is None:
                self._update_gauges()
                return False
            m.requests.labels(_status_class(exchange.status)).inc()
            m.request_duration.observe(exchange.total_seconds)
            m.upstream_duration.observe(exchange.upstream_seconds)
            overhead = exchange.overhead_seconds
            if overhead is None:
                overhead = max(0.0, exchange.total_seconds - exchange.upstream_seconds)
            m.overhead.observe(overhead)
            if exchange.skip == "sampled_out":
                m.exchanges_sampled_out.inc()
            elif exchange.request_body is None and exchange.skip is None:
                # The model never answered (502/504): a request entry, no rows.
                if self.sink is not None:
                    described = describe_exchange(
                        exchange,
                        protocol=self.protocol,
                        spec=self.spec,
                        max_body_bytes=self.max_body_bytes,
                        ids=self.ids,
                        redactor=self.redactor,
                    )
                    self.sink.add(described.request, [])
            else:
                described = describe_exchange(
                    exchange,
                    protocol=self.protocol,
                    spec=self.spec,
                    max_body_bytes=self.max_body_bytes,
                    ids=self.ids,
                    redactor=self.redactor,
                )
                if described.dropped is not None:
                    m.exchanges_dropped.labels(described.dropped).inc()
                else:
                    m.exchanges_captured.labels(described.protocol or "unknown").inc()
                    m.records_captured.inc(len(described.records))
                if self.sink is not None:
                    self.sink.add(described.request, described.records)
            if time.perf_counter() >= deadline:
                self._update_gauges()
                return len(self.queue) > 0

    def _update_gauges(self) -> None:
        self.metrics.queue_depth.set(len(self.queue))
        self.metrics.queue_bytes.set(self.queue.bytes)
