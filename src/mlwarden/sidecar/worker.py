"""The capture worker process: exchanges in, records out to the detector, metrics back.

    python -m mlwarden.sidecar.worker FD

Started by the proxy process (`mlwarden.sidecar.supervisor.CaptureProcess`), never by
hand. FD is its end of a Unix socket pair. Over it the proxy sends, as frames
(`mlwarden.sidecar.capture`): the settings first (`WorkerSettings`, pickled: the proxy is
the only peer), then one frame per exchange, at shutdown a drain frame with the flush
budget, then end-of-file. The worker sends back, every `report_interval` seconds and once
more before it exits, a report (orjson): how many exchanges it has consumed, its metrics'
deltas (`mlwarden.sidecar.relay`), the shipper's buffered records and last error. A
report is also the heartbeat the proxy judges a hung worker by.

Here, and only here, exchanges are parsed, redacted and encoded (`CaptureProcessor`), and
the shipper posts batches: none of it shares an event loop or the GIL with forwarding.
The worker reads (at most `READ_BYTES` at a time, plus the rest of a larger frame) only
when it has processed what it read before, so when it falls behind the socket fills and
the proxy drops (and counts) what does not fit its queue.

It runs at nice +10: when the pod's CPU is contended the scheduler gives forwarding the
larger share, and capture falls behind (counted drops) rather than the model's clients.
SCHED_IDLE (allowed unprivileged; a forwarder waking up always preempts it) was tried and
is not used: its weight of 3 against 1024 holds against every process in the same cgroup,
so on a machine kept busy by other work (outside a container of its own: the tests, a VM)
the worker hardly ran at all and a healthy collector did not get its records within 20 s
(`benchmarks/RESULTS.md`, the by-hand section on capture's batched work).

It ignores SIGINT and SIGTERM: the proxy process decides when it stops (a Ctrl-C reaches
the whole process group; Kubernetes signals the container's first process only). When the
proxy process goes away without a word (SIGKILL), end-of-file stops the worker the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import signal
import socket
import sys
import time
from typing import Any

import orjson

from mlwarden.sidecar.capture import (
    FRAME_HEADER,
    KIND_DRAIN,
    KIND_EXCHANGE,
    KIND_REPORT,
    KIND_SETTINGS,
    CaptureProcessor,
    WorkerSettings,
    frame,
    read_exchange,
)
from mlwarden.sidecar.metrics import SidecarMetrics
from mlwarden.sidecar.relay import Deltas
from mlwarden.sidecar.shipper import Shipper

log = logging.getLogger("mlwarden.sidecar.worker")

# Process exchanges for at most this long before letting the shipper and the reports run.
SLICE_SECONDS = 0.005
# The worker's scheduling priority below the proxy's (a weight of about a tenth of it).
NICE = 10
# Read at most this much at a time (then processed before the next read).
READ_BYTES = 256 << 10
# Flush budget when the proxy process vanished without a drain frame.
ORPHAN_FLUSH_SECONDS = 2.0


def report_frame(
    consumed: int, deltas: list[list[Any]], shipper: Shipper | None, *, final: bool = False
) -> bytes:
    body = orjson.dumps(
        {
            "consumed": consumed,
            "metrics": deltas,
            "buffered": shipper.buffered if shipper is not None else 0,
            "lastError": shipper.last_error if shipper is not None else None,
            "final": final,
        }
    )
    return frame(KIND_REPORT, body)


class Worker:
    def __init__(
        self, settings: WorkerSettings, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.settings = settings
        self.reader = reader
        self.writer = writer
        self.metrics = SidecarMetrics()
        self.deltas = Deltas(self.metrics.registry)
        s = settings
        self.shipper: Shipper | None = None
        if s.records_url is not None:
            self.shipper = Shipper(
                s.records_url,
                metrics=self.metrics,
                batch_size=s.batch_size,
                batch_interval=s.batch_interval_seconds,
                buffer_records=s.buffer_records,
                timeout=s.ship_timeout_seconds,
                max_attempts=s.ship_max_attempts,
                source=s.source,
                headers=s.headers,
            )
        self.processor = CaptureProcessor(
            metrics=self.metrics,
            sink=self.shipper,
            protocol=s.protocol,
            spec=s.spec,
            max_body_bytes=s.max_body_bytes,
            redaction_key=s.redaction_key,
        )
        self.consumed = 0
        self.flush_seconds = ORPHAN_FLUSH_SECONDS

    def report(self, *, final: bool = False) -> None:
        if self.writer.is_closing():
            return
        self.writer.write(
            report_frame(self.consumed, self.deltas.take(), self.shipper, final=final)
        )

    async def _reports(self) -> None:
        while True:
            await asyncio.sleep(self.settings.report_interval_seconds)
            self.report()
            with contextlib.suppress(ConnectionError):
                await self.writer.drain()

    async def run(self) -> None:
        if self.shipper is not None:
            self.shipper.start()
        reports = asyncio.create_task(self._reports(), name="mlwarden-capture-reports")
        try:
            await self._consume()
        finally:
            reports.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reports
        if self.shipper is not None:
            await self.shipper.stop(flush_timeout=self.flush_seconds)
        with contextlib.suppress(ConnectionError):
            self.report(final=True)
            await self.writer.drain()
            self.writer.close()

    async def _consume(self) -> None:
        """Frames until end-of-file, read in bulk (up to `READ_BYTES` at a time: the proxy
        writes many exchanges at once) and processed before the next read."""
        reader = self.reader
        header = FRAME_HEADER
        deadline = time.perf_counter() + SLICE_SECONDS
        buf = b""
        while True:
            try:
                data = await reader.read(READ_BYTES)
            except ConnectionError:
                return
            if not data:
                return  # end of file: the proxy is done (or gone)
            buf = buf + data if buf else data
            at, end_of_data = 0, len(buf)
            while end_of_data - at >= header.size:
                size, kind = header.unpack_from(buf, at)
                end = at + header.size + size - 1
                if end > end_of_data:
                    try:  # the rest of a frame larger than what was read
                        buf = buf[at:] + await reader.readexactly(end - end_of_data)
                    except (asyncio.IncompleteReadError, ConnectionError):
                        return
                    at, end, end_of_data = 0, end - at, end - at
                payload = buf[at + header.size : end]
                at = end
                self._handle(kind, payload)
                if time.perf_counter() >= deadline:
                    await asyncio.sleep(0)  # let the shipper and the reports run
                    deadline = time.perf_counter() + SLICE_SECONDS
            buf = buf[at:]

    def _handle(self, kind: int, payload: bytes) -> None:
        if kind == KIND_EXCHANGE:
            try:
                self.processor.process(read_exchange(payload))
            except Exception:  # a bug must not stop capture for good
                log.exception("capture worker failed on an exchange; continuing")
            self.consumed += 1
        elif kind == KIND_DRAIN:
            self.flush_seconds = max(0.0, orjson.loads(payload)["flushSeconds"])


async def _main(fd: int) -> None:
    sock = socket.socket(fileno=fd)
    reader, writer = await asyncio.open_unix_connection(sock=sock, limit=1 << 20)
    head = await reader.readexactly(FRAME_HEADER.size)
    size, kind = FRAME_HEADER.unpack(head)
    if kind != KIND_SETTINGS:
        raise SystemExit(f"mlwarden capture worker: expected the settings frame, got {kind!r}")
    settings: WorkerSettings = pickle.loads(await reader.readexactly(size - 1))
    logging.getLogger().setLevel(settings.log_level)
    await Worker(settings, reader, writer).run()


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not argv[0].isdigit():
        print(
            "usage: python -m mlwarden.sidecar.worker FD (started by `mlwarden sidecar`)",
            file=sys.stderr,
        )
        return 2
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # Forwarding first: when the pod's CPU is contended, the scheduler prefers the proxy.
    with contextlib.suppress(OSError):
        os.nice(NICE)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    runner: Any = asyncio.run
    with contextlib.suppress(ImportError):  # reason: uvloop is absent on some platforms
        import uvloop

        runner = uvloop.run
    runner(_main(int(argv[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
