"""RBAC audit: every API call the operator made in these tests, checked against the chart's rules.

The emulator records each call the operator makes (cluster.py, `OPERATOR_CALLS`:
verb, API group, resource/subresource, namespace, name), across every operator
test of the session; the tests that judge them ask for `every_operator_call`
(conftest.py), which runs them last and hands them the calls of every other operator
test of the session, from every pytest-xdist worker, once all have finished: the
reconciles, diagnoses, reactions and deletions of the whole suite. The first test
here drives one full life cycle itself so the audit is never empty.
The chart is rendered by the real Helm engine (as tests/chart does) the way the
tests run the operator (`--namespace test`: `watchNamespaces: [test]`, a Role),
and cluster-wide (the default: a ClusterRole); each call must be allowed by
Kubernetes' RBAC rule matching, implemented here from the reference docs.

Calls of an operator run cluster-wide (test_api_cost.py) are kept apart, in
`CLUSTER_WIDE_CALLS`, and checked against the ClusterRole only.

The detector is audited the same way: a real `mlwarden detector --report-to` the
emulator, with its own token, against the Role the operator created for it.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from cluster import (
    ADMISSION_CHECKS,
    CALLS_BY_TOKEN,
    NS,
    OM,
    OPERATOR_CALLS,
    ApiCall,
    Cluster,
    EveryCall,
    api_call,
    eventually,
    exists,
    model_deployment,
    model_service,
    obj,
    observed_model,
)

helm = pytest.importorskip("helm_python", reason="helm-python-sdk is not installed")

CHART = Path(__file__).resolve().parents[2] / "charts" / "mlwarden"
RELEASE = "mlwarden"


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    with helm.Chart.load(CHART) as chart:
        manifests = chart.render(values, name=RELEASE, namespace="mlwarden-system", is_install=True)
    return [
        doc
        for name, text in manifests.items()
        if not name.endswith("NOTES.txt")
        for doc in yaml.safe_load_all(text)
        if doc
    ]


def operator_rules(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    (role,) = [
        o for o in objects if o["kind"] == kind and o["metadata"]["name"] == RELEASE
        and o["metadata"].get("namespace", NS) == NS
    ]  # fmt: skip
    return list(role["rules"])


# Tried on purpose, not granted by the chart: a webhook URL in a Secret (`reactions[].
# webhookSecret`) is read only where the Secret's owner grants get on it by name (a Role with
# resourceNames; docs/operator.md); the chart grants nothing on Secrets but create.
DELIBERATELY_REFUSED: set[tuple[str, str, str]] = {("", "secrets", "get")}
# Namespaced installs only: the injection reads the model's Namespace for Istio's labels, which a
# Role cannot grant (cluster-scoped); refused, the operator goes by the pod template alone
# (handlers._namespace_labels). The ClusterRole grants it.
REFUSED_WHEN_NAMESPACED = {("", "namespaces", "get")}


def owner_reference_checks(api: Cluster) -> list[ApiCall]:
    """The permission each blockOwnerDeletion owner reference in the emulator needed."""
    checks = []
    for key in list(api.objects):
        version = api.objects[key]
        for ref in (dict(version).get("metadata") or {}).get("ownerReferences") or []:
            if ref.get("blockOwnerDeletion") and ref.get("kind") == "ObservedModel":
                group = str(ref.get("apiVersion", "")).partition("/")[0]
                name = ref["name"]
                checks.append(ApiCall("update", group, "observedmodels/finalizers", NS, name))
    return checks


def allows(rules: list[dict[str, Any]], call: ApiCall) -> bool:
    """Kubernetes RBAC: some rule names the group, the resource, the verb (and the name)."""
    for rule in rules:
        if not ({"*", call.group} & set(rule.get("apiGroups", []))):
            continue
        if not ({"*", call.resource} & set(rule.get("resources", []))):
            continue
        if not ({"*", call.verb} & set(rule.get("verbs", []))):
            continue
        names = rule.get("resourceNames") or []
        # resourceNames cannot restrict list, watch, create or deletecollection (no name).
        if names and call.name not in names:
            continue
        return True
    return False


def triples(calls: list[ApiCall]) -> set[tuple[str, str, str]]:
    return {(c.group, c.resource, c.verb) for c in calls}


def granted(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {
        (g, r, v)
        for rule in rules
        for g in rule.get("apiGroups", [])
        for r in rule.get("resources", [])
        for v in rule.get("verbs", [])
    }


async def test_a_full_life_cycle_is_recorded(
    cluster: tuple[Cluster, str], warming_up: Callable[..., Any]
) -> None:
    """Reconcile, inject, then delete: the audit's own traffic, whatever else ran."""
    api, server = cluster
    before = len(OPERATOR_CALLS)
    op = await warming_up()
    ADMISSION_CHECKS.extend(owner_reference_checks(api))
    assert ADMISSION_CHECKS, "no owner reference with blockOwnerDeletion was set"
    await api_call(
        server, "DELETE", f"/apis/mlwarden.io/v1alpha1/namespaces/{NS}/observedmodels/fraud"
    )
    await eventually(lambda: not exists(api, OM, "fraud"), what="deleted")
    await asyncio.sleep(1.0)
    assert await op.stop() == 0
    mine = OPERATOR_CALLS[before:]
    verbs = {c.verb for c in mine}
    assert {"list", "watch", "create", "patch"} <= verbs, verbs


