"""`mlwarden check`'s calculation: two data sets in, a `CheckReport` out.

Each column of the reference becomes a reference sketch (`detector.checks.ReferenceSummary`),
the whole current data set one window (`detector.checks.WindowView`), and the detector's
own pure checks run once on them: `drift_verdicts` (over `stats.evaluate_drift`) and
`check_quality`, with the ObservedModel's settings (or the defaults). No detector, no
manifest made up for the occasion: the same functions the streaming detector calls.

What this module adds is speed. The detector takes records one request at a time; here
whole columns arrive at once, so a numeric column is one float64 array sketched with one
sort (`NumericSketch.from_array`); a categorical column is tallied by value in C and only
its distinct values are mapped to categories in Python (`CategoricalSketch.from_counts`),
in the order they first appear, so the sketches equal the detector's; and columns are
sketched on a small thread pool (numpy and arrow release the GIL).

Column types come from the ObservedModel when it declares features, otherwise they are
inferred from the reference as the detector infers them (numbers are numeric, anything
else categorical).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeAlias

from mlwarden.check.columns import (
    CheckError,
    ColumnValues,
    DataColumn,
    Progress,
    category_counts,
    inferred_type,
    kind_name,
    normalise,
    numeric_values,
    present,
)
from mlwarden.check.multivariate import check_multivariate
from mlwarden.check.result import CheckReport, FeatureCheck
from mlwarden.check.segments import check_segments, segments_to_check
from mlwarden.detector.alerts import Evidence
from mlwarden.detector.checks import (
    MIN_VALUES,
    NEW_CATEGORY_MAX_RATE,
    OUT_OF_RANGE_MAX_RATE,
    TYPE_ERROR_MAX_RATE,
    Column,
    ReferenceSummary,
    WindowView,
    check_quality,
    drift_evidence,
    drift_threshold,
    drift_verdicts,
)
from mlwarden.spec import Detectors, DriftCheck, ObservedModel
from mlwarden.stats import DEFAULT_MIN_EFFECT, CategoricalSketch, NumericSketch
from mlwarden.stats.sketch import DEFAULT_MAX_BINS, DEFAULT_MAX_CATEGORIES, DISTANCE_BINS, Sketch


@dataclass
class _Sketched:
    name: str
    reference: Sketch
    current: Sketch
    type_errors: int
    out_of_range: int


# A reference column's sketch made ahead (by name and type), or None: see prepare_reference.
Prepared: TypeAlias = Callable[[str, str], Sketch | None]


def reference_sketch(column_type: str, values: DataColumn) -> Sketch:
    """A reference column's sketch, as a column of that type."""
    if column_type == "numeric":
        return NumericSketch.from_array(numeric_values(values)[0])
    counts, missing = category_counts(values)
    return CategoricalSketch.from_counts(counts, missing=missing)


def _sketch_column(
    name: str, column: Column, ref: DataColumn, cur: DataColumn, prepared: Prepared | None
) -> _Sketched:
    reference = prepared(name, column.type) if prepared else None
    if reference is None:
        reference = reference_sketch(column.type, ref)
    if isinstance(reference, NumericSketch):
        x_cur, errors = numeric_values(cur)
        current = NumericSketch.from_array(x_cur, reference.edges)
        # Values outside [reference min, reference max]: the min and max are edges, so
        # these are the two tail cells and the infinities (the detector compares values).
        outside = (
            int(current.counts[0] + current.counts[-1]) + current.infinite if reference.total else 0
        )
        return _Sketched(name, reference, current, errors, outside)
    cur_counts, cur_missing = category_counts(cur)
    current_counts = CategoricalSketch.from_counts(cur_counts, missing=cur_missing)
    return _Sketched(name, reference, current_counts, 0, 0)


def prepare_reference(
    reference: Mapping[str, DataColumn], manifest: ObservedModel | None, pool: Executor
) -> Prepared:
    """Start sketching the reference's columns on `pool`, before the current data is there
    (`run_check` does while it reads the current file). The columns and their types are
    the ones `check_columns` will plan: they depend on the manifest and the reference
    only; a sketch is a function of the column's values and type, so one made ahead is
    the one `check_columns` would make."""
    try:
        planned = _plan_columns(dict(reference), dict(reference), manifest, ("", ""))
    except CheckError:  # check_columns will say what is missing
        planned = {}
    futures = {
        (n, c.type): pool.submit(reference_sketch, c.type, reference[n]) for n, c in planned.items()
    }

    def prepared(name: str, column_type: str) -> Sketch | None:
        future = futures.get((name, column_type))
        return None if future is None else future.result()

    return prepared


def _plan_columns(
    ref: dict[str, DataColumn],
    cur: dict[str, DataColumn],
    manifest: ObservedModel | None,
    names: tuple[str, str],
) -> dict[str, Column]:
    """The columns to check; CheckError on mismatched columns."""
    ref_name, cur_name = names
    spec = manifest.spec if manifest is not None else None
    prediction = spec.prediction if spec is not None else None
    if spec is not None and spec.features:
        # Embedding features are the streaming detector's (a vector per row; data files hold
        # scalar columns): not checked here, see docs/check.md.
        columns = {
            f.name: Column(f.name, "feature", f.type)
            for f in spec.features
            if f.type != "embedding"
        }
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
    return columns


