"""Capture's CPU per request, the sidecar's RSS, and what a 1 MiB body costs the others.

    python benchmarks/capture_cpu.py [--rate 1000] [--seconds 10] [--repeats 3]

Also part of `make bench` (`benchmarks/run.py`, NAME `capture_cpu`, 10 s runs at 1,000
req/s; its section of RESULTS.md).

A fixed-response nginx upstream (`upstream_nginx.py`), the real `mlwarden detector`, and
two `mlwarden sidecar --protocol v2` in front of the upstream: capture on (shipping to the
detector) and capture off (no collector). For each, `hey` sends 1-row Open Inference
Protocol v2 requests at `--rate` req/s for `--seconds`, and the CPU time (utime + stime,
from /proc) of the sidecar's processes over the run is divided by the requests served:
the main process (forwarding, and whatever capture work runs there) and its children (the
capture worker process, where there is one) apart. Capture's cost per request is the
capture-on sidecar's total less the capture-off one's. RSS is each process's VmRSS at the
end of a run; PSS (smaps_rollup) sums the processes with the pages they share (the
interpreter, uvloop's library) split between them, which RSS would count twice.

Then the stall test: while one client posts 1 MiB JSON bodies (a v2 request with 1 MiB
of data, captured: under `--max-body-bytes` 2 MiB) back to back, 1-row requests at
`--rate` / 10 measure the added latency of everyone else (p50 / p99 / max over the run).

Run it against another source tree (the code before a change) with
`PYTHONPATH=/path/to/src python benchmarks/capture_cpu.py`: the sidecars are started
with this interpreter and inherit PYTHONPATH. Not part of `make bench`; run by hand.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from procs import (
    CLK_TCK,
    HOST,
    detector_manifest,
    free_port,
    loadavg,
    run_tool,
    scrape,
    start_detector,
    start_sidecar,
)
from upstream_nginx import MODEL_1_ROW, fixed_upstream_conf, infer_path, start_nginx

BODY = {
    "inputs": [
        {"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": [[5.1, 3.5, 1.4, 0.2]]}
    ]
}


def _cpu_and_rss(pid: int) -> tuple[float, float]:
    """(CPU seconds, RSS MiB) of one process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
    return cpu, int(fields[21]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _pss_mib(pid: int) -> float:
    """Proportional set size: shared pages (the interpreter, uvloop's library) split
    between the processes that map them, so a pair of processes is not counted twice."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    out.append(int(entry.name))
    return out


def _usage(pid: int) -> dict[str, float]:
    main_cpu, main_rss = _cpu_and_rss(pid)
    kids = _children(pid)
    usage = [_cpu_and_rss(c) for c in kids]
    return {
        "main_cpu": main_cpu,
        "main_rss": main_rss,
        "worker_cpu": sum(c for c, _ in usage),
        "worker_rss": sum(r for _, r in usage),
        "pss": _pss_mib(pid) + sum(_pss_mib(c) for c in kids),
    }


def _hey(url: str, body: Path, rate: int, seconds: float, workers: int = 10) -> list[float]:
    """Latencies (s) of the 2xx answers; raises when any request failed."""
    argv = ["hey", "-z", f"{seconds:g}s", "-c", str(workers), "-q", str(max(1, rate // workers)),
            "-m", "POST", "-T", "application/json", "-D", str(body), "-o", "csv", url]  # fmt: skip
    done = run_tool(argv, timeout=seconds + 60)
    lines = done.stdout.splitlines()[1:]
    latencies, failed = [], 0
    for line in lines:
        parts = line.split(",")
        if len(parts) > 6 and parts[6] == "200":
            latencies.append(float(parts[0]))
        else:
            failed += 1
    if failed:
        raise RuntimeError(f"{failed} of {len(lines)} requests failed")
    return latencies


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


NAME = "capture_cpu"
RATE = 1000
SECONDS = 10.0

# The same benchmark on the code before capture moved to its own process (in-process capture
# on the forwarding loop, commit 77ac850), run on this machine on 2026-12-01 with
# `PYTHONPATH=<that tree>/src python benchmarks/capture_cpu.py --seconds 10 --repeats 2`
# (load average about 10 from other work): the figures the section compares against.
BEFORE = {
    "on": {"main_us": 212, "worker_us": 0, "main_rss": 43.6, "pss": 29.0},
    "off": {"main_us": 153, "worker_us": 0, "main_rss": 43.1, "pss": 28.5},
    "stall_on": {"p50_ms": 919.3, "p99_ms": 3005.2, "max_ms": 3005.3},
    "stall_off": {"p50_ms": 9.1, "p99_ms": 72.0, "max_ms": 300.3},
}


def run(*, duration: float = 4.0, repeats: int = 3, warmup: float = 2.0) -> dict[str, Any]:
    """For `benchmarks/run.py`: 10 s runs whatever `duration` says (CPU per request needs
    thousands of requests to rise above /proc's 10 ms ticks)."""
    del duration, warmup
    res = measure(RATE, SECONDS, repeats)
    res["text"] = report(res, RATE, SECONDS)
    res["rate"], res["seconds"], res["repeats"] = RATE, SECONDS, repeats
    return res


def render_markdown(res: dict[str, Any]) -> str:
    lines = [
        "## Capture off the forwarding loop (`benchmarks/capture_cpu.py`)",
        "",
        f"`python benchmarks/capture_cpu.py --rate {res['rate']} --seconds {res['seconds']:g} "
        f"--repeats {res['repeats']}`. A fixed-response nginx upstream, a real `mlwarden "
        "detector`, and two `mlwarden sidecar --protocol v2`: capture on (shipping to the "
        "detector) and off (no collector). `hey` sends 1-row v2 requests at the rate for each "
        "run; CPU is utime + stime from /proc over the run divided by the requests served, for "
        "the sidecar's main process (forwarding) and its children (the capture worker) apart; "
        "RSS is VmRSS at the end, PSS (smaps_rollup) the pair's memory with shared pages "
        "counted once. The main process's column is what forwarding pays for capture; the "
        "worker's runs on the other core (at nice +10). The stall test posts ~0.8 MiB v2 "
        "bodies (52,000 rows, captured: `--max-body-bytes` 2 MiB) back to back from one "
        "client beside 1-row requests at a tenth of the rate, whose latency it reports.",
        "",
        res["text"],
        "",
        "Before capture moved to its own process (in-process capture on the forwarding loop, "
        "commit 77ac850; same command, 2 runs of 10 s, load average about 10):",
        "",
        "| sidecar | main CPU µs/req | worker CPU µs/req | main RSS MiB | PSS MiB | "
        "stall p50 ms | stall p99 ms | stall max ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in ("on", "off"):
        b, st = BEFORE[name], BEFORE[f"stall_{name}"]
        lines.append(
            f"| capture {name} | {b['main_us']} | {b['worker_us']} | {b['main_rss']} | "
            f"{b['pss']} | {st['p50_ms']} | {st['p99_ms']} | {st['max_ms']} |"
        )
    return "\n".join(lines) + "\n"


def measure(rate: int, seconds: float, repeats: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="mlwarden-capcpu-") as tmp_name, \
            contextlib.ExitStack() as stop:  # fmt: skip
        tmp = Path(tmp_name)
        up_port = free_port()
        upstream = start_nginx(
            "upstream", fixed_upstream_conf(tmp / "up", up_port), tmp / "up", up_port
        )
        stop.callback(upstream.stop)
        manifest = tmp / "capcpu.yaml"
        manifest.write_text(detector_manifest("capcpu"))
        det_port = free_port()
        start_detector(manifest, det_port, tmp / "detector.log", stop=stop)
        extra = ("--log-level", "warning", "--drain-seconds", "0", "--max-body-bytes", "2097152")
        up = f"http://{HOST}:{up_port}"
        on = start_sidecar("sidecar-on", tmp / "on.log", upstream=up, stop=stop,
                           collector=f"http://{HOST}:{det_port}", extra=extra)  # fmt: skip
        off = start_sidecar("sidecar-off", tmp / "off.log", upstream=up, stop=stop, extra=extra)
        body = tmp / "body.json"
        body.write_text(json.dumps(BODY))
        path = infer_path(MODEL_1_ROW)
        # Warm both up (imports, connection pools, the worker's first batch).
        for sc in (on, off):
            _hey(sc.url + path, body, 200, 2)
        time.sleep(1.5)

        rows: dict[str, list[dict[str, float]]] = {"on": [], "off": []}
        for _ in range(repeats):
            for name, sc in (("on", on), ("off", off)):
                pid = sc.proc.popen.pid
                before = _usage(pid)
                served = len(_hey(sc.url + path, body, rate, seconds))
                time.sleep(1.5)  # the last batch: shipped within the batch interval
                after = _usage(pid)
                rows[name].append({
                    "requests": served,
                    "main_us": (after["main_cpu"] - before["main_cpu"]) / served * 1e6,
                    "worker_us": (after["worker_cpu"] - before["worker_cpu"]) / served * 1e6,
                    "main_rss": after["main_rss"],
                    "worker_rss": after["worker_rss"],
                    "pss": after["pss"],
                })  # fmt: skip
        metrics = scrape(on.admin)

        # The stall test: 1 MiB bodies posted back to back beside the small requests.
        big = tmp / "big.json"
        n = (1 << 20) // 20
        big.write_text(json.dumps({"inputs": [
            {"name": "input-0", "shape": [n, 1], "datatype": "FP64",
             "data": [1234.567891234 + i for i in range(n)]}]}))  # fmt: skip
        big_bytes = big.stat().st_size
        stall: dict[str, dict[str, float]] = {}
        for name, sc in (("on", on), ("off", off)):
            argv = ["hey", "-z", f"{seconds:g}s", "-c", "1", "-m", "POST", "-T",
                    "application/json", "-D", str(big), sc.url + path]  # fmt: skip
            with subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL):
                small = _hey(sc.url + path, body, max(10, rate // 10), seconds)
            stall[name] = {
                "p50_ms": _pct(small, 0.5) * 1e3,
                "p99_ms": _pct(small, 0.99) * 1e3,
                "max_ms": max(small) * 1e3,
            }
        big_captured = scrape(on.admin)
    return {
        "rows": rows,
        "metrics": metrics,
        "stall": stall,
        "big_body_bytes": big_bytes,
        "captured_after_stall": big_captured.get(
            'mlwarden_sidecar_exchanges_captured_total{protocol="v2"}', 0.0
        ),
        "loadavg": loadavg(),
    }


def report(result: dict[str, Any], rate: int, seconds: float) -> str:
    med = statistics.median
    lines = [f"{rate} req/s for {seconds:g} s per run; medians over the runs; loadavg "
             f"{result['loadavg']}", "",
             "| sidecar | requests/run | main CPU µs/req | worker CPU µs/req | total µs/req | "
             "main RSS MiB | worker RSS MiB | PSS MiB, both |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    totals = {}
    for name, runs in result["rows"].items():
        main, worker = med(r["main_us"] for r in runs), med(r["worker_us"] for r in runs)
        totals[name] = med(r["main_us"] + r["worker_us"] for r in runs)
        lines.append(
            f"| capture {name} | {med(r['requests'] for r in runs):,.0f} | {main:.0f} | "
            f"{worker:.0f} | {totals[name]:.0f} | {med(r['main_rss'] for r in runs):.1f} | "
            f"{med(r['worker_rss'] for r in runs):.1f} | {med(r['pss'] for r in runs):.1f} |"
        )
    lines += ["", f"capture's cost: {totals['on'] - totals['off']:.0f} µs of CPU per request",
              "", "1-row requests at rate/10 while one client posts "
              f"{result['big_body_bytes'] / 2**20:.1f} MiB bodies back to back:", "",
              "| sidecar | p50 ms | p99 ms | max ms |", "|---|---|---|---|"]  # fmt: skip
    for name, s in result["stall"].items():
        lines.append(f"| capture {name} | {s['p50_ms']:.2f} | {s['p99_ms']:.2f} | "
                     f"{s['max_ms']:.2f} |")  # fmt: skip
    m = result["metrics"]
    drops = {k: v for k, v in m.items() if "dropped_total" in k and v}
    captured = m.get("mlwarden_sidecar_records_captured_total", 0)
    shipped = m.get("mlwarden_sidecar_records_shipped_total", 0)
    lines += ["", f"capture-on counters after the CPU runs: captured {captured:,.0f} records, "
              f"shipped {shipped:,.0f}, drops {drops or 'none'}; exchanges captured after the "
              f"stall test {result['captured_after_stall']:,.0f}"]  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(report(measure(args.rate, args.seconds, args.repeats), args.rate, args.seconds))


if __name__ == "__main__":
    main()
