"""What the sidecar adds to a gRPC call, side by side with an HTTP call, in front of MLServer.

MLServer (sklearn runtime, `parallel_workers: 0`, the iris model of `mlwarden demo`)
serves the Open Inference Protocol v2 over HTTP and gRPC at once. One `mlwarden sidecar`
runs both listeners (`--listen` to MLServer's HTTP port, `--grpc-listen` to its gRPC port),
capture on, shipping to a real `mlwarden detector`. Four paths:

- `http-direct`   HTTP/1.1 straight to MLServer (the HTTP baseline);
- `http-sidecar`  HTTP/1.1 through the sidecar;
- `grpc-direct`   gRPC straight to MLServer (the gRPC baseline);
- `grpc-sidecar`  gRPC through the sidecar (`ModelInfer`, captured).

One load generator for all four, so that the two transports are measured alike: h2load
(nghttp2), `--h1` for HTTP and HTTP/2 for gRPC (a `ModelInferRequest` with the row in
`raw_input_contents`, as `tritonclient.grpc` sends it, framed as a gRPC message, with
`content-type: application/grpc` and `te: trailers`), 10 clients at `--rps` each, one
request in flight per client; the latency of every request from h2load's `--log-file`,
p50/p90/p99 nearest-rank per run, medians over the interleaved repeats; "added" is the
path minus the direct path of the same transport in the same repeat. Before the load,
each path answers one call (tritonclient-free: urllib and grpcio) and the answers must
agree. The sidecar's `mlwarden_sidecar_requests_total` and records are read from its
/metrics around each run: every request counted, every record captured.
"""

from __future__ import annotations

import contextlib
import json
import math
import shlex
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from procs import (
    HOST,
    Proc,
    answers_ok,
    clean_env,
    display,
    free_port,
    group_usage,
    http_get,
    loadavg,
    log_stderr,
    mlwarden_argv,
    scrape,
    start_detector,
    wait_until,
)

NAME = "grpc_latency"
MODEL = "iris"
PATHS: dict[str, str] = {
    "http-direct": "HTTP, direct to MLServer",
    "http-sidecar": "HTTP, through the sidecar (capture on)",
    "grpc-direct": "gRPC, direct to MLServer",
    "grpc-sidecar": "gRPC, through the sidecar (capture on)",
}
RATES = (1000,)  # requests per second, all clients together
CLIENTS = 10
ROW = [5.1, 3.5, 1.4, 0.2]
INFER_METHOD = "/inference.GRPCInferenceService/ModelInfer"
DETECTOR_MANIFEST = """\
apiVersion: mlwarden.io/v1alpha1
kind: ObservedModel
metadata: {name: iris, namespace: bench}
spec:
  target: {deployment: iris}
  protocol: v2
  reference: {source: warmup, size: 1000}
  window: {size: 10000}
"""


def v2_json() -> bytes:
    tensor = {"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": ROW}
    return json.dumps({"inputs": [tensor]}).encode()


def v2_grpc_message() -> bytes:
    """A ModelInferRequest as tritonclient.grpc builds it (raw contents), gRPC-framed."""
    from mlwarden.protocols.v2_grpc import ModelInferRequest

    message: Any = ModelInferRequest(model_name=MODEL)
    tensor = message.inputs.add(name="input-0", datatype="FP64")
    tensor.shape.extend([1, 4])
    message.raw_input_contents.append(struct.pack("<4d", *ROW))
    payload: bytes = message.SerializeToString()
    return b"\x00" + struct.pack(">I", len(payload)) + payload


def h2load_argv(
    url: str, body: Path, rate: int, duration: float, log: Path, grpc: bool
) -> list[str]:
    argv = ["h2load", "-c", str(CLIENTS), "-m", "1", "--rps", f"{rate / CLIENTS:g}",
            "-D", f"{duration:g}", "-d", str(body), "--log-file", str(log)]  # fmt: skip
    if grpc:
        argv += ["-H", "content-type: application/grpc", "-H", "te: trailers"]
    else:
        argv += ["--h1", "-H", "content-type: application/json"]
    return [*argv, url]


