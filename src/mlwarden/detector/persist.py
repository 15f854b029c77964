"""The reference as stored between detector runs: its summary, serialized, and the rule of reuse.

A warm-up reference is built from the first N records a detector sees. Were it rebuilt after
every restart, a detector restarted in the middle of an incident would take the drifted
traffic as its new "normal" and stop alerting. So the reference's summary — the sketches per
column (histogram edges, counts, sums, moments; category counts), the reference performance
and its identity — is stored and reloaded; raw rows never are. The one exception is the
multivariate check's sample (`detector/multivariate.py`): at most 5,000 rows of the features,
already encoded (standardised, one-hot) and rounded to float16, stored as it is kept, so a
reloaded reference judges rows exactly as the original did.

Stored with it (`StoredParts`), so that a restart does not lose them:

- each segment's reference (`detector/segments.py`): per segment of each segment column,
  its sketches (counts and sums per cell, without the edges it shares with the all-traffic
  sketch), record count and performance level, keyed by the segment's value;
- each embedding feature's complete reference (`detector/embedding.py`): its projected
  sample as float16 codes (standardised, as it is kept), their per-dimension centre and
  spread, the projection's id, the topic centroids and the reference topic mix; and the
  features still warming up when it was stored.

- `encode_stored` / `decode_reference`: the reference and its parts to bytes and back,
  exactly (a float is written as its shortest round-trip repr, non-finite ones as strings,
  arrays as little-endian bytes in base64), gzip-compressed. Evaluating a window against the
  original or the reloaded reference gives identical evidence. `encode_reference`: the
  tabular reference alone. A reference stored before the parts existed reads back with
  `StoredParts()` (None for both: a restart judges neither until a rebaseline).
- Over `MAX_STORED_BYTES`, parts are left out, least valuable first (`encode_stored`: the
  least frequent segments, then embedding references, then the multivariate sample), and
  the stored form lists them (`leftOut`) so that a restarted detector says which.
- `StoredReference.basis`: what the reference was built for — a digest of the spec fields
  that shape it (`reference_basis`: spec.reference, spec.features, spec.prediction) and the
  rebaseline token (the ObservedModel's `REBASELINE_ANNOTATION`) in force when it was built.
- `reuse_decision`: reload the stored reference unless the user asked for a new one (a new
  rebaseline token, or a spec change to those fields). Re-baselining is always explicit.

The alert state is stored next to the reference (a restarted detector must not start a "new
incident", which the operator's once-per-incident guardrail would let act again):

- `encode_alert_state` / `decode_alert_state`: the alert state machine's `state()` and the id
  of the reference it was judged against, as JSON.
- `alerts_to_restore`: all of it when that reference is the one in force again; otherwise
  (a rebaseline, a changed spec or reference file, a restart during the warm-up) only the
  checks judged without a reference (`SLO_ALERT_TYPES`: latency, errors). Drift, data
  quality and performance alerts were judged against a reference no longer in force; the
  user said what normal is now, so they end, and are judged anew against the new reference.

`MAX_STORED_BYTES` keeps the stored form inside a ConfigMap (1 MiB for the whole object);
a reference whose summary is larger is refused with the columns that make it large.
Everything here is pure; `store.py` holds the ConfigMap and file shells.
"""

from __future__ import annotations

import base64
import dataclasses
import gzip
import hashlib
import json
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from mlwarden.detector.checks import Column, ReferenceSummary
from mlwarden.detector.core import SLO_ALERT_TYPES
from mlwarden.detector.embedding import EmbeddingReference
from mlwarden.detector.segments import SegmentReference
from mlwarden.spec import REBASELINE_ANNOTATION, ObservedModelSpec
from mlwarden.stats import CategoricalSketch, NumericSketch
from mlwarden.stats.multivariate import Encoding, FeatureEncoding, MultivariateReference
from mlwarden.stats.segments import OTHER, segment_label

FORMAT: Final = "mlwarden.io/reference/v1"
ALERTS_FORMAT: Final = "mlwarden.io/alerts/v1"
# The ConfigMap holds the gzip'd JSON base64-encoded in binaryData (4/3 larger), next to
# metadata; 1 MiB is the limit of the whole object.
MAX_STORED_BYTES: Final = 700 * 1024


