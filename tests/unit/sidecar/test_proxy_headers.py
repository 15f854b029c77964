"""RFC 9110 §7.6.1: which headers a proxy forwards."""

from __future__ import annotations

from multidict import CIMultiDict

from mlwarden.sidecar.proxy import end_to_end_headers


def test_hop_by_hop_and_connection_named_headers_are_dropped_in_any_case() -> None:
    headers = CIMultiDict(
        [
            ("Connection", "Keep-Alive, X-Hop"),
            ("KEEP-ALIVE", "timeout=5"),
            ("x-hop", "1"),
            ("Transfer-Encoding", "chunked"),
            ("Upgrade", "h2c"),
            ("TE", "trailers"),
            ("Proxy-Connection", "keep-alive"),
            ("Content-Length", "12"),
            ("Set-Cookie", "a=1"),
            ("Set-Cookie", "b=2"),
            ("X-Model", "iris"),
        ]
    )
    kept = end_to_end_headers(headers, keep_length=False)
    assert list(kept.items()) == [("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"), ("X-Model", "iris")]
    assert end_to_end_headers(headers, keep_length=True)["Content-Length"] == "12"
