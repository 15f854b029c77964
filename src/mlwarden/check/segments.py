"""`mlwarden check --segment COLUMN`: the checks per segment, as the detector runs them.

The segments of a column are its most frequent values in the reference (at most `maxLevels`,
from the ObservedModel's `spec.segments` entry for that column, else 20), and `other`.
Each segment's reference rows and current rows are sketched over the all-traffic reference's
edges and judged by the detector's own functions (`detector.segments.build_segment_reference`,
`sketch_segments`, `evaluate_segments`): one drift correction over every segment × feature
pair, the same tests, floors and quality limits as the streaming detector's segments.

The result is the report's `segments` object (docs/check.md):

    {"correction": "...", "drifted": [{"segment": {"country": "BR"}, "feature": "x0"}],
     "columns": [{"column": "country", "maxLevels": 20,
                  "segments": [{"level": "BR", "referenceRows": 512, "currentRows": 480,
                                "evaluated": true, "drifted": ["x0"],
                                "checks": [{type, feature, test, statistic, pValue,
                                            threshold, failing, message}]}]}]}
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from mlwarden.check.columns import CheckError, DataColumn, Encoded, numeric_values
from mlwarden.detector.alerts import Evidence
from mlwarden.detector.checks import MIN_VALUES, Column, ReferenceSummary, WindowView
from mlwarden.detector.core import to_categorical
from mlwarden.detector.segments import (
    Converted,
    SegmentReference,
    build_segment_reference,
    evaluate_segments,
    sketch_segments,
    to_levels,
)
from mlwarden.records import finite_or_none
from mlwarden.spec import Detectors, ObservedModel, Segment
from mlwarden.stats.segments import level_index


def segments_to_check(
    requested: Sequence[str], manifest: ObservedModel | None, available: Sequence[str]
) -> list[Segment]:
    """The segment columns: `--segment` (with the manifest's `maxLevels` for a column it
    names), else the manifest's `spec.segments`. CheckError on a column neither file has."""
    declared = {s.column: s for s in manifest.spec.segments} if manifest is not None else {}
    if not requested:
        return list(declared.values())
    out: list[Segment] = []
    for name in dict.fromkeys(requested):
        if name not in available:
            raise CheckError(
                f"--segment {name!r}: no such column in both files "
                f"(columns: {', '.join(sorted(available))})"
            )
        out.append(declared.get(name, Segment(column=name)))
    return out


def _levels(column: DataColumn) -> list[str | None]:
    if isinstance(column, Encoded):
        labels = to_levels(column.uniques, len(column.uniques))
        return [labels[c] if c >= 0 else None for c in column.codes.tolist()]
    values = column.to_pylist() if isinstance(column, pa.Array) else column
    return to_levels(values, len(values))


def _categories(column: DataColumn) -> list[str | None]:
    if isinstance(column, Encoded):
        labels = to_categorical(column.uniques)
        return [labels[c] if c >= 0 else None for c in column.codes.tolist()]
    return to_categorical(column.to_pylist() if isinstance(column, pa.Array) else column)


def _type_errors(column: DataColumn, x: np.ndarray) -> np.ndarray:
    """Per row: a present value that is not a number (the detector's type error)."""
    if isinstance(column, Encoded):
        wrong = np.array(
            [v is not None and not isinstance(v, int | float) for v in column.uniques] + [False]
        )
        out: np.ndarray = wrong[column.codes]  # code -1 (missing) reads the last slot
        return out
    if isinstance(column, list):
        return np.array([v is not None and not isinstance(v, int | float) for v in column])
    t = column.type
    numbers = pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)
    if numbers or pa.types.is_boolean(t) or pa.types.is_null(t):
        return np.zeros(len(x), dtype=bool)
    # Text, dates, bytes where a number belongs: every present value (as numeric_values).
    return ~np.asarray(column.is_null().to_numpy(zero_copy_only=False), dtype=bool)


def _convert(data: Mapping[str, DataColumn], columns: Mapping[str, Column]) -> dict[str, Converted]:
    return {
        name: numeric_values(data[name])[0] if column.type == "numeric" else _categories(data[name])
        for name, column in columns.items()
    }


