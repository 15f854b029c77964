"""Fixtures for the integration tests; the helpers they use live in harness.py."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import (
    IRIS_FEATURES,
    Collector,
    DetectorProcess,
    GrpcEcho,
    SidecarProcess,
    ThreadedServer,
    Upstream,
    free_port,
    serve_mlserver,
    start_process,
    upstream_app,
    wait_until,
)

from mlwarden.demo import write_iris_model


@pytest.fixture
def collector() -> Iterator[Collector]:
    c = Collector()
    c.server = ThreadedServer(c.app()).start()
    yield c
    c.server.stop()


@pytest.fixture(scope="session")
def upstream() -> Iterator[Upstream]:
    seen: list[dict[str, Any]] = []
    server = ThreadedServer(upstream_app(seen)).start()
    yield Upstream(server, seen)
    server.stop()


@pytest.fixture(scope="session")
def grpc_echo() -> Iterator[GrpcEcho]:
    server = GrpcEcho().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def iris_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MLServer's model repository: a LogisticRegression on scikit-learn's bundled iris."""
    root = tmp_path_factory.mktemp("mlserver")
    write_iris_model(root)
    return root


@pytest.fixture(scope="session")
def mlserver(iris_model_dir: Path) -> Iterator[str]:
    with serve_mlserver(iris_model_dir) as url:
        yield url


@pytest.fixture(scope="session")
def mlserver_grpc(mlserver: str, iris_model_dir: Path) -> str:
    """MLServer's gRPC endpoint (HOST:PORT), serving the v2 gRPC API next to its HTTP one."""
    import tritonclient.grpc as triton_grpc

    port = json.loads((iris_model_dir / "settings.json").read_text())["grpc_port"]
    target = f"127.0.0.1:{port}"
    client = triton_grpc.InferenceServerClient(target)

    def ready() -> bool:
        try:
            return bool(client.is_model_ready("iris"))
        except triton_grpc.InferenceServerException:
            return False

    wait_until(ready, timeout=30, what="MLServer's gRPC port")
    client.close()
    return target


@pytest.fixture
def start_sidecar(tmp_path: Path) -> Iterator[Callable[..., SidecarProcess]]:
    started: list[SidecarProcess] = []

    def start(
        upstream: str, *extra: str, collector: str | None = None, env: dict[str, str] | None = None
    ) -> SidecarProcess:
        port, admin = free_port(), free_port()
        args = [
            sys.executable, "-m", "mlwarden.cli", "sidecar",
            "--listen", f"127.0.0.1:{port}",
            "--upstream", upstream,
            "--admin-listen", f"127.0.0.1:{admin}",
            "--batch-interval", "0.1",
        ]  # fmt: skip
        if collector is not None:
            args += ["--collector", collector]
        log_path = tmp_path / f"sidecar-{port}.log"
        admin_url = f"http://127.0.0.1:{admin}"
        # No drain on SIGTERM unless a test asks for one (MLWARDEN_DRAIN_SECONDS): a
        # test's sidecar has no load balancer to leave, and each would stop 5 s later.
        drain = {"MLWARDEN_DRAIN_SECONDS": os.environ.get("MLWARDEN_DRAIN_SECONDS", "0")}
        drain |= env or {}
        proc = start_process(
            [*args, *extra], log_path, f"{admin_url}/readyz", "the sidecar", env=drain
        )
        sidecar = SidecarProcess(proc, f"http://127.0.0.1:{port}", log_path, admin_url=admin_url)
        started.append(sidecar)
        return sidecar

    yield start
    for sidecar in started:
        code = sidecar.stop()
        assert code == 0, f"sidecar exited with {code}:\n{sidecar.log()[-3000:]}"


@pytest.fixture
def iris_manifest(tmp_path: Path) -> Path:
    path = tmp_path / "iris.yaml"
    path.write_text(
        "apiVersion: mlwarden.io/v1alpha1\n"
        "kind: ObservedModel\n"
        "metadata: {name: iris}\n"
        "spec:\n"
        "  target: {deployment: iris}\n"
        "  protocol: v2\n"
        "  features:\n"
        + "".join(f"    - {{name: {f}, type: numeric}}\n" for f in IRIS_FEATURES)
        + "  prediction: {name: predict, type: categorical}\n"
    )
    return path


@pytest.fixture
def start_detector(tmp_path: Path) -> Iterator[Callable[..., DetectorProcess]]:
    started: list[DetectorProcess] = []

    def start(manifest_path: Path, *extra: str) -> DetectorProcess:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        args = [
            sys.executable,
            "-m",
            "mlwarden.cli",
            "detector",
            "--observed-model",
            str(manifest_path),
            "--listen",
            f"127.0.0.1:{port}",
            *extra,
        ]
        proc = start_process(
            args, tmp_path / f"detector-{port}.log", f"{url}/readyz", "the detector"
        )
        detector = DetectorProcess(proc, url, tmp_path / f"detector-{port}.log")
        started.append(detector)
        return detector

    yield start
    for detector in started:
        code = detector.stop()
        assert code == 0, f"detector exited with {code}:\n{detector.log()[-3000:]}"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)
