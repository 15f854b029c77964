"""Istio VirtualService: the split is the `weight` of two destinations in `spec.http[].route[]`.

A backend name matches a destination by its subset (`stable`, `canary` subsets of one host),
by its host (`fraud-model` or `fraud-model.ml.svc.cluster.local`), or by both as
`host/subset`. An absent weight is 100 when the route has one destination, else 0. Istio
requires a route's weights to sum to 100, so the two backends share what the route's other
destinations leave (usually all of it). Every `http[]` entry naming either backend is read
and written; the service's split is that of the entry sending the canary the largest share.
Only HTTP routes are handled (`tcp` and `tls` are left alone).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, Final

from mlwarden.react.traffic.router import TrafficError, Weights, meta_patch, name_of

KIND: Final = "VirtualService"


def _host_is(host: str, name: str) -> bool:
    return host == name or host.split(".", 1)[0] == name


def _is(route: Mapping[str, Any], name: str) -> bool:
    dest = route.get("destination") or {}
    host, subset = str(dest.get("host") or ""), dest.get("subset")
    if "/" in name:
        want_host, want_subset = name.split("/", 1)
        return _host_is(host, want_host) and subset == want_subset
    return subset == name or _host_is(host, name)


def _weight(route: Mapping[str, Any], routes: list[dict[str, Any]]) -> int:
    if "weight" in route:
        return int(route["weight"])
    return 100 if len(routes) == 1 else 0


def _http(obj: Mapping[str, Any]) -> list[dict[str, Any]]:
    return copy.deepcopy(list((obj.get("spec") or {}).get("http") or []))


def _show(route: Mapping[str, Any]) -> str:
    dest = route.get("destination") or {}
    subset = dest.get("subset")
    return f"{dest.get('host')}" + (f"/{subset}" if subset else "")


def _check(obj: Mapping[str, Any], http: list[dict[str, Any]], stable: str, canary: str) -> None:
    routes = [r for entry in http for r in entry.get("route") or []]
    for route in routes:
        if _is(route, stable) and _is(route, canary):
            raise TrafficError(
                f"{KIND} {name_of(obj)}: destination {_show(route)} matches both {stable!r} "
                f"and {canary!r}; name the backends as host/subset"
            )
    for role, name in (("stable", stable), ("canary", canary)):
        if not any(_is(r, name) for r in routes):
            shown = ", ".join(sorted({_show(r) for r in routes})) or "none"
            raise TrafficError(
                f"{KIND} {name_of(obj)}: no spec.http[].route[].destination matches the {role} "
                f"backend {name!r} (destinations: {shown}); fix spec.reactions[].{role}"
            )


class VirtualServiceRouter:
    """The `virtualservice` router."""

    kind = KIND

    def get_weights(self, obj: Mapping[str, Any], *, stable: str, canary: str) -> Weights:
        http = _http(obj)
        _check(obj, http, stable, canary)
        found: list[Weights] = []
        for entry in http:
            routes = list(entry.get("route") or [])
            s = sum(_weight(r, routes) for r in routes if _is(r, stable))
            c = sum(_weight(r, routes) for r in routes if _is(r, canary))
            if s + c > 0:
                found.append(Weights.of(stable=s, canary=c))
        if not found:
            raise TrafficError(
                f"{KIND} {name_of(obj)}: the destinations {stable!r} and {canary!r} have "
                "weight 0 everywhere: no traffic to shift"
            )
        return max(found, key=lambda w: w.canary)

    def set_weights(
        self, obj: Mapping[str, Any], *, stable: str, canary: str, weights: Weights
    ) -> dict[str, dict[str, Any]]:
        http = _http(obj)
        _check(obj, http, stable, canary)
        for i, entry in enumerate(http):
            routes: list[dict[str, Any]] = entry.get("route") or []
            mine = [r for r in routes if _is(r, stable) or _is(r, canary)]
            if not mine:
                continue
            has_stable = any(_is(r, stable) for r in routes)
            has_canary = any(_is(r, canary) for r in routes)
            if has_stable != has_canary:
                missing, wanted = (
                    (stable, weights.stable) if has_canary else (canary, weights.canary)
                )
                if wanted > 0:
                    raise TrafficError(
                        f"{KIND} {name_of(obj)}: spec.http[{i}].route has no destination "
                        f"{missing!r} to send {wanted}% to; add one (weight 0) to shift traffic "
                        "there"
                    )
                continue  # only the backend that keeps everything: nothing to change
            for role in (stable, canary):
                if sum(1 for r in routes if _is(r, role)) > 1:
                    raise TrafficError(
                        f"{KIND} {name_of(obj)}: spec.http[{i}].route has more than one "
                        f"destination matching {role!r}; name the backends as host/subset"
                    )
            others = sum(
                _weight(r, routes) for r in routes if not (_is(r, stable) or _is(r, canary))
            )
            share = 100 - others
            if share < 0:
                raise TrafficError(
                    f"{KIND} {name_of(obj)}: spec.http[{i}].route weights of other "
                    f"destinations sum to {others} > 100"
                )
            to_canary = round(share * weights.canary / 100)
            for route in routes:
                if _is(route, stable):
                    route["weight"] = share - to_canary
                elif _is(route, canary):
                    route["weight"] = to_canary
        return {f"{KIND}/{name_of(obj)}": {**meta_patch(obj), "spec": {"http": http}}}


VIRTUALSERVICE: Final = VirtualServiceRouter()
