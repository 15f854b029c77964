"""The resource graph: nodes from the spec, annotations and mounts; lineage edges and paths."""

from __future__ import annotations

import copy
from typing import Any

from mlwarden.diagnose import Snapshot, needed_kinds
from mlwarden.diagnose.graph import build_graph, config_refs
from mlwarden.diagnose.snapshot import dig, last_written, owned_by
from mlwarden.timestamps import parse_time


def _keys(graph: Any) -> set[tuple[str, str]]:
    return set(graph.nodes)


def test_spec_pipeline_and_target(kit: Any) -> None:
    c = kit.cluster()
    c.fraud_model()
    c.cronjob("feature-etl", "*/15 * * * *", kit.routine_runs())
    c.deployment("merchant-enricher", [kit.Rev(at=-100, image="enricher:2.3")])
    graph = build_graph(c.snapshot(kit.model(), []))
    target = graph.nodes[("Deployment", "fraud-model")]
    assert target.origin == "target" and target.produces == ("score",) and target.observed
    enricher = graph.nodes[("Deployment", "merchant-enricher")]
    assert enricher.produces == ("merchant_category",)
    assert enricher.depends_on == (("CronJob", "feature-etl"),)
    # Features flow into the model; the model mounts its ConfigMap (not the detector's).
    assert set(target.depends_on) == {
        ("ConfigMap", "fraud-model-config"),
        ("CronJob", "feature-etl"),
        ("Deployment", "merchant-enricher"),
    }
    assert graph.producers("amount") == (("CronJob", "feature-etl"),)
    assert graph.is_model_side(("ConfigMap", "fraud-model-config"))
    assert not graph.is_model_side(("CronJob", "feature-etl"))
    # mlwarden's objects and unrelated workloads are not in the graph.
    assert ("ConfigMap", "fraud-detector") not in graph.nodes
    assert ("Deployment", "checkout-api") not in graph.nodes
    assert graph.problems == ()


def test_upstream_paths_count_hops_and_survive_cycles(kit: Any) -> None:
    pipeline = [
        {"name": "a", "kind": "Deployment", "produces": ["amount"], "dependsOn": ["b"]},
        {"name": "b", "kind": "CronJob", "dependsOn": ["c"]},
        {"name": "c", "kind": "ConfigMap", "dependsOn": ["a"]},  # a cycle back to a
    ]
    c = kit.cluster()
    c.fraud_model()
    graph = build_graph(c.snapshot(kit.model(pipeline), []))
    paths = graph.upstream(graph.producers("amount"))
    assert paths[("Deployment", "a")] == (("Deployment", "a"),)
    assert len(paths[("CronJob", "b")]) - 1 == 1
    assert paths[("ConfigMap", "c")] == (("Deployment", "a"), ("CronJob", "b"), ("ConfigMap", "c"))
    # Components that are not in the namespace are problems, not crashes.
    assert any("CronJob/b" in p for p in graph.problems)


def test_mounts_from_volumes_projected_env_from_and_env(kit: Any) -> None:
    pod_spec = {
        "containers": [
            {
                "name": "main",
                "envFrom": [{"configMapRef": {"name": "env-cm"}}, {"secretRef": {"name": "env-s"}}],
                "env": [
                    {"name": "A", "valueFrom": {"configMapKeyRef": {"name": "key-cm", "key": "a"}}},
                    {"name": "B", "valueFrom": {"secretKeyRef": {"name": "key-s", "key": "b"}}},
                    {"name": "C", "value": "plain"},
                ],
                "volumeMounts": [
                    {"name": "v1", "mountPath": "/a"},
                    {"name": "v2", "mountPath": "/b"},
                ],
            },
            {
                "name": "mlwarden-sidecar",
                "envFrom": [{"configMapRef": {"name": "sidecar-cm"}}],
                "volumeMounts": [{"name": "v3", "mountPath": "/c"}],
            },
        ],
        "volumes": [
            {"name": "v1", "configMap": {"name": "vol-cm"}},
            {
                "name": "v2",
                "projected": {
                    "sources": [{"configMap": {"name": "proj-cm"}}, {"secret": {"name": "proj-s"}}]
                },
            },
            {"name": "v3", "configMap": {"name": "fraud-detector"}},
            {"name": "unmounted", "secret": {"secretName": "nobody"}},
        ],
    }
    assert config_refs(pod_spec) == [
        ("ConfigMap", "vol-cm"),
        ("ConfigMap", "proj-cm"),
        ("Secret", "proj-s"),
        ("ConfigMap", "env-cm"),
        ("Secret", "env-s"),
        ("ConfigMap", "key-cm"),
        ("Secret", "key-s"),
    ]


