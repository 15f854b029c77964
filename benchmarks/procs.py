"""Process plumbing shared by the benchmarks; it measures nothing itself.

Every server a benchmark starts is a `Proc`, registered on an `ExitStack` so it
is stopped (SIGTERM, then SIGKILL to its own process group) however the run
ends: normally, on an exception, on Ctrl-C or on SIGTERM (`sigterm_raises`).
All addresses are loopback; ports are found by binding to port 0.

mlwarden's own servers start here too, the same way in every harness: `start_detector`
and `start_sidecar` (the command line, a clean environment, waiting until each answers),
`scrape` reads a sidecar's /metrics, `rss_kib` and `open_fds` a process's footprint.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO

from prometheus_client.parser import text_string_to_metric_families

HOST = "127.0.0.1"
HERE = Path(__file__).resolve().parent


def by_hand(doc: str | None, name: str) -> None:
    """The command line of a benchmark that takes no options: `--help` prints its docstring
    (what it measures and how) instead of starting a run of several minutes."""
    parser = argparse.ArgumentParser(
        prog=f"benchmarks/{name}.py",
        description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"Run by hand, it prints its figures; `.venv/bin/python benchmarks/run.py "
        f"--only {name}` also writes them to benchmarks/RESULTS.md.",
    )
    parser.parse_args()


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


def log_stderr(text: str) -> None:
    """A harness's progress line (stdout is for its results)."""
    print(text, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- mlwarden's servers


def mlwarden_argv() -> list[str]:
    """The `mlwarden` command of this interpreter's environment."""
    console = Path(sys.executable).parent / "mlwarden"
    return [str(console)] if console.exists() else [sys.executable, "-m", "mlwarden.cli"]


def clean_env() -> dict[str, str]:
    """This environment minus MLWARDEN_* settings, so only the flags given here apply."""
    return {k: v for k, v in os.environ.items() if not k.startswith("MLWARDEN_")}


def display(argv: Sequence[str]) -> str:
    """A command line with paths inside the repository shown relative to it."""
    root = str(HERE.parent) + "/"
    return shlex.join(a.removeprefix(root) for a in argv)


def answers_ok(url: str) -> bool:
    return http_get(url)[0] == 200


def detector_manifest(name: str) -> str:
    """The ObservedModel of a benchmark's detector: columns inferred from a 1,000-record warm-up."""
    return f"""\
apiVersion: mlwarden.io/v1alpha1
kind: ObservedModel
metadata: {{name: {name}, namespace: bench}}
spec:
  target: {{deployment: {name}}}
  protocol: v2
  reference: {{source: warmup, size: 1000}}
  window: {{size: 10000}}
"""


def detector_argv(manifest: Path, port: int) -> list[str]:
    return [*mlwarden_argv(), "detector", "--observed-model", str(manifest),
            "--listen", f"{HOST}:{port}", "--log-level", "warning"]  # fmt: skip


def start_detector(
    manifest: Path, port: int, log: Path, *, stop: contextlib.ExitStack | None = None
) -> Proc:
    """`mlwarden detector` for `manifest` on `port`, answering when this returns.

    With `stop`, it is stopped when that stack closes (registered before the wait, so a
    detector that never comes up is stopped too).
    """
    proc = Proc("detector", detector_argv(manifest, port), log, env=clean_env())
    if stop is not None:
        stop.callback(proc.stop)
    proc.wait_port(port)
    return proc


@dataclass
class Sidecar:
    """A started `mlwarden sidecar`: its process, command line and base URLs."""

    proc: Proc
    argv: list[str]
    url: str  # the proxy
    admin: str  # /metrics, /readyz


def start_sidecar(
    name: str,
    log: Path,
    *,
    upstream: str,
    stop: contextlib.ExitStack,
    collector: str | None = None,
    extra: Sequence[str] = (),
    env: dict[str, str] | None = None,
) -> Sidecar:
    """`mlwarden sidecar --protocol v2` in front of `upstream`, ready when this returns.

    Without `collector`, capture is off. It is stopped when `stop` closes.
    """
    port, admin_port = free_port(), free_port()
    argv = [*mlwarden_argv(), "sidecar", "--listen", f"{HOST}:{port}", "--upstream", upstream,
            "--admin-listen", f"{HOST}:{admin_port}"]  # fmt: skip
    if collector is not None:
        argv += ["--collector", collector]
    argv += ["--protocol", "v2", *extra]
    proc = Proc(name, argv, log, env=clean_env() | (env or {}))
    stop.callback(proc.stop)
    proc.wait_port(port)
    admin = f"http://{HOST}:{admin_port}"
    readyz = f"{admin}/readyz"
    wait_until(lambda: answers_ok(readyz), timeout=20, what=readyz)
    return Sidecar(proc, argv, f"http://{HOST}:{port}", admin)


def scrape(admin: str) -> dict[str, float]:
    """A sidecar's /metrics as {'name{label="v"}': value}."""
    _, body = http_get(admin + "/metrics")
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


# --------------------------------------------------------------------------- CPU and memory


def rss_kib(pid: int) -> int:
    """The resident set of process `pid` now, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


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


def group_status_total(pgid: int, key: str, *, threads: bool = False) -> int:
    """The number after `key` (for example "VmHWM:") in /proc/PID/status, summed over the
    processes of process group `pgid`, or over all their threads with `threads` (per-task
    counts such as "nonvoluntary_ctxt_switches:")."""
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[2]) != pgid:
                continue
            tasks = list(Path(entry.path, "task").iterdir()) if threads else [Path(entry.path)]
            for task in tasks:
                for line in (task / "status").read_text().splitlines():
                    if line.startswith(key):
                        total += int(line.split()[1])
        except OSError:
            continue
    return total


def peak_rss_mib(pgid: int) -> float:
    """VmHWM (each process's peak resident set) summed over process group `pgid`, in MiB."""
    total_kib = group_status_total(pgid, "VmHWM:")
    return total_kib / 1024 if total_kib else float("nan")


def source_tree(ref: str, into: Path) -> Path:
    """mlwarden's `src` at git `ref`, extracted under `into` (a directory that exists):
    the `before` tree of a before-and-after benchmark."""
    archive = subprocess.run(
        ["git", "-C", str(HERE.parent), "archive", ref, "src"], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into / "src"


def cpu_jiffies() -> tuple[int, int]:
    """(all, steal): the machine's CPU time so far, and how much of it the hypervisor gave to
    other guests (`steal`, /proc/stat's 8th field), in clock ticks; (0, 0) without /proc."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except (OSError, IndexError):
        return 0, 0
    # guest and guest_nice (9th, 10th) are already counted in user and nice.
    ticks = [int(x) for x in fields[:8]]
    return sum(ticks), ticks[7] if len(ticks) > 7 else 0


def steal_pct(before: tuple[int, int], after: tuple[int, int]) -> float:
    """The share of the machine's CPU time stolen between two `cpu_jiffies()`, in %: on a VM,
    other guests running on its cores. A few % already shows as milliseconds at p99."""
    total = after[0] - before[0]
    return 100.0 * (after[1] - before[1]) / total if total > 0 else math.nan


def loadavg() -> str:
    """The 1, 5 and 15 minute load averages, for the results (other work shows as noise)."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"
