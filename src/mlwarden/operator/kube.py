"""A small async Kubernetes API client: read, list, create, JSON merge patch, delete.

That is all the operator needs, and all a simple API emulator must support. `list` reads a
whole kind in one namespace in pages (`limit`/`continue`), never with a label selector (the
emulator has none); a kind that is not installed (a mesh's CRD) lists as empty. The
diagnosis and reaction passes do not list: they read kopf's watch-backed indexes (cache.py).
Credentials come from kopf's login (the same `ConnectionInfo` kopf uses for its
own watches), so in-cluster service accounts, kubeconfig files and exec plugins
behave the same for both.
"""

from __future__ import annotations

import base64
import contextlib
import json
import ssl
import tempfile
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

import aiohttp

# kind -> (API path prefix, plural) for every kind the operator touches.
KINDS: Final[dict[str, tuple[str, str]]] = {
    "ConfigMap": ("/api/v1", "configmaps"),
    "Secret": ("/api/v1", "secrets"),
    "Service": ("/api/v1", "services"),
    "ServiceAccount": ("/api/v1", "serviceaccounts"),
    "Event": ("/api/v1", "events"),
    "Pod": ("/api/v1", "pods"),
    "Deployment": ("/apis/apps/v1", "deployments"),
    "StatefulSet": ("/apis/apps/v1", "statefulsets"),
    "DaemonSet": ("/apis/apps/v1", "daemonsets"),
    "ReplicaSet": ("/apis/apps/v1", "replicasets"),
    "ControllerRevision": ("/apis/apps/v1", "controllerrevisions"),
    "Job": ("/apis/batch/v1", "jobs"),
    "CronJob": ("/apis/batch/v1", "cronjobs"),
    "Role": ("/apis/rbac.authorization.k8s.io/v1", "roles"),
    "RoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "rolebindings"),
    "NetworkPolicy": ("/apis/networking.k8s.io/v1", "networkpolicies"),
    "ObservedModel": ("/apis/mlwarden.io/v1alpha1", "observedmodels"),
    # reactions: scale raises an HPA's minReplicas; shiftTraffic moves route weights
    "HorizontalPodAutoscaler": ("/apis/autoscaling/v2", "horizontalpodautoscalers"),
    "HTTPRoute": ("/apis/gateway.networking.k8s.io/v1", "httproutes"),
    "VirtualService": ("/apis/networking.istio.io/v1beta1", "virtualservices"),
}


# Objects per page of a list (client-go's pager asks for 500 too).
LIST_PAGE: Final = 500


def path(kind: str, namespace: str, name: str | None = None, subresource: str | None = None) -> str:
    """The API path of a namespaced object (or of the collection when `name` is None)."""
    try:
        prefix, plural = KINDS[kind]
    except KeyError:
        raise ValueError(f"unknown kind {kind!r}; known: {', '.join(sorted(KINDS))}") from None
    out = f"{prefix}/namespaces/{quote(namespace)}/{plural}"
    if name is not None:
        out += f"/{quote(name)}"
        if subresource:
            out += f"/{subresource}"
    return out


def path_of(obj: dict[str, Any]) -> str:
    meta = obj["metadata"]
    return path(obj["kind"], meta["namespace"], meta["name"])


class KubeError(RuntimeError):
    """The API refused a request; `status` is the HTTP status, the message the API's reason."""

    def __init__(self, method: str, url: str, status: int, body: str) -> None:
        reason = body
        with contextlib.suppress(ValueError, AttributeError):
            reason = json.loads(body).get("message", body)
        super().__init__(f"{method} {url}: HTTP {status}: {str(reason)[:500]}")
        self.status = status


class Conflict(KubeError):
    pass


