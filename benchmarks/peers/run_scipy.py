"""Plain scipy baseline: ks_2samp per numeric column, chi2_contingency per categorical one,
Bonferroni over the 25 columns at alpha 0.05 (a column drifts when p < 0.05 / 25)."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy
from common import main
from scipy import stats

ALPHA = 0.05


def prepare(data: dict[str, Any]) -> dict[str, Any]:
    return data


def detect(d: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
    meta = d["meta"]
    names = meta["numeric"] + meta["categorical"]
    threshold = ALPHA / len(names)
    p: dict[str, float] = {}
    for j, name in enumerate(meta["numeric"]):
        p[name] = float(stats.ks_2samp(d["ref_num"][:, j], d["cur_num"][:, j]).pvalue)
    for j, name in enumerate(meta["categorical"]):
        k = len(meta["labels"][name])
        table = np.vstack(
            [
                np.bincount(d["ref_cat"][:, j], minlength=k),
                np.bincount(d["cur_cat"][:, j], minlength=k),
            ]
        )
        table = table[:, table.sum(axis=0) > 0]
        p[name] = float(stats.chi2_contingency(table).pvalue)
    flagged = [n for n in names if p[n] < threshold]
    return flagged, {"p_values": p, "threshold": threshold}


if __name__ == "__main__":
    main("scipy", scipy.__version__, prepare, detect)
