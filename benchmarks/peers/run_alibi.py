"""Alibi Detect: `TabularDrift(x_ref, p_val=0.05, categories_per_feature=...)`, its
documented tabular detector: KS per numeric column and chi-square per categorical one
(categories given as integer codes), Bonferroni over the 25 columns (its default
correction). A column is flagged when its p-value is below the corrected threshold
(`p_val / 25`, from `predict(drift_type="batch")`). Timed: building the detector on the
reference and `predict` on the current data."""

from __future__ import annotations

from importlib import metadata
from typing import Any

import numpy as np
from alibi_detect.cd import TabularDrift
from common import main


def prepare(data: dict[str, Any]) -> Any:
    meta = data["meta"]
    ref = np.hstack([data["ref_num"], data["ref_cat"].astype(np.float64)])
    cur = np.hstack([data["cur_num"], data["cur_cat"].astype(np.float64)])
    n_num = len(meta["numeric"])
    cats = {n_num + j: None for j in range(len(meta["categorical"]))}
    return ref, cur, cats, meta["numeric"] + meta["categorical"]


def detect(inputs: Any) -> tuple[list[str], dict[str, Any]]:
    ref, cur, cats, names = inputs
    detector = TabularDrift(ref, p_val=0.05, categories_per_feature=cats)
    # drift_type="batch" is where the correction applies: its threshold is p_val / 25
    # (with "feature" every column would be judged at p_val itself, uncorrected).
    result = detector.predict(cur, drift_type="batch")["data"]
    p = np.asarray(result["p_val"], dtype=np.float64)
    threshold = float(result["threshold"])
    flagged = [n for n, pv in zip(names, p, strict=True) if pv < threshold]
    return flagged, {"p_values": dict(zip(names, p.tolist(), strict=True)), "threshold": threshold}


if __name__ == "__main__":
    main("alibi-detect", metadata.version("alibi-detect"), prepare, detect)
