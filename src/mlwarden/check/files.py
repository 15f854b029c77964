"""`run_check`: `mlwarden check` on two data files, the work overlapped.

    reading the reference   |  the checks' code loads (this thread)
    reading the current     |  the reference's columns are converted, then sketched
    the current's columns are sketched against them, the tests run (`check_columns`)

pyarrow's readers release the GIL; the imports (the detector's checks, the statistics:
a sixth of a second of a process's start) are Python holding it; numpy's sorts release
it. The current file is read, as soon as the reference is parsed, with the reference's
column types (`read_columns(types=)`), which spares the reader its type inference. This
module imports only what reading needs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from mlwarden.check.columns import DataColumn, Progress
from mlwarden.check.read import DEFAULT_LIMIT, read_columns

if TYPE_CHECKING:
    import pyarrow as pa

    from mlwarden.check.result import CheckReport
    from mlwarden.spec import ObservedModel


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

    def read(
        path: str,
        types: dict[str, pa.DataType] | None = None,
        on_types: Callable[[dict[str, pa.DataType]], None] | None = None,
    ) -> dict[str, DataColumn]:
        step = f"reading {Path(path).name}"
        if progress:
            progress(step, 0, 1)
        columns = read_columns(path, limit=limit, types=types, on_types=on_types)
        if progress:
            progress(step, 1, 1)
        return columns

    # A thread per file reads it (pyarrow parses on threads of its own); the others, and
    # the reference's reader once done, sketch the reference's columns.
    with ThreadPoolExecutor(max_workers=4) as pool:
        current_read: list[Future[dict[str, DataColumn]]] = []

        def start_current(types: dict[str, pa.DataType]) -> None:  # once the reference is parsed
            current_read.append(pool.submit(read, current, types))

        reading = pool.submit(read, reference, None, start_current)
        from mlwarden.check import run  # reason: loads while the reference is read

        ref = reading.result()
        if not current_read:  # not a CSV reference: no types to give
            start_current({})
        prepared = run.prepare_reference(ref, manifest, pool)
        cur = current_read[0].result()
        read_seconds = time.perf_counter() - started
        report = run.check_columns(
            ref, cur, manifest=manifest, progress=progress, reference_name=reference,
            current_name=current, multivariate=multivariate, segments=segments,
            prepared=prepared,
        )  # fmt: skip
    report.timings["readSeconds"] = read_seconds
    return report
