"""frouros: its batch statistical tests per column, `KSTest` for numbers and
`ChiSquareTest` for categories (`fit(X=reference)`, `compare(X=current)`). frouros
has no multi-column test or default significance level, so the alpha is the other
baselines': 0.05 with Bonferroni over the 25 columns."""

from __future__ import annotations

from importlib import metadata
from typing import Any

import numpy as np
from common import main
from frouros.detectors.data_drift import ChiSquareTest, KSTest

ALPHA = 0.05


def prepare(data: dict[str, Any]) -> dict[str, Any]:
    meta = data["meta"]
    data["ref_str"] = {
        c: np.asarray(meta["labels"][c], dtype=object)[data["ref_cat"][:, j]]
        for j, c in enumerate(meta["categorical"])
    }
    data["cur_str"] = {
        c: np.asarray(meta["labels"][c], dtype=object)[data["cur_cat"][:, j]]
        for j, c in enumerate(meta["categorical"])
    }
    return data


def detect(d: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
    meta = d["meta"]
    names = meta["numeric"] + meta["categorical"]
    threshold = ALPHA / len(names)
    p: dict[str, float] = {}
    for j, name in enumerate(meta["numeric"]):
        detector = KSTest()
        detector.fit(X=np.ascontiguousarray(d["ref_num"][:, j]))
        result, _ = detector.compare(X=np.ascontiguousarray(d["cur_num"][:, j]))
        p[name] = float(result.p_value)
    for name in meta["categorical"]:
        detector = ChiSquareTest()
        detector.fit(X=d["ref_str"][name])
        result, _ = detector.compare(X=d["cur_str"][name])
        p[name] = float(result.p_value)
    return [n for n in names if p[n] < threshold], {"p_values": p, "threshold": threshold}


if __name__ == "__main__":
    main("frouros", metadata.version("frouros"), prepare, detect)
