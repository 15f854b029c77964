"""Soak: the sidecar at a steady rate for minutes while its detector flaps.

    python benchmarks/soak.py [--minutes 10] [--rate 200] [--flap-every 30] [--down-for 10]

A fixed-response nginx upstream (`upstream_nginx.py`), the real `mlwarden
detector` and `mlwarden sidecar --protocol v2` shipping to it. `hey` sends 1-row
Open Inference Protocol v2 requests at `--rate` req/s for the whole run. Every
`--flap-every` seconds the detector is killed (SIGKILL: no goodbye, connections
reset) and started again on the same port `--down-for` seconds later.

Every 5 s the sidecar's RSS (VmRSS) and open file descriptors are read from
/proc. After a warm-up (the first minute, or a tenth of a shorter run), RSS
growth is the median of the last minute's samples against the median of the
minute after the warm-up; an fd leak is the last fd count against the fewest
after warm-up. It also reports every request's outcome (all must be 2xx),
latency per minute, and the sidecar's counters (captured, shipped, dropped by
reason). Exit status 1 if RSS grew 5% or more, fds grew, or a request failed.
Not part of `make bench` (`benchmarks/run.py`): run it by hand.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
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
    detector_manifest,
    free_port,
    http_get,
    open_fds,
    rss_kib,
    scrape,
    sigterm_raises,
    start_detector,
    start_sidecar,
)
from upstream_nginx import MODEL_1_ROW, fixed_upstream_conf, infer_path, start_nginx

MANIFEST = detector_manifest("soak")
BODY = {
    "inputs": [
        {"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": [[5.1, 3.5, 1.4, 0.2]]}
    ]
}
SAMPLE_SECONDS = 5.0


class Detector:
    """The detector on a fixed port, killed and restarted on demand."""

    def __init__(self, tmp: Path, port: int) -> None:
        self.tmp, self.port = tmp, port
        self.manifest = tmp / "soak.yaml"
        self.manifest.write_text(MANIFEST)
        self.proc: Proc | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        self.proc = start_detector(
            self.manifest, self.port, self.tmp / f"detector-{self.starts}.log"
        )

    def kill(self) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.popen.pid, signal.SIGKILL)
        self.proc.popen.wait(10)
        self.proc.stop()

    def records(self) -> int:
        _, body = http_get(f"http://{HOST}:{self.port}/v1/status")
        return int(json.loads(body)["recordsIngested"])


def median_of(samples: list[dict[str, float]], key: str, start: float, end: float) -> float:
    values = [s[key] for s in samples if start <= s["t"] < end]
    return statistics.median(values) if values else math.nan


def run(minutes: float, rate: int, flap_every: float, down_for: float) -> dict[str, Any]:
    duration = minutes * 60.0
    warmup = min(60.0, duration / 10)
    tail = min(60.0, (duration - warmup) / 3)
    with tempfile.TemporaryDirectory(prefix="mlwarden-soak-") as tmp_name, \
            contextlib.ExitStack() as stop:  # fmt: skip
        tmp = Path(tmp_name)
        up_port = free_port()
        upstream = start_nginx(
            "upstream", fixed_upstream_conf(tmp / "up", up_port), tmp / "up", up_port
        )
        stop.callback(upstream.stop)
        detector = Detector(tmp, free_port())
        detector.start()
        stop.callback(lambda: detector.proc.stop() if detector.proc else None)
        sidecar = start_sidecar(
            "sidecar", tmp / "sidecar.log", upstream=f"http://{HOST}:{up_port}", stop=stop,
            collector=f"http://{HOST}:{detector.port}",
            extra=("--log-level", "warning", "--drain-seconds", "0"),
        )  # fmt: skip
        admin = sidecar.admin
        pid = sidecar.proc.popen.pid

        body = tmp / "body.json"
        body.write_text(json.dumps(BODY))
        workers = max(1, min(20, rate // 10))
        hey_out = tmp / "hey.csv"
        with open(hey_out, "wb") as out:
            hey = subprocess.Popen(
                ["hey", "-z", f"{duration:g}s", "-c", str(workers), "-q", str(rate // workers),
                 "-m", "POST", "-T", "application/json", "-D", str(body), "-o", "csv",
                 f"{sidecar.url}{infer_path(MODEL_1_ROW)}"],
                stdout=out, stderr=subprocess.DEVNULL,
            )  # fmt: skip
        stop.callback(lambda: hey.poll() is None and hey.kill())

        samples: list[dict[str, float]] = []
        flaps = 0
        started = time.monotonic()
        next_sample = started
        next_flap = started + flap_every
        down_until: float | None = None
        delivered_before_kill = 0
        while hey.poll() is None:
            now = time.monotonic()
            if now >= next_sample:
                samples.append({"t": now - started, "rss_kib": rss_kib(pid), "fds": open_fds(pid)})
                next_sample += SAMPLE_SECONDS
            if down_until is None and now >= next_flap and now - started < duration - down_for:
                with contextlib.suppress(OSError, KeyError):
                    delivered_before_kill += detector.records()
                detector.kill()
                flaps += 1
                down_until = now + down_for
            elif down_until is not None and now >= down_until:
                detector.start()
                down_until = None
                next_flap = time.monotonic() + flap_every
            time.sleep(0.1)
        if down_until is not None:
            detector.start()
        time.sleep(3)  # let the last batches go out
        metrics = scrape(admin)
        with contextlib.suppress(OSError, KeyError):
            delivered_before_kill += detector.records()

        lines = hey_out.read_text().splitlines()[1:]
        per_minute: dict[int, list[float]] = {}
        statuses: dict[str, int] = {}
        for line in lines:
            cols = line.split(",")
            if len(cols) < 8:
                continue
            statuses[cols[6]] = statuses.get(cols[6], 0) + 1
            per_minute.setdefault(int(float(cols[7]) // 60), []).append(float(cols[0]) * 1e3)

    def q(values: list[float], p: float) -> float:
        values = sorted(values)
        return values[max(0, math.ceil(p * len(values)) - 1)]

    end = samples[-1]["t"] if samples else 0.0
    rss_base = median_of(samples, "rss_kib", warmup, warmup + tail)
    rss_final = median_of(samples, "rss_kib", end - tail, end + 1)
    after = [s for s in samples if s["t"] >= warmup]
    fds_base = min(s["fds"] for s in after) if after else math.nan
    dropped = {
        k.split("reason=")[1].rstrip("}"): v
        for k, v in metrics.items()
        if k.startswith("mlwarden_sidecar_records_dropped_total")
    }
    return {
        "minutes": minutes,
        "rate": rate,
        "flaps": flaps,
        "down_for_s": down_for,
        "requests": sum(statuses.values()),
        "statuses": statuses,
        "latency_ms_per_minute": {
            m: {"n": len(v), "p50": q(v, 0.5), "p99": q(v, 0.99)}
            for m, v in sorted(per_minute.items())
        },
        "rss_kib_after_warmup": rss_base,
        "rss_kib_final": rss_final,
        "rss_kib_max": max(s["rss_kib"] for s in samples),
        "rss_growth_pct": 100.0 * (rss_final / rss_base - 1.0),
        "fds_after_warmup_min": fds_base,
        "fds_final": samples[-1]["fds"],
        "fds_max": max(s["fds"] for s in samples),
        "records_captured": metrics.get("mlwarden_sidecar_records_captured_total", 0.0),
        "records_shipped": metrics.get("mlwarden_sidecar_records_shipped_total", 0.0),
        "records_dropped": dropped,
        "detector_records_ingested": delivered_before_kill,
        "samples": samples,
    }


def render(res: dict[str, Any]) -> str:
    out = [
        f"soak: {res['minutes']:g} min at {res['rate']} req/s, detector killed {res['flaps']} "
        f"times (down {res['down_for_s']:g} s each)",
        f"requests: {res['requests']}, statuses {res['statuses']}",
        f"sidecar RSS: {res['rss_kib_after_warmup'] / 1024:.1f} MiB after warm-up -> "
        f"{res['rss_kib_final'] / 1024:.1f} MiB at the end "
        f"({res['rss_growth_pct']:+.2f}%), max {res['rss_kib_max'] / 1024:.1f} MiB",
        f"sidecar fds: {res['fds_after_warmup_min']} after warm-up, {res['fds_final']} at the "
        f"end, max {res['fds_max']}",
        f"records: captured {res['records_captured']:.0f}, shipped {res['records_shipped']:.0f}, "
        f"dropped {res['records_dropped']}, ingested by the detector incarnations "
        f"{res['detector_records_ingested']}",
        "latency per minute (ms):",
    ]
    for m, v in res["latency_ms_per_minute"].items():
        out.append(f"  minute {m:>3}: n {v['n']:>6}  p50 {v['p50']:.1f}  p99 {v['p99']:.1f}")
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=int, default=200, help="requests per second")
    parser.add_argument("--flap-every", type=float, default=30.0, help="seconds between kills")
    parser.add_argument("--down-for", type=float, default=10.0, help="seconds the detector is down")
    parser.add_argument("--json", help="also write the figures (and every sample) here")
    args = parser.parse_args()
    sigterm_raises()
    res = run(args.minutes, args.rate, args.flap_every, args.down_for)
    print(render(res))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    ok_requests = sum(n for code, n in res["statuses"].items() if code.startswith("2"))
    failed = res["requests"] - ok_requests
    verdicts = {
        "every request 2xx": failed == 0,
        "RSS growth < 5%": res["rss_growth_pct"] < 5.0,
        "no fd leak": res["fds_final"] <= res["fds_after_warmup_min"] + 2,
    }
    for name, ok in verdicts.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    return 0 if all(verdicts.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
