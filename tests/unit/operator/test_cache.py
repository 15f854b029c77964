"""What the operator's watch-backed caches keep of an object (operator/cache.py)."""

from __future__ import annotations

import copy
from typing import Any

from mlwarden.diagnose.snapshot import last_written
from mlwarden.operator.cache import CACHED_KINDS, index_id, lists, slim


def configmap() -> dict[str, Any]:
    return {
        "metadata": {
            "name": "settings", "namespace": "ml", "resourceVersion": "42",
            "creationTimestamp": "2026-11-01T00:00:00Z",
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{...}",
                            "team": "fraud"},
            "managedFields": [
                {"manager": "kubectl-edit", "operation": "Update", "time": "2026-11-20T00:00:00Z",
                 "fieldsV1": {"f:data": {}}},
                {"manager": "helm", "operation": "Update", "time": "2026-11-25T00:00:00Z",
                 "fieldsV1": {"f:data": {}}},
                {"manager": "kubelet", "operation": "Update", "subresource": "status",
                 "time": "2026-11-30T00:00:00Z", "fieldsV1": {}},
            ],
        },
        "data": {"threshold": "3"},
        "binaryData": {"blob": "AAAA"},
    }  # fmt: skip


def test_a_configmap_keeps_its_last_write_and_loses_its_data() -> None:
    cm = configmap()
    before = copy.deepcopy(cm)
    kept = slim("ConfigMap", cm)
    assert cm == before  # the watched body is not touched
    assert "data" not in kept and "binaryData" not in kept
    assert kept["metadata"]["managedFields"] == [
        {"manager": "helm", "operation": "Update", "time": "2026-11-25T00:00:00Z"}
    ]
    assert last_written(kept) == last_written(cm)
    assert kept["metadata"]["annotations"] == {"team": "fraud"}
    assert kept["metadata"]["resourceVersion"] == "42"  # reactions' patches carry it
    assert (kept["kind"], kept["apiVersion"]) == ("ConfigMap", "v1")


def test_a_pod_keeps_its_status_not_its_spec() -> None:
    pod = {"metadata": {"name": "p", "ownerReferences": [{"kind": "ReplicaSet", "name": "r"}]},
           "spec": {"containers": [{"name": "model"}]},
           "status": {"containerStatuses": [{"name": "model", "restartCount": 7}]}}  # fmt: skip
    kept = slim("Pod", pod)
    assert "spec" not in kept
    assert kept["status"] == pod["status"] and kept["metadata"] == pod["metadata"]
    assert kept["apiVersion"] == "v1"


def test_lists_reads_one_namespace_and_every_cached_kind() -> None:
    indexes = {index_id("ConfigMap"): {"ml": [slim("ConfigMap", configmap())], "other": [{}]}}
    out = lists(indexes, "ml")
    assert set(out) == set(CACHED_KINDS)
    assert [o["metadata"]["name"] for o in out["ConfigMap"]] == ["settings"]
    assert out["Pod"] == [] and lists(indexes, "nowhere")["ConfigMap"] == []
