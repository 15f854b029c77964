"""Rollback: `kubectl rollout undo` as a merge patch, keeping mlwarden's injected sidecar."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from mlwarden.names import MODEL_PORT_RENAMED, SIDECAR_CONTAINER
from mlwarden.operator.injection import SIDECAR_VOLUME, plan_injection
from mlwarden.operator.settings import OperatorSettings
from mlwarden.patches import apply_merge_patch
from mlwarden.react.actuators.rollback import (
    RollbackError,
    owned_replicasets,
    plan_rollback,
    with_sidecar,
)
from mlwarden.spec import parse_observed_model

Obj = dict[str, Any]
Validate = Callable[[Obj], None]


def _history(
    build: Any, *images: str, first: int = 1, live_revision: int | None = None
) -> tuple[Obj, list[Obj]]:
    """A Deployment at the last image's revision, a ReplicaSet per image (`first`, first+1, …)."""
    last = first + len(images) - 1
    live = build.deployment(revision=live_revision or last, template=build.pod_template(images[-1]))
    sets = [
        build.replicaset(live, first + i, build.pod_template(image))
        for i, image in enumerate(images)
    ]
    return live, sets


def _rolled_back(deployment: Obj, patch: Obj) -> Obj:
    out: Obj = apply_merge_patch(deployment, patch)
    return out


def _containers(dep: Obj) -> dict[str, Obj]:
    return {c["name"]: c for c in dep["spec"]["template"]["spec"]["containers"]}


def test_goes_back_to_the_previous_revision(build: Any, valid_kubernetes: Validate) -> None:
    live, sets = _history(build, "fraud:5", "fraud:6", "fraud:7", first=5)
    plan = plan_rollback(deployment=live, replicasets=sets)
    assert (plan.from_revision, plan.to_revision) == ("7", "6")
    after = _rolled_back(live, plan.patch)
    assert after["spec"]["template"] == build.pod_template("fraud:6")  # no pod-template-hash
    assert plan.patch["metadata"] == {"resourceVersion": "100"}
    valid_kubernetes(after)


def test_to_revision(build: Any) -> None:
    live, sets = _history(build, "fraud:5", "fraud:6", "fraud:7", first=5)
    plan = plan_rollback(deployment=live, replicasets=sets, to_revision=5)
    assert (plan.from_revision, plan.to_revision) == ("7", "5")
    assert _containers(_rolled_back(live, plan.patch))["model"]["image"] == "fraud:5"


def test_fields_the_old_template_lacks_are_removed(build: Any) -> None:
    live, sets = _history(build, "fraud:6", "fraud:7")
    live["spec"]["template"]["metadata"]["annotations"] = {"kubectl.kubernetes.io/restartedAt": "x"}
    live["spec"]["template"]["spec"]["nodeSelector"] = {"gpu": "true"}
    plan = plan_rollback(deployment=live, replicasets=sets)
    assert _rolled_back(live, plan.patch)["spec"]["template"] == build.pod_template("fraud:6")


def test_only_the_deployments_own_replicasets_count(build: Any) -> None:
    live, sets = _history(build, "fraud:6", "fraud:7")
    other = build.deployment("other", uid="other-uid")
    foreign = build.replicaset(other, 6, build.pod_template("other:1"))
    assert owned_replicasets(deployment=live, replicasets=[*sets, foreign]) == sets
    plan = plan_rollback(deployment=live, replicasets=[foreign, *sets])
    assert _containers(_rolled_back(live, plan.patch))["model"]["image"] == "fraud:6"


def test_revision_numbers_not_list_order_decide(build: Any) -> None:
    live, sets = _history(build, "fraud:1", "fraud:2", "fraud:3", "fraud:4")
    plan = plan_rollback(deployment=live, replicasets=list(reversed(sets)))
    assert plan.to_revision == "3"


# --------------------------------------------------------------------------- errors


