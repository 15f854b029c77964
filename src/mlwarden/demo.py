"""`mlwarden demo`: what exists today, run for real on this machine with no cluster.

A scikit-learn model (LogisticRegression on the iris data set bundled with
scikit-learn) served by MLServer, the real `mlwarden sidecar` in front of it,
and a collector standing in for the detector. The demo sends steady traffic,
then an "upstream incident" (petal_length starts arriving in millimetres
instead of centimetres) and a few malformed requests, and shows what the
sidecar captured: the shift is plainly visible in the records, the model never
saw an error, and the sidecar's own counters account for every request.

Detection, diagnosis and reaction join the demo as the detector, operator and
diagnosis issues land; until then it says so instead of pretending.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")
MANIFEST = """\
apiVersion: mlwarden.io/v1alpha1
kind: ObservedModel
metadata: {name: iris, namespace: demo}
spec:
  target: {deployment: iris, service: iris, container: model, port: 8080}
  protocol: v2
  features:
    - {name: sepal_length, type: numeric}
    - {name: sepal_width, type: numeric}
    - {name: petal_length, type: numeric}
    - {name: petal_width, type: numeric}
  prediction: {name: predict, type: categorical}
"""


class DemoError(RuntimeError):
    pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(url: str, timeout: float, what: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DemoError(f"{what} exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise DemoError(f"{what} did not become ready within {timeout:.0f}s ({url})")


def write_iris_model(root: Path) -> Path:
    """An MLServer model repository under `root`: iris/ with the model and its settings."""
    try:
        import joblib
        from sklearn.datasets import load_iris
        from sklearn.linear_model import LogisticRegression
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise DemoError(
            "the demo needs scikit-learn and MLServer: pip install 'mlwarden[demo]'"
        ) from exc
    model_dir = root / "iris"
    model_dir.mkdir(parents=True)
    x, y = load_iris(return_X_y=True)
    joblib.dump(LogisticRegression(max_iter=1000).fit(x, y), model_dir / "model.joblib")
    (model_dir / "model-settings.json").write_text(
        json.dumps(
            {
                "name": "iris",
                "implementation": "mlserver_sklearn.SKLearnModel",
                "parameters": {"uri": "./model.joblib", "version": "v1"},
            }
        )
    )
    return model_dir


class _Collector:
    """Stands in for the detector: a real HTTP endpoint that keeps what the sidecar ships."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        self.batches = 0
        self.port = _free_port()

    async def start(self) -> Any:
        from aiohttp import web

        async def ingest(request: web.Request) -> web.Response:
            batch = await request.json(loads=json.loads)
            self.batches += 1
            self.records += batch["records"]
            self.requests += batch["requests"]
            return web.json_response({"accepted": len(batch["records"])})

        app = web.Application(client_max_size=64 << 20)
        app.router.add_post("/v1/records", ingest)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        return runner


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


async def _traffic(sidecar_url: str, requests: int, say: Any) -> dict[str, int]:
    import aiohttp
    import numpy as np
    from sklearn.datasets import load_iris

    x, _ = load_iris(return_X_y=True)
    rng = np.random.default_rng(0)
    counts = {"sent": 0, "ok": 0, "model_4xx": 0, "failed": 0}
    url = f"{sidecar_url}/v2/models/iris/infer"
    half = requests // 2
    async with aiohttp.ClientSession() as session:
        for i in range(requests):
            rows = x[rng.choice(len(x), size=int(rng.integers(1, 5)))].copy()
            if i == half:
                say("[bold red]incident[/]: the feature job now sends petal_length in millimetres")
            if i >= half:
                rows[:, 2] *= 10.0
            body: bytes = json.dumps(
                {
                    "inputs": [
                        {
                            "name": "input-0",
                            "shape": list(rows.shape),
                            "datatype": "FP64",
                            "data": rows.ravel().tolist(),
                        }
                    ]
                }
            ).encode()
            if i % 50 == 25:
                body = b'{"inputs": "this is not a tensor"'  # a malformed request
            counts["sent"] += 1
            headers = {"Content-Type": "application/json", "X-Request-Id": f"demo-{i}"}
            try:
                async with session.post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    if resp.status == 200:
                        counts["ok"] += 1
                    elif resp.status < 500:
                        counts["model_4xx"] += 1
                    else:
                        counts["failed"] += 1
            except aiohttp.ClientError:
                counts["failed"] += 1
            await asyncio.sleep(0.005)
    return counts


