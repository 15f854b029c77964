"""Diagnosis and reactions: the real operator against kmock's emulator, one actuator at a time.

Each test brings an ObservedModel to Observing (the operator injects the sidecar, the emulator's
Deployment controller makes the detector available, the test writes the detector's reference),
then writes an alert into `status.alerts` as the detector would (a merge patch on the status
subresource) and watches what the operator does about it. The timer pass runs every 0.5 s
(MLWARDEN_RESPOND_INTERVAL) and the reconciliation retries every 0.5 s
(MLWARDEN_RETRY_SECONDS), so stepwise actions, approvals and set-up are quick. A pass reads
watch-backed caches and takes milliseconds, so the pass after an action may record its Skipped
step (cooldown, nothing left to do) within one poll of the test: tests wait for the action's
own record, not for it to be the only one.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import re
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from cluster import (
    DEPLOYMENTS,
    FAST,
    HPAS,
    HTTPROUTES,
    MERGE,
    NS,
    OM,
    OM_PATH,
    OPERATOR_CALLS,
    RESOURCES,
    VIRTUALSERVICES,
    Cluster,
    Fault,
    OperatorProcess,
    ago,
    alert,
    api_call,
    events,
    eventually,
    free_port,
    iso,
    model_deployment,
    obj,
    patch_status,
    reactions,
    status,
    writes,
)

from mlwarden.react.actions import action_id
from mlwarden.spec import MAX_STATUS_REACTIONS

REVISION = "deployment.kubernetes.io/revision"


# --------------------------------------------------------------------------- helpers


async def patch_object(server: str, kind: str, name: str, body: dict[str, Any]) -> Any:
    group, _, plural = RESOURCES[kind].rpartition("/")
    prefix = "/api" if group == "v1" else "/apis"
    path = f"{prefix}/{group}/namespaces/{NS}/{plural}/{name}"
    return await api_call(server, "PATCH", path, body, MERGE)


def results(api: Cluster, action: str) -> list[str]:
    return [r["result"] for r in reactions(api) if r["action"] == action]


def event_messages(api: Cluster, reason: str) -> list[str]:
    return [str(e.get("message")) for e in events(api) if e.get("reason") == reason]


async def scrape(port: int) -> str:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics") as r:
        return await r.text()


def counter(text: str, action: str, result: str) -> float:
    pattern = rf'^mlwarden_operator_reactions_total\{{action="{action}",result="{result}"\}} (\S+)$'
    found = re.search(pattern, text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


async def settle(op: OperatorProcess, seconds: float = 2.0) -> None:
    """Let a few timer passes run; the operator must still be up."""
    await asyncio.sleep(seconds)
    assert op.proc.returncode is None, op.log()[-3000:]


def meta(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "namespace": NS, "uid": str(uuid.uuid4()), "resourceVersion": "1",
            "creationTimestamp": iso(ago(days=30)), **extra}  # fmt: skip


def versioned_deployment(revision: int = 7) -> dict[str, Any]:
    dep = model_deployment()
    dep["metadata"]["annotations"] = {REVISION: str(revision)}
    return dep


def replicaset(deployment: dict[str, Any], revision: int, image: str) -> dict[str, Any]:
    template = copy.deepcopy(deployment["spec"]["template"])
    template["spec"]["containers"][0]["image"] = image
    template["metadata"]["labels"]["pod-template-hash"] = f"h{revision}"
    owner = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "controller": True,
        "name": deployment["metadata"]["name"],
        "uid": deployment["metadata"]["uid"],
    }
    return {
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": meta(f"fraud-model-h{revision}", annotations={REVISION: str(revision)},
                         labels={**template["metadata"]["labels"]},
                         ownerReferences=[owner]),
        "spec": {"replicas": 0, "selector": deployment["spec"]["selector"], "template": template},
    }  # fmt: skip


def deployment(name: str, replicas: int) -> dict[str, Any]:
    dep = model_deployment(name)
    dep["spec"]["replicas"] = replicas
    return dep


# --------------------------------------------------------------------------- diagnosis


async def test_a_failed_cronjob_run_before_onset_is_the_top_suspect(
    observing: Callable[..., Any],
) -> None:
    onset = ago(minutes=1)
    cronjob, job = feature_job(onset)
    env = await observing(
        cronjob, job,
        features=[{"name": "amount", "type": "numeric"}],
        pipeline=[{"name": "feature-etl", "kind": "CronJob", "produces": ["amount"]}],
    )  # fmt: skip
    api = env.api
    # Neither Gateway API nor Istio installed here: their kinds are not served (404).
    del api.resources[HTTPROUTES]
    del api.resources[VIRTUALSERVICES]
    await patch_status(env.server, {"alerts": [alert("FeatureDrift", feature="amount",
                                                     since=iso(onset))]})  # fmt: skip

    await eventually(lambda: status(api).get("topSuspect") == "CronJob/feature-etl",
                     what="top suspect")  # fmt: skip
    diagnosis = status(api)["diagnosis"]
    top = diagnosis["suspects"][0]
    assert (top["kind"], top["name"]) == ("CronJob", "feature-etl")
    assert top["score"] >= 0.5
    assert any("failed" in e for e in top["evidence"]), top["evidence"]
    assert top["changedAt"] == iso(onset - timedelta(minutes=3))  # the failed run
    assert diagnosis["onset"] == iso(onset)
    diagnosed = await eventually(lambda: event_messages(api, "Diagnosed"), what="Diagnosed")
    assert "CronJob/feature-etl" in diagnosed[0]
    await settle(env.op)
    assert len(event_messages(api, "Diagnosed")) == 1  # not again while nothing changes
    assert status(api)["phase"] == "Degraded"

    await patch_status(env.server, {"alerts": []})
    # Cleared fields are removed (null in the merge patch), not left with their old value.
    await eventually(lambda: "diagnosis" not in status(api), what="the diagnosis removed")
    assert "topSuspect" not in status(api)


# --------------------------------------------------------------------------- rollback


async def test_rollback_restores_the_previous_template_and_keeps_the_sidecar(
    observing: Callable[..., Any], start_operator: Callable[..., Any]
) -> None:
    dep = versioned_deployment(7)
    old, current = (
        replicaset(dep, 6, "seldonio/mlserver:1.5.0"),
        replicaset(dep, 7, "seldonio/mlserver:1.6.0"),
    )
    env = await observing(
        old, current, deployment=dep, reactions=[{"alert": "PredictionDrift", "action": "rollback"}]
    )
    api = env.api
    injected = obj(api, DEPLOYMENTS, "fraud-model")["spec"]["template"]
    assert [c["name"] for c in injected["spec"]["containers"]] == ["model", "mlwarden-sidecar"]
    before = await scrape(env.metrics)

    await patch_status(env.server, {"alerts": [alert("PredictionDrift")]})
    # The first record; a later pass (milliseconds apart, fed by the caches) may already have
    # added one that says why not again (Skipped), as in the 409 tests below.
    await eventually(lambda: results(api, "rollback")[:1] == ["Succeeded"], what="rollback done")
    template = obj(api, DEPLOYMENTS, "fraud-model")["spec"]["template"]
    expected = copy.deepcopy(injected)
    expected["spec"]["containers"][0]["image"] = "seldonio/mlserver:1.5.0"
    assert template == expected  # revision 6's template, the sidecar kept
    record, *later = reactions(api)
    assert {r["result"] for r in later} <= {"Skipped"}, reactions(api)
    assert (record["target"], record["from"], record["to"]) == ("Deployment/fraud-model", "7", "6")
    assert record["dryRun"] is False and record["id"].startswith("rollback-")
    # Ended: a compact record (no pod template in `kubectl describe`), with digests of what
    # it set for the person-changed guardrail.
    assert "patch" not in record
    assert list(record["held"]) == ["Deployment/fraud-model"]
    assert len(str(record)) < 1000, record
    assert status(api)["lastAction"] == "rollback Deployment/fraud-model 7→6 Succeeded"
    await eventually(lambda: event_messages(api, "ReactionSucceeded"), what="the Event")
    # The record was written (Running, phase Reacting) before the Deployment was patched.
    history = [dict(v) for v in api.objects[OM, NS, "fraud"].history]
    running = next(
        i
        for i, v in enumerate(history)
        if any(r.get("result") == "Running" for r in (v.get("status") or {}).get("reactions", []))
    )
    assert history[running]["status"]["phase"] == "Reacting"
    after = await scrape(env.metrics)
    assert counter(after, "rollback", "Succeeded") == counter(before, "rollback", "Succeeded") + 1

    # Not again in this incident, however many passes run.
    version = obj(api, DEPLOYMENTS, "fraud-model")["metadata"]["resourceVersion"]
    await settle(env.op)
    assert obj(api, DEPLOYMENTS, "fraud-model")["metadata"]["resourceVersion"] == version
    assert results(api, "rollback").count("Succeeded") == 1
    # Nor by a restarted operator that reads only the compact record.
    assert await env.op.stop() == 0, env.op.log()[-3000:]
    op = await start_operator(env=FAST)
    await settle(op, 3)
    assert obj(api, DEPLOYMENTS, "fraud-model")["metadata"]["resourceVersion"] == version
    assert results(api, "rollback").count("Succeeded") == 1


async def test_dry_run_records_and_changes_nothing(observing: Callable[..., Any]) -> None:
    dep = versioned_deployment(7)
    env = await observing(
        replicaset(dep, 6, "seldonio/mlserver:1.5.0"),
        replicaset(dep, 7, "seldonio/mlserver:1.6.0"),
        deployment=dep, guardrails={"dryRun": True, "cooldown": "0s"},
        reactions=[{"alert": "PredictionDrift", "action": "rollback"},
                   {"alert": "Latency", "action": "scale", "maxReplicas": 4}],
    )  # fmt: skip
    api = env.api
    target = writes(api, DEPLOYMENTS, "fraud-model")
    await patch_status(env.server, {"alerts": [alert("PredictionDrift"), alert("Latency")]})
    await eventually(lambda: sorted(r["action"] for r in reactions(api)) == ["rollback", "scale"]
                     and all(r["result"] == "Succeeded" for r in reactions(api)),
                     what="dry-run records")  # fmt: skip
    for record in reactions(api):
        assert record["dryRun"] is True
        assert "nothing applied" in record["message"]
        assert record["patch"]  # what would have been applied
    await settle(env.op)
    assert writes(api, DEPLOYMENTS, "fraud-model") == target
    assert len(event_messages(api, "ReactionDryRun")) == 2
    text = await scrape(env.metrics)
    assert counter(text, "rollback", "DryRun") == 1 and counter(text, "scale", "DryRun") == 1
    assert status(api)["lastAction"].endswith("Succeeded (dry run)")


# --------------------------------------------------------------------------- scale and pause


async def test_scale_steps_up_to_max_replicas(observing: Callable[..., Any]) -> None:
    env = await observing(
        guardrails={"cooldown": "0s", "maxActionsPerHour": 10},
        reactions=[{"alert": "Latency", "action": "scale", "maxReplicas": 5}],
    )
    api = env.api
    await patch_status(env.server, {"alerts": [alert("Latency")]})
    await eventually(lambda: obj(api, DEPLOYMENTS, "fraud-model")["spec"]["replicas"] == 5,
                     what="scaled to 5")  # fmt: skip
    await eventually(lambda: results(api, "scale") == ["Succeeded", "Succeeded", "Skipped"],
                     what="two steps, then nothing to do")  # fmt: skip
    steps = [(r["from"], r["to"]) for r in reactions(api) if r["result"] == "Succeeded"]
    assert steps == [("2", "4"), ("4", "5")]
    assert "maxReplicas 5" in reactions(api)[-1]["reason"]
    text = await scrape(env.metrics)
    assert counter(text, "scale", "Succeeded") == 2
    # kopf's "Timer ... succeeded." on every pass is not posted as an Event.
    assert not [m for m in event_messages(api, "Logging") if "respond_again" in m]


async def test_scale_raises_the_hpa_floor_instead_of_replicas(
    observing: Callable[..., Any],
) -> None:
    hpa = {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": meta("fraud-model"),
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                    "name": "fraud-model"},
                 "minReplicas": 2, "maxReplicas": 8},
        "status": {"currentReplicas": 2},
    }  # fmt: skip
    env = await observing(
        hpa, reactions=[{"alert": "Latency", "action": "scale", "maxReplicas": 6}]
    )
    api = env.api
    await patch_status(env.server, {"alerts": [alert("Latency")]})
    # The first record; the next pass may already have added a Skipped one (cooldown).
    await eventually(lambda: results(api, "scale")[:1] == ["Succeeded"], what="scaled")
    assert results(api, "scale").count("Succeeded") == 1
    assert obj(api, HPAS, "fraud-model")["spec"]["minReplicas"] == 4
    assert obj(api, DEPLOYMENTS, "fraud-model")["spec"]["replicas"] == 2  # the HPA's to set
    assert reactions(api)[0]["target"] == "HorizontalPodAutoscaler/fraud-model"


# --------------------------------------------------------------------------- 409 storms


def patches_of(resource: str, name: str) -> int:
    """The operator's PATCH calls on an object so far, refused ones included (the audit log)."""
    plural = resource.rpartition("/")[2]
    return sum(1 for c in OPERATOR_CALLS if (c.verb, c.resource, c.name) == ("patch", plural, name))


