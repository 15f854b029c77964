"""Embedding features in the detector: vectors sampled, projected, and tested as a whole.

A feature of type `embedding` (`spec.features[].type`) is a vector per record: a v2
tensor of that name, an OpenAI embeddings response (`protocols/openai.py`), or any
producer's list of numbers under that name in a record's `features` or `outputs`
(docs/records-api.md). It has no sketch and no column per dimension. Per feature:

- The reference is a uniform sample (`stats.embedding.Reservoir`, at most `capacity`
  vectors) of the first `spec.reference.size` vectors seen, whatever the tabular
  reference's source (a data file holds no vectors); the current window is the latest
  `capacity` vectors after it (`Recent`).
- Vectors are projected to `PROJECTED_DIMS` dimensions at ingest (a fixed random
  projection seeded by the feature's name), so memory is 2 x capacity x 32 floats per
  feature (0.5 MB at the default 1,000) whatever the embedding's width.
- Each evaluation runs MMD's permutation test between the two samples, and a chi-square
  test of the topic mix: the reference clustered into `TOPICS` centroids (k-means, once,
  when the reference is complete), every vector after it assigned to its nearest one.
  The topic mix is a monitored column of its own, `NAME.topic` (topics `0`..`7`).
- Both are `FeatureDrift` evidence naming the feature (`test: mmd`, and `test:
  chisquare` for `NAME.topic`), corrected together with `detectors.drift.correction` at
  `detectors.drift.pValue` over the embedding tests of the evaluation (the tabular
  features are corrected among themselves, as before: each family is held at pValue).
  A verdict needs the adjusted p-value at most pValue AND an effect at the floor:
  MMD^2 >= `MMD2_FLOOR` (0.005, why in `stats/embedding.py`), TVD >= 0.05 for the topics
  (chi-square's floor). `detectors.drift.minEffect` (on the tabular tests' scales) does
  not apply to them.
- A vector of the wrong length (`dimensions`, else the first vector's), with a
  non-number or a non-finite element, or that is not a list, is a type error: counted
  in status (`embeddings.NAME.typeErrors`), not sampled.

Kept across a detector restart: once complete, a feature's reference (`EmbeddingReference`:
its sample, the projection's identity, the topic centroids and the reference topic mix) is
stored with the tabular reference (`detector/persist.py`) and restored by `restore`. The
sample is kept as it is stored: each projected vector is standardised by the reference
sample's per-dimension mean and spread and rounded to float16 (`quantize`), the reference
and every current vector alike, so a restored feature judges the traffic exactly as before.
A feature whose reference was not stored (an older store, or left out for size) is not
judged after a restart (`unavailable`, until a rebaseline): rebuilding it from the traffic
after the restart could take drifted traffic as the reference.

Pure: no clock, no I/O; randomness from generators seeded by the feature's name.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np

from mlwarden.detector.alerts import Alert, Evidence
from mlwarden.detector.ingest import Batch
from mlwarden.spec import DriftCheck, ObservedModelSpec
from mlwarden.stats import DEFAULT_MIN_EFFECT, CategoricalSketch, TestResult, adjusted, chisquare
from mlwarden.stats.embedding import (
    MMD2_FLOOR,
    EmbeddingTest,
    Recent,
    Reservoir,
    kmeans,
    mmd_permutation_test,
    nearest,
    permutations_for,
    projection_for,
)

# Vectors per sample (reference, current). An evaluation's kernel matrix is (2 x CAPACITY)^2
# float64s, transient: 31 MB at 1,000 (122 MB at 2,000); benchmarks/embedding_check.py.
CAPACITY: Final = 1000
MIN_VECTORS: Final = 50  # fewer current vectors: not evaluated (not a pass)
TOPICS: Final = 8
TOPIC_SUFFIX: Final = ".topic"
ALERT_TYPE: Final = "FeatureDrift"


def _seed(*parts: object) -> int:
    text = "\x1f".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


# The largest finite float16: a standardised coordinate beyond it (65,504 spreads from the
# reference's mean) is clipped to it rather than made infinite.
_F16_MAX: Final = 65504.0


def quantize(rows: np.ndarray, center: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Projected vectors as they are kept and stored: standardised, rounded to float16."""
    z: np.ndarray = np.clip((rows - center) / scale, -_F16_MAX, _F16_MAX)
    return z.astype(np.float16)


