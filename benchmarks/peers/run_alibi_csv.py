"""Alibi Detect end to end on two CSV files, as a user would run it (benchmarks/check_e2e.py).

    python run_alibi_csv.py REF.csv CUR.csv

pandas.read_csv of both files; each text column becomes integer codes (the reference's
categories; a category only the current file has gets a code of its own); then
`TabularDrift(x_ref, p_val=0.05, categories_per_feature=...)` and
`predict(x_cur, drift_type="batch")`. Prints the flagged columns.
"""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pandas as pd
from alibi_detect.cd import TabularDrift


def main() -> None:
    warnings.filterwarnings("ignore")
    ref = pd.read_csv(sys.argv[1])
    cur = pd.read_csv(sys.argv[2])
    cats: dict[int, None] = {}
    for i, name in enumerate(ref.columns):
        if ref[name].dtype == object:
            levels = pd.Index(pd.unique(pd.concat([ref[name], cur[name]])))
            ref[name] = levels.get_indexer(ref[name])
            cur[name] = levels.get_indexer(cur[name])
            cats[i] = None
    x_ref = ref.to_numpy(dtype=np.float64)
    x_cur = cur.to_numpy(dtype=np.float64)
    detector = TabularDrift(x_ref, p_val=0.05, categories_per_feature=cats)
    result = detector.predict(x_cur, drift_type="batch")["data"]
    p = np.asarray(result["p_val"])
    print([n for n, v in zip(ref.columns, p, strict=True) if v < result["threshold"]])


if __name__ == "__main__":
    main()
