"""`mlwarden check`'s multivariate check: the detector's, on samples of the two files' rows.

The detector judges at most `stats.multivariate.REFERENCE_ROWS` (5,000) rows a side: a
uniform sample of its reference and the window's latest rows. `check` does the same on the
files: a uniform sample of at most that many rows of each (seeded by the reference's id, so
a run is reproducible), the features only (not the prediction), encoded and judged by the
detector's own code (`detector.multivariate.evaluate`) with `spec.detectors.multivariate`
(or its defaults). With fewer than two usable features it is not evaluated, and says why.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa

from mlwarden.check.columns import DataColumn, Encoded, numeric_values
from mlwarden.detector import multivariate as mvd
from mlwarden.detector.alerts import Evidence
from mlwarden.detector.checks import Column
from mlwarden.detector.core import to_categorical
from mlwarden.spec import MultivariateCheck
from mlwarden.stats import multivariate as mv


def _take(column: DataColumn, index: np.ndarray) -> DataColumn:
    if isinstance(column, pa.Array):
        # The indices as an arrow array from their buffer: `pa.array(index)` would import
        # pandas when it is installed.
        at = np.ascontiguousarray(index, dtype=np.int64)
        return column.take(pa.Array.from_buffers(pa.int64(), len(at), [None, pa.py_buffer(at)]))
    if isinstance(column, Encoded):
        return Encoded(column.uniques, column.codes[index])
    return [column[i] for i in index]


def _categories(column: DataColumn) -> list[str | None]:
    if isinstance(column, Encoded):
        labels = to_categorical(column.uniques)
        return [labels[c] if c >= 0 else None for c in column.codes.tolist()]
    values = column.to_pylist() if isinstance(column, pa.Array) else column
    return to_categorical(values)


def _typed(
    side: Mapping[str, DataColumn], columns: Mapping[str, Column], index: np.ndarray
) -> dict[str, tuple[str, Any]]:
    out: dict[str, tuple[str, Any]] = {}
    for name, column in columns.items():
        if column.kind != "feature":
            continue
        if column.type == "numeric":  # the rows of the whole column's values: no arrow take
            out[name] = ("numeric", numeric_values(side[name])[0][index])
        else:
            out[name] = ("categorical", _categories(_take(side[name], index)))
    return out


def _sample(n: int, rng: np.random.Generator) -> np.ndarray:
    if n <= mv.REFERENCE_ROWS:
        return np.arange(n)
    return np.sort(rng.choice(n, size=mv.REFERENCE_ROWS, replace=False))


def check_multivariate(
    reference: Mapping[str, DataColumn],
    current: Mapping[str, DataColumn],
    columns: Mapping[str, Column],
    check: MultivariateCheck,
    *,
    reference_id: str,
) -> tuple[dict[str, Any], Evidence | None]:
    """The report's `multivariate` object, and the evidence when it was evaluated."""
    base: dict[str, Any] = {"method": check.method}
    seed = mvd.seed_of(reference_id)
    rng = np.random.default_rng(seed)
    n_ref = len(next(iter(reference.values())))
    n_cur = len(next(iter(current.values())))
    ordered = dict(sorted(columns.items()))  # the detector's order (build_reference sorts)
    ref_index, cur_index = _sample(n_ref, rng), _sample(n_cur, rng)
    sample = mvd.reference_sample(_typed(reference, ordered, ref_index), len(ref_index), seed=seed)
    if sample is None:
        return base | _not_evaluated(mvd.unusable_reason(None)), None
    rows = sample.encoding.encode(
        {n: v for n, (_, v) in _typed(current, ordered, cur_index).items()}, len(cur_index)
    )
    result = mvd.evaluate(sample, rows, check)
    if result is None:
        return base | _not_evaluated(
            f"not run: {len(rows)} current rows, fewer than the {mv.MIN_ROWS} it needs"
        ), None
    out = base | mvd.result_dict(result) | {"evaluated": True}
    out["usedFeatures"] = list(sample.encoding.names)
    return out, mvd.to_evidence(result)


def _not_evaluated(reason: str) -> dict[str, Any]:
    return {
        "drift": False,
        "evaluated": False,
        "statistic": None,
        "threshold": None,
        "pValue": None,
        "features": [],
        "reason": reason,
    }
