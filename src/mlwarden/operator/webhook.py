"""Injection by a mutating admission webhook, for teams that do not want the operator editing
their workloads (`MLWARDEN_INJECTION=webhook`).

A Deployment, StatefulSet or Argo Rollout opts in with the LABEL `mlwarden.io/inject:
<ObservedModel name>` (same namespace). It is a label, not an annotation, because the webhook
configuration's `objectSelector` can only select on labels: the API server calls the operator
for opted-in workloads only, never for every one in the cluster. On CREATE and UPDATE of such
a workload the webhook adds the sidecar to its pod template as it is admitted, with the same
plan the patch mode uses (`injection.plan_injection`), so both modes produce the same pods:
the revision variable reads the label the kind's controller puts on its pods
(`pod-template-hash`, a StatefulSet's `controller-revision-hash`, a Rollout's
`rollouts-pod-template-hash`). The workload is mutated, not its pods: a Pod webhook would
inject pods the controller did not template, which a rollout, a revision and an undo would
not know of. For an Argo Rollout with `spec.workloadRef` the template is the referenced
Deployment's, so that Deployment carries the label and is mutated (the Rollout is read, one
GET, to confirm it references this Deployment). The operator still creates the detector
and, for a Service that targets a port number, repoints it once the rollout is complete.
The three kinds share one handler id, and so one URL path; the chart's rules list them.

Who owns what:

- The chart owns the MutatingWebhookConfiguration (templates/webhook.yaml). It is static:
  its objectSelector, a namespaceSelector (never kube-system or the operator's namespace;
  only the watched namespaces), a 5 s timeout, failurePolicy Ignore, sideEffects None and
  the caBundle (or cert-manager's CA injection) are reviewed with the rest of the release.
  kopf's configuration manager is switched off (`settings.admission.managed = None`): it
  writes no namespaceSelector, a 30 s timeout and failurePolicy per handler, needs
  cluster-wide write access to mutatingwebhookconfigurations, and would be fought over by
  replicas and by Helm. The operator therefore needs no RBAC on admissionregistration.
- The certificate is one Secret, made by the chart (Helm's genCA, kept across upgrades) or by
  cert-manager, mounted into every replica: the Service may send a review to any replica, and
  all of them must present a certificate the one caBundle trusts. The operator refuses to
  start in webhook mode without `MLWARDEN_WEBHOOK_CERT` and `MLWARDEN_WEBHOOK_KEY`: kopf's
  self-signed fallback needs extra packages and would give each replica its own certificate,
  matching no caBundle. kopf re-reads the files when they change (cert-manager's renewal).

The handler admits unchanged (never refuses) a workload whose ObservedModel is missing,
invalid, targets another workload, or is being deleted (the operator's deletion handler takes
the sidecar out with an update that passes through this webhook, which must not put it back),
and one it cannot review (an API error, reads over 3 s): a handler error would make kopf answer
`allowed: false`, which the API server enforces whatever the failurePolicy.

ObservedModels are read from a kopf index (the operator's watch), not with an API call per
review; a name the index lacks (not yet listed at start-up, or a standby replica under
peering, whose watches are paused) is confirmed with one GET.

Trade-offs against the default (`patch`) mode:

- + The user's manifests stay the source of truth: re-applying them (kubectl, Helm, GitOps)
    does not remove the sidecar, because admission re-adds it; the operator never writes to
    the Deployment.
- - The sidecar appears in the live object but not in git: GitOps tools show a diff unless
    told to ignore the `mlwarden-sidecar` container.
- - A webhook is in the admission path of every opted-in Deployment. It is registered with
    failurePolicy Ignore: if the operator is down or slow (over 5 s), Deployments are
    admitted unchanged (not captured) rather than refused.
- - Removing the ObservedModel takes the sidecar out (the operator's update, which this
    webhook lets through); the label stays on the Deployment and does nothing until an
    ObservedModel of that name exists again.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kopf

from mlwarden.kube import path
from mlwarden.names import INJECT_LABEL, UPGRADE_SIDECAR_ANNOTATION
from mlwarden.operator import injection
from mlwarden.operator.handlers import STATE, kube
from mlwarden.operator.settings import OperatorSettings
from mlwarden.spec import GROUP, PLURAL, VERSION, ObservedModel, SpecError, parse_observed_model

log = logging.getLogger(__name__)

# The handler id, and so the URL path (/mlwarden-inject) the chart's webhook configuration calls.
WEBHOOK_ID = "mlwarden-inject"
# Seconds the handler may spend reading the API, under the webhook's timeout (5 s in the
# chart): past it the Deployment is admitted unchanged, with a log line saying why.
READ_TIMEOUT = 3.0


def server_from_env(env: Mapping[str, str]) -> kopf.WebhookServer:
    """The admission webhook's HTTPS server, from MLWARDEN_WEBHOOK_* (ValueError if unusable)."""
    files = {var: env.get(var, "") for var in ("MLWARDEN_WEBHOOK_CERT", "MLWARDEN_WEBHOOK_KEY")}
    missing = [var for var, value in files.items() if not value]
    if missing:
        raise ValueError(
            f"{' and '.join(missing)} not set: MLWARDEN_INJECTION=webhook serves HTTPS with a "
            "PEM certificate and key that every replica shares and the webhook configuration's "
            "caBundle trusts (the chart mounts them from its Secret, or cert-manager's)"
        )
    for var, value in files.items():
        if not Path(value).is_file():
            raise ValueError(f"{var}: {value} is not a file (is the certificate Secret mounted?)")
    raw_port = env.get("MLWARDEN_WEBHOOK_PORT", "9443")
    try:
        port = int(raw_port)
    except ValueError:
        raise ValueError(f"MLWARDEN_WEBHOOK_PORT: not a port number: {raw_port!r}") from None
    return kopf.WebhookServer(
        addr="0.0.0.0",
        port=port,
        certfile=files["MLWARDEN_WEBHOOK_CERT"],
        pkeyfile=files["MLWARDEN_WEBHOOK_KEY"],
    )


