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
- `labels.LabelLedger` (`detector/labels.py`): predictions waiting days for their labels,
  each label credited to its prediction's time bucket and revision; the labelled
  performance check judges the newest bucket with enough labels, and a canary compares
  revisions' labelled rows predicted over the same span.
- `Revision`: a model revision the batches name (`source.modelRevision`), with windows of
  its own next to the all-traffic ones (at most MAX_REVISIONS live, idle ones forgotten),
  a role (baseline or candidate) and, for a candidate, the canary comparison with the
  baseline over the same span (`detector/canary.py`) and its verdict; a candidate that
  passed and became the only revision is promoted (the prediction reference moves to it).
  `status.detector.revisions` and `signals` are built here (`revision_status`, `signals`).

Columns are the spec's features (or, without them, those inferred from the
warm-up: numbers are numeric, anything else categorical) and the prediction.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np

from mlwarden.detector import canary
from mlwarden.detector import multivariate as mvd
from mlwarden.detector.alerts import Alert, AlertStateMachine, Evidence, Transition, segment_test
from mlwarden.detector.checks import (
    LATENCY_EDGES,
    MIN_VALUES,
    Column,
    ReferenceSummary,
    WindowView,
    check_drift,
    check_quality,
    check_slo,
    safe_metric,
)
from mlwarden.detector.embedding import EmbeddingMonitor, EmbeddingReference
from mlwarden.detector.ingest import Batch
from mlwarden.detector.labels import LabelLedger, labelled_performance
from mlwarden.detector.segments import SegmentReference, Segments
from mlwarden.detector.sequential import build_scan, covered, findings_to_evidence
from mlwarden.records import Value, finite_or_none
from mlwarden.spec import ObservedModel, PerformanceCheck
from mlwarden.stats import CategoricalSketch, NumericSketch, numeric_edges
from mlwarden.stats import performance as perf
from mlwarden.stats.sequential import SequentialScan
from mlwarden.stats.sketch import Sketch
from mlwarden.timestamps import iso

CHUNKS_PER_WINDOW = 10
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


def _merge_chunks(a: Chunk, b: Chunk) -> Chunk:
    """One chunk holding what `a` and then `b` received."""
    sketches = {}
    for name, sketch in a.sketches.items():
        merged = sketch.copy()
        merged.merge(b.sketches[name])  # type: ignore[arg-type]
        sketches[name] = merged
    return Chunk(
        started=a.started,
        sketches=sketches,
        type_errors=a.type_errors + b.type_errors,
        out_of_range=a.out_of_range + b.out_of_range,
        absent=a.absent + b.absent,
        unexpected=a.unexpected + b.unexpected,
        n_records=a.n_records + b.n_records,
        n_requests=a.n_requests + b.n_requests,
        n_errors=a.n_errors + b.n_errors,
        latency_counts=a.latency_counts + b.latency_counts,
        # Raw rows are kept only as far as anything reads them (the canary's CBPE reads the
        # latest MAX_CBPE_ROWS): a baseline held back for a small canary stays bounded.
        probabilities=_latest_rows([*a.probabilities, *b.probabilities], canary.MAX_CBPE_ROWS),
        revisions=a.revisions + b.revisions,
        last=max(a.last, b.last),
    )


def _latest_rows(arrays: list[np.ndarray], limit: int) -> list[np.ndarray]:
    """The trailing arrays holding the latest `limit` rows (the oldest one cut)."""
    out: list[np.ndarray] = []
    rows = 0
    for array in reversed(arrays):
        if rows >= limit:
            break
        out.append(array[-(limit - rows) :])
        rows += len(out[-1])
    return out[::-1]


