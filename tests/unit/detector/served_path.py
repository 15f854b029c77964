"""The served path for tests that compare `mlwarden check` with the streaming detector: the
reference built from raw values, the current rows ingested as records into one window.

Imported by name (this folder is on pytest's pythonpath)."""

from __future__ import annotations

from typing import Any

from mlwarden.detector.alerts import Evidence
from mlwarden.detector.core import Detector, build_reference
from mlwarden.detector.ingest import MAX_RECORDS_PER_BATCH, parse_batch
from mlwarden.detector.multivariate import RowWindow
from mlwarden.spec import ObservedModel


def through_the_detector(
    ref: dict[str, list[Any]], cur: dict[str, list[Any]], om: ObservedModel
) -> list[Evidence]:
    """The served path: reference sketches from raw values (and the segments' references from
    its rows), current rows as ingested records."""
    detector = Detector(om, now=0.0)
    detector.set_reference(
        build_reference(ref, dict(detector.columns), source="t", since=0.0), now=0.0, raw=ref
    )
    n = len(next(iter(cur.values())))
    assert detector.window is not None
    detector.window.size = detector.window.chunk_records = n  # the whole data is one window
    if detector.rows is not None:  # and the multivariate check's rows too
        detector.rows = RowWindow(detector.rows.reference, size=n, duration=None)
    for start in range(0, n, MAX_RECORDS_PER_BATCH):
        records = [
            {"features": {k: v[i] for k, v in cur.items()}}
            for i in range(start, min(n, start + MAX_RECORDS_PER_BATCH))
        ]
        detector.ingest(parse_batch({"records": records}, now=0.0), now=0.0)
    detector.evaluate(now=0.0, now_iso="t")
    return detector.last_evidence
