"""Retraining as a reaction: the real operator starts a Job or an Argo Workflow and follows it.

Each test brings ObservedModel `fraud` to Observing with a `retrain` reaction and the run's
source seeded (a CronJob, a ConfigMap holding a Job manifest, or an Argo WorkflowTemplate with
Argo's CRDs installed in the emulator), then writes an alert as the detector would. Nothing in
the emulator runs a Job or a Workflow: the tests write the status the Job controller or Argo's
workflow controller would write, through the API (emulate_runs.py), and watch the reaction
record follow it. Passes run every 0.5 s (FAST).
"""

from __future__ import annotations

import asyncio
import re
import signal
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import aiohttp
import pytest
from cluster import (
    FAST,
    MERGE,
    NS,
    OM_PATH,
    RESOURCES,
    Cluster,
    Fault,
    OperatorProcess,
    ago,
    alert,
    api_call,
    events,
    eventually,
    iso,
    patch_status,
    reactions,
    status,
)
from emulate_runs import install_argo, job_ends, job_running, workflow_phase

FEATURES = [{"name": "amount", "type": "numeric"}, {"name": "age", "type": "numeric"}]
CRON = {"alert": "FeatureDrift", "action": "retrain", "retrain": {"cronJob": "fraud-train"}}
FROM_CM = {"alert": "FeatureDrift", "action": "retrain", "retrain": {"configMap": "fraud-job"}}
ARGO = {"alert": "FeatureDrift", "action": "retrain", "retrain": {"workflowTemplate": "fraud-kfp"}}
ACTION_LABEL = "mlwarden.io/action-id"


# --------------------------------------------------------------------------- the sources


def meta(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "namespace": NS, "uid": str(uuid.uuid4()), "resourceVersion": "1",
            "creationTimestamp": iso(ago(days=30)), **extra}  # fmt: skip


def cronjob() -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1", "kind": "CronJob", "metadata": meta("fraud-train"),
        "spec": {"schedule": "0 3 * * *", "jobTemplate": {
            "metadata": {"labels": {"team": "risk"}},
            "spec": {"backoffLimit": 2, "template": {"spec": {
                "containers": [{"name": "train", "image": "registry.example/train:4"}],
                "restartPolicy": "Never"}}}}},
    }  # fmt: skip


JOB_YAML = """\
apiVersion: batch/v1
kind: Job
metadata:
  labels: {team: risk}
spec:
  ttlSecondsAfterFinished: 86400
  template:
    spec:
      restartPolicy: Never
      containers:
        - name: train
          image: registry.example/train:4
"""


def job_configmap() -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta("fraud-job"),
            "data": {"job.yaml": JOB_YAML}}  # fmt: skip


def workflow_template() -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1", "kind": "WorkflowTemplate",
        "metadata": meta("fraud-kfp"),
        "spec": {"entrypoint": "train",
                 "arguments": {"parameters": [{"name": "epochs", "value": "10"}]},
                 "templates": [{"name": "train", "container": {"image": "train:4"}}]},
    }  # fmt: skip


# --------------------------------------------------------------------------- reading


def objects_of(api: Cluster, kind: str) -> list[dict[str, Any]]:
    resource = RESOURCES[kind].rpartition("/")[2]
    return [
        dict(api.objects[key])
        for key in list(api.objects)
        if str(key[0].plural) == resource and not api.objects[key].deleted
    ]


def runs(api: Cluster, kind: str = "Job") -> list[dict[str, Any]]:
    """The Jobs (or Workflows) mlwarden started."""
    return [o for o in objects_of(api, kind) if ACTION_LABEL in (o["metadata"].get("labels") or {})]


def retrains(api: Cluster) -> list[dict[str, Any]]:
    return [r for r in reactions(api) if r["action"] == "retrain"]


def started(api: Cluster) -> dict[str, Any] | None:
    return next((r for r in retrains(api) if r.get("run") and r["result"] == "Running"), None)


def record(api: Cluster, rid: str) -> dict[str, Any]:
    return next(r for r in retrains(api) if r["id"] == rid)


def messages(api: Cluster, reason: str) -> list[str]:
    return [str(e.get("message")) for e in events(api) if e.get("reason") == reason]


def env_of(run: dict[str, Any]) -> dict[str, str]:
    (container,) = run["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value", "") for e in container.get("env") or []}