def configure_server(settings: kopf.OperatorSettings, env: Mapping[str, str]) -> None:
    """Serve admission reviews over TLS; the chart, not kopf, owns the webhook configuration."""
    settings.admission.server = server_from_env(env)
    settings.admission.managed = None


@kopf.on.startup()
async def webhook_startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    configure_server(settings, os.environ)


@kopf.index(GROUP, VERSION, PLURAL)
def mlwarden_observed_models(
    namespace: str | None, name: str | None, body: kopf.Body, **_: Any
) -> dict[tuple[str, str], dict[str, Any]]:
    """Every ObservedModel the operator watches, by (namespace, name), as last seen (no status)."""
    kept = {key: body.get(key) for key in ("apiVersion", "kind", "metadata", "spec")}
    return {(str(namespace), str(name)): kept}


@dataclass(frozen=True)
class Admission:
    """What the webhook does to one Deployment: the change to admit it with, or why none."""

    change: dict[str, Any] | None
    reason: str


def admission_patch(
    *,
    deployment: Mapping[str, Any],
    service: Mapping[str, Any],
    model: ObservedModel,
    settings: OperatorSettings,
    upgrade: str | None = None,
    rollout: Mapping[str, Any] | None = None,
) -> dict[str, Any] | None:
    """The part of the workload the webhook changes at admission, or None to admit it as is.

    Only the pod-template step of the injection plan is taken here; a Service switch (a
    numeric targetPort, after the rollout) stays with the operator. A sidecar once injected
    stays as recorded until the ObservedModel asks for an upgrade (`upgrade`, its
    UPGRADE_SIDECAR_ANNOTATION), taken at the next admission. A Recreate Deployment needs no
    approval here: its `mlwarden.io/inject` label is its owner's consent.
    """
    plan = injection.plan_injection(
        deployment=deployment,
        service=service,
        model=model,
        settings=settings,
        upgrade=upgrade,
        approvals=frozenset({injection.approval_id(deployment)}),
        rollout=rollout,
    )
    if plan.deployment_patch is None:
        return None
    patch = dict(plan.deployment_patch)
    # resourceVersion preconditions do not apply to an object being admitted.
    meta = dict(patch.get("metadata") or {})
    meta.pop("resourceVersion", None)
    if meta:
        patch["metadata"] = meta
    else:
        patch.pop("metadata", None)
    return patch


def _where(workload: Mapping[str, Any]) -> str:
    meta = workload.get("metadata") or {}
    return f"{workload.get('kind') or 'Deployment'} {meta.get('namespace')}/{meta.get('name')}"


def model_for(
    deployment: Mapping[str, Any],
    observed_model: Mapping[str, Any] | None,
    *,
    rollout: Mapping[str, Any] | None = None,
) -> ObservedModel | Admission:
    """The ObservedModel to inject for, or the Admission that leaves the workload alone.

    The ObservedModel's target is this workload (its kind and name), or, for a Deployment,
    the Argo Rollout `rollout` (read by the caller) whose spec.workloadRef names it.
    """
    meta = deployment.get("metadata") or {}
    where = _where(deployment)
    name = (meta.get("labels") or {}).get(INJECT_LABEL, "")
    if observed_model is None:
        return Admission(None, f"{where}: no ObservedModel {name!r} ({INJECT_LABEL}); unchanged")
    if (observed_model.get("metadata") or {}).get("deletionTimestamp"):
        return Admission(None, f"{where}: ObservedModel {name!r} is being deleted; unchanged")
    try:
        model = parse_observed_model(observed_model)
    except SpecError:
        # The operator reports the invalid spec on the ObservedModel itself.
        return Admission(None, f"{where}: ObservedModel {name!r} is invalid; unchanged")
    target = model.spec.target
    kind = str(deployment.get("kind") or "Deployment")
    if (target.kind, target.name) == (kind, meta.get("name")):
        return model
    if kind == "Deployment" and rollout is not None and _reads_template_of(rollout, meta):
        return model
    return Admission(
        None,
        f"{where}: ObservedModel {name!r} targets {target.kind} {target.name!r}, not this "
        "one; unchanged",
    )


