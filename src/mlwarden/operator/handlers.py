"""The kopf handlers: read the cluster, ask the pure modules what should change, apply it.

- create / resume / spec update of an ObservedModel: validate the spec (Failed with
  the field and reason when invalid; never raise, so one bad object cannot
  crash-loop the operator), ensure the detector objects, inject the sidecar one
  safe step at a time, and write phase and conditions. Until everything is in
  place the handler retries with a delay (kopf.TemporaryError), so a target
  Deployment created later is picked up.
- status.alerts / status.detector changes (written by the detector): phase,
  conditions, and an Event per alert fired or resolved.
- status.alerts changes, and a timer (every MLWARDEN_RESPOND_INTERVAL seconds, default 30)
  while an alert is active or a reaction is Planned or Running: one diagnosis and reaction
  pass (`respond.respond`: status.diagnosis, status.reactions recorded before each action,
  the actions, Events), one pass at a time per ObservedModel, on the object as the API has
  it at that moment (never on a handler's possibly older body).
- the rebaseline annotation (REBASELINE_ANNOTATION) changed: the detector's manifest carries
  it, so its ConfigMap and config hash change and the detector restarts into a new warm-up;
  recorded as an Event.
- a timer (every MLWARDEN_INJECTION_CHECK_SECONDS, default 30) once the injection is done:
  read the target Deployment and Service again and ask `traffic.assess` whether the Service's
  traffic still passes the sidecar. Other writers undo the injection without telling anyone
  (`kubectl rollout undo`, `kubectl replace`, `helm --force`, a GitOps sync): then the
  Bypassed condition turns True with a Warning Event, the Service is put back first (so the
  model keeps its endpoints), and the sidecar is injected again, one step every
  MLWARDEN_RETRY_SECONDS. A sidecar removed again and again is not fought over forever:
  after MLWARDEN_INJECTION_MAX_REPAIRS re-injections within an hour the operator stops
  re-injecting, keeps the Service on the model, and stays Bypassed (phase Failed) with what
  to do, until the hour has passed or the spec changes.
  A timer rather than a watch on Deployments and Services: a watch would need list/watch
  on every Deployment and Service of the watched namespaces and their copies in memory,
  while two reads per ObservedModel and interval suffice; kopf would also keep its
  progress annotations on the users' objects it handles. The price is the delay: up to one
  interval (plus the rollout) before a Service named at a port the pods lost is put back.
- deletion (kopf's finalizer on the ObservedModel only): undo the injection
  exactly, Service first; a target that is gone or being deleted is left alone, so a
  terminating namespace never waits on the finalizer. The detector objects go with their
  owner.

The target is a Deployment, a StatefulSet or an Argo Rollout (the sidecar in its pod
template, the same planner; a Rollout with spec.workloadRef: in the referenced Deployment's
template, `_template_holder`), or a KServe InferenceService (no sidecar: its own payload
logger pointed at the detector, `kserve.py`); docs/operator.md, "Targets by kind". What the
target resolved to is written to status.target on every reconcile (`targets.py`).

An object of one of the detector's names that the ObservedModel does not own is never
written: the ObservedModel goes Failed (NameConflict) and nothing is injected.

Users' own objects (the target Deployment and Service) get merge patches and
annotations, never finalizers or timers. What the diagnosis and reaction passes read comes
from watches (kopf indexes, cache.py), read-only; the handlers hand the indexes on.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, cast

import aiohttp
import kopf

from mlwarden import backoff, patches
from mlwarden.kube import Conflict, CredentialsError, KopfLogin, Kube, KubeError, path, path_of
from mlwarden.names import (
    INJECT_LABEL,
    KOPF_ANNOTATION_PREFIX,
    RETRY_INJECTION_ANNOTATION,
    SIDECAR_CONTAINER,
    UPGRADE_SIDECAR_ANNOTATION,
    detector_name,
)
from mlwarden.operator import (
    cache,
    incidents,
    injection,
    kserve,
    objects,
    respond,
    targets,
    traffic,
)
from mlwarden.operator.metrics import METRICS
from mlwarden.operator.settings import OperatorSettings
from mlwarden.operator.status import Observation, alert_events, status_patch
from mlwarden.react import revisions
from mlwarden.react.guardrails import approved_ids
from mlwarden.spec import (
    GROUP,
    PLURAL,
    REBASELINE_ANNOTATION,
    VERSION,
    ObservedModel,
    SpecError,
    parse_observed_model,
)
from mlwarden.timestamps import format_time, now_iso, parse_time

log = logging.getLogger(__name__)

FINALIZER = "mlwarden.io/finalizer"
# Seconds between retries while targets are missing or the injection proceeds a step at a
# time (MLWARDEN_RETRY_SECONDS), and between diagnosis and reaction passes while an alert is
# active or a reaction is Planned or Running (MLWARDEN_RESPOND_INTERVAL). The operator tests
# shorten both; the defaults suit a cluster.
RETRY_SECONDS = float(os.environ.get("MLWARDEN_RETRY_SECONDS") or 5.0)
RESPOND_INTERVAL = float(os.environ.get("MLWARDEN_RESPOND_INTERVAL") or 30.0)
# Seconds between checks that an injected sidecar is still in the traffic's path, and how
# many times within REPAIR_WINDOW_SECONDS the sidecar is put back before the operator stops.
INJECTION_CHECK_SECONDS = float(os.environ.get("MLWARDEN_INJECTION_CHECK_SECONDS") or 30.0)
MAX_REPAIRS = int(os.environ.get("MLWARDEN_INJECTION_MAX_REPAIRS") or 3)
REPAIR_WINDOW_SECONDS = 3600.0
# Objects per page when kopf lists a kind (at start-up, and after a watch expired), so that
# no list returns a whole cluster's Pods in one response (MLWARDEN_LIST_CHUNK_SIZE).
LIST_CHUNK_SIZE = int(os.environ.get("MLWARDEN_LIST_CHUNK_SIZE") or 500)
API_BACKOFF_CAP_SECONDS = 60.0
# Sidecar upgrades asked for (UPGRADE_SIDECAR_ANNOTATION) roll one model at a time per
# operator: the next starts when the previous rollout completed, failed, or held the turn
# this long (MLWARDEN_UPGRADE_TURN_SECONDS; a Deployment's default progressDeadlineSeconds).
UPGRADE_TURN_SECONDS = float(os.environ.get("MLWARDEN_UPGRADE_TURN_SECONDS") or 600.0)
# How long a resolved fleet incident (kubectl get incidents) is kept (operator/incidents.py).
INCIDENT_RETENTION_SECONDS = float(os.environ.get("MLWARDEN_INCIDENT_RETENTION_SECONDS") or 86400)
# Passes in a row when the alerts keep changing while one runs (then the timer takes over).
PASSES_PER_CHANGE = 3
# How often an ObservedModel whose names are taken by other objects checks again.
CONFLICT_RECHECK_SECONDS = RETRY_SECONDS * 6


def api_backoff(retry: int) -> float:
    """Seconds before retrying after an API failure: RETRY_SECONDS doubling, capped."""
    return backoff.exponential(retry, base=RETRY_SECONDS, cap=API_BACKOFF_CAP_SECONDS)


class _State:
    """Process-wide: settings and the API client built from kopf's login."""

    settings: OperatorSettings = OperatorSettings()
    connection: Any = None  # kopf's latest ConnectionInfo (kopf logs in again after a 401)
    kopf_settings: Any = None  # what kopf's login is given, for logging in again ourselves
    kube: Kube | None = None
    # One diagnosis and reaction pass at a time per ObservedModel (namespace, name).
    passes: dict[tuple[str, str], asyncio.Lock] = {}
    # One injection step at a time per ObservedModel: the reconcile handler or the check.
    injecting: dict[tuple[str, str], asyncio.Lock] = {}
    # The ObservedModel whose sidecar upgrade is rolling out, and since when (loop time).
    upgrade_turn: tuple[tuple[str, str], float] | None = None


