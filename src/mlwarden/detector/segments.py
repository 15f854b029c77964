"""Checks per segment: the traffic sliced by the values of `spec.segments` columns.

For each segment column (a categorical feature, or any input field the records carry), the
segments are the `maxLevels` most frequent values of the reference, counted with a bounded
heavy-hitters counter (`stats.segments.SpaceSaving`), plus `other` for every other value.
Each segment has

- a reference of its own: the reference's records of that segment, sketched over the
  all-traffic reference's edges (`build_segment_reference`, from the raw warm-up or file
  rows the reference is built from), with its CBPE performance level when the prediction has
  class probabilities;
- a window of its own: chunks of sketches sealed and dropped in step with the all-traffic
  window's (`SegmentColumn.follow`), so a segment's window is exactly the all-traffic
  window's records of that segment.

At every evaluation (`Segments.evaluate`) the detector's own pure checks run per segment:
drift (`stats.segments.segment_drift`: one correction over every segment × feature pair of
every segment column, the same tests and effect floors as all traffic), data quality
(`checks.check_quality` against the all-traffic reference's ranges and categories; the
schema check stays all-traffic) and estimated performance (`checks.check_performance`
on the segment's class probabilities, against the segment's reference level). Their evidence
names the segment (`Evidence.segment`, `segment: {country: BR}` on the alert) and goes
through the alert state machine with `fireAfter` / `resolveAfter` like any periodic check.
A segment with fewer than `MIN_VALUES` reference records, or window values, is not judged.

Kept across a detector restart: each segment's reference (its sketches, record count and
performance level) is stored with the tabular reference (`detector/persist.py`) and taken
back by `Segments.restore`; a segment left out of the store for size, or a column not stored,
is not judged until a rebaseline (`Segments.unavailable` says which): a reloaded reference
keeps no rows to split again.

Memory: per segment column, (levels + 1) × columns sketches per chunk, at most as many
chunks as the all-traffic window holds (about 11), plus the counter's `capacity` entries,
whatever the number of distinct values. `mlwarden check --segment` runs the same functions
(`build_segment_reference`, `sketch_segments`, `evaluate_segments`) on two files.

Labelled performance per segment is not built: labels join to all traffic only.

Pure: no clock, no I/O.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import numpy as np

from mlwarden.detector.alerts import Alert, Evidence
from mlwarden.detector.checks import (
    MIN_VALUES,
    ReferenceSummary,
    WindowView,
    check_performance,
    check_quality,
    drift_evidence,
    safe_metric,
)
from mlwarden.detector.ingest import Batch
from mlwarden.records import Value
from mlwarden.spec import Detectors, Segment
from mlwarden.stats import performance as perf
from mlwarden.stats.segments import (
    OTHER,
    SegmentDrift,
    SpaceSaving,
    capacity_for,
    level_index,
    segment_drift,
    segment_label,
    top_levels,
)
from mlwarden.stats.sketch import Sketch

# Class probabilities kept per segment (the latest rows): what its CBPE estimate reads.
MAX_SEGMENT_PROBABILITIES: Final = 5_000

# A column's values as the detector converts them: floats (NaN missing) or categories.
Converted = np.ndarray | Sequence[str | None]


def to_levels(values: Sequence[Value] | None, n: int) -> list[str | None]:
    """A segment column's values as categories (`detector.core.to_categorical`'s rule)."""
    if values is None:
        return [None] * n
    out: list[str | None] = []
    for v in values:
        if v is None or isinstance(v, str):
            out.append(v)
        elif isinstance(v, bool):
            out.append("true" if v else "false")
        elif isinstance(v, float) and v.is_integer():
            out.append(str(int(v)))
        else:
            out.append(str(v))
    return out


def sketch_segments(
    index: np.ndarray,
    n_segments: int,
    columns: Mapping[str, Converted],
    templates: Mapping[str, Sketch],
) -> list[dict[str, Sketch]]:
    """Per segment (0 .. n_segments - 1, the rows whose `index` is it), a sketch of each
    column, empty copies of `templates` filled with its rows. A column absent from
    `columns` counts its rows as missing."""
    order = np.argsort(index, kind="stable")
    bounds = np.searchsorted(index[order], np.arange(n_segments + 1))
    out: list[dict[str, Sketch]] = []
    for s in range(n_segments):
        rows = order[bounds[s] : bounds[s + 1]]
        sketches: dict[str, Sketch] = {}
        for name, template in templates.items():
            sketch = template.empty_like()
            if len(rows):
                _add_rows(sketch, columns.get(name), rows)
            sketches[name] = sketch
        out.append(sketches)
    return out


def _add_rows(sketch: Sketch, values: Converted | None, rows: np.ndarray) -> None:
    """Add a column's `rows` to a sketch (an absent column: as many missing values)."""
    if values is None:
        sketch.add([None] * len(rows))
    elif isinstance(values, np.ndarray):
        sketch.add(values[rows])
    else:
        sketch.add([values[i] for i in rows.tolist()])


