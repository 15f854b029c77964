"""mlwarden.kube: credentials renewed after a 401, against a small real HTTP server.

The server accepts the tokens in `valid` and answers 401 (as the API server does for an
expired token) to any other; it logs (token, method, status) for every request.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kopf
import pytest
from aiohttp import web
from emulate_tokens import project_token

from mlwarden.kube import (
    CredentialsError,
    KopfLogin,
    Kube,
    StaticToken,
    TokenFile,
    Unauthorized,
    in_cluster,
    path,
)


@dataclass
class ApiServer:
    url: str
    valid: set[str]
    log: list[tuple[str, str, int]] = field(default_factory=list)
    created: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture
async def api() -> AsyncIterator[ApiServer]:
    server = ApiServer(url="", valid={"first"})

    async def handle(request: web.Request) -> web.Response:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if token not in server.valid:
            server.log.append((token, request.method, 401))
            return web.json_response(
                {
                    "kind": "Status",
                    "code": 401,
                    "reason": "Unauthorized",
                    "message": "Unauthorized",
                },
                status=401,
            )
        server.log.append((token, request.method, 200))
        if request.method == "POST":
            server.created.append(json.loads(await request.text()))
        return web.json_response({"metadata": {"name": "m"}})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    server.url = f"http://127.0.0.1:{port}"
    yield server
    await runner.cleanup()


CM = path("ConfigMap", "ns", "m")


async def test_a_rotated_token_file_is_read_again_after_a_401(
    api: ApiServer, tmp_path: Path
) -> None:
    token = project_token(tmp_path / "sa", "first")
    kube = Kube(TokenFile(api.url, token, recheck_seconds=3600))  # only a 401 re-reads it
    await kube.get(CM)
    project_token(tmp_path / "sa", "second")
    api.valid = {"second"}  # the first token has expired
    await kube.merge_patch(CM, {"data": {"a": "1"}})
    await kube.get(CM)
    await kube.close()
    assert api.log == [
        ("first", "GET", 200),
        ("first", "PATCH", 401),
        ("second", "PATCH", 200),
        ("second", "GET", 200),
    ]


async def test_a_changed_token_file_is_read_without_waiting_for_a_401(
    api: ApiServer, tmp_path: Path
) -> None:
    token = project_token(tmp_path / "sa", "first")
    kube = Kube(TokenFile(api.url, token, recheck_seconds=0))
    await kube.get(CM)
    project_token(tmp_path / "sa", "second")
    api.valid = {"first", "second"}  # the kubelet rotates well before the old one expires
    await kube.get(CM)
    await kube.close()
    assert api.log == [("first", "GET", 200), ("second", "GET", 200)]


async def test_an_unchanged_token_is_not_sent_again(api: ApiServer, tmp_path: Path) -> None:
    token = project_token(tmp_path / "sa", "first")
    kube = Kube(TokenFile(api.url, token))
    api.valid = set()
    with pytest.raises(Unauthorized) as caught:
        await kube.get(CM)
    await kube.close()
    assert api.log == [("first", "GET", 401)]
    assert caught.value.status == 401
    message = str(caught.value)
    assert f"token file {token}" in message and "have not changed" in message


async def test_a_second_401_with_the_renewed_token_fails_clearly(
    api: ApiServer, tmp_path: Path
) -> None:
    token = project_token(tmp_path / "sa", "first")
    kube = Kube(TokenFile(api.url, token, recheck_seconds=3600))
    await kube.get(CM)
    project_token(tmp_path / "sa", "also-expired")
    api.valid = set()
    with pytest.raises(Unauthorized, match="twice: before and after reading them again"):
        await kube.create({"kind": "ConfigMap", "metadata": {"name": "m", "namespace": "ns"}})
    await kube.close()
    assert api.log[1:] == [("first", "POST", 401), ("also-expired", "POST", 401)]
    assert api.created == []


async def test_a_write_refused_with_401_is_applied_once_after_renewal(
    api: ApiServer, tmp_path: Path
) -> None:
    token = project_token(tmp_path / "sa", "first")
    kube = Kube(TokenFile(api.url, token, recheck_seconds=3600))
    await kube.get(CM)
    project_token(tmp_path / "sa", "second")
    api.valid = {"second"}
    cm = {"kind": "ConfigMap", "metadata": {"name": "m", "namespace": "ns"}}
    await kube.create(cm)
    await kube.close()
    assert api.created == [cm]


async def test_a_missing_token_file_says_which_file(tmp_path: Path) -> None:
    kube = Kube(TokenFile("http://127.0.0.1:1", tmp_path / "token"))
    with pytest.raises(CredentialsError, match=f"cannot read the API token from {tmp_path}"):
        await kube.get(CM)
    await kube.close()


async def test_a_static_token_is_not_renewed(api: ApiServer) -> None:
    kube = Kube(StaticToken(api.url, "stale"))
    with pytest.raises(Unauthorized, match=r"the fixed token given \(--report-token\)"):
        await kube.get(CM)
    await kube.close()
    assert api.log == [("stale", "GET", 401)]


class Login:
    """What kopf's login would return, one ConnectionInfo per login, in order."""

    def __init__(self, server: str, *tokens: str) -> None:
        self.infos = [kopf.ConnectionInfo(server=server, token=t) for t in tokens]
        self.current: Any = self.infos[0]
        self.logins = 0

    async def relogin(self) -> Any:
        self.logins += 1
        self.current = self.infos[min(self.logins, len(self.infos) - 1)]
        return self.current