def test_no_previous_revision(build: Any) -> None:
    live, sets = _history(build, "fraud:1")
    with pytest.raises(RollbackError, match=r"no revision before 1 .*revisions: 1"):
        plan_rollback(deployment=live, replicasets=sets)


def test_no_previous_revision_says_when_history_is_not_kept(build: Any) -> None:
    live, sets = _history(build, "fraud:1")
    live["spec"]["revisionHistoryLimit"] = 0
    with pytest.raises(RollbackError, match="revisionHistoryLimit is 0"):
        plan_rollback(deployment=live, replicasets=sets)


def test_no_history_at_all(build: Any) -> None:
    live = build.deployment(revision=None)
    with pytest.raises(RollbackError, match="no revision yet"):
        plan_rollback(deployment=live, replicasets=[])


def test_unknown_to_revision(build: Any) -> None:
    live, sets = _history(build, "fraud:1", "fraud:2")
    with pytest.raises(RollbackError, match=r"no revision 9 \(revisions: 1, 2\).*toRevision"):
        plan_rollback(deployment=live, replicasets=sets, to_revision=9)


def test_to_the_current_revision(build: Any) -> None:
    live, sets = _history(build, "fraud:1", "fraud:2")
    with pytest.raises(RollbackError, match="at revision 2 already"):
        plan_rollback(deployment=live, replicasets=sets, to_revision=2)


def test_to_a_revision_with_the_running_template(build: Any) -> None:
    live, sets = _history(build, "fraud:1", "fraud:2", "fraud:1", live_revision=3)
    with pytest.raises(RollbackError, match="nothing to roll back"):
        plan_rollback(deployment=live, replicasets=sets, to_revision=1)


def test_a_paused_deployment_is_refused(build: Any) -> None:
    live, sets = _history(build, "fraud:1", "fraud:2")
    live["spec"]["paused"] = True
    with pytest.raises(RollbackError, match="paused; resume it first"):
        plan_rollback(deployment=live, replicasets=sets)


# --------------------------------------------------------------------------- the sidecar


