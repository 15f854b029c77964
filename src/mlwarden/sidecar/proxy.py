"""The forwarding path: every request on the listen port goes to the model, unchanged.

Per request the proxy does four things and nothing else: copy the end-to-end
headers (RFC 9110 §7.6.1 drops hop-by-hop ones), send the request upstream,
return the model's status, headers and body as they came, and offer the raw
exchange to the capture queue (O(1), never waits). Bodies up to the capture cap
are read whole (that is also what capture needs); larger or unsized bodies and
event streams are piped chunk by chunk in both directions, so memory stays
bounded and streaming responses stream.

When the model does not answer, the client gets what nginx would give: 502 when
the connection fails or breaks, 504 when it times out, with a plain-text body
saying which. A client that disconnects cancels the upstream call.

Clients are bounded as nginx bounds them: a request head must arrive within
`client_header_timeout` of the connection opening or of the previous response
(slowloris; aiohttp's keep-alive timer, which also runs from the connection's
start, does the closing); a request body must keep arriving, at most
`client_body_timeout` between two reads, or the answer is 408; beyond
`max_connections` open connections a new one is answered 503 and closed.

`/metrics`, `/healthz` and `/readyz` live on a separate admin port so they can
never shadow a path of the model's own.

Shutdown (SIGTERM, as Kubernetes sends it) is a drain, then a stop, so that no client of a
model being rolled sees a refused connection or a request cut off:

    drain  for `drain_seconds` the proxy keeps accepting and serving as before, while
           `/readyz` answers 503 and every response carries `Connection: close`: load
           balancers stop sending new connections (endpoint removal takes seconds to reach
           every kube-proxy and ingress), and keep-alive clients, whose connections stay
           pinned to this pod, reconnect to another one after their next response.
    stop   no new connection is accepted, idle ones are closed, requests in flight finish;
           the capture queue goes to the capture worker, which ships what it can, all within
           `shutdown_timeout_seconds`; then the process exits 0.

A second SIGTERM or SIGINT during the drain ends it early.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp import hdrs, web
from multidict import CIMultiDict, CIMultiDictProxy, istr
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from yarl import URL

from mlwarden.ingest_auth import bearer_header
from mlwarden.sidecar.capture import Exchange, WorkerSettings
from mlwarden.sidecar.config import SidecarConfig
from mlwarden.sidecar.metrics import SidecarMetrics
from mlwarden.sidecar.supervisor import CaptureProcess, InlineCapture

log = logging.getLogger(__name__)

# RFC 9110 §7.6.1: connection-specific fields a proxy must not forward, plus
# whatever the Connection header itself names.
HOP_BY_HOP = frozenset(
    ("connection", "proxy-connection", "keep-alive", "te", "transfer-encoding", "upgrade")
)
_REQUEST_ID = istr("x-request-id")


def end_to_end_headers(
    headers: CIMultiDictProxy[str] | CIMultiDict[str], *, keep_length: bool
) -> CIMultiDict[str]:
    """A copy of `headers` without hop-by-hop fields (and Content-Length unless kept)."""
    named: frozenset[str] = frozenset()
    connection = headers.get(hdrs.CONNECTION)
    if connection:
        named = frozenset(t.strip().lower() for t in connection.split(",") if t.strip())
    out: CIMultiDict[str] = CIMultiDict()
    for key, value in headers.items():
        k = key.lower()
        if k in HOP_BY_HOP or k in named or (not keep_length and k == "content-length"):
            continue
        out.add(key, value)
    return out


def _plain_error(status: int, message: str) -> web.Response:
    return web.Response(
        status=status, text=f"mlwarden-sidecar: {message}\n", content_type="text/plain"
    )


class _ClientBodyTimeout(Exception):
    """The client stopped sending its request body."""


class _Tee:
    """Copies up to `limit` bytes of a stream as it passes; remembers if there was more."""

    __slots__ = ("data", "limit", "overflow")

    def __init__(self, limit: int) -> None:
        self.data = bytearray()
        self.limit = limit
        self.overflow = False

    def feed(self, chunk: bytes) -> None:
        if self.overflow:
            return
        if len(self.data) + len(chunk) > self.limit:
            self.overflow = True
            self.data = bytearray()
        else:
            self.data += chunk

    def body(self) -> bytes | None:
        return None if self.overflow else bytes(self.data)


class _BodyPipe:
    """A request body streamed upstream chunk by chunk, each read bounded by `timeout`."""

    __slots__ = ("request", "tee", "timed_out", "timeout")

    def __init__(self, request: web.BaseRequest, tee: _Tee | None, timeout: float) -> None:
        self.request = request
        self.tee = tee
        self.timeout = timeout
        self.timed_out = False

    async def chunks(self) -> AsyncIterator[bytes]:
        content = self.request.content
        while True:
            try:
                async with asyncio.timeout(self.timeout):
                    chunk = await content.readany()
            except TimeoutError:
                self.timed_out = True
                raise _ClientBodyTimeout from None
            if not chunk:
                return
            if self.tee is not None:
                self.tee.feed(chunk)
            yield chunk


class ProxyHandler:
    """The aiohttp low-level handler: forwards one request, offers the exchange to capture."""

    def __init__(
        self,
        config: SidecarConfig,
        *,
        session: aiohttp.ClientSession,
        queue: CaptureProcess | InlineCapture,
        metrics: SidecarMetrics,
        capturing: bool,
        not_captured: str | None = None,
    ) -> None:
        self.upstream = config.upstream
        self.session = session
        self.queue = queue
        self.metrics = metrics
        self.cap = config.max_body_bytes
        self.sample_rate = config.sample_rate if capturing and not not_captured else 0.0
        # Why nothing is captured, counted per exchange in exchanges_dropped (None: sampling).
        self.not_captured = not_captured
        self.body_timeout = config.client_body_timeout_seconds
        self.drops_queue_full = metrics.exchanges_dropped.labels("queue_full")
        self.body_timeouts = metrics.client_errors.labels("body_timeout")
        # Set for the drain: every response from then on ends its connection.
        self.closing = False

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        response = await self._forward(request)
        if self.closing and not response.prepared:
            response.force_close()
        return response

    async def _prepare(self, response: web.StreamResponse, request: web.BaseRequest) -> None:
        if self.closing:
            response.force_close()
        await response.prepare(request)

    async def _forward(self, request: web.BaseRequest) -> web.StreamResponse:
        started = time.perf_counter()
        started_at = time.time()
        capture = self.sample_rate >= 1.0 or (
            self.sample_rate > 0.0 and random.random() < self.sample_rate
        )
        method = request.method
        length = request.content_length
        request_tee: _Tee | None = None
        pipe: _BodyPipe | None = None
        data: Any
        if not request.body_exists:
            data, request_body = None, b""
        elif length is not None and length <= self.cap:
            if request.content.is_eof():  # all here already (the usual case): no timer needed
                data = request_body = await request.read()
            else:
                try:
                    data = request_body = await self._read_slowly(request)
                except TimeoutError:
                    return self._body_timed_out()
        else:
            # Unsized or over the cap: pipe it. The tee keeps a small chunked body for capture.
            request_tee = _Tee(self.cap) if capture and length is None else None
            pipe = _BodyPipe(request, request_tee, self.body_timeout)
            data, request_body = pipe.chunks(), None
        # A piped body keeps the client's Content-Length (if any): the framing stays the same.
        piped = data is not None and not isinstance(data, bytes)
        headers = end_to_end_headers(request.headers, keep_length=piped)
        url = URL(self.upstream + request.raw_path, encoded=True)
        upstream_started = time.perf_counter()
        try:
            upstream = await self.session.request(
                method, url, headers=headers, data=data, allow_redirects=False
            )
        except asyncio.CancelledError:
            self.metrics.client_disconnects.inc()
            raise
        except (TimeoutError, aiohttp.ServerTimeoutError):
            # A streamed body the client stopped sending surfaces as the upload failing.
            if pipe is not None and pipe.timed_out:
                return self._body_timed_out()
            return self._failed(request, started, started_at, 504, "timeout", "upstream timed out")
        except aiohttp.ClientConnectorError as exc:
            return self._failed(
                request, started, started_at, 502, "connect", f"upstream connection failed: {exc}"
            )
        except aiohttp.ClientError as exc:
            if pipe is not None and pipe.timed_out:
                return self._body_timed_out()
            return self._failed(
                request, started, started_at, 502, "protocol", f"upstream error: {exc}"
            )
        try:
            status = upstream.status
            out_headers = end_to_end_headers(upstream.headers, keep_length=True)
            response_length = upstream.content_length
            response_body: bytes | None
            if method == "HEAD" or status in (204, 304) or status < 200:
                # No body by definition; keep Content-Length as the model sent it.
                response: web.StreamResponse = web.StreamResponse(
                    status=status, reason=upstream.reason, headers=out_headers
                )
                upstream_done = time.perf_counter()
                await self._prepare(response, request)
                await response.write_eof()
                response_body = b""
            elif (
                response_length is not None
                and response_length <= self.cap
                and not upstream.headers.get(hdrs.CONTENT_TYPE, "").startswith("text/event-stream")
            ):
                try:
                    response_body = await upstream.read()
                except (aiohttp.ClientError, TimeoutError) as exc:
                    # Nothing sent to the client yet: answer as nginx does.
                    status = 504 if isinstance(exc, TimeoutError) else 502
                    reason = "timeout" if status == 504 else "protocol"
                    return self._failed(
                        request,
                        started,
                        started_at,
                        status,
                        reason,
                        f"upstream response broken off: {exc or type(exc).__name__}",
                    )
                upstream_done = time.perf_counter()
                del out_headers[hdrs.CONTENT_LENGTH]
                response = web.Response(
                    body=response_body, status=status, reason=upstream.reason, headers=out_headers
                )
            else:
                response = web.StreamResponse(
                    status=status, reason=upstream.reason, headers=out_headers
                )
                await self._prepare(response, request)
                tee = _Tee(self.cap) if capture else None
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                    if tee is not None:
                        tee.feed(chunk)
                await response.write_eof()
                upstream_done = time.perf_counter()
                response_body = tee.body() if tee is not None else None
        except asyncio.CancelledError:
            self.metrics.client_disconnects.inc()
            raise
        except (aiohttp.ClientError, TimeoutError) as exc:
            # The model broke the response off half way: nothing sane can be sent any more.
            self.metrics.upstream_errors.labels("protocol").inc()
            log.warning("upstream response failed mid-way: %s", exc)
            raise
        finally:
            upstream.release()

        if request_tee is not None:
            request_body = request_tee.body()
        skip: str | None = None
        if not capture:
            skip = self.not_captured or "sampled_out"
            request_body = response_body = None
        elif request_body is None or response_body is None:
            skip = "body_too_large"
            request_body = response_body = None
        exchange = Exchange(
            method=method,
            path=request.raw_path,
            status=status,
            started_at=started_at,
            total_seconds=time.perf_counter() - started,
            upstream_seconds=upstream_done - upstream_started,
            request_id=request.headers.get(_REQUEST_ID),
            request_body=request_body,
            request_encoding=request.headers.get(hdrs.CONTENT_ENCODING),
            response_body=response_body,
            response_encoding=upstream.headers.get(hdrs.CONTENT_ENCODING),
            skip=skip,
        )
        if not self.queue.offer(exchange):
            self.drops_queue_full.inc()
        return response

    async def _read_slowly(self, request: web.BaseRequest) -> bytes:
        """The whole body, allowing `body_timeout` between two pieces of it."""
        parts: list[bytes] = []
        while True:
            async with asyncio.timeout(self.body_timeout):
                chunk = await request.content.readany()
            if not chunk:
                return b"".join(parts)
            parts.append(chunk)

    def _body_timed_out(self) -> web.Response:
        self.body_timeouts.inc()
        response = _plain_error(
            408, f"request body not received: nothing for {self.body_timeout:g} s"
        )
        response.force_close()
        return response

    def _failed(
        self,
        request: web.BaseRequest,
        started: float,
        started_at: float,
        status: int,
        reason: str,
        message: str,
    ) -> web.Response:
        self.metrics.upstream_errors.labels(reason).inc()
        elapsed = time.perf_counter() - started
        exchange = Exchange(
            method=request.method,
            path=request.raw_path,
            status=status,
            started_at=started_at,
            total_seconds=elapsed,
            upstream_seconds=elapsed,
            request_id=request.headers.get(_REQUEST_ID),
        )
        if not self.queue.offer(exchange):
            self.drops_queue_full.inc()
        return _plain_error(status, message)


_TOO_MANY_BODY = b"mlwarden-sidecar: too many open connections\n"
_TOO_MANY_CONNECTIONS = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nConnection: close\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(_TOO_MANY_BODY), _TOO_MANY_BODY)
)


class _ListenServer(web.Server):
    """aiohttp's server with a cap on open connections: beyond it, 503 and close."""

    def __init__(self, handler: Any, *, max_connections: int, refused: Any, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.max_connections = max_connections
        self.refused = refused
        self.open = 0

    def connection_made(self, handler: Any, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        self.open += 1
        if self.open > self.max_connections:
            self.refused.inc()
            transport.write(_TOO_MANY_CONNECTIONS)
            transport.close()

    def connection_lost(self, handler: Any, exc: BaseException | None = None) -> None:
        super().connection_lost(handler, exc)
        self.open -= 1


class Sidecar:
    """The running sidecar: proxy site, admin site, capture worker and shipper."""

    def __init__(self, config: SidecarConfig) -> None:
        self.config = config
        self.metrics = SidecarMetrics()
        self.metrics.set_info(config.protocol)
        # Capture, in a worker process of its own (sidecar/supervisor.py); created in start().
        self.capture: CaptureProcess | InlineCapture | None = None
        self.capturing = False
        self._runners: list[web.BaseRunner] = []
        self._session: aiohttp.ClientSession | None = None
        self._handler: ProxyHandler | None = None
        self.ready = False
        self.proxy_port: int | None = None
        self.admin_port: int | None = None

    async def start(self) -> None:
        c = self.config
        if c.manifest_missing is not None:
            log.warning(
                "no ObservedModel manifest at %s (its ConfigMap is gone: the ObservedModel was "
                "deleted or mlwarden uninstalled before the injection was undone): proxying "
                'only, every exchange counted in exchanges_dropped{reason="no_manifest"}; '
                "re-create the ObservedModel, or remove the mlwarden-sidecar container from the "
                "Deployment",
                c.manifest_missing,
            )
        elif c.records_url is not None and not c.ingest_token:
            log.info(
                "no ingest token (MLWARDEN_INGEST_TOKEN or --ingest-token-file): records are "
                "sent without one; a detector that requires one refuses them "
                '(records_dropped{reason="unauthorized"})'
            )
        self.capturing = c.records_url is not None and c.manifest_missing is None
        if not self.capturing:
            log.warning("no --collector given: proxying and metrics only, nothing is captured")
        self.capture = (
            CaptureProcess(
                self._worker_settings(),
                self.metrics,
                max_items=c.queue_size,
                max_bytes=c.queue_bytes,
            )
            if self.capturing
            else InlineCapture(self.metrics, protocol=c.protocol, max_body_bytes=c.max_body_bytes)
        )
        await self.capture.start()
        # One pooled session to the model; no automatic headers, no decompression,
        # so what reaches the model and what comes back are exactly what was sent.
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300),
            timeout=aiohttp.ClientTimeout(
                total=None,
                connect=c.upstream_connect_timeout_seconds,
                sock_read=c.upstream_read_timeout_seconds,
            ),
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        handler = ProxyHandler(
            c,
            session=self._session,
            queue=self.capture,
            metrics=self.metrics,
            capturing=self.capturing,
            not_captured="no_manifest" if c.manifest_missing is not None else None,
        )
        self._handler = handler
        proxy_runner = web.ServerRunner(
            # No auto_decompress: a gzip request body must reach the model still gzipped.
            # access_log=None must be given to the Server itself: on the runner it is
            # ignored, and a log line per request cost ~20% of the per-request time.
            # aiohttp's keep-alive timer runs from the connection's start and from each
            # response, and closes a connection still waiting for a complete request head:
            # that is the client header timeout.
            _ListenServer(
                handler,
                max_connections=c.max_connections,
                refused=self.metrics.client_errors.labels("too_many_connections"),
                handler_cancellation=True,
                auto_decompress=False,
                access_log=None,
                keepalive_timeout=c.client_header_timeout_seconds,
            ),
            # In-flight requests get the shutdown budget less what the last flush needs.
            shutdown_timeout=c.shutdown_timeout_seconds - _flush_reserve(c),
        )
        await proxy_runner.setup()
        self._runners.append(proxy_runner)
        site = web.TCPSite(proxy_runner, c.listen[0], c.listen[1], backlog=1024)
        await site.start()
        self.proxy_port = _bound_port(proxy_runner)

        admin_runner = web.AppRunner(self._admin_app(), access_log=None)
        await admin_runner.setup()
        self._runners.append(admin_runner)
        await web.TCPSite(admin_runner, c.admin_listen[0], c.admin_listen[1]).start()
        self.admin_port = _bound_port(admin_runner)
        self.ready = True
        log.info(
            "mlwarden sidecar: proxy on %s:%s -> %s, admin on %s:%s, collector %s",
            c.listen[0],
            self.proxy_port,
            c.upstream,
            c.admin_listen[0],
            self.admin_port,
            c.records_url or "(none)",
        )

    async def drain(self, interrupted: asyncio.Event | None = None) -> None:
        """Keep serving for `drain_seconds`, not ready, closing each connection after its
        response; `interrupted` ends the drain early."""
        self.ready = False
        if self._handler is not None:
            self._handler.closing = True
        seconds = self.config.drain_seconds
        if seconds <= 0:
            return
        log.info("mlwarden sidecar: draining for %g s (/readyz 503, Connection: close)", seconds)
        if interrupted is None:
            await asyncio.sleep(seconds)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(interrupted.wait(), seconds)

    async def stop(self) -> None:
        """Stop taking requests, finish those in flight, then flush capture and shipping,
        within `shutdown_timeout_seconds`."""
        self.ready = False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.shutdown_timeout_seconds
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()
        if self.capture is not None:
            await self.capture.stop(max(deadline - loop.time(), _flush_reserve(self.config)))
        if self._session is not None:
            await self._session.close()

    def _worker_settings(self) -> WorkerSettings:
        c = self.config
        return WorkerSettings(
            protocol=c.protocol,
            spec=c.observed_model.spec if c.observed_model is not None else None,
            max_body_bytes=c.max_body_bytes,
            redaction_key=c.ingest_token.encode() if c.ingest_token else None,
            records_url=c.records_url if self.capturing else None,
            batch_size=c.batch_size,
            batch_interval_seconds=c.batch_interval_seconds,
            buffer_records=c.buffer_records,
            ship_timeout_seconds=c.ship_timeout_seconds,
            ship_max_attempts=c.ship_max_attempts,
            source=self._source(),
            headers=bearer_header(c.ingest_token) if c.ingest_token else {},
            log_level=logging.getLogger().getEffectiveLevel(),
        )

    def _source(self) -> dict[str, Any]:
        om = self.config.observed_model
        source: dict[str, Any] = {"pod": os.environ.get("POD_NAME") or socket.gethostname()}
        if om is not None:
            source["model"] = f"{om.namespace}/{om.name}"
        if self.config.model_revision is not None:
            source["modelRevision"] = self.config.model_revision
        return source

    def _admin_app(self) -> web.Application:
        app = web.Application()

        async def metrics(_: web.Request) -> web.Response:
            if self.capture is not None:
                self.capture.update_gauges()
            body = generate_latest(self.metrics.registry)
            return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

        async def healthz(_: web.Request) -> web.Response:
            return web.json_response({"status": "ok"})

        async def readyz(_: web.Request) -> web.Response:
            capture = self.capture
            body = {
                "ready": self.ready,
                "upstream": self.config.upstream,
                "queueDepth": len(capture) if capture is not None else 0,
                "collector": self.config.records_url,
                "bufferedRecords": capture.buffered if capture is not None else 0,
                "collectorLastError": capture.last_error if capture is not None else None,
                "captureWorker": capture.pid if capture is not None else None,
            }
            return web.json_response(body, status=200 if self.ready else 503)

        app.router.add_get("/metrics", metrics)
        app.router.add_get("/healthz", healthz)
        app.router.add_get("/readyz", readyz)
        return app


def _flush_reserve(config: SidecarConfig) -> float:
    """Of the shutdown budget, what the last capture flush keeps for itself."""
    return min(2.0, config.shutdown_timeout_seconds / 2)


def _bound_port(runner: web.BaseRunner) -> int:
    for address in runner.addresses:
        if isinstance(address, tuple):
            return int(address[1])
    raise RuntimeError("sidecar: no TCP address bound")


async def serve(config: SidecarConfig) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully."""
    sidecar = Sidecar(config)
    await sidecar.start()
    signals = 0
    stop, hurry = asyncio.Event(), asyncio.Event()

    def on_signal() -> None:
        nonlocal signals
        signals += 1
        (stop if signals == 1 else hurry).set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    await stop.wait()
    await sidecar.drain(hurry)
    log.info("mlwarden sidecar: shutting down")
    await sidecar.stop()
    log.info("mlwarden sidecar: stopped")
