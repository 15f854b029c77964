"""Fixtures for the operator tests; the emulator and helpers live in cluster.py."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import kmock
import pytest
from cluster import NS, RESOURCES, Cluster, OperatorProcess, declare, kubeconfig


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def cluster() -> AsyncIterator[tuple[Cluster, str]]:
    async with Cluster() as api, kmock.Server(api) as server:
        declare(api)
        yield api, str(server.url).rstrip("/")


@pytest.fixture
async def start_operator(
    tmp_path: Path, cluster: tuple[Cluster, str]
) -> AsyncIterator[Callable[..., Any]]:
    started: list[OperatorProcess] = []
    _, server = cluster

    async def start(*extra: str, env: dict[str, str] | None = None) -> OperatorProcess:
        log = tmp_path / f"operator-{len(started)}.log"
        environ = {k: v for k, v in os.environ.items() if not k.startswith("MLWARDEN_")}
        environ.update(KUBECONFIG=str(kubeconfig(tmp_path, server)),
                       MLWARDEN_IMAGE="mlwarden/mlwarden:test",
            # Each operator its own metrics port: a fixed one collides between runs.
            MLWARDEN_METRICS_PORT=str(free_port()))  # fmt: skip
        environ.update(env or {})  # a test's own (MLWARDEN_METRICS_PORT to scrape it, say)
        with open(log, "wb") as out:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "mlwarden.cli", "operator", "--namespace", NS,
                "--standalone", *extra, stdout=out, stderr=asyncio.subprocess.STDOUT, env=environ,
            )  # fmt: skip
        op = OperatorProcess(proc, log)
        started.append(op)
        return op

    yield start
    for op in started:
        await op.stop()


@pytest.fixture
def seed() -> Iterator[Callable[..., None]]:
    def put(api: Cluster, *objs: dict[str, Any]) -> None:
        for obj in objs:
            resource = RESOURCES[obj["kind"]]
            api.objects[resource, obj["metadata"]["namespace"], obj["metadata"]["name"]] = obj

    yield put


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The RBAC audit last: it checks the API calls every other operator test made."""
    audit = [i for i in items if Path(str(i.fspath)).name == "test_rbac_audit.py"]
    rest = [i for i in items if i not in audit]
    items[:] = rest + audit
