"""Retrain: the Job or Workflow built for an incident, how it is followed, and its planning.

The Job from a CronJob is compared with what `kubectl create job NAME --from=cronjob/CRONJOB`
creates: kubectl's createJobFromCronJob (kubernetes/kubectl, pkg/cmd/create/create_job.go,
and the expectation of its TestCreateJobFromCronJob) copies the jobTemplate's spec and labels,
puts its annotations over `cronjob.kubernetes.io/instantiate: manual`, and sets one owner
reference to the CronJob with `controller: true` and no blockOwnerDeletion. mlwarden adds two
labels and the incident's environment, and nothing else.
"""

from __future__ import annotations

import copy
import json
from datetime import timedelta
from typing import Any

import pytest

from mlwarden.react.actions import ActionRecord
from mlwarden.react.actuators import retrain
from mlwarden.react.actuators.retrain import (
    VARIABLES,
    Incident,
    RetrainError,
    follow,
    incident_for,
    job_from_cronjob,
    job_from_manifest,
    job_progress,
    run_name,
    still_running,
    workflow_from_template,
    workflow_progress,
)
from mlwarden.react.incidents import incident_id
from mlwarden.react.policy import plan_reactions
from mlwarden.timestamps import format_time

CRON = {"alert": "FeatureDrift", "action": "retrain", "retrain": {"cronJob": "fraud-train"}}
FROM_CM = {"alert": "FeatureDrift", "action": "retrain", "retrain": {"configMap": "fraud-job"}}
ARGO = {"alert": "FeatureDrift", "action": "retrain", "retrain": {"workflowTemplate": "fraud-kfp"}}
CRONJOB_UID = "11111111-2222-4333-8444-555555555555"


def cronjob(**template_meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": "fraud-train", "namespace": "ml", "uid": CRONJOB_UID},
        "spec": {
            "schedule": "0 3 * * *",
            "jobTemplate": {
                "metadata": template_meta,
                "spec": {
                    "backoffLimit": 2,
                    "template": {
                        "spec": {
                            "containers": [
                                {
                                    "name": "train",
                                    "image": "registry.example/train:4",
                                    "env": [
                                        {"name": "EPOCHS", "value": "10"},
                                        {"name": "MLWARDEN_MODEL", "value": "stale"},
                                    ],
                                },
                                {"name": "uploader", "image": "registry.example/up:1"},
                            ],
                            "restartPolicy": "Never",
                        }
                    },
                },
            },
        },
    }


INCIDENT = Incident(
    model="fraud",
    namespace="ml",
    incident="FeatureDrift/amount@2026-11-26T15:02:11Z",
    alerts=("FeatureDrift/amount", "FeatureDrift/age"),
    onset="2026-11-26T15:02:11Z",
    features=("age", "amount"),
    reference="warmup@3f9c2a1b0d4e",
    window="1000 records",
    window_start="2026-11-26T15:02:11Z",
    window_end="2026-11-26T15:30:00Z",
    action_id="retrain-0123456789",
)
ENV = [
    {"name": "MLWARDEN_MODEL", "value": "fraud"},
    {"name": "MLWARDEN_NAMESPACE", "value": "ml"},
    {"name": "MLWARDEN_INCIDENT", "value": "FeatureDrift/amount@2026-11-26T15:02:11Z"},
    {"name": "MLWARDEN_ALERTS", "value": "FeatureDrift/amount,FeatureDrift/age"},
    {"name": "MLWARDEN_ONSET", "value": "2026-11-26T15:02:11Z"},
    {"name": "MLWARDEN_DRIFTED_FEATURES", "value": "age,amount"},
    {"name": "MLWARDEN_REFERENCE", "value": "warmup@3f9c2a1b0d4e"},
    {"name": "MLWARDEN_WINDOW", "value": "1000 records"},
    {"name": "MLWARDEN_WINDOW_START", "value": "2026-11-26T15:02:11Z"},
    {"name": "MLWARDEN_WINDOW_END", "value": "2026-11-26T15:30:00Z"},
    {"name": "MLWARDEN_ACTION_ID", "value": "retrain-0123456789"},
]
OURS = {"mlwarden.io/action-id": "retrain-0123456789", "mlwarden.io/observedmodel": "fraud"}


# --------------------------------------------------------------------------- from a CronJob


