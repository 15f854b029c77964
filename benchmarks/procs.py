"""Process plumbing shared by the benchmarks; it measures nothing itself.

Every server a benchmark starts is a `Proc`, registered on an `ExitStack` so it
is stopped (SIGTERM, then SIGKILL to its own process group) however the run
ends: normally, on an exception, on Ctrl-C or on SIGTERM (`sigterm_raises`).
All addresses are loopback; ports are found by binding to port 0.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import IO

HOST = "127.0.0.1"


def free_port() -> int:
    """A loopback port that was free a moment ago (the kernel's pick for port 0)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((HOST, port)) == 0


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return int(resp.status), resp.read()


def wait_until(predicate: Callable[[], bool], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if predicate():
                return
        time.sleep(0.05)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


class Proc:
    """A long-running server subprocess in its own session, with its output in a log file."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self._log: IO[bytes] = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=dict(env) if env is not None else None,
        )

    def alive(self) -> bool:
        return self.popen.poll() is None

    def wait_port(self, port: int, timeout: float = 20.0) -> None:
        def ready() -> bool:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited early:\n{self.tail()}")
            return port_open(port)

        wait_until(ready, timeout=timeout, what=f"{self.name} on port {port}")

    def tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM, wait, then SIGKILL the process group this Proc created."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.terminate()
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(grace)
        # Children (nginx workers) normally exit with their master; make sure.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self._log.close()


def run_tool(argv: Sequence[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """Run a load generator to completion; its output is returned, never printed."""
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def sigterm_raises() -> None:
    """Turn SIGTERM into KeyboardInterrupt so every `finally` runs and servers are stopped."""
    signal.signal(signal.SIGTERM, _raise_interrupt)


# --------------------------------------------------------------------------- CPU and memory

CLK_TCK = os.sysconf("SC_CLK_TCK")


def group_usage(pgid: int) -> tuple[float, float]:
    """(CPU seconds, RSS MiB) summed over the processes of process group `pgid`, from /proc.

    A `Proc` runs in its own session, so its group is the server and its children (nginx's
    master and worker). CPU is utime + stime of every thread; RSS is the resident set now.
    """
    cpu, rss_pages = 0.0, 0
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) != pgid:
            continue
        cpu += (int(fields[11]) + int(fields[12])) / CLK_TCK
        rss_pages += int(fields[21])
    return cpu, rss_pages * page / 2**20


def peak_rss_mib(pgid: int) -> float:
    """VmHWM (each process's peak resident set) summed over process group `pgid`, in MiB."""
    total_kib = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[2]) != pgid:
                continue
            for line in Path(entry.path, "status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total_kib += int(line.split()[1])
        except OSError:
            continue
    return total_kib / 1024 if total_kib else float("nan")


def loadavg() -> str:
    """The 1, 5 and 15 minute load averages, for the results (other work shows as noise)."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"
