"""The detector writes alert changes into the ObservedModel's status, via kmock's API emulator."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import aiohttp
import kmock
import numpy as np
import pytest
from harness import detector_process, free_port, manifest

from mlwarden.detector.reporter import StatusWriter
from mlwarden.kube import Kube, StaticToken

RESOURCE = "mlwarden.io/v1alpha1/observedmodels"
SPEC = """\
  target: {deployment: m}
  features:
    - {name: a, type: numeric}
    - {name: b, type: numeric}
  reference: {source: warmup, size: 300}
  window: {size: 300}
  alerting: {evaluationInterval: 200ms, fireAfter: 2, resolveAfter: 2}
"""


def observed_model(name: str = "m") -> dict[str, object]:
    return {
        "apiVersion": "mlwarden.io/v1alpha1",
        "kind": "ObservedModel",
        "metadata": {"name": name, "namespace": "test"},
        "spec": {"target": {"deployment": name}},
    }


async def test_status_writer_merge_patches_the_status_subresource() -> None:
    async with kmock.KubernetesEmulator() as api, kmock.Server(api) as server:
        api.resources[RESOURCE] = {}
        api.objects[RESOURCE, "test", "m"] = observed_model()
        writer = StatusWriter(
            Kube(StaticToken(str(server.url))), namespace="test", name="m", min_interval=0.0
        )
        alert = {
            "type": "Errors",
            "test": "error_rate",
            "statistic": 0.2,
            "threshold": 0.05,
            "since": "2026-11-26T00:00:00Z",
            "reference": "warmup@x",
        }
        await writer.write_alerts([alert], reference={"id": "warmup@x", "since": "t"})
        await writer.wait_idle()
        status = api.objects[RESOURCE, "test", "m"]["status"]
        assert status["alerts"] == [alert]
        assert status["detector"]["reference"] == {"id": "warmup@x", "since": "t"}
        # Resolved: the list is replaced, not merged.
        await writer.write_alerts([], reference={"id": "warmup@x", "since": "t"})
        await writer.wait_idle()
        assert api.objects[RESOURCE, "test", "m"]["status"]["alerts"] == []
        assert api.objects[RESOURCE, "test", "m"]["spec"] == {"target": {"deployment": "m"}}
        assert writer.path.endswith("/namespaces/test/observedmodels/m/status")
        assert writer.writes_ok == 2
        await writer.close()


async def test_the_detector_process_reports_alerts_into_the_observedmodel(
    tmp_path: Path,
) -> None:
    async with kmock.KubernetesEmulator() as api, kmock.Server(api) as server:
        api.resources[RESOURCE] = {}
        api.objects[RESOURCE, "test", "m"] = observed_model()
        port = free_port()
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "mlwarden.cli",
            "detector",
            "--observed-model",
            str(manifest(tmp_path, SPEC)),
            "--listen",
            f"127.0.0.1:{port}",
            "--report-to",
            str(server.url),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        url = f"http://127.0.0.1:{port}"
        rng = np.random.default_rng(0)

        def records(n: int, shift: float) -> dict[str, object]:
            return {
                "records": [
                    {"features": {"a": float(rng.normal()), "b": float(rng.normal(shift))}}
                    for _ in range(n)
                ]
            }

        try:
            async with aiohttp.ClientSession() as http:
                for _ in range(100):
                    try:
                        async with http.get(f"{url}/readyz") as resp:
                            if resp.status == 200:
                                break
                    except aiohttp.ClientError:
                        pass
                    await asyncio.sleep(0.1)
                for payload in (records(300, 0.0), records(300, 2.0)):
                    async with http.post(f"{url}/v1/records", json=payload) as resp:
                        assert resp.status == 200
                for _ in range(100):
                    status = api.objects[RESOURCE, "test", "m"].get("status", {})
                    if status.get("alerts"):
                        break
                    await asyncio.sleep(0.1)
                else:
                    pytest.fail(f"no alerts written; status={status}")
        finally:
            proc.terminate()
            _, stderr = await proc.communicate()
        assert proc.returncode == 0, stderr.decode()[-2000:]
        drift = [(a["feature"], a["test"]) for a in status["alerts"] if a["type"] == "FeatureDrift"]
        assert drift == [("b", "ks")]
        assert status["detector"]["reference"]["id"].startswith("warmup@")


async def test_the_detector_writes_the_revisions_and_then_stays_quiet(tmp_path: Path) -> None:
    """status.detector.revisions is written when the revisions, roles or verdicts change; the
    same traffic afterwards (no alert, verdicts unchanged) writes nothing within the 60 s
    heartbeat (CONTRACT17's write policy)."""
    from canary_sim import Behaviour, payload, spec

    body = spec(
        reference={"size": 300},
        window={"size": 300},
        alerting={"evaluationInterval": "200ms", "fireAfter": 2, "resolveAfter": 2},
        canary={"minSamples": 60},
        # Only the canary: a chance drift finding on these small windows could fire an alert
        # (a write) during the quiet period this test measures.
        detectors={"drift": {"enabled": False}, "predictionDrift": {"enabled": False}},
    )
    path = tmp_path / "om.yaml"
    path.write_text(
        json.dumps(
            {
                "apiVersion": "mlwarden.io/v1alpha1",
                "kind": "ObservedModel",
                "metadata": {"name": "m", "namespace": "test"},
                "spec": body,
            }
        )
    )
    async with kmock.KubernetesEmulator() as api, kmock.Server(api) as server:
        api.resources[RESOURCE] = {}
        api.objects[RESOURCE, "test", "m"] = observed_model()
        rng = np.random.default_rng(4)

        def detector_status() -> dict[str, object]:
            return dict(api.objects[RESOURCE, "test", "m"].get("status", {}).get("detector", {}))

        async def traffic(http: aiohttp.ClientSession, seconds: float) -> None:
            end = asyncio.get_running_loop().time() + seconds
            step = 0
            while asyncio.get_running_loop().time() < end:
                for rev, n in (("5d4c3b2a1", 45), ("6b8f7c9d4", 5)):
                    doc = payload(
                        rng, n, Behaviour(), revision=rev, now=1.8e9, prefix=f"{rev}{step}"
                    )
                    async with http.post(f"{url}/v1/records", json=doc) as resp:
                        assert resp.status == 200
                step += 1
                await asyncio.sleep(0.05)

        async with (
            detector_process(path, "--report-to", str(server.url)) as (url, _),
            aiohttp.ClientSession() as http,
        ):
            warm = payload(rng, 300, Behaviour(), revision="5d4c3b2a1", now=1.8e9, prefix="w")
            async with http.post(f"{url}/v1/records", json=warm) as resp:
                assert resp.status == 200
            for _ in range(60):
                await traffic(http, 0.5)
                revisions = detector_status().get("revisions") or []
                verdicts = [(r.get("canary") or {}).get("verdict") for r in revisions]  # type: ignore[union-attr]
                if "Pass" in verdicts:
                    break
            else:
                pytest.fail(f"the candidate never passed; status={detector_status()}")
            await asyncio.sleep(1.0)  # the write of the verdict lands
            written = detector_status()
            await traffic(http, 3.0)
            assert detector_status()["updated"] == written["updated"]
        roles = {r["revision"]: r["role"] for r in written["revisions"]}  # type: ignore[union-attr]
        assert roles == {"5d4c3b2a1": "baseline", "6b8f7c9d4": "candidate"}
        for signal in written["signals"]:  # type: ignore[union-attr]
            assert {"type", "test", "failing", "at", "modelRevision"} <= set(signal)
