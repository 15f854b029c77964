"""`mlwarden check`: the detector's drift and data-quality checks on two data sets, offline.

For a training or batch pipeline's CI: compare the data a model is about to see (or was
trained on) with a reference. The checks, the code and the defaults are the detector's:
each column of the reference becomes a reference sketch, the whole current data set one
window, and the detector's own drift verdicts (`Detector.drift_verdicts`, over
`stats.evaluate_drift`) and data-quality checks (`Detector.quality_evidence`) run once.

What this module adds is speed. The detector takes records one request at a time; here
whole columns arrive at once, so:

- files are read by pyarrow's columnar readers (CSV, Parquet, JSON Lines), with the
  detector's reading rules (`detector/reference.py`): only an empty cell is missing, a CSV
  cell that reads as a number is a number, anything else is text;
- a numeric column is one float64 array, sketched with one sort
  (`NumericSketch.from_array`); a categorical column is tallied by value in C
  (`pyarrow.compute.value_counts`) and only its distinct values are mapped to categories
  in Python (`CategoricalSketch.from_counts`), in the order they first appear, so the
  sketches equal the detector's;
- columns are sketched on a small thread pool (numpy and arrow release the GIL).

Column types come from the ObservedModel when one is given, otherwise they are inferred
from the reference as the detector infers them (numbers are numeric, anything else
categorical). Entry points: `check_columns` (in-memory columns, no files) and
`run_check` (two files). `render` turns a report into text, JSON (the public contract in
docs/check.md) or HTML (`mlwarden.report`).

Exit status of the command: 0 when the report is produced and nothing selected by
`--fail-on` was found; 1 when findings match `--fail-on`; 2 on bad input.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mlwarden import __version__
from mlwarden.detector.alerts import Evidence
from mlwarden.detector.core import (
    MIN_VALUES,
    NEW_CATEGORY_MAX_RATE,
    OUT_OF_RANGE_MAX_RATE,
    TYPE_ERROR_MAX_RATE,
    Column,
    Detector,
    Reference,
    WindowView,
    drift_evidence,
    drift_threshold,
    infer_type,
    to_categorical,
    to_numeric,
)
from mlwarden.detector.reference import ReferenceError, format_of
from mlwarden.detector.reference import _number as read_cell
from mlwarden.records import Value, finite_or_none
from mlwarden.spec import DriftCheck, ObservedModel, parse_observed_model
from mlwarden.stats import DEFAULT_MIN_EFFECT, CategoricalSketch, FeatureDrift, NumericSketch
from mlwarden.stats.sketch import DEFAULT_MAX_BINS, DEFAULT_MAX_CATEGORIES, DISTANCE_BINS, Sketch

FAIL_ON = ("none", "drift", "quality", "any")
SCHEMA_ID = "https://mlwarden.io/schemas/check-report-v1.json"
DEFAULT_LIMIT = 50_000_000

# (step, done, total): "reading ref.csv" 0 of 1 ... 1 of 1; "checking columns" i of n.
Progress: TypeAlias = Callable[[str, int, int], None]


class CheckError(ValueError):
    """Input `mlwarden check` cannot judge; the message names the file or column and why."""


@dataclass(frozen=True)
class Encoded:
    """A column as its distinct values, in the order they first appear, and a code per row.

    Code -1 is a missing value. CSV text columns arrive like this: their distinct cells
    are parsed by the detector's rules once each, not once per row.
    """

    uniques: list[Value]
    codes: np.ndarray

    def __len__(self) -> int:
        return int(self.codes.size)


ColumnValues: TypeAlias = Sequence[Any] | np.ndarray | pa.Array | pa.ChunkedArray | Encoded
# A column once normalised: an arrow array (not dictionary, not nested), an Encoded column,
# or a plain list of values (mixed types: judged value by value with the detector's code).
_Column: TypeAlias = pa.Array | Encoded | list[Value]


# --------------------------------------------------------------------------- the report


@dataclass(frozen=True)
class FeatureCheck:
    """One column's drift verdict, with the sketches the verdict (and the plots) come from."""

    name: str
    kind: str  # "feature" | "prediction"
    type: str  # "numeric" | "categorical"
    verdict: FeatureDrift | None  # None when the drift check is off for this kind
    alert_type: str
    threshold: float | None  # what the verdict was held against: alpha, or the effect floor
    effect_floor: float | None
    reference: Sketch
    current: Sketch

    @property
    def evaluated(self) -> bool:
        return self.verdict is not None and not self.verdict.reason.startswith("skipped")

    @property
    def drifted(self) -> bool:
        return self.verdict is not None and self.verdict.drifted


