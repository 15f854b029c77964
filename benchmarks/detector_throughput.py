"""Detector: ingest rate and evaluation cost, against the issue's targets.

Targets (the detector issue): at least 100,000 records/s ingested (25 features,
batches of 500) on one core; an evaluation of 25 features in at most 50 ms, and
its cost independent of the window size (the windows are sketches).

Measured three ways, each the median of `repeats` runs:
1. in-process: `decode` + `parse_batch` + `Detector.ingest` on pre-encoded batches,
   one core, no HTTP: the detector's own cost per record;
2. over HTTP: the real `mlwarden detector` process, fed by an aiohttp client
   posting the same batches (4 in flight) for `duration` seconds; the rate is
   what the detector reports it ingested (client and detector share the 2 cores);
3. evaluation: `Detector.evaluate` with windows of 1,000, 100,000 and 1,000,000
   records, with the process's peak RSS after filling each window.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from mlwarden.detector.core import Detector
from mlwarden.detector.ingest import decode, parse_batch
from mlwarden.spec import parse_observed_model

NAME = "detector_throughput"
N_NUMERIC, N_CATEGORICAL, BATCH = 20, 5, 500
INGEST_TARGET = 100_000
EVAL_TARGET_MS = 50.0
WINDOWS = (1_000, 100_000, 1_000_000)


def manifest(window: int) -> dict[str, Any]:
    features = [{"name": f"x{i}", "type": "numeric"} for i in range(N_NUMERIC)]
    features += [{"name": f"c{i}", "type": "categorical"} for i in range(N_CATEGORICAL)]
    return {
        "apiVersion": "mlwarden.io/v1alpha1", "kind": "ObservedModel",
        "metadata": {"name": "bench", "namespace": "bench"},
        "spec": {"target": {"deployment": "bench"}, "features": features,
                 "prediction": {"name": "score", "type": "numeric"},
                 "reference": {"size": 5000}, "window": {"size": window},
                 "alerting": {"evaluationInterval": "1h"}},
    }  # fmt: skip


def batches(n: int, seed: int = 0) -> list[bytes]:
    """Batches in the sidecar's format, with requests entries as the sidecar sends them."""
    rng = np.random.default_rng(seed)
    cats = np.array(["grocery", "travel", "fuel", "online", "other"])
    out = []
    for b in range(n):
        x = rng.normal(size=(BATCH, N_NUMERIC))
        c = cats[rng.integers(0, len(cats), size=(BATCH, N_CATEGORICAL))]
        records = [{
            "id": f"req-{b}-{i}", "row": 0, "ts": 1.8e9,
            "features": {**{f"x{j}": float(x[i, j]) for j in range(N_NUMERIC)},
                         **{f"c{j}": str(c[i, j]) for j in range(N_CATEGORICAL)}},
            "outputs": {"score": float(x[i, 0] > 0)},
        } for i in range(BATCH)]  # fmt: skip
        reqs = [
            {
                "id": r["id"],
                "ts": 1.8e9,
                "method": "POST",
                "status": 200,
                "latencySeconds": 0.004,
                "rows": 1,
                "protocol": "v2",
            }
            for r in records
        ]
        out.append(json.dumps({"source": {"pod": "bench"}, "requests": reqs,
                               "records": records}).encode())  # fmt: skip
    return out


def ingest_in_process(bodies: list[bytes], repeats: int) -> float:
    rates = []
    for _ in range(repeats):
        d = Detector(parse_observed_model(manifest(100_000)), now=0.0)
        for body in bodies[:10]:  # warm-up: the reference
            d.ingest(parse_batch(decode(body), now=0.0), now=0.0)
        started = time.perf_counter()
        for body in bodies:
            d.ingest(parse_batch(decode(body), now=1.0), now=1.0)
        rates.append(len(bodies) * BATCH / (time.perf_counter() - started))
    return statistics.median(rates)


async def _post_for(url: str, bodies: list[bytes], seconds: float) -> None:
    import aiohttp

    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession() as http:

        async def worker(k: int) -> None:
            i = k
            while time.monotonic() < deadline:
                async with http.post(
                    f"{url}/v1/records",
                    data=bodies[i % len(bodies)],
                    headers={"Content-Type": "application/json"},
                ) as resp:
                    await resp.read()
                    assert resp.status == 200, resp.status
                i += 4

        await asyncio.gather(*(worker(k) for k in range(4)))


def _status(url: str) -> dict[str, Any]:
    import urllib.request

    with urllib.request.urlopen(f"{url}/v1/status", timeout=5) as resp:
        result: dict[str, Any] = json.load(resp)
        return result


def ingest_over_http(bodies: list[bytes], seconds: float, repeats: int) -> tuple[float, str]:
    import socket

    rates = []
    command = ""
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(prefix="mlwarden-bench-") as tmp:
            om = Path(tmp) / "om.yaml"
            om.write_text(json.dumps(manifest(100_000)))
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            argv = [
                sys.executable,
                "-m",
                "mlwarden.cli",
                "detector",
                "--observed-model",
                str(om),
                "--listen",
                f"127.0.0.1:{port}",
                "--log-level",
                "warning",
            ]
            command = " ".join(["mlwarden", *argv[3:]]).replace(str(om), "om.yaml")
            proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            url = f"http://127.0.0.1:{port}"
            try:
                for _ in range(100):
                    try:
                        _status(url)
                        break
                    except OSError:
                        time.sleep(0.1)
                asyncio.run(_post_for(url, bodies[:10], 1.0))  # reference + warm-up
                before = _status(url)["recordsIngested"]
                started = time.monotonic()
                asyncio.run(_post_for(url, bodies, seconds))
                elapsed = time.monotonic() - started
                rates.append((_status(url)["recordsIngested"] - before) / elapsed)
            finally:
                proc.terminate()
                proc.wait(10)
    return statistics.median(rates), command


