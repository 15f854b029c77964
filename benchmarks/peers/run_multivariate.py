"""The multivariate peers on the multivariate benchmark's streams (benchmarks/multivariate.py).

    <peer python> run_multivariate.py --tool nannyml|alibi --data DIR

Each stream: `ref_<i>.npy` (reference rows) and `cur_<i>.npy` (chunks of `--chunk` rows one
after another); prints JSON: per stream the alert of each chunk, and the seconds spent fitting
and per chunk. NannyML: `DataReconstructionDriftCalculator(column_names, chunk_size)` with its
defaults (PCA keeping 65% of the variance, alert beyond mean +- 3 sd of the reference chunks'
errors). Alibi Detect: `MMDDrift(x_ref, p_val=0.01, n_permutations=100)` (needs its
TensorFlow or PyTorch backend), one `predict` per chunk.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any


def nannyml_stream(ref: Any, cur: Any, chunk: int) -> tuple[list[bool], float, float]:
    import nannyml as nml
    import pandas as pd

    names = [f"f{i}" for i in range(ref.shape[1])]
    t0 = time.process_time()
    calc = nml.DataReconstructionDriftCalculator(column_names=names, chunk_size=chunk)
    calc.fit(pd.DataFrame(ref, columns=names))
    fit = time.process_time() - t0
    t0 = time.process_time()
    df = calc.calculate(pd.DataFrame(cur, columns=names)).filter(period="analysis").to_df()
    per_chunk = (time.process_time() - t0) / (len(cur) // chunk)
    alerts = [bool(a) for a in df[("reconstruction_error", "alert")].tolist()]
    return alerts, fit, per_chunk


def alibi_stream(ref: Any, cur: Any, chunk: int) -> tuple[list[bool], float, float]:
    import importlib.util

    from alibi_detect.cd import MMDDrift

    backend = "pytorch" if importlib.util.find_spec("torch") else "tensorflow"
    t0 = time.process_time()
    cd = MMDDrift(ref.astype("float32"), backend=backend, p_val=0.01, n_permutations=100)
    fit = time.process_time() - t0
    alerts = []
    t0 = time.process_time()
    for start in range(0, len(cur), chunk):
        pred = cd.predict(cur[start : start + chunk].astype("float32"))
        alerts.append(bool(pred["data"]["is_drift"]))
    per_chunk = (time.process_time() - t0) / len(alerts)
    return alerts, fit, per_chunk


def main() -> None:
    import numpy as np

    parser = argparse.ArgumentParser()
    parser.add_argument("--tool", choices=("nannyml", "alibi"), required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--chunk", type=int, default=1000)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    run = nannyml_stream if args.tool == "nannyml" else alibi_stream
    package = "nannyml" if args.tool == "nannyml" else "alibi-detect"
    out: dict[str, Any] = {"tool": args.tool, "version": metadata.version(package), "streams": []}
    try:
        for ref_path in sorted(args.data.glob("ref_*.npy")):
            cur = np.load(ref_path.with_name(ref_path.name.replace("ref_", "cur_")))
            alerts, fit, per_chunk = run(np.load(ref_path), cur, args.chunk)
            out["streams"].append({"alerts": alerts, "fit_cpu_s": fit, "chunk_cpu_s": per_chunk})
    except Exception as exc:  # a peer's failure is reported in its row, not raised
        out["error"] = f"{type(exc).__name__}: {exc}"
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
