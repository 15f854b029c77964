"""Rollback: the target Deployment back to an earlier revision's pod template, sidecar kept.

A Deployment's history is its ReplicaSets: each owned ReplicaSet carries its revision in the
`deployment.kubernetes.io/revision` annotation and the pod template of that revision.
`kubectl rollout undo` copies the previous revision's template (without the
`pod-template-hash` label) into the Deployment; `plan_rollback` computes that change as a
merge patch, with one difference: mlwarden's injection is kept. The old template may predate
the injection (no sidecar), so the live template's `mlwarden-sidecar` container and the
volumes it mounts are merged back in, and a port of the old model container whose name the
sidecar now carries (case A of the injection: the Service's named targetPort) is renamed
`mlwarden-model` again, with the probes that name it. The injection planner then finds the
template as it wants it, and no request goes to a pod without the proxy.

As `kubectl rollout undo`: the previous revision is the highest one below the current one
(or `to_revision`), a paused Deployment is refused, and a template equal to the live one is
"nothing to roll back". One difference: a revision whose template differs from the live one
only by the injection (the revision the injection itself created) is passed over, since it
is not another version of the model. The patch is RFC 7386 against the live template (keys the old
template lacks are removed) with `metadata.resourceVersion` as a precondition; the
Deployment's own annotations (change-cause) are left alone.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Final, NamedTuple

from mlwarden.names import MODEL_PORT_RENAMED, SIDECAR_CONTAINER
from mlwarden.patches import merge_patch_diff
from mlwarden.react.revisions import revision_of

POD_TEMPLATE_HASH: Final = "pod-template-hash"

_PROBES: Final = ("livenessProbe", "readinessProbe", "startupProbe")
_HOOKS: Final = ("postStart", "preStop")
_HANDLERS: Final = ("httpGet", "tcpSocket", "grpc")


class RollbackError(ValueError):
    """The Deployment cannot be rolled back as asked; the message says why and what to do."""


class RollbackPlan(NamedTuple):
    """The merge patch for the Deployment, and the revisions it goes from and to."""

    patch: dict[str, Any]
    from_revision: str
    to_revision: str
    # The revisions whose template is the running one, sidecar aside (the current model
    # version); the lowest of them rolled that version out, the others only re-packaged it.
    same_model: tuple[int, ...] = ()


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def owned_replicasets(
    *, deployment: Mapping[str, Any], replicasets: Sequence[Mapping[str, Any]]
) -> list[Mapping[str, Any]]:
    """The ReplicaSets the Deployment owns (by owner uid when known, else by name)."""
    uid, name = _meta(deployment).get("uid"), _meta(deployment).get("name")
    out = []
    for rs in replicasets:
        for ref in _meta(rs).get("ownerReferences") or []:
            if ref.get("kind") != "Deployment":
                continue
            if (uid and ref.get("uid") == uid) or (
                (not uid or not ref.get("uid")) and ref.get("name") == name
            ):
                out.append(rs)
                break
    return out


def _handlers(container: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    for probe in _PROBES:
        for kind in _HANDLERS:
            handler = (container.get(probe) or {}).get(kind)
            if isinstance(handler, dict):
                yield handler
    for hook in _HOOKS:
        for kind in _HANDLERS:
            handler = ((container.get("lifecycle") or {}).get(hook) or {}).get(kind)
            if isinstance(handler, dict):
                yield handler


def with_sidecar(template: Mapping[str, Any], *, live: Mapping[str, Any]) -> dict[str, Any]:
    """`template` (an old pod template) with the injection the `live` template carries.

    Without a sidecar in `live` (not injected, or injected at admission by the webhook)
    the template comes back unchanged.
    """
    out: dict[str, Any] = copy.deepcopy(dict(template))
    live_spec = live.get("spec") or {}
    sidecar = next(
        (c for c in live_spec.get("containers") or [] if c.get("name") == SIDECAR_CONTAINER),
        None,
    )
    if sidecar is None:
        return out
    spec = out.setdefault("spec", {})
    containers: list[dict[str, Any]] = list(spec.get("containers") or [])
    taken = {str(p["name"]) for p in sidecar.get("ports") or [] if p.get("name")}
    for container in containers:
        if container.get("name") == SIDECAR_CONTAINER:
            continue
        for port in container.get("ports") or []:
            old = port.get("name")
            if old not in taken:
                continue
            # The sidecar's proxy port carries this name now (the Service targets it):
            # the model's port keeps its number under the injection's other name.
            port["name"] = MODEL_PORT_RENAMED
            for handler in _handlers(container):
                if handler.get("port") == old:
                    handler["port"] = MODEL_PORT_RENAMED
    at = next((i for i, c in enumerate(containers) if c.get("name") == SIDECAR_CONTAINER), None)
    if at is None:
        containers.append(copy.deepcopy(sidecar))
    else:
        containers[at] = copy.deepcopy(sidecar)
    spec["containers"] = containers
    _check_port_names(containers)

    mounted = {str(m.get("name")) for m in sidecar.get("volumeMounts") or []}
    live_volumes = {str(v.get("name")): v for v in live_spec.get("volumes") or []}
    volumes: list[dict[str, Any]] = list(spec.get("volumes") or [])
    for name in sorted(mounted & set(live_volumes)):
        wanted = copy.deepcopy(live_volumes[name])
        at = next((i for i, v in enumerate(volumes) if v.get("name") == name), None)
        if at is None:
            volumes.append(wanted)
        else:
            volumes[at] = wanted
    if volumes:
        spec["volumes"] = volumes
    return out


def _check_port_names(containers: list[dict[str, Any]]) -> None:
    seen: dict[str, str] = {}
    for container in containers:
        for port in container.get("ports") or []:
            name = port.get("name")
            if not name:
                continue
            if name in seen:
                raise RollbackError(
                    f"the old template with the sidecar would name port {name!r} twice "
                    f"(containers {seen[name]!r} and {container.get('name')!r}); roll back by "
                    "hand and let mlwarden inject again"
                )
            seen[name] = str(container.get("name"))


def _diff(live: Mapping[str, Any], replicaset: Mapping[str, Any]) -> dict[str, Any]:
    """The merge patch from the live template to `replicaset`'s, sidecar kept."""
    template: dict[str, Any] = copy.deepcopy(
        dict((replicaset.get("spec") or {}).get("template") or {})
    )
    labels = (template.get("metadata") or {}).get("labels")
    if isinstance(labels, dict):
        labels.pop(POD_TEMPLATE_HASH, None)
    return merge_patch_diff(live, with_sidecar(template, live=live))


