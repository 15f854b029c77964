"""Concurrent writers: controllers that write an object's status while the operator acts on it.

On a real cluster the operator is never the only writer of a Deployment or an HPA. The
Deployment controller writes `status` whenever a rollout or a pod moves on, the HPA
controller writes `status` (currentReplicas, currentMetrics, conditions) on every sync,
every 15 s by default, and each write gives the object a new `metadata.resourceVersion`.
A patch that carries the resourceVersion it was planned against (every reaction's does)
then meets 409 Conflict. kmock's emulator has no controllers, so no 409 ever happens.

`ConcurrentWriters.writing_status(resource, name, every=...)` starts such a controller for
one object: every `every` seconds it writes the object's status (a condition whose
`lastUpdateTime` moves, as both controllers write) through the emulator's own write path,
so the object gets a new resourceVersion and watchers see MODIFIED. Opt-in per test; it
changes nothing else. `conflicts` lists the writes the emulator refused as stale (resource
plural, name): 409 Conflict, or 422 for a JSON patch whose `test` of the resourceVersion
failed (kopf's finalizer patches), for a test to check that the storm really happened;
`failed_tests` the 422s alone.

A periodic writer meets a patch only by chance: a patch planned on a watch-fed cache and sent
milliseconds later often lands between two writes. `racing_patches(resource, namespace, name,
times=N)` makes the race certain for the next N patches of that object: the controller's
status write lands just before each of them is applied (between the operator's read and its
write, as it does on a busy cluster), so a patch carrying the resourceVersion it read meets
409 Conflict, and a JSON patch testing it 422.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from kmock._internal.k8s import KubernetesError

from mlwarden.demo.cluster import ApiServerEmulator


def _method(request: Any) -> str:
    return str(getattr(request.method, "value", request.method)).upper()


class ConcurrentWriters(ApiServerEmulator):
    """A mixin for the test cluster: status writers on demand, and a log of 409s."""

    @property
    def conflicts(self) -> list[tuple[str, str]]:
        return self.__dict__.setdefault("_conflicts", [])

    @property
    def failed_tests(self) -> list[tuple[str, str]]:
        """Of `conflicts`, the JSON patches refused with 422 (their `test` did not hold)."""
        return self.__dict__.setdefault("_failed_tests", [])

    @property
    def _races(self) -> dict[tuple[str, str, str], int]:
        return self.__dict__.setdefault("_races_left", {})

    def racing_patches(self, resource: str, namespace: str, name: str, *, times: int = 1) -> None:
        """A status write lands just before each of the next `times` patches of the object."""
        self._races[resource, namespace, name] = times

    async def _handle(self, request: Any) -> Any:
        if (
            request.resource is not None
            and request.name is not None
            and _method(request) in ("PATCH", "PUT")
            and not str(request.url.path).endswith("/status")
        ):
            for (resource, namespace, name), left in list(self._races.items()):
                plural = resource.rpartition("/")[2]
                if left > 0 and (str(request.resource.plural), request.namespace, request.name) == (
                    plural,
                    namespace,
                    name,
                ):
                    self._races[resource, namespace, name] = left - 1
                    await self._write_status(resource, namespace, name)
        try:
            return await super()._handle(request)
        except KubernetesError as exc:
            stale = exc.status == 409 or (exc.status == 422 and isinstance(request.data, list))
            if stale and request.resource is not None and request.name is not None:
                key = (str(request.resource.plural), str(request.name))
                self.conflicts.append(key)
                if exc.status == 422:
                    self.failed_tests.append(key)
            raise

    @contextlib.asynccontextmanager
    async def writing_status(
        self, resource: str, namespace: str, name: str, *, every: float
    ) -> AsyncIterator[list[int]]:
        """A controller writing the object's status every `every` s; yields its write count."""
        written = [0]

        async def run() -> None:
            while True:
                await asyncio.sleep(every)
                if await self._write_status(resource, namespace, name):
                    written[0] += 1

        task = asyncio.create_task(run())
        try:
            yield written
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _write_status(self, resource: str, namespace: str, name: str) -> bool:
        """One status write, as a controller's PUT on the status subresource would land."""
        async with self._lock:
            try:
                obj = self.objects[resource, namespace, name]
            except KeyError:
                return False
            if obj.deleted:
                return False
            now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            status = dict(obj.get("status") or {})
            conditions = [
                c for c in status.get("conditions") or [] if c.get("type") != "ControllerSynced"
            ]
            conditions.append({"type": "ControllerSynced", "status": "True", "lastUpdateTime": now})
            version = str(next(self._versions))
            obj.patch(
                {
                    "metadata": {"resourceVersion": version},
                    "status": {**status, "conditions": conditions},
                }
            )
            key = next(k for k in self._objects if self._objects[k] is obj)
            await self._buses[key[0]].put({"type": "MODIFIED", "object": obj.raw})
        return True
