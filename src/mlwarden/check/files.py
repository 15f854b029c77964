"""`run_check`: `mlwarden check` on two data files, read while the checks' code loads.

Both files are read at once on two threads (pyarrow's readers release the GIL, and one
file's conversion to columns overlaps the other's parsing). Meanwhile this thread imports
`check/run.py` and with it the detector's checks and the statistics (a sixth of a second
of a process's start, mostly Python holding the GIL, which the readers do not need);
then `check_columns` judges the columns. This module imports only what reading needs.
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

    def read(path: str) -> dict[str, DataColumn]:
        step = f"reading {Path(path).name}"
        if progress:
            progress(step, 0, 1)
        columns = read_columns(path, limit=limit)
        if progress:
            progress(step, 1, 1)
        return columns

    with ThreadPoolExecutor(max_workers=2) as pool:
        reading = [pool.submit(read, path) for path in (reference, current)]
        from mlwarden.check.run import check_columns  # reason: loads while the files are read

        sides = [future.result() for future in reading]
    read_seconds = time.perf_counter() - started
    report = check_columns(
        sides[0], sides[1], manifest=manifest, progress=progress,
        reference_name=reference, current_name=current, multivariate=multivariate,
        segments=segments,
    )  # fmt: skip
    report.timings["readSeconds"] = read_seconds
    return report
