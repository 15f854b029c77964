"""Ranking suspects: which node's change most likely caused the active alerts, and why.

Every node with a change in its timeline is scored against every active alert; a node's score
is that of its best (change, alert) pair:

    score(node) = max over changes c of the node, alerts a:   L(node, a) · T(c, a) · K(c, a)

Each factor is in [0, 1], so is the score, and a suspect needs all three: it feeds the value
that alarms, it changed shortly before, and that kind of change produces that kind of fault.

L — lineage, from the resource graph (graph.py). The alert's subject is its feature
    (FeatureDrift, DataQuality), the prediction (PredictionDrift: the target Deployment produces
    it), or the model itself (Latency, Errors, PerformanceDrop: the target). With h the hops
    upstream from a producer of the subject along dependsOn / mount / annotation edges:

        1.0          h = 0, the node produces the subject itself
        0.7 ** h     h ≥ 1 (0.7, 0.49, 0.34, ...)
        0.1          no known path: declared lineage is often incomplete, so an unrelated
                     change is not ruled out, but it can never be plausible on its own

T — time, with Δ = onset(a) − c.at (the alert's `since`, the first failing evaluation):

        0                                          Δ < 0: after the onset, cannot be the cause
        0.8 · 2^(−Δ / 30 min) + 0.2 · 2^(−Δ / 6 h)  0 ≤ Δ ≤ 24 h
        0                                          Δ > 24 h

    The fast term covers the usual case, a fault that shows within a window or two; the slow
    term keeps a change hours before a slowly filling window in view. Values: 0.95 at 3 min,
    0.80 at 12 min, 0.59 at 30 min, 0.21 at 2 h, 0.10 at 6 h, 0.01 at 24 h.

K — kind: how well the kind of change explains the kind of alert, from `KIND_WEIGHTS` (an
    upstream node) or `MODEL_KIND_WEIGHTS` (the target Deployment and the ConfigMaps/Secrets it
    mounts: the model's own code and configuration). Alert classes: drift (FeatureDrift),
    missing (DataQuality missing_rate), values (the other DataQuality tests), prediction
    (PredictionDrift while no input alert is active) and prediction+input (PredictionDrift
    alongside FeatureDrift/DataQuality), performance, latency, errors, other. The gist: a failed,
    overdue or missed run, or a crash loop, explains missing values (1.0, 0.9); an image or
    config change upstream explains drift in what it produces (1.0, 0.9); a rollout of the model
    (or an edit of its config) explains prediction drift without input drift and a performance
    drop (1.0, 0.9), but prediction drift *with* input drift only weakly (0.4), since the
    inputs already moved; a crash loop of the model explains errors (1.0); a routine run on
    schedule explains almost nothing (≤ 0.1).

Suspects are the nodes with score > 0, best first (ties: the change closest before its alert's
onset), at most `MAX_SUSPECTS`. A top score below `PLAUSIBLE_SCORE` (0.2) is no plausible cause:
the suspects stay listed, and the summary says so. Evidence states the facts with times relative
to the onset of the alert they explain, the lineage, further alerts and strong changes of the same
node, and the three factors of the score.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final, Literal, get_args

from mlwarden.diagnose.graph import ResourceGraph, build_graph
from mlwarden.diagnose.snapshot import ObjectKey, Snapshot
from mlwarden.diagnose.timeline import Change, build_timeline, relative_time
from mlwarden.react import revisions
from mlwarden.timestamps import format_time, parse_time

__all__ = [
    "HOP_DECAY",
    "KIND_WEIGHTS",
    "MAX_SUSPECTS",
    "MODEL_KIND_WEIGHTS",
    "NO_LINEAGE",
    "PLAUSIBLE_SCORE",
    "AlertClass",
    "Diagnosis",
    "Suspect",
    "alert_class",
    "diagnose",
    "kind_weight",
    "lineage_weight",
    "rank_suspects",
    "time_weight",
]

HOP_DECAY: Final = 0.7
NO_LINEAGE: Final = 0.1
FAST_HALF_LIFE: Final = timedelta(minutes=30)
SLOW_HALF_LIFE: Final = timedelta(hours=6)
SLOW_SHARE: Final = 0.2
HORIZON: Final = timedelta(hours=24)
PLAUSIBLE_SCORE: Final = 0.2
MAX_SUSPECTS: Final = 5

AlertClass = Literal[
    "drift",
    "missing",
    "values",
    "prediction",
    "prediction+input",
    "performance",
    "latency",
    "errors",
    "other",
]
_CLASSES: Final[tuple[AlertClass, ...]] = get_args(AlertClass)
_INPUT_ALERTS: Final = ("FeatureDrift", "DataQuality")


def _table(rows: Mapping[str, tuple[float, ...]]) -> dict[str, dict[AlertClass, float]]:
    out: dict[str, dict[AlertClass, float]] = {}
    for kind, weights in rows.items():
        assert len(weights) == len(_CLASSES), kind
        out[kind] = dict(zip(_CLASSES, weights, strict=True))
    return out


# fmt: off
#                               drift missing values pred  pred+in perf  lat   errors other
KIND_WEIGHTS: Final = _table({
    "created":                  (0.8,  0.6,   0.8,   0.4,  0.3,    0.5,  0.3,  0.3,   0.4),
    "image":                    (1.0,  0.6,   0.9,   0.5,  0.3,    0.6,  0.3,  0.4,   0.5),
    "template":                 (0.8,  0.6,   0.8,   0.4,  0.3,    0.5,  0.3,  0.4,   0.4),
    "rollout":                  (0.7,  0.5,   0.7,   0.4,  0.3,    0.5,  0.3,  0.4,   0.4),
    "restart":                  (0.1,  0.2,   0.1,   0.1,  0.05,   0.1,  0.1,  0.2,   0.1),
    "sidecar":                  (0.05, 0.05,  0.05,  0.05, 0.05,   0.05, 0.05, 0.05,  0.05),
    "config_edit":              (0.9,  0.6,   0.9,   0.5,  0.3,    0.6,  0.3,  0.4,   0.5),
    "config_created":           (0.5,  0.4,   0.5,   0.3,  0.2,    0.3,  0.2,  0.3,   0.3),
    "job_failed":               (0.6,  1.0,   0.5,   0.4,  0.3,    0.5,  0.1,  0.3,   0.4),
    "job_late":                 (0.6,  0.9,   0.4,   0.3,  0.2,    0.4,  0.1,  0.2,   0.3),
    "schedule_missed":          (0.6,  0.9,   0.4,   0.3,  0.2,    0.4,  0.1,  0.2,   0.3),
    "first_run":                (0.8,  0.6,   0.8,   0.4,  0.3,    0.5,  0.1,  0.2,   0.4),
    "job_completed":            (0.5,  0.3,   0.5,   0.3,  0.2,    0.3,  0.1,  0.1,   0.3),
    "routine_run":              (0.1,  0.05,  0.1,   0.05, 0.05,   0.05, 0.02, 0.02,  0.05),
    "crash_loop":               (0.4,  1.0,   0.5,   0.3,  0.2,    0.4,  0.5,  0.7,   0.5),
    "restarts":                 (0.2,  0.5,   0.2,   0.1,  0.1,    0.2,  0.3,  0.4,   0.2),
    "upstream_alert":           (0.9,  0.6,   0.8,   0.5,  0.3,    0.6,  0.2,  0.2,   0.5),
})
# The target Deployment and what it mounts; kinds not listed fall back to KIND_WEIGHTS.
MODEL_KIND_WEIGHTS: Final = _table({
    "created":                  (0.05, 0.2,   0.2,   1.0,  0.4,    1.0,  0.9,  0.9,   0.6),
    "image":                    (0.05, 0.2,   0.3,   1.0,  0.4,    1.0,  0.9,  0.9,   0.6),
    "template":                 (0.05, 0.2,   0.3,   0.9,  0.4,    0.9,  0.8,  0.8,   0.5),
    "rollout":                  (0.05, 0.2,   0.3,   0.9,  0.4,    0.9,  0.8,  0.8,   0.5),
    "restart":                  (0.05, 0.1,   0.1,   0.2,  0.1,    0.2,  0.4,  0.4,   0.2),
    "sidecar":                  (0.05, 0.3,   0.2,   0.1,  0.05,   0.1,  0.5,  0.5,   0.2),
    "config_edit":              (0.05, 0.2,   0.3,   0.9,  0.4,    0.9,  0.6,  0.7,   0.5),
    "config_created":           (0.05, 0.1,   0.2,   0.5,  0.2,    0.5,  0.3,  0.4,   0.3),
    "crash_loop":               (0.05, 0.4,   0.1,   0.3,  0.2,    0.4,  0.8,  1.0,   0.5),
    "restarts":                 (0.05, 0.2,   0.1,   0.1,  0.1,    0.2,  0.6,  0.7,   0.3),
})
# fmt: on


# --------------------------------------------------------------------------- the factors


def alert_class(alert: Mapping[str, Any], *, input_alerts: bool) -> AlertClass:
    """The kind table's column for an alert (input_alerts: FeatureDrift or DataQuality active)."""
    kind = alert.get("type")
    if kind == "FeatureDrift":
        return "drift"
    if kind == "DataQuality":
        return "missing" if alert.get("test") == "missing_rate" else "values"
    if kind == "PredictionDrift":
        return "prediction+input" if input_alerts else "prediction"
    if kind == "CanaryRegression":
        return "prediction"  # a candidate answering worse than the baseline
    model_level: dict[str, AlertClass] = {
        "PerformanceDrop": "performance",
        "Latency": "latency",
        "Errors": "errors",
    }
    return model_level.get(str(kind), "other")


