"""Verified remediation: the real operator judges whether its action fixed the trigger.

The tests seed `status.alerts` and `status.detector` exactly as CONTRACT17 (issue 17) says
the detector writes them: `detector.revisions[]` with cumulative `records` per revision and
`detector.signals[]` with the latest evaluation of each tracked check (`at`, `failing`,
`statistic`, `modelRevision`). verifyWithin is a few seconds and the timer pass runs every
0.5 s (FAST), so each verdict comes within seconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from cluster import (
    DEPLOYMENTS,
    FAST,
    OPERATOR_CALLS,
    REFERENCE,
    Cluster,
    ago,
    alert,
    events,
    eventually,
    iso,
    model_deployment,
    obj,
    patch_status,
    reactions,
    status,
)
from test_reactions import replicaset, results, versioned_deployment

from mlwarden.timestamps import format_time


def just_now() -> str:
    """An evaluation's `at`: now, as the detector writes it (second precision)."""
    return format_time(datetime.now(UTC))


async def a_second_later() -> None:
    """Times are to the second: an evaluation counts when it is later than the action's end."""
    await asyncio.sleep(1.1)


LATENCY = {"alert": "Latency", "action": "scale", "maxReplicas": 4}
VERIFY = {"verifyWithin": "3s", "verifyMinRecords": 50}


def revisions(**records: int) -> list[dict[str, Any]]:
    """status.detector.revisions as the detector writes it (CONTRACT17)."""
    return [{"revision": r, "records": n, "share": 1.0 / len(records),
             "firstSeen": iso(ago(minutes=30)), "lastSeen": iso(ago(seconds=1)),
             "role": "baseline"} for r, n in records.items()]  # fmt: skip


def latency_signal(*, failing: bool, statistic: float, revision: str = "h1") -> dict[str, Any]:
    """status.detector.signals[]: an evaluation made just now."""
    return {"type": "Latency", "feature": None, "test": "p99", "statistic": statistic,
            "threshold": 0.25, "failing": failing, "at": just_now(),
            "modelRevision": revision}  # fmt: skip


def latency(revision: str = "h1") -> dict[str, Any]:
    return {**alert("Latency"), "modelRevision": revision}


def the(api: Cluster, action: str) -> dict[str, Any]:
    """The first record of `action` that was taken."""
    return next(r for r in reactions(api) if r["action"] == action and r["result"] == "Succeeded")


def verdict(api: Cluster, action: str = "scale") -> str | None:
    try:
        return str(the(api, action).get("verification", {}).get("verdict"))
    except StopIteration:
        return None


def messages(api: Cluster, reason: str) -> list[str]:
    return [str(e.get("message")) for e in events(api) if e.get("reason") == reason]


async def scaled_and_pending(env: Any) -> dict[str, Any]:
    """Detector: h1 has served 1000 records; the Latency alert fires; the scale is taken."""
    await patch_status(env.server, {"detector": {"reference": REFERENCE,
                                                 "revisions": revisions(h1=1000)}})  # fmt: skip
    await patch_status(env.server, {"alerts": [latency()]})
    await eventually(lambda: verdict(env.api) == "Pending", what="a Pending verification")
    await a_second_later()
    return dict(the(env.api, "scale")["verification"])


