"""Synthetic tabular data with known drift, shared by every tool of the drift suite.

25 columns: 20 numeric (`x00`..`x19`) and 5 categorical (`c0`..`c4`). The current data
differs from the reference in exactly these ways:

| column | reference | current | ground truth |
|---|---|---|---|
| x00 | N(0, 1) | N(0.5, 1): mean shift of 0.5 sd | drifted |
| x01 | N(0, 1) | N(0, 1.5²): scale x1.5 | drifted |
| x02 | N(0, 1) | bimodal 0.5·N(±0.95, 0.312²): same mean 0 and variance 1, other shape | drifted |
| c0 | p = .4/.3/.2/.1 | p = .3/.3/.2/.2: one category doubles | drifted |
| x03 | N(0, 1) | N(0.02, 1): negligible (KS D ≈ 0.008), significant at 1M rows | not drifted |
| others | same distribution in both | | not drifted |

The undrifted numeric columns have several shapes (normal, log-normal, exponential,
uniform, Student t, a two-component mixture) with different scales; the undrifted
categoricals have 3, 5, 10 and 20 categories. Reference and current have the same
number of rows and come from independent draws.

Files, read by every runner (benchmarks/peers/common.py): `ref_num.npy`, `cur_num.npy`
(float64, rows x 20), `ref_cat.npy`, `cur_cat.npy` (int8 category codes, rows x 5),
and `meta.json` (column names, category labels, the ground truth).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

N_NUMERIC, N_CATEGORICAL = 20, 5
NUMERIC = [f"x{i:02d}" for i in range(N_NUMERIC)]
CATEGORICAL = [f"c{i}" for i in range(N_CATEGORICAL)]
DRIFTED = ["x00", "x01", "x02", "c0"]
NEGLIGIBLE = ["x03"]
DRIFT_KIND = {
    "x00": "mean +0.5 sd",
    "x01": "scale x1.5",
    "x02": "normal -> bimodal, same mean and variance",
    "c0": "category frequencies (.4/.3/.2/.1 -> .3/.3/.2/.2)",
    "x03": "negligible: mean +0.02 sd",
}
CARDINALITY = [4, 3, 5, 10, 20]
C0_REF = [0.4, 0.3, 0.2, 0.1]
C0_CUR = [0.3, 0.3, 0.2, 0.2]
BIMODAL_MU = 0.95  # modes at ±0.95 with sd sqrt(1 - 0.95²): mean 0, variance 1


def _undrifted(rng: np.random.Generator, j: int, n: int) -> np.ndarray:
    """Column j (4..19): the same distribution for reference and current."""
    shape = j % 6
    scale = 1.0 + j / 4
    if shape == 0:
        return rng.normal(10.0 * j, scale, n)
    if shape == 1:
        return rng.lognormal(0.0, 0.6, n) * scale
    if shape == 2:
        return rng.exponential(scale, n)
    if shape == 3:
        return rng.uniform(-scale, 3 * scale, n)
    if shape == 4:
        return rng.standard_t(5, n) * scale
    mix = rng.random(n) < 0.3
    return np.where(mix, rng.normal(5.0, 1.0, n), rng.normal(0.0, 2.0, n))


def _numeric(rng: np.random.Generator, n: int, current: bool) -> np.ndarray:
    out = np.empty((n, N_NUMERIC), dtype=np.float64)
    if current:
        out[:, 0] = rng.normal(0.5, 1.0, n)
        out[:, 1] = rng.normal(0.0, 1.5, n)
        sign = np.where(rng.random(n) < 0.5, -1.0, 1.0)
        out[:, 2] = rng.normal(sign * BIMODAL_MU, np.sqrt(1 - BIMODAL_MU**2), n)
        out[:, 3] = rng.normal(0.02, 1.0, n)
    else:
        for j in range(4):
            out[:, j] = rng.normal(0.0, 1.0, n)
    for j in range(4, N_NUMERIC):
        out[:, j] = _undrifted(rng, j, n)
    return out


def _categorical(rng: np.random.Generator, n: int, current: bool) -> np.ndarray:
    out = np.empty((n, N_CATEGORICAL), dtype=np.int8)
    out[:, 0] = rng.choice(4, size=n, p=C0_CUR if current else C0_REF)
    for j in range(1, N_CATEGORICAL):
        k = CARDINALITY[j]
        p = np.arange(k, 0, -1, dtype=np.float64)  # unequal but fixed frequencies
        out[:, j] = rng.choice(k, size=n, p=p / p.sum())
    return out


def labels() -> dict[str, list[str]]:
    words = ["grocery", "travel", "fuel", "online", "other", "retail", "dining", "health",
             "utilities", "education"]  # fmt: skip
    return {
        c: [words[i % 10] + ("" if i < 10 else f"-{i // 10}") for i in range(CARDINALITY[j])]
        for j, c in enumerate(CATEGORICAL)
    }


def meta(n: int, seed: int) -> dict[str, Any]:
    return {
        "rows": n,
        "seed": seed,
        "numeric": NUMERIC,
        "categorical": CATEGORICAL,
        "labels": labels(),
        "drifted": DRIFTED,
        "negligible": NEGLIGIBLE,
        "drift_kind": DRIFT_KIND,
    }


def write(directory: Path, n: int, seed: int = 0) -> Path:
    """Write one case (reference and current of n rows each) into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    ref_rng, cur_rng = np.random.default_rng([seed, n, 0]), np.random.default_rng([seed, n, 1])
    np.save(directory / "ref_num.npy", _numeric(ref_rng, n, current=False))
    np.save(directory / "cur_num.npy", _numeric(cur_rng, n, current=True))
    np.save(directory / "ref_cat.npy", _categorical(ref_rng, n, current=False))
    np.save(directory / "cur_cat.npy", _categorical(cur_rng, n, current=True))
    (directory / "meta.json").write_text(json.dumps(meta(n, seed), indent=1))
    return directory


def score(flagged: list[str]) -> dict[str, Any]:
    """True positives, false positives and misses of a set of flagged columns."""
    drifted, flagged_set = set(DRIFTED), set(flagged)
    return {
        "tp": len(drifted & flagged_set),
        "fp": len(flagged_set - drifted),
        "misses": len(drifted - flagged_set),
        "fp_columns": sorted(flagged_set - drifted),
        "missed_columns": sorted(drifted - flagged_set),
    }
