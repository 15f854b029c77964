"""Verification and undo of actions on StatefulSets, Argo Rollouts and KServe InferenceServices.

Each undo goes through the owner's own mechanism (react/verify.py's docstring); each
verification counts the records of the revision that serves after the action, found through
the owner's history (react/revisions.py). Objects look as the owners' controllers write them.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from mlwarden.patches import apply_merge_patch
from mlwarden.react import revisions, verify
from mlwarden.react.actions import ActionRecord
from mlwarden.react.actuators import workloads
from mlwarden.react.targets import PatchTarget, object_key, split_target
from mlwarden.spec import Guardrails

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def template(image: str) -> dict[str, Any]:
    return {"metadata": {"labels": {"app": "m"}},
            "spec": {"containers": [{"name": "model", "image": image}]}}  # fmt: skip


def controller_revision(name: str, n: int, image: str) -> dict[str, Any]:
    return {"kind": "ControllerRevision",
            "metadata": {"name": name, "labels": {"controller-revision-hash": name},
                         "ownerReferences": [{"kind": "StatefulSet", "name": "m", "uid": "u1"}]},
            "revision": n, "data": {"spec": {"template": {**template(image),
                                                          "$patch": "replace"}}}}  # fmt: skip


def statefulset(image: str, update: str) -> dict[str, Any]:
    return {"kind": "StatefulSet",
            "metadata": {"name": "m", "uid": "u1", "resourceVersion": "5"},
            "spec": {"template": template(image), "updateStrategy": {
                "type": "RollingUpdate", "rollingUpdate": {"partition": 2}}},
            "status": {"currentRevision": update, "updateRevision": update}}  # fmt: skip


def record(target: str, action: str, frm: str, to: str, **kw: Any) -> ActionRecord:
    return ActionRecord(id=f"{action}-1", action=action, target=target, from_state=frm,
                        to_state=to, reason="PredictionDrift", result="Succeeded",
                        at="2026-12-01T11:50:00Z", **kw)  # fmt: skip


def test_split_target_reads_a_subresource_and_names_a_bad_key() -> None:
    assert split_target("Rollout/r/status") == PatchTarget("Rollout", "r", "status")
    assert split_target("Rollout/r/status").key == ("Rollout", "r")
    assert str(split_target("Deployment/d")) == "Deployment/d"
    assert object_key("Rollout/r/status") == object_key("Rollout/r") == ("Rollout", "r")
    for bad, why in (("Rollout", "expected Kind/name"), ("Rollout/r/scale", "'scale'"),
                     ("/r", "expected Kind/name")):  # fmt: skip
        with pytest.raises(ValueError, match=why):
            split_target(bad)


def test_a_statefulset_rollback_is_verified_on_the_restored_revision_and_undone(
    kind_model: Any,
) -> None:
    # Rolled back from revision 3 (model:2) to 2: the controller re-numbered 2's template 4.
    live = statefulset("model:1", "m-b")
    crs = [controller_revision("m-a", 1, "model:0"), controller_revision("m-b", 4, "model:1"),
           controller_revision("m-c", 3, "model:2")]  # fmt: skip
    snap = {("StatefulSet", "m"): live, **{("ControllerRevision", c["metadata"]["name"]): c
                                           for c in crs}}  # fmt: skip
    done = record("StatefulSet/m", "rollback", "3", "4", held={"StatefulSet/m": {}})
    alert = {"type": "PredictionDrift", "test": "psi", "since": "2026-12-01T11:40:00Z"}
    assert verify.serving_revision(done, alert, snap) == "m-b"
    # As the actuator records it ("3" -> "2", the number it restored), read after the
    # controller renumbered it (a verification resumed after an operator restart): the newest.
    recorded = record("StatefulSet/m", "rollback", "3", "2", held={"StatefulSet/m": {}})
    assert verify.serving_revision(recorded, alert, snap) == "m-b"
    started = verify.start(
        done,
        alert=alert,
        detector={"revisions": [{"revision": "m-b", "records": 40}]},
        snapshot=snap,
        guardrails=Guardrails(),
        now=NOW,
    )
    assert (started["revision"], started["recordsAt"]) == ("m-b", 40)
    assert started["revisionLabel"] == "revision 4 (model:1, pod-template-hash m-b)"
    # NotFixed: forward again to revision 3's template, the partition untouched.
    undo = verify.plan_undo(done, model=kind_model("StatefulSet", "m"), snapshot=snap, now=NOW)
    assert (undo.result, undo.from_state, undo.to_state) == ("Running", "4", "3"), undo.message
    after = apply_merge_patch(copy.deepcopy(live), undo.patch["StatefulSet/m"])
    assert after["spec"]["template"] == template("model:2")
    assert after["spec"]["updateStrategy"] == live["spec"]["updateStrategy"]
    assert undo.patch["StatefulSet/m"]["metadata"] == {"resourceVersion": "5"}


def rollout(**status: Any) -> dict[str, Any]:
    return {"kind": "Rollout",
            "metadata": {"name": "r", "uid": "u2", "resourceVersion": "9",
                         "annotations": {revisions.ROLLOUT_REVISION: "2"}},
            "spec": {"template": template("model:2")}, "status": status}  # fmt: skip


def argo_replicaset(digest: str, n: int, image: str) -> dict[str, Any]:
    labels = {"app": "m", "rollouts-pod-template-hash": digest}
    return {"kind": "ReplicaSet",
            "metadata": {"name": f"r-{digest}", "labels": labels,
                         "annotations": {revisions.ROLLOUT_REVISION: str(n)},
                         "ownerReferences": [{"kind": "Rollout", "name": "r", "uid": "u2"}]},
            "spec": {"template": {**template(image), "metadata": {"labels": labels}}}}  # fmt: skip


def test_a_rollout_abort_is_verified_on_the_stable_replicaset_and_retried_as_undo(
    kind_model: Any,
) -> None:
    live = rollout(currentPodHash="bbb", stableRS="aaa")
    snap: dict[tuple[str, str], Any] = {("Rollout", "r"): live}
    plan = workloads.propose("rollback", kind="Rollout", name="r", objects=snap)
    done = record(plan.target, "rollback", plan.from_state, plan.to_state,
                  held={key: {} for key in plan.patch})  # fmt: skip
    assert verify.aborted(done)
    assert verify.serving_revision(done, {}, snap) == "aaa"
    # Not aborted any more (a person retried it): refused, saying so.
    refused = verify.plan_undo(done, model=kind_model("Rollout", "r"), snapshot=snap, now=NOW)
    assert refused.result == "Failed" and "no longer aborted" in refused.message
    snap[("Rollout", "r")] = rollout(currentPodHash="bbb", stableRS="aaa", abort=True)
    undo = verify.plan_undo(done, model=kind_model("Rollout", "r"), snapshot=snap, now=NOW)
    # As `kubectl argo rollouts retry rollout`: the status subresource, abort false.
    assert undo.patch == {"Rollout/r/status": {"status": {"abort": False},
                                               "metadata": {"resourceVersion": "9"}}}  # fmt: skip
    assert (undo.from_state, undo.to_state) == ("aaa", "bbb")


def test_a_rollout_template_rollback_is_verified_and_rolled_forward(kind_model: Any) -> None:
    # Promoted revision 2 (bbb, model:2) rolled back to 1's template: Argo raised it to 3.
    live = rollout(currentPodHash="aaa", stableRS="aaa")
    live["spec"]["template"] = template("model:1")
    live["metadata"]["annotations"][revisions.ROLLOUT_REVISION] = "3"
    snap = {("Rollout", "r"): live, ("ReplicaSet", "r-aaa"): argo_replicaset("aaa", 3, "model:1"),
            ("ReplicaSet", "r-bbb"): argo_replicaset("bbb", 2, "model:2")}  # fmt: skip
    done = record("Rollout/r", "rollback", "2", "3", held={"Rollout/r": {}})
    assert not verify.aborted(done)
    assert verify.serving_revision(done, {}, snap) == "aaa"
    undo = verify.plan_undo(done, model=kind_model("Rollout", "r"), snapshot=snap, now=NOW)
    assert undo.result == "Running", undo.message
    after = apply_merge_patch(copy.deepcopy(live), undo.patch["Rollout/r"])
    assert after["spec"]["template"] == template("model:2")
    # A pause is resumed.
    paused = record("Rollout/r", "pause", "rolling", "paused", held={"Rollout/r": {}})
    resume = verify.plan_undo(paused, model=kind_model("Rollout", "r"), snapshot=snap, now=NOW)
    assert resume.patch == {"Rollout/r": {"spec": {"paused": False},
                                          "metadata": {"resourceVersion": "9"}}}  # fmt: skip


def inference_service(percent: int | None) -> dict[str, Any]:
    predictor: dict[str, Any] = {"model": {"storageUri": "gs://models/fraud/2"}}
    if percent is not None:
        predictor["canaryTrafficPercent"] = percent
    return {"kind": "InferenceService",
            "metadata": {"name": "i", "resourceVersion": "4"}, "spec": {"predictor": predictor},
            "status": {"components": {"predictor": {
                "latestRolledoutRevision": "i-predictor-00001",
                "latestReadyRevision": "i-predictor-00002"}}}}  # fmt: skip


def test_an_inference_service_pin_is_verified_on_default_and_undone_to_its_percent(
    kind_model: Any,
) -> None:
    snap = {("InferenceService", "i"): inference_service(0)}
    done = record("InferenceService/i", "rollback", "10", "0",
                  held={"InferenceService/i": {}})  # fmt: skip
    assert verify.serving_revision(done, {}, snap) == "default"
    assert verify.serving_revision(done, {"baselineRevision": "default"}, snap) == "default"
    undo = verify.plan_undo(done, model=kind_model("InferenceService", "i"), snapshot=snap, now=NOW)
    assert undo.patch == {"InferenceService/i": {
        "spec": {"predictor": {"canaryTrafficPercent": 10}},
        "metadata": {"resourceVersion": "4"}}}  # fmt: skip


def test_every_owner_resolves_its_revisions_and_serves_them(kind_model: Any) -> None:
    lists: dict[str, list[dict[str, Any]]] = {
        "ControllerRevision": [controller_revision("m-b", 2, "model:1")],
        "ReplicaSet": [argo_replicaset("bbb", 2, "model:2")],
        "InferenceService": [inference_service(10)],
    }
    found = revisions.history(lists)
    assert revisions.resolve("m-b", found).owner == ("StatefulSet", "m")
    assert revisions.resolve("bbb", found).owner == ("Rollout", "r")
    canary = revisions.resolve("canary", found)
    assert canary.owner == ("InferenceService", "i")
    assert canary.label == "revision 2 (models/fraud/2)"
    default = revisions.resolve("default", found)
    assert (default.owner, default.deployment_revision, default.image) == (
        ("InferenceService", "i"),
        1,
        None,
    )  # the spec is the canary's: default's image unknown
    om = kind_model("Rollout", "r")
    assert revisions.owner_of("bbb", lists, model=om) == ("Rollout", "r")
    assert revisions.owner_of("nope", lists, model=om) is None
    shown = revisions.status_revisions(om, [{"revision": "bbb", "share": 1.0}], lists)
    assert shown == [{"revision": "bbb", "deploymentRevision": 2, "deployment": "r",
                      "image": "model:2", "share": 1.0}]  # fmt: skip
    # No canary (canaryTrafficPercent unset): `default` is the spec's revision.
    alone = revisions.history({"InferenceService": [inference_service(None)]})
    images = [revisions.resolve(r, alone).image for r in ("default", "canary")]
    assert images == ["models/fraud/2", None]