def nearest_rank(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    return values[max(0, math.ceil(q * len(values)) - 1)]


def run_h2load(
    url: str, body: Path, rate: int, duration: float, tmp: Path, grpc: bool
) -> dict[str, Any]:
    log = tmp / "h2load.log"
    log.unlink(missing_ok=True)
    argv = h2load_argv(url, body, rate, duration, log, grpc)
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"h2load failed ({out.returncode}): {out.stderr[-2000:]}")
    statuses: list[int] = []
    micros: list[float] = []
    for line in log.read_text().splitlines():
        parts = line.split("\t")
        if len(parts) >= 3:
            statuses.append(int(parts[1]))
            micros.append(float(parts[2]))
    latencies = sorted(m / 1000.0 for m in micros)
    failed = sum(1 for s in statuses if s != 200)
    return {
        "requests": len(statuses),
        "failed": failed,
        "rps": len(statuses) / duration,
        "p50_ms": nearest_rank(latencies, 0.50),
        "p90_ms": nearest_rank(latencies, 0.90),
        "p99_ms": nearest_rank(latencies, 0.99),
        "summary": next(
            (ln.strip() for ln in out.stdout.splitlines() if ln.startswith("requests:")), ""
        ),
    }


def _mlserver_bin() -> str:
    found = shutil.which("mlserver") or str(Path(sys.executable).with_name("mlserver"))
    if not Path(found).exists():
        raise RuntimeError(f"{NAME} needs MLServer: pip install 'mlwarden[demo]'")
    return found


def _grpc_call(target: str, framed: bytes) -> bytes:
    import grpc

    with grpc.insecure_channel(target) as channel:
        answer: bytes = channel.unary_unary(INFER_METHOD)(framed[5:], timeout=10)
    return answer


def _prediction_from_grpc(answer: bytes) -> list[int]:
    from mlwarden.protocols.v2_grpc import ModelInferResponse

    reply: Any = ModelInferResponse()
    reply.ParseFromString(answer)
    if reply.raw_output_contents:
        raw = reply.raw_output_contents[0]
        return list(struct.unpack(f"<{len(raw) // 8}q", raw))
    return []