async def metric(port: int, result: str) -> float:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics") as r:
        text = await r.text()
    line = rf'^mlwarden_operator_reactions_total\{{action="retrain",result="{result}"\}} (\S+)$'
    found = re.search(line, text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


async def settle(op: OperatorProcess, seconds: float = 1.5) -> None:
    await asyncio.sleep(seconds)
    assert op.proc.returncode is None, op.log()[-3000:]


async def drift(server: str, *features: str, since: str | None = None) -> str:
    """FeatureDrift alerts on `features` (amount by default), one onset; returns the onset."""
    onset = since or iso(ago(minutes=1))
    alerts = [alert("FeatureDrift", feature=f, since=onset) for f in features or ("amount",)]
    await patch_status(server, {"alerts": alerts})
    return onset


# --------------------------------------------------------------------------- the three sources


async def test_retrain_from_a_cronjob_starts_kubectls_job_and_follows_it_to_succeeded(
    observing: Callable[..., Any],
) -> None:
    source = cronjob()
    env = await observing(source, features=FEATURES, reactions=[CRON])
    api, server = env.api, env.server
    onset = await drift(server)
    rec = await eventually(lambda: started(api), what="the retrain record naming its Job")
    (job,) = runs(api)
    name = job["metadata"]["name"]
    assert rec["run"] == f"Job/{name}" and rec["target"] == "CronJob/fraud-train"
    assert name == f"fraud-train-retrain-{rec['id'].partition('-')[2]}"
    # What `kubectl create job NAME --from=cronjob/fraud-train` sets, and mlwarden's labels.
    assert job["metadata"]["annotations"] == {"cronjob.kubernetes.io/instantiate": "manual"}
    assert job["metadata"]["ownerReferences"] == [
        {"apiVersion": "batch/v1", "kind": "CronJob", "name": "fraud-train",
         "uid": source["metadata"]["uid"], "controller": True}
    ]  # fmt: skip
    assert job["metadata"]["labels"] == {
        "team": "risk",
        ACTION_LABEL: rec["id"],
        "mlwarden.io/observedmodel": "fraud",
    }
    assert job["spec"]["backoffLimit"] == 2
    incident = env_of(job)["MLWARDEN_INCIDENT"]
    assert incident.startswith("inc-") and len(incident) == 14  # status.incidents' id
    assert env_of(job) == {
        "MLWARDEN_MODEL": "fraud",
        "MLWARDEN_NAMESPACE": NS,
        "MLWARDEN_INCIDENT": incident,
        "MLWARDEN_ALERTS": "FeatureDrift/amount",
        "MLWARDEN_ONSET": onset,
        "MLWARDEN_DRIFTED_FEATURES": "amount",
        "MLWARDEN_REFERENCE": "warmup@abc",
        "MLWARDEN_WINDOW": "1000 records",
        "MLWARDEN_WINDOW_START": onset,
        "MLWARDEN_WINDOW_END": rec["at"],
        "MLWARDEN_ACTION_ID": rec["id"],
    }
    assert status(api)["phase"] == "Reacting"
    await eventually(lambda: messages(api, "RetrainStarted"), what="RetrainStarted")

    # The Job controller: a pod runs, then the Job completes.
    await job_running(server, name)
    await eventually(lambda: "1 active" in record(api, rec["id"])["message"], what="running")
    await job_ends(server, name, succeeded=True)
    done = await eventually(
        lambda: (r := record(api, rec["id"]))["result"] == "Succeeded" and r, what="Succeeded"
    )
    assert done["message"] == f"Job/{name} completed; 1 succeeded, 0 failed"
    assert done["run"] == f"Job/{name}"
    await eventually(lambda: messages(api, "ReactionSucceeded"), what="ReactionSucceeded")
    assert await metric(env.metrics, "Succeeded") == 1
    await eventually(lambda: status(api)["phase"] == "Degraded", what="no longer Reacting")
    await settle(env.op)
    assert len(runs(api)) == 1  # started once, though the alert is still active
    assert [r["id"] for r in retrains(api)] == [rec["id"]]


async def test_retrain_from_a_configmap_template_follows_the_job_to_failed(
    observing: Callable[..., Any],
) -> None:
    env = await observing(job_configmap(), features=FEATURES, reactions=[FROM_CM])
    api, server = env.api, env.server
    await drift(server, "amount", "age")
    rec = await eventually(lambda: started(api), what="the Job started")
    (job,) = runs(api)
    om = api.objects[RESOURCES["ObservedModel"], NS, "fraud"]
    assert job["metadata"]["ownerReferences"] == [
        {"apiVersion": "mlwarden.io/v1alpha1", "kind": "ObservedModel", "name": "fraud",
         "uid": om["metadata"]["uid"]}
    ]  # fmt: skip
    assert job["spec"]["ttlSecondsAfterFinished"] == 86400
    assert env_of(job)["MLWARDEN_DRIFTED_FEATURES"] == "age,amount"
    assert env_of(job)["MLWARDEN_ALERTS"] == "FeatureDrift/age,FeatureDrift/amount"

    await job_ends(server, job["metadata"]["name"], succeeded=False)
    failed = await eventually(
        lambda: (r := record(api, rec["id"]))["result"] == "Failed" and r, what="Failed"
    )
    assert (
        "failed (BackoffLimitExceeded: Job has reached the specified backoff limit)"
        in (failed["message"])
    )
    warning = await eventually(lambda: messages(api, "ReactionFailed"), what="ReactionFailed")
    assert "BackoffLimitExceeded" in warning[0]
    assert await metric(env.metrics, "Failed") == 1
    await settle(env.op)
    assert len(runs(api)) == 1  # a failed retraining is not retried in the same incident


@pytest.mark.parametrize(("phase", "result"), [("Succeeded", "Succeeded"), ("Error", "Failed")])
async def test_retrain_as_an_argo_workflow_follows_its_phase(
    phase: str, result: str, cluster: tuple[Cluster, str], observing: Callable[..., Any]
) -> None:
    api, _ = cluster
    install_argo(api)
    env = await observing(workflow_template(), features=FEATURES, reactions=[ARGO])
    server = env.server
    onset = await drift(server)
    rec = await eventually(lambda: started(api), what="the Workflow submitted")
    (wf,) = runs(api, "Workflow")
    name = wf["metadata"]["name"]
    assert rec["run"] == f"Workflow/{name}" and rec["target"] == "WorkflowTemplate/fraud-kfp"
    assert wf["spec"]["workflowTemplateRef"] == {"name": "fraud-kfp"}
    assert wf["metadata"]["labels"]["workflows.argoproj.io/workflow-template"] == "fraud-kfp"
    params = {p["name"]: p["value"] for p in wf["spec"]["arguments"]["parameters"]}
    assert params["mlwarden-model"] == "fraud" and params["mlwarden-onset"] == onset
    assert params["mlwarden-incident"].startswith("inc-")  # the id in status.incidents
    # The record as first read: its start, or already the next pass's progress on a Workflow
    # the (absent) Argo controller has not picked up (a loaded machine polls slower).
    assert rec["message"] in (
        f"started Workflow/{name} from WorkflowTemplate/fraud-kfp",
        f"Workflow/{name} submitted; not picked up by Argo's controller yet",
    )
    await eventually(
        lambda: "not picked up by Argo's controller yet" in record(api, rec["id"])["message"],
        what="waiting for Argo",
    )

    await workflow_phase(server, name, "Running")
    await eventually(lambda: record(api, rec["id"])["message"] == f"Workflow/{name} Running",
                     what="Running")  # fmt: skip
    message = "child 'train' failed" if phase == "Error" else ""
    await workflow_phase(server, name, phase, message)
    ended = await eventually(
        lambda: (r := record(api, rec["id"]))["result"] == result and r, what=result
    )
    assert ended["message"].startswith(f"Workflow/{name} {phase}")
    assert len(runs(api, "Workflow")) == 1


async def test_a_missing_workflow_template_fails_the_record_and_submits_nothing(
    cluster: tuple[Cluster, str], observing: Callable[..., Any]
) -> None:
    api, _ = cluster
    install_argo(api)
    env = await observing(features=FEATURES, reactions=[ARGO])
    await drift(env.server)
    failed = await eventually(
        lambda: next((r for r in retrains(api) if r["result"] == "Failed"), None), what="Failed"
    )
    assert failed["message"] == f"WorkflowTemplate {NS}/fraud-kfp not found"
    assert runs(api, "Workflow") == []


# --------------------------------------------------------------------------- guardrails


async def test_a_dry_run_records_the_retrain_and_starts_nothing(
    observing: Callable[..., Any],
) -> None:
    env = await observing(cronjob(), features=FEATURES, reactions=[CRON],
                          guardrails={"dryRun": True})  # fmt: skip
    api = env.api
    await drift(env.server)
    dry = await eventually(lambda: retrains(api), what="the dry-run record")
    assert (dry[0]["result"], dry[0]["dryRun"]) == ("Succeeded", True)
    said = await eventually(lambda: messages(api, "ReactionDryRun"), what="ReactionDryRun")
    assert "CronJob/fraud-train" in said[0]
    await settle(env.op)
    assert runs(api) == []


async def test_an_approval_is_awaited_before_the_job_starts(
    observing: Callable[..., Any],
) -> None:
    env = await observing(cronjob(), features=FEATURES, reactions=[CRON],
                          guardrails={"requireApproval": True})  # fmt: skip
    api = env.api
    await drift(env.server)
    planned = await eventually(lambda: retrains(api), what="the Planned record")
    assert planned[0]["result"] == "Planned"
    await settle(env.op)
    assert runs(api) == []
    await api_call(env.server, "PATCH", OM_PATH,
                   {"metadata": {"annotations": {"mlwarden.io/approve": planned[0]["id"]}}},
                   MERGE)  # fmt: skip
    rec = await eventually(lambda: started(api), what="started once approved")
    assert rec["id"] == planned[0]["id"]
    assert len(runs(api)) == 1


async def test_one_run_at_a_time_once_per_incident_and_the_cooldown(
    observing: Callable[..., Any],
) -> None:
    env = await observing(cronjob(), features=FEATURES, reactions=[CRON],
                          guardrails={"cooldown": "0s"})  # fmt: skip
    api, server = env.api, env.server
    onset = await drift(server)
    first = await eventually(lambda: started(api), what="the first run")
    # A new incident while the first run runs: not a second run from the same CronJob.
    await asyncio.sleep(1.1)  # onsets and records are written to the second
    await drift(server, since=iso(ago(seconds=0)))
    held = await eventually(
        lambda: next((r for r in retrains(api) if r["result"] == "Skipped"), None), what="held"
    )
    assert "still running" in held["reason"] and first["id"] in held["reason"]
    assert len(runs(api)) == 1
    # The first run fails. Its incident (the same onset, another feature now) is not
    # retrained again.
    await job_ends(server, first["run"].partition("/")[2], succeeded=False)
    await eventually(lambda: record(api, first["id"])["result"] == "Failed", what="Failed")
    await drift(server, "age", since=onset)
    again = await eventually(
        lambda: next((r for r in retrains(api) if "in this incident already" in r["reason"]),
                     None), what="once per incident")  # fmt: skip
    assert again["result"] == "Skipped"
    await settle(env.op)
    assert len(runs(api)) == 1


async def test_the_cooldown_and_the_hourly_limit_hold_a_new_incident(
    observing: Callable[..., Any],
) -> None:
    env = await observing(cronjob(), features=FEATURES, reactions=[CRON],
                          guardrails={"cooldown": "1h", "maxActionsPerHour": 1})  # fmt: skip
    api, server = env.api, env.server
    await drift(server)
    first = await eventually(lambda: started(api), what="the first run")
    await job_ends(server, first["run"].partition("/")[2], succeeded=True)
    await eventually(lambda: record(api, first["id"])["result"] == "Succeeded", what="done")
    await asyncio.sleep(1.1)
    await drift(server, since=iso(ago(seconds=0)))  # a new incident
    held = await eventually(
        lambda: next((r for r in retrains(api) if r["result"] == "Skipped"), None), what="held"
    )
    assert held["reason"].startswith("cooldown 60m: retrain of CronJob/fraud-train at ")
    # Without the cooldown, the hourly limit holds it.
    await api_call(env.server, "PATCH", OM_PATH,
                   {"spec": {"guardrails": {"cooldown": "0s"}}}, MERGE)  # fmt: skip
    limited = await eventually(
        lambda: next((r for r in retrains(api) if "maxActionsPerHour" in r["reason"]), None),
        what="the hourly limit",
    )
    assert limited["reason"].startswith("maxActionsPerHour 1 reached")
    assert len(runs(api)) == 1


async def test_no_retraining_while_the_diagnosis_blames_a_feature_job(
    observing: Callable[..., Any],
) -> None:
    """A feature job's failed run just before the onset: the drift is a fault, not a new world."""
    onset = ago(minutes=1)
    failed_at = onset - timedelta(minutes=3)
    etl = {
        "apiVersion": "batch/v1", "kind": "CronJob", "metadata": meta("feature-etl"),
        "spec": {"schedule": "*/30 * * * *", "jobTemplate": {"spec": {"template": {"spec": {
            "containers": [{"name": "etl", "image": "etl:1"}], "restartPolicy": "Never"}}}}},
    }  # fmt: skip
    run = {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": meta("feature-etl-29000000", ownerReferences=[{
            "apiVersion": "batch/v1", "kind": "CronJob", "name": "feature-etl",
            "uid": etl["metadata"]["uid"], "controller": True}]),
        "spec": {"template": {"spec": {"containers": [{"name": "etl", "image": "etl:1"}]}}},
        "status": {"startTime": iso(failed_at - timedelta(minutes=2)), "failed": 1,
                   "conditions": [{"type": "Failed", "status": "True",
                                   "reason": "BackoffLimitExceeded",
                                   "lastTransitionTime": iso(failed_at)}]},
    }  # fmt: skip
    env = await observing(
        cronjob(), etl, run, features=FEATURES, reactions=[CRON],
        pipeline=[{"name": "feature-etl", "kind": "CronJob", "produces": ["amount"]}],
    )  # fmt: skip
    api = env.api
    await drift(env.server, since=iso(onset))
    held = await eventually(lambda: retrains(api), what="the retrain record")
    assert held[0]["result"] == "Skipped"
    assert held[0]["reason"].startswith("the diagnosis blames CronJob/feature-etl: retraining")
    await settle(env.op)
    assert runs(api) == []
    assert len(retrains(api)) == 1  # the same reason is not written again


