"""mlwarden's streaming detector, in-process: reference sketches from the reference data,
the whole current data ingested as one window in batches of 1,000 records (the records
format the sidecar ships, through `parse_batch`), then one evaluation.

The timed part is building the reference, `parse_batch` + `Detector.ingest` of every
batch, and `Detector.evaluate`; building the record dicts (what JSON decoding produces in
the real detector) is not timed. `details.evaluate_ms` is the evaluation alone: the
streaming cost per evaluation, which must not grow with the window size.
"""

from __future__ import annotations

import time
from importlib import metadata
from typing import Any

import numpy as np
from common import main

from mlwarden.detector.core import Column, Detector, build_reference
from mlwarden.detector.ingest import parse_batch
from mlwarden.spec import parse_observed_model

BATCH = 1000


def manifest(meta: dict[str, Any], window: int) -> Any:
    features = [{"name": n, "type": "numeric"} for n in meta["numeric"]]
    features += [{"name": n, "type": "categorical"} for n in meta["categorical"]]
    return parse_observed_model(
        {
            "apiVersion": "mlwarden.io/v1alpha1",
            "kind": "ObservedModel",
            "metadata": {"name": "bench", "namespace": "bench"},
            "spec": {
                "target": {"deployment": "bench"},
                "features": features,
                "window": {"size": window},
                "alerting": {"fireAfter": 1},
            },
        }
    )


def prepare(data: dict[str, Any]) -> dict[str, Any]:
    meta = data["meta"]
    names = meta["numeric"] + meta["categorical"]
    labels = {c: np.asarray(meta["labels"][c], dtype=object) for c in meta["categorical"]}

    def raw(num: np.ndarray, cat: np.ndarray) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {n: num[:, j].tolist() for j, n in enumerate(meta["numeric"])}
        out.update({c: labels[c][cat[:, j]].tolist() for j, c in enumerate(meta["categorical"])})
        return out

    return {
        "meta": meta,
        "names": names,
        "ref": raw(data["ref_num"], data["ref_cat"]),
        "cur_num": data["cur_num"],
        "cur_cat": data["cur_cat"],
        "labels": labels,
    }


def batches(inputs: dict[str, Any]):
    meta, num, cat, labels = inputs["meta"], inputs["cur_num"], inputs["cur_cat"], inputs["labels"]
    for start in range(0, len(num), BATCH):
        nums = num[start : start + BATCH].tolist()
        cats = [
            labels[c][cat[start : start + BATCH, j]].tolist()
            for j, c in enumerate(meta["categorical"])
        ]
        records = []
        for i, row in enumerate(nums):
            features = dict(zip(meta["numeric"], row, strict=True))
            for j, c in enumerate(meta["categorical"]):
                features[c] = cats[j][i]
            records.append({"features": features})
        yield {"records": records}


def detect(inputs: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
    meta = inputs["meta"]
    n = len(inputs["cur_num"])
    timed = 0.0
    t0 = time.perf_counter()
    model = manifest(meta, n)
    detector = Detector(model, now=0.0)
    columns = {c.name: Column(c.name, c.kind, c.type) for c in detector.columns.values()}
    detector.set_reference(
        build_reference(inputs["ref"], columns, source="bench", since=0.0), now=0.0
    )
    timed += time.perf_counter() - t0
    for body in batches(inputs):
        t0 = time.perf_counter()
        detector.ingest(parse_batch(body, now=1.0), now=1.0)
        timed += time.perf_counter() - t0
    t0 = time.perf_counter()
    detector.evaluate(now=2.0, now_iso="bench")
    evaluate = time.perf_counter() - t0
    evals = []
    for _ in range(5):
        t1 = time.perf_counter()
        detector.evaluate(now=2.0, now_iso="bench")
        evals.append(time.perf_counter() - t1)
    assert detector.window is not None
    drift = [e for e in detector.last_evidence if e.type == "FeatureDrift"]
    flagged = sorted({e.feature or "" for e in drift if e.failing})
    return flagged, {
        "timed_seconds": timed + evaluate,
        "evaluate_ms": 1000 * float(np.median(evals)),
        "window_records": detector.window.view().n_records,
    }


if __name__ == "__main__":
    main("mlwarden detector", metadata.version("mlwarden"), prepare, detect)