class StoredReferenceError(ValueError):
    """A stored reference that cannot be read back, or one too large to store."""


@dataclass(frozen=True)
class StoredParts:
    """What is stored with the tabular reference: the segments' and the embedding features'
    references. None: a store written before they were stored (a restart then judges
    neither until a rebaseline)."""

    segments: tuple[SegmentReference, ...] | None = None
    embeddings: dict[str, EmbeddingReference] | None = None
    # Embedding features whose reference was still warming up when this was stored.
    warming: frozenset[str] = frozenset()
    # What was left out to stay within MAX_STORED_BYTES (`segment country=BR`, `embedding
    # doc`, `multivariate sample`), least valuable first.
    left_out: tuple[str, ...] = ()

    @property
    def left_out_reason(self) -> str | None:
        """Why a part is missing, for status; None when nothing was left out."""
        if not self.left_out:
            return None
        return (
            f"left out of the stored reference for size (with it the reference is over the "
            f"{MAX_STORED_BYTES >> 10} KiB a ConfigMap can hold)"
        )


@dataclass(frozen=True)
class StoredReference:
    reference: ReferenceSummary
    basis: str  # reference_basis() of the spec it was built for
    rebaseline: str | None  # the rebaseline token in force when it was built
    digest: str  # sha256 of the canonical JSON: names this exact summary
    parts: StoredParts = StoredParts()


@dataclass(frozen=True)
class EncodedReference:
    data: bytes  # the stored form: gzip'd canonical JSON
    digest: str
    left_out: tuple[str, ...]  # StoredParts.left_out: what did not fit


def reference_basis(spec: ObservedModelSpec) -> str:
    """A digest of the spec fields that decide what the reference is: a change is a rebaseline.

    spec.reference, spec.features and spec.prediction, as parsed (defaults filled in, so
    writing a default out explicitly changes nothing); thresholds and checks may change
    freely without discarding the reference.
    """
    text = repr((spec.reference, spec.features, spec.prediction))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- floats


def _f(x: float) -> float | str:
    x = float(x)
    return x if math.isfinite(x) else repr(x)  # 'inf', '-inf', 'nan'


def _unf(x: Any) -> float:
    return float(x)  # float('inf') and float('nan') read the strings back


# --------------------------------------------------------------------------- sketches


def _sketch_to_dict(sketch: NumericSketch | CategoricalSketch) -> dict[str, Any]:
    if isinstance(sketch, NumericSketch):
        return {
            "kind": "numeric",
            "edges": [_f(e) for e in sketch.edges.tolist()],
            "counts": sketch.counts.tolist(),
            "means": [_f(m) for m in sketch.means.tolist()],
            "missing": sketch.missing,
            "infinite": sketch.infinite,
            "n": sketch.n,
            "rmsAboutOrigin": _f(sketch.rms),
            "min": _f(sketch.min),
            "max": _f(sketch.max),
        }
    return {
        "kind": "categorical",
        "maxCategories": sketch.max_categories,
        "counts": dict(sketch.counts),  # insertion order is kept: it orders the chi-square table
        "other": sketch.other,
        "missing": sketch.missing,
    }