async def test_a_run_that_outlasts_its_timeout_is_given_up_on_and_left_alone(
    observing: Callable[..., Any],
) -> None:
    reaction = {**CRON, "retrain": {"cronJob": "fraud-train", "timeout": "3s"}}
    env = await observing(cronjob(), features=FEATURES, reactions=[reaction])
    api = env.api
    await drift(env.server)
    rec = await eventually(lambda: started(api), what="the Job started")
    await job_running(env.server, rec["run"].partition("/")[2])  # and never ends
    failed = await eventually(
        lambda: (r := record(api, rec["id"]))["result"] == "Failed" and r, what="given up"
    )
    assert "not finished 3s after it was created (retrain.timeout)" in failed["message"]
    assert len(runs(api)) == 1  # left as it is, not deleted


# --------------------------------------------------------------------------- restarts, faults


async def test_a_restart_while_the_job_runs_picks_it_up_from_the_record(
    observing: Callable[..., Any], start_operator: Callable[..., Any]
) -> None:
    env = await observing(cronjob(), features=FEATURES, reactions=[CRON])
    api, server = env.api, env.server
    await drift(server)
    rec = await eventually(lambda: started(api), what="the Job started")
    assert await env.op.stop() == 0
    await job_ends(server, rec["run"].partition("/")[2], succeeded=True)  # while it was down
    await start_operator(env=FAST)
    done = await eventually(lambda: record(api, rec["id"])["result"] == "Succeeded",
                            timeout=30, what="Succeeded after the restart")  # fmt: skip
    assert done
    await asyncio.sleep(1.5)
    assert len(runs(api)) == 1
    assert [r["id"] for r in retrains(api)] == [rec["id"]]


