"""Shipping: captured records to the detector, in batches, with retries and bounded memory.

Records wait in a buffer capped by record count; when the collector is down or
slow the oldest exchanges are evicted first (fresh traffic is what drift
detection needs) and counted as `buffer_full`. A batch goes out when it reaches
`batch_size` records or when its oldest record has waited `batch_interval`.
Failures retry with exponential backoff and full jitter (honouring Retry-After),
up to `max_attempts`; a 4xx other than 408/429 means the collector will never
take the batch, so it is dropped at once as `rejected` (`unauthorized` for 401/403: the
ingest token is missing or wrong). With an ingest token, every post carries it as
`Authorization: Bearer`.

Every post carries an `Idempotency-Key`, `PRODUCER.FIRST.COUNT`: this shipper's random
producer id, the sequence number of the batch's first exchange and how many exchanges it
holds. A batch re-sent after a timeout (the detector may well have ingested it) has the same
key, even when it was put back into the buffer and taken out again (at shutdown), so the
detector ingests it once (docs/records-api.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import os
import random
import time
from collections import deque
from typing import Any

import aiohttp
import orjson

from mlwarden import __version__, backoff
from mlwarden.sidecar.metrics import SidecarMetrics

log = logging.getLogger(__name__)

BACKOFF_BASE_SECONDS = 0.1
BACKOFF_CAP_SECONDS = 5.0
RETRY_AFTER_CAP_SECONDS = 30.0


# A non-finite value found in a record: (record index within its exchange, "features" or
# "outputs", field name, "NaN" | "Infinity" | "-Infinity").
NonFinite = tuple[int, str, str, str]


class Item:
    """One exchange, encoded as soon as it is captured (see `encode_item`)."""

    __slots__ = ("non_finite", "records", "request", "rows", "seq")

    def __init__(
        self, request: bytes, records: bytes, rows: int, non_finite: list[NonFinite] | None = None
    ) -> None:
        self.request = request  # the request entry, as JSON
        self.records = records  # its records, as JSON array items joined by commas
        self.rows = rows
        self.non_finite = non_finite  # None when every value is finite (nearly always)
        self.seq = 0  # its place in the shipper's sequence (set by Shipper.add)


def _token(value: float) -> str:
    return "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")


def find_non_finite(records: list[dict[str, Any]]) -> list[NonFinite] | None:
    """Where the records hold NaN or an infinity (orjson would write those as null)."""
    found: list[NonFinite] | None = None
    isfinite = math.isfinite
    for index, record in enumerate(records):
        for part in ("features", "outputs"):
            values = record.get(part)
            if not values:
                continue
            for name, value in values.items():
                if value.__class__ is float and not isfinite(value):
                    if found is None:
                        found = []
                    found.append((index, part, name, _token(value)))
    return found


def encode_item(request: dict[str, Any], records: list[dict[str, Any]]) -> Item:
    """Encode one exchange now, in the capture worker, with orjson.

    Per exchange it is a few microseconds, and assembling a batch is then a byte join.
    orjson writes NaN and infinities as `null`; each one is also listed (`find_non_finite`)
    so that the batch's `nonFinite` entries say what the null stands for
    (docs/records-api.md): the body stays strict JSON, parsed once by the detector.
    """
    dumps = orjson.dumps
    try:
        body = dumps(records)[1:-1]  # the array's items, joined by commas
    except TypeError:  # an integer beyond 64 bits, which orjson does not write
        records = [_fit_integers(r) for r in records]
        body = dumps(records)[1:-1]
    # A non-finite value is written as null: without a null in the body there is none, and
    # the walk over every value (the larger cost for a wide batch) is skipped.
    non_finite = find_non_finite(records) if b"null" in body else None
    return Item(dumps(request), body, len(records), non_finite)


def _as_float(value: int) -> float:
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def _fit_integers(record: dict[str, Any]) -> dict[str, Any]:
    """Integers beyond 64 bits as floats: what a detector reading JSON makes of them anyway."""
    out = dict(record)
    for part in ("features", "outputs"):
        values = record.get(part)
        if isinstance(values, dict):
            out[part] = {
                k: _as_float(v) if v.__class__ is int and not -(2**63) <= v < 2**64 else v
                for k, v in values.items()
            }
    return out


def backoff_seconds(attempt: int, *, rng: random.Random, retry_after: float | None = None) -> float:
    """Full-jitter exponential backoff (attempt 0 is the first retry)."""
    if retry_after is not None:
        return min(max(retry_after, 0.0), RETRY_AFTER_CAP_SECONDS)
    return backoff.full_jitter(attempt, base=BACKOFF_BASE_SECONDS, cap=BACKOFF_CAP_SECONDS, rng=rng)


def _retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After")
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None  # an HTTP date; fall back to our own backoff


def batch_key(producer: str, items: list[Item]) -> str:
    """The batch's `Idempotency-Key`: the same items in the same order, the same key."""
    return f"{producer}.{items[0].seq}.{len(items)}" if items else f"{producer}.empty"


def encode_batch(items: list[Item], source: dict[str, Any]) -> bytes:
    """The ingest format (docs/records-api.md): strict JSON, non-finite values as `null` plus
    a `nonFinite` entry each, with the record's index in this batch."""
    non_finite: list[dict[str, Any]] = []
    offset = 0
    for item in items:
        if item.non_finite:
            non_finite.extend(
                {"record": offset + index, "in": part, "name": name, "value": token}
                for index, part, name, token in item.non_finite
            )
        offset += item.rows
    tail = b',"nonFinite":' + orjson.dumps(non_finite) + b"}" if non_finite else b"}"
    return b"".join((
        b'{"source":', orjson.dumps(source),
        b',"requests":[', b",".join(i.request for i in items),
        b'],"records":[', b",".join(i.records for i in items if i.rows), b"]", tail,
    ))  # fmt: skip


