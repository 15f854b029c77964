"""The detector service with a reference store (`--reference-store DIR`): what it stored
without, for size, is in status before and after a restart."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_persist_parts import seg, store

from mlwarden.detector import persist
from mlwarden.detector.ingest import parse_batch
from mlwarden.detector.service import DetectorService
from mlwarden.detector.store import FileStore
from mlwarden.spec import parse_observed_model


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


async def test_a_part_left_out_of_one_store_is_stored_when_it_fits_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What an earlier store of this process left out for size, it still holds: stored again
    (as when an embedding reference completes) with room, it is stored and no longer listed."""
    model = seg.model()
    svc = DetectorService(model, store=FileStore(str(tmp_path), namespace="ns", name="m"))
    await svc.restore_reference()
    rng = np.random.default_rng(32)
    for _ in range(40):
        svc.detector.ingest(seg.batch(rng, 100), now=0.0)
    full = len(store(svc.detector).data)
    monkeypatch.setattr(persist, "MAX_STORED_BYTES", full - 20_000)
    await svc.persist_reference()
    assert svc._reference_status()["storedWithout"].startswith("segment ")
    monkeypatch.setattr(persist, "MAX_STORED_BYTES", full * 2)
    svc._stored_parts = ()  # its parts changed (an embedding reference completed, say)
    await svc.persist_reference()
    assert "storedWithout" not in svc._reference_status()
    stored = persist.decode_reference(
        (tmp_path / "ns.m-reference.json.gz").read_bytes(), where="test"
    )
    assert stored is not None and stored.parts.left_out == ()


class _Unreachable(FileStore):
    """The store as an API server that does not answer the first `failures` reads."""

    def __init__(self, directory: str, failures: int) -> None:
        super().__init__(directory, namespace="ns", name="m")
        self.failures = failures

    async def load(self) -> bytes | None:
        if self.failures:
            self.failures -= 1
            raise persist.StoredReferenceError("the API server did not answer")
        return await super().load()


async def test_embedding_references_are_reloaded_after_the_store_answers_again(
    tmp_path: Path,
) -> None:
    """With a file reference the embedding's reference comes only from the store: a store that
    does not answer at first is asked again (as for a warm-up reference), not given up on."""
    rng = np.random.default_rng(33)
    reference = tmp_path / "ref.csv"
    reference.write_text("a\n" + "".join(f"{v}\n" for v in rng.normal(size=400)))
    model = parse_observed_model({
        "apiVersion": "mlwarden.io/v1alpha1", "kind": "ObservedModel",
        "metadata": {"name": "m", "namespace": "ns"},
        "spec": {
            "target": {"deployment": "m"},
            "features": [{"name": "a", "type": "numeric"},
                         {"name": "emb", "type": "embedding", "dimensions": 8}],
            "reference": {"source": "file", "path": str(reference), "size": 300},
            "window": {"size": 300},
        },
    })  # fmt: skip
    first = DetectorService(model, store=_Unreachable(str(tmp_path), failures=0))
    await first.load_reference()
    records = [
        {"features": {"a": float(rng.normal()), "emb": rng.normal(size=8).tolist()}}
        for _ in range(300)
    ]
    first.detector.ingest(parse_batch({"records": records}, now=0.0), now=0.0)
    await first.persist_reference()
    again = DetectorService(model, store=_Unreachable(str(tmp_path), failures=2))
    await again.load_reference()
    emb = again.detector.status()["embeddings"]["emb"]
    assert emb["referenceVectors"] == 300 and "unavailable" not in emb
    assert again.store_error is None
