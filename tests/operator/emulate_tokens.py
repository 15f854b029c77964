"""Token expiry for the API emulator: a rotated-away bearer token is refused with 401.

What it imitates: a bound service-account token (the projected token the kubelet mounts at
/var/run/secrets/kubernetes.io/serviceaccount/token, or a kubeconfig's token) has an expiry.
The kubelet writes a new token well before the old one expires (at 80% of its lifetime), and
the API server keeps accepting the old one until its expiry, then answers every request that
presents it with HTTP 401 and a `Status` whose reason is `Unauthorized`, before looking at
anything else: a refused request changes nothing.

`rotate_token(old, new, grace=...)`: `new` is accepted (as every token is: the emulator
authenticates nothing else), `old` is refused `grace` seconds from now. `refused` lists the
requests answered 401, as (token, method, path), for the tests to see that the expiry bit.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

import aiohttp.web


class TokenRotation:
    """A mixin for an `ApiServerEmulator`: refuses expired bearer tokens with 401."""

    def rotate_token(self, old: str, new: str, *, grace: float = 0.0) -> None:
        expiries: dict[str, float] = self.__dict__.setdefault("_token_expiries", {})
        expiries[old] = time.monotonic() + grace
        expiries.pop(new, None)  # a token issued again is valid again

    @property
    def refused(self) -> list[tuple[str, str, str]]:
        refused: list[tuple[str, str, str]] = self.__dict__.setdefault("_refused", [])
        return refused

    async def _handle(self, request: Any) -> Any:
        auth = str(request.headers.get("Authorization", ""))
        token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else None
        expiry = self.__dict__.get("_token_expiries", {}).get(token)
        if token is not None and expiry is not None and time.monotonic() >= expiry:
            method = str(getattr(request.method, "value", request.method)).upper()
            self.refused.append((token, method, str(request.url.path)))
            body = {
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": "Unauthorized", "reason": "Unauthorized", "code": 401,
            }  # fmt: skip
            return aiohttp.web.json_response(body, status=401)
        return await super()._handle(request)  # type: ignore[misc]


def project_token(directory: Path, token: str) -> Path:
    """Write `token` into `directory` as the kubelet updates a projected volume; the file's path.

    The kubelet writes the new content into a fresh timestamped directory, points a temporary
    symlink `..data_tmp` at it and renames that over `..data` (one atomic step); `token` is a
    symlink to `..data/token`. A reader sees the old token or the new one, never a partial one.
    """
    directory.mkdir(parents=True, exist_ok=True)
    fresh = directory / f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{time.monotonic_ns()}"
    fresh.mkdir()
    (fresh / "token").write_text(token)
    data, tmp = directory / "..data", directory / "..data_tmp"
    old = data.resolve() if data.is_symlink() else None
    tmp.symlink_to(fresh.name)
    os.replace(tmp, data)
    link = directory / "token"
    if not link.is_symlink():
        link.symlink_to("..data/token")
    if old is not None:
        shutil.rmtree(old)
    return link