@dataclass(frozen=True)
class CheckReport:
    reference: str
    current: str
    reference_rows: int
    current_rows: int
    columns: dict[str, Column]
    evidence: list[Evidence]
    features: list[FeatureCheck] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def drift(self) -> list[Evidence]:
        return [e for e in self.evidence if e.type in ("FeatureDrift", "PredictionDrift")]

    @property
    def quality(self) -> list[Evidence]:
        return [e for e in self.evidence if e.type == "DataQuality"]

    @property
    def drifted(self) -> list[str]:
        return [f.name for f in self.features if f.drifted]

    def failing(self, fail_on: str) -> list[Evidence]:
        if fail_on == "none":
            return []
        pool = {"drift": self.drift, "quality": self.quality, "any": self.evidence}[fail_on]
        return [e for e in pool if e.failing]

    def to_dict(self) -> dict[str, Any]:
        """The `--format json` document (docs/check.md; schema: docs/check-report.schema.json)."""
        problems = [e for e in self.quality if e.failing]
        return {
            "$schema": SCHEMA_ID,
            "mlwarden": {"version": __version__},
            "reference": {"file": self.reference, "rows": self.reference_rows},
            "current": {"file": self.current, "rows": self.current_rows},
            "settings": self.settings,
            "summary": {
                "columns": len(self.columns),
                "drifted": self.drifted,
                "driftCount": len(self.drifted),
                "qualityProblems": len(problems),
                "failing": {"drift": bool(self.drifted), "quality": bool(problems)},
            },
            "features": [_feature_dict(f) for f in self.features],
            "quality": [
                {
                    "feature": e.feature,
                    "check": e.test,
                    "value": finite_or_none(e.statistic),
                    "threshold": finite_or_none(e.threshold),
                    "failing": e.failing,
                    "message": e.message,
                }
                for e in self.quality
            ],
            "warnings": self.warnings,
            "timings": {k: round(v, 6) for k, v in self.timings.items()},
        }


def _feature_dict(f: FeatureCheck) -> dict[str, Any]:
    v = f.verdict
    res = v.result if v is not None and f.evaluated else None
    return {
        "name": f.name,
        "kind": f.kind,
        "type": f.type,
        "drift": f.drifted,
        "evaluated": f.evaluated,
        "test": v.result.test if v is not None else None,
        "statistic": finite_or_none(res.statistic) if res else None,
        "pValue": finite_or_none(res.p_value) if res else None,
        "adjustedPValue": finite_or_none(v.adjusted_p) if res and v else None,
        "effectSize": _finite_or_str(res.effect) if res else None,
        "effectFloor": f.effect_floor,
        "threshold": f.threshold,
        "reason": v.reason if v is not None else "drift check disabled",
        "reference": _sketch_summary(f.reference),
        "current": _sketch_summary(f.current),
    }


def _finite_or_str(x: float) -> float | str | None:
    # An effect can be +inf (Wasserstein against a constant reference): JSON has no inf.
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return finite_or_none(x)


def _sketch_summary(s: Sketch) -> dict[str, Any]:
    if isinstance(s, NumericSketch):
        return {
            "count": s.total,
            "missing": s.missing,
            "infinite": s.infinite,
            "mean": finite_or_none(s.mean),
            "std": finite_or_none(s.std),
            "min": finite_or_none(s.min),
            "max": finite_or_none(s.max),
        }
    return {
        "count": s.total,
        "missing": s.missing,
        "categories": len(s.counts) + (1 if s.other else 0),
    }


