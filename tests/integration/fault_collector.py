"""A collector that misbehaves on purpose, as its own process: raw sockets, no HTTP library.

    python tests/integration/fault_collector.py --port N --mode MODE

Modes (what a detector can do wrong, as the sidecar sees it):

- `ok`     reads each request whole and answers 200 (the healthy case);
- `hang`   accepts the connection and reads the request, then never answers;
- `500`    answers 500 Internal Server Error;
- `429`    answers 429 Too Many Requests with `Retry-After: 1`;
- `reset`  reads the request head and part of the body, then resets the connection
           (SO_LINGER 0: the client sees ECONNRESET mid-batch).

"Detector down" is no process at all: a free port nobody listens on.

It prints `ready` once listening and, on SIGTERM, one JSON line with what it saw
(connections, request heads, answers), so a test can check the fault was exercised.
Used by tests/integration/test_faults_collector.py and benchmarks/faults_latency.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import socket
import struct
import sys

MODES = ("ok", "hang", "500", "429", "reset")
ANSWERS = {
    "ok": b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 17\r\n\r\n"
    b'{"accepted":true}',
    "500": b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\n"
    b"Content-Length: 14\r\n\r\nfailing, sorry",
    "429": b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Length: 0\r\n\r\n",
}


class Counts:
    def __init__(self) -> None:
        self.connections = 0
        self.requests = 0
        self.answered = 0
        self.resets = 0


async def read_head(reader: asyncio.StreamReader) -> int | None:
    """Read one request head; the Content-Length it announces (None at end of stream)."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        return None
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    return length


async def handle(
    mode: str, counts: Counts, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    counts.connections += 1
    try:
        while True:
            length = await read_head(reader)
            if length is None:
                return
            counts.requests += 1
            if mode == "reset":
                await reader.read(min(length, 1024))  # some of the body, then pull the plug
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                counts.resets += 1
                writer.transport.abort()
                return
            await reader.readexactly(length)
            if mode == "hang":
                await reader.read()  # until the client gives up and closes
                return
            writer.write(ANSWERS[mode])
            await writer.drain()
            counts.answered += 1
    except (ConnectionError, asyncio.IncompleteReadError):
        return
    finally:
        writer.transport.abort() if mode == "reset" else writer.close()


async def main(port: int, mode: str) -> None:
    counts = Counts()
    server = await asyncio.start_server(
        lambda r, w: handle(mode, counts, r, w), "127.0.0.1", port, backlog=1024
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("ready", flush=True)
    await stop.wait()
    server.close()
    print(json.dumps(vars(counts)), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", choices=MODES, required=True)
    args = parser.parse_args()
    asyncio.run(main(args.port, args.mode))
    sys.exit(0)