def run(
    *,
    duration: float = 4.0,
    repeats: int = 3,
    warmup: float = 2.0,
    log: Callable[[str], None] = log_stderr,
) -> dict[str, Any]:
    started = time.monotonic()
    load_start = loadavg()
    with contextlib.ExitStack() as stop:
        tmp = Path(stop.enter_context(tempfile.TemporaryDirectory(prefix="mlwarden-bench-grpc-")))
        log(f"{NAME}: starting MLServer, the detector and the sidecar in {tmp}")
        from mlwarden.demo import write_iris_model

        models = tmp / "models"
        write_iris_model(models)
        http_port, grpc_port = free_port(), free_port()
        settings = {"host": HOST, "http_port": http_port, "grpc_port": grpc_port,
                    "metrics_port": free_port(), "parallel_workers": 0}  # fmt: skip
        (models / "settings.json").write_text(json.dumps(settings))
        mlserver_argv = [_mlserver_bin(), "start", str(models)]
        mlserver = Proc("mlserver", mlserver_argv, tmp / "mlserver.log")
        stop.callback(mlserver.stop)
        ready = f"http://{HOST}:{http_port}/v2/models/{MODEL}/ready"
        wait_until(lambda: answers_ok(ready), timeout=120, what=ready)
        mlserver.wait_port(grpc_port, timeout=60)

        detector_port = free_port()
        manifest = tmp / "detector.yaml"
        manifest.write_text(DETECTOR_MANIFEST)
        detector = start_detector(manifest, detector_port, tmp / "detector.log", stop=stop)
        collector = f"http://{HOST}:{detector_port}"

        side_http, side_grpc, admin_port = free_port(), free_port(), free_port()
        sidecar_argv = [
            *mlwarden_argv(), "sidecar",
            "--listen", f"{HOST}:{side_http}", "--upstream", f"http://{HOST}:{http_port}",
            "--grpc-listen", f"{HOST}:{side_grpc}", "--grpc-upstream", f"{HOST}:{grpc_port}",
            "--admin-listen", f"{HOST}:{admin_port}", "--collector", collector,
            "--protocol", "v2",
        ]  # fmt: skip
        sidecar = Proc("sidecar", sidecar_argv, tmp / "sidecar.log", env=clean_env())
        stop.callback(sidecar.stop)
        sidecar.wait_port(side_grpc)
        admin = f"http://{HOST}:{admin_port}"
        wait_until(lambda: answers_ok(f"{admin}/readyz"), timeout=20, what="sidecar /readyz")

        urls = {
            "http-direct": f"http://{HOST}:{http_port}/v2/models/{MODEL}/infer",
            "http-sidecar": f"http://{HOST}:{side_http}/v2/models/{MODEL}/infer",
            "grpc-direct": f"http://{HOST}:{grpc_port}{INFER_METHOD}",
            "grpc-sidecar": f"http://{HOST}:{side_grpc}{INFER_METHOD}",
        }
        bodies = {"http": tmp / "v2-1row.json", "grpc": tmp / "v2-1row.grpc"}
        bodies["http"].write_bytes(v2_json())
        bodies["grpc"].write_bytes(v2_grpc_message())

        # One call per path: the same prediction everywhere, byte-identical per transport.
        import urllib.request

        answers: dict[str, Any] = {}
        for path in ("http-direct", "http-sidecar"):
            req = urllib.request.Request(urls[path], data=bodies["http"].read_bytes(),
                                         headers={"Content-Type": "application/json"})  # fmt: skip
            with urllib.request.urlopen(req, timeout=10) as resp:
                answers[path] = json.loads(resp.read())["outputs"][0]["data"]
        framed = bodies["grpc"].read_bytes()
        direct_answer = _grpc_call(f"{HOST}:{grpc_port}", framed)
        if _grpc_call(f"{HOST}:{side_grpc}", framed) != direct_answer:
            raise RuntimeError("gRPC: the sidecar's answer differs from MLServer's")
        answers["grpc"] = _prediction_from_grpc(direct_answer)
        log(f"{NAME}: answers {answers}")

        def measure(path: str, rate: int, seconds: float) -> dict[str, Any]:
            grpc = path.startswith("grpc")
            body = bodies["grpc" if grpc else "http"]
            return run_h2load(urls[path], body, rate, seconds, tmp, grpc)

        log(f"{NAME}: warming up each path ({warmup:g} s at 100 req/s)")
        for path in PATHS:
            measure(path, 100, warmup)

        raw: dict[str, dict[str, list[dict[str, Any]]]] = {
            str(rate): {p: [] for p in PATHS} for rate in RATES
        }
        for r in range(repeats):
            for rate in RATES:
                for path in PATHS:
                    time.sleep(0.2)
                    before = scrape(admin) if path.endswith("sidecar") else None
                    u0, t0 = group_usage(sidecar.popen.pid), time.monotonic()
                    res = measure(path, rate, duration)
                    u1, t1 = group_usage(sidecar.popen.pid), time.monotonic()
                    res["sidecar_cpu_pct"] = 100.0 * (u1[0] - u0[0]) / (t1 - t0)
                    if before is not None:
                        time.sleep(1.5)  # the capture worker and the last batch
                        after = scrape(admin)
                        res["served"] = _sum(after, "mlwarden_sidecar_requests_total") - _sum(
                            before, "mlwarden_sidecar_requests_total"
                        )
                        res["captured"] = after.get(
                            "mlwarden_sidecar_records_captured_total", 0.0
                        ) - before.get("mlwarden_sidecar_records_captured_total", 0.0)
                    raw[str(rate)][path].append(res)
                    log(f"[{r + 1}/{repeats}] {rate} req/s {path:<13} p50 {res['p50_ms']:6.2f} "
                        f"p99 {res['p99_ms']:6.2f} ms {res['rps']:6.0f} req/s "
                        f"failed {res['failed']}")  # fmt: skip
        for proc in (mlserver, detector, sidecar):
            if not proc.alive():
                raise RuntimeError(f"{proc.name} died during the run:\n{proc.tail()}")
        _, status = http_get(collector + "/v1/status")
        tmp_s = str(tmp)
        shown = {**settings, "http_port": "HTTP", "grpc_port": "GRPC"}
        results: dict[str, Any] = {
            "name": NAME,
            "raw": raw,
            "summary": summarize(raw),
            "answers": answers,
            "settings": {"duration_s": duration, "repeats": repeats, "warmup_s": warmup},
            "commands": {
                "mlserver": display(mlserver_argv).replace(tmp_s, "$TMP")
                + f"  (settings.json: {json.dumps(shown)})",
                "detector": display(detector.argv).replace(tmp_s, "$TMP"),
                "sidecar": display(sidecar_argv).replace(tmp_s, "$TMP"),
                "load": {
                    str(rate): {
                        p: shlex.join(
                            h2load_argv(
                                urls[p],
                                bodies["grpc" if p.startswith("grpc") else "http"],
                                rate,
                                duration,
                                tmp / "h2load.log",
                                p.startswith("grpc"),
                            )
                        ).replace(tmp_s, "$TMP")
                        for p in PATHS
                    }
                    for rate in RATES
                },
            },
            "collector_records": json.loads(status).get("recordsIngested"),
            "h2load": _h2load_version(),
            "mlserver_version": _version("mlserver"),
            "grpcio": _version("grpcio"),
        }
        results["elapsed_s"] = round(time.monotonic() - started, 1)
        results["loadavg"] = {"start": load_start, "end": loadavg()}
        results["verdicts"] = verdicts(results)
        results["text"] = render_text(results)
        return results