@pytest.mark.parametrize("mode", ["namespaced", "cluster-wide"])
def test_every_call_the_operator_made_is_granted_by_the_chart(
    mode: str, every_operator_call: EveryCall
) -> None:
    assert every_operator_call.operator, "no calls recorded"
    calls = list(every_operator_call.operator)
    if mode == "namespaced":
        rules = operator_rules(render({"watchNamespaces": [NS]}), "Role")
    else:
        rules = operator_rules(render({}), "ClusterRole")
        # An operator run without --namespace (test_api_cost.py).
        calls += every_operator_call.cluster_wide
    denied = sorted(
        {
            c
            for c in calls + every_operator_call.admission
            if not allows(rules, c)
            and (c.group, c.resource, c.verb) not in DELIBERATELY_REFUSED
            and not (
                mode == "namespaced" and (c.group, c.resource, c.verb) in REFUSED_WHEN_NAMESPACED
            )
        },
        key=repr,
    )
    assert not denied, "calls the chart does not allow:\n" + "\n".join(map(repr, denied))


# Granted, reachable in the operator's code, but not reached by the operator tests, each with
# where it is called. Anything else the chart grants must have been used by the suite.
REACHABLE_NOT_EXERCISED: dict[tuple[str, str, str], str] = {
    ("", "serviceaccounts", "patch"): "handlers._ensure: a detector object edited by hand",
    ("rbac.authorization.k8s.io", "roles", "patch"): "handlers._ensure, as above",
    ("rbac.authorization.k8s.io", "rolebindings", "patch"): "handlers._ensure, as above",
    ("networking.k8s.io", "networkpolicies", "patch"): "handlers._ensure, as above",
    ("gateway.networking.k8s.io", "httproutes", "get"): (
        "respond.apply_patches: a shiftTraffic patch answered 409, re-read to plan again"
    ),
    ("networking.istio.io", "virtualservices", "get"): "respond.apply_patches, as above",
    ("mlwarden.io", "incidents", "delete"): (
        "incidents.IncidentStep._expire_fleets: a fleet resolved for a day "
        "(MLWARDEN_INCIDENT_RETENTION_SECONDS)"
    ),
    ("mlwarden.io", "observedmodels/status", "get"): (
        "never called: held because each detector's Role grants it (RBAC escalation rule)"
    ),
}
# The operator test modules whose calls the audit needs (a partial run cannot judge "unused").
WHOLE_SUITE = {p.name for p in Path(__file__).parent.glob("test_*.py")}


