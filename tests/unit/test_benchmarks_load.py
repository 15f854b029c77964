"""`make bench` starts: every benchmark module `benchmarks/run.py` imports loads.

`run.py` imports the benchmarks it runs before it parses its arguments, so `--help` fails when
one of them cannot be imported (an operator test helper moved, a peer's module renamed):
the bench would then break on a user's machine, not in CI.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_benchmark_runner_and_every_benchmark_it_runs_import() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--help"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "--only" in done.stdout


def test_the_sidecar_benchmark_reports_cpu_steal_and_the_run_that_lost_the_most() -> None:
    # In a child interpreter: the benchmarks' modules (`procs`, ...) are top-level names.
    script = """
import math, sys
sys.path.insert(0, "benchmarks")
import procs, sidecar_latency as sl
assert procs.steal_pct((1000, 10), (1400, 30)) == 5.0
assert math.isnan(procs.steal_pct((1000, 10), (1000, 10)))
total, steal = procs.cpu_jiffies()
assert total > 0 and 0 <= steal <= total
res = {"steal_pct": 2.0, "raw": {"1k-1row": {
    "nginx": [{"steal_pct": 1.0}, {"steal_pct": 7.5}], "sidecar": [{"steal_pct": math.nan}]}}}
print(sl.steal_line(res))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == (
        "CPU steal (this VM's cores running other guests) during this benchmark: 2.0% of the "
        "machine's CPU time; the most in one run 7.5% (1k-1row, nginx, repeat 2)."
    )
