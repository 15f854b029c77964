"""Version-aware observation, the operator's side: revisions as people know them.

The detector's `status.detector.revisions` and alerts name pod-template-hashes (what the
sidecar stamps, CONTRACT17 of issue 17); the operator resolves them through the ReplicaSets of
the emulator's Deployment controller (`emulate_workloads`: one ReplicaSet per template,
labelled `pod-template-hash`, with `deployment.kubernetes.io/revision`) into
`status.revisions`, Events and conditions that say `revision 3 (fraud:1.5)`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cluster import (
    DEPLOYMENTS,
    FAST,
    MERGE,
    NS,
    REFERENCE,
    Cluster,
    ago,
    alert,
    api_call,
    condition,
    events,
    eventually,
    iso,
    model_deployment,
    model_service,
    obj,
    observed_model,
    patch_status,
    status,
)

REVISION = "deployment.kubernetes.io/revision"
REPLICASETS = "apps/v1/replicasets"


def replicasets(api: Cluster) -> dict[int, dict[str, Any]]:
    """The target's ReplicaSets by revision."""
    out = {}
    for key in list(api.objects):
        if str(key[0].plural) != "replicasets" or api.objects[key].deleted:
            continue
        rs = dict(api.objects[key])
        out[int(rs["metadata"]["annotations"][REVISION])] = rs
    return out


def hash_of(rs: dict[str, Any]) -> str:
    return str(rs["metadata"]["labels"]["pod-template-hash"])


def messages(api: Cluster, reason: str) -> list[str]:
    return [str(e.get("message")) for e in events(api) if e.get("reason") == reason]


async def new_image(server: str, image: str) -> None:
    """A new model version, as `kubectl set image` sends it (the injected template kept)."""
    path = f"/apis/apps/v1/namespaces/{NS}/deployments/fraud-model"
    dep = await api_call(server, "GET", path)
    containers = dep["spec"]["template"]["spec"]["containers"]
    for c in containers:
        if c["name"] == "model":
            c["image"] = image
    await api_call(server, "PATCH", path, {"spec": {"template": {"spec": {
        "containers": containers}}}}, MERGE)  # fmt: skip


def seen(revision: str, share: float, role: str, **extra: Any) -> dict[str, Any]:
    """An entry of status.detector.revisions, as the detector writes it (CONTRACT17)."""
    return {"revision": revision, "records": int(share * 10000), "share": share,
            "firstSeen": iso(ago(minutes=5)), "lastSeen": iso(ago(seconds=1)), "role": role,
            **extra}  # fmt: skip


async def test_revisions_events_and_promotable_name_the_deployment_revision_and_image(
    cluster: tuple[Cluster, str], start_operator: Callable[..., Any], seed: Callable[..., None]
) -> None:
    api, server = cluster
    deployment = model_deployment()
    deployment["spec"]["template"]["spec"]["containers"][0]["image"] = "registry.example/fraud:1.4"
    seed(api, deployment, model_service(), observed_model())
    api.emulate_workloads()
    await start_operator(env=FAST)
    await eventually(lambda: status(api).get("phase") == "WarmingUp", timeout=30, what="injected")
    await patch_status(server, {"alerts": [], "detector": {"reference": REFERENCE}})
    await eventually(lambda: status(api).get("phase") == "Observing", what="Observing")
    # Revision 1 is the model as deployed, 2 the same with the sidecar; 3 a new version.
    await new_image(server, "registry.example/fraud:1.5")
    sets = await eventually(lambda: (s := replicasets(api)).get(3) and s, what="revision 3")
    stable, candidate = hash_of(sets[2]), hash_of(sets[3])

    await patch_status(server, {"detector": {"revisions": [
        seen(stable, 0.9, "baseline"),
        seen(candidate, 0.1, "candidate", canary={"verdict": "Pending", "samples": 120,
                                                  "minSamples": 200, "baseline": stable}),
    ]}})  # fmt: skip
    shown = await eventually(lambda: status(api).get("revisions"), what="status.revisions")
    assert shown == [
        {"revision": stable, "deploymentRevision": 2, "deployment": "fraud-model",
         "image": "fraud:1.4", "role": "baseline", "share": 0.9, "records": 9000},
        {"revision": candidate, "deploymentRevision": 3, "deployment": "fraud-model",
         "image": "fraud:1.5", "role": "candidate", "share": 0.1, "records": 1000,
         "verdict": "Pending"},
    ]  # fmt: skip
    changed = await eventually(lambda: messages(api, "RevisionsChanged"), what="an Event")
    assert changed == [
        "serving: revision 2 (fraud:1.4) 90% baseline, "
        "revision 3 (fraud:1.5) 10% candidate (canary Pending)"
    ]
    assert condition(status(api), "Promotable")["status"] == "False"

    # The candidate passes: reported as promotable, never promoted.
    await patch_status(server, {"detector": {"revisions": [
        seen(stable, 0.9, "baseline"),
        seen(candidate, 0.1, "candidate", canary={"verdict": "Pass", "samples": 1300,
                                                  "minSamples": 200, "baseline": stable}),
    ]}})  # fmt: skip
    promotable = await eventually(lambda: messages(api, "CanaryPromotable"), what="promotable")
    assert promotable == [
        "revision 3 (fraud:1.5) passed the canary analysis against revision 2 (fraud:1.4) on "
        "1300 samples; mlwarden never promotes: promote it with your rollout tool"
    ]
    await eventually(lambda: condition(status(api), "Promotable")["status"] == "True",
                     what="Promotable")  # fmt: skip
    promote = condition(status(api), "Promotable")
    assert promote["reason"] == "CanaryPassed" and "revision 3 (fraud:1.5)" in promote["message"]
    assert len(messages(api, "RevisionsChanged")) == 1  # the roles did not change
    template = obj(api, DEPLOYMENTS, "fraud-model")["spec"]["template"]
    assert template["spec"]["containers"][0]["image"] == "registry.example/fraud:1.5"
    assert len(replicasets(api)) == 3  # nothing rolled: promotion is a person's call

    # An alert names its revision in words.
    regression = {**alert("CanaryRegression"), "test": "canary", "modelRevision": candidate,
                  "baselineRevision": stable}  # fmt: skip
    await patch_status(server, {"alerts": [regression]})
    fired = await eventually(lambda: messages(api, "AlertFired"), what="AlertFired")
    assert "[revision 3 (fraud:1.5) against revision 2 (fraud:1.4)]" in fired[0], fired
