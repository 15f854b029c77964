"""Rollback and pause of StatefulSets, Argo Rollouts and KServe InferenceServices (pure)."""

from __future__ import annotations

import copy
from typing import Any

from mlwarden.patches import apply_merge_patch
from mlwarden.react.actuators import workloads


def template(image: str, *, sidecar: bool = False) -> dict[str, Any]:
    containers: list[dict[str, Any]] = [
        {"name": "model", "image": image, "ports": [{"name": "http", "containerPort": 8080}]}
    ]
    if sidecar:
        containers[0]["ports"][0]["name"] = "mlwarden-model"
        containers.append({"name": "mlwarden-sidecar", "image": "mlwarden:1",
                           "ports": [{"name": "http", "containerPort": 18080}]})  # fmt: skip
    return {"metadata": {"labels": {"app": "m"}}, "spec": {"containers": containers}}


def sts(update: str) -> dict[str, Any]:
    return {
        "kind": "StatefulSet",
        "metadata": {"name": "m", "uid": "u1", "resourceVersion": "5"},
        "spec": {
            "template": template("model:2", sidecar=True),
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 1}},
        },
        "status": {"currentRevision": update, "updateRevision": update},
    }


def revision(name: str, n: int, image: str, *, sidecar: bool = False) -> dict[str, Any]:
    data = {"spec": {"template": {**template(image, sidecar=sidecar), "$patch": "replace"}}}
    return {
        "kind": "ControllerRevision",
        "metadata": {"name": name, "ownerReferences": [{"kind": "StatefulSet", "name": "m",
                                                        "uid": "u1"}]},
        "revision": n,
        "data": data,
    }  # fmt: skip


def test_statefulset_rollback_restores_the_previous_revision_with_the_sidecar() -> None:
    live = sts("m-c")
    objects = {
        ("StatefulSet", "m"): live,
        ("ControllerRevision", "m-a"): revision("m-a", 1, "model:1"),
        ("ControllerRevision", "m-b"): revision("m-b", 2, "model:1", sidecar=True),
        ("ControllerRevision", "m-c"): revision("m-c", 3, "model:2", sidecar=True),
    }
    plan = workloads.propose("rollback", kind="StatefulSet", name="m", objects=objects)
    assert plan.problem is None, plan.problem
    assert (plan.from_state, plan.to_state) == ("3", "2")
    after = apply_merge_patch(copy.deepcopy(live), plan.patch["StatefulSet/m"])
    assert after["spec"]["template"] == template("model:1", sidecar=True)
    assert after["spec"]["updateStrategy"] == live["spec"]["updateStrategy"]  # partition kept
    assert plan.patch["StatefulSet/m"]["metadata"] == {"resourceVersion": "5"}
    assert workloads.propose("pause", kind="StatefulSet", name="m", objects=objects).problem


def rollout(**status: Any) -> dict[str, Any]:
    return {
        "kind": "Rollout",
        "metadata": {"name": "r", "uid": "u2", "resourceVersion": "9",
                     "annotations": {workloads.ROLLOUT_REVISION: "2"}},
        "spec": {"template": template("model:2", sidecar=True)},
        "status": status,
    }  # fmt: skip


def test_rollout_canary_in_progress_is_aborted_as_the_plugin_does() -> None:
    live = rollout(currentPodHash="bbb", stableRS="aaa")
    plan = workloads.propose("rollback", kind="Rollout", name="r", objects={("Rollout", "r"): live})
    # To the status subresource, with the Rollout's version as its precondition (a restarted
    # operator re-applies it only when nothing moved since).
    assert plan.patch == {"Rollout/r/status": {"status": {"abort": True},
                                               "metadata": {"resourceVersion": "9"}}}  # fmt: skip
    assert (plan.from_state, plan.to_state) == ("bbb", "aaa")
    done = rollout(currentPodHash="bbb", stableRS="aaa", abort=True)
    again = workloads.propose("rollback", kind="Rollout", name="r",
                              objects={("Rollout", "r"): done})  # fmt: skip
    assert again.idle and not again.patch