def _metrics(admin_url: str) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"{admin_url}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            reason = s.labels.get("reason")
            out[f"{s.name}:{reason}" if reason else s.name] = s.value
    return out


def run_demo(*, requests: int = 200, keep_running: bool = False) -> int:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # pragma: no cover
        print("the demo needs rich: pip install 'mlwarden[demo]'", file=sys.stderr)
        return 2
    console = Console()
    say = console.print
    mlserver_bin = shutil.which("mlserver") or str(Path(sys.executable).with_name("mlserver"))
    if not Path(mlserver_bin).exists():
        say("[red]the demo needs MLServer:[/] pip install 'mlwarden[demo]'")
        return 2
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="mlwarden-demo-") as tmp:
        root = Path(tmp)
        try:
            return asyncio.run(_run(root, mlserver_bin, requests, keep_running, procs, say, Table))
        except DemoError as exc:
            say(f"[red]demo failed:[/] {exc}")
            for log in sorted(root.glob("*.log")):
                say(f"--- {log.name} (last lines) ---\n" + log.read_text()[-2000:])
            return 1
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in procs:
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()


async def _run(
    root: Path,
    mlserver_bin: str,
    requests: int,
    keep_running: bool,
    procs: list[subprocess.Popen[bytes]],
    say: Any,
    table_cls: Any,
) -> int:
    started = time.monotonic()
    say("[bold]mlwarden demo[/]: MLServer + the mlwarden sidecar, on loopback, no cluster\n")
    write_iris_model(root / "models")
    model_port = _free_port()
    (root / "models" / "settings.json").write_text(
        json.dumps(
            {
                "host": "127.0.0.1",
                "http_port": model_port,
                "grpc_port": _free_port(),
                "metrics_port": _free_port(),
                "parallel_workers": 0,
            }
        )
    )
    model_url = f"http://127.0.0.1:{model_port}"
    with open(root / "mlserver.log", "wb") as log:
        procs.append(
            subprocess.Popen(
                [mlserver_bin, "start", str(root / "models")], stdout=log, stderr=subprocess.STDOUT
            )
        )
    say(f"• MLServer (scikit-learn runtime) serving [bold]iris[/] on {model_url}")
    _wait_http(f"{model_url}/v2/models/iris/ready", 90, "MLServer", procs[-1])

    collector = _Collector()
    runner = await collector.start()
    (root / "iris.yaml").write_text(MANIFEST)
    port, admin = _free_port(), _free_port()
    with open(root / "sidecar.log", "wb") as log:
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "mlwarden.cli",
                    "sidecar",
                    "--listen",
                    f"127.0.0.1:{port}",
                    "--upstream",
                    model_url,
                    "--collector",
                    f"http://127.0.0.1:{collector.port}",
                    "--admin-listen",
                    f"127.0.0.1:{admin}",
                    "--observed-model",
                    str(root / "iris.yaml"),
                    "--batch-interval",
                    "0.2",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
    sidecar_url, admin_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin}"
    await asyncio.to_thread(_wait_http, f"{admin_url}/readyz", 30, "the sidecar", procs[-1])
    say(f"• mlwarden sidecar on {sidecar_url} → model; metrics on {admin_url}/metrics")
    say(f"• collector (stands in for the detector) on 127.0.0.1:{collector.port}\n")
    say(f"Sending {requests} inference requests (1-4 rows each) through the sidecar…")

    counts = await _traffic(sidecar_url, requests, say)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(collector.requests) < counts["sent"]:
        await asyncio.sleep(0.1)
    m = await asyncio.to_thread(_metrics, admin_url)

    half = requests // 2
    before = [r for r in collector.records if int(r["id"].split("-")[1]) < half]
    after = [r for r in collector.records if int(r["id"].split("-")[1]) >= half]
    table = table_cls(title="What the sidecar captured (mean per feature)")
    table.add_column("feature")
    table.add_column("before the incident", justify="right")
    table.add_column("after", justify="right")
    table.add_column("ratio", justify="right")
    for f in FEATURES:
        a = _mean([float(r["features"][f]) for r in before])
        b = _mean([float(r["features"][f]) for r in after])
        style = "bold red" if abs(b / a - 1) > 0.5 else ""
        table.add_row(
            f, f"{a:.2f}", f"{b:.2f}", f"[{style}]{b / a:.2f}×[/]" if style else f"{b / a:.2f}×"
        )
    say(table)

    summary = table_cls(title="Accounting")
    summary.add_column("")
    summary.add_column("count", justify="right")
    rows = [
        ("requests sent through the sidecar", counts["sent"]),
        ("answered 200 by the model", counts["ok"]),
        ("answered 4xx by the model (malformed on purpose)", counts["model_4xx"]),
        ("failed because of the sidecar", counts["failed"]),
        ("exchanges captured", int(m.get("mlwarden_sidecar_exchanges_captured_total", 0))),
        (
            "  malformed, counted as unparseable",
            int(m.get("mlwarden_sidecar_exchanges_dropped_total:unparseable", 0)),
        ),
        ("records (rows) captured", int(m.get("mlwarden_sidecar_records_captured_total", 0))),
        ("records shipped to the collector", len(collector.records)),
        (
            "records dropped",
            int(
                sum(
                    v
                    for k, v in m.items()
                    if k.startswith("mlwarden_sidecar_records_dropped_total")
                )
            ),
        ),
        ("sidecar overhead p50 / p99 (ms)", _overhead(admin_url)),
    ]
    for label, value in rows:
        summary.add_row(label, str(value))
    say(summary)
    say(
        "\nThe shift in petal_length is in the captured records, and no request failed because "
        "of the sidecar.\n[dim]Not built yet: the detector that flags it (issue 3), the operator "
        "(issue 4), diagnosis and reaction (issue 5). They join this demo as they land.[/]"
    )
    say(f"[dim]Demo finished in {time.monotonic() - started:.1f}s.[/]")
    if keep_running:
        say(
            f"\nStill running. Try:\n  curl -s {sidecar_url}/v2/models/iris\n"
            f"  curl -s {admin_url}/metrics | grep mlwarden_\nCtrl-C to stop."
        )
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.Event().wait()
    await runner.cleanup()
    return 0 if counts["failed"] == 0 else 1


def _overhead(admin_url: str) -> str:
    """p50 and p99 of the sidecar's overhead histogram, interpolated like histogram_quantile."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"{admin_url}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    buckets: list[tuple[float, float]] = []
    for family in text_string_to_metric_families(text):
        if family.name == "mlwarden_sidecar_overhead_seconds":
            for s in family.samples:
                if s.name.endswith("_bucket"):
                    buckets.append((float(s.labels["le"]), s.value))
    buckets.sort()
    total = buckets[-1][1] if buckets else 0

    def quantile(q: float) -> float:
        rank, prev_le, prev_count = q * total, 0.0, 0.0
        for le, count in buckets:
            if count >= rank:
                if le == float("inf"):
                    return prev_le
                span = count - prev_count
                return prev_le + (le - prev_le) * ((rank - prev_count) / span if span else 0)
            prev_le, prev_count = le, count
        return float("nan")

    return f"{quantile(0.5) * 1000:.2f} / {quantile(0.99) * 1000:.2f}" if total else "n/a"
