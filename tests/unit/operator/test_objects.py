"""The detector's objects: valid Kubernetes, named and owned as the contract says, and
`needs_update` is quiet on what the API server defaults yet restores what the operator owns."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from typing import Any

import pytest
import yaml

from mlwarden import patches
from mlwarden.names import MANIFEST_DIR, MANIFEST_KEY, REFERENCE_DIR, labels, selector_labels
from mlwarden.operator import objects
from mlwarden.operator.settings import RESTRICTED_SECURITY_CONTEXT, OperatorSettings
from mlwarden.spec import ObservedModel, loads_observed_model, parse_observed_model

Obj = dict[str, Any]
CM_REFERENCE = {"source": "configMap", "configMap": {"name": "fraud-ref", "key": "ref.csv"}}


def by_kind(objs: list[Obj]) -> dict[str, Obj]:
    return {o["kind"]: o for o in objs}


def server_stored(obj: Obj) -> Obj:
    """What the API server hands back after a create: defaults and bookkeeping added."""
    out = copy.deepcopy(obj)
    meta = out["metadata"]
    meta.update(
        uid="0d6f4c9e-0000-4000-8000-000000000001",
        resourceVersion="1001",
        creationTimestamp="2026-01-05T10:00:01Z",
        managedFields=[{"manager": "mlwarden", "operation": "Update", "apiVersion": "v1"}],
    )
    if out["kind"] == "Deployment":
        meta.setdefault("annotations", {})["deployment.kubernetes.io/revision"] = "1"
        meta["generation"] = 1
        spec = out["spec"]
        spec.update(progressDeadlineSeconds=600, revisionHistoryLimit=10)
        pod = spec["template"]["spec"]
        spec["template"]["metadata"]["creationTimestamp"] = None
        pod.update(
            dnsPolicy="ClusterFirst",
            restartPolicy="Always",
            schedulerName="default-scheduler",
            terminationGracePeriodSeconds=30,
        )
        for c in pod["containers"]:
            c.update(terminationMessagePath="/dev/termination-log")
            c["terminationMessagePolicy"] = "File"
            for probe in ("livenessProbe", "readinessProbe"):
                c[probe].update(timeoutSeconds=1, periodSeconds=10, successThreshold=1)
                c[probe]["failureThreshold"] = 3
                c[probe]["httpGet"]["scheme"] = "HTTP"
        for v in pod["volumes"]:
            if "configMap" in v:
                v["configMap"]["defaultMode"] = 420
        out["status"] = {"observedGeneration": 1, "replicas": 1, "availableReplicas": 1}
    if out["kind"] == "Service":
        out["spec"].update(
            clusterIP="10.96.0.17",
            clusterIPs=["10.96.0.17"],
            sessionAffinity="None",
            ipFamilies=["IPv4"],
            ipFamilyPolicy="SingleStack",
            internalTrafficPolicy="Cluster",
        )
        out["status"] = {"loadBalancer": {}}
    return out


class KopfLikeView(Mapping[str, Any]):
    """A read-only mapping view like kopf's Body: not a dict, nested views inside."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self._data = data

    def __getitem__(self, key: str) -> Any:
        value = self._data[key]
        return KopfLikeView(value) if isinstance(value, Mapping) else value

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


# --------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("reference", [None, CM_REFERENCE], ids=["warmup", "configMap"])
def test_every_object_is_valid_kubernetes(
    make_body: Callable[..., Obj],
    settings: OperatorSettings,
    valid_kubernetes: Callable[[Obj], None],
    reference: dict[str, Any] | None,
) -> None:
    body = make_body(**({"reference": reference} if reference else {}))
    model = parse_observed_model(body)
    objs = objects.desired_objects(body, model, settings)
    assert [o["kind"] for o in objs] == [
        "ConfigMap",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "Deployment",
        "Service",
    ]
    for obj in objs:
        valid_kubernetes(obj)
        valid_kubernetes(server_stored(obj))