async def test_killed_after_creating_the_job_and_before_recording_it_adopts_it(
    observing: Callable[..., Any], start_operator: Callable[..., Any]
) -> None:
    env = await observing(cronjob(), features=FEATURES, reactions=[CRON])
    api, server = env.api, env.server
    # The create lands; its answer is held until the operator has been killed.
    hold = Fault("create", "jobs", status=0, delay=60, answer_late=True)
    api.faults = [hold]
    await drift(server)
    await eventually(lambda: hold.hits, timeout=30, what="the Job's create in flight")
    (recorded,) = retrains(api)
    assert recorded["result"] == "Running" and "run" not in recorded  # recorded first
    env.op.proc.send_signal(signal.SIGKILL)
    await env.op.proc.wait()
    (job,) = runs(api)  # it landed
    api.faults = []
    await start_operator(env=FAST)
    adopted = await eventually(lambda: record(api, recorded["id"]).get("run"), timeout=30,
                               what="the Job adopted")  # fmt: skip
    assert adopted == f"Job/{job['metadata']['name']}"
    await job_ends(server, job["metadata"]["name"], succeeded=True)
    await eventually(lambda: record(api, recorded["id"])["result"] == "Succeeded", what="done")
    assert len(runs(api)) == 1


async def test_a_create_answered_500_is_tried_again_under_the_same_name(
    observing: Callable[..., Any],
) -> None:
    env = await observing(cronjob(), features=FEATURES, reactions=[CRON])
    api = env.api
    fault = Fault("create", "jobs", status=500, times=2)
    api.faults = [fault]
    await drift(env.server)
    rec = await eventually(lambda: started(api), timeout=30, what="started after the faults")
    assert len(fault.hits) == 2
    (job,) = runs(api)
    assert rec["run"] == f"Job/{job['metadata']['name']}"