STATE = _State()


class _QuietTimer(logging.Filter):
    """Drops kopf's "Timer 'respond_again' succeeded." (INFO, on every run).

    kopf posts INFO logs about an object as Events on it (settings.posting.level), so that
    line would be one Event per ObservedModel per interval while an alert is active. The pass
    posts Events of its own for what it finds and does; failures are still logged and posted.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message in ("Timer 'respond_again' succeeded.", "Timer 'check_injection' succeeded."):
            return False
        # A Pending reconcile asks kopf to come back later with a TemporaryError, which kopf
        # logs at ERROR and posts as a Warning Event ("failed temporarily") on every normal
        # injection. The phase, its message and the PhasePending Event already say what is
        # awaited, and the handler logs it at INFO: drop kopf's line for that case only.
        return f"failed temporarily: {_Waiting.PREFIX}" not in message


class _Waiting(kopf.TemporaryError):
    """Not a failure: the ObservedModel is Pending (a target, a rollout, the detector)."""

    PREFIX = "pending, checking again: "

    def __init__(self, message: str, delay: float) -> None:
        super().__init__(self.PREFIX + message, delay=delay)


def kube() -> Kube:
    if STATE.kube is None:
        if STATE.connection is None:
            raise kopf.TemporaryError("not logged in to the Kubernetes API yet", delay=1)
        STATE.kube = Kube(KopfLogin(lambda: STATE.connection, relogin))
    return STATE.kube


async def relogin() -> Any:
    """Log in again as kopf does, now: after a 401 on one of our own requests.

    `kopf.login_via_client` re-reads KUBECONFIG (and a `tokenFile` it names) or the in-cluster
    service-account token, so a rotated token is picked up. kopf's own requests do the same
    through `login` below when they get a 401.
    """
    settings = STATE.kopf_settings or kopf.OperatorSettings()
    try:
        info = await asyncio.to_thread(kopf.login_via_client, logger=log, settings=settings)
    except kopf.LoginError as exc:
        raise CredentialsError(f"logging in to the Kubernetes API again failed: {exc}") from exc
    if info is not None:
        STATE.connection = info
    return info


# --------------------------------------------------------------------------- lifecycle


# Set by `mlwarden operator --namespace ...` before kopf starts.
NAMESPACED = False


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    STATE.settings = OperatorSettings.from_env()
    incidents.configure(
        STATE.settings, pass_seconds=RESPOND_INTERVAL, retention=INCIDENT_RETENTION_SECONDS
    )
    port = int(os.environ.get("MLWARDEN_METRICS_PORT", "8081"))
    if port:
        METRICS.serve(port)
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix=KOPF_ANNOTATION_PREFIX
    )
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=KOPF_ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    settings.posting.level = logging.INFO
    quiet = logging.getLogger("kopf.objects")
    if not any(isinstance(f, _QuietTimer) for f in quiet.filters):
        quiet.addFilter(_QuietTimer())
    settings.watching.server_timeout = 300
    settings.watching.chunk_size = LIST_CHUNK_SIZE
    # kopf keeps the finalizer of a deleted ObservedModel until its timers have exited. A pass
    # still waiting on the API then (the injection check's read, a reaction pass) exits when
    # that call returns, but kopf looks again only after `cancellation_polling`, 60 s by
    # default, unless a watch event wakes it, and a pass that writes nothing sends none.
    settings.background.cancellation_polling = RETRY_SECONDS
    if NAMESPACED:
        # The chart's namespaced install grants no cluster-scoped rights (a Role per
        # namespace): do not list/watch Namespaces and CRDs cluster-wide, where kopf would
        # be refused and fall back to exactly this after a warning.
        settings.scanning.disabled = True


@kopf.on.login()
def login(**kwargs: Any) -> Any:
    """Log in as kopf would (in-cluster, or KUBECONFIG), and keep the credentials for our client."""
    info = kopf.login_via_client(**kwargs)
    STATE.connection = info
    STATE.kopf_settings = kwargs.get("settings")
    return info


@kopf.on.cleanup()
async def close(**_: Any) -> None:
    if STATE.kube is not None:
        await STATE.kube.close()
        STATE.kube = None


# --------------------------------------------------------------------------- helpers


async def ensure(obj: dict[str, Any], current: dict[str, Any] | None) -> str:
    """Create the object, or patch what differs; 'created', 'updated' or 'unchanged'.

    `current` is the object as just read, and must be ours (see `objects.name_conflict`).
    """
    api = kube()
    if current is None:
        await api.create(obj)
        return "created"
    patch = patches.needs_update(current, obj)
    if patch is None:
        return "unchanged"
    await api.merge_patch(path_of(obj), patch)
    return "updated"


async def create_once(obj: dict[str, Any]) -> dict[str, Any] | None:
    """Create the object unless it exists (never read, never patched); the created object.

    The Secret is only ever created, never read: the operator needs no right to read any
    Secret, and a token once made is never replaced behind the user's back. None: it exists.
    """
    try:
        return await kube().create(obj)
    except Conflict:
        return None


async def _record_ingest_token(status_path: str, record: dict[str, Any] | None) -> None:
    """Write `status.ingestToken`, retrying a server error in place as kopf does its patches.

    The record must land before the create it vouches for; a failed write would otherwise
    cost a whole reconcile retry (with its growing back-off) for one status field.
    """
    for attempt in range(3):
        try:
            await kube().merge_patch(status_path, {"status": {"ingestToken": record}})
            return
        except KubeError as exc:
            if exc.status < 500 or attempt == 2:
                raise
        await asyncio.sleep(RETRY_SECONDS / 5)


async def _ensure_detector(raw: dict[str, Any], model: ObservedModel) -> str | None:
    """The detector's objects, the created-once ones first (the Deployment mounts the Secret).

    Every name is checked before anything is written: an object of one of our names that
    this ObservedModel does not own is left alone, nothing is created or patched, and the
    return value says which and what to do (the ObservedModel goes Failed, NameConflict).
    """
    api = kube()
    namespace = model.namespace
    desired = objects.desired_objects(raw, model, STATE.settings)
    if STATE.settings.network_policy:
        target = await api.get(path(model.spec.target.kind, namespace, model.spec.target.name))
        selector = ((target or {}).get("spec") or {}).get("selector")
        if model.spec.target.kind == "InferenceService" and target is not None:
            selector = kserve.pod_selector(model.spec.target.name)
        if selector:  # absent target: the reconcile retries until it exists
            desired.append(objects.detector_network_policy(raw, selector, STATE.settings))
    reference, secret = objects.created_once(raw, secrets.token_urlsafe(32))
    current: dict[str, dict[str, Any] | None] = {}
    for obj in (reference, *desired):
        found = await api.get(path_of(obj))
        conflict = objects.name_conflict(raw, found)
        if conflict is not None:
            return conflict
        current[path_of(obj)] = found

    # Whose is the Secret? The operator may not read Secrets, so it records the name in
    # status.ingestToken before its first create: a later 409 is then its own create having
    # landed (perhaps unanswered), while a 409 on the first create is somebody else's Secret.
    status_path = path("ObservedModel", namespace, model.name, subresource="status")
    name = secret["metadata"]["name"]
    if not objects.ingest_token_recorded(raw):
        await _record_ingest_token(status_path, {"secret": name})
    made = await create_once(secret)
    deployment = next(o for o in desired if o["kind"] == "Deployment")
    detector = current[path_of(deployment)]  # mounts the Secret: see ingest_token_conflict
    conflict = objects.ingest_token_conflict(raw, created=made is not None, detector=detector)
    if conflict is not None:
        await _record_ingest_token(status_path, None)
        return conflict
    if made is not None:
        log.info("Secret %s/%s created", namespace, name)
        record = {"secret": name, "uid": made["metadata"]["uid"]}
        await _record_ingest_token(status_path, record)
    if current[path_of(reference)] is None and await create_once(reference) is not None:
        log.info("ConfigMap %s/%s created", namespace, reference["metadata"]["name"])
    for obj in desired:
        outcome = await ensure(obj, current[path_of(obj)])
        if outcome != "unchanged":
            log.info("%s %s/%s %s", obj["kind"], namespace, obj["metadata"]["name"], outcome)
    return None


async def _detector_available(
    namespace: str, name: str, cached: Sequence[Mapping[str, Any]] = ()
) -> bool:
    """Whether NAME-detector has an available replica: from `cached` (the namespace's
    Deployments in the watch-backed cache) when it is there, else read from the API."""
    wanted = detector_name(name)
    dep = next((d for d in cached if (d.get("metadata") or {}).get("name") == wanted), None)
    if dep is None:
        dep = await kube().get(path("Deployment", namespace, wanted))
    return bool(dep and (dep.get("status") or {}).get("availableReplicas", 0) >= 1)


def _event(body: dict[str, Any], kind: str, reason: str, message: str) -> None:
    """A Kubernetes Event on the ObservedModel (kopf reads only its metadata)."""
    post = kopf.warn if kind == "Warning" else kopf.info
    post(cast(kopf.Body, body), reason=reason, message=message)


def _stored(value: Any) -> Any:
    """`value` as the API server keeps it after a merge patch: the nulls in it removed."""
    if isinstance(value, dict):
        return {k: _stored(v) for k, v in value.items() if v is not None}
    return value


def _write_status(
    patch: kopf.Patch, body: dict[str, Any], obs: Observation, *, only_changes: bool = False
) -> dict[str, Any]:
    """Phase and conditions into kopf's patch (`only_changes`: the fields that differ)."""
    previous = dict(body.get("status") or {})
    new = status_patch(obs, previous, now=now_iso())
    for key, value in new.items():
        if not only_changes or previous.get(key) != _stored(value):
            patch.status[key] = value
    return new