class Shipper:
    def __init__(
        self,
        url: str,
        *,
        metrics: SidecarMetrics,
        batch_size: int = 500,
        batch_interval: float = 1.0,
        buffer_records: int = 50_000,
        timeout: float = 5.0,
        max_attempts: int = 5,
        source: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.url = url
        self.metrics = metrics
        self.batch_size = batch_size
        self.batch_interval = batch_interval
        self.buffer_records = buffer_records
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.source = {"sidecar": __version__, **(source or {})}
        self.headers = {"Content-Type": "application/json", **(headers or {})}
        self._buffer: deque[Item] = deque()
        self._buffered = 0  # rows in the buffer, counting a request with no rows as one
        self._oldest_at: float | None = None
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._rng = random.Random()
        # Names this shipper in its batches' keys: unique per process, not a secret.
        self.producer = os.urandom(8).hex()
        self._seq = itertools.count(1)
        self.last_success_at: float | None = None
        self.last_error: str | None = None

    # --- called by the capture worker -----------------------------------------

    def add(self, request: dict[str, Any], records: list[dict[str, Any]]) -> None:
        item = encode_item(request, records)
        item.seq = next(self._seq)
        self._buffer.append(item)
        self._buffered += max(1, item.rows)
        if self._oldest_at is None:
            self._oldest_at = time.monotonic()
        while self._buffered > self.buffer_records and len(self._buffer) > 1:
            evicted = self._buffer.popleft()
            self._buffered -= max(1, evicted.rows)
            if evicted.rows:
                self.metrics.records_dropped.labels("buffer_full").inc(evicted.rows)
        if self._buffered >= self.batch_size:
            self._ready.set()
        self.metrics.buffer_records.set(self._buffered)

    @property
    def buffered(self) -> int:
        return self._buffered

    # --- lifecycle ------------------------------------------------------------

    def start(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        self._session = aiohttp.ClientSession(timeout=timeout)
        self._task = asyncio.create_task(self._run(), name="mlwarden-shipper")

    async def stop(self, *, flush_timeout: float = 5.0) -> None:
        """Stop shipping; try once more to deliver what is buffered, within `flush_timeout`."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        try:
            async with asyncio.timeout(flush_timeout):
                while self._buffer:
                    await self._deliver(self._take_batch(), max_attempts=1)
        except TimeoutError:
            log.warning("shutdown: %d buffered records not delivered", self._buffered)
        if self._session is not None:
            await self._session.close()

    # --- the loop ---------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            await self._wait_for_batch()
            batch = self._take_batch()
            if batch:
                try:
                    await self._deliver(batch, max_attempts=self.max_attempts)
                except asyncio.CancelledError:
                    # Put the batch back so stop() can still try to flush it.
                    self._buffer.extendleft(reversed(batch))
                    self._buffered += sum(max(1, item.rows) for item in batch)
                    raise

    async def _wait_for_batch(self) -> None:
        while True:
            if self._buffered >= self.batch_size:
                return
            if self._oldest_at is not None:
                wait = self._oldest_at + self.batch_interval - time.monotonic()
                if wait <= 0:
                    return
            else:
                wait = self.batch_interval
            self._ready.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ready.wait(), timeout=wait)

    def _take_batch(self) -> list[Item]:
        batch: list[Item] = []
        rows = 0
        while self._buffer and rows < self.batch_size:
            item = self._buffer.popleft()
            batch.append(item)
            rows += max(1, item.rows)
        self._buffered -= rows
        self._oldest_at = time.monotonic() if self._buffer else None
        self.metrics.buffer_records.set(self._buffered)
        return batch

    async def _deliver(self, batch: list[Item], *, max_attempts: int) -> None:
        assert self._session is not None
        records = sum(item.rows for item in batch)
        body = encode_batch(batch, self.source)
        headers = {**self.headers, "Idempotency-Key": batch_key(self.producer, batch)}
        m = self.metrics
        for attempt in range(max_attempts):
            retry_after: float | None = None
            started = time.perf_counter()
            try:
                async with self._session.post(self.url, data=body, headers=headers) as resp:
                    text = await resp.read()
                    m.ship_duration.observe(time.perf_counter() - started)
                    if 200 <= resp.status < 300:
                        m.ship_requests.labels("ok").inc()
                        m.records_shipped.inc(records)
                        # Counts and sizes only: a payload value is never logged.
                        log.debug("shipped %d records (%d bytes)", records, len(body))
                        self.last_success_at = time.time()
                        self.last_error = None
                        return
                    self.last_error = f"HTTP {resp.status}: {text[:200]!r}"
                    if resp.status not in (408, 429) and resp.status < 500:
                        # 401/403: the ingest token is missing or wrong; retrying cannot help.
                        why = "unauthorized" if resp.status in (401, 403) else "rejected"
                        m.ship_requests.labels(why).inc()
                        m.records_dropped.labels(why).inc(records)
                        log.warning(
                            "collector rejected a batch of %d: %s", records, self.last_error
                        )
                        return
                    retry_after = _retry_after(resp.headers)
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
            if attempt + 1 < max_attempts:
                m.ship_requests.labels("retry").inc()
                await asyncio.sleep(
                    backoff_seconds(attempt, rng=self._rng, retry_after=retry_after)
                )
        m.ship_requests.labels("failed").inc()
        m.records_dropped.labels("retries_exhausted").inc(records)
        log.warning(
            "dropped a batch of %d records after %d attempts: %s",
            records,
            max_attempts,
            self.last_error,
        )
