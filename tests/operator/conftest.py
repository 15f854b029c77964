"""Fixtures for the operator tests; the emulator and helpers live in cluster.py.

`cluster` is a fresh emulator behind kmock's HTTP server; `start_operator` runs the real
operator against it (stopped at the end of the test); `seed` stores objects as they are.
Most tests begin the same way, so two fixtures do it once: `warming_up` seeds the model
(Deployment `fraud-model`, its Service, ObservedModel `fraud`), starts the operator and waits
until it has reconciled and injected (phase WarmingUp); `observing` goes on, as the detector
would, to a reference and phase Observing.

The RBAC audit (test_rbac_audit.py) judges the API calls of every other operator test, and the
suite runs on several pytest-xdist workers: after each operator test, the calls it added are
appended to this process's journal in a directory the workers share, with the test's id; a test
that asks for `every_operator_call` is ordered last and waits until every other operator test of
the session is in some journal, then gets the calls of them all.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import kmock
import pytest
from cluster import (
    ADMISSION_CHECKS,
    CLUSTER_WIDE_CALLS,
    FAST,
    OPERATOR_CALLS,
    REFERENCE,
    RESOURCES,
    ApiCall,
    Cluster,
    EveryCall,
    Observing,
    OperatorProcess,
    ago,
    declare,
    eventually,
    free_port,
    iso,
    launch_operator,
    model_deployment,
    model_service,
    observed_model,
    patch_status,
    status,
)


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
        op = await launch_operator(
            tmp_path, server, *extra, env=env, log_name=f"operator-{len(started)}.log"
        )
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


@pytest.fixture
def warming_up(
    cluster: tuple[Cluster, str], start_operator: Callable[..., Any], seed: Callable[..., None]
) -> Callable[..., Any]:
    """`await warming_up(*objects, deployment=, service=, env=, **spec)` -> the operator.

    Seeds the model's Deployment and Service (or the ones given), `objects`, and ObservedModel
    `fraud` with `spec`; starts the operator with `env`; returns once the model is WarmingUp.
    """

    async def start(*objects: dict[str, Any], deployment: dict[str, Any] | None = None,
                    service: dict[str, Any] | None = None, env: dict[str, str] | None = None,
                    **spec: Any) -> OperatorProcess:  # fmt: skip
        api, _ = cluster
        seed(api, deployment or model_deployment(), service or model_service(), *objects,
             observed_model(**spec))  # fmt: skip
        op = await start_operator(env=env)
        await eventually(lambda: status(api).get("phase") == "WarmingUp", timeout=30,
                         what="phase WarmingUp (reconciled and injected)")  # fmt: skip
        return op

    return start


@pytest.fixture
def observing(cluster: tuple[Cluster, str], warming_up: Callable[..., Any]) -> Callable[..., Any]:
    """`await observing(*objects, deployment=, operator_env=, **spec)` -> `Observing`.

    `warming_up` with FAST passes and a metrics port to scrape, then the detector's first status
    write (a reference, no alerts): returns once the model is Observing.
    """

    async def start(
        *objects: dict[str, Any],
        deployment: dict[str, Any] | None = None,
        operator_env: dict[str, str] | None = None,
        **spec: Any,
    ) -> Observing:
        api, server = cluster
        port = free_port()
        op = await warming_up(
            *objects, deployment=deployment,
            env={**FAST, "MLWARDEN_METRICS_PORT": str(port), **(operator_env or {})}, **spec,
        )  # fmt: skip
        await patch_status(server, {"alerts": [], "detector": {
            "reference": REFERENCE, "updated": iso(ago(seconds=1))}})  # fmt: skip
        await eventually(lambda: status(api).get("phase") == "Observing", what="Observing")
        return Observing(api, server, op, port)

    return start


# --------------------------------------------------------------------------- the audit's journal

HERE = Path(__file__).parent
# The lists journaled, by the name of the EveryCall field they fill.
JOURNALED: dict[str, list[ApiCall]] = {
    "operator": OPERATOR_CALLS,
    "cluster_wide": CLUSTER_WIDE_CALLS,
    "admission": ADMISSION_CHECKS,
}
AUDIT_WAIT_S = 1800.0  # the rest of the operator tests, on the other workers
JOURNAL = pytest.StashKey["Journal"]()


class Journal:
    """This process's file of operator calls, in a directory every worker of the run shares."""

    def __init__(self, directory: Path, worker: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.path = directory / f"{worker}.jsonl"
        self.sent = dict.fromkeys(JOURNALED, 0)

    def flush(self, *done: str) -> None:
        """Append the calls made since the last flush, then the tests `done` (one write)."""
        lines = []
        for name, calls in JOURNALED.items():
            lines += [json.dumps({name: dataclasses.asdict(c)}) for c in calls[self.sent[name] :]]
            self.sent[name] = len(calls)
        lines += [json.dumps({"done": nodeid}) for nodeid in done]
        if not lines:
            return
        with open(self.path, "a") as out:
            out.write("\n".join(lines) + "\n")

    def read(self) -> tuple[set[str], EveryCall]:
        """The tests journaled so far, by every worker, and their calls."""
        done: set[str] = set()
        every = EveryCall()
        for path in sorted(self.directory.glob("*.jsonl")):
            text = path.read_text()
            for line in text[: text.rfind("\n") + 1].splitlines():  # whole lines only
                entry = json.loads(line)
                if "done" in entry:
                    done.add(entry["done"])
                for name in JOURNALED.keys() & entry.keys():
                    getattr(every, name).append(ApiCall(**entry[name]))
        return done, every


def _reads_journal(item: pytest.Item) -> bool:
    return "every_operator_call" in getattr(item, "fixturenames", ())


def _operator_test(item: pytest.Item) -> bool:
    return Path(str(item.fspath)).parent == HERE


@pytest.fixture(scope="session", autouse=True)
def _journal(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    # Under pytest-xdist each worker's base temp is <run>/popen-gwN: the run's is shared.
    base = tmp_path_factory.getbasetemp()
    worker = getattr(request.config, "workerinput", {}).get("workerid")
    shared = base.parent if worker else base
    request.config.stash[JOURNAL] = Journal(shared / "operator-calls", worker or "main")
    yield


# Operator tests that ended before this process's journal existed (skipped before any fixture).
UNJOURNALED: list[str] = []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, None, None]:
    """After each operator test (its operators stopped), journal the calls it added."""
    yield
    UNJOURNALED.append(item.nodeid)
    journal = item.config.stash.get(JOURNAL, None)
    if journal is not None:
        journal.flush(*UNJOURNALED)
        UNJOURNALED.clear()


@pytest.fixture
def every_operator_call(request: pytest.FixtureRequest) -> EveryCall:
    """The calls of every other operator test of this session, once all have finished."""
    journal = request.config.stash[JOURNAL]
    journal.flush(*UNJOURNALED)
    UNJOURNALED.clear()
    others = {
        i.nodeid for i in request.session.items if _operator_test(i) and not _reads_journal(i)
    }
    deadline = time.monotonic() + AUDIT_WAIT_S
    while True:
        done, every = journal.read()
        if others <= done:
            return every
        if time.monotonic() > deadline:
            pending = sorted(others - done)
            pytest.fail(f"operator tests not finished after {AUDIT_WAIT_S:.0f} s: {pending[:5]}")
        time.sleep(0.5)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The RBAC audit last, and its judges after it: they wait for every other operator test.

    On one worker a judge ahead of a test it waits for would wait in vain; pytest-xdist hands
    tests to each worker in this order, so no worker holds a judge before such a test.
    """
    judges = [i for i in items if _reads_journal(i)]
    audit = [i for i in items if Path(str(i.fspath)).name == "test_rbac_audit.py"]
    first = [i for i in items if i not in audit and i not in judges]
    items[:] = first + [i for i in audit if i not in judges] + judges