async def test_rollback_under_status_writes_every_100ms_is_replanned_and_taken_once(
    observing: Callable[..., Any],
) -> None:
    dep = versioned_deployment(7)
    env = await observing(
        replicaset(dep, 6, "seldonio/mlserver:1.5.0"),
        replicaset(dep, 7, "seldonio/mlserver:1.6.0"),
        deployment=dep,
        reactions=[{"alert": "PredictionDrift", "action": "rollback"}],
    )
    api = env.api
    before = patches_of(DEPLOYMENTS, "fraud-model")
    # The Deployment controller writing status (each write a new resourceVersion) throughout.
    # ... and one of its writes lands between the operator's read and its patch.
    api.racing_patches(DEPLOYMENTS, NS, "fraud-model")
    async with api.writing_status(DEPLOYMENTS, NS, "fraud-model", every=0.1) as written:
        await patch_status(env.server, {"alerts": [alert("PredictionDrift")]})
        await eventually(lambda: results(api, "rollback") not in ([], ["Running"]),
                         what="the rollback settled")  # fmt: skip
        await settle(env.op, 1.0)
    assert written[0] >= 5
    # One action, taken once (later passes only say why not again: Skipped records).
    record, *later = reactions(api)
    assert {r["result"] for r in later} <= {"Skipped"}, reactions(api)
    assert record["result"] == "Succeeded", record
    assert "re-planned after" in record["message"], record
    refused = api.conflicts.count(("deployments", "fraud-model"))
    assert refused >= 1  # the storm met the reaction's patch
    # Executed once: every refused patch was re-planned, and exactly one landed.
    assert patches_of(DEPLOYMENTS, "fraud-model") - before == refused + 1
    images = [
        v["spec"]["template"]["spec"]["containers"][0]["image"]
        for v in api.objects[DEPLOYMENTS, NS, "fraud-model"].history
    ]
    changes = [b for a, b in itertools.pairwise(images) if a != b]
    assert changes == ["seldonio/mlserver:1.5.0"]
    assert status(api)["lastAction"] == "rollback Deployment/fraud-model 7→6 Succeeded"


