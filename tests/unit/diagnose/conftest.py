"""Builders for the diagnosis tests: a namespace of raw objects the way the API server holds them.

Times are minutes relative to the alert onset (`kit.at(-6)` is six minutes before it). The
builders write what controllers would: ReplicaSets with `deployment.kubernetes.io/revision` per
Deployment revision, Pods with container statuses, Jobs named NAME-<scheduled minute> with
conditions under their CronJob, ControllerRevisions, `managedFields` with their writers.

Every test gets a `kit` fixture: `kit.cluster()` is a fresh namespace, `kit.model(...)` an
ObservedModel through the real parser, and `kit.drift(...)`, `kit.quality(...)`, ... alerts in
the detector's public shape.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import pytest

from mlwarden.diagnose import Snapshot
from mlwarden.spec import ObservedModel, parse_observed_model

NAMESPACE = "ml"
ONSET = datetime(2026, 11, 26, 15, 7, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return ONSET + timedelta(minutes=minutes)


def iso(minutes: float) -> str:
    return at(minutes).strftime("%Y-%m-%dT%H:%M:%SZ")


def _hash(*parts: object) -> str:
    return hashlib.sha1(repr(parts).encode()).hexdigest()[:8]


@dataclass
class Rev:
    """One revision of a workload's pod template."""

    at: float
    image: str
    env: Mapping[str, str] = field(default_factory=dict)
    config_maps: Sequence[str] = ()  # mounted as volumes
    secrets: Sequence[str] = ()  # mounted as volumes
    env_from: Sequence[str] = ()  # ConfigMaps read through envFrom
    secret_env: Sequence[str] = ()  # Secrets read through envFrom
    sidecar: bool = False  # the mlwarden sidecar is in the template
    restarted_at: float | None = None  # kubectl rollout restart
    container: str = "main"


@dataclass
class Pods:
    """The pods of the newest revision and how their main container is doing."""

    count: int = 2
    started: float | None = None  # default: the revision's time + 30 s
    restarts: int = 0
    crash_loop: bool = False
    last_exit: tuple[str, int] = ("Error", 1)
    last_finished: float | None = None


@dataclass
class Run:
    """One run of a CronJob, by its scheduled minute."""

    scheduled: float
    outcome: Literal["succeeded", "failed", "running", "failing"] = "succeeded"
    took: float = 2.0
    image: str | None = None  # default: the CronJob's image
    manual: bool = False
    reason: str = "BackoffLimitExceeded"
    env_from: Sequence[str] | None = None


def pod_template(rev: Rev, *, model: str = "fraud") -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": rev.container,
        "image": rev.image,
        "ports": [{"name": "http", "containerPort": 8080}],
        "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}},
    }
    if rev.env:
        container["env"] = [{"name": k, "value": v} for k, v in rev.env.items()]
    env_from = [{"configMapRef": {"name": n}} for n in rev.env_from]
    env_from += [{"secretRef": {"name": n}} for n in rev.secret_env]
    if env_from:
        container["envFrom"] = env_from
    volumes: list[dict[str, Any]] = []
    for name in rev.config_maps:
        volumes.append({"name": f"cm-{name}", "configMap": {"name": name}})
    for name in rev.secrets:
        volumes.append({"name": f"secret-{name}", "secret": {"secretName": name}})
    container["volumeMounts"] = [
        {"name": v["name"], "mountPath": f"/etc/{v['name']}"} for v in volumes
    ]
    containers = [container]
    if rev.sidecar:
        # What the operator's injection does: rename the model's port, add the sidecar and
        # its volume (the detector's ConfigMap).
        container["ports"] = [{"name": "mlwarden-model", "containerPort": 8080}]
        container["readinessProbe"] = {"httpGet": {"path": "/ready", "port": "mlwarden-model"}}
        containers.append(
            {
                "name": "mlwarden-sidecar",
                "image": "ghcr.io/mlwarden/mlwarden:0.1.0",
                "args": ["sidecar"],
                "ports": [{"name": "http", "containerPort": 8181}],
                "volumeMounts": [{"name": "mlwarden-spec", "mountPath": "/etc/mlwarden"}],
            }
        )
        volumes.append({"name": "mlwarden-spec", "configMap": {"name": f"{model}-detector"}})
    template: dict[str, Any] = {
        "metadata": {"labels": {"app": rev.container}},
        "spec": {"containers": containers, "volumes": volumes},
    }
    if rev.restarted_at is not None:
        template["metadata"]["annotations"] = {
            "kubectl.kubernetes.io/restartedAt": iso(rev.restarted_at)
        }
    return template


