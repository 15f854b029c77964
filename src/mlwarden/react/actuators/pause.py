"""Pause: a canary Deployment scaled to zero, its previous replica count kept for a resume.

The count before the pause goes into the action record (`from`) and into the Deployment's
annotation `mlwarden.io/paused-from-replicas`, so a person can resume with
`kubectl scale deploy/<canary> --replicas=<that>`. An HPA scaling the canary would bring it
back at once (an HPA's minReplicas cannot be 0 on a default cluster), so pausing such a
canary is refused with a message saying so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final, NamedTuple

from mlwarden.react.actuators.scale import hpa_for

PAUSED_FROM_ANNOTATION: Final = "mlwarden.io/paused-from-replicas"


class PauseError(ValueError):
    """The canary cannot be paused; the message says why."""


class PausePlan(NamedTuple):
    """The patch for the canary (None: already at zero) and its replica count before."""

    patch: dict[str, Any] | None
    from_replicas: int


def plan_pause(
    *, deployment: Mapping[str, Any], hpas: Sequence[Mapping[str, Any]] = ()
) -> PausePlan:
    """`spec.replicas: 0` for the canary Deployment, remembering the count it had."""
    meta = deployment.get("metadata") or {}
    name = str(meta.get("name", "?"))
    value = (deployment.get("spec") or {}).get("replicas", 1)
    current = 1 if value is None else int(value)
    if current == 0:
        return PausePlan(None, 0)
    hpa = hpa_for(deployment_name=name, hpas=hpas)
    if hpa is not None:
        hpa_name = (hpa.get("metadata") or {}).get("name", "?")
        raise PauseError(
            f"HorizontalPodAutoscaler {hpa_name} scales Deployment {name} and would scale it "
            "back up; delete the HPA (or scale it by hand) to pause the canary"
        )
    patch_meta: dict[str, Any] = {"annotations": {PAUSED_FROM_ANNOTATION: str(current)}}
    if meta.get("resourceVersion") is not None:
        patch_meta["resourceVersion"] = meta["resourceVersion"]
    return PausePlan({"metadata": patch_meta, "spec": {"replicas": 0}}, current)
