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
- deletion (kopf's finalizer on the ObservedModel only): undo the injection
  exactly, Service first. The detector objects go with their owner.

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

from mlwarden.operator import cache, injection, objects, respond
from mlwarden.operator.kube import Conflict, Endpoint, Kube, KubeError, path, path_of
from mlwarden.operator.metrics import METRICS
from mlwarden.operator.settings import GROUP, PLURAL, VERSION, OperatorSettings, detector_name
from mlwarden.operator.status import Observation, alert_events, status_patch
from mlwarden.spec import REBASELINE_ANNOTATION, ObservedModel, SpecError, parse_observed_model

log = logging.getLogger(__name__)

FINALIZER = "mlwarden.io/finalizer"
# Seconds between retries while targets are missing or the injection proceeds a step at a
# time (MLWARDEN_RETRY_SECONDS), and between diagnosis and reaction passes while an alert is
# active or a reaction is Planned or Running (MLWARDEN_RESPOND_INTERVAL). The operator tests
# shorten both; the defaults suit a cluster.
RETRY_SECONDS = float(os.environ.get("MLWARDEN_RETRY_SECONDS") or 5.0)
RESPOND_INTERVAL = float(os.environ.get("MLWARDEN_RESPOND_INTERVAL") or 30.0)
# Objects per page when kopf lists a kind (at start-up, and after a watch expired), so that
# no list returns a whole cluster's Pods in one response (MLWARDEN_LIST_CHUNK_SIZE).
LIST_CHUNK_SIZE = int(os.environ.get("MLWARDEN_LIST_CHUNK_SIZE") or 500)
API_BACKOFF_CAP_SECONDS = 60.0


def api_backoff(retry: int) -> float:
    """Seconds before retrying after an API failure: RETRY_SECONDS doubling, capped."""
    return float(min(RETRY_SECONDS * 2.0 ** min(retry, 16), API_BACKOFF_CAP_SECONDS))


class _State:
    """Process-wide: settings and the API client built from kopf's login."""

    settings: OperatorSettings = OperatorSettings()
    connection: Any = None
    kube: Kube | None = None
    # One diagnosis and reaction pass at a time per ObservedModel (namespace, name).
    passes: dict[tuple[str, str], asyncio.Lock] = {}


STATE = _State()


class _QuietTimer(logging.Filter):
    """Drops kopf's "Timer 'respond_again' succeeded." (INFO, on every run).

    kopf posts INFO logs about an object as Events on it (settings.posting.level), so that
    line would be one Event per ObservedModel per interval while an alert is active. The pass
    posts Events of its own for what it finds and does; failures are still logged and posted.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message == "Timer 'respond_again' succeeded.":
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


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def kube() -> Kube:
    if STATE.kube is None:
        if STATE.connection is None:
            raise kopf.TemporaryError("not logged in to the Kubernetes API yet", delay=1)
        STATE.kube = Kube(Endpoint.from_connection_info(STATE.connection))
    return STATE.kube


# --------------------------------------------------------------------------- lifecycle


# Set by `mlwarden operator --namespace ...` before kopf starts.
NAMESPACED = False


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    STATE.settings = OperatorSettings.from_env()
    port = int(os.environ.get("MLWARDEN_METRICS_PORT", "8081"))
    if port:
        METRICS.serve(port)
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="mlwarden.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="mlwarden.io", key="last-handled-configuration"
    )
    settings.posting.level = logging.INFO
    quiet = logging.getLogger("kopf.objects")
    if not any(isinstance(f, _QuietTimer) for f in quiet.filters):
        quiet.addFilter(_QuietTimer())
    settings.watching.server_timeout = 300
    settings.watching.chunk_size = LIST_CHUNK_SIZE
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
    return info


@kopf.on.cleanup()
async def close(**_: Any) -> None:
    if STATE.kube is not None:
        await STATE.kube.close()
        STATE.kube = None


# --------------------------------------------------------------------------- helpers


async def ensure(obj: dict[str, Any]) -> str:
    """Create the object, or patch what differs; 'created', 'updated' or 'unchanged'."""
    api = kube()
    current = await api.get(path_of(obj))
    if current is None:
        await api.create(obj)
        return "created"
    patch = objects.needs_update(current, obj)
    if patch is None:
        return "unchanged"
    await api.merge_patch(path_of(obj), patch)
    return "updated"


async def create_once(obj: dict[str, Any]) -> bool:
    """Create the object unless it exists (never read, never patched); True when created.

    The Secret is only ever created, never read: the operator needs no right to read any
    Secret, and a token once made is never replaced behind the user's back.
    """
    try:
        await kube().create(obj)
    except Conflict:
        return False
    return True


async def _ensure_detector(raw: dict[str, Any], model: ObservedModel) -> None:
    """The detector's objects, the created-once ones first (the Deployment mounts the Secret)."""
    namespace = model.namespace
    for obj in objects.created_once(raw, secrets.token_urlsafe(32)):
        if await create_once(obj):
            log.info("%s %s/%s created", obj["kind"], namespace, obj["metadata"]["name"])
    for obj in objects.desired_objects(raw, model, STATE.settings):
        outcome = await ensure(obj)
        if outcome != "unchanged":
            log.info("%s %s/%s %s", obj["kind"], namespace, obj["metadata"]["name"], outcome)
    if STATE.settings.network_policy:
        target = await kube().get(path("Deployment", namespace, model.spec.target.deployment))
        selector = ((target or {}).get("spec") or {}).get("selector")
        if selector:  # absent target: the reconcile retries until it exists
            await ensure(objects.detector_network_policy(raw, selector, STATE.settings))


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


def _write_status(
    patch: kopf.Patch, body: dict[str, Any], obs: Observation, *, only_changes: bool = False
) -> dict[str, Any]:
    """Phase and conditions into kopf's patch (`only_changes`: the fields that differ)."""
    previous = dict(body.get("status") or {})
    new = status_patch(obs, previous, now=now_iso())
    for key, value in new.items():
        if not only_changes or previous.get(key) != value:
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
    }