async def test_scale_under_hpa_status_writes_every_100ms_is_replanned_and_taken_once(
    observing: Callable[..., Any],
) -> None:
    hpa = {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": meta("fraud-model"),
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                    "name": "fraud-model"},
                 "minReplicas": 2, "maxReplicas": 8},
        "status": {"currentReplicas": 2},
    }  # fmt: skip
    env = await observing(
        hpa, reactions=[{"alert": "Latency", "action": "scale", "maxReplicas": 6}]
    )
    api = env.api
    before = patches_of(HPAS, "fraud-model")
    api.racing_patches(HPAS, NS, "fraud-model")
    async with api.writing_status(HPAS, NS, "fraud-model", every=0.1):
        await patch_status(env.server, {"alerts": [alert("Latency")]})
        await eventually(lambda: results(api, "scale") not in ([], ["Running"]),
                         what="the scale settled")  # fmt: skip
        await settle(env.op, 1.0)
    # One step taken (the next one waits for the cooldown: a Skipped record says so).
    assert [r["result"] for r in reactions(api)] in (["Succeeded"], ["Succeeded", "Skipped"])
    record = reactions(api)[0]
    assert (record["from"], record["to"]) == ("minReplicas 2", "minReplicas 4")
    refused = api.conflicts.count(("horizontalpodautoscalers", "fraud-model"))
    assert refused >= 1
    assert patches_of(HPAS, "fraud-model") - before == refused + 1
    floors = [v["spec"]["minReplicas"] for v in api.objects[HPAS, NS, "fraud-model"].history]
    assert [b for a, b in itertools.pairwise(floors) if a != b] == [4]