def test_names_namespace_labels_and_owner(
    body: Obj, model: ObservedModel, settings: OperatorSettings
) -> None:
    for obj in objects.desired_objects(body, model, settings):
        meta = obj["metadata"]
        assert meta["name"] == "fraud-detector"
        assert meta["namespace"] == "ml"
        assert meta["labels"] == labels("fraud")
        assert meta["ownerReferences"] == [
            {
                "apiVersion": "mlwarden.io/v1alpha1",
                "kind": "ObservedModel",
                "name": "fraud",
                "uid": body["metadata"]["uid"],
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]


def test_role_allows_only_this_models_status(body: Obj) -> None:
    assert objects.detector_role(body)["rules"] == [
        {
            "apiGroups": ["mlwarden.io"],
            "resources": ["observedmodels/status"],
            "resourceNames": ["fraud"],
            "verbs": ["get", "patch"],
        },
        # the stored reference: the operator creates the ConfigMap, the detector fills it
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "resourceNames": ["fraud-reference"],
            "verbs": ["get", "patch"],
        },
    ]
    binding = objects.detector_role_binding(body)
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "fraud-detector",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "fraud-detector", "namespace": "ml"}
    ]


def test_config_map_holds_the_users_spec_verbatim(body: Obj, model: ObservedModel) -> None:
    cm = objects.detector_config_map(body, model)
    assert list(cm["data"]) == [MANIFEST_KEY]
    loaded = yaml.safe_load(cm["data"][MANIFEST_KEY])
    assert loaded == {
        "apiVersion": "mlwarden.io/v1alpha1",
        "kind": "ObservedModel",
        "metadata": {"name": "fraud", "namespace": "ml"},
        "spec": body["spec"],
    }
    # the detector and the sidecar can load it
    assert loads_observed_model(cm["data"][MANIFEST_KEY]) == replace(
        model, generation=None, uid=None
    )


def test_kopf_mapping_views_give_plain_objects(
    body: Obj, model: ObservedModel, settings: OperatorSettings
) -> None:
    view = KopfLikeView(body)
    assert objects.desired_objects(view, model, settings) == objects.desired_objects(
        body, model, settings
    )


def test_detector_deployment(body: Obj, model: ObservedModel, settings: OperatorSettings) -> None:
    dep = objects.detector_deployment(body, model, settings)
    spec = dep["spec"]
    assert spec["replicas"] == 1
    assert spec["selector"] == {"matchLabels": selector_labels("fraud")}
    template = spec["template"]
    assert template["metadata"]["labels"] == labels("fraud")
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "8080"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert len(annotations[objects.CONFIG_HASH_ANNOTATION]) == 16
    pod = template["spec"]
    assert pod["serviceAccountName"] == "fraud-detector"
    assert pod["automountServiceAccountToken"] is True
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    (container,) = pod["containers"]
    assert container["image"] == settings.image
    assert container["args"] == [
        "detector",
        "--observed-model",
        f"{MANIFEST_DIR}/{MANIFEST_KEY}",
        "--listen",
        "0.0.0.0:8080",
        "--ingest-token-file",
        "/var/run/mlwarden/ingest-token/token",
    ]
    assert {
        "name": "ingest-token",
        "mountPath": "/var/run/mlwarden/ingest-token",
        "readOnly": True,
    } in container["volumeMounts"]
    assert {
        "name": "ingest-token",
        "secret": {"secretName": "fraud-ingest-token", "defaultMode": 0o440},
    } in pod["volumes"]
    assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["securityContext"] == RESTRICTED_SECURITY_CONTEXT
    assert container["resources"] == settings.detector_resources
    assert {"name": "manifest", "mountPath": MANIFEST_DIR, "readOnly": True} in container[
        "volumeMounts"
    ]
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert {"name": "manifest", "configMap": {"name": "fraud-detector"}} in pod["volumes"]
    assert {"name": "tmp", "emptyDir": {}} in pod["volumes"]


