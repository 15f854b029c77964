"""Model revisions as people know them: a pod-template-hash → Deployment revision and image.

The sidecar stamps every record with its pod's `pod-template-hash` label (the operator sets
`MLWARDEN_MODEL_REVISION` from it through the Downward API), so the detector's revisions and
every alert's `modelRevision` are hashes such as `6b8f7c9d4`. People know a Deployment's
history by its revision number and image (`kubectl rollout history`). The Deployment
controller names and labels each ReplicaSet with the hash of its template, and keeps on it
the revision (`deployment.kubernetes.io/revision`, raised when an old template comes back
with a rollback) and the template, images included. So a hash resolves through the
namespace's ReplicaSets (docs/architecture.md, "Facts about Kubernetes"):

    ReplicaSet fraud-model-6b8f7c9d4
      metadata.labels[pod-template-hash]: 6b8f7c9d4
      metadata.annotations[deployment.kubernetes.io/revision]: "7"
      metadata.ownerReferences: [Deployment fraud-model]
      spec.template.spec.containers[model].image: registry.example/fraud:1.4
    → revision 7 (fraud:1.4)

`resolve` does that for one hash (preferring a ReplicaSet of the given Deployments: two
Deployments with one template share a hash); `label` says it in words; `display` builds the
operator's `status.revisions` from the detector's `status.detector.revisions`. A hash no
ReplicaSet carries (its ReplicaSet was deleted, or the revision is not a hash: a KServe
component, a `--model-revision` given by hand) is shown as it is.

Pure: ReplicaSets and the detector's entries in, plain values out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from mlwarden.names import (
    CONTROLLER_REVISION_HASH,
    POD_TEMPLATE_HASH,
    ROLLOUTS_POD_TEMPLATE_HASH,
    SIDECAR_CONTAINER,
)
from mlwarden.react.actuators.rollback import REVISION_ANNOTATION, revision_of
from mlwarden.spec import MAX_STATUS_REVISIONS

# status.revisions keeps at most this many (the detector's status.detector.revisions bound).
MAX_REVISIONS: Final = MAX_STATUS_REVISIONS
_DIGEST_SHOWN: Final = 12  # hex digits of an image digest shown in a label


@dataclass(frozen=True)
class Revision:
    """One model revision as resolved: its hash and what the ReplicaSet says of it."""

    revision: str  # as the sidecar stamps it: the pod-template-hash
    deployment: str | None = None  # the Deployment that owns its ReplicaSet
    deployment_revision: int | None = None
    image: str | None = None  # the model container's image, shortened (`short_image`)

    @property
    def label(self) -> str:
        """`revision 7 (fraud:1.4)`; `revision 6b8f7c9d4` when no ReplicaSet carries it."""
        if self.deployment_revision is None:
            return f"revision {self.revision}"
        image = f" ({self.image})" if self.image else ""
        return f"revision {self.deployment_revision}{image}"


def short_image(image: str) -> str:
    """`registry.example/team/fraud:1.4` → `fraud:1.4`; a digest keeps 12 hex digits."""
    name, at, digest = image.partition("@")
    name = name.rsplit("/", 1)[-1]
    if at:
        algorithm, _, hexdigits = digest.partition(":")
        return f"{name}@{algorithm}:{hexdigits[:_DIGEST_SHOWN]}"
    return name


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


ROLLOUT_REVISION: Final = "rollout.argoproj.io/revision"


def history(lists: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[Mapping[str, Any]]:
    """Every kind's revision history in the shape `resolve` reads (a Deployment's ReplicaSet).

    `lists`: kind → objects (the operator's caches). A Deployment's ReplicaSets as they are; a
    StatefulSet's ControllerRevisions (the pod's `controller-revision-hash` is the
    ControllerRevision's name; its number `revision`, its template `data.spec.template`) and
    an Argo Rollout's ReplicaSets (`rollouts-pod-template-hash`, `rollout.argoproj.io/revision`)
    rewritten as such, their owner's name where a Deployment's would be.
    """
    out: list[Mapping[str, Any]] = []
    for rs in lists.get("ReplicaSet") or ():
        labels = _meta(rs).get("labels") or {}
        rollout = _owner_of(rs, "Rollout")
        if rollout is None or ROLLOUTS_POD_TEMPLATE_HASH not in labels:
            out.append(rs)
            continue
        number = (_meta(rs).get("annotations") or {}).get(ROLLOUT_REVISION)
        out.append(_as_replicaset(str(labels[ROLLOUTS_POD_TEMPLATE_HASH]), number,
                                  str(rollout.get("name")), rs.get("spec") or {}))  # fmt: skip
    for cr in lists.get("ControllerRevision") or ():
        owner = _owner_of(cr, "StatefulSet")
        if owner is None:
            continue
        name = (_meta(cr).get("labels") or {}).get(CONTROLLER_REVISION_HASH) or _meta(cr).get(
            "name"
        )
        spec = (cr.get("data") or {}).get("spec") or {}
        out.append(_as_replicaset(str(name), cr.get("revision"), str(owner.get("name")), spec))
    return out


def _owner_of(obj: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    refs = _meta(obj).get("ownerReferences") or ()
    return next((r for r in refs if isinstance(r, Mapping) and r.get("kind") == kind), None)


def _as_replicaset(digest: str, number: Any, owner: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {
            "labels": {POD_TEMPLATE_HASH: digest},
            "annotations": {} if number is None else {REVISION_ANNOTATION: str(number)},
            "ownerReferences": [{"kind": "Deployment", "name": owner}],
        },
        "spec": {"template": spec.get("template") or {}},
    }


def _owner(rs: Mapping[str, Any]) -> str | None:
    for ref in _meta(rs).get("ownerReferences") or ():
        if isinstance(ref, Mapping) and ref.get("kind") == "Deployment":
            return str(ref.get("name"))
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
            if _owner(rs) == name:
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
    return Revision(
        revision=revision,
        deployment=_owner(rs),
        deployment_revision=revision_of(rs),
        image=short_image(image) if image else None,
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