async def test_a_two_deployment_shift_under_canary_status_writes_lands_each_patch_once(
    observing: Callable[..., Any],
) -> None:
    env = await observing(
        deployment("fraud-stable", 3),
        deployment("fraud-canary", 1),
        reactions=[{"alert": "Latency", "action": "shiftTraffic", "router": "replicas",
                    "stable": "fraud-stable", "canary": "fraud-canary"}],
    )  # fmt: skip
    api = env.api
    stable, canary = (
        patches_of(DEPLOYMENTS, "fraud-stable"),
        patches_of(DEPLOYMENTS, "fraud-canary"),
    )
    # The canary's controller writes status throughout: its patch (the second) meets 409s
    # after the stable's landed, so the action is not re-planned but that patch re-applied.
    api.racing_patches(DEPLOYMENTS, NS, "fraud-canary")
    # Every 0.2 s: racing_patches guarantees the 409 on the first attempt; a writer every
    # 0.05 s on a loaded machine (4 test workers on 2 cores) also outran the operator's
    # re-read and patch on each of its retries, which no controller does to a Deployment.
    async with api.writing_status(DEPLOYMENTS, NS, "fraud-canary", every=0.2):
        await patch_status(env.server, {"alerts": [alert("Latency")]})
        await eventually(lambda: results(api, "shiftTraffic") not in ([], ["Running"]),
                         what="the shift settled")  # fmt: skip
        await settle(env.op, 1.0)
    record = reactions(api)[0]
    assert record["result"] == "Succeeded", record
    refused = api.conflicts.count(("deployments", "fraud-canary"))
    assert refused >= 1
    assert "re-applied after" in record["message"], record
    assert patches_of(DEPLOYMENTS, "fraud-stable") - stable == 1
    assert patches_of(DEPLOYMENTS, "fraud-canary") - canary == refused + 1
    assert obj(api, DEPLOYMENTS, "fraud-stable")["spec"]["replicas"] == 4
    assert obj(api, DEPLOYMENTS, "fraud-canary")["spec"]["replicas"] == 0