# --------------------------------------------------------------------------- reconcile


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
async def reconcile(body: kopf.Body, patch: kopf.Patch, retry: int = 0, **_: Any) -> None:
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

    try:
        await _ensure_detector(raw, model)
        obs = await _inject(raw, model, base)
    except (KubeError, aiohttp.ClientError, TimeoutError) as exc:
        # A conflict, an API server error or timeout: retry soon, backing off, instead of
        # kopf's flat minute for unexpected errors. Every step is idempotent (ensure, the
        # injection plan), so a retry picks up where this one stopped.
        METRICS.reconciles.labels("retry").inc()
        raise kopf.TemporaryError(f"API: {exc}", delay=api_backoff(retry)) from exc
    new = _write_status(patch, raw, obs)
    METRICS.set_phase(f"{namespace}/{name}", new["phase"])
    result = {"Failed": "failed", "Pending": "pending"}.get(new["phase"], "ok")
    METRICS.reconciles.labels(result).inc()
    if new["phase"] != old_phase:
        kind = "Warning" if new["phase"] in ("Failed", "Degraded") else "Normal"
        _event(raw, kind, f"Phase{new['phase']}", new["message"])
    if new["phase"] == "Failed":
        return
    if new["phase"] == "Pending":
        log.info("ObservedModel %s/%s pending: %s", namespace, name, new["message"])
        raise _Waiting(new["message"], delay=RETRY_SECONDS)
    log.info("ObservedModel %s/%s reconciled: %s", namespace, name, new["phase"])


