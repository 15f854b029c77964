"""Gateway API HTTPRoute: the split is the `weight` of two `backendRefs` in the route's rules.

A backend is a `backendRefs[]` entry of kind Service (the default) named `stable` or `canary`;
an absent `weight` is 1, as the Gateway API defines it. A route may have several rules (one
per path, say): every rule that names either backend is read and written, and the route's
split is that of the rule sending the largest share to the canary (the shift is done when no
rule sends the canary anything). Weights are relative in the Gateway API, so the percentages
are written as they are; other backends in a rule keep their own weights.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, Final

from mlwarden.react.traffic.router import TrafficError, Weights, meta_patch, name_of

KIND: Final = "HTTPRoute"


def _is(ref: Mapping[str, Any], name: str) -> bool:
    return ref.get("name") == name and ref.get("kind", "Service") == "Service"


def _weight(ref: Mapping[str, Any]) -> int:
    return int(ref.get("weight", 1))


def _rules(obj: Mapping[str, Any]) -> list[dict[str, Any]]:
    return copy.deepcopy(list((obj.get("spec") or {}).get("rules") or []))


def _check(obj: Mapping[str, Any], rules: list[dict[str, Any]], stable: str, canary: str) -> None:
    names = {str(ref.get("name")) for rule in rules for ref in rule.get("backendRefs") or []}
    for role, name in (("stable", stable), ("canary", canary)):
        if not any(_is(ref, name) for rule in rules for ref in rule.get("backendRefs") or []):
            raise TrafficError(
                f"{KIND} {name_of(obj)}: no spec.rules[].backendRefs[] names the {role} "
                f"backend {name!r} (backends: {', '.join(sorted(names)) or 'none'}); fix "
                f"spec.reactions[].{role}"
            )


class HTTPRouteRouter:
    """The `httproute` router."""

    kind = KIND

    def get_weights(self, obj: Mapping[str, Any], *, stable: str, canary: str) -> Weights:
        rules = _rules(obj)
        _check(obj, rules, stable, canary)
        found: list[Weights] = []
        for rule in rules:
            refs = rule.get("backendRefs") or []
            s = sum(_weight(r) for r in refs if _is(r, stable))
            c = sum(_weight(r) for r in refs if _is(r, canary))
            if s + c > 0:
                found.append(Weights.of(stable=s, canary=c))
        if not found:
            raise TrafficError(
                f"{KIND} {name_of(obj)}: every backendRef to {stable!r} and {canary!r} has "
                "weight 0: no traffic to shift"
            )
        return max(found, key=lambda w: w.canary)

    def set_weights(
        self, obj: Mapping[str, Any], *, stable: str, canary: str, weights: Weights
    ) -> dict[str, dict[str, Any]]:
        rules = _rules(obj)
        _check(obj, rules, stable, canary)
        for i, rule in enumerate(rules):
            refs = rule.get("backendRefs") or []
            has_stable = any(_is(r, stable) for r in refs)
            has_canary = any(_is(r, canary) for r in refs)
            if has_stable != has_canary:
                missing, wanted = (
                    (stable, weights.stable) if has_canary else (canary, weights.canary)
                )
                if wanted > 0:
                    raise TrafficError(
                        f"{KIND} {name_of(obj)}: spec.rules[{i}] has no backendRef {missing!r} "
                        f"to send {wanted}% to; add one (weight 0) to shift traffic there"
                    )
            for ref in refs:
                if _is(ref, stable):
                    ref["weight"] = weights.stable
                elif _is(ref, canary):
                    ref["weight"] = weights.canary
        return {f"{KIND}/{name_of(obj)}": {**meta_patch(obj), "spec": {"rules": rules}}}


HTTPROUTE: Final = HTTPRouteRouter()