def lineage_weight(hops: int | None) -> float:
    """L: 1 for a producer, HOP_DECAY per hop upstream, NO_LINEAGE without a path."""
    return NO_LINEAGE if hops is None else HOP_DECAY**hops


def time_weight(changed: datetime, onset: datetime) -> float:
    """T: 0 after the onset or beyond HORIZON; two half-lives (fast and slow) in between."""
    delta = (onset - changed).total_seconds()
    if delta < 0 or delta > HORIZON.total_seconds():
        return 0.0
    fast = math.pow(2.0, -delta / FAST_HALF_LIFE.total_seconds())
    slow = math.pow(2.0, -delta / SLOW_HALF_LIFE.total_seconds())
    return (1 - SLOW_SHARE) * fast + SLOW_SHARE * slow


def kind_weight(change_kind: str, klass: AlertClass, *, model_side: bool) -> float:
    """K: the table's entry for this change kind and alert class."""
    row = MODEL_KIND_WEIGHTS.get(change_kind) if model_side else None
    if row is None:
        row = KIND_WEIGHTS.get(change_kind)
    return row[klass] if row is not None else 0.0


# --------------------------------------------------------------------------- results


@dataclass(frozen=True, kw_only=True)
class Suspect:
    """A node that may have caused the alerts: its score and the evidence, in words."""

    kind: str
    name: str
    score: float
    evidence: tuple[str, ...]
    revision: str | None = None
    changed_at: str | None = None

    @property
    def label(self) -> str:
        return f"{self.kind}/{self.name}"

    def to_dict(self) -> dict[str, Any]:
        """The shape of `status.diagnosis.suspects[]`."""
        out: dict[str, Any] = {
            "kind": self.kind,
            "name": self.name,
            "score": round(self.score, 3),
            "evidence": list(self.evidence),
        }
        if self.revision is not None:
            out["revision"] = self.revision
        if self.changed_at is not None:
            out["changedAt"] = self.changed_at
        return out


