"""Helpers for the integration tests: real servers on loopback and the sidecar process.

- `mlserver`: MLServer (sklearn runtime) serving a LogisticRegression trained on
  scikit-learn's bundled iris data set, once per session.
- `upstream`: an aiohttp server with the awkward cases a real model server rarely
  shows on demand (echo of what it received, streams, gzip, huge and slow bodies).
- `collector`: a real HTTP collector that stores the batches the sidecar ships and
  can be told to fail, hang, reject or throttle.
- `start_sidecar`: the real `mlwarden sidecar` command in a subprocess.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import kmock
import orjson
import requests
from aiohttp import web
from ports import free_port  # the one free_port of the tests
from prometheus_client.parser import text_string_to_metric_families

from mlwarden.detector.ingest import parse_batch

IRIS_FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def wait_until(predicate: Callable[[], bool], timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except requests.RequestException:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what or predicate}")


# --------------------------------------------------------------------------- threaded aiohttp


class ThreadedServer:
    """An aiohttp application on a loopback port, served from its own thread and loop."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._runner: web.AppRunner | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=1.0)
        self.loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        self.loop.run_until_complete(site.start())
        self._started.set()
        self.loop.run_forever()

    def start(self) -> ThreadedServer:
        self._thread.start()
        assert self._started.wait(10), "test server did not start"
        return self

    def stop(self) -> None:
        if not self._thread.is_alive():
            return  # stopped already (a test may stop a server to imitate its loss)

        async def _cleanup() -> None:
            assert self._runner is not None
            await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(_cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


# --------------------------------------------------------------------------- collector


@dataclass
class Collector:
    """Stores shipped batches; `mode` decides how it answers (ok, fail, hang, reject, throttle)."""

    mode: str = "ok"
    batches: list[dict[str, Any]] = field(default_factory=list)
    attempts: int = 0
    throttle_first: int = 0  # answer 429 to this many posts before taking batches
    server: ThreadedServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    def requests(self) -> list[dict[str, Any]]:
        return [r for b in self.batches for r in b["requests"]]

    def records(self) -> list[dict[str, Any]]:
        return [r for b in self.batches for r in b["records"]]

    def app(self) -> web.Application:
        async def ingest(request: web.Request) -> web.Response:
            self.attempts += 1
            body = await request.read()
            if self.mode == "fail":
                return web.Response(status=500, text="collector failing on purpose")
            if self.mode == "hang":
                await asyncio.sleep(3600)
            if self.mode == "reject":
                return web.Response(status=400, text="bad batch")
            if self.attempts <= self.throttle_first:
                return web.Response(status=429, headers={"Retry-After": "0"})
            # As the detector reads a batch: one strict parse (orjson refuses bare NaN
            # tokens), then each `nonFinite` entry put in place of its null (parse_batch).
            payload = orjson.loads(body)
            parse_batch(payload, now=0.0)
            self.batches.append(payload)
            return web.json_response({"accepted": True})

        app = web.Application(client_max_size=64 << 20)
        app.router.add_post("/v1/records", ingest)
        return app


# --------------------------------------------------------------------------- test upstream


@dataclass
class Upstream:
    server: ThreadedServer
    seen: list[dict[str, Any]]

    @property
    def url(self) -> str:
        return self.server.url


def upstream_app(seen: list[dict[str, Any]]) -> web.Application:
    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        info = {
            "method": request.method,
            "path": request.raw_path,
            "headers": [[k, v] for k, v in request.headers.items()],
            "body_len": len(body),
            "body_head": body[:64].decode("latin-1"),
        }
        seen.append(info)
        return web.json_response(info, headers={"X-Upstream": "echo"})

    async def stream(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for i in range(5):
            await resp.write(f'data: {{"n": {i}}}\n\n'.encode())
            await asyncio.sleep(0.2)
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def gzipped(request: web.Request) -> web.Response:
        raw = await request.read()  # aiohttp gunzips it: proof it arrived still gzipped
        assert raw == b'{"instances": [[1.0, 2.0], [3.0, 4.0]]}', raw[:100]
        payload = gzip.compress(json.dumps({"predictions": [1, 2, 3]}).encode(), mtime=0)
        return web.Response(
            body=payload, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"}
        )

    async def big(request: web.Request) -> web.Response:
        size = int(request.query.get("size", str(5 << 20)))
        return web.Response(body=os.urandom(size), content_type="application/octet-stream")

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(float(request.query.get("seconds", "5")))
        return web.Response(text="finally")

    async def status(request: web.Request) -> web.Response:
        code = int(request.match_info["code"])
        return web.Response(status=code, text=f"status {code}", headers={"X-Status": str(code)})

    async def truncated(request: web.Request) -> web.Response:
        """Promises 1000 bytes, sends 10, hangs up: a model server crashing mid-answer."""
        await request.read()
        transport = request.transport
        assert transport is not None
        transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nonly ten b")
        await asyncio.sleep(0.05)
        transport.close()
        return web.Response()  # never sent: the connection is gone

    app = web.Application(client_max_size=256 << 20)
    app.router.add_route("*", "/truncated", truncated)
    app.router.add_get("/stream", stream)
    app.router.add_route("*", "/gzip", gzipped)
    # Any method: an inference is a POST, and only inferences give request entries.
    app.router.add_route("*", "/big", big)
    app.router.add_route("*", "/slow", slow)
    app.router.add_route("*", "/status/{code}", status)
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


# --------------------------------------------------------------------------- MLServer


# --------------------------------------------------------------------------- the sidecar


@dataclass
class ManagedProcess:
    """A component started as a real subprocess, its output in a log file."""

    proc: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        """SIGTERM, as Kubernetes sends it; the exit code (0 for a clean shutdown)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


@contextmanager
def serve_mlserver(root: Path, *, what: str = "the iris model") -> Iterator[str]:
    """Real MLServer serving the model repository `root` (which holds `iris`) on loopback,
    HTTP and gRPC on free ports written to `root/settings.json`; its URL while it runs."""
    port = free_port()
    (root / "settings.json").write_text(
        json.dumps(
            {
                "host": "127.0.0.1",
                "http_port": port,
                "grpc_port": free_port(),
                "metrics_port": free_port(),
                "parallel_workers": 0,
            }
        )
    )
    log = open(root / "mlserver.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("mlserver")), "start", str(root)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: requests.get(f"{url}/v2/models/iris/ready", timeout=1).status_code == 200,
            timeout=60,
            what=f"MLServer to load {what}",
        )
    except TimeoutError:
        proc.kill()
        raise RuntimeError((root / "mlserver.log").read_text()[-3000:]) from None
    try:
        yield url
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def start_process(
    args: list[str],
    log_path: Path,
    ready_url: str,
    what: str,
    env: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start `args` (this environment, updated by `env`), logging to `log_path`, and wait
    until `ready_url` answers 200."""
    environ = {**os.environ, **(env or {})}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=environ)

    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited {proc.returncode}:\n{log_path.read_text()}")
        return requests.get(ready_url, timeout=1).status_code == 200

    wait_until(ready, timeout=20, what=f"{what} to be ready")
    return proc


@dataclass
class SidecarProcess(ManagedProcess):
    admin_url: str = ""

    def metrics(self) -> dict[str, float]:
        """Every sample as `name{label="v",...}` -> value (labels sorted)."""
        text = requests.get(f"{self.admin_url}/metrics", timeout=5).text
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
                out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
        return out

    def metric(self, name: str, **labels: str) -> float:
        key = name
        if labels:
            key += "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"
        return self.metrics().get(key, 0.0)


@dataclass
class DetectorProcess(ManagedProcess):
    def status(self) -> dict[str, Any]:
        return requests.get(f"{self.url}/v1/status", timeout=5).json()

    def post(self, payload: dict[str, Any]) -> requests.Response:
        return requests.post(f"{self.url}/v1/records", json=payload, timeout=10)

    def alerts(self) -> set[tuple[str, str | None]]:
        return {(a["type"], a.get("feature")) for a in self.status()["alerts"]}

    def wait_evaluations(self, n: int, timeout: float = 20.0) -> None:
        start = self.status()["evaluations"]
        wait_until(
            lambda: self.status()["evaluations"] >= start + n, timeout, what=f"{n} more evaluations"
        )


def v2_infer(session: requests.Session, url: str, rows: Any, model: str = "iris") -> None:
    """One Open Inference Protocol v2 request of `rows` (a 2-D float array) as FP64; 200."""
    body = {
        "inputs": [
            {
                "name": "input-0",
                "shape": list(rows.shape),
                "datatype": "FP64",
                "data": rows.ravel().tolist(),
            }
        ]
    }
    resp = session.post(
        f"{url}/v2/models/{model}/infer",
        data=json.dumps(body),
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert resp.status_code == 200, resp.text


def manifest(tmp: Path, spec: str, name: str = "m") -> Path:
    """An ObservedModel file: `spec` is the YAML body under `spec:` (indented by the caller)."""
    path = tmp / f"{name}.yaml"
    path.write_text(
        "apiVersion: mlwarden.io/v1alpha1\nkind: ObservedModel\n"
        f"metadata: {{name: {name}, namespace: test}}\nspec:\n{spec}"
    )
    return path


def v2_body(rows: Any) -> dict[str, Any]:
    """An Open Inference Protocol v2 request for the iris model: `rows` (an N x 4 array) as
    one FP64 input tensor."""
    return {
        "inputs": [
            {
                "name": "input-0",
                "shape": list(rows.shape),
                "datatype": "FP64",
                "data": rows.ravel().tolist(),
            }
        ]
    }


def iris_spec(*, size: int) -> str:
    """The spec of an ObservedModel for the MLServer iris model: warm-up and window of `size`
    rows, evaluated every 200 ms, alerts after 2 failing evaluations."""
    features = "".join(f"    - {{name: {f}, type: numeric}}\n" for f in IRIS_FEATURES)
    return (
        "  target: {deployment: iris}\n  protocol: v2\n  features:\n"
        + features
        + "  prediction: {name: predict, type: categorical}\n"
        f"  reference: {{source: warmup, size: {size}}}\n  window: {{size: {size}}}\n"
        "  alerting: {evaluationInterval: 200ms, fireAfter: 2, resolveAfter: 2}\n"
    )


# --------------------------------------------------------------------------- a detector, async


@asynccontextmanager
async def detector_process(
    manifest: Path, *extra: str, killed_ok: bool = False
) -> AsyncIterator[tuple[str, asyncio.subprocess.Process]]:
    """The real `mlwarden detector` on a free port, ready; its URL and process.

    Stopped with SIGTERM at the end, and it must exit 0; with `killed_ok`, the test may have
    SIGKILLed it (a crash it imitates) instead.
    """
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mlwarden.cli", "detector",
        "--observed-model", str(manifest), "--listen", f"127.0.0.1:{port}", *extra,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(150):
                try:
                    async with http.get(f"{url}/readyz") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        yield url, proc
    finally:
        if proc.returncode is None:
            proc.terminate()
        _, stderr = await proc.communicate()
    allowed = (0, -signal.SIGKILL) if killed_ok else (0,)
    assert proc.returncode in allowed, stderr.decode()[-2000:]


async def post_records(url: str, payload: dict[str, Any]) -> None:
    async with aiohttp.ClientSession() as http, http.post(f"{url}/v1/records", json=payload) as r:
        assert r.status == 200, await r.text()


async def get_status(url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/v1/status") as resp:
        result: dict[str, Any] = await resp.json()
        return result


async def until(check: Callable[[], Any], what: str, timeout: float = 15.0) -> Any:
    """Poll `check` (a function, or one returning a coroutine) until it gives something truthy."""
    for _ in range(int(timeout * 10)):
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


# --------------------------------------------------------------------------- a gRPC upstream


class GrpcEcho:
    """A real grpcio server on loopback, in its own thread, with the cases MLServer does not
    show on demand (service `echo.Echo`, messages as raw bytes, no protobuf):

    - `Unary`: answers the request bytes reversed; initial metadata `x-initial: yes`;
      trailing metadata `echo-KEY` for every metadata key it received (values kept, binary
      `-bin` keys too);
    - `Fail`: INVALID_ARGUMENT, details `bad input`, trailing metadata `x-why: because`;
    - `ServerStream`: three answers to one request (`<request>-0`, `-1`, `-2`);
    - `Bidi`: echoes each message as it comes;
    - `Slow`: answers after the number of seconds in the request body.
    """

    def __init__(self) -> None:
        self.port = free_port()
        self.target = f"127.0.0.1:{self.port}"
        self.seen: list[tuple[str, list[tuple[str, str | bytes]]]] = []
        self.loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._server: Any = None

    def _run(self) -> None:
        import grpc
        from grpc import aio

        asyncio.set_event_loop(self.loop)
        seen = self.seen

        async def unary(request: bytes, context: Any) -> bytes:
            metadata = list(context.invocation_metadata())
            seen.append(("Unary", metadata))
            await context.send_initial_metadata((("x-initial", "yes"),))
            context.set_trailing_metadata(
                tuple((f"echo-{k}", v) for k, v in metadata if not k.startswith((":", "grpc-")))
            )
            return request[::-1]

        async def fail(request: bytes, context: Any) -> bytes:
            seen.append(("Fail", list(context.invocation_metadata())))
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "bad input", (("x-why", "because"),)
            )
            return b""

        async def server_stream(request: bytes, context: Any) -> Any:
            for i in range(3):
                yield request + f"-{i}".encode()

        async def bidi(requests: Any, context: Any) -> Any:
            async for message in requests:
                yield message

        async def slow(request: bytes, context: Any) -> bytes:
            await asyncio.sleep(float(request.decode()))
            return b"finally"

        handler = grpc.method_handlers_generic_handler(
            "echo.Echo",
            {
                "Unary": grpc.unary_unary_rpc_method_handler(unary),
                "Fail": grpc.unary_unary_rpc_method_handler(fail),
                "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
                "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
                "Slow": grpc.unary_unary_rpc_method_handler(slow),
            },
        )

        async def start() -> None:
            self._server = aio.server(
                options=[("grpc.max_receive_message_length", 64 << 20),
                         ("grpc.max_send_message_length", 64 << 20)]
            )  # fmt: skip
            self._server.add_generic_rpc_handlers([handler])
            self._server.add_insecure_port(self.target)
            await self._server.start()

        self.loop.run_until_complete(start())
        self._started.set()
        self.loop.run_forever()

    def start(self) -> GrpcEcho:
        self._thread.start()
        assert self._started.wait(10), "gRPC echo server did not start"
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._server.stop(0), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


OBSERVED_MODELS = "mlwarden.io/v1alpha1/observedmodels"


def emulate_observed_model(api: kmock.KubernetesEmulator, uid: str) -> None:
    """ObservedModel test/m in kmock's API emulator, with `uid` (the owner the detector writes
    on its ConfigMap), and the ConfigMaps resource the detector's reference store uses."""
    api.resources[OBSERVED_MODELS] = {}
    api.resources["v1/configmaps"] = {}
    api.objects[OBSERVED_MODELS, "test", "m"] = {
        "apiVersion": "mlwarden.io/v1alpha1",
        "kind": "ObservedModel",
        "metadata": {"name": "m", "namespace": "test", "uid": uid},
        "spec": {"target": {"deployment": "m"}},
    }
