"""Whether the target Service's traffic passes the sidecar: what the injection promises.

Pure: given the target Deployment and Service as read, say where each Service port lands in
a pod of the current template, as the EndpointSlice controller resolves it (a number is that
port on the pod; a name is the first port of that name among the pod's containers, in
order; a name no container has gives the pod no endpoint for that port), and whether that
is through the sidecar. `assess` is the check the operator runs again and again after the
injection completed (handlers.py, the `check_injection` timer), because other writers of
the Deployment undo it without telling anyone:

    SidecarRemoved   the template has no sidecar any more: `kubectl rollout undo` to the
                     revision before the injection (which also restores that revision's
                     annotations), `kubectl replace`, `helm upgrade --force`, a GitOps sync
    NoEndpoints      a named targetPort resolves to no container of the template: the new
                     pods get no endpoint, the model is down once the old ones are gone
    PortRenamedBack  a GitOps re-apply gave the model's port its name back: the Service's
                     named targetPort now resolves to the model container (it comes first),
                     around the sidecar
    ServiceBypassesSidecar
                     a Service port reaches the model's port directly (by number, or by a
                     name), and none reaches the sidecar

The template is what the pods converge to, so the verdict holds once the rollout in progress
ends; it is the earliest sign, before any pod has lost its endpoint.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from mlwarden.names import ADMIN_PORT_NAME, MODEL_PORT_RENAMED, SIDECAR_CONTAINER

NO_ENDPOINTS: Final = "NoEndpoints"
SIDECAR_REMOVED: Final = "SidecarRemoved"
PORT_RENAMED_BACK: Final = "PortRenamedBack"
SERVICE_BYPASSES_SIDECAR: Final = "ServiceBypassesSidecar"


@dataclass(frozen=True)
class Landing:
    """Where one Service port's traffic lands in a pod of the template."""

    service_port: str  # the Service port, as "name" or its number
    target: int | str  # its targetPort
    container: str | None  # None: nobody (a name no container has)
    number: int | None


@dataclass(frozen=True)
class Bypass:
    """Traffic no longer passes the sidecar: the condition's reason and message."""

    reason: str
    message: str


def _where(obj: Mapping[str, Any], kind: str) -> str:
    meta = obj.get("metadata") or {}
    return f"{kind} {meta.get('namespace', 'default')}/{meta.get('name', '?')}"


def _containers(deployment: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    template = (deployment.get("spec") or {}).get("template") or {}
    return list((template.get("spec") or {}).get("containers") or [])


def landings(*, deployment: Mapping[str, Any], service: Mapping[str, Any]) -> list[Landing]:
    """Each Service port resolved against the Deployment's pod template."""
    containers = _containers(deployment)
    out: list[Landing] = []
    for sp in (service.get("spec") or {}).get("ports") or []:
        target = sp.get("targetPort", sp.get("port"))
        label = str(sp.get("name") or sp.get("port"))
        if isinstance(target, str):
            found = next(
                (
                    (str(c.get("name")), int(p.get("containerPort", 0)))
                    for c in containers
                    for p in c.get("ports") or []
                    if p.get("name") == target
                ),
                None,
            )
            container, number = found if found else (None, None)
            out.append(Landing(label, target, container, number))
            continue
        number = int(target or 0)
        owner = next(
            (
                str(c.get("name"))
                for c in containers
                for p in c.get("ports") or []
                if int(p.get("containerPort", 0)) == number
            ),
            None,
        )
        # A number always reaches the pod; whoever listens there answers.
        out.append(Landing(label, number, owner, number))
    return out


def assess(
    *, deployment: Mapping[str, Any], service: Mapping[str, Any], model_container: str
) -> Bypass | None:
    """None when the Service's traffic passes the sidecar in the template's pods.

    `model_container` is the container the injection put the sidecar in front of.
    """
    deploy, svc = _where(deployment, "Deployment"), _where(service, "Service")
    names = [str(c.get("name")) for c in _containers(deployment)]
    routes = landings(deployment=deployment, service=service)
    dead = [r for r in routes if r.container is None and isinstance(r.target, str)]
    if dead:
        shown = ", ".join(f"port {r.service_port} → {r.target!r}" for r in dead)
        return Bypass(
            NO_ENDPOINTS,
            f"{svc}: {shown} names a port no container of {deploy}'s pod template has "
            f"(containers: {', '.join(names) or 'none'}); its pods get no endpoint",
        )
    if SIDECAR_CONTAINER not in names:
        return Bypass(
            SIDECAR_REMOVED,
            f"{deploy}: the pod template has no {SIDECAR_CONTAINER!r} container any more "
            "(a rollout undo, kubectl replace, helm --force or a GitOps sync); traffic of "
            f"{svc} goes straight to the model",
        )
    through = [r for r in routes if r.container == SIDECAR_CONTAINER]
    through = [r for r in through if not _is_admin(deployment, r)]
    direct = [r for r in routes if r.container == model_container]
    if direct:
        r = direct[0]
        if isinstance(r.target, str) and r.target != MODEL_PORT_RENAMED:
            return Bypass(
                PORT_RENAMED_BACK,
                f"{svc}: targetPort {r.target!r} (port {r.service_port}) resolves to container "
                f"{model_container!r} of {deploy}, not to {SIDECAR_CONTAINER!r}: the model's "
                f"port got its name {r.target!r} back (a GitOps re-apply?) and comes first",
            )
        return Bypass(
            SERVICE_BYPASSES_SIDECAR,
            f"{svc}: port {r.service_port} → {r.target!r} reaches container {model_container!r} "
            f"of {deploy} directly, around {SIDECAR_CONTAINER!r}",
        )
    if not through:
        return Bypass(
            SERVICE_BYPASSES_SIDECAR,
            f"{svc}: no port reaches the {SIDECAR_CONTAINER!r} container of {deploy}",
        )
    return None


def _is_admin(deployment: Mapping[str, Any], landing: Landing) -> bool:
    for c in _containers(deployment):
        if c.get("name") != SIDECAR_CONTAINER:
            continue
        for p in c.get("ports") or []:
            if p.get("name") == ADMIN_PORT_NAME and p.get("containerPort") == landing.number:
                return True
    return False
