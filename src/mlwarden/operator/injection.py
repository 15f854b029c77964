"""The sidecar beside the model: its injection into the target Deployment, and its exact undo.

The same for a StatefulSet or an Argo Rollout (`WORKLOAD_KINDS`): each has its pod template in
`spec.template`; what differs by kind is when a rollout is complete (`rollout_complete`), what
may hold it (`rollout_hold`: a StatefulSet's partition, a Rollout's canary steps; never
changed here) and the label the revision variable reads (`names.revision_field`). A Rollout
with `spec.workloadRef` reads its template from a Deployment (`workload_ref`): the change goes
into that Deployment's template, planned with `rollout=` the Rollout, whose pods'
`rollouts-pod-template-hash` the revision variable reads.

Patching the pod template starts a rolling update, and for a while old pods (no sidecar) and
new pods (sidecar) serve side by side behind one Service. No request may go to a port nobody
listens on, so the Service is only ever pointed at the sidecar through a port *name*, which
each pod resolves against its own containers (docs/architecture.md, "Injecting the
sidecar without dropping a request"):

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
                lifecycle handlers whose port named the moved port: "readinessProbe.httpGet"),
                "sidecar" (the container as injected), "inputs" (`sidecar_inputs`), "upgrade"
                (the upgrade annotation it was rendered for), "pullSecrets" (the
                imagePullSecrets added), "podAnnotations" ([{"key", "was", "set"}]: pod
                template annotations set, with their values before)}
    Service     mlwarden.io/original-ports: the original spec.ports list

No surprise restarts: the recorded sidecar is frozen. Planning puts it back as it was, not
as the running operator would render it, until the ObservedModel asks for an upgrade or
what the sidecar must follow (`sidecar_inputs`) changes. Before the first template change of
a Deployment with strategy Recreate (every pod stops first) the plan waits for an approval
("awaiting-approval"); a rollout of the sidecar that exceeded its progress deadline is
reported ("rollout-stalled") for the caller to undo. In pods Istio's proxy joins
(`istio_injection`) the sidecar's ports must stay out of Istio's, and its admin port is
excluded from Istio's inbound capture.

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
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, Final, Literal

from mlwarden.ingest_auth import ENV_TOKEN, SECRET_KEY, ingest_token_secret_name
from mlwarden.names import (
    ADMIN_PORT_NAME,
    ENV_MODEL_REVISION,
    INJECTED_ANNOTATION,
    MANIFEST_DIR,
    MANIFEST_KEY,
    MODEL_PORT_RENAMED,
    ROLLOUTS_POD_TEMPLATE_HASH,
    SERVICE_ANNOTATION,
    SIDECAR_CONTAINER,
    SIDECAR_PORT_NAME_DEFAULT,
    UPGRADE_SIDECAR_ANNOTATION,
    detector_name,
    revision_field,
)
from mlwarden.operator.settings import (
    IMAGE_UID,
    ISTIO_PORTS,
    RESTRICTED_SECURITY_CONTEXT,
    OperatorSettings,
)
from mlwarden.patches import covers, plain
from mlwarden.react.guardrails import APPROVE_ANNOTATION
from mlwarden.spec import ObservedModel

# The kinds whose pod template (spec.template) the sidecar is injected into.
WORKLOAD_KINDS: Final = ("Deployment", "StatefulSet", "Rollout")
SIDECAR_VOLUME: Final = "mlwarden-manifest"  # the detector ConfigMap, in the model's pod
# Istio's pod labels and annotations (istio.io/latest/docs/reference/config/annotations).
ISTIO_INJECT: Final = "sidecar.istio.io/inject"
ISTIO_REV: Final = "istio.io/rev"
ISTIO_EXCLUDE_INBOUND: Final = "traffic.sidecar.istio.io/excludeInboundPorts"

_TEMPLATE_PATH: Final = ("spec", "template", "spec")
_PROBES: Final = ("livenessProbe", "readinessProbe", "startupProbe")
_HOOKS: Final = ("postStart", "preStop")
_HANDLER_KINDS: Final = ("httpGet", "tcpSocket")

State = Literal[
    "injecting",  # a template change to apply
    "waiting-for-rollout",  # the template is right; its pods are rolling out
    "switching-service",  # case B: the Service's targetPort to the sidecar's port name
    "injected",  # done
    "awaiting-approval",  # a Recreate Deployment: injecting stops every pod; a person approves
    "rollout-stalled",  # the rollout with the sidecar exceeded its progress deadline: undo it
    "repairing",  # the Service names a port the template lost: back to the numbers first
    "retargeting",  # spec.target moved: undo (step by step) before injecting anew
    "restoring-service",  # undo, case B: the Service back to its numbers
    "removing",  # undo: the template change that removes the sidecar
    "removed",  # nothing of mlwarden's is left
]


class InjectionError(ValueError):
    """The target cannot be injected; the message names the object and the field.

    `reason` is the Ready condition's reason: InjectionFailed, or a more precise one for a
    target that is refused by design (ControlledDeployment, ServiceSelectsOtherPods).
    """

    def __init__(self, message: str, *, reason: str = "InjectionFailed") -> None:
        super().__init__(message)
        self.reason = reason


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
    # The sidecar container as injected: it stays so (frozen) whatever operator runs later,
    # until the ObservedModel asks for an upgrade or its sidecar's inputs change.
    sidecar: dict[str, Any] | None = None
    inputs: str | None = None  # `sidecar_inputs` when the sidecar was rendered
    upgrade: str | None = None  # the UPGRADE_SIDECAR_ANNOTATION value it was rendered for
    pull_secrets: tuple[str, ...] = ()  # imagePullSecrets the injection added
    # Pod template annotations the injection set: (key, value before or None, value set).
    pod_annotations: tuple[tuple[str, str | None, str], ...] = ()

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
                "sidecar": self.sidecar,
                "inputs": self.inputs,
                "upgrade": self.upgrade,
                "pullSecrets": list(self.pull_secrets),
                "podAnnotations": [
                    {"key": k, "was": was, "set": value} for k, was, value in self.pod_annotations
                ],
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
                sidecar=raw.get("sidecar"),
                inputs=raw.get("inputs"),
                upgrade=raw.get("upgrade"),
                pull_secrets=tuple(str(n) for n in raw.get("pullSecrets") or ()),
                pod_annotations=tuple(
                    (str(a["key"]), a["was"], str(a["set"]))
                    for a in raw.get("podAnnotations") or ()
                ),
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


def _workload(obj: Mapping[str, Any]) -> str:
    """`Deployment ns/name`, `StatefulSet ns/name`, `Rollout ns/name`: the object's own kind."""
    return _where(obj, str(obj.get("kind") or "Deployment"))


