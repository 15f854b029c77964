"""Traffic routers: get/set round trips, stepping back to stable, errors, weights summing to 100."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlwarden.patches import apply_merge_patch
from mlwarden.react.traffic.registry import ROUTERS
from mlwarden.react.traffic.router import TrafficError, Weights, next_step
from mlwarden.spec import TRAFFIC_ROUTERS

Obj = dict[str, Any]


def _apply(obj: Obj, patches: dict[str, dict[str, Any]]) -> Obj:
    """Apply `set_weights`' patches to the route, or to each Deployment of a List."""
    if obj["kind"] == "List":
        items = []
        for item in obj["items"]:
            key = f"Deployment/{item['metadata']['name']}"
            items.append(apply_merge_patch(item, patches.get(key, {})))
        return {**obj, "items": items}
    (key,) = patches
    assert key == f"{obj['kind']}/{obj['metadata']['name']}"
    out: Obj = apply_merge_patch(obj, patches[key])
    return out


# Each router with an object at a given split; replicas uses 10 replicas in all.
Make = Callable[[int, int], Obj]


def _httproute(build: Any) -> tuple[str, str, Make]:
    return (
        "fraud-stable",
        "fraud-canary",
        lambda s, c: build.httproute([("fraud-stable", s), ("fraud-canary", c)]),
    )


def _virtualservice(build: Any) -> tuple[str, str, Make]:
    return (
        "stable",
        "canary",
        lambda s, c: build.virtualservice(
            [("fraud-model.ml.svc.cluster.local", "stable", s), ("fraud-model", "canary", c)]
        ),
    )