def test_a_job_from_a_cronjob_is_what_kubectl_create_job_from_makes(build: Any) -> None:
    source = cronjob(
        labels={"team": "risk"},
        annotations={"owner": "ml-platform", "cronjob.kubernetes.io/instantiate": "by-hand"},
    )
    job = job_from_cronjob(
        source,
        name="fraud-train-retrain-0123456789",
        model=build.model(CRON),
        record_id="retrain-0123456789",
        incident=INCIDENT,
    )
    # kubectl create job fraud-train-retrain-0123456789 --from=cronjob/fraud-train -n ml
    kubectl = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": "fraud-train-retrain-0123456789",
            "namespace": "ml",
            # the template's annotations go over kubectl's own, as in its loop
            "annotations": {
                "cronjob.kubernetes.io/instantiate": "by-hand",
                "owner": "ml-platform",
            },
            "labels": {"team": "risk"},
            "ownerReferences": [
                {
                    "apiVersion": "batch/v1",
                    "kind": "CronJob",
                    "name": "fraud-train",
                    "uid": CRONJOB_UID,
                    "controller": True,
                }
            ],
        },
        "spec": source["spec"]["jobTemplate"]["spec"],
    }
    ours = copy.deepcopy(job)
    assert ours["metadata"]["labels"] == {"team": "risk", **OURS}
    ours["metadata"]["labels"] = {"team": "risk"}
    containers = ours["spec"]["template"]["spec"]["containers"]
    # Every container gets the incident, replacing a variable of the same name.
    assert containers[0]["env"] == [{"name": "EPOCHS", "value": "10"}, *ENV]
    assert containers[1]["env"] == ENV
    containers[0]["env"] = cronjob()["spec"]["jobTemplate"]["spec"]["template"]["spec"][
        "containers"
    ][0]["env"]
    del containers[1]["env"]
    assert ours == kubectl
    assert "blockOwnerDeletion" not in job["metadata"]["ownerReferences"][0]
    assert source == cronjob(
        labels={"team": "risk"},
        annotations={"owner": "ml-platform", "cronjob.kubernetes.io/instantiate": "by-hand"},
    )  # the CronJob read is not changed


def test_a_job_template_without_metadata_gets_kubectls_annotation_and_only_our_labels(
    build: Any,
) -> None:
    source = cronjob()
    del source["spec"]["jobTemplate"]["metadata"]
    job = job_from_cronjob(
        source, name="j", model=build.model(CRON), record_id="retrain-0123456789",
        incident=INCIDENT,
    )  # fmt: skip
    assert job["metadata"]["annotations"] == {"cronjob.kubernetes.io/instantiate": "manual"}
    assert job["metadata"]["labels"] == OURS


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (lambda c: c["spec"].pop("jobTemplate"), "CronJob fraud-train has no spec.jobTemplate"),
        (
            lambda c: c["spec"]["jobTemplate"]["spec"]["template"]["spec"].pop("containers"),
            "has no containers in spec.template.spec.containers",
        ),
        (
            lambda c: c["spec"]["jobTemplate"].update(metadata={"labels": ["a"]}),
            "jobTemplate labels must be a map of strings",
        ),
    ],
)
def test_a_cronjob_that_cannot_make_a_job_says_why(build: Any, change: Any, error: str) -> None:
    source = cronjob()
    change(source)
    with pytest.raises(RetrainError, match=error):
        job_from_cronjob(
            source, name="j", model=build.model(CRON), record_id="r-1", incident=INCIDENT
        )


# --------------------------------------------------------------------------- from a ConfigMap

MANIFEST = """\
apiVersion: batch/v1
kind: Job
metadata:
  generateName: fraud-retrain-
  labels: {team: risk}
  annotations: {note: from git}
spec:
  ttlSecondsAfterFinished: 86400
  template:
    spec:
      restartPolicy: Never
      containers:
        - name: train
          image: registry.example/train:4
"""


def configmap(text: str = MANIFEST, key: str = "job.yaml") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "fraud-job", "namespace": "ml"},
        "data": {key: text},
    }


def test_a_job_from_a_configmap_keeps_its_manifest_and_is_owned_by_the_model(
    build: Any,
) -> None:
    model = build.model(FROM_CM)
    job = job_from_manifest(
        configmap(), key="job.yaml", name="fraud-job-retrain-0123456789", model=model,
        record_id="retrain-0123456789", incident=INCIDENT,
    )  # fmt: skip
    assert job == {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": "fraud-job-retrain-0123456789",  # generateName replaced: see run_name
            "namespace": "ml",
            "labels": {"team": "risk", **OURS},
            "annotations": {"note": "from git"},
            "ownerReferences": [
                {
                    "apiVersion": "mlwarden.io/v1alpha1",
                    "kind": "ObservedModel",
                    "name": "fraud",
                    "uid": build.UID,
                }
            ],
        },
        "spec": {
            "ttlSecondsAfterFinished": 86400,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {"name": "train", "image": "registry.example/train:4", "env": ENV}
                    ],
                }
            },
        },
    }


