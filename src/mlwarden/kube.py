"""mlwarden's one Kubernetes API client: the operator, the detector and the demo all use it.

`Kube` reads, lists, creates, JSON-merge-patches and deletes; that is all mlwarden needs,
and all a simple API emulator must support. `list` reads a whole kind in one namespace; a
kind that is not installed (a mesh's CRD) lists as empty.

Where the API is and who we are come from a `Credentials` source, asked before every request
(cheap: a source re-reads only what changed):

- `KopfLogin` (the operator): kopf's `ConnectionInfo`, the credentials kopf's own watches use
  (in-cluster service account, KUBECONFIG with a token, `tokenFile` or exec plugin). After a
  401 it logs in again the way kopf does (`kopf.login_via_client`, which re-reads the files),
  and it honours `ConnectionInfo.expiration` when a login handler sets one.
- `TokenFile` (the detector in a pod: `in_cluster()`; `--report-to URL --report-token-file F`):
  a bearer token read from a file and read again when the file changes. The kubelet rotates a
  projected service-account token about hourly, by swapping a symlink; the old token is
  refused once it expires, so a token read once at start stops working.
- `StaticToken` (tests, the demo, `--report-token T`): a fixed token, or none.

On HTTP 401 the request is sent once more with renewed credentials (safe for writes too:
the API server authenticates before anything else, so a refused request changed nothing).
When the source has nothing newer, or the renewed credentials are refused as well, the
request fails with `Unauthorized`, which says where the credentials came from and what to do.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import json
import os
import ssl
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol
from urllib.parse import quote

import aiohttp

from mlwarden.spec import API_VERSION, INCIDENT_KIND, INCIDENT_PLURAL, KIND, PLURAL

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
    KIND: (f"/apis/{API_VERSION}", PLURAL),
    INCIDENT_KIND: (f"/apis/{API_VERSION}", INCIDENT_PLURAL),
    # reactions: scale raises an HPA's minReplicas; shiftTraffic moves route weights
    "HorizontalPodAutoscaler": ("/apis/autoscaling/v2", "horizontalpodautoscalers"),
    "HTTPRoute": ("/apis/gateway.networking.k8s.io/v1", "httproutes"),
    "VirtualService": ("/apis/networking.istio.io/v1beta1", "virtualservices"),
    # retrain: an Argo Workflow submitted from a WorkflowTemplate (read, never watched)
    "Workflow": ("/apis/argoproj.io/v1alpha1", "workflows"),
    "WorkflowTemplate": ("/apis/argoproj.io/v1alpha1", "workflowtemplates"),
    # targets of other kinds (spec.target.kind): an Argo Rollout, a KServe InferenceService
    "Rollout": ("/apis/argoproj.io/v1alpha1", "rollouts"),
    "InferenceService": ("/apis/serving.kserve.io/v1beta1", "inferenceservices"),
}

SERVICE_ACCOUNT: Final = Path("/var/run/secrets/kubernetes.io/serviceaccount")
# How often a token file is checked for a new token (a stat; read only when it changed). The
# kubelet renews a projected token at 80% of its lifetime, so the old one stays valid far
# longer than this; a 401 in between re-reads the file at once.
TOKEN_RECHECK_SECONDS: Final = 10.0


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

    def __init__(self, method: str, url: str, status: int, body: str, advice: str = "") -> None:
        reason = body
        with contextlib.suppress(ValueError, AttributeError):
            reason = json.loads(body).get("message", body)
        super().__init__(f"{method} {url}: HTTP {status}: {str(reason)[:500]}{advice}")
        self.status = status


class Conflict(KubeError):
    pass


class Unauthorized(KubeError):
    """HTTP 401 that renewing the credentials did not cure."""

    def __init__(self, method: str, url: str, body: str, *, source: str, why: str) -> None:
        advice = (
            f"; the API refused the credentials from {source} {why}. Check that they are "
            "current: a service account that still exists, a mounted token the kubelet still "
            "renews, a kubeconfig whose token has not expired"
        )
        super().__init__(method, url, 401, body, advice)


class CredentialsError(KubeError):
    """No usable credentials: a token file missing or empty, a login that failed."""

    def __init__(self, message: str) -> None:
        RuntimeError.__init__(self, message)
        self.status = 401


@dataclass(frozen=True)
class Endpoint:
    """Where the API is and how to authenticate one request."""

    server: str
    headers: Mapping[str, str] = field(default_factory=dict)  # Authorization, when any
    ssl: ssl.SSLContext | bool = False


class Credentials(Protocol):
    """A source of `Endpoint`s that can be asked for fresh credentials after a 401."""

    @property
    def source(self) -> str:
        """Where the credentials come from, for error messages."""
        ...

    async def endpoint(self) -> Endpoint:
        """The credentials to use now."""
        ...

    async def renew(self, refused: Endpoint) -> Endpoint | None:
        """After a 401 with `refused`: newer credentials, or None when there are none."""
        ...


def _bearer(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def _ssl_for(server: str, ca_file: str | os.PathLike[str] | None) -> ssl.SSLContext | bool:
    if not server.startswith("https://"):
        return False
    return ssl.create_default_context(cafile=str(ca_file) if ca_file else None)


class StaticToken:
    """A fixed bearer token (or none): nothing to renew."""

    def __init__(self, server: str, token: str | None = None, *, ca_file: str | None = None):
        server = server.rstrip("/")
        self._endpoint = Endpoint(server, _bearer(token), _ssl_for(server, ca_file))
        self.source = (
            "the fixed token given (--report-token)" if token else "an anonymous client (no token)"
        )

    async def endpoint(self) -> Endpoint:
        return self._endpoint

    async def renew(self, refused: Endpoint) -> Endpoint | None:
        del refused
        return None


class TokenFile:
    """A bearer token read from a file, and read again whenever the file changed.

    The change is seen by a stat at most every `recheck_seconds` (the kubelet replaces a
    projected token by pointing a symlink at a new directory, so the file's identity changes),
    and at once after a 401.
    """

    def __init__(
        self,
        server: str,
        token_file: str | os.PathLike[str],
        *,
        ca_file: str | os.PathLike[str] | None = None,
        recheck_seconds: float = TOKEN_RECHECK_SECONDS,
    ) -> None:
        self.server = server.rstrip("/")
        self.token_file = Path(token_file)
        self.ca_file = ca_file
        self.recheck_seconds = recheck_seconds
        self.source = f"token file {self.token_file}"
        self._ssl: ssl.SSLContext | bool | None = None
        self._endpoint: Endpoint | None = None
        self._seen: tuple[int, int, int, int] | None = None
        self._next_check = 0.0

    def _stat(self) -> tuple[int, int, int, int] | None:
        try:
            st = self.token_file.stat()
        except OSError:
            return None
        return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)

    def _read(self) -> Endpoint:
        self._next_check = time.monotonic() + self.recheck_seconds
        self._seen = self._stat()
        try:
            token = self.token_file.read_text().strip()
        except OSError as exc:
            raise CredentialsError(
                f"cannot read the API token from {self.token_file}: {exc.strerror}; "
                "in a pod, the service account token must be mounted "
                "(automountServiceAccountToken is not false)"
            ) from None
        if not token:
            raise CredentialsError(f"the API token file {self.token_file} is empty")
        if self._ssl is None:
            self._ssl = _ssl_for(self.server, self.ca_file)
        self._endpoint = Endpoint(self.server, _bearer(token), self._ssl)
        return self._endpoint

    async def endpoint(self) -> Endpoint:
        if self._endpoint is None:
            return self._read()
        if time.monotonic() >= self._next_check:
            self._next_check = time.monotonic() + self.recheck_seconds
            if self._stat() != self._seen:
                return self._read()
        return self._endpoint

    async def renew(self, refused: Endpoint) -> Endpoint | None:
        fresh = self._read()
        return fresh if fresh.headers != refused.headers else None


def in_cluster(
    environ: Mapping[str, str] = os.environ, directory: Path = SERVICE_ACCOUNT
) -> TokenFile | None:
    """The pod's service account (KUBERNETES_SERVICE_HOST/PORT, the projected token and CA);
    None outside a pod."""
    host, port = environ.get("KUBERNETES_SERVICE_HOST"), environ.get("KUBERNETES_SERVICE_PORT")
    token = directory / "token"
    if not host or not token.exists():
        return None
    if ":" in host:  # IPv6
        host = f"[{host}]"
    return TokenFile(f"https://{host}:{port or 443}", token, ca_file=directory / "ca.crt")


class KopfLogin:
    """kopf's `ConnectionInfo` as an `Endpoint`, logging in again after a 401.

    `current()` returns the latest ConnectionInfo kopf's login handler produced (kopf itself
    logs in again when its own requests get a 401, so this may change under us); `relogin()`
    logs in again now (re-reading KUBECONFIG, its `tokenFile`, or the service-account token)
    and returns the new one. kopf is not imported here: the info is read by its attributes.
    """

    source = "kopf's login (KUBECONFIG, or the in-cluster service account)"

    def __init__(self, current: Callable[[], Any], relogin: Callable[[], Awaitable[Any]]) -> None:
        self._current = current
        self._relogin = relogin
        self._info: Any = None
        self._endpoint: Endpoint | None = None
        self._lock = asyncio.Lock()

    def _adopt(self, info: Any) -> Endpoint:
        if info is None:
            raise CredentialsError("not logged in to the Kubernetes API yet")
        if self._endpoint is None or info is not self._info:
            self._info, self._endpoint = info, endpoint_of(info)
        return self._endpoint

    async def endpoint(self) -> Endpoint:
        info = self._current()
        if _expired(info):
            async with self._lock:
                info = self._current()
                if _expired(info):
                    info = await self._relogin()
        return self._adopt(info)

    async def renew(self, refused: Endpoint) -> Endpoint | None:
        async with self._lock:
            refused_info = self._info if refused is self._endpoint else None
            latest = self._current()
            if latest is not None and latest is not refused_info and latest != refused_info:
                return self._adopt(latest)  # kopf has logged in again meanwhile
            fresh = await self._relogin()
            if fresh is None or fresh == refused_info:
                return None
            return self._adopt(fresh)


def _expired(info: Any) -> bool:
    expiration = getattr(info, "expiration", None)
    if not isinstance(expiration, datetime.datetime):
        return False
    if expiration.tzinfo is None:
        expiration = expiration.replace(tzinfo=datetime.UTC)
    return datetime.datetime.now(datetime.UTC) >= expiration


def endpoint_of(info: Any) -> Endpoint:
    """An Endpoint from kopf's ConnectionInfo (server, CA, client certificate, headers)."""
    server = str(info.server).rstrip("/")
    context: ssl.SSLContext | bool = False
    if server.startswith("https://"):
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
    return Endpoint(server, dict(info.as_http_headers()), context)


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
    def __init__(self, credentials: Credentials, *, timeout: float = 30.0) -> None:
        self.credentials = credentials
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        """Close the connections (again: a no-op)."""
        if self._session is not None:
            await self._session.close()

    async def _send(
        self, endpoint: Endpoint, method: str, api_path: str, data: str | None, ctype: str
    ) -> tuple[str, int, str]:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        url = endpoint.server + api_path
        headers = dict(endpoint.headers)
        if data is not None:
            headers["Content-Type"] = ctype
        # Per request: a renewed login may bring another CA or client certificate
        # (aiohttp pools connections per SSL context, so old ones are not reused).
        async with self._session.request(
            method, url, data=data, headers=headers, ssl=endpoint.ssl
        ) as resp:
            return url, resp.status, await resp.text()

    async def _call(
        self, method: str, api_path: str, body: Any = None, content_type: str = "application/json"
    ) -> dict[str, Any] | None:
        data = json.dumps(body) if body is not None else None
        endpoint = await self.credentials.endpoint()
        url, status, text = await self._send(endpoint, method, api_path, data, content_type)
        if status == 401:
            renewed = await self.credentials.renew(endpoint)
            if renewed is None:
                raise Unauthorized(
                    method, url, text, source=self.credentials.source,
                    why="and they have not changed since",
                )  # fmt: skip
            url, status, text = await self._send(renewed, method, api_path, data, content_type)
            if status == 401:
                raise Unauthorized(
                    method, url, text, source=self.credentials.source,
                    why="twice: before and after reading them again",
                )  # fmt: skip
        if status == 404 and method in ("GET", "DELETE"):
            return None
        if status == 409:
            raise Conflict(method, url, status, text)
        if status >= 300:
            raise KubeError(method, url, status, text)
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