def _observation_base(body: dict[str, Any]) -> dict[str, Any]:
    status = body.get("status") or {}
    detector = status.get("detector") or {}
    return {
        "generation": body.get("metadata", {}).get("generation"),
        "alerts": tuple(status.get("alerts") or ()),
        "reference_id": (detector.get("reference") or {}).get("id"),
        "top_suspect": status.get("topSuspect"),
        "last_action": status.get("lastAction"),
        # Only the injection check sets or clears it; every other status write keeps it.
        "bypass": _bypass_of(status),
        "promotable": _promotable(status),
    }


def _promotable(status: dict[str, Any]) -> tuple[str, ...]:
    """The candidates the detector passed, in words (from status.revisions when resolved)."""
    named = revisions.labels(status.get("revisions"))
    found = revisions.promotable((status.get("detector") or {}).get("revisions"))
    return tuple(named.get(str(e["revision"]), f"revision {e['revision']}") for e in found)


def _bypass_of(status: dict[str, Any]) -> tuple[str, str] | None:
    for c in status.get("conditions") or ():
        if c.get("type") == "Bypassed" and c.get("status") == "True":
            return str(c.get("reason") or "Bypassed"), str(c.get("message") or "")
    return None


def _injection_lock(namespace: str, name: str) -> asyncio.Lock:
    return STATE.injecting.setdefault((namespace, name), asyncio.Lock())


# --------------------------------------------------------------------------- reconcile


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
async def reconcile(
    body: kopf.Body, patch: kopf.Patch, reason: str = "", retry: int = 0, **_: Any
) -> None:
    await _reconcile(body, patch, retry, reason=reason)


@kopf.on.update(GROUP, VERSION, PLURAL, field="metadata.annotations")
async def injection_asked(
    body: kopf.Body, old: Any, new: Any, patch: kopf.Patch, retry: int = 0, **_: Any
) -> None:
    """A person asked for a sidecar upgrade, or to inject again after a stalled rollout.

    (An approval, `mlwarden.io/approve`, is under kopf's own prefix, whose changes kopf does
    not report: a Pending reconcile, retried every RETRY_SECONDS, reads it.)
    """
    keys = (UPGRADE_SIDECAR_ANNOTATION, RETRY_INJECTION_ANNOTATION)
    changed = [k for k in keys if (old or {}).get(k) != (new or {}).get(k)]
    if not changed:
        return
    value = (new or {}).get(RETRY_INJECTION_ANNOTATION)
    retrying = RETRY_INJECTION_ANNOTATION in changed and bool(value)
    if retrying:
        log.info("%s is %r: injecting again", RETRY_INJECTION_ANNOTATION, value)
    await _reconcile(body, patch, retry, retrying=retrying)