# --------------------------------------------------------------------------- reading


def read_columns(path: str, *, limit: int = DEFAULT_LIMIT) -> dict[str, _Column]:
    """A data file's columns (CSV, Parquet or JSON Lines, by extension); CheckError if unusable."""
    try:
        fmt = format_of(path)
    except ReferenceError as exc:
        raise CheckError(str(exc)) from None
    source: Any = path
    if path.startswith(("http://", "https://")):
        source = pa.BufferReader(_fetch(path))
    else:
        try:
            with Path(path).open("rb") as f:
                empty = not f.read(1)
        except IsADirectoryError:
            raise CheckError(f"{path}: cannot read: is a directory") from None
        except OSError as exc:
            raise CheckError(f"{path}: cannot read: {exc.strerror or exc}") from None
        if empty:
            raise CheckError(f"{path}: the file is empty (no columns, no rows)")
    try:
        if fmt == "csv":
            columns = _read_csv(source, path)
        elif fmt == "parquet":
            columns = _read_parquet(source, path)
        else:
            columns = _read_jsonl(source, path, limit)
    except (pa.ArrowException, OSError, ValueError) as exc:
        if isinstance(exc, CheckError):
            raise
        what = {"csv": "CSV", "parquet": "Parquet", "jsonl": "JSON Lines"}[fmt]
        raise CheckError(f"{path}: not a readable {what} file: {_first_line(exc)}") from None
    if not columns:
        raise CheckError(f"{path}: no columns")
    n = len(next(iter(columns.values())))
    if n == 0:
        raise CheckError(f"{path}: no rows (the columns are there, the data is not)")
    if n > limit:
        columns = {k: _head(v, limit) for k, v in columns.items()}
    return columns


def _fetch(url: str) -> bytes:
    import urllib.request

    from mlwarden.detector.reference import MAX_REFERENCE_BYTES

    try:
        with urllib.request.urlopen(url, timeout=60) as resp:
            data: bytes = resp.read(MAX_REFERENCE_BYTES + 1)
    except OSError as exc:
        raise CheckError(f"{url}: cannot fetch: {exc}") from None
    if len(data) > MAX_REFERENCE_BYTES:
        raise CheckError(f"{url}: larger than {MAX_REFERENCE_BYTES >> 20} MiB; download it first")
    if not data:
        raise CheckError(f"{url}: the file is empty (no columns, no rows)")
    return data


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _head(column: _Column, n: int) -> _Column:
    if isinstance(column, Encoded):
        return Encoded(column.uniques, column.codes[:n])
    return column[:n]


_PLAIN = (pa.types.is_integer, pa.types.is_floating, pa.types.is_string, pa.types.is_null)


def _read_csv(source: Any, path: str) -> dict[str, _Column]:
    import pyarrow.csv as pcsv

    # The detector's CSV rules: only an empty cell is missing, no booleans, no dates.
    convert = pcsv.ConvertOptions(
        null_values=[""], strings_can_be_null=True, true_values=[], false_values=[],
        timestamp_parsers=[],
    )  # fmt: skip
    if isinstance(source, pa.BufferReader):
        source.seek(0)
    table = pcsv.read_csv(source, convert_options=convert)
    odd = [f.name for f in table.schema if not any(t(f.type) for t in _PLAIN)]
    if odd:  # dates and the like: read those columns again as text
        convert.column_types = {name: pa.string() for name in odd}
        if isinstance(source, pa.BufferReader):
            source.seek(0)
        table = pcsv.read_csv(source, convert_options=convert)
    _unique_names(table.column_names, path)
    out: dict[str, _Column] = {}
    for name, chunked in zip(table.column_names, table.columns, strict=True):
        array = _combine(chunked)
        out[name] = _csv_text(array) if pa.types.is_string(array.type) else array
    return out