def test_a_json_manifest_is_read_too(build: Any) -> None:
    doc = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "spec": {"template": {"spec": {"containers": [{"name": "t", "image": "i"}]}}},
    }
    job = job_from_manifest(
        configmap(json.dumps(doc), key="train.json"), key="train.json", name="j",
        model=build.model(FROM_CM), record_id="retrain-0123456789", incident=INCIDENT,
    )  # fmt: skip
    assert job["spec"]["template"]["spec"]["containers"][0]["env"] == ENV
    assert "annotations" not in job["metadata"]


@pytest.mark.parametrize(
    ("text", "key", "error"),
    [
        (MANIFEST, "other.yaml", r"ConfigMap fraud-job has no key 'job.yaml' \(its keys: other"),
        ("kind: Job\n  bad: [", "job.yaml", "ConfigMap fraud-job key job.yaml: not YAML or JSON"),
        ("- a\n- b\n", "job.yaml", "must hold one Job manifest .an object., got list"),
        (
            MANIFEST.replace("kind: Job", "kind: CronJob"),
            "job.yaml",
            "must be a Job .apiVersion batch/v1, kind Job., got 'batch/v1' 'CronJob'",
        ),
        (
            MANIFEST.replace("metadata:\n", "metadata:\n  namespace: prod\n"),
            "job.yaml",
            "metadata.namespace is 'prod'; the Job is started in the ObservedModel's namespace",
        ),
        (
            MANIFEST.replace("      containers:\n", "      initContainers:\n"),
            "job.yaml",
            "has no containers in spec.template.spec.containers",
        ),
    ],
)
def test_a_configmap_that_holds_no_usable_job_says_why(
    build: Any, text: str, key: str, error: str
) -> None:
    with pytest.raises(RetrainError, match=error):
        job_from_manifest(
            configmap(text, key=key), key="job.yaml", name="j", model=build.model(FROM_CM),
            record_id="r-1", incident=INCIDENT,
        )  # fmt: skip


# --------------------------------------------------------------------------- an Argo Workflow


def workflow_template(*parameters: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "WorkflowTemplate",
        "metadata": {"name": "fraud-kfp", "namespace": "ml"},
        "spec": {
            "entrypoint": "train",
            "arguments": {"parameters": list(parameters)},
            "templates": [{"name": "train", "container": {"image": "train:4"}}],
        },
    }


def test_a_workflow_runs_the_template_with_the_incident_as_parameters(build: Any) -> None:
    template = workflow_template(
        {"name": "mlwarden-drifted-features"},  # declared, no default: mlwarden passes it
        {"name": "epochs", "value": "10"},
        {"name": "bucket", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}},
    )
    wf = workflow_from_template(
        template, name="fraud-kfp-retrain-0123456789", model=build.model(ARGO),
        record_id="retrain-0123456789", incident=INCIDENT,
    )  # fmt: skip
    # `argo submit --from workflowtemplate/fraud-kfp -p ...` (Argo's
    # NewWorkflowFromWorkflowTemplate): workflowTemplateRef and the template label; the
    # parameters in spec.arguments; a fixed name instead of generateName.
    assert wf == {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {
            "name": "fraud-kfp-retrain-0123456789",
            "namespace": "ml",
            "labels": {"workflows.argoproj.io/workflow-template": "fraud-kfp", **OURS},
            "ownerReferences": [
                {
                    "apiVersion": "mlwarden.io/v1alpha1",
                    "kind": "ObservedModel",
                    "name": "fraud",
                    "uid": build.UID,
                }
            ],
        },
        "spec": {
            "workflowTemplateRef": {"name": "fraud-kfp"},
            "arguments": {
                "parameters": [
                    {"name": p, "value": e["value"]}
                    for (_, p, _), e in zip(VARIABLES, ENV, strict=True)
                ]
            },
        },
    }
    names = [p["name"] for p in wf["spec"]["arguments"]["parameters"]]
    assert names[0] == "mlwarden-model" and names[5] == "mlwarden-drifted-features"
    # Argo's parameter names: alphanumerics, '-' and '_' (workflow/validate).
    assert all(n.replace("-", "").replace("_", "").isalnum() for n in names)


