"""The baseline the sidecar is held to: the least an aiohttp reverse proxy can do.

One aiohttp low-level server and one pooled `ClientSession` (the same session
settings as the sidecar's: no connection limit, no automatic headers, no
decompression, no cookies). Per request it reads the body, forwards it with its
Content-Type, reads the answer whole and returns its status, Content-Type and
body. No header copying beyond that, no capture, no metrics. It runs on uvloop
when uvloop is importable, like the sidecar.

    python benchmarks/bare_forwarder.py --listen 127.0.0.1:8081 --upstream http://127.0.0.1:8080
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Callable, Coroutine
from typing import Any

import aiohttp
from aiohttp import hdrs, web
from yarl import URL


def make_handler(
    session: aiohttp.ClientSession, upstream: str
) -> Callable[[web.BaseRequest], Coroutine[Any, Any, web.Response]]:
    async def forward(request: web.BaseRequest) -> web.Response:
        body = await request.read()
        headers = {}
        content_type = request.headers.get(hdrs.CONTENT_TYPE)
        if content_type is not None:
            headers[hdrs.CONTENT_TYPE] = content_type
        url = URL(upstream + request.raw_path, encoded=True)
        async with session.request(
            request.method, url, data=body, headers=headers, allow_redirects=False
        ) as resp:
            payload = await resp.read()
            out = {}
            if hdrs.CONTENT_TYPE in resp.headers:
                out[hdrs.CONTENT_TYPE] = resp.headers[hdrs.CONTENT_TYPE]
            return web.Response(body=payload, status=resp.status, headers=out)

    return forward


async def serve(host: str, port: int, upstream: str) -> None:
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0),
        auto_decompress=False,
        skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
        cookie_jar=aiohttp.DummyCookieJar(),
    )
    # access_log goes to the Server: a ServerRunner ignores it.
    server = web.Server(
        make_handler(session, upstream.rstrip("/")), auto_decompress=False, access_log=None
    )
    runner = web.ServerRunner(server)
    await runner.setup()
    await web.TCPSite(runner, host, port, backlog=1024).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        await session.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="bare aiohttp forwarder (benchmark baseline)")
    parser.add_argument("--listen", required=True, help="HOST:PORT")
    parser.add_argument("--upstream", required=True, help="http://HOST:PORT")
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    coro = serve(host, int(port), args.upstream)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is absent on some platforms
        asyncio.run(coro)
    else:
        uvloop.run(coro)


if __name__ == "__main__":
    main()
