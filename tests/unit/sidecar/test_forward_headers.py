"""The forwarding path's header filter on raw bytes gives the same answers as the plain rule."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from mlwarden.sidecar import forward
from mlwarden.sidecar.forward import filter_headers, plain_response
from mlwarden.sidecar.proxy import end_to_end_headers

NAMES = st.sampled_from(
    ["Connection", "connection", "Keep-Alive", "TE", "Transfer-Encoding", "Upgrade",
     "Proxy-Connection", "Content-Length", "X-Hop", "x-hop", "X-Model", "Set-Cookie",
     "Authorization", "Content-Type"]
)  # fmt: skip
VALUES = st.sampled_from(["1", "close", "keep-alive, X-Hop", "X-HOP , te", "a=b", ""])


@settings(max_examples=300)
@given(st.lists(st.tuples(NAMES, VALUES), max_size=8))
def test_bytes_filter_matches_the_rule(headers: list[tuple[str, str]]) -> None:
    multi = CIMultiDict(headers)
    want = [
        f"{k}: {v}\r\n".encode() for k, v in end_to_end_headers(multi, keep_length=True).items()
    ]
    connection = ",".join(v for k, v in headers if k.lower() == "connection")
    raw = [(k.encode(), v.encode()) for k, v in headers]
    assert filter_headers(raw, connection.encode() or None) == want


def test_expect_can_be_dropped_and_case_is_kept() -> None:
    raw = [(b"EXPECT", b"100-continue"), (b"X-Model", b"iris"), (b"x-hop", b"1")]
    kept = filter_headers(raw, b"X-Hop", drop=frozenset((b"expect",)))
    assert kept == [b"X-Model: iris\r\n"]


def test_plain_responses_are_framed() -> None:
    raw = plain_response(502, b"Bad Gateway", "upstream connection failed: refused", close=True)
    head, body = raw.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 502 Bad Gateway\r\n")
    assert b"Connection: close" in head
    assert f"Content-Length: {len(body)}".encode() in head
    assert body == b"mlwarden-sidecar: upstream connection failed: refused\n"


# --- the heads the forwarding path builds, through its parsers, against the same rule -------
#
# The connections classify each field once as llhttp reports it and keep the lines to pass
# on; here real `ClientConnection` / `UpstreamConnection` objects (real parsers, in-memory
# transports) are fed a request and an answer, and what they write must be the rule's head.

HEAD_NAMES = st.sampled_from(
    ["Connection", "connection", "Keep-Alive", "TE", "Proxy-Connection", "X-Hop", "x-hop",
     "Close", "close", "X-Model", "Expect", "Authorization", "Content-Type", "X-Request-Id",
     "Content-Encoding"]
)  # fmt: skip
HEAD_VALUES = st.sampled_from(
    ["1", "close", "keep-alive", "keep-alive, X-Hop", "X-HOP , te", "100-continue", "Close",
     "text/event-stream", "a=b"]
)  # fmt: skip


class _Sink:
    """An in-memory transport: keeps what is written."""

    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> None:
        self.data += data

    def writelines(self, data: Iterable[bytes]) -> None:
        for piece in data:
            self.data += piece

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...


class _Queue:
    def offer(self, exchange: object) -> bool:
        return True


def _exchange(
    request_fields: list[tuple[str, str]], answer_fields: list[tuple[str, str]]
) -> tuple[bytes, bytes]:
    """(what the model received, what the client received) for one POST through the path."""
    from mlwarden.sidecar.config import SidecarConfig
    from mlwarden.sidecar.forward import Forwarder, UpstreamConnection
    from mlwarden.sidecar.metrics import SidecarMetrics

    async def run() -> tuple[bytes, bytes]:
        config = SidecarConfig(
            listen=("127.0.0.1", 1), upstream="http://127.0.0.1:2", admin_listen=("127.0.0.1", 3),
            collector=None,
        )  # fmt: skip
        fwd = Forwarder(config, queue=_Queue(), metrics=SidecarMetrics(), capturing=False)
        up_sink, client_sink = _Sink(), _Sink()
        up = UpstreamConnection(fwd.pool)
        up.connection_made(up_sink)  # type: ignore[arg-type]
        fwd.pool.put(up)
        client = fwd.protocol()
        client.connection_made(client_sink)  # type: ignore[arg-type]
        head = "".join(f"{k}: {v}\r\n" for k, v in request_fields)
        client.data_received(
            f"POST /x HTTP/1.1\r\nHost: m\r\n{head}Content-Length: 2\r\n\r\nhi".encode()
        )
        answer = "".join(f"{k}: {v}\r\n" for k, v in answer_fields)
        up.data_received(f"HTTP/1.1 200 OK\r\n{answer}Content-Length: 2\r\n\r\nok".encode())
        client.close()
        return bytes(up_sink.data), bytes(client_sink.data)

    return asyncio.run(run())


def _rule(fields: list[tuple[str, str]], *, drop: frozenset[bytes] = frozenset()) -> bytes:
    raw = [(k.encode(), v.encode()) for k, v in fields]
    connection = ",".join(v for k, v in fields if k.lower() == "connection")
    return b"".join(filter_headers(raw, connection.encode() or None, drop=drop))


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(HEAD_NAMES, HEAD_VALUES), max_size=6),
    st.lists(st.tuples(HEAD_NAMES, HEAD_VALUES), max_size=6),
)
def test_forwarded_heads_match_the_rule(
    request_fields: list[tuple[str, str]], answer_fields: list[tuple[str, str]]
) -> None:
    expects = [v for k, v in request_fields if k.lower() == "expect"]
    drop = frozenset((b"expect",)) if expects and expects[-1] == "100-continue" else frozenset()
    to_model, to_client = _exchange(request_fields, answer_fields)
    want_request = _rule([("Host", "m"), *request_fields, ("Content-Length", "2")], drop=drop)
    assert to_model == b"POST /x HTTP/1.1\r\n" + want_request + b"\r\nhi"
    # The client's head: the rule, plus Connection: close when the request asked for it.
    head, _, body = to_client.removeprefix(b"HTTP/1.1 100 Continue\r\n\r\n").partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 200 OK"
    kept = b"".join(line + b"\r\n" for line in lines[1:] if line != b"Connection: close")
    assert kept == _rule([*answer_fields, ("Content-Length", "2")])
    assert body == b"ok"


def test_the_tables_by_usual_spelling_agree_with_the_lowercased_ones() -> None:
    """A field looked up as sent is what its lowercased name says (the fast path of
    on_header must never pass on what the lowercase lookup would drop, or the reverse)."""
    for as_sent, by_lower in (
        (forward._REQUEST_AS_SENT, forward._REQUEST_FIELDS),
        (forward._ANSWER_AS_SENT, forward._ANSWER_FIELDS),
    ):
        assert set(by_lower) <= set(as_sent)
        for name, kind in as_sent.items():
            assert kind == by_lower.get(name.lower(), forward._PASS), name