@dataclass
class SegmentReference:
    """One segment column's segments and each one's reference."""

    column: str
    levels: tuple[str, ...]  # the top levels; OTHER is the segment after them
    # level (and OTHER) -> its reference. A restored reference may lack some (left out of
    # the store for size): their records are still told apart, but they are not judged.
    summaries: dict[str, ReferenceSummary]

    @property
    def segments(self) -> tuple[str, ...]:
        return (*self.levels, OTHER)

    @property
    def judged(self) -> tuple[str, ...]:
        """The segments that have a reference."""
        return tuple(s for s in self.segments if s in self.summaries)


def build_segment_reference(
    segment: Segment,
    levels_of_rows: Sequence[str | None],
    columns: Mapping[str, Converted],
    reference: ReferenceSummary,
    probabilities: np.ndarray | None = None,
) -> SegmentReference:
    """The segments of one column (its most frequent values in the reference, by
    `SpaceSaving`) and each one's reference, sketched over the all-traffic reference's
    edges; `columns` holds the reference's converted columns, row for row."""
    counter = SpaceSaving.empty(capacity_for(segment.max_levels))
    counter.add_values(levels_of_rows)
    levels = top_levels(counter, segment.max_levels)
    index = level_index(levels_of_rows, levels)
    names = list(reference.columns)
    templates = {n: reference.sketches[n] for n in names}
    per_segment = sketch_segments(index, len(levels) + 1, columns, templates)
    summaries: dict[str, ReferenceSummary] = {}
    for i, level in enumerate((*levels, OTHER)):
        n = int(np.count_nonzero(index == i))
        performance: dict[str, float] = {}
        if probabilities is not None and len(probabilities) == len(index) and n:
            rows = probabilities[index == i]
            for metric in ("accuracy", "f1", "roc_auc"):
                performance[metric] = safe_metric(
                    lambda m=metric, r=rows: perf.estimate_metric(m, r)
                )
        summaries[level] = ReferenceSummary(
            f"{reference.id}/{segment_label(segment.column, level)}",
            reference.source,
            reference.since,
            n,
            dict(reference.columns),
            per_segment[i],
            performance,
            True,
        )
    return SegmentReference(segment.column, levels, summaries)


@dataclass
class SegmentCounts:
    """What one segment's window holds besides its sketches."""

    n_records: int = 0
    type_errors: Counter[str] = field(default_factory=Counter)
    out_of_range: Counter[str] = field(default_factory=Counter)
    probabilities: list[np.ndarray] = field(default_factory=list)


@dataclass
class SegmentChunk:
    """One chunk of the all-traffic window, split by segment."""

    sketches: list[dict[str, Sketch]]
    counts: list[SegmentCounts]


def _add_chunk(total: SegmentChunk, chunk: SegmentChunk) -> None:
    for sums, sketches in zip(total.sketches, chunk.sketches, strict=True):
        for name, sketch in sketches.items():
            sums[name].merge(sketch)  # type: ignore[arg-type]
    for summed, counts in zip(total.counts, chunk.counts, strict=True):
        summed.n_records += counts.n_records
        summed.type_errors += counts.type_errors
        summed.out_of_range += counts.out_of_range


def _subtract_chunk(total: SegmentChunk, chunk: SegmentChunk) -> None:
    """Remove a chunk added before (ValueError, `total` possibly changed, when it cannot)."""
    for sums, sketches in zip(total.sketches, chunk.sketches, strict=True):
        for name, sketch in sketches.items():
            sums[name].subtract(sketch)  # type: ignore[arg-type]
    for summed, counts in zip(total.counts, chunk.counts, strict=True):
        summed.n_records -= counts.n_records
        summed.type_errors -= counts.type_errors
        summed.out_of_range -= counts.out_of_range


class _WindowLike(Protocol):
    """What `follow` reads of the all-traffic window (`detector.core.Window`)."""

    @property
    def open(self) -> object: ...
    @property
    def sealed(self) -> Sequence[object]: ...


