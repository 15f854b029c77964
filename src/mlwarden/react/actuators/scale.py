"""Scale: more replicas for the target Deployment, within the reaction's [minReplicas, maxReplicas].

One step doubles the count (at least +1, so 0 and 1 grow too), raised to `minReplicas` and
capped at `maxReplicas`: 1 → 2 → 4 → 8, or 3 → 6 → 10 with `maxReplicas: 10`. Each step is an
action of its own, spaced by the cooldown and counted by the hourly limit; at the cap there
is nothing to do.

When a HorizontalPodAutoscaler scales the Deployment, setting `spec.replicas` would be undone
by it within seconds, so the HPA's `spec.minReplicas` is raised instead, from the count the
HPA runs now (`status.currentReplicas`, or its minReplicas when higher) and capped at the
HPA's own `maxReplicas` too (mlwarden never lifts a ceiling a person set).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final, NamedTuple

HPA_KIND: Final = "HorizontalPodAutoscaler"


class ScaleError(ValueError):
    """The Deployment or its HPA cannot be scaled as asked; the message says why."""


class ScalePlan(NamedTuple):
    """What to patch (`Kind/name`), the patch (None: nothing to do), and the counts."""

    target: str
    patch: dict[str, Any] | None
    from_replicas: int
    to_replicas: int
    field: str  # "replicas" or "minReplicas"


def next_replicas(*, current: int, min_replicas: int | None, max_replicas: int) -> int:
    """Double (at least +1), no lower than `min_replicas`, no higher than `max_replicas`.

    A count already at or above `max_replicas` is returned as it is: scale never scales down.
    """
    if current >= max_replicas:
        return current
    wanted = max(2 * current, current + 1, min_replicas or 0)
    return min(wanted, max_replicas)


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def hpa_for(*, deployment_name: str, hpas: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The HPA whose `scaleTargetRef` is the Deployment, if any."""
    for hpa in hpas:
        ref = (hpa.get("spec") or {}).get("scaleTargetRef") or {}
        if ref.get("kind") == "Deployment" and ref.get("name") == deployment_name:
            return hpa
    return None


def _with_precondition(obj: Mapping[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    version = _meta(obj).get("resourceVersion")
    return patch if version is None else {"metadata": {"resourceVersion": version}, **patch}


def plan_scale(
    *,
    deployment: Mapping[str, Any],
    hpas: Sequence[Mapping[str, Any]] = (),
    min_replicas: int | None = None,
    max_replicas: int,
) -> ScalePlan:
    """One step up for the Deployment, or for the HPA that scales it."""
    name = str(_meta(deployment).get("name", "?"))
    if min_replicas is not None and min_replicas > max_replicas:
        raise ScaleError(f"minReplicas {min_replicas} exceeds maxReplicas {max_replicas}")
    hpa = hpa_for(deployment_name=name, hpas=hpas)
    if hpa is None:
        value = (deployment.get("spec") or {}).get("replicas", 1)
        current = 1 if value is None else int(value)
        wanted = next_replicas(
            current=current, min_replicas=min_replicas, max_replicas=max_replicas
        )
        patch = (
            None
            if wanted == current
            else _with_precondition(deployment, {"spec": {"replicas": wanted}})
        )
        return ScalePlan(f"Deployment/{name}", patch, current, wanted, "replicas")
    spec = hpa.get("spec") or {}
    hpa_name = str(_meta(hpa).get("name", "?"))
    low = int(spec.get("minReplicas") or 1)
    ceiling = min(max_replicas, int(spec.get("maxReplicas") or max_replicas))
    running = int((hpa.get("status") or {}).get("currentReplicas") or 0)
    base = max(low, running)
    step = next_replicas(current=base, min_replicas=min_replicas, max_replicas=ceiling)
    wanted = max(low, min(step, ceiling))
    patch = None if wanted == low else _with_precondition(hpa, {"spec": {"minReplicas": wanted}})
    return ScalePlan(f"{HPA_KIND}/{hpa_name}", patch, low, wanted, "minReplicas")
