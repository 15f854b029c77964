"""The forwarding path at the protocol level: HTTP/1.1 framing in, the same bytes out.

Two asyncio protocols and a pool, driven by callbacks rather than a coroutine per
request, because on the model's hot path every await and every header object counts:

- `ClientConnection` parses what a client sends with `httptools` (llhttp) and nothing
  more: the request line, header fields as the bytes they came as, the body framing.
- `UpstreamConnection` parses the model's answer the same way; `UpstreamPool` keeps
  keep-alive connections to the model and never hands out one that is known dead.
- `Forwarder` holds what all connections share: the limits, the metrics, the capture
  queue and the drain flag.

Per request the head goes upstream as it came, minus the hop-by-hop fields (RFC 9110
§7.6.1: Connection, Proxy-Connection, Keep-Alive, TE, Transfer-Encoding, Upgrade and
every field the Connection header names) and `Expect` (the sidecar answers
`100 Continue` itself, as nginx does); a request without `Host` (HTTP/1.0) gets the
upstream's. The body:

- sized and at most `max_body_bytes` (what capture keeps): read whole, then sent with
  the head in one write; such a request is replayed once on a fresh connection if a
  pooled connection turns out dead before any answer byte and its method is idempotent;
- chunked, or sized over the cap: streamed upstream as it arrives, with its original
  framing (chunked stays chunked, trailers included; Content-Length stays), reading from
  the client paused while the model's socket is backed up.

The answer: a sized one of at most `max_body_bytes` (not an event stream) is read
whole and written in one go (so a model breaking it off still gets the client a clean
502); anything else is streamed, the head as soon as it arrives, each piece as it
comes, reading from the model paused while the client's socket is backed up. Chunked
answers are re-chunked for HTTP/1.1 clients; an HTTP/1.0 client gets the body
unframed and the connection closed after it. Interim (1xx) answers are not passed on.

Failures answer as nginx does, with a plain-text body: 502 when the model refuses the
connection, breaks it or answers garbage; 504 when it does not connect or answer
within its timeouts; 400 for a request llhttp refuses or an HTTP/1.1 request without
exactly one Host (RFC 9112 §3.2), 405 for CONNECT; 431 for a head over 64 KiB; 408
when a request body stops arriving for `client_body_timeout`; 503 (and close) beyond
`max_connections`. After a 4xx of its own the sidecar ends its side and reads (and
drops) what the client still sends for up to 2 s before closing, as nginx's lingering
close does: a close with unread input resets the connection, answer included. A client
closing its side is a disconnect (counted; the model's connection is dropped). A request
head must be complete within `client_header_timeout` of the connection opening or of the
previous response. Pipelined requests are answered in order, one at a time (reading is
paused while one waits).

An answered request's exchange is offered to capture once no request is in progress (at
the end of a burst; at most `RECORD_BATCH` exchanges or `RECORD_BYTES` of captured bodies
wait, for at most `RECORD_MAX_DELAY_SECONDS`): building it does not delay the answers to
the requests that came with it.

Timing, per exchange, for the metrics (`docs/architecture.md`):

- `overhead`: first request byte read -> first upstream byte written, plus first
  upstream response byte read -> first byte written to the client; a body the sidecar
  reads whole before sending (in either direction) is inside that time;
- `upstream`: first upstream byte written -> last response byte read from the model;
- `total`: first request byte read -> last byte written to the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Protocol, cast
from urllib.parse import urlsplit

import httptools

from mlwarden.sidecar.capture import Exchange
from mlwarden.sidecar.config import SidecarConfig
from mlwarden.sidecar.metrics import SidecarMetrics

# Named, not __name__: the compiled copy (mlwarden.sidecar._native.forward) logs as this one.
log = logging.getLogger("mlwarden.sidecar.forward")

# RFC 9110 §7.6.1: connection-specific fields a proxy must not forward (and whatever the
# Connection header itself names). `expect` is answered here, not forwarded.
HOP_BY_HOP = frozenset(
    (b"connection", b"proxy-connection", b"keep-alive", b"te", b"transfer-encoding", b"upgrade")
)
MAX_HEAD_BYTES = 64 << 10
IDEMPOTENT = frozenset((b"GET", b"HEAD", b"PUT", b"DELETE", b"OPTIONS", b"TRACE"))
# A pooled connection idle longer than this is closed rather than reused: most model
# servers close idle keep-alive connections after 5 s (uvicorn's default), and a request
# sent as the server closes is lost.
POOL_IDLE_SECONDS = 2.0
POOL_MAX_IDLE = 256
LINGER_SECONDS = 2.0
# Answered requests whose exchanges wait for a moment with no request in progress: at most
# this many (under continuous load there is no such moment), holding at most this many
# bytes of bodies for capture, for at most this long (a request in progress for long, an
# event stream, holds nothing back).
RECORD_BATCH = 64
RECORD_BYTES = 256 << 10
RECORD_MAX_DELAY_SECONDS = 0.05

# What each field of a request head is to the forwarding path (by its lowercased name;
# a name absent here is passed on as it is, with nothing else to note).
_Q_DROP, _Q_LENGTH, _Q_CHUNKED, _Q_CONNECTION, _Q_HOST, _Q_EXPECT, _Q_ID, _Q_ENCODING = range(8)
_REQUEST_FIELDS = {name: _Q_DROP for name in HOP_BY_HOP} | {
    b"content-length": _Q_LENGTH,
    b"transfer-encoding": _Q_CHUNKED,
    b"connection": _Q_CONNECTION,
    b"host": _Q_HOST,
    b"expect": _Q_EXPECT,
    b"x-request-id": _Q_ID,
    b"content-encoding": _Q_ENCODING,
}
# The same for an answer's head.
_A_DROP, _A_LENGTH, _A_CHUNKED, _A_CONNECTION, _A_TYPE, _A_ENCODING = range(6)
_ANSWER_FIELDS = {name: _A_DROP for name in HOP_BY_HOP} | {
    b"content-length": _A_LENGTH,
    b"transfer-encoding": _A_CHUNKED,
    b"connection": _A_CONNECTION,
    b"content-type": _A_TYPE,
    b"content-encoding": _A_ENCODING,
}

# The same two tables by the names as clients and models usually spell them (and the
# usual end-to-end fields, as _PASS): a field found here needs no lowercased copy of its
# name; any other spelling is looked up lowercased.
_PASS = 99
_USUAL = (
    b"accept", b"accept-encoding", b"authorization", b"cache-control", b"content-type",
    b"date", b"server", b"user-agent", b"traceparent", b"vary", b"x-request-id",
)  # fmt: skip


def _as_sent(fields: dict[bytes, int]) -> dict[bytes, int]:
    out: dict[bytes, int] = {}
    for name in (*fields, *_USUAL):
        kind = fields.get(name, _PASS)
        out[name] = kind
        out[b"-".join(part.capitalize() for part in name.split(b"-"))] = kind
    return out


_REQUEST_AS_SENT = _as_sent(_REQUEST_FIELDS)
_ANSWER_AS_SENT = _as_sent(_ANSWER_FIELDS)

_CRLF = b"\r\n"
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_LAST_CHUNK = b"0\r\n\r\n"
_now = time.perf_counter


def names_only_hop_by_hop(connection: bytes | None) -> bool:
    """Whether the Connection header names no field beyond the hop-by-hop ones (the usual
    `keep-alive`): then the lines kept as the head was parsed are the answer. (`close`
    could name a field called Close: that rare case takes `filter_headers`.)"""
    if not connection or connection == b"keep-alive":  # the usual answers, at once
        return True
    for token in connection.split(b","):
        t = token.strip().lower()
        if t and t not in HOP_BY_HOP:
            return False
    return True


def filter_headers(
    headers: list[tuple[bytes, bytes]],
    connection: bytes | None,
    *,
    drop: frozenset[bytes] = frozenset(),
) -> list[bytes]:
    """The header lines to pass on: `name: value\\r\\n` for each end-to-end field.

    Drops the hop-by-hop fields, those the Connection header names (`connection`, its raw
    value) and `drop`; names are compared case-insensitively and passed on as they came.
    """
    named: frozenset[bytes] | tuple[()] = ()
    if connection:
        named = frozenset(t.strip().lower() for t in connection.split(b",") if t.strip())
    out: list[bytes] = []
    for name, value in headers:
        k = name.lower()
        if k in HOP_BY_HOP or k in named or k in drop:
            continue
        out.append(b"%s: %s\r\n" % (name, value))
    return out


def drop_named(
    lines: list[bytes], connection: bytes | None, *, drop: frozenset[bytes] = frozenset()
) -> list[bytes]:
    """`lines` (`name: value\\r\\n`, hop-by-hop fields already left out) without the fields
    the Connection header names and those in `drop`, compared case-insensitively."""
    named = set(drop)
    if connection:
        named.update(t.strip().lower() for t in connection.split(b","))
    return [line for line in lines if line[: line.index(b":")].lower() not in named]


def plain_response(status: int, reason: bytes, message: str, *, close: bool) -> bytes:
    body = f"mlwarden-sidecar: {message}\n".encode()
    connection = b"Connection: close\r\n" if close else b""
    return (
        b"HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Length: %d\r\n%s\r\n%s" % (status, reason, len(body), connection, body)
    )


def as_protocol(conn: UpstreamConnection | ClientConnection) -> asyncio.BaseProtocol:
    """A connection as the event loop's protocol: it has every method asyncio calls."""
    return cast(asyncio.BaseProtocol, conn)


