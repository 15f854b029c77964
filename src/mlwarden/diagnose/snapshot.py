"""The snapshot: everything the diagnosis may look at, collected once by the operator.

Diagnosis is a pure function of a `Snapshot`: the ObservedModel, the raw objects of its
namespace keyed by (kind, name), the active alerts, and `now`. Nothing here talks to the
API or reads a clock, so the same snapshot always gives the same diagnosis (and a test is a
snapshot literal).

The operator hands over every object of `needed_kinds()` in the namespace (from its
watch-backed caches, operator/cache.py, which keep no Secrets) with `Snapshot.from_lists`;
the diagnosis filters by owner references and names, never by label selectors. Secrets, where
a caller has them, are kept as metadata only (their `data` never enters a snapshot): the
diagnosis needs to know *when* one was written, never what it holds.

Also here, because every other module of the package reads raw objects through them:
`dig` (a nested field, or None) and `last_written` (the newest `managedFields` entry that is
not a status write). `parse_time` / `format_time` are `mlwarden.timestamps`' (re-exported for
timeline.py, which imports them from here).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from mlwarden.spec import ObservedModel
from mlwarden.timestamps import as_utc, format_time, parse_time

__all__ = [
    "ObjectKey",
    "Snapshot",
    "Write",
    "dig",
    "format_time",
    "last_written",
    "needed_kinds",
    "owned_by",
    "parse_time",
]

ObjectKey = tuple[str, str]
"""(kind, name) of an object in the model's namespace."""

_NEEDED_KINDS: Final = (
    "Deployment",
    "ReplicaSet",
    "StatefulSet",
    "DaemonSet",
    "ControllerRevision",
    "Pod",
    "CronJob",
    "Job",
    "ConfigMap",
    "Secret",
    "ObservedModel",
)

# Fields of a Secret that may hold its contents; a snapshot keeps none of them.
_SECRET_CONTENT: Final = ("data", "stringData")


def needed_kinds() -> tuple[str, ...]:
    """The kinds a snapshot is built from (every object of each, in the model's namespace).

    ReplicaSets and ControllerRevisions are the revision history of Deployments and of
    StatefulSets/DaemonSets; Pods carry restarts and crash loops; Jobs are the runs of
    CronJobs; ConfigMaps and Secrets are what workloads mount; other ObservedModels can be
    pipeline components.
    """
    return _NEEDED_KINDS


@dataclass(frozen=True, kw_only=True)
class Snapshot:
    """What the diagnosis sees: the model, its namespace's objects, the alerts, and now.

    `objects` is keyed by (kind, name); `alerts` are the active alerts in the public shape
    (docs/detector.md); `now` is timezone-aware UTC and is the only clock the diagnosis has.
    """

    model: ObservedModel
    objects: Mapping[ObjectKey, Mapping[str, Any]]
    alerts: Sequence[Mapping[str, Any]]
    now: datetime

    @classmethod
    def from_lists(
        cls,
        *,
        model: ObservedModel,
        lists: Mapping[str, Iterable[Mapping[str, Any]]],
        alerts: Sequence[Mapping[str, Any]],
        now: datetime,
    ) -> Snapshot:
        """A snapshot from what the operator listed: kind → the items of that list.

        Items of a list response carry no `kind` of their own, hence the mapping. Secrets
        are reduced to their metadata on the way in.
        """
        objects: dict[ObjectKey, Mapping[str, Any]] = {}
        for kind, items in lists.items():
            for item in items:
                name = dig(item, "metadata", "name")
                if not isinstance(name, str):
                    continue
                if kind == "Secret":
                    item = {k: v for k, v in item.items() if k not in _SECRET_CONTENT}
                objects[(kind, name)] = item
        return cls(model=model, objects=objects, alerts=tuple(alerts), now=as_utc(now))

    def get(self, kind: str, name: str) -> Mapping[str, Any] | None:
        """The object (kind, name), or None when it was not collected."""
        return self.objects.get((kind, name))

    def of_kind(self, kind: str) -> list[Mapping[str, Any]]:
        """Every collected object of `kind`, in name order (so results are deterministic)."""
        return [obj for (k, _), obj in sorted(self.objects.items()) if k == kind]

    def owned(
        self, kind: str, *, owner: Mapping[str, Any], owner_kind: str
    ) -> list[Mapping[str, Any]]:
        """The objects of `kind` whose owner references name `owner` (of `owner_kind`)."""
        return [obj for obj in self.of_kind(kind) if owned_by(obj, owner, owner_kind=owner_kind)]


# --------------------------------------------------------------------------- reading raw objects


def dig(obj: Any, *path: str | int) -> Any:
    """The value at `path` inside nested mappings and lists, or None where any step is absent."""
    for step in path:
        if isinstance(step, int):
            if not isinstance(obj, list | tuple) or not -len(obj) <= step < len(obj):
                return None
            obj = obj[step]
        else:
            if not isinstance(obj, Mapping):
                return None
            obj = obj.get(step)
        if obj is None:
            return None
    return obj


def owned_by(obj: Mapping[str, Any], owner: Mapping[str, Any], *, owner_kind: str) -> bool:
    """Whether `obj` has an owner reference to `owner`: kind and name (and uid when both have one).

    The uid check matters when an owner was deleted and recreated under the same name: the
    orphans of the old one are not its history.
    """
    name = dig(owner, "metadata", "name")
    uid = dig(owner, "metadata", "uid")
    for ref in dig(obj, "metadata", "ownerReferences") or ():
        if not isinstance(ref, Mapping):
            continue
        if ref.get("kind") != owner_kind or ref.get("name") != name:
            continue
        if uid and ref.get("uid") and ref.get("uid") != uid:
            continue
        return True
    return False


@dataclass(frozen=True)
class Write:
    """The last write of an object's spec or data: when, and by which field manager."""

    at: datetime
    manager: str | None


def last_written(obj: Mapping[str, Any]) -> Write | None:
    """The newest `metadata.managedFields` entry that is not a status write.

    ConfigMaps and Secrets have no revision history; this is when they were last edited
    (and by whom: `kubectl-edit`, `kubectl-client-side-apply`, `helm`, ...). Status writes
    are skipped because controllers make them all the time without changing the object.
    Falls back to `creationTimestamp` when there are no managed fields.
    """
    best: Write | None = None
    for entry in dig(obj, "metadata", "managedFields") or ():
        if not isinstance(entry, Mapping) or entry.get("subresource") == "status":
            continue
        at = parse_time(entry.get("time"))
        if at is None:
            continue
        if best is None or at > best.at:
            manager = entry.get("manager")
            best = Write(at=at, manager=manager if isinstance(manager, str) else None)
    if best is None:
        created = parse_time(dig(obj, "metadata", "creationTimestamp"))
        if created is not None:
            best = Write(at=created, manager=None)
    return best