async def test_pause_scales_the_canary_to_zero(observing: Callable[..., Any]) -> None:
    env = await observing(
        deployment("fraud-model-canary", 3),
        reactions=[{"alert": "PredictionDrift", "action": "pause", "canary": "fraud-model-canary"}],
    )
    api = env.api
    await patch_status(env.server, {"alerts": [alert("PredictionDrift")]})
    # The first record; the next pass may already have added a Skipped one (nothing to do).
    await eventually(lambda: results(api, "pause")[:1] == ["Succeeded"], what="paused")
    assert results(api, "pause").count("Succeeded") == 1
    canary = obj(api, DEPLOYMENTS, "fraud-model-canary")
    assert canary["spec"]["replicas"] == 0
    assert canary["metadata"]["annotations"]["mlwarden.io/paused-from-replicas"] == "3"
    assert status(api)["lastAction"] == "pause Deployment/fraud-model-canary 3→0 Succeeded"


# --------------------------------------------------------------------------- shift traffic


def httproute(stable: int, canary: int) -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": meta("fraud"),
        "spec": {"parentRefs": [{"name": "gateway"}], "rules": [{"backendRefs": [
            {"name": "fraud-stable", "port": 80, "weight": stable},
            {"name": "fraud-canary", "port": 80, "weight": canary}]}]},
    }  # fmt: skip


def virtualservice(stable: int, canary: int) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1beta1", "kind": "VirtualService",
        "metadata": meta("fraud"),
        "spec": {"hosts": ["fraud-model"], "http": [{"route": [
            {"destination": {"host": "fraud-model", "subset": "stable"}, "weight": stable},
            {"destination": {"host": "fraud-model", "subset": "canary"}, "weight": canary}]}]},
    }  # fmt: skip


def route_weights(api: Cluster, router: str) -> tuple[int, int]:
    if router == "httproute":
        refs = obj(api, HTTPROUTES, "fraud")["spec"]["rules"][0]["backendRefs"]
    else:
        refs = obj(api, VIRTUALSERVICES, "fraud")["spec"]["http"][0]["route"]
    return int(refs[0]["weight"]), int(refs[1]["weight"])


@pytest.mark.parametrize("router", ["httproute", "virtualservice"])
async def test_shift_traffic_moves_weights_step_by_step_to_stable(
    router: str, observing: Callable[..., Any]
) -> None:
    route = httproute(50, 50) if router == "httproute" else virtualservice(50, 50)
    stable, canary = (
        ("fraud-stable", "fraud-canary") if router == "httproute" else ("stable", "canary")
    )
    env = await observing(
        route, guardrails={"cooldown": "0s", "maxActionsPerHour": 10},
        reactions=[{"alert": "Latency", "action": "shiftTraffic", "router": router,
                    "route": "fraud", "stable": stable, "canary": canary, "stepPercent": 25}],
    )  # fmt: skip
    api = env.api
    await patch_status(env.server, {"alerts": [alert("Latency")]})
    await eventually(lambda: route_weights(api, router) == (100, 0), what="all on stable")
    await eventually(lambda: results(api, "shiftTraffic")[-1:] == ["Skipped"], what="done")
    done = [r for r in reactions(api) if r["result"] == "Succeeded"]
    assert [(r["from"], r["to"]) for r in done] == [
        ("stable 50/canary 50", "stable 75/canary 25"),
        ("stable 75/canary 25", "stable 100/canary 0"),
    ]
    kind = "HTTPRoute" if router == "httproute" else "VirtualService"
    assert {r["target"] for r in done} == {f"{kind}/fraud"}
    assert "all traffic is on" in reactions(api)[-1]["reason"]


# --------------------------------------------------------------------------- approval


async def test_require_approval_waits_for_the_annotation(observing: Callable[..., Any]) -> None:
    env = await observing(
        guardrails={"requireApproval": True},
        reactions=[{"alert": "Latency", "action": "scale", "maxReplicas": 4}],
    )
    api = env.api
    await patch_status(env.server, {"alerts": [alert("Latency")]})
    await eventually(lambda: results(api, "scale") == ["Planned"], what="Planned")
    (record,) = reactions(api)
    asked = await eventually(lambda: event_messages(api, "ReactionAwaitingApproval"),
                             what="approval Event")  # fmt: skip
    command = f"kubectl annotate om fraud mlwarden.io/approve={record['id']}"
    assert command in asked[0]
    await settle(env.op, 1.5)
    assert obj(api, DEPLOYMENTS, "fraud-model")["spec"]["replicas"] == 2
    assert len(event_messages(api, "ReactionAwaitingApproval")) == 1  # asked once

    await api_call(env.server, "PATCH", OM_PATH, {"metadata": {"annotations": {
        "mlwarden.io/approve": record["id"]}}}, MERGE)  # fmt: skip
    await eventually(lambda: results(api, "scale")[:1] == ["Succeeded"], what="approved and done")
    assert results(api, "scale").count("Succeeded") == 1
    assert obj(api, DEPLOYMENTS, "fraud-model")["spec"]["replicas"] == 4
    assert reactions(api)[0]["id"] == record["id"]


