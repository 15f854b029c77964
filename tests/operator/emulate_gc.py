"""Garbage collection and namespace deletion, as the API server's controllers do them.

kmock's emulator deletes exactly the object a DELETE names (or marks it, when it has
finalizers, until they are removed). A cluster does more, and this mixin imitates it:

- Owner-reference garbage collection (kube-controller-manager's garbage collector, in the
  default background propagation): once an object is gone, every object whose
  `metadata.ownerReferences` name its uid, and none of whose other owners still exists, is
  deleted too, and so on down the chain. A dependent with finalizers is marked
  (`deletionTimestamp`, a write like any other: a new resourceVersion) and stays until they
  are removed, as any object does. Watch events carry a copy of the object as it was then, as
  a watch stream's serialised events do, never the live object.
  `blockOwnerDeletion` and foreground deletion are not imitated (the operator asks for
  neither).
- Namespace deletion (`terminate_namespace`, as `kubectl delete namespace` does): the
  Namespace gets `metadata.deletionTimestamp` and `status.phase: Terminating`; from then on
  a create in it is refused with 403 Forbidden (the NamespaceLifecycle admission plugin:
  "unable to create new content in namespace ... because it is being terminated"); the
  namespace controller deletes every object in it (objects with finalizers are marked and
  stay until the finalizers are removed: the ObservedModel waits for the operator), again
  every `every` seconds, and the Namespace itself goes when nothing is left in it. The real
  controller's order across kinds is unspecified (it walks a map of the served resources);
  this one deletes core and apps kinds before custom resources, so the targets are gone
  when the ObservedModel is marked.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
from typing import Any

import aiohttp
from kmock._internal import enums

from mlwarden.demo.cluster import ApiServerEmulator


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _forbidden(namespace: str, kind: str) -> Any:
    message = (
        f"{kind} is forbidden: unable to create new content in namespace {namespace} because "
        "it is being terminated"
    )
    body = {
        "apiVersion": "v1", "kind": "Status", "status": "Failure", "code": 403,
        "reason": "Forbidden", "message": message,
    }  # fmt: skip
    return aiohttp.web.json_response(body, status=403)


class GarbageCollection(ApiServerEmulator):
    """A mixin for the test cluster: owner-reference GC and namespace deletion."""

    def _terminating(self, namespace: str | None) -> bool:
        if namespace is None:
            return False
        try:
            ns = self.objects["v1/namespaces", None, namespace]
        except KeyError:
            return False
        return not ns.deleted and bool((ns.get("metadata") or {}).get("deletionTimestamp"))

    async def _handle(self, request: Any) -> Any:
        if request.resource is not None and request.action == enums.action.CREATE:
            data = request.data if isinstance(request.data, dict) else {}
            namespace = request.namespace or (data.get("metadata") or {}).get("namespace")
            if self._terminating(namespace):
                return _forbidden(str(namespace), str(request.resource.plural))
        target = self._target(request)
        response = await super()._handle(request)
        if target is not None and self._objects[target[0]].deleted:
            await self.collect_garbage({target[1]})
        return response

    def _target(self, request: Any) -> tuple[Any, str] | None:
        """(key, uid) of the object a DELETE or an UPDATE (a finalizer removed) may delete."""
        if request.resource is None or request.name is None:
            return None
        if request.action not in (enums.action.DELETE, enums.action.UPDATE):
            return None
        for key, obj in self._objects.items():
            if (key[0], key[1], key[2]) == (request.resource, request.namespace, request.name):
                if obj.deleted:
                    return None
                return key, str((obj.get("metadata") or {}).get("uid"))
        return None

    # ---------------------------------------------------------------- the garbage collector

    async def collect_garbage(self, gone: set[str]) -> None:
        """Delete the dependents of the objects with these uids (gone), down the chain."""
        while gone:
            async with self._lock:
                live = {
                    str((obj.get("metadata") or {}).get("uid"))
                    for obj in self._objects.values()
                    if not obj.deleted
                }
                orphans = []
                for key, obj in self._objects.items():
                    meta = obj.get("metadata") or {}
                    owners = {str(r.get("uid")) for r in meta.get("ownerReferences") or []}
                    if (
                        not obj.deleted
                        and owners & gone
                        and not owners & live
                        and not meta.get("deletionTimestamp")
                    ):
                        orphans.append(key)
                gone = set()
                for key in orphans:
                    obj = self._objects[key]
                    await self._delete(key)
                    if obj.deleted:
                        gone.add(str((obj.last.get("metadata") or {}).get("uid")))

    async def _delete(self, key: Any) -> None:
        """One object deleted as a DELETE would (the caller holds the lock)."""
        obj = self._objects[key]
        if (obj.get("metadata") or {}).get("finalizers"):
            obj.patch({"metadata": {"deletionTimestamp": _now(), "resourceVersion": self._bump()}})
            await self._buses[key[0]].put({"type": "MODIFIED", "object": copy.deepcopy(obj.raw)})
        else:
            obj.delete()
            await self._buses[key[0]].put(
                {"type": "DELETED", "object": copy.deepcopy(obj.last.raw)}
            )

    def _bump(self) -> str:
        """A new resourceVersion: every write to an object gives it one, marking included."""
        return str(next(self._versions))

    # ---------------------------------------------------------------- the namespace controller

    async def terminate_namespace(self, namespace: str, *, every: float = 0.1) -> None:
        """`kubectl delete namespace`: marked Terminating, then emptied and gone (in a task)."""
        async with self._lock:
            key = next(k for k in self._objects if k[1] is None and k[2] == namespace
                       and str(k[0].plural) == "namespaces")  # fmt: skip
            ns = self._objects[key]
            ns.patch({"metadata": {"deletionTimestamp": _now(), "resourceVersion": self._bump()},
                      "status": {"phase": "Terminating"}})  # fmt: skip
            await self._buses[key[0]].put({"type": "MODIFIED", "object": copy.deepcopy(ns.raw)})
        self.__dict__.setdefault("_namespace_tasks", []).append(
            asyncio.create_task(self._empty_namespace(key, every))
        )

    async def _empty_namespace(self, ns_key: Any, every: float) -> None:
        while True:
            async with self._lock:
                inside = [
                    k for k, o in self._objects.items() if k[1] == ns_key[2] and not o.deleted
                ]
                # Core and apps kinds first, custom resources last (see the module docstring).
                inside.sort(key=lambda k: (str(k[0].group or "") not in ("", "apps"), str(k)))
                for key in inside:
                    if not (self._objects[key].get("metadata") or {}).get("deletionTimestamp"):
                        await self._delete(key)
                if not inside:
                    ns = self._objects[ns_key]
                    ns.delete()
                    await self._buses[ns_key[0]].put(
                        {"type": "DELETED", "object": copy.deepcopy(ns.last.raw)}
                    )
                    return
            await asyncio.sleep(every)