def test_workloads_mount_configs_as_upstream_nodes(kit: Any) -> None:
    c = kit.cluster()
    c.fraud_model()
    c.configmap("etl-config")
    c.cronjob("feature-etl", "*/15 * * * *", kit.routine_runs(), env_from=["etl-config"])
    c.deployment("merchant-enricher", [kit.Rev(at=-100, image="e:1", secrets=["enricher-creds"])])
    c.secret("enricher-creds")
    graph = build_graph(c.snapshot(kit.model(), []))
    etl_config = graph.nodes[("ConfigMap", "etl-config")]
    assert etl_config.origin == "mount" and etl_config.mounted_by == (("CronJob", "feature-etl"),)
    assert ("ConfigMap", "etl-config") in graph.nodes[("CronJob", "feature-etl")].depends_on
    assert ("Secret", "enricher-creds") in graph.nodes[
        ("Deployment", "merchant-enricher")
    ].depends_on
    paths = graph.upstream(graph.producers("merchant_category"))
    assert len(paths[("ConfigMap", "etl-config")]) - 1 == 2  # via feature-etl


def test_annotation_discovery(kit: Any) -> None:
    c = kit.cluster()
    c.fraud_model()
    c.cronjob("feature-etl", "*/15 * * * *", kit.routine_runs())
    c.deployment("merchant-enricher", [kit.Rev(at=-100, image="e:1")])
    c.deployment(
        "geo-enricher",
        [kit.Rev(at=-100, image="geo:1")],
        annotations={
            "mlwarden.io/produces": "country, region",
            "mlwarden.io/depends-on": "geo-db, ConfigMap/geo-rules, nowhere",
        },
    )
    c.statefulset("geo-db", [kit.Rev(at=-1000, image="postgres:16")])
    c.configmap("geo-rules")
    # Annotated on the jobTemplate: the CronJob is the producer, not each of its Jobs.
    cj = c.cronjob("country-backfill", "0 3 * * *", [kit.Run(scheduled=-60 * 12)])
    cj["spec"]["jobTemplate"]["metadata"] = {"annotations": {"mlwarden.io/produces": "country"}}
    for (kind, _), obj in c.objects.items():
        if kind == "Job" and owned_by(obj, cj, owner_kind="CronJob"):
            obj["metadata"]["annotations"]["mlwarden.io/produces"] = "country"
    # Another model's producer: nothing this model reads.
    c.deployment(
        "basket",
        [kit.Rev(at=-100, image="b:1")],
        annotations={"mlwarden.io/produces": "basket_size"},
    )
    graph = build_graph(c.snapshot(kit.model(), []))
    geo = graph.nodes[("Deployment", "geo-enricher")]
    assert geo.origin == "annotation" and geo.produces == ("country", "region")
    assert geo.depends_on == (("StatefulSet", "geo-db"), ("ConfigMap", "geo-rules"))
    assert any("'nowhere'" in p for p in graph.problems)
    assert graph.nodes[("CronJob", "country-backfill")].produces == ("country",)
    assert not any(k[0] == "Job" for k in graph.nodes)
    assert ("Deployment", "basket") not in graph.nodes
    assert set(graph.producers("country")) == {
        ("Deployment", "geo-enricher"),
        ("CronJob", "country-backfill"),
    }
    # The target depends on discovered producers too.
    assert ("Deployment", "geo-enricher") in graph.nodes[graph.target].depends_on


def test_pipeline_component_with_annotation_merges_produces(kit: Any) -> None:
    c = kit.cluster()
    c.fraud_model()
    c.cronjob(
        "feature-etl",
        "*/15 * * * *",
        kit.routine_runs(),
        annotations={"mlwarden.io/produces": "country"},
    )
    graph = build_graph(c.snapshot(kit.model(), []))
    node = graph.nodes[("CronJob", "feature-etl")]
    assert node.origin == "pipeline" and node.produces == ("amount", "country")


