"""The sidecar beside the model: its injection into the target Deployment, and its exact undo.

Patching the pod template starts a rolling update, and for a while old pods (no sidecar) and
new pods (sidecar) serve side by side behind one Service. No request may go to a port nobody
listens on, so the Service is only ever pointed at the sidecar through a port *name*, which
each pod resolves against its own containers (ARCHITECTURE.md, "Injecting the sidecar
without dropping a request"):

    case A  the Service's targetPort is the model port's name (say `http`). One template
            change: the model's port is renamed `mlwarden-model` (same number) and the
            sidecar's proxy port takes the name `http`. Old pods resolve `http` to the model,
            new pods to the sidecar. The Service is not touched.
    case B  the Service's targetPort is a number (or absent: the port itself). Step 1, the
            template gains the sidecar with its proxy port named `mlwarden-proxy`; the Service
            still sends to the model's number on every pod. Step 2, once the rollout has
            completed (`rollout_complete`), the Service's targetPort becomes `mlwarden-proxy`.

A Service with both kinds of port (one by name, another by number) gets case A's template
change, then step 2 for the numbered ones. In case A the model container's probes and
lifecycle hooks that named the moved port follow the rename (a probe resolves a port name in
its own container only). Undo runs in the reverse order: the Service back to its numbers
first (every pod serves the model there), then the template change that removes the sidecar
and restores the ports.

What was changed is recorded on the objects themselves, so undo needs nothing but them (even
after the ObservedModel's spec changed or it is gone):

    Deployment  mlwarden.io/injected: {"model", "container", "port", "ports" (the model
                container's original ports list, or null), "case" ("A" | "B"),
                "sidecarPortName", "volumeAdded", "probes" (the model container's probe and
                lifecycle handlers whose port named the moved port: "readinessProbe.httpGet")}
    Service     mlwarden.io/original-ports: the original spec.ports list

The planners return the *next* step as JSON merge patches (lists are replaced whole, so a
patch to containers carries the whole list, and the read `resourceVersion` as a precondition);
the caller applies it, reads the objects back and plans again until the state is "injected"
or "removed". At most one of the two patches is set. Planning on a finished pair yields no
patch. `mutate_pod_template` is the same template change as a JSON Patch, for the
admission-webhook mode.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal

from mlwarden.ingest_auth import ENV_TOKEN, SECRET_KEY, ingest_token_secret_name
from mlwarden.operator.objects import covers, plain
from mlwarden.operator.settings import (
    ADMIN_PORT_NAME,
    INJECTED_ANNOTATION,
    MANIFEST_DIR,
    MANIFEST_KEY,
    MODEL_PORT_RENAMED,
    RESTRICTED_SECURITY_CONTEXT,
    SERVICE_ANNOTATION,
    SIDECAR_CONTAINER,
    SIDECAR_PORT_NAME_DEFAULT,
    OperatorSettings,
    detector_name,
)
from mlwarden.spec import ObservedModel

SIDECAR_VOLUME: Final = "mlwarden-manifest"  # the detector ConfigMap, in the model's pod

_TEMPLATE_PATH: Final = ("spec", "template", "spec")
_PROBES: Final = ("livenessProbe", "readinessProbe", "startupProbe")
_HOOKS: Final = ("postStart", "preStop")
_HANDLER_KINDS: Final = ("httpGet", "tcpSocket")

State = Literal[
    "injecting",  # a template change to apply
    "waiting-for-rollout",  # the template is right; its pods are rolling out
    "switching-service",  # case B: the Service's targetPort to the sidecar's port name
    "injected",  # done
    "repairing",  # the Service names a port the template lost: back to the numbers first
    "retargeting",  # spec.target moved: undo (step by step) before injecting anew
    "restoring-service",  # undo, case B: the Service back to its numbers
    "removing",  # undo: the template change that removes the sidecar
    "removed",  # nothing of mlwarden's is left
]


class InjectionError(ValueError):
    """The target cannot be injected; the message names the object and the field."""


@dataclass(frozen=True)
class InjectionPlan:
    """The next step: apply the patches (either may be None), read back, plan again."""

    state: State
    message: str
    deployment_patch: dict[str, Any] | None = None
    service_patch: dict[str, Any] | None = None

    @property
    def done(self) -> bool:
        return self.state in ("injected", "removed")


@dataclass(frozen=True)
class InjectionRecord:
    """What the injection changed in the Deployment: the INJECTED_ANNOTATION's content."""

    model: str
    container: str
    port: int
    ports: list[dict[str, Any]] | None
    case: Literal["A", "B"]
    sidecar_port_name: str
    volume_added: bool
    probes: tuple[str, ...] = field(default=())

    def to_annotation(self) -> str:
        return json.dumps(
            {
                "model": self.model,
                "container": self.container,
                "port": self.port,
                "ports": self.ports,
                "case": self.case,
                "sidecarPortName": self.sidecar_port_name,
                "volumeAdded": self.volume_added,
                "probes": list(self.probes),
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_annotation(cls, text: str, *, where: str) -> InjectionRecord:
        try:
            raw = json.loads(text)
            if raw["case"] not in ("A", "B"):
                raise ValueError(f"case must be A or B, got {raw['case']!r}")
            return cls(
                model=str(raw["model"]),
                container=str(raw["container"]),
                port=int(raw["port"]),
                ports=raw["ports"],
                case="A" if raw["case"] == "A" else "B",
                sidecar_port_name=str(raw["sidecarPortName"]),
                volume_added=bool(raw["volumeAdded"]),
                probes=tuple(raw.get("probes") or ()),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise InjectionError(
                f"{where}: metadata.annotations[{INJECTED_ANNOTATION}] is not what mlwarden "
                f"wrote ({exc!r}); restore it or remove the sidecar by hand"
            ) from exc

    def same_target(self, other: InjectionRecord) -> bool:
        return (self.container, self.port, self.case, self.sidecar_port_name) == (
            other.container,
            other.port,
            other.case,
            other.sidecar_port_name,
        )


# --------------------------------------------------------------------------- reading


def _where(obj: Mapping[str, Any], kind: str) -> str:
    meta = obj.get("metadata") or {}
    return f"{kind} {meta.get('namespace', 'default')}/{meta.get('name', '?')}"


def _annotation(obj: Mapping[str, Any], key: str) -> str | None:
    value = ((obj.get("metadata") or {}).get("annotations") or {}).get(key)
    return None if value is None else str(value)


def read_record(deployment: Mapping[str, Any]) -> InjectionRecord | None:
    """The Deployment's injection record, or None when mlwarden has not injected it."""
    text = _annotation(deployment, INJECTED_ANNOTATION)
    if text is None:
        return None
    return InjectionRecord.from_annotation(text, where=_where(deployment, "Deployment"))


def _service_record(service: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    text = _annotation(service, SERVICE_ANNOTATION)
    if text is None:
        return None
    try:
        ports = json.loads(text)
    except ValueError as exc:
        raise InjectionError(
            f"{_where(service, 'Service')}: metadata.annotations[{SERVICE_ANNOTATION}] is not "
            f"JSON ({exc}); restore it or reset spec.ports by hand"
        ) from exc
    if not isinstance(ports, list):
        raise InjectionError(
            f"{_where(service, 'Service')}: metadata.annotations[{SERVICE_ANNOTATION}] must "
            "be the JSON list of the original spec.ports"
        )
    return ports


def _pod_spec(deployment: Mapping[str, Any]) -> dict[str, Any]:
    spec = plain(((deployment.get("spec") or {}).get("template") or {}).get("spec") or {})
    assert isinstance(spec, dict)
    return spec


def _containers(pod_spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    return list(pod_spec.get("containers") or [])


def _service_ports(service: Mapping[str, Any]) -> list[dict[str, Any]]:
    return list(plain((service.get("spec") or {}).get("ports") or []))


def _target_port(service_port: Mapping[str, Any]) -> int | str:
    """A Service port's targetPort; absent means the same number as `port`."""
    target = service_port.get("targetPort", service_port.get("port"))
    return target if isinstance(target, str) else int(target or 0)


def rollout_complete(deployment: Mapping[str, Any]) -> bool:
    """Every replica runs the current template and is available; no old replica is left."""
    meta = deployment.get("metadata") or {}
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    if int(status.get("observedGeneration") or 0) < int(meta.get("generation") or 0):
        return False
    wanted = int(spec.get("replicas", 1) or 0)
    updated = int(status.get("updatedReplicas") or 0)
    replicas = int(status.get("replicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    return updated == replicas == available and updated >= wanted


# --------------------------------------------------------------------------- the model port


@dataclass(frozen=True)
class _ModelPort:
    index: int  # of the model container in spec.containers
    container: str
    number: int
    entry: int | None  # index in the container's ports list; None when not declared
    name: str | None


def _locate(pod_spec: Mapping[str, Any], model: ObservedModel, where: str) -> _ModelPort:
    containers = _containers(pod_spec)
    target = model.spec.target
    candidates = [c for c in containers if c.get("name") != SIDECAR_CONTAINER]
    if target.container is not None:
        found = [i for i, c in enumerate(containers) if c.get("name") == target.container]
        if not found:
            names = ", ".join(str(c.get("name")) for c in containers) or "none"
            raise InjectionError(
                f"{where}: spec.template.spec.containers has no container named "
                f"{target.container!r} (containers: {names}); fix spec.target.container "
                f"of ObservedModel {model.namespace}/{model.name}"
            )
        index = found[0]
    elif candidates:
        index = containers.index(candidates[0])
    else:
        raise InjectionError(f"{where}: spec.template.spec.containers is empty")
    container = containers[index]
    cname = str(container.get("name"))
    ports = list(container.get("ports") or [])
    if target.port is not None:
        number = target.port
    elif ports:
        number = int(ports[0]["containerPort"])
    else:
        raise InjectionError(
            f"{where}: container {cname!r} declares no ports (spec.template.spec.containers"
            f"[{index}].ports) and spec.target.port of ObservedModel "
            f"{model.namespace}/{model.name} is not set; set spec.target.port"
        )
    entry = next((i for i, p in enumerate(ports) if int(p.get("containerPort", 0)) == number), None)
    name = None if entry is None else ports[entry].get("name")
    return _ModelPort(index=index, container=cname, number=number, entry=entry, name=name)


def _routes(
    service: Mapping[str, Any], port: _ModelPort, *, where: str
) -> tuple[list[int], list[int]]:
    """The Service ports that route to the model port: (by its name, by its number)."""
    by_name: list[int] = []
    by_number: list[int] = []
    ports = _service_ports(service)
    for i, sp in enumerate(ports):
        target = _target_port(sp)
        if isinstance(target, str):
            if port.name is not None and target == port.name:
                by_name.append(i)
        elif target == port.number:
            by_number.append(i)
    if not by_name and not by_number:
        shown = ", ".join(f"{p.get('port')}→{_target_port(p)}" for p in ports) or "none"
        model_port = f"{port.number}" + (f" (name {port.name!r})" if port.name else "")
        raise InjectionError(
            f"{_where(service, 'Service')}: no entry of spec.ports routes to port {model_port} "
            f"of container {port.container!r} in {where} (ports: {shown}); point a targetPort "
            "at it or fix spec.target.port"
        )
    return by_name, by_number


def _check_selects(service: Mapping[str, Any], deployment: Mapping[str, Any], where: str) -> None:
    """A named targetPort is resolved per pod only for the pods the Service selects."""
    selector = (service.get("spec") or {}).get("selector") or {}
    template_labels = (
        ((deployment.get("spec") or {}).get("template") or {}).get("metadata") or {}
    ).get("labels") or {}
    if not selector or any(template_labels.get(k) != v for k, v in selector.items()):
        raise InjectionError(
            f"{_where(service, 'Service')}: spec.selector {dict(selector)} does not select the "
            f"pods of {where} (labels {dict(template_labels)}); fix spec.target.service"
        )


def _handlers(container: Mapping[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """The container's probe and lifecycle handlers that name a port: (path, handler)."""
    for probe in _PROBES:
        for kind in _HANDLER_KINDS:
            handler = (container.get(probe) or {}).get(kind)
            if isinstance(handler, dict):
                yield f"{probe}.{kind}", handler
    for hook in _HOOKS:
        for kind in _HANDLER_KINDS:
            handler = ((container.get("lifecycle") or {}).get(hook) or {}).get(kind)
            if isinstance(handler, dict):
                yield f"lifecycle.{hook}.{kind}", handler


# --------------------------------------------------------------------------- the template change


def sidecar_container(
    *, model: ObservedModel, settings: OperatorSettings, upstream_port: int, port_name: str
) -> dict[str, Any]:
    """The `mlwarden-sidecar` container: proxy on `port_name`, admin port for probes."""
    collector = f"http://{detector_name(model.name)}.{model.namespace}.svc:{settings.detector_port}"
    return {
        "name": SIDECAR_CONTAINER,
        "image": settings.image,
        "imagePullPolicy": settings.image_pull_policy,
        "args": ["sidecar"],
        "env": [
            {"name": "MLWARDEN_LISTEN", "value": f"0.0.0.0:{settings.sidecar_port}"},
            {"name": "MLWARDEN_UPSTREAM", "value": f"http://127.0.0.1:{upstream_port}"},
            {"name": "MLWARDEN_ADMIN_LISTEN", "value": f"0.0.0.0:{settings.sidecar_admin_port}"},
            {"name": "MLWARDEN_COLLECTOR", "value": collector},
            {"name": "MLWARDEN_PROTOCOL", "value": model.spec.protocol},
            {"name": "MLWARDEN_OBSERVED_MODEL", "value": f"{MANIFEST_DIR}/{MANIFEST_KEY}"},
            # This model's ingest token, for this container only: the detector refuses
            # records without it. Part of the sidecar container, so removing the container
            # removes it (the exact undo) and the webhook's template change carries it too.
            # Optional: a pod must still start when the Secret is gone (the ObservedModel
            # deleted or the operator uninstalled before the injection was undone); the
            # sidecar then proxies and drops what it captures.
            {
                "name": ENV_TOKEN,
                "valueFrom": {
                    "secretKeyRef": {
                        "name": ingest_token_secret_name(model.name),
                        "key": SECRET_KEY,
                        "optional": True,
                    }
                },
            },
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        ],
        "ports": [
            {"name": port_name, "containerPort": settings.sidecar_port, "protocol": "TCP"},
            {
                "name": ADMIN_PORT_NAME,
                "containerPort": settings.sidecar_admin_port,
                "protocol": "TCP",
            },
        ],
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": ADMIN_PORT_NAME}},
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": ADMIN_PORT_NAME}},
        "resources": plain(settings.sidecar_resources),
        "securityContext": plain(RESTRICTED_SECURITY_CONTEXT),
        "volumeMounts": [{"name": SIDECAR_VOLUME, "mountPath": MANIFEST_DIR, "readOnly": True}],
    }


def _sidecar_volume(model: ObservedModel) -> dict[str, Any]:
    """The manifest ConfigMap; optional, so a pod starts (sidecar without a manifest) without it."""
    return {
        "name": SIDECAR_VOLUME,
        "configMap": {"name": detector_name(model.name), "optional": True},
    }


@dataclass(frozen=True)
class _Injected:
    """A pod spec's containers and volumes with the sidecar in, and the record of it."""

    record: InjectionRecord
    containers: list[dict[str, Any]]
    volumes: list[dict[str, Any]]


def _check_collisions(
    pod_spec: Mapping[str, Any],
    port: _ModelPort,
    case: Literal["A", "B"],
    settings: OperatorSettings,
    *,
    where: str,
) -> None:
    """Port numbers and names must stay unique in the pod once the sidecar is in."""
    if port.number in (settings.sidecar_port, settings.sidecar_admin_port):
        raise InjectionError(
            f"{where}: the model port {port.number} of container {port.container!r} is one of "
            f"the sidecar's ports ({settings.sidecar_port}, {settings.sidecar_admin_port}); "
            "set MLWARDEN_SIDECAR_PORT / MLWARDEN_SIDECAR_ADMIN_PORT on the operator"
        )
    numbers = {settings.sidecar_port, settings.sidecar_admin_port}
    # Case A moves the model port's name to the sidecar: only the new names can clash.
    added = {ADMIN_PORT_NAME, MODEL_PORT_RENAMED if case == "A" else SIDECAR_PORT_NAME_DEFAULT}
    for kind in ("initContainers", "containers"):
        for ci, container in enumerate(pod_spec.get(kind) or []):
            for pi, p in enumerate(container.get("ports") or []):
                at = f"spec.template.spec.{kind}[{ci}].ports[{pi}]"
                if int(p.get("containerPort", 0)) in numbers:
                    raise InjectionError(
                        f"{where}: the sidecar's port {p['containerPort']} collides with {at} "
                        f"of container {container.get('name')!r}; set MLWARDEN_SIDECAR_PORT / "
                        "MLWARDEN_SIDECAR_ADMIN_PORT on the operator"
                    )
                if p.get("name") in added:
                    raise InjectionError(
                        f"{where}: the port name {p['name']!r} at {at} is one the sidecar "
                        "injection uses; rename that port"
                    )


def _inject(
    pod_spec: Mapping[str, Any],
    *,
    port: _ModelPort,
    case: Literal["A", "B"],
    model: ObservedModel,
    settings: OperatorSettings,
    where: str,
) -> _Injected:
    """The one template change, from a pod spec without the sidecar."""
    containers = copy.deepcopy(_containers(pod_spec))
    if any(c.get("name") == SIDECAR_CONTAINER for c in containers):
        raise InjectionError(
            f"{where}: spec.template.spec.containers already has a container named "
            f"{SIDECAR_CONTAINER!r} that mlwarden did not put there (no {INJECTED_ANNOTATION} "
            "annotation); remove or rename it"
        )
    _check_collisions(pod_spec, port, case, settings, where=where)
    model_container = containers[port.index]
    original_ports = copy.deepcopy(model_container.get("ports"))
    probes: list[str] = []
    if case == "A":
        assert port.entry is not None and port.name is not None
        sidecar_port_name = port.name
        model_container["ports"][port.entry]["name"] = MODEL_PORT_RENAMED
        # A probe names a port of its own container: it must follow the rename.
        for path, handler in _handlers(model_container):
            if handler.get("port") == port.name:
                handler["port"] = MODEL_PORT_RENAMED
                probes.append(path)
    else:
        sidecar_port_name = SIDECAR_PORT_NAME_DEFAULT
    containers.append(
        sidecar_container(
            model=model, settings=settings, upstream_port=port.number, port_name=sidecar_port_name
        )
    )
    volumes = copy.deepcopy(list(pod_spec.get("volumes") or []))
    volume = _sidecar_volume(model)
    existing = [v for v in volumes if v.get("name") == SIDECAR_VOLUME]
    if existing and not covers(existing[0], volume):
        raise InjectionError(
            f"{where}: spec.template.spec.volumes already has a volume named "
            f"{SIDECAR_VOLUME!r} that is not the detector's ConfigMap; rename it"
        )
    if not existing:
        volumes.append(volume)
    record = InjectionRecord(
        model=model.name,
        container=port.container,
        port=port.number,
        ports=original_ports,
        case=case,
        sidecar_port_name=sidecar_port_name,
        volume_added=not existing,
        probes=tuple(probes),
    )
    return _Injected(record=record, containers=containers, volumes=volumes)


def _without_sidecar(pod_spec: Mapping[str, Any], record: InjectionRecord) -> dict[str, Any]:
    """The pod spec with the injection undone: the exact inverse of `_inject`."""
    spec = copy.deepcopy(dict(pod_spec))
    containers = [c for c in _containers(spec) if c.get("name") != SIDECAR_CONTAINER]
    for container in containers:
        if container.get("name") != record.container or record.case != "A":
            continue
        original = record.ports or []
        renamed = copy.deepcopy(original)
        for p in renamed:
            if p.get("name") == record.sidecar_port_name:
                p["name"] = MODEL_PORT_RENAMED
        current = container.get("ports") or []
        if current == renamed:
            container["ports"] = copy.deepcopy(original)
        else:  # edited since: give the name back, keep the edits
            for p in current:
                if p.get("name") == MODEL_PORT_RENAMED:
                    p["name"] = record.sidecar_port_name
        for path, handler in _handlers(container):
            if path in record.probes and handler.get("port") == MODEL_PORT_RENAMED:
                handler["port"] = record.sidecar_port_name
    spec["containers"] = containers
    if record.volume_added:
        volumes = [v for v in spec.get("volumes") or [] if v.get("name") != SIDECAR_VOLUME]
        if volumes:
            spec["volumes"] = volumes
        else:
            spec.pop("volumes", None)
    return spec


# --------------------------------------------------------------------------- the Service


def _switched_ports(
    ports: list[dict[str, Any]], routes: list[int], name: str
) -> list[dict[str, Any]]:
    out = copy.deepcopy(ports)
    for i in routes:
        out[i]["targetPort"] = name
    return out


def _restored_ports(
    current: list[dict[str, Any]], original: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The original ports where only their targetPort was changed; other edits are kept."""

    def key(p: Mapping[str, Any]) -> tuple[Any, ...]:
        return (p.get("name"), p.get("port"), p.get("protocol", "TCP"))

    originals = {key(p): p for p in original}
    out: list[dict[str, Any]] = []
    for p in current:
        was = originals.get(key(p))
        rest = {k: v for k, v in p.items() if k != "targetPort"}
        if was is not None and rest == {k: v for k, v in was.items() if k != "targetPort"}:
            out.append(copy.deepcopy(was))
        else:
            out.append(copy.deepcopy(p))
    return out


def _port_names(pod_spec: Mapping[str, Any]) -> set[str]:
    containers = [*(pod_spec.get("initContainers") or []), *_containers(pod_spec)]
    return {str(p["name"]) for c in containers for p in c.get("ports") or [] if p.get("name")}


# --------------------------------------------------------------------------- patches


def _meta_patch(obj: Mapping[str, Any], annotations: dict[str, Any]) -> dict[str, Any]:
    """metadata for a patch: the annotations, and resourceVersion as a precondition.

    A list in a merge patch replaces the whole list as it was read; should the object have
    changed since, the API server answers 409 Conflict instead of dropping that change.
    """
    meta: dict[str, Any] = {"annotations": annotations}
    version = (obj.get("metadata") or {}).get("resourceVersion")
    if version is not None:
        meta["resourceVersion"] = version
    return meta


def _template_patch(
    deployment: Mapping[str, Any],
    pod_spec: Mapping[str, Any],
    *,
    containers: list[dict[str, Any]],
    volumes: list[dict[str, Any]] | None,
    annotation: str | None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": containers}
    if volumes != (pod_spec.get("volumes") or None):
        spec["volumes"] = volumes
    return {
        "metadata": _meta_patch(deployment, {INJECTED_ANNOTATION: annotation}),
        "spec": {"template": {"spec": spec}},
    }


def _service_patch(
    service: Mapping[str, Any], *, ports: list[dict[str, Any]], annotation: str | None
) -> dict[str, Any]:
    return {
        "metadata": _meta_patch(service, {SERVICE_ANNOTATION: annotation}),
        "spec": {"ports": ports},
    }


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))  # key order kept: undo is byte-exact


# --------------------------------------------------------------------------- planners


def plan_injection(
    *,
    deployment: Mapping[str, Any],
    service: Mapping[str, Any],
    model: ObservedModel,
    settings: OperatorSettings,
) -> InjectionPlan:
    """The next step towards the sidecar in the model's pods and the Service through it."""
    where = _where(deployment, "Deployment")
    record = read_record(deployment)
    if record is not None and record.model != model.name:
        raise InjectionError(
            f"{where}: already observed by ObservedModel {model.namespace}/{record.model} "
            f"(metadata.annotations[{INJECTED_ANNOTATION}]); one ObservedModel per Deployment"
        )
    pod_spec = _pod_spec(deployment)
    original_ports = _service_record(service)
    current_ports = _service_ports(service)
    if original_ports is not None:
        targeted = {t for p in current_ports if isinstance(t := _target_port(p), str)}
        missing = targeted - _port_names(pod_spec)
        if missing:
            return InjectionPlan(
                state="repairing",
                message=(
                    f"{_where(service, 'Service')} targets port {sorted(missing)} that the pod "
                    "template no longer defines: restoring its original ports before anything "
                    "else"
                ),
                service_patch=_service_patch(
                    service,
                    ports=_restored_ports(current_ports, original_ports),
                    annotation=None,
                ),
            )
    clean_spec = pod_spec if record is None else _without_sidecar(pod_spec, record)
    clean_service = dict(service)
    if original_ports is not None:
        clean_service["spec"] = {
            **(service.get("spec") or {}),
            "ports": _restored_ports(current_ports, original_ports),
        }
    port = _locate(clean_spec, model, where)
    _check_selects(service, deployment, where)
    by_name, by_number = _routes(clean_service, port, where=where)
    case: Literal["A", "B"] = "A" if by_name else "B"
    injected = _inject(
        clean_spec, port=port, case=case, model=model, settings=settings, where=where
    )

    if record is not None and not record.same_target(injected.record):
        removal = plan_removal(deployment=deployment, service=service)
        return replace(
            removal,
            state="retargeting",
            message=(
                f"the target changed (container {record.container!r} port {record.port} case "
                f"{record.case} → container {port.container!r} port {port.number} case {case}):"
                f" undoing the injection first. {removal.message}"
            ),
        )

    containers_path = (*_TEMPLATE_PATH, "containers")
    template_right = covers(
        pod_spec.get("containers") or [], injected.containers, path=containers_path
    ) and covers(pod_spec.get("volumes") or [], injected.volumes)
    if not template_right or record != injected.record:
        patch = _template_patch(
            deployment,
            pod_spec,
            containers=injected.containers,
            volumes=injected.volumes,
            annotation=injected.record.to_annotation(),
        )
        if template_right:  # only the record is out of date: do not touch the template
            del patch["spec"]
        how = (
            f"renaming port {port.name!r} of container {port.container!r} to "
            f"{MODEL_PORT_RENAMED!r} and giving the name to the sidecar"
            if case == "A"
            else f"adding the sidecar with its port {SIDECAR_PORT_NAME_DEFAULT!r}"
        )
        return InjectionPlan(
            state="injecting",
            message=f"{where}: {how} (case {case}), in one template change",
            deployment_patch=patch,
        )
    if not rollout_complete(deployment):
        paused = (
            " (the Deployment is paused)" if (deployment.get("spec") or {}).get("paused") else ""
        )
        return InjectionPlan(
            state="waiting-for-rollout",
            message=f"{where}: waiting for the pods with the sidecar to roll out{paused}",
        )
    if by_number:
        clean_ports = _service_ports(clean_service)
        wanted = _switched_ports(clean_ports, by_number, injected.record.sidecar_port_name)
        if original_ports is None or not covers(current_ports, wanted):
            return InjectionPlan(
                state="switching-service",
                message=(
                    f"{_where(service, 'Service')}: every pod has the sidecar; pointing "
                    f"targetPort at {injected.record.sidecar_port_name!r}"
                ),
                service_patch=_service_patch(
                    service, ports=wanted, annotation=_json(original_ports or clean_ports)
                ),
            )
    return InjectionPlan(
        state="injected",
        message=(
            f"{where}: traffic of {_where(service, 'Service')} passes through the sidecar "
            f"(case {case})"
        ),
    )


def plan_removal(
    *, deployment: Mapping[str, Any] | None, service: Mapping[str, Any] | None
) -> InjectionPlan:
    """The next step of the undo, from the annotations alone (either object may be gone)."""
    if service is not None:
        original_ports = _service_record(service)
        if original_ports is not None:
            return InjectionPlan(
                state="restoring-service",
                message=(
                    f"{_where(service, 'Service')}: targetPort back to the original ports; "
                    "every pod serves the model there"
                ),
                service_patch=_service_patch(
                    service,
                    ports=_restored_ports(_service_ports(service), original_ports),
                    annotation=None,
                ),
            )
    if deployment is not None:
        record = read_record(deployment)
        if record is not None:
            pod_spec = _pod_spec(deployment)
            clean = _without_sidecar(pod_spec, record)
            return InjectionPlan(
                state="removing",
                message=(
                    f"{_where(deployment, 'Deployment')}: removing the sidecar and restoring "
                    f"container {record.container!r}'s ports"
                ),
                deployment_patch=_template_patch(
                    deployment,
                    pod_spec,
                    containers=clean["containers"],
                    volumes=clean.get("volumes"),
                    annotation=None,
                ),
            )
    return InjectionPlan(state="removed", message="nothing of mlwarden's is left")


# --------------------------------------------------------------------------- webhook


def mutate_pod_template(
    template: Mapping[str, Any],
    *,
    model: ObservedModel,
    settings: OperatorSettings,
    service_targets_name: str | None,
) -> list[dict[str, Any]]:
    """The same template change as `plan_injection`'s, as a JSON Patch (RFC 6902).

    `template` is a pod template or a Pod (`metadata`, `spec`). `service_targets_name` is
    the port name the Service's targetPort uses (case A; the model port must carry it), or
    None when it uses a number (case B). A template that has the sidecar already gets `[]`.
    """
    pod_spec: dict[str, Any] = plain(template.get("spec") or {})
    if any(c.get("name") == SIDECAR_CONTAINER for c in _containers(pod_spec)):
        return []
    where = f"pod template of {model.spec.target.deployment}"
    port = _locate(pod_spec, model, where)
    if service_targets_name is not None and port.name != service_targets_name:
        raise InjectionError(
            f"{where}: the Service targets port name {service_targets_name!r} but port "
            f"{port.number} of container {port.container!r} is named {port.name!r}"
        )
    case: Literal["A", "B"] = "A" if service_targets_name is not None else "B"
    injected = _inject(pod_spec, port=port, case=case, model=model, settings=settings, where=where)
    ops: list[dict[str, Any]] = []
    before = _containers(pod_spec)
    for i, container in enumerate(injected.containers[: len(before)]):
        if container != before[i]:
            ops.append({"op": "replace", "path": f"/spec/containers/{i}", "value": container})
    ops.append({"op": "add", "path": "/spec/containers/-", "value": injected.containers[-1]})
    if injected.record.volume_added:
        if "volumes" in pod_spec:
            ops.append({"op": "add", "path": "/spec/volumes/-", "value": injected.volumes[-1]})
        else:
            ops.append({"op": "add", "path": "/spec/volumes", "value": injected.volumes})
    return ops
