"""`mlwarden demo --fast`: the story's outcomes, from the demo's own summary."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_the_demo_detects_diagnoses_and_reacts(tmp_path: Path) -> None:
    summary, report = tmp_path / "summary.json", tmp_path / "report.html"
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlwarden.cli", "demo", "--fast",
         "--summary-json", str(summary), "--report", str(report)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert proc.stdout is not None
    timer = threading.Timer(300, proc.kill)
    timer.start()
    finished_at, lines = None, []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("Demo finished"):
            finished_at = time.monotonic()
    returncode = proc.wait()
    exited_at = time.monotonic()
    timer.cancel()
    output = "".join(lines)
    # The demo says why it failed before it prints the processes' logs: keep that line.
    why = "".join(line for line in lines if "demo failed" in line or "DemoError" in line)
    assert returncode == 0, why + output[-8000:]
    # Stopping the processes before the API emulator: otherwise its server waits out a
    # 60 s shutdown timeout for the operator's open watches after the story has ended.
    assert finished_at is not None and exited_at - finished_at < 30, output[-2000:]
    out = json.loads(summary.read_text())
    unit, canary, rollout, world = out["incidents"]

    # 1. The feature job's unit change: drift on petal_length alone, blamed on the job,
    #    alerted on, and the model NOT rolled back.
    assert "FeatureDrift" in unit["alerts"]
    assert [f for f in unit["features"] if f != "predict"] == ["petal_length"]
    assert unit["top_suspect"] == "CronJob/feature-etl"
    assert any("feature-etl:2.1" in e for e in unit["evidence"]), unit["evidence"]
    assert any(a.startswith("alert") and "Succeeded" in a for a in unit["actions"])
    skipped = [d for d in unit["action_details"] if d.startswith("rollback")]
    assert skipped and all("Skipped" in d and "CronJob/feature-etl" in d for d in skipped)
    # Retraining would learn the job's bug: not while the diagnosis blames a change.
    retrain = [d for d in unit["action_details"] if d.startswith("retrain")]
    assert retrain and all("Skipped" in d and "CronJob/feature-etl" in d for d in retrain)

    # 2. The bad version as a canary on a tenth of the traffic: judged against stable on its
    #    own requests, blamed on the canary Deployment, its traffic back to stable (verified)
    #    before it has served a few hundred requests.
    assert canary["alerts"] == ["CanaryRegression"]
    assert canary["top_suspect"] == "Deployment/iris-canary"
    assert any(a.startswith("shiftTraffic") and a.endswith("Succeeded") for a in canary["actions"])
    assert 0 < canary["canary_requests"] < 300, canary
    assert canary["verification"] == "Fixed"

    # 3. The bad rollout: prediction drift, blamed on the Deployment, rolled back, and the
    #    rollback verified Fixed on the restored revision's traffic.
    assert rollout["alerts"] == ["PredictionDrift"]
    assert rollout["top_suspect"] == "Deployment/iris"
    assert any(a.startswith("rollback") and a.endswith("Succeeded") for a in rollout["actions"])
    assert rollout["verification"] == "Fixed"
    assert out["final_image"] == "mlwarden-demo/iris:1.0"

    # 4. The world changes (no change in the cluster): no plausible cause, so a retraining
    #    Job starts from CronJob iris-train and is followed to Succeeded.
    # The multivariate check (on by default) may see the same change within the incident: its
    # rows judged whole, sepal_width the most changed. It is the same drift, not another cause.
    assert "FeatureDrift" in world["alerts"], world
    assert set(world["alerts"]) <= {"FeatureDrift", "MultivariateDrift"}, world
    assert world["features"] == ["sepal_width"], world
    assert world["top_suspect"] == "none"
    assert "retrain Succeeded" in world["actions"]

    # One incident per act, each delivered once (and once resolved) through a real
    # Alertmanager when Debian's prometheus-alertmanager is installed.
    incidents = [i["incident"] for i in out["incidents"]]
    assert all(incidents) and len(set(incidents)) == 4, incidents
    if shutil.which("prometheus-alertmanager"):
        assert all(i["notifications"] >= 1 for i in out["incidents"]), out["incidents"]

    # Throughout: no request failed, every captured record reached the detector.
    assert out["requests"]["failed"] == 0 and out["requests"]["ok"] > 500
    assert out["records"]["captured"] == out["records"]["ingested"] > 0
    assert out["records"].get("dropped", 0) == 0
    assert out["served_by_version"]["2.0"] > 0  # the bad version really served, for a while
    for incident in (unit, canary, rollout, world):
        assert incident["detected"] - incident["onset"] < 30

    # The HTML report: the incident's drift on petal_length, and the timeline.
    assert out["report"] == str(report)
    html = report.read_text()
    assert "1 drifted column(s): petal_length" in html
    assert "top suspect CronJob/feature-etl" in html and "top suspect Deployment/iris" in html
    assert "<script" not in html
