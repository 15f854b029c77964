"""What the diagnosis and reaction passes read, kept current by watches (kopf indexes).

Each kind in `CACHED_KINDS` has a kopf index: kopf lists the kind once at start-up (in pages
of `MLWARDEN_LIST_CHUNK_SIZE` objects, 500 by default, `limit`/`continue`), then follows one
watch stream per kind (cluster-wide, or per namespace with `--namespace`) and calls the index
function on every change. The index keeps a slimmed copy of every object (`slim`), keyed by
its namespace, so a pass reads its namespace's objects from memory (`lists`) instead of
listing a dozen kinds per ObservedModel on every pass; the injection check reads the target
Deployment and Service from it too, and asks the API only when something looks wrong. kopf
holds every handler back until the first listing of every cached kind is done, so a pass
never sees a half-filled cache.

A kind the cluster does not serve (Gateway API's HTTPRoute, Istio's VirtualService without
their CRDs) is not watched and reads as empty: kopf resolves the kinds through discovery and
leaves out those it does not find (cluster-wide it also notices a CRD installed later).

Secrets are not cached: a watch would bring every Secret's contents into the operator, and
the chart grants no `list`, `watch` or `get` on them (only `create`). The diagnosis goes
without their edit times. The one Secret the operator reads is a webhook URL a reaction
names (`reactions[].webhookSecret`): one GET by `notify.secret_url` when a message is sent,
never cached, and only where the Secret's owner granted `get` on that Secret by name
(docs/operator.md, Incidents); without that grant the read is refused (403) and the
delivery says what to grant.

Slimming keeps what the diagnosis and the reactions read and drops the bulk they never do:
ConfigMaps' `data` and `binaryData` (their edit time is what counts), Pods' `spec` (their
status says restarts and crash loops), `metadata.managedFields` but for the newest write
that is not a status write (`snapshot.last_written`), and the last-applied-configuration
annotations of kubectl and of kopf.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, Final

import kopf

from mlwarden.diagnose import needed_kinds
from mlwarden.kube import KINDS
from mlwarden.timestamps import parse_time

# What reactions read besides the diagnosis' kinds: the HPA that scales the target, the routes.
# Targets of other kinds (spec.target.kind), read by their reactions; not served without their
# CRDs (Argo Rollouts, KServe), then not watched.
REACTION_KINDS: Final = (
    "HorizontalPodAutoscaler",
    "HTTPRoute",
    "VirtualService",
    "Rollout",
    "InferenceService",
)
# What the injection check reads besides: the target Service (the Deployment is cached above).
CHECK_KINDS: Final = ("Service",)
# Never cached (see the module docstring).
UNCACHED: Final = frozenset({"Secret"})
CACHED_KINDS: Final = tuple(
    kind
    for kind in dict.fromkeys((*needed_kinds(), *REACTION_KINDS, *CHECK_KINDS))
    if kind not in UNCACHED
)
# Annotations that repeat an object's whole manifest: never read by the diagnosis.
_BULKY_ANNOTATIONS: Final = frozenset(
    {
        "kubectl.kubernetes.io/last-applied-configuration",
        "mlwarden.io/last-handled-configuration",
    }
)
# Top-level fields dropped per kind.
_DROPPED: Final[Mapping[str, frozenset[str]]] = {
    "ConfigMap": frozenset({"data", "binaryData"}),
    "Pod": frozenset({"spec"}),
}


def index_id(kind: str) -> str:
    """The kopf index of `kind`: also the name of the handlers' keyword argument."""
    return f"mlwarden_cache_{KINDS[kind][1]}"


def _newest_write(entries: Any) -> list[dict[str, Any]]:
    """The newest managedFields entry that is not a status write, without its fieldsV1."""
    best: tuple[Any, Mapping[str, Any]] | None = None
    for entry in entries if isinstance(entries, list) else ():
        if not isinstance(entry, Mapping) or entry.get("subresource") == "status":
            continue
        at = parse_time(entry.get("time"))
        if at is not None and (best is None or at > best[0]):
            best = (at, entry)
    if best is None:
        return []
    return [{k: best[1][k] for k in ("manager", "operation", "time") if k in best[1]}]


def slim(kind: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of `body` with only what the diagnosis and the reactions read (module docstring)."""
    dropped = _DROPPED.get(kind, frozenset())
    out: dict[str, Any] = {
        key: copy.deepcopy(value)
        for key, value in body.items()
        if key not in dropped and key != "metadata"
    }
    meta = dict(body.get("metadata") or {})
    if "managedFields" in meta:
        meta["managedFields"] = _newest_write(meta["managedFields"])
    annotations = meta.get("annotations")
    if isinstance(annotations, Mapping):
        meta["annotations"] = {k: v for k, v in annotations.items() if k not in _BULKY_ANNOTATIONS}
    out["metadata"] = copy.deepcopy(meta)
    out["kind"] = kind
    prefix = KINDS[kind][0]
    out["apiVersion"] = prefix.removeprefix("/api/").removeprefix("/apis/")
    return out


def lists(indexes: Mapping[str, Any], namespace: str) -> dict[str, list[dict[str, Any]]]:
    """kind → the cached objects of that kind in `namespace`, from the handler's kwargs."""
    out: dict[str, list[dict[str, Any]]] = {}
    for kind in CACHED_KINDS:
        index = indexes.get(index_id(kind))
        store = index.get(namespace) if index is not None else None
        out[kind] = list(store) if store is not None else []
    return out


def named(objects: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    """The cached object called `name` among `objects` (one kind, one namespace), if any."""
    return next((o for o in objects if (o.get("metadata") or {}).get("name") == name), None)


def _register(kind: str) -> None:
    prefix, plural = KINDS[kind]
    api_version = prefix.removeprefix("/api/").removeprefix("/apis/")

    def index(body: kopf.Body, namespace: str | None, **_: Any) -> dict[str, dict[str, Any]]:
        return {str(namespace or ""): slim(kind, body)}

    index.__name__ = index.__qualname__ = index_id(kind)
    kopf.index(api_version, plural, id=index_id(kind))(index)


for _kind in CACHED_KINDS:
    _register(_kind)
