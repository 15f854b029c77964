"""A pod-template-hash resolved to the Deployment revision and image, through ReplicaSets."""

from __future__ import annotations

from typing import Any

from mlwarden.react import revisions


def _sets(build: Any) -> tuple[Any, list[Any]]:
    live = build.deployment(template=build.pod_template("registry.example/team/fraud:1.4"))
    sets = [
        build.replicaset(live, 6, build.pod_template("registry.example/team/fraud:1.3"),
                         hash_="5d4c3b2a1"),
        build.replicaset(live, 7, build.pod_template("registry.example/team/fraud:1.4"),
                         hash_="6b8f7c9d4"),
    ]  # fmt: skip
    return live, sets


def test_a_hash_resolves_to_revision_and_image(build: Any) -> None:
    _, sets = _sets(build)
    found = revisions.resolve("6b8f7c9d4", sets, deployments=["fraud-model"])
    assert (found.deployment, found.deployment_revision, found.image) == (
        "fraud-model",
        7,
        "fraud:1.4",
    )
    assert found.label == "revision 7 (fraud:1.4)"
    assert revisions.label("5d4c3b2a1", sets) == "revision 6 (fraud:1.3)"
    assert revisions.long_label("5d4c3b2a1", sets) == (
        "revision 6 (fraud:1.3, pod-template-hash 5d4c3b2a1)"
    )
    # Unknown: shown as it is; a number no ReplicaSet carries is a revision given by hand.
    assert revisions.label("zzz", sets) == "revision zzz"
    assert revisions.deployment_revision("zzz", sets) is None
    assert revisions.deployment_revision("6b8f7c9d4", sets) == 7
    assert revisions.deployment_revision("4", sets) == 4
    assert revisions.label(None, sets) is None


def test_the_target_deployments_replicaset_wins_a_shared_hash(build: Any) -> None:
    """Two Deployments with one template share the hash: the named one's ReplicaSet counts."""
    _, sets = _sets(build)
    other = build.deployment("fraud-canary", uid="other-uid")
    twin = build.replicaset(other, 2, build.pod_template("fraud:9"), hash_="6b8f7c9d4")
    assert revisions.resolve("6b8f7c9d4", [twin, *sets], deployments=["fraud-model"]).image == (
        "fraud:1.4"
    )
    assert revisions.resolve("6b8f7c9d4", [twin, *sets], deployments=["fraud-canary"]).label == (
        "revision 2 (fraud:9)"
    )


def test_the_model_image_skips_the_sidecar_and_shortens_digests() -> None:
    template = {
        "spec": {
            "containers": [
                {"name": "mlwarden-sidecar", "image": "ghcr.io/x/mlwarden:1"},
                {"name": "model", "image": "reg.io:5000/a/b/fraud@sha256:" + "ab" * 32},
            ]
        }
    }
    image = revisions.model_image(template)
    assert image is not None
    assert revisions.short_image(image) == "fraud@sha256:abababababab"
    assert revisions.short_image("reg.io:5000/fraud:2") == "fraud:2"
    assert revisions.model_image(template, "mlwarden-sidecar") == "ghcr.io/x/mlwarden:1"


def test_display_from_the_detectors_revisions(build: Any) -> None:
    """status.detector.revisions as CONTRACT17 says the detector writes it."""
    _, sets = _sets(build)
    detector = [
        {"revision": "6b8f7c9d4", "records": 1300, "share": 0.1, "firstSeen": "t",
         "lastSeen": "t", "role": "candidate",
         "canary": {"verdict": "Pass", "samples": 1300, "minSamples": 200,
                    "baseline": "5d4c3b2a1"}},
        {"revision": "5d4c3b2a1", "records": 12000, "share": 0.9, "firstSeen": "t",
         "lastSeen": "t", "role": "baseline"},
    ]  # fmt: skip
    shown = revisions.display(detector, sets, deployments=["fraud-model"])
    assert shown == [
        {"revision": "5d4c3b2a1", "deploymentRevision": 6, "deployment": "fraud-model",
         "image": "fraud:1.3", "role": "baseline", "share": 0.9, "records": 12000},
        {"revision": "6b8f7c9d4", "deploymentRevision": 7, "deployment": "fraud-model",
         "image": "fraud:1.4", "role": "candidate", "share": 0.1, "records": 1300,
         "verdict": "Pass"},
    ]  # fmt: skip
    assert revisions.describe(shown) == (
        "revision 6 (fraud:1.3) 90% baseline, revision 7 (fraud:1.4) 10% candidate (canary Pass)"
    )
    assert [e["revision"] for e in revisions.promotable(detector)] == ["6b8f7c9d4"]
    many = [{"revision": f"r{i}", "share": 0.01} for i in range(20)]
    assert len(revisions.display(many, sets)) == revisions.MAX_REVISIONS
    assert revisions.display(None, sets) == [] and revisions.describe([]) == "no revision seen"