@dataclass(frozen=True, kw_only=True)
class Diagnosis:
    """The ranked suspects (best first), a one-line summary for the Event, and the onset."""

    suspects: tuple[Suspect, ...]
    summary: str
    onset: str | None
    updated: str
    problems: tuple[str, ...] = ()

    @property
    def top(self) -> Suspect | None:
        """The first suspect when it is a plausible cause (score ≥ PLAUSIBLE_SCORE), else None."""
        if self.suspects and self.suspects[0].score >= PLAUSIBLE_SCORE:
            return self.suspects[0]
        return None

    def to_status(self) -> dict[str, Any]:
        """`status.diagnosis`: {suspects, onset, updated}."""
        return {
            "suspects": [s.to_dict() for s in self.suspects],
            "onset": self.onset,
            "updated": self.updated,
        }


# --------------------------------------------------------------------------- ranking


@dataclass(frozen=True)
class _Alert:
    raw: Mapping[str, Any]
    onset: datetime
    klass: AlertClass
    subject: str
    paths: Mapping[ObjectKey, tuple[ObjectKey, ...]]
    produced: bool  # some node is known to produce the subject


@dataclass(frozen=True)
class _Pair:
    score: float
    change: Change
    alert: _Alert
    lineage: float
    time: float
    kind: float


def _p(value: Any) -> str:
    return f"{value:.2g}" if isinstance(value, int | float) else str(value)


