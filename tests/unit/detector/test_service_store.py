"""The detector service with a reference store (`--reference-store DIR`): what it stored
without, for size, is in status before and after a restart."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_persist_parts import seg, store

from mlwarden.detector import persist
from mlwarden.detector.service import DetectorService
from mlwarden.detector.store import FileStore


async def test_status_says_what_the_stored_reference_was_stored_without(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = seg.model()

    def service() -> DetectorService:
        return DetectorService(model, store=FileStore(str(tmp_path), namespace="ns", name="m"))

    first = service()
    await first.restore_reference()  # nothing stored: warms up
    rng = np.random.default_rng(31)
    for _ in range(40):
        first.detector.ingest(seg.batch(rng, 100), now=0.0)
    monkeypatch.setattr(persist, "MAX_STORED_BYTES", len(store(first.detector).data) - 20_000)
    await first.persist_reference()
    status = first._reference_status()
    assert status["storedIn"] == f"file {tmp_path / 'ns.m-reference.json.gz'}"
    without = status["storedWithout"]
    assert without.startswith("segment ") and "left out for size" in without

    again = service()
    await again.restore_reference()
    restored = again._reference_status()
    assert restored["origin"] == "restored" and restored["storedWithout"] == without
    left = without.split(":")[0].split(", ")[0].removeprefix("segment ")
    unavailable = again.detector.status()["segments"]["unavailable"]
    assert left in unavailable and "left out of the stored reference for size" in unavailable