# --------------------------------------------------------------------------- alert


async def test_alert_posts_an_event_and_the_webhooks(observing: Callable[..., Any]) -> None:
    received: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.json_response({"ok": True})

    async def loud(request: web.Request) -> web.Response:
        return web.Response(status=500, text="x" * 5000)

    app = web.Application()
    app.router.add_post("/hook", hook)
    app.router.add_post("/loud", loud)
    runner = web.AppRunner(app)
    await runner.setup()
    port, closed = free_port(), free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        env = await observing(
            features=[{"name": "amount", "type": "numeric"},
                      {"name": "country", "type": "categorical"},
                      {"name": "device", "type": "categorical"},
                      {"name": "zip", "type": "categorical"}],
            reactions=[
                {"alert": "FeatureDrift", "feature": "amount", "action": "alert",
                 "webhook": f"http://127.0.0.1:{port}/hook"},
                {"alert": "FeatureDrift", "feature": "country", "action": "alert",
                 "webhook": f"http://127.0.0.1:{closed}/hook"},
                {"alert": "FeatureDrift", "feature": "device", "action": "alert",
                 "webhook": f"http://127.0.0.1:{port}/loud"},
                # The same server by a bare (in-cluster style) name, which the allow-list
                # does not list: refused, so never requested (nor looked up).
                {"alert": "FeatureDrift", "feature": "zip", "action": "alert",
                 "webhook": f"http://localhost:{port}/hook"},
            ],
            # The webhook servers here listen on loopback, which is refused by default.
            operator_env={"MLWARDEN_WEBHOOK_ALLOW": "public, 127.0.0.1"},
        )  # fmt: skip
        api = env.api
        drift = [alert("FeatureDrift", feature=f) for f in ("amount", "country", "device", "zip")]
        await patch_status(env.server, {"alerts": drift})
        # Four alerts that started together, one diagnosis: one incident, one notification.
        await eventually(lambda: results(api, "alert") == ["Failed"], what="the incident told")
        (record,) = [r for r in reactions(api) if r["action"] == "alert"]
        (incident,) = status(api)["incidents"]
        assert record["from"] == incident["id"] and len(incident["alerts"]) == 4
        failed = record["message"]
        assert f"webhook 127.0.0.1:{closed}" in failed
        assert "/hook" not in failed  # webhook URLs are secrets: the host only
        # An answer's text is capped before it goes into status.
        assert "HTTP 500 xxx" in failed and "x" * 250 not in failed, failed
        assert f"webhook localhost:{port}: refused, not sent" in failed
        assert "in-cluster name" in failed
        warned = await eventually(lambda: event_messages(api, "WebhookRefused"),
                                  what="the WebhookRefused Event")  # fmt: skip
        assert "MLWARDEN_WEBHOOK_ALLOW" in warned[0]
        assert len(received) == 1
        payload = received[0]
        assert payload["text"].startswith("[mlwarden] [FIRING:warning]") and payload["blocks"]
        assert payload["kind"] == "incident" and payload["status"] == "firing"
        assert payload["incident"]["id"] == incident["id"]
        assert sorted(a["key"] for a in payload["incident"]["alerts"]) == [
            f"FeatureDrift/{f}" for f in ("amount", "country", "device", "zip")]  # fmt: skip
        notified = await eventually(lambda: event_messages(api, "ReactionAlert"),
                                    what="the ReactionAlert Event")  # fmt: skip
        assert len(notified) == 1 and "FeatureDrift on 4 features" in notified[0]
        warning = next(e for e in events(api) if e.get("reason") == "ReactionAlert")
        assert warning["type"] == "Warning"
        await settle(env.op)
        assert len(received) == 1  # once per incident, not per alert or pass
        # Resolved: one resolved message to the webhook that was told.
        await patch_status(env.server, {"alerts": []})
        await eventually(lambda: len(received) == 2, what="the resolved message")
        assert received[1]["status"] == "resolved"
        assert received[1]["incident"]["id"] == incident["id"]
        assert received[1]["text"].startswith("[mlwarden] [RESOLVED:warning]")
        await eventually(lambda: status(api)["incidents"][0]["state"] == "Resolved",
                         what="the incident resolved in status")  # fmt: skip
        await settle(env.op)
        assert len(received) == 2
    finally:
        await runner.cleanup()


# --------------------------------------------------------------------------- exactly once