class SegmentColumn:
    """One segment column's reference, live counter and windows."""

    def __init__(self, spec: Segment, reference: SegmentReference) -> None:
        self.spec = spec
        self.reference = reference
        self.position = {level: i for i, level in enumerate(reference.levels)}
        self.templates = next(iter(reference.summaries.values())).sketches
        # The column's most frequent values in the live traffic (status only: the segments
        # are the reference's, since each needs a reference of its own).
        self.live = SpaceSaving.empty(capacity_for(spec.max_levels))
        self.sealed: list[SegmentChunk] = []
        self.open = self._new_chunk()
        # The sealed chunks summed (merged when sealed, subtracted when dropped): a view is
        # this plus the open chunk, two sketches a column whatever the chunks.
        self.total = self._new_chunk()
        self._following: object | None = None

    def _new_chunk(self) -> SegmentChunk:
        n = len(self.reference.segments)
        return SegmentChunk(
            [{k: t.empty_like() for k, t in self.templates.items()} for _ in range(n)],
            [SegmentCounts() for _ in range(n)],
        )

    def ingest(
        self,
        levels_of_rows: Sequence[str | None],
        columns: Mapping[str, Converted],
        type_errors: Mapping[str, np.ndarray],
        out_of_range: Mapping[str, np.ndarray],
        probabilities: np.ndarray | None,
    ) -> None:
        tally = Counter(v for v in levels_of_rows if v is not None)
        self.live.total += len(levels_of_rows) - sum(tally.values())
        self.live.add(tally.items())
        rest = len(self.reference.levels)
        index = np.fromiter(
            (rest if v is None else self.position.get(v, rest) for v in levels_of_rows),
            dtype=np.intp,
            count=len(levels_of_rows),
        )
        present = np.unique(index)
        for s in present.tolist():
            rows = np.flatnonzero(index == s)
            sketches = self.open.sketches[s]
            for name, sketch in sketches.items():
                _add_rows(sketch, columns.get(name), rows)
            counts = self.open.counts[s]
            counts.n_records += len(rows)
            for name, mask in type_errors.items():
                k = int(np.count_nonzero(mask[rows]))
                if k:
                    counts.type_errors[name] += k
            for name, mask in out_of_range.items():
                k = int(np.count_nonzero(mask[rows]))
                if k:
                    counts.out_of_range[name] += k
            if probabilities is not None and len(probabilities) == len(index):
                counts.probabilities.append(probabilities[rows])

    def follow(self, window: _WindowLike) -> None:
        """Seal when the all-traffic window sealed its open chunk, and drop what it dropped:
        the same chunks, so a segment's window is the all-traffic window's records of it."""
        if self._following is None:
            self._following = window.open
        elif window.open is not self._following:
            self._following = window.open
            self.sealed.append(self.open)
            _add_chunk(self.total, self.open)
            self.open = self._new_chunk()
        while len(self.sealed) > len(window.sealed):
            dropped = self.sealed.pop(0)
            try:
                _subtract_chunk(self.total, dropped)
            except ValueError:
                # A categorical sketch that overflowed its bound counts a category as other
                # in the sum but not in the chunk: sum the chunks left instead.
                self.total = self._new_chunk()
                for chunk in self.sealed:
                    _add_chunk(self.total, chunk)

    def view(self, s: int) -> WindowView:
        chunks = [*self.sealed, self.open]
        sketches: dict[str, Sketch] = {}
        for name, sketch in self.total.sketches[s].items():
            merged = sketch.copy()
            merged.merge(self.open.sketches[s][name])  # type: ignore[arg-type]
            sketches[name] = merged
        probabilities: list[np.ndarray] = []
        rows = 0
        for chunk in reversed(chunks):
            for p in reversed(chunk.counts[s].probabilities):
                if rows >= MAX_SEGMENT_PROBABILITIES:
                    break
                probabilities.append(p)
                rows += len(p)
        total, open_ = self.total.counts[s], self.open.counts[s]
        return WindowView(
            sketches=sketches,
            type_errors=total.type_errors + open_.type_errors,
            out_of_range=total.out_of_range + open_.out_of_range,
            n_records=total.n_records + open_.n_records,
            probabilities=np.concatenate(probabilities[::-1]) if probabilities else None,
        )

    def status(self) -> dict[str, Any]:
        n_window = [
            sum(c.counts[s].n_records for c in [*self.sealed, self.open])
            for s in range(len(self.reference.segments))
        ]
        total = sum(n_window)
        return {
            "column": self.spec.column,
            "maxLevels": self.spec.max_levels,
            "segments": [
                {
                    "level": level,
                    # None: left out of the stored reference (not judged)
                    "referenceRecords": (
                        self.reference.summaries[level].n
                        if level in self.reference.summaries
                        else None
                    ),
                    "windowRecords": n_window[i],
                    "share": round(n_window[i] / total, 4) if total else 0.0,
                }
                for i, level in enumerate(self.reference.segments)
            ],
            # The live traffic's most frequent values (approximate counts, an upper bound).
            "frequent": [{"level": v, "count": c} for v, c in self.live.top(self.spec.max_levels)],
        }