async def _reconcile(
    body: kopf.Body, patch: kopf.Patch, retry: int, *, reason: str = "", retrying: bool = False
) -> None:
    raw = dict(body)
    name, namespace = body.metadata.name, body.metadata.namespace
    base = _observation_base(raw)
    old_phase = (raw.get("status") or {}).get("phase")
    try:
        model = parse_observed_model(raw)
    except SpecError as exc:
        problems = "; ".join(str(e) for e in exc.errors)
        new = _write_status(patch, raw, Observation(spec_error=problems, **base))
        METRICS.reconciles.labels("failed").inc()
        METRICS.set_phase(f"{namespace}/{name}", "Failed")
        if old_phase != "Failed":
            _event(raw, "Warning", "InvalidSpec", new["message"])
        return  # nothing to retry: the next spec change re-runs this handler

    base["target"] = targets.resolved(model, None)  # _inject resolves it further
    injection_status = (raw.get("status") or {}).get("injection") or {}
    gave_up = injection_status.get("state") == "bypassed"
    new_chance = reason == "update" and bool(injection_status.get("repairs"))
    if new_chance:
        gave_up = False  # a new spec: a new chance, with a clean count
    queued: str | None = None
    try:
        conflict = await _ensure_detector(raw, model)
        if conflict is not None:
            # Nothing is injected either: the sidecar would mount somebody else's ConfigMap
            # and ship records to somebody else's Service.
            obs = Observation(injection_state="conflict", injection_message=conflict, **base)
        elif gave_up:
            # The operator stopped re-injecting (see check_injection); a restart does not
            # start the fight with the Deployment's other writer again.
            obs = await _inject_state(raw, model, base)
        else:
            async with _injection_lock(str(namespace), str(name)):
                obs, _patched, queued = await _inject(raw, model, base, retrying=retrying)
    except (KubeError, aiohttp.ClientError, TimeoutError) as exc:
        # A conflict, an API server error or timeout: retry soon, backing off, instead of
        # kopf's flat minute for unexpected errors. Every step is idempotent (ensure, the
        # injection plan), so a retry picks up where this one stopped.
        METRICS.reconciles.labels("retry").inc()
        raise kopf.TemporaryError(f"API: {exc}", delay=api_backoff(retry)) from exc
    new = _write_status(patch, raw, obs)
    if new_chance:
        patch.status["injection"] = {**new["injection"], "repairs": None}
    METRICS.set_phase(f"{namespace}/{name}", new["phase"])
    result = {"Failed": "failed", "Pending": "pending"}.get(new["phase"], "ok")
    METRICS.reconciles.labels(result).inc()
    if new["phase"] != old_phase:
        kind = "Warning" if new["phase"] in ("Failed", "Degraded") else "Normal"
        _event(raw, kind, f"Phase{new['phase']}", new["message"])
    if obs.injection_state == "conflict":
        if (raw.get("status") or {}).get("message") != new["message"]:
            _event(raw, "Warning", "NameConflict", new["message"])
        # Checked again now and then: deleting or renaming the other object resolves it.
        raise _Waiting(new["message"], delay=CONFLICT_RECHECK_SECONDS)
    if new["phase"] == "Failed":
        return
    if new["phase"] == "Pending":
        log.info("ObservedModel %s/%s pending: %s", namespace, name, new["message"])
        raise _Waiting(new["message"], delay=RETRY_SECONDS)
    if queued is not None:
        log.info("ObservedModel %s/%s: %s", namespace, name, queued)
        raise _Waiting(queued, delay=RETRY_SECONDS)
    log.info("ObservedModel %s/%s reconciled: %s", namespace, name, new["phase"])


async def _namespace_labels(namespace: str) -> dict[str, str]:
    """The namespace's labels (Istio's injection labels), or none when they may not be read.

    A namespaced install has no cluster-scoped rights: the Namespace is refused (403) and only
    the pod template tells whether Istio injects the pods.
    """
    try:
        ns = await kube().get(f"/api/v1/namespaces/{namespace}")
    except KubeError as exc:
        if exc.status in (401, 403):
            return {}
        raise
    return {
        str(k): str(v) for k, v in (((ns or {}).get("metadata") or {}).get("labels") or {}).items()
    }


def _upgrade_turn(key: tuple[str, str], wanted: bool) -> str | None:
    """Take the one upgrade turn when `wanted`; the holder's name when another has it."""
    now = asyncio.get_running_loop().time()
    turn = STATE.upgrade_turn
    if turn is not None and turn[0] != key and now - turn[1] < UPGRADE_TURN_SECONDS:
        return f"{turn[0][0]}/{turn[0][1]}"
    if wanted and (turn is None or turn[0] != key):
        STATE.upgrade_turn = (key, now)
    return None


def _end_upgrade_turn(key: tuple[str, str]) -> None:
    if STATE.upgrade_turn is not None and STATE.upgrade_turn[0] == key:
        STATE.upgrade_turn = None


async def _inject(
    raw: dict[str, Any],
    model: ObservedModel,
    base: dict[str, Any],
    *,
    template_allowed: bool = True,
    bypassed: str = "",
    retrying: bool = False,
) -> tuple[Observation, bool, str | None]:
    """One safe injection step: where it stands, whether the pod template was patched, and
    a queued sidecar upgrade (waiting for its turn), if any.

    `template_allowed` False: the Service is still put back or switched, but a step that
    would patch the pod template is not taken (state "bypassed", `bypassed` the message).
    """
    api = kube()
    ns, target = model.namespace, model.spec.target
    key = (ns, model.name)
    previous = (raw.get("status") or {}).get("injection") or {}
    if (
        previous.get("state") == "stalled"
        and not retrying
        and (raw.get("status") or {}).get("observedGeneration") == base["generation"]
    ):
        # The undone rollout stays undone until the spec changes or a person asks again.
        return (
            Observation(
                injection_state="stalled",
                injection_message=str(previous.get("message", "")),
                **base,
            ),
            False,
            None,
        )
    if target.kind == "InferenceService":
        return await _inject_logger(raw, model, base)
    workload = await api.get(path(target.kind, ns, target.name))
    try:
        kind, name, deployment, rollout = await _template_holder(target.kind, ns, workload)
    except injection.InjectionError as exc:
        base = {**base, "target": targets.resolved(model, workload)}
        return _refused(raw, exc, base, previous), False, None
    base = {**base, "target": targets.resolved(model, workload, template=rollout and deployment)}
    service = await api.get(path("Service", ns, target.service))
    missing = [
        f"{target.kind} {ns}/{target.name}" if workload is None else None,
        f"Deployment {ns}/{name} (spec.workloadRef of {target.kind} {ns}/{target.name})"
        if workload is not None and deployment is None
        else None,
        f"Service {ns}/{target.service}" if service is None else None,
    ]
    if any(missing):
        what = " and ".join(m for m in missing if m)
        return Observation(target_missing=f"{what} not found; retrying", **base), False, None
    assert deployment is not None and service is not None
    annotations = {
        str(k): str(v) for k, v in ((raw.get("metadata") or {}).get("annotations") or {}).items()
    }
    upgrade = annotations.get(UPGRADE_SIDECAR_ANNOTATION)
    # Webhook mode: the admission webhook takes an upgrade at the Deployment's next rollout.
    patching = STATE.settings.injection == "patch"
    requested = patching and injection.upgrade_requested(deployment, upgrade)
    held_by = _upgrade_turn(key, requested)
    approvals = approved_ids(annotations)
    if STATE.settings.injection == "webhook":
        # The workload's mlwarden.io/inject label is its owner's consent to a Recreate.
        approvals |= {injection.approval_id(deployment)}
    try:
        plan = injection.plan_injection(
            deployment=deployment,
            service=service,
            model=model,
            settings=STATE.settings,
            namespace_labels=await _namespace_labels(ns),
            upgrade=upgrade,
            upgrade_now=patching and held_by is None,
            approvals=approvals,
            rollout=rollout,
        )
        if plan.state in ("injecting", "switching-service"):
            # Before any change that points the Service's traffic at the sidecar.
            injection.check_selects_only(
                service=service,
                deployment=deployment,
                deployments=[
                    *await api.list("Deployment", ns),
                    *(await api.list(target.kind, ns) if target.kind != "Deployment" else []),
                ],
            )
    except injection.InjectionError as exc:
        _end_upgrade_turn(key)
        return _refused(raw, exc, base, previous), False, None
    queued = None
    if requested and held_by is not None:
        queued = (
            f"sidecar upgrade ({UPGRADE_SIDECAR_ANNOTATION}={upgrade}) waits for the upgrade "
            f"of ObservedModel {held_by} to roll out (one at a time)"
        )
    if plan.state not in ("injecting", "waiting-for-rollout", "switching-service"):
        _end_upgrade_turn(key)
    if plan.state == "awaiting-approval":
        if previous.get("state") != "awaiting-approval":
            _event(raw, "Warning", "ApprovalRequired", plan.message)
        return (
            Observation(injection_state=plan.state, injection_message=plan.message, **base),
            False,
            None,
        )
    if plan.state == "rollout-stalled":
        if previous.get("state") == "injected":
            # The person's own rollout stalled, long after the sidecar went in: theirs to fix.
            return (
                Observation(
                    injection_state="waiting-for-rollout", injection_message=plan.message, **base
                ),
                False,
                None,
            )
        undone, finished = await _undo(raw, ns, target.kind, target.name, target.service)
        if not finished:
            raise kopf.TemporaryError(
                f"undoing the stalled injection: {undone}", delay=RETRY_SECONDS
            )
        message = (
            f"{plan.message}. The injection was undone ({undone}). See `kubectl describe "
            f"{target.kind.lower()} {target.name} -n {ns}` for the pods that did not become ready; "
            f"once fixed, `kubectl annotate om {model.name} -n {ns} "
            f"{RETRY_INJECTION_ANNOTATION}=$(date +%s) --overwrite` injects again (so does a "
            "spec change)"
        )
        _event(raw, "Warning", "RolloutStalled", message)
        return (
            Observation(injection_state="stalled", injection_message=message, **base),
            False,
            None,
        )
    if STATE.settings.injection == "webhook" and plan.deployment_patch is not None:
        # The admission webhook changes the pod template; the operator only repoints.
        labels = (deployment.get("metadata") or {}).get("labels") or {}
        how = (
            "" if labels.get(INJECT_LABEL) == model.name
            else f": label it {INJECT_LABEL}={model.name} (the webhook only sees workloads "
            "with that label; an annotation is not enough)"
        )  # fmt: skip
        waiting = Observation(
            injection_state="injecting",
            injection_message=f"waiting for the admission webhook to inject {kind} {name}{how}",
            **base,
        )
        return waiting, False, queued
    if plan.deployment_patch is not None and not template_allowed:
        bypassed_obs = Observation(injection_state="bypassed", injection_message=bypassed, **base)
        return bypassed_obs, False, None
    if plan.service_patch is not None:
        await api.merge_patch(path("Service", ns, target.service), plan.service_patch)
        _event(raw, "Normal", "ServiceRepointed", plan.message)
    if plan.deployment_patch is not None:
        await api.merge_patch(path(kind, ns, name), plan.deployment_patch)
        _event(raw, "Normal", "SidecarInjecting", plan.message)
    patched = plan.deployment_patch is not None
    if patched or plan.service_patch is not None:
        # Re-plan on fresh objects next time round: one step per pass.
        step = Observation(injection_state="injecting", injection_message=plan.message, **base)
        return step, patched, queued
    if plan.state != "injected":
        return (
            Observation(injection_state=plan.state, injection_message=plan.message, **base),
            False,
            queued,
        )
    available = await _detector_available(ns, model.name)
    done = Observation(
        injection_state="injected",
        injection_message=plan.message + (f"; {queued}" if queued else ""),
        detector_available=available,
        **base,
    )
    return done, False, queued


