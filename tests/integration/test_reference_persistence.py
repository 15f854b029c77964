"""A restarted detector keeps its reference: stored, reloaded, replaced on request only.

The real detector process, reporting to kmock's API emulator (as in test_detector_status.py).
Without the stored reference, the restarted detector would warm up on the drifted traffic that
follows the restart and never alert on it.
"""

from __future__ import annotations

import asyncio
import gzip
import json
from pathlib import Path
from typing import Any

import aiohttp
import kmock
import numpy as np
from harness import detector_process, emulate_observed_model, get_status, post_records, until

from mlwarden.detector.store import KEY
from mlwarden.spec import REBASELINE_ANNOTATION

RESOURCE = "mlwarden.io/v1alpha1/observedmodels"
CONFIGMAPS = "v1/configmaps"
SPEC = """\
  target: {deployment: m}
  features:
    - {name: a, type: numeric}
    - {name: b, type: numeric}
  reference: {source: warmup, size: 300}
  window: {size: 300}
  alerting: {evaluationInterval: 200ms, fireAfter: 2, resolveAfter: 2}
"""
UID = "5e1f0a4c-0000-4000-8000-000000000001"


def write_manifest(tmp: Path, rebaseline: str | None = None) -> Path:
    path = tmp / "m.yaml"
    annotations = (
        f", annotations: {{{REBASELINE_ANNOTATION}: '{rebaseline}'}}" if rebaseline else ""
    )
    path.write_text(
        "apiVersion: mlwarden.io/v1alpha1\nkind: ObservedModel\n"
        f"metadata: {{name: m, namespace: test{annotations}}}\nspec:\n{SPEC}"
    )
    return path


def records(rng: np.random.Generator, n: int, shift: float) -> dict[str, Any]:
    return {
        "records": [
            {"features": {"a": float(rng.normal()), "b": float(rng.normal(shift))}}
            for _ in range(n)
        ]
    }