def evaluate_segments(
    references: Sequence[SegmentReference],
    views: Mapping[tuple[str, str], WindowView],
    reference: ReferenceSummary,
    detectors: Detectors,
) -> list[Evidence]:
    """Drift, data quality and estimated performance per segment, as evidence naming it.

    `views`: (segment column, level) -> that segment's window. Drift: one correction over
    every (segment, column) pair of each kind (features by `detectors.drift`, the prediction
    by `detectors.predictionDrift`), the pairs of segments with fewer than MIN_VALUES
    reference records left out. `reference` (all traffic) gives quality its ranges and
    categories.
    """
    summaries = {(r.column, level): r.summaries[level] for r in references for level in r.judged}
    judged = {k: v for k, v in views.items() if k in summaries and summaries[k].n >= MIN_VALUES}
    out: list[Evidence] = []
    for kind, check, alert_type in (
        ("feature", detectors.drift, "FeatureDrift"),
        ("prediction", detectors.prediction_drift, "PredictionDrift"),
    ):
        types = {n: c.type for n, c in reference.columns.items() if c.kind == kind}
        verdicts: list[SegmentDrift] = segment_drift(
            {k: summaries[k].sketches for k in judged},
            {k: v.sketches for k, v in judged.items()},
            types,
            check,
            min_current=MIN_VALUES,
        )
        for v in verdicts:
            if judged[(v.column, v.level)].sketches[v.verdict.feature].total < MIN_VALUES:
                continue  # not evaluated: too little data is not a pass
            out.append(_named(drift_evidence(alert_type, check, v.verdict), v.column, v.level))
    for (column, level), view in judged.items():
        quality = check_quality(reference, view, detectors.quality)
        out += [_named(e, column, level) for e in quality if e.test != "schema"]
        performance = check_performance(summaries[(column, level)], view, detectors.performance)
        out += [_named(e, column, level) for e in performance]
    return out


def _named(e: Evidence, column: str, level: str) -> Evidence:
    # Built field by field: dataclasses.replace costs ~5x more, a thousand times an evaluation.
    return Evidence(
        type=e.type,
        test=e.test,
        statistic=e.statistic,
        threshold=e.threshold,
        failing=e.failing,
        feature=e.feature,
        p_value=e.p_value,
        message=f"segment {segment_label(column, level)}: {e.message}",
        model_revision=e.model_revision,
        baseline_revision=e.baseline_revision,
        details=e.details,
        segment=(column, level),
    )