async def test_the_operator_logs_in_again_after_a_401(api: ApiServer) -> None:
    login = Login(api.url, "first", "second")
    kube = Kube(KopfLogin(lambda: login.current, login.relogin))
    await kube.get(CM)
    api.valid = {"second"}
    await kube.list("ConfigMap", "ns")
    await kube.close()
    assert login.logins == 1
    assert api.log == [("first", "GET", 200), ("first", "GET", 401), ("second", "GET", 200)]


async def test_a_login_kopf_made_meanwhile_is_used_without_logging_in(api: ApiServer) -> None:
    login = Login(api.url, "first", "second")
    kube = Kube(KopfLogin(lambda: login.current, login.relogin))
    await kube.get(CM)
    login.current = login.infos[1]  # kopf's own 401 made it log in again
    api.valid = {"second"}
    await kube.get(CM)
    await kube.close()
    assert login.logins == 0
    assert api.log == [("first", "GET", 200), ("second", "GET", 200)]


async def test_the_same_credentials_after_logging_in_again_fail_clearly(api: ApiServer) -> None:
    login = Login(api.url, "first")
    kube = Kube(KopfLogin(lambda: login.current, login.relogin))
    api.valid = set()
    with pytest.raises(Unauthorized, match=r"kopf's login .* have not changed"):
        await kube.get(CM)
    await kube.close()
    assert login.logins == 1 and api.log == [("first", "GET", 401)]


async def test_expired_connection_info_is_renewed_before_the_request(api: ApiServer) -> None:
    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=1)
    login = Login(api.url, "first", "second")
    login.current = kopf.ConnectionInfo(server=api.url, token="first", expiration=past)
    api.valid = {"second"}
    kube = Kube(KopfLogin(lambda: login.current, login.relogin))
    await kube.get(CM)
    await kube.close()
    assert api.log == [("second", "GET", 200)]


def test_in_cluster_reads_the_service_account(tmp_path: Path) -> None:
    project_token(tmp_path, "t")
    env = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "6443"}
    credentials = in_cluster(env, tmp_path)
    assert credentials is not None
    assert credentials.server == "https://10.0.0.1:6443"
    assert credentials.token_file == tmp_path / "token"
    assert credentials.ca_file == tmp_path / "ca.crt"
    six = in_cluster({"KUBERNETES_SERVICE_HOST": "fd00::1"}, tmp_path)
    assert six is not None and six.server == "https://[fd00::1]:443"
    assert in_cluster({}, tmp_path) is None
    assert in_cluster(env, tmp_path / "absent") is None
