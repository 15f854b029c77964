"""The forwarding path's header filter on raw bytes gives the same answers as the plain rule."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

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