def workload_ref(workload: Mapping[str, Any]) -> str | None:
    """The Deployment whose pod template an Argo Rollout reads (`spec.workloadRef`), or None.

    A Rollout with `spec.workloadRef` and no `spec.template` takes its pods' template from
    the Deployment it names (Argo Rollouts, "Migrating to Rollouts": the template is updated
    in the Deployment, never in the Rollout), so the sidecar goes into that Deployment's
    template and the Rollout's own strategy rolls it out. Argo only ever writes the
    Deployment's `spec.replicas`, by `workloadRef.scaleDown`: `never` (the default, its pods
    keep running beside the Rollout's), `onsuccess` (scaled to 0 once the Rollout is
    healthy), `progressively` (scaled down as the Rollout scales up); it records the
    generation it read in the Rollout's `status.workloadObservedGeneration`. Argo follows
    only a Deployment there; another kind is refused (WorkloadRefNotSupported).
    """
    spec = workload.get("spec") or {}
    ref = spec.get("workloadRef")
    if workload.get("kind") != "Rollout" or not ref or spec.get("template"):
        return None
    if ref.get("kind") != "Deployment" or not ref.get("name"):
        raise InjectionError(
            f"{_workload(workload)}: spec.workloadRef points at {ref.get('kind')} "
            f"{ref.get('name')!r}; mlwarden follows a workloadRef to a Deployment (apps/v1), "
            "as Argo Rollouts documents it, and nothing else",
            reason="WorkloadRefNotSupported",
        )
    return str(ref["name"])


def _check_workload(workload: Mapping[str, Any], where: str) -> None:
    """What the pod-template injection cannot take, by kind, refused before any change."""
    name = workload_ref(workload)
    if name is not None:
        # The caller plans on the referenced Deployment (`rollout=` names the Rollout).
        raise InjectionError(
            f"{where}: spec.workloadRef: the pod template is Deployment {name!r}'s; plan the "
            "injection on that Deployment",
            reason="WorkloadRefNotSupported",
        )


def _annotation(obj: Mapping[str, Any], key: str) -> str | None:
    value = ((obj.get("metadata") or {}).get("annotations") or {}).get(key)
    return None if value is None else str(value)


def read_record(deployment: Mapping[str, Any]) -> InjectionRecord | None:
    """The Deployment's injection record, or None when mlwarden has not injected it."""
    text = _annotation(deployment, INJECTED_ANNOTATION)
    if text is None:
        return None
    return InjectionRecord.from_annotation(text, where=_workload(deployment))


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


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def rollout_complete(deployment: Mapping[str, Any]) -> bool:
    """Every replica runs the current template and is available; no old replica is left.

    A Deployment by its replica counts; a StatefulSet also by its revisions
    (status.currentRevision == updateRevision: a rolling-update partition above 0 keeps the
    pods below it on the old template, so it is not complete until the partition is 0); an
    Argo Rollout by its pod hashes (status.currentPodHash == stableRS: a canary or a
    blue-green preview is not complete until promoted). Argo's status.observedGeneration is
    not the object's generation, so it is not compared for a Rollout.
    """
    kind = deployment.get("kind") or "Deployment"
    meta = deployment.get("metadata") or {}
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    if kind != "Rollout" and _int(status.get("observedGeneration")) < _int(meta.get("generation")):
        return False
    wanted = _int(spec.get("replicas", 1))
    updated = _int(status.get("updatedReplicas"))
    replicas = _int(status.get("replicas"))
    if kind == "StatefulSet":
        if status.get("currentRevision") != status.get("updateRevision"):
            return False
        available = _int(status.get("availableReplicas", status.get("readyReplicas")))
    else:
        available = _int(status.get("availableReplicas"))
    pod_hash = status.get("currentPodHash")
    if kind == "Rollout" and (not pod_hash or pod_hash != status.get("stableRS")):
        return False
    return updated == replicas == available and updated >= wanted


def workload_ref_observed(rollout: Mapping[str, Any], deployment: Mapping[str, Any]) -> bool:
    """Argo has read the referenced Deployment's template as it is now: the Rollout's
    status.workloadObservedGeneration is the Deployment's generation (Argo writes a string)."""
    seen = str((rollout.get("status") or {}).get("workloadObservedGeneration") or "")
    return seen == str((deployment.get("metadata") or {}).get("generation") or "")