async def test_restart_reloads_the_reference_and_a_rebaseline_replaces_it(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    async with kmock.KubernetesEmulator() as api, kmock.Server(api) as server:
        emulate_observed_model(api, UID)
        report = ("--report-to", str(server.url))

        def reference() -> dict[str, Any]:
            status = api.objects[RESOURCE, "test", "m"].get("status") or {}
            return dict((status.get("detector") or {}).get("reference") or {})

        def stored() -> dict[str, Any] | None:
            try:
                return dict(api.objects[CONFIGMAPS, "test", "m-reference"])
            except KeyError:
                return None

        # 1. Warm up on normal traffic: the reference is built, stored, and said so in status.
        async with detector_process(write_manifest(tmp_path), *report) as (url, _):
            await post_records(url, records(rng, 300, 0.0))
            first = await until(lambda: reference().get("storedIn") and reference(), "storedIn")
        assert first["origin"] == "built" and first["source"] == "warmup"
        assert first["records"] == 300 and first["storedIn"] == "ConfigMap test/m-reference"
        cm = stored()
        assert cm is not None
        assert cm["metadata"]["ownerReferences"][0]["uid"] == UID
        assert cm["data"]["id"] == first["id"] and cm["data"]["digest"][:16] == first["hash"]
        summary = json.loads(gzip.decompress(__import__("base64").b64decode(cm["binaryData"][KEY])))
        assert summary["records"] == 300 and "records" not in summary["sketches"]["a"]

        # 2. Restart; drifted traffic follows at once. It is judged against the stored
        #    reference (an alert), not taken as the new baseline.
        async with detector_process(write_manifest(tmp_path), *report) as (url, _):
            restored = await until(
                lambda: reference().get("origin") == "restored" and reference(), "restored"
            )
            assert restored["id"] == first["id"] and restored["since"] == first["since"]
            assert restored["hash"] == first["hash"]
            assert "reloaded the stored reference" in restored["reason"]
            await post_records(url, records(rng, 300, 2.0))

            def drift() -> list[Any]:
                status = api.objects[RESOURCE, "test", "m"].get("status") or {}
                return [a for a in status.get("alerts") or [] if a["type"] == "FeatureDrift"]

            alerts = await until(drift, "a FeatureDrift alert after the restart")
            async with aiohttp.ClientSession() as http, http.get(f"{url}/v1/status") as resp:
                local = await resp.json()
        assert [(a["feature"], a["reference"]) for a in alerts] == [("b", first["id"])]
        assert local["reference"]["origin"] == "restored" and local["phase"] == "Observing"

        # 3. Rebaseline (the annotation, carried in the manifest as the operator writes it):
        #    the stored reference is set aside, a new one warms up, is stored and recorded.
        token = "2026-11-26T17:00:00Z"
        rebased = write_manifest(tmp_path, rebaseline=token)
        async with detector_process(rebased, *report) as (url, _):
            pending = await until(
                lambda: reference().get("rebaseline") == token and reference(), "rebaseline"
            )
            # (a merge patch of null removes the key: no reference is in force)
            assert pending.get("id") is None and "rebaseline requested" in pending["reason"]
            await post_records(url, records(rng, 300, 2.0))  # the new normal
            second = await until(
                lambda: reference().get("id") and reference().get("storedIn") and reference(),
                "the new reference stored",
            )
        assert second["id"] != first["id"] and second["origin"] == "built"
        assert second["rebaseline"] == token and second["since"] > first["since"]
        cm = stored()
        assert cm is not None and cm["data"]["id"] == second["id"]
        assert cm["data"]["rebaseline"] == token

        # 4. Restarted under the same token, the new reference is the one reloaded.
        async with detector_process(write_manifest(tmp_path, rebaseline=token), *report):
            again = await until(
                lambda: reference().get("origin") == "restored" and reference(), "restored"
            )
        assert again["id"] == second["id"]


async def test_reference_store_directory_for_local_runs(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    store = tmp_path / "store"
    manifest = write_manifest(tmp_path)

    async def status(url: str) -> dict[str, Any]:
        async with aiohttp.ClientSession() as http, http.get(f"{url}/v1/status") as resp:
            result: dict[str, Any] = await resp.json()
            return result

    async with detector_process(manifest, "--reference-store", str(store)) as (url, _):
        await post_records(url, records(rng, 300, 0.0))
        for _ in range(100):
            first = (await status(url))["reference"]
            if first.get("storedIn"):
                break
            await asyncio.sleep(0.1)
    assert first["storedIn"] == f"file {store / 'test.m-reference.json.gz'}"
    async with detector_process(manifest, "--reference-store", str(store)) as (url, _):
        again = (await status(url))["reference"]
        assert again["origin"] == "restored" and again["id"] == first["id"]
        assert (await status(url))["phase"] == "Observing"


PARTS_SPEC = """\
  target: {deployment: m}
  features:
    - {name: a, type: numeric}
    - {name: country, type: categorical}
    - {name: emb, type: embedding, dimensions: 8}
  segments: [{column: country, maxLevels: 2}]
  reference: {source: warmup, size: 600}
  window: {size: 600}
  alerting: {evaluationInterval: 200ms, fireAfter: 2, resolveAfter: 2}
"""


def parts_records(rng: np.random.Generator, n: int, shift: float) -> dict[str, Any]:
    """Countries A (60%), B (30%), C (10%); C's `a` moves by 3 x `shift`, every vector by
    `shift`."""
    out = []
    for _ in range(n):
        country = str(rng.choice(["A", "B", "C"], p=[0.6, 0.3, 0.1]))
        a = float(rng.normal(3 * shift if country == "C" else 0.0))
        vector = (rng.normal(size=8) + shift).tolist()
        out.append({"features": {"a": a, "country": country, "emb": vector}})
    return {"records": out}


async def test_segments_and_embedding_references_survive_a_restart_in_the_configmap(
    tmp_path: Path,
) -> None:
    """Without their stored references, the restarted detector would judge no segment, and
    would rebuild the embedding's reference from the drifted traffic after the restart."""
    rng = np.random.default_rng(3)
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        "apiVersion: mlwarden.io/v1alpha1\nkind: ObservedModel\n"
        f"metadata: {{name: m, namespace: test}}\nspec:\n{PARTS_SPEC}"
    )
    async with kmock.KubernetesEmulator() as api, kmock.Server(api) as server:
        emulate_observed_model(api, UID)
        report = ("--report-to", str(server.url))

        async with detector_process(manifest, *report) as (url, _):
            await post_records(url, parts_records(rng, 600, 0.0))
            await until(
                lambda: (
                    (api.objects[RESOURCE, "test", "m"].get("status") or {})
                    .get("detector", {})
                    .get("reference", {})
                    .get("storedIn")
                ),
                "the reference stored",
            )
            before = await get_status(url)
        cm = api.objects[CONFIGMAPS, "test", "m-reference"]
        summary = json.loads(gzip.decompress(__import__("base64").b64decode(cm["binaryData"][KEY])))
        assert [s["column"] for s in summary["segments"]] == ["country"]
        assert set(summary["segments"][0]["segments"]) == {"A", "B", "other"}
        assert set(summary["embeddings"]) == {"emb"} and summary["leftOut"] == []

        async with detector_process(manifest, *report) as (url, _):
            after = await get_status(url)
            assert after["reference"]["origin"] == "restored"
            assert "unavailable" not in after["segments"]
            assert after["segments"]["columns"][0]["segments"] == [
                {**s, "windowRecords": 0, "share": 0.0}
                for s in before["segments"]["columns"][0]["segments"]
            ]
            emb = after["embeddings"]["emb"]
            assert emb["referenceVectors"] == 600 and emb["topics"] == 8
            assert "unavailable" not in emb
            # drifted traffic right after the restart: judged against the stored references
            await post_records(url, parts_records(rng, 600, 1.0))

            def alerts() -> set[tuple[str, str]]:
                found = (api.objects[RESOURCE, "test", "m"].get("status") or {}).get("alerts")
                return {
                    (a["feature"], (a.get("segment") or {}).get("country", "")) for a in found or []
                }

            await until(
                lambda: {("a", "other"), ("emb", "")} <= alerts(),
                "a segment alert and an embedding alert after the restart",
            )
            again = (await get_status(url))["embeddings"]["emb"]
        assert again["referenceVectors"] == 600  # not rebuilt from the traffic after it


async def test_an_embedding_reference_completed_later_is_stored_again(tmp_path: Path) -> None:
    """--reference-store DIR: the tabular reference is stored when complete, its embedding
    still warming up (records without vectors); when the embedding's reference completes the
    reference is stored again with it, and a restart restores it."""
    rng = np.random.default_rng(4)
    store = tmp_path / "store"
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        "apiVersion: mlwarden.io/v1alpha1\nkind: ObservedModel\n"
        f"metadata: {{name: m, namespace: test}}\nspec:\n{PARTS_SPEC}"
    )
    path = store / "test.m-reference.json.gz"

    def stored() -> dict[str, Any]:
        return dict(json.loads(gzip.decompress(path.read_bytes()))) if path.exists() else {}

    async with detector_process(manifest, "--reference-store", str(store)) as (url, _):
        plain = parts_records(rng, 600, 0.0)
        for r in plain["records"]:
            del r["features"]["emb"]
        await post_records(url, plain)
        first = await until(stored, "the reference stored")
        assert first["embeddings"] == {} and first["embeddingsWarming"] == ["emb"]
        await post_records(url, parts_records(rng, 600, 0.0))
        second = await until(lambda: stored().get("embeddings"), "stored again with emb")
        assert set(second) == {"emb"} and stored()["id"] == first["id"]
    async with detector_process(manifest, "--reference-store", str(store)) as (url, _):
        emb = (await get_status(url))["embeddings"]["emb"]
    assert emb["referenceVectors"] == 600 and "unavailable" not in emb