def test_rollout_promoted_is_undone_to_the_previous_replicaset() -> None:
    live = rollout(currentPodHash="bbb", stableRS="bbb")
    old = {
        "kind": "ReplicaSet",
        "metadata": {"name": "r-aaa", "annotations": {workloads.ROLLOUT_REVISION: "1"},
                     "ownerReferences": [{"kind": "Rollout", "name": "r", "uid": "u2"}]},
        "spec": {"template": {**template("model:1"), "metadata": {
            "labels": {"app": "m", "rollouts-pod-template-hash": "aaa"}}}},
    }  # fmt: skip
    objects = {("Rollout", "r"): live, ("ReplicaSet", "r-aaa"): old}
    plan = workloads.propose("rollback", kind="Rollout", name="r", objects=objects)
    assert plan.problem is None, plan.problem
    after = apply_merge_patch(copy.deepcopy(live), plan.patch["Rollout/r"])
    assert after["spec"]["template"] == template("model:1", sidecar=True)
    pause = workloads.propose("pause", kind="Rollout", name="r", objects=objects)
    assert pause.patch == {"Rollout/r": {"spec": {"paused": True}}}


def test_a_promoted_rollout_with_a_workload_ref_is_not_rolled_back_by_its_template() -> None:
    live = rollout(currentPodHash="bbb", stableRS="bbb")
    live["spec"].pop("template", None)
    live["spec"]["workloadRef"] = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "m"}
    plan = workloads.propose("rollback", kind="Rollout", name="r", objects={("Rollout", "r"): live})
    assert not plan.patch
    assert plan.problem and "Deployment/m (spec.workloadRef)" in plan.problem
    # An update in progress is still aborted: the abort does not touch the template.
    moving = rollout(currentPodHash="ccc", stableRS="bbb")
    moving["spec"]["workloadRef"] = {"kind": "Deployment", "name": "m"}
    abort = workloads.propose("rollback", kind="Rollout", name="r",
                              objects={("Rollout", "r"): moving})  # fmt: skip
    assert "Rollout/r/status" in abort.patch


def test_inference_service_pinned_to_the_rolled_out_revision() -> None:
    isvc = {
        "kind": "InferenceService",
        "metadata": {"name": "i", "resourceVersion": "3"},
        "spec": {"predictor": {"canaryTrafficPercent": 20, "model": {"storageUri": "s3://m"}}},
    }
    for action in ("rollback", "pause", "shiftTraffic"):
        plan = workloads.propose(action, kind="InferenceService", name="i",
                                 objects={("InferenceService", "i"): isvc})  # fmt: skip
        assert plan.patch == {"InferenceService/i": {
            "spec": {"predictor": {"canaryTrafficPercent": 0}},
            "metadata": {"resourceVersion": "3"}}}  # fmt: skip
        assert (plan.from_state, plan.to_state) == ("20", "0")
    isvc["spec"]["predictor"]["canaryTrafficPercent"] = 0
    idle = workloads.propose("rollback", kind="InferenceService", name="i",
                             objects={("InferenceService", "i"): isvc})  # fmt: skip
    assert idle.idle and not idle.patch


def test_revision_history_of_every_kind_resolves_like_replicasets() -> None:
    from mlwarden.react import revisions

    crs = [revision("m-a", 1, "model:1"), revision("m-c", 3, "model:2", sidecar=True)]
    argo_rs = {
        "metadata": {"name": "r-bbb", "labels": {"rollouts-pod-template-hash": "bbb"},
                     "annotations": {workloads.ROLLOUT_REVISION: "4"},
                     "ownerReferences": [{"kind": "Rollout", "name": "r"}]},
        "spec": {"template": template("model:4")},
    }  # fmt: skip
    plain_rs = {
        "metadata": {"name": "d-ccc", "labels": {"pod-template-hash": "ccc"},
                     "annotations": {"deployment.kubernetes.io/revision": "9"},
                     "ownerReferences": [{"kind": "Deployment", "name": "d"}]},
        "spec": {"template": template("model:9")},
    }  # fmt: skip
    found = revisions.history({"ReplicaSet": [argo_rs, plain_rs], "ControllerRevision": crs})
    sts = revisions.resolve("m-c", found, deployments=["m"])
    assert (sts.deployment, sts.deployment_revision, sts.image) == ("m", 3, "model:2")
    ro = revisions.resolve("bbb", found, deployments=["r"])
    assert (ro.deployment, ro.deployment_revision, ro.label) == ("r", 4, "revision 4 (model:4)")
    assert revisions.resolve("ccc", found).deployment_revision == 9
    assert revisions.resolve("nope", found).label == "revision nope"