class ExchangeQueue(Protocol):
    """Where each exchange goes for capture: `offer` never blocks; False = dropped."""

    def offer(self, exchange: Exchange) -> bool: ...


class _Refusal(Exception):
    """A request the sidecar answers itself (4xx) instead of forwarding."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _Limits:
    """What every connection reads from `SidecarConfig`, resolved once."""

    __slots__ = (
        "body_timeout",
        "cap",
        "connect_timeout",
        "header_timeout",
        "max_connections",
        "read_timeout",
        "sample_rate",
    )

    def __init__(self, config: SidecarConfig, *, capturing: bool) -> None:
        self.cap: int = config.max_body_bytes
        self.sample_rate: float = config.sample_rate if capturing else 0.0
        self.header_timeout: float = config.client_header_timeout_seconds
        self.body_timeout: float = config.client_body_timeout_seconds
        self.connect_timeout: float = config.upstream_connect_timeout_seconds
        self.read_timeout: float = config.upstream_read_timeout_seconds
        self.max_connections: int = config.max_connections


class UpstreamTarget:
    """Where the model is: host, port, TLS, the path prefix and the Host to send by default."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.tls = parts.scheme == "https"
        self.port = parts.port or (443 if self.tls else 80)
        self.prefix = parts.path.rstrip("/").encode()
        self.host_header = parts.netloc.encode()
        self.ssl: ssl.SSLContext | None = ssl.create_default_context() if self.tls else None


