"""The Deployment controller's progress deadline, for the operator tests (opt-in).

A real Deployment controller marks a rollout as failed when its new ReplicaSet has not become
available within `spec.progressDeadlineSeconds` (default 600 s): the Deployment's status gets
the condition `Progressing=False` with reason `ProgressDeadlineExceeded` and the message
`ReplicaSet "NAME-HASH" has timed out progressing.`, for the generation it observed. The
rollout is not undone: the old pods keep serving and the one new pod stays unready, so
`updatedReplicas` stays below `replicas`. Pods that never become ready cause it (an image that
cannot be pulled, a container that crashes or cannot bind its port, a failing probe).

`ProgressDeadline` imitates that. A test names the containers whose pods never become ready
(`unready_containers`); a rollout of a pod template with one of them stalls at once, as
though the deadline had passed. A rollout to a template without them completes as before
(rolling back to the previous ReplicaSet, whose pods are still there). Nothing changes for a
test that names none.
"""

from __future__ import annotations

from typing import Any


class ProgressDeadline:
    unready_containers: frozenset[str] = frozenset()

    async def _handle(self, request: Any) -> Any:
        response = await super()._handle(request)  # type: ignore[misc]
        if self.unready_containers:
            self._stall_unready_rollouts()
        return response

    def _stall_unready_rollouts(self) -> None:
        objects = self._objects  # type: ignore[attr-defined]
        for key in list(objects):
            obj = objects[key]
            if str(key[0].plural) != "deployments" or obj.deleted:
                continue
            template = ((obj.get("spec") or {}).get("template") or {}).get("spec") or {}
            names = {str(c.get("name")) for c in template.get("containers") or []}
            if not names & self.unready_containers:
                continue
            meta = obj.get("metadata") or {}
            generation = int(meta.get("generation") or 1)
            status = dict(obj.get("status") or {})
            if status.get("observedGeneration") == generation and status.get("conditions"):
                continue  # already reported for this template
            replicas = int((obj.get("spec") or {}).get("replicas", 1))
            obj["status"] = {
                "observedGeneration": generation,
                "replicas": replicas + 1,  # maxSurge: the one new pod beside the old ones
                "updatedReplicas": 1,
                "readyReplicas": replicas,
                "availableReplicas": replicas,
                "unavailableReplicas": 1,
                "conditions": [
                    {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
                     "message": "Deployment has minimum availability."},
                    {"type": "Progressing", "status": "False",
                     "reason": "ProgressDeadlineExceeded",
                     "message": f'ReplicaSet "{meta.get("name")}-{generation:x}7d9f" has timed '
                                "out progressing."},
                ],
            }  # fmt: skip
