"""What every drift-suite runner shares: reading a case, timing, and the JSON it prints.

A runner is `python run_<tool>.py --data DIR [--repeats N] [--budget S]`, run by
benchmarks/drift_suite.py in the tool's own virtual environment. It reads the case
written by benchmarks/drift_data.py (numpy only, so every environment can), builds the
input its tool takes (a DataFrame, arrays), then times the drift detection alone
(`seconds`: each repeat, excluding interpreter start, imports and the file read, which is
`read_seconds`) and prints one JSON object on its last line of stdout:

    {"tool": ..., "version": ..., "read_seconds": ..., "seconds": [...],
     "peak_rss_mb": ..., "rss_after_read_mb": ..., "flagged": [...], "details": {...}}

`peak_rss_mb` is the process's high-water mark (getrusage ru_maxrss): the data in
memory included; `rss_after_read_mb` is the mark once the input is built, before the
tool runs. Before any of that, each runner runs its detection once, untimed, on the
first 1,000 rows, so that lazy imports and first-call set-up count for no tool. Repeats
stop early once the compute time spent passes `--budget`.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load(directory: Path) -> dict[str, Any]:
    meta = json.loads((directory / "meta.json").read_text())
    return {
        "meta": meta,
        "ref_num": np.load(directory / "ref_num.npy"),
        "cur_num": np.load(directory / "cur_num.npy"),
        "ref_cat": np.load(directory / "ref_cat.npy"),
        "cur_cat": np.load(directory / "cur_cat.npy"),
    }


def frames(data: dict[str, Any]) -> tuple[Any, Any]:
    """Reference and current as pandas DataFrames: floats, and categories as strings."""
    import pandas as pd

    meta = data["meta"]

    def frame(num: np.ndarray, cat: np.ndarray) -> Any:
        df = pd.DataFrame(num, columns=meta["numeric"])
        for j, name in enumerate(meta["categorical"]):
            df[name] = np.asarray(meta["labels"][name], dtype=object)[cat[:, j]]
        return df

    return frame(data["ref_num"], data["ref_cat"]), frame(data["cur_num"], data["cur_cat"])


def main(
    tool: str,
    version: str,
    prepare: Callable[[dict[str, Any]], Any],
    detect: Callable[[Any], tuple[list[str], dict[str, Any]]],
) -> None:
    """Parse the flags, read, prepare (untimed), run `detect` timed, print the JSON."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--budget", type=float, default=120.0)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")

    # One untimed run on the first 1,000 rows first: lazy imports and first-call set-up
    # (thread pools, caches) are not the detection's cost, for any tool.
    data = load(args.data)
    small = {k: (v[:1000] if isinstance(v, np.ndarray) else v) for k, v in data.items()}
    detect(prepare(small))
    del small

    started = time.perf_counter()
    data = load(args.data)
    inputs = prepare(data)
    read_seconds = time.perf_counter() - started
    rss_after_read = rss_mb()

    seconds: list[float] = []
    flagged: list[str] = []
    details: dict[str, Any] = {}
    for _ in range(max(1, args.repeats)):
        t0 = time.perf_counter()
        flagged, details = detect(inputs)
        # A runner that times only part of its work says so with `timed_seconds`.
        seconds.append(details.get("timed_seconds", time.perf_counter() - t0))
        if sum(seconds) + seconds[-1] > args.budget:
            break
    out = {
        "tool": tool,
        "version": version,
        "python": sys.version.split()[0],
        "read_seconds": read_seconds,
        "seconds": seconds,
        "peak_rss_mb": rss_mb(),
        "rss_after_read_mb": rss_after_read,
        "flagged": sorted(flagged),
        "details": details,
    }
    sys.stdout.flush()
    print(json.dumps(out, default=float))
