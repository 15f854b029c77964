"""HTTP/1.1 at the byte level, for the forwarding tests: a recording model and a raw client.

- `RecordingUpstream`: a model server on loopback (asyncio + httptools, in its own thread)
  that records every request exactly as it arrived (method, target, header fields in order
  and case, body, trailers, whether it was chunked, which connection it came on) and
  answers by path:

    /chunked      a chunked answer in three pieces, with a trailer field `X-Digest`
    /unframed     no Content-Length, not chunked: the body ends with the connection
    /stream       a text/event-stream answer, chunked
    anything else 200, a JSON summary of the request, with Content-Length

  `idle_close` closes each connection that long after its last answer (a model server's
  keep-alive timeout); `drop_nth` closes a connection without answering its n-th request
  (a server closing an idle connection just as a request is sent on it).
- `exchange`: sends raw bytes (optionally in pieces) and parses the answers by hand.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httptools
from harness import free_port


@dataclass
class Received:
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    body: bytes
    trailers: list[tuple[str, str]]
    chunked: bool
    connection: int

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    def names(self) -> list[str]:
        return [k.lower() for k, _ in self.headers]


class _ModelConnection(asyncio.Protocol):
    def __init__(self, up: RecordingUpstream, number: int) -> None:
        self.up = up
        self.number = number
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.served = 0
        self.idle_timer: asyncio.TimerHandle | None = None
        self._reset()

    def _reset(self) -> None:
        self.url = b""
        self.headers: list[tuple[str, str]] = []
        self.trailers: list[tuple[str, str]] = []
        self.body = b""
        self.head_done = False
        self.chunked = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.idle_timer is not None:
            self.idle_timer.cancel()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        pair = (name.decode("latin-1"), value.decode("latin-1"))
        (self.trailers if self.head_done else self.headers).append(pair)

    def on_headers_complete(self) -> None:
        self.head_done = True

    def on_chunk_header(self) -> None:
        self.chunked = True

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        assert self.transport is not None
        self.served += 1
        if self.up.drop_nth and self.served == self.up.drop_nth:
            self.up.dropped += 1
            self.transport.close()
            return
        got = Received(
            method=self.parser.get_method().decode(),
            target=self.url.decode("latin-1"),
            version=self.parser.get_http_version(),
            headers=self.headers,
            body=self.body,
            trailers=self.trailers,
            chunked=self.chunked,
            connection=self.number,
        )
        self.up.received.append(got)
        self._reset()
        self._answer(got)
        if self.up.idle_close is not None:
            loop = asyncio.get_running_loop()
            self.idle_timer = loop.call_later(self.up.idle_close, self.transport.close)

    def _answer(self, got: Received) -> None:
        t = self.transport
        assert t is not None
        path = got.target.split("?")[0]
        if path == "/chunked":
            t.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Digest\r\n\r\n")
            if got.method == "HEAD":  # a HEAD answer has no body, whatever its framing says
                return
            for piece in (b"first,", b"second,", b"third"):
                t.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            t.write(b"0\r\nX-Digest: abc123\r\n\r\n")
        elif path == "/unframed":
            t.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n")
            t.write(b"all of it, until the end of the connection")
            t.close()
        elif path == "/stream":
            t.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n")
            t.write(b"Transfer-Encoding: chunked\r\n\r\n")
            for i in range(3):
                event = b'data: {"n": %d}\n\n' % i
                t.write(b"%x\r\n%s\r\n" % (len(event), event))
            t.write(b"0\r\n\r\n")
        else:
            summary = {
                "method": got.method,
                "target": got.target,
                "body_len": len(got.body),
            }
            body = json.dumps(summary).encode()
            extra = b"X-Model: recording\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n"
            if got.method == "HEAD":
                body = b""
            t.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n%s"
                b"Content-Length: %d\r\n\r\n%s" % (extra, len(json.dumps(summary).encode()), body)
            )


@dataclass
class RecordingUpstream:
    idle_close: float | None = None
    drop_nth: int = 0
    received: list[Received] = field(default_factory=list)
    connections: int = 0
    dropped: int = 0
    port: int = field(default_factory=free_port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> RecordingUpstream:
        self.loop = asyncio.new_event_loop()
        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)

            def protocol() -> _ModelConnection:
                self.connections += 1
                return _ModelConnection(self, self.connections)

            self.server = self.loop.run_until_complete(
                self.loop.create_server(protocol, "127.0.0.1", self.port)
            )
            started.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert started.wait(10)
        return self

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


# --------------------------------------------------------------------------- the raw client


@dataclass
class Answer:
    status: int
    reason: str
    version: str
    headers: list[tuple[str, str]]
    body: bytes
    trailers: list[tuple[str, str]]
    chunked: bool

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)


class _Incomplete(Exception):
    pass


class _AnswerParser:
    """HTTP/1.1 answers from raw bytes, by hand (not httptools: it is what is under test
    in the sidecar, and a HEAD answer's end is known only from the request)."""

    def __init__(self, head_requests: list[bool]) -> None:
        self.head_requests = head_requests  # per expected answer: was it a HEAD request
        self.answers: list[Answer] = []
        self.buf = b""
        self.interim = b""

    def feed(self, data: bytes, *, eof: bool = False) -> None:
        self.buf += data
        while self.buf:
            try:
                answer, used = self._one(self.buf, eof=eof)
            except _Incomplete:
                return
            self.buf = self.buf[used:]
            if answer is None:
                continue
            self.answers.append(answer)

    def _one(self, buf: bytes, *, eof: bool) -> tuple[Answer | None, int]:
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            raise _Incomplete
        lines = buf[:end].decode("latin-1").split("\r\n")
        version, _, rest = lines[0].partition(" ")
        code, _, reason = rest.partition(" ")
        status = int(code)
        headers = [(k, v.strip()) for k, _, v in (line.partition(":") for line in lines[1:])]
        at = end + 4
        if status < 200:
            self.interim += buf[:at]
            return None, at
        names = {k.lower(): v for k, v in headers}
        is_head = (
            len(self.answers) < len(self.head_requests) and self.head_requests[len(self.answers)]
        )
        body, trailers, chunked = b"", [], False
        if is_head or status in (204, 304):
            pass
        elif "chunked" in names.get("transfer-encoding", "").lower():
            chunked = True
            while True:
                line_end = buf.find(b"\r\n", at)
                if line_end < 0:
                    raise _Incomplete
                size = int(buf[at:line_end].split(b";")[0], 16)
                at = line_end + 2
                if size == 0:
                    trailer_end = buf.find(b"\r\n\r\n", at - 2)
                    if trailer_end < 0:
                        raise _Incomplete
                    for line in buf[at:trailer_end].decode("latin-1").split("\r\n"):
                        if line:
                            k, _, v = line.partition(":")
                            trailers.append((k, v.strip()))
                    at = trailer_end + 4
                    break
                if len(buf) < at + size + 2:
                    raise _Incomplete
                body += buf[at : at + size]
                at += size + 2
        elif "content-length" in names:
            n = int(names["content-length"])
            if len(buf) < at + n:
                raise _Incomplete
            body, at = buf[at : at + n], at + n
        else:  # the body ends with the connection
            if not eof:
                raise _Incomplete
            body, at = buf[at:], len(buf)
        answer = Answer(
            status=status,
            reason=reason,
            version=version.split("/")[-1],
            headers=headers,
            body=body,
            trailers=trailers,
            chunked=chunked,
        )
        return answer, at


@dataclass
class Conversation:
    answers: list[Answer]
    interim: bytes  # what arrived before the first final answer's bytes (100 Continue)
    closed: bool  # the server closed the connection


def exchange(
    port: int,
    pieces: list[bytes],
    *,
    expect: int,
    heads: list[bool] | None = None,
    pause: float = 0.0,
    timeout: float = 5.0,
) -> Conversation:
    """Send `pieces` (pausing between them) and read until `expect` answers or the close."""
    parser = _AnswerParser(heads or [False] * expect)
    raw = b""
    closed = False
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        for piece in pieces:
            try:
                s.sendall(piece)
            except OSError:  # refused and closed before the rest was sent
                break
            if pause:
                time.sleep(pause)
        deadline = time.monotonic() + timeout
        while len(parser.answers) < expect and time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, TimeoutError):
                closed = True
                break
            if not chunk:
                closed = True
                parser.feed(b"", eof=True)  # an answer without framing ends with the close
                break
            raw += chunk
            parser.feed(chunk)
        if not closed:
            s.settimeout(0.2)
            try:
                closed = s.recv(1) == b""
            except TimeoutError:
                closed = False
            except ConnectionResetError:
                closed = True
    return Conversation(answers=parser.answers, interim=parser.interim, closed=closed)


def summary(answer: Answer) -> dict[str, Any]:
    return json.loads(answer.body)
