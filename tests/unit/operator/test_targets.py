"""status.target: what spec.target resolved to, by kind (operator/targets.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mlwarden.operator.status import Observation, status_patch
from mlwarden.operator.targets import FIELDS, label_selector, resolved
from mlwarden.spec import parse_observed_model

MakeBody = Callable[..., dict[str, Any]]


def workload(kind: str, **spec: Any) -> dict[str, Any]:
    selector = {"matchLabels": {"app": "fraud-model", "tier": "a"}}
    return {"kind": kind, "metadata": {"name": "fraud-model", "namespace": "ml"},
            "spec": {"selector": selector, **spec}}  # fmt: skip


def test_label_selector_reads_as_kubectl_takes_it() -> None:
    selector = {
        "matchLabels": {"b": "2", "a": "1"},
        "matchExpressions": [
            {"key": "env", "operator": "In", "values": ["x", "y"]},
            {"key": "canary", "operator": "DoesNotExist"},
            {"key": "team", "operator": "Exists"},
            {"key": "zone", "operator": "NotIn", "values": ["z"]},
        ],
    }
    assert label_selector(selector) == "a=1,b=2,env in (x,y),!canary,team,zone notin (z)"
    assert label_selector(None) == ""


def test_each_kind_resolves_its_ref_selector_and_revision_label(make_body: MakeBody) -> None:
    for kind, label in [("Deployment", "pod-template-hash"),
                        ("StatefulSet", "controller-revision-hash"),
                        ("Rollout", "rollouts-pod-template-hash")]:  # fmt: skip
        model = parse_observed_model(make_body(target={"kind": kind, "name": "fraud-model"}))
        got = resolved(model, workload(kind))
        assert set(got) == set(FIELDS)
        assert {k: v for k, v in got.items() if v is not None} == {
            "kind": kind, "name": "fraud-model", "ref": f"{kind}/fraud-model",
            "selector": "app=fraud-model,tier=a", "revisionLabel": label,
            "service": "fraud-model",
        }, kind  # fmt: skip
    # The original shape (deployment: NAME) and a workload not read yet: kind, name, ref.
    model = parse_observed_model(make_body(target={"deployment": "m", "service": "s"}))
    got = resolved(model, None)
    assert (got["ref"], got["selector"], got["service"]) == ("Deployment/m", None, "s")


def test_a_workload_ref_names_the_template_and_an_isvc_its_components(
    make_body: MakeBody,
) -> None:
    model = parse_observed_model(make_body(target={"kind": "Rollout", "name": "fraud-model"}))
    base = {"kind": "Deployment", "metadata": {"name": "base"}}
    assert resolved(model, workload("Rollout"), template=base)["template"] == "Deployment/base"
    isvc_model = parse_observed_model(
        make_body(target={"kind": "InferenceService", "name": "fraud"})
    )
    isvc = {"spec": {"predictor": {"model": {}}, "transformer": {"containers": []}}}
    got = resolved(isvc_model, isvc)
    assert (got["ref"], got["components"], got["selector"], got["service"]) == (
        "InferenceService/fraud", ["predictor", "transformer"],
        "serving.kserve.io/inferenceservice=fraud", None,
    )  # fmt: skip


def test_status_patch_writes_the_target_only_when_resolved(make_body: MakeBody) -> None:
    assert "target" not in status_patch(Observation(), None, now="t")
    model = parse_observed_model(make_body(target={"kind": "StatefulSet", "name": "db"}))
    target = resolved(model, None)
    assert status_patch(Observation(target=target), None, now="t")["target"] == target
