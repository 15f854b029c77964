"""Model latency through the sidecar while its collector misbehaves, against a healthy one.

    python benchmarks/faults_latency.py [--duration 10] [--repeats 3] [--rate 500]

One fixed-response nginx upstream (`upstream_nginx.py`); one `mlwarden sidecar
--protocol v2` per collector condition, all running at once:

- `healthy`  ships to a collector that answers 200;
- `down`     ships to a port nobody listens on;
- `hang`     the collector accepts and reads, never answers;
- `500`      the collector answers 500;
- `429`      the collector answers 429 with Retry-After: 1;
- `reset`    the collector resets the connection mid-batch.

The faulty collectors are `tests/integration/fault_collector.py` (raw sockets,
own process). `hey` sends 1-row v2 requests at `--rate` req/s to each sidecar in
turn, interleaved over `--repeats` rounds after a warm-up; p50/p99 come from hey's
per-request CSV (0.1 ms resolution). The target (issue 9): every request succeeds
and each fault's p99 is within 1 ms of the healthy p99 of the same round; the
median over rounds is reported. It also reports each sidecar's RSS and fds after
the run and its drop counters. Not part of `make bench` (`benchmarks/run.py`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from procs import (
    HOST,
    Proc,
    free_port,
    open_fds,
    rss_kib,
    scrape,
    sigterm_raises,
    start_sidecar,
)
from sidecar_latency import Scenario, run_hey, v2_request
from upstream_nginx import MODEL_1_ROW, fixed_upstream_conf, infer_path, start_nginx

HERE = Path(__file__).resolve().parent
FAULT_COLLECTOR = HERE.parent / "tests" / "integration" / "fault_collector.py"
CONDITIONS = ("healthy", "down", "hang", "500", "429", "reset")


def proc_figures(pid: int) -> dict[str, int]:
    return {"rss_kib": rss_kib(pid), "fds": open_fds(pid)}


def run(duration: float, repeats: int, rate: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="mlwarden-faults-") as tmp_name, \
            contextlib.ExitStack() as stop:  # fmt: skip
        tmp = Path(tmp_name)
        up_port = free_port()
        stop.callback(
            start_nginx(
                "upstream", fixed_upstream_conf(tmp / "up", up_port), tmp / "up", up_port
            ).stop
        )
        sidecars: dict[str, tuple[str, str, Proc]] = {}
        for cond in CONDITIONS:
            cport = free_port()
            if cond != "down":
                mode = "ok" if cond == "healthy" else cond
                collector = subprocess.Popen(
                    [sys.executable, str(FAULT_COLLECTOR), "--port", str(cport), "--mode", mode],
                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True,
                )  # fmt: skip
                stop.callback(collector.terminate)
                assert collector.stdout is not None
                assert collector.stdout.readline().strip() == b"ready"
            sc = start_sidecar(
                f"sidecar-{cond}", tmp / f"sidecar-{cond}.log",
                upstream=f"http://{HOST}:{up_port}", stop=stop,
                collector=f"http://{HOST}:{cport}",
                extra=("--log-level", "error", "--drain-seconds", "0"),
            )  # fmt: skip
            sidecars[cond] = (f"{sc.url}{infer_path(MODEL_1_ROW)}", sc.admin, sc.proc)

        body = tmp / "body.json"
        body.write_text(json.dumps(v2_request(1)))
        sc = Scenario("faults", f"{rate} req/s, 1 row", rows=1, rate=rate, workers=10, spread=True)
        for url, _, _ in sidecars.values():  # warm-up
            run_hey(url, sc, body, 2.0)
        rounds: list[dict[str, dict[str, Any]]] = []
        for r in range(repeats):
            this: dict[str, dict[str, Any]] = {}
            for cond, (url, _, _) in sidecars.items():
                this[cond] = run_hey(url, sc, body, duration)
                print(
                    f"round {r + 1} {cond:>7}: p50 {this[cond]['p50_ms']:.1f} ms "
                    f"p99 {this[cond]['p99_ms']:.1f} ms, {this[cond]['ok']}/"
                    f"{this[cond]['requests']} ok",
                    file=sys.stderr,
                )
            rounds.append(this)
        time.sleep(2)
        state = {}
        for cond, (_, admin_url, proc) in sidecars.items():
            m = scrape(admin_url)
            state[cond] = {
                **proc_figures(proc.popen.pid),
                "captured": m.get("mlwarden_sidecar_records_captured_total", 0.0),
                "shipped": m.get("mlwarden_sidecar_records_shipped_total", 0.0),
                "dropped": {
                    k.split('reason="')[1].split('"')[0]: v
                    for k, v in m.items()
                    if k.startswith("mlwarden_sidecar_records_dropped_total") and v
                },
                "buffered": m.get("mlwarden_sidecar_buffer_records", 0.0),
            }

    out: dict[str, Any] = {"rate": rate, "duration_s": duration, "repeats": repeats}
    for cond in CONDITIONS:
        p99_delta = [rd[cond]["p99_ms"] - rd["healthy"]["p99_ms"] for rd in rounds]
        out[cond] = {
            "requests": sum(rd[cond]["requests"] for rd in rounds),
            "failed": sum(rd[cond]["failed"] for rd in rounds),
            "p50_ms": statistics.median(rd[cond]["p50_ms"] for rd in rounds),
            "p99_ms": statistics.median(rd[cond]["p99_ms"] for rd in rounds),
            "p99_minus_healthy_ms": statistics.median(p99_delta),
            **state[cond],
        }
    return out


def render(res: dict[str, Any]) -> str:
    lines = [
        f"sidecar latency under collector faults: {res['rate']} req/s, {res['duration_s']:g} s "
        f"x {res['repeats']} interleaved rounds (medians)",
        f"{'collector':>9} {'requests':>9} {'failed':>6} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'p99-healthy':>11} {'RSS MiB':>8} {'fds':>4} {'shipped':>8}  dropped",
    ]
    for cond in CONDITIONS:
        r = res[cond]
        lines.append(
            f"{cond:>9} {r['requests']:>9} {r['failed']:>6} {r['p50_ms']:>7.1f} "
            f"{r['p99_ms']:>7.1f} {r['p99_minus_healthy_ms']:>+11.1f} "
            f"{r['rss_kib'] / 1024:>8.1f} {r['fds']:>4} {r['shipped']:>8.0f}  {r['dropped']}"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rate", type=int, default=500, help="requests per second")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    sigterm_raises()
    res = run(args.duration, args.repeats, args.rate)
    print(render(res))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    failed = sum(res[c]["failed"] for c in CONDITIONS)
    within = all(res[c]["p99_minus_healthy_ms"] <= 1.0 for c in CONDITIONS)
    print(f"{'PASS' if failed == 0 else 'FAIL'}  every request succeeded ({failed} failed)")
    print(f"{'PASS' if within else 'FAIL'}  every fault's p99 within 1 ms of healthy")
    return 0 if failed == 0 and within else 1


if __name__ == "__main__":
    sys.exit(main())