def _csv_text(array: pa.Array) -> Encoded:
    """A CSV text column, each distinct cell read once by the detector's rules."""
    encoded = array.dictionary_encode()
    uniques = [read_cell(str(s).strip()) for s in encoded.dictionary.to_pylist()]
    codes = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.intp)
    return Encoded(uniques, codes)


def _read_parquet(source: Any, path: str) -> dict[str, _Column]:
    import pyarrow.parquet as pq

    table = pq.read_table(source)
    _unique_names(table.column_names, path)
    return _flat(table)


def _read_jsonl(source: Any, path: str, limit: int) -> dict[str, _Column]:
    import pyarrow.json as pjson

    try:
        table = pjson.read_json(source)
    except pa.ArrowInvalid as exc:
        if "changed from" not in str(exc) and "type" not in str(exc).lower():
            raise
        # A column mixes numbers and text (arrow wants one type per column): read it
        # row by row as the detector does; the mixed values become type errors.
        from mlwarden.detector.reference import read_reference

        try:
            raw = read_reference(path, limit=limit)
        except ReferenceError as error:
            raise CheckError(str(error)) from None
        return {name: list(values) for name, values in raw.items()}
    names = table.column_names
    if "features" in names and pa.types.is_struct(table.schema.field("features").type):
        # The ingest format: {"features": {...}, "outputs": {...}} per line.
        parts = [table.column("features").combine_chunks()]
        if "outputs" in names and pa.types.is_struct(table.schema.field("outputs").type):
            parts.append(table.column("outputs").combine_chunks())
        fields = {
            part.type.field(i).name: part.field(i)
            for part in parts
            for i in range(part.type.num_fields)
        }
        table = pa.table(fields)
    return _flat(table)


def _flat(table: pa.Table) -> dict[str, _Column]:
    out: dict[str, _Column] = {}
    for name, chunked in zip(table.column_names, table.columns, strict=True):
        array = _combine(chunked)
        if pa.types.is_nested(array.type):
            continue  # lists and objects are not features (the detector skips them too)
        out[name] = array
    return out


def _combine(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    array = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    if pa.types.is_large_string(array.type) or str(array.type) == "string_view":
        array = array.cast(pa.string())
    return array


def _unique_names(names: list[str], path: str) -> None:
    twice = sorted(n for n, c in Counter(names).items() if c > 1)
    if twice:
        raise CheckError(f"{path}: column name(s) used more than once: {', '.join(twice)}")


# --------------------------------------------------------------------------- columns


def _normalise(name: str, values: ColumnValues, side: str) -> _Column:
    """Any supported column form as an arrow array, an Encoded column or a list of values."""
    if isinstance(values, Encoded):
        return values
    if isinstance(values, pa.Array | pa.ChunkedArray):
        array = _combine(values)
    else:
        if isinstance(values, np.ndarray) and values.ndim != 1:
            raise CheckError(f"{side} column {name!r}: expected one dimension, got {values.ndim}")
        try:
            array = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError):
            return list(values)  # mixed types: value by value, as the detector does
        array = _combine(array)
    if pa.types.is_nested(array.type):
        return list(array.to_pylist())
    return array


def _is_number_type(t: pa.DataType) -> bool:
    return bool(pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t))


def inferred_type(column: _Column) -> str:
    """`detector.core.infer_type`, read from the column's form instead of every value."""
    if isinstance(column, pa.Array):
        numeric = _is_number_type(column.type) and column.null_count < len(column)
        return "numeric" if numeric else "categorical"
    if isinstance(column, Encoded):
        return infer_type(column.uniques)
    return infer_type(column)


def _present(column: _Column) -> int:
    if isinstance(column, pa.Array):
        return int(len(column) - column.null_count)
    if isinstance(column, Encoded):
        return int(np.count_nonzero(column.codes >= 0))
    return sum(v is not None for v in column)


