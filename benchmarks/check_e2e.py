"""`mlwarden check` end to end, as a user runs it, against Alibi Detect end to end.

Both are timed as whole processes on the same two CSV files (wall time from the process
start to its exit, and CPU time, user + system over all threads): interpreter start,
imports, reading both files, the tests, and writing the report. One untimed run of each
first, with bytecode cached as an installed package has it.

    mlwarden   mlwarden check --reference ref.csv --current cur.csv --format json
               -o out.json (its console script, mlwarden.cli:main), from this tree's
               src/ and optionally another's (--before-src DIR, e.g. main's, for the
               figure before a change)
    Alibi      peers/run_alibi_csv.py in its own environment: pandas.read_csv of both
               files, categorical columns to integer codes (the reference's), then
               TabularDrift(x_ref, p_val=0.05, categories_per_feature=...) and
               predict(x_cur, drift_type="batch"): KS per numeric column and chi-square
               per categorical one, Bonferroni (its documented tabular detector)

Data: `check_speed.make_table` (20 numeric columns of four shapes, 5 categorical of 8
levels; the current file shifted on 3 numeric columns and one categorical), written as
CSV by pyarrow. Runs are interleaved (mlwarden, [before], Alibi, mlwarden, ...) and the
medians reported, with each repeat's ratio.

    .venv/bin/python benchmarks/check_e2e.py [--rows 500000] [--repeats 3] [--before-src DIR]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.csv as pcsv

sys.path.insert(0, str(Path(__file__).resolve().parent / "peers"))
import envs

from check_speed import make_table

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """(wall seconds, CPU seconds: user + system, all threads) of one process."""
    cpu0, t0 = _children_cpu(), time.perf_counter()
    out = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    seconds, cpu = time.perf_counter() - t0, _children_cpu() - cpu0
    if out.returncode not in (0, 1):
        raise RuntimeError(f"{' '.join(argv[:4])} ... exited {out.returncode}: {out.stderr[-400:]}")
    return seconds, cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--before-src", default=None)
    args = parser.parse_args(argv)
    alibi, why = envs.ensure("alibi")
    if alibi is None:
        print(f"Alibi Detect: {why}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="mlwarden-check-e2e-") as tmp:
        ref, cur, out = Path(tmp, "ref.csv"), Path(tmp, "cur.csv"), Path(tmp, "out.json")
        pcsv.write_csv(make_table(args.rows, 1, 0.0), ref)
        pcsv.write_csv(make_table(args.rows, 2, 0.1), cur)
        # What the `mlwarden` console script runs (mlwarden.cli:main), from the chosen src/.
        entry = "import sys; from mlwarden.cli import main; sys.exit(main())"
        check = [sys.executable, "-c", entry, "check", "--reference", str(ref),
                 "--current", str(cur), "--format", "json", "-o", str(out)]  # fmt: skip
        # Bytecode as an installed package has it: cached (in a scratch directory, so the
        # source tree stays clean). PYTHONDONTWRITEBYTECODE in the caller's environment would
        # otherwise have mlwarden compile its modules on every run, and not the peer, whose
        # site-packages were compiled by pip.
        base = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        base["PYTHONPYCACHEPREFIX"] = str(Path(tmp, "pycache"))
        runs: dict[str, tuple[list[str], dict[str, str] | None]] = {
            "mlwarden check": (check, {**base, "PYTHONPATH": str(ROOT / "src")}),
        }
        if args.before_src:
            runs["mlwarden check, before"] = (
                check,
                {**base, "PYTHONPATH": str(Path(args.before_src).resolve())},
            )
        runs["Alibi Detect TabularDrift"] = (
            [str(alibi), str(HERE / "peers" / "run_alibi_csv.py"), str(ref), str(cur)],
            base,
        )
        for cmd, env in runs.values():  # untimed: fills the bytecode cache and the page cache
            timed(cmd, env)
        times: dict[str, list[float]] = {k: [] for k in runs}
        cpus: dict[str, list[float]] = {k: [] for k in runs}
        load = os.getloadavg()[0]
        for _ in range(args.repeats):
            for name, (cmd, env) in runs.items():
                wall, cpu = timed(cmd, env)
                times[name].append(wall)
                cpus[name].append(cpu)
    print(f"{args.rows:,} rows x 25 columns, CSV, end to end (median of {args.repeats}, "
          f"interleaved; load average {load:.2f} at the start, {os.getloadavg()[0]:.2f} at "
          "the end): wall s, and CPU s (user + system, all threads)")  # fmt: skip
    for name in runs:
        wall = [b / a for a, b in zip(times["mlwarden check"], times[name], strict=True)]
        cpu = [b / a for a, b in zip(cpus["mlwarden check"], cpus[name], strict=True)]
        print(f"  {name:28} wall {statistics.median(times[name]):6.2f} s "
              f"({statistics.median(wall):.2f}x), CPU {statistics.median(cpus[name]):6.2f} s "
              f"({statistics.median(cpu):.2f}x mlwarden check's); walls "
              f"{', '.join(f'{x:.2f}' for x in times[name])}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