def _replicas(build: Any) -> tuple[str, str, Make]:
    def make(s: int, c: int) -> Obj:
        return {
            "apiVersion": "v1",
            "kind": "List",
            "items": [
                build.deployment("fraud-stable", replicas=s // 10),
                build.deployment("fraud-canary", replicas=c // 10),
            ],
        }

    return "fraud-stable", "fraud-canary", make


SETUPS = {"httproute": _httproute, "virtualservice": _virtualservice, "replicas": _replicas}


@pytest.fixture(params=sorted(SETUPS))
def setup(request: pytest.FixtureRequest, build: Any) -> tuple[Any, str, str, Make]:
    stable, canary, make = SETUPS[request.param](build)
    return ROUTERS[request.param], stable, canary, make


def test_every_router_of_the_spec_is_registered() -> None:
    assert set(ROUTERS) == set(TRAFFIC_ROUTERS)
    assert {r.kind for r in ROUTERS.values()} == {"HTTPRoute", "VirtualService", "Deployment"}


@pytest.mark.parametrize(("s", "c"), [(50, 50), (80, 20), (100, 0), (0, 100), (30, 70)])
def test_get_reads_the_split(setup: Any, s: int, c: int) -> None:
    router, stable, canary, make = setup
    assert router.get_weights(make(s, c), stable=stable, canary=canary) == Weights(s, c)


@pytest.mark.parametrize(("s", "c"), [(50, 50), (90, 10), (100, 0), (0, 100), (70, 30)])
def test_set_then_get_round_trips(setup: Any, s: int, c: int) -> None:
    router, stable, canary, make = setup
    obj = make(20, 80)
    patches = router.set_weights(obj, stable=stable, canary=canary, weights=Weights(s, c))
    assert router.get_weights(_apply(obj, patches), stable=stable, canary=canary) == Weights(s, c)


@pytest.mark.parametrize("step", [10, 25, 50, 100])
def test_steps_from_50_50_back_to_stable(setup: Any, step: int) -> None:
    router, stable, canary, make = setup
    obj = make(50, 50)
    seen = []
    current = router.get_weights(obj, stable=stable, canary=canary)
    while current.canary > 0:
        wanted = next_step(current, step)
        obj = _apply(obj, router.set_weights(obj, stable=stable, canary=canary, weights=wanted))
        after = router.get_weights(obj, stable=stable, canary=canary)
        assert after.stable + after.canary == 100
        assert after.canary < current.canary  # every step makes progress
        seen.append(after)
        current = after
    assert seen[-1] == Weights(100, 0)
    assert len(seen) == -(-50 // step)


def test_unknown_backends_are_errors(setup: Any) -> None:
    router, stable, canary, make = setup
    obj = make(50, 50)
    with pytest.raises(TrafficError, match="'nope'"):
        router.get_weights(obj, stable=stable, canary="nope")
    with pytest.raises(TrafficError, match="'nope'"):
        router.get_weights(obj, stable="nope", canary=canary)
    with pytest.raises(TrafficError, match="'nope'"):
        router.set_weights(obj, stable=stable, canary="nope", weights=Weights(100, 0))


def test_no_traffic_to_either_is_an_error(setup: Any) -> None:
    router, stable, canary, make = setup
    with pytest.raises(TrafficError, match="0"):
        router.get_weights(make(0, 0), stable=stable, canary=canary)


def test_patches_carry_the_resource_version_as_a_precondition(setup: Any) -> None:
    router, stable, canary, make = setup
    patches = router.set_weights(
        make(50, 50), stable=stable, canary=canary, weights=Weights(100, 0)
    )
    for patch in patches.values():
        assert patch["metadata"]["resourceVersion"]


# --------------------------------------------------------------------------- weights


def test_weights_must_sum_to_100() -> None:
    with pytest.raises(ValueError, match="sum to 100"):
        Weights(60, 60)
    with pytest.raises(ValueError, match=r"\[0, 100\]"):
        Weights(110, -10)
    assert str(Weights(75, 25)) == "stable 75/canary 25"


@given(
    st.floats(min_value=0, max_value=1e6, allow_nan=False),
    st.floats(min_value=0, max_value=1e6, allow_nan=False),
    st.integers(min_value=1, max_value=100),
)
def test_weights_always_sum_to_100(stable: float, canary: float, step: int) -> None:
    if stable + canary <= 0:
        with pytest.raises(TrafficError):
            Weights.of(stable=stable, canary=canary)
        return
    weights = Weights.of(stable=stable, canary=canary)
    assert weights.stable + weights.canary == 100
    nxt = next_step(weights, step)
    assert nxt.stable + nxt.canary == 100
    assert nxt.canary == max(0, weights.canary - step)


def test_next_step_stops_at_100_0() -> None:
    assert next_step(Weights(100, 0), 10) == Weights(100, 0)
    assert next_step(Weights(95, 5), 10) == Weights(100, 0)
    with pytest.raises(ValueError):
        next_step(Weights(50, 50), 0)


# --------------------------------------------------------------------------- HTTPRoute


def test_httproute_absent_weight_is_one(build: Any) -> None:
    route = build.httproute([("fraud-stable", None), ("fraud-canary", None)])
    weights = ROUTERS["httproute"].get_weights(route, stable="fraud-stable", canary="fraud-canary")
    assert weights == Weights(50, 50)


def test_httproute_several_rules(build: Any) -> None:
    route = build.httproute(
        [("fraud-stable", 90), ("fraud-canary", 10)],
        [("fraud-stable", 50), ("fraud-canary", 50), ("other", 7)],
        [("unrelated", 1)],
    )
    router = ROUTERS["httproute"]
    # The rule sending the canary the largest share is the route's split.
    assert router.get_weights(route, stable="fraud-stable", canary="fraud-canary") == Weights(
        50, 50
    )
    patched = _apply(
        route,
        router.set_weights(
            route, stable="fraud-stable", canary="fraud-canary", weights=Weights(80, 20)
        ),
    )
    rules = patched["spec"]["rules"]
    assert [r["weight"] for r in rules[0]["backendRefs"]] == [80, 20]
    assert [r["weight"] for r in rules[1]["backendRefs"]] == [80, 20, 7]  # others keep theirs
    assert rules[2] == route["spec"]["rules"][2]


def test_httproute_rule_without_stable_cannot_take_traffic(build: Any) -> None:
    route = build.httproute([("fraud-stable", 50), ("fraud-canary", 50)], [("fraud-canary", 1)])
    with pytest.raises(TrafficError, match=r"spec.rules\[1\] has no backendRef 'fraud-stable'"):
        ROUTERS["httproute"].set_weights(
            route, stable="fraud-stable", canary="fraud-canary", weights=Weights(100, 0)
        )


def test_httproute_matches_services_only(build: Any) -> None:
    route = build.httproute([("fraud-stable", 1), ("fraud-canary", 1)])
    route["spec"]["rules"][0]["backendRefs"][1]["kind"] = "ServiceImport"
    with pytest.raises(TrafficError, match="canary backend 'fraud-canary'"):
        ROUTERS["httproute"].get_weights(route, stable="fraud-stable", canary="fraud-canary")


# --------------------------------------------------------------------------- VirtualService


def test_virtualservice_by_host(build: Any) -> None:
    vs = build.virtualservice([("fraud-v1.ml.svc.cluster.local", None, 70), ("fraud-v2", None, 30)])
    router = ROUTERS["virtualservice"]
    assert router.get_weights(vs, stable="fraud-v1", canary="fraud-v2") == Weights(70, 30)
    assert router.get_weights(
        vs, stable="fraud-v1.ml.svc.cluster.local", canary="fraud-v2"
    ) == Weights(70, 30)


def test_virtualservice_by_host_and_subset(build: Any) -> None:
    vs = build.virtualservice([("fraud", "v1", 60), ("fraud", "v2", 40)])
    router = ROUTERS["virtualservice"]
    assert router.get_weights(vs, stable="fraud/v1", canary="fraud/v2") == Weights(60, 40)
    with pytest.raises(TrafficError, match="matches both"):
        router.get_weights(vs, stable="fraud", canary="fraud/v2")


def test_virtualservice_other_destinations_keep_their_share(build: Any) -> None:
    vs = build.virtualservice(
        [("fraud", "stable", 40), ("fraud", "canary", 40), ("mirror", None, 20)]
    )
    router = ROUTERS["virtualservice"]
    assert router.get_weights(vs, stable="stable", canary="canary") == Weights(50, 50)
    patched = _apply(
        vs, router.set_weights(vs, stable="stable", canary="canary", weights=Weights(75, 25))
    )
    assert [r["weight"] for r in patched["spec"]["http"][0]["route"]] == [60, 20, 20]
    assert sum(r["weight"] for r in patched["spec"]["http"][0]["route"]) == 100


def test_virtualservice_single_destination_without_weight_is_everything(build: Any) -> None:
    vs = build.virtualservice(
        [("fraud", "stable", 50), ("fraud", "canary", 50)], [("fraud", "stable", None)]
    )
    router = ROUTERS["virtualservice"]
    assert router.get_weights(vs, stable="stable", canary="canary") == Weights(50, 50)
    patches = router.set_weights(vs, stable="stable", canary="canary", weights=Weights(100, 0))
    http = _apply(vs, patches)["spec"]["http"]
    assert http[1] == vs["spec"]["http"][1]  # only stable there: nothing to change
    with pytest.raises(TrafficError, match=r"spec.http\[1\].route has no destination 'canary'"):
        router.set_weights(vs, stable="stable", canary="canary", weights=Weights(50, 50))


# --------------------------------------------------------------------------- replicas


def test_replicas_keeps_the_total_and_grows_stable_first(build: Any) -> None:
    obj = {
        "kind": "List",
        "items": [
            build.deployment("fraud-stable", replicas=2, resource_version="11"),
            build.deployment("fraud-canary", replicas=2, resource_version="12"),
        ],
    }
    router = ROUTERS["replicas"]
    patches = router.set_weights(
        obj, stable="fraud-stable", canary="fraud-canary", weights=Weights(75, 25)
    )
    assert list(patches) == ["Deployment/fraud-stable", "Deployment/fraud-canary"]
    assert patches["Deployment/fraud-stable"] == {
        "metadata": {"resourceVersion": "11"},
        "spec": {"replicas": 3},
    }
    assert patches["Deployment/fraud-canary"]["spec"] == {"replicas": 1}


@given(
    st.integers(min_value=1, max_value=30),
    st.data(),
    st.integers(min_value=1, max_value=100),
)
def test_replicas_every_step_moves_a_replica(total: int, data: st.DataObject, step: int) -> None:
    canary = data.draw(st.integers(min_value=1, max_value=total))
    obj = {
        "kind": "List",
        "items": [
            {"kind": "Deployment", "metadata": {"name": "s"}, "spec": {"replicas": total - canary}},
            {"kind": "Deployment", "metadata": {"name": "c"}, "spec": {"replicas": canary}},
        ],
    }
    router = ROUTERS["replicas"]
    wanted = next_step(router.get_weights(obj, stable="s", canary="c"), step)
    patches = router.set_weights(obj, stable="s", canary="c", weights=wanted)
    s, c = patches["Deployment/s"]["spec"]["replicas"], patches["Deployment/c"]["spec"]["replicas"]
    assert s + c == total
    assert c < canary
    assert "metadata" not in patches["Deployment/s"]  # no resourceVersion read: none sent
