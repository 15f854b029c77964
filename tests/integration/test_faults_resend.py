"""A batch re-sent after a ship timeout is ingested once: the Idempotency-Key, end to end.

Real processes on loopback: the sidecar (`mlwarden sidecar`) in front of the echo upstream,
shipping to the real `mlwarden detector` through a relay (an aiohttp server in this test)
that passes every post on, but holds back the detector's answer to the first one beyond
the sidecar's ship timeout: the detector has ingested that batch, the sidecar does not know
and sends it again. The detector must count it once, and say so in its metrics.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import aiohttp
import requests
from aiohttp import web
from harness import (
    SidecarProcess,
    ThreadedServer,
    Upstream,
    detector_process,
    get_status,
    manifest,
    until,
)

BODY = json.dumps({"instances": [[1.0, 2.0]]}).encode()
SHIP_TIMEOUT = 1.0


class SlowFirstAnswer:
    """Passes posts on to the detector; answers the first only after the ship timeout."""

    def __init__(self, detector: str) -> None:
        self.detector = detector
        self.keys: list[str | None] = []
        self.answers: list[dict[str, object]] = []

    def app(self) -> web.Application:
        async def relay(request: web.Request) -> web.Response:
            body = await request.read()
            key = request.headers.get("Idempotency-Key")
            self.keys.append(key)
            headers = {"Content-Type": "application/json"}
            if key is not None:
                headers["Idempotency-Key"] = key
            async with (
                aiohttp.ClientSession() as http,
                http.post(self.detector + "/v1/records", data=body, headers=headers) as resp,
            ):
                answer = await resp.json()
                status = resp.status
            self.answers.append(answer)
            if len(self.keys) == 1:
                await asyncio.sleep(SHIP_TIMEOUT + 1.0)  # the sidecar gives up on this one
            return web.json_response(answer, status=status)

        app = web.Application()
        app.router.add_post("/v1/records", relay)
        return app


async def test_a_batch_resent_after_a_timeout_is_ingested_once(
    tmp_path: Path, upstream: Upstream, start_sidecar: Callable[..., SidecarProcess]
) -> None:
    spec = "  target: {deployment: m}\n  reference: {source: warmup, size: 1000}\n"
    async with detector_process(manifest(tmp_path, spec)) as (detector, _):
        relay = SlowFirstAnswer(detector)
        server = ThreadedServer(relay.app()).start()
        try:
            sidecar = start_sidecar(
                upstream.url, "--protocol", "v1", "--ship-timeout", str(SHIP_TIMEOUT),
                "--ship-attempts", "3", "--batch-size", "500", "--batch-interval", "0.2",
                collector=server.url,
            )  # fmt: skip
            with requests.Session() as s:
                for _ in range(5):
                    resp = s.post(sidecar.url + "/v1/models/m:predict", data=BODY, timeout=10)
                    assert resp.status_code == 200
            await until(lambda: len(relay.answers) >= 2, "the first batch sent again")
            await asyncio.sleep(0.5)  # anything more the sidecar would send
            status = await get_status(detector)
            assert status["requestsIngested"] == 5
            assert status["recordsIngested"] == 5
            assert relay.keys[0] is not None and relay.keys[1] == relay.keys[0]
            assert relay.answers[1] == {"accepted": 0, "requests": 0, "duplicate": True}
            async with aiohttp.ClientSession() as http, http.get(detector + "/metrics") as resp:
                metrics = await resp.text()
            assert "mlwarden_detector_batches_duplicate_total 1.0" in metrics
        finally:
            server.stop()


async def test_idempotency_keys_are_checked_and_scoped(tmp_path: Path) -> None:
    """Posted by hand: a key ingested once is not ingested again, another key is, a batch
    rejected as malformed does not burn its key, and an unusable key is refused by name."""
    spec = "  target: {deployment: m}\n  reference: {source: warmup, size: 1000}\n"
    batch = {"requests": [{"id": "r", "status": 200, "latencySeconds": 0.01}],
             "records": [{"id": "r", "features": {"a": 1.0}}]}  # fmt: skip
    async with detector_process(manifest(tmp_path, spec)) as (detector, _):

        async def post(body: object, key: str) -> tuple[int, dict[str, object]]:
            async with (
                aiohttp.ClientSession() as http,
                http.post(
                    detector + "/v1/records", json=body, headers={"Idempotency-Key": key}
                ) as resp,
            ):
                return resp.status, await resp.json()

        assert await post({"records": "no"}, "p1.1.1") == (
            400, {"error": "records: must be a list, got string"}
        )  # fmt: skip
        assert await post(batch, "p1.1.1") == (200, {"accepted": 1, "requests": 1})
        assert await post(batch, "p1.1.1") == (
            200, {"accepted": 0, "requests": 0, "duplicate": True}
        )  # fmt: skip
        assert await post(batch, "p1.2.1") == (200, {"accepted": 1, "requests": 1})
        assert await post(batch, "p2.1.1") == (200, {"accepted": 1, "requests": 1})
        status, answer = await post(batch, "x" * 201)
        assert status == 400 and "Idempotency-Key: must be 1 to 200 characters" in str(answer)
        assert (await get_status(detector))["recordsIngested"] == 3
