"""What the diagnosis and reaction passes cost the API server: watches, not lists per pass.

The real operator, namespaced (`--namespace test`) and cluster-wide, with an active alert and
the respond timer every 0.5 s. The objects the diagnosis reads come from kopf's watch-backed
indexes (operator/cache.py): after start-up, a pass makes no LIST call at all, yet a CronJob
and its failed Job created through the API after the operator started are in the diagnosis.
Gateway API and Istio are not installed (their kinds are not served), which must not stop
the operator. kopf lists each kind at start-up in pages (`MLWARDEN_LIST_CHUNK_SIZE`, 2 here;
the emulator serves `limit`/`continue`, emulate_paging.py), and a ConfigMap on the second
page is in the diagnosis too.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cluster import (
    CLUSTER_WIDE_CALLS,
    FAST,
    HTTPROUTES,
    MERGE,
    NS,
    OM_PATH,
    OPERATOR_CALLS,
    REFERENCE,
    VIRTUALSERVICES,
    Cluster,
    OperatorProcess,
    ago,
    api_call,
    eventually,
    iso,
    launch_operator,
    model_deployment,
    model_service,
    observed_model,
    status,
)

from mlwarden.kube import Kube, StaticToken

# FAST passes, and lists in pages of 2 (so that paging is exercised with a handful of objects).
FAST_PAGED = {**FAST, "MLWARDEN_LIST_CHUNK_SIZE": "2"}


def configmap(name: str, *, created: datetime, edited: datetime | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": NS, "uid": str(uuid.uuid4()),
                            "resourceVersion": "1", "creationTimestamp": iso(created)}  # fmt: skip
    if edited is not None:
        meta["managedFields"] = [
            {"manager": "kubectl-edit", "operation": "Update", "time": iso(edited),
             "fieldsV1": {"f:data": {"f:threshold": {}}}},
        ]  # fmt: skip
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"threshold": "3"}}


def cronjob_and_failed_job(onset: datetime) -> tuple[dict[str, Any], dict[str, Any]]:
    cronjob = {
        "apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"name": "feature-etl", "namespace": NS,
                     "creationTimestamp": iso(ago(days=30))},
        "spec": {"schedule": "*/30 * * * *", "jobTemplate": {"spec": {"template": {"spec": {
            "containers": [{"name": "etl", "image": "etl:1"}], "restartPolicy": "Never"}}}}},
    }  # fmt: skip
    failed_at = onset - timedelta(minutes=3)
    job = {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "feature-etl-29000000", "namespace": NS},
        "spec": {"template": {"spec": {"containers": [{"name": "etl", "image": "etl:1"}]}}},
        "status": {"startTime": iso(failed_at - timedelta(minutes=2)), "failed": 1,
                   "conditions": [{"type": "Failed", "status": "True",
                                   "reason": "BackoffLimitExceeded",
                                   "lastTransitionTime": iso(failed_at)}]},
    }  # fmt: skip
    return cronjob, job


async def start_cluster_wide(tmp_path: Path, server: str) -> OperatorProcess:
    """`mlwarden operator --standalone` without --namespace: kopf watches every namespace."""
    return await launch_operator(
        tmp_path, server, namespace=None, env={"MLWARDEN_IMAGE": "mlwarden:test", **FAST_PAGED},
        log_name="operator-cluster-wide.log",
    )  # fmt: skip


@pytest.mark.parametrize("mode", ["namespaced", "cluster-wide"])
async def test_passes_read_watched_caches_and_list_nothing(
    mode: str,
    cluster: tuple[Cluster, str],
    start_operator: Callable[..., Any],
    seed: Callable[..., None],
    tmp_path: Path,
) -> None:
    api, server = cluster
    # Neither Gateway API nor Istio is installed: their kinds are not served at all.
    del api.resources[HTTPROUTES]
    del api.resources[VIRTUALSERVICES]
    onset = ago(minutes=1)
    # The model's ConfigMap, edited 5 minutes before onset; named to sort last, so that with
    # pages of 2 it comes on the second page of kopf's start-up list of ConfigMaps.
    settings = configmap(
        "zz-model-settings", created=ago(days=30), edited=onset - timedelta(minutes=5)
    )
    deployment = model_deployment()
    deployment["spec"]["template"]["spec"]["containers"][0]["envFrom"] = [
        {"configMapRef": {"name": "zz-model-settings"}}
    ]
    seed(api, deployment, model_service(), settings,
         configmap("aa-other", created=ago(days=30)), configmap("ab-other", created=ago(days=30)),
         observed_model(features=[{"name": "amount", "type": "numeric"}],
                        pipeline=[{"name": "feature-etl", "kind": "CronJob",
                                   "produces": ["amount"]}]))  # fmt: skip
    calls = OPERATOR_CALLS
    start = len(calls)
    if mode == "namespaced":
        op = await start_operator(env=FAST_PAGED)
    else:
        op = await start_cluster_wide(tmp_path, server)
    try:
        await eventually(lambda: status(api).get("phase") == "WarmingUp", timeout=30,
                         what="WarmingUp")  # fmt: skip
        await api_call(server, "PATCH", OM_PATH + "/status", {"status": {
            "alerts": [], "detector": {"reference": REFERENCE, "updated": iso(ago(seconds=1))}}},
            MERGE)  # fmt: skip
        await eventually(lambda: status(api).get("phase") == "Observing", what="Observing")

        # Created through the API after the operator started: only a watch can have seen them.
        cronjob, job = cronjob_and_failed_job(onset)
        created = await api_call(server, "POST", f"/apis/batch/v1/namespaces/{NS}/cronjobs",
                                 cronjob)  # fmt: skip
        job["metadata"]["ownerReferences"] = [{
            "apiVersion": "batch/v1", "kind": "CronJob", "name": "feature-etl",
            "uid": created["metadata"]["uid"], "controller": True}]  # fmt: skip
        await api_call(server, "POST", f"/apis/batch/v1/namespaces/{NS}/jobs", job)
        alert = {"type": "FeatureDrift", "feature": "amount", "test": "ks", "statistic": 0.4,
                 "threshold": 0.1, "since": iso(onset), "reference": REFERENCE["id"]}  # fmt: skip
        await api_call(server, "PATCH", OM_PATH + "/status", {"status": {"alerts": [alert]}},
                       MERGE)  # fmt: skip
        await eventually(lambda: status(api).get("topSuspect") == "CronJob/feature-etl",
                         what="the CronJob created after start-up as the top suspect")  # fmt: skip
        suspects = {(s["kind"], s["name"]): s for s in status(api)["diagnosis"]["suspects"]}
        assert any("failed" in e for e in suspects["CronJob", "feature-etl"]["evidence"])
        assert ("ConfigMap", "zz-model-settings") in suspects, suspects  # from the second page

        # Timer passes with the alert active: each reads its ObservedModel, and nothing else.
        mark = len(calls)
        await asyncio.sleep(3.0)
        assert op.proc.returncode is None, op.log()[-3000:]
        during = calls[mark:]
        passes = [c for c in during if (c.verb, c.resource, c.name) ==
                  ("get", "observedmodels", "fraud")]  # fmt: skip
        assert len(passes) >= 3, during
        lists = sorted({(c.resource, c.namespace) for c in during if c.verb == "list"})
        assert not lists, f"listed during {len(passes)} passes: {lists}"
        # Nor does it GET anything else: the detector's Deployment is in the cache too.
        gets = sorted({(c.resource, c.name) for c in during if c.verb == "get"} - {
            ("observedmodels", "fraud")})  # fmt: skip
        assert not gets, f"read during {len(passes)} passes: {gets}"
        # The operator never asks for a Secret in any way but creating the ingest token.
        mine = calls[start:]
        assert {c.verb for c in mine if c.resource == "secrets"} <= {"create"}, mine
        assert api.pages["configmaps"] >= 2, api.pages  # kopf's start-up list, paged
    finally:
        await op.stop()
        if mode == "cluster-wide":
            # Audited against the ClusterRole only (test_rbac_audit.py): kopf's cluster-wide
            # calls (the CRD watch) are not the namespaced Role's business.
            CLUSTER_WIDE_CALLS.extend(calls[start:])
            del calls[start:]


async def test_a_list_is_read_in_pages(
    cluster: tuple[Cluster, str], seed: Callable[..., None]
) -> None:
    api, server = cluster
    names = [f"cm-{i}" for i in range(5)]
    seed(api, *(configmap(name, created=ago(days=1)) for name in names))
    kube = Kube(StaticToken(server))
    try:
        items = await kube.list("ConfigMap", NS, page=2)
    finally:
        await kube.close()
    assert sorted(i["metadata"]["name"] for i in items) == names
    assert {i["kind"] for i in items} == {"ConfigMap"}
    assert api.pages["configmaps"] == 3