def test_a_template_parameter_nobody_fills_is_refused_before_submitting(build: Any) -> None:
    template = workflow_template({"name": "dataset"}, {"name": "region", "default": "eu"})
    with pytest.raises(RetrainError, match=r"declares parameters without a value .* dataset;"):
        workflow_from_template(
            template, name="w", model=build.model(ARGO), record_id="r-1", incident=INCIDENT
        )


# --------------------------------------------------------------------------- names, incident


def test_the_run_name_is_fixed_by_the_action_and_fits_63_characters() -> None:
    assert run_name("fraud-train", "retrain-0123456789") == "fraud-train-retrain-0123456789"
    long = run_name("a" * 43 + "-b" * 20, "retrain-0123456789")
    assert len(long) <= 63 and long.endswith("a-retrain-0123456789"), long
    assert run_name("a" * 44 + ".x", "retrain-0123456789") == "a" * 44 + "-retrain-0123456789"


def _record(**kw: Any) -> ActionRecord:
    base: dict[str, Any] = {
        "id": "retrain-0123456789",
        "action": "retrain",
        "target": "CronJob/fraud-train",
        "from_state": "",
        "to_state": "Job",
        "reason": "FeatureDrift on amount",
        "result": "Running",
        "at": "2026-11-26T15:30:00Z",
    }
    return ActionRecord(**{**base, **kw})


def test_the_incident_comes_from_the_alerts_the_reaction_matches(build: Any) -> None:
    model = build.model({**CRON, "feature": "amount"})
    alerts = [
        build.alert("FeatureDrift", "age", since="2026-11-26T14:00:00Z"),  # not this reaction's
        build.alert("FeatureDrift", "amount"),
        build.alert("Latency", None, since="2026-11-26T13:00:00Z"),
    ]
    got = incident_for(model=model, record=_record(), alerts=alerts, reference_id="x")
    assert got == Incident(
        model="fraud",
        namespace="ml",
        incident=incident_id(  # the id the incident gets in status.incidents
            model_uid=model.uid or f"{model.namespace}/{model.name}",
            key="FeatureDrift/amount",
            since=str(alerts[1]["since"]),
        ),
        alerts=("FeatureDrift/amount",),
        onset="2026-11-26T15:02:11Z",
        features=("age", "amount"),  # every feature drifting, for the training job
        reference="warmup@3f9c2a1b0d4e",  # the alert's own reference
        window="1000 records",
        window_start="2026-11-26T15:02:11Z",
        window_end="2026-11-26T15:30:00Z",
        action_id="retrain-0123456789",
    )


def test_a_duration_window_reaches_back_from_the_onset(build: Any) -> None:
    model = build.model(CRON)
    model = type(model)(
        name=model.name,
        namespace=model.namespace,
        uid=model.uid,
        spec=type(model.spec)(
            **{**model.spec.__dict__, "window": type(model.spec.window)(None, 300.0)}
        ),
    )
    got = incident_for(model=model, record=_record(), alerts=[build.alert()], reference_id=None)
    assert (got.window, got.window_start) == ("300s", "2026-11-26T14:57:11Z")


def test_alerts_resolved_before_the_run_leave_the_alert_fields_empty(build: Any) -> None:
    got = incident_for(model=build.model(CRON), record=_record(), alerts=[], reference_id="ref-9")
    assert (got.incident, got.alerts, got.onset, got.reference) == ("", (), "", "ref-9")
    assert got.window_end == "2026-11-26T15:30:00Z"


# --------------------------------------------------------------------------- following the run


def job(**status: Any) -> dict[str, Any]:
    return {
        "kind": "Job",
        "metadata": {"name": "fraud-train-retrain-0123456789", "labels": dict(OURS)},
        "spec": {},
        "status": status,
    }


def test_a_job_ends_by_its_terminal_conditions() -> None:
    assert job_progress(job()).result == "Running"
    assert job_progress(job(active=1)).message.endswith("running: 1 active, 0 succeeded, 0 failed")
    # Kubernetes 1.31+ adds SuccessCriteriaMet / FailureTarget before the terminal condition.
    interim = job(succeeded=1, conditions=[{"type": "SuccessCriteriaMet", "status": "True"}])
    assert job_progress(interim).result == "Running"
    done = job(succeeded=1, conditions=[{"type": "Complete", "status": "True"}])
    assert job_progress(done) == retrain.Progress(
        "Succeeded", "Job/fraud-train-retrain-0123456789 completed; 1 succeeded, 0 failed"
    )
    failed = job(
        failed=3,
        conditions=[
            {"type": "Complete", "status": "False"},
            {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
             "message": "Job has reached the specified backoff limit"},
        ],
    )  # fmt: skip
    assert job_progress(failed) == retrain.Progress(
        "Failed",
        "Job/fraud-train-retrain-0123456789 failed (BackoffLimitExceeded: Job has reached the "
        "specified backoff limit); 0 succeeded, 3 failed",
    )
    suspended = {**job(), "spec": {"suspend": True}}
    assert "suspended" in job_progress(suspended).message


