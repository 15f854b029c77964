"""Debian's Prometheus scraping the real sidecar and detector, with the chart's rules loaded.

The metric names and labels the chart's alerts and dashboard rely on are checked where they
matter: in a real Prometheus that scraped the real processes (`/usr/bin/prometheus` from Debian's
`prometheus` package, on loopback, its TSDB in a temp dir). The scrape config gives the targets
the job names the chart's PodMonitors give them (mlwarden-sidecar, mlwarden-detector), so the
rules file loads as `rule_files` exactly as the PrometheusRule ships it, and a drift the detector
finds shows up as the MLwardenModelDrifting alert, pending its 15 minutes.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import yaml
from aiohttp import web
from harness import (
    DetectorProcess,
    ManagedProcess,
    SidecarProcess,
    ThreadedServer,
    free_port,
    iris_spec,
    manifest,
    start_process,
    wait_until,
)

ROOT = Path(__file__).resolve().parents[2]
RULES_FILE = ROOT / "charts" / "mlwarden" / "rules" / "mlwarden-rules.yaml"
DASHBOARD = ROOT / "charts" / "mlwarden" / "dashboards" / "mlwarden.json"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"

pytestmark = pytest.mark.skipif(
    not Path(PROMETHEUS).exists(),
    reason="prometheus not found: install Debian's prometheus package (apt-get install prometheus)",
)

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
SPEC = iris_spec(size=60)
ROWS_PER_REQUEST = 3


def v2_model() -> web.Application:
    """A tiny Open Inference Protocol v2 model: predicts 1 when petal_length > 2.5."""

    async def infer(request: web.Request) -> web.Response:
        body = await request.json()
        (tensor,) = body["inputs"]
        rows = np.asarray(tensor["data"], dtype=float).reshape(tensor["shape"])
        predict = (rows[:, 2] > 2.5).astype(int).tolist()
        return web.json_response(
            {
                "model_name": request.match_info["model"],
                "outputs": [
                    {
                        "name": "predict",
                        "shape": [len(predict)],
                        "datatype": "INT64",
                        "data": predict,
                    }
                ],
            }
        )

    app = web.Application()
    app.router.add_post("/v2/models/{model}/infer", infer)
    return app


class Prometheus(ManagedProcess):
    def query(self, expr: str) -> list[dict[str, Any]]:
        reply = requests.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=5).json()
        assert reply["status"] == "success", f"{expr}: {reply}"
        result: list[dict[str, Any]] = reply["data"]["result"]
        return result

    def api(self, path: str) -> Any:
        reply = requests.get(f"{self.url}/api/v1/{path}", timeout=5).json()
        assert reply["status"] == "success", reply
        return reply["data"]


@pytest.fixture
def model() -> Iterator[str]:
    server = ThreadedServer(v2_model()).start()
    yield server.url
    server.stop()


@pytest.fixture
def start_prometheus(tmp_path: Path) -> Iterator[Callable[[dict[str, str]], Prometheus]]:
    started: list[Prometheus] = []

    def start(targets: dict[str, str]) -> Prometheus:
        """Scrape each job -> HOST:PORT every second, with the chart's rules loaded."""
        pods = {"mlwarden-sidecar": "iris-model-0", "mlwarden-detector": "iris-detector-0"}
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES_FILE)],
            "scrape_configs": [
                {
                    "job_name": job,
                    "static_configs": [
                        {"targets": [target], "labels": {"namespace": "test", "pod": pods[job]}}
                    ],
                }
                for job, target in targets.items()
            ],
        }
        config_path = tmp_path / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config))
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log = tmp_path / "prometheus.log"
        args = [
            PROMETHEUS,
            f"--config.file={config_path}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ]
        proc = start_process(args, log, f"{url}/-/ready", "prometheus")
        prometheus = Prometheus(proc, url, log)
        started.append(prometheus)
        return prometheus

    yield start
    for prometheus in started:
        prometheus.stop()


def send(sidecar: SidecarProcess, rng: np.random.Generator, n: int, scale: float = 1.0) -> None:
    session = requests.Session()
    for _ in range(n):
        rows = rng.normal([5.8, 3.0, 3.8, 1.2], [0.8, 0.4, 1.7, 0.7], (ROWS_PER_REQUEST, 4))
        rows[:, 2] *= scale  # petal_length in millimetres instead of centimetres
        body = {
            "inputs": [
                {
                    "name": "x",
                    "shape": [ROWS_PER_REQUEST, 4],
                    "datatype": "FP64",
                    "data": rows.ravel().tolist(),
                }
            ]
        }
        resp = session.post(f"{sidecar.url}/v2/models/iris/infer", json=body, timeout=10)
        assert resp.status_code == 200, resp.text


def value(series: dict[str, Any]) -> float:
    return float(series["value"][1])


def test_prometheus_scrapes_the_metrics_the_chart_relies_on(
    tmp_path: Path,
    model: str,
    start_sidecar: Callable[..., SidecarProcess],
    start_detector: Callable[..., DetectorProcess],
    start_prometheus: Callable[[dict[str, str]], Prometheus],
) -> None:
    om = manifest(tmp_path, SPEC, name="iris")
    detector = start_detector(om)
    sidecar = start_sidecar(model, "--observed-model", str(om), collector=detector.url)
    prometheus = start_prometheus(
        {
            "mlwarden-sidecar": sidecar.admin_url.removeprefix("http://"),
            "mlwarden-detector": detector.url.removeprefix("http://"),
        }
    )
    rng = np.random.default_rng(7)
    send(sidecar, rng, 20)  # 60 rows: the warm-up reference
    wait_until(lambda: detector.status()["phase"] == "Observing", what="reference from warm-up")
    send(sidecar, rng, 20, scale=10.0)  # then petal_length drifts
    requests_sent, rows_sent = 40, 40 * ROWS_PER_REQUEST

    # Both targets are up, under the job names the chart's monitors give them.
    wait_until(
        lambda: len(prometheus.query('up{job=~"mlwarden-.*"} == 1')) == 2, what="both targets up"
    )

    # The sidecar: requests by status class, records shipped, drops by reason.
    def scraped(expr: str, total: float) -> bool:
        return sum(value(s) for s in prometheus.query(expr)) == total

    wait_until(
        lambda: scraped('mlwarden_sidecar_requests_total{code_class="2xx"}', requests_sent),
        what="the sidecar's requests scraped",
    )
    (ok,) = prometheus.query('mlwarden_sidecar_requests_total{code_class="2xx"}')
    assert ok["metric"] == {
        "__name__": "mlwarden_sidecar_requests_total",
        "code_class": "2xx",
        "job": "mlwarden-sidecar",
        "instance": sidecar.admin_url.removeprefix("http://"),
        "namespace": "test",
        "pod": "iris-model-0",
    }
    classes = {
        s["metric"]["code_class"] for s in prometheus.query("mlwarden_sidecar_requests_total")
    }
    assert classes == {"1xx", "2xx", "3xx", "4xx", "5xx"}  # pre-created: zeros, not gaps
    wait_until(
        lambda: scraped("mlwarden_sidecar_records_shipped_total", rows_sent),
        what="records shipped scraped",
    )
    (shipped,) = prometheus.query("mlwarden_sidecar_records_shipped_total")
    assert shipped["metric"]["job"] == "mlwarden-sidecar"
    dropped = prometheus.query("mlwarden_sidecar_records_dropped_total")
    assert {s["metric"]["reason"] for s in dropped} == {
        "buffer_full",
        "rejected",
        "unauthorized",
        "retries_exhausted",
        "worker_lost",
    }
    assert sum(value(s) for s in dropped) == 0
    (captured,) = prometheus.query("mlwarden_sidecar_exchanges_captured_total")
    assert captured["metric"]["protocol"] == "v2" and value(captured) == requests_sent
    overhead = prometheus.query("mlwarden_sidecar_overhead_seconds_count")
    assert [value(s) for s in overhead] == [requests_sent]

    # The detector: records ingested, drift statistic per feature and test, the model's name.
    wait_until(
        lambda: scraped("mlwarden_detector_records_ingested_total", rows_sent),
        what="records ingested scraped",
    )
    (ingested,) = prometheus.query("mlwarden_detector_records_ingested_total")
    assert ingested["metric"]["job"] == "mlwarden-detector"
    assert ingested["metric"]["pod"] == "iris-detector-0"
    (info,) = prometheus.query("mlwarden_detector_info")
    assert info["metric"]["model"] == "test/iris"
    statistics = prometheus.query("mlwarden_detector_drift_statistic")
    assert {s["metric"]["feature"] for s in statistics} >= set(FEATURES)
    assert {s["metric"]["test"] for s in statistics if s["metric"]["feature"] in FEATURES} == {"ks"}

    # The chart's rules loaded from the file, every one evaluated without error ...
    def rules_healthy() -> bool:
        groups = prometheus.api("rules")["groups"]
        return all(r["health"] == "ok" for g in groups for r in g["rules"])

    wait_until(rules_healthy, what="every rule evaluated")
    groups = prometheus.api("rules")["groups"]
    source = yaml.safe_load(RULES_FILE.read_text())["groups"]
    assert sorted(g["name"] for g in groups) == sorted(g["name"] for g in source)
    assert sum(len(g["rules"]) for g in groups) == sum(len(g["rules"]) for g in source)

    # ... and the drift the detector found is the MLwardenModelDrifting alert, pending (15m).
    def drifting() -> list[dict[str, Any]]:
        alerts = prometheus.api("alerts")["alerts"]
        return [
            a
            for a in alerts
            if a["labels"]["alertname"] == "MLwardenModelDrifting"
            and a["labels"].get("feature") == "petal_length"
        ]

    wait_until(lambda: bool(drifting()), timeout=30, what="MLwardenModelDrifting pending")
    (alert,) = drifting()
    assert alert["state"] == "pending"
    assert alert["labels"] == {
        "alertname": "MLwardenModelDrifting",
        "severity": "warning",
        "namespace": "test",
        "model": "test/iris",
        "type": "FeatureDrift",
        "feature": "petal_length",
        "test": "ks",
    }
    firing = [a for a in prometheus.api("alerts")["alerts"] if a["state"] == "firing"]
    assert firing == []  # nothing is down or dropping; drift waits its 15 minutes

    check_dashboard_queries(prometheus)


def check_dashboard_queries(prometheus: Prometheus) -> None:
    """The Grafana dashboard's PromQL, with its variables filled in, runs against real series."""
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {"$namespace": ".*", "$model": ".*", "$pod": ".*", "$__rate_interval": "1m"}

    def filled(expr: str) -> str:
        for name, replacement in variables.items():
            expr = expr.replace(name, replacement)
        return expr

    targets = [t for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(targets) >= 20
    for target in targets:
        prometheus.query(filled(target["expr"]))  # asserts success: it parses and evaluates
    (panel,) = [p for p in dashboard["panels"] if p["title"] == "Drift statistic per feature"]
    drift = prometheus.query(filled(panel["targets"][0]["expr"]))
    assert {s["metric"]["model"] for s in drift} == {"test/iris"}
    assert {s["metric"]["feature"] for s in drift} >= set(FEATURES)
