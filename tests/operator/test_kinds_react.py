"""Reactions on the other target kinds, with the real operator: resumed, verified, undone.

The owners' controllers are imitated in emulate_kinds.py: Argo Rollouts' (canary in
progress, abort, retry), the StatefulSet controller's ControllerRevisions, and KServe's
canary rollout of an InferenceService's predictor (`emulate_kserve`: Knative revision names,
latestRolledoutRevision / latestReadyRevision, the traffic split). For each kind: the action
through the owner's own fields, its verification on the revision that serves after it (found
through that owner's history: react/revisions.py), and with `undoIfNotFixed` its undo through
the owner's own mechanism (react/verify.py). Also: an Argo abort recorded as Running when the
operator stopped is completed by the next operator, not failed (its patch goes to
`Rollout/NAME/status`, react/targets.py).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
from cluster import (
    FAST,
    MERGE,
    NS,
    OM,
    OPERATOR_CALLS,
    REFERENCE,
    SERVICES,
    Cluster,
    ago,
    alert,
    api_call,
    eventually,
    iso,
    model_service,
    obj,
    patch_status,
    reactions,
    status,
)
from emulate_kinds import INFERENCESERVICES, ROLLOUTS, STATEFULSETS
from test_kinds import (
    RO_PATH,
    STS_PATH,
    delete_om,
    inference_service,
    observing,
    om,
    start,
    template_of,
    user_patch,
    workload,
)
from test_verification import a_second_later, just_now, revisions

from mlwarden.react.actions import action_id

Start = Callable[..., Any]
VERIFY = {"cooldown": "0s", "verifyWithin": "3s", "verifyMinRecords": 50, "undoIfNotFixed": True}
DRIFT = {"alert": "PredictionDrift", "action": "rollback"}


def failing(signal: str, revision: str, test: str = "ks") -> dict[str, Any]:
    """status.detector.signals[]: an evaluation made just now that still fails."""
    return {"type": signal, "feature": None, "test": test, "statistic": 0.3, "threshold": 0.1,
            "failing": True, "at": just_now(), "modelRevision": revision}  # fmt: skip


def record_of(api: Cluster, action: str = "rollback") -> dict[str, Any]:
    """The first record of `action` that is not an undo."""
    return next(r for r in reactions(api) if r["action"] == action and not r.get("undoes"))


def verdict(api: Cluster) -> Any:
    try:
        return (record_of(api).get("verification") or {}).get("verdict")
    except StopIteration:
        return None


def undone(api: Cluster) -> dict[str, Any] | None:
    found = [r for r in reactions(api) if r.get("undoes")]
    return found[0] if len(found) == 1 and found[0]["result"] != "Running" else None


async def uninstalled(api: Cluster, server: str, op: Any) -> None:
    """The ObservedModel deleted (its undo runs), then the operator stopped cleanly."""
    await delete_om(api, server)
    assert await op.stop() == 0, op.log()[-3000:]


def status_patches(resource: str) -> int:
    return sum(1 for c in OPERATOR_CALLS if c.verb == "patch" and c.resource == resource)


# --------------------------------------------------------------------------- Argo Rollout


@pytest.mark.parametrize("applied", [False, True], ids=["not-applied", "applied"])
async def test_an_interrupted_rollout_abort_is_completed_verified_and_retried_as_its_undo(
    applied: bool, cluster: tuple[Cluster, str], start_operator: Start
) -> None:
    api, server = cluster
    model = om({"kind": "Rollout", "name": "fraud-model", "container": "model"},
               reactions=[DRIFT], guardrails=VERIFY)  # fmt: skip
    op = await start(api, start_operator, (ROLLOUTS, workload("Rollout", steps=True)),
                     (SERVICES, model_service()), model=model)  # fmt: skip
    await eventually(lambda: obj(api, ROLLOUTS, "fraud-model").get("status", {}).get("phase")
                     == "Paused", what="the injection's canary", timeout=30)  # fmt: skip
    await api.promote_rollout(NS, "fraud-model")
    await observing(api, server)
    # A new image goes out as a canary, held at its pause step.
    containers = copy.deepcopy(template_of(api, ROLLOUTS)["spec"]["containers"])
    containers[0]["image"] = "seldonio/mlserver:1.7.0"
    await user_patch(server, RO_PATH, {"spec": {"template": {"spec": {"containers": containers}}}})
    live = await eventually(lambda: (s := obj(api, ROLLOUTS, "fraud-model")["status"])
                            ["currentPodHash"] != s["stableRS"] and s, what="a canary")  # fmt: skip
    canary, stable = live["currentPodHash"], live["stableRS"]
    assert await op.stop() == 0, op.log()[-3000:]

    # What an operator stopped between recording the abort and finishing it leaves behind.
    version = obj(api, ROLLOUTS, "fraud-model")["metadata"]["resourceVersion"]
    if applied:
        await api_call(server, "PATCH", RO_PATH + "/status", {"status": {"abort": True}}, MERGE)
    since = iso(ago(minutes=1))
    rid = action_id(model_uid=obj(api, OM, "fraud")["metadata"]["uid"],
                    alert_key="PredictionDrift", onset=since, action="rollback",
                    target="Rollout/fraud-model", from_state=canary, to_state=stable)  # fmt: skip
    running = {
        "id": rid, "action": "rollback", "target": "Rollout/fraud-model", "from": canary,
        "to": stable, "reason": f"PredictionDrift since {since}", "result": "Running",
        "at": iso(ago(seconds=30)), "dryRun": False, "message": "recorded; taking it now",
        "patch": {"Rollout/fraud-model/status": {"metadata": {"resourceVersion": version},
                                                 "status": {"abort": True}}},
    }  # fmt: skip
    drift = {**alert("PredictionDrift", since=since), "modelRevision": canary}
    await patch_status(server, {"alerts": [drift], "reactions": [running], "detector": {
        "reference": REFERENCE, "revisions": revisions(**{stable: 900, canary: 100})}})  # fmt: skip
    before = status_patches("rollouts/status")

    op = await start_operator(env=FAST)
    await eventually(lambda: next(r for r in reactions(api) if r["id"] == rid)["result"]
                     != "Running", timeout=30, what="the abort settled")  # fmt: skip
    settled = next(r for r in reactions(api) if r["id"] == rid)
    assert settled["result"] == "Succeeded", settled
    ro = obj(api, ROLLOUTS, "fraud-model")
    assert ro["status"]["abort"] is True and ro["status"]["phase"] == "Degraded"
    if applied:
        assert "completed before an operator restart" in settled["message"], settled
        assert status_patches("rollouts/status") == before  # not sent twice
    else:
        assert status_patches("rollouts/status") >= before + 1  # a 409 is re-planned, re-sent
    # Verified on the stable ReplicaSet, which serves everything after the abort.
    await eventually(lambda: verdict(api) == "Pending", what="a Pending verification")
    assert record_of(api)["verification"]["revision"] == stable
    assert [r["result"] for r in reactions(api)].count("Succeeded") == 1  # never aborted twice

    # The drift stays on the stable revision's records: NotFixed; undone as
    # `kubectl argo rollouts retry rollout` does, the canary going on at its step.
    await a_second_later()
    await patch_status(server, {"detector": {
        "revisions": revisions(**{stable: 1100, canary: 100}),
        "signals": [failing("PredictionDrift", stable)]}})  # fmt: skip
    await eventually(lambda: verdict(api) == "NotFixed", what="NotFixed", timeout=20)
    undo = await eventually(lambda: undone(api), what="the undo settled", timeout=20)
    assert (undo["result"], undo["from"], undo["to"], undo["undoes"]) == (
        "Succeeded", stable, canary, rid), undo  # fmt: skip
    ro = obj(api, ROLLOUTS, "fraud-model")
    assert ro["status"]["abort"] is False and ro["status"]["phase"] == "Paused"
    await uninstalled(api, server, op)


# --------------------------------------------------------------------------- StatefulSet


async def test_a_statefulset_rollback_is_verified_and_undone_through_its_revisions(
    cluster: tuple[Cluster, str], start_operator: Start
) -> None:
    api, server = cluster
    sts = workload("StatefulSet")
    strategy = copy.deepcopy(sts["spec"]["updateStrategy"])
    model = om({"kind": "StatefulSet", "name": "fraud-model", "container": "model"},
               reactions=[DRIFT], guardrails=VERIFY)  # fmt: skip
    op = await start(api, start_operator, (STATEFULSETS, sts), (SERVICES, model_service()),
                     model=model)  # fmt: skip
    await observing(api, server)
    injected = template_of(api, STATEFULSETS)
    good = obj(api, STATEFULSETS, "fraud-model")["status"]["updateRevision"]
    containers = copy.deepcopy(injected["spec"]["containers"])
    containers[0]["image"] = "seldonio/mlserver:1.7.0"
    await user_patch(server, STS_PATH, {"spec": {"template": {"spec": {"containers": containers}}}})
    bad = await eventually(lambda: (r := obj(api, STATEFULSETS, "fraud-model")["status"]
                           ["updateRevision"]) != good and r, what="revision 3")  # fmt: skip
    await patch_status(server, {"detector": {"revisions": revisions(**{good: 900, bad: 300})}})
    await patch_status(server, {"alerts": [{**alert("PredictionDrift"), "modelRevision": bad}]})
    await eventually(lambda: verdict(api) == "Pending", what="rolled back", timeout=30)
    record = record_of(api)
    assert (record["target"], record["from"], record["to"]) == ("StatefulSet/fraud-model", "3", "2")
    # Verified on the restored ControllerRevision (its controller-revision-hash).
    pending = record["verification"]
    assert (pending["revision"], pending["recordsAt"]) == (good, 900)
    assert pending["revisionLabel"] == f"revision 2 (mlserver:1.6.0, pod-template-hash {good})"
    assert template_of(api, STATEFULSETS) == injected

    await a_second_later()
    await patch_status(server, {"detector": {
        "revisions": revisions(**{good: 1000, bad: 300}),
        "signals": [failing("PredictionDrift", good)]}})  # fmt: skip
    await eventually(lambda: verdict(api) == "NotFixed", what="NotFixed", timeout=20)
    undo = await eventually(lambda: undone(api), what="the undo settled", timeout=20)
    assert (undo["result"], undo["from"], undo["to"]) == ("Succeeded", "2", "3"), undo
    # Forward again to the template it left, as `kubectl rollout undo statefulset
    # --to-revision` would; the update strategy is the owner's and untouched.
    live = obj(api, STATEFULSETS, "fraud-model")
    assert live["spec"]["template"]["spec"]["containers"] == containers
    assert live["spec"]["updateStrategy"] == strategy
    await uninstalled(api, server, op)


# --------------------------------------------------------------------------- KServe


async def test_an_inference_service_pin_is_shown_verified_and_undone_through_kserve(
    cluster: tuple[Cluster, str], start_operator: Start
) -> None:
    api, server = cluster
    api.emulate_kserve()
    isvc = inference_service()
    del isvc["spec"]["predictor"]["canaryTrafficPercent"]  # rolled out whole at first
    model = om({"kind": "InferenceService", "name": "fraud"},
               reactions=[{"alert": "CanaryRegression", "action": "rollback"}],
               guardrails=VERIFY)  # fmt: skip
    op = await start(api, start_operator, (INFERENCESERVICES, isvc), model=model)
    await observing(api, server)

    def predictor() -> dict[str, Any]:
        return dict(obj(api, INFERENCESERVICES, "fraud")["status"]["components"]["predictor"])

    # The logger's configuration is a revision of its own (00002), rolled out whole.
    assert predictor()["latestRolledoutRevision"] == "fraud-predictor-00002"
    # A person rolls a new model out as a canary with 10% of the traffic (KServe's docs).
    await user_patch(server, f"/apis/serving.kserve.io/v1beta1/namespaces/{NS}/"
                     "inferenceservices/fraud", {"spec": {"predictor": {
                         "canaryTrafficPercent": 10,
                         "model": {"storageUri": "gs://models/fraud/3"}}}})  # fmt: skip
    await eventually(lambda: predictor()["latestReadyRevision"] == "fraud-predictor-00003",
                     what="the canary revision")  # fmt: skip
    await patch_status(server, {"detector": {"revisions": revisions(default=900, canary=100)}})
    # The detector's endpoints resolved through KServe's revisions (status.revisions).
    shown = await eventually(lambda: len(status(api).get("revisions") or []) == 2
                             and status(api)["revisions"], what="status.revisions")  # fmt: skip
    assert {(e["revision"], e.get("deploymentRevision"), e.get("image")) for e in shown} == {
        ("default", 2, None), ("canary", 3, "models/fraud/3")}  # fmt: skip
    regression = {**alert("CanaryRegression"), "test": "canary", "modelRevision": "canary",
                  "baselineRevision": "default"}  # fmt: skip
    await patch_status(server, {"alerts": [regression]})
    await eventually(lambda: verdict(api) == "Pending", what="pinned", timeout=30)
    record = record_of(api)
    assert (record["target"], record["from"], record["to"]) == ("InferenceService/fraud", "10", "0")
    assert record["verification"]["revision"] == "default"
    assert predictor()["traffic"][0] == {"revisionName": "fraud-predictor-00002", "percent": 100,
                                         "tag": "prev"}  # fmt: skip

    # The canary still gets records and still fails (the pin did not stop it): NotFixed, and
    # the pin undone: canaryTrafficPercent back to 10, the split 90/10 again.
    await a_second_later()
    await patch_status(server, {"detector": {
        "revisions": revisions(default=1000, canary=160),
        "signals": [failing("CanaryRegression", "canary", test="canary")]}})  # fmt: skip
    await eventually(lambda: verdict(api) == "NotFixed", what="NotFixed", timeout=20)
    undo = await eventually(lambda: undone(api), what="the undo settled", timeout=20)
    assert (undo["result"], undo["from"], undo["to"]) == ("Succeeded", "0", "10"), undo
    live = obj(api, INFERENCESERVICES, "fraud")
    assert live["spec"]["predictor"]["canaryTrafficPercent"] == 10
    assert [t["percent"] for t in predictor()["traffic"]] == [90, 10]
    await uninstalled(api, server, op)
