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
