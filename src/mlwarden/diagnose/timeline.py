"""The change timeline of each node in the resource graph: what changed, and when.

Each `Change` is one fact about one node at one time, phrased so a relative time can follow it
("image changed from etl:1.4 to etl:1.5" + " 6m before onset"), with further facts in
`context`. Where the facts come from (docs/architecture.md, "Facts about Kubernetes the
diagnosis relies on"):

    Deployment          its ReplicaSets (owner reference, `deployment.kubernetes.io/revision`);
                        a revision rolled out at the ReplicaSet's `creationTimestamp` (for a
                        rollback, which reuses an old ReplicaSet, its newest managed-fields
                        write). Consecutive revisions' pod templates are compared: images, env,
                        mounted ConfigMaps/Secrets, args, resources. Pods of its ReplicaSets
                        give crash loops and restarts.
    Argo Rollout        the same from its ReplicaSets (`rollout.argoproj.io/revision`).
    StatefulSet,        the same from their ControllerRevisions (`revision`, `data.spec.template`)
    DaemonSet           and the Pods they own.
    InferenceService    no revision history here (KServe's are Knative revisions, not in the
                        snapshot); its endpoints' revisions resolve through
                        `react.revisions` (the diagnosis starts a CanaryRegression there).
    CronJob             its Jobs: failed runs, runs still going long after they usually finish,
                        routine successful runs, first-ever and manual runs, image or template
                        changes between consecutive runs; `spec.schedule` against
                        `status.lastScheduleTime` for runs that never started; a spec edit not yet
                        run.
    Job                 failed, or ran to completion.
    ConfigMap, Secret   the newest managed-fields write (edited), or creation.
    ObservedModel       its own active alerts (an upstream model that is alerting).

Strength: a new image, an edited config, a failed, overdue or missed run, a first-ever run or a
crash loop are strong evidence (`STRONG_KINDS`); a routine successful run on schedule, a restart
without a template change and the sidecar's injection are weak. How much each kind explains each
kind of alert is the ranking's business (rank.py).

Crash loops have no recorded start: it is estimated from the last termination minus the kubelet's
back-off between restarts (10 s doubling to 5 min), never earlier than the pod's start.
Schedules are evaluated in the CronJob's `spec.timeZone` (UTC without one), as the controller
does; a schedule that is no calendar (`@every 5m`) or names an unknown zone is not checked for
missed runs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from mlwarden import backoff
from mlwarden.diagnose.graph import (
    CONFIG_KINDS,
    SIDECAR_CONTAINER,
    ResourceGraph,
    config_refs,
    pod_template,
)
from mlwarden.diagnose.snapshot import (
    ObjectKey,
    Snapshot,
    dig,
    format_time,
    last_written,
    parse_time,
)

__all__ = [
    "STRONG_KINDS",
    "Change",
    "ChangeKind",
    "CronSchedule",
    "build_timeline",
    "describe_duration",
    "diff_templates",
    "parse_cron",
    "relative_time",
]

ChangeKind = Literal[
    "created",  # first revision of a workload
    "image",  # a container image changed
    "template",  # the pod template (or a CronJob's spec) changed otherwise: env, config, args
    "rollout",  # a new revision whose predecessor is not kept: what changed is unknown
    "restart",  # a new revision that only restarts pods (kubectl rollout restart)
    "sidecar",  # a new revision that only injects, removes or updates the mlwarden sidecar
    "config_edit",  # a ConfigMap or Secret was written after its creation
    "config_created",  # a ConfigMap or Secret that was created (never edited since)
    "job_failed",  # a run failed (or keeps failing)
    "job_late",  # a run is still going long after runs usually finish
    "schedule_missed",  # a scheduled run never started
    "first_run",  # the first run a CronJob ever made
    "job_completed",  # a one-off Job, or a manually triggered run, completed
    "routine_run",  # a run on schedule that succeeded, same template as the one before
    "crash_loop",  # containers in CrashLoopBackOff
    "restarts",  # containers restarted, not (or no longer) crash-looping
    "upstream_alert",  # an upstream ObservedModel has active alerts
]

STRONG_KINDS: Final[frozenset[str]] = frozenset(
    {
        "created",
        "image",
        "template",
        "rollout",
        "config_edit",
        "job_failed",
        "job_late",
        "schedule_missed",
        "first_run",
        "crash_loop",
        "upstream_alert",
    }
)

REVISION_ANNOTATION: Final = "deployment.kubernetes.io/revision"
REVISION_HISTORY_ANNOTATION: Final = "deployment.kubernetes.io/revision-history"
ROLLOUT_REVISION: Final = "rollout.argoproj.io/revision"  # an Argo Rollout's ReplicaSets
RESTARTED_AT_ANNOTATION: Final = "kubectl.kubernetes.io/restartedAt"
SCHEDULED_ANNOTATION: Final = "batch.kubernetes.io/cronjob-scheduled-timestamp"
MANUAL_ANNOTATION: Final = "cronjob.kubernetes.io/instantiate"

# A scheduled run that has not started this long after its time has been missed.
SCHEDULE_GRACE: Final = timedelta(minutes=2)
# Missed runs are looked for this far back at most (and schedules this far apart at most).
SCHEDULE_HORIZON: Final = timedelta(days=7)
# kubelet restart back-off: 10 s, doubling, capped at 5 min.
_BACKOFF_START_S: Final = 10.0
_BACKOFF_CAP_S: Final = 300.0


@dataclass(frozen=True)
class Change:
    """One fact about one node at one time."""

    node: ObjectKey
    kind: ChangeKind
    at: datetime
    what: str
    context: str = ""
    revision: str | None = None

    @property
    def strong(self) -> bool:
        return self.kind in STRONG_KINDS

    def describe(self, *, reference: datetime, label: str = "onset") -> str:
        """The fact with its time relative to `reference`: "edited 12m before onset (by helm)"."""
        text = f"{self.what} {relative_time(self.at, reference, label=label)}"
        return f"{text} ({self.context})" if self.context else text


def describe_duration(seconds: float) -> str:
    """A duration as people say it: 45s, 6m, 1h05m, 3d4h."""
    s = round(abs(seconds))
    if s < 60:
        return f"{s}s"
    minutes = round(s / 60)
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m" if minutes else f"{hours}h"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours}h" if hours else f"{days}d"


def relative_time(at: datetime, reference: datetime, *, label: str = "onset") -> str:
    """ "6m before onset", "at onset" or "2m after onset"."""
    delta = (reference - at).total_seconds()
    if abs(delta) < 1:
        return f"at {label}"
    return f"{describe_duration(delta)} {'before' if delta > 0 else 'after'} {label}"


# --------------------------------------------------------------------------- cron

# The descriptors Kubernetes' cron parser (robfig/cron's ParseStandard) accepts besides five
# fields; `@every <duration>` is accepted there too but is no calendar schedule: not checked.
_CRON_MACROS: Final = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
# A zone prefix in `spec.schedule`: rejected by the API server for new CronJobs since Kubernetes
# 1.25 (use `spec.timeZone`), still honoured by the controller for older ones, ahead of timeZone.
_ZONE_PREFIX: Final = re.compile(r"^(?:CRON_TZ|TZ)=(\S+)\s+(.+)$")


@dataclass(frozen=True)
class CronSchedule:
    """A CronJob's five-field schedule evaluated in its time zone (croniter does the calendar).

    Times go in and come out as aware datetimes in any zone; results are in UTC. On the two
    daylight-saving transition days croniter may place a run an hour apart from the controller
    (robfig/cron), which skips a run in the missing hour.
    """

    expression: str  # as written in `spec.schedule`
    fields: str  # the five fields, macros expanded and any zone prefix removed
    zone: ZoneInfo

    @property
    def label(self) -> str:
        """The schedule as people read it: the expression, and its zone unless UTC."""
        utc = self.zone.key in ("UTC", "Etc/UTC", "GMT", "Etc/GMT")
        return self.expression if utc else f"{self.expression} ({self.zone.key})"

    def matches(self, t: datetime) -> bool:
        return bool(croniter.match(self.fields, t.astimezone(self.zone)))

    def fires_between(self, after: datetime, until: datetime) -> list[datetime]:
        """Fire times t with after < t ≤ until (searched within SCHEDULE_HORIZON of `until`)."""
        start = max(after, until - SCHEDULE_HORIZON)
        fires = croniter(self.fields, start.astimezone(self.zone))
        out: list[datetime] = []
        while (t := fires.get_next(datetime).astimezone(UTC)) <= until:
            out.append(t)
        return out

    def previous(self, before: datetime) -> datetime | None:
        """The last fire time strictly before `before` (within SCHEDULE_HORIZON)."""
        t = croniter(self.fields, before.astimezone(self.zone)).get_prev(datetime).astimezone(UTC)
        return t if t > before - SCHEDULE_HORIZON else None


def parse_cron(expression: str, time_zone: str | None = None) -> CronSchedule | None:
    """A CronJob's `spec.schedule` in its `spec.timeZone` (None: UTC, the controller's default).

    None if the schedule is not five fields or a descriptor such as @hourly, or if the zone is
    unknown (the controller then starts no runs and reports UnknownTimeZone).
    """
    text = expression.strip()
    prefixed = _ZONE_PREFIX.match(text)
    if prefixed is not None:
        time_zone, text = prefixed.group(1), prefixed.group(2).strip()
    fields = _CRON_MACROS.get(text.lower(), text)
    if len(fields.split()) != 5 or not croniter.is_valid(fields):
        return None
    try:
        zone = ZoneInfo(time_zone or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return None
    return CronSchedule(expression=text, fields=fields, zone=zone)


# --------------------------------------------------------------------------- template diffs


def _short_image(image: str) -> str:
    """`registry.example.com/team/etl:1.5` → `etl:1.5`; digests cut to 12 characters."""
    name = image.rsplit("/", 1)[-1]
    if "@" in name:
        repo, _, digest = name.partition("@")
        algo, _, hexdigest = digest.partition(":")
        name = f"{repo}@{algo}:{hexdigest[:12]}" if hexdigest else name
    return name


def _image_pair(old: str, new: str) -> tuple[str, str]:
    a, b = _short_image(old), _short_image(new)
    return (old, new) if a == b else (a, b)


def _containers_by_name(pod_spec: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    out: dict[str, Mapping[str, Any]] = {}
    for group in ("initContainers", "containers"):
        for c in pod_spec.get(group) or ():
            if isinstance(c, Mapping) and isinstance(c.get("name"), str):
                out[c["name"]] = c
    return out


def _env_names(container: Mapping[str, Any]) -> dict[str, Any]:
    return {
        e["name"]: (e.get("value"), e.get("valueFrom"))
        for e in container.get("env") or ()
        if isinstance(e, Mapping) and isinstance(e.get("name"), str)
    }


# Container fields compared one by one; the rest are lumped together as "other settings".
_CONTAINER_FIELDS: Final = ("image", "env", "envFrom", "args", "command", "resources")
# Fields the sidecar injection rewrites on the model container (port names, probes).
_INJECTION_FIELDS: Final = (
    "ports",
    "readinessProbe",
    "livenessProbe",
    "startupProbe",
    "lifecycle",
)


def _model_volumes(pod_spec: Mapping[str, Any]) -> list[str]:
    """The volumes and mounts of every container but the sidecar, comparable as text."""
    mounts = sorted(
        repr(sorted(m.items()))
        for name, c in _containers_by_name(pod_spec).items()
        if name != SIDECAR_CONTAINER
        for m in c.get("volumeMounts") or ()
        if isinstance(m, Mapping)
    )
    mounted = {
        m.get("name")
        for c in _containers_by_name(pod_spec).values()
        if c.get("name") != SIDECAR_CONTAINER
        for m in c.get("volumeMounts") or ()
        if isinstance(m, Mapping)
    }
    volumes = sorted(
        repr(v)
        for v in pod_spec.get("volumes") or ()
        if isinstance(v, Mapping) and v.get("name") in mounted
    )
    return mounts + volumes


@dataclass(frozen=True)
class TemplateDiff:
    """What differs between two pod templates, and what kind of change that is."""

    kind: ChangeKind
    images: tuple[tuple[str, str, str], ...]  # (container, old, new), short forms
    facts: tuple[str, ...]  # everything else that changed, in words
    restarted: bool = False  # `kubectl rollout restart` stamped the template

    @property
    def headline(self) -> str:
        """The main fact, to be followed by a relative time."""
        if len(self.images) == 1:
            _, old, new = self.images[0]
            return f"image changed from {old} to {new}"
        if self.images:
            return "images changed: " + ", ".join(f"{c} {o} → {n}" for c, o, n in self.images)
        if self.kind == "restart":
            if self.restarted:
                return "restarted (kubectl rollout restart)"
            return self.facts[0] if self.facts else "rolled out an identical pod template"
        if self.kind == "sidecar":
            return self.facts[0] if self.facts else "mlwarden sidecar changed"
        return "pod template changed: " + "; ".join(self.facts) if self.facts else "rolled out"


def diff_templates(old: Mapping[str, Any], new: Mapping[str, Any]) -> TemplateDiff:
    """Compare two pod templates (the `template` of a ReplicaSet, Job, ControllerRevision).

    Labels are ignored (controllers put hashes there). The sidecar's own container and volume,
    and the port and probe renames its injection makes on the model container, count as a
    `sidecar` change, not as a change of the model.
    """
    old_spec = dig(old, "spec") or {}
    new_spec = dig(new, "spec") or {}
    old_c, new_c = _containers_by_name(old_spec), _containers_by_name(new_spec)
    sidecar_toggled = (SIDECAR_CONTAINER in old_c) != (SIDECAR_CONTAINER in new_c)
    images: list[tuple[str, str, str]] = []
    facts: list[str] = []
    sidecar_facts: list[str] = []
    if sidecar_toggled:
        sidecar_facts.append(
            "mlwarden sidecar injected"
            if SIDECAR_CONTAINER in new_c
            else "mlwarden sidecar removed"
        )
    elif SIDECAR_CONTAINER in new_c and old_c[SIDECAR_CONTAINER] != new_c[SIDECAR_CONTAINER]:
        a, b = old_c[SIDECAR_CONTAINER].get("image"), new_c[SIDECAR_CONTAINER].get("image")
        if isinstance(a, str) and isinstance(b, str) and a != b:
            x, y = _image_pair(a, b)
            sidecar_facts.append(f"mlwarden sidecar updated from {x} to {y}")
        else:
            sidecar_facts.append("mlwarden sidecar settings changed")
    for name in [n for n in new_c if n not in old_c and n != SIDECAR_CONTAINER]:
        facts.append(f"container {name} added")
    for name in [n for n in old_c if n not in new_c and n != SIDECAR_CONTAINER]:
        facts.append(f"container {name} removed")
    for name, nc in new_c.items():
        oc = old_c.get(name)
        if oc is None or name == SIDECAR_CONTAINER:
            continue
        a, b = oc.get("image"), nc.get("image")
        if a != b:
            x, y = _image_pair(str(a), str(b))
            images.append((name, x, y))
        old_env, new_env = _env_names(oc), _env_names(nc)
        env = sorted(k for k in old_env.keys() | new_env.keys() if old_env.get(k) != new_env.get(k))
        if env:
            facts.append(f"env {', '.join(env)} changed")
        facts += [
            f"{f} of {name} changed"
            for f in ("args", "command", "resources")
            if oc.get(f) != nc.get(f)
        ]
        # Mounts are compared with the volumes below.
        ignored = {
            "name",
            "volumeMounts",
            *_CONTAINER_FIELDS,
            *(_INJECTION_FIELDS if sidecar_toggled else ()),
        }
        others = sorted(
            k for k in oc.keys() | nc.keys() if k not in ignored and oc.get(k) != nc.get(k)
        )
        if others:
            facts.append(f"{', '.join(others)} of {name} changed")
    old_refs, new_refs = config_refs(old_spec), config_refs(new_spec)
    added = [r for r in new_refs if r not in old_refs]
    removed = [r for r in old_refs if r not in new_refs]
    for config_kind in CONFIG_KINDS:
        now_ = [r[1] for r in added if r[0] == config_kind]
        was = [r[1] for r in removed if r[0] == config_kind]
        if now_ and was:
            facts.append(f"now reads {config_kind} {', '.join(now_)} (was {', '.join(was)})")
        elif now_:
            facts.append(f"now reads {config_kind} {', '.join(now_)}")
        elif was:
            facts.append(f"no longer reads {config_kind} {', '.join(was)}")
    if not added and not removed and _model_volumes(old_spec) != _model_volumes(new_spec):
        facts.append("volumes changed")
    rest = sorted(
        k
        for k in old_spec.keys() | new_spec.keys()
        if k not in ("containers", "initContainers", "volumes")
        and old_spec.get(k) != new_spec.get(k)
    )
    if rest:
        facts.append(f"pod {', '.join(rest)} changed")
    old_ann = dict(dig(old, "metadata", "annotations") or {})
    new_ann = dict(dig(new, "metadata", "annotations") or {})
    restarted = old_ann.pop(RESTARTED_AT_ANNOTATION, None) != new_ann.pop(
        RESTARTED_AT_ANNOTATION, None
    )
    annotations_changed = old_ann != new_ann
    kind: ChangeKind
    if images:
        kind = "image"
    elif facts:
        kind = "template"
    elif sidecar_facts:
        kind, facts = "sidecar", sidecar_facts
        sidecar_facts = []
    else:
        kind = "restart"
        if annotations_changed:
            facts.append("pod annotations changed")
    return TemplateDiff(
        kind=kind,
        images=tuple(images),
        facts=tuple(facts + sidecar_facts),
        restarted=restarted,
    )


# --------------------------------------------------------------------------- revisions


@dataclass(frozen=True)
class _Revision:
    number: int
    at: datetime
    template: Mapping[str, Any]


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _deployment_revisions(
    snapshot: Snapshot, obj: Mapping[str, Any], kind: str = "Deployment"
) -> list[_Revision]:
    """A Deployment's revisions from its ReplicaSets; an Argo Rollout's (kind "Rollout") from
    its own, numbered in `rollout.argoproj.io/revision`."""
    out: list[_Revision] = []
    annotation = ROLLOUT_REVISION if kind == "Rollout" else REVISION_ANNOTATION
    for rs in snapshot.owned("ReplicaSet", owner=obj, owner_kind=kind):
        number = _int(dig(rs, "metadata", "annotations", annotation))
        at = parse_time(dig(rs, "metadata", "creationTimestamp"))
        if dig(rs, "metadata", "annotations", REVISION_HISTORY_ANNOTATION):
            # A rollback reuses an old ReplicaSet: its creation is not when it came back.
            written = last_written(rs)
            at = written.at if written is not None else at
        template = dig(rs, "spec", "template")
        if number is not None and at is not None:
            out.append(_Revision(number, at, template if isinstance(template, Mapping) else {}))
    return sorted(out, key=lambda r: r.number)


def _controller_revisions(snapshot: Snapshot, obj: Mapping[str, Any], kind: str) -> list[_Revision]:
    out: list[_Revision] = []
    for cr in snapshot.owned("ControllerRevision", owner=obj, owner_kind=kind):
        number = _int(cr.get("revision"))
        # ControllerRevisions are immutable but for `revision`, bumped on a rollback.
        written = last_written(cr)
        template = dig(cr, "data", "spec", "template")
        if number is not None and written is not None:
            out.append(
                _Revision(number, written.at, template if isinstance(template, Mapping) else {})
            )
    return sorted(out, key=lambda r: r.number)


def _revision_changes(key: ObjectKey, revisions: list[_Revision]) -> list[Change]:
    out: list[Change] = []
    for i, rev in enumerate(revisions):
        revision = str(rev.number)
        if i == 0:
            if rev.number == 1:
                out.append(
                    Change(key, "created", rev.at, "created (revision 1)", revision=revision)
                )
            else:
                out.append(
                    Change(
                        key,
                        "rollout",
                        rev.at,
                        f"rolled out revision {rev.number}",
                        "earlier revisions not kept, so what changed is unknown",
                        revision=revision,
                    )
                )
            continue
        prev = revisions[i - 1]
        diff = diff_templates(prev.template, rev.template)
        since = "" if prev.number == rev.number - 1 else f" (compared with revision {prev.number})"
        context = [f"revision {rev.number}{since}"]
        if diff.kind == "image":
            context += list(diff.facts)
        elif diff.kind in ("restart", "sidecar"):
            context += [f for f in diff.facts if f != diff.headline]
        out.append(Change(key, diff.kind, rev.at, diff.headline, "; ".join(context), revision))
    return out


# --------------------------------------------------------------------------- pods


def _backoff_span(restarts: int) -> float:
    """Seconds between the first and the last of `restarts` crashes, back-off alone."""
    waits = range(max(restarts - 1, 0))
    return sum(backoff.exponential(i, base=_BACKOFF_START_S, cap=_BACKOFF_CAP_S) for i in waits)


def _pod_changes(key: ObjectKey, pods: list[Mapping[str, Any]], now: datetime) -> list[Change]:
    looping: list[tuple[datetime, str]] = []  # (estimated start, description)
    restarted: list[tuple[datetime, int, str]] = []  # (last restart, count, description)
    looping_pods = 0
    for pod in pods:
        started = parse_time(dig(pod, "status", "startTime"))
        statuses = [
            *(dig(pod, "status", "initContainerStatuses") or ()),
            *(dig(pod, "status", "containerStatuses") or ()),
        ]
        pod_loops = False
        for status in statuses:
            if not isinstance(status, Mapping):
                continue
            count = _int(status.get("restartCount")) or 0
            name = str(status.get("name", "?"))
            last = dig(status, "lastState", "terminated") or {}
            finished = parse_time(last.get("finishedAt")) if isinstance(last, Mapping) else None
            reason = last.get("reason") if isinstance(last, Mapping) else None
            code = last.get("exitCode") if isinstance(last, Mapping) else None
            exit_text = (
                f"last exit {reason or 'unknown'}" + (f" (code {code})" if code is not None else "")
                if last
                else ""
            )
            if dig(status, "state", "waiting", "reason") == "CrashLoopBackOff":
                pod_loops = True
                end = finished or now
                start = end - timedelta(seconds=_backoff_span(count))
                if started is not None:
                    start = max(start, started)
                text = f"container {name}: {count} restarts" + (
                    f", {exit_text}" if exit_text else ""
                )
                looping.append((start, text))
            elif count > 0 and finished is not None:
                text = f"container {name}" + (f": {exit_text}" if exit_text else "")
                restarted.append((finished, count, text))
        looping_pods += pod_loops
    out: list[Change] = []
    if looping:
        start = min(at for at, _ in looping)
        details = list(dict.fromkeys(text for _, text in looping))
        context = f"{looping_pods}/{len(pods)} pods; " + "; ".join(details[:2])
        out.append(Change(key, "crash_loop", start, "crash-looping since about", context))
    elif restarted:
        last = max(restarted, key=lambda r: r[0])
        total = sum(count for _, count, _ in restarted)
        times = "once" if total == 1 else f"{total} times"
        out.append(Change(key, "restarts", last[0], f"restarted {times}, last", last[2]))
    return out


def _deployment_pods(
    snapshot: Snapshot, obj: Mapping[str, Any], kind: str = "Deployment"
) -> list[Mapping[str, Any]]:
    pods: list[Mapping[str, Any]] = []
    for rs in snapshot.owned("ReplicaSet", owner=obj, owner_kind=kind):
        pods += snapshot.owned("Pod", owner=rs, owner_kind="ReplicaSet")
    return pods


# --------------------------------------------------------------------------- jobs


@dataclass(frozen=True)
class _Run:
    name: str
    obj: Mapping[str, Any]
    started: datetime
    scheduled: datetime | None
    outcome: Literal["failed", "succeeded", "running", "failing"]
    ended: datetime | None
    reason: str
    manual: bool


def _condition(job: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for c in dig(job, "status", "conditions") or ():
        if isinstance(c, Mapping) and c.get("type") == kind and c.get("status") == "True":
            return c
    return None


def _run(job: Mapping[str, Any], cronjob_name: str | None) -> _Run | None:
    name = str(dig(job, "metadata", "name"))
    started = parse_time(dig(job, "status", "startTime")) or parse_time(
        dig(job, "metadata", "creationTimestamp")
    )
    if started is None:
        return None
    scheduled = parse_time(dig(job, "metadata", "annotations", SCHEDULED_ANNOTATION))
    if scheduled is None and cronjob_name and name.startswith(f"{cronjob_name}-"):
        # The CronJob controller names each run NAME-<scheduled time in minutes since epoch>.
        minutes = _int(name[len(cronjob_name) + 1 :])
        if minutes is not None and 0 < minutes < 10**8:
            scheduled = datetime.fromtimestamp(minutes * 60, tz=started.tzinfo)
    failed = _condition(job, "Failed")
    complete = _condition(job, "Complete")
    failures = _int(dig(job, "status", "failed")) or 0
    outcome: Literal["failed", "succeeded", "running", "failing"]
    ended: datetime | None
    reason = ""
    if failed is not None:
        outcome = "failed"
        ended = parse_time(failed.get("lastTransitionTime")) or started
        reason = ": ".join(str(p) for p in (failed.get("reason"), failed.get("message")) if p)
    elif complete is not None or parse_time(dig(job, "status", "completionTime")):
        outcome = "succeeded"
        ended = parse_time(dig(job, "status", "completionTime")) or (
            parse_time(complete.get("lastTransitionTime")) if complete else None
        )
    else:
        outcome = "failing" if failures else "running"
        ended = None
        if failures:
            reason = f"{failures} failed pod(s), retrying"
    manual = dig(job, "metadata", "annotations", MANUAL_ANNOTATION) == "manual"
    return _Run(name, job, started, scheduled, outcome, ended, reason, manual)


def _duration(run: _Run) -> float | None:
    return (run.ended - run.started).total_seconds() if run.ended is not None else None


def _median(values: Iterable[float]) -> float | None:
    ordered = sorted(values)
    if not ordered:
        return None
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _job_changes(key: ObjectKey, job: Mapping[str, Any]) -> list[Change]:
    """A one-off Job: it failed, is failing, or completed."""
    run = _run(job, None)
    if run is None:
        return []
    if run.outcome in ("failed", "failing"):
        at = run.ended or run.started
        what = "failed" if run.outcome == "failed" else "failing"
        return [Change(key, "job_failed", at, what, run.reason)]
    if run.outcome == "succeeded" and run.ended is not None:
        took = _duration(run)
        context = f"took {describe_duration(took)}" if took is not None else ""
        return [Change(key, "job_completed", run.ended, "ran to completion", context)]
    return []


def _cronjob_changes(
    snapshot: Snapshot, key: ObjectKey, cronjob: Mapping[str, Any]
) -> list[Change]:
    now = snapshot.now
    name = key[1]
    runs = sorted(
        (
            r
            for j in snapshot.owned("Job", owner=cronjob, owner_kind="CronJob")
            if (r := _run(j, name)) is not None
        ),
        key=lambda r: r.started,
    )
    expression = dig(cronjob, "spec", "schedule")
    zone = dig(cronjob, "spec", "timeZone")
    schedule = (
        parse_cron(expression, zone if isinstance(zone, str) else None)
        if isinstance(expression, str)
        else None
    )
    created = parse_time(dig(cronjob, "metadata", "creationTimestamp"))
    typical = _median(
        d for r in runs if r.outcome == "succeeded" and (d := _duration(r)) is not None
    )
    out: list[Change] = []
    for i, run in enumerate(runs):
        newest = i == len(runs) - 1
        which = "last run" if newest else "a run"
        job_text = f"Job {run.name}"
        previous = runs[i - 1] if i else None
        if previous is not None:
            diff = diff_templates(pod_template(previous.obj, "Job"), pod_template(run.obj, "Job"))
            if diff.kind in ("image", "template"):
                facts = [f"first run with it: {job_text}, {run.outcome}", *diff.facts]
                if diff.kind == "template":
                    facts = facts[:1]
                out.append(Change(key, diff.kind, run.started, diff.headline, "; ".join(facts)))
        if run.outcome == "failed":
            context = "; ".join(p for p in (job_text, run.reason) if p)
            out.append(
                Change(key, "job_failed", run.ended or run.started, f"{which} failed", context)
            )
        elif run.outcome == "failing":
            out.append(
                Change(
                    key, "job_failed", run.started, f"{which} failing", f"{job_text}; {run.reason}"
                )
            )
        elif run.outcome == "running":
            if typical is not None and newest:
                overdue = run.started + timedelta(seconds=2 * typical + 60)
                if overdue <= now:
                    context = (
                        f"{job_text} started at {format_time(run.started)}, runs usually take "
                        f"{describe_duration(typical)}"
                    )
                    out.append(Change(key, "job_late", overdue, "run overdue since", context))
        elif run.ended is not None:
            took = _duration(run)
            context = job_text + (f", took {describe_duration(took)}" if took is not None else "")
            first = i == 0 and _first_ever(run, created, schedule)
            if first:
                out.append(Change(key, "first_run", run.ended, "first-ever run succeeded", context))
            elif run.manual:
                what = f"{which} (triggered by hand) succeeded"
                out.append(Change(key, "job_completed", run.ended, what, context))
            else:
                what = f"{which} succeeded on schedule"
                out.append(Change(key, "routine_run", run.ended, what, context))
    out += _schedule_changes(key, cronjob, schedule, runs, now)
    # A spec edit that no run has picked up yet (the runs' templates tell the rest).
    written = last_written(cronjob)
    edited = (
        written is not None and created is not None and written.at - created > timedelta(seconds=1)
    )
    if written is not None and edited and (not runs or written.at > runs[-1].started):
        context = f"by {written.manager}" if written.manager else ""
        out.append(Change(key, "template", written.at, "spec edited", context))
    return out


def _first_ever(run: _Run, created: datetime | None, schedule: CronSchedule | None) -> bool:
    """No earlier run is kept, and the CronJob did not exist at the schedule slot before it."""
    if created is None:
        return False
    slot = run.scheduled or run.started
    if schedule is not None:
        before = schedule.previous(slot)
        if before is None:  # no slot within the horizon: first only if created within it
            return slot - created < SCHEDULE_HORIZON
        return before < created
    return slot - created < timedelta(minutes=10)


def _schedule_changes(
    key: ObjectKey,
    cronjob: Mapping[str, Any],
    schedule: CronSchedule | None,
    runs: list[_Run],
    now: datetime,
) -> list[Change]:
    out: list[Change] = []
    last_scheduled = parse_time(dig(cronjob, "status", "lastScheduleTime"))
    last_success = parse_time(dig(cronjob, "status", "lastSuccessfulTime"))
    if schedule is not None:
        since = last_scheduled or parse_time(dig(cronjob, "metadata", "creationTimestamp"))
        if since is not None:
            missed = schedule.fires_between(since, now - SCHEDULE_GRACE)
            if missed:
                parts = [
                    f"schedule {schedule.label}",
                    f"{len(missed)} run(s) missed",
                    f"last scheduled run at {format_time(last_scheduled)}"
                    if last_scheduled
                    else "never scheduled",
                ]
                if dig(cronjob, "spec", "suspend") is True:
                    parts.append("the CronJob is suspended")
                elif any(r.outcome in ("running", "failing") for r in runs) and (
                    dig(cronjob, "spec", "concurrencyPolicy") == "Forbid"
                ):
                    parts.append("concurrencyPolicy Forbid and a run still active")
                what = "missed its scheduled run"
                out.append(Change(key, "schedule_missed", missed[0], what, "; ".join(parts)))
    # The last scheduled run did not succeed, and its Job is gone (history limits).
    if last_scheduled is not None and (last_success is None or last_success < last_scheduled):
        kept = any(r.started >= last_scheduled - SCHEDULE_GRACE for r in runs)
        if not kept:
            context = "its Job is not kept; " + (
                f"last success at {format_time(last_success)}" if last_success else "no success yet"
            )
            what = "last scheduled run did not succeed, scheduled"
            out.append(Change(key, "job_failed", last_scheduled, what, context))
    return out


# --------------------------------------------------------------------------- configs and models


def _config_changes(key: ObjectKey, obj: Mapping[str, Any]) -> list[Change]:
    created = parse_time(dig(obj, "metadata", "creationTimestamp"))
    written = last_written(obj)
    if written is None:
        return []
    context = f"by {written.manager}" if written.manager else ""
    if created is not None and written.at - created > timedelta(seconds=1):
        return [Change(key, "config_edit", written.at, "edited", context)]
    return [Change(key, "config_created", written.at, "created", context)]


def _alert_text(alert: Mapping[str, Any]) -> str:
    subject = alert.get("feature")
    test = alert.get("test")
    p = alert.get("pValue")
    text = str(alert.get("type", "alert")) + (f" on {subject}" if subject else "")
    if isinstance(p, int | float):
        return f"{text}, {test} p={p:.2g}"
    return f"{text}, {test}" if test else text


def _model_changes(key: ObjectKey, obj: Mapping[str, Any]) -> list[Change]:
    alerts = [a for a in dig(obj, "status", "alerts") or () if isinstance(a, Mapping)]
    dated = [(t, a) for a in alerts if (t := parse_time(a.get("since"))) is not None]
    if not dated:
        return []
    dated.sort(key=lambda pair: pair[0])
    context = "; ".join(_alert_text(a) for _, a in dated[:3])
    return [Change(key, "upstream_alert", dated[0][0], "alerting since", context)]


# --------------------------------------------------------------------------- the timeline


def node_changes(snapshot: Snapshot, key: ObjectKey, obj: Mapping[str, Any]) -> list[Change]:
    """Every change of one object, oldest first."""
    kind = key[0]
    changes: list[Change] = []
    if kind in ("Deployment", "Rollout"):
        changes += _revision_changes(key, _deployment_revisions(snapshot, obj, kind))
        changes += _pod_changes(key, _deployment_pods(snapshot, obj, kind), snapshot.now)
    elif kind in ("StatefulSet", "DaemonSet"):
        changes += _revision_changes(key, _controller_revisions(snapshot, obj, kind))
        changes += _pod_changes(
            key, snapshot.owned("Pod", owner=obj, owner_kind=kind), snapshot.now
        )
    elif kind == "CronJob":
        changes += _cronjob_changes(snapshot, key, obj)
    elif kind == "Job":
        changes += _job_changes(key, obj)
    elif kind in CONFIG_KINDS:
        changes += _config_changes(key, obj)
    elif kind == "ObservedModel":
        changes += _model_changes(key, obj)
    return sorted(changes, key=lambda c: c.at)


def build_timeline(snapshot: Snapshot, graph: ResourceGraph) -> dict[ObjectKey, tuple[Change, ...]]:
    """The changes of every observed node of `graph`, oldest first per node."""
    out: dict[ObjectKey, tuple[Change, ...]] = {}
    for key, node in graph.nodes.items():
        obj = snapshot.get(*key) if node.observed else None
        if obj is not None:
            out[key] = tuple(node_changes(snapshot, key, obj))
    return out
