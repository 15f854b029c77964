"""Scale (replicas or an HPA's minReplicas, doubling within bounds) and pause (a canary to zero)."""

from __future__ import annotations

from typing import Any

import pytest

from mlwarden.patches import apply_merge_patch
from mlwarden.react.actuators.pause import PAUSED_FROM_ANNOTATION, PauseError, plan_pause
from mlwarden.react.actuators.scale import ScaleError, next_replicas, plan_scale


@pytest.mark.parametrize(
    ("current", "low", "high", "expected"),
    [
        (3, None, 10, 6),  # double
        (6, None, 10, 10),  # capped at max
        (10, None, 10, 10),  # at max: nothing
        (12, None, 10, 12),  # above max: never scales down
        (0, None, 10, 1),  # doubling 0 is +1
        (1, None, 10, 2),
        (1, 4, 10, 4),  # raised to min
        (2, 3, 3, 3),
    ],
)
def test_next_replicas(current: int, low: int | None, high: int, expected: int) -> None:
    assert next_replicas(current=current, min_replicas=low, max_replicas=high) == expected


def test_steps_until_the_cap() -> None:
    seen, current = [], 1
    while (nxt := next_replicas(current=current, min_replicas=None, max_replicas=10)) != current:
        seen.append(nxt)
        current = nxt
    assert seen == [2, 4, 8, 10]


def test_scale_a_deployment(build: Any) -> None:
    dep = build.deployment(replicas=3)
    plan = plan_scale(deployment=dep, max_replicas=10)
    assert (plan.target, plan.from_replicas, plan.to_replicas, plan.field) == (
        "Deployment/fraud-model",
        3,
        6,
        "replicas",
    )
    assert plan.patch == {"metadata": {"resourceVersion": "100"}, "spec": {"replicas": 6}}
    assert apply_merge_patch(dep, plan.patch)["spec"]["replicas"] == 6


def test_absent_replicas_means_one(build: Any) -> None:
    plan = plan_scale(deployment=build.deployment(replicas=None), max_replicas=10)
    assert (plan.from_replicas, plan.to_replicas) == (1, 2)


def test_at_the_cap_there_is_nothing_to_patch(build: Any) -> None:
    plan = plan_scale(deployment=build.deployment(replicas=10), max_replicas=10)
    assert plan.patch is None
    assert plan.from_replicas == plan.to_replicas == 10


def test_min_above_max_is_an_error(build: Any) -> None:
    with pytest.raises(ScaleError, match="minReplicas 5 exceeds maxReplicas 3"):
        plan_scale(deployment=build.deployment(), min_replicas=5, max_replicas=3)


def test_an_hpa_gets_its_min_replicas_raised(build: Any) -> None:
    hpa = build.hpa(low=2, high=20, running=3)
    plan = plan_scale(deployment=build.deployment(replicas=3), hpas=[hpa], max_replicas=10)
    assert (plan.target, plan.field) == ("HorizontalPodAutoscaler/fraud-model", "minReplicas")
    # From the count it runs now (3), not from its minimum (2).
    assert (plan.from_replicas, plan.to_replicas) == (2, 6)
    assert plan.patch == {"metadata": {"resourceVersion": "300"}, "spec": {"minReplicas": 6}}


def test_an_hpas_own_ceiling_is_never_lifted(build: Any) -> None:
    hpa = build.hpa(low=2, high=5, running=4)
    plan = plan_scale(deployment=build.deployment(), hpas=[hpa], max_replicas=10)
    assert plan.to_replicas == 5
    at_ceiling = build.hpa(low=5, high=5, running=5)
    assert plan_scale(deployment=build.deployment(), hpas=[at_ceiling], max_replicas=10).patch is (
        None
    )


def test_an_hpa_running_above_the_reactions_max_is_left_alone(build: Any) -> None:
    hpa = build.hpa(low=2, high=20, running=12)
    plan = plan_scale(deployment=build.deployment(), hpas=[hpa], max_replicas=8)
    assert plan.to_replicas == 8
    above = build.hpa(low=9, high=20, running=12)
    assert plan_scale(deployment=build.deployment(), hpas=[above], max_replicas=8).patch is None


def test_an_hpa_of_another_deployment_is_ignored(build: Any) -> None:
    plan = plan_scale(deployment=build.deployment(), hpas=[build.hpa("other")], max_replicas=10)
    assert plan.target == "Deployment/fraud-model"


# --------------------------------------------------------------------------- pause


def test_pause_scales_the_canary_to_zero_and_remembers_its_count(build: Any) -> None:
    canary = build.deployment("fraud-canary", replicas=3)
    plan = plan_pause(deployment=canary)
    assert plan.from_replicas == 3
    after = apply_merge_patch(canary, plan.patch)
    assert after["spec"]["replicas"] == 0
    assert after["metadata"]["annotations"][PAUSED_FROM_ANNOTATION] == "3"
    assert after["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "7"
    assert plan.patch is not None and plan.patch["metadata"]["resourceVersion"] == "100"


def test_pause_of_a_paused_canary_is_nothing(build: Any) -> None:
    assert plan_pause(deployment=build.deployment("fraud-canary", replicas=0)) == (None, 0)


def test_pause_refuses_a_canary_an_hpa_would_scale_back(build: Any) -> None:
    canary = build.deployment("fraud-canary", replicas=2)
    with pytest.raises(PauseError, match="HorizontalPodAutoscaler fraud-canary scales"):
        plan_pause(deployment=canary, hpas=[build.hpa("fraud-canary")])