async def test_fixed_when_the_signal_passes_on_enough_records_after_the_action(
    observing: Callable[..., Any],
) -> None:
    env = await observing(guardrails={**VERIFY, "verifyWithin": "30s"}, reactions=[LATENCY])
    pending = await scaled_and_pending(env)
    assert {k: pending[k] for k in ("signal", "before", "verdict", "revision", "recordsAt",
                                    "minRecords")} == {
        "signal": "Latency/p99", "before": 0.4, "verdict": "Pending", "revision": "h1",
        "recordsAt": 1000, "minRecords": 50}  # fmt: skip
    # The alert resolves before the detector has news: the respond timer keeps running while
    # the verification is open, at one GET of the ObservedModel per pass and no write while
    # nothing changes (the API cost of an open verification).
    await patch_status(env.server, {"alerts": []})
    # The pass on the alert's end writes once (the diagnosis removed, phase Observing).
    await eventually(lambda: status(env.api).get("phase") == "Observing", what="Observing")
    await asyncio.sleep(1.5)
    start = len(OPERATOR_CALLS)
    await asyncio.sleep(3)
    calls = [(c.verb, c.resource) for c in OPERATOR_CALLS[start:] if c.verb not in ("watch",)]
    assert calls.count(("get", "observedmodels")) >= 2, calls  # a pass every 0.5 s
    assert set(calls) <= {("get", "observedmodels"), ("create", "events")}, calls
    assert verdict(env.api) == "Pending"
    # The detector reports the signal passing on 80 new records.
    await patch_status(env.server, {"alerts": [], "detector": {
        "revisions": revisions(h1=1080),
        "signals": [latency_signal(failing=False, statistic=0.12)]}})  # fmt: skip
    # The respond timer keeps running with no alert while the verification is open.
    await eventually(lambda: verdict(env.api) == "Fixed", what="Fixed")
    done = the(env.api, "scale")["verification"]
    assert (done["after"], done["records"]) == (0.12, 80)
    fixed = await eventually(lambda: messages(env.api, "ReactionFixed"), what="an Event")
    assert len(fixed) == 1 and "Latency/p99 passes on 80 records" in fixed[0], fixed


async def test_not_fixed_only_alerts_by_default(observing: Callable[..., Any]) -> None:
    env = await observing(guardrails=VERIFY, reactions=[LATENCY])
    await scaled_and_pending(env)
    await patch_status(env.server, {"detector": {
        "revisions": revisions(h1=1500),
        "signals": [latency_signal(failing=True, statistic=0.38)]}})  # fmt: skip
    await eventually(lambda: verdict(env.api) == "NotFixed", what="NotFixed", timeout=15)
    done = the(env.api, "scale")["verification"]
    assert (done["after"], done["records"], "undo" in done) == (0.38, 500, False)
    (warning,) = await eventually(lambda: messages(env.api, "ReactionNotFixed"), what="Event")
    assert "still fails on 500 records" in warning
    await asyncio.sleep(1.5)
    assert obj(env.api, DEPLOYMENTS, "fraud-model")["spec"]["replicas"] == 4  # not undone
    assert not [r for r in reactions(env.api) if r.get("undoes")]


async def test_not_fixed_is_undone_with_undo_if_not_fixed(observing: Callable[..., Any]) -> None:
    env = await observing(guardrails={**VERIFY, "undoIfNotFixed": True}, reactions=[LATENCY])
    await scaled_and_pending(env)
    assert obj(env.api, DEPLOYMENTS, "fraud-model")["spec"]["replicas"] == 4
    await patch_status(env.server, {"detector": {
        "revisions": revisions(h1=1500),
        "signals": [latency_signal(failing=True, statistic=0.38)]}})  # fmt: skip
    await eventually(lambda: verdict(env.api) == "NotFixed", what="NotFixed", timeout=15)
    await eventually(lambda: obj(env.api, DEPLOYMENTS, "fraud-model")["spec"]["replicas"] == 2,
                     what="undone: 4 -> 2")  # fmt: skip
    original = the(env.api, "scale")

    def undone() -> dict[str, Any] | None:
        found = [r for r in reactions(env.api) if r.get("undoes")]
        return found[0] if len(found) == 1 and found[0]["result"] != "Running" else None

    # The patch lands before the settled record is written.
    undo = await eventually(undone, what="the undo settled")
    assert (undo["undoes"], undo["from"], undo["to"], undo["result"]) == (
        original["id"],
        "4",
        "2",
        "Succeeded",
    )
    assert original["verification"]["undo"] == undo["id"]
    assert "verification" not in undo  # an undo is not verified itself
    await eventually(lambda: messages(env.api, "ReactionNotFixed"), what="ReactionNotFixed")
    await eventually(lambda: messages(env.api, "ReactionUndone"), what="ReactionUndone")
    # Not scaled up again in this incident: the same transition is the same id.
    await asyncio.sleep(1.5)
    assert obj(env.api, DEPLOYMENTS, "fraud-model")["spec"]["replicas"] == 2
    assert results(env.api, "scale").count("Succeeded") == 2


