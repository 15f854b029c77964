"""`mlwarden demo`: what exists today, run for real on this machine with no cluster.

A scikit-learn model (LogisticRegression on the iris data set bundled with
scikit-learn) served by MLServer, the real `mlwarden sidecar` in front of it,
and the real `mlwarden detector` behind it. The story: steady traffic builds the
reference; an upstream incident (petal_length starts arriving in millimetres
instead of centimetres) is detected on that feature, with the test and the
time it took; the model never saw an error, and the sidecar's counters account
for every request.

Diagnosis and reaction (the operator issues) join the story as they land;
until then the demo says so instead of pretending.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
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
  reference: {source: warmup, size: 300}
  window: {size: 300}
  detectors:
    latency: {p99Ms: 250}
    errors: {maxRate: 0.02}
  # Fast for a demo; in production the defaults are 30s and 3/3.
  alerting: {evaluationInterval: 500ms, fireAfter: 2, resolveAfter: 2}
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


class _Traffic:
    """Clients of the model: iris rows, 1-4 per request, through the sidecar."""

    def __init__(self, sidecar_url: str) -> None:
        import numpy as np
        from sklearn.datasets import load_iris

        self.x, _ = load_iris(return_X_y=True)
        self.rng = np.random.default_rng(0)
        self.url = f"{sidecar_url}/v2/models/iris/infer"
        self.counts = {"sent": 0, "ok": 0, "model_4xx": 0, "failed": 0}

    async def send(self, n: int, *, petal_length_unit: float = 1.0) -> None:
        import aiohttp

        async with aiohttp.ClientSession() as session:
            for _ in range(n):
                i = self.counts["sent"]
                rows = self.x[self.rng.choice(len(self.x), size=int(self.rng.integers(1, 5)))]
                rows = rows.copy()
                rows[:, 2] *= petal_length_unit
                tensor = {
                    "name": "input-0",
                    "shape": list(rows.shape),
                    "datatype": "FP64",
                    "data": rows.ravel().tolist(),
                }
                body = json.dumps({"inputs": [tensor]}).encode()
                if i % 50 == 25:
                    body = b'{"inputs": "this is not a tensor"'  # a malformed request
                self.counts["sent"] += 1
                headers = {"Content-Type": "application/json", "X-Request-Id": f"demo-{i}"}
                try:
                    async with session.post(self.url, data=body, headers=headers) as resp:
                        await resp.read()
                        key = (
                            "ok"
                            if resp.status == 200
                            else ("model_4xx" if resp.status < 500 else "failed")
                        )
                        self.counts[key] += 1
                except aiohttp.ClientError:
                    self.counts["failed"] += 1
                await asyncio.sleep(0.004)


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.load(resp)


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


def run_demo(*, keep_running: bool = False) -> int:
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
            return asyncio.run(_run(root, mlserver_bin, keep_running, procs, say, Table))
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
    keep_running: bool,
    procs: list[subprocess.Popen[bytes]],
    say: Any,
    table_cls: Any,
) -> int:
    started = time.monotonic()
    say(
        "[bold]mlwarden demo[/]: MLServer, the mlwarden sidecar and detector, on loopback, "
        "no cluster\n"
    )
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

    (root / "iris.yaml").write_text(MANIFEST)
    # As in a cluster: the sidecar and the detector share an ingest token, and the detector
    # stores its reference (here in a directory rather than a ConfigMap).
    (root / "ingest-token").write_text(secrets.token_urlsafe(32))
    detector_port = _free_port()
    detector_url = f"http://127.0.0.1:{detector_port}"
    with open(root / "detector.log", "wb") as log:
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "mlwarden.cli",
                    "detector",
                    "--observed-model",
                    str(root / "iris.yaml"),
                    "--listen",
                    f"127.0.0.1:{detector_port}",
                    "--ingest-token-file",
                    str(root / "ingest-token"),
                    "--reference-store",
                    str(root / "reference-store"),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
    await asyncio.to_thread(_wait_http, f"{detector_url}/readyz", 30, "the detector", procs[-1])
    say(f"• mlwarden detector for demo/iris on {detector_url} (GET /v1/status)")

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
                    detector_url,
                    "--admin-listen",
                    f"127.0.0.1:{admin}",
                    "--observed-model",
                    str(root / "iris.yaml"),
                    "--batch-interval",
                    "0.2",
                    "--ingest-token-file",
                    str(root / "ingest-token"),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
    sidecar_url, admin_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin}"
    await asyncio.to_thread(_wait_http, f"{admin_url}/readyz", 30, "the sidecar", procs[-1])
    say(
        f"• mlwarden sidecar on {sidecar_url} → model, shipping to the detector; "
        f"metrics on {admin_url}/metrics\n"
    )

    def status() -> Any:
        return _get_json(f"{detector_url}/v1/status")

    async def wait_for(predicate: Any, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if predicate(await asyncio.to_thread(status)):
                return True
            await asyncio.sleep(0.2)
        return False

    traffic = _Traffic(sidecar_url)
    say("[bold]1. Steady traffic[/]: the detector builds its reference from the first 300 rows")
    await traffic.send(130)
    await wait_for(lambda s: s["phase"] == "Observing", 15)
    st = await asyncio.to_thread(status)
    say(
        f"   reference in force: {st['reference'].get('id')} "
        f"({st['reference'].get('records')} rows)"
    )
    await traffic.send(130)
    await wait_for(lambda s: s["evaluations"] >= 4, 10)
    st = await asyncio.to_thread(status)
    say(f"   {st['evaluations']} evaluations, {len(st['alerts'])} alerts: all quiet\n")

    say(
        "[bold red]2. Incident[/]: the upstream feature job now sends petal_length "
        "in millimetres, not centimetres"
    )
    incident = time.monotonic()
    sent_at_incident = traffic.counts["sent"]
    detected: float | None = None
    for _ in range(12):
        await traffic.send(30, petal_length_unit=10.0)
        st = await asyncio.to_thread(status)
        if any(a["type"] == "FeatureDrift" for a in st["alerts"]):
            detected = time.monotonic() - incident
            break
    if detected is None:
        await wait_for(lambda s: any(a["type"] == "FeatureDrift" for a in s["alerts"]), 10)
        detected = time.monotonic() - incident
    st = await asyncio.to_thread(status)
    requests_to_detect = traffic.counts["sent"] - sent_at_incident
    say(
        f"   detected after {detected:.1f} s and {requests_to_detect} requests "
        "(fireAfter: 2 evaluations, every 500 ms)\n"
    )

    table = table_cls(title="Alerts on the detector (GET /v1/status)")
    for col in ("type", "feature", "test", "statistic", "p-value"):
        table.add_column(col)
    for a in st["alerts"]:
        p = a.get("pValue")
        table.add_row(
            a["type"],
            a.get("feature") or "",
            a["test"],
            f"{float(a['statistic']):.3g}",
            f"{float(p):.2g}" if p is not None else "",
        )
    say(table)
    for a in st["alerts"]:
        say(f"  • {a['type']} {a.get('feature') or ''}: {a.get('message', '')}")
    say("")

    # Let the last batches land before counting: the sidecar ships every 200 ms.
    for _ in range(50):
        m = await asyncio.to_thread(_metrics, admin_url)
        st = await asyncio.to_thread(status)
        shipped = m.get("mlwarden_sidecar_records_shipped_total", 0)
        if m.get("mlwarden_sidecar_records_captured_total", 0) == shipped == st["recordsIngested"]:
            break
        await asyncio.sleep(0.1)
    counts = traffic.counts
    summary = table_cls(title="Accounting")
    summary.add_column("")
    summary.add_column("count", justify="right")
    rows = [
        ("requests sent through the sidecar", counts["sent"]),
        ("answered 200 by the model", counts["ok"]),
        ("answered 4xx by the model (malformed on purpose)", counts["model_4xx"]),
        ("failed because of the sidecar", counts["failed"]),
        (
            "  malformed, counted by the sidecar as unparseable",
            int(m.get("mlwarden_sidecar_exchanges_dropped_total:unparseable", 0)),
        ),
        ("records (rows) captured", int(m.get("mlwarden_sidecar_records_captured_total", 0))),
        (
            "records shipped to the detector",
            int(m.get("mlwarden_sidecar_records_shipped_total", 0)),
        ),
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
        ("records the detector ingested", st["recordsIngested"]),
        ("sidecar overhead p50 / p99 (ms)", _overhead(admin_url)),
        ("time to detect (s)", f"{detected:.1f}"),
    ]
    for label, value in rows:
        summary.add_row(label, str(value))
    say(summary)
    say(
        "\n[dim]Not built yet: the operator (issue 4) that runs this in a cluster and writes the "
        "alerts into the ObservedModel, diagnosis and reaction (issue 5), which would name the "
        "feature job as the suspect and act. They join this demo as they land.[/]"
    )
    say(f"[dim]Demo finished in {time.monotonic() - started:.1f}s.[/]")
    if keep_running:
        say(
            f"\nStill running. Try:\n  curl -s {detector_url}/v1/status\n"
            f"  curl -s {admin_url}/metrics | grep mlwarden_\nCtrl-C to stop."
        )
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.Event().wait()
    return 0 if counts["failed"] == 0 and st["alerts"] else 1


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