async def _template_holder(
    kind: str, ns: str, workload: dict[str, Any] | None
) -> tuple[str, str, dict[str, Any] | None, dict[str, Any] | None]:
    """Where the target's pod template lives: (kind, name, the object as read, the Rollout
    that reads it through spec.workloadRef or None). The workload itself, but for an Argo
    Rollout with spec.workloadRef: the Deployment it names (`injection.workload_ref`)."""
    name = str(((workload or {}).get("metadata") or {}).get("name") or "")
    ref = injection.workload_ref(workload) if workload is not None else None
    if ref is None:
        return kind, name, workload, None
    return "Deployment", ref, await kube().get(path("Deployment", ns, ref)), workload


def _refused(
    raw: dict[str, Any],
    exc: injection.InjectionError,
    base: dict[str, Any],
    previous: Mapping[str, Any],
) -> Observation:
    """The target refused (the Ready reason says why), with a Warning Event when new."""
    if previous.get("message") != str(exc):
        _event(raw, "Warning", exc.reason, str(exc))
    return Observation(
        injection_state="error", injection_message=str(exc), injection_reason=exc.reason, **base
    )


async def _inject_logger(
    raw: dict[str, Any], model: ObservedModel, base: dict[str, Any]
) -> tuple[Observation, bool, str | None]:
    """An InferenceService: its own payload logger pointed at the detector (kserve.py)."""
    api = kube()
    ns, name = model.namespace, model.spec.target.name
    isvc = await api.get(path("InferenceService", ns, name))
    base = {**base, "target": targets.resolved(model, isvc)}
    if isvc is None:
        missing = f"InferenceService {ns}/{name} not found; retrying"
        return Observation(target_missing=missing, **base), False, None
    previous = (raw.get("status") or {}).get("injection") or {}
    try:
        plan = kserve.plan_logger(isvc, model, STATE.settings.detector_port)
    except injection.InjectionError as exc:
        return _refused(raw, exc, base, previous), False, None
    if plan.patch is not None:
        await api.merge_patch(path("InferenceService", ns, name), plan.patch)
        _event(raw, "Normal", "LoggerConfigured", plan.message)
        step = Observation(injection_state="injecting", injection_message=plan.message, **base)
        return step, True, None
    available = await _detector_available(ns, model.name)
    done = Observation(
        injection_state="injected",
        injection_message=plan.message,
        detector_available=available,
        **base,
    )
    return done, False, None


async def _check_logger(raw: dict[str, Any], model: ObservedModel, patch: kopf.Patch) -> None:
    """The injection check of an InferenceService: its logger still sends to the detector?"""
    api = kube()
    ns, name = model.namespace, model.spec.target.name
    try:
        async with _injection_lock(ns, model.name):
            isvc = await api.get(path("InferenceService", ns, name))
            if isvc is None:
                return
            try:
                plan = kserve.plan_logger(isvc, model, STATE.settings.detector_port)
            except injection.InjectionError:
                return  # the reconcile reports it
            if plan.patch is None:
                return
            await api.merge_patch(path("InferenceService", ns, name), plan.patch)
    except (KubeError, aiohttp.ClientError, TimeoutError) as exc:
        raise kopf.TemporaryError(f"API: {exc}", delay=api_backoff(0)) from exc
    _event(
        raw,
        "Warning",
        "LoggerRestored",
        f"InferenceService {ns}/{name}: spec.predictor.logger no longer sent to the detector "
        f"(another writer changed it); {plan.message}",
    )


async def _undo_logger(raw: dict[str, Any], ns: str, name: str) -> tuple[str, bool]:
    """Put an InferenceService's logger back as it was (`kserve.plan_logger_removal`)."""
    api = kube()
    for _step in range(3):
        isvc = _going_away(await api.get(path("InferenceService", ns, name)))
        plan = kserve.plan_logger_removal(isvc)
        if plan.patch is None:
            return "nothing was left to undo", True
        try:
            await api.merge_patch(path("InferenceService", ns, name), plan.patch)
        except KubeError as exc:
            if exc.status in (404, 409):
                continue
            raise
        _event(raw, "Normal", "LoggerRestored", plan.message)
        return plan.message, True
    return "the InferenceService kept changing", False


# --------------------------------------------------------------------------- the injection check


def _recent(stamps: list[Any], now: datetime) -> list[str]:
    """The timestamps within the repair window."""
    out = []
    for stamp in stamps:
        when = parse_time(str(stamp))
        if when is None:
            continue
        if (now - when).total_seconds() < REPAIR_WINDOW_SECONDS:
            out.append(str(stamp))
    return out