async def test_inconclusive_when_too_little_traffic_came(observing: Callable[..., Any]) -> None:
    env = await observing(guardrails=VERIFY, reactions=[LATENCY])
    await scaled_and_pending(env)
    await patch_status(env.server, {"detector": {
        "revisions": revisions(h1=1020),
        "signals": [latency_signal(failing=True, statistic=0.38)]}})  # fmt: skip
    await eventually(lambda: verdict(env.api) == "Inconclusive", what="Inconclusive", timeout=15)
    assert "only 20 records" in the(env.api, "scale")["verification"]["message"]
    await eventually(lambda: messages(env.api, "ReactionInconclusive"), what="an Event")


async def test_a_rollback_is_verified_on_the_restored_revision_across_a_restart(
    cluster: tuple[Cluster, str], observing: Callable[..., Any], start_operator: Callable[..., Any]
) -> None:
    """The record in status is the state: a new operator process judges it on."""
    dep = versioned_deployment(7)
    old, current = replicaset(dep, 6, "fraud:1.3"), replicaset(dep, 7, "fraud:1.4")
    rollback = {"alert": "PredictionDrift", "action": "rollback"}
    env = await observing(old, current, deployment=dep, guardrails=VERIFY, reactions=[rollback])
    api, server = env.api, env.server
    await patch_status(server, {"detector": {"reference": REFERENCE,
                                             "revisions": revisions(h7=5000, h6=300)}})  # fmt: skip
    await patch_status(server, {"alerts": [{**alert("PredictionDrift"), "modelRevision": "h7"}]})
    await eventually(lambda: verdict(api, "rollback") == "Pending", what="rolled back")
    pending = the(api, "rollback")["verification"]
    # The records that count are the restored revision's (6, pod-template-hash h6).
    assert (pending["revision"], pending["recordsAt"], pending["signal"]) == (
        "h6",
        300,
        "PredictionDrift/ks",
    )
    assert pending["revisionLabel"] == "revision 6 (fraud:1.3, pod-template-hash h6)"
    await a_second_later()
    template = obj(api, DEPLOYMENTS, "fraud-model")["spec"]["template"]
    assert template["spec"]["containers"][0]["image"] == "fraud:1.3"

    assert await env.op.stop() == 0, env.op.log()[-3000:]
    # While no operator runs: the restored revision serves, the drift is gone on its records.
    drift = {"type": "PredictionDrift", "feature": None, "test": "ks", "statistic": 0.03,
             "threshold": 0.1, "failing": False, "at": just_now(),
             "modelRevision": "h6"}  # fmt: skip
    await patch_status(server, {"alerts": [], "detector": {
        "revisions": revisions(h7=5000, h6=420), "signals": [drift]}})  # fmt: skip
    await start_operator(env=FAST)
    await eventually(lambda: verdict(api, "rollback") == "Fixed", what="Fixed", timeout=30)
    done = the(api, "rollback")["verification"]
    assert (done["records"], done["after"], done["since"]) == (120, 0.03, pending["since"])
    assert results(api, "rollback").count("Succeeded") == 1  # never rolled back twice
    await eventually(lambda: status(api)["phase"] == "Observing", what="Observing again")


# --------------------------------------------------------------------------- canaries


def rs_of(deployment: dict[str, Any], revision: int, image: str, hash_: str,
          replicas: int) -> dict[str, Any]:  # fmt: skip
    """A ReplicaSet as the Deployment controller keeps it (labels, revision, template)."""
    rs = replicaset(deployment, revision, image)
    rs["metadata"]["name"] = f"{deployment['metadata']['name']}-{hash_}"
    for labels in (rs["metadata"]["labels"], rs["spec"]["template"]["metadata"]["labels"]):
        labels["pod-template-hash"] = hash_
    rs["metadata"]["ownerReferences"][0]["name"] = deployment["metadata"]["name"]
    rs["spec"]["replicas"] = replicas
    rs["status"] = {"replicas": replicas}
    return rs


