"""`mlwarden check` through its Python API, on the same arrays as every other tool.

Uses `mlwarden.check.check_columns(reference, current, manifest=None)` (columns in memory,
no file) when the installed mlwarden has it; otherwise today's `run_check(ref, cur)` with
its file reader replaced by the arrays already in memory, so the timed part is the check
itself in both cases and the file read is `read_seconds`. The JSON says which was used.
Column types are inferred, as `mlwarden check` does without an ObservedModel.

Categorical columns go in as `check.Encoded` (the labels and a code per row), the form
the scipy and numpy baselines get them in (codes), and the one a dictionary-encoded
Parquet column or `mlwarden check`'s CSV reader produces; numeric ones as float64 arrays.
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

import numpy as np
from common import main

import mlwarden.check as check


def prepare(data: dict[str, Any]) -> dict[str, Any]:
    meta = data["meta"]

    def columns(num: np.ndarray, cat: np.ndarray, as_lists: bool) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for j, name in enumerate(meta["numeric"]):
            col = np.ascontiguousarray(num[:, j])
            out[name] = col.tolist() if as_lists else col
        for j, name in enumerate(meta["categorical"]):
            if not as_lists and hasattr(check, "Encoded"):
                codes = np.ascontiguousarray(cat[:, j]).astype(np.int64)
                out[name] = check.Encoded(list(meta["labels"][name]), codes)
                continue
            col = np.asarray(meta["labels"][name], dtype=object)[cat[:, j]]
            out[name] = col.tolist() if as_lists else col
        return out

    if hasattr(check, "check_columns"):
        return {
            "api": "check_columns"
            if not hasattr(check, "Encoded")
            else "check_columns (categoricals as codes)",
            "ref": columns(data["ref_num"], data["ref_cat"], as_lists=False),
            "cur": columns(data["cur_num"], data["cur_cat"], as_lists=False),
        }
    return {
        "api": "run_check (file reader bypassed)",
        "ref": columns(data["ref_num"], data["ref_cat"], as_lists=True),
        "cur": columns(data["cur_num"], data["cur_cat"], as_lists=True),
    }


def detect(inputs: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
    if inputs["api"].startswith("check_columns"):
        report = check.check_columns(inputs["ref"], inputs["cur"], manifest=None)
    else:
        preloaded = {"reference": inputs["ref"], "current": inputs["cur"]}
        check.read_reference = lambda path, limit=0: preloaded[path]  # type: ignore[assignment]
        report = check.run_check("reference", "current")
    # Columns only, as the peers and the detector's runner flag them: the multivariate
    # finding (no feature: PCA over all columns) is no column's, and is reported apart.
    flagged = sorted({e.feature for e in report.drift if e.failing and e.feature is not None})
    findings = {
        e.feature or "multivariate": {
            "test": e.test,
            "statistic": e.statistic,
            "p": e.p_value,
            "failing": e.failing,
        }
        for e in report.drift
    }
    return flagged, {"api": inputs["api"], "findings": findings}


if __name__ == "__main__":
    main("mlwarden check", metadata.version("mlwarden"), prepare, detect)
