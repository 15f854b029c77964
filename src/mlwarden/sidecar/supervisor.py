"""The proxy's side of capture: hand exchanges to the capture worker process, keep it alive.

`CaptureProcess.offer` is all the forwarding path calls: an O(1) append to a
`CaptureQueue` bounded by count and by body bytes (the bytes still in the socket's
write buffer count too); False when it does not fit, and the caller counts the drop
(`queue_full`). The queued exchanges are written to the worker (`mlwarden.sidecar.worker`)
through a Unix socket pair as frames of raw bytes (no parsing, no encoding of a body in
this process), gathered (`FlushTimer`): at the first moment at least `FLUSH_DELAY_SECONDS`
after the first one queued when the forwarder's last request in progress ends, or at once
when `FLUSH_ITEMS` or `FLUSH_BYTES` are waiting. One write and one wake-up of the worker then
carries many exchanges, where one per exchange cost both processes a system call and the
worker a wake-up per request (on two cores, that CPU came out of forwarding's latency).
Waiting for a quiet moment keeps that write, and the worker's wake-up, out of a burst of
requests: a timer started by a burst's first exchange fires, at a steady rate, as the next
burst arrives, and would have made its requests wait (or, ending just before it, made it
share the CPU with the flush and the worker), so the flush waits for the forwarder to say
its last request in progress ended (`FlushTimer.quiet`, no polling: a timer rechecking
every millisecond woke the loop inside the bursts it waited for), for at most
`FLUSH_MAX_DELAY_SECONDS` (under continuous load there is no quiet moment).
The write never blocks: the socket is non-blocking, the transport buffers what the kernel
does not take, and above `WRITE_BUFFER_HIGH` bytes writing pauses until the worker has
read (the exchanges wait in the queue meanwhile, bounded as above).

The worker reports back every 0.2 s (`WorkerSettings.report_interval_seconds`):
its metrics' deltas, applied to this process's metrics (`mlwarden.sidecar.relay`), how
many exchanges it consumed, its shipper's buffered records and last error.

Supervision. A worker that exits, or sends no report for `hang_seconds` (it is then
killed; a new worker has `STARTUP_SECONDS` for its first report: its imports alone take
seconds on a throttled CPU at its lower priority), is restarted after a backoff (0.1 s
doubling to 10 s; back to 0.1 s once a worker has lived 30 s), counted in
`capture_worker_restarts_total{reason}`. What it held
is counted as lost: the exchanges written to it and not yet reported consumed, in
`exchanges_dropped_total{reason="worker_lost"}`, and the records its shipper last
reported buffered, in `records_dropped_total{reason="worker_lost"}`. Forwarding never
waits for any of it: exchanges offered meanwhile wait in the queue for the next worker.
The process is reaped (asyncio's child watcher), and the socket pair closed, every time.

Shutdown (`stop`): the queue is written out, then a drain frame gives the worker what is
left of the shutdown budget to flush its shipper, then end-of-file; a worker still there
at the deadline is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

import mlwarden
from mlwarden import backoff
from mlwarden.sidecar.capture import (
    FRAME_HEADER,
    KIND_DRAIN,
    KIND_SETTINGS,
    CaptureProcessor,
    CaptureQueue,
    Exchange,
    WorkerSettings,
    exchange_frame,
    frame,
)
from mlwarden.sidecar.metrics import SidecarMetrics
from mlwarden.sidecar.relay import Applier

log = logging.getLogger(__name__)

# Bytes the transport may hold before writing pauses (the kernel's socket buffer is apart).
WRITE_BUFFER_HIGH = 1 << 20
# One write gathers queued frames up to about this many bytes.
FLUSH_BYTES = 256 << 10
# Queued exchanges wait this long to be written together, unless FLUSH_ITEMS or
# FLUSH_BYTES of them are already waiting: records are shipped in batches of a second
# anyway, and this costs no client any time.
FLUSH_DELAY_SECONDS = 0.01
FLUSH_ITEMS = 256
# The flush waits for a quiet moment (the forwarder's last request in progress ends), for at
# most this long after the first exchange queued. (The gRPC listener says nothing of its
# requests: with --protocol v2-grpc alone, its exchanges are flushed at this max delay.)
FLUSH_MAX_DELAY_SECONDS = 0.05
# Capture off (`InlineCapture`): the request metrics are counted at a quiet moment about
# this long after the first exchange waiting (at most METRICS_MAX_DELAY_SECONDS after it), or
# at once when METRICS_ITEMS wait (about 2 ms of counting, a bound on what waits).
METRICS_DELAY_SECONDS = 1.0
METRICS_MAX_DELAY_SECONDS = 2.0
METRICS_ITEMS = 1024
HANG_SECONDS = 5.0
# A new worker's budget for its first report: importing the worker takes about a second on
# an idle core, and several times that at nice +10 on a busy or CPU-limited one. Judged by
# HANG_SECONDS from the start, such a worker was killed before it began, again and again.
STARTUP_SECONDS = 30.0
BACKOFF_BASE_SECONDS = 0.1
BACKOFF_CAP_SECONDS = 10.0
HEALTHY_AFTER_SECONDS = 30.0


def never_busy() -> bool:
    return False


class FlushTimer:
    """When queued exchanges are handed on: `later` (the usual: at the first quiet moment
    at least `FLUSH_DELAY_SECONDS` after the first one, at most `FLUSH_MAX_DELAY_SECONDS`
    after it) or `soon` (the next turn of the loop).

    A quiet moment is `quiet()`, which the forwarder calls when its last request in progress
    ends: the end of a burst of requests, when the next one is furthest away. The flush then
    runs on the next turn of the loop, after the requests read in the same turn, if they
    left it quiet (`busy()`; else it waits for the next quiet moment). The delay's end is
    not one: a timer started by a burst's first exchange ends about when the next burst
    arrives (at 100 bursts a second, 10 ms later), and flushing then made that burst wait
    for the flush and share the CPU with the worker it woke. With no request at all after
    the delay, the flush comes at the max delay. `delay` and `max_delay` replace the two
    delays (`InlineCapture`'s are longer)."""

    def __init__(
        self,
        flush: Callable[[], None],
        *,
        delay: float = FLUSH_DELAY_SECONDS,
        max_delay: float = FLUSH_MAX_DELAY_SECONDS,
    ) -> None:
        self._flush = flush
        self.delay = delay
        self.max_delay = max_delay
        # Whether the forwarder is serving a request (set by the proxy once it has one).
        self.busy: Callable[[], bool] = never_busy
        self._handle: asyncio.Handle | None = None
        # A write is due on the next turn of the loop (read on every exchange offered).
        self.soon_due = False
        # The delay is over and the flush waits for `quiet()` (or the max delay).
        self._waiting_quiet = False
        self._since = 0.0

    def later(self) -> None:
        if self._handle is None:
            loop = asyncio.get_running_loop()
            self._since = loop.time()
            self._handle = loop.call_later(self.delay, self._wait_quiet)

    def soon(self) -> None:
        if self.soon_due:
            return
        if self._handle is not None:
            self._handle.cancel()
        self._waiting_quiet = False
        self.soon_due = True
        self._handle = asyncio.get_running_loop().call_soon(self._on_soon)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self.soon_due = False
        self._waiting_quiet = False

    def quiet(self) -> None:
        """The forwarder's last request in progress ended (called by the forwarder)."""
        if self._waiting_quiet:
            self._waiting_quiet = False
            if self._handle is not None:
                self._handle.cancel()
            self._handle = asyncio.get_running_loop().call_soon(self._on_quiet)

    def _wait_quiet(self) -> None:
        """Flush at the next quiet moment, or at the max delay if that comes first."""
        loop = asyncio.get_running_loop()
        left = self.max_delay - (loop.time() - self._since)
        if left <= 0:
            self._handle = None
            self._flush()
            return
        self._waiting_quiet = True
        self._handle = loop.call_later(left, self._on_max_delay)

    def _on_quiet(self) -> None:
        if self.busy():  # a request read in the same turn as the quiet moment
            self._wait_quiet()
            return
        self._handle = None
        self._flush()

    def _on_max_delay(self) -> None:
        self._waiting_quiet = False
        self._handle = None
        self._flush()

    def _on_soon(self) -> None:
        self._handle = None
        self.soon_due = False
        self._flush()


class _Link(asyncio.Protocol):
    """The proxy's end of the socket pair: reads reports, tracks write flow control."""

    def __init__(self, owner: CaptureProcess) -> None:
        self.owner = owner
        self.transport: asyncio.Transport | None = None
        self.paused = False
        self.closed = asyncio.Event()
        self._buffer = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if isinstance(transport, asyncio.Transport):
            self.transport = transport

    def data_received(self, data: bytes) -> None:
        buf = self._buffer
        buf += data
        while len(buf) >= FRAME_HEADER.size:
            size, _kind = FRAME_HEADER.unpack_from(buf)
            end = FRAME_HEADER.size + size - 1
            if len(buf) < end:
                return
            payload = bytes(buf[FRAME_HEADER.size : end])
            del buf[:end]
            try:
                self.owner._on_report(orjson.loads(payload))
            except Exception:  # a garbled report must not take the proxy down
                log.exception("capture worker sent an unreadable report")

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self.owner._schedule_flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()


class CaptureProcess:
    """The capture worker process, fed and supervised from the proxy's event loop."""

    def __init__(
        self,
        settings: WorkerSettings,
        metrics: SidecarMetrics,
        *,
        max_items: int,
        max_bytes: int,
        hang_seconds: float = HANG_SECONDS,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.queue = CaptureQueue(max_items=max_items, max_bytes=max_bytes)
        self.hang_seconds = hang_seconds
        self._applier = Applier(metrics)
        self._lost_exchanges = metrics.exchanges_dropped.labels("worker_lost")
        self._lost_records = metrics.records_dropped.labels("worker_lost")
        self._proc: asyncio.subprocess.Process | None = None
        self._link: _Link | None = None
        self.timer = FlushTimer(self._flush)
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False
        self._closed = False  # end-of-file written: nothing more goes to the worker
        self._last_report = 0.0
        self._reported = False  # the current worker has sent a report (it is running)
        self.sent = 0  # exchanges written to the current worker
        self.consumed = 0  # of those, how many it last reported processed
        self.buffered = 0  # records its shipper last reported holding
        self.last_error: str | None = None

    # --- the forwarding path's side ----------------------------------------------------

    def offer(self, exchange: Exchange) -> bool:
        """Queue an exchange for the worker; False (dropped) when the queue is full."""
        link = self._link
        in_flight = self._written_not_sent()
        queue = self.queue
        if self._closed or not queue.offer(exchange, in_flight=in_flight):
            return False
        if link is not None and not link.paused and not self.timer.soon_due:
            if len(queue) >= FLUSH_ITEMS or queue.bytes >= FLUSH_BYTES:
                self.timer.soon()
            else:
                self.timer.later()
        return True

    def __len__(self) -> int:
        """Exchanges offered and not yet processed: queued, and written but not consumed."""
        return len(self.queue) + max(0, self.sent - self.consumed)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.returncode is None else None

    def _written_not_sent(self) -> int:
        """Bytes handed to the socket to the worker that it has not taken yet."""
        link = self._link
        return link.transport.get_write_buffer_size() if link and link.transport else 0

    def update_gauges(self) -> None:
        in_flight = self._written_not_sent()
        self.metrics.queue_depth.set(len(self))
        self.metrics.queue_bytes.set(self.queue.bytes + in_flight)

    # --- writing -------------------------------------------------------------------------

    def _schedule_flush(self) -> None:
        """Write what is queued on the next turn of the loop (not at the end of a delay)."""
        if self.queue:
            self.timer.soon()

    def _flush(self) -> None:
        link = self._link
        if self._closed or link is None or link.transport is None or link.transport.is_closing():
            return
        transport = link.transport
        while not link.paused and self.queue:
            pieces: list[bytes] = []
            size = 0
            while size < FLUSH_BYTES:
                exchange = self.queue.take()
                if exchange is None:
                    break
                for piece in exchange_frame(exchange):
                    pieces.append(piece)
                    size += len(piece)
                self.sent += 1
            transport.writelines(pieces)  # may call pause_writing()

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        await self._spawn()
        self._supervisor = asyncio.create_task(self._supervise(), name="mlwarden-capture-sup")

    async def _spawn(self) -> None:
        loop = asyncio.get_running_loop()
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "mlwarden.sidecar.worker",
                str(child.fileno()),
                pass_fds=(child.fileno(),),
                stdin=asyncio.subprocess.DEVNULL,
                env=_worker_env(),
            )
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()
        link = _Link(self)
        transport, _ = await loop.create_unix_connection(lambda: link, sock=parent)
        link.transport = transport
        transport.set_write_buffer_limits(high=WRITE_BUFFER_HIGH)
        transport.write(frame(KIND_SETTINGS, pickle.dumps(self.settings)))
        self._link = link
        self.sent = self.consumed = self.buffered = 0
        self._last_report = loop.time()
        self._reported = False
        self.metrics.capture_worker_up.set(1)
        self._schedule_flush()

    def _on_report(self, report: dict[str, Any]) -> None:
        self._last_report = asyncio.get_running_loop().time()
        self._reported = True
        self.consumed = int(report["consumed"])
        self.buffered = int(report["buffered"])
        self.last_error = report["lastError"]
        self._applier.apply(report["metrics"])

    async def _supervise(self) -> None:
        loop = asyncio.get_running_loop()
        failures = 0
        while True:
            started = loop.time()
            reason = await self._watch()
            self._lose(reason)
            if loop.time() - started >= HEALTHY_AFTER_SECONDS:
                failures = 0
            delay = backoff.exponential(
                failures, base=BACKOFF_BASE_SECONDS, cap=BACKOFF_CAP_SECONDS
            )
            failures += 1
            self.metrics.capture_worker_restarts.labels(reason).inc()
            log.error(
                "capture worker %s; restarting in %.1f s (forwarding is unaffected)",
                "exited" if reason == "exited" else f"sent no report for {self.hang_seconds:g} s",
                delay,
            )
            await asyncio.sleep(delay)
            try:
                await self._spawn()
            except OSError as exc:
                log.error("capture worker could not start: %s", exc)
                self._proc = None

    async def _watch(self) -> str:
        """Wait until the worker exits ("exited") or stops reporting (killed: "hung")."""
        loop = asyncio.get_running_loop()
        proc = self._proc
        if proc is None:
            return "exited"
        check = min(1.0, self.hang_seconds / 4)
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(proc.wait()), check)
                return "exited"
            budget = self.hang_seconds if self._reported else STARTUP_SECONDS
            if loop.time() - self._last_report > max(budget, self.hang_seconds):
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
                return "hung"

    def _lose(self, reason: str) -> None:
        """Count what a dead worker held, and let go of its socket."""
        self.metrics.capture_worker_up.set(0)
        lost = max(0, self.sent - self.consumed)
        if lost:
            self._lost_exchanges.inc(lost)
        if self.buffered:
            self._lost_records.inc(self.buffered)
        self.metrics.buffer_records.set(0)
        log.warning(
            "capture worker lost (%s, exit status %s): %d exchanges and %d buffered records "
            "dropped as worker_lost",
            reason,
            self._proc.returncode if self._proc else None,
            lost,
            self.buffered,
        )
        self.sent = self.consumed = self.buffered = 0
        if self._link is not None and self._link.transport is not None:
            self._link.transport.abort()
        self._link = None

    async def stop(self, budget: float) -> None:
        """Write out the queue, let the worker flush within `budget` seconds, reap it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget
        self._stopping = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        proc, link = self._proc, self._link
        if proc is None or link is None or link.transport is None or proc.returncode is not None:
            if self.queue or self.sent > self.consumed:
                log.warning("shutdown: capture worker down, %d exchanges not captured", len(self))
            return
        transport = link.transport
        # The queue first, within half the budget: the worker needs the rest to ship.
        written_by = loop.time() + budget / 2
        while (self.queue or transport.get_write_buffer_size()) and loop.time() < written_by:
            self._schedule_flush()
            await asyncio.sleep(0.005)
        if self.queue:
            log.warning("shutdown: %d exchanges not handed to the capture worker", len(self.queue))
        flush = max(0.0, deadline - loop.time() - 0.25)
        self._closed = True
        self.timer.cancel()
        transport.write(frame(KIND_DRAIN, orjson.dumps({"flushSeconds": flush})))
        if transport.can_write_eof():
            transport.write_eof()
        try:
            async with asyncio.timeout_at(deadline):
                await proc.wait()
                await link.closed.wait()  # the final report, read before the socket closes
        except TimeoutError:
            log.warning("shutdown: capture worker still busy at the deadline; killed")
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        transport.abort()
        self.metrics.capture_worker_up.set(0)


class InlineCapture:
    """Capture off (no collector, or no manifest): no worker process, nothing parsed.

    Every exchange only feeds the request metrics (and the `no_manifest` / `sampled_out`
    counts), a few microseconds in this process: a worker process would cost its memory
    for no record at all. They are counted in batches (`CaptureProcessor.process_all`: one
    increment per counter and histogram bucket per batch), at a quiet moment as the capture
    worker's writes are (`FlushTimer`), but about once a second (`METRICS_DELAY_SECONDS`, or
    at once when `METRICS_ITEMS` wait), not 10 ms after each burst: nobody reads these
    counts in between, since a scrape (`update_gauges`) and the stop count what is still
    waiting first, and a flush after every burst cost each request about a sixth of the
    process's CPU (its code and data pushed the forwarding path's out of the CPU caches
    before the next burst; `benchmarks/RESULTS.md`, "capture-off metrics once a second").
    """

    def __init__(self, metrics: SidecarMetrics, *, protocol: str, max_body_bytes: int) -> None:
        self.metrics = metrics
        self.processor = CaptureProcessor(
            metrics=metrics, sink=None, protocol=protocol, spec=None, max_body_bytes=max_body_bytes
        )
        self.buffered = 0
        self.last_error: str | None = None
        self.pid: int | None = None
        self.timer = FlushTimer(
            self._flush, delay=METRICS_DELAY_SECONDS, max_delay=METRICS_MAX_DELAY_SECONDS
        )
        self._waiting: list[Exchange] = []

    def offer(self, exchange: Exchange) -> bool:
        # The proxy keeps no body when nothing is captured: nothing here is parsed.
        waiting = self._waiting
        waiting.append(exchange)
        if len(waiting) >= METRICS_ITEMS:
            self.timer.soon()
        else:
            self.timer.later()
        return True

    def _flush(self) -> None:
        waiting, self._waiting = self._waiting, []
        if waiting:
            self.processor.process_all(waiting)

    def __len__(self) -> int:
        return len(self._waiting)

    def update_gauges(self) -> None:
        self.timer.cancel()
        self._flush()
        self.metrics.queue_depth.set(0)
        self.metrics.queue_bytes.set(0)

    async def start(self) -> None:
        self.metrics.capture_worker_up.set(0)

    async def stop(self, budget: float) -> None:
        self.timer.cancel()
        self._flush()


def _worker_env() -> dict[str, str]:
    """This environment, with the directory this `mlwarden` came from first on the path:
    the worker runs the same code as the proxy."""
    env = dict(os.environ)
    root = str(Path(mlwarden.__file__).resolve().parent.parent)
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = root if not path else f"{root}{os.pathsep}{path}"
    return env
