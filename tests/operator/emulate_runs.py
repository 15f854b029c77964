"""What the Job controller and Argo Workflows' controller write, for the retrain tests.

The emulator stores the Job or Workflow the operator creates and does nothing with it: no
controller runs it. The tests play the controllers by writing the status those controllers
write, through the API, as they do:

- the Job controller (`job_running`, `job_ends`), through the `status` subresource:
  `startTime` and `active` once a pod runs; at the end `succeeded` or `failed`, `completionTime`
  for a success, and the terminal condition with the interim one Kubernetes 1.31+ sets first
  (`SuccessCriteriaMet` then `Complete`; `FailureTarget` then `Failed`, reason
  `BackoffLimitExceeded`), `active: 0`;
- Argo's workflow controller (`workflow_phase`), which writes `status.phase` (Pending, Running,
  Succeeded, Failed, Error), `startedAt`, `finishedAt` and `message` on the Workflow itself:
  Argo's CRDs declare no status subresource.

`install_argo` serves Argo's two kinds the operator uses as Argo's own CRDs declare them
(argoproj/argo-workflows manifests/base/crds/minimal: namespaced, group argoproj.io, version
v1alpha1, no subresources, schema-free spec and status) and stores the CRD objects.
"""

from __future__ import annotations

import uuid
from typing import Any

from cluster import MERGE, NS, RESOURCES, Cluster, ago, api_call, iso
from kmock import ResourceInfo

ARGO_KINDS = {
    "Workflow": ("workflows", {"wf"}),
    "WorkflowTemplate": ("workflowtemplates", {"wftmpl"}),
}


def install_argo(api: Cluster) -> None:
    """Argo Workflows' CRDs for Workflow and WorkflowTemplate, served and stored."""
    crds = "apiextensions.k8s.io/v1/customresourcedefinitions"
    for kind, (plural, short) in ARGO_KINDS.items():
        api.resources[RESOURCES[kind]] = ResourceInfo(
            kind=kind, singular=kind.lower(), namespaced=True, shortnames=short,
            verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
            subresources=set(),
        )  # fmt: skip
        name = f"{plural}.argoproj.io"
        api.objects[crds, None, name] = {
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": name, "uid": str(uuid.uuid4()), "resourceVersion": "1"},
            "spec": {
                "group": "argoproj.io", "scope": "Namespaced",
                "names": {"kind": kind, "plural": plural, "singular": kind.lower(),
                          "shortNames": sorted(short)},
                "versions": [{
                    "name": "v1alpha1", "served": True, "storage": True, "subresources": {},
                    "schema": {"openAPIV3Schema": {
                        "type": "object", "required": ["metadata", "spec"],
                        "properties": {
                            "apiVersion": {"type": "string"}, "kind": {"type": "string"},
                            "metadata": {"type": "object"},
                            **{field: {"type": "object", "x-kubernetes-map-type": "atomic",
                                       "x-kubernetes-preserve-unknown-fields": True}
                               for field in ("spec", "status")},
                        },
                    }},
                }],
            },
        }  # fmt: skip


def _path(kind: str, name: str) -> str:
    group, _, plural = RESOURCES[kind].rpartition("/")
    prefix = "/api" if group == "v1" else "/apis"
    return f"{prefix}/{group}/namespaces/{NS}/{plural}/{name}"


async def job_running(server: str, name: str) -> None:
    """The Job controller after its pod started."""
    status = {"startTime": iso(ago(seconds=5)), "active": 1}
    await api_call(server, "PATCH", _path("Job", name) + "/status", {"status": status}, MERGE)


async def job_ends(server: str, name: str, *, succeeded: bool) -> None:
    """The Job controller once the pod ended: counts, then the interim and terminal conditions."""
    now = iso(ago(seconds=0))
    if succeeded:
        status: dict[str, Any] = {
            "active": 0, "succeeded": 1, "completionTime": now,
            "conditions": [
                {"type": "SuccessCriteriaMet", "status": "True", "reason": "CompletionsReached",
                 "lastTransitionTime": now},
                {"type": "Complete", "status": "True", "reason": "CompletionsReached",
                 "lastTransitionTime": now},
            ],
        }  # fmt: skip
    else:
        why = "Job has reached the specified backoff limit"
        status = {
            "active": 0, "failed": 3,
            "conditions": [
                {"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded",
                 "message": why, "lastTransitionTime": now},
                {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                 "message": why, "lastTransitionTime": now},
            ],
        }  # fmt: skip
    await api_call(server, "PATCH", _path("Job", name) + "/status", {"status": status}, MERGE)


async def workflow_phase(server: str, name: str, phase: str, message: str = "") -> None:
    """Argo's workflow controller moving a Workflow to `phase` (written on the object)."""
    status: dict[str, Any] = {"phase": phase, "startedAt": iso(ago(seconds=5))}
    if phase in ("Succeeded", "Failed", "Error"):
        status["finishedAt"] = iso(ago(seconds=0))
    if message:
        status["message"] = message
    await api_call(server, "PATCH", _path("Workflow", name), {"status": status}, MERGE)