class Cluster:
    """One namespace being built; `snapshot()` hands it to the diagnosis."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}

    # ------------------------------------------------------------------ plumbing

    def add(self, kind: str, obj: dict[str, Any]) -> dict[str, Any]:
        obj.setdefault("kind", kind)
        self.objects[(kind, obj["metadata"]["name"])] = obj
        return obj

    @staticmethod
    def meta(
        name: str,
        created: float,
        *,
        annotations: Mapping[str, str] | None = None,
        owner: tuple[str, Mapping[str, Any]] | None = None,
        writes: Sequence[tuple[str, float, str | None]] = (),
    ) -> dict[str, Any]:
        """metadata; `writes` are (manager, minute, subresource) managed-fields entries."""
        meta: dict[str, Any] = {
            "name": name,
            "namespace": NAMESPACE,
            "uid": f"uid-{_hash(name, created)}",
            "creationTimestamp": iso(created),
            "managedFields": [
                {
                    "manager": m,
                    "operation": "Update",
                    "time": iso(t),
                    **({"subresource": s} if s else {}),
                }
                for m, t, s in [("kubectl-client-side-apply", created, None), *writes]
            ],
        }
        if annotations:
            meta["annotations"] = dict(annotations)
        if owner is not None:
            kind, obj = owner
            meta["ownerReferences"] = [
                {
                    "apiVersion": obj.get("apiVersion", "apps/v1"),
                    "kind": kind,
                    "name": obj["metadata"]["name"],
                    "uid": obj["metadata"]["uid"],
                    "controller": True,
                }
            ]
        return meta

    # ------------------------------------------------------------------ workloads

    def deployment(
        self,
        name: str,
        revisions: Sequence[Rev],
        *,
        annotations: Mapping[str, str] | None = None,
        pods: Pods | None = None,
        model: str = "fraud",
        first_revision: int = 1,
    ) -> dict[str, Any]:
        """A Deployment with one ReplicaSet per revision and pods of the newest one."""
        newest = revisions[-1]
        dep = self.add(
            "Deployment",
            {
                "apiVersion": "apps/v1",
                "metadata": self.meta(name, revisions[0].at - 1, annotations=annotations),
                "spec": {
                    "replicas": 2,
                    "selector": {"matchLabels": {"app": name}},
                    "template": pod_template(newest, model=model),
                },
                "status": {"replicas": 2, "readyReplicas": 2},
            },
        )
        rs = None
        for i, rev in enumerate(revisions):
            number = first_revision + i
            template = pod_template(rev, model=model)
            template["metadata"]["labels"]["pod-template-hash"] = _hash(name, number)
            rs = self.add(
                "ReplicaSet",
                {
                    "apiVersion": "apps/v1",
                    "metadata": {
                        **self.meta(
                            f"{name}-{_hash(name, number)}", rev.at, owner=("Deployment", dep)
                        ),
                        "annotations": {"deployment.kubernetes.io/revision": str(number)},
                    },
                    "spec": {"replicas": 2 if rev is newest else 0, "template": template},
                },
            )
        assert rs is not None
        self.pods(rs, pods or Pods(), default_start=newest.at + 0.5, container=newest.container)
        return dep

    def pods(
        self,
        owner: Mapping[str, Any],
        pods: Pods,
        *,
        default_start: float,
        container: str,
        owner_kind: str = "ReplicaSet",
    ) -> None:
        started = pods.started if pods.started is not None else default_start
        for i in range(pods.count):
            status: dict[str, Any] = {
                "name": container,
                "restartCount": pods.restarts,
                "ready": not pods.crash_loop,
            }
            if pods.crash_loop:
                status["state"] = {
                    "waiting": {"reason": "CrashLoopBackOff", "message": "back-off 5m0s"}
                }
            else:
                status["state"] = {"running": {"startedAt": iso(started)}}
            if pods.restarts:
                finished = pods.last_finished if pods.last_finished is not None else started + 1
                status["lastState"] = {
                    "terminated": {
                        "reason": pods.last_exit[0],
                        "exitCode": pods.last_exit[1],
                        "finishedAt": iso(finished),
                    }
                }
            self.add(
                "Pod",
                {
                    "apiVersion": "v1",
                    "metadata": self.meta(
                        f"{owner['metadata']['name']}-{_hash(i, started)[:5]}",
                        started,
                        owner=(owner_kind, owner),
                    ),
                    "status": {
                        "phase": "Running",
                        "startTime": iso(started),
                        "containerStatuses": [status],
                    },
                },
            )

    def statefulset(
        self, name: str, revisions: Sequence[Rev], *, annotations: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        """A StatefulSet with its ControllerRevisions (history) and pods."""
        sts = self.add(
            "StatefulSet",
            {
                "apiVersion": "apps/v1",
                "metadata": self.meta(name, revisions[0].at - 1, annotations=annotations),
                "spec": {"replicas": 1, "template": pod_template(revisions[-1])},
            },
        )
        for number, rev in enumerate(revisions, start=1):
            template = pod_template(rev)
            template["$patch"] = "replace"
            self.add(
                "ControllerRevision",
                {
                    "apiVersion": "apps/v1",
                    "metadata": self.meta(
                        f"{name}-{_hash(name, number)}", rev.at, owner=("StatefulSet", sts)
                    ),
                    "revision": number,
                    "data": {"spec": {"template": template}},
                },
            )
        self.pods(
            sts,
            Pods(count=1),
            default_start=revisions[-1].at + 0.5,
            container=revisions[-1].container,
            owner_kind="StatefulSet",
        )
        return sts

    def cronjob(
        self,
        name: str,
        schedule: str,
        runs: Sequence[Run],
        *,
        image: str = "etl:1.4",
        created: float = -60 * 24 * 30,
        annotations: Mapping[str, str] | None = None,
        env_from: Sequence[str] = (),
        config_maps: Sequence[str] = (),
        last_schedule: float | None = None,
        last_success: float | None = None,
        suspend: bool = False,
        concurrency: str = "Allow",
        edited: float | None = None,
        time_zone: str | None = None,
    ) -> dict[str, Any]:
        """A CronJob, its Jobs (one per run) and the status the controller keeps."""
        writes: list[tuple[str, float, str | None]] = []
        if edited is not None:
            writes.append(("kubectl-edit", edited, None))
        scheduled = [r.scheduled for r in runs]
        succeeded = [r.scheduled + r.took for r in runs if r.outcome == "succeeded"]
        last_schedule = (
            last_schedule if last_schedule is not None else (max(scheduled) if scheduled else None)
        )
        last_success = (
            last_success if last_success is not None else (max(succeeded) if succeeded else None)
        )
        if last_schedule is not None:
            writes.append(("kube-controller-manager", last_schedule, "status"))
        template = pod_template(
            Rev(at=created, image=image, env_from=env_from, config_maps=config_maps, container=name)
        )
        status: dict[str, Any] = {}
        if last_schedule is not None:
            status["lastScheduleTime"] = iso(last_schedule)
        if last_success is not None:
            status["lastSuccessfulTime"] = iso(last_success)
        cj = self.add(
            "CronJob",
            {
                "apiVersion": "batch/v1",
                "metadata": self.meta(name, created, annotations=annotations, writes=writes),
                "spec": {
                    "schedule": schedule,
                    "suspend": suspend,
                    "concurrencyPolicy": concurrency,
                    "jobTemplate": {"spec": {"backoffLimit": 3, "template": template}},
                    **({"timeZone": time_zone} if time_zone is not None else {}),
                },
                "status": status,
            },
        )
        for run in runs:
            self.job_run(cj, run, image=image, env_from=env_from, config_maps=config_maps)
        return cj

    def job_run(
        self,
        cronjob: Mapping[str, Any],
        run: Run,
        *,
        image: str,
        env_from: Sequence[str],
        config_maps: Sequence[str] = (),
    ) -> dict[str, Any]:
        name = cronjob["metadata"]["name"]
        minute = int(at(run.scheduled).timestamp() // 60)
        annotations = {"batch.kubernetes.io/cronjob-scheduled-timestamp": iso(run.scheduled)}
        if run.manual:
            annotations = {"cronjob.kubernetes.io/instantiate": "manual"}
        job = self.job(
            f"{name}-{minute}",
            started=run.scheduled + 0.05,
            outcome=run.outcome,
            took=run.took,
            image=run.image or image,
            container=name,
            env_from=run.env_from if run.env_from is not None else env_from,
            reason=run.reason,
            config_maps=config_maps,
            owner=("CronJob", cronjob),
            annotations=annotations,
        )
        return job

    def job(
        self,
        name: str,
        *,
        started: float,
        outcome: Literal["succeeded", "failed", "running", "failing"] = "succeeded",
        took: float = 2.0,
        image: str = "backfill:1.0",
        container: str = "main",
        env_from: Sequence[str] = (),
        reason: str = "BackoffLimitExceeded",
        config_maps: Sequence[str] = (),
        owner: tuple[str, Mapping[str, Any]] | None = None,
        annotations: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """A Job and its status as the Job controller leaves it."""
        status: dict[str, Any] = {"startTime": iso(started)}
        if outcome == "succeeded":
            status |= {
                "completionTime": iso(started + took),
                "succeeded": 1,
                "conditions": [
                    {
                        "type": "Complete",
                        "status": "True",
                        "lastTransitionTime": iso(started + took),
                    }
                ],
            }
        elif outcome == "failed":
            status |= {
                "failed": 4,
                "conditions": [
                    {
                        "type": "Failed",
                        "status": "True",
                        "reason": reason,
                        "message": "Job has reached the specified backoff limit",
                        "lastTransitionTime": iso(started + took),
                    }
                ],
            }
        elif outcome == "failing":
            status |= {"active": 1, "failed": 2}
        else:
            status |= {"active": 1}
        template = pod_template(
            Rev(
                at=started,
                image=image,
                env_from=env_from,
                config_maps=config_maps,
                container=container,
            )
        )
        return self.add(
            "Job",
            {
                "apiVersion": "batch/v1",
                "metadata": self.meta(name, started, owner=owner, annotations=annotations),
                "spec": {"backoffLimit": 3, "template": template},
                "status": status,
            },
        )

    # ------------------------------------------------------------------ configuration

    def configmap(
        self,
        name: str,
        *,
        created: float = -60 * 24 * 40,
        edited: float | None = None,
        manager: str = "kubectl-edit",
        owner: tuple[str, Mapping[str, Any]] | None = None,
        kind: str = "ConfigMap",
    ) -> dict[str, Any]:
        """A ConfigMap (or Secret) created once, optionally edited since (managedFields)."""
        writes = [(manager, edited, None)] if edited is not None else []
        obj: dict[str, Any] = {
            "apiVersion": "v1",
            "metadata": self.meta(name, created, writes=writes, owner=owner),
        }
        if kind == "ConfigMap":
            obj["data"] = {"settings.yaml": "threshold: 0.5\n"}
        else:
            obj["type"] = "Opaque"
        return self.add(kind, obj)

    def secret(self, name: str, **kwargs: Any) -> dict[str, Any]:
        return self.configmap(name, kind="Secret", **kwargs)

    def observed_model(
        self, name: str, *, target: str, alerts: Sequence[Mapping[str, Any]] = ()
    ) -> dict[str, Any]:
        return self.add(
            "ObservedModel",
            {
                "apiVersion": "mlwarden.io/v1alpha1",
                "metadata": self.meta(name, -60 * 24 * 20),
                "spec": {"target": {"deployment": target}},
                "status": {"phase": "Degraded" if alerts else "Observing", "alerts": list(alerts)},
            },
        )

    # ------------------------------------------------------------------ the usual namespace

    def fraud_model(
        self,
        revisions: Sequence[Rev] | None = None,
        *,
        pods: Pods | None = None,
        model: ObservedModel | None = None,
    ) -> dict[str, Any]:
        """The served model `fraud-model` (sidecar injected two days ago) and mlwarden's objects.

        Also the detector's ConfigMap and Deployment (owned by the ObservedModel, never suspects)
        and a Deployment of another team that changed just before every onset (not in any lineage).
        """
        if revisions is None:
            revisions = [
                Rev(
                    at=-60 * 24 * 20,
                    image="registry.example.com/fraud-model:6",
                    config_maps=["fraud-model-config"],
                    container="model",
                ),
                Rev(
                    at=-60 * 24 * 3,
                    image="registry.example.com/fraud-model:7",
                    config_maps=["fraud-model-config"],
                    container="model",
                ),
                Rev(
                    at=-60 * 24 * 2,
                    image="registry.example.com/fraud-model:7",
                    config_maps=["fraud-model-config"],
                    container="model",
                    sidecar=True,
                ),
            ]
        dep = self.deployment("fraud-model", revisions, pods=pods, first_revision=5)
        if ("ConfigMap", "fraud-model-config") not in self.objects:
            self.configmap("fraud-model-config", created=-60 * 24 * 40)
        om = self.observed_model("fraud", target="fraud-model")
        self.configmap(
            "fraud-detector",
            created=-60 * 24 * 2,
            edited=-3,
            manager="kopf",
            owner=("ObservedModel", om),
        )
        self.add(
            "Deployment",
            {
                "apiVersion": "apps/v1",
                "metadata": self.meta("fraud-detector", -60 * 24 * 2, owner=("ObservedModel", om)),
                "spec": {"template": pod_template(Rev(at=-60 * 24 * 2, image="mlwarden:0.1.0"))},
            },
        )
        self.deployment(
            "checkout-api",
            [Rev(at=-60 * 24 * 9, image="checkout:3.1"), Rev(at=-4, image="checkout:3.2")],
        )
        return dep

    # ------------------------------------------------------------------ the snapshot

    def snapshot(
        self, model: ObservedModel, alerts: Sequence[Mapping[str, Any]], *, now: float = 3
    ) -> Snapshot:
        return Snapshot(model=model, objects=dict(self.objects), alerts=list(alerts), now=at(now))


DEFAULT_PIPELINE: list[dict[str, Any]] = [
    {"name": "feature-etl", "kind": "CronJob", "produces": ["amount"]},
    {
        "name": "merchant-enricher",
        "kind": "Deployment",
        "produces": ["merchant_category"],
        "dependsOn": ["feature-etl"],
    },
]
DEFAULT_FEATURES = ("amount", "merchant_category", "country")


class Kit:
    """Everything a diagnosis test builds with (see the module docstring)."""

    onset = ONSET
    Rev = Rev
    Pods = Pods
    Run = Run

    @staticmethod
    def at(minutes: float) -> datetime:
        return at(minutes)

    @staticmethod
    def iso(minutes: float) -> str:
        return iso(minutes)

    @staticmethod
    def pod_template(rev: Rev, *, model: str = "fraud") -> dict[str, Any]:
        return pod_template(rev, model=model)

    @staticmethod
    def cluster() -> Cluster:
        return Cluster()

    @staticmethod
    def model(
        pipeline: Sequence[Mapping[str, Any]] | None = None,
        *,
        features: Sequence[str] = DEFAULT_FEATURES,
        prediction: str = "score",
        name: str = "fraud",
        target: str = "fraud-model",
    ) -> ObservedModel:
        manifest = {
            "apiVersion": "mlwarden.io/v1alpha1",
            "kind": "ObservedModel",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {
                "target": {"deployment": target, "service": target},
                "features": [
                    {
                        "name": f,
                        "type": "categorical"
                        if f in ("merchant_category", "country")
                        else "numeric",
                    }
                    for f in features
                ],
                "prediction": {"name": prediction},
                "pipeline": list(DEFAULT_PIPELINE if pipeline is None else pipeline),
            },
        }
        return parse_observed_model(manifest)

    @staticmethod
    def routine_runs(*, every: int = 15, last: float = -7, count: int = 4) -> list[Run]:
        """Runs on schedule that all succeeded, the newest scheduled at minute `last`."""
        return [Run(scheduled=last - every * i) for i in reversed(range(count))]

    # ------------------------------------------------------------------ alerts

    @staticmethod
    def drift(
        feature: str,
        *,
        since: float = 0,
        p: float = 1.2e-9,
        test: str = "ks",
        statistic: float = 0.31,
    ) -> dict[str, Any]:
        return {
            "type": "FeatureDrift",
            "feature": feature,
            "test": test,
            "statistic": statistic,
            "pValue": p,
            "threshold": 0.01,
            "since": iso(since)[:-1] + ".204Z",
            "modelRevision": "7",
            "reference": "warmup@3f9c2a1b0d4e",
            "message": f"{test} adjusted p={p:.2g} ≤ 0.01",
        }

    @staticmethod
    def quality(
        feature: str,
        *,
        since: float = 0,
        test: str = "missing_rate",
        statistic: float = 0.31,
        threshold: float = 0.05,
    ) -> dict[str, Any]:
        return {
            "type": "DataQuality",
            "feature": feature,
            "test": test,
            "statistic": statistic,
            "threshold": threshold,
            "since": iso(since),
            "reference": "warmup@3f9c2a1b0d4e",
        }

    @staticmethod
    def prediction_drift(
        *, since: float = 0, p: float = 3.1e-8, feature: str = "score"
    ) -> dict[str, Any]:
        return {
            "type": "PredictionDrift",
            "feature": feature,
            "test": "ks",
            "statistic": 0.22,
            "pValue": p,
            "threshold": 0.01,
            "since": iso(since),
            "modelRevision": "7",
            "reference": "warmup@3f9c2a1b0d4e",
        }

    @staticmethod
    def errors(*, since: float = 0, rate: float = 0.12) -> dict[str, Any]:
        return {
            "type": "Errors",
            "test": "error_rate",
            "statistic": rate,
            "threshold": 0.02,
            "since": iso(since),
            "reference": "warmup@3f9c2a1b0d4e",
        }


@pytest.fixture
def kit() -> Kit:
    return Kit()