def _sum(metrics: dict[str, float], name: str) -> float:
    return sum(v for k, v in metrics.items() if k.startswith(name + "{") or k == name)


def _version(dist: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "?"


def _h2load_version() -> str:
    try:
        out = subprocess.run(["h2load", "--version"], capture_output=True, text=True, timeout=5)
    except OSError:
        return "?"
    return out.stdout.strip().splitlines()[0] if out.stdout.strip() else "?"


def _median(values: list[float]) -> float:
    values = sorted(v for v in values if not math.isnan(v))
    if not values:
        return math.nan
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def summarize(raw: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for rate, by_path in raw.items():
        out[rate] = {}
        for path, runs in by_path.items():
            row: dict[str, float] = {
                k: _median([x[k] for x in runs]) for k in ("p50_ms", "p90_ms", "p99_ms", "rps")
            }
            row["failed"] = float(sum(x["failed"] for x in runs))
            row["requests"] = float(sum(x["requests"] for x in runs))
            row["sidecar_cpu_pct"] = _median([x["sidecar_cpu_pct"] for x in runs])
            if path.endswith("sidecar"):
                base = by_path[path.replace("sidecar", "direct")]
                for q in ("p50_ms", "p90_ms", "p99_ms"):
                    row[f"added_{q}"] = _median(
                        [x[q] - d[q] for x, d in zip(runs, base, strict=True)]
                    )
                row["served"] = float(sum(x["served"] for x in runs))
                row["captured"] = float(sum(x["captured"] for x in runs))
            out[rate][path] = row
    return out


def _f(value: float, spec: str = ".2f") -> str:
    return (
        "-"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else format(value, spec)
    )


def verdicts(res: dict[str, Any]) -> list[dict[str, str]]:
    out = []
    for rate, rows in res["summary"].items():
        g, h = rows["grpc-sidecar"], rows["http-sidecar"]
        out.append({
            "target": f"{int(rate):,} req/s: added by the sidecar over gRPC vs over HTTP",
            "status": "INFO",
            "figure": f"p50 {_f(g['added_p50_ms'])} vs {_f(h['added_p50_ms'])} ms, "
                      f"p99 {_f(g['added_p99_ms'])} vs {_f(h['added_p99_ms'])} ms",
        })  # fmt: skip
        for path in PATHS:
            got = rows[path]["rps"]
            out.append({
                "target": f"{PATHS[path]}: the offered {int(rate):,} req/s served (>= 95%)",
                "status": "PASS" if got >= 0.95 * int(rate) else "MISS",
                "figure": f"{got:,.0f} req/s (each client waits for its answer before the next: "
                          "a slower path serves fewer)",
            })  # fmt: skip
        failed = sum(r["failed"] for r in rows.values())
        out.append({
            "target": f"{int(rate):,} req/s: no request failed on any path",
            "status": "PASS" if failed == 0 else "MISS",
            "figure": f"{failed:.0f} failed of {sum(r['requests'] for r in rows.values()):,.0f}",
        })  # fmt: skip
        out.append({
            "target": f"{int(rate):,} req/s: every gRPC call through the sidecar captured",
            "status": "PASS" if g["captured"] >= g["requests"] else "MISS",
            "figure": f"{g['captured']:,.0f} records captured of {g['requests']:,.0f} calls "
                      f"(sidecar counted {g['served']:,.0f})",
        })  # fmt: skip
    return out


def tables(res: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    n, d = res["settings"]["repeats"], res["settings"]["duration_s"]
    out = []
    for rate, rows in res["summary"].items():
        header = ["path", "p50 ms", "p90 ms", "p99 ms", "added p50", "added p90", "added p99",
                  "req/s", "failed", "sidecar CPU %"]  # fmt: skip
        body = []
        for path, label in PATHS.items():
            r = rows[path]
            body.append([label, _f(r["p50_ms"]), _f(r["p90_ms"]), _f(r["p99_ms"]),
                         _f(r.get("added_p50_ms", math.nan)), _f(r.get("added_p90_ms", math.nan)),
                         _f(r.get("added_p99_ms", math.nan)), _f(r["rps"], ".0f"),
                         _f(r["failed"], ".0f"), _f(r["sidecar_cpu_pct"], ".0f")])  # fmt: skip
        title = (f"MLServer, {int(rate):,} req/s, 1 row x 4 FP64 (h2load -c {CLIENTS} -m 1 "
                 f"--rps {int(rate) // CLIENTS}, {d:g} s x {n}, medians; added = path - direct "
                 "of the same transport, same repeat)")  # fmt: skip
        out.append((title, header, body))
    return out


def _text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True))
             for row in [header, *rows]]  # fmt: skip
    return "\n".join(lines)


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def render_text(res: dict[str, Any]) -> str:
    parts = [f"{t}\n{_text_table(h, r)}" for t, h, r in tables(res)]
    parts.append("\n".join(f"{v['status']:<8}  {v['target']}: {v['figure']}"
                           for v in res["verdicts"]))  # fmt: skip
    return "\n\n".join(parts)