def _model_container(deployment: dict[str, Any], model: ObservedModel) -> str:
    """The container the sidecar stands in front of (the record's, else the spec's)."""
    try:
        record = injection.read_record(deployment)
    except injection.InjectionError:
        record = None
    if record is not None:
        return record.container
    if model.spec.target.container:
        return model.spec.target.container
    template = (deployment.get("spec") or {}).get("template") or {}
    names = [str(c.get("name")) for c in (template.get("spec") or {}).get("containers") or []]
    return next((n for n in names if n != SIDECAR_CONTAINER), "")


@kopf.timer(GROUP, VERSION, PLURAL, interval=INJECTION_CHECK_SECONDS)
async def check_injection(body: kopf.Body, patch: kopf.Patch, **kwargs: Any) -> None:
    """Is the traffic still passing the sidecar? If not: Service first, then re-inject.

    The watch-fed caches answer while all is well (no API request); the objects are read
    from the API, fresh, only when the cache shows a bypass or the state is not settled.
    """
    raw = dict(body)
    meta = raw.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        return
    name, namespace = str(meta.get("name")), str(meta.get("namespace") or "default")
    base = _observation_base(raw)
    injection_status = (raw.get("status") or {}).get("injection") or {}
    state = injection_status.get("state")
    if state not in ("injected", "bypassed") and base["bypass"] is None:
        return  # the reconcile handler is at it (or the spec is invalid)
    try:
        model = parse_observed_model(raw)
    except SpecError:
        return
    ns, target = model.namespace, model.spec.target
    if target.kind == "InferenceService":
        await _check_logger(raw, model, patch)
        return
    if state == "injected" and base["bypass"] is None:
        cached = cache.lists(kwargs, ns)
        seen = cache.named(cached.get(target.kind) or [], target.name)
        ref = _workload_ref_or_none(seen)
        if ref is not None:  # an Argo Rollout's spec.workloadRef: the Deployment's template
            seen = cache.named(cached["Deployment"], ref)
        routed = cache.named(cached["Service"], target.service)
        if (
            seen is not None
            and routed is not None
            and traffic.assess(
                deployment=seen, service=routed, model_container=_model_container(seen, model)
            )
            is None
        ):
            return  # all is well, as the watches last saw it
    api = kube()
    stored = list(injection_status.get("repairs") or [])
    async with _injection_lock(namespace, name):
        try:
            workload = await api.get(path(target.kind, ns, target.name))
            if _workload_ref_or_none(workload) == "":
                return  # a workloadRef the reconcile handler refuses
            _kind, _name, deployment, _rollout = await _template_holder(target.kind, ns, workload)
            service = await api.get(path("Service", ns, target.service))
            if deployment is None or service is None:
                return  # the reconcile handler reports missing targets
            bypass = traffic.assess(
                deployment=deployment,
                service=service,
                model_container=_model_container(deployment, model),
            )
            if bypass is None and state == "injected":
                if base["bypass"] is not None:
                    obs = await _inject_state(raw, model, {**base, "bypass": None})
                    _write_check_status(patch, raw, obs)
                    _event(raw, "Normal", "ThroughSidecar", "traffic passes the sidecar again")
                return  # all is well: nothing written
            now = datetime.now(UTC)
            repairs = _recent(stored, now)
            if bypass is not None and base["bypass"] is None:
                log.warning("ObservedModel %s/%s bypassed: %s", namespace, name, bypass.message)
                _event(raw, "Warning", "Bypassed", bypass.message)
            if bypass is not None:
                base = {**base, "bypass": (bypass.reason, bypass.message)}
            obs, patched, _queued = await _inject(
                raw,
                model,
                base,
                template_allowed=len(repairs) < MAX_REPAIRS,
                bypassed=_given_up(bypass, len(repairs)),
            )
        except (KubeError, aiohttp.ClientError, TimeoutError) as exc:
            raise kopf.TemporaryError(f"API: {exc}", delay=api_backoff(0)) from exc
    if patched:
        # At most the CRD's maxItems: more than that is far past any sensible limit anyway.
        repairs = [*repairs, format_time(now)][-16:]
        _event(raw, "Normal", "SidecarReinjected", obs.injection_message)
    if obs.injection_state == "injected" and bypass is None:
        obs = replace(obs, bypass=None)
        _event(raw, "Normal", "ThroughSidecar", "traffic passes the sidecar again")
    new = _write_check_status(patch, raw, obs, repairs=None if repairs == stored else repairs)
    if new["message"] != (raw.get("status") or {}).get("message"):
        log.info("ObservedModel %s/%s injection check: %s", namespace, name, new["message"])
    if obs.injection_state not in ("injected", "bypassed", "error"):
        raise _Waiting(new["message"], delay=RETRY_SECONDS)


def _workload_ref_or_none(workload: Mapping[str, Any] | None) -> str | None:
    """The Deployment a Rollout's spec.workloadRef names, None without one, "" for one that
    the reconcile handler refuses (`injection.workload_ref`)."""
    if workload is None:
        return None
    try:
        return injection.workload_ref(workload)
    except injection.InjectionError:
        return ""


def _given_up(bypass: traffic.Bypass | None, repairs: int) -> str:
    what = bypass.message if bypass is not None else "the sidecar is not in the traffic's path"
    return (
        f"{what}. mlwarden put the sidecar back {repairs} times within the last hour and it "
        "was removed again: it stopped re-injecting, and keeps the Service on the model. Make "
        "the tool that writes the Deployment leave the sidecar alone (Argo CD "
        'ignoreDifferences, Flux: see docs/operator.md, "GitOps, rollout undo and other '
        'writers of the Deployment") or use webhook injection; mlwarden tries again an hour '
        "after the last repair, or when the ObservedModel's spec changes"
    )


def _write_check_status(
    patch: kopf.Patch, raw: dict[str, Any], obs: Observation, *, repairs: list[str] | None = None
) -> dict[str, Any]:
    """Phase and conditions after a check (only what changed), the phase's Event, the count."""
    old_phase = (raw.get("status") or {}).get("phase")
    new = _write_status(patch, raw, obs, only_changes=True)
    if repairs is not None:
        patch.status["injection"] = {**new["injection"], "repairs": repairs or None}
    meta = raw.get("metadata") or {}
    METRICS.set_phase(f"{meta.get('namespace')}/{meta.get('name')}", new["phase"])
    if new["phase"] != old_phase:
        kind = "Warning" if new["phase"] in ("Failed", "Degraded") else "Normal"
        _event(raw, kind, f"Phase{new['phase']}", new["message"])
    return new