def _sketch_from_dict(d: Mapping[str, Any], where: str) -> NumericSketch | CategoricalSketch:
    try:
        if d["kind"] == "numeric":
            sketch = NumericSketch(np.array([_unf(e) for e in d["edges"]], dtype=np.float64))
            counts = np.array(d["counts"], dtype=np.int64)
            n = int(d["n"])
            if "means" in d:
                means = np.array([_unf(m) for m in d["means"]], dtype=np.float64)
                rms = _unf(d["rmsAboutOrigin"])
            else:  # saved before sketches kept means (the cells' sums and the sum of the
                # squares about the origin): the same moments, divided
                with np.errstate(invalid="ignore", divide="ignore"):
                    sums = np.array([_unf(s) for s in d["sums"]], dtype=np.float64)
                    means = np.where(counts > 0, sums / counts, 0.0)
                rms = math.sqrt(_unf(d["sumsq"]) / n) if n else 0.0
            if counts.shape != sketch.counts.shape or means.shape != sketch.means.shape:
                raise ValueError(f"{len(d['edges'])} edges need {sketch.counts.size} cells")
            sketch.counts, sketch.means = counts, means
            sketch.missing, sketch.infinite, sketch.n = int(d["missing"]), int(d["infinite"]), n
            sketch.rms = rms
            sketch.min, sketch.max = _unf(d["min"]), _unf(d["max"])
            return sketch
        if d["kind"] == "categorical":
            cat = CategoricalSketch(int(d["maxCategories"]))
            cat.counts = {str(k): int(v) for k, v in d["counts"].items()}
            cat.other, cat.missing = int(d["other"]), int(d["missing"])
            return cat
        raise ValueError(f"unknown sketch kind {d['kind']!r}")
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise StoredReferenceError(f"{where}: {exc!r}") from None


# --------------------------------------------------------------------------- reference


def reference_to_dict(
    reference: ReferenceSummary, *, basis: str, rebaseline: str | None
) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "id": reference.id,
        "source": reference.source,
        "since": _f(reference.since),
        "records": reference.n,
        "basis": basis,
        "rebaseline": rebaseline,
        "columns": {
            name: {"kind": c.kind, "type": c.type} for name, c in reference.columns.items()
        },
        "sketches": {name: _sketch_to_dict(s) for name, s in reference.sketches.items()},
        "performance": {k: _f(v) for k, v in reference.performance.items()},
        "performanceEstimated": reference.performance_estimated,
        "multivariate": _sample_to_dict(reference.multivariate),
    }


def _sample_to_dict(sample: MultivariateReference | None) -> dict[str, Any] | None:
    if sample is None:
        return None
    return {
        "features": [f.to_dict() for f in sample.encoding.features],
        "seed": sample.seed,
        "total": sample.total,
        "shape": list(sample.rows.shape),
        "rows": base64.b64encode(sample.rows.astype("<f2").tobytes()).decode(),
    }


def _sample_from_dict(d: Mapping[str, Any] | None, where: str) -> MultivariateReference | None:
    if d is None:
        return None
    try:
        encoding = Encoding(tuple(FeatureEncoding.from_dict(f) for f in d["features"]))
        n, width = (int(x) for x in d["shape"])
        if width != encoding.width:
            raise ValueError(f"{width} columns, the encoding has {encoding.width}")
        raw = base64.b64decode(d["rows"], validate=True)
        rows = np.frombuffer(raw, dtype="<f2").astype(np.float16).reshape(n, width)
        return MultivariateReference(encoding, rows, int(d["seed"]), int(d["total"]))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise StoredReferenceError(f"{where}: multivariate: {exc!r}") from None


def _canonical(d: Mapping[str, Any]) -> bytes:
    return json.dumps(d, separators=(",", ":"), ensure_ascii=False).encode()


def _array(a: np.ndarray, dtype: str) -> str:
    return base64.b64encode(np.ascontiguousarray(a, dtype=dtype).tobytes()).decode()