def _reads_template_of(rollout: Mapping[str, Any], deployment_meta: Mapping[str, Any]) -> bool:
    """The Rollout takes its pod template from this Deployment (spec.workloadRef)."""
    try:
        return injection.workload_ref(rollout) == deployment_meta.get("name")
    except injection.InjectionError:
        return False  # a workloadRef the operator refuses (it says so on the ObservedModel)


def admit(
    *,
    deployment: Mapping[str, Any],
    model: ObservedModel,
    service: Mapping[str, Any] | None,
    settings: OperatorSettings,
    upgrade: str | None = None,
    rollout: Mapping[str, Any] | None = None,
) -> Admission:
    """The Admission of a workload whose ObservedModel is current (see `model_for`);
    `upgrade` is the ObservedModel's UPGRADE_SIDECAR_ANNOTATION, if any; `rollout` the Argo
    Rollout that reads this Deployment's template (spec.workloadRef), if any."""
    where = _where(deployment)
    if service is None:
        return Admission(None, f"{where}: Service {model.spec.target.service!r} not found")
    try:
        change = admission_patch(
            deployment=deployment,
            service=service,
            model=model,
            settings=settings,
            upgrade=upgrade,
            rollout=rollout,
        )
    except injection.InjectionError as exc:
        return Admission(None, f"{where}: not injecting: {exc}")
    if change is None:
        return Admission(None, f"{where}: nothing to change")
    return Admission(change, f"{where}: sidecar injected for ObservedModel {model.name!r}")


def _on_admission(group: str, version: str, plural: str) -> kopf.on.WebhookDecorator:
    """One resource's reviews, all under WEBHOOK_ID (one URL path for the chart's rules)."""
    return kopf.on.mutate(
        group,
        version,
        plural,
        id=WEBHOOK_ID,
        operations=["CREATE", "UPDATE"],
        labels={INJECT_LABEL: kopf.PRESENT},
        ignore_failures=True,
        side_effects=False,
    )


@_on_admission("apps", "v1", "deployments")
@_on_admission("apps", "v1", "statefulsets")
@_on_admission("argoproj.io", "v1alpha1", "rollouts")
async def inject_at_admission(body: kopf.Body, patch: kopf.Patch, **kwargs: Any) -> None:
    # kopf passes each index as a keyword argument named after its function.
    models: kopf.Index[tuple[str, str], dict[str, Any]] = kwargs["mlwarden_observed_models"]
    deployment = dict(body)
    where = _where(deployment)
    # A handler that raises makes kopf answer `allowed: false`, and the API server then
    # REFUSES the Deployment (failurePolicy only covers a webhook that does not answer). The
    # promise is fail-open: whatever goes wrong here, admit the Deployment unchanged.
    try:
        async with asyncio.timeout(READ_TIMEOUT):
            admission = await _admission(deployment, models)
    except Exception as exc:  # see above: never refuse on our own failure
        log.warning("%s: admitted unchanged, the webhook failed: %r", where, exc)
        return
    log.info("%s", admission.reason)
    for key, value in (admission.change or {}).items():
        patch[key] = value


async def _admission(
    deployment: dict[str, Any], models: kopf.Index[tuple[str, str], dict[str, Any]]
) -> Admission:
    meta = deployment.get("metadata") or {}
    namespace = str(meta.get("namespace") or "default")
    name = str((meta.get("labels") or {}).get(INJECT_LABEL, ""))
    api = kube()
    seen = list(models.get((namespace, name), []))
    om = seen[-1] if seen else await api.get(path("ObservedModel", namespace, name))
    target = ((om or {}).get("spec") or {}).get("target") or {}
    rollout = None
    if deployment.get("kind", "Deployment") == "Deployment" and target.get("kind") == "Rollout":
        # Is this the Deployment whose template the target Rollout reads (spec.workloadRef)?
        rollout = await api.get(path("Rollout", namespace, str(target.get("name") or "")))
    found = model_for(deployment, om, rollout=rollout)
    if isinstance(found, Admission):
        return found
    service = await api.get(path("Service", namespace, found.spec.target.service))
    upgrade = ((om or {}).get("metadata") or {}).get("annotations") or {}
    return admit(
        deployment=deployment,
        model=found,
        service=service,
        settings=STATE.settings,
        upgrade=upgrade.get(UPGRADE_SIDECAR_ANNOTATION),
        rollout=rollout,
    )