def _workload_ref_hold(rollout: Mapping[str, Any], deployment: Mapping[str, Any]) -> str:
    if not workload_ref_observed(rollout, deployment):
        seen = (rollout.get("status") or {}).get("workloadObservedGeneration")
        generation = (deployment.get("metadata") or {}).get("generation")
        return (
            f" (Argo Rollouts has not read generation {generation} of the Deployment yet: "
            f"the Rollout's status.workloadObservedGeneration is {seen})"
        )
    return rollout_hold(rollout)


def rollout_hold(workload: Mapping[str, Any]) -> str:
    """Why a rollout may not finish on its own, in words ("" when nothing holds it)."""
    kind = workload.get("kind") or "Deployment"
    spec = workload.get("spec") or {}
    if kind == "StatefulSet":
        strategy = spec.get("updateStrategy") or {}
        if strategy.get("type") == "OnDelete":
            return (
                " (updateStrategy OnDelete: the StatefulSet controller replaces a pod only when "
                "it is deleted; mlwarden does not delete pods)"
            )
        partition = _int((strategy.get("rollingUpdate") or {}).get("partition"))
        if partition:
            return (
                f" (rollingUpdate.partition {partition}: pods with an ordinal below it keep the "
                "old template until the partition is lowered; mlwarden does not change it)"
            )
    if spec.get("paused"):
        return f" (the {kind} is paused)"
    if kind == "Rollout":
        status = workload.get("status") or {}
        if status.get("phase") in ("Paused", "Progressing"):
            why = status.get("message") or "its steps"
            return f" (the Rollout is {status.get('phase')}: {why})"
    return ""


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


# Service port appProtocols that say the port carries HTTP/2 (gRPC): Kubernetes' own
# `kubernetes.io/h2c`, and the names Istio and Gateway implementations read.
GRPC_APP_PROTOCOLS: Final = ("grpc", "h2c", "kubernetes.io/h2c", "http2", "grpc-web")


def _check_protocol(
    service: Mapping[str, Any], routed: Sequence[int], model: ObservedModel
) -> None:
    """A Service port declared as gRPC (appProtocol, or Istio's `grpc-` name prefix) is only
    rerouted through a sidecar that proxies gRPC (spec.protocol v2-grpc): the HTTP/1.1
    listener would refuse every call on it."""
    if model.spec.protocol == "v2-grpc":
        return
    ports = _service_ports(service)
    for i in routed:
        sp = ports[i]
        app = str(sp.get("appProtocol") or "").lower()
        name = str(sp.get("name") or "").lower()
        if app in GRPC_APP_PROTOCOLS or name == "grpc" or name.startswith("grpc-"):
            declared = f"appProtocol {app!r}" if app else f"name {sp.get('name')!r}"
            raise InjectionError(
                f"{_where(service, 'Service')}: port {sp.get('port')} ({declared}) carries "
                f"gRPC (HTTP/2), but spec.protocol is {model.spec.protocol!r}: the sidecar "
                "would serve it with its HTTP/1.1 listener and refuse every call, so mlwarden "
                "does not reroute it. Set spec.protocol: v2-grpc for the Open Inference "
                "Protocol over gRPC (any other gRPC service passes through uncaptured), or "
                "point spec.target.port at the model's HTTP port",
                reason="GrpcPortNotProxied",
            )


def _check_selects(service: Mapping[str, Any], deployment: Mapping[str, Any], where: str) -> None:
    """A named targetPort is resolved per pod only for the pods the Service selects."""
    selector = (service.get("spec") or {}).get("selector") or {}
    template_labels = (
        ((deployment.get("spec") or {}).get("template") or {}).get("metadata") or {}
    ).get("labels") or {}
    # Argo Rollouts adds rollouts-pod-template-hash to the selectors of the Services it
    # manages (canary/stable, active/preview) and to the pods: not in the template.
    selector = {k: v for k, v in selector.items() if k != ROLLOUTS_POD_TEMPLATE_HASH}
    if not selector or any(template_labels.get(k) != v for k, v in selector.items()):
        raise InjectionError(
            f"{_where(service, 'Service')}: spec.selector {dict(selector)} does not select the "
            f"pods of {where} (labels {dict(template_labels)}); fix spec.target.service"
        )


def _check_not_controlled(deployment: Mapping[str, Any], where: str) -> None:
    """A Deployment with a controller owner is rewritten by that owner: refuse it.

    KServe (raw deployment mode), Seldon Core and Flagger's `-primary` own the Deployment as
    its controller: they would undo the template change, or copy it where it does not
    belong. (An Argo Rollout's `workloadRef` reads a Deployment's template without owning
    it: `workload_ref`.)
    """
    owners = (deployment.get("metadata") or {}).get("ownerReferences") or []
    controller = next((o for o in owners if o.get("controller")), None)
    if controller is not None:
        raise InjectionError(
            f"{where}: metadata.ownerReferences names {controller.get('kind')} "
            f"{controller.get('name')!r} ({controller.get('apiVersion')}) as its controller, "
            "which rewrites the pod template; mlwarden does not patch a Deployment another "
            "controller owns. Point spec.target at a Deployment nobody owns, or inject "
            'through that controller (docs/operator.md, "GitOps, rollout undo and other '
            'writers of the Deployment")',
            reason="ControlledDeployment",
        )