def test_detector_deployment_mounts_a_config_map_reference(
    make_body: Callable[..., Obj], settings: OperatorSettings
) -> None:
    body = make_body(reference=CM_REFERENCE)
    dep = objects.detector_deployment(body, parse_observed_model(body), settings)
    pod = dep["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"][-2:] == ["--reference-dir", REFERENCE_DIR]
    assert {"name": "reference", "configMap": {"name": "fraud-ref"}} in pod["volumes"]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["reference"] == {
        "name": "reference",
        "mountPath": REFERENCE_DIR,
        "readOnly": True,
    }
    # not nested inside a read-only ConfigMap volume: the manifest comes as one file
    assert mounts["manifest"]["mountPath"] == f"{MANIFEST_DIR}/{MANIFEST_KEY}"
    assert mounts["manifest"]["subPath"] == MANIFEST_KEY


def test_detector_service(body: Obj, settings: OperatorSettings) -> None:
    svc = objects.detector_service(body, settings)
    assert svc["spec"] == {
        "type": "ClusterIP",
        "selector": selector_labels("fraud"),
        "ports": [{"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}],
    }


# --------------------------------------------------------------------------- needs_update


def test_nothing_to_update_after_create(
    body: Obj, model: ObservedModel, settings: OperatorSettings
) -> None:
    for desired in objects.desired_objects(body, model, settings):
        assert patches.needs_update(server_stored(desired), desired) is None, desired["kind"]


def test_update_applied_then_quiet(
    make_body: Callable[..., Obj],
    settings: OperatorSettings,
    merge_patch: Callable[[Any, Any], Any],
    valid_kubernetes: Callable[[Obj], None],
) -> None:
    """Old objects, new spec and settings: one patch each, and then nothing more."""
    old_body = make_body()
    new_body = make_body(reference=CM_REFERENCE, protocol="openai")
    old = by_kind(objects.desired_objects(old_body, parse_observed_model(old_body), settings))
    new_settings = replace(
        settings,
        image="registry.example/mlwarden:1.2.4",
        detector_resources={"requests": {"cpu": "0.2", "memory": "256Mi"}, "limits": {}},
    )
    new_model = parse_observed_model(new_body)
    for desired in objects.desired_objects(new_body, new_model, new_settings):
        current = server_stored(old[desired["kind"]])
        patch = patches.needs_update(current, desired)
        changes = desired["kind"] in ("ConfigMap", "Deployment")
        assert (patch is not None) is changes, desired["kind"]
        updated = merge_patch(current, patch) if patch else current
        valid_kubernetes(updated)
        assert patches.needs_update(updated, desired) is None, desired["kind"]
    dep = merge_patch(
        server_stored(old["Deployment"]),
        patches.needs_update(
            server_stored(old["Deployment"]),
            objects.detector_deployment(new_body, new_model, new_settings),
        ),
    )
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"] == {"requests": {"cpu": "0.2", "memory": "256Mi"}, "limits": {}}
    assert "--reference-dir" in container["args"]
    # the spec change rolls the detector
    old_hash = old["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    new_hash = dep["spec"]["template"]["metadata"]["annotations"]
    key = objects.CONFIG_HASH_ANNOTATION
    assert old_hash[key] != new_hash[key]


def test_quantities_compare_by_value(
    body: Obj, model: ObservedModel, settings: OperatorSettings
) -> None:
    wants_half = replace(settings, detector_resources={"requests": {"cpu": "0.5", "memory": "1Gi"}})
    desired = objects.detector_deployment(body, model, wants_half)
    stored = server_stored(desired)
    stored["spec"]["template"]["spec"]["containers"][0]["resources"] = {
        "requests": {"cpu": "500m", "memory": "1024Mi"}
    }
    assert patches.needs_update(stored, desired) is None
    stored["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] = "501m"
    assert patches.needs_update(stored, desired) is not None


def test_owned_maps_lose_extra_keys_others_keep_theirs(
    body: Obj, model: ObservedModel, settings: OperatorSettings
) -> None:
    cm = objects.detector_config_map(body, model)
    current = server_stored(cm)
    current["data"]["stale.yaml"] = "x"
    current["metadata"]["annotations"] = {"team.example/owner": "ml-platform"}
    current["metadata"]["labels"]["team.example/tier"] = "gold"
    assert patches.needs_update(current, cm) == {"data": {"stale.yaml": None}}

    dep = objects.detector_deployment(body, model, settings)
    current = server_stored(dep)
    limits = current["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    limits["cpu"] = "2"  # set by hand: the operator owns the detector's resources
    current["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"] = (
        "2026-01-05T11:00:00Z"  # `kubectl rollout restart`: not the operator's to remove
    )
    patch = patches.needs_update(current, dep)
    assert patch is not None
    assert set(patch) == {"spec"}
    assert set(patch["spec"]["template"]) == {"spec"}
    (container,) = patch["spec"]["template"]["spec"]["containers"]
    assert "cpu" not in container["resources"]["limits"]


def test_owner_reference_added_and_others_kept(body: Obj) -> None:
    sa = objects.detector_service_account(body)
    current = server_stored(sa)
    other = {"apiVersion": "v1", "kind": "ConfigMap", "name": "x", "uid": "1"}
    current["metadata"]["ownerReferences"] = [other]
    patch = patches.needs_update(current, sa)
    assert patch == {"metadata": {"ownerReferences": [other, objects.owner_reference(body)]}}
    current["metadata"]["ownerReferences"] = [other, objects.owner_reference(body)]
    assert patches.needs_update(current, sa) is None


def test_label_change_is_patched(body: Obj) -> None:
    sa = objects.detector_service_account(body)
    current = server_stored(sa)
    current["metadata"]["labels"]["app.kubernetes.io/instance"] = "someone-else"
    assert patches.needs_update(current, sa) == {
        "metadata": {"labels": {"app.kubernetes.io/instance": "fraud"}}
    }


def test_list_items_are_compared_item_by_item(body: Obj, settings: OperatorSettings) -> None:
    svc = objects.detector_service(body, settings)
    current = server_stored(svc)
    current["spec"]["ports"][0]["targetPort"] = 8080
    patch = patches.needs_update(current, svc)
    assert patch == {"spec": {"ports": svc["spec"]["ports"]}}  # the whole list, as desired
    current["spec"]["ports"].append({"name": "extra", "port": 9, "protocol": "TCP"})
    current["spec"]["ports"][0]["targetPort"] = "http"
    assert patches.needs_update(current, svc) == {"spec": {"ports": svc["spec"]["ports"]}}


# --------------------------------------------------------------------------- security objects


def test_objects_created_once_are_owned_and_valid(
    body: Obj, valid_kubernetes: Callable[[Obj], None]
) -> None:
    import base64
    import secrets

    token = secrets.token_urlsafe(32)
    cm, secret = objects.created_once(body, token)
    assert (cm["kind"], cm["metadata"]["name"]) == ("ConfigMap", "fraud-reference")
    assert "data" not in cm  # the detector fills it; the operator never writes it again
    assert (secret["kind"], secret["metadata"]["name"]) == ("Secret", "fraud-ingest-token")
    assert base64.b64decode(secret["data"]["token"]).decode() == token
    assert len(base64.urlsafe_b64decode(token + "=")) == 32  # 32 random bytes
    for obj in (cm, secret):
        (owner,) = obj["metadata"]["ownerReferences"]
        assert owner["uid"] == body["metadata"]["uid"] and owner["controller"] is True
        valid_kubernetes(obj)


def test_network_policy_admits_the_target_pods_and_the_scrapers_only(
    body: Obj, settings: OperatorSettings, valid_kubernetes: Callable[[Obj], None]
) -> None:
    scrapers = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    settings = replace(settings, network_policy=True, network_policy_metrics_from=(scrapers,))
    selector = {"matchLabels": {"app": "fraud-model"}}
    policy = objects.detector_network_policy(body, selector, settings)
    valid_kubernetes(policy)
    valid_kubernetes(server_stored(policy))
    assert policy["metadata"]["name"] == "fraud-detector"
    spec = policy["spec"]
    assert spec["podSelector"]["matchLabels"] == {
        "app.kubernetes.io/name": "mlwarden-detector",
        "app.kubernetes.io/instance": "fraud",
    }
    assert spec["policyTypes"] == ["Ingress"]
    port = [{"protocol": "TCP", "port": "http"}]
    assert spec["ingress"] == [
        {"from": [{"podSelector": selector}], "ports": port},
        {"from": [scrapers], "ports": port},
    ]
    # without scrapers configured, only the observed pods
    bare = objects.detector_network_policy(body, selector, replace(settings,
                                           network_policy_metrics_from=()))  # fmt: skip
    assert len(bare["spec"]["ingress"]) == 1


def test_network_policy_settings_from_the_environment() -> None:
    env = {
        "MLWARDEN_NETWORK_POLICY": "true",
        "MLWARDEN_NETWORK_POLICY_METRICS_FROM": '[{"podSelector": {"matchLabels": {"a": "b"}}}]',
    }
    s = OperatorSettings.from_env(env)
    assert s.network_policy is True
    assert s.network_policy_metrics_from == ({"podSelector": {"matchLabels": {"a": "b"}}},)
    assert OperatorSettings.from_env({}).network_policy is False
    with pytest.raises(ValueError, match="MLWARDEN_NETWORK_POLICY_METRICS_FROM: must be a JSON"):
        OperatorSettings.from_env({"MLWARDEN_NETWORK_POLICY_METRICS_FROM": '{"a": 1}'})
    with pytest.raises(ValueError, match="MLWARDEN_NETWORK_POLICY: must be true or false"):
        OperatorSettings.from_env({"MLWARDEN_NETWORK_POLICY": "yes please"})


def test_the_manifest_carries_the_rebaseline_token_and_a_new_one_rolls_the_detector(
    make_body: Callable[..., Obj], settings: OperatorSettings
) -> None:
    from mlwarden.spec import REBASELINE_ANNOTATION

    plain_body = make_body()
    annotated = copy.deepcopy(plain_body)
    annotated["metadata"]["annotations"] = {REBASELINE_ANNOTATION: "t1", "other": "x"}
    manifest = yaml.safe_load(objects.manifest_yaml(annotated))
    assert manifest["metadata"]["annotations"] == {REBASELINE_ANNOTATION: "t1"}
    assert loads_observed_model(objects.manifest_yaml(annotated)).rebaseline == "t1"
    assert "annotations" not in yaml.safe_load(objects.manifest_yaml(plain_body))["metadata"]

    def config_hash(b: Obj) -> str:
        dep = objects.detector_deployment(b, parse_observed_model(b), settings)
        return str(dep["spec"]["template"]["metadata"]["annotations"]["mlwarden.io/config-hash"])

    again = copy.deepcopy(annotated)
    again["metadata"]["annotations"][REBASELINE_ANNOTATION] = "t2"
    assert len({config_hash(plain_body), config_hash(annotated), config_hash(again)}) == 3


def test_pod_start_settings_from_the_environment() -> None:
    s = OperatorSettings.from_env({"MLWARDEN_IMAGE_PULL_SECRETS": "regcred, mirror.io,regcred"})
    assert s.image_pull_secrets == ("regcred", "mirror.io")
    assert OperatorSettings.from_env({}).image_pull_secrets == ()
    with pytest.raises(ValueError, match="MLWARDEN_IMAGE_PULL_SECRETS: 'Reg_Cred' is not"):
        OperatorSettings.from_env({"MLWARDEN_IMAGE_PULL_SECRETS": "Reg_Cred"})
    with pytest.raises(ValueError, match="MLWARDEN_SIDECAR_ADMIN_PORT: must be a port number"):
        OperatorSettings.from_env({"MLWARDEN_SIDECAR_ADMIN_PORT": "70000"})
    with pytest.raises(ValueError, match="both 18080; the sidecar needs two ports"):
        OperatorSettings.from_env({"MLWARDEN_SIDECAR_ADMIN_PORT": "18080"})
    limited = OperatorSettings.from_env({"MLWARDEN_DETECTOR_CPU_LIMIT": "1"})
    assert limited.detector_resources["limits"] == {"memory": "512Mi", "cpu": "1"}


def test_the_detector_pod_runs_without_a_fixed_uid_and_pulls_with_the_secrets(
    body: Obj, model: ObservedModel, settings: OperatorSettings
) -> None:
    dep = objects.detector_deployment(body, model, settings)
    pod = dep["spec"]["template"]["spec"]
    assert "imagePullSecrets" not in pod
    (container,) = pod["containers"]
    for context in (pod["securityContext"], container["securityContext"]):
        assert context["runAsNonRoot"] is True and "runAsUser" not in context
    with_secrets = replace(settings, image_pull_secrets=("regcred",))
    pod = objects.detector_deployment(body, model, with_secrets)["spec"]["template"]["spec"]
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]


# --------------------------------------------------------------------------- ownership


def test_an_object_of_our_name_is_ours_only_with_our_owner_reference(body: Obj) -> None:
    theirs = {
        "kind": "ConfigMap",
        "metadata": {"name": "fraud-detector", "namespace": "ml", "labels": {"team": "x"}},
    }
    assert objects.name_conflict(body, None) is None  # absent: ours to create
    message = objects.name_conflict(body, theirs)
    assert message is not None
    assert message.startswith(
        "ConfigMap ml/fraud-detector already exists and is not created by mlwarden, not by "
        "ObservedModel fraud; mlwarden never takes over an object it did not create: rename "
        "or delete ConfigMap ml/fraud-detector"
    )
    other = copy.deepcopy(theirs)
    other["metadata"]["ownerReferences"] = [
        {"kind": "ObservedModel", "name": "fraud", "uid": "an-earlier-one"}
    ]
    assert "owned by ObservedModel/fraud" in (objects.name_conflict(body, other) or "")
    mine = copy.deepcopy(theirs)
    mine["metadata"]["ownerReferences"] = [objects.owner_reference(body)]
    assert objects.name_conflict(body, mine) is None


def test_the_ingest_token_secret_is_ours_by_record_create_or_our_detector(body: Obj) -> None:
    assert objects.ingest_token_conflict(body, created=True, detector=None) is None
    message = objects.ingest_token_conflict(body, created=False, detector=None)
    assert message is not None and message.startswith(
        "Secret ml/fraud-ingest-token already exists and ObservedModel fraud did not create it"
    )
    recorded = copy.deepcopy(body)
    recorded["status"]["ingestToken"] = {"secret": "fraud-ingest-token"}
    assert objects.ingest_token_conflict(recorded, created=False, detector=None) is None
    other = copy.deepcopy(body)
    other["status"]["ingestToken"] = {"secret": "another-ingest-token", "uid": "u"}
    assert objects.ingest_token_conflict(other, created=False, detector=None) is not None
    # Made by an operator that kept no record: our own detector Deployment mounts it.
    ours = {"metadata": {"ownerReferences": [objects.owner_reference(body)]}}
    assert objects.ingest_token_conflict(body, created=False, detector=ours) is None
    assert objects.ingest_token_conflict(body, created=False, detector={"metadata": {}}) is not None