def evaluation_by_window(bodies: list[bytes], repeats: int) -> list[dict[str, float]]:
    rows = []
    parsed = [parse_batch(decode(b), now=1.0) for b in bodies]
    for window in WINDOWS:
        d = Detector(parse_observed_model(manifest(window)), now=0.0)
        for batch in parsed[:10]:
            d.ingest(batch, now=0.0)
        fed = 0
        while fed < window + BATCH:
            for batch in parsed:
                d.ingest(batch, now=1.0)
                fed += BATCH
                if fed >= window + BATCH:
                    break
        times = []
        for _ in range(max(5, repeats * 5)):
            started = time.perf_counter()
            d.evaluate(now=2.0, now_iso="bench")
            times.append((time.perf_counter() - started) * 1000)
        assert d.window is not None
        rows.append({
            "window": window,
            "records_in_window": d.window.view().n_records,
            "evaluate_ms": statistics.median(times),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        })  # fmt: skip
    return rows


def run(*, duration: float = 4.0, repeats: int = 3, warmup: float = 2.0) -> dict[str, Any]:
    del warmup  # the detector benchmark warms up by building its reference
    bodies = batches(80)
    in_process = ingest_in_process(bodies, repeats)
    over_http, command = ingest_over_http(bodies, duration, repeats)
    evaluation = evaluation_by_window(bodies, repeats)
    worst_eval = max(r["evaluate_ms"] for r in evaluation)
    spread = max(r["evaluate_ms"] for r in evaluation) / min(r["evaluate_ms"] for r in evaluation)
    verdicts = [
        (f"ingest ≥ {INGEST_TARGET:,} records/s on one core (in-process)",
         in_process >= INGEST_TARGET, f"{in_process:,.0f} records/s"),
        (f"ingest ≥ {INGEST_TARGET:,} records/s over HTTP (client on the other core)",
         over_http >= INGEST_TARGET, f"{over_http:,.0f} records/s"),
        (f"evaluation of 25 features ≤ {EVAL_TARGET_MS:g} ms", worst_eval <= EVAL_TARGET_MS,
         f"{worst_eval:.1f} ms at worst"),
        ("evaluation cost independent of window size (1k → 1M records within 2×)",
         spread <= 2.0, f"max/min = {spread:.2f}"),
    ]  # fmt: skip
    lines = [
        f"detector ingest: {in_process:,.0f} records/s in-process, "
        f"{over_http:,.0f} records/s over HTTP"
    ]
    lines += [
        f"  window {r['window']:>9,}: evaluate {r['evaluate_ms']:6.2f} ms, "
        f"peak RSS {r['peak_rss_mb']:6.0f} MB"
        for r in evaluation
    ]
    lines += [f"  {'PASS' if ok else 'MISS'}  {what}: {fig}" for what, ok, fig in verdicts]
    return {"in_process": in_process, "over_http": over_http, "evaluation": evaluation,
            "verdicts": verdicts, "http_command": command, "repeats": repeats,
            "duration": duration, "cpus": os.cpu_count(), "text": "\n".join(lines)}  # fmt: skip


def render_markdown(res: dict[str, Any]) -> str:
    out = ["## Detector ingest and evaluation (`benchmarks/detector_throughput.py`)", ""]
    out.append(
        f"Batches of {BATCH} records with {N_NUMERIC} numeric and {N_CATEGORICAL} categorical "
        "features plus a prediction, in the sidecar's format (docs/records-api.md), including "
        f"the per-request entries. Medians of {res['repeats']} runs."
    )
    out += ["", "| measurement | figure |", "|---|---|"]
    out.append(f"| ingest, in-process (decode + validate + sketch), one core | "
               f"{res['in_process']:,.0f} records/s |")  # fmt: skip
    out.append(f"| ingest over HTTP, 4 posts in flight for {res['duration']:g} s | "
               f"{res['over_http']:,.0f} records/s |")  # fmt: skip
    out += ["", "| window (records) | records in window | evaluate (ms) | peak RSS (MB) |",
            "|---:|---:|---:|---:|"]  # fmt: skip
    for r in res["evaluation"]:
        out.append(f"| {r['window']:,} | {r['records_in_window']:,} | {r['evaluate_ms']:.2f} | "
                   f"{r['peak_rss_mb']:.0f} |")  # fmt: skip
    out += ["", "Peak RSS is the benchmark process's high-water mark, cumulative across rows: "
            "it includes the pre-parsed batches; its growth from row to row is the window's cost.",
            "", "| target | verdict | figure |", "|---|---|---|"]  # fmt: skip
    out += [f"| {what} | {'PASS' if ok else 'MISS'} | {fig} |" for what, ok, fig in res["verdicts"]]
    out += ["", "Commands: `make bench` (all), or "
            "`.venv/bin/python benchmarks/run.py`; the HTTP row runs "
            f"`{res['http_command']}`.", ""]  # fmt: skip
    return "\n".join(out)


if __name__ == "__main__":
    from procs import by_hand

    by_hand(__doc__, "detector_throughput")
    print(run(duration=2.0, repeats=1)["text"])