def other_selected(
    *,
    service: Mapping[str, Any],
    deployment: Mapping[str, Any],
    deployments: Sequence[Mapping[str, Any]],
) -> list[str]:
    """The other Deployments (names) whose pods the Service's selector also selects."""
    selector = (service.get("spec") or {}).get("selector") or {}
    mine = (deployment.get("metadata") or {}).get("name")
    out = []
    for other in deployments:
        name = (other.get("metadata") or {}).get("name")
        if name == mine:
            continue
        labels = (((other.get("spec") or {}).get("template") or {}).get("metadata") or {}).get(
            "labels"
        ) or {}
        if selector and all(labels.get(k) == v for k, v in selector.items()):
            out.append(str(name))
    return sorted(out)


def check_selects_only(
    *,
    service: Mapping[str, Any],
    deployment: Mapping[str, Any],
    deployments: Sequence[Mapping[str, Any]],
) -> None:
    """A Service that also selects other Deployments' pods is refused, before any change.

    Its named targetPort would resolve on those pods too: once switched to the sidecar's
    port name they would have no endpoint, and what they serve would pass no sidecar.
    """
    others = other_selected(service=service, deployment=deployment, deployments=deployments)
    if others:
        selector = dict((service.get("spec") or {}).get("selector") or {})
        raise InjectionError(
            f"{_where(service, 'Service')}: spec.selector {selector} also selects the pods of "
            f"Deployment {', '.join(others)} (pod template labels), not only those of "
            f"{_workload(deployment)}; repointing it would drop or bypass them. "
            "Give the target's pods a label of their own and point a Service selecting it "
            "at them (spec.target.service)",
            reason="ServiceSelectsOtherPods",
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


@dataclass(frozen=True)
class ShutdownTiming:
    """How an injected pod's sidecar stops, fitted into the pod's grace period.

    On deletion the kubelet runs the sidecar's preStop sleep (`pre_stop` s: the endpoint
    removal reaches kube-proxies and ingresses while the sidecar serves as before), then sends
    SIGTERM: the sidecar drains (`drain` s: /readyz 503, `Connection: close` on every response,
    still accepting), stops accepting, and has `shutdown` s for requests in flight and its last
    capture flush. All of it must end before `terminationGracePeriodSeconds` (then SIGKILL);
    the user's grace period is never changed: a short one shortens preStop first, then the
    drain, and `note` says so.
    """

    pre_stop: int
    drain: int
    shutdown: int
    note: str = ""


DEFAULT_GRACE_SECONDS: Final = 30  # the API server's default terminationGracePeriodSeconds
_MARGIN_SECONDS: Final = 1  # between the sidecar's exit and SIGKILL
_MIN_SHUTDOWN_SECONDS: Final = 3  # in-flight requests and the last flush, at the least


def shutdown_timing(*, grace: int | None, settings: OperatorSettings) -> ShutdownTiming:
    """The sidecar's preStop, drain and shutdown budget within a grace period of `grace` s."""
    grace = DEFAULT_GRACE_SECONDS if grace is None else max(int(grace), 0)
    room = max(grace - _MARGIN_SECONDS - _MIN_SHUTDOWN_SECONDS, 0)
    drain = min(settings.sidecar_drain_seconds, room)
    pre_stop = min(settings.sidecar_prestop_seconds, room - drain)
    shutdown = max(grace - _MARGIN_SECONDS - pre_stop - drain, 1)
    note = ""
    full = (
        settings.sidecar_prestop_seconds
        + settings.sidecar_drain_seconds
        + _MARGIN_SECONDS
        + _MIN_SHUTDOWN_SECONDS
    )
    if (pre_stop, drain) != (settings.sidecar_prestop_seconds, settings.sidecar_drain_seconds):
        note = (
            f"terminationGracePeriodSeconds {grace} leaves the sidecar preStop {pre_stop}s and "
            f"drain {drain}s (configured {settings.sidecar_prestop_seconds}s and "
            f"{settings.sidecar_drain_seconds}s); set it to at least {full}s for both"
        )
    return ShutdownTiming(pre_stop=pre_stop, drain=drain, shutdown=shutdown, note=note)


def sidecar_inputs(
    *, model: ObservedModel, settings: OperatorSettings, upstream_port: int, port_name: str
) -> str:
    """What the sidecar must follow, as one string: a change here is a reason to re-render it.

    The ObservedModel's parts of the sidecar (its name, namespace, protocol, the model's port,
    the port name the Service uses) and the detector's port (its URL). The operator's own
    defaults (image, resources, the sidecar's ports) are not inputs: they change only when an
    upgrade is asked for.
    """
    return _json(
        [model.namespace, model.name, model.spec.protocol, upstream_port, port_name,
         settings.detector_port]
    )  # fmt: skip


def sidecar_container(
    *,
    model: ObservedModel,
    settings: OperatorSettings,
    upstream_port: int,
    port_name: str,
    timing: ShutdownTiming | None = None,
    pod_runs_as_root: bool = False,
) -> dict[str, Any]:
    """The `mlwarden-sidecar` container: proxy on `port_name`, admin port for probes.

    No runAsUser (OpenShift assigns one), unless the pod's securityContext sets uid 0: the
    container would inherit it and runAsNonRoot would refuse to start it, so it takes the
    image's own uid.
    """
    collector = f"http://{detector_name(model.name)}.{model.namespace}.svc:{settings.detector_port}"
    timing = timing or shutdown_timing(grace=None, settings=settings)
    security = plain(RESTRICTED_SECURITY_CONTEXT)
    if pod_runs_as_root:
        security["runAsUser"] = IMAGE_UID
    container: dict[str, Any] = {
        "name": SIDECAR_CONTAINER,
        "image": settings.sidecar_image,
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
            # The model revision every record is stamped with: the pod's pod-template-hash,
            # which the Deployment controller puts on each ReplicaSet's pods, so every
            # ReplicaSet of the Deployment is a revision of its own with no work by anyone
            # (the Downward API; a pod without the label gets "", which the sidecar reads as
            # no revision). The operator maps a hash to the Deployment revision and image
            # through the ReplicaSets (`react.revisions`).
            # A StatefulSet's pods carry their ControllerRevision's name instead
            # (controller-revision-hash), an Argo Rollout's rollouts-pod-template-hash.
            {
                "name": ENV_MODEL_REVISION,
                "valueFrom": {"fieldRef": {"fieldPath": revision_field(model.spec.target.kind)}},
            },
            {"name": "MLWARDEN_DRAIN_SECONDS", "value": str(timing.drain)},
            {"name": "MLWARDEN_SHUTDOWN_TIMEOUT", "value": str(timing.shutdown)},
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
        "securityContext": security,
        "volumeMounts": [{"name": SIDECAR_VOLUME, "mountPath": MANIFEST_DIR, "readOnly": True}],
    }
    if timing.pre_stop:
        # The kubelet's own sleep (Kubernetes 1.30+): the image needs no `sleep` binary, and
        # nothing on the admin port can be called to take the pod out of service.
        container["lifecycle"] = {"preStop": {"sleep": {"seconds": timing.pre_stop}}}
    return container


def _sidecar_volume(model: ObservedModel) -> dict[str, Any]:
    """The manifest ConfigMap; optional, so a pod starts (sidecar without a manifest) without it."""
    return {
        "name": SIDECAR_VOLUME,
        "configMap": {"name": detector_name(model.name), "optional": True},
    }


def istio_injection(
    namespace_labels: Mapping[str, str], template_meta: Mapping[str, Any]
) -> str | None:
    """Why Istio's proxy will be in these pods (words), or None when it will not.

    Istio injects a pod when its namespace is labelled `istio-injection=enabled` or
    `istio.io/rev=<revision>`, or the pod itself is labelled `istio.io/rev` or
    `sidecar.istio.io/inject: "true"` (label or, in older releases, annotation); a pod's
    `sidecar.istio.io/inject: "false"` opts out.
    """
    labels = template_meta.get("labels") or {}
    annotations = template_meta.get("annotations") or {}
    for where, values in (("label", labels), ("annotation", annotations)):
        value = values.get(ISTIO_INJECT)
        if value is not None:
            if str(value).lower() == "true":
                return f'its pod template\'s {where} {ISTIO_INJECT}: "true"'
            return None
    if labels.get(ISTIO_REV):
        return f"its pod template's label {ISTIO_REV}: {labels[ISTIO_REV]}"
    if namespace_labels.get("istio-injection") == "enabled":
        return "its namespace's label istio-injection=enabled"
    if namespace_labels.get("istio-injection") is None and namespace_labels.get(ISTIO_REV):
        return f"its namespace's label {ISTIO_REV}={namespace_labels[ISTIO_REV]}"
    return None


def _ports_of(value: str | None) -> list[str]:
    return [p.strip() for p in (value or "").split(",") if p.strip()]


def _ports_again(now: str | None, was: str | None, value: str) -> tuple[str | None, str]:
    """(value before, value set) to add the recorded ports again to a port list as it is now.

    Unedited since, `now` is `was` and the result is the record's. Edited, the edit is kept:
    the ports the injection added go back in, and only they are taken out on undo.
    """
    added = [p for p in _ports_of(value) if p not in _ports_of(was)]
    before = ",".join(p for p in _ports_of(now) if p not in added)
    return (before or (None if was is None else "")), _excluded_ports(now, *added)


def _excluded_ports(value: str | None, *add: int | str) -> str:
    """A comma-separated port list with `add` appended, each port once, order kept."""
    ports = _ports_of(value)
    for port in add:
        if str(port) not in ports:
            ports.append(str(port))
    return ",".join(ports)


@dataclass(frozen=True)
class _Injected:
    """A pod spec's containers and volumes with the sidecar in, and the record of it."""

    record: InjectionRecord
    containers: list[dict[str, Any]]
    volumes: list[dict[str, Any]]
    pull_secrets: list[dict[str, Any]]  # the pod spec's whole imagePullSecrets list
    annotations: dict[str, str]  # pod template annotations to set
    note: str = ""  # about the pod, for the plan's message (a short grace period)


def _sidecar_ports(sidecar: Mapping[str, Any]) -> list[int]:
    return [int(p.get("containerPort", 0)) for p in sidecar.get("ports") or []]


def _check_istio(sidecar: Mapping[str, Any], istio: str | None, *, where: str) -> None:
    """Istio's proxy binds 15000-15090 in the same network namespace: stay out of it."""
    if istio is None:
        return
    clashing = [p for p in _sidecar_ports(sidecar) if p in ISTIO_PORTS]
    if clashing:
        raise InjectionError(
            f"{where}: Istio injects its proxy into these pods ({istio}), which uses ports "
            f"{ISTIO_PORTS.start}-{ISTIO_PORTS.stop - 1}; the sidecar's port(s) {clashing} are "
            "in that range. Set MLWARDEN_SIDECAR_PORT / MLWARDEN_SIDECAR_ADMIN_PORT (chart: "
            "sidecar.port, sidecar.adminPort) outside it (defaults 18080, 18090)"
        )


def _check_collisions(
    pod_spec: Mapping[str, Any],
    port: _ModelPort,
    case: Literal["A", "B"],
    sidecar: Mapping[str, Any],
    *,
    where: str,
) -> None:
    """Port numbers and names must stay unique in the pod once the sidecar is in."""
    numbers = set(_sidecar_ports(sidecar))
    if port.number in numbers:
        raise InjectionError(
            f"{where}: the model port {port.number} of container {port.container!r} is one of "
            f"the sidecar's ports {sorted(numbers)}; "
            "set MLWARDEN_SIDECAR_PORT / MLWARDEN_SIDECAR_ADMIN_PORT on the operator"
        )
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
    template_annotations: Mapping[str, Any] | None = None,
    istio: str | None = None,
    frozen: InjectionRecord | None = None,
    upgrade: str | None = None,
) -> _Injected:
    """The one template change, from a pod spec (and its annotations) without the sidecar.

    With `frozen` (a record with its sidecar), the sidecar, pull secrets and pod annotations
    are those it recorded; otherwise they are rendered from `settings`, for `istio`.
    """
    containers = copy.deepcopy(_containers(pod_spec))
    if any(c.get("name") == SIDECAR_CONTAINER for c in containers):
        raise InjectionError(
            f"{where}: spec.template.spec.containers already has a container named "
            f"{SIDECAR_CONTAINER!r} that mlwarden did not put there (no {INJECTED_ANNOTATION} "
            "annotation); remove or rename it"
        )
    port_name = port.name if case == "A" and port.name is not None else SIDECAR_PORT_NAME_DEFAULT
    inputs = sidecar_inputs(
        model=model, settings=settings, upstream_port=port.number, port_name=port_name
    )
    annotations_now = dict(template_annotations or {})
    existing_secrets = copy.deepcopy(list(pod_spec.get("imagePullSecrets") or []))
    present = {str(s.get("name")) for s in existing_secrets}
    if frozen is not None and frozen.sidecar is not None:
        sidecar = copy.deepcopy(frozen.sidecar)
        note = ""  # the recorded sidecar keeps the shutdown timing it went in with
        inputs = frozen.inputs or inputs
        upgrade = frozen.upgrade
        added_secrets = [n for n in frozen.pull_secrets if n not in present]
        # The recorded ports, added again to the annotation as it is now (a person may have
        # edited it since): their edit is kept, and nothing changes when ours are still in.
        pod_annotations = tuple(
            (k, *_ports_again(annotations_now.get(k), was, value))
            for k, was, value in frozen.pod_annotations
        )
    else:
        run_as = (pod_spec.get("securityContext") or {}).get("runAsUser")
        timing = shutdown_timing(
            grace=pod_spec.get("terminationGracePeriodSeconds"), settings=settings
        )
        note = timing.note
        sidecar = sidecar_container(
            model=model,
            settings=settings,
            upstream_port=port.number,
            port_name=port_name,
            pod_runs_as_root=run_as == 0,
            timing=timing,
        )
        _check_istio(sidecar, istio, where=where)
        added_secrets = [n for n in settings.image_pull_secrets if n not in present]
        pod_annotations = ()
        if istio is not None:
            # Prometheus scrapes the admin port from outside the mesh; Istio's proxy would
            # demand mTLS of it. Only /metrics, /healthz and /readyz are served there.
            was = annotations_now.get(ISTIO_EXCLUDE_INBOUND)
            value = _excluded_ports(was, settings.sidecar_admin_port)
            if value != was:
                pod_annotations = ((ISTIO_EXCLUDE_INBOUND, was, value),)
    _check_collisions(pod_spec, port, case, sidecar, where=where)
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
    containers.append(sidecar)
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
        sidecar=copy.deepcopy(sidecar),
        inputs=inputs,
        upgrade=upgrade,
        pull_secrets=tuple(added_secrets),
        pod_annotations=pod_annotations,
    )
    return _Injected(
        record=record,
        containers=containers,
        volumes=volumes,
        pull_secrets=existing_secrets + [{"name": n} for n in added_secrets],
        annotations={k: v for k, _, v in pod_annotations},
        note=note,
    )


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
    if record.pull_secrets:
        kept = [
            s
            for s in spec.get("imagePullSecrets") or []
            if s.get("name") not in record.pull_secrets
        ]
        if kept:
            spec["imagePullSecrets"] = kept
        else:
            spec.pop("imagePullSecrets", None)
    if record.volume_added:
        volumes = [v for v in spec.get("volumes") or [] if v.get("name") != SIDECAR_VOLUME]
        if volumes:
            spec["volumes"] = volumes
        else:
            spec.pop("volumes", None)
    return spec