def test_observed_model_component_depends_on_its_target(kit: Any) -> None:
    pipeline = [{"name": "embedder", "kind": "ObservedModel", "produces": ["emb"]}]
    c = kit.cluster()
    c.fraud_model()
    c.observed_model("embedder", target="embedder-model")
    c.deployment(
        "embedder-model",
        [kit.Rev(at=-100, image="emb:3", config_maps=["emb-cfg"])],
        model="embedder",
    )
    c.configmap("emb-cfg")
    graph = build_graph(c.snapshot(kit.model(pipeline, features=("amount", "emb")), []))
    assert graph.nodes[("ObservedModel", "embedder")].depends_on == (
        ("Deployment", "embedder-model"),
    )
    assert graph.nodes[("Deployment", "embedder-model")].origin == "model-target"
    paths = graph.upstream(graph.producers("emb"))
    assert len(paths[("ConfigMap", "emb-cfg")]) - 1 == 2


def test_other_namespace_component_and_missing_target(kit: Any) -> None:
    pipeline = [
        {"name": "lake-export", "kind": "CronJob", "namespace": "data", "produces": ["amount"]}
    ]
    c = kit.cluster()
    c.cronjob("lake-export", "*/15 * * * *", kit.routine_runs())  # same name, wrong namespace
    graph = build_graph(c.snapshot(kit.model(pipeline), []))
    node = graph.nodes[("CronJob", "lake-export")]
    assert node.namespace == "data" and not node.observed
    assert graph.problems == ("the target Deployment 'fraud-model' is not in the snapshot",)


def test_owner_uid_mismatch_is_not_history(kit: Any) -> None:
    c = kit.cluster()
    dep = c.deployment("merchant-enricher", [kit.Rev(at=-100, image="e:1")])
    rs = next(o for (k, _), o in c.objects.items() if k == "ReplicaSet")
    assert owned_by(rs, dep, owner_kind="Deployment")
    recreated = copy.deepcopy(dep)
    recreated["metadata"]["uid"] = "another"
    assert not owned_by(rs, recreated, owner_kind="Deployment")
    assert not owned_by(rs, dep, owner_kind="StatefulSet")


def test_snapshot_from_lists_drops_secret_contents(kit: Any) -> None:
    secret = {
        "metadata": {"name": "s", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "data": {"k": "c2VjcmV0"},
    }
    cm = {"metadata": {"name": "cm"}, "data": {"a": "1"}}
    snap = Snapshot.from_lists(
        model=kit.model(),
        lists={"Secret": [secret], "ConfigMap": [cm, {"metadata": {}}]},
        alerts=[],
        now=kit.at(0),
    )
    assert "data" not in snap.objects[("Secret", "s")]
    assert snap.objects[("ConfigMap", "cm")]["data"] == {"a": "1"}
    assert len(snap.objects) == 2
    assert secret["data"] == {"k": "c2VjcmV0"}  # the caller's object is untouched


def test_needed_kinds_cover_what_the_diagnosis_reads() -> None:
    kinds = needed_kinds()
    for kind in (
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
    ):
        assert kind in kinds
    assert len(set(kinds)) == len(kinds)


def test_reading_helpers() -> None:
    obj = {"a": {"b": [{"c": 1}]}}
    assert dig(obj, "a", "b", 0, "c") == 1
    assert dig(obj, "a", "x", "c") is None
    assert dig(obj, "a", "b", 5) is None
    assert dig(obj, "a", "b", "c") is None
    assert parse_time("2026-11-26T15:02:11.204Z") == parse_time("2026-11-26T15:02:11.204+00:00")
    assert parse_time("yesterday") is None and parse_time(None) is None
    naive = parse_time("2026-11-26T15:02:11")
    assert naive is not None and naive.utcoffset() is not None
    written = last_written(
        {
            "metadata": {
                "creationTimestamp": "2026-11-01T00:00:00Z",
                "managedFields": [
                    {"manager": "helm", "time": "2026-11-02T00:00:00Z"},
                    {"manager": "kubectl-edit", "time": "2026-11-20T00:00:00Z"},
                    {"manager": "kcm", "time": "2026-11-25T00:00:00Z", "subresource": "status"},
                ],
            }
        }
    )
    assert written is not None and written.manager == "kubectl-edit"
    assert written.at == parse_time("2026-11-20T00:00:00Z")
    fallback = last_written({"metadata": {"creationTimestamp": "2026-11-01T00:00:00Z"}})
    assert fallback is not None and fallback.manager is None