class Segments:
    """Every segment column of one detector (`spec.segments`)."""

    def __init__(self, specs: Sequence[Segment]) -> None:
        self.specs = tuple(specs)
        self.columns: list[SegmentColumn] = []
        self.reference: ReferenceSummary | None = None
        # Why no segment is judged (None: they are), for /v1/status.
        self.unavailable: str | None = "warming up"
        # The segment columns' values in the warm-up's records (a column that is not a
        # feature is not among the warm-up's raw columns): bounded by the reference size.
        self.warmup: dict[str, list[Value]] = {s.column: [] for s in self.specs}
        self.predictions_moved = False

    @property
    def names(self) -> frozenset[str]:
        return frozenset(s.column for s in self.specs)

    def keep_warmup(self, batch: Batch, take: int) -> None:
        """Keep the segment columns' values of a warm-up batch's first `take` records."""
        for name, kept in self.warmup.items():
            values = batch.feature(name)
            kept.extend(values[:take] if values is not None else [None] * take)

    def set_reference(
        self,
        reference: ReferenceSummary,
        raw: Mapping[str, Sequence[Value]] | None,
        probabilities: np.ndarray | None,
        convert: Mapping[str, Any],
    ) -> None:
        """Build each column's segments from the reference's raw rows. `convert`: column
        type -> the detector's conversion of a list of values (numeric: floats, categorical:
        categories). Without raw rows (a reference reloaded from the store keeps sketches
        only) no segment is judged, and status says why, until `restore` takes back the
        segments' references stored with it."""
        self.reference = reference
        self.columns = []
        self.predictions_moved = False
        if raw is None:
            self.unavailable = (
                "the reference was reloaded from the store, which keeps no rows to split by "
                "segment: segments are judged again after a rebaseline"
            )
            return
        n = reference.n
        converted: dict[str, Converted] = {}
        for name, column in reference.columns.items():
            values = raw.get(name)
            if values is not None:
                fn = convert[column.type]
                converted[name] = fn(list(values)[:n])
        for spec in self.specs:
            values = raw.get(spec.column)
            if values is None and len(self.warmup[spec.column]) >= n:
                values = self.warmup[spec.column]
            levels = to_levels(list(values)[:n] if values is not None else None, n)
            seg_ref = build_segment_reference(spec, levels, converted, reference, probabilities)
            self.columns.append(SegmentColumn(spec, seg_ref))
        self.warmup = {s.column: [] for s in self.specs}
        self.unavailable = None

    def references(self) -> list[SegmentReference]:
        """The segment columns' references, to store with the tabular reference."""
        return [c.reference for c in self.columns]

    def restore(
        self, references: Sequence[SegmentReference] | None, *, left_out: str | None = None
    ) -> None:
        """Take back the references stored with a reloaded reference (after `set_reference`
        without rows). `references`: None for a store written before segment references were
        stored; `left_out`: why segments missing from them are missing (left out for size).
        What is not taken back is not judged until a rebaseline, and `unavailable` says so."""
        if references is None:
            self.unavailable = (
                "the reference was reloaded from a store written before segment references "
                "were stored, which keeps no rows to split by segment: segments are judged "
                "again after a rebaseline"
            )
            return
        stored = {r.column: r for r in references}
        self.columns, notes = [], []
        for spec in self.specs:
            ref = stored.get(spec.column)
            if ref is None or not ref.summaries:
                notes.append(
                    f"column {spec.column}: "
                    + (left_out if ref is not None and left_out else "not in the stored reference")
                )
                continue
            self.columns.append(SegmentColumn(spec, ref))
            missing = [segment_label(ref.column, s) for s in ref.segments if s not in ref.summaries]
            if missing:
                notes.append(f"{', '.join(missing)}: {left_out or 'not in the stored reference'}")
        self.unavailable = f"{'; '.join(notes)}; judged again after a rebaseline" if notes else None

    def ingest(
        self,
        batch: Batch,
        columns: Mapping[str, Converted],
        ranges: Mapping[str, tuple[float, float]],
        probabilities: np.ndarray | None,
    ) -> None:
        """Add one batch's records (its columns as the detector converted them)."""
        if not self.columns:
            return
        n = batch.n_records
        type_errors: dict[str, np.ndarray] = {}
        out_of_range: dict[str, np.ndarray] = {}
        for name, values in columns.items():
            if not isinstance(values, np.ndarray):
                continue
            nan = np.isnan(values)
            if nan.any():
                raw = batch.feature(name) if name in batch.feature_names else batch.output(name)
                if raw is not None:
                    errors = nan & np.fromiter((v is not None for v in raw), dtype=bool, count=n)
                    if errors.any():
                        type_errors[name] = errors
            if name in ranges:
                low, high = ranges[name]
                outside = (values < low) | (values > high)
                if outside.any():
                    out_of_range[name] = outside
        for column in self.columns:
            levels = to_levels(batch.feature(column.spec.column), n)
            column.ingest(levels, columns, type_errors, out_of_range, probabilities)

    def follow(self, window: _WindowLike) -> None:
        for column in self.columns:
            column.follow(window)

    def evaluate(self, detectors: Detectors, active: Sequence[Alert] = ()) -> list[Evidence]:
        """Every segment's checks; and a passing finding for each `active` alert on a segment
        that is not judged any more (its reference was not restored after a restart, or the
        segment is gone), so it resolves after `resolveAfter` evaluations
        instead of staying active with nothing to judge it."""
        views = {
            (c.spec.column, level): c.view(i)
            for c in self.columns
            for i, level in enumerate(c.reference.segments)
            if level in c.reference.summaries
        }
        out: list[Evidence] = []
        if self.reference is not None and self.columns:
            if self.predictions_moved:
                detectors = dataclasses.replace(
                    detectors,
                    prediction_drift=dataclasses.replace(detectors.prediction_drift, enabled=False),
                )
            out = evaluate_segments(
                [c.reference for c in self.columns], views, self.reference, detectors
            )
        why = self.unavailable or "the segment is no longer one of the segments"
        for alert in active:
            if alert.segment is not None and alert.segment not in views:
                label = segment_label(*alert.segment)
                out.append(alert.not_judged(f"segment {label} not judged: {why}"))
        return out

    def promoted(self) -> None:
        """The prediction's reference moved to a promoted revision (all traffic's only): the
        segments' prediction references describe the old model, so the segments' prediction
        drift is not judged until the next reference."""
        self.predictions_moved = True

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"columns": [c.status() for c in self.columns]}
        if self.unavailable is not None:
            out["unavailable"] = self.unavailable
        return out