class Forwarder:
    """Shared by every client connection: limits, the upstream pool, metrics, capture."""

    def __init__(
        self,
        config: SidecarConfig,
        *,
        queue: ExchangeQueue,
        metrics: SidecarMetrics,
        capturing: bool,
        not_captured: str | None = None,
    ) -> None:
        self.limits = _Limits(config, capturing=capturing and not not_captured)
        self.target = UpstreamTarget(config.upstream)
        self.pool = UpstreamPool(self.target, connect_timeout=self.limits.connect_timeout)
        self.queue = queue
        self.metrics = metrics
        # Why nothing is captured, counted per exchange in exchanges_dropped (None: sampling).
        self.not_captured = not_captured
        self.drops_queue_full = metrics.exchanges_dropped.labels("queue_full")
        self.body_timeouts = metrics.client_errors.labels("body_timeout")
        self.refused = metrics.client_errors.labels("too_many_connections")
        self.connections: set[ClientConnection] = set()
        self.in_flight: set[ClientConnection] = set()
        # Set for the drain: every response from then on ends its connection.
        self.closing = False
        # Wall clock = perf_counter + offset, re-read at most once a second (see wall_time).
        self._wall_offset = time.time() - _now()
        self._wall_read_at = _now()
        self._quiet: asyncio.Event | None = None  # set when the last request in flight ends
        # Called when the last request in flight ends (capture's FlushTimer.quiet).
        self.on_quiet: Callable[[], None] | None = None
        # Requests answered whose exchange is not yet offered to capture (record_later).
        self.answered: list[_Request] = []
        self.answered_bytes = 0  # the bodies they hold for capture
        self.answered_timer: asyncio.TimerHandle | None = None

    def wall_time(self, t: float) -> float:
        """The wall-clock time (epoch seconds) of `t`, a `perf_counter` reading: one clock
        read per exchange instead of two. The offset is re-read once a second, as NTP may
        slew the wall clock."""
        if t - self._wall_read_at > 1.0:
            self._wall_read_at = t
            self._wall_offset = time.time() - _now()
        return t + self._wall_offset

    def protocol(self) -> asyncio.BaseProtocol:
        """A new client connection (the server's protocol factory)."""
        return as_protocol(ClientConnection(self))

    def offer(self, exchange: Exchange) -> None:
        if not self.queue.offer(exchange):
            self.drops_queue_full.inc()

    def close_idle(self) -> None:
        """Close every client connection with no request in progress (the stop)."""
        for conn in list(self.connections):
            if conn.active is None and conn.parsing is None and not conn.pending:
                conn.close()

    async def wait_in_flight(self, budget: float) -> None:
        """Until no request is in progress, or `budget` seconds; then cut off what is left."""
        if self.in_flight:
            self._quiet = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._quiet.wait(), budget)
        for conn in list(self.connections):
            conn.abort()
        self.pool.close()
        self.record_answered()

    def busy(self) -> bool:
        """Whether a request is in progress (capture waits for a quiet moment to flush)."""
        return bool(self.in_flight)

    def record_later(self, request: _Request, status: int, end: float) -> None:
        """Offer `request`'s exchange once no request is in progress, or once `RECORD_BATCH`
        or `RECORD_BYTES` of bodies wait, at the latest `RECORD_MAX_DELAY_SECONDS` after the
        first waiting: building and offering it does not delay the answers of the requests
        that arrived with it, and a request in progress for long (an event stream) does not
        hold the others' back."""
        request.answered_status = status
        request.answered_at = end
        if request.capture:
            self.answered_bytes += request.held_bytes()
        else:  # its bodies are never read: not held while it waits
            request.body_parts = []
            request.resp_body = []
        answered = self.answered
        answered.append(request)
        if len(answered) >= RECORD_BATCH or self.answered_bytes >= RECORD_BYTES:
            self.record_answered()
        elif self.answered_timer is None and len(self.in_flight) > 1:
            # (With this request the only one in progress, its end offers it right away.)
            self.answered_timer = asyncio.get_running_loop().call_later(
                RECORD_MAX_DELAY_SECONDS, self.record_answered
            )

    def record_answered(self) -> None:
        """Offer every waiting exchange (also before a scrape of the metrics and at the stop)."""
        if self.answered_timer is not None:
            self.answered_timer.cancel()
            self.answered_timer = None
        answered, self.answered = self.answered, []
        self.answered_bytes = 0
        for request in answered:
            try:
                request.record(request.answered_status, request.answered_at)
            except Exception:  # a bug of ours: this exchange is lost, not the others
                log.exception("building an exchange for capture failed")

    def request_done(self, conn: ClientConnection) -> None:
        self.in_flight.discard(conn)
        if not self.in_flight:
            if self.answered:
                self.record_answered()
            if self._quiet is not None:
                self._quiet.set()
            if self.on_quiet is not None:
                self.on_quiet()


class UpstreamPool:
    """Keep-alive connections to the model, most recently used first."""

    def __init__(self, target: UpstreamTarget, *, connect_timeout: float) -> None:
        self.target = target
        self.connect_timeout = connect_timeout
        self.idle: list[UpstreamConnection] = []
        self.closed = False

    def take(self, now: float | None = None) -> UpstreamConnection | None:
        """An idle connection known alive, or None (`now`: the caller's clock reading)."""
        if now is None:
            now = _now()
        while self.idle:
            conn = self.idle.pop()
            if conn.alive and now - conn.idle_since < POOL_IDLE_SECONDS:
                return conn
            conn.close()
        return None

    async def connect(self) -> UpstreamConnection:
        loop = asyncio.get_running_loop()
        t = self.target
        async with asyncio.timeout(self.connect_timeout):
            _, protocol = await loop.create_connection(
                lambda: as_protocol(UpstreamConnection(self)), t.host, t.port, ssl=t.ssl
            )
        return cast(UpstreamConnection, protocol)

    def put(self, conn: UpstreamConnection, now: float | None = None) -> None:
        if self.closed or not conn.alive or len(self.idle) >= POOL_MAX_IDLE:
            conn.close()
            return
        conn.idle_since = _now() if now is None else now
        self.idle.append(conn)

    def discard(self, conn: UpstreamConnection) -> None:
        with contextlib.suppress(ValueError):
            self.idle.remove(conn)

    def close(self) -> None:
        self.closed = True
        for conn in self.idle:
            conn.close()
        self.idle.clear()