@pytest.mark.parametrize(
    ("phase", "result"),
    [
        (None, "Running"),
        ("Pending", "Running"),
        ("Running", "Running"),
        ("Succeeded", "Succeeded"),
        ("Failed", "Failed"),
        ("Error", "Failed"),
    ],
)
def test_a_workflow_ends_by_its_phase(phase: str | None, result: str) -> None:
    wf = {"metadata": {"name": "w"}, "status": {"phase": phase, "message": "child 'train' failed"}}
    assert workflow_progress(wf).result == result


def test_follow_settles_the_record_and_never_restarts_a_gone_run(build: Any) -> None:
    rec = _record(run="Job/fraud-train-retrain-0123456789")
    running = follow(rec, job(active=1), now=build.NOW)
    assert (running.result, running.run) == ("Running", rec.run)
    done = follow(
        rec, job(succeeded=1, conditions=[{"type": "Complete", "status": "True"}]), now=build.NOW
    )
    assert (done.result, done.id, done.at) == ("Succeeded", rec.id, rec.at)
    gone = follow(rec, None, now=build.NOW)
    assert (
        gone.result == "Failed"
        and "is gone" in gone.message
        and "not started again" in (gone.message)
    )
    other = job()
    other["metadata"]["labels"] = {}
    assert follow(_record(), other, now=build.NOW).result == "Failed"
    assert "mlwarden did not start it" in follow(_record(), other, now=build.NOW).message


def test_a_run_that_outlasts_the_timeout_is_given_up_on(build: Any) -> None:
    rec = _record(run="Job/fraud-train-retrain-0123456789")
    started = job(active=1)
    started["metadata"]["creationTimestamp"] = format_time(build.NOW - timedelta(hours=2))
    assert follow(rec, started, now=build.NOW, timeout_seconds=7200).result == "Running"
    late = follow(rec, started, now=build.NOW, timeout_seconds=7199)
    assert late.result == "Failed" and late.run == rec.run
    assert late.message.endswith(
        "not finished 7199s after it was created (retrain.timeout): given up on and left as it is"
    )
    assert (
        "not finished 2h after"
        in follow(rec, started, now=build.NOW + timedelta(hours=1), timeout_seconds=7200).message
    )


def test_still_running_holds_a_second_run_from_the_same_source() -> None:
    history = [_record(run="Job/x")]
    assert "still running" in (
        still_running(target="CronJob/fraud-train", history=history, dry_run=False) or ""
    )
    assert still_running(target="CronJob/other", history=history, dry_run=False) is None
    assert still_running(target="CronJob/fraud-train", history=history, dry_run=True) is None
    ended = [_record(result="Succeeded")]
    assert still_running(target="CronJob/fraud-train", history=ended, dry_run=False) is None


# --------------------------------------------------------------------------- planning


def plan(build: Any, model: Any, alerts: list[dict[str, Any]], snap: dict[Any, Any], *,
         history: list[ActionRecord] | None = None, annotations: dict[str, str] | None = None,
         later: timedelta = timedelta(0)) -> list[ActionRecord]:  # fmt: skip
    return plan_reactions(
        model=model, alerts=alerts, diagnosis_top=None, snapshot=snap, history=history or [],
        annotations=annotations or {}, detector_ready=True, warming_up=False,
        now=build.NOW + later,
    )  # fmt: skip


def test_retrain_is_planned_on_its_source(build: Any) -> None:
    (record,) = plan(build, build.model(CRON), [build.alert()], build.snapshot(cronjob()))
    assert (record.action, record.target, record.to_state, record.result) == (
        "retrain", "CronJob/fraud-train", "Job", "Running",
    )  # fmt: skip
    assert record.patch == {} and record.run == ""
    assert retrain.run_ref(record) == f"Job/fraud-train-retrain-{record.id.split('-')[1]}"


