"""An ObservedModel's status from what the operator observed: phase, conditions, events.

Pure: the handlers gather an `Observation` (spec valid? targets there? sidecar
injected? detector ready? reference built? which alerts?) and this module
decides what `kubectl get om` and `kubectl describe om` should say.

Phases, in order of precedence:

    Failed     the spec is invalid, or injection cannot work (the reason says why), or
               the sidecar was removed again and again and the operator stopped putting it
               back (injection state "bypassed"), or an object of one of the detector's names
               belongs to somebody else (NameConflict)
    Pending    targets missing, sidecar being injected, detector not available yet
    Reacting   a reaction is in progress (the reaction issue)
    Degraded   at least one alert is active
    WarmingUp  the detector is collecting its reference
    Observing  reference in force, no alerts

Conditions: Ready, Drifting, DataQualityDegraded, Reacting, Bypassed, and Promotable (a
candidate revision passed the detector's canary analysis, `status.detector.revisions[].canary
.verdict` Pass; mlwarden reports it and never promotes).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mlwarden.spec import MAX_STATUS_CONDITIONS

DRIFT_TYPES = ("FeatureDrift", "PredictionDrift")


@dataclass(frozen=True)
class Observation:
    generation: int | None = None
    spec_error: str | None = None
    target_missing: str | None = None
    # injected | injecting | waiting-for-rollout | awaiting-approval | error | stalled (the
    # rollout with the sidecar exceeded its progress deadline and the injection was undone)
    # | bypassed (the operator stopped re-injecting)
    # | conflict (our names are taken)
    injection_state: str = "pending"
    injection_message: str = ""
    injection_reason: str | None = None  # with "error": why (InjectionFailed by default)
    # Traffic no longer passes the sidecar (traffic.assess): (reason, message).
    bypass: tuple[str, str] | None = None
    detector_available: bool = False
    reference_id: str | None = None
    alerts: Sequence[dict[str, Any]] = field(default_factory=tuple)
    reacting: bool = False
    top_suspect: str | None = None
    last_action: str | None = None
    # Candidates whose canary verdict is Pass, in words ("revision 8 (fraud:1.5)"): reported
    # as promotable, never promoted.
    promotable: tuple[str, ...] = ()
    # status.target, what spec.target resolved to (operator/targets.py); None: not written.
    target: Mapping[str, Any] | None = None


def phase(obs: Observation) -> tuple[str, str]:
    """(phase, one-line reason)."""
    if obs.spec_error is not None:
        return "Failed", f"invalid spec: {obs.spec_error}"
    if obs.injection_state in ("error", "bypassed", "stalled", "conflict"):
        return "Failed", obs.injection_message
    if obs.target_missing is not None:
        return "Pending", obs.target_missing
    if obs.injection_state != "injected":
        return "Pending", obs.injection_message or "injecting the sidecar"
    if not obs.detector_available:
        return "Pending", "waiting for the detector to become available"
    if obs.reacting:
        return "Reacting", "a reaction is in progress"
    if obs.alerts:
        kinds = sorted({a.get("type", "?") for a in obs.alerts})
        return "Degraded", f"{len(obs.alerts)} active alert(s): {', '.join(kinds)}"
    if obs.reference_id is None:
        return "WarmingUp", "the detector is collecting its reference"
    return "Observing", f"reference {obs.reference_id} in force, no alerts"


def _alerts_of(obs: Observation, types: Sequence[str]) -> list[dict[str, Any]]:
    return [a for a in obs.alerts if a.get("type") in types]


def _describe(alerts: Sequence[dict[str, Any]]) -> str:
    parts = []
    for a in alerts[:5]:
        what = f"{a.get('type')} on {a['feature']}" if a.get("feature") else str(a.get("type"))
        parts.append(f"{what} ({a.get('test')})")
    more = f" and {len(alerts) - 5} more" if len(alerts) > 5 else ""
    return "; ".join(parts) + more


def desired_conditions(obs: Observation) -> list[dict[str, Any]]:
    """Conditions without times: (type, status, reason, message)."""
    ph, why = phase(obs)
    ready = ph not in ("Failed", "Pending")
    if obs.spec_error is not None:
        ready_reason = "InvalidSpec"
    elif obs.injection_state == "error":
        ready_reason = obs.injection_reason or "InjectionFailed"
    elif obs.injection_state == "bypassed":
        ready_reason = "Bypassed"
    elif obs.injection_state == "stalled":
        ready_reason = "RolloutStalled"
    elif obs.injection_state == "conflict":
        ready_reason = "NameConflict"
    elif obs.target_missing is not None:
        ready_reason = "TargetNotFound"
    elif obs.injection_state == "awaiting-approval":
        ready_reason = "AwaitingApproval"
    elif obs.injection_state != "injected":
        ready_reason = "Injecting"
    elif not obs.detector_available:
        ready_reason = "DetectorUnavailable"
    else:
        ready_reason = "Observing" if obs.reference_id else "WarmingUp"
    if obs.bypass is not None:
        bypass_reason, bypass_message = obs.bypass
    elif obs.injection_state == "injected":
        bypass_reason, bypass_message = "ThroughSidecar", "traffic passes the sidecar"
    else:
        bypass_reason, bypass_message = "NotInjected", "the sidecar is not injected yet"
    drift = _alerts_of(obs, DRIFT_TYPES)
    quality = _alerts_of(obs, ("DataQuality",))
    return [
        {
            "type": "Ready",
            "status": "True" if ready else "False",
            "reason": ready_reason,
            "message": why,
        },
        {
            "type": "Drifting",
            "status": "True" if drift else "False",
            "reason": drift[0]["type"] if drift else "NoDrift",
            "message": _describe(drift) if drift else "no drift alert is active",
        },
        {
            "type": "DataQualityDegraded",
            "status": "True" if quality else "False",
            "reason": "DataQuality" if quality else "DataQualityOK",
            "message": _describe(quality) if quality else "no data-quality alert is active",
        },
        {
            "type": "Reacting",
            "status": "True" if obs.reacting else "False",
            "reason": "ReactionInProgress" if obs.reacting else "NoReaction",
            "message": obs.last_action or "no reaction in progress",
        },
        {
            "type": "Bypassed",
            "status": "True" if obs.bypass is not None else "False",
            "reason": bypass_reason,
            "message": bypass_message,
        },
        {
            "type": "Promotable",
            "status": "True" if obs.promotable else "False",
            "reason": "CanaryPassed" if obs.promotable else "NoCandidatePassed",
            "message": (
                f"{', '.join(obs.promotable)} passed the canary analysis against the baseline; "
                "mlwarden never promotes: promote it with your rollout tool"
                if obs.promotable
                else "no candidate revision has passed the canary analysis"
            ),
        },
    ]


def merge_conditions(
    previous: Sequence[dict[str, Any]] | None,
    desired: Sequence[dict[str, Any]],
    *,
    now: str,
    generation: int | None,
) -> list[dict[str, Any]]:
    """Desired conditions with lastTransitionTime kept unless the status flipped."""
    before = {c.get("type"): c for c in previous or ()}
    out = []
    for c in desired:
        old = before.get(c["type"])
        changed = old is None or old.get("status") != c["status"]
        cond = dict(c)
        cond["lastTransitionTime"] = now if changed else old.get("lastTransitionTime", now)  # type: ignore[union-attr]
        if generation is not None:
            cond["observedGeneration"] = generation
        out.append(cond)
    return out


def status_patch(obs: Observation, previous: dict[str, Any] | None, *, now: str) -> dict[str, Any]:
    """The `status` part of a merge patch: phase, message, conditions, counts.

    Not here: `alerts` and `detector` (the detector's), and `diagnosis`, `topSuspect`,
    `lastAction` and `reactions`, which only the diagnosis and reaction pass writes
    (respond.py), each write on the object as the API has it. A handler's patch is computed
    from the body kopf gave it, which may predate the pass's last write; were these fields
    in it, kopf would put an older diagnosis back (or leave one out, which a merge patch
    reads as "keep the old value").
    """
    previous = previous or {}
    ph, why = phase(obs)
    patch: dict[str, Any] = {
        "phase": ph,
        "message": why,
        "conditions": merge_conditions(
            previous.get("conditions"), desired_conditions(obs), now=now, generation=obs.generation
        )[:MAX_STATUS_CONDITIONS],
        "alertCount": len(obs.alerts),
        "injection": {
            "state": obs.injection_state,
            "message": obs.injection_message,
            "reason": obs.injection_reason,  # null clears an earlier one
        },
    }
    if obs.generation is not None:
        patch["observedGeneration"] = obs.generation
    if obs.target is not None:
        patch["target"] = dict(obs.target)
    return patch


def _key(alert: dict[str, Any]) -> tuple[Any, Any, Any]:
    return (alert.get("type"), alert.get("feature"), alert.get("test"))


def _revision(alert: dict[str, Any], names: Mapping[str, str]) -> str:
    """` (revision 7 (fraud:1.4))`: the alert's modelRevision as people know it, if any."""
    revision = alert.get("modelRevision")
    if not revision:
        return ""
    text = names.get(str(revision), f"revision {revision}")
    baseline = alert.get("baselineRevision")
    if baseline:
        text += f" against {names.get(str(baseline), f'revision {baseline}')}"
    return f" [{text}]"


def alert_events(
    old: Sequence[dict[str, Any]] | None,
    new: Sequence[dict[str, Any]] | None,
    names: Mapping[str, str] | None = None,
) -> list[tuple[str, str, str]]:
    """(event type, reason, message) for every alert that fired or resolved.

    `names`: model revision (pod-template-hash) → how people know it, `revision 7
    (fraud:1.4)` (`react.revisions.label`); an alert names the revision it concerns.
    """
    names = names or {}
    before = {_key(a): a for a in old or ()}
    after = {_key(a): a for a in new or ()}
    events: list[tuple[str, str, str]] = []
    for key, a in after.items():
        if key not in before:
            where = f" on {a['feature']}" if a.get("feature") else ""
            where += _revision(a, names)
            p = f", p={a['pValue']:.2g}" if isinstance(a.get("pValue"), int | float) else ""
            stat = a.get("statistic")
            stat_text = f"{stat:.4g}" if isinstance(stat, int | float) else "n/a"
            events.append(
                (
                    "Warning",
                    "AlertFired",
                    f"{a.get('type')}{where}: {a.get('test')} statistic {stat_text}"
                    f"{p} (threshold {a.get('threshold')}), since {a.get('since')}; "
                    f"{a.get('message', '')}".rstrip("; "),
                )
            )
    for key, a in before.items():
        if key not in after:
            where = f" on {a['feature']}" if a.get("feature") else ""
            events.append(
                ("Normal", "AlertResolved", f"{a.get('type')}{where} ({a.get('test')}) resolved")
            )
    return events
