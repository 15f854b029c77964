"""Model revisions as people know them, for every target kind: the one resolution.

The sidecar stamps every record with its pod's revision label (the operator sets
`MLWARDEN_MODEL_REVISION` from it through the Downward API), so the detector's revisions and
every alert's `modelRevision` are hashes such as `6b8f7c9d4`. People know a workload's
history by its revision number and image (`kubectl rollout history`). Each owner keeps that
history in its own objects (docs/architecture.md, "Facts about Kubernetes"):

    Deployment        its ReplicaSets: `pod-template-hash` label, the number in
                      `deployment.kubernetes.io/revision`, the template in `spec.template`
    Argo Rollout      its ReplicaSets: `rollouts-pod-template-hash`, the number in
                      `rollout.argoproj.io/revision`
    StatefulSet       its ControllerRevisions: the pods' `controller-revision-hash` is the
                      ControllerRevision's name; the number `revision`, the template
                      `data.spec.template`
    InferenceService  no sidecar: KServe's payload logger names the component's endpoint,
                      `default` (the last rolled-out revision) or `canary` (the latest ready
                      one while `canaryTrafficPercent` is set), prefixed by the component
                      when it is not the predictor (`transformer-default`); the numbers are
                      those of the Knative revisions in `status.components.<c>`
                      (`latestRolledoutRevision`, `latestReadyRevision`: `NAME-predictor-00002`
                      is revision 2), the image the component's `storageUri` or container

`history` reads those objects (kind → list, the operator's caches or a diagnosis snapshot)
into one shape, a ReplicaSet's (`pod-template-hash`, `deployment.kubernetes.io/revision`,
`spec.template`), each naming its real owner (kind and name) in `ownerReferences`:

    ReplicaSet fraud-model-6b8f7c9d4
      metadata.labels[pod-template-hash]: 6b8f7c9d4
      metadata.annotations[deployment.kubernetes.io/revision]: "7"
      metadata.ownerReferences: [Deployment fraud-model]
      spec.template.spec.containers[model].image: registry.example/fraud:1.4
    → revision 7 (fraud:1.4)

`resolve` does that for one revision (preferring one of the given owners: two Deployments
with one template share a hash); `owner_of` says which workload serves it (the diagnosis
starts a CanaryRegression there; the reactions pause it); `label` says it in words;
`status_revisions` builds the operator's `status.revisions` from the detector's
`status.detector.revisions` (its one builder). A revision no history carries (deleted, or a
`--model-revision` given by hand) is shown as it is.

Pure: objects and the detector's entries in, plain values out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from mlwarden.names import (
    CONTROLLER_REVISION_HASH,
    POD_TEMPLATE_HASH,
    ROLLOUTS_POD_TEMPLATE_HASH,
    SIDECAR_CONTAINER,
)
from mlwarden.spec import MAX_STATUS_REVISIONS, ObservedModel

# status.revisions keeps at most this many (the detector's status.detector.revisions bound).
MAX_REVISIONS: Final = MAX_STATUS_REVISIONS
_DIGEST_SHOWN: Final = 12  # hex digits of an image digest shown in a label
REVISION_ANNOTATION: Final = "deployment.kubernetes.io/revision"
ROLLOUT_REVISION: Final = "rollout.argoproj.io/revision"
# The kinds whose revisions `history` reads, with the objects that hold them.
OWNER_KINDS: Final = ("Deployment", "Rollout", "StatefulSet", "InferenceService")
HISTORY_KINDS: Final = ("ReplicaSet", "ControllerRevision", "InferenceService")
ISVC_COMPONENTS: Final = ("predictor", "transformer", "explainer")
_KNATIVE_NUMBER = re.compile(r"-(\d+)$")  # NAME-predictor-00002 → 2


def revision_of(obj: Mapping[str, Any]) -> int | None:
    """The `deployment.kubernetes.io/revision` of a Deployment or ReplicaSet, if it has one."""
    value = (_meta(obj).get("annotations") or {}).get(REVISION_ANNOTATION)
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class Revision:
    """One model revision as resolved: its hash and what its owner's history says of it."""

    revision: str  # as the records carry it: the pod's revision label, or KServe's endpoint
    deployment: str | None = None  # the name of the workload that owns it (any kind)
    deployment_revision: int | None = None
    image: str | None = None  # the model container's image, shortened (`short_image`)
    owner_kind: str | None = None  # Deployment, Rollout, StatefulSet or InferenceService

    @property
    def owner(self) -> tuple[str, str] | None:
        """(kind, name) of the workload serving this revision, when its history says."""
        if self.owner_kind is None or self.deployment is None:
            return None
        return self.owner_kind, self.deployment

    @property
    def label(self) -> str:
        """`revision 7 (fraud:1.4)`; `revision 6b8f7c9d4` when no history carries it."""
        if self.deployment_revision is None:
            return f"revision {self.revision}"
        image = f" ({self.image})" if self.image else ""
        return f"revision {self.deployment_revision}{image}"