def test_a_missing_cronjob_or_configmap_is_skipped_and_a_template_is_read_later(
    build: Any,
) -> None:
    (cron,) = plan(build, build.model(CRON), [build.alert()], {})
    assert (cron.result, cron.reason) == ("Skipped", "CronJob ml/fraud-train not found")
    (cm,) = plan(build, build.model(FROM_CM), [build.alert()], {})
    assert (cm.result, cm.reason) == ("Skipped", "ConfigMap ml/fraud-job not found")
    (wf,) = plan(build, build.model(ARGO), [build.alert()], {})
    assert (wf.result, wf.target, wf.to_state) == (
        "Running",
        "WorkflowTemplate/fraud-kfp",
        "Workflow",
    )


def test_every_guardrail_applies_to_retrain(build: Any) -> None:
    snap = build.snapshot(cronjob())
    alerts = [build.alert()]
    # dry run: recorded as done, nothing started
    dry = build.model(CRON, guardrails={"dryRun": True})
    (record,) = plan(build, dry, alerts, snap)
    assert (record.result, record.dry_run) == ("Succeeded", True)
    # approval
    approve = build.model(CRON, guardrails={"requireApproval": True})
    (waiting,) = plan(build, approve, alerts, snap)
    assert waiting.result == "Planned" and "mlwarden.io/approve=" in waiting.message
    (approved,) = plan(build, approve, alerts, snap, history=[waiting],
                       annotations={"mlwarden.io/approve": waiting.id})  # fmt: skip
    assert approved.result == "Running"
    model = build.model(CRON)
    (first,) = plan(build, model, alerts, snap)
    # once per incident: the same incident (onset) under another alert does not retrain again
    ended = first.settle("Failed", "Job failed")
    other = [build.alert("FeatureDrift", "age")]
    (again,) = plan(build, model, other, snap, history=[ended], later=timedelta(hours=2))
    assert again.result == "Skipped" and "taken in this incident already" in again.reason
    # cooldown: a new incident within the cooldown
    new = [build.alert(since=format_time(build.NOW + timedelta(minutes=1)))]
    (cool,) = plan(build, model, new, snap, history=[ended], later=timedelta(minutes=2))
    assert cool.result == "Skipped" and cool.reason.startswith("cooldown 10m")
    # still running: a new incident after the cooldown, while the first run runs
    running = ActionRecord.from_status({**first.to_status(), "run": "Job/x"})
    followed, held = plan(build, model, new, snap, history=[running], later=timedelta(minutes=30))
    assert followed == running  # handed to the shell to follow
    assert held.result == "Skipped" and "still running" in held.reason
    # the hourly limit counts retrains with the other actions
    busy = [build.record(id=f"scale-{i}", ago=timedelta(minutes=20 + i)) for i in range(3)]
    (limited,) = plan(build, model, alerts, snap, history=busy)
    assert limited.result == "Skipped" and "maxActionsPerHour 3 reached" in limited.reason


def test_a_running_retrain_is_left_running_for_the_shell_to_follow(build: Any) -> None:
    running = ActionRecord.from_status(
        {**plan(build, build.model(CRON), [build.alert()], build.snapshot(cronjob()))[0]
         .to_status(), "run": "Job/fraud-train-retrain-1"}
    )  # fmt: skip
    # After an operator restart, with the alert resolved: not failed, not repeated.
    (again,) = plan(build, build.model(CRON), [], build.snapshot(cronjob()), history=[running])
    assert again == running


def test_retrain_waits_while_the_diagnosis_names_a_cause(build: Any) -> None:
    """Retraining answers drift nothing in the cluster explains; a fault is fixed, not learnt."""
    model, snap, alerts = build.model(CRON), build.snapshot(cronjob()), [build.alert()]
    top = {"kind": "CronJob", "name": "feature-etl", "score": 0.81, "evidence": ["new image"]}
    (held,) = plan_reactions(
        model=model, alerts=alerts, diagnosis_top=top, snapshot=snap, history=[],
        annotations={}, detector_ready=True, warming_up=False, now=build.NOW,
    )  # fmt: skip
    assert held.result == "Skipped"
    assert held.reason.startswith("the diagnosis blames CronJob/feature-etl: retraining on data")
    rollout = {"kind": "Deployment", "name": "fraud-model", "revision": "7", "score": 0.9}
    assert "Deployment/fraud-model (revision 7)" in (retrain.blames_a_change(top=rollout) or "")
    # No plausible cause (the planner gets none below diagnose's PLAUSIBLE_SCORE): retrain.
    (went,) = plan(build, model, alerts, snap)
    assert went.result == "Running"