@pytest.mark.parametrize("state", ["applied", "not-applied", "changed"])
async def test_a_restart_in_the_middle_of_an_action_completes_or_reports_it(
    state: str,
    cluster: tuple[Cluster, str],
    observing: Callable[..., Any],
    start_operator: Callable[..., Any],
) -> None:
    env = await observing(reactions=[{"alert": "Latency", "action": "scale", "maxReplicas": 10}])
    api, server = env.api, env.server
    assert await env.op.stop() == 0, env.op.log()[-3000:]
    # What an operator stopped between recording and finishing would leave behind.
    version = obj(api, DEPLOYMENTS, "fraud-model")["metadata"]["resourceVersion"]
    if state == "applied":
        await patch_object(server, "Deployment", "fraud-model", {"spec": {"replicas": 4}})
    elif state == "changed":
        await patch_object(server, "Deployment", "fraud-model", {"spec": {"replicas": 3}})
    since = iso(ago(minutes=1))
    uid = obj(api, OM, "fraud")["metadata"]["uid"]
    rid = action_id(model_uid=uid, alert_key="Latency", onset=since, action="scale",
                    target="Deployment/fraud-model", from_state="2", to_state="4")  # fmt: skip
    record = {
        "id": rid, "action": "scale", "target": "Deployment/fraud-model", "from": "2", "to": "4",
        "reason": f"Latency since {since}", "result": "Running", "at": iso(ago(seconds=30)),
        "dryRun": False, "message": "recorded; taking it now",
        "patch": {"Deployment/fraud-model": {"metadata": {"resourceVersion": version},
                                             "spec": {"replicas": 4}}},
    }  # fmt: skip
    await patch_status(server, {"alerts": [alert("Latency", since=since)], "reactions": [record]})
    count = writes(api, DEPLOYMENTS, "fraud-model")

    op = await start_operator(env=FAST)
    await eventually(lambda: next(r for r in reactions(api) if r["id"] == rid)["result"]
                     != "Running", timeout=30, what="the record settled")  # fmt: skip
    await settle(op, 2.5)
    settled = next(r for r in reactions(api) if r["id"] == rid)
    replicas = obj(api, DEPLOYMENTS, "fraud-model")["spec"]["replicas"]
    if state == "applied":
        assert settled["result"] == "Succeeded", settled
        assert "completed before an operator restart" in settled["message"]
        assert (replicas, writes(api, DEPLOYMENTS, "fraud-model")) == (4, count)
    elif state == "not-applied":
        assert settled["result"] == "Succeeded", settled
        assert (replicas, writes(api, DEPLOYMENTS, "fraud-model")) == (4, count + 1)
    else:
        assert settled["result"] == "Failed", settled
        assert "changed since it was planned" in settled["message"]
        assert (replicas, writes(api, DEPLOYMENTS, "fraud-model")) == (3, count)
    # One entry per id; whatever else this pass planned waits for the cooldown.
    assert [r["id"] for r in reactions(api)].count(rid) == 1
    assert all(r["result"] == "Skipped" for r in reactions(api) if r["id"] != rid)


async def test_a_persons_change_after_ours_is_not_undone(observing: Callable[..., Any]) -> None:
    env = await observing(reactions=[{"alert": "Latency", "action": "scale", "maxReplicas": 10}])
    api = env.api
    await patch_status(env.server, {"alerts": [alert("Latency")]})
    await eventually(lambda: results(api, "scale")[:1] == ["Succeeded"], what="scaled once")
    assert obj(api, DEPLOYMENTS, "fraud-model")["spec"]["replicas"] == 4
    # Someone scales it by hand to 3.
    await patch_object(env.server, "Deployment", "fraud-model", {"spec": {"replicas": 3}})
    await eventually(
        lambda: any("does not undo a person's change" in r["reason"]
                    for r in reactions(api) if r["result"] == "Skipped"),
        what="Skipped: a person changed it",
    )  # fmt: skip
    await settle(env.op)
    assert obj(api, DEPLOYMENTS, "fraud-model")["spec"]["replicas"] == 3
    assert results(api, "scale").count("Succeeded") == 1


# --------------------------------------------------------------------------- kubectl describe


def feature_job(onset: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """A CronJob whose last run failed 3 minutes before `onset`: FeatureDrift's suspect."""
    cronjob = {
        "apiVersion": "batch/v1", "kind": "CronJob", "metadata": meta("feature-etl"),
        "spec": {"schedule": "*/30 * * * *", "jobTemplate": {"spec": {"template": {"spec": {
            "containers": [{"name": "etl", "image": "etl:1"}], "restartPolicy": "Never"}}}}},
    }  # fmt: skip
    failed_at = onset - timedelta(minutes=3)
    job = {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": meta("feature-etl-29000000", ownerReferences=[{
            "apiVersion": "batch/v1", "kind": "CronJob", "name": "feature-etl",
            "uid": cronjob["metadata"]["uid"], "controller": True}]),
        "spec": {"template": {"spec": {"containers": [{"name": "etl", "image": "etl:1"}]}}},
        "status": {"startTime": iso(failed_at - timedelta(minutes=2)), "failed": 1,
                   "conditions": [{"type": "Failed", "status": "True",
                                   "reason": "BackoffLimitExceeded",
                                   "lastTransitionTime": iso(failed_at)}]},
    }  # fmt: skip
    return cronjob, job