def _add_to_sketches(sketches: list[Sketch], values: Any) -> None:
    """Add one batch's column to one sketch, or to several (the all-traffic chunk and the
    revision's): sorted or tallied once, then merged, which costs a few small array adds."""
    if len(sketches) == 1:
        sketches[0].add(values)
        return
    batch = sketches[0].empty_like()
    batch.add(values)
    for sketch in sketches:
        sketch.merge(batch)  # type: ignore[arg-type]


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
    typed: dict[str, tuple[str, Any]] = {}  # the features' values, for the multivariate sample
    digest = hashlib.sha256()
    for name, column in sorted(columns.items()):
        values = raw.get(name, [None] * n)
        if column.type == "numeric":
            array, _ = to_numeric(values)
            sketch: Sketch = NumericSketch(numeric_edges(array[np.isfinite(array)]))
            sketch.add(array)
            digest.update(array.tobytes())
            typed[name] = (column.type, array)
        else:
            sketch = CategoricalSketch()
            cats = to_categorical(values)
            sketch.add(cats)
            digest.update("\x1f".join("" if c is None else c for c in cats).encode())
            typed[name] = (column.type, cats)
        if column.kind != "feature":
            del typed[name]
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
    sample = mvd.reference_sample(typed, n, seed=mvd.seed_of(ref_id))
    return ReferenceSummary(
        ref_id, source, since, n, dict(columns), sketches, performance, estimated, sample
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
    # Records (or requests, in a window of requests) per model revision: the shares.
    revisions: Counter[str] = field(default_factory=Counter)
    last: float = 0.0  # when it last received something


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
        # Chunks that received something at or after this moment stay, whatever the size or
        # duration (the baseline's window, held back to cover its candidates' time span).
        self.hold_since: float | None = None

    def _new_chunk(self, now: float) -> Chunk:
        return Chunk(
            started=now, sketches={n: t.empty_like() for n, t in self.templates.items()}, last=now
        )

    @property
    def started(self) -> float:
        """When its oldest chunk started: the beginning of the span it covers."""
        return self.sealed[0].started if self.sealed else self.open.started

    def revisions(self) -> Counter[str]:
        """Records (requests) per revision in the window."""
        return sum((c.revisions for c in [*self.sealed, self.open]), Counter())

    def latest_revisions(self) -> Counter[str]:
        """Records (requests) per revision in the newest chunks: the open one and the last
        sealed one (the open one alone may have just begun)."""
        return sum((c.revisions for c in [*self.sealed[-1:], self.open]), Counter())

    def roll(self, now: float, *, tick: bool = False) -> bool:
        """Seal the open chunk when full (or old) and drop chunks that left the window.

        `tick`: also seal a non-empty open chunk (a revision's window, sealed whenever the
        all-traffic window seals one, so that revisions' chunks cover the same moments and a
        small canary's window can be cut to the baseline's time span). Beyond
        2 × CHUNKS_PER_WINDOW sealed chunks the two oldest are merged: evaluation stays a
        merge of a bounded number of chunks. True when a chunk was sealed.
        """
        full = (
            self.open.n_records >= self.chunk_records
            if self.size is not None
            else now - self.open.started >= self.chunk_seconds
        )
        if full or (tick and (self.open.n_records or self.open.n_requests)):
            self.sealed.append(self.open)
            self.open = self._new_chunk(now)
            if len(self.sealed) > 2 * CHUNKS_PER_WINDOW:
                self.sealed[0:2] = [_merge_chunks(self.sealed[0], self.sealed[1])]
        else:
            full = False
        if self.size is not None:
            total = sum(c.n_records for c in self.sealed)
            while (
                self.sealed
                and total - self.sealed[0].n_records >= self.size
                and not self._held(self.sealed[0])
            ):
                total -= self.sealed.pop(0).n_records
        else:
            assert self.duration is not None
            horizon = now - self.duration
            while self.sealed and self.sealed[0].last < horizon and not self._held(self.sealed[0]):
                self.sealed.pop(0)
        return full

    def _held(self, chunk: Chunk) -> bool:
        return self.hold_since is not None and chunk.last >= self.hold_since

    def view(
        self,
        since: float | None = None,
        *,
        until: float | None = None,
        max_probabilities: int | None = None,
    ) -> WindowView:
        """The merged window; with `since`, only the chunks that received something then or
        later, and with `until`, only those that received nothing after it (the same time
        span as another revision's window); with `max_probabilities`, only the latest that
        many rows of class probabilities (what a bounded estimate reads: the rest would be a
        copy proportional to the window)."""
        chunks = [*self.sealed, self.open]
        if since is not None:
            chunks = [c for c in self.sealed if c.last >= since] + [self.open]
        if until is not None:
            chunks = [c for c in chunks if c.last <= until] or [self._new_chunk(until)]
        sketches: dict[str, Sketch] = {}
        for name in self.templates:
            merged = chunks[0].sketches[name].copy()
            for chunk in chunks[1:]:
                merged.merge(chunk.sketches[name])  # type: ignore[arg-type]
            sketches[name] = merged
        probabilities = [p for c in chunks for p in c.probabilities]
        if max_probabilities is not None:
            kept: list[np.ndarray] = []
            rows = 0
            for p in reversed(probabilities):
                if rows >= max_probabilities:
                    break
                kept.append(p)
                rows += len(p)
            probabilities = kept[::-1]
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
        )


# --------------------------------------------------------------------------- detector


# How far one revision's latest batch may run ahead of another's before the canary
# comparison leaves the newer records out: a sidecar ships a batch a second by default
# (`--batch-interval`), so a second or two is ordinary jitter and more is a sidecar behind
# (stalled, or restarting).
SHIPPING_SLACK_SECONDS: Final = 2.0

# The alert types judged on requests alone (no reference): their state outlives a rebaseline.
# A canary is judged against its baseline revision, not the reference: the same.
SLO_ALERT_TYPES: Final = frozenset({"Latency", "Errors", canary.ALERT_TYPE})

MAX_REVISIONS: Final = 8  # live revisions with a window of their own (the CRD's bound too)
MAX_SIGNALS: Final = 50  # status.detector.signals
MAX_GONE: Final = 100  # revisions remembered as gone
SIGNAL_MEMORY_SECONDS: Final = 3600.0  # a check that failed this recently stays in signals


