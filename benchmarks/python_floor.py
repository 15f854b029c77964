"""The floor of a Python forwarder, beside nginx and the sidecar: where the sidecar's added
latency at 1,000 req/s in bursts of ten comes from (issue 18's p99 target).

Five paths to one fixed-response upstream (nginx `return 200`, as in sidecar_latency.py),
measured in one run, interleaved, medians over the repeats:

- `direct`   hey straight to the upstream (the baseline);
- `nginx`    nginx as a reverse proxy with a keepalive pool (`upstream_nginx.py`);
- `relay`    a uvloop relay: one upstream connection per client connection, the bytes of
             each read written on as they are, no HTTP logic (what Python and uvloop cost);
- `relay-h`  the same, both directions also fed through httptools with a Python callback per
             header field (what parsing HTTP/1.1 framing adds; the bytes still go on as read);
- `sidecar-off` `mlwarden sidecar` with capture off (everything the sidecar does per request:
             heads rebuilt without hop-by-hop fields, the pool, timeouts, request metrics).

The relays are measuring instruments, not forwarders: they do none of what a proxy must
(hop-by-hop fields, errors, timeouts, limits). For each path: added p50 / p90 / p99 (hey's
latencies, 0.1 ms steps, nearest-rank, minus `direct`'s in the same repeat), the server's
CPU per request and its non-voluntary context switches per request (from /proc: how often
it was preempted in the middle of its work).

    .venv/bin/python benchmarks/python_floor.py [--repeats 5] [--duration 4]

Needs nginx and hey. Not part of `make bench`: run by hand on an idle machine; the figures
are quoted in benchmarks/RESULTS.md (by hand) and the note of issue 18.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from procs import (
    HOST,
    Proc,
    free_port,
    group_status_total,
    group_usage,
    loadavg,
    start_sidecar,
)
from sidecar_latency import SCENARIOS, _model, run_hey, v2_request
from upstream_nginx import fixed_upstream_conf, infer_path, reverse_proxy_conf, start_nginx

PATHS = ("direct", "nginx", "relay", "relay-h", "sidecar-off")
# 1,000 req/s, 1 row, `hey -c 10 -q 100`: bursts of ten (issue 18's method).
BURSTS = next(sc for sc in SCENARIOS if sc.key == "1k-1row")


# --------------------------------------------------------------------------- the relays


def serve(kind: str, port: int, upstream_port: int) -> None:
    """Run a relay (`relay` or `relay-h`) on `port` in front of `upstream_port`, forever."""
    import asyncio

    import httptools
    import uvloop

    parse = kind == "relay-h"

    class Fields:
        """httptools' callbacks: each header field kept, as a forwarder would look at it."""

        def __init__(self) -> None:
            self.fields: list[tuple[bytes, bytes]] = []

        def on_header(self, name: bytes, value: bytes) -> None:
            self.fields.append((name, value))

        def on_message_complete(self) -> None:
            self.fields = []

    class Up(asyncio.Protocol):
        def __init__(self, client: Client) -> None:
            self.client = client
            self.parser = httptools.HttpResponseParser(Fields()) if parse else None

        def connection_made(self, transport: Any) -> None:
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            if self.parser is not None:
                self.parser.feed_data(data)
            self.client.transport.write(data)

        def connection_lost(self, exc: Exception | None) -> None:
            self.client.transport.close()

    class Client(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            self.transport = transport
            self.early: list[bytes] = []
            self.up: Up | None = None
            self.parser = httptools.HttpRequestParser(Fields()) if parse else None
            asyncio.get_running_loop().create_task(self.connect())

        async def connect(self) -> None:
            loop = asyncio.get_running_loop()
            _, up = await loop.create_connection(lambda: Up(self), HOST, upstream_port)
            self.up = up
            for data in self.early:
                up.transport.write(data)

        def data_received(self, data: bytes) -> None:
            if self.parser is not None:
                self.parser.feed_data(data)
            if self.up is None:
                self.early.append(data)
            else:
                self.up.transport.write(data)

        def connection_lost(self, exc: Exception | None) -> None:
            if self.up is not None:
                self.up.transport.close()

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(Client, HOST, port)
        await server.serve_forever()

    uvloop.run(main())


# --------------------------------------------------------------------------- measuring


def preemptions(pgid: int) -> int:
    """Non-voluntary context switches so far of every thread of a server's process group."""
    return group_status_total(pgid, "nonvoluntary_ctxt_switches:", threads=True)


def measure(url: str, pid: int, body: Path, duration: float) -> dict[str, Any]:
    cpu0, n0 = group_usage(pid)[0], preemptions(pid)
    res = run_hey(url, BURSTS, body, duration)
    cpu1, n1 = group_usage(pid)[0], preemptions(pid)
    done = max(1, res["requests"])
    res["cpu_us"] = 1e6 * (cpu1 - cpu0) / done
    res["preempted"] = (n1 - n0) / done
    return res


def run(repeats: int, duration: float) -> dict[str, Any]:
    sc = BURSTS
    load_start = loadavg()
    with contextlib.ExitStack() as stop:
        tmp = Path(stop.enter_context(tempfile.TemporaryDirectory(prefix="mlwarden-floor-")))
        urls: dict[str, str] = {}
        pids: dict[str, int] = {}
        up = free_port()
        proc = start_nginx("upstream", fixed_upstream_conf(tmp / "up", up), tmp / "up", up)
        stop.callback(proc.stop)
        urls["direct"], pids["direct"] = f"http://{HOST}:{up}", proc.popen.pid
        port = free_port()
        proc = start_nginx("nginx", reverse_proxy_conf(tmp / "px", port, up), tmp / "px", port)
        stop.callback(proc.stop)
        urls["nginx"], pids["nginx"] = f"http://{HOST}:{port}", proc.popen.pid
        for kind in ("relay", "relay-h"):
            port = free_port()
            argv = [sys.executable, __file__, "--serve", kind, str(port), str(up)]
            proc = Proc(kind, argv, tmp / f"{kind}.log")
            stop.callback(proc.stop)
            proc.wait_port(port)
            urls[kind], pids[kind] = f"http://{HOST}:{port}", proc.popen.pid
        side = start_sidecar("sidecar-off", tmp / "sidecar.log", upstream=urls["direct"], stop=stop)
        urls["sidecar-off"], pids["sidecar-off"] = side.url, side.proc.popen.pid

        body = tmp / "v2-1row.json"
        body.write_text(json.dumps(v2_request(1)))
        target = infer_path(_model(1))
        for path in PATHS:  # warm-up
            run_hey(urls[path] + target, sc, body, 2.0)
        raw: dict[str, list[dict[str, Any]]] = {p: [] for p in PATHS}
        for r in range(repeats):
            for path in PATHS:
                time.sleep(0.2)
                raw[path].append(measure(urls[path] + target, pids[path], body, duration))
            direct = raw["direct"][-1]
            shown = "  ".join(
                f"{p} +{raw[p][-1]['p50_ms'] - direct['p50_ms']:.2f}"
                f"/+{raw[p][-1]['p99_ms'] - direct['p99_ms']:.2f}"
                for p in PATHS[1:]
            )
            print(f"[{r + 1}/{repeats}] added p50/p99 ms: {shown}", file=sys.stderr, flush=True)
    rows = {}
    for path in PATHS:
        added = {
            q: statistics.median(x[q] - d[q] for x, d in zip(raw[path], raw["direct"], strict=True))
            for q in ("p50_ms", "p90_ms", "p99_ms")
        }
        rows[path] = {
            **added,
            "cpu_us": statistics.median(x["cpu_us"] for x in raw[path]),
            "preempted": statistics.median(x["preempted"] for x in raw[path]),
            "failed": sum(x["failed"] for x in raw[path]),
        }
    return {"rows": rows, "loadavg": {"start": load_start, "end": loadavg()}}


def render(res: dict[str, Any], repeats: int, duration: float) -> str:
    out = [
        f"1,000 req/s, 1 row (hey -c 10 -q 100), {duration:g} s x {repeats}, medians; "
        f"load average {res['loadavg']['start']} -> {res['loadavg']['end']}",
        "",
        "| path | added p50 ms | added p90 ms | added p99 ms | CPU us/request "
        "| preempted/request | failed |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for path, row in res["rows"].items():
        if path == "direct":
            continue
        out.append(
            f"| {path} | {row['p50_ms']:.2f} | {row['p90_ms']:.2f} | {row['p99_ms']:.2f} "
            f"| {row['cpu_us']:.0f} | {row['preempted']:.2f} | {row['failed']} |"
        )
    direct = res["rows"]["direct"]
    out.append(
        f"| direct (the upstream's own) | - | - | - | {direct['cpu_us']:.0f} "
        f"| {direct['preempted']:.2f} | {direct['failed']} |"
    )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repeats (5)")
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per run (4)")
    parser.add_argument("--serve", nargs=3, metavar=("KIND", "PORT", "UPSTREAM_PORT"),
                        help=argparse.SUPPRESS)  # fmt: skip
    args = parser.parse_args(argv)
    if args.serve:
        kind, port, upstream_port = args.serve
        serve(kind, int(port), int(upstream_port))
        return 0
    if args.repeats < 1 or args.duration <= 0:
        parser.error("--repeats must be 1 or more and --duration positive")
    print(render(run(args.repeats, args.duration), args.repeats, args.duration))
    return 0


if __name__ == "__main__":
    sys.exit(main())
