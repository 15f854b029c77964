"""The change timeline: revisions and their diffs, runs, schedules, configs, crash loops."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from mlwarden.diagnose.graph import build_graph
from mlwarden.diagnose.timeline import (
    Change,
    build_timeline,
    describe_duration,
    diff_templates,
    node_changes,
    parse_cron,
    relative_time,
)


def _changes(kit: Any, c: Any, kind: str, name: str, *, now: float = 3) -> list[Change]:
    snap = c.snapshot(kit.model(), [], now=now)
    return node_changes(snap, (kind, name), snap.objects[(kind, name)])


def _described(changes: list[Change], kit: Any) -> list[str]:
    return [c.describe(reference=kit.onset) for c in changes]


# --------------------------------------------------------------------------- workloads


def test_deployment_revisions_image_change(kit: Any) -> None:
    c = kit.cluster()
    c.deployment(
        "merchant-enricher",
        [
            kit.Rev(at=-60 * 24 * 4, image="registry.example.com/ml/enricher:2.3"),
            kit.Rev(at=-6, image="registry.example.com/ml/enricher:2.4", env={"MODE": "fast"}),
        ],
    )
    changes = _changes(kit, c, "Deployment", "merchant-enricher")
    assert [ch.kind for ch in changes] == ["created", "image"]
    image = changes[-1]
    assert image.revision == "2" and image.at == kit.at(-6)
    assert image.describe(reference=kit.onset) == (
        "image changed from enricher:2.3 to enricher:2.4 6m before onset "
        "(revision 2; env MODE changed)"
    )


def test_deployment_config_change_and_history_gap(kit: Any) -> None:
    c = kit.cluster()
    c.deployment(
        "enricher",
        [
            kit.Rev(at=-300, image="e:1", config_maps=["rules-v1"]),
            kit.Rev(at=-200, image="e:1", config_maps=["rules-v1"]),
            kit.Rev(at=-30, image="e:1", config_maps=["rules-v2"]),
        ],
        first_revision=4,
    )
    changes = _changes(kit, c, "Deployment", "enricher")
    assert [ch.kind for ch in changes] == ["rollout", "restart", "template"]
    assert changes[0].what == "rolled out revision 4"
    assert changes[1].what == "rolled out an identical pod template"
    assert changes[2].what == "pod template changed: now reads ConfigMap rules-v2 (was rules-v1)"
    assert changes[2].revision == "6"


def test_restart_and_sidecar_injection_are_weak(kit: Any) -> None:
    c = kit.cluster()
    rev = dict(image="fraud-model:7", config_maps=["fraud-model-config"], container="model")
    c.deployment(
        "fraud-model",
        [
            kit.Rev(at=-300, **rev),
            kit.Rev(at=-200, sidecar=True, **rev),
            kit.Rev(at=-100, sidecar=True, restarted_at=-100, **rev),
            kit.Rev(at=-50, **rev),
        ],
    )
    changes = _changes(kit, c, "Deployment", "fraud-model")
    assert [ch.kind for ch in changes] == ["created", "sidecar", "restart", "sidecar"]
    assert changes[1].what == "mlwarden sidecar injected"
    assert changes[2].what == "restarted (kubectl rollout restart)"
    assert changes[3].what == "mlwarden sidecar removed"
    assert not any(ch.strong for ch in changes[1:])


def test_diff_templates_details(kit: Any) -> None:
    pod_template, Rev = kit.pod_template, kit.Rev
    old = pod_template(Rev(at=0, image="a:1", env={"X": "1", "Y": "2"}))
    new = pod_template(Rev(at=0, image="a:1", env={"X": "1", "Z": "3"}))
    new["spec"]["containers"][0]["resources"] = {"limits": {"memory": "1Gi"}}
    new["spec"]["containers"].append({"name": "helper", "image": "h:1"})
    new["spec"]["serviceAccountName"] = "other"
    diff = diff_templates(old, new)
    assert diff.kind == "template"
    assert diff.facts == (
        "container helper added",
        "env Y, Z changed",
        "resources of main changed",
        "pod serviceAccountName changed",
    )
    # Registry moves keep the full names (the short ones would read the same).
    moved = diff_templates(
        pod_template(Rev(at=0, image="a.io/x:1")), pod_template(Rev(at=0, image="b.io/x:1"))
    )
    assert moved.headline == "image changed from a.io/x:1 to b.io/x:1"
    digest = diff_templates(
        pod_template(Rev(at=0, image="x@sha256:" + "a" * 64)),
        pod_template(Rev(at=0, image="x@sha256:" + "b" * 64)),
    )
    assert digest.headline == f"image changed from x@sha256:{'a' * 12} to x@sha256:{'b' * 12}"


def test_rollback_time_comes_from_the_last_write(kit: Any) -> None:
    c = kit.cluster()
    c.deployment("enricher", [kit.Rev(at=-300, image="e:1"), kit.Rev(at=-200, image="e:2")])
    # `kubectl rollout undo`: the old ReplicaSet becomes revision 3.
    old_rs = next(
        o
        for (k, _), o in c.objects.items()
        if k == "ReplicaSet"
        and o["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1"
    )
    old_rs["metadata"]["annotations"] = {
        "deployment.kubernetes.io/revision": "3",
        "deployment.kubernetes.io/revision-history": "1",
    }
    old_rs["metadata"]["managedFields"].append(
        {"manager": "kube-controller-manager", "operation": "Update", "time": kit.iso(-9)}
    )
    changes = _changes(kit, c, "Deployment", "enricher")
    last = changes[-1]
    assert last.revision == "3" and last.at == kit.at(-9)
    assert last.what == "image changed from e:2 to e:1"


def test_statefulset_controller_revisions(kit: Any) -> None:
    c = kit.cluster()
    c.statefulset(
        "feature-store",
        [kit.Rev(at=-1000, image="redis-fs:7.0"), kit.Rev(at=-14, image="redis-fs:7.2")],
    )
    changes = _changes(kit, c, "StatefulSet", "feature-store")
    assert changes[-1].kind == "image" and changes[-1].revision == "2"
    assert (
        changes[-1]
        .describe(reference=kit.onset)
        .startswith("image changed from redis-fs:7.0 to redis-fs:7.2 14m before onset")
    )


def test_crash_loop_start_is_estimated_from_back_off(kit: Any) -> None:
    c = kit.cluster()
    pods = kit.Pods(count=3, started=-60 * 24, restarts=9, crash_loop=True, last_finished=2)
    c.deployment("enricher", [kit.Rev(at=-60 * 24 * 4, image="e:1")], pods=pods)
    loop = [ch for ch in _changes(kit, c, "Deployment", "enricher") if ch.kind == "crash_loop"]
    assert len(loop) == 1
    # 9 restarts: back-off 10+20+40+80+160+300+300+300 s between the first and the last crash.
    assert loop[0].at == kit.at(2) - timedelta(seconds=1210)
    assert loop[0].context == "3/3 pods; container main: 9 restarts, last exit Error (code 1)"
    # Never earlier than the pod's start.
    c2 = kit.cluster()
    pods2 = kit.Pods(count=1, started=-5, restarts=30, crash_loop=True, last_finished=2)
    c2.deployment("enricher", [kit.Rev(at=-6, image="e:1")], pods=pods2)
    loop2 = [ch for ch in _changes(kit, c2, "Deployment", "enricher") if ch.kind == "crash_loop"]
    assert loop2[0].at == kit.at(-5)


def test_restarts_without_crash_loop(kit: Any) -> None:
    c = kit.cluster()
    pods = kit.Pods(
        count=2, started=-600, restarts=2, last_exit=("OOMKilled", 137), last_finished=-4
    )
    c.deployment("enricher", [kit.Rev(at=-700, image="e:1")], pods=pods)
    restarts = [ch for ch in _changes(kit, c, "Deployment", "enricher") if ch.kind == "restarts"]
    assert _described(restarts, kit) == [
        "restarted 4 times, last 4m before onset (container main: last exit OOMKilled (code 137))"
    ]
    assert not restarts[0].strong


# --------------------------------------------------------------------------- jobs and schedules


def test_cronjob_runs(kit: Any) -> None:
    c = kit.cluster()
    runs = [
        kit.Run(scheduled=-52),
        kit.Run(scheduled=-37, image="etl:1.5"),
        kit.Run(scheduled=-22, image="etl:1.5", outcome="failed", took=4),
        kit.Run(scheduled=-7, image="etl:1.5"),
    ]
    c.cronjob("feature-etl", "*/15 * * * *", runs)
    changes = _changes(kit, c, "CronJob", "feature-etl")
    assert [ch.kind for ch in changes] == [
        "routine_run",
        "image",
        "routine_run",
        "job_failed",
        "routine_run",
    ]
    image = changes[1]
    assert image.at == kit.at(-37 + 0.05)
    assert image.what == "image changed from etl:1.4 to etl:1.5"
    assert image.context.startswith("first run with it: Job feature-etl-")
    assert changes[3].what == "a run failed" and "BackoffLimitExceeded" in changes[3].context
    assert changes[3].at == kit.at(-22 + 0.05 + 4)
    assert changes[-1].what == "last run succeeded on schedule"


def test_first_ever_and_manual_runs(kit: Any) -> None:
    c = kit.cluster()
    c.cronjob("backfill", "0 * * * *", [kit.Run(scheduled=-7)], created=-30)
    first = _changes(kit, c, "CronJob", "backfill")
    assert [ch.kind for ch in first] == ["first_run"]
    assert first[0].strong
    c2 = kit.cluster()
    runs = [kit.Run(scheduled=-67), kit.Run(scheduled=-20, manual=True), kit.Run(scheduled=-7)]
    c2.cronjob("etl", "0 * * * *", runs)
    manual = _changes(kit, c2, "CronJob", "etl")
    assert [ch.kind for ch in manual] == ["routine_run", "job_completed", "routine_run"]
    assert manual[1].what == "a run (triggered by hand) succeeded"


def test_missed_schedule(kit: Any) -> None:
    c = kit.cluster()
    c.cronjob(
        "risk-scores",
        "*/10 * * * *",
        [kit.Run(scheduled=-57), kit.Run(scheduled=-47)],
        suspend=True,
    )
    missed = [
        ch for ch in _changes(kit, c, "CronJob", "risk-scores") if ch.kind == "schedule_missed"
    ]
    assert len(missed) == 1
    assert missed[0].at == kit.at(-37)  # 14:30, the first slot after 14:20
    assert missed[0].describe(reference=kit.onset) == (
        "missed its scheduled run 37m before onset (schedule */10 * * * *; 4 run(s) missed; "
        "last scheduled run at 2026-11-26T14:20:00Z; the CronJob is suspended)"
    )
    # Within the grace period nothing is missed yet.
    on_time = [
        ch
        for ch in _changes(kit, c, "CronJob", "risk-scores", now=-36)
        if ch.kind == "schedule_missed"
    ]
    assert on_time == []


# 02:00 in New York is 07:00 UTC in November; the onset (15:07 UTC) is 10:07 there.
_NY_0200_TODAY = -8 * 60 - 7  # 2026-11-26T07:00:00Z
_DAY = 24 * 60


@pytest.mark.parametrize(
    ("schedule", "time_zone"),
    [
        ("0 2 * * *", "America/New_York"),
        # The zone prefix Kubernetes rejects for new CronJobs since 1.25 but still honours.
        ("CRON_TZ=America/New_York 0 2 * * *", None),
        ("TZ=America/New_York 0 2 * * *", "Europe/Berlin"),  # the prefix wins, as in the controller
    ],
)
def test_missed_schedule_in_the_cronjobs_time_zone(
    kit: Any, schedule: str, time_zone: str | None
) -> None:
    c = kit.cluster()
    runs = [kit.Run(scheduled=_NY_0200_TODAY - 2 * _DAY), kit.Run(scheduled=_NY_0200_TODAY - _DAY)]
    c.cronjob("nightly-scores", schedule, runs, time_zone=time_zone)
    missed = [
        ch for ch in _changes(kit, c, "CronJob", "nightly-scores") if ch.kind == "schedule_missed"
    ]
    assert len(missed) == 1
    assert missed[0].at == kit.at(_NY_0200_TODAY)  # 02:00 New York time, not 02:00 UTC
    assert missed[0].describe(reference=kit.onset) == (
        "missed its scheduled run 8h07m before onset (schedule 0 2 * * * (America/New_York); "
        "1 run(s) missed; last scheduled run at 2026-11-25T07:00:00Z)"
    )
    # Run today at 02:00 New York time: nothing missed (in UTC the next run would be due at 02:00
    # UTC tomorrow, so this alone does not tell the zones apart; the time above does).
    c2 = kit.cluster()
    c2.cronjob(
        "nightly-scores", schedule, [*runs, kit.Run(scheduled=_NY_0200_TODAY)], time_zone=time_zone
    )
    assert not [
        ch for ch in _changes(kit, c2, "CronJob", "nightly-scores") if ch.kind == "schedule_missed"
    ]


def test_schedule_in_an_unknown_time_zone_is_not_checked(kit: Any) -> None:
    c = kit.cluster()
    runs = [kit.Run(scheduled=_NY_0200_TODAY - _DAY)]
    c.cronjob("nightly-scores", "0 2 * * *", runs, time_zone="Mars/Olympus_Mons")
    kinds = [ch.kind for ch in _changes(kit, c, "CronJob", "nightly-scores")]
    assert "schedule_missed" not in kinds
    # The same CronJob in UTC has missed today's 02:00 run.
    c2 = kit.cluster()
    c2.cronjob("nightly-scores", "0 2 * * *", runs)
    assert "schedule_missed" in [ch.kind for ch in _changes(kit, c2, "CronJob", "nightly-scores")]


def test_overdue_run(kit: Any) -> None:
    c = kit.cluster()
    runs = [
        kit.Run(scheduled=-67, took=3),
        kit.Run(scheduled=-57, took=3),
        kit.Run(scheduled=-47, outcome="running"),
    ]
    c.cronjob("risk-scores", "*/10 * * * *", runs, concurrency="Forbid")
    late = [ch for ch in _changes(kit, c, "CronJob", "risk-scores") if ch.kind == "job_late"]
    assert len(late) == 1 and late[0].at == kit.at(-47 + 0.05 + 7)
    assert "runs usually take 3m" in late[0].context
    missed = [
        ch for ch in _changes(kit, c, "CronJob", "risk-scores") if ch.kind == "schedule_missed"
    ]
    assert "concurrencyPolicy Forbid and a run still active" in missed[0].context


def test_failed_run_whose_job_is_gone(kit: Any) -> None:
    c = kit.cluster()
    c.cronjob("etl", "*/15 * * * *", [kit.Run(scheduled=-37)], last_schedule=-7, last_success=-35)
    failed = [ch for ch in _changes(kit, c, "CronJob", "etl") if ch.kind == "job_failed"]
    assert len(failed) == 1 and failed[0].at == kit.at(-7)
    assert failed[0].context == "its Job is not kept; last success at 2026-11-26T14:32:00Z"


def test_cronjob_spec_edit_not_yet_run(kit: Any) -> None:
    c = kit.cluster()
    c.cronjob("etl", "*/15 * * * *", kit.routine_runs(), edited=-3)
    edits = [ch for ch in _changes(kit, c, "CronJob", "etl") if ch.kind == "template"]
    assert _described(edits, kit) == ["spec edited 3m before onset (by kubectl-edit)"]
    c2 = kit.cluster()
    c2.cronjob("etl", "*/15 * * * *", kit.routine_runs(), edited=-30)  # runs since picked it up
    assert not [ch for ch in _changes(kit, c2, "CronJob", "etl") if ch.kind == "template"]


def test_standalone_job(kit: Any) -> None:
    c = kit.cluster()
    c.job("backfill", started=-30, took=12)
    c.job("reindex", started=-20, outcome="failed", took=5, reason="DeadlineExceeded")
    done = _changes(kit, c, "Job", "backfill")
    assert _described(done, kit) == ["ran to completion 18m before onset (took 12m)"]
    failed = _changes(kit, c, "Job", "reindex")
    assert failed[0].kind == "job_failed" and failed[0].context.startswith("DeadlineExceeded")


# --------------------------------------------------------------------------- configs and models


def test_config_edit_and_creation(kit: Any) -> None:
    c = kit.cluster()
    c.configmap("edited", created=-1000, edited=-12, manager="kubectl-edit")
    c.configmap("fresh", created=-8)
    c.secret("creds", created=-1000, edited=-2, manager="argocd-controller")
    assert _described(_changes(kit, c, "ConfigMap", "edited"), kit) == [
        "edited 12m before onset (by kubectl-edit)"
    ]
    fresh = _changes(kit, c, "ConfigMap", "fresh")
    assert fresh[0].kind == "config_created" and fresh[0].what == "created"
    assert _changes(kit, c, "Secret", "creds")[0].context == "by argocd-controller"


def test_upstream_model_alerts(kit: Any) -> None:
    c = kit.cluster()
    c.observed_model(
        "embedder",
        target="emb",
        alerts=[kit.drift("x", since=-10), kit.prediction_drift(since=-25)],
    )
    changes = _changes(kit, c, "ObservedModel", "embedder")
    assert changes[0].kind == "upstream_alert" and changes[0].at == kit.at(-25)
    assert changes[0].context.startswith(
        "PredictionDrift on score, ks p=3.1e-08; FeatureDrift on x"
    )
    c.observed_model("quiet", target="q")
    assert _changes(kit, c, "ObservedModel", "quiet") == []


def test_build_timeline_covers_observed_nodes(kit: Any) -> None:
    c = kit.cluster()
    c.fraud_model()
    c.cronjob("feature-etl", "*/15 * * * *", kit.routine_runs())
    snap = c.snapshot(kit.model(), [])
    graph = build_graph(snap)
    timeline = build_timeline(snap, graph)
    assert set(timeline) == {
        ("Deployment", "fraud-model"),
        ("CronJob", "feature-etl"),
        ("ConfigMap", "fraud-model-config"),
    }
    for changes in timeline.values():
        assert [ch.at for ch in changes] == sorted(ch.at for ch in changes)


# --------------------------------------------------------------------------- cron and words


def _utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(
    ("expression", "when", "fires"),
    [
        ("*/15 * * * *", _utc(2026, 11, 26, 15, 45), True),
        ("*/15 * * * *", _utc(2026, 11, 26, 15, 46), False),
        ("5-10/5 2 * * *", _utc(2026, 11, 26, 2, 10), True),
        ("0 3 * * MON-FRI", _utc(2026, 11, 28, 3, 0), False),  # a Saturday
        ("0 3 * * 1-5", _utc(2026, 11, 27, 3, 0), True),
        ("0 0 1 JAN *", _utc(2027, 1, 1, 0, 0), True),
        ("@hourly", _utc(2026, 11, 26, 7, 0), True),
        ("@daily", _utc(2026, 11, 26, 7, 0), False),
        ("0 0 * * 7", _utc(2026, 11, 29, 0, 0), True),  # Sunday as 7
        # Both day fields restricted: either one fires (the 13th, or any Friday).
        ("0 0 13 * 5", _utc(2026, 11, 13, 0, 0), True),
        ("0 0 13 * 5", _utc(2026, 11, 20, 0, 0), True),
        ("0 0 13 * 5", _utc(2026, 11, 21, 0, 0), False),
    ],
)
def test_cron(expression: str, when: datetime, fires: bool) -> None:
    schedule = parse_cron(expression)
    assert schedule is not None
    assert schedule.matches(when) is fires


@pytest.mark.parametrize(
    "expression", ["", "* * * *", "61 * * * *", "*/0 * * * *", "@every 5m", "a b c d e"]
)
def test_cron_rejects(expression: str) -> None:
    assert parse_cron(expression) is None


def test_cron_in_a_time_zone() -> None:
    schedule = parse_cron("0 2 * * *", "America/New_York")
    assert schedule is not None
    assert schedule.matches(_utc(2026, 11, 26, 7, 0))  # EST, UTC-5
    assert not schedule.matches(_utc(2026, 11, 26, 2, 0))
    assert schedule.matches(_utc(2026, 7, 1, 6, 0))  # EDT, UTC-4
    assert schedule.previous(_utc(2026, 11, 26, 15, 7)) == _utc(2026, 11, 26, 7, 0)
    assert parse_cron("0 2 * * *", "Nowhere/Special") is None
    assert parse_cron("0 2 * * *", "UTC") == parse_cron("0 2 * * *")


def test_cron_previous_and_between() -> None:
    schedule = parse_cron("*/10 * * * *")
    assert schedule is not None
    assert schedule.previous(_utc(2026, 11, 26, 15, 0)) == _utc(2026, 11, 26, 14, 50)
    assert schedule.previous(_utc(2026, 11, 26, 15, 0, 30)) == _utc(2026, 11, 26, 15, 0)
    fires = schedule.fires_between(_utc(2026, 11, 26, 14, 20), _utc(2026, 11, 26, 15, 0))
    assert fires == [_utc(2026, 11, 26, 14, m) for m in (30, 40, 50)] + [_utc(2026, 11, 26, 15, 0)]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (45, "45s"),
        (59.6, "1m"),
        (360, "6m"),
        (3599, "1h"),
        (3900, "1h05m"),
        (7200, "2h"),
        (3 * 86400 + 4 * 3600, "3d4h"),
    ],
)
def test_describe_duration(seconds: float, text: str) -> None:
    assert describe_duration(seconds) == text


def test_relative_time(kit: Any) -> None:
    assert relative_time(kit.at(-6), kit.onset) == "6m before onset"
    assert relative_time(kit.at(2), kit.onset) == "2m after onset"
    assert relative_time(kit.onset, kit.onset) == "at onset"
    assert relative_time(kit.at(-1), kit.onset, label="Errors onset") == "1m before Errors onset"