def shown(api: Cluster) -> list[tuple[list[str], str | None]]:
    """Every version of the ObservedModel so far: (alert types, top suspect)."""
    out = []
    for version in api.objects[OM, NS, "fraud"].history:
        st = dict(version).get("status") or {}
        out.append(([a.get("type") for a in st.get("alerts") or []], st.get("topSuspect")))
    return out


async def test_the_diagnosis_follows_the_alerts_without_waiting_for_the_timer(
    observing: Callable[..., Any],
) -> None:
    onset = ago(minutes=1)
    dep = versioned_deployment(7)
    old, new = (replicaset(dep, 6, "seldonio/mlserver:1.5.0"),
                replicaset(dep, 7, "seldonio/mlserver:1.6.0"))  # fmt: skip
    new["metadata"]["creationTimestamp"] = iso(ago(minutes=2))  # the model rolled out lately
    env = await observing(
        *feature_job(onset), old, new, deployment=dep,
        # A timer pass every 60 s: the diagnosis must follow the alerts by itself.
        operator_env={"MLWARDEN_RESPOND_INTERVAL": "60"},
        features=[{"name": "amount", "type": "numeric"}],
        pipeline=[{"name": "feature-etl", "kind": "CronJob", "produces": ["amount"]}],
    )  # fmt: skip
    api = env.api
    await patch_status(env.server, {"alerts": [
        alert("FeatureDrift", feature="amount", since=iso(onset))]})  # fmt: skip
    await eventually(lambda: status(api).get("topSuspect") == "CronJob/feature-etl",
                     what="FeatureDrift's diagnosis")  # fmt: skip
    # The pass that follows the change meets an API error (a 500 on its read of the
    # ObservedModel; everything else it reads from the watch-fed caches).
    fault = Fault("get", "observedmodels", status=500, name="fraud")
    api.faults = [fault]
    before = len(shown(api))
    await patch_status(
        env.server, {"alerts": [alert("PredictionDrift", since=iso(ago(seconds=5)))]}
    )
    await eventually(lambda: status(api).get("topSuspect") == "Deployment/fraud-model",
                     timeout=3, what="PredictionDrift's diagnosis")  # fmt: skip
    await asyncio.sleep(3)
    after = shown(api)[before:]
    first = next(i for i, (_, top) in enumerate(after) if top == "Deployment/fraud-model")
    stale = [v for v in after[first:] if v != (["PredictionDrift"], "Deployment/fraud-model")]
    assert not stale, after
    assert fault.hits  # the error did happen
    diagnosis = status(api)["diagnosis"]
    assert diagnosis["forAlerts"] == ["PredictionDrift"]
    assert "PredictionDrift" in " ".join(diagnosis["suspects"][0]["evidence"])


async def test_a_full_reaction_list_is_never_written_past_its_bound(
    observing: Callable[..., Any],
) -> None:
    env = await observing(
        guardrails={"requireApproval": True},
        reactions=[{"alert": "Latency", "action": "scale", "maxReplicas": 4}],
    )
    api = env.api
    # MAX_STATUS_REACTIONS actions awaiting approval: no room for one more.
    waiting = [
        {"id": f"scale-{i:010x}", "action": "scale", "target": "Deployment/fraud-model",
         "from": "2", "to": "3", "reason": "Latency", "result": "Planned",
         "at": iso(ago(minutes=5)), "dryRun": False, "message": "",
         "patch": {"Deployment/fraud-model": {"spec": {"replicas": 3}}}}
        for i in range(MAX_STATUS_REACTIONS)
    ]  # fmt: skip
    await patch_status(env.server, {"alerts": [alert("Latency")], "reactions": waiting})
    refused = await eventually(lambda: event_messages(api, "ReactionNotRecorded"),
                               what="the Event saying why it is not recorded")  # fmt: skip
    assert f"holds {MAX_STATUS_REACTIONS} open actions" in refused[0]
    await eventually(lambda: status(api).get("diagnosis", {}).get("forAlerts") == ["Latency"],
                     what="the rest of the pass written")  # fmt: skip
    assert not api.__dict__.get("rejected"), api.__dict__.get("rejected")
    # Not recorded, so not taken; what was there stays within the bound.
    assert {r["id"] for r in reactions(api)} <= {w["id"] for w in waiting}
    assert obj(api, DEPLOYMENTS, "fraud-model")["spec"]["replicas"] == 2