def numeric_values(column: _Column) -> tuple[np.ndarray, int]:
    """`detector.core.to_numeric` of a whole column: floats (NaN missing), type errors."""
    if isinstance(column, list):
        return to_numeric(column)
    if isinstance(column, Encoded):
        table, errors = to_numeric(column.uniques)
        wrong = np.array([v is not None and not isinstance(v, int | float) for v in column.uniques])
        lookup = np.append(table, np.nan)  # code -1 (missing) reads the last slot
        x = lookup[column.codes]
        n_errors = 0
        if errors:
            counts = np.bincount(column.codes[column.codes >= 0], minlength=len(column.uniques))
            n_errors = int(counts[wrong].sum())
        return x, n_errors
    t = column.type
    if _is_number_type(t) or pa.types.is_boolean(t) or pa.types.is_null(t):
        floats = column.cast(pa.float64())
        return floats.to_numpy(zero_copy_only=False).astype(np.float64, copy=False), 0
    # Text, dates, bytes where a number belongs: every present value is a type error.
    return np.full(len(column), np.nan), _present(column)


def category_counts(column: _Column) -> tuple[dict[str, int], int]:
    """`to_categorical` of a whole column, tallied: counts in first-appearance order, missing."""
    if isinstance(column, list):
        tally = Counter(to_categorical(column))
        missing = tally.pop(None, 0)
        return {k: v for k, v in tally.items() if k is not None}, missing
    if isinstance(column, Encoded):
        counts = np.bincount(column.codes[column.codes >= 0], minlength=len(column.uniques))
        labels: list[str | None] = to_categorical(column.uniques)
        tallies = counts.tolist()
        missing = int(np.count_nonzero(column.codes < 0))
    else:
        vc = pc.value_counts(column)
        values = vc.field("values")
        tallies = vc.field("counts").to_pylist()
        if pa.types.is_string(values.type):
            labels = values.to_pylist()
        else:
            labels = to_categorical(values.to_pylist())
        missing = 0
    out: dict[str, int] = {}
    for label, c in zip(labels, tallies, strict=True):
        if label is None:
            missing += c
        elif c:
            out[label] = out.get(label, 0) + c
    return out, missing


def _kind_name(column: _Column) -> str:
    if isinstance(column, pa.Array):
        t = column.type
        if pa.types.is_null(t) or column.null_count == len(column):
            return "empty"
        if _is_number_type(t):
            return "numbers"
        if pa.types.is_string(t):
            return "text"
        return str(t)
    values = column.uniques if isinstance(column, Encoded) else column
    present = [v for v in values if v is not None]
    if not present:
        return "empty"
    numbers = sum(isinstance(v, int | float) and not isinstance(v, bool) for v in present)
    if numbers == len(present):
        return "numbers"
    return "numbers and text" if numbers else "text"


# --------------------------------------------------------------------------- checking


@dataclass
class _Sketched:
    name: str
    reference: Sketch
    current: Sketch
    type_errors: int
    out_of_range: int


def _sketch_column(name: str, column: Column, ref: _Column, cur: _Column) -> _Sketched:
    if column.type == "numeric":
        x_ref, _ = numeric_values(ref)
        reference = NumericSketch.from_array(x_ref)
        x_cur, errors = numeric_values(cur)
        current = NumericSketch.from_array(x_cur, reference.edges)
        # Values outside [reference min, reference max]: the min and max are edges, so
        # these are the two tail cells and the infinities (the detector compares values).
        outside = (
            int(current.counts[0] + current.counts[-1]) + current.infinite if reference.total else 0
        )
        return _Sketched(name, reference, current, errors, outside)
    ref_counts, ref_missing = category_counts(ref)
    cur_counts, cur_missing = category_counts(cur)
    return _Sketched(
        name,
        CategoricalSketch.from_counts(ref_counts, missing=ref_missing),
        CategoricalSketch.from_counts(cur_counts, missing=cur_missing),
        0,
        0,
    )


def _synthetic_model(features: dict[str, str]) -> ObservedModel:
    return parse_observed_model({
        "apiVersion": "mlwarden.io/v1alpha1", "kind": "ObservedModel",
        "metadata": {"name": "check"},
        "spec": {"target": {"deployment": "check"},
                 "features": [{"name": n, "type": t} for n, t in features.items()],
                 "alerting": {"fireAfter": 1, "resolveAfter": 1}},
    })  # fmt: skip