class UpstreamConnection:
    """One connection to the model; parses answers and hands each event to its request.

    An asyncio protocol by its methods (asyncio and uvloop call them by name), not by
    subclassing `asyncio.Protocol`: a plain class is what mypyc compiles into a native one
    (`mlwarden.sidecar.native`)."""

    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.request: _Request | None = None
        self.alive = False
        self.reused = False
        self.idle_since = 0.0
        self.last_read = 0.0
        self.write_paused = False
        self.reading_paused = False  # by its request's client, whose socket is backed up
        # Per answer:
        self.status = 0
        self.reason = b""
        self._answer_head()
        self.head_done = False
        self.trailers: list[tuple[bytes, bytes]] | None = None
        self.done = False
        self.keep_alive = False
        self.replace_parser = False

    def _answer_head(self) -> None:
        """What the head's fields say, noted as they are parsed (see on_header)."""
        self.lines: list[bytes] = []  # the header lines to pass on
        self.length: int | None = None
        self.chunked = False
        self.event_stream = False
        self.encoding: str | None = None
        self.connection: bytes | None = None

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self.alive = True

    def data_received(self, data: bytes) -> None:
        self.last_read = _now()
        request = self.request
        if request is None:  # nothing asked: a model talking out of turn is not reused
            self.close()
            return
        if request.up_first_read == 0.0:
            request.up_first_read = self.last_read
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.alive = False
            request.upstream_failed("protocol", f"upstream answered malformed HTTP: {exc}")
            return
        if self.replace_parser:
            self.parser = httptools.HttpResponseParser(self)
            self.replace_parser = False
        if self.done and self.request is request:
            request.upstream_complete(self.last_read)

    def eof_received(self) -> bool | None:
        self.alive = False
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.alive = False
        request = self.request
        if request is not None:
            self.request = None
            if not self.done:
                # Read until close: the end of the connection is the end of the answer.
                if self.head_done and request.resp_until_close:
                    with contextlib.suppress(httptools.HttpParserError):
                        self.parser.feed_data(b"")
                    request.upstream_complete(_now())
                else:
                    request.upstream_lost(exc)
        else:
            self.pool.discard(self)

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.request is not None:
            self.request.client.update_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.request is not None:
            self.request.client.update_reading()

    # httptools callbacks
    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.head_done:
            if self.trailers is not None:
                self.trailers.append((name, value))
            return
        kind = _ANSWER_AS_SENT.get(name, -1)
        if kind < 0:
            kind = _ANSWER_FIELDS.get(name.lower(), _PASS)
        if kind == _PASS:
            self.lines.append(b"%s: %s\r\n" % (name, value))
        elif kind == _A_LENGTH:
            with contextlib.suppress(ValueError):
                self.length = int(value)
            self.lines.append(b"%s: %s\r\n" % (name, value))
        elif kind == _A_CHUNKED:
            self.chunked = True
        elif kind == _A_CONNECTION:
            self.connection = value if self.connection is None else self.connection + b"," + value
        elif kind == _A_TYPE:
            self.event_stream = value.lower().startswith(b"text/event-stream")
            self.lines.append(b"%s: %s\r\n" % (name, value))
        elif kind == _A_ENCODING:
            self.encoding = value.decode("latin-1")
            self.lines.append(b"%s: %s\r\n" % (name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200 and status != 101:  # interim: not passed on
            self._answer_head()
            self.reason = b""
            return
        self.status = status
        self.head_done = True
        self.keep_alive = self.parser.should_keep_alive()
        request = self.request
        if request is not None:
            request.upstream_head()

    def on_body(self, body: bytes) -> None:
        if self.head_done and not self.done and self.request is not None:
            self.request.upstream_body(body)

    def on_chunk_header(self) -> None:
        if self.trailers is None:
            self.trailers = []

    def on_message_complete(self) -> None:
        if self.head_done:
            self.done = True

    # flow control: reading from the model pauses while the client's socket is backed up
    def pause_reading(self) -> None:
        if not self.reading_paused and self.transport is not None:
            self.reading_paused = True
            with contextlib.suppress(RuntimeError):
                self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.reading_paused and self.transport is not None:
            self.reading_paused = False
            with contextlib.suppress(RuntimeError):
                self.transport.resume_reading()

    # the pool's side
    def attach(self, request: _Request) -> None:
        self.request = request
        if request.client.write_paused:  # a client still backed up from its last answer
            self.pause_reading()
        self.status = 0
        self.reason = b""
        self._answer_head()
        self.head_done = False
        self.trailers = None
        self.done = False

    def release(self, reusable: bool, now: float | None = None) -> None:
        self.request = None
        # The answer's last piece may have filled the client's socket and paused reading
        # (pause_writing): pooled like that, the next request's answer would never be read.
        self.resume_reading()
        if reusable and self.alive and self.keep_alive:
            self.reused = True
            self.pool.put(self, now)
        else:
            self.close()

    def close(self) -> None:
        self.alive = False
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.alive = False
        self.request = None
        if self.transport is not None:
            self.transport.abort()


# How a request body reaches the model.
_NO_BODY, _BUFFERED, _STREAMED = 0, 1, 2
# How an answer reaches the client.
_R_EMPTY, _R_BUFFERED, _R_STREAMED = 0, 1, 2


class _Request:
    """One request from being parsed to its answer written; one exchange for capture."""

    __slots__ = (
        "answered_at",
        "answered_status",
        "body_mode",
        "body_parts",
        "body_size",
        "capture",
        "chunked_in",
        "client",
        "client_first_write",
        "complete",
        "connection",
        "content_length",
        "dispatched",
        "encoding",
        "expect",
        "expect_continue",
        "failed",
        "first_read",
        "head_out",
        "hosts",
        "keep_alive",
        "lines",
        "method",
        "request_id",
        "resp_body",
        "resp_chunked_out",
        "resp_close",
        "resp_encoding",
        "resp_event_stream",
        "resp_length",
        "resp_mode",
        "resp_started",
        "resp_tee",
        "resp_until_close",
        "retried",
        "sent",
        "started",
        "target",
        "tee",
        "trailers",
        "up_done",
        "up_first_read",
        "up_first_write",
        "upstream",
        "version_10",
    )

    def __init__(self, client: ClientConnection, first_read: float) -> None:
        self.client = client
        self.first_read = first_read
        self.target = b""
        self.method = b""
        # The header lines to pass on, kept as the head is parsed (the only copy of the
        # head's fields: see build_head).
        self.lines: list[bytes] = []
        self.trailers: list[tuple[bytes, bytes]] = []
        self.connection: bytes | None = None
        self.content_length: int | None = None
        self.chunked_in = False
        self.hosts = 0
        self.expect: bytes | None = None
        self.expect_continue = False
        self.request_id: str | None = None
        self.encoding: str | None = None
        self.keep_alive = True
        self.version_10 = False
        self.complete = False
        self.body_mode = _NO_BODY
        self.body_parts: list[bytes] = []
        self.body_size = 0
        self.tee: bytearray | None = None  # capture copy of a streamed request body
        self.capture = False
        self.started = False
        self.sent = False
        self.dispatched = False
        self.failed = False
        self.retried = False
        self.head_out = b""
        self.upstream: UpstreamConnection | None = None
        self.up_first_write = 0.0
        self.up_first_read = 0.0
        self.up_done = 0.0
        self.client_first_write = 0.0
        self.resp_mode = _R_EMPTY
        self.resp_body: list[bytes] = []
        self.resp_length: int | None = None
        self.resp_chunked_out = False
        self.resp_until_close = False
        self.resp_close = False
        self.resp_started = False
        self.resp_event_stream = False
        self.resp_encoding: str | None = None
        self.resp_tee: bytearray | None = None
        self.answered_status = 0
        self.answered_at = 0.0

    # ------------------------------------------------------------------ the request side

    def head_complete(self, parser: httptools.HttpRequestParser) -> None:
        if not self.target.startswith(b"/") and self.target != b"*":
            url = httptools.parse_url(self.target)  # absolute-form; raises if it is not
            if not url.schema:
                raise httptools.HttpParserInvalidURLError(f"bad request target {self.target!r}")
            self.target = (url.path or b"/") + (b"?" + url.query if url.query else b"")
        self.method = parser.get_method()
        self.version_10 = parser.get_http_version() == "1.0"
        # RFC 9112 §3.2: an HTTP/1.1 request with no Host, or more than one, is a 400.
        if self.hosts > 1 or (self.hosts == 0 and not self.version_10):
            raise _Refusal(400, "bad request: an HTTP/1.1 request needs exactly one Host header")
        if self.method == b"CONNECT":
            raise _Refusal(405, "CONNECT is not served: this is a reverse proxy")
        self.keep_alive = parser.should_keep_alive()
        limits = self.client.fwd.limits
        if self.chunked_in:
            self.body_mode = _STREAMED
            self.content_length = None
        elif self.content_length:
            self.body_mode = _BUFFERED if self.content_length <= limits.cap else _STREAMED
        rate = limits.sample_rate
        self.capture = rate >= 1.0 or (rate > 0.0 and random.random() < rate)
        if self.capture and self.chunked_in:
            self.tee = bytearray()

    def body(self, chunk: bytes) -> None:
        if self.tee is not None:
            if len(self.tee) + len(chunk) > self.client.fwd.limits.cap:
                self.tee = None
            else:
                self.tee += chunk
        if self.sent and self.body_mode == _STREAMED:
            self._write_upstream_body(chunk)
        else:
            self.body_parts.append(chunk)
            self.body_size += len(chunk)

    def message_complete(self) -> None:
        self.complete = True
        if self.sent and self.body_mode == _STREAMED:
            if self.chunked_in:
                self._write_upstream_end()
            self.client.arm_read_timer(self.client.read_at)

    def _write_upstream_body(self, chunk: bytes) -> None:
        up = self.upstream
        if up is None or up.transport is None:
            return
        if self.chunked_in:
            up.transport.writelines((b"%x\r\n" % len(chunk), chunk, _CRLF))
        else:
            up.transport.write(chunk)

    def _write_upstream_end(self) -> None:
        up = self.upstream
        if up is None or up.transport is None:
            return
        if self.trailers:
            lines = filter_headers(self.trailers, None)
            up.transport.writelines((b"0\r\n", *lines, _CRLF))
        else:
            up.transport.write(_LAST_CHUNK)

    def ready(self) -> bool:
        """Whether what the model needs has arrived (all of a buffered body)."""
        return self.body_mode != _BUFFERED or self.complete

    def build_head(self) -> bytes:
        fwd = self.client.fwd
        target = self.target
        if target != b"*":
            target = fwd.target.prefix + target
        lines = self.lines
        if self.expect_continue or not names_only_hop_by_hop(self.connection):
            # Less usual: a field the Connection header names, or the Expect answered here.
            lines = drop_named(
                lines, self.connection, drop=_EXPECT if self.expect_continue else frozenset()
            )
        if not self.hosts:
            lines.insert(0, b"Host: %s\r\n" % fwd.target.host_header)
        if self.chunked_in:
            lines.append(b"Transfer-Encoding: chunked\r\n")
        return b"%s %s HTTP/1.1\r\n%s\r\n" % (self.method, target, b"".join(lines))

    def start(self, now: float) -> None:
        """Made the connection's active request: send it upstream (once it is ready)."""
        self.started = True
        if self.expect_continue and not self.version_10 and not self.complete:
            self.client.write(_CONTINUE)
        self.head_out = self.build_head()
        if self.ready():
            self.dispatch(now)

    def dispatch(self, now: float) -> None:
        """Send the request on a pooled connection, or on a new one (`now`: the clock read
        by the event that made it ready, for the pool's idle check)."""
        self.dispatched = True
        fwd = self.client.fwd
        conn = fwd.pool.take(now)
        if conn is None:
            asyncio.get_running_loop().create_task(self._connect_then_send())
        else:
            self._send(conn)

    async def _connect_then_send(self) -> None:
        fwd = self.client.fwd
        try:
            conn = await fwd.pool.connect()
        except TimeoutError:
            self.fail(504, "timeout", "upstream timed out (connect)")
            return
        except OSError as exc:
            self.fail(502, "connect", f"upstream connection failed: {exc}")
            return
        if self.failed or self.client.active is not self:
            conn.close()  # the client went away meanwhile
            return
        self._send(conn)

    def _send(self, conn: UpstreamConnection) -> None:
        self.upstream = conn
        conn.attach(self)
        transport = conn.transport
        assert transport is not None
        if self.body_mode == _BUFFERED:
            transport.writelines((self.head_out, *self.body_parts))
        elif self.body_mode == _STREAMED:
            if self.chunked_in:
                parts = [self.head_out]
                for chunk in self.body_parts:
                    parts += (b"%x\r\n" % len(chunk), chunk, _CRLF)
                transport.writelines(parts)
            else:
                transport.writelines((self.head_out, *self.body_parts))
            self.body_parts = []
        else:
            transport.write(self.head_out)
        now = _now()
        if self.up_first_write == 0.0:
            self.up_first_write = now
        self.sent = True
        if self.complete:
            if self.body_mode == _STREAMED and self.chunked_in:
                self._write_upstream_end()
            # The model's time runs once it has the whole request (as aiohttp's sock_read).
            self.client.arm_read_timer(now)
        self.client.update_reading()

    # ------------------------------------------------------------------ the answer side

    def upstream_head(self) -> None:
        up = self.upstream
        assert up is not None
        cap = self.client.fwd.limits.cap
        chunked = up.chunked
        length = None if chunked else up.length
        self.resp_event_stream = up.event_stream
        self.resp_encoding = up.encoding
        status = up.status
        self.resp_length = length
        client = self.client
        self.resp_close = (
            not self.keep_alive or client.fwd.closing or not self.complete or client.ends_after()
        )
        lines = up.lines
        if not names_only_hop_by_hop(up.connection):  # rare: it names more fields to drop
            lines = drop_named(lines, up.connection)
        bodyless = self.method == b"HEAD" or status in (204, 304)
        if bodyless:
            self.resp_mode = _R_EMPTY
            up.done = True
            if self.method == b"HEAD":
                up.replace_parser = True  # llhttp would wait for the body a HEAD never gets
        elif length is not None and length <= cap and not self.resp_event_stream:
            self.resp_mode = _R_BUFFERED
        else:
            self.resp_mode = _R_STREAMED
            if length is None:
                self.resp_until_close = not chunked
                if self.version_10:
                    self.resp_close = True  # the end of the body is the end of the connection
                else:
                    self.resp_chunked_out = True
                    lines.append(b"Transfer-Encoding: chunked\r\n")
            if self.capture:
                self.resp_tee = bytearray()
        if self.resp_close:
            lines.append(b"Connection: close\r\n")
        elif self.version_10:
            lines.append(b"Connection: keep-alive\r\n")
        head = b"HTTP/1.1 %d %s\r\n%s\r\n" % (status, up.reason, b"".join(lines))
        if self.resp_mode == _R_BUFFERED:
            self.resp_body.append(head)
        else:
            self.resp_started = True
            self.client.write(head)
            self.client_first_write = _now()

    def upstream_body(self, chunk: bytes) -> None:
        if self.resp_mode == _R_BUFFERED:
            self.resp_body.append(chunk)
            return
        if self.resp_tee is not None:
            if len(self.resp_tee) + len(chunk) > self.client.fwd.limits.cap:
                self.resp_tee = None
            else:
                self.resp_tee += chunk
        if self.resp_chunked_out:
            self.client.writelines((b"%x\r\n" % len(chunk), chunk, _CRLF))
        else:
            self.client.write(chunk)

    def upstream_complete(self, now: float) -> None:
        """The model's answer is complete (`now`: when its last piece was read)."""
        up = self.upstream
        assert up is not None
        self.up_done = up.last_read
        client = self.client
        if self.resp_mode == _R_BUFFERED:
            client.writelines(self.resp_body)
            now = self.client_first_write = _now()
        elif self.resp_chunked_out:
            if up.trailers:
                client.writelines((b"0\r\n", *filter_headers(up.trailers, None), _CRLF))
            else:
                client.write(_LAST_CHUNK)
        self.upstream = None
        up.release(self.complete and not self.resp_until_close, now)
        client.fwd.record_later(self, up.status, now)
        client.finished(self, close=self.resp_close, now=now)

    def upstream_lost(self, exc: Exception | None) -> None:
        up = self.upstream
        self.upstream = None
        if (
            up is not None
            and up.reused
            and self.up_first_read == 0.0
            and not self.retried
            and self.method in IDEMPOTENT
            and self.body_mode != _STREAMED
        ):
            # A pooled connection the model closed as it was handed out: nothing was
            # answered, and the request may safely be sent again on a fresh connection.
            self.retried = True
            self.sent = False
            self.up_first_write = 0.0
            asyncio.get_running_loop().create_task(self._connect_then_send())
            return
        why = f": {exc}" if exc else ""
        self.upstream_failed("protocol", f"upstream response broken off (connection closed{why})")

    def upstream_failed(self, reason: str, message: str) -> None:
        up, self.upstream = self.upstream, None
        if up is not None:
            up.abort()
        if self.resp_started:
            # Part of the answer is out: nothing sane can be sent any more.
            self.client.fwd.metrics.upstream_errors.labels(reason).inc()
            log.warning("upstream response failed mid-way: %s", message)
            self.failed = True
            self.client.abort()
            return
        self.fail(504 if reason == "timeout" else 502, reason, message)

    def fail(self, status: int, reason: str, message: str) -> None:
        """The model did not answer: the client gets what nginx would give."""
        if self.failed:
            return
        self.failed = True
        fwd = self.client.fwd
        fwd.metrics.upstream_errors.labels(reason).inc()
        now = _now()
        close = not self.keep_alive or fwd.closing or not self.complete or self.client.ends_after()
        self.client.write(plain_response(status, _REASONS[status], message, close=close))
        fwd.record_answered()  # the exchanges answered before this one go first
        fwd.offer(
            Exchange(
                method=self.method.decode("latin-1"),
                path=self.path(),
                status=status,
                started_at=fwd.wall_time(self.first_read),
                total_seconds=now - self.first_read,
                upstream_seconds=now - self.up_first_write if self.up_first_write else 0.0,
                overhead_seconds=0.0,
                request_id=self.request_id,
            )
        )
        self.client.finished(self, close=close, now=now)

    def path(self) -> str:
        return self.target.decode("latin-1")

    def held_bytes(self) -> int:
        """The bytes of its bodies kept for capture."""
        held = 0
        if self.tee is not None:
            held += len(self.tee)
        elif self.body_mode == _BUFFERED:
            held += self.body_size
        if self.resp_tee is not None:
            held += len(self.resp_tee)
        elif self.resp_mode == _R_BUFFERED:
            held += self.resp_length or 0
        return held

    def record(self, status: int, end: float) -> None:
        """The exchange for capture (`end`: when the answer's last byte was written)."""
        fwd = self.client.fwd
        inbound = self.up_first_write - self.first_read
        outbound = (self.client_first_write - self.up_first_read) if self.up_first_read else 0.0
        request_body: bytes | None
        response_body: bytes | None
        skip: str | None = None
        if not self.capture:
            skip = fwd.not_captured or "sampled_out"
            request_body = response_body = None
        else:
            if self.body_mode == _STREAMED:
                request_body = bytes(self.tee) if self.tee is not None else None
            else:
                request_body = b"".join(self.body_parts)
            if self.resp_mode == _R_BUFFERED:
                response_body = b"".join(self.resp_body[1:])
            elif self.resp_mode == _R_EMPTY:
                response_body = b""
            else:
                response_body = bytes(self.resp_tee) if self.resp_tee is not None else None
            if request_body is None or response_body is None:
                skip = "body_too_large"
                request_body = response_body = None
        fwd.offer(
            Exchange(
                method=self.method.decode("latin-1"),
                path=self.path(),
                status=status,
                started_at=fwd.wall_time(self.first_read),
                total_seconds=end - self.first_read,
                upstream_seconds=max(0.0, self.up_done - self.up_first_write),
                overhead_seconds=max(0.0, inbound) + max(0.0, outbound),
                request_id=self.request_id,
                request_body=request_body,
                request_encoding=self.encoding,
                response_body=response_body,
                response_encoding=self.resp_encoding,
                skip=skip,
            )
        )


_EXPECT = frozenset((b"expect",))
_REASONS = {
    400: b"Bad Request",
    405: b"Method Not Allowed",
    408: b"Request Timeout",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
}
_TOO_MANY = plain_response(503, _REASONS[503], "too many open connections", close=True)


class ClientConnection:
    """One client connection: parses requests, serves them in order, enforces the limits.

    An asyncio protocol by its methods, like `UpstreamConnection`."""

    def __init__(self, fwd: Forwarder) -> None:
        self.fwd = fwd
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.read_at = 0.0
        self.parsing: _Request | None = None
        self.active: _Request | None = None
        self.pending: deque[_Request] = deque()
        self.head_bytes = 0
        self.close_after = False  # the connection ends after the requests read so far
        self.refusal: bytes | None = None  # the answer to a malformed request after them
        self.ignore_input = False
        self.reading_paused = False
        self.write_paused = False
        self.closed = False
        self.lingering = False
        self.header_deadline = 0.0
        self.body_deadline = 0.0
        self.read_deadline = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = 0.0  # when it fires, on the perf_counter clock of the deadlines

    # ------------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        fwd = self.fwd
        fwd.connections.add(self)
        if len(fwd.connections) > fwd.limits.max_connections:
            fwd.refused.inc()
            self.ignore_input = True
            self.transport.write(_TOO_MANY)
            self.close()
            return
        self.header_deadline = _now() + fwd.limits.header_timeout
        self._arm(self.header_deadline)

    def data_received(self, data: bytes) -> None:
        if self.ignore_input or self.closed:
            return
        self.read_at = _now()
        if self.active is not None and not self.active.complete:
            self.body_deadline = self.read_at + self.fwd.limits.body_timeout
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # Upgrade is hop-by-hop and not passed on: the request is served as a plain
            # one, and the connection ends after it (what follows is not HTTP/1.1).
            self.ignore_input = True
            self.close_after = True
        except httptools.HttpParserError as exc:
            self.ignore_input = True
            cause = exc.__context__
            if isinstance(cause, _Refusal):
                self._refuse(cause.status, cause.message)
            elif isinstance(cause, Exception) and not isinstance(cause, httptools.HttpParserError):
                log.error("forwarding failed on a request", exc_info=cause)  # a bug of ours
                self._refuse(500, "internal error in the sidecar (logged)")
            else:
                self._refuse(400, f"bad request: {exc}")
        self._pump()  # a request completed before the malformed one still goes out

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        fwd = self.fwd
        fwd.connections.discard(self)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        active = self.active
        if active is not None:
            self.active = None
            fwd.request_done(self)
            if not active.failed:
                fwd.metrics.client_disconnects.inc()
            active.failed = True
            up, active.upstream = active.upstream, None
            if up is not None:
                up.abort()
        self.pending.clear()

    def pause_writing(self) -> None:
        self.write_paused = True
        active = self.active
        if active is not None and active.upstream is not None:
            active.upstream.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        active = self.active
        if active is not None and active.upstream is not None:
            active.upstream.resume_reading()

    # ------------------------------------------------------------------ httptools callbacks

    def on_message_begin(self) -> None:
        self.parsing = _Request(self, self.read_at)
        self.head_bytes = 0

    def on_url(self, url: bytes) -> None:
        request = self.parsing
        assert request is not None
        request.target += url
        self.head_bytes += len(url)
        if self.head_bytes > MAX_HEAD_BYTES:
            raise _Refusal(431, "request head larger than 64 KiB")

    def on_header(self, name: bytes, value: bytes) -> None:
        request = self.parsing
        assert request is not None
        if request.method:  # after the head: a trailer field of a chunked body
            request.trailers.append((name, value))
            return
        self.head_bytes += len(name) + len(value) + 4
        if self.head_bytes > MAX_HEAD_BYTES:
            raise _Refusal(431, "request head larger than 64 KiB")
        kind = _REQUEST_AS_SENT.get(name, -1)
        if kind < 0:
            kind = _REQUEST_FIELDS.get(name.lower(), _PASS)
        if kind == _PASS:
            request.lines.append(b"%s: %s\r\n" % (name, value))
        elif kind == _Q_LENGTH:
            request.content_length = int(value)
            request.lines.append(b"%s: %s\r\n" % (name, value))
        elif kind == _Q_CHUNKED:
            request.chunked_in = True
        elif kind == _Q_CONNECTION:
            request.connection = (
                value if request.connection is None else request.connection + b"," + value
            )
        elif kind == _Q_HOST:
            request.hosts += 1
            request.lines.append(b"%s: %s\r\n" % (name, value))
        elif kind == _Q_EXPECT:
            request.expect = value
            request.expect_continue = value.lower() == b"100-continue"
            request.lines.append(b"%s: %s\r\n" % (name, value))  # dropped if answered here
        elif kind == _Q_ID:
            request.request_id = value.decode("latin-1")
            request.lines.append(b"%s: %s\r\n" % (name, value))
        elif kind == _Q_ENCODING:
            request.encoding = value.decode("latin-1")
            request.lines.append(b"%s: %s\r\n" % (name, value))

    def on_headers_complete(self) -> None:
        request = self.parsing
        assert request is not None
        request.head_complete(self.parser)
        if self.active is None:
            self._activate(request, self.read_at)
        else:
            self.pending.append(request)
            self.update_reading()

    def on_body(self, body: bytes) -> None:
        request = self.parsing
        if request is not None:
            request.body(body)

    def on_message_complete(self) -> None:
        request = self.parsing
        assert request is not None
        self.parsing = None
        request.message_complete()
        if not request.keep_alive:
            self.ignore_input = True  # nothing after a `Connection: close` request is read

    # ------------------------------------------------------------------ serving

    def _activate(self, request: _Request, now: float) -> None:
        self.active = request
        self.fwd.in_flight.add(self)
        self.header_deadline = 0.0
        if not request.complete and request.body_mode != _NO_BODY:
            self.body_deadline = now + self.fwd.limits.body_timeout
            self._arm(self.body_deadline)
        request.start(now)

    def _pump(self) -> None:
        """After a read: send the active request once its buffered body is complete."""
        active = self.active
        if (
            active is not None
            and active.started
            and not active.dispatched
            and not active.failed
            and active.ready()
        ):
            active.dispatch(self.read_at)

    def finished(self, request: _Request, *, close: bool, now: float) -> None:
        """The answer to `request` is written (at `now`): close, or go on with the next."""
        if self.active is not request:
            return
        self.active = None
        self.fwd.request_done(self)
        self.read_deadline = 0.0
        self.body_deadline = 0.0
        if close or self.closed:
            self.close(linger=True)
            return
        if self.pending:
            self._activate(self.pending.popleft(), now)
        elif self.refusal is not None:
            self.write(self.refusal)
            self.close(linger=True)
            return
        elif self.close_after:
            self.close(linger=True)
            return
        else:
            self.header_deadline = now + self.fwd.limits.header_timeout
            self._arm(self.header_deadline)
        self.update_reading()

    def _refuse(self, status: int, message: str) -> None:
        """A request refused (malformed, or one the sidecar does not serve): answered at
        once, or, pipelined behind others, after their answers; then the connection ends."""
        response = plain_response(status, _REASONS[status], message, close=True)
        active = self.active
        if active is not None and self.parsing is active:
            # The active request's own body is malformed (a bad chunk): what the model got
            # of it is unusable, and so is that connection.
            active.failed = True
            up, active.upstream = active.upstream, None
            if up is not None:
                up.abort()
            self.active = None
            self.fwd.request_done(self)
            if active.resp_started:
                self.abort()
                return
        if self.parsing is not None and self.parsing in self.pending:
            self.pending.remove(self.parsing)  # a pipelined request with a malformed body
        if self.active is None:
            self.write(response)
            self.close(linger=True)
        else:
            self.refusal = response  # after the requests before it

    def ends_after(self) -> bool:
        """Whether the connection ends right after the active request's answer."""
        return self.close_after and not self.pending and self.refusal is None

    def arm_read_timer(self, now: float) -> None:
        self.read_deadline = now + self.fwd.limits.read_timeout
        self._arm(self.read_deadline)

    def update_reading(self) -> None:
        """Reading pauses while a pipelined request waits or the model's socket is full."""
        transport = self.transport
        if transport is None or self.closed:
            return
        active = self.active
        pause = bool(self.pending) or (
            active is not None and active.upstream is not None and active.upstream.write_paused
        )
        if pause != self.reading_paused:
            self.reading_paused = pause
            if not pause and self.body_deadline:
                self.body_deadline = _now() + self.fwd.limits.body_timeout
            with contextlib.suppress(RuntimeError):
                if pause:
                    transport.pause_reading()
                else:
                    transport.resume_reading()

    # ------------------------------------------------------------------ timers

    def _arm(self, deadline: float) -> None:
        """One timer per connection, at the earliest deadline; it re-arms itself."""
        if self.lingering:
            return
        if self.timer is not None:
            if self.timer_at <= deadline:  # the common case: nothing to do
                return
            self.timer.cancel()
        self.timer_at = deadline
        self.timer = asyncio.get_running_loop().call_later(deadline - _now(), self._on_timer)

    def _on_timer(self) -> None:
        self.timer = None
        if self.closed:
            return
        now = _now()
        active = self.active
        if active is None:
            if self.header_deadline and now >= self.header_deadline:
                self.close()  # slowloris, or an idle keep-alive connection
                return
        else:
            if (
                self.body_deadline
                and not active.complete
                and not self.reading_paused
                and now >= self.body_deadline
            ):
                self._body_timed_out(active)
                return
            if self.read_deadline and active.upstream is not None:
                last = max(
                    self.read_deadline - self.fwd.limits.read_timeout, active.upstream.last_read
                )
                if now - last >= self.fwd.limits.read_timeout:
                    active.upstream_failed("timeout", "upstream timed out")
                    return
                self.read_deadline = last + self.fwd.limits.read_timeout
        deadlines = [
            d
            for d in (
                self.header_deadline if active is None else 0.0,
                self.body_deadline if active is not None and not active.complete else 0.0,
                self.read_deadline if active is not None and active.upstream is not None else 0.0,
            )
            if d
        ]
        if deadlines:
            self._arm(max(min(deadlines), now + 0.001))

    def _body_timed_out(self, request: _Request) -> None:
        fwd = self.fwd
        fwd.body_timeouts.inc()
        request.failed = True
        up, request.upstream = request.upstream, None
        if up is not None:
            up.abort()
        if not request.resp_started:
            self.write(
                plain_response(
                    408,
                    _REASONS[408],
                    f"request body not received: nothing for {fwd.limits.body_timeout:g} s",
                    close=True,
                )
            )
        self.active = None
        fwd.request_done(self)
        self.close(linger=True)

    # ------------------------------------------------------------------ writing

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def writelines(self, data: Iterable[bytes]) -> None:
        if self.transport is not None and not self.closed:
            self.transport.writelines(data)

    def close(self, *, linger: bool = False) -> None:
        """Close; `linger`: the client may still be sending, so first end our side and read
        (and drop) what comes for up to `LINGER_SECONDS`, as nginx's lingering close does:
        closing a socket with unread data resets it, and the reset can destroy the answer
        before the client has read it."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if linger and not self.lingering and transport.can_write_eof():
            self.lingering = True
            self.ignore_input = True
            transport.write_eof()
            if self.timer is not None:
                self.timer.cancel()
            self.timer = asyncio.get_running_loop().call_later(LINGER_SECONDS, transport.close)
            with contextlib.suppress(RuntimeError):
                transport.resume_reading()
            return
        transport.close()

    def eof_received(self) -> bool | None:
        """The client closed its side: the connection is closed, and a request in progress
        counts as a client disconnect (as nginx treats it, its 499)."""
        return None

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()
