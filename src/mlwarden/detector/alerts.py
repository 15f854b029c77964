"""Alerts: the public shape, and the state machine that decides when one fires or resolves.

The shape is what `GET /v1/status` serves and what the operator copies into the
ObservedModel's `status.alerts`, so `kubectl describe om` shows exactly this:

    {type, feature?, segment?, test, statistic, pValue?, threshold, since, modelRevision?,
     baselineRevision?, evidence?, features?, reference}

`CanaryRegression` alerts (one per candidate revision: its key carries the candidate in the
place of the feature) add `baselineRevision` and `evidence`, the per-signal findings.
`MultivariateDrift` alerts add `features`, the features contributing most ({feature, share}).
A check run on one segment of the traffic (`spec.segments`, detector/segments.py) names it,
`segment: {country: BR}`, and is tracked apart from the same check on all traffic.

Hysteresis: a check must fail `fire_after` consecutive evaluations before its
alert fires, and pass `resolve_after` consecutive evaluations before it
resolves. One noisy evaluation neither raises nor clears an alert. The false
alarm rate this gives on stationary traffic is measured in
`tests/unit/detector/test_alerts.py` and documented in docs/detector.md.

The machine's state survives a restart (`state` / `restore`, stored next to the reference by
the detector service): a restarted detector reports an alert that was active with the same
`since`, and a check that was failing keeps its onset, so the operator sees the same incident
and does not act on it twice.

Pure: no clock (callers pass `now`), no I/O.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from mlwarden.records import finite_or_none
from mlwarden.spec import ALERT_TYPES

__all__ = ["ALERT_TYPES", "Alert", "AlertStateMachine", "Evidence", "Transition", "segment_test"]


@dataclass(frozen=True)
class Evidence:
    """What one evaluation of one check found: enough to fill an alert."""

    type: str
    test: str
    statistic: float
    threshold: float
    failing: bool
    feature: str | None = None
    p_value: float | None = None
    message: str = ""
    # The revision it concerns (None: the caller's default, the all-traffic window's
    # largest); a canary finding also names its baseline and the per-signal evidence.
    model_revision: str | None = None
    baseline_revision: str | None = None
    details: tuple[Mapping[str, Any], ...] = ()
    features: tuple[Mapping[str, Any], ...] = ()  # MultivariateDrift: {feature, share}
    # The segment it was judged on, (column, value); None: all traffic.
    segment: tuple[str, str] | None = None

    @functools.cached_property
    def key(self) -> tuple[str, str | None, str]:
        """One alert per (type, feature, test): drift on two features is two alerts.

        A CanaryRegression has no feature; one alert per candidate revision, so the
        candidate takes the feature's place in the key. A segment's check is a track of its
        own: the segment joins the test in the key (`ks@country=BR`).
        """
        if self.type == "CanaryRegression":
            return (self.type, self.model_revision, self.test)
        return (self.type, self.feature, segment_test(self.test, self.segment))


def segment_test(test: str, segment: tuple[str, str] | None) -> str:
    """The test's place in an alert's key: the test, and the segment when there is one."""
    return test if segment is None else f"{test}@{segment[0]}={segment[1]}"


@dataclass(frozen=True)
class Alert:
    type: str
    test: str
    statistic: float
    threshold: float
    since: str
    reference: str
    feature: str | None = None
    p_value: float | None = None
    model_revision: str | None = None
    message: str = ""
    baseline_revision: str | None = None
    evidence: tuple[Mapping[str, Any], ...] = ()
    features: tuple[Mapping[str, Any], ...] = ()
    segment: tuple[str, str] | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Alert:
        """The inverse of `to_dict` (a non-finite figure, written as null, comes back NaN)."""

        def number(key: str) -> float:
            value = d.get(key)
            return math.nan if value is None else float(value)

        return cls(
            type=str(d["type"]),
            test=str(d["test"]),
            statistic=number("statistic"),
            threshold=number("threshold"),
            since=str(d["since"]),
            reference=str(d["reference"]),
            feature=None if d.get("feature") is None else str(d["feature"]),
            p_value=None if "pValue" not in d else number("pValue"),
            model_revision=None if d.get("modelRevision") is None else str(d["modelRevision"]),
            message=str(d.get("message") or ""),
            baseline_revision=(
                None if d.get("baselineRevision") is None else str(d["baselineRevision"])
            ),
            evidence=tuple(dict(e) for e in d.get("evidence") or ()),
            features=tuple(dict(e) for e in d.get("features") or ()),
            segment=_segment_from(d.get("segment")),
        )

    def not_judged(self, message: str) -> Evidence:
        """A passing finding for this alert's check, which nothing judges any more (its
        reference was not restored after a restart): it resolves after `resolveAfter`
        evaluations instead of staying active with nothing to judge it."""
        return Evidence(
            type=self.type,
            test=self.test,
            statistic=0.0,
            threshold=self.threshold,
            failing=False,
            feature=self.feature,
            message=message,
            segment=self.segment,
        )

    def to_dict(self) -> dict[str, Any]:
        """The public shape (camelCase, optional fields only when known)."""
        out: dict[str, Any] = {"type": self.type}
        if self.feature is not None:
            out["feature"] = self.feature
        if self.segment is not None:
            out["segment"] = {self.segment[0]: self.segment[1]}
        out["test"] = self.test
        out["statistic"] = finite_or_none(self.statistic)
        if self.p_value is not None:
            out["pValue"] = finite_or_none(self.p_value)
        out["threshold"] = finite_or_none(self.threshold)
        out["since"] = self.since
        if self.model_revision is not None:
            out["modelRevision"] = self.model_revision
        if self.baseline_revision is not None:
            out["baselineRevision"] = self.baseline_revision
        if self.evidence:
            out["evidence"] = [dict(e) for e in self.evidence]
        if self.features:
            out["features"] = [dict(e) for e in self.features]
        out["reference"] = self.reference
        if self.message:
            out["message"] = self.message
        return out


def _segment_from(value: Any) -> tuple[str, str] | None:
    """`segment: {column: value}` of an alert's public shape, back as (column, value)."""
    if not value:
        return None
    ((column, level),) = dict(value).items()
    return (str(column), str(level))