def plan_rollback(
    *,
    deployment: Mapping[str, Any],
    replicasets: Sequence[Mapping[str, Any]],
    to_revision: int | None = None,
) -> RollbackPlan:
    """The merge patch rolling `deployment` back to the previous revision (or `to_revision`)."""
    name = _meta(deployment).get("name", "?")
    where = f"Deployment {_meta(deployment).get('namespace', 'default')}/{name}"
    if (deployment.get("spec") or {}).get("paused"):
        raise RollbackError(
            f"{where} is paused; resume it first (kubectl rollout resume deployment/{name})"
        )
    history: dict[int, Mapping[str, Any]] = {}
    for rs in owned_replicasets(deployment=deployment, replicasets=replicasets):
        revision = revision_of(rs)
        if revision is not None:
            history[revision] = rs
    current = revision_of(deployment)
    if current is None:
        if not history:
            raise RollbackError(f"{where} has no revision yet: nothing to roll back to")
        current = max(history)
    known = ", ".join(str(r) for r in sorted(history)) or "none"
    live: Mapping[str, Any] = (deployment.get("spec") or {}).get("template") or {}
    if to_revision is not None:
        if to_revision not in history:
            raise RollbackError(
                f"{where} has no revision {to_revision} (revisions: {known}); fix "
                "spec.reactions[].toRevision"
            )
        if to_revision == current:
            raise RollbackError(f"{where} is at revision {to_revision} already")
        diff = _diff(live, history[to_revision])
        if not diff:
            raise RollbackError(
                f"{where}: revision {to_revision}'s template is the one running; nothing to "
                "roll back"
            )
        target = to_revision
    else:
        # The newest earlier revision that differs from what runs, sidecar aside: the
        # revision mlwarden's own injection created is not a version of the model.
        earlier = sorted((r for r in history if r < current), reverse=True)
        found = next(((r, d) for r in earlier if (d := _diff(live, history[r]))), None)
        if found is None:
            limit = (deployment.get("spec") or {}).get("revisionHistoryLimit")
            hint = (
                " (spec.revisionHistoryLimit is 0: no old ReplicaSets are kept)"
                if limit == 0
                else ""
            )
            raise RollbackError(
                f"{where} has no revision before {current} that differs from the one running "
                f"(revisions: {known}){hint}; nothing to roll back to"
            )
        target, diff = found
    patch: dict[str, Any] = {"spec": {"template": diff}}
    version = _meta(deployment).get("resourceVersion")
    if version is not None:
        patch["metadata"] = {"resourceVersion": version}
    same = tuple(sorted(r for r in history if r <= current and not _diff(live, history[r])))
    return RollbackPlan(
        patch=patch, from_revision=str(current), to_revision=str(target), same_model=same
    )