def dequantize(codes: np.ndarray, center: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """The float64 vectors the tests read, from `quantize`'s codes (exactly reproducible)."""
    rows: np.ndarray = codes.astype(np.float64) * scale + center
    return rows


def projection_id(projection: np.ndarray) -> str:
    """Names a projection matrix: a stored reference is only restored onto the same one."""
    return hashlib.sha256(np.ascontiguousarray(projection, dtype="<f8").tobytes()).hexdigest()[:16]


@dataclass(frozen=True)
class EmbeddingReference:
    """One embedding feature's complete reference: what a restarted detector needs to judge
    the traffic as before (`EmbeddingColumn.reference_state` / `restore`)."""

    dimensions: int  # the embedding's width
    projection: str  # projection_id of the projection the sample was made with
    seen: int  # reference vectors offered to the reservoir
    center: np.ndarray  # float64, per projected dimension
    scale: np.ndarray  # float64, per projected dimension (> 0)
    codes: np.ndarray  # the sample: quantize's float16 codes, rows x projected dimensions
    centroids: np.ndarray  # float64, topics x projected dimensions
    topics: np.ndarray  # int64: the reference sample's vectors per topic


@dataclass
class EmbeddingColumn:
    """One embedding feature's samples, projection and topics."""

    name: str
    reference_size: int
    capacity: int
    dimensions: int | None = None
    projection: np.ndarray | None = None
    reference: Reservoir | None = None
    current: Recent | None = None
    centroids: np.ndarray | None = None
    reference_topics: np.ndarray | None = None
    center: np.ndarray | None = None
    scale: np.ndarray | None = None
    codes: np.ndarray | None = None
    type_errors: int = 0
    missing: int = 0
    tests: int = 0
    rng: np.random.Generator = field(default_factory=np.random.default_rng)
    # Why the feature is not judged (None: it is, or it warms up): its reference was not
    # restored after a restart, and is never rebuilt from the traffic after one.
    unavailable: str | None = None

    @property
    def ready(self) -> bool:
        return self.centroids is not None

    def vectors(self, values: Sequence[Any]) -> np.ndarray | None:
        """The well-formed vectors of one batch (rows), counting the others."""
        rows: list[Any] = []
        for v in values:
            if v is None:
                self.missing += 1
            elif (
                isinstance(v, list) and v and (self.dimensions is None or len(v) == self.dimensions)
            ):
                if self.dimensions is None:
                    # The width comes from the first well-formed vector, never from a malformed
                    # one (which would otherwise turn every later vector into a type error).
                    if not all(_is_number(x) and math.isfinite(x) for x in v):
                        self.type_errors += 1
                        continue
                    self.dimensions = len(v)
                rows.append(v)
            else:
                self.type_errors += 1
        if not rows:
            return None
        try:
            array = np.asarray(rows, dtype=np.float64)
        except (TypeError, ValueError):  # a string (or a list) inside a vector
            ok = [r for r in rows if all(_is_number(x) for x in r)]
            self.type_errors += len(rows) - len(ok)
            if not ok:
                return None
            array = np.asarray(ok, dtype=np.float64)
        finite = np.isfinite(array).all(axis=1)  # a null element arrives as NaN
        if not finite.all():
            self.type_errors += int(np.count_nonzero(~finite))
            array = array[finite]
        return array if len(array) else None

    def add(self, values: Sequence[Any]) -> None:
        array = self.vectors(values)
        if array is None or self.unavailable is not None:
            return
        if self.projection is None:
            dim = array.shape[1]
            self.projection = projection_for(self.name, dim)
            width = self.projection.shape[1]
            self.reference = Reservoir(self.capacity, width)
            self.current = Recent(self.capacity, width)
        assert self.reference is not None and self.current is not None
        projected = array @ self.projection
        take = max(0, self.reference_size - self.reference.seen)
        if take:
            self.reference.add(projected[:take], self.rng)
            projected = projected[take:]
            if self.reference.seen >= self.reference_size:
                self._complete()
        if len(projected) and self.centroids is not None:
            assert self.center is not None and self.scale is not None
            projected = dequantize(quantize(projected, self.center, self.scale), *self._norm())
            self.current.add(projected, nearest(projected, self.centroids))

    def _norm(self) -> tuple[np.ndarray, np.ndarray]:
        assert self.center is not None and self.scale is not None
        return self.center, self.scale

    def _complete(self) -> None:
        """The reference is complete: keep its sample in the stored form, find its topics."""
        assert self.reference is not None
        raw = self.reference.sample()
        self.center = raw.mean(axis=0)
        spread = raw.std(axis=0)
        self.scale = np.where(spread > 0, spread, 1.0)
        self.codes = quantize(raw, self.center, self.scale)
        sample = dequantize(self.codes, self.center, self.scale)
        raw[:] = sample
        self.centroids = kmeans(sample, TOPICS, self.rng)
        self.reference_topics = np.bincount(
            nearest(sample, self.centroids), minlength=len(self.centroids)
        )

    def reference_state(self) -> EmbeddingReference | None:
        """The complete reference, to store (None while it warms up)."""
        if self.centroids is None or self.reference_topics is None or self.codes is None:
            return None
        assert self.projection is not None and self.dimensions is not None
        assert self.reference is not None
        center, scale = self._norm()
        return EmbeddingReference(
            dimensions=self.dimensions,
            projection=projection_id(self.projection),
            seen=self.reference.seen,
            center=center,
            scale=scale,
            codes=self.codes,
            centroids=self.centroids,
            topics=self.reference_topics,
        )

    def restore(self, state: EmbeddingReference) -> str | None:
        """Take back a stored reference; None, or why it cannot be (the feature is then not
        judged: `unavailable`)."""
        if self.dimensions is not None and self.dimensions != state.dimensions:
            return f"stored for {state.dimensions} dimensions, the spec declares {self.dimensions}"
        projection = projection_for(self.name, state.dimensions)
        width = projection.shape[1]
        if projection_id(projection) != state.projection:
            return "stored with another projection (written by another mlwarden version)"
        shapes = (state.codes.shape[1:], state.center.shape, state.scale.shape)
        if shapes != ((width,), (width,), (width,)) or state.centroids.shape[1:] != (width,):
            return f"its arrays are not {width} projected dimensions wide"
        if len(state.topics) != len(state.centroids):
            return f"{len(state.topics)} topic counts for {len(state.centroids)} centroids"
        self.dimensions = state.dimensions
        self.projection = projection
        self.reference = Reservoir(max(self.capacity, len(state.codes)), width)
        self.reference.seen = state.seen
        self.center, self.scale, self.codes = state.center, state.scale, state.codes
        self.reference.rows[: len(state.codes)] = dequantize(state.codes, *self._norm())
        self.current = Recent(self.capacity, width)
        self.centroids, self.reference_topics = state.centroids, state.topics
        self.unavailable = None
        return None

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "dimensions": self.dimensions,
            "referenceVectors": 0 if self.reference is None else self.reference.seen,
            "referenceSize": self.reference_size,
            "currentVectors": 0 if self.current is None else len(self.current.sample()),
            "typeErrors": self.type_errors,
            "missing": self.missing,
            "topics": 0 if self.centroids is None else len(self.centroids),
        }
        if self.unavailable is not None:
            out["unavailable"] = self.unavailable
        return out


