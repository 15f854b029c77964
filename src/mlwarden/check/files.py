"""`run_check`: `mlwarden check` on two data files, the work overlapped.

    reading the reference   |  the checks' code loads (this thread)
    reading the current     |  the reference's columns are sketched (two threads)
    the current's columns are sketched against them, the tests run (`check_columns`)

pyarrow's readers release the GIL; the imports (the detector's checks, the statistics:
a sixth of a second of a process's start) are Python holding it; numpy's sorts release
it. The current file is read with the reference's column types (`read_columns(like=)`),
which spares the reader its type inference. This module imports only what reading needs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

from mlwarden.check.columns import DataColumn
from mlwarden.check.read import DEFAULT_LIMIT, read_columns

if TYPE_CHECKING:
    from mlwarden.check.result import CheckReport
    from mlwarden.spec import ObservedModel

# (step, done, total): "reading ref.csv" 0 of 1 ... 1 of 1; "checking columns" i of n.
Progress: TypeAlias = Callable[[str, int, int], None]


def run_check(
    reference: str,
    current: str,
    *,
    manifest: ObservedModel | None = None,
    progress: Progress | None = None,
    limit: int = DEFAULT_LIMIT,
    multivariate: bool = True,
    segments: Sequence[str] = (),
) -> CheckReport:
    """Read both files and judge them with `check_columns` (raises CheckError)."""
    started = time.perf_counter()

    def read(path: str, like: dict[str, DataColumn] | None) -> dict[str, DataColumn]:
        step = f"reading {Path(path).name}"
        if progress:
            progress(step, 0, 1)
        columns = read_columns(path, limit=limit, like=like)
        if progress:
            progress(step, 1, 1)
        return columns

    # One thread reads (pyarrow parses on its own threads), two sketch.
    with ThreadPoolExecutor(max_workers=3) as pool:
        reading = pool.submit(read, reference, None)
        from mlwarden.check import run  # reason: loads while the reference is read

        ref = reading.result()
        reading = pool.submit(read, current, ref)
        prepared = run.prepare_reference(ref, manifest, pool)
        cur = reading.result()
        read_seconds = time.perf_counter() - started
        report = run.check_columns(
            ref, cur, manifest=manifest, progress=progress, reference_name=reference,
            current_name=current, multivariate=multivariate, segments=segments,
            prepared=prepared,
        )  # fmt: skip
    report.timings["readSeconds"] = read_seconds
    return report
