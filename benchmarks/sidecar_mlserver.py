"""What the sidecar adds in front of a real model server: MLServer with the sklearn iris model.

`sidecar_latency.py` isolates the proxies' own cost behind a fixed-response nginx; this one
puts the same proxies in front of what a model request really costs: MLServer (the sklearn
runtime, `parallel_workers: 0`, the model of `mlwarden demo`: a LogisticRegression on
iris, see `mlwarden.demo.write_iris_model`). Three paths, all up at once:

- `direct`   the load generator straight to MLServer (the baseline);
- `nginx`    nginx as a reverse proxy with a keepalive upstream pool;
- `sidecar`  `mlwarden sidecar --protocol v2` with capture on, shipping to a real
             `mlwarden detector` (columns inferred from a warm-up of 1,000 records).

Per path: latency at 100, 500 and 1,000 req/s (hey, 1 row x 4 FP64, the same load shape
as sidecar_latency.py), saturation throughput (wrk -t1 -c64), the CPU and RSS of the
path's own server, and for the sidecar the records captured and delivered against the
requests it served. Every measurement is repeated, interleaved across the paths, and the
medians are reported.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import shlex
import shutil
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
    display,
    free_port,
    http_get,
    loadavg,
    log_stderr,
    peak_rss_mib,
    wait_until,
)
from sidecar_latency import (
    RESOLUTION_MS,
    WRK_CONNECTIONS,
    Scenario,
    Stack,
    _f,
    _md_table,
    _median,
    _text_table,
    delta,
    hey_argv,
    run_hey,
    run_wrk,
    snapshot,
    start_servers,
    v2_request,
    with_usage,
    wrk_argv,
    wrk_script,
)
from upstream_nginx import infer_path, nginx_command, reverse_proxy_conf, start_nginx

NAME = "sidecar_mlserver"
MODEL = "iris"
PATHS: dict[str, str] = {
    "direct": "direct to MLServer",
    "nginx": "nginx reverse proxy",
    "sidecar": "sidecar, capture on",
}
SCENARIOS = (
    Scenario("100", "100 req/s, 1 row x 4 FP64", rows=1, rate=100, workers=10),
    Scenario("500", "500 req/s, 1 row x 4 FP64", rows=1, rate=500, workers=10),
    Scenario("1k", "1,000 req/s, 1 row x 4 FP64", rows=1, rate=1000, workers=10),
    Scenario("saturation", f"saturation, wrk -t1 -c{WRK_CONNECTIONS}, 1 row", rows=1),
)


def _mlserver_bin() -> str:
    found = shutil.which("mlserver") or str(Path(sys.executable).with_name("mlserver"))
    if not Path(found).exists():
        raise RuntimeError(f"{NAME} needs MLServer: pip install 'mlwarden[demo]'")
    return found


def start_stack(tmp: Path, stop: contextlib.ExitStack) -> Stack:
    """MLServer, nginx in front of it, the collector and the capture-on sidecar."""
    from mlwarden.demo import write_iris_model

    st = Stack(tmp=tmp)

    def started(proc: Proc) -> Proc:
        stop.callback(proc.stop)
        st.procs.append(proc)
        return proc

    models = tmp / "models"
    write_iris_model(models)
    port = free_port()
    settings = {"host": HOST, "http_port": port, "grpc_port": free_port(),
                "metrics_port": free_port(), "parallel_workers": 0}  # fmt: skip
    (models / "settings.json").write_text(json.dumps(settings))
    argv = [_mlserver_bin(), "start", str(models)]
    st.proc_of["direct"] = started(Proc("mlserver", argv, tmp / "mlserver.log"))
    upstream = f"http://{HOST}:{port}"
    ready = f"{upstream}/v2/models/{MODEL}/ready"

    def model_ready() -> bool:
        if not st.proc_of["direct"].alive():
            raise RuntimeError(f"MLServer exited:\n{st.proc_of['direct'].tail()}")
        return answers_ok(ready)

    wait_until(model_ready, timeout=120, what=ready)
    st.urls["direct"] = upstream
    st.commands["mlserver"] = display(argv).replace(str(tmp), "$TMP") + (
        f"  (settings.json: {json.dumps({**settings, 'http_port': 'PORT'})})"
    )

    nport = free_port()
    conf = reverse_proxy_conf(tmp / "proxy", nport, port)
    st.proc_of["nginx"] = started(start_nginx("nginx proxy", conf, tmp / "proxy", nport))
    st.urls["nginx"] = f"http://{HOST}:{nport}"
    st.commands["nginx"] = nginx_command(tmp / "proxy")
    st.configs["nginx"] = conf

    start_servers(st, stop, upstream, sidecars=("sidecar",))
    return st


def check_paths(st: Stack, body: bytes) -> None:
    """One request per path: each must answer 200 with the same prediction."""
    import urllib.request

    answers = {}
    for path, base in st.urls.items():
        req = urllib.request.Request(base + infer_path(MODEL), data=body, method="POST",
                                     headers={"Content-Type": "application/json"})  # fmt: skip
        with urllib.request.urlopen(req, timeout=10) as resp:
            if resp.status != 200:
                raise RuntimeError(f"{path}: HTTP {resp.status}")
            answers[path] = json.loads(resp.read())["outputs"][0]["data"]
    if len({json.dumps(a) for a in answers.values()}) != 1:
        raise RuntimeError(f"the paths answered differently: {answers}")


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
        tmp = Path(stop.enter_context(tempfile.TemporaryDirectory(prefix="mlwarden-bench-ml-")))
        log(f"{NAME}: starting MLServer and the proxies in {tmp}")
        st = start_stack(tmp, stop)
        body = tmp / "v2-1row.json"
        body.write_text(json.dumps(v2_request(1)))
        check_paths(st, body.read_bytes())
        script = tmp / "post.lua"
        wrk_script(script, body)

        def url(path: str) -> str:
            return st.urls[path] + infer_path(MODEL)

        log(f"{NAME}: warming up each path ({warmup:g} s hey at 100 req/s, 1 s wrk)")
        for path in PATHS:
            run_hey(url(path), SCENARIOS[0], body, warmup)
            run_wrk(url(path), script, 1.0)

        raw: dict[str, dict[str, list[dict[str, Any]]]] = {
            sc.key: {p: [] for p in PATHS} for sc in SCENARIOS
        }
        capture: dict[str, list[dict[str, Any]]] = {sc.key: [] for sc in SCENARIOS}
        for r in range(repeats):
            for sc in SCENARIOS:
                for path in PATHS:
                    before = snapshot(st, "sidecar") if path == "sidecar" else None
                    time.sleep(0.2)
                    if sc.saturation:
                        res = with_usage(
                            st, path, functools.partial(run_wrk, url(path), script, duration)
                        )
                        shown = f"{res['rps']:8.0f} req/s"
                    else:
                        res = with_usage(
                            st, path, functools.partial(run_hey, url(path), sc, body, duration)
                        )
                        shown = (f"p50 {res['p50_ms']:6.2f} ms  p99 {res['p99_ms']:6.2f} ms  "
                                 f"{res['rps']:6.0f} req/s")  # fmt: skip
                    shown += f"  CPU {res['cpu_pct']:3.0f}%  RSS {res['rss_mib']:4.0f} MiB"
                    if before is not None:
                        dl = delta(snapshot(st, "sidecar", timeout=20.0), before)
                        dl["sent"] = res["requests"]
                        capture[sc.key].append(dl)
                    raw[sc.key][path].append(res)
                    failed = f"  FAILED {res['failed']}" if res["failed"] else ""
                    log(f"[{r + 1}/{repeats}] mlserver {sc.key:<10} {path:<8} {shown}{failed}")
        for proc in st.procs:
            if not proc.alive():
                raise RuntimeError(f"{proc.name} died during the run:\n{proc.tail()}")
        peak = {name: peak_rss_mib(proc.popen.pid) for name, proc in st.proc_of.items()}
        tmp_s = str(tmp)
        load = {
            sc.key: {
                p: shlex.join(
                    wrk_argv(url(p), script, duration)
                    if sc.saturation
                    else hey_argv(url(p), sc, body, duration)
                ).replace(tmp_s, "$TMP")
                for p in PATHS
            }
            for sc in SCENARIOS
        }
        results: dict[str, Any] = {
            "name": NAME,
            "raw": raw,
            "capture_raw": capture,
            "summary": summarize(raw, capture),
            "peak_rss_mib": peak,
            "settings": {"duration_s": duration, "repeats": repeats, "warmup_s": warmup},
            "commands": {
                "servers": {k: v.replace(tmp_s, "$TMP") for k, v in st.commands.items()},
                "load": load,
            },
            "mlserver_version": _mlserver_version(),
        }
        _, status = http_get(st.collector + "/v1/status")
        results["collector_final"] = {
            k: v for k, v in json.loads(status).items() if k in ("recordsIngested", "phase")
        }
        results["elapsed_s"] = round(time.monotonic() - started, 1)
        results["loadavg"] = {"start": load_start, "end": loadavg()}
        results["verdicts"] = verdicts(results)
        results["text"] = render_text(results)
        return results


def _mlserver_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("mlserver")
    except metadata.PackageNotFoundError:
        return "?"


def summarize(
    raw: dict[str, dict[str, list[dict[str, Any]]]], capture: dict[str, list[dict[str, Any]]]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for sc in SCENARIOS:
        out[sc.key] = {}
        for path in PATHS:
            runs = raw[sc.key][path]
            row = {k: _median([x[k] for x in runs]) for k in ("rps", "cpu_pct", "rss_mib")}
            row["failed"] = float(sum(x["failed"] for x in runs))
            row["requests"] = float(sum(x["requests"] for x in runs))
            row["collector_cpu_pct"] = _median([x.get("collector_cpu_pct", math.nan)
                                                for x in runs])  # fmt: skip
            if not sc.saturation:
                direct = raw[sc.key]["direct"]
                for q in ("p50_ms", "p90_ms", "p99_ms"):
                    row[q] = _median([x[q] for x in runs])
                    if path != "direct":
                        row[f"added_{q}"] = _median(
                            [x[q] - d[q] for x, d in zip(runs, direct, strict=True)]
                        )
            out[sc.key][path] = row
        caps = capture[sc.key]
        dropped: dict[str, float] = {}
        for c in caps:
            for k, v in {**c["records_dropped"], **c["exchanges_dropped"]}.items():
                dropped[k] = dropped.get(k, 0.0) + v
        out[sc.key]["capture"] = {
            "sent": sum(c["sent"] for c in caps),
            "served": sum(c["responses"] for c in caps),
            "captured": sum(c["records_captured"] for c in caps),
            "delivered": sum(c["collector_records"] for c in caps),
            "dropped": dropped,
        }
    return out


def verdicts(res: dict[str, Any]) -> list[dict[str, str]]:
    s = res["summary"]
    out = []
    for sc in SCENARIOS:
        if sc.saturation:
            continue
        side = s[sc.key]["sidecar"]
        ng = s[sc.key]["nginx"]
        out.append({
            "target": f"MLServer at {sc.title}: added by the sidecar (capture on) vs by nginx",
            "status": "INFO",
            "figure": f"p50 {_f(side['added_p50_ms'])} vs {_f(ng['added_p50_ms'])} ms, "
                      f"p99 {_f(side['added_p99_ms'])} vs {_f(ng['added_p99_ms'])} ms",
        })  # fmt: skip
    sat = s["saturation"]
    out.append({
        "target": "MLServer at saturation: sidecar (capture on) vs direct",
        "status": "INFO",
        "figure": f"{sat['sidecar']['rps']:,.0f} vs {sat['direct']['rps']:,.0f} req/s "
                  f"({100 * sat['sidecar']['rps'] / max(sat['direct']['rps'], 1):.0f}%)",
    })  # fmt: skip
    sent = sum(s[sc.key]["capture"]["served"] for sc in SCENARIOS if not sc.saturation)
    got = sum(s[sc.key]["capture"]["delivered"] for sc in SCENARIOS if not sc.saturation)
    out.append({
        "target": ">= 99.9% of records delivered below saturation (MLServer upstream)",
        "status": "PASS" if sent and got / sent >= 0.999 else "MISS",
        "figure": f"{got:,.0f} delivered of {sent:,.0f} requests served (1 row each)",
    })  # fmt: skip
    return out


def tables(res: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    s = res["summary"]
    n, d = res["settings"]["repeats"], res["settings"]["duration_s"]
    out = []
    for sc in SCENARIOS:
        if sc.saturation:
            continue
        header = ["path", "p50 ms", "p90 ms", "p99 ms", "added p50", "added p90", "added p99",
                  "req/s", "failed", "CPU %", "RSS MiB"]  # fmt: skip
        rows = []
        for path, label in PATHS.items():
            r = s[sc.key][path]
            rows.append([label, _f(r["p50_ms"]), _f(r["p90_ms"]), _f(r["p99_ms"]),
                         _f(r.get("added_p50_ms", math.nan)), _f(r.get("added_p90_ms", math.nan)),
                         _f(r.get("added_p99_ms", math.nan)), _f(r["rps"], ".0f"),
                         _f(r["failed"], ".0f"), _f(r["cpu_pct"], ".0f"),
                         _f(r["rss_mib"], ".0f")])  # fmt: skip
        title = (f"MLServer, {sc.title} (hey -c {sc.workers} -q {sc.per_worker}, {d:g} s x {n}, "
                 "medians; added = path - direct, same repeat)")  # fmt: skip
        out.append((title, header, rows))
    header = ["path", "req/s", "vs direct", "failed", "CPU %", "RSS MiB"]
    base = s["saturation"]["direct"]["rps"]
    rows = [[label, _f(s["saturation"][p]["rps"], ",.0f"),
             f"{100 * s['saturation'][p]['rps'] / base:.0f}%" if base else "-",
             _f(s["saturation"][p]["failed"], ".0f"), _f(s["saturation"][p]["cpu_pct"], ".0f"),
             _f(s["saturation"][p]["rss_mib"], ".0f")] for p, label in PATHS.items()]  # fmt: skip
    out.append((f"MLServer, saturation (wrk -t1 -c{WRK_CONNECTIONS}, 1 row, {d:g} s x {n}, "
                "medians)", header, rows))  # fmt: skip
    header = ["sidecar, capture on", "requests sent", "served", "records captured",
              "delivered", "delivered / served", "collector CPU %"]  # fmt: skip
    rows = []
    for sc in SCENARIOS:
        c = s[sc.key]["capture"]
        rows.append([sc.title, f"{c['sent']:,}", f"{c['served']:,.0f}", f"{c['captured']:,.0f}",
                     f"{c['delivered']:,.0f}",
                     f"{100 * c['delivered'] / c['served']:.3f}%" if c["served"] else "-",
                     _f(s[sc.key]["sidecar"]["collector_cpu_pct"], ".0f")])  # fmt: skip
    title = ("MLServer, capture (all repeats; sent = hey's/wrk's responses, served = the "
             "sidecar's own count, delivered = the collector's count)")  # fmt: skip
    out.append((title, header, rows))
    return out


def render_text(res: dict[str, Any]) -> str:
    parts = [f"{t}\n{_text_table(h, r)}" for t, h, r in tables(res)]
    parts.append("\n".join(f"{v['status']:<8}  {v['target']}: {v['figure']}"
                           for v in res["verdicts"]))  # fmt: skip
    return "\n\n".join(parts)


def render_markdown(res: dict[str, Any]) -> str:
    out = [
        "## Sidecar overhead in front of a real model server (`benchmarks/sidecar_mlserver.py`)",
        "",
        f"MLServer {res['mlserver_version']} (sklearn runtime, `parallel_workers: 0`) serving "
        "the iris LogisticRegression of `mlwarden demo`, called directly, through nginx as a "
        "reverse proxy (keepalive pool) and through `mlwarden sidecar` with capture on, "
        "shipping to a real `mlwarden detector`. Same load shape as the fixed-upstream "
        "section: `hey -c 10 -q R/10` (10 workers whose tickers run in step, so requests "
        "arrive in bursts of 10 every 10/R s; a worker waits for its answer before the "
        "next, so when the path cannot keep up the rate falls short, shown in req/s); "
        "p50/p90/p99 nearest-rank over every request of a run, in hey's "
        f"{RESOLUTION_MS} ms steps. CPU % and RSS as in the section above (the upstream's "
        "for `direct`, the proxy's for the others).",
        "",
        "### Verdicts",
        "",
    ]
    out += [f"- **{v['status']}** — {v['target']}: {v['figure']}" for v in res["verdicts"]]
    out += [
        "",
        f"Load average (1, 5, 15 min) at the start of this benchmark {res['loadavg']['start']}, "
        f"at its end {res['loadavg']['end']}.",
    ]
    out.append("")
    for title, header, rows in tables(res):
        out += [f"### {title}", "", _md_table(header, rows), ""]
    drops: dict[str, float] = {}
    for sc in SCENARIOS:
        for k, v in res["summary"][sc.key]["capture"]["dropped"].items():
            drops[k] = drops.get(k, 0.0) + v
    peaks = ", ".join(f"{k} {_f(v, '.0f')} MiB" for k, v in res["peak_rss_mib"].items())
    out.append(
        f"Drops by reason (sidecar /metrics): {drops or 'none'}. Peak RSS (VmHWM, summed over "
        f"a server's processes) over the run: {peaks}."
    )
    out += ["", "### Exact commands", "", "Servers ($TMP is the run's temporary directory):", ""]
    out += [f"- {k}: `{v}`" for k, v in res["commands"]["servers"].items()]
    out += ["", "Load (each ran once per repeat; the body and post.lua as in the section above, "
            "model `iris`):", ""]  # fmt: skip
    for key, by_path in res["commands"]["load"].items():
        out.append(f"- {key}:")
        out += [f"  - {PATHS[p]}: `{cmd}`" for p, cmd in by_path.items()]
    out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=float, default=2.0)
    args = parser.parse_args()
    figures = run(duration=args.duration, repeats=args.repeats, warmup=args.warmup)
    print(figures["text"])