def regression(candidate: str, baseline: str) -> dict[str, Any]:
    """A CanaryRegression as the detector writes it (CONTRACT17)."""
    return {**alert("CanaryRegression"), "test": "canary", "modelRevision": candidate,
            "baselineRevision": baseline,
            "evidence": [{"signal": "prediction", "test": "chi2", "statistic": 0.4,
                          "effect": 0.3, "threshold": 0.1, "failing": True}]}  # fmt: skip


async def test_shift_traffic_away_from_the_canary_the_alert_names_and_verify_it(
    observing: Callable[..., Any],
) -> None:
    stable, canary = model_deployment("fraud-stable"), model_deployment("fraud-canary")
    stable["spec"]["replicas"], canary["spec"]["replicas"] = 9, 1
    sets = [rs_of(stable, 4, "fraud:1.4", "st4bl3", 9), rs_of(canary, 2, "fraud:1.5", "c4n4ry", 1)]
    shift = {"alert": "CanaryRegression", "action": "shiftTraffic", "router": "replicas",
             "stable": "fraud-stable", "canary": "fraud-canary"}  # fmt: skip
    env = await observing(stable, canary, *sets, guardrails={**VERIFY, "verifyWithin": "30s"},
                          reactions=[shift])  # fmt: skip
    api, server = env.api, env.server
    await patch_status(
        server,
        {"detector": {"reference": REFERENCE, "revisions": revisions(st4bl3=9000, c4n4ry=400)}},
    )
    await patch_status(server, {"alerts": [regression("c4n4ry", "st4bl3")]})
    await eventually(lambda: verdict(api, "shiftTraffic") == "Pending", what="shifted")
    assert obj(api, DEPLOYMENTS, "fraud-canary")["spec"]["replicas"] == 0
    assert obj(api, DEPLOYMENTS, "fraud-stable")["spec"]["replicas"] == 10
    pending = the(api, "shiftTraffic")["verification"]
    assert (pending["signal"], pending["revision"], pending["candidate"]) == (
        "CanaryRegression/canary",
        "st4bl3",
        "c4n4ry",
    )
    assert pending["revisionLabel"] == "revision 4 (fraud:1.4, pod-template-hash st4bl3)"
    # The canary gets no record any more, the stable serves 100 more, the alert resolves.
    await patch_status(server, {"alerts": [], "detector": {
        "revisions": revisions(st4bl3=9100, c4n4ry=400)}})  # fmt: skip
    await eventually(lambda: verdict(api, "shiftTraffic") == "Fixed", what="Fixed")
    assert the(api, "shiftTraffic")["verification"]["records"] == 100


async def test_pause_on_a_canary_regression_pauses_the_targets_rollout(
    observing: Callable[..., Any],
) -> None:
    """The candidate is the target's own new ReplicaSet, mid-rollout: `rollout pause`."""
    dep = versioned_deployment(7)
    sets = [rs_of(dep, 6, "fraud:1.4", "h6", 1), rs_of(dep, 7, "fraud:1.5", "h7", 1)]
    env = await observing(*sets, deployment=dep, guardrails=VERIFY,
                          reactions=[{"alert": "CanaryRegression", "action": "pause"}])  # fmt: skip
    api, server = env.api, env.server
    await patch_status(
        server, {"detector": {"reference": REFERENCE, "revisions": revisions(h6=900, h7=100)}}
    )
    await patch_status(server, {"alerts": [regression("h7", "h6")]})
    await eventually(lambda: obj(api, DEPLOYMENTS, "fraud-model")["spec"].get("paused") is True,
                     what="the rollout paused")  # fmt: skip
    await eventually(lambda: verdict(api, "pause") == "Pending", what="the pause settled")
    record = the(api, "pause")
    assert (record["target"], record["from"], record["to"]) == (
        "Deployment/fraud-model",
        "rolling",
        "paused",
    )
    assert record["verification"]["revision"] == "h6"
    assert "revision 7 (fraud:1.5) against revision 6 (fraud:1.4)" in str(
        await eventually(lambda: messages(api, "AlertFired"), what="AlertFired")
    )
