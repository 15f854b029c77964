"""Where the stored reference lives: a ConfigMap in the cluster, or a directory on this machine.

Both shells move the bytes of `persist.encode_reference` and nothing else.

- `ConfigMapStore`: ConfigMap `NAME-reference` in the model's namespace, owned by the
  ObservedModel (the operator creates it empty; the detector's Role may get and patch that one
  ConfigMap, by resourceName). `binaryData[reference.json.gz]` is the summary;
  `data[id|digest|records|since]` say what it is to `kubectl get cm -o yaml` readers. Outside
  a cluster (`--report-to`, an API emulator in the tests) a missing ConfigMap is created,
  owned by the ObservedModel read through its status subresource. It talks to the API
  through the same `mlwarden.kube` client (and credentials) as the status writes.
- `FileStore`: `DIR/NAMESPACE.NAME-reference.json.gz`, for `--reference-store DIR` local runs.

Next to the reference, each keeps the alert state (`persist.encode_alert_state`, JSON):
`data[alerts.json]` of the same ConfigMap, or `DIR/NAMESPACE.NAME-alerts.json`; and the
label ledger (`labels.LabelLedger.encode`, gzip'd JSON): `binaryData[labels.json.gz]`, or
`DIR/NAMESPACE.NAME-labels.json.gz`. `labels_budget` says how many bytes the ledger may
take: in the ConfigMap, what the reference and the alert state leave of its 1 MiB;
`drop_labels` removes it to make room for a larger reference.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, Final, Protocol

import aiohttp

from mlwarden.detector.persist import StoredReferenceError, from_text, to_text
from mlwarden.detector.reporter import status_path
from mlwarden.kube import Kube, KubeError, path
from mlwarden.names import reference_store_name
from mlwarden.spec import API_VERSION, KIND

KEY: Final = "reference.json.gz"
ALERTS_KEY: Final = "alerts.json"
LABELS_KEY: Final = "labels.json.gz"
# A ConfigMap object is at most 1 MiB; binaryData is base64 (4/3 larger). Kept free for the
# alert state, the data[] summary and metadata: CONFIGMAP_RESERVE.
CONFIGMAP_LIMIT: Final = 1024 * 1024
CONFIGMAP_RESERVE: Final = 96 * 1024
FILE_LABELS_BUDGET: Final = 64 * 1024 * 1024


class ReferenceStore(Protocol):
    where: str

    async def load(self) -> bytes | None: ...

    async def save(self, data: bytes, *, info: dict[str, str]) -> None: ...

    async def load_alerts(self) -> bytes | None: ...

    async def save_alerts(self, data: bytes) -> None: ...

    async def load_labels(self) -> bytes | None: ...

    async def save_labels(self, data: bytes) -> None: ...

    def labels_budget(self, reference_bytes: int) -> int: ...

    async def drop_labels(self) -> None: ...

    async def close(self) -> None: ...


class FileStore:
    def __init__(self, directory: str, *, namespace: str, name: str) -> None:
        self.path = Path(directory) / f"{namespace}.{reference_store_name(name)}.json.gz"
        self.alerts_path = Path(directory) / f"{namespace}.{name}-alerts.json"
        self.labels_path = Path(directory) / f"{namespace}.{name}-labels.json.gz"
        self.where = f"file {self.path}"

    async def load(self) -> bytes | None:
        return self._read(self.path)

    async def save(self, data: bytes, *, info: dict[str, str]) -> None:
        del info
        self._write(self.path, data)

    async def load_alerts(self) -> bytes | None:
        return self._read(self.alerts_path)

    async def save_alerts(self, data: bytes) -> None:
        self._write(self.alerts_path, data)

    async def load_labels(self) -> bytes | None:
        return self._read(self.labels_path)

    async def save_labels(self, data: bytes) -> None:
        self._write(self.labels_path, data)

    def labels_budget(self, reference_bytes: int) -> int:
        del reference_bytes  # a file of its own
        return FILE_LABELS_BUDGET

    async def drop_labels(self) -> None:
        return None  # a file of its own: never in the reference's way

    def _read(self, path: Path) -> bytes | None:
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoredReferenceError(f"file {path}: cannot read: {exc.strerror}") from None

    def _write(self, path: Path, data: bytes) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)  # atomic: a crash leaves the old content or the new
        except OSError as exc:
            raise StoredReferenceError(f"file {path}: cannot write: {exc.strerror}") from None

    async def close(self) -> None:
        return None


class ConfigMapStore:
    def __init__(self, kube: Kube, *, namespace: str, name: str) -> None:
        self.kube = kube
        self.namespace, self.model = namespace, name
        self.cm_name = reference_store_name(name)
        self.path = path("ConfigMap", namespace, self.cm_name)
        self.where = f"ConfigMap {namespace}/{self.cm_name}"

    async def _call(self, method: str, call: Awaitable[Any]) -> Any:
        """Await an API call; None for 404; every failure a StoredReferenceError."""
        try:
            return await call
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise StoredReferenceError(f"{self.where}: {exc}") from None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise StoredReferenceError(f"{self.where}: {method}: {exc}") from None

    async def load(self) -> bytes | None:
        cm = await self._call("GET", self.kube.get(self.path))
        if not isinstance(cm, dict):
            return None
        text = (cm.get("binaryData") or {}).get(KEY)
        if not text:
            return None  # created empty by the operator: nothing stored yet
        return from_text(str(text), where=f"{self.where} binaryData[{KEY}]")

    async def save(self, data: bytes, *, info: dict[str, str]) -> None:
        await self._patch_or_create({"binaryData": {KEY: to_text(data)}, "data": dict(info)})

    async def load_alerts(self) -> bytes | None:
        cm = await self._call("GET", self.kube.get(self.path))
        if not isinstance(cm, dict):
            return None
        text = (cm.get("data") or {}).get(ALERTS_KEY)
        return str(text).encode() if text else None

    async def save_alerts(self, data: bytes) -> None:
        await self._patch_or_create({"data": {ALERTS_KEY: data.decode()}})

    async def load_labels(self) -> bytes | None:
        cm = await self._call("GET", self.kube.get(self.path))
        if not isinstance(cm, dict):
            return None
        text = (cm.get("binaryData") or {}).get(LABELS_KEY)
        return (
            from_text(str(text), where=f"{self.where} binaryData[{LABELS_KEY}]") if text else None
        )

    async def save_labels(self, data: bytes) -> None:
        await self._patch_or_create({"binaryData": {LABELS_KEY: to_text(data)}})

    def labels_budget(self, reference_bytes: int) -> int:
        left = CONFIGMAP_LIMIT - CONFIGMAP_RESERVE - (reference_bytes + 2) // 3 * 4
        return max(0, left // 4 * 3)

    async def drop_labels(self) -> None:
        """Remove the stored ledger (a merge patch of null): room for a larger reference."""
        await self._patch_or_create({"binaryData": {LABELS_KEY: None}})

    async def _patch_or_create(self, patch: dict[str, Any]) -> None:
        if await self._call("PATCH", self.kube.merge_patch(self.path, patch)) is not None:
            return
        # Not there: in a cluster the operator creates it (the detector may not create);
        # outside one (--report-to) create it, owned by the ObservedModel.
        om = await self._call("GET", self.kube.get(status_path(self.namespace, self.model)))
        meta: dict[str, Any] = {"name": self.cm_name, "namespace": self.namespace}
        if isinstance(om, dict) and (om.get("metadata") or {}).get("uid"):
            meta["ownerReferences"] = [
                {
                    "apiVersion": API_VERSION,
                    "kind": KIND,
                    "name": self.model,
                    "uid": om["metadata"]["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ]
        body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, **patch}
        if await self._call("POST", self.kube.create(body)) is None:
            raise StoredReferenceError(f"{self.where}: cannot create: HTTP 404 (no namespace?)")

    async def close(self) -> None:
        await self.kube.close()