def _injected_history(build: Any, *, by_name: bool = True) -> tuple[Obj, list[Obj]]:
    """Revisions: 1 fraud:6, 2 fraud:7 (both before mlwarden), 3 the injection of fraud:7,
    4 fraud:8 with the sidecar (the faulty rollout, running now)."""
    v6 = build.deployment(template=build.pod_template("fraud:6"), revision=1)
    v7 = build.deployment(template=build.pod_template("fraud:7"), revision=2)
    v7_injected = build.inject(v7, by_name=by_name)
    v8 = copy.deepcopy(v7_injected)
    _containers(v8)["model"]["image"] = "fraud:8"
    v8["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = "4"
    sets = [
        build.replicaset(v8, 1, v6["spec"]["template"]),
        build.replicaset(v8, 2, v7["spec"]["template"]),
        build.replicaset(v8, 3, v7_injected["spec"]["template"]),
        build.replicaset(v8, 4, v8["spec"]["template"]),
    ]
    return v8, sets


def _assert_injection_kept(after: Obj, live: Obj, *, image: str, port_name: str) -> None:
    containers = _containers(after)
    assert list(containers) == ["model", SIDECAR_CONTAINER]
    assert containers["model"]["image"] == image
    assert containers[SIDECAR_CONTAINER] == _containers(live)[SIDECAR_CONTAINER]
    assert [p["name"] for p in containers["model"]["ports"]] == [port_name]
    assert containers["model"]["readinessProbe"]["httpGet"]["port"] == port_name
    volumes = {v["name"] for v in after["spec"]["template"]["spec"]["volumes"]}
    assert SIDECAR_VOLUME in volumes


def test_rollback_keeps_the_sidecar(build: Any, valid_kubernetes: Validate) -> None:
    live, sets = _injected_history(build)
    plan = plan_rollback(deployment=live, replicasets=sets, to_revision=1)
    after = _rolled_back(live, plan.patch)
    # Case A: the Service targets `http`, which the sidecar's proxy port carries now; the
    # model's port keeps its number as `mlwarden-model`, and so does its probe.
    _assert_injection_kept(after, live, image="fraud:6", port_name=MODEL_PORT_RENAMED)
    assert _containers(after)[SIDECAR_CONTAINER]["ports"][0]["name"] == "http"
    valid_kubernetes(after)


def test_the_injection_planner_finds_nothing_to_redo(build: Any) -> None:
    live, sets = _injected_history(build)
    after = _rolled_back(live, plan_rollback(deployment=live, replicasets=sets).patch)
    model = parse_observed_model(
        {
            "apiVersion": "mlwarden.io/v1alpha1",
            "kind": "ObservedModel",
            "metadata": {"name": "fraud", "namespace": "ml"},
            "spec": {
                "target": {"deployment": "fraud-model", "service": "fraud-model"},
                "protocol": "v2",
            },
        }
    )
    plan = plan_injection(
        deployment=after,
        service=build.service(),
        model=model,
        settings=OperatorSettings(image="registry.example/mlwarden:1.2.3"),
    )
    assert plan.state in ("waiting-for-rollout", "injected"), plan.message
    assert plan.deployment_patch is None


def test_the_injections_own_revision_is_passed_over(build: Any) -> None:
    live, sets = _injected_history(build)
    # From 4 (fraud:8) the previous model version is 3 (fraud:7, injected).
    assert plan_rollback(deployment=live, replicasets=sets).to_revision == "3"
    # Running 3, revision 2 is the same model without the sidecar: it is passed over.
    at_three = copy.deepcopy(live)
    at_three["spec"]["template"] = copy.deepcopy(sets[2]["spec"]["template"])
    del at_three["spec"]["template"]["metadata"]["labels"]["pod-template-hash"]
    at_three["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = "3"
    plan = plan_rollback(deployment=at_three, replicasets=sets[:3])
    assert plan.to_revision == "1"
    # Revisions 2 and 3 run the same model (fraud:7); 2 rolled it out, 3 only injected.
    assert plan.same_model == (2, 3)
    _assert_injection_kept(
        _rolled_back(at_three, plan.patch), at_three, image="fraud:6", port_name=MODEL_PORT_RENAMED
    )


def test_rollback_keeps_the_sidecar_when_the_service_targets_a_number(
    build: Any, valid_kubernetes: Validate
) -> None:
    live, sets = _injected_history(build, by_name=False)
    plan = plan_rollback(deployment=live, replicasets=sets, to_revision=1)
    after = _rolled_back(live, plan.patch)
    # Case B: the sidecar's port has a name of its own; the model's port keeps `http`.
    _assert_injection_kept(after, live, image="fraud:6", port_name="http")
    valid_kubernetes(after)


def test_an_older_sidecar_in_the_old_template_is_replaced_by_the_live_one(build: Any) -> None:
    live, _ = _injected_history(build)
    old = copy.deepcopy(live["spec"]["template"])
    _containers({"spec": {"template": old}})[SIDECAR_CONTAINER]["image"] = "mlwarden:0.9"
    kept = with_sidecar(old, live=live["spec"]["template"])
    assert kept == live["spec"]["template"]


def test_without_a_sidecar_the_template_is_unchanged(build: Any) -> None:
    template = build.pod_template("fraud:6")
    assert with_sidecar(template, live=build.pod_template("fraud:7")) == template


def test_a_port_name_clash_is_an_error(build: Any) -> None:
    live, _ = _injected_history(build)
    old = build.pod_template("fraud:6")
    old["spec"]["containers"][0]["ports"].append({"name": "mlwarden-admin", "containerPort": 1})
    old["spec"]["containers"][0]["ports"].append({"name": "http2", "containerPort": 2})
    # `http` and `mlwarden-admin` both become `mlwarden-model`: two ports of one name.
    with pytest.raises(RollbackError, match="would name port 'mlwarden-model' twice"):
        with_sidecar(old, live=live["spec"]["template"])
