"""The demo's Kubernetes: the Deployment controller's revisions, and what kubectl prints."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path
from typing import Any

import aiohttp
import kmock
import pytest

from mlwarden.demo.cluster import DEPLOYMENTS, OM, REVISION, DemoCluster, kubeconfig


def deployment(image: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "m", "namespace": "demo", "labels": {"app": "m"}},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "m"}},
                 "template": {"metadata": {"labels": {"app": "m"}},
                              "spec": {"containers": [{"name": "model", "image": image}]}}},
    }  # fmt: skip


def revisions(api: DemoCluster) -> dict[str, str]:
    """ReplicaSet image -> revision."""
    return {
        rs["spec"]["template"]["spec"]["containers"][0]["image"]:
            rs["metadata"]["annotations"][REVISION]
        for rs in api.items("replicasets")
    }  # fmt: skip


async def patch_image(server: str, image: str) -> None:
    body = {"spec": {"template": {"spec": {"containers": [{"name": "model", "image": image}]}}}}
    async with aiohttp.ClientSession() as http, http.patch(
        f"{server}/apis/apps/v1/namespaces/demo/deployments/m", data=json.dumps(body),
        headers={"Content-Type": "application/merge-patch+json"},
    ) as resp:  # fmt: skip
        assert resp.status == 200, await resp.text()


async def test_each_template_gets_a_revision_and_an_old_one_coming_back_the_next() -> None:
    async with DemoCluster() as api, kmock.Server(api) as server:
        api.declare("demo")
        url = str(server.url).rstrip("/")
        api.seed(deployment("m:1"))
        assert revisions(api) == {"m:1": "1"}
        await patch_image(url, "m:2")
        assert revisions(api) == {"m:1": "1", "m:2": "2"}
        dep = api.read(DEPLOYMENTS, "demo", "m")
        assert dep is not None and dep["metadata"]["annotations"][REVISION] == "2"
        assert dep["status"]["updatedReplicas"] == 2
        # `rollout undo`: the old ReplicaSet comes back with the next revision, as in Kubernetes.
        await patch_image(url, "m:1")
        assert revisions(api) == {"m:1": "3", "m:2": "2"}
        dep = api.read(DEPLOYMENTS, "demo", "m")
        assert dep is not None and dep["metadata"]["annotations"][REVISION] == "3"
        old = next(rs for rs in api.items("replicasets") if rs["metadata"]["name"].startswith("m-")
                   and rs["metadata"]["annotations"][REVISION] == "2")  # fmt: skip
        assert old["spec"]["replicas"] == 0


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed here")
async def test_kubectl_get_shows_the_printer_columns(tmp_path: Path) -> None:
    async with DemoCluster() as api, kmock.Server(api) as server:
        api.declare("demo")
        api.seed(deployment("m:1"))
        api.seed({
            "apiVersion": "mlwarden.io/v1alpha1", "kind": "ObservedModel",
            "metadata": {"name": "iris", "namespace": "demo"},
            "spec": {"target": {"deployment": "m"}},
            "status": {"phase": "Degraded", "openIncidents": 1, "alertCount": 2,
                       "topSuspect": "CronJob/etl", "target": {"ref": "Deployment/m"}},
        })  # fmt: skip
        assert api.read(OM, "demo", "iris") is not None
        env = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig(tmp_path / "kc", str(server.url).rstrip("/"), "demo")),
        }

        async def kubectl(*args: str) -> str:
            proc = await asyncio.create_subprocess_exec(
                "kubectl", *args, env=env, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            out, err = await proc.communicate()
            assert proc.returncode == 0, err.decode()
            assert "Warning" not in err.decode(), err.decode()
            return out.decode() + err.decode()

        header, row = (await kubectl("get", "om")).splitlines()
        assert header.split()[:6] == ["NAME", "TARGET", "PHASE", "INCIDENTS", "ALERTS", "TOP"]
        assert row.split()[:6] == ["iris", "Deployment/m", "Degraded", "1", "2", "CronJob/etl"]
        deploy = (await kubectl("get", "deploy", "m")).splitlines()[1].split()
        assert deploy[:4] == ["m", "2/2", "1", "m:1"]
        assert "iris" in await kubectl("describe", "om", "iris")
        assert "No resources found" in await kubectl("get", "events")


async def test_a_json_patch_whose_test_fails_is_refused_with_422_and_stores_nothing() -> None:
    """kopf removes its finalizer with a JSON patch that first tests the resourceVersion it
    read; when another writer came first the API server answers 422 (kopf then waits for the
    next event), not 500 (which kopf retries unchanged for about a minute)."""
    async with DemoCluster() as api, kmock.Server(api) as server:
        api.declare("demo")
        api.seed({
            "apiVersion": "mlwarden.io/v1alpha1", "kind": "ObservedModel",
            "metadata": {"name": "iris", "namespace": "demo", "finalizers": ["mlwarden.io/f"]},
            "spec": {"target": {"deployment": "m"}},
        })  # fmt: skip
        base = str(server.url).rstrip("/")
        url = f"{base}/apis/mlwarden.io/v1alpha1/namespaces/demo/observedmodels/iris"
        read = api.read(OM, "demo", "iris")
        assert read is not None
        version = read["metadata"]["resourceVersion"]

        async def json_patch(tested: str) -> tuple[int, Any]:
            ops = [{"op": "test", "path": "/metadata/resourceVersion", "value": tested},
                   {"op": "remove", "path": "/metadata/finalizers"}]  # fmt: skip
            async with aiohttp.ClientSession() as http, http.patch(
                url, data=json.dumps(ops), headers={"Content-Type": "application/json-patch+json"}
            ) as resp:  # fmt: skip
                return resp.status, await resp.json()

        status, body = await json_patch("stale")
        assert (status, body["code"], body["reason"]) == (422, 422, "Invalid")
        now = api.read(OM, "demo", "iris")
        assert now is not None and now["metadata"]["finalizers"] == ["mlwarden.io/f"]
        assert now["metadata"]["resourceVersion"] == version
        status, body = await json_patch(version)
        assert status == 200, body
        now = api.read(OM, "demo", "iris")
        assert now is not None and "finalizers" not in now["metadata"]
