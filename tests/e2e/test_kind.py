"""End to end on a real cluster: kind, the image built from the Dockerfile, the Helm chart.

Runs with `make e2e` where a Docker engine and kind are available; skips with the reason
everywhere else (this suite needs what the CI machines and the developers' sandboxes do not
have: a Docker daemon). Steps: build the image, create a kind cluster, load the image,
install the chart (rendered by the real Helm engine, applied with kubectl), apply
examples/e2e/model.yaml, and wait until the ObservedModel is Ready with the sidecar in the
model's pods and the detector available; then delete the ObservedModel and check that the
Deployment is back to its original template.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = "mlwarden-e2e"
IMAGE = "mlwarden/mlwarden:e2e"
# The slim image the operator injects beside the model (Dockerfile target `sidecar`), by
# default the component image's repository + `-sidecar`, same tag.
SIDECAR_IMAGE = "mlwarden/mlwarden-sidecar:e2e"
NS = "mlwarden-e2e"


def _why_not() -> str | None:
    if shutil.which("docker") is None:
        return "no docker client on PATH"
    if subprocess.run(["docker", "info"], capture_output=True, check=False).returncode != 0:
        return "no Docker engine answering (`docker info` failed): kind cannot run here"
    for tool in ("kind", "kubectl"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(_why_not() is not None, reason=f"kind e2e skipped: {_why_not()}"),
]


def run(*args: str, input: str | None = None, timeout: float = 600) -> str:
    out = subprocess.run(
        args, input=input, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert out.returncode == 0, f"{' '.join(args)}: {out.stderr[-3000:]}"
    return out.stdout


def kubectl_json(*args: str) -> Any:
    return json.loads(run("kubectl", "--context", f"kind-{CLUSTER}", *args, "-o", "json"))


def wait(what: str, check: Any, timeout: float = 300) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except (AssertionError, subprocess.SubprocessError, KeyError, json.JSONDecodeError):
            pass
        time.sleep(3)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    run("docker", "build", "-t", IMAGE, str(ROOT), timeout=1800)
    run("docker", "build", "--target", "sidecar", "-t", SIDECAR_IMAGE, str(ROOT), timeout=1800)
    run("kind", "create", "cluster", "--name", CLUSTER, "--wait", "120s", timeout=600)
    try:
        run("kind", "load", "docker-image", IMAGE, "--name", CLUSTER)
        run("kind", "load", "docker-image", SIDECAR_IMAGE, "--name", CLUSTER)
        yield f"kind-{CLUSTER}"
    finally:
        if not os.environ.get("MLWARDEN_E2E_KEEP"):
            run("kind", "delete", "cluster", "--name", CLUSTER)


def install_chart(context: str) -> None:
    import helm_python as helm

    values = {
        "image": {"repository": IMAGE.split(":")[0], "tag": "e2e", "pullPolicy": "IfNotPresent"}
    }
    with helm.Chart.load(str(ROOT / "charts" / "mlwarden")) as chart:
        manifests = chart.render(
            values, name="mlwarden", namespace="mlwarden-system", is_install=True
        )
    docs = [
        d
        for name, text in sorted(manifests.items())
        if not name.endswith("NOTES.txt")
        for d in yaml.safe_load_all(text)
        if d
    ]
    run("kubectl", "--context", context, "create", "namespace", "mlwarden-system")
    for crd in sorted((ROOT / "charts" / "mlwarden" / "crds").glob("*.yaml")):
        run("kubectl", "--context", context, "apply", "-f", str(crd))
    run(
        "kubectl",
        "--context",
        context,
        "apply",
        "-n",
        "mlwarden-system",
        "-f",
        "-",
        input=yaml.safe_dump_all(docs),
    )


def test_an_observed_model_comes_up_and_goes_away_cleanly(cluster: str) -> None:
    install_chart(cluster)
    wait(
        "the operator",
        lambda: (
            kubectl_json("-n", "mlwarden-system", "get", "deployment", "mlwarden")["status"].get(
                "availableReplicas", 0
            )
            >= 1
        ),
    )
    run("kubectl", "--context", cluster, "create", "namespace", NS)
    run("kubectl", "--context", cluster, "apply", "-f", str(ROOT / "examples/e2e/model.yaml"))
    wait(
        "phase WarmingUp or Observing",
        lambda: (
            kubectl_json("-n", NS, "get", "observedmodel", "iris").get("status", {}).get("phase")
            in ("WarmingUp", "Observing")
        ),
    )
    pods = kubectl_json("-n", NS, "get", "pods", "-l", "app=iris")["items"]
    assert any("mlwarden-sidecar" in [c["name"] for c in p["spec"]["containers"]] for p in pods)
    detector = kubectl_json("-n", NS, "get", "deployment", "iris-detector")
    assert detector["status"].get("availableReplicas", 0) >= 1
    run("kubectl", "--context", cluster, "-n", NS, "delete", "observedmodel", "iris")
    wait(
        "the sidecar removed",
        lambda: (
            [
                c["name"]
                for c in kubectl_json("-n", NS, "get", "deployment", "iris")["spec"]["template"][
                    "spec"
                ]["containers"]
            ]
            == ["model"]
        ),
    )