def _plan_columns(
    ref: dict[str, _Column],
    cur: dict[str, _Column],
    manifest: ObservedModel | None,
    names: tuple[str, str],
) -> tuple[ObservedModel, dict[str, Column]]:
    """The model to judge by and the columns to check; CheckError on mismatched columns."""
    ref_name, cur_name = names
    spec = manifest.spec if manifest is not None else None
    prediction = spec.prediction if spec is not None else None
    if spec is not None and spec.features:
        columns = {f.name: Column(f.name, "feature", f.type) for f in spec.features}
        wanted = list(columns)
    else:
        skip = {prediction.name} if prediction is not None else set()
        columns = {
            n: Column(n, "feature", inferred_type(c)) for n, c in ref.items() if n not in skip
        }
        wanted = list(columns)
        if manifest is None:
            wanted = list(dict.fromkeys([*ref, *cur]))  # without a manifest both must match
    if prediction is not None and (prediction.name in ref or prediction.name in cur):
        columns[prediction.name] = Column(prediction.name, "prediction", prediction.type)
        wanted.append(prediction.name)
    missing_ref = [n for n in wanted if n not in ref]
    missing_cur = [n for n in wanted if n not in cur]
    if missing_ref or missing_cur:
        parts = []
        if missing_ref:
            parts.append(f"missing from {_label('reference', ref_name)}: {', '.join(missing_ref)}")
        if missing_cur:
            parts.append(f"missing from {_label('current', cur_name)}: {', '.join(missing_cur)}")
        raise CheckError("the files do not have the same columns: " + "; ".join(parts))
    if manifest is None:
        model = _synthetic_model({n: c.type for n, c in columns.items()})
    elif not spec or not spec.features:
        model = _with_features(
            manifest, {n: c.type for n, c in columns.items() if c.kind == "feature"}
        )
    else:
        model = manifest
    return model, columns


def _with_features(manifest: ObservedModel, features: dict[str, str]) -> ObservedModel:
    import dataclasses

    from mlwarden.spec import Feature

    declared = tuple(Feature(name=n, type=cast(Any, t)) for n, t in features.items())
    spec = dataclasses.replace(manifest.spec, features=declared)
    return dataclasses.replace(manifest, spec=spec)