def check_columns(
    reference: Mapping[str, ColumnValues],
    current: Mapping[str, ColumnValues],
    *,
    manifest: ObservedModel | None = None,
    progress: Progress | None = None,
    reference_name: str = "reference",
    current_name: str = "current",
    threads: int | None = None,
    multivariate: bool = True,
    segments: Sequence[str] = (),
    prepared: Prepared | None = None,
) -> CheckReport:
    """Judge `current` against `reference`, column by column, as the detector would.

    Columns are numpy arrays, sequences of JSON scalars (None: missing), pyarrow arrays
    or `Encoded` columns, all of one length per side. Types come from `manifest` when it
    declares features, otherwise from the reference (`infer_type`). Raises CheckError on
    empty data, columns of unequal length, or columns missing from one side.
    `multivariate`: also run the multivariate check (`check/multivariate.py`) unless the
    spec turns it off. `segments`: columns to slice by (`check.segments`; none given: the
    manifest's `spec.segments`). `prepared`: reference sketches made ahead
    (`prepare_reference`).
    """
    started = time.perf_counter()
    names = (reference_name, current_name)
    ref = _side(reference, reference_name, "reference")
    cur = _side(current, current_name, "current")
    columns = _plan_columns(ref, cur, manifest, names)
    # Without a manifest: the defaults an ObservedModel gets when it sets nothing.
    detectors = manifest.spec.detectors if manifest is not None else Detectors()
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
        futures = [
            pool.submit(_sketch_column, n, columns[n], ref[n], cur[n], prepared) for n in order
        ]
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
    summary = ReferenceSummary(
        f"{source}@{digest.hexdigest()[:12]}", source, 0.0, n_ref, dict(columns),
        {n: sketched[n].reference for n in order},
    )  # fmt: skip
    # The whole current data set is one window of records (no requests: no SLO fields).
    unexpected = Counter({n: present(c) for n, c in cur.items() if n not in columns})
    view = WindowView(
        sketches={n: sketched[n].current for n in order},
        type_errors=Counter({n: s.type_errors for n, s in sketched.items() if s.type_errors}),
        out_of_range=Counter({n: s.out_of_range for n, s in sketched.items() if s.out_of_range}),
        unexpected=+unexpected,
        n_records=n_cur,
    )
    verdicts = {
        v.feature: v
        for _, _, v in drift_verdicts(summary, view, detectors.drift, detectors.prediction_drift)
    }
    features: list[FeatureCheck] = []
    evidence: list[Evidence] = []
    for n in order:
        column = columns[n]
        verdict = verdicts.get(n)
        feature = column.kind == "feature"
        check = detectors.drift if feature else detectors.prediction_drift
        alert_type = "FeatureDrift" if feature else "PredictionDrift"
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
    evidence += check_quality(summary, view, detectors.quality)
    joint = None
    if multivariate and detectors.multivariate.method != "off":
        joint, found = check_multivariate(
            ref, cur, columns, detectors.multivariate, reference_id=summary.id
        )
        evidence += [found] if found is not None else []
    sliced = segments_to_check(segments, manifest, [n for n in ref if n in cur])
    segment_evidence, segment_report = (
        check_segments(sliced, ref, cur, columns, summary, detectors) if sliced else ([], None)
    )
    return CheckReport(
        reference=reference_name,
        current=current_name,
        reference_rows=n_ref,
        current_rows=n_cur,
        columns=dict(columns),
        evidence=evidence,
        features=features,
        settings=settings_of(detectors, manifest),
        warnings=warnings,
        timings={"checkSeconds": time.perf_counter() - started},
        multivariate=joint,
        segment_evidence=segment_evidence,
        segments=segment_report,
    )


def _label(side: str, name: str) -> str:
    return f"the {side} data" if name == side else f"the {side} {name}"


def _side(columns: Mapping[str, ColumnValues], file: str, side: str) -> dict[str, DataColumn]:
    if not columns:
        raise CheckError(f"{_label(side, file)} has no columns")
    out = {str(n): normalise(str(n), v, side) for n, v in columns.items()}
    lengths = {n: len(c) for n, c in out.items()}
    if len(set(lengths.values())) > 1:
        shown = ", ".join(f"{n}={k}" for n, k in lengths.items())
        raise CheckError(f"{_label(side, file)} has columns of different lengths: {shown}")
    if not next(iter(lengths.values())):
        raise CheckError(f"{_label(side, file)} has no rows")
    return out


def _type_warnings(
    columns: dict[str, Column],
    ref: dict[str, DataColumn],
    cur: dict[str, DataColumn],
    names: tuple[str, str],
) -> list[str]:
    out = []
    for n, column in columns.items():
        was, now = kind_name(ref[n]), kind_name(cur[n])
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


def settings_of(d: Detectors, manifest: ObservedModel | None) -> dict[str, Any]:
    """The `settings` block of the report: what the checks were held to."""

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
        "multivariate": {
            "method": d.multivariate.method,
            "pValue": d.multivariate.p_value,
            "minEffect": d.multivariate.min_effect,
            "variance": d.multivariate.variance,
            "permutations": d.multivariate.permutations,
            "maxRows": d.multivariate.max_rows,
        },
        "minValues": MIN_VALUES,
        "numericBins": DEFAULT_MAX_BINS,
        "distanceBins": DISTANCE_BINS,
        "maxCategories": DEFAULT_MAX_CATEGORIES,
    }