def _is_number(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


class EmbeddingMonitor:
    """Every embedding feature of one ObservedModel."""

    def __init__(self, columns: dict[str, EmbeddingColumn]) -> None:
        self.columns = columns
        self.names = frozenset(columns)
        self.last_tests: dict[str, EmbeddingTest] = {}
        # Evidence computed off the event loop for the next evaluation (`prepare`).
        self.prepared: list[Evidence] | None = None

    @classmethod
    def from_spec(
        cls, spec: ObservedModelSpec, *, capacity: int = CAPACITY
    ) -> EmbeddingMonitor | None:
        """The monitor of the spec's embedding features; None when it declares none."""
        columns = {
            f.name: EmbeddingColumn(
                f.name,
                reference_size=spec.reference.size,
                capacity=capacity,
                dimensions=f.dimensions,
                rng=np.random.default_rng(_seed("reservoir", f.name)),
            )
            for f in spec.features
            if f.type == "embedding"
        }
        return cls(columns) if columns else None

    def reference_states(self) -> dict[str, EmbeddingReference]:
        """The complete references, to store with the tabular one."""
        states = {name: c.reference_state() for name, c in self.columns.items()}
        return {name: state for name, state in states.items() if state is not None}

    def warming(self) -> list[str]:
        """The features whose reference is still warming up (neither complete nor refused)."""
        return [
            name
            for name, c in self.columns.items()
            if c.centroids is None and c.unavailable is None
        ]

    def restore(
        self,
        states: Mapping[str, EmbeddingReference] | None,
        *,
        warming: Collection[str] = (),
        left_out: str | None = None,
    ) -> None:
        """Take back the references stored with a reloaded tabular reference. `states`: None
        for a store written before embedding references were stored; `warming`: features
        whose reference was still warming up when it was stored (they warm up again, as a
        restart during the warm-up does); `left_out`: why features absent from `states` are
        absent (left out for size). Every other feature is not judged until a rebaseline:
        never rebuilt from the traffic after a restart, which may already be drifted."""
        for name, column in self.columns.items():
            state = (states or {}).get(name)
            if state is not None:
                why = column.restore(state)
            elif name in warming:
                continue
            elif states is None:
                why = "the store was written before embedding references were stored"
            else:
                why = left_out or "absent from the stored reference"
            if why is not None:
                column.unavailable = (
                    f"not judged: reference not stored ({why}); rebaseline to rebuild it"
                )

    def ingest(self, batch: Batch) -> None:
        """Sample each embedding feature's vectors (from features, else outputs)."""
        for name, column in self.columns.items():
            values = batch.feature(name)
            if values is None:
                values = batch.output(name)
            if values is not None:
                column.add(values)

    def evidence(self, check: DriftCheck, active: Sequence[Alert] = ()) -> list[Evidence]:
        """One evaluation: MMD and topic-mix evidence per evaluable feature; and a passing
        "not judged" finding for each `active` alert on a feature that is `unavailable`, so
        that it resolves after `resolveAfter` evaluations instead of staying active with
        nothing to judge it.

        The detector service computes it off the event loop instead (`snapshot` on the loop,
        `compute` in a thread, `accept`), then `take_prepared` hands it to the evaluation;
        called directly (tests, `mlwarden check`'s callers), it does the three in a row."""
        prepared, self.prepared = self.prepared, None
        if prepared is None:
            snap = self.snapshot(check)
            prepared = [] if snap is None else self.accept(compute(snap))
        return prepared + self._not_judged(active)

    def _not_judged(self, active: Sequence[Alert]) -> list[Evidence]:
        out: list[Evidence] = []
        for alert in active:
            if alert.type != ALERT_TYPE or alert.segment is not None or alert.feature is None:
                continue
            name = alert.feature.removesuffix(TOPIC_SUFFIX)
            column = self.columns.get(name)
            if column is None or column.unavailable is None:
                continue
            out.append(alert.not_judged(f"{alert.feature} {column.unavailable}"))
        return out

    def snapshot(self, check: DriftCheck) -> EmbeddingSnapshot | None:
        """Copies of what one evaluation reads (cheap: at most 2 x CAPACITY x 32 floats a
        feature), so that `compute` can run in a thread while ingest goes on."""
        if not check.enabled:
            return None
        ready = [
            c
            for c in self.columns.values()
            if c.ready and c.current is not None and c.current.seen >= MIN_VECTORS
        ]
        if not ready:
            return None
        columns = []
        for column in ready:
            assert column.reference is not None and column.current is not None
            assert column.reference_topics is not None
            column.tests += 1
            cur_counts = np.bincount(
                column.current.tag_values(), minlength=len(column.reference_topics)
            )
            columns.append(
                (
                    column.name,
                    column.reference.sample().copy(),
                    column.current.sample().copy(),
                    _seed("test", column.name, column.tests),
                    column.reference_topics.copy(),
                    cur_counts,
                )
            )
        return EmbeddingSnapshot(check, columns)

    def accept(self, computed: tuple[list[Evidence], dict[str, EmbeddingTest]]) -> list[Evidence]:
        """Record what `compute` found (the last MMD test per feature, for status)."""
        evidence, tests = computed
        self.last_tests.update(tests)
        return evidence

    def prepare(self, computed: tuple[list[Evidence], dict[str, EmbeddingTest]]) -> None:
        """Hold a result computed off the loop for the next `evidence` call."""
        self.prepared = self.accept(computed)

    def status(self) -> dict[str, Any]:
        return {name: c.status() for name, c in self.columns.items()}


@dataclass(frozen=True)
class EmbeddingSnapshot:
    """What one evaluation reads, copied: (feature, reference sample, current sample, the
    test's seed, reference topic counts, current topic counts) per ready feature."""

    check: DriftCheck
    columns: list[tuple[str, np.ndarray, np.ndarray, int, np.ndarray, np.ndarray]]


def compute(snap: EmbeddingSnapshot) -> tuple[list[Evidence], dict[str, EmbeddingTest]]:
    """The evaluation's numbers (no state touched: safe in a thread): evidence, and the MMD
    test per feature."""
    check = snap.check
    m = 2 * len(snap.columns)
    # The smallest level a p-value is compared with: alpha / m under Bonferroni (and
    # Benjamini-Hochberg's first step); a sequential stop above it changes no decision.
    level = check.p_value / m if check.correction != "none" else check.p_value
    tests: list[tuple[str, EmbeddingTest]] = []
    topics: list[tuple[str, TestResult]] = []
    for name, reference, current, seed, reference_topics, cur_counts in snap.columns:
        result = mmd_permutation_test(
            reference,
            current,
            np.random.default_rng(seed),
            level=level,
            max_permutations=permutations_for(level),
        )
        tests.append((name, result))
        ref = {str(i): int(c) for i, c in enumerate(reference_topics)}
        cur = {str(i): int(c) for i, c in enumerate(cur_counts)}
        topics.append(
            (
                name + TOPIC_SUFFIX,
                chisquare.score(
                    CategoricalSketch.from_counts(ref), CategoricalSketch.from_counts(cur)
                ),
            )
        )
    # (feature, test, statistic, p-value, effect, floor, what it was) per test, in order.
    floor = DEFAULT_MIN_EFFECT["chisquare"]
    found = [
        (
            name,
            "mmd",
            t.statistic,
            t.p_value,
            t.statistic,
            MMD2_FLOOR,
            f"MMD^2={t.statistic:.3g} (floor {MMD2_FLOOR}; {t.permutations} permutations, "
            f"{t.n_reference} reference and {t.n_current} current vectors)",
        )
        for name, t in tests
    ] + [
        (
            name,
            "chisquare",
            r.statistic,
            r.p_value,
            r.effect,
            floor,
            f"topic mix TVD={r.effect:.3g} (floor {floor})",
        )
        for name, r in topics
    ]
    adj = adjusted([f[3] for f in found], check.correction)
    over = f"{check.correction} over {m} embedding tests"
    out: list[Evidence] = []
    for (name, test, statistic, _, effect, at_least, what), a in zip(found, adj, strict=True):
        assert a is not None
        out.append(
            Evidence(
                type=ALERT_TYPE,
                feature=name,
                test=test,
                statistic=statistic,
                p_value=a,
                threshold=check.p_value,
                failing=a <= check.p_value and effect >= at_least,
                message=f"{what}, adjusted p={a:.3g} vs {check.p_value:.3g} ({over})",
            )
        )
    return out, dict(tests)
