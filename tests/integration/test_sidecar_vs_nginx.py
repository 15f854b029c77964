"""The sidecar and nginx, fed the same random HTTP/1.1 streams, must agree.

Hypothesis builds streams of one to three requests (methods, targets, end-to-end and
hop-by-hop header fields, no body / sized / chunked with trailers, `Connection: close`)
and sometimes replaces one with a malformed request; each stream is cut at random byte
boundaries and sent piece by piece, once to Debian's nginx (a reverse proxy with a
keep-alive upstream pool, generated config, loopback) and once to the real sidecar, both
in front of the same recording model (`rawhttp.RecordingUpstream`). What the model
received and what the client got back must be the same, after these normalisations,
each for something that legitimately differs:

- `Host`: nginx is told to pass the client's (`proxy_set_header Host $http_host`); when
  the client sent none (HTTP/1.0) nginx sends none and the sidecar sends the upstream's
  (an HTTP/1.1 request must carry one): not compared then.
- framing of the request upstream (`Content-Length`, `Transfer-Encoding`) is not
  compared, the body bytes are; trailer fields are not compared (nginx drops them in
  both directions, the sidecar passes them on; RFC 9110 §6.5.1 allows either).
- fields the client's `Connection` header names: nginx forwards them (it does not
  implement that part of RFC 9110 §7.6.1), the sidecar drops them: they are removed
  from what nginx forwarded before comparing. The other hop-by-hop fields must be absent
  from both.
- on the answers: `Server`, `Date`, `Connection`, `Keep-Alive` and the framing
  (`Content-Length`, `Transfer-Encoding`, `Trailer`) are not compared, the body and
  every other field are, in order; an answer the proxy made itself (the model received
  nothing for it) is compared by status only (the bodies are each proxy's own text).
- malformed requests: both must refuse them with a 4xx before anything reaches the model,
  and close the connection; the codes agree except where the table `STATUS_ALIASES`
  says why they differ.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import SidecarProcess, free_port, wait_until
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rawhttp import Answer, Received, RecordingUpstream, exchange

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
pytestmark = pytest.mark.skipif(
    not os.path.exists(NGINX), reason="nginx is not installed (apt-get install nginx-light)"
)

HOP_BY_HOP = {"connection", "proxy-connection", "keep-alive", "te", "transfer-encoding", "upgrade"}
FRAMING = {"content-length", "transfer-encoding"}
ANSWER_IGNORED = {"server", "date", "connection", "keep-alive", "trailer"} | FRAMING
# Malformed requests both refuse, with a different code: (nginx, sidecar) -> why.
STATUS_ALIASES = {
    (505, 400): "an unknown HTTP version: nginx says 505, llhttp refuses the request line",
    (501, 400): "an unknown transfer coding: nginx says 501, llhttp refuses the framing",
    (414, 400): "nginx says 414 for some malformed targets",
}

MALFORMED = [
    b"GET / HTTP/1.1\r\nHost: m\r\nContent-Length: abc\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: m\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: m\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    b"GET / HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    b"GET / HTTP/9.9\r\nHost: m\r\n\r\n",
    b"GET /a b HTTP/1.1\r\nHost: m\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: m\r\nX-Fold: a\r\n folded\r\n\r\n",
    b"G(T / HTTP/1.1\r\nHost: m\r\n\r\n",
]


def nginx_conf(prefix: Path, port: int, upstream_port: int) -> str:
    return f"""worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    upstream model {{
        server 127.0.0.1:{upstream_port};
        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://model;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_request_buffering off;
            proxy_buffering off;
        }}
    }}
}}
"""


@pytest.fixture(scope="module")
def model() -> Iterator[RecordingUpstream]:
    up = RecordingUpstream().start()
    yield up
    up.stop()


@pytest.fixture(scope="module")
def nginx(model: RecordingUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    prefix = tmp_path_factory.mktemp("nginx")
    port = free_port()
    conf = nginx_conf(prefix, port, model.port)
    if os.geteuid() == 0:  # as root nginx would switch its worker to nobody
        conf = f"user {pwd.getpwuid(0).pw_name};\n" + conf
    (prefix / "nginx.conf").write_text(conf)
    argv = [NGINX, "-c", str(prefix / "nginx.conf"), "-p", f"{prefix}/", "-e",
            str(prefix / "error.log"), "-g", "daemon off;"]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: _answers(port), timeout=10, what="nginx to listen")
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def _answers(port: int) -> bool:
    try:
        return bool(exchange(port, [b"GET /up HTTP/1.1\r\nHost: m\r\n\r\n"], expect=1).answers)
    except OSError:
        return False


# --------------------------------------------------------------------------- the streams

TOKEN = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=8)
VALUE = st.text(alphabet="abcdefghijklmnopqrstuvwxyz ABCDEFXYZ0123456789=;,./:", max_size=20).map(
    str.strip
)
TARGET = st.builds(
    lambda segs, q: "/" + "/".join(segs) + (f"?{q}" if q else ""),
    st.lists(TOKEN, max_size=3),
    st.one_of(st.none(), st.text(alphabet="abc=&%20xyz", max_size=10)),
)


@st.composite
def header_fields(draw: st.DrawFn) -> list[tuple[str, str]]:
    fields: list[tuple[str, str]] = []
    for _ in range(draw(st.integers(0, 4))):
        fields.append(("X-" + draw(TOKEN).capitalize(), draw(VALUE)))
    if draw(st.booleans()):
        fields += [("X-Dup", "1"), ("X-Dup", "2")]
    if draw(st.booleans()):
        fields.append(("Keep-Alive", "timeout=5"))
    if draw(st.booleans()):
        fields.append(("TE", "trailers"))
    if draw(st.booleans()):
        hop = "X-Hop-" + draw(TOKEN)
        fields += [("Connection", f"keep-alive, {hop}"), (hop, "must not pass")]
    if draw(st.booleans()):
        fields.append(("Content-Type", "application/json"))
    return draw(st.permutations(fields))


@st.composite
def request(draw: st.DrawFn, *, last: bool) -> tuple[bytes, bool]:
    """One well-formed request and whether it is a HEAD."""
    method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS"]))
    target = draw(st.one_of(TARGET, st.just("/chunked")))
    fields = [("Host", "model.example"), *draw(header_fields())]
    body = b""
    framing = draw(st.sampled_from(["none", "sized", "chunked"]))
    if method in ("GET", "HEAD", "OPTIONS", "DELETE") and draw(st.booleans()):
        framing = "none"
    payload = draw(st.binary(max_size=300))
    if framing == "sized":
        fields.append(("Content-Length", str(len(payload))))
        body = payload
    elif framing == "chunked":
        fields.append(("Transfer-Encoding", "chunked"))
        cuts = sorted(draw(st.lists(st.integers(0, len(payload)), max_size=3)))
        pieces = [payload[a:b] for a, b in zip([0, *cuts], [*cuts, len(payload)], strict=True)]
        body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces if p)
        trailer = b"X-Sum: 1\r\n" if draw(st.booleans()) else b""
        body += b"0\r\n" + trailer + b"\r\n"
    if last and draw(st.booleans()):
        fields.append(("Connection", "close"))
    head = f"{method} {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields)
    return head.encode("latin-1") + b"\r\n" + body, method == "HEAD"


@st.composite
def streams(draw: st.DrawFn) -> tuple[list[bytes], list[bool], list[int]]:
    n = draw(st.integers(1, 3))
    reqs = [draw(request(last=i == n - 1)) for i in range(n)]
    raw = [r for r, _ in reqs]
    heads = [h for _, h in reqs]
    if draw(st.integers(0, 3)) == 0:  # a malformed one, somewhere
        i = draw(st.integers(0, n - 1))
        raw[i] = draw(st.sampled_from(MALFORMED))
        heads[i] = False
        raw, heads = raw[: i + 1], heads[: i + 1]
    data = b"".join(raw)
    cuts = sorted(set(draw(st.lists(st.integers(1, max(1, len(data) - 1)), max_size=4))))
    return (
        [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)],
        heads,
        [len(r) for r in raw],
    )


# --------------------------------------------------------------------------- normalising


def upstream_view(got: list[Received], client_named: list[set[str]]) -> list[Any]:
    out = []
    for r, named in zip(got, client_named, strict=False):
        fields = [
            (k.lower(), v)
            for k, v in r.headers
            if k.lower() not in FRAMING and k.lower() != "host" and k.lower() not in named
        ]
        out.append((r.method, r.target, r.header("Host"), fields, r.body))
    return out


def answer_view(a: Answer, *, proxy_made: bool) -> Any:
    if proxy_made:
        return (a.status,)
    fields = [(k.lower(), v) for k, v in a.headers if k.lower() not in ANSWER_IGNORED]
    return (a.status, a.reason, fields, a.body)


def connection_named(raw: bytes) -> set[str]:
    named: set[str] = set()
    for line in raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"connection":
            named |= {t.strip().lower().decode() for t in value.split(b",") if t.strip()}
    return named - {"close", "keep-alive"}


def run(port: int, model: RecordingUpstream, pieces: list[bytes], heads: list[bool]) -> Any:
    before = len(model.received)
    conv = exchange(port, pieces, expect=len(heads), heads=heads, pause=0.002, timeout=3)
    time.sleep(0.01)  # the model records after it answers
    return conv, model.received[before:]


@settings(
    max_examples=int(os.environ.get("MLWARDEN_HTTP_EXAMPLES", "40")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=streams())
def test_the_sidecar_answers_as_nginx_does(
    case: tuple[list[bytes], list[bool], list[int]],
    model: RecordingUpstream,
    nginx: int,
    sidecar_port: int,
) -> None:
    pieces, heads, sizes = case
    data = b"".join(pieces)
    raws, at = [], 0
    for size in sizes:
        raws.append(data[at : at + size])
        at += size
    named = [connection_named(r) for r in raws]
    by_nginx, to_model_nginx = run(nginx, model, pieces, heads)
    by_sidecar, to_model_sidecar = run(sidecar_port, model, pieces, heads)

    # What the model received: the same requests, the same fields in the same order.
    want = upstream_view(to_model_nginx, named)
    got = upstream_view(to_model_sidecar, named)
    for w, g, raw in zip(want, got, raws, strict=False):
        if b"\r\nHost:" not in raw.split(b"\r\n\r\n")[0]:
            w, g = w[:2] + w[3:], g[:2] + g[3:]
        assert g == w, raw
    assert len(got) == len(want), (raws, want, got)
    for r in to_model_sidecar:
        assert not {k.lower() for k, _ in r.headers} & (HOP_BY_HOP - {"transfer-encoding"})

    # What the client got back.
    n_forwarded = len(to_model_sidecar)
    assert len(by_sidecar.answers) == len(by_nginx.answers), (raws, by_nginx, by_sidecar)
    for i, (a, b) in enumerate(zip(by_nginx.answers, by_sidecar.answers, strict=True)):
        proxy_made = i >= n_forwarded
        va, vb = answer_view(a, proxy_made=proxy_made), answer_view(b, proxy_made=proxy_made)
        if proxy_made and va != vb:
            assert (a.status, b.status) in STATUS_ALIASES, (raws[i], a.status, b.status)
        else:
            assert vb == va, raws[i]
    assert by_sidecar.closed == by_nginx.closed, raws


@pytest.fixture(params=["native", "python"])
def sidecar_port(
    request: pytest.FixtureRequest,
    model: RecordingUpstream,
    start_sidecar: Callable[..., SidecarProcess],
) -> int:
    """The sidecar with its forwarding path compiled (`make native`), and interpreted: the
    same source, each compared with nginx."""
    kind = request.param
    if kind == "native" and not native_built():
        pytest.skip("no compiled forwarder in this tree: `make native` builds it (needs gcc)")
    env = {"MLWARDEN_SIDECAR_NATIVE": "1" if kind == "native" else "0"}
    sidecar = start_sidecar(model.url, env=env)
    info = [k for k in sidecar.metrics() if k.startswith("mlwarden_sidecar_info{")]
    assert len(info) == 1 and f'forwarder="{kind}"' in info[0], info
    return int(sidecar.url.rsplit(":", 1)[1])


def native_built() -> bool:
    from mlwarden.sidecar.native import NATIVE_MODULE

    return importlib.util.find_spec(NATIVE_MODULE) is not None