def short_image(image: str) -> str:
    """`registry.example/team/fraud:1.4` → `fraud:1.4`; a digest keeps 12 hex digits; a
    model's storage URI (KServe's `storageUri`) its path without the scheme."""
    scheme, sep, rest = image.partition("://")
    if sep and scheme.isalnum():
        return rest
    name, at, digest = image.partition("@")
    name = name.rsplit("/", 1)[-1]
    if at:
        algorithm, _, hexdigits = digest.partition(":")
        return f"{name}@{algorithm}:{hexdigits[:_DIGEST_SHOWN]}"
    return name


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def history(lists: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[Mapping[str, Any]]:
    """Every kind's revision history in the shape `resolve` reads (see the module docstring).

    `lists`: kind → objects (the operator's caches, or a snapshot's objects by kind).
    """
    out: list[Mapping[str, Any]] = []
    for rs in lists.get("ReplicaSet") or ():
        labels = _meta(rs).get("labels") or {}
        rollout = _owner_ref(rs, "Rollout")
        if rollout is None or ROLLOUTS_POD_TEMPLATE_HASH not in labels:
            out.append(rs)
            continue
        number = (_meta(rs).get("annotations") or {}).get(ROLLOUT_REVISION)
        out.append(_as_replicaset(str(labels[ROLLOUTS_POD_TEMPLATE_HASH]), number,
                                  rollout, (rs.get("spec") or {}).get("template")))  # fmt: skip
    for cr in lists.get("ControllerRevision") or ():
        owner = _owner_ref(cr, "StatefulSet")
        if owner is None:
            continue
        name = (_meta(cr).get("labels") or {}).get(CONTROLLER_REVISION_HASH) or _meta(cr).get(
            "name"
        )
        spec = (cr.get("data") or {}).get("spec") or {}
        out.append(_as_replicaset(str(name), cr.get("revision"), owner, spec.get("template")))
    for isvc in lists.get("InferenceService") or ():
        out += _components(isvc)
    return out


def _components(isvc: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """An InferenceService's default and canary endpoints, per component, as revisions."""
    out: list[Mapping[str, Any]] = []
    ref = {"kind": "InferenceService", "name": _meta(isvc).get("name")}
    for component in ISVC_COMPONENTS:
        spec = (isvc.get("spec") or {}).get(component)
        if not isinstance(spec, Mapping):
            continue
        state = ((isvc.get("status") or {}).get("components") or {}).get(component) or {}
        rolled, ready = state.get("latestRolledoutRevision"), state.get("latestReadyRevision")
        canary = spec.get("canaryTrafficPercent") is not None and ready and ready != rolled
        prefix = "" if component == "predictor" else f"{component}-"
        # The spec is the newest revision's: the canary's while there is one, else default's.
        shown = _isvc_template(spec)
        out.append(_as_replicaset(f"{prefix}default", _knative_number(rolled), ref,
                                  {} if canary else shown))  # fmt: skip
        if canary:
            out.append(_as_replicaset(f"{prefix}canary", _knative_number(ready), ref, shown))
    return out


def _isvc_template(spec: Mapping[str, Any]) -> dict[str, Any]:
    model = spec.get("model") if isinstance(spec.get("model"), Mapping) else {}
    image = (model or {}).get("storageUri") or (model or {}).get("image")
    if not image:
        containers = [c for c in spec.get("containers") or () if isinstance(c, Mapping)]
        image = containers[0].get("image") if containers else None
    if not image:
        return {}
    return {"spec": {"containers": [{"name": "kserve-container", "image": str(image)}]}}


def _knative_number(name: Any) -> int | None:
    found = _KNATIVE_NUMBER.search(str(name or ""))
    return int(found.group(1)) if found else None


def _owner_ref(obj: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    refs = _meta(obj).get("ownerReferences") or ()
    return next((r for r in refs if isinstance(r, Mapping) and r.get("kind") == kind), None)


def _as_replicaset(
    digest: str, number: Any, owner: Mapping[str, Any], template: Any
) -> dict[str, Any]:
    return {
        "metadata": {
            "labels": {POD_TEMPLATE_HASH: digest},
            "annotations": {} if number is None else {REVISION_ANNOTATION: str(number)},
            "ownerReferences": [{"kind": owner.get("kind"), "name": owner.get("name")}],
        },
        "spec": {"template": template if isinstance(template, Mapping) else {}},
    }


def _owner(rs: Mapping[str, Any]) -> tuple[str, str] | None:
    for ref in _meta(rs).get("ownerReferences") or ():
        if isinstance(ref, Mapping) and ref.get("kind") in OWNER_KINDS:
            return str(ref.get("kind")), str(ref.get("name"))
    return None


def model_image(template: Mapping[str, Any], container: str | None = None) -> str | None:
    """The model container's image in a pod template: `container`, else the first that is
    not mlwarden's sidecar."""
    containers = [
        c for c in ((template.get("spec") or {}).get("containers") or ()) if isinstance(c, Mapping)
    ]
    for c in containers:
        if container is not None and c.get("name") == container:
            return str(c.get("image") or "") or None
    for c in containers:
        if c.get("name") != SIDECAR_CONTAINER:
            return str(c.get("image") or "") or None
    return None


def replicaset_of(
    revision: str,
    replicasets: Sequence[Mapping[str, Any]],
    *,
    deployments: Sequence[str] = (),
) -> Mapping[str, Any] | None:
    """The ReplicaSet labelled `pod-template-hash: revision`, one of `deployments`' first."""
    found = [
        rs
        for rs in replicasets
        if isinstance(rs, Mapping)
        and (_meta(rs).get("labels") or {}).get(POD_TEMPLATE_HASH) == revision
    ]
    for name in deployments:
        for rs in found:
            if (_owner(rs) or ("", ""))[1] == name:
                return rs
    return found[0] if found else None


def resolve(
    revision: str,
    replicasets: Sequence[Mapping[str, Any]],
    *,
    deployments: Sequence[str] = (),
    container: str | None = None,
) -> Revision:
    """What the ReplicaSets say of a revision (see the module docstring)."""
    rs = replicaset_of(revision, replicasets, deployments=deployments)
    if rs is None:
        return Revision(revision=revision)
    template = (rs.get("spec") or {}).get("template") or {}
    image = model_image(template, container)
    owner = _owner(rs)
    return Revision(
        revision=revision,
        deployment=owner[1] if owner else None,
        deployment_revision=revision_of(rs),
        image=short_image(image) if image else None,
        owner_kind=owner[0] if owner else None,
    )


def label(
    revision: str | None,
    replicasets: Sequence[Mapping[str, Any]],
    *,
    deployments: Sequence[str] = (),
    container: str | None = None,
) -> str | None:
    """`revision 7 (fraud:1.4)` for a hash, or None for None."""
    if not revision:
        return None
    return resolve(revision, replicasets, deployments=deployments, container=container).label


def long_label(
    revision: str | None,
    replicasets: Sequence[Mapping[str, Any]],
    *,
    deployments: Sequence[str] = (),
) -> str | None:
    """`revision 7 (fraud:1.4, pod-template-hash 6b8f7c9d4)`, or `revision X` unresolved."""
    if not revision:
        return None
    found = resolve(revision, replicasets, deployments=deployments)
    if found.deployment_revision is None:
        return found.label
    image = f"{found.image}, " if found.image else ""
    return f"revision {found.deployment_revision} ({image}pod-template-hash {revision})"


def display(
    detector_revisions: Sequence[Any] | None,
    replicasets: Sequence[Mapping[str, Any]],
    *,
    deployments: Sequence[str] = (),
    container: str | None = None,
) -> list[dict[str, Any]]:
    """`status.revisions`: each revision the detector sees, resolved, largest share first.

    Entries: {revision, deploymentRevision, deployment, image, role, share, records, and for
    a candidate `verdict` (its canary analysis: Pending, Pass or Fail)}; keys without a value
    are left out. At most MAX_REVISIONS.
    """
    out: list[dict[str, Any]] = []
    for entry in detector_revisions or ():
        if not isinstance(entry, Mapping) or not entry.get("revision"):
            continue
        found = resolve(
            str(entry["revision"]), replicasets, deployments=deployments, container=container
        )
        canary = entry.get("canary")
        item = {
            "revision": found.revision,
            "deploymentRevision": found.deployment_revision,
            "deployment": found.deployment,
            "image": found.image,
            "role": entry.get("role"),
            "share": entry.get("share"),
            "records": entry.get("records"),
            "verdict": canary.get("verdict") if isinstance(canary, Mapping) else None,
        }
        out.append({k: v for k, v in item.items() if v is not None})
    out.sort(key=lambda e: (-float(e.get("share") or 0.0), e["revision"]))
    return out[:MAX_REVISIONS]


def owners(model: ObservedModel) -> list[str]:
    """The workloads whose histories name the model's revisions, the target's first (then the
    canary and stable Deployments its reactions name): who to prefer for a shared hash."""
    names = [model.spec.target.name]
    names += [r.canary for r in model.spec.reactions if r.canary]
    names += [r.stable for r in model.spec.reactions if r.stable]
    return list(dict.fromkeys(n for n in names if n))


def owner_of(
    revision: str | None,
    lists: Mapping[str, Sequence[Mapping[str, Any]]],
    *,
    model: ObservedModel,
) -> tuple[str, str] | None:
    """(kind, name) of the workload serving `revision`, from the owners' histories in `lists`:
    a Deployment's or Rollout's ReplicaSet, a StatefulSet's ControllerRevision, an
    InferenceService's default or canary endpoint. None when no history carries it."""
    if not revision:
        return None
    return resolve(revision, history(lists), deployments=owners(model)).owner


def numbered(
    number: str, owner: tuple[str, str], lists: Mapping[str, Sequence[Mapping[str, Any]]]
) -> str | None:
    """The revision (as records carry it) that `owner` (kind, name) numbers `number` in its
    history: a rollback's `to` → the hash whose records tell whether it worked."""
    for rs in history(lists):
        if _owner(rs) == owner and str(revision_of(rs)) == number:
            found = (_meta(rs).get("labels") or {}).get(POD_TEMPLATE_HASH)
            return str(found) if found else None
    return None


def newest(owner: tuple[str, str], lists: Mapping[str, Sequence[Mapping[str, Any]]]) -> str | None:
    """The revision (as records carry it) of `owner`'s highest number: after a rollback, the
    StatefulSet controller and Argo Rollouts renumber the restored revision to the next number
    (Kubernetes' getStatefulSetRevisions; Argo's ReplicaSet revision annotation), so once the
    controller has acted, a rollback's `to` number is gone and the restored one is the newest."""
    best: tuple[int, str] | None = None
    for rs in history(lists):
        number = revision_of(rs)
        found = (_meta(rs).get("labels") or {}).get(POD_TEMPLATE_HASH)
        if (
            _owner(rs) == owner
            and number is not None
            and found
            and (best is None or number > best[0])
        ):
            best = (number, str(found))
    return None if best is None else best[1]


def status_revisions(
    model: ObservedModel,
    detector_revisions: Sequence[Any] | None,
    lists: Mapping[str, Sequence[Mapping[str, Any]]],
) -> list[dict[str, Any]]:
    """`status.revisions`, its one builder: the detector's revisions resolved through every
    owner's history in `lists` (kind → objects), the model's workloads preferred."""
    return display(
        detector_revisions,
        history(lists),
        deployments=owners(model),
        container=model.spec.target.container,
    )


def describe(entries: Sequence[Mapping[str, Any]]) -> str:
    """One line for an Event: `revision 7 (fraud:1.4) 90% baseline, revision 8 ... 10% ...`."""
    parts = []
    for e in entries:
        text = (
            Revision(
                revision=str(e.get("revision")),
                deployment_revision=e.get("deploymentRevision"),
                image=e.get("image"),
            ).label
            if e.get("deploymentRevision") is not None
            else f"revision {e.get('revision')}"
        )
        share = e.get("share")
        if isinstance(share, int | float):
            text += f" {share:.0%}"
        if e.get("role"):
            text += f" {e['role']}"
        if e.get("verdict"):
            text += f" (canary {e['verdict']})"
        parts.append(text)
    return ", ".join(parts) if parts else "no revision seen"


def promotable(detector_revisions: Sequence[Any] | None) -> list[Mapping[str, Any]]:
    """The detector's candidates whose canary verdict is Pass (promotable; never promoted)."""
    return [
        e
        for e in detector_revisions or ()
        if isinstance(e, Mapping)
        and e.get("role") == "candidate"
        and isinstance(e.get("canary"), Mapping)
        and e["canary"].get("verdict") == "Pass"
    ]


def deployment_revision(
    revision: str | None,
    replicasets: Sequence[Mapping[str, Any]],
    *,
    deployments: Sequence[str] = (),
) -> int | None:
    """The Deployment revision number of a model revision: through the ReplicaSet labelled
    with it (a pod-template-hash), else the revision itself when it is a number (given by
    hand); None when neither says."""
    if not revision:
        return None
    found = resolve(revision, replicasets, deployments=deployments).deployment_revision
    if found is None and revision.isdigit():
        return int(revision)
    return found


def labels(entries: Sequence[Any] | None) -> dict[str, str]:
    """revision → its label, from `status.revisions` as the operator wrote it."""
    out: dict[str, str] = {}
    for e in entries or ():
        if isinstance(e, Mapping) and e.get("revision"):
            out[str(e["revision"])] = describe([{k: v for k, v in e.items() if k in (
                "revision", "deploymentRevision", "image")}])  # fmt: skip
    return out


def events(
    old: Sequence[Any] | None, new: Sequence[Any] | None, shown: Sequence[Mapping[str, Any]]
) -> list[tuple[str, str, str]]:
    """(type, reason, message) Events for a change of the detector's revisions.

    `RevisionsChanged` when the set of revisions or their roles changed (with what serves
    now, `describe`); `CanaryPromotable` for each candidate whose verdict became Pass.
    """

    def roles(entries: Sequence[Any] | None) -> dict[str, Any]:
        return {
            str(e.get("revision")): e.get("role")
            for e in entries or ()
            if isinstance(e, Mapping) and e.get("revision")
        }

    out: list[tuple[str, str, str]] = []
    if roles(old) != roles(new):
        out.append(("Normal", "RevisionsChanged", f"serving: {describe(shown)}"))
    named = labels(shown)
    before = {str(e.get("revision")) for e in promotable(old)}
    for e in promotable(new):
        revision = str(e.get("revision"))
        if revision in before:
            continue
        canary = e.get("canary") or {}
        baseline = str(canary.get("baseline") or "")
        against = f" against {named.get(baseline, f'revision {baseline}')}" if baseline else ""
        out.append(
            (
                "Normal",
                "CanaryPromotable",
                f"{named.get(revision, f'revision {revision}')} passed the canary analysis"
                f"{against} on {canary.get('samples')} samples; mlwarden never promotes: "
                "promote it with your rollout tool",
            )
        )
    return out