async def test_with_a_file_reference_the_embedding_reference_survives_a_restart(
    tmp_path: Path,
) -> None:
    """A data file holds no vectors: the embedding's reference is sampled from the traffic,
    so it is stored (--reference-store DIR) and reloaded with the file's reference, not
    rebuilt from the (here drifted) traffic after a restart."""
    rng = np.random.default_rng(5)
    store = tmp_path / "store"
    reference = tmp_path / "ref.csv"
    reference.write_text("a\n" + "".join(f"{v}\n" for v in rng.normal(size=400)))
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        "apiVersion: mlwarden.io/v1alpha1\nkind: ObservedModel\n"
        "metadata: {name: m, namespace: test}\nspec:\n  target: {deployment: m}\n"
        "  features:\n    - {name: a, type: numeric}\n"
        "    - {name: emb, type: embedding, dimensions: 8}\n"
        f"  reference: {{source: file, path: '{reference}', size: 300}}\n"
        "  window: {size: 300}\n"
        "  alerting: {evaluationInterval: 200ms, fireAfter: 2, resolveAfter: 2}\n"
    )
    path = store / "test.m-reference.json.gz"

    def stored() -> dict[str, Any]:
        return dict(json.loads(gzip.decompress(path.read_bytes()))) if path.exists() else {}

    def vectors(n: int, shift: float) -> dict[str, Any]:
        return {
            "records": [
                {
                    "features": {
                        "a": float(rng.normal()),
                        "emb": (rng.normal(size=8) + shift).tolist(),
                    }
                }
                for _ in range(n)
            ]
        }

    async with detector_process(manifest, "--reference-store", str(store)) as (url, _):
        await post_records(url, vectors(300, 0.0))
        first = await until(lambda: stored().get("embeddings"), "the embedding reference stored")
        assert set(first) == {"emb"} and stored()["source"].startswith("file:")
    async with detector_process(manifest, "--reference-store", str(store)) as (url, _):
        emb = (await get_status(url))["embeddings"]["emb"]
        assert emb["referenceVectors"] == 300 and emb["topics"] == 8
        assert "unavailable" not in emb
        await post_records(url, vectors(300, 1.0))

        async def mmd_alert() -> bool:
            alerts = (await get_status(url))["alerts"]
            return any(a["feature"] == "emb" and a["test"] == "mmd" for a in alerts)

        await until(mmd_alert, "an MMD alert on the drifted vectors after the restart")
        assert (await get_status(url))["embeddings"]["emb"]["referenceVectors"] == 300