@dataclass
class Revision:
    """One model revision seen in the traffic, with windows of its own.

    `window` (records, against the reference's sketches; None while warming up) and `slo`
    (requests) hold only this revision's traffic, each the spec's window size or duration
    of it: a 5% canary has as many records of its own in its window as the baseline.
    """

    name: str
    first_seen: float
    last_seen: float
    slo: Window
    window: Window | None = None
    records: int = 0  # since first seen (cumulative)
    requests: int = 0
    passed: bool = False  # its latest decided canary verdict (Pass or Fail) was Pass


class Detector:
    """One ObservedModel's detector: reference, current window, checks, alert state."""

    def __init__(self, model: ObservedModel, *, now: float) -> None:
        self.model = model
        spec = model.spec
        self.columns: dict[str, Column] = {
            f.name: Column(f.name, "feature", f.type)
            for f in spec.features
            if f.type != "embedding"
        }
        # Embedding features: vectors, sampled and tested apart (detector/embedding.py).
        self.embeddings = EmbeddingMonitor.from_spec(spec)
        if spec.prediction is not None:
            self.columns[spec.prediction.name] = Column(
                spec.prediction.name, "prediction", spec.prediction.type
            )
        self.infer_columns = not spec.features
        # Checks per segment of the traffic (spec.segments, detector/segments.py).
        self.segments = Segments(spec.segments) if spec.segments else None
        self.reference: ReferenceSummary | None = None
        self.ranges: dict[str, tuple[float, float]] = {}
        self.window: Window | None = None
        self.warmup: dict[str, list[Value]] = {}
        self.warmup_kinds: dict[str, str] = {}
        self.warmup_probabilities: list[np.ndarray] = []
        self.warmup_n = 0
        # Warm-up records per revision: the revision a warm-up reference describes.
        self.warmup_revisions: Counter[str] = Counter()
        self.reference_revision: str | None = None
        self.alerts = AlertStateMachine(spec.alerting.fire_after, spec.alerting.resolve_after)
        # Sequential drift decisions (detector/sequential.py), built with the reference; the
        # alert transitions they cause at ingest wait here for the service to report them.
        self.scan: SequentialScan | None = None
        self.transitions: list[Transition] = []
        self.rows: mvd.RowWindow | None = None  # the multivariate check's current rows
        self.model_revision: str | None = None  # the revision of the latest batch
        # Live revisions (at most MAX_REVISIONS), the baseline among them (sticky once
        # chosen), each candidate's latest canary result and verdict, and the promotion
        # that moved the prediction reference to a new revision, if one did.
        self.revisions: dict[str, Revision] = {}
        self.baseline: str | None = None
        self._baseline_settled = False
        self._gone: dict[str, None] = {}  # revisions expired or evicted in this run (ordered)
        self.started_at = now
        self.canary_results: dict[str, canary.CanaryResult] = {}
        self.verdicts: dict[str, str] = {}
        self.promotion: dict[str, Any] | None = None
        self.revisions_evicted = 0
        # The latest evaluation of each check, and when it last failed: status.detector.signals.
        self.signal_log: dict[tuple[str, str | None, str], dict[str, Any]] = {}
        self._last_failed: dict[tuple[str, str | None, str], float] = {}
        self.evaluations = 0
        self.last_evidence: list[Evidence] = []
        self.records_ingested = 0
        self.requests_ingested = 0
        # Predictions awaiting their labels, and the joined labels by prediction time.
        label_spec = spec.detectors.performance or PerformanceCheck()
        self.labels = LabelLedger(
            join_window=label_spec.label_join_window_seconds,
            bucket=label_spec.label_bucket_seconds,
        )
        # Labelled predictions from the warm-up: the reference level of labelled performance.
        self.reference_labelled: list[tuple[Value, Value]] = []
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

    def set_reference(
        self,
        reference: ReferenceSummary,
        *,
        now: float,
        raw: dict[str, list[Value]] | None = None,
        probabilities: np.ndarray | None = None,
    ) -> None:
        """Put `reference` in force; `raw`: the rows it was built from (the segments'
        references are split from them; without them no segment is judged)."""
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
        if self.segments is not None:
            self.segments.set_reference(
                reference,
                raw,
                probabilities,
                {"numeric": lambda v: to_numeric(v)[0], "categorical": to_categorical},
            )
            self.segments.follow(self.window)  # its chunks start with the window's
        self.warmup = {}
        self.warmup_probabilities = []
        self.scan = build_scan(reference, self.model, now=now)
        self.rows = (
            None
            if reference.multivariate is None
            else mvd.RowWindow(
                reference.multivariate,
                size=spec.window.size,
                duration=spec.window.duration_seconds,
            )
        )
        for rev in self.revisions.values():
            rev.window = self._revision_window(now)

    def restore_parts(
        self,
        *,
        segments: Sequence[SegmentReference] | None,
        embeddings: Mapping[str, EmbeddingReference] | None,
        warming: Collection[str] = (),
        left_out: str | None = None,
    ) -> None:
        """After `set_reference` with a reference reloaded from the store: take back the
        segments' and the embedding features' references stored with it (None: a store
        written before they were stored). `Segments.restore`, `EmbeddingMonitor.restore`."""
        if self.segments is not None and self.window is not None:
            self.segments.restore(segments, left_out=left_out)
            self.segments.follow(self.window)
        if self.embeddings is not None:
            self.embeddings.restore(embeddings, warming=warming, left_out=left_out)

    def _revision_window(self, now: float) -> Window | None:
        if self.reference is None:
            return None
        spec = self.model.spec
        return Window(
            {n: self.reference.sketches[n] for n in self.reference.columns},
            size=spec.window.size,
            duration=spec.window.duration_seconds,
            now=now,
        )

    def _revision(self, name: str, now: float) -> Revision:
        """The live revision `name`, made (and the least recently seen one that is not the
        baseline evicted, beyond MAX_REVISIONS) when new."""
        rev = self.revisions.get(name)
        if rev is not None:
            return rev
        if len(self.revisions) >= MAX_REVISIONS:
            evictable = [r for r in self.revisions.values() if r.name != self.baseline]
            oldest = min(evictable, key=lambda r: r.last_seen)
            del self.revisions[oldest.name]
            self._forget(oldest.name)
            self.revisions_evicted += 1
        spec = self.model.spec
        rev = Revision(
            name,
            first_seen=now,
            last_seen=now,
            slo=Window({}, size=spec.window.size, duration=spec.window.duration_seconds, now=now),
            window=self._revision_window(now),
        )
        self.revisions[name] = rev
        return rev

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
        """Add a batch to the all-traffic windows and, when it names its model revision
        (`source.modelRevision`: one sidecar, one revision), to that revision's windows."""
        self.records_ingested += batch.n_records
        self.requests_ingested += len(batch.statuses)
        revision = batch.source.get("modelRevision")
        rev: Revision | None = None
        if isinstance(revision, str) and revision:
            self.model_revision = revision
            rev = self._revision(revision, now)
            rev.last_seen = now
            rev.records += batch.n_records
            rev.requests += len(batch.statuses)
        self._ingest_requests(batch, now, rev)
        if batch.n_records == 0:
            return
        self._remember_predictions(batch, rev, now)
        if self.embeddings is not None:
            self.embeddings.ingest(batch)
        if self.reference is None:
            self._ingest_warmup(batch, now)
            return
        assert self.window is not None
        windows = [self.window]
        if rev is not None and rev.window is not None:
            windows.append(rev.window)
            self.window.open.revisions[rev.name] += batch.n_records
        chunks = [w.open for w in windows]
        n = batch.n_records
        for chunk in chunks:
            chunk.n_records += n
            chunk.last = now
        scanned: dict[str, Any] = {}
        converted: dict[str, Any] = {}  # every column as converted (the segments read them)
        for name, column in self.columns.items():
            values = batch.feature(name) if column.kind == "feature" else batch.output(name)
            absent = values is None  # nothing to scan (the scan keeps no memory for it)
            if values is None:
                for chunk in chunks:
                    chunk.absent[name] += n
                values = [None] * n
            if column.type == "numeric":
                array, errors = to_numeric(values)
                low, high = self.ranges.get(name, (-math.inf, math.inf))
                outside = int(np.count_nonzero((array < low) | (array > high)))
                _add_to_sketches([c.sketches[name] for c in chunks], array)
                converted[name] = array
                for chunk in chunks:
                    if errors:
                        chunk.type_errors[name] += errors
                    if outside:
                        chunk.out_of_range[name] += outside
                if not absent:
                    scanned[name] = array
            else:
                categories = to_categorical(values)
                _add_to_sketches([c.sketches[name] for c in chunks], categories)
                converted[name] = categories
                if not absent:
                    scanned[name] = categories
        counted: dict[str, int] = {}  # counted only for the names a chunk keeps (bounded)
        sliced_by = self.segments.names if self.segments is not None else frozenset()
        vectors = self.embeddings.names if self.embeddings is not None else frozenset()
        for name in batch.feature_names - self.columns.keys() - sliced_by - vectors:
            for chunk in chunks:
                if name in chunk.unexpected or len(chunk.unexpected) < MAX_UNEXPECTED_FIELDS:
                    if name not in counted:
                        values = batch.feature(name) or []
                        counted[name] = sum(v is not None for v in values)
                    chunk.unexpected[name] += counted[name]
        probabilities = self._probabilities(batch)
        if probabilities is not None:
            for chunk in chunks:
                chunk.probabilities.append(probabilities)
        if self.segments is not None:
            self.segments.ingest(batch, converted, self.ranges, probabilities)
        if self.window.roll(now):
            for other in self.revisions.values():
                if other.window is not None:
                    other.window.roll(now, tick=True)
        elif rev is not None and rev.window is not None:
            rev.window.roll(now)
        if self.rows is not None:
            self.rows.add(scanned, n, now)
        if self.segments is not None:
            self.segments.follow(self.window)
        if self.scan is not None:
            self._look(scanned, n, now)

    def _look(self, values: dict[str, Any], n: int, now: float) -> None:
        """Sequential drift decisions on the records just ingested (detector/sequential.py)."""
        assert self.scan is not None and self.reference is not None
        active = {(a.type, a.feature, a.test) for a in self.alerts.active}
        watch = {feature for _, feature, _ in active if feature is not None}
        findings = self.scan.add(self.scan.cells(values, n), now=now, watch=watch)
        if findings:
            self.transitions += self.alerts.observe(
                findings_to_evidence(findings, self.reference, active),
                now=iso(now),
                reference=self.reference.id,
                model_revision=self.dominant_revision(),
                fire_after=1,
            )

    def take_transitions(self) -> list[Transition]:
        """The alert transitions the sequential decisions made since the last call."""
        out, self.transitions = self.transitions, []
        return out

    def _ingest_requests(self, batch: Batch, now: float, rev: Revision | None) -> None:
        if not batch.statuses:
            return
        n = len(batch.statuses)
        errors = sum(1 for s in batch.statuses if s >= 500)
        index = np.searchsorted(LATENCY_EDGES, np.asarray(batch.latencies), side="left")
        latencies = np.bincount(index, minlength=len(LATENCY_EDGES) + 1)
        windows = [self.slo_window] if rev is None else [self.slo_window, rev.slo]
        if rev is not None:
            self.slo_window.open.revisions[rev.name] += n
        for window in windows:
            chunk = window.open
            chunk.n_records += n
            chunk.n_requests += n
            chunk.n_errors += errors
            chunk.latency_counts += latencies
            chunk.last = now
        if self.slo_window.roll(now):
            for other in self.revisions.values():
                other.slo.roll(now, tick=True)
        elif rev is not None:
            rev.slo.roll(now)

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
            vectors = self.embeddings.names if self.embeddings is not None else frozenset()
            seen += [(n, "prediction") for n in batch.output_names if n not in vectors]
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
        if self.segments is not None:
            self.segments.keep_warmup(batch, take)
        self.warmup_n += take
        revision = batch.source.get("modelRevision")
        if isinstance(revision, str) and revision and take:
            self.warmup_revisions[revision] += take
        if self.warmup_n >= size:
            columns = dict(self.columns)
            for name, values in self.warmup.items():
                if name not in columns:
                    columns[name] = Column(name, self.warmup_kinds[name], infer_type(values))
            probs = np.concatenate(self.warmup_probabilities) if self.warmup_probabilities else None
            reference = build_reference(
                self.warmup, columns, source="warmup", since=now, probabilities=probs
            )
            if self.warmup_revisions:
                self.reference_revision = self.warmup_revisions.most_common(1)[0][0]
            self.set_reference(reference, now=now, raw=self.warmup, probabilities=probs)

    def _remember_predictions(self, batch: Batch, rev: Revision | None, now: float) -> None:
        prediction = self._prediction_column()
        if prediction is None or prediction not in batch.output_names:
            return
        self.labels.record(
            batch.keys,
            batch.output(prediction) or [],
            revision=rev.name if rev is not None else None,
            warmup=self.reference is None,
            now=now,
        )

    def add_labels(self, labels: list[tuple[str, int, Value]], *, now: float) -> tuple[int, int]:
        """Join labels to the predictions they belong to, credited to the time and revision
        of the prediction (`detector/labels.py`): (joined, unmatched)."""
        result = self.labels.join(labels, now=now)
        self.reference_labelled += [(label, p.value) for p, label in result.joined if p.warmup]
        return len(result.joined), result.unmatched

    # ---------------------------------------------------------------- evaluate

    def evaluate(self, *, now: float, now_iso: str) -> list[Transition]:
        self.evaluations += 1
        d = self.model.spec.detectors
        self.labels.expire(now)
        self._expire_revisions(now)
        self._choose_baseline()
        self._hold_baseline()
        self.slo_window.roll(now)
        evidence = check_slo(self.slo_window.view(), d.latency, d.errors)
        if self.reference is not None and self.window is not None:
            self.window.roll(now)
            view = self.window.view()
            evidence += check_drift(self.reference, view, d.drift, d.prediction_drift)
            evidence += check_quality(self.reference, view, d.quality)
            evidence += labelled_performance(
                self.labels, self.reference, view, d.performance, self.reference_labelled
            )
            multivariate = self.rows.evaluate(d.multivariate, now=now) if self.rows else None
            evidence += [multivariate] if multivariate is not None else []
            if self.segments is not None:
                self.segments.follow(self.window)
                evidence += self.segments.evaluate(d, self.alerts.active)
        if self.embeddings is not None:
            evidence += self.embeddings.evidence(d.drift, self.alerts.active)
        evidence += self._canary_evidence(now)
        self.last_evidence = evidence
        reference = self.reference.id if self.reference is not None else "warmup (pending)"
        dominant = self.dominant_revision()
        # Drift of the columns the sequential scan decides is its to fire and resolve.
        scanned = covered(self.scan)
        fed = [
            e
            for e in evidence
            if not (
                e.feature in scanned
                and e.type in ("FeatureDrift", "PredictionDrift")
                and e.segment is None
            )
        ]
        transitions = self.alerts.observe(
            fed, now=now_iso, reference=reference, model_revision=dominant
        )
        self._update_verdicts()
        self._log_signals(evidence, now=now, now_iso=now_iso, dominant=dominant)
        return transitions

    # ---------------------------------------------------------------- revisions

    def dominant_revision(self) -> str | None:
        """The revision an all-traffic alert concerns: the one with the largest share of the
        window's newest records (else the latest seen). Not of the whole window: right after
        a rollout the window still holds mostly the old revision's records while the new one
        serves everything and is the one that changed the figures (a canary beside a larger
        stable revision leaves stable the largest; the candidate is judged by its own
        CanaryRegression)."""
        window = self.window if self.window is not None else self.slo_window
        counts = window.latest_revisions() or self._window_revisions()
        if counts:
            return max(sorted(counts), key=lambda r: counts[r])
        return self.model_revision

    def _window_revisions(self) -> Counter[str]:
        if self.window is not None:
            counts = self.window.revisions()
            if counts:
                return counts
        return self.slo_window.revisions()

    def _expire_revisions(self, now: float) -> None:
        """Forget revisions idle for `canary.idleAfter`; promote a candidate that passed and
        is the only one left when the baseline went."""
        idle = self.model.spec.canary.idle_after_seconds
        for name in [n for n, r in self.revisions.items() if now - r.last_seen > idle]:
            del self.revisions[name]
            self._forget(name)
        for rev in self.revisions.values():
            rev.slo.roll(now)
            if rev.window is not None:
                rev.window.roll(now)
        old = self.baseline
        if old is not None and old not in self.revisions and len(self.revisions) == 1:
            (only,) = self.revisions.values()
            if only.passed:
                self._promote(only, old, now)

    def _forget(self, name: str) -> None:
        """Remember (a bounded number of) revisions that stopped serving in this run."""
        self._gone[name] = None
        while len(self._gone) > MAX_GONE:
            del self._gone[next(iter(self._gone))]

    def _choose_baseline(self) -> None:
        """The baseline: `canary.baseline` while it serves; else the one chosen before while it
        serves; else (first revisions, a restart, the baseline went) the one with the most
        records. The choice settles once the live revisions have sent `canary.minSamples`
        records between them: until then (a detector that starts mid-canary may hear from
        the candidate first) it follows the records."""
        pinned = self.model.spec.canary.baseline
        if pinned is not None and pinned in self.revisions:
            self.baseline = pinned
            return
        settled = self.baseline in self.revisions and self._baseline_settled
        if settled or not self.revisions:
            return
        best = max(self.revisions.values(), key=lambda r: (r.records + r.requests, -r.first_seen))
        self.baseline = best.name
        total = sum(r.records + r.requests for r in self.revisions.values())
        self._baseline_settled = total >= self.model.spec.canary.min_samples

    def candidates(self) -> list[Revision]:
        return [r for n, r in self.revisions.items() if n != self.baseline]

    def _hold_baseline(self) -> None:
        """Keep the baseline's chunks back to its candidates' beginnings (bounded: a window
        merges its oldest chunks beyond 2 × CHUNKS_PER_WINDOW), so a small canary is compared
        with the baseline over its own whole window."""
        for rev in self.revisions.values():
            hold = None
            if rev.name == self.baseline:
                starts = [_start(c) for c in self.candidates()]
                hold = min(starts) if starts else None
            rev.slo.hold_since = hold
            if rev.window is not None:
                rev.window.hold_since = hold

    def _revision_view(
        self, rev: Revision, since: float | None, until: float | None = None
    ) -> WindowView:
        """A revision's records and requests as one view (from `since` on, and of the chunks
        begun by `until`, when given)."""
        limit = canary.MAX_CBPE_ROWS if self.model.spec.detectors.performance is not None else 0
        view = (
            rev.window.view(since, until=until, max_probabilities=limit)
            if rev.window is not None
            else WindowView(sketches={})
        )
        # Labelled rows by prediction time: the revision's predictions made since `since`.
        view.labelled = self.labels.pairs(rev.name, _start(rev) if since is None else since)
        requests = rev.slo.view(since, until=until)
        view.n_requests = requests.n_requests
        view.n_errors = requests.n_errors
        view.latency_counts = requests.latency_counts
        return view

    def _canary_evidence(self, now: float) -> list[Evidence]:
        """Each candidate against the baseline over the same time span; a passing finding
        for each canary alert track whose revision no longer serves as a candidate (gone, or
        the baseline now). A track restored after a restart for a revision not heard from
        yet keeps its state until `canary.idleAfter` has passed since the start."""
        spec = self.model.spec
        results: dict[str, canary.CanaryResult] = {}
        base = self.revisions.get(self.baseline) if self.baseline is not None else None
        out: list[Evidence] = []
        if spec.canary.enabled and base is not None:
            columns = self.reference.columns if self.reference is not None else {}
            for rev in self.candidates():
                # The same time span: from the later of the two windows' beginnings on, and,
                # when one revision's latest batch is more than a few batches older than the
                # other's, only up to it. The sidecars ship apart, and a change in the inputs
                # of both reaches the one shipping first before the other: the chunks of the
                # one ahead that received anything later wait until the other has caught up
                # (a stalled sidecar delays the verdict, it does not decide it).
                since = max(_start(rev), _start(base))
                behind = min(rev.last_seen, base.last_seen)
                ahead = max(rev.last_seen, base.last_seen)
                until = behind if ahead - behind > SHIPPING_SLACK_SECONDS else None
                result = canary.compare(
                    rev.name,
                    base.name,
                    self._revision_view(rev, since, until),
                    self._revision_view(base, since, until),
                    columns=columns,
                    spec=spec.canary,
                    performance=spec.detectors.performance,
                    samples=rev.records or rev.requests,
                )
                results[rev.name] = result
                ev = result.evidence()
                if ev is not None:
                    out.append(ev)
        self.canary_results = results
        idle = spec.canary.idle_after_seconds
        for entry in self.alerts.state():
            revision = entry["feature"]
            if entry["type"] != canary.ALERT_TYPE or revision in results:
                continue
            known = revision in self.revisions or revision in self._gone
            if known or now - self.started_at > idle:
                out.append(
                    Evidence(
                        type=canary.ALERT_TYPE,
                        test=canary.TEST,
                        statistic=0.0,
                        threshold=0.0,
                        failing=False,
                        message=f"revision {revision} no longer serves as a candidate",
                        model_revision=revision,
                    )
                )
        return out

    def _update_verdicts(self) -> None:
        active = {a.model_revision for a in self.alerts.active if a.type == canary.ALERT_TYPE}
        pending = {
            e["feature"]
            for e in self.alerts.state()
            if e["type"] == canary.ALERT_TYPE and e["failingStreak"] and e["active"] is None
        }
        self.verdicts = {}
        for rev in self.candidates():
            v = canary.verdict(
                self.canary_results.get(rev.name),
                alert_active=rev.name in active,
                pending_failure=rev.name in pending,
            )
            self.verdicts[rev.name] = v
            if v != "Pending":  # Pending (e.g. the baseline went quiet) keeps the last verdict
                rev.passed = v == "Pass"
        if self.baseline in self.revisions:
            self.revisions[self.baseline].passed = False

    def _promote(self, rev: Revision, old: str, now: float) -> None:
        """Move the prediction reference (and the CBPE reference level) to `rev`'s window."""
        ref = self.reference
        if ref is None or rev.window is None:
            return
        view = rev.window.view()
        sketches = dict(ref.sketches)
        moved = []
        for name, column in ref.columns.items():
            if column.kind == "prediction" and view.sketches[name].total >= MIN_VALUES:
                sketches[name] = view.sketches[name].copy()
                moved.append(name)
        if not moved:
            return
        performance = dict(ref.performance)
        probabilities = view.probabilities
        if ref.performance_estimated and probabilities is not None and len(probabilities):
            for metric in ("accuracy", "f1", "roc_auc"):
                performance[metric] = safe_metric(
                    lambda m=metric: perf.estimate_metric(m, probabilities)
                )
        digest = hashlib.sha256(f"{ref.id}\x1f{rev.name}\x1f{view.n_records}".encode())
        for name in moved:
            digest.update(repr(_sketch_state(sketches[name])).encode())
        new_id = f"{ref.source}@{digest.hexdigest()[:12]}"
        self.reference = dataclasses.replace(
            ref,
            id=new_id,
            since=now,
            sketches=sketches,
            performance=performance,
        )
        self.reference_revision = rev.name
        if self.segments is not None:
            self.segments.promoted()
        # The sequential drift scan judges against the reference in force: start it anew.
        self.scan = build_scan(self.reference, self.model, now=now)
        self.promotion = {
            "promotedFrom": old,
            "revision": rev.name,
            "reason": "promoted",
            "previous": ref.id,
            "id": new_id,
            "columns": moved,
        }

    def _log_signals(
        self, evidence: list[Evidence], *, now: float, now_iso: str, dominant: str | None
    ) -> None:
        active = {_alert_key(a) for a in self.alerts.active}
        for ev in evidence:
            if ev.failing:
                self._last_failed[ev.key] = now
            elif ev.key not in self.signal_log and ev.key not in active:
                continue  # passing, untracked: its entry would be pruned below at once
            entry: dict[str, Any] = {"type": ev.type}
            if ev.feature is not None:
                entry["feature"] = ev.feature
            if ev.segment is not None:
                entry["segment"] = {ev.segment[0]: ev.segment[1]}
            entry.update(
                test=ev.test,
                statistic=finite_or_none(ev.statistic),
                threshold=finite_or_none(ev.threshold),
                failing=ev.failing,
                at=now_iso,
            )
            revision = ev.model_revision or dominant
            if revision is not None:
                entry["modelRevision"] = revision
            self.signal_log[ev.key] = entry
        tracked = self._tracked(now)  # once: per key it was quadratic in the checks
        for key in [k for k in self.signal_log if k not in tracked]:
            del self.signal_log[key]
            self._last_failed.pop(key, None)

    def _tracked(self, now: float) -> set[tuple[str, str | None, str]]:
        active = {_alert_key(a) for a in self.alerts.active}
        return {
            key
            for key, entry in self.signal_log.items()
            if entry["failing"]
            or key in active
            or now - self._last_failed.get(key, -math.inf) <= SIGNAL_MEMORY_SECONDS
        }

    def signals(self) -> list[dict[str, Any]]:
        """status.detector.signals: the latest evaluation of every check the alert state
        machine tracks (failing now, alert active, or failed in the last hour), at most
        MAX_SIGNALS, failing ones first."""
        active = {_alert_key(a) for a in self.alerts.active}
        ranked = sorted(
            self.signal_log.items(),
            key=lambda kv: (
                not kv[1]["failing"],
                kv[0] not in active,
                -self._last_failed.get(kv[0], 0.0),
                _sort_key(kv[0]),
            ),
        )
        return [dict(entry) for _, entry in ranked[:MAX_SIGNALS]]

    def revision_status(self, iso: Callable[[float], str]) -> list[dict[str, Any]]:
        """`revisions` of /v1/status and status.detector: every live revision, its share of
        the all-traffic window, its role, and a candidate's canary verdict."""
        self._choose_baseline()  # revisions may have come since the last evaluation
        counts = self._window_revisions()
        total = sum(counts.values())
        window = self.window if self.window is not None and self.window.revisions() else None
        if counts:  # records (requests) without a revision count in the total too
            chunks = [*(window or self.slo_window).sealed, (window or self.slo_window).open]
            total = max(total, sum(c.n_records for c in chunks))
        out: list[dict[str, Any]] = []
        min_samples = self.model.spec.canary.min_samples
        for rev in sorted(self.revisions.values(), key=lambda r: (r.first_seen, r.name)):
            entry: dict[str, Any] = {
                "revision": rev.name,
                "records": rev.records,
                "share": round(counts[rev.name] / total, 4) if total else 0.0,
                "firstSeen": iso(rev.first_seen),
                "lastSeen": iso(rev.last_seen),
                "role": "baseline" if rev.name == self.baseline else "candidate",
            }
            if rev.name != self.baseline and self.baseline is not None:
                entry["canary"] = {
                    "verdict": self.verdicts.get(rev.name, "Pending"),
                    "samples": rev.records or rev.requests,
                    "minSamples": min_samples,
                    "baseline": self.baseline,
                }
            out.append(entry)
        return out

    def canary_report(self, revision: str) -> dict[str, Any] | None:
        """The verdict on one live revision, with its evidence (None: not a live revision)."""
        rev = self.revisions.get(revision)
        if rev is None:
            return None
        if revision == self.baseline:
            return {
                "revision": revision,
                "role": "baseline",
                "verdict": "Pass",
                "baseline": revision,
                "samples": rev.records or rev.requests,
                "minSamples": self.model.spec.canary.min_samples,
                "evidence": [],
                "message": "the baseline is what candidates are judged against",
            }
        result = self.canary_results.get(revision)
        verdict = self.verdicts.get(revision, "Pending")
        return {
            "revision": revision,
            "role": "candidate",
            "verdict": verdict,
            "baseline": self.baseline,
            "samples": rev.records or rev.requests,
            "minSamples": self.model.spec.canary.min_samples,
            "evidence": [s.to_dict() for s in result.signals] if result is not None else [],
        }

    # ---------------------------------------------------------------- status

    def status_labels(self) -> dict[str, Any]:
        """`labels` of /v1/status and status.detector: label coverage (`detector/labels.py`)."""
        check = self.model.spec.detectors.performance or PerformanceCheck()
        return self.labels.status(check.metric, iso)

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
            "labels": self.status_labels(),
            "embeddings": self.embeddings.status() if self.embeddings is not None else {},
            "evaluations": self.evaluations,
            "sequential": None
            if self.scan is None
            else {
                "falseAlarmsPer": self.scan.false_alarms_per,
                "windows": self.scan.sizes,
                "columns": [c.name for c in self.scan.columns],
                "looks": self.scan.looks,
            },
            "multivariate": {"method": spec.detectors.multivariate.method}
            | (
                self.rows.status()
                if self.rows is not None
                else {"reason": mvd.unusable_reason(None)}
                if self.reference is not None
                else {}
            ),
            "modelRevision": self.model_revision,
            "baselineRevision": self.baseline,
            "revisionsEvicted": self.revisions_evicted,
            "segments": self.segments.status() if self.segments is not None else None,
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


def _start(rev: Revision) -> float:
    """When a revision's windows begin (the later of its records' and requests')."""
    if rev.window is not None:
        return max(rev.window.started, rev.slo.started)
    return rev.slo.started


def _alert_key(alert: Alert) -> tuple[str, str | None, str]:
    """The alert state machine's key of an alert (a canary's: its candidate revision)."""
    if alert.type == canary.ALERT_TYPE:
        return (alert.type, alert.model_revision, alert.test)
    return (alert.type, alert.feature, segment_test(alert.test, alert.segment))


def _sort_key(key: tuple[str, str | None, str]) -> tuple[str, str, str]:
    return (key[0], key[1] or "", key[2])


def _sketch_state(sketch: Sketch) -> Any:
    if isinstance(sketch, NumericSketch):
        return (sketch.counts.tolist(), sketch.missing)
    return (sorted(sketch.counts.items()), sketch.missing, sketch.other)
