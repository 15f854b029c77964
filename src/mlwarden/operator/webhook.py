"""Injection by a mutating admission webhook, for teams that do not want the operator editing
their Deployments (`MLWARDEN_INJECTION=webhook`).

A Deployment opts in with the annotation `mlwarden.io/inject: <ObservedModel name>` (same
namespace). On every CREATE and UPDATE of such a Deployment the webhook adds the sidecar to
the pod template as it is admitted, with the same plan the patch mode uses
(`injection.plan_injection`), so both modes produce the same pods. The operator still creates
the detector and, for a Service that targets a port number, repoints it once the rollout is
complete.

Trade-offs against the default (`patch`) mode:

- + The user's manifests stay the source of truth: re-applying them (kubectl, Helm, GitOps)
    does not remove the sidecar, because admission re-adds it; the operator never writes to
    the Deployment.
- - The sidecar appears in the live object but not in git: GitOps tools show a diff unless
    told to ignore the `mlwarden-sidecar` container.
- - A webhook is in the admission path of every opted-in Deployment. It is registered with
    failurePolicy Ignore (`ignore_failures=True`): if the operator is down, Deployments are
    admitted unchanged (not captured) rather than refused.
- - It needs a TLS endpoint the API server can reach (kopf's WebhookServer; the chart
    exposes it) and RBAC on mutatingwebhookconfigurations.
- - Removing the ObservedModel does not strip the sidecar from running pods until the
    Deployment is next updated (remove the annotation and re-apply).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import kopf

from mlwarden.operator import injection
from mlwarden.operator.handlers import STATE, kube
from mlwarden.operator.kube import path
from mlwarden.operator.settings import UPGRADE_SIDECAR_ANNOTATION, OperatorSettings
from mlwarden.spec import ObservedModel, SpecError, parse_observed_model

log = logging.getLogger(__name__)

INJECT_ANNOTATION = "mlwarden.io/inject"


def admission_patch(
    *,
    deployment: Mapping[str, Any],
    service: Mapping[str, Any],
    model: ObservedModel,
    settings: OperatorSettings,
    upgrade: str | None = None,
) -> dict[str, Any] | None:
    """The part of the Deployment the webhook changes at admission, or None to admit it as is.

    Only the pod-template step of the injection plan is taken here; a Service switch (a
    numeric targetPort, after the rollout) stays with the operator. A sidecar once injected
    stays as recorded until the ObservedModel asks for an upgrade (`upgrade`, its
    UPGRADE_SIDECAR_ANNOTATION), taken at the next admission. A Recreate Deployment needs no
    approval here: its `mlwarden.io/inject` annotation is its owner's consent.
    """
    plan = injection.plan_injection(
        deployment=deployment,
        service=service,
        model=model,
        settings=settings,
        upgrade=upgrade,
        approvals=frozenset({injection.approval_id(deployment)}),
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


def configure_server(settings: kopf.OperatorSettings) -> None:
    """Serve admission reviews over TLS; kopf keeps the MutatingWebhookConfiguration in sync."""
    settings.admission.server = kopf.WebhookServer(
        addr="0.0.0.0",
        port=int(os.environ.get("MLWARDEN_WEBHOOK_PORT", "9443")),
        host=os.environ.get("MLWARDEN_WEBHOOK_HOST"),
        certfile=os.environ.get("MLWARDEN_WEBHOOK_CERT") or None,
        pkeyfile=os.environ.get("MLWARDEN_WEBHOOK_KEY") or None,
    )
    settings.admission.managed = "mlwarden.io"


@kopf.on.startup()
async def webhook_startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    configure_server(settings)


@kopf.on.mutate(
    "apps",
    "v1",
    "deployments",
    id="mlwarden-inject",
    operations=["CREATE", "UPDATE"],
    annotations={INJECT_ANNOTATION: kopf.PRESENT},
    ignore_failures=True,
    side_effects=False,
)
async def inject_at_admission(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    deployment = dict(body)
    meta = deployment.get("metadata") or {}
    namespace = str(meta.get("namespace") or "default")
    name = (meta.get("annotations") or {}).get(INJECT_ANNOTATION, "")
    api = kube()
    om = await api.get(path("ObservedModel", namespace, name))
    if om is None:
        log.warning("%s/%s asks for injection by ObservedModel %r, which does not exist",
                    namespace, meta.get("name"), name)  # fmt: skip
        return
    try:
        model = parse_observed_model(om)
    except SpecError:
        return  # the operator reports the invalid spec on the ObservedModel itself
    if model.spec.target.deployment != meta.get("name"):
        return
    service = await api.get(path("Service", namespace, model.spec.target.service))
    if service is None:
        return
    try:
        change = admission_patch(deployment=deployment, service=service, model=model,
                                 settings=STATE.settings,
                                 upgrade=((om.get("metadata") or {}).get("annotations") or {})
                                 .get(UPGRADE_SIDECAR_ANNOTATION))  # fmt: skip
    except injection.InjectionError as exc:
        log.warning("not injecting %s/%s: %s", namespace, meta.get("name"), exc)
        return
    if change is None:
        return
    for key, value in change.items():
        patch[key] = value