def _unarray(text: Any, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    raw = np.frombuffer(base64.b64decode(text, validate=True), dtype=dtype)
    out: np.ndarray = raw.astype(np.dtype(dtype).newbyteorder("=")).reshape(shape)
    return out


# --------------------------------------------------------------------------- segments

# A segment's sketches are over the all-traffic reference's edges and category bound:
# stored without them (taken from the reference's sketch when read back).
_TEMPLATE_KEYS: Final = ("kind", "edges", "maxCategories")


def _segment_to_dict(summary: ReferenceSummary) -> dict[str, Any]:
    return {
        "records": summary.n,
        "performance": {k: _f(v) for k, v in summary.performance.items()},
        "sketches": {
            name: {k: v for k, v in _sketch_to_dict(s).items() if k not in _TEMPLATE_KEYS}
            for name, s in summary.sketches.items()
        },
    }


def _segments_to_dict(
    references: Sequence[SegmentReference], dropped: Collection[tuple[str, str]]
) -> list[dict[str, Any]]:
    return [
        {
            "column": r.column,
            "levels": list(r.levels),
            "segments": {
                level: _segment_to_dict(r.summaries[level])
                for level in r.judged
                if (r.column, level) not in dropped
            },
        }
        for r in references
    ]


def _segments_from_dict(
    items: Any, reference: ReferenceSummary, where: str
) -> tuple[SegmentReference, ...]:
    templates = {n: _sketch_to_dict(s.empty_like()) for n, s in reference.sketches.items()}
    out: list[SegmentReference] = []
    for item in items:
        column = str(item["column"])
        levels = tuple(str(v) for v in item["levels"])
        summaries: dict[str, ReferenceSummary] = {}
        for level, d in item["segments"].items():
            if level not in (*levels, OTHER):
                raise ValueError(f"segment {column}={level} is not one of its levels")
            at = f"{where}: segments.{segment_label(column, level)}"
            if set(d["sketches"]) != set(templates):
                raise ValueError(f"{at}: its sketches name other columns than the reference's")
            sketches = {
                n: _sketch_from_dict(
                    {**s, **{k: templates[n][k] for k in _TEMPLATE_KEYS if k in templates[n]}},
                    f"{at}.{n}",
                )
                for n, s in d["sketches"].items()
            }
            summaries[str(level)] = ReferenceSummary(
                f"{reference.id}/{segment_label(column, level)}",
                reference.source,
                reference.since,
                int(d["records"]),
                dict(reference.columns),
                sketches,
                {str(k): _unf(v) for k, v in d["performance"].items()},
                True,
            )
        out.append(SegmentReference(column, levels, summaries))
    return tuple(out)


# --------------------------------------------------------------------------- embeddings


def _embedding_to_dict(e: EmbeddingReference) -> dict[str, Any]:
    return {
        "dimensions": e.dimensions,
        "projection": e.projection,
        "seen": e.seen,
        "shape": list(e.codes.shape),
        "center": _array(e.center, "<f8"),
        "scale": _array(e.scale, "<f8"),
        "codes": _array(e.codes, "<f2"),
        "centroids": _array(e.centroids, "<f8"),
        "topics": [int(c) for c in e.topics],
    }


def _embedding_from_dict(d: Mapping[str, Any]) -> EmbeddingReference:
    n, width = (int(x) for x in d["shape"])
    topics = np.array([int(c) for c in d["topics"]], dtype=np.int64)
    return EmbeddingReference(
        dimensions=int(d["dimensions"]),
        projection=str(d["projection"]),
        seen=int(d["seen"]),
        center=_unarray(d["center"], "<f8", (width,)),
        scale=_unarray(d["scale"], "<f8", (width,)),
        codes=_unarray(d["codes"], "<f2", (n, width)),
        centroids=_unarray(d["centroids"], "<f8", (len(topics), width)),
        topics=topics,
    )


# --------------------------------------------------------------------------- encode


def encode_reference(
    reference: ReferenceSummary, *, basis: str, rebaseline: str | None
) -> tuple[bytes, str]:
    """The tabular reference alone: `encode_stored` without segments or embeddings."""
    encoded = encode_stored(reference, basis=basis, rebaseline=rebaseline)
    return encoded.data, encoded.digest


def encode_stored(
    reference: ReferenceSummary,
    *,
    basis: str,
    rebaseline: str | None,
    segments: Sequence[SegmentReference] = (),
    embeddings: Mapping[str, EmbeddingReference] | None = None,
    warming: Collection[str] = (),
    missing: Sequence[str] = (),
) -> EncodedReference:
    """The stored form (gzip'd JSON), its digest, and what was left out to fit.

    Over MAX_STORED_BYTES, parts are left out, the least valuable first: segments, the
    least frequent in the reference first (fewest reference records); then embedding
    features' references, the last declared first; then the multivariate sample. The
    tabular sketches are never left out: a reference still too large is refused
    (StoredReferenceError naming its largest columns). `missing`: what a restored reference
    stored again already lacked (its `left_out`), still listed.
    """
    embeddings = dict(embeddings or {})
    order = sorted(
        (
            (r.summaries[level].n, i, j, r.column, level)
            for i, r in enumerate(segments)
            for j, level in enumerate(r.judged)
        ),
    )
    by_size = [(column, level) for *_, column, level in order]
    names = list(embeddings)

    def attempt(n_segments: int, n_embeddings: int, multivariate: bool) -> EncodedReference:
        dropped = by_size[:n_segments]
        gone = names[len(names) - n_embeddings :] if n_embeddings else []
        left_out = [*missing, *(f"segment {segment_label(c, v)}" for c, v in dropped)]
        left_out += [f"embedding {name}" for name in gone]
        ref = reference
        if not multivariate and reference.multivariate is not None:
            ref = dataclasses.replace(reference, multivariate=None)
            left_out.append("multivariate sample")
        d = reference_to_dict(ref, basis=basis, rebaseline=rebaseline)
        d["segments"] = _segments_to_dict(segments, set(dropped))
        d["embeddings"] = {n: _embedding_to_dict(e) for n, e in embeddings.items() if n not in gone}
        d["embeddingsWarming"] = sorted(warming)
        d["leftOut"] = left_out
        text = _canonical(d)
        return EncodedReference(
            gzip.compress(text, mtime=0), hashlib.sha256(text).hexdigest(), tuple(left_out)
        )

    def fits(e: EncodedReference) -> bool:
        return len(e.data) <= MAX_STORED_BYTES

    full = attempt(0, 0, True)
    if fits(full):
        return full
    if by_size and fits(no_segments := attempt(len(by_size), 0, True)):
        # The fewest segments to leave out (the size falls as more are left out).
        low, high, best = 1, len(by_size), no_segments
        while low < high:
            mid = (low + high) // 2
            e = attempt(mid, 0, True)
            if fits(e):
                high, best = mid, e
            else:
                low = mid + 1
        return best  # attempt(low, 0, True)
    for k in range(1, len(names) + 1):
        if fits(e := attempt(len(by_size), k, True)):
            return e
    if reference.multivariate is not None and fits(e := attempt(len(by_size), len(names), False)):
        return e
    sizes = sorted(
        ((len(_canonical(_sketch_to_dict(s))), name) for name, s in reference.sketches.items()),
        reverse=True,
    )
    biggest = ", ".join(f"{name} ({size >> 10} KiB)" for size, name in sizes[:3])
    raise StoredReferenceError(
        f"the reference summary is {len(full.data) >> 10} KiB compressed, over the "
        f"{MAX_STORED_BYTES >> 10} KiB a ConfigMap can hold; largest columns: {biggest}. "
        "Fewer categories per column (high-cardinality ids are not features) keep it small"
    )


def decode_reference(data: bytes, *, where: str) -> StoredReference:
    """The reference from its stored form; StoredReferenceError naming `where` if unreadable."""
    try:
        text = gzip.decompress(data)
        d = json.loads(text)
    except (OSError, EOFError, ValueError) as exc:
        raise StoredReferenceError(f"{where}: not a stored reference ({exc})") from None
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        found = d.get("format") if isinstance(d, dict) else type(d).__name__
        raise StoredReferenceError(f"{where}: format {found!r}, expected {FORMAT!r}")
    try:
        columns = {
            str(n): Column(str(n), str(c["kind"]), str(c["type"])) for n, c in d["columns"].items()
        }
        sketches = {
            str(n): _sketch_from_dict(s, f"{where}: sketches.{n}") for n, s in d["sketches"].items()
        }
        if set(sketches) != set(columns):
            raise ValueError("the columns and the sketches name different columns")
        reference = ReferenceSummary(
            id=str(d["id"]),
            source=str(d["source"]),
            since=_unf(d["since"]),
            n=int(d["records"]),
            columns=columns,
            sketches=sketches,
            performance={str(k): _unf(v) for k, v in d["performance"].items()},
            performance_estimated=bool(d["performanceEstimated"]),
            # Absent from a reference stored before the multivariate check existed.
            multivariate=_sample_from_dict(d.get("multivariate"), where),
        )
        rebaseline = d["rebaseline"]
        # Absent from a reference stored before segment and embedding references were.
        segments = d.get("segments")
        embeddings = d.get("embeddings")
        parts = StoredParts(
            segments=None if segments is None else _segments_from_dict(segments, reference, where),
            embeddings=None
            if embeddings is None
            else {str(n): _embedding_from_dict(e) for n, e in embeddings.items()},
            warming=frozenset(str(n) for n in d.get("embeddingsWarming") or ()),
            left_out=tuple(str(x) for x in d.get("leftOut") or ()),
        )
        return StoredReference(
            reference=reference,
            basis=str(d["basis"]),
            rebaseline=None if rebaseline is None else str(rebaseline),
            digest=hashlib.sha256(text).hexdigest(),
            parts=parts,
        )
    except StoredReferenceError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise StoredReferenceError(f"{where}: {exc!r}") from None


def to_text(data: bytes) -> str:
    """Bytes as a ConfigMap binaryData value."""
    return base64.b64encode(data).decode()


def from_text(text: str, *, where: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except ValueError as exc:
        raise StoredReferenceError(f"{where}: not base64 ({exc})") from None


# --------------------------------------------------------------------------- reuse


@dataclass(frozen=True)
class ReuseDecision:
    reuse: bool
    reason: str


def reuse_decision(
    stored: StoredReference | None, *, basis: str, rebaseline: str | None
) -> ReuseDecision:
    """Whether a restarted detector takes the stored reference, and why (for status and logs)."""
    if stored is None:
        return ReuseDecision(False, "no stored reference: warming up")
    if rebaseline != stored.rebaseline:
        return ReuseDecision(
            False,
            f"rebaseline requested ({REBASELINE_ANNOTATION}: {rebaseline!r}, the stored "
            f"reference was built under {stored.rebaseline!r}): warming up a new reference",
        )
    if basis != stored.basis:
        return ReuseDecision(
            False,
            "spec.reference, spec.features or spec.prediction changed since the stored "
            "reference was built: warming up a new reference",
        )
    return ReuseDecision(True, f"reloaded the stored reference {stored.reference.id}")


# --------------------------------------------------------------------------- alert state


@dataclass(frozen=True)
class StoredAlerts:
    reference: str | None  # the id of the reference in force when the state was stored
    state: list[dict[str, Any]]  # AlertStateMachine.state()
    saved_at: str


def encode_alert_state(
    state: list[dict[str, Any]], *, reference: str | None, saved_at: str
) -> bytes:
    d = {"format": ALERTS_FORMAT, "reference": reference, "savedAt": saved_at, "tracks": state}
    return json.dumps(d, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def decode_alert_state(data: bytes, *, where: str) -> StoredAlerts:
    """The stored alert state; StoredReferenceError naming `where` if unreadable."""
    try:
        d = json.loads(data)
    except ValueError as exc:
        raise StoredReferenceError(f"{where}: not a stored alert state ({exc})") from None
    if not isinstance(d, dict) or d.get("format") != ALERTS_FORMAT:
        found = d.get("format") if isinstance(d, dict) else type(d).__name__
        raise StoredReferenceError(f"{where}: format {found!r}, expected {ALERTS_FORMAT!r}")
    tracks, reference = d.get("tracks"), d.get("reference")
    if not isinstance(tracks, list) or not all(isinstance(t, dict) for t in tracks):
        raise StoredReferenceError(f"{where}: tracks: expected a list of objects")
    return StoredAlerts(
        reference=None if reference is None else str(reference),
        state=tracks,
        saved_at=str(d.get("savedAt") or ""),
    )


def alerts_to_restore(
    stored: StoredAlerts, *, reference: str | None
) -> tuple[list[dict[str, Any]], str]:
    """The tracks a detector starting with `reference` in force takes back, and why."""
    if reference is not None and reference == stored.reference:
        return stored.state, f"restored the alert state stored at {stored.saved_at}"
    kept = [t for t in stored.state if t.get("type") in SLO_ALERT_TYPES]
    dropped = len(stored.state) - len(kept)
    return kept, (
        f"the alert state stored at {stored.saved_at} was judged against reference "
        f"{stored.reference!r}, not the one in force ({reference!r}): kept "
        f"{len(kept)} latency/error check(s), ended {dropped} judged against that reference"
    )