def _template_annotations(deployment: Mapping[str, Any]) -> dict[str, Any]:
    template = (deployment.get("spec") or {}).get("template") or {}
    return dict(plain((template.get("metadata") or {}).get("annotations") or {}))


def _annotations_undone(
    annotations: Mapping[str, Any], record: InjectionRecord
) -> dict[str, str | None]:
    """The pod template annotations to write back: each one the injection set, if unchanged."""
    return {key: was for key, was, value in record.pod_annotations if annotations.get(key) == value}


def _clean_annotations(
    annotations: Mapping[str, Any], record: InjectionRecord | None
) -> dict[str, Any]:
    out = dict(annotations)
    if record is not None:
        for key, was in _annotations_undone(annotations, record).items():
            if was is None:
                out.pop(key, None)
            else:
                out[key] = was
    return out


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
    pull_secrets: list[dict[str, Any]] | None = None,
    pod_annotations: Mapping[str, str | None] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": containers}
    if volumes != (pod_spec.get("volumes") or None):
        spec["volumes"] = volumes
    if (pull_secrets or None) != (pod_spec.get("imagePullSecrets") or None):
        spec["imagePullSecrets"] = pull_secrets or None
    template: dict[str, Any] = {"spec": spec}
    current = _template_annotations(deployment)
    changed = {k: v for k, v in (pod_annotations or {}).items() if current.get(k) != v}
    if changed:
        template["metadata"] = {"annotations": changed}
    return {
        "metadata": _meta_patch(deployment, {INJECTED_ANNOTATION: annotation}),
        "spec": {"template": template},
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


def approval_id(deployment: Mapping[str, Any]) -> str:
    """The id a person approves (APPROVE_ANNOTATION) to let the sidecar into a Recreate rollout."""
    return f"inject-{(deployment.get('metadata') or {}).get('name', '?')}"


def approve_injection_command(model: ObservedModel, deployment: Mapping[str, Any]) -> str:
    return (
        f"kubectl annotate om {model.name} -n {model.namespace} "
        f"{APPROVE_ANNOTATION}={approval_id(deployment)} --overwrite"
    )


def upgrade_requested(deployment: Mapping[str, Any], upgrade: str | None) -> bool:
    """Does the ObservedModel's UPGRADE_SIDECAR_ANNOTATION ask for a sidecar not yet rendered?"""
    if not upgrade:
        return False
    try:
        record = read_record(deployment)
    except InjectionError:
        return False
    return record is not None and record.upgrade != upgrade


def rollout_stalled(deployment: Mapping[str, Any]) -> str | None:
    """The controller's message when the current rollout exceeded progressDeadlineSeconds."""
    meta = deployment.get("metadata") or {}
    status = deployment.get("status") or {}
    if _int(status.get("observedGeneration")) < _int(meta.get("generation")):
        return None  # the controller has not looked at the current template yet
    for cond in status.get("conditions") or []:
        if (
            cond.get("type") == "Progressing"
            and cond.get("status") == "False"
            and cond.get("reason") == "ProgressDeadlineExceeded"
        ):
            return str(cond.get("message") or "ProgressDeadlineExceeded")
    return None


def plan_injection(
    *,
    deployment: Mapping[str, Any],
    service: Mapping[str, Any],
    model: ObservedModel,
    settings: OperatorSettings,
    namespace_labels: Mapping[str, str] | None = None,
    upgrade: str | None = None,
    upgrade_now: bool = True,
    approvals: frozenset[str] = frozenset(),
    rollout: Mapping[str, Any] | None = None,
) -> InjectionPlan:
    """The next step towards the sidecar in the model's pods and the Service through it.

    A sidecar once injected stays as it was (the record's frozen copy), whatever operator
    plans later, until `upgrade` (the ObservedModel's UPGRADE_SIDECAR_ANNOTATION, passed when
    the caller lets an upgrade start) differs from the one it was rendered for, or the
    sidecar's inputs (`sidecar_inputs`) changed. With `upgrade_now` False the caller holds a
    requested upgrade back (one upgrade rollout at a time). `namespace_labels` tell whether
    Istio injects the namespace; `approvals` are the ids the ObservedModel approves.

    `rollout`: the Argo Rollout whose spec.workloadRef names `deployment` (`workload_ref`).
    The template change goes into the Deployment; the rollout is complete when Argo has read
    it (`workload_ref_observed`) and rolled it out, and the Deployment's own pods (if
    scaleDown left any) have it too.
    """
    where = _workload(deployment)
    if rollout is not None:
        where += f" (the pod template of {_workload(rollout)}, spec.workloadRef)"
    _check_workload(deployment, where)
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
    # Putting the Service back (above) is always safe; changing anything else is not.
    _check_not_controlled(deployment, where)
    clean_spec = pod_spec if record is None else _without_sidecar(pod_spec, record)
    annotations = _template_annotations(deployment)
    clean_annotations = _clean_annotations(annotations, record)
    clean_service = dict(service)
    if original_ports is not None:
        clean_service["spec"] = {
            **(service.get("spec") or {}),
            "ports": _restored_ports(current_ports, original_ports),
        }
    port = _locate(clean_spec, model, where)
    _check_selects(service, deployment, where)
    by_name, by_number = _routes(clean_service, port, where=where)
    _check_protocol(clean_service, by_name + by_number, model)
    case: Literal["A", "B"] = "A" if by_name else "B"
    template_meta = {
        **(((deployment.get("spec") or {}).get("template") or {}).get("metadata") or {}),
        "annotations": clean_annotations,
    }
    istio = istio_injection(namespace_labels or {}, template_meta)
    port_name = port.name if case == "A" and port.name is not None else SIDECAR_PORT_NAME_DEFAULT

    target = InjectionRecord(model=model.name, container=port.container, port=port.number,
                             ports=None, case=case, sidecar_port_name=port_name,
                             volume_added=False)  # fmt: skip
    if record is not None and not record.same_target(target):
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

    inject = partial(
        _inject,
        clean_spec,
        port=port,
        case=case,
        model=model,
        settings=settings,
        where=where,
        template_annotations=clean_annotations,
    )
    frozen = None
    upgrading = False
    if record is not None:
        frozen = record
        if frozen.sidecar is None:  # recorded before sidecars were frozen: the one running
            running = [c for c in _containers(pod_spec) if c.get("name") == SIDECAR_CONTAINER]
            frozen = replace(record, sidecar=running[0] if running else None, upgrade=upgrade)
        upgrading = bool(upgrade) and upgrade != frozen.upgrade and upgrade_now
        inputs = sidecar_inputs(
            model=model, settings=settings, upstream_port=port.number, port_name=port_name
        )
        if frozen.sidecar is None or upgrading or frozen.inputs not in (None, inputs):
            frozen = None
    # Istio's port range is checked for a sidecar rendered anew from the operator's settings;
    # a frozen one keeps the ports it went in with (collisions with the model's are checked).
    injected = inject(frozen=frozen) if frozen else inject(istio=istio, upgrade=upgrade)

    containers_path = (*_TEMPLATE_PATH, "containers")
    template_right = (
        covers(pod_spec.get("containers") or [], injected.containers, path=containers_path)
        and covers(pod_spec.get("volumes") or [], injected.volumes)
        and covers(pod_spec.get("imagePullSecrets") or [], injected.pull_secrets)
        and all(annotations.get(k) == v for k, v in injected.annotations.items())
    )
    if not template_right or record != injected.record:
        patch = _template_patch(
            deployment,
            pod_spec,
            containers=injected.containers,
            volumes=injected.volumes,
            annotation=injected.record.to_annotation(),
            pull_secrets=injected.pull_secrets,
            pod_annotations=injected.annotations,
        )
        if template_right:  # only the record is out of date: do not touch the template
            del patch["spec"]
        elif record is None and not model.spec.target.allow_recreate:
            strategy = ((deployment.get("spec") or {}).get("strategy") or {}).get("type")
            if strategy == "Recreate" and approval_id(deployment) not in approvals:
                return InjectionPlan(
                    state="awaiting-approval",
                    message=(
                        f"{where} uses strategy Recreate: injecting the sidecar stops every pod "
                        "before the new ones start (downtime). Approve with "
                        f"`{approve_injection_command(model, deployment)}`, or set "
                        "spec.target.allowRecreate: true"
                    ),
                )
        if upgrading and not template_right:
            how = (
                f"upgrading the sidecar ({UPGRADE_SIDECAR_ANNOTATION}={upgrade}) to image "
                f"{injected.containers[-1].get('image')}"
            )
        elif record is not None and not template_right:
            how = "putting the recorded sidecar back"
        else:
            how = (
                f"renaming port {port.name!r} of container {port.container!r} to "
                f"{MODEL_PORT_RENAMED!r} and giving the name to the sidecar"
                if case == "A"
                else f"adding the sidecar with its port {SIDECAR_PORT_NAME_DEFAULT!r}"
            )
        if istio is not None and record is None:
            how += f"; Istio injects these pods ({istio}): admin port excluded from its capture"
        note = f"; {injected.note}" if injected.note else ""
        return InjectionPlan(
            state="injecting",
            message=f"{where}: {how} (case {case}), in one template change{note}",
            deployment_patch=patch,
        )
    if rollout is not None and not (
        workload_ref_observed(rollout, deployment) and rollout_complete(rollout)
    ):
        return InjectionPlan(
            state="waiting-for-rollout",
            message=f"{where}: waiting for the pods with the sidecar to roll out"
            + _workload_ref_hold(rollout, deployment),
        )
    if not rollout_complete(deployment):
        stalled = rollout_stalled(deployment)
        if stalled is not None:
            return InjectionPlan(
                state="rollout-stalled",
                message=(
                    f"{where}: the rollout with the sidecar did not progress within its "
                    f"progressDeadlineSeconds (condition Progressing=False, reason "
                    f"ProgressDeadlineExceeded: {stalled})"
                ),
            )
        return InjectionPlan(
            state="waiting-for-rollout",
            message=(
                f"{where}: waiting for the pods with the sidecar to roll out"
                f"{rollout_hold(deployment)}"
            ),
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
            undone = _annotations_undone(_template_annotations(deployment), record)
            return InjectionPlan(
                state="removing",
                message=(
                    f"{_workload(deployment)}: removing the sidecar and restoring "
                    f"container {record.container!r}'s ports"
                ),
                deployment_patch=_template_patch(
                    deployment,
                    pod_spec,
                    containers=clean["containers"],
                    volumes=clean.get("volumes"),
                    annotation=None,
                    pull_secrets=clean.get("imagePullSecrets"),
                    pod_annotations=undone,
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
    meta: dict[str, Any] = plain(template.get("metadata") or {})
    annotations = dict(meta.get("annotations") or {})
    injected = _inject(
        pod_spec,
        port=port,
        case=case,
        model=model,
        settings=settings,
        where=where,
        template_annotations=annotations,
        istio=istio_injection({}, meta),  # the namespace's labels are not at hand here
    )
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
    if injected.record.pull_secrets:
        ops.append({"op": "add", "path": "/spec/imagePullSecrets", "value": injected.pull_secrets})
    if injected.annotations and "annotations" not in meta:
        if "metadata" not in template:
            ops.append({"op": "add", "path": "/metadata", "value": {}})
        ops.append({"op": "add", "path": "/metadata/annotations", "value": {}})
    for key, value in injected.annotations.items():
        pointer = key.replace("~", "~0").replace("/", "~1")
        ops.append({"op": "add", "path": f"/metadata/annotations/{pointer}", "value": value})
    return ops