def render_markdown(res: dict[str, Any]) -> str:
    out = [
        "## gRPC next to HTTP through the sidecar (`benchmarks/grpc_latency.py`)",
        "",
        f"MLServer {res['mlserver_version']} (sklearn runtime, `parallel_workers: 0`) serving "
        "the iris model over HTTP and gRPC at once; one `mlwarden sidecar` with both listeners "
        f"(grpcio {res['grpcio']}), capture on, shipping to a real `mlwarden detector`. One load "
        f"generator for both transports, {res['h2load']}: `--h1` for HTTP, HTTP/2 for gRPC "
        "(a `ModelInferRequest` with raw contents, as `tritonclient.grpc` sends it), "
        f"{CLIENTS} clients at `--rps` each, one request in flight per client; p50/p90/p99 "
        "nearest-rank over every request of a run (h2load's per-request log, microseconds), "
        "medians over the interleaved repeats. Sidecar CPU % is the sidecar's CPU time during "
        "the run over its wall time, whichever path was loaded (its HTTP and gRPC listeners "
        "are one process). h2load's figures are not hey's: compare the paths within this "
        "section, not with the sections above.",
        "",
        "### Verdicts",
        "",
    ]
    out += [f"- **{v['status']}** — {v['target']}: {v['figure']}" for v in res["verdicts"]]
    out += [
        "",
        f"Load average (1, 5, 15 min) at the start of this benchmark {res['loadavg']['start']}, "
        f"at its end {res['loadavg']['end']} (2 cores, shared with other work during the run). "
        f"Records the detector ingested over the whole run: {res['collector_records']}.",
        "",
    ]
    for title, header, rows in tables(res):
        out += [f"### {title}", "", _md_table(header, rows), ""]
    out += ["### Exact commands", "", "Servers ($TMP is the run's temporary directory):", ""]
    out += [f"- {k}: `{res['commands'][k]}`" for k in ("mlserver", "detector", "sidecar")]
    out += [
        "",
        "Load (each ran once per repeat; `v2-1row.json` is the v2 JSON body of one row of 4 "
        "FP64, `v2-1row.grpc` the gRPC-framed ModelInferRequest of the same row):",
        "",
    ]
    for rate, by_path in res["commands"]["load"].items():
        out.append(f"- {int(rate):,} req/s:")
        out += [f"  - {PATHS[p]}: `{cmd}`" for p, cmd in by_path.items()]
    out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    a = parser.parse_args()
    figures = run(duration=a.duration, repeats=a.repeats, warmup=a.warmup)
    print(figures["text"])
    if a.json:
        a.json.write_text(json.dumps(figures, indent=1, default=str))
