"""The resource graph of one ObservedModel: what produces each value, and what feeds what.

Nodes are objects of the model's namespace, keyed by (kind, name):

    target      the model's workload (`spec.target`: a Deployment, StatefulSet, Argo Rollout
                or KServe InferenceService); it produces the prediction
    pipeline    a component of `spec.pipeline` (Deployment, StatefulSet, DaemonSet, CronJob,
                Job, ConfigMap, Secret, or another ObservedModel), with its `produces`
    annotation  a workload that says what it produces where it lives:
                `mlwarden.io/produces: "amount,country"` on its metadata (a CronJob may carry it
                on its jobTemplate instead); `mlwarden.io/depends-on: "feature-etl,ConfigMap/geo"`
                names what it reads from (a bare name is looked up among the nodes, then among
                the namespace's workloads and configs)
    mount       a ConfigMap or Secret a workload node mounts (volume, projected volume, envFrom
                or env valueFrom), found in its pod template
    model-target  the target workload of another ObservedModel that is a component
    canary      a Deployment a reaction names as the canary or stable backend (router
                `replicas`, or `pause` on a canary): it serves the model too, so it produces
                the prediction and counts as the model's side like the target

Edges point upstream (`depends_on`): a component's `dependsOn`, the annotation's, a workload to
what it mounts, an ObservedModel component to its target Deployment, and the target to every
component that produces a feature (features flow into the model, which makes the prediction).
Lineage walks these edges breadth-first from the producers of a value, so each node gets its
shortest path (0 hops: it produces the value itself).

mlwarden's own objects are not part of any model's lineage: the `mlwarden-sidecar` container's
references and ConfigMaps owned by an ObservedModel (the detector's) are skipped. Components in
another namespace stay nodes (their lineage counts) but have no objects in the snapshot, so no
timeline; `problems` records what could not be resolved.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from mlwarden.diagnose.snapshot import ObjectKey, Snapshot, dig
from mlwarden.names import SIDECAR_CONTAINER  # re-exported: the diagnosis skips it

__all__ = [
    "CONFIG_KINDS",
    "DEPENDS_ON_ANNOTATION",
    "PRODUCES_ANNOTATION",
    "SIDECAR_CONTAINER",
    "WORKLOAD_KINDS",
    "Node",
    "Origin",
    "ResourceGraph",
    "build_graph",
    "config_refs",
    "pod_template",
]

PRODUCES_ANNOTATION: Final = "mlwarden.io/produces"
DEPENDS_ON_ANNOTATION: Final = "mlwarden.io/depends-on"
WORKLOAD_KINDS: Final = ("Deployment", "StatefulSet", "DaemonSet", "CronJob", "Job")
CONFIG_KINDS: Final = ("ConfigMap", "Secret")
_COMPONENT_KINDS: Final = (*WORKLOAD_KINDS, *CONFIG_KINDS, "ObservedModel")

Origin = Literal["target", "pipeline", "annotation", "mount", "model-target", "canary"]


@dataclass(frozen=True)
class Node:
    """One object in the graph; `observed` when its object is in the snapshot."""

    kind: str
    name: str
    origin: Origin
    produces: tuple[str, ...] = ()
    depends_on: tuple[ObjectKey, ...] = ()
    mounted_by: tuple[ObjectKey, ...] = ()
    namespace: str | None = None
    observed: bool = False

    @property
    def key(self) -> ObjectKey:
        return (self.kind, self.name)

    @property
    def label(self) -> str:
        return f"{self.kind}/{self.name}"


@dataclass(frozen=True)
class ResourceGraph:
    """The nodes, the target's key, the prediction's name, and what could not be resolved."""

    nodes: Mapping[ObjectKey, Node]
    target: ObjectKey
    prediction: str | None = None
    problems: tuple[str, ...] = ()

    def producers(self, value: str) -> tuple[ObjectKey, ...]:
        """The nodes that produce `value` (a feature, or the prediction) directly."""
        return tuple(key for key, node in self.nodes.items() if value in node.produces)

    def upstream(self, starts: Iterable[ObjectKey]) -> dict[ObjectKey, tuple[ObjectKey, ...]]:
        """Every node reachable upstream from `starts`, with its shortest path.

        The path runs from a start to the node itself (a start's path is just itself), so
        `len(path) - 1` is the number of hops. Ties go to the start listed first.
        """
        paths: dict[ObjectKey, tuple[ObjectKey, ...]] = {}
        queue: deque[ObjectKey] = deque()
        for start in starts:
            if start in self.nodes and start not in paths:
                paths[start] = (start,)
                queue.append(start)
        while queue:
            key = queue.popleft()
            for dep in self.nodes[key].depends_on:
                if dep in self.nodes and dep not in paths:
                    paths[dep] = (*paths[key], dep)
                    queue.append(dep)
        return paths

    def is_model_side(self, key: ObjectKey) -> bool:
        """The target itself, a Deployment serving the model beside it (a canary), or a
        ConfigMap/Secret the target mounts: the model's own config."""
        node = self.nodes.get(key)
        return key == self.target or (
            node is not None and (node.origin == "canary" or self.target in node.mounted_by)
        )


# --------------------------------------------------------------------------- pod templates


def pod_template(obj: Mapping[str, Any], kind: str) -> Mapping[str, Any]:
    """The pod template of a workload (a CronJob's is inside its jobTemplate); {} if none."""
    path = (
        ("spec", "jobTemplate", "spec", "template") if kind == "CronJob" else ("spec", "template")
    )
    template = dig(obj, *path)
    return template if isinstance(template, Mapping) else {}


def _containers(pod_spec: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    for group in ("initContainers", "containers"):
        for container in pod_spec.get(group) or ():
            if isinstance(container, Mapping):
                yield container


def config_refs(
    pod_spec: Mapping[str, Any], *, skip_containers: Iterable[str] = (SIDECAR_CONTAINER,)
) -> list[ObjectKey]:
    """The ConfigMaps and Secrets a pod spec reads, in order of first mention.

    Volumes count only when a container that is not skipped mounts them, so the sidecar's
    volume (the detector's ConfigMap) is not the model's configuration.
    """
    skip = set(skip_containers)
    found: list[ObjectKey] = []

    def note(kind: str, name: Any) -> None:
        if isinstance(name, str) and name and (kind, name) not in found:
            found.append((kind, name))

    mounted: set[str] = set()
    for container in _containers(pod_spec):
        if container.get("name") in skip:
            continue
        for mount in container.get("volumeMounts") or ():
            if isinstance(mount, Mapping) and isinstance(mount.get("name"), str):
                mounted.add(mount["name"])
    for volume in pod_spec.get("volumes") or ():
        if not isinstance(volume, Mapping) or volume.get("name") not in mounted:
            continue
        note("ConfigMap", dig(volume, "configMap", "name"))
        note("Secret", dig(volume, "secret", "secretName"))
        for source in dig(volume, "projected", "sources") or ():
            note("ConfigMap", dig(source, "configMap", "name"))
            note("Secret", dig(source, "secret", "name"))
    for container in _containers(pod_spec):
        if container.get("name") in skip:
            continue
        for source in container.get("envFrom") or ():
            note("ConfigMap", dig(source, "configMapRef", "name"))
            note("Secret", dig(source, "secretRef", "name"))
        for env in container.get("env") or ():
            note("ConfigMap", dig(env, "valueFrom", "configMapKeyRef", "name"))
            note("Secret", dig(env, "valueFrom", "secretKeyRef", "name"))
    return found


# --------------------------------------------------------------------------- building


@dataclass
class _Draft:
    kind: str
    name: str
    origin: Origin
    produces: list[str] = field(default_factory=list)
    depends_on: list[ObjectKey] = field(default_factory=list)
    mounted_by: list[ObjectKey] = field(default_factory=list)
    namespace: str | None = None
    observed: bool = False

    def freeze(self) -> Node:
        return Node(
            kind=self.kind,
            name=self.name,
            origin=self.origin,
            produces=tuple(self.produces),
            depends_on=tuple(self.depends_on),
            mounted_by=tuple(self.mounted_by),
            namespace=self.namespace,
            observed=self.observed,
        )


def _annotation_list(obj: Mapping[str, Any], kind: str, key: str) -> list[str]:
    """A comma-separated annotation on the object (or, for a CronJob, on its jobTemplate)."""
    places = [dig(obj, "metadata", "annotations", key)]
    if kind == "CronJob":
        places.append(dig(obj, "spec", "jobTemplate", "metadata", "annotations", key))
    out: list[str] = []
    for text in places:
        if isinstance(text, str):
            out += [item.strip() for item in text.split(",") if item.strip()]
    return list(dict.fromkeys(out))


def _has_controller(obj: Mapping[str, Any]) -> bool:
    refs = dig(obj, "metadata", "ownerReferences") or ()
    return any(isinstance(r, Mapping) and r.get("controller") for r in refs)


def _owned_by_observed_model(obj: Mapping[str, Any] | None) -> bool:
    refs = dig(obj, "metadata", "ownerReferences") or ()
    return any(isinstance(r, Mapping) and r.get("kind") == "ObservedModel" for r in refs)


class _Builder:
    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self.nodes: dict[ObjectKey, _Draft] = {}
        self.problems: list[str] = []

    def add(self, key: ObjectKey, origin: Origin, produces: Iterable[str] = ()) -> _Draft:
        draft = self.nodes.get(key)
        if draft is None:
            draft = self.nodes[key] = _Draft(kind=key[0], name=key[1], origin=origin)
        for value in produces:
            if value not in draft.produces:
                draft.produces.append(value)
        return draft

    def link(self, downstream: ObjectKey, upstream: ObjectKey) -> None:
        deps = self.nodes[downstream].depends_on
        if upstream != downstream and upstream not in deps:
            deps.append(upstream)

    def resolve(self, token: str, *, where: str) -> ObjectKey | None:
        """A `depends-on` entry: `Kind/name`, or a name looked up among nodes, then objects."""
        if "/" in token:
            kind, _, name = token.partition("/")
            if kind in _COMPONENT_KINDS and name:
                return (kind, name)
            self.problems.append(
                f"{where}: {DEPENDS_ON_ANNOTATION} entry {token!r} is not Kind/name"
            )
            return None
        for key in self.nodes:
            if key[1] == token:
                return key
        for kind in (*WORKLOAD_KINDS, *CONFIG_KINDS):
            if self.snapshot.get(kind, token) is not None:
                return (kind, token)
        self.problems.append(
            f"{where}: {DEPENDS_ON_ANNOTATION} names {token!r}, which is neither a node of the "
            "graph nor a workload or config in the namespace"
        )
        return None


def build_graph(snapshot: Snapshot) -> ResourceGraph:
    """The resource graph of `snapshot.model` (see the module docstring for what is in it)."""
    model = snapshot.model
    spec = model.spec
    prediction = spec.prediction.name if spec.prediction is not None else None
    relevant = set(spec.feature_names) | ({prediction} if prediction else set())
    b = _Builder(snapshot)

    target: ObjectKey = (spec.target.kind, spec.target.name)
    b.add(target, "target", (prediction,) if prediction else ())

    # The model's other Deployments: the canary (or stable) backends reactions name, when
    # they are Deployments of this namespace (a route's backends are Services: not these).
    for reaction in spec.reactions:
        for name in (reaction.canary, reaction.stable):
            key = ("Deployment", name or "")
            if name and key != target and snapshot.get(*key) is not None:
                b.add(key, "canary", (prediction,) if prediction else ())

    by_name: dict[str, ObjectKey] = {}
    for component in spec.pipeline:
        key = (component.kind, component.name)
        draft = b.add(key, "pipeline", component.produces)
        if component.namespace and component.namespace != model.namespace:
            draft.namespace = component.namespace
        by_name[component.name] = key
    for component in spec.pipeline:
        for dep_name in component.depends_on:
            if dep_name in by_name:
                b.link((component.kind, component.name), by_name[dep_name])

    # Workloads that declare what they produce where they live.
    for kind in WORKLOAD_KINDS:
        for workload in snapshot.of_kind(kind):
            key = (kind, str(dig(workload, "metadata", "name")))
            if key == target or (kind == "Job" and _has_controller(workload)):
                continue
            produced = _annotation_list(workload, kind, PRODUCES_ANNOTATION)
            if not produced or (relevant and not relevant & set(produced)):
                continue
            b.add(key, "annotation", produced)

    # Expand: annotations' depends-on, mounted configs, other models' targets.
    queue: deque[ObjectKey] = deque(b.nodes)
    expanded: set[ObjectKey] = set()
    while queue:
        key = queue.popleft()
        if key in expanded:
            continue
        expanded.add(key)
        draft = b.nodes[key]
        found = snapshot.get(*key) if draft.namespace is None else None
        if found is None:
            continue
        draft.observed = True
        obj: Mapping[str, Any] = found
        kind, name = key
        if kind in WORKLOAD_KINDS:
            for token in _annotation_list(obj, kind, DEPENDS_ON_ANNOTATION):
                dep = b.resolve(token, where=f"{kind}/{name}")
                if dep is not None:
                    b.add(dep, "annotation")
                    b.link(key, dep)
                    queue.append(dep)
            pod_spec = dig(pod_template(obj, kind), "spec")
            for ref in config_refs(pod_spec if isinstance(pod_spec, Mapping) else {}):
                if _owned_by_observed_model(snapshot.get(*ref)):
                    continue
                mounted = b.add(ref, "mount")
                if key not in mounted.mounted_by:
                    mounted.mounted_by.append(key)
                b.link(key, ref)
                queue.append(ref)
        elif kind == "ObservedModel":
            # The other model's workload: `deployment: NAME`, or `kind` and `name`.
            kind_of = dig(obj, "spec", "target", "kind") or "Deployment"
            deployment = dig(obj, "spec", "target", "name") or dig(
                obj, "spec", "target", "deployment"
            )
            if isinstance(deployment, str) and deployment and isinstance(kind_of, str):
                dep = (kind_of, deployment)
                b.add(dep, "model-target")
                b.link(key, dep)
                queue.append(dep)

    # Features flow into the model: the target depends on every feature producer.
    for key, draft in list(b.nodes.items()):
        if key != target and any(value != prediction for value in draft.produces):
            b.link(target, key)

    if not b.nodes[target].observed:
        b.problems.append(f"the target {target[0]} {target[1]!r} is not in the snapshot")
    for key, draft in b.nodes.items():
        if draft.origin == "pipeline" and draft.namespace is None and not draft.observed:
            b.problems.append(f"pipeline component {key[0]}/{key[1]} is not in the namespace")
    return ResourceGraph(
        nodes={key: draft.freeze() for key, draft in b.nodes.items()},
        target=target,
        prediction=prediction,
        problems=tuple(b.problems),
    )