def test_the_chart_grants_nothing_the_operator_does_not_use(
    request: pytest.FixtureRequest, every_operator_call: EveryCall
) -> None:
    """Both directions of "exactly": what the suite never called is reachable and listed."""
    ran = {Path(str(item.fspath)).name for item in request.session.items}
    missing = sorted(WHOLE_SUITE - ran)
    if missing:
        pytest.skip(f"needs the whole operator suite in this session; not run: {missing}")
    # The admission's check uses a grant too.
    used = triples(every_operator_call.operator + every_operator_call.admission)
    for mode, rules in (("namespaced", operator_rules(render({"watchNamespaces": [NS]}), "Role")),
                        ("cluster-wide", operator_rules(render({}), "ClusterRole"))):  # fmt: skip
        unused = granted(rules) - used - set(REACHABLE_NOT_EXERCISED)
        if mode == "cluster-wide":
            unused -= triples(every_operator_call.cluster_wide)
        if mode == "cluster-wide":  # kopf's CRD watch: at start-up, before any test's calls
            unused -= {("apiextensions.k8s.io", "customresourcedefinitions", "list"),
                       ("apiextensions.k8s.io", "customresourcedefinitions", "watch")}  # fmt: skip
        assert not unused, f"{mode}: granted, never used: {sorted(unused)}"
    stale = {t for t in REACHABLE_NOT_EXERCISED if t in used}
    assert not stale, f"now exercised by the suite, drop from REACHABLE_NOT_EXERCISED: {stale}"


async def test_the_detector_can_patch_only_its_own_status(
    cluster: tuple[Cluster, str],
    start_operator: Callable[..., Any],
    seed: Callable[..., None],
    tmp_path: Path,
) -> None:
    api, server = cluster
    seed(api, model_deployment(), model_service(), observed_model())
    op = await start_operator()
    await eventually(lambda: exists(api, "rbac.authorization.k8s.io/v1/roles", "fraud-detector"))
    role = obj(api, "rbac.authorization.k8s.io/v1/roles", "fraud-detector")
    rules = list(role["rules"])
    own = ApiCall("patch", "mlwarden.io", "observedmodels/status", NS, "fraud")
    assert allows(rules, own)
    assert allows(rules, ApiCall("get", "mlwarden.io", "observedmodels/status", NS, "fraud"))
    for other in (
        ApiCall("patch", "mlwarden.io", "observedmodels/status", NS, "someone-else"),
        ApiCall("patch", "mlwarden.io", "observedmodels", NS, "fraud"),  # not the spec
        ApiCall("list", "mlwarden.io", "observedmodels", NS, None),
        ApiCall("get", "", "secrets", NS, "fraud-detector"),
        ApiCall("get", "", "configmaps", NS, "someone-else-reference"),
        ApiCall("list", "", "configmaps", NS, None),
        ApiCall("patch", "apps", "deployments", NS, "fraud-model"),
    ):
        assert not allows(rules, other), other

    # The real detector, reporting its status to the emulator with its own token.
    seen = CALLS_BY_TOKEN.setdefault("detector-token", [])
    manifest = tmp_path / "om.yaml"
    om = json.loads(json.dumps(obj(api, OM, "fraud"), default=dict))
    om["spec"]["alerting"] = {"evaluationInterval": "200ms"}
    manifest.write_text(json.dumps(om))  # YAML reads JSON
    port_proc = subprocess.Popen(
        [sys.executable, "-m", "mlwarden.cli", "detector", "--observed-model", str(manifest),
         "--listen", "127.0.0.1:0", "--report-to", server, "--report-token", "detector-token"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await eventually(
            lambda: any(c.verb == "patch" for c in seen),
            timeout=30,
            what="the detector's status write",
        )
    finally:
        port_proc.terminate()
        await asyncio.to_thread(port_proc.wait, 10)
        await op.stop()
    assert seen and all(allows(rules, c) for c in seen), seen
    # Its own status, and its own reference store (a ConfigMap, since reference persistence).
    assert {(c.resource, c.name) for c in seen} <= {
        ("observedmodels/status", "fraud"),
        ("configmaps", "fraud-reference"),
    }, seen
    assert ("patch", "observedmodels/status") in {(c.verb, c.resource) for c in seen}
