"""The router protocol: read and write the stable/canary split of one kind of object.

    get_weights(obj, *, stable, canary) -> Weights
    set_weights(obj, *, stable, canary, weights) -> {"Kind/name": merge patch, ...}

`obj` is the route object, or for `replicas` a Kubernetes `List` holding both Deployments
(what `kubectl get deploy a b -o json` prints). Patches come in the order to apply them and
carry `metadata.resourceVersion` as a precondition. `next_step` is the shift itself:
`step_percent` points from canary to stable, until stable has it all. The implementations
(`httproute`, `virtualservice`, `replicas`) import this module, never the reverse; the
registry (`registry.ROUTERS`) maps names to them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol


class TrafficError(ValueError):
    """The route (or the Deployments) cannot be read or changed as asked; the message says why."""


@dataclass(frozen=True)
class Weights:
    """Percentages of traffic to the stable and the canary backend; they sum to 100."""

    stable: int
    canary: int

    def __post_init__(self) -> None:
        if not (0 <= self.stable <= 100 and 0 <= self.canary <= 100):
            raise ValueError(f"weights must be in [0, 100], got {self.stable}/{self.canary}")
        if self.stable + self.canary != 100:
            raise ValueError(f"weights must sum to 100, got {self.stable}/{self.canary}")

    @classmethod
    def of(cls, *, stable: float, canary: float) -> Weights:
        """Percentages from any two non-negative amounts (weights, replicas), rounded."""
        total = stable + canary
        if stable < 0 or canary < 0 or total <= 0:
            raise TrafficError(f"no traffic to either backend (stable {stable}, canary {canary})")
        share = round(100 * canary / total)
        return cls(stable=100 - share, canary=share)

    def __str__(self) -> str:
        return f"stable {self.stable}/canary {self.canary}"


class Router(Protocol):
    """Reads and writes the stable/canary split of one kind of object."""

    @property
    def kind(self) -> str:
        """The kind of object the router changes: HTTPRoute, VirtualService or Deployment."""
        ...

    def get_weights(self, obj: Mapping[str, Any], *, stable: str, canary: str) -> Weights: ...

    def set_weights(
        self, obj: Mapping[str, Any], *, stable: str, canary: str, weights: Weights
    ) -> dict[str, dict[str, Any]]: ...


def next_step(current: Weights, step_percent: int) -> Weights:
    """`step_percent` points of traffic moved from the canary to stable (stops at 100/0)."""
    if not 1 <= step_percent <= 100:
        raise ValueError(f"step_percent must be in [1, 100], got {step_percent}")
    canary = max(0, current.canary - step_percent)
    return Weights(stable=100 - canary, canary=canary)


def name_of(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name") or "?")


def meta_patch(obj: Mapping[str, Any]) -> dict[str, Any]:
    """`metadata.resourceVersion` as a precondition, when the object carries one."""
    version = (obj.get("metadata") or {}).get("resourceVersion")
    return {} if version is None else {"metadata": {"resourceVersion": version}}