@dataclass(frozen=True)
class Transition:
    """An alert that changed state in this evaluation."""

    kind: Literal["fired", "resolved"]
    alert: Alert


@dataclass
class _Track:
    failing_streak: int = 0
    passing_streak: int = 0
    first_failing_at: str | None = None
    active: Alert | None = None


@dataclass
class AlertStateMachine:
    fire_after: int = 3
    resolve_after: int = 3
    _tracks: dict[tuple[str, str | None, str], _Track] = field(default_factory=dict)

    def observe(
        self,
        evidence: list[Evidence],
        *,
        now: str,
        reference: str,
        model_revision: str | None = None,
        fire_after: int | None = None,
    ) -> list[Transition]:
        """Feed one evaluation's results; return the alerts that fired or resolved.

        A check absent from `evidence` (not evaluated this time, e.g. too little data)
        keeps its state: absence of evidence is not a pass. `fire_after` overrides the
        machine's for this evidence (sequential drift decisions fire at once: their
        false-alarm rate is set per record, not by counting failing evaluations).
        """
        fire = self.fire_after if fire_after is None else fire_after
        transitions: list[Transition] = []
        for ev in evidence:
            track = self._tracks.setdefault(ev.key, _Track())
            if ev.failing:
                track.failing_streak += 1
                track.passing_streak = 0
                if track.first_failing_at is None:
                    track.first_failing_at = now
                alert = Alert(
                    type=ev.type,
                    test=ev.test,
                    statistic=ev.statistic,
                    threshold=ev.threshold,
                    # Onset is the first failing evaluation of the streak, not the firing:
                    # diagnosis looks for changes just before the fault began.
                    since=track.first_failing_at,
                    reference=reference,
                    feature=ev.feature,
                    p_value=ev.p_value,
                    model_revision=ev.model_revision or model_revision,
                    message=ev.message,
                    baseline_revision=ev.baseline_revision,
                    evidence=ev.details,
                    features=ev.features,
                    segment=ev.segment,
                )
                if track.active is not None:
                    track.active = alert  # refresh the figures, keep it active
                elif track.failing_streak >= fire:
                    track.active = alert
                    transitions.append(Transition("fired", alert))
            else:
                track.passing_streak += 1
                track.failing_streak = 0
                if track.active is None:
                    track.first_failing_at = None
                elif track.passing_streak >= self.resolve_after:
                    transitions.append(Transition("resolved", track.active))
                    track.active = None
                    track.first_failing_at = None
        return transitions

    @property
    def active(self) -> list[Alert]:
        """Active alerts, in a stable order (type, feature, test)."""
        alerting = [(key, t.active) for key, t in self._tracks.items() if t.active is not None]
        return [alert for _, alert in sorted(alerting, key=lambda kv: _sort_key(kv[0]))]

    def state(self) -> list[dict[str, Any]]:
        """Every check with something to remember (a streak, an onset, an active alert)."""
        out: list[dict[str, Any]] = []
        for key, t in sorted(self._tracks.items(), key=lambda kv: _sort_key(kv[0])):
            if t.active is None and t.first_failing_at is None and not t.failing_streak:
                continue  # passing and quiet: the same as never seen
            out.append(
                {
                    "type": key[0],
                    "feature": key[1],
                    "test": key[2],
                    "failingStreak": t.failing_streak,
                    "passingStreak": t.passing_streak,
                    "firstFailingAt": t.first_failing_at,
                    "active": t.active.to_dict() if t.active is not None else None,
                }
            )
        return out

    def restore(self, state: Sequence[Mapping[str, Any]]) -> None:
        """Take back what `state` returned (the tracks it names replace these ones).

        Raises KeyError, TypeError or ValueError on an entry that is not one of `state`'s.
        """
        tracks: dict[tuple[str, str | None, str], _Track] = {}
        for entry in state:
            feature = None if entry["feature"] is None else str(entry["feature"])
            key = (str(entry["type"]), feature, str(entry["test"]))
            onset = entry["firstFailingAt"]
            active = entry["active"]
            tracks[key] = _Track(
                failing_streak=int(entry["failingStreak"]),
                passing_streak=int(entry["passingStreak"]),
                first_failing_at=None if onset is None else str(onset),
                active=None if active is None else Alert.from_dict(active),
            )
        self._tracks.update(tracks)

    def onsets(self) -> tuple[tuple[tuple[str, str | None, str], str, bool], ...]:
        """What a restart must not change: each failing check's onset, and whether it alerts.

        Streak counts are left out: they move at every evaluation, and a restored alert whose
        count is a little behind still has its identity.
        """
        return tuple(
            (key, t.first_failing_at, t.active is not None)
            for key, t in sorted(self._tracks.items(), key=lambda kv: _sort_key(kv[0]))
            if t.first_failing_at is not None
        )

    def pending(self) -> int:
        """Checks failing but not (yet) alerting: a hint that something is building up."""
        return sum(1 for t in self._tracks.values() if t.failing_streak and t.active is None)


def _sort_key(key: tuple[str, str | None, str]) -> tuple[str, str, str]:
    return (key[0], key[1] or "", key[2])
