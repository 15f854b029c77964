"""Diagnosis of models served by other kinds: an Argo Rollout's, a StatefulSet's and a KServe
InferenceService's revisions enter the graph through `react.revisions` (the resolution the
reactions use), and a Rollout's ReplicaSets are its timeline."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from mlwarden.diagnose import Snapshot, diagnose
from mlwarden.diagnose.rank import _revision_owner

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def template(image: str, digest: str | None = None) -> dict[str, Any]:
    labels = {"app": "m"} if digest is None else {"app": "m", "rollouts-pod-template-hash": digest}
    return {"metadata": {"labels": labels},
            "spec": {"containers": [{"name": "model", "image": image}]}}  # fmt: skip


def argo_replicaset(digest: str, n: int, image: str, created: str) -> dict[str, Any]:
    return {"metadata": {"name": f"fraud-model-{digest}", "creationTimestamp": created,
                         "labels": {"app": "m", "rollouts-pod-template-hash": digest},
                         "annotations": {"rollout.argoproj.io/revision": str(n)},
                         "ownerReferences": [{"kind": "Rollout", "name": "fraud-model",
                                              "uid": "u-ro"}]},
            "spec": {"template": template(image, digest)}}  # fmt: skip


def canary(revision: str) -> dict[str, Any]:
    return {"type": "CanaryRegression", "test": "canary", "since": "2026-12-01T11:50:00Z",
            "modelRevision": revision, "baselineRevision": "x"}  # fmt: skip


def test_a_rollouts_canary_regression_blames_the_rollout_and_its_new_image(kind_model: Any) -> None:
    rollout = {"metadata": {"name": "fraud-model", "uid": "u-ro",
                            "creationTimestamp": "2026-11-30T10:00:00Z"},
               "spec": {"template": template("fraud:2")}}  # fmt: skip
    lists = {"Rollout": [rollout], "ReplicaSet": [
        argo_replicaset("aaa", 1, "fraud:1", "2026-11-30T10:00:00Z"),
        argo_replicaset("bbb", 2, "fraud:2", "2026-12-01T11:45:00Z")]}  # fmt: skip
    snap = Snapshot.from_lists(model=kind_model("Rollout", "fraud-model"), lists=lists,
                               alerts=[canary("bbb")], now=NOW)  # fmt: skip
    assert _revision_owner(snap, "bbb") == ("Rollout", "fraud-model")
    found = diagnose(snap)
    assert found.top is not None
    assert (found.top.kind, found.top.name) == ("Rollout", "fraud-model")
    text = str(found.top.to_dict())
    assert "fraud:1" in text and "fraud:2" in text, text  # the revision's change, from Argo's RS


def test_a_statefulsets_and_an_inference_services_revisions_have_their_owner(
    kind_model: Any,
) -> None:
    cr = {"metadata": {"name": "fraud-model-5d4c", "labels": {
              "controller-revision-hash": "fraud-model-5d4c"},
              "ownerReferences": [{"kind": "StatefulSet", "name": "fraud-model"}]},
          "revision": 2, "data": {"spec": {"template": template("fraud:2")}}}  # fmt: skip
    snap = Snapshot.from_lists(model=kind_model("StatefulSet", "fraud-model"),
                               lists={"ControllerRevision": [cr]}, alerts=[], now=NOW)  # fmt: skip
    assert _revision_owner(snap, "fraud-model-5d4c") == ("StatefulSet", "fraud-model")
    isvc = {"metadata": {"name": "fraud"}, "spec": {"predictor": {"canaryTrafficPercent": 10}},
            "status": {"components": {"predictor": {
                "latestRolledoutRevision": "fraud-predictor-00001",
                "latestReadyRevision": "fraud-predictor-00002"}}}}  # fmt: skip
    snap = Snapshot.from_lists(model=kind_model("InferenceService", "fraud"),
                               lists={"InferenceService": [isvc]}, alerts=[canary("canary")],
                               now=NOW)  # fmt: skip
    assert _revision_owner(snap, "canary") == ("InferenceService", "fraud")
    assert _revision_owner(snap, "default") == ("InferenceService", "fraud")
    # KServe's revisions are Knative's (not in the snapshot): no change to rank, said so.
    found = diagnose(snap)
    assert found.top is None and "no node of the graph changed" in found.summary
    assert not found.problems  # the target InferenceService is in the graph, observed