async def _undo(
    raw: dict[str, Any], ns: str, kind: str, dep_name: str, svc_name: str | None
) -> tuple[str, bool]:
    """Undo the injection exactly, the Service first; what was done, in words, and whether
    the undo is finished.

    A target that is gone or being deleted (its namespace terminating, a person or a GitOps
    prune deleting it) is left alone: nothing to restore on it, and writing to it would only
    roll a dying Deployment. A patch answered 404 (gone meanwhile) or 409 (written meanwhile)
    is read again, not retried blindly, so the finalizer never holds the ObservedModel, or its
    namespace, on objects that are going away. Other API errors are raised.
    """
    api = kube()
    steps: list[str] = []
    if kind == "InferenceService":
        return await _undo_logger(raw, ns, dep_name)
    # An Argo Rollout's spec.workloadRef: the sidecar is in the referenced Deployment's template.
    ref = None
    if kind == "Rollout":
        ref = _workload_ref_or_none(_going_away(await api.get(path(kind, ns, dep_name))))
        if ref is None:  # the Rollout gone first (deleted, pruned): where we last saw the template
            ref = await _recorded_template(raw, ns)
    if ref:
        kind, dep_name = "Deployment", ref
    for _step in range(6):
        deployment = _going_away(await api.get(path(kind, ns, dep_name)))
        service = _going_away(await api.get(path("Service", ns, svc_name))) if svc_name else None
        plan = injection.plan_removal(deployment=deployment, service=service)
        if plan.service_patch is None and plan.deployment_patch is None:
            return ", then ".join(steps) or "nothing was left to undo", True
        try:
            if plan.service_patch is not None and service is not None and svc_name:
                await api.merge_patch(path("Service", ns, svc_name), plan.service_patch)
                steps.append("Service back to its ports")
            elif plan.deployment_patch is not None and deployment is not None:
                await api.merge_patch(path(kind, ns, dep_name), plan.deployment_patch)
                steps.append("sidecar removed from the pod template")
        except KubeError as exc:
            if exc.status in (404, 409):
                continue  # gone, or written meanwhile: read it again
            raise
        _event(raw, "Normal", "SidecarRemoved", plan.message)
    return ", then ".join(steps) or "nothing was undone yet", False


async def _recorded_template(raw: dict[str, Any], ns: str) -> str | None:
    """The Deployment that held a workloadRef Rollout's template when the operator last looked
    (`status.target.template`), when it still carries this ObservedModel's injection record:
    a Rollout deleted before its ObservedModel (a GitOps prune deletes both at once) no longer
    names it, and the sidecar must not stay in that template (with `scaleDown: onsuccess` the
    Deployment scales back up once the Rollout is gone)."""
    held = str(((raw.get("status") or {}).get("target") or {}).get("template") or "")
    kind, _, name = held.partition("/")
    if kind != "Deployment" or not name:
        return None
    deployment = _going_away(await kube().get(path("Deployment", ns, name)))
    try:
        record = injection.read_record(deployment) if deployment is not None else None
    except injection.InjectionError:
        record = None
    model = str((raw.get("metadata") or {}).get("name"))
    return name if record is not None and record.model == model else None


def _going_away(obj: dict[str, Any] | None) -> dict[str, Any] | None:
    """The object, or None when it is gone or being deleted (nothing to restore on it)."""
    if obj is None or (obj.get("metadata") or {}).get("deletionTimestamp"):
        return None
    return obj


@kopf.on.update(GROUP, VERSION, PLURAL, field="metadata.annotations")
async def rebaseline(body: kopf.Body, old: Any, new: Any, **_: Any) -> None:
    """A new rebaseline token: roll the detector onto it (its manifest carries the token)."""
    before = (old or {}).get(REBASELINE_ANNOTATION)
    after = (new or {}).get(REBASELINE_ANNOTATION)
    if before == after:
        return
    raw = dict(body)
    try:
        model = parse_observed_model(raw)
    except SpecError:
        return  # the spec handler reports it; nothing to roll
    if await _ensure_detector(raw, model) is not None:
        return  # a name conflict: the reconcile reports it
    _event(
        raw,
        "Normal",
        "RebaselineRequested",
        f"{REBASELINE_ANNOTATION} is {after!r} (was {before!r}): the detector restarts and "
        f"warms up a new reference from the next {model.spec.reference.size} records",
    )


# --------------------------------------------------------------------------- detector reports


@kopf.on.field(GROUP, VERSION, PLURAL, field="status.alerts")
async def alerts_changed(
    body: kopf.Body, old: Any, new: Any, patch: kopf.Patch, retry: int = 0, **kwargs: Any
) -> None:
    raw = dict(body)
    if retry == 0:  # a retried pass (below) has told these already
        for kind, reason, message in alert_events(old, new, _revision_names(raw, new, kwargs)):
            _event(raw, kind, reason, message)
        fired = {(a.get("type"), a.get("feature"), a.get("test")) for a in new or ()}
        gone = {(a.get("type"), a.get("feature"), a.get("test")) for a in old or ()}
        for alert_type, _, _ in fired - gone:
            METRICS.alert_events.labels(str(alert_type), "fired").inc()
        for alert_type, _, _ in gone - fired:
            METRICS.alert_events.labels(str(alert_type), "resolved").inc()
    if not await _respond(raw, patch, kwargs, only_changes=False):
        # An API error ended the pass: the diagnosis in status is still the one for the
        # alerts before. Again soon, backing off; the timer may be far off, or not run at
        # all once the alerts have resolved.
        raise kopf.TemporaryError(
            "the diagnosis and reaction pass met an API error; retrying",
            delay=api_backoff(retry),
        )


def _revision_names(raw: dict[str, Any], alerts: Any, indexes: Mapping[str, Any]) -> dict[str, str]:
    """The alerts' revisions (pod-template-hashes) in words, from the cached ReplicaSets."""
    try:
        model = parse_observed_model(raw)
    except SpecError:
        return {}
    replicasets = revisions.history(cache.lists(indexes, model.namespace))
    wanted = {
        str(a.get(key))
        for a in alerts or ()
        if isinstance(a, Mapping)
        for key in ("modelRevision", "baselineRevision")
        if a.get(key)
    }
    return {
        revision: revisions.resolve(
            revision,
            replicasets,
            deployments=revisions.owners(model),
            container=model.spec.target.container,
        ).label
        for revision in wanted
    }


@kopf.timer(GROUP, VERSION, PLURAL, interval=RESPOND_INTERVAL)
async def respond_again(body: kopf.Body, patch: kopf.Patch, **kwargs: Any) -> None:
    """Diagnose and react again while there is something to do (a no-op otherwise)."""
    if not respond.has_work(body.get("status")):
        return
    await _respond(dict(body), patch, kwargs, only_changes=True)


@kopf.on.field(GROUP, VERSION, PLURAL, field="status.detector.reference")
async def reference_changed(
    body: kopf.Body, old: Any, new: Any, patch: kopf.Patch, **_: Any
) -> None:
    raw = dict(body)
    if new and (new or {}).get("id") and (old or {}).get("id") != new.get("id"):
        _event(
            raw,
            "Normal",
            "ReferenceReady",
            f"the detector's reference is {new['id']} (since {new.get('since')})",
        )
    await _refresh(raw, patch)


@kopf.on.field(GROUP, VERSION, PLURAL, field="status.detector.revisions")
async def revisions_changed(
    body: kopf.Body, old: Any, new: Any, patch: kopf.Patch, **kwargs: Any
) -> None:
    """The revisions the detector sees, as people know them (`status.revisions`), Events for
    a new revision set and for a candidate that passed, and the Promotable condition."""
    raw = dict(body)
    try:
        model = parse_observed_model(raw)
    except SpecError:
        return
    status = dict(raw.get("status") or {})
    detector_revisions = (status.get("detector") or {}).get("revisions")
    lists = cache.lists(kwargs, model.namespace)
    shown = revisions.status_revisions(model, detector_revisions, lists)
    if status.get("revisions") != shown:
        patch.status["revisions"] = shown
    for kind, reason, message in revisions.events(old, new, shown):
        _event(raw, kind, reason, message)
    await _refresh({**raw, "status": {**status, "revisions": shown}}, patch)