def check_columns(
    reference: Mapping[str, ColumnValues],
    current: Mapping[str, ColumnValues],
    *,
    manifest: ObservedModel | None = None,
    progress: Progress | None = None,
    reference_name: str = "reference",
    current_name: str = "current",
    threads: int | None = None,
) -> CheckReport:
    """Judge `current` against `reference`, column by column, as the detector would.

    Columns are numpy arrays, sequences of JSON scalars (None: missing), pyarrow arrays
    or `Encoded` columns, all of one length per side. Types come from `manifest` when it
    declares features, otherwise from the reference (`infer_type`). Raises CheckError on
    empty data, columns of unequal length, or columns missing from one side.
    """
    started = time.perf_counter()
    names = (reference_name, current_name)
    ref = _side(reference, reference_name, "reference")
    cur = _side(current, current_name, "current")
    model, columns = _plan_columns(ref, cur, manifest, names)
    n_ref = len(next(iter(ref.values())))
    n_cur = len(next(iter(cur.values())))
    warnings = _type_warnings(columns, ref, cur, names)
    if n_cur < MIN_VALUES:
        warnings.append(
            f"the current data has {n_cur} rows, fewer than the {MIN_VALUES} a check needs: "
            "nothing was evaluated"
        )

    workers = threads if threads is not None else min(4, os.cpu_count() or 1)
    order = list(columns)
    sketched: dict[str, _Sketched] = {}
    step = "checking columns"
    if progress:
        progress(step, 0, len(order))
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = [pool.submit(_sketch_column, n, columns[n], ref[n], cur[n]) for n in order]
        for done, future in enumerate(futures, start=1):
            result = future.result()
            sketched[result.name] = result
            if progress:
                progress(step, done, len(order))

    digest = hashlib.sha256()
    for n in order:
        s = sketched[n].reference
        digest.update(n.encode())
        digest.update(
            s.counts.tobytes() if isinstance(s, NumericSketch) else repr(s.counts).encode()
        )
    source = f"file:{reference_name}"
    ref_model = Reference(
        f"{source}@{digest.hexdigest()[:12]}", source, 0.0, n_ref, dict(columns),
        {n: sketched[n].reference for n in order},
    )  # fmt: skip
    detector = Detector(model, now=0.0)
    detector.set_reference(ref_model, now=0.0)
    unexpected = Counter({n: _present(c) for n, c in cur.items() if n not in columns})
    view = WindowView(
        sketches={n: sketched[n].current for n in order},
        type_errors=Counter({n: s.type_errors for n, s in sketched.items() if s.type_errors}),
        out_of_range=Counter({n: s.out_of_range for n, s in sketched.items() if s.out_of_range}),
        absent=Counter(),
        unexpected=+unexpected,
        n_records=n_cur,
        n_requests=0,
        n_errors=0,
        latency_counts=np.zeros(1, dtype=np.int64),
        probabilities=None,
        labelled=[],
    )
    verdicts = {
        v.feature: (alert_type, check, v) for alert_type, check, v in detector.drift_verdicts(view)
    }
    features: list[FeatureCheck] = []
    evidence: list[Evidence] = []
    for n in order:
        column = columns[n]
        entry = verdicts.get(n)
        check = _check_for(model, column.kind)
        alert_type = "FeatureDrift" if column.kind == "feature" else "PredictionDrift"
        verdict = entry[2] if entry else None
        floor = None
        threshold = None
        if verdict is not None:
            floor = (
                check.min_effect if check.min_effect is not None
                else DEFAULT_MIN_EFFECT[verdict.result.test]
            )  # fmt: skip
            threshold = drift_threshold(check, verdict.result)
        fc = FeatureCheck(
            n, column.kind, column.type, verdict, alert_type, threshold, floor,
            sketched[n].reference, sketched[n].current,
        )  # fmt: skip
        features.append(fc)
        if verdict is not None and fc.evaluated:
            evidence.append(drift_evidence(alert_type, check, verdict))
    evidence += detector.quality_evidence(view)
    return CheckReport(
        reference=reference_name,
        current=current_name,
        reference_rows=n_ref,
        current_rows=n_cur,
        columns=dict(columns),
        evidence=evidence,
        features=features,
        settings=settings_of(model, manifest),
        warnings=warnings,
        timings={"checkSeconds": time.perf_counter() - started},
    )


def _check_for(model: ObservedModel, kind: str) -> DriftCheck:
    d = model.spec.detectors
    return d.drift if kind == "feature" else d.prediction_drift


def _label(side: str, name: str) -> str:
    return f"the {side} data" if name == side else f"the {side} {name}"


def _side(columns: Mapping[str, ColumnValues], file: str, side: str) -> dict[str, _Column]:
    if not columns:
        raise CheckError(f"{_label(side, file)} has no columns")
    out = {str(n): _normalise(str(n), v, side) for n, v in columns.items()}
    lengths = {n: len(c) for n, c in out.items()}
    if len(set(lengths.values())) > 1:
        shown = ", ".join(f"{n}={k}" for n, k in lengths.items())
        raise CheckError(f"{_label(side, file)} has columns of different lengths: {shown}")
    if not next(iter(lengths.values())):
        raise CheckError(f"{_label(side, file)} has no rows")
    return out


