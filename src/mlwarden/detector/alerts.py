"""Alerts: the public shape, and the state machine that decides when one fires or resolves.

The shape is what `GET /v1/status` serves and what the operator copies into the
ObservedModel's `status.alerts`, so `kubectl describe om` shows exactly this:

    {type, feature?, test, statistic, pValue?, threshold, since, modelRevision?, reference}

Hysteresis: a check must fail `fire_after` consecutive evaluations before its
alert fires, and pass `resolve_after` consecutive evaluations before it
resolves. One noisy evaluation neither raises nor clears an alert. The false
alarm rate this gives on stationary traffic is measured in
`tests/unit/detector/test_alerts.py` and documented in docs/detector.md.

Pure: no clock (callers pass `now`), no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from mlwarden.records import finite_or_none
from mlwarden.spec import ALERT_TYPES

__all__ = ["ALERT_TYPES", "Alert", "AlertStateMachine", "Evidence", "Transition"]


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

    @property
    def key(self) -> tuple[str, str | None, str]:
        """One alert per (type, feature, test): drift on two features is two alerts."""
        return (self.type, self.feature, self.test)


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

    def to_dict(self) -> dict[str, Any]:
        """The public shape (camelCase, optional fields only when known)."""
        out: dict[str, Any] = {"type": self.type}
        if self.feature is not None:
            out["feature"] = self.feature
        out["test"] = self.test
        out["statistic"] = finite_or_none(self.statistic)
        if self.p_value is not None:
            out["pValue"] = finite_or_none(self.p_value)
        out["threshold"] = finite_or_none(self.threshold)
        out["since"] = self.since
        if self.model_revision is not None:
            out["modelRevision"] = self.model_revision
        out["reference"] = self.reference
        if self.message:
            out["message"] = self.message
        return out


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
    ) -> list[Transition]:
        """Feed one evaluation's results; return the alerts that fired or resolved.

        A check absent from `evidence` (not evaluated this time, e.g. too little data)
        keeps its state: absence of evidence is not a pass.
        """
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
                    model_revision=model_revision,
                    message=ev.message,
                )
                if track.active is not None:
                    track.active = alert  # refresh the figures, keep it active
                elif track.failing_streak >= self.fire_after:
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
        return [
            t.active
            for key, t in sorted(self._tracks.items(), key=lambda kv: _sort_key(kv[0]))
            if t.active is not None
        ]

    def pending(self) -> int:
        """Checks failing but not (yet) alerting: a hint that something is building up."""
        return sum(1 for t in self._tracks.values() if t.failing_streak and t.active is None)


def _sort_key(key: tuple[str, str | None, str]) -> tuple[str, str, str]:
    return (key[0], key[1] or "", key[2])