async def _inject(raw: dict[str, Any], model: ObservedModel, base: dict[str, Any]) -> Observation:
    """One safe injection step; the observation of where it stands."""
    api = kube()
    ns, target = model.namespace, model.spec.target
    deployment = await api.get(path("Deployment", ns, target.deployment))
    service = await api.get(path("Service", ns, target.service))
    missing = [
        f"Deployment {ns}/{target.deployment}" if deployment is None else None,
        f"Service {ns}/{target.service}" if service is None else None,
    ]
    if any(missing):
        what = " and ".join(m for m in missing if m)
        return Observation(target_missing=f"{what} not found; retrying", **base)
    assert deployment is not None and service is not None
    try:
        plan = injection.plan_injection(
            deployment=deployment, service=service, model=model, settings=STATE.settings
        )
    except injection.InjectionError as exc:
        return Observation(injection_state="error", injection_message=str(exc), **base)
    if STATE.settings.injection == "webhook" and plan.deployment_patch is not None:
        # The admission webhook changes the pod template; the operator only repoints.
        return Observation(
            injection_state="injecting",
            injection_message=(
                f"waiting for the admission webhook to inject {model.spec.target.deployment}"
            ),
            **base,
        )
    if plan.service_patch is not None:
        await api.merge_patch(path("Service", ns, target.service), plan.service_patch)
        _event(raw, "Normal", "ServiceRepointed", plan.message)
    if plan.deployment_patch is not None:
        await api.merge_patch(path("Deployment", ns, target.deployment), plan.deployment_patch)
        _event(raw, "Normal", "SidecarInjecting", plan.message)
    if plan.deployment_patch is not None or plan.service_patch is not None:
        # Re-plan on fresh objects next time round: one step per pass.
        return Observation(injection_state="injecting", injection_message=plan.message, **base)
    if plan.state != "injected":
        return Observation(injection_state=plan.state, injection_message=plan.message, **base)
    available = await _detector_available(ns, model.name)
    return Observation(
        injection_state="injected",
        injection_message=plan.message,
        detector_available=available,
        **base,
    )


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
    await _ensure_detector(raw, model)
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
    body: kopf.Body, old: Any, new: Any, patch: kopf.Patch, **kwargs: Any
) -> None:
    raw = dict(body)
    for kind, reason, message in alert_events(old, new):
        _event(raw, kind, reason, message)
    fired = {(a.get("type"), a.get("feature"), a.get("test")) for a in new or ()}
    gone = {(a.get("type"), a.get("feature"), a.get("test")) for a in old or ()}
    for alert_type, _, _ in fired - gone:
        METRICS.alert_events.labels(str(alert_type), "fired").inc()
    for alert_type, _, _ in gone - fired:
        METRICS.alert_events.labels(str(alert_type), "resolved").inc()
    await _respond(raw, patch, kwargs, only_changes=False)


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
) -> None:
    """A diagnosis and reaction pass, then phase and conditions (see respond.py).

    `indexes`: the handler's keyword arguments, among them kopf's indexes (cache.py).
    """
    meta = raw.get("metadata") or {}
    name, namespace = str(meta.get("name")), str(meta.get("namespace") or "default")
    lock = STATE.passes.setdefault((namespace, name), asyncio.Lock())
    async with lock:
        api = kube()
        fresh = await api.get(path("ObservedModel", namespace, name))
        if fresh is None or (fresh.get("metadata") or {}).get("deletionTimestamp"):
            return
        body = fresh
        try:
            model = parse_observed_model(fresh)
        except SpecError:
            return
        base = _observation_base(fresh)
        lists = cache.lists(indexes, namespace)
        obs = await _inject_state(fresh, model, base, cached=lists["Deployment"])
        old_phase = (fresh.get("status") or {}).get("phase")
        try:
            outcome = await respond.respond(
                api=api,
                raw=fresh,
                lists=lists,
                model=model,
                obs=obs,
                now=datetime.now(UTC),
                event=lambda kind, reason, message: _event(body, kind, reason, message),
            )
        except (KubeError, aiohttp.ClientError, TimeoutError) as exc:
            # Nothing half-done is lost: what was recorded is completed by the next pass.
            log.warning("diagnosis and reactions for %s/%s: %s", namespace, name, exc)
            outcome = None
        if outcome is not None:
            fresh = {**fresh, "status": outcome.status}
            obs = replace(
                obs,
                top_suspect=outcome.top_suspect,
                last_action=outcome.last_action or obs.last_action,
                reacting=outcome.reacting,
            )
        new = _write_status(patch, fresh, obs, only_changes=only_changes)
    METRICS.set_phase(f"{namespace}/{name}", new["phase"])
    if new["phase"] != old_phase:
        kind = "Warning" if new["phase"] in ("Failed", "Degraded") else "Normal"
        _event(fresh, kind, f"Phase{new['phase']}", new["message"])


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
        detector_available=available,
        **base,
    )


# --------------------------------------------------------------------------- deletion


@kopf.on.delete(GROUP, VERSION, PLURAL)
async def remove(body: kopf.Body, **_: Any) -> None:
    """Undo the injection exactly: the Service first, then the pod template."""
    raw = dict(body)
    METRICS.set_phase(f"{body.metadata.namespace}/{body.metadata.name}", None)
    STATE.passes.pop((str(body.metadata.namespace), str(body.metadata.name)), None)
    api = kube()
    spec = raw.get("spec") or {}
    target = spec.get("target") or {}
    ns = str(body.metadata.namespace or "default")
    dep_name = target.get("deployment")
    svc_name = target.get("service") or dep_name
    if not dep_name:
        return
    for _step in range(4):
        deployment = await api.get(path("Deployment", ns, dep_name))
        service = await api.get(path("Service", ns, svc_name)) if svc_name else None
        plan = injection.plan_removal(deployment=deployment, service=service)
        if plan.service_patch is None and plan.deployment_patch is None:
            break
        try:
            if plan.service_patch is not None and service is not None:
                await api.merge_patch(path("Service", ns, svc_name), plan.service_patch)
            if plan.deployment_patch is not None and deployment is not None:
                await api.merge_patch(path("Deployment", ns, dep_name), plan.deployment_patch)
        except KubeError as exc:
            raise kopf.TemporaryError(f"undoing the injection: {exc}", delay=RETRY_SECONDS) from exc
        _event(raw, "Normal", "SidecarRemoved", plan.message)