def describe_alert(alert: Mapping[str, Any]) -> str:
    """ "FeatureDrift, ks p=1.2e-09" or "DataQuality missing_rate 0.31 > 0.05"."""
    kind, test = alert.get("type", "alert"), alert.get("test")
    if isinstance(alert.get("pValue"), int | float):
        return f"{kind}, {test} p={_p(alert['pValue'])}"
    statistic, threshold = alert.get("statistic"), alert.get("threshold")
    if isinstance(statistic, int | float) and isinstance(threshold, int | float):
        return f"{kind} {test} {statistic:.3g} > {threshold:.3g}"
    return f"{kind} {test}" if test else str(kind)


def _alerts(snapshot: Snapshot, graph: ResourceGraph) -> list[_Alert]:
    raws = [a for a in snapshot.alerts if isinstance(a, Mapping)]
    input_alerts = any(a.get("type") in _INPUT_ALERTS for a in raws)
    feature_producers = [k for k, n in graph.nodes.items() if set(n.produces) - {graph.prediction}]
    out: list[_Alert] = []
    for raw in raws:
        kind = raw.get("type")
        feature = raw.get("feature")
        starts: list[ObjectKey]
        if kind == "PredictionDrift":
            subject = str(feature or graph.prediction or "the prediction")
            starts = [graph.target, *graph.producers(subject)]
        elif kind == "CanaryRegression":
            # The candidate revision is the suspect's own: start from the workload whose
            # history carries it (its ReplicaSet, ControllerRevision or KServe endpoint),
            # else from the model's side.
            revision = str(raw.get("modelRevision") or "")
            subject = f"candidate revision {revision}" if revision else "the canary"
            owner = _revision_owner(snapshot, revision)
            starts = [owner] if owner is not None and owner in graph.nodes else [graph.target]
        elif kind not in _INPUT_ALERTS:  # Latency, Errors, PerformanceDrop (and unknown types)
            subject, starts = "the model", [graph.target]
        elif isinstance(feature, str) and feature:
            subject, starts = feature, list(graph.producers(feature))
        else:
            subject, starts = "the request schema", feature_producers
        out.append(
            _Alert(
                raw=raw,
                onset=parse_time(raw.get("since")) or snapshot.now,
                klass=alert_class(raw, input_alerts=input_alerts),
                subject=subject,
                paths=graph.upstream(starts),
                produced=bool(starts),
            )
        )
    return out


def _revision_owner(snapshot: Snapshot, revision: str) -> ObjectKey | None:
    """The workload serving `revision`, through the one resolution the reactions use
    (`react.revisions.owner_of`): a Deployment's or Rollout's ReplicaSet, a StatefulSet's
    ControllerRevision (controller-revision-hash), an InferenceService's default or canary."""
    lists = {kind: snapshot.of_kind(kind) for kind in revisions.HISTORY_KINDS}
    return revisions.owner_of(revision, lists, model=snapshot.model)


def _lineage_text(graph: ResourceGraph, key: ObjectKey, alert: _Alert) -> str:
    what = f"({describe_alert(alert.raw)})"
    path = alert.paths.get(key)
    if path is None:
        return f"no known lineage to {alert.subject} {what}"
    if len(path) == 1:
        if alert.raw.get("type") == "CanaryRegression":
            return f"serves {alert.subject} {what}"
        if alert.subject == "the model":
            return f"is the model's Deployment {what}"
        return f"produces {alert.subject} {what}"
    hops = len(path) - 1
    via = " → ".join(graph.nodes[k].name for k in reversed(path[:-1]))
    return f"{hops} hop{'s' if hops > 1 else ''} upstream of {alert.subject} via {via} {what}"


def _pair(graph: ResourceGraph, key: ObjectKey, change: Change, alert: _Alert) -> _Pair:
    path = alert.paths.get(key)
    lineage = lineage_weight(None if path is None else len(path) - 1)
    time = time_weight(change.at, alert.onset)
    kind = kind_weight(change.kind, alert.klass, model_side=graph.is_model_side(key))
    return _Pair(lineage * time * kind, change, alert, lineage, time, kind)


def _sort_key(pair: _Pair) -> tuple[float, float]:
    # Best score first; on a tie, the change closest before the onset.
    return (-pair.score, (pair.alert.onset - pair.change.at).total_seconds())


