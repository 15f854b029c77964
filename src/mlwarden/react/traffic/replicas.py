"""No mesh: two Deployments behind one Service, and the split is the ratio of their replicas.

A Service spreads connections over the ready pods it selects, so with the stable and the
canary Deployment behind one Service the canary's share is its replicas over the total (as
Argo Rollouts does without a traffic router). The object read is a Kubernetes `List` of the
two Deployments; weights follow `spec.replicas` (absent: 1), the count mlwarden sets.

`set_weights` keeps the total: the canary gets `floor(total × canary%)` replicas and stable
the rest, so each step towards stable moves at least one replica and capacity never shrinks.
The stable Deployment's patch comes first: apply it first, and stable grows before the canary
shrinks. With few replicas a split is coarse (4 replicas: steps of 25%).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from mlwarden.react.traffic.router import TrafficError, Weights, meta_patch, name_of

KIND: Final = "Deployment"


def _deployment(obj: Mapping[str, Any], name: str, role: str) -> Mapping[str, Any]:
    items = [i for i in obj.get("items") or [] if isinstance(i, Mapping)]
    for item in items:
        if item.get("kind", KIND) == KIND and name_of(item) == name:
            return item
    shown = ", ".join(sorted(name_of(i) for i in items)) or "none"
    raise TrafficError(
        f"the {role} Deployment {name!r} is not among the Deployments read ({shown}); "
        f"fix spec.reactions[].{role}"
    )


def replicas_of(deployment: Mapping[str, Any]) -> int:
    value = (deployment.get("spec") or {}).get("replicas", 1)
    return 1 if value is None else int(value)


class ReplicasRouter:
    """The `replicas` router."""

    kind = KIND

    def get_weights(self, obj: Mapping[str, Any], *, stable: str, canary: str) -> Weights:
        s = replicas_of(_deployment(obj, stable, "stable"))
        c = replicas_of(_deployment(obj, canary, "canary"))
        if s + c == 0:
            raise TrafficError(
                f"Deployments {stable!r} and {canary!r} both have 0 replicas: no traffic to shift"
            )
        return Weights.of(stable=s, canary=c)

    def set_weights(
        self, obj: Mapping[str, Any], *, stable: str, canary: str, weights: Weights
    ) -> dict[str, dict[str, Any]]:
        s_obj = _deployment(obj, stable, "stable")
        c_obj = _deployment(obj, canary, "canary")
        total = replicas_of(s_obj) + replicas_of(c_obj)
        if total == 0:
            raise TrafficError(
                f"Deployments {stable!r} and {canary!r} both have 0 replicas: no traffic to shift"
            )
        to_canary = total * weights.canary // 100
        return {
            f"{KIND}/{stable}": {**meta_patch(s_obj), "spec": {"replicas": total - to_canary}},
            f"{KIND}/{canary}": {**meta_patch(c_obj), "spec": {"replicas": to_canary}},
        }


REPLICAS: Final = ReplicasRouter()
