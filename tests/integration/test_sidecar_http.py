"""HTTP/1.1 as clients and model servers really speak it, through the real sidecar.

Raw sockets on both sides (`rawhttp.py`): the client sends exact bytes, the model records
exactly what reached it. Pipelining, `Expect: 100-continue`, chunked bodies with trailers
both ways, HTTP/1.0 clients, `Connection: close`, and a model that closes its keep-alive
connections (idle, and just as a request is sent on one).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator

import pytest
import requests
from harness import SidecarProcess
from rawhttp import RecordingUpstream, exchange, summary


@pytest.fixture
def model() -> Iterator[RecordingUpstream]:
    up = RecordingUpstream().start()
    yield up
    up.stop()


def port_of(sidecar: SidecarProcess) -> int:
    return int(sidecar.url.rsplit(":", 1)[1])


def test_pipelined_requests_are_answered_in_order(
    model: RecordingUpstream, start_sidecar: Callable[..., SidecarProcess]
) -> None:
    sidecar = start_sidecar(model.url)
    stream = (
        b"GET /one HTTP/1.1\r\nHost: m\r\n\r\n"
        b"POST /two HTTP/1.1\r\nHost: m\r\nContent-Length: 5\r\n\r\nhello"
        b"POST /three HTTP/1.1\r\nHost: m\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n0\r\n\r\n"
        b"HEAD /four HTTP/1.1\r\nHost: m\r\n\r\n"
        b"GET /chunked HTTP/1.1\r\nHost: m\r\n\r\n"
    )
    # All in one write, and again one byte at a time.
    for pieces in ([stream], [stream[i : i + 1] for i in range(len(stream))]):
        before = len(model.received)
        conv = exchange(
            port_of(sidecar), pieces, expect=5, heads=[False, False, False, True, False]
        )
        assert [a.status for a in conv.answers] == [200] * 5
        assert [summary(a)["target"] for a in conv.answers[:3]] == ["/one", "/two", "/three"]
        assert summary(conv.answers[1])["body_len"] == 5
        assert conv.answers[3].body == b"" and conv.answers[3].header("Content-Length")
        assert conv.answers[4].body == b"first,second,third"
        got = model.received[before:]
        assert [(r.method, r.target, r.body) for r in got] == [
            ("GET", "/one", b""),
            ("POST", "/two", b"hello"),
            ("POST", "/three", b"abc"),
            ("HEAD", "/four", b""),
            ("GET", "/chunked", b""),
        ]
        assert not conv.closed  # keep-alive throughout


def test_expect_100_continue_is_answered_by_the_sidecar(
    model: RecordingUpstream, start_sidecar: Callable[..., SidecarProcess]
) -> None:
    sidecar = start_sidecar(model.url)
    with socket.create_connection(("127.0.0.1", port_of(sidecar)), timeout=5) as s:
        s.sendall(
            b"POST /upload HTTP/1.1\r\nHost: m\r\nContent-Length: 11\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        # The client waits for the interim answer before sending its body.
        assert s.recv(65536) == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(b"hello world")
        answer = s.recv(65536)
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    got = model.received[-1]
    assert got.body == b"hello world"
    assert "expect" not in got.names()  # answered here, not passed on
    # A client that sends its body at once anyway is served the same.
    conv = exchange(
        port_of(sidecar),
        [b"POST /x HTTP/1.1\r\nHost: m\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\nhi"],
        expect=1,
    )
    assert conv.answers[0].status == 200 and model.received[-1].body == b"hi"


def test_chunked_bodies_keep_their_trailers_both_ways(
    model: RecordingUpstream, start_sidecar: Callable[..., SidecarProcess]
) -> None:
    sidecar = start_sidecar(model.url)
    conv = exchange(
        port_of(sidecar),
        [
            b"POST /chunked HTTP/1.1\r\nHost: m\r\nTransfer-Encoding: chunked\r\n"
            b"Trailer: X-Checksum\r\n\r\n",
            b"4\r\nwiki\r\n",
            b"5\r\npedia\r\n",
            b"0\r\nX-Checksum: 42\r\n\r\n",
        ],
        expect=1,
        pause=0.05,
    )
    got = model.received[-1]
    assert got.chunked and got.body == b"wikipedia"
    assert got.trailers == [("X-Checksum", "42")]
    answer = conv.answers[0]
    assert answer.chunked and answer.body == b"first,second,third"
    assert answer.trailers == [("X-Digest", "abc123")]
    assert answer.header("Trailer") == "X-Digest"


def test_http_1_0_clients(
    model: RecordingUpstream, start_sidecar: Callable[..., SidecarProcess]
) -> None:
    sidecar = start_sidecar(model.url)
    port = port_of(sidecar)
    # No Host, no keep-alive: answered, then closed; the model gets its own Host.
    conv = exchange(port, [b"GET /old HTTP/1.0\r\n\r\n"], expect=1)
    assert conv.answers[0].status == 200 and conv.closed
    assert model.received[-1].header("Host") == f"127.0.0.1:{model.port}"
    assert model.received[-1].version == "1.1"
    # Keep-alive asked for: kept, and said so.
    conv = exchange(
        port,
        [b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"] * 2,
        expect=2,
        pause=0.05,
    )
    assert [a.status for a in conv.answers] == [200, 200]
    assert conv.answers[0].header("Connection") == "keep-alive"
    assert not conv.closed
    # A chunked answer reaches an HTTP/1.0 client unframed, ended by the close.
    conv = exchange(port, [b"GET /chunked HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"], expect=1)
    assert conv.answers[0].body == b"first,second,third"
    assert not conv.answers[0].chunked and conv.answers[0].header("Transfer-Encoding") is None
    assert conv.closed


def test_connection_close_ends_the_connection_and_is_not_forwarded(
    model: RecordingUpstream, start_sidecar: Callable[..., SidecarProcess]
) -> None:
    sidecar = start_sidecar(model.url)
    conv = exchange(
        port_of(sidecar),
        [
            b"GET /bye HTTP/1.1\r\nHost: m\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\n\r\n"
            b"GET /never HTTP/1.1\r\nHost: m\r\n\r\n"  # after a close: not read
        ],
        expect=2,
    )
    assert len(conv.answers) == 1 and conv.closed
    assert conv.answers[0].header("Connection") == "close"
    got = model.received[-1]
    assert got.target == "/bye"
    assert "connection" not in got.names() and "x-hop" not in got.names()
    assert all(r.target != "/never" for r in model.received)


def test_an_unframed_answer_is_streamed_to_its_end(
    model: RecordingUpstream, start_sidecar: Callable[..., SidecarProcess]
) -> None:
    sidecar = start_sidecar(model.url)
    conv = exchange(port_of(sidecar), [b"GET /unframed HTTP/1.1\r\nHost: m\r\n\r\n"], expect=1)
    assert conv.answers[0].body == b"all of it, until the end of the connection"
    assert conv.answers[0].chunked  # re-framed for the HTTP/1.1 client
    # The model closed that connection; the next request gets a fresh one.
    assert requests.get(sidecar.url + "/after", timeout=5).status_code == 200


def test_a_model_closing_idle_keep_alive_connections(
    start_sidecar: Callable[..., SidecarProcess],
) -> None:
    """The model closes each connection 50 ms after its last answer: the pool never hands
    the closed one out again."""
    model = RecordingUpstream(idle_close=0.05).start()
    try:
        sidecar = start_sidecar(model.url)
        session = requests.Session()
        for i in range(20):
            method = "GET" if i % 2 else "POST"
            resp = session.request(method, f"{sidecar.url}/r{i}", data=b"x" * i, timeout=5)
            assert resp.status_code == 200, (i, resp.text)
            time.sleep(0.1)
        assert len(model.received) == 20
        assert model.connections == 20  # each one closed by the model in between
        assert sidecar.metric("mlwarden_sidecar_upstream_errors_total", reason="protocol") == 0
    finally:
        model.stop()


def test_a_model_closing_a_connection_as_a_request_arrives(
    start_sidecar: Callable[..., SidecarProcess],
) -> None:
    """The model drops the second request of every connection unanswered (its keep-alive
    timer fired as the request came): an idempotent request is sent again on a fresh
    connection; a POST, which may not be repeated, is answered 502."""
    model = RecordingUpstream(drop_nth=2).start()
    try:
        sidecar = start_sidecar(model.url)
        session = requests.Session()
        for i in range(6):
            resp = session.get(f"{sidecar.url}/g{i}", timeout=5)
            assert resp.status_code == 200, (i, resp.text)
        assert [r.target for r in model.received] == [f"/g{i}" for i in range(6)]
        assert model.dropped >= 2  # the retries really happened
        # The pooled connection has served one request: the model drops the next one.
        first = session.post(f"{sidecar.url}/p1", data=b"{}", timeout=5)
        assert first.status_code == 502 and "broken off" in first.text
        second = session.post(f"{sidecar.url}/p2", data=b"{}", timeout=5)
        assert second.status_code == 200
        assert [r.target for r in model.received[-1:]] == ["/p2"]
        assert sidecar.metric("mlwarden_sidecar_upstream_errors_total", reason="protocol") == 1
    finally:
        model.stop()