async def _refresh(raw: dict[str, Any], patch: kopf.Patch) -> None:
    """Recompute phase and conditions after the detector wrote something."""
    base = _observation_base(raw)
    try:
        model = parse_observed_model(raw)
    except SpecError:
        return
    obs = await _inject_state(raw, model, base)
    old_phase = (raw.get("status") or {}).get("phase")
    new = _write_status(patch, raw, obs)
    METRICS.set_phase(f"{raw['metadata']['namespace']}/{raw['metadata']['name']}", new["phase"])
    if new["phase"] != old_phase:
        kind = "Warning" if new["phase"] in ("Failed", "Degraded") else "Normal"
        _event(raw, kind, f"Phase{new['phase']}", new["message"])


async def _respond(
    raw: dict[str, Any], patch: kopf.Patch, indexes: dict[str, Any], *, only_changes: bool
) -> bool:
    """A diagnosis and reaction pass, then phase and conditions (see respond.py).

    When the alerts changed while the pass ran, its diagnosis is for the alerts before: it
    runs again on the object as it is then (a few times at most; the timer does the rest), so
    that the diagnosis in status always names the alerts shown, without waiting for a timer.
    False when an API error ended the pass (logged; the caller decides when to try again).

    `indexes`: the handler's keyword arguments, among them kopf's indexes (cache.py).
    """
    meta = raw.get("metadata") or {}
    name, namespace = str(meta.get("name")), str(meta.get("namespace") or "default")
    lock = STATE.passes.setdefault((namespace, name), asyncio.Lock())
    async with lock:
        api = kube()
        try:
            fresh = await api.get(path("ObservedModel", namespace, name))
        except (KubeError, aiohttp.ClientError, TimeoutError) as exc:
            log.warning("reading %s/%s for a pass: %s", namespace, name, exc)
            return False
        if fresh is None:
            return True
        for _again in range(PASSES_PER_CHANGE):
            if (fresh.get("metadata") or {}).get("deletionTimestamp"):
                return True
            result = await _one_pass(api, fresh, indexes)
            if result is None:
                return True
            fresh, obs, outcome, old_phase = result
            if outcome is None or only_changes:
                # A timer pass is not followed up: alerts that changed meanwhile start a pass
                # of their own (alerts_changed), so a steady alert costs one read per pass.
                break
            try:
                latest = await api.get(path("ObservedModel", namespace, name))
            except (KubeError, aiohttp.ClientError, TimeoutError):
                latest = None  # the timer checks again (`respond.diagnosis_stale`)
            if latest is None:
                break
            alerts = (latest.get("status") or {}).get("alerts")
            if tuple(respond.alert_keys(alerts)) == outcome.for_alerts:
                break
            log.info(
                "alerts of %s/%s changed during the pass (%s, now %s): diagnosing again",
                namespace, name, list(outcome.for_alerts), respond.alert_keys(alerts),
            )  # fmt: skip
            fresh = latest
        if obs is None:  # not even where the injection stands could be read
            return False
        new = _write_status(patch, fresh, obs, only_changes=only_changes)
    METRICS.set_phase(f"{namespace}/{name}", new["phase"])
    if new["phase"] != old_phase:
        kind = "Warning" if new["phase"] in ("Failed", "Degraded") else "Normal"
        _event(fresh, kind, f"Phase{new['phase']}", new["message"])
    return outcome is not None


async def _one_pass(
    api: Kube, fresh: dict[str, Any], indexes: dict[str, Any]
) -> tuple[dict[str, Any], Observation | None, respond.Outcome | None, Any] | None:
    """One pass on `fresh`: (the status it left, the observation, its outcome, the phase before)."""
    try:
        model = parse_observed_model(fresh)
    except SpecError:
        return None
    base = _observation_base(fresh)
    old_phase = (fresh.get("status") or {}).get("phase")
    body = fresh
    lists = cache.lists(indexes, model.namespace)
    try:
        obs = await _inject_state(fresh, model, base, cached=lists["Deployment"])
    except (KubeError, aiohttp.ClientError, TimeoutError) as exc:
        log.warning("diagnosis and reactions for %s/%s: %s", model.namespace, model.name, exc)
        return fresh, None, None, old_phase
    try:
        outcome = await respond.respond(
            api=api,
            raw=fresh,
            lists=lists,
            model=model,
            obs=obs,
            now=datetime.now(UTC),
            event=lambda kind, reason, message: _event(body, kind, reason, message),
            others=incidents.peers(indexes, model.namespace),
        )
    except (KubeError, aiohttp.ClientError, TimeoutError) as exc:
        # Nothing half-done is lost: what was recorded is completed by the next pass.
        log.warning("diagnosis and reactions for %s/%s: %s", model.namespace, model.name, exc)
        return fresh, obs, None, old_phase
    fresh = {**fresh, "status": outcome.status}
    obs = replace(
        obs,
        top_suspect=outcome.top_suspect,
        last_action=outcome.last_action or obs.last_action,
        reacting=outcome.reacting,
    )
    return fresh, obs, outcome, old_phase


async def _inject_state(
    raw: dict[str, Any],
    model: ObservedModel,
    base: dict[str, Any],
    *,
    cached: Sequence[Mapping[str, Any]] = (),
) -> Observation:
    """Where the injection stands, without changing anything (`cached`: Deployments)."""
    injection_status = (raw.get("status") or {}).get("injection") or {}
    state = injection_status.get("state", "pending")
    available = await _detector_available(model.namespace, model.name, cached)
    return Observation(
        injection_state=state,
        injection_message=injection_status.get("message", ""),
        injection_reason=injection_status.get("reason"),
        detector_available=available,
        **base,
    )


# --------------------------------------------------------------------------- deletion


@kopf.on.delete(GROUP, VERSION, PLURAL)
async def remove(body: kopf.Body, **_: Any) -> None:
    """Undo the injection exactly: the Service first, then the pod template.

    A target that is gone or being deleted (its namespace terminating, a person or a GitOps
    prune deleting it) is left alone: nothing to restore on it, and writing to it would only
    roll a dying Deployment. A patch answered 404 (gone meanwhile) or 409 (written meanwhile)
    is read again, not retried blindly, so the finalizer never holds the ObservedModel, or its
    namespace, on objects that are going away.
    """
    raw = dict(body)
    METRICS.set_phase(f"{body.metadata.namespace}/{body.metadata.name}", None)
    STATE.passes.pop((str(body.metadata.namespace), str(body.metadata.name)), None)
    spec = raw.get("spec") or {}
    target = spec.get("target") or {}
    ns = str(body.metadata.namespace or "default")
    kind = str(target.get("kind") or "Deployment")
    dep_name = target.get("name") or target.get("deployment")
    svc_name = None if kind == "InferenceService" else target.get("service") or dep_name
    _end_upgrade_turn((ns, str(body.metadata.name)))
    if not dep_name or kind not in (*injection.WORKLOAD_KINDS, "InferenceService"):
        return
    try:
        undone, finished = await _undo(raw, ns, kind, dep_name, svc_name)
    except KubeError as exc:
        raise kopf.TemporaryError(f"undoing the injection: {exc}", delay=RETRY_SECONDS) from exc
    if not finished:
        raise kopf.TemporaryError(
            f"undoing the injection: not done yet ({undone})", delay=RETRY_SECONDS
        )