@dataclass(frozen=True)
class Endpoint:
    """Where the API is and how to authenticate: built from kopf's ConnectionInfo."""

    server: str
    headers: dict[str, str]
    ssl: ssl.SSLContext | bool

    @classmethod
    def from_connection_info(cls, info: Any) -> Endpoint:
        headers = dict(info.as_http_headers())
        context: ssl.SSLContext | bool = False
        if str(info.server).startswith("https://"):
            if info.insecure:
                context = ssl.create_default_context()
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            else:
                cadata = info.ca_data
                if isinstance(cadata, bytes | str) and cadata:
                    raw = base64.b64decode(cadata).decode()
                    context = ssl.create_default_context(cadata=raw)
                else:
                    context = ssl.create_default_context(
                        cafile=str(info.ca_path) if info.ca_path else None
                    )
            cert, key = (
                _pem(info.certificate_path, info.certificate_data),
                _pem(info.private_key_path, info.private_key_data),
            )
            if cert and key:
                context.load_cert_chain(cert, key)
        return cls(str(info.server).rstrip("/"), headers, context)


def _pem(file: Any, data: Any) -> str | None:
    """A path for a PEM given as a path or as base64 data (ssl wants files)."""
    if file:
        return str(file)
    if not data:
        return None
    raw = base64.b64decode(data)
    with tempfile.NamedTemporaryFile("wb", suffix=".pem", delete=False) as f:
        f.write(raw)
        return f.name


class Kube:
    def __init__(self, endpoint: Endpoint, *, timeout: float = 30.0) -> None:
        self.endpoint = endpoint
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=timeout),
            connector=aiohttp.TCPConnector(ssl=endpoint.ssl),
            headers=endpoint.headers,
        )

    async def close(self) -> None:
        await self._session.close()

    async def _call(
        self, method: str, api_path: str, body: Any = None, content_type: str = "application/json"
    ) -> dict[str, Any] | None:
        url = self.endpoint.server + api_path
        data = json.dumps(body) if body is not None else None
        headers = {"Content-Type": content_type} if data is not None else {}
        async with self._session.request(method, url, data=data, headers=headers) as resp:
            text = await resp.text()
            if resp.status == 404 and method in ("GET", "DELETE"):
                return None
            if resp.status == 409:
                raise Conflict(method, url, resp.status, text)
            if resp.status >= 300:
                raise KubeError(method, url, resp.status, text)
            result: dict[str, Any] = json.loads(text) if text else {}
            return result

    async def get(self, api_path: str) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        return await self._call("GET", api_path)

    async def list(
        self, kind: str, namespace: str, *, page: int = LIST_PAGE
    ) -> list[dict[str, Any]]:
        """Every object of `kind` in `namespace`, each with its `kind` and `apiVersion` set.

        Read in pages of `page` objects (`limit`, then `continue` until the API gives no
        token), so no response holds a whole namespace of a busy kind. (A list response's
        items carry neither `kind` nor `apiVersion`.) An empty list when the kind is not
        served: HTTP 404, as for a CustomResourceDefinition that is not installed.
        """
        prefix = KINDS[kind][0]
        api_version = prefix.removeprefix("/api/").removeprefix("/apis/")
        out: list[dict[str, Any]] = []
        token = ""
        while True:
            query = f"?limit={page}" + (f"&continue={quote(token, safe='')}" if token else "")
            result = await self._call("GET", path(kind, namespace) + query)
            if result is None:
                return out
            items = [i for i in result.get("items") or [] if isinstance(i, dict)]
            out += [{**item, "kind": kind, "apiVersion": api_version} for item in items]
            token = str((result.get("metadata") or {}).get("continue") or "")
            if not token:
                return out

    async def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        result = await self._call("POST", path(obj["kind"], meta["namespace"]), obj)
        assert result is not None
        return result

    async def merge_patch(self, api_path: str, patch: dict[str, Any]) -> dict[str, Any]:
        result = await self._call("PATCH", api_path, patch, "application/merge-patch+json")
        assert result is not None
        return result

    async def delete(self, api_path: str) -> None:
        await self._call("DELETE", api_path)
