"""The model path under collector faults: down, hanging, 500, 429, resetting mid-batch.

The collector is `fault_collector.py`, a raw-socket server in its own process.
For each fault the same requests go through a sidecar shipping to a healthy
collector and through one shipping to the faulty collector, in the same test:
every model request must succeed, latency must not move (only a generous bound
is asserted here, on a shared 2-core machine; `benchmarks/faults_latency.py`
measures p99 against the 1 ms target), and what could not be delivered is
counted by reason. Memory: the sidecar's RSS, read from /proc, stays bounded
when the collector swallows everything for thousands of requests.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from harness import SidecarProcess, Upstream, free_port, wait_until

HERE = Path(__file__).parent
V1_BODY = json.dumps({"instances": [[1.0, 2.0], [3.0, 4.0]]}).encode()
PATH = "/v1/models/m:predict"


class FaultCollector:
    def __init__(self, mode: str, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "fault_collector.py"), "--port", str(self.port),
             "--mode", mode],
            stdout=subprocess.PIPE, stderr=open(log, "wb"),  # noqa: SIM115
        )  # fmt: skip
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == b"ready"

    def stop(self) -> dict[str, int]:
        """Stop it; what it saw (connections, requests, answers, resets)."""
        self.proc.terminate()
        out, _ = self.proc.communicate(timeout=10)
        return json.loads(out.splitlines()[-1]) if out.strip() else {}


@pytest.fixture
def fault_collector(tmp_path: Path) -> Iterator[Callable[[str], FaultCollector]]:
    started: list[FaultCollector] = []

    def start(mode: str) -> FaultCollector:
        c = FaultCollector(mode, tmp_path / f"collector-{mode}.log")
        started.append(c)
        return c

    yield start
    for c in started:
        if c.proc.poll() is None:
            c.stop()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def open_fds(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def latencies(sidecar: SidecarProcess, n: int, body: bytes = V1_BODY) -> list[float]:
    """n sequential requests on one keep-alive connection; every one must succeed."""
    session = requests.Session()
    out = []
    for _ in range(n):
        started = time.perf_counter()
        resp = session.post(sidecar.url + PATH, data=body, timeout=10)
        out.append(time.perf_counter() - started)
        assert resp.status_code == 200, resp.text
        assert resp.json()["body_len"] == len(body)
    return sorted(out)


def quantile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


SHIP = ("--protocol", "v1", "--batch-size", "20", "--ship-timeout", "0.5", "--ship-attempts", "2")

# What each fault leaves in the counters once given up on, and how the last error reads.
FAULTS = {
    "down": ("retries_exhausted", "ClientConnectorError"),
    "hang": ("retries_exhausted", "TimeoutError"),
    "500": ("retries_exhausted", "HTTP 500"),
    "429": ("retries_exhausted", "HTTP 429"),
    "reset": ("retries_exhausted", ""),
}


@pytest.mark.parametrize("mode", list(FAULTS))
def test_collector_fault_leaves_the_model_path_alone(
    mode: str,
    upstream: Upstream,
    start_sidecar: Callable[..., SidecarProcess],
    fault_collector: Callable[[str], FaultCollector],
) -> None:
    healthy = fault_collector("ok")
    faulty = None if mode == "down" else fault_collector(mode)
    url = faulty.url if faulty is not None else f"http://127.0.0.1:{free_port()}"
    good = start_sidecar(upstream.url, *SHIP, collector=healthy.url)
    bad = start_sidecar(upstream.url, *SHIP, collector=url)
    latencies(good, 50)
    latencies(bad, 50)  # warm both (connection pools, first batches)
    # Interleaved rounds, so both see the same machine load.
    base: list[float] = []
    fault: list[float] = []
    for _ in range(4):
        base += latencies(good, 100)
        fault += latencies(bad, 100)
    base.sort()
    fault.sort()
    p50_base, p99_base = quantile(base, 0.5), quantile(base, 0.99)
    p50_fault, p99_fault = quantile(fault, 0.5), quantile(fault, 0.99)
    print(
        f"{mode}: healthy p50 {p50_base * 1e3:.2f} ms p99 {p99_base * 1e3:.2f} ms; "
        f"faulty p50 {p50_fault * 1e3:.2f} ms p99 {p99_fault * 1e3:.2f} ms"
    )
    # Generous: a shared 2-core machine; the 1 ms target is benchmarks/faults_latency.py's.
    assert p50_fault < p50_base + 0.005
    assert p99_fault < max(3 * p99_base, p99_base + 0.05)

    reason, error = FAULTS[mode]
    wait_until(
        lambda: bad.metric("mlwarden_sidecar_records_dropped_total", reason=reason) > 0,
        timeout=30,
        what=f"drops counted as {reason}",
    )
    if mode == "429":
        assert bad.metric("mlwarden_sidecar_ship_requests_total", outcome="retry") > 0
    last_error = requests.get(bad.admin_url + "/readyz", timeout=5).json()["collectorLastError"]
    assert error in (last_error or ""), last_error
    # The healthy one delivered everything it captured: the fault was the collector's.
    wait_until(
        lambda: (
            good.metric("mlwarden_sidecar_records_shipped_total")
            == good.metric("mlwarden_sidecar_records_captured_total")
        ),
        what="the healthy sidecar to deliver everything",
    )
    assert good.metric("mlwarden_sidecar_records_dropped_total", reason="retries_exhausted") == 0
    if faulty is not None:
        seen = faulty.stop()
        assert seen["requests"] > 0, seen  # the fault was really exercised
        if mode == "reset":
            assert seen["resets"] == seen["requests"]


def test_sidecar_memory_stays_bounded_while_the_collector_swallows_everything(
    upstream: Upstream,
    start_sidecar: Callable[..., SidecarProcess],
    fault_collector: Callable[[str], FaultCollector],
) -> None:
    """3,000 requests of 100 rows (300,000 records) into a hanging collector, 5,000 buffered."""
    hang = fault_collector("hang")
    sidecar = start_sidecar(
        upstream.url, "--protocol", "v1", "--buffer-records", "5000", "--batch-size", "500",
        "--ship-timeout", "2", "--ship-attempts", "2", collector=hang.url,
    )  # fmt: skip
    body = json.dumps({"instances": [[float(i), 2.0, 3.0, 4.0] for i in range(100)]}).encode()
    pid = sidecar.proc.pid
    latencies(sidecar, 300, body)
    rss_before, fds_before = rss_kib(pid), open_fds(pid)
    latencies(sidecar, 2700, body)
    # The capture worker parses 270,000 records at nice 10: on a loaded machine (the suite's
    # other workers) that takes far longer than the default 20 s, and memory is the point here.
    wait_until(
        lambda: sidecar.metric("mlwarden_sidecar_queue_depth") == 0,
        timeout=120,
        what="queue drained",
    )
    rss_after, fds_after = rss_kib(pid), open_fds(pid)
    print(f"RSS {rss_before} KiB -> {rss_after} KiB; fds {fds_before} -> {fds_after}")
    assert sidecar.metric("mlwarden_sidecar_buffer_records") <= 5000
    captured = sidecar.metric("mlwarden_sidecar_records_captured_total")
    assert captured == 300_000
    evicted = sidecar.metric("mlwarden_sidecar_records_dropped_total", reason="buffer_full")
    # A batch that timed out on every attempt is dropped too, as `retries_exhausted` (three
    # such batches of 500 were the 1,500 records an earlier allowance missed): every captured
    # record is evicted from the full buffer, given up after its attempts, still buffered, or
    # in one of the two batches in flight.
    exhausted = sidecar.metric("mlwarden_sidecar_records_dropped_total", reason="retries_exhausted")
    buffered = sidecar.metric("mlwarden_sidecar_buffer_records")
    assert evicted + exhausted + buffered <= captured
    assert evicted + exhausted + buffered >= captured - 2 * 500, (evicted, exhausted, buffered)
    assert evicted >= captured / 2  # a collector that never answers: the buffer overflows
    # 300,000 records (~30 MB of JSON) went by; what is kept is 5,000 of them.
    assert rss_after - rss_before < 40 * 1024, (rss_before, rss_after)
    assert fds_after <= fds_before + 4
