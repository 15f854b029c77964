"""The sidecar process: the forwarding server, the admin app, capture and shipping wired up.

Every request on the listen port goes to the model unchanged; the forwarding itself
lives in `mlwarden.sidecar.forward` (HTTP/1.1 framing with httptools on asyncio
protocols, a keep-alive pool to the model, bodies streamed both ways), which offers
each exchange to capture (O(1), never waits): a worker process of its own parses,
redacts, encodes and ships (`supervisor`, `worker`). With `--protocol v2-grpc` (or
`--grpc-listen`) a gRPC listener (`grpc_proxy`) forwards gRPC the same way.

`/metrics`, `/healthz` and `/readyz` live on a separate admin port (aiohttp) so they can
never shadow a path of the model's own.

Shutdown (SIGTERM, as Kubernetes sends it) is a drain, then a stop, so that no client of a
model being rolled sees a refused connection or a request cut off:

    drain  for `drain_seconds` the proxy keeps accepting and serving as before, while
           `/readyz` answers 503 and every response carries `Connection: close`: load
           balancers stop sending new connections (endpoint removal takes seconds to reach
           every kube-proxy and ingress), and keep-alive clients, whose connections stay
           pinned to this pod, reconnect to another one after their next response.
    stop   no new connection is accepted, idle ones are closed, requests in flight finish;
           the capture queue is parsed and the shipper flushes what it can, all within
           `shutdown_timeout_seconds`; then the process exits 0.

A second SIGTERM or SIGINT during the drain ends it early.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from typing import Any

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from mlwarden.ingest_auth import bearer_header
from mlwarden.sidecar.capture import WorkerSettings
from mlwarden.sidecar.config import SidecarConfig
from mlwarden.sidecar.forward import Forwarder
from mlwarden.sidecar.grpc_proxy import GrpcProxy
from mlwarden.sidecar.metrics import SidecarMetrics
from mlwarden.sidecar.native import forward_module
from mlwarden.sidecar.supervisor import CaptureProcess, InlineCapture

log = logging.getLogger(__name__)

# RFC 9110 §7.6.1: connection-specific fields a proxy must not forward, plus
# whatever the Connection header itself names.
HOP_BY_HOP = frozenset(
    ("connection", "proxy-connection", "keep-alive", "te", "transfer-encoding", "upgrade")
)


def end_to_end_headers(
    headers: CIMultiDictProxy[str] | CIMultiDict[str], *, keep_length: bool
) -> CIMultiDict[str]:
    """A copy of `headers` without hop-by-hop fields (and Content-Length unless kept).

    The rule in its plainest form, over header objects; the forwarding path applies the
    same rule to raw header bytes (`forward.filter_headers`), and a unit test holds the
    two to the same answers.
    """
    named: frozenset[str] = frozenset()
    connection = ",".join(headers.getall("Connection", ()))  # every Connection line counts
    if connection:
        named = frozenset(t.strip().lower() for t in connection.split(",") if t.strip())
    out: CIMultiDict[str] = CIMultiDict()
    for key, value in headers.items():
        k = key.lower()
        if k in HOP_BY_HOP or k in named or (not keep_length and k == "content-length"):
            continue
        out.add(key, value)
    return out


class Sidecar:
    """The running sidecar: proxy site, admin site, capture worker and shipper."""

    def __init__(self, config: SidecarConfig) -> None:
        self.config = config
        self.metrics = SidecarMetrics()
        # The forwarding path: compiled with mypyc when built from this source (native.py).
        self._forward, self.forwarder_kind = forward_module()
        self.metrics.set_info(config.protocol, self.forwarder_kind.split(" ", 1)[0])
        # Capture, in a worker process of its own (sidecar/supervisor.py); created in start().
        self.capture: CaptureProcess | InlineCapture | None = None
        self.capturing = False
        self._runners: list[web.BaseRunner] = []
        self._server: asyncio.Server | None = None
        self._forwarder: Forwarder | None = None
        self.grpc: GrpcProxy | None = None
        self.grpc_port: int | None = None
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
        not_captured = "no_manifest" if c.manifest_missing is not None else None
        if c.protocol == "v2-grpc" or c.grpc_listen is not None:
            # The gRPC listener: --listen itself with protocol v2-grpc, else --grpc-listen.
            grpc_only = c.protocol == "v2-grpc"
            listen = c.listen if grpc_only else c.grpc_listen
            upstream = c.upstream if grpc_only else c.grpc_upstream
            assert listen is not None and upstream is not None  # SidecarConfig checks both
            self.grpc = GrpcProxy(
                listen=listen,
                upstream=upstream,
                capture=self.capture,
                metrics=self.metrics,
                sample_rate=c.sample_rate if self.capturing else 0.0,
                max_body_bytes=c.max_body_bytes,
                not_captured=not_captured,
            )
            self.grpc_port = await self.grpc.start()
            if grpc_only:
                self.proxy_port = self.grpc_port
                await self._start_admin()
                return
        forwarder: Forwarder = self._forward.Forwarder(
            c,
            queue=self.capture,
            metrics=self.metrics,
            capturing=self.capturing,
            not_captured=not_captured,
        )
        self._forwarder = forwarder
        # Capture's batched work waits for a moment with no request in progress.
        self.capture.timer.busy = forwarder.busy
        forwarder.on_quiet = self.capture.timer.quiet
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            forwarder.protocol, c.listen[0], c.listen[1], backlog=1024
        )
        self.proxy_port = int(self._server.sockets[0].getsockname()[1])
        await self._start_admin()

    async def _start_admin(self) -> None:
        c = self.config
        admin_runner = web.AppRunner(self._admin_app(), access_log=None)
        await admin_runner.setup()
        self._runners.append(admin_runner)
        await web.TCPSite(admin_runner, c.admin_listen[0], c.admin_listen[1]).start()
        self.admin_port = _bound_port(admin_runner)
        self.ready = True
        log.info(
            "mlwarden sidecar: %s on %s:%s -> %s%s, admin on %s:%s, collector %s; forwarder %s",
            "gRPC proxy" if c.protocol == "v2-grpc" else "proxy",
            c.listen[0],
            self.proxy_port,
            c.upstream,
            f", gRPC on {c.grpc_listen[0]}:{self.grpc_port} -> {c.grpc_upstream}"
            if c.grpc_listen is not None
            else "",
            c.admin_listen[0],
            self.admin_port,
            c.records_url or "(none)",
            self.forwarder_kind,
        )

    async def drain(self, interrupted: asyncio.Event | None = None) -> None:
        """Keep serving for `drain_seconds`, not ready, closing each connection after its
        response; `interrupted` ends the drain early."""
        self.ready = False
        if self._forwarder is not None:
            self._forwarder.closing = True
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
        if self.grpc is not None:
            await self.grpc.stop(
                max(0.0, self.config.shutdown_timeout_seconds - _flush_reserve(self.config))
            )
        if self._server is not None and self._forwarder is not None:
            self._server.close()  # no new connections
            self._forwarder.closing = True
            self._forwarder.close_idle()
            # In-flight requests get the shutdown budget less what the last flush needs.
            await self._forwarder.wait_in_flight(
                max(0.0, deadline - loop.time() - _flush_reserve(self.config))
            )
            self._server = None
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()
        if self.capture is not None:
            await self.capture.stop(max(deadline - loop.time(), _flush_reserve(self.config)))

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
            if self._forwarder is not None:
                self._forwarder.record_answered()  # the exchanges answered and not yet offered
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