def _onset_label(alert: _Alert, earliest: datetime) -> str:
    """ "onset" for the diagnosis' onset; "onset of PredictionDrift" for a later alert's own."""
    if alert.onset == earliest:
        return "onset"
    feature = alert.raw.get("feature")
    return f"onset of {alert.raw.get('type', 'alert')}" + (f" on {feature}" if feature else "")


def _suspect(
    graph: ResourceGraph, key: ObjectKey, pairs: list[_Pair], earliest: datetime
) -> tuple[Suspect, _Pair]:
    pairs = sorted(pairs, key=_sort_key)
    best = pairs[0]
    evidence = [
        best.change.describe(reference=best.alert.onset, label=_onset_label(best.alert, earliest)),
        _lineage_text(graph, key, best.alert),
    ]
    seen_alerts = {id(best.alert)}
    seen_changes = {id(best.change)}
    extra_alerts: list[str] = []
    extra_changes: list[str] = []
    for pair in pairs[1:]:
        if id(pair.alert) not in seen_alerts and pair.alert.paths.get(key) is not None:
            seen_alerts.add(id(pair.alert))
            extra_alerts.append("also " + _lineage_text(graph, key, pair.alert))
        if id(pair.change) not in seen_changes and pair.change.strong:
            seen_changes.add(id(pair.change))
            described = pair.change.describe(
                reference=pair.alert.onset, label=_onset_label(pair.alert, earliest)
            )
            extra_changes.append("also " + described)
    evidence += extra_alerts[:2] + extra_changes[:2]
    evidence.append(
        f"score {best.score:.2f} = lineage {best.lineage:.2g} × time {best.time:.2g} × kind "
        f"{best.kind:.2g} ({best.change.kind} vs {best.alert.klass})"
    )
    suspect = Suspect(
        kind=key[0],
        name=key[1],
        score=min(max(best.score, 0.0), 1.0),
        evidence=tuple(evidence),
        revision=best.change.revision,
        changed_at=format_time(best.change.at),
    )
    return suspect, best


def rank_suspects(
    snapshot: Snapshot,
    graph: ResourceGraph,
    timeline: Mapping[ObjectKey, Sequence[Change]],
) -> Diagnosis:
    """Score every changed node against the active alerts (see the module docstring)."""
    updated = format_time(snapshot.now)
    alerts = _alerts(snapshot, graph)
    if not alerts:
        return Diagnosis(
            suspects=(),
            summary="no active alerts",
            onset=None,
            updated=updated,
            problems=graph.problems,
        )
    earliest = min(alerts, key=lambda a: a.onset)
    onset = earliest.raw.get("since")
    ranked: list[tuple[Suspect, _Pair]] = []
    for key, changes in timeline.items():
        pairs = [_pair(graph, key, c, a) for c in changes for a in alerts]
        pairs = [p for p in pairs if round(p.score, 3) > 0]
        if pairs:
            ranked.append(_suspect(graph, key, pairs, earliest.onset))
    ranked.sort(key=lambda sp: (*_sort_key(sp[1]), sp[0].label))
    suspects = tuple(s for s, _ in ranked[:MAX_SUSPECTS])
    if ranked and ranked[0][0].score >= PLAUSIBLE_SCORE:
        top, pair = ranked[0]
        when = relative_time(
            pair.change.at, pair.alert.onset, label=_onset_label(pair.alert, earliest.onset)
        )
        headline = f"{pair.change.what} {when}"
        summary = (
            f"top suspect {top.label} ({top.score:.2f}): {headline}; "
            f"{_lineage_text(graph, (top.kind, top.name), pair.alert)}"
        )
    else:
        reasons = []
        if ranked:
            best = ranked[0][0]
            reasons.append(f"best {best.label} scores {best.score:.2f} < {PLAUSIBLE_SCORE}")
        else:
            reasons.append("no node of the graph changed in the 24h before onset")
        unknown = sorted({a.subject for a in alerts if not a.produced})
        if unknown:
            reasons.append(f"nothing is known to produce {', '.join(unknown)}")
        summary = "no plausible cause: " + "; ".join(reasons)
    return Diagnosis(
        suspects=suspects,
        summary=summary,
        onset=onset if isinstance(onset, str) else format_time(earliest.onset),
        updated=updated,
        problems=graph.problems,
    )


def diagnose(snapshot: Snapshot) -> Diagnosis:
    """The whole diagnosis of a snapshot: graph, timeline, ranking."""
    graph = build_graph(snapshot)
    return rank_suspects(snapshot, graph, build_timeline(snapshot, graph))