def _type_warnings(
    columns: dict[str, Column],
    ref: dict[str, _Column],
    cur: dict[str, _Column],
    names: tuple[str, str],
) -> list[str]:
    out = []
    for n, column in columns.items():
        was, now = _kind_name(ref[n]), _kind_name(cur[n])
        if "empty" in (was, now) or was == now:
            continue
        consequence = (
            "values that are not numbers count as type errors"
            if column.type == "numeric"
            else "values are compared as categories"
        )
        out.append(
            f"column {n!r} holds {was} in {_label('reference', names[0])} but {now} in "
            f"{_label('current', names[1])}; it is checked as {column.type}: {consequence}"
        )
    return out


def settings_of(model: ObservedModel, manifest: ObservedModel | None) -> dict[str, Any]:
    d = model.spec.detectors

    def drift(check: DriftCheck) -> dict[str, Any]:
        return {
            "enabled": check.enabled,
            "test": check.test,
            "pValue": check.p_value,
            "correction": check.correction,
            "minEffect": check.min_effect,
            "effectFloors": dict(DEFAULT_MIN_EFFECT)
            if check.min_effect is None
            else dict.fromkeys(DEFAULT_MIN_EFFECT, check.min_effect),
        }

    q = d.quality
    return {
        "observedModel": f"{manifest.namespace}/{manifest.name}" if manifest else None,
        "drift": drift(d.drift),
        "predictionDrift": drift(d.prediction_drift),
        "quality": {
            "enabled": q.enabled,
            "maxMissingRate": q.max_missing_rate,
            "maxTypeErrorRate": TYPE_ERROR_MAX_RATE,
            "outOfRange": q.out_of_range,
            "maxOutOfRangeRate": OUT_OF_RANGE_MAX_RATE,
            "newCategories": q.new_categories,
            "maxNewCategoryRate": NEW_CATEGORY_MAX_RATE,
        },
        "minValues": MIN_VALUES,
        "numericBins": DEFAULT_MAX_BINS,
        "distanceBins": DISTANCE_BINS,
        "maxCategories": DEFAULT_MAX_CATEGORIES,
    }


def run_check(
    reference: str,
    current: str,
    *,
    manifest: ObservedModel | None = None,
    progress: Progress | None = None,
    limit: int = DEFAULT_LIMIT,
) -> CheckReport:
    """Read both files and judge them with `check_columns` (raises CheckError)."""
    started = time.perf_counter()
    sides = []
    for path in (reference, current):
        step = f"reading {Path(path).name}"
        if progress:
            progress(step, 0, 1)
        sides.append(read_columns(path, limit=limit))
        if progress:
            progress(step, 1, 1)
    read_seconds = time.perf_counter() - started
    report = check_columns(
        sides[0], sides[1], manifest=manifest, progress=progress,
        reference_name=reference, current_name=current,
    )  # fmt: skip
    report.timings["readSeconds"] = read_seconds
    return report


# --------------------------------------------------------------------------- rendering


def _num(x: float | None, spec: str = ".3g") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return format(x, spec)


def render_text(report: CheckReport) -> str:
    lines = [
        f"reference: {report.reference} ({report.reference_rows} rows)",
        f"current:   {report.current} ({report.current_rows} rows)",
        "",
    ]
    evaluated = [f for f in report.features if f.evaluated]
    drifted = [f for f in report.features if f.drifted]
    lines.append(f"drift: {len(drifted)} of {len(evaluated)} columns drifted")
    for f in report.features:
        mark = "DRIFT" if f.drifted else ("ok   " if f.evaluated else "-    ")
        reason = f.verdict.reason if f.verdict else "drift check disabled"
        lines.append(f"  {mark} {f.name:<24} {f.type:<11} {reason}")
    problems = [e for e in report.quality if e.failing]
    lines.append("")
    lines.append(f"data quality: {len(problems)} problem(s)")
    for e in problems:
        lines.append(f"  FAIL  {(e.feature or '(schema)'):<24} {e.test}: {e.message}")
    for w in report.warnings:
        lines.append(f"warning: {w}")
    return "\n".join(lines) + "\n"


def render(report: CheckReport, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(report.to_dict(), indent=2, allow_nan=False) + "\n"
    if fmt == "html":
        from mlwarden.report import render_html

        return render_html(report)
    return render_text(report)