def check_segments(
    segments: Sequence[Segment],
    ref: Mapping[str, DataColumn],
    cur: Mapping[str, DataColumn],
    columns: Mapping[str, Column],
    summary: ReferenceSummary,
    detectors: Detectors,
) -> tuple[list[Evidence], dict[str, Any]]:
    """The per-segment evidence and the report's `segments` object."""
    converted_ref = _convert(ref, columns)
    converted_cur = _convert(cur, columns)
    type_errors: dict[str, np.ndarray] = {}
    out_of_range: dict[str, np.ndarray] = {}
    for name, column in columns.items():
        values = converted_cur[name]
        if column.type != "numeric" or not isinstance(values, np.ndarray):
            continue
        type_errors[name] = _type_errors(cur[name], values)
        ref_sketch = summary.sketches[name]
        low, high = float(ref_sketch.min), float(ref_sketch.max)  # type: ignore[union-attr]
        if ref_sketch.total:
            out_of_range[name] = (values < low) | (values > high)
    references: list[SegmentReference] = []
    views: dict[tuple[str, str], WindowView] = {}
    current_rows: dict[tuple[str, str], int] = {}
    for segment in segments:
        seg_ref = build_segment_reference(
            segment, _levels(ref[segment.column]), converted_ref, summary
        )
        references.append(seg_ref)
        index = level_index(_levels(cur[segment.column]), seg_ref.levels)
        names = seg_ref.segments
        per_segment = sketch_segments(index, len(names), converted_cur, summary.sketches)
        for i, level in enumerate(names):
            rows = index == i
            n = int(np.count_nonzero(rows))
            current_rows[(segment.column, level)] = n
            views[(segment.column, level)] = WindowView(
                sketches=per_segment[i],
                type_errors=+Counter(
                    {k: int(np.count_nonzero(m & rows)) for k, m in type_errors.items()}
                ),
                out_of_range=+Counter(
                    {k: int(np.count_nonzero(m & rows)) for k, m in out_of_range.items()}
                ),
                n_records=n,
            )
    evidence = evaluate_segments(references, views, summary, detectors)
    by_segment: dict[tuple[str, str], list[Evidence]] = {}
    for e in evidence:
        assert e.segment is not None
        by_segment.setdefault(e.segment, []).append(e)
    drift_types = ("FeatureDrift", "PredictionDrift")
    drifted = [
        {"segment": {e.segment[0]: e.segment[1]}, "feature": e.feature}
        for e in evidence
        if e.failing and e.type in drift_types and e.segment is not None
    ]
    tests = sum(1 for e in evidence if e.type in drift_types and e.p_value is not None)
    report = {
        "correction": f"{detectors.drift.correction} over {tests} segment × feature tests "
        f"at pValue {detectors.drift.p_value:g}",
        "drifted": drifted,
        "columns": [
            {
                "column": r.column,
                "maxLevels": s.max_levels,
                "segments": [
                    _segment_dict(r, level, current_rows[(r.column, level)], by_segment)
                    for level in r.segments
                ],
            }
            for r, s in zip(references, segments, strict=True)
        ],
    }
    return evidence, report


def _segment_dict(
    r: SegmentReference,
    level: str,
    current_rows: int,
    by_segment: Mapping[tuple[str, str], list[Evidence]],
) -> dict[str, Any]:
    checks = by_segment.get((r.column, level), [])
    n_ref = r.summaries[level].n
    return {
        "level": level,
        "referenceRows": n_ref,
        "currentRows": current_rows,
        "evaluated": n_ref >= MIN_VALUES and current_rows >= MIN_VALUES,
        "drifted": [
            e.feature for e in checks if e.failing and e.type in ("FeatureDrift", "PredictionDrift")
        ],
        "checks": [
            {
                "type": e.type,
                "feature": e.feature,
                "test": e.test,
                "statistic": finite_or_none(e.statistic),
                "pValue": finite_or_none(e.p_value) if e.p_value is not None else None,
                "threshold": finite_or_none(e.threshold),
                "failing": e.failing,
                "message": e.message,
            }
            for e in checks
        ],
    }
