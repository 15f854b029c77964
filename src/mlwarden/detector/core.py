"""The detector's state and its evaluation, with no I/O and no clock of its own.

- `build_reference`: what normal looks like (`checks.ReferenceSummary`, sketches per
  column), fixed once built (from a warm-up of the first N records, or from a file).
- `Window`: the current window as a ring of chunks, each holding sketches of the
  records it received; sealed chunks leave the window whole. Memory is
  chunks × columns × bins whatever the traffic, and evaluation merges a dozen
  small arrays per column, so its cost does not depend on the window size.
- `Detector`: ingests batches, runs every check the spec enables on its window
  (the pure functions of `detector/checks.py`, which `mlwarden check` runs too),
  and feeds their `Evidence` to the alert state machine.

Columns are the spec's features (or, without them, those inferred from the
warm-up: numbers are numeric, anything else categorical) and the prediction.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np

from mlwarden.detector.alerts import AlertStateMachine, Evidence, Transition
from mlwarden.detector.checks import (
    LATENCY_EDGES,
    Column,
    ReferenceSummary,
    WindowView,
    check_drift,
    check_performance,
    check_quality,
    check_slo,
    safe_metric,
)
from mlwarden.detector.ingest import Batch
from mlwarden.detector.sequential import build_scan, covered, findings_to_evidence, iso
from mlwarden.records import Value
from mlwarden.spec import ObservedModel
from mlwarden.stats import CategoricalSketch, NumericSketch, numeric_edges
from mlwarden.stats import performance as perf
from mlwarden.stats.sequential import SequentialScan
from mlwarden.stats.sketch import Sketch

CHUNKS_PER_WINDOW = 10
MAX_PENDING_PREDICTIONS = 200_000
MAX_UNEXPECTED_FIELDS = 100
# Columns inferred from the traffic when the spec declares none: beyond this many, new
# names are not kept (each would hold a raw warm-up column, then a sketch, drift tests
# and metric series), and are counted in status.columnsOverLimit. Declare the features
# in the spec to observe more.
MAX_INFERRED_COLUMNS = 200
MAX_RAW_REFERENCE = 1_000_000  # rows kept raw while warming up / loading a reference


_NUMERIC_TYPES = frozenset((float, int, bool, type(None)))


def to_numeric(values: list[Any]) -> tuple[np.ndarray, int]:
    """Floats (NaN for missing) and the number of values that were not numbers."""
    # The common case, checked at C speed: only numbers and nulls. (numpy would also
    # turn the string "12.5" into a number, which must count as a type error instead.)
    if set(map(type, values)) <= _NUMERIC_TYPES:
        return np.asarray(values, dtype=np.float64), 0
    out = np.empty(len(values), dtype=np.float64)
    errors = 0
    for i, v in enumerate(values):
        if isinstance(v, int | float):
            out[i] = float(v)
        else:
            # Missing, or a string/list/object where a number belongs: a type error.
            out[i] = math.nan
            errors += v is not None
    return out, errors


def to_categorical(values: list[Any]) -> list[str | None]:
    return [None if v is None else (v if isinstance(v, str) else _category(v)) for v in values]


def _category(v: Value) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def infer_type(values: list[Value]) -> str:
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        return "numeric"
    return "categorical"


# --------------------------------------------------------------------------- reference


def build_reference(
    raw: dict[str, list[Value]],
    columns: dict[str, Column],
    *,
    source: str,
    since: float,
    probabilities: np.ndarray | None = None,
    labels: list[Value] | None = None,
    predictions: list[Value] | None = None,
) -> ReferenceSummary:
    """Sketch raw reference columns. `source` names it (`warmup`, `file:...`)."""
    n = max((len(v) for v in raw.values()), default=0)
    sketches: dict[str, Sketch] = {}
    digest = hashlib.sha256()
    for name, column in sorted(columns.items()):
        values = raw.get(name, [None] * n)
        if column.type == "numeric":
            array, _ = to_numeric(values)
            sketch: Sketch = NumericSketch(numeric_edges(array[np.isfinite(array)]))
            sketch.add(array)
            digest.update(array.tobytes())
        else:
            sketch = CategoricalSketch()
            cats = to_categorical(values)
            sketch.add(cats)
            digest.update("\x1f".join("" if c is None else c for c in cats).encode())
        sketches[name] = sketch
    performance: dict[str, float] = {}
    estimated = True
    if labels is not None and predictions is not None:
        y_true, y_pred = np.asarray(labels), np.asarray(predictions)
        for metric in ("accuracy", "f1"):
            performance[metric] = safe_metric(
                lambda m=metric: perf.labelled_metric(m, y_true, y_pred)
            )
        estimated = False
    elif probabilities is not None and len(probabilities):
        for metric in ("accuracy", "f1", "roc_auc"):
            performance[metric] = safe_metric(
                lambda m=metric: perf.estimate_metric(m, probabilities)
            )
    ref_id = f"{source}@{digest.hexdigest()[:12]}"
    return ReferenceSummary(
        ref_id, source, since, n, dict(columns), sketches, performance, estimated
    )


# --------------------------------------------------------------------------- windows


@dataclass
class Chunk:
    started: float
    sketches: dict[str, Sketch]
    type_errors: Counter[str] = field(default_factory=Counter)
    out_of_range: Counter[str] = field(default_factory=Counter)
    absent: Counter[str] = field(default_factory=Counter)
    unexpected: Counter[str] = field(default_factory=Counter)
    n_records: int = 0
    n_requests: int = 0
    n_errors: int = 0
    latency_counts: np.ndarray = field(
        default_factory=lambda: np.zeros(len(LATENCY_EDGES) + 1, dtype=np.int64)
    )
    probabilities: list[np.ndarray] = field(default_factory=list)
    labelled: list[tuple[Value, Value]] = field(default_factory=list)


class Window:
    """The last `size` records (or `duration` seconds), as a ring of chunks.

    `templates`: one (reference) sketch per column, whose empty copies each chunk fills;
    none for a window of requests only (the SLO window).
    """

    def __init__(
        self,
        templates: dict[str, Sketch],
        *,
        size: int | None,
        duration: float | None,
        now: float,
    ) -> None:
        self.templates = templates
        self.size = size
        self.duration = duration
        self.chunk_records = max(1, (size or 0) // CHUNKS_PER_WINDOW)
        self.chunk_seconds = (duration or 0.0) / CHUNKS_PER_WINDOW
        self.sealed: list[Chunk] = []
        self.open = self._new_chunk(now)

    def _new_chunk(self, now: float) -> Chunk:
        return Chunk(started=now, sketches={n: t.empty_like() for n, t in self.templates.items()})

    def roll(self, now: float) -> None:
        """Seal the open chunk when full (or old) and drop chunks that left the window."""
        full = (
            self.open.n_records >= self.chunk_records
            if self.size is not None
            else now - self.open.started >= self.chunk_seconds
        )
        if full:
            self.sealed.append(self.open)
            self.open = self._new_chunk(now)
        if self.size is not None:
            total = sum(c.n_records for c in self.sealed)
            while self.sealed and total - self.sealed[0].n_records >= self.size:
                total -= self.sealed.pop(0).n_records
        else:
            assert self.duration is not None
            horizon = now - self.duration
            while self.sealed and self.sealed[0].started + self.chunk_seconds < horizon:
                self.sealed.pop(0)

    def view(self) -> WindowView:
        chunks = [*self.sealed, self.open]
        sketches: dict[str, Sketch] = {}
        for name in self.templates:
            merged = chunks[0].sketches[name].copy()
            for chunk in chunks[1:]:
                merged.merge(chunk.sketches[name])  # type: ignore[arg-type]
            sketches[name] = merged
        probabilities = [p for c in chunks for p in c.probabilities]
        return WindowView(
            sketches=sketches,
            type_errors=sum((c.type_errors for c in chunks), Counter()),
            out_of_range=sum((c.out_of_range for c in chunks), Counter()),
            absent=sum((c.absent for c in chunks), Counter()),
            unexpected=sum((c.unexpected for c in chunks), Counter()),
            n_records=sum(c.n_records for c in chunks),
            n_requests=sum(c.n_requests for c in chunks),
            n_errors=sum(c.n_errors for c in chunks),
            latency_counts=np.sum([c.latency_counts for c in chunks], axis=0),
            probabilities=np.concatenate(probabilities) if probabilities else None,
            labelled=[pair for c in chunks for pair in c.labelled],
        )


# --------------------------------------------------------------------------- detector


# The alert types judged on requests alone (no reference): their state outlives a rebaseline.
SLO_ALERT_TYPES: Final = frozenset({"Latency", "Errors"})


class Detector:
    """One ObservedModel's detector: reference, current window, checks, alert state."""

    def __init__(self, model: ObservedModel, *, now: float) -> None:
        self.model = model
        spec = model.spec
        self.columns: dict[str, Column] = {
            f.name: Column(f.name, "feature", f.type) for f in spec.features
        }
        if spec.prediction is not None:
            self.columns[spec.prediction.name] = Column(
                spec.prediction.name, "prediction", spec.prediction.type
            )
        self.infer_columns = not spec.features
        self.reference: ReferenceSummary | None = None
        self.ranges: dict[str, tuple[float, float]] = {}
        self.window: Window | None = None
        self.warmup: dict[str, list[Value]] = {}
        self.warmup_kinds: dict[str, str] = {}
        self.warmup_probabilities: list[np.ndarray] = []
        self.warmup_n = 0
        self.alerts = AlertStateMachine(spec.alerting.fire_after, spec.alerting.resolve_after)
        # Sequential drift decisions (detector/sequential.py), built with the reference; the
        # alert transitions they cause at ingest wait here for the service to report them.
        self.scan: SequentialScan | None = None
        self.transitions: list[Transition] = []
        self.model_revision: str | None = None
        self.evaluations = 0
        self.last_evidence: list[Evidence] = []
        self.records_ingested = 0
        self.requests_ingested = 0
        # (request id, row) -> (prediction, made while warming up?), awaiting a label.
        self.pending_predictions: OrderedDict[tuple[str, int], tuple[Value, bool]] = OrderedDict()
        # Labelled predictions from the warm-up: the reference level of labelled performance.
        self.reference_labelled: list[tuple[Value, Value]] = []
        self.labels_joined = 0
        self.labels_unmatched = 0
        # Field names seen while inferring columns but refused by MAX_INFERRED_COLUMNS,
        # counted once per batch they appear in.
        self.columns_over_limit = 0
        # SLO checks need no reference, so they run from the first request on.
        self.slo_window = Window(
            {},
            size=spec.window.size,
            duration=spec.window.duration_seconds,
            now=now,
        )

    # ---------------------------------------------------------------- reference

    @property
    def warming_up(self) -> bool:
        return self.reference is None

    def set_reference(self, reference: ReferenceSummary, *, now: float) -> None:
        self.reference = reference
        self.columns = dict(reference.columns)
        # The reference range of each numeric column, for the out-of-range check.
        self.ranges = {
            name: (float(sk.min), float(sk.max))
            for name, sk in reference.sketches.items()
            if isinstance(sk, NumericSketch) and sk.total
        }
        spec = self.model.spec
        self.window = Window(
            {n: reference.sketches[n] for n in reference.columns},
            size=spec.window.size,
            duration=spec.window.duration_seconds,
            now=now,
        )
        self.warmup = {}
        self.warmup_probabilities = []
        self.scan = build_scan(reference, self.model, now=now)

    def _prediction_column(self) -> str | None:
        p = self.model.spec.prediction
        return p.name if p is not None else None

    def _probabilities(self, batch: Batch) -> np.ndarray | None:
        """Class probabilities per record: outputs `<name>_0..` (or `<name>` for binary)."""
        p = self.model.spec.prediction
        if p is None or p.probabilities is None:
            return None
        name = p.probabilities
        wide = sorted(
            (
                k
                for k in batch.output_names
                if k.startswith(name + "_") and k[len(name) + 1 :].isdigit()
            ),
            key=lambda k: int(k[len(name) + 1 :]),
        )
        if wide:
            return np.column_stack([to_numeric(batch.output(k) or [])[0] for k in wide])
        values = batch.output(name)
        return to_numeric(values)[0] if values is not None else None

    # ---------------------------------------------------------------- ingest

    def ingest(self, batch: Batch, *, now: float) -> None:
        self.records_ingested += batch.n_records
        self.requests_ingested += len(batch.statuses)
        revision = batch.source.get("modelRevision")
        if isinstance(revision, str):
            self.model_revision = revision
        self._ingest_requests(batch, now)
        if batch.n_records == 0:
            return
        self._remember_predictions(batch)
        if self.reference is None:
            self._ingest_warmup(batch, now)
            return
        assert self.window is not None
        chunk = self.window.open
        chunk.n_records += batch.n_records
        scanned: dict[str, Any] = {}
        for name, column in self.columns.items():
            values = batch.feature(name) if column.kind == "feature" else batch.output(name)
            absent = values is None  # nothing to scan (the scan keeps no memory for it)
            if values is None:
                chunk.absent[name] += batch.n_records
                values = [None] * batch.n_records
            sketch = chunk.sketches[name]
            if column.type == "numeric":
                array, errors = to_numeric(values)
                sketch.add(array)
                if errors:
                    chunk.type_errors[name] += errors
                low, high = self.ranges.get(name, (-math.inf, math.inf))
                outside = int(np.count_nonzero((array < low) | (array > high)))
                if outside:
                    chunk.out_of_range[name] += outside
                if not absent:
                    scanned[name] = array
            else:
                categories = to_categorical(values)
                sketch.add(categories)  # type: ignore[arg-type]
                if not absent:
                    scanned[name] = categories
        for name in batch.feature_names - self.columns.keys():
            if name in chunk.unexpected or len(chunk.unexpected) < MAX_UNEXPECTED_FIELDS:
                chunk.unexpected[name] += sum(v is not None for v in batch.feature(name) or [])
        probabilities = self._probabilities(batch)
        if probabilities is not None:
            chunk.probabilities.append(probabilities)
        self.window.roll(now)
        if self.scan is not None:
            self._look(scanned, batch.n_records, now)

    def _look(self, values: dict[str, Any], n: int, now: float) -> None:
        """Sequential drift decisions on the records just ingested (detector/sequential.py)."""
        assert self.scan is not None and self.reference is not None
        findings = self.scan.add(self.scan.cells(values, n), now=now)
        if findings:
            self.transitions += self.alerts.observe(
                findings_to_evidence(
                    findings,
                    self.reference,
                    {(a.type, a.feature, a.test) for a in self.alerts.active},
                ),
                now=iso(now),
                reference=self.reference.id,
                model_revision=self.model_revision,
                fire_after=1,
            )

    def take_transitions(self) -> list[Transition]:
        """The alert transitions the sequential decisions made since the last call."""
        out, self.transitions = self.transitions, []
        return out

    def _ingest_requests(self, batch: Batch, now: float) -> None:
        if not batch.statuses:
            return
        chunk = self.slo_window.open
        chunk.n_records += len(batch.statuses)
        chunk.n_requests += len(batch.statuses)
        chunk.n_errors += sum(1 for s in batch.statuses if s >= 500)
        index = np.searchsorted(LATENCY_EDGES, np.asarray(batch.latencies), side="left")
        chunk.latency_counts += np.bincount(index, minlength=len(chunk.latency_counts))
        self.slo_window.roll(now)

    def _ingest_warmup(self, batch: Batch, now: float) -> None:
        size = self.model.spec.reference.size
        take = min(batch.n_records, size - self.warmup_n, MAX_RAW_REFERENCE - self.warmup_n)
        prediction = self._prediction_column()
        # Which raw columns to keep: the declared ones, plus (without declarations)
        # every feature seen, and every output when no prediction is named.
        # New names only up to MAX_INFERRED_COLUMNS.
        kinds = {name: column.kind for name, column in self.columns.items()}
        known = kinds.keys() | self.warmup_kinds.keys()
        seen = [(n, "feature") for n in batch.feature_names] if self.infer_columns else []
        if prediction is None:
            seen += [(n, "prediction") for n in batch.output_names]
        for name, kind in seen:
            if name in kinds:
                continue
            if name not in known:
                if len(known) >= MAX_INFERRED_COLUMNS:
                    self.columns_over_limit += 1
                    continue
                known.add(name)
            kinds[name] = kind
        kinds.update({n: k for n, k in self.warmup_kinds.items() if n not in kinds})
        for name, kind in kinds.items():
            values = batch.feature(name) if kind == "feature" else batch.output(name)
            column = self.warmup.setdefault(name, [None] * self.warmup_n)
            column.extend(values[:take] if values is not None else [None] * take)
            self.warmup_kinds[name] = kind
        probabilities = self._probabilities(batch)
        if probabilities is not None:
            self.warmup_probabilities.append(probabilities[:take])
        self.warmup_n += take
        if self.warmup_n >= size:
            columns = dict(self.columns)
            for name, values in self.warmup.items():
                if name not in columns:
                    columns[name] = Column(name, self.warmup_kinds[name], infer_type(values))
            probs = np.concatenate(self.warmup_probabilities) if self.warmup_probabilities else None
            reference = build_reference(
                self.warmup, columns, source="warmup", since=now, probabilities=probs
            )
            self.set_reference(reference, now=now)

    def _remember_predictions(self, batch: Batch) -> None:
        prediction = self._prediction_column()
        if prediction is None or prediction not in batch.output_names:
            return
        pending = self.pending_predictions
        warmup = self.reference is None
        for key, value in zip(batch.keys, batch.output(prediction) or [], strict=True):
            if key[0]:
                pending[key] = (value, warmup)
        while len(pending) > MAX_PENDING_PREDICTIONS:
            pending.popitem(last=False)

    def add_labels(self, labels: list[tuple[str, int, Value]]) -> tuple[int, int]:
        """Join labels to the predictions they belong to: (joined, unmatched)."""
        joined = unmatched = 0
        for rid, row, label in labels:
            pending = self.pending_predictions.pop((rid, row), None)
            if pending is None:
                unmatched += 1
                continue
            joined += 1
            prediction, warmup = pending
            if warmup:
                self.reference_labelled.append((label, prediction))
            elif self.window is not None:
                self.window.open.labelled.append((label, prediction))
        self.labels_joined += joined
        self.labels_unmatched += unmatched
        return joined, unmatched

    # ---------------------------------------------------------------- evaluate

    def evaluate(self, *, now: float, now_iso: str) -> list[Transition]:
        self.evaluations += 1
        d = self.model.spec.detectors
        self.slo_window.roll(now)
        evidence = check_slo(self.slo_window.view(), d.latency, d.errors)
        if self.reference is not None and self.window is not None:
            self.window.roll(now)
            view = self.window.view()
            evidence += check_drift(self.reference, view, d.drift, d.prediction_drift)
            evidence += check_quality(self.reference, view, d.quality)
            evidence += check_performance(
                self.reference, view, d.performance, reference_labelled=self.reference_labelled
            )
        self.last_evidence = evidence
        reference = self.reference.id if self.reference is not None else "warmup (pending)"
        # Drift of the columns the sequential scan decides is its to fire and resolve.
        scanned = covered(self.scan)
        fed = [
            e
            for e in evidence
            if not (e.feature in scanned and e.type in ("FeatureDrift", "PredictionDrift"))
        ]
        return self.alerts.observe(
            fed, now=now_iso, reference=reference, model_revision=self.model_revision
        )

    # ---------------------------------------------------------------- status

    def status(self) -> dict[str, Any]:
        spec = self.model.spec
        window: dict[str, Any] = {"records": 0, "requests": 0}
        if spec.window.size is not None:
            window["size"] = spec.window.size
        else:
            window["durationSeconds"] = spec.window.duration_seconds
        if self.window is not None:
            view = self.window.view()
            window["records"] = view.n_records
        window["requests"] = self.slo_window.view().n_requests
        reference: dict[str, Any] = {"source": spec.reference.source, "size": spec.reference.size}
        if self.reference is not None:
            reference.update(
                id=self.reference.id, records=self.reference.n, since=self.reference.since
            )
        else:
            reference["warmupRecords"] = self.warmup_n
        return {
            "model": f"{self.model.namespace}/{self.model.name}",
            "phase": "WarmingUp" if self.warming_up else "Observing",
            "reference": reference,
            "window": window,
            "columns": {n: {"kind": c.kind, "type": c.type} for n, c in self.columns.items()},
            "recordsIngested": self.records_ingested,
            "columnsOverLimit": self.columns_over_limit,
            "requestsIngested": self.requests_ingested,
            "labels": {"joined": self.labels_joined, "unmatched": self.labels_unmatched},
            "evaluations": self.evaluations,
            "sequential": None
            if self.scan is None
            else {
                "falseAlarmsPer": self.scan.false_alarms_per,
                "windows": self.scan.sizes,
                "columns": [c.name for c in self.scan.columns],
                "looks": self.scan.looks,
            },
            "modelRevision": self.model_revision,
            "alerts": [a.to_dict() for a in self.alerts.active],
            "pendingChecks": self.alerts.pending(),
            "checks": [
                {
                    "type": e.type,
                    "feature": e.feature,
                    "test": e.test,
                    "failing": e.failing,
                    "statistic": e.statistic,
                    "message": e.message,
                }
                for e in self.last_evidence
            ],
        }
