"""The gRPC listener: every call forwarded to the model's gRPC port, ModelInfer captured.

A generic proxy on grpcio's asyncio server. Every method of every service is forwarded
with identity (de)serializers, so each message reaches the model and comes back exactly
as it was sent (the bytes of the protobuf message; gRPC's own framing and compression
are per hop, as with any gRPC proxy). Per call the proxy:

- forwards the client's metadata (not the transport's own keys: `:`-pseudo-headers,
  `grpc-*`, `te`, `content-type`, `user-agent`) and its deadline (`time_remaining`);
- relays the model's initial metadata, messages, status code, details and trailing
  metadata; when the model cannot be reached, the client gets what the channel says
  (`UNAVAILABLE`), as it would calling the model directly;
- offers the exchange to the capture queue (O(1), never waits): for
  `inference.GRPCInferenceService/ModelInfer` the request and response messages, read
  later by `mlwarden.protocols.v2_grpc`; for `ModelStreamInfer` each request message
  with the next response message of the stream (a stream whose requests are each
  answered once, as a non-decoupled model does; a decoupled model's further responses
  to a request are not captured); for any other method only its timing and status
  (`exchanges_not_inference` for the health, metadata and repository methods of the
  inference service, gRPC health and reflection; `unrecognized_protocol` for other
  services' methods).

The v2 service's unary methods are served as unary calls; every other method, whatever
its cardinality (which a generic proxy cannot know), as a bidirectional stream, which
on the wire serves a unary or streaming client alike.

The records API has HTTP statuses: a gRPC status is stamped on the request entry as
the HTTP status Google's `google.rpc.Code` maps it to (`HTTP_STATUS`: OK 200,
INVALID_ARGUMENT 400, NOT_FOUND 404, UNAVAILABLE 503, DEADLINE_EXCEEDED 504,
INTERNAL 500, ...), so the detector's error-rate checks read both listeners alike.

Messages of any size pass (the model server's own limit applies and its
RESOURCE_EXHAUSTED is relayed); only those up to the capture cap are kept for capture.
The listener is plaintext, like the HTTP one: it serves the pod's own traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from typing import Any, Final, Protocol

import grpc
from grpc import aio

from mlwarden.protocols import is_inference
from mlwarden.protocols.v2_grpc import INFER_METHODS, SERVICE
from mlwarden.sidecar.capture import Exchange
from mlwarden.sidecar.config import grpc_target
from mlwarden.sidecar.metrics import SidecarMetrics

log = logging.getLogger(__name__)

PROTOCOL: Final = "v2-grpc"
_STREAM_INFER: Final = f"/{SERVICE}/ModelStreamInfer"
# The v2 service's methods that are unary (all but ModelStreamInfer), in Triton's
# grpc_service.proto, KServe's grpc_predict_v2.proto and MLServer's dataplane.proto.
UNARY_METHODS: Final = frozenset(
    f"/{SERVICE}/{m}"
    for m in (
        "ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata",
        "ModelInfer", "ModelConfig", "ModelStatistics", "RepositoryIndex",
        "RepositoryModelLoad", "RepositoryModelUnload", "SystemSharedMemoryStatus",
        "SystemSharedMemoryRegister", "SystemSharedMemoryUnregister",
        "CudaSharedMemoryStatus", "CudaSharedMemoryRegister", "CudaSharedMemoryUnregister",
        "TraceSetting", "LogSettings",
    )
)  # fmt: skip

# google.rpc.Code -> HTTP status, as google/rpc/code.proto documents the mapping.
HTTP_STATUS: Final[dict[grpc.StatusCode, int]] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}

# Metadata keys that belong to the transport, set by grpcio itself on each hop.
_TRANSPORT_KEYS: Final = frozenset(("te", "content-type", "user-agent", "host"))
# No limit of our own on message sizes: the model server's applies, and its error is relayed.
_UNLIMITED: Final = [
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", -1),
]

Metadata = Sequence[tuple[str, str | bytes]]


class Capture(Protocol):
    """Where exchanges go: the sidecar's capture (`supervisor.CaptureProcess` or
    `InlineCapture`), the same object the HTTP listener offers to."""

    def offer(self, exchange: Exchange) -> bool: ...


def forwarded(metadata: Metadata | None) -> list[tuple[str, str | bytes]]:
    """The client's metadata without the transport's own keys."""
    if not metadata:
        return []
    return [
        (key, value)
        for key, value in metadata
        if not key.startswith((":", "grpc-")) and key not in _TRANSPORT_KEYS
    ]


class GrpcProxy:
    """A gRPC listener forwarding to one upstream, offering exchanges to capture."""

    def __init__(
        self,
        *,
        listen: tuple[str, int],
        upstream: str,
        capture: Capture,
        metrics: SidecarMetrics,
        sample_rate: float,
        max_body_bytes: int,
        not_captured: str | None = None,
    ) -> None:
        self.listen = listen
        self.upstream = grpc_target(upstream, what="--grpc-upstream")
        self.capture = capture
        self.metrics = metrics
        self.sample_rate = 0.0 if not_captured else sample_rate
        self.not_captured = not_captured
        self.cap = max_body_bytes
        self.drops_queue_full = metrics.exchanges_dropped.labels("queue_full")
        self.port: int | None = None
        self._server: aio.Server | None = None
        self._channel: aio.Channel | None = None
        self._unary: dict[str, Any] = {}
        self._stream: dict[str, Any] = {}

    async def start(self) -> int:
        self._channel = aio.insecure_channel(self.upstream, options=_UNLIMITED)
        # so_reuseport off: a second sidecar on the same port must fail, not share it.
        self._server = aio.server(options=[*_UNLIMITED, ("grpc.so_reuseport", 0)])
        self._server.add_generic_rpc_handlers([_Handlers(self)])
        host, port = self.listen
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        bound = int(self._server.add_insecure_port(address))
        if not bound:
            raise OSError(f"--grpc-listen: cannot listen on {address}")
        await self._server.start()
        self.port = bound
        return bound

    async def stop(self, grace: float) -> None:
        """Stop taking calls (GOAWAY), let those in flight finish within `grace` seconds."""
        if self._server is not None:
            await self._server.stop(grace)
        if self._channel is not None:
            await self._channel.close()

    # ------------------------------------------------------------------- forwarding

    def _capture(self) -> bool:
        rate = self.sample_rate
        return rate >= 1.0 or (rate > 0.0 and random.random() < rate)

    async def unary(self, method: str, request: bytes, context: aio.ServicerContext) -> bytes:
        started, started_at = time.perf_counter(), time.time()
        callable_ = self._unary.get(method)
        if callable_ is None:
            assert self._channel is not None
            callable_ = self._channel.unary_unary(method)
            if method in UNARY_METHODS:  # kept for the v2 service only: names come from clients
                self._unary[method] = callable_
        metadata = context.invocation_metadata()
        call = callable_(request, metadata=forwarded(metadata), timeout=context.time_remaining())
        upstream_started = time.perf_counter()
        try:
            response: bytes = await call
        except aio.AioRpcError as err:
            upstream_done = time.perf_counter()
            code = err.code()
            self._count_failure(err)
            self._offer(
                method, code, metadata, started, started_at, upstream_done - upstream_started,
                request, b"" if _answered(err) else None,
            )  # fmt: skip
            await _relay_failure(context, err)
            raise AssertionError("unreachable: abort raises") from None  # pragma: no cover
        except asyncio.CancelledError:
            call.cancel()
            self.metrics.client_disconnects.inc()
            raise
        upstream_done = time.perf_counter()
        initial = await call.initial_metadata()
        if initial:
            await context.send_initial_metadata(tuple(initial))
        trailing = await call.trailing_metadata()
        if trailing:
            context.set_trailing_metadata(tuple(trailing))
        self._offer(
            method, grpc.StatusCode.OK, metadata, started, started_at,
            upstream_done - upstream_started, request, response,
        )  # fmt: skip
        return response

    async def stream(
        self, method: str, requests: AsyncIterator[bytes], context: aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        started, started_at = time.perf_counter(), time.time()
        callable_ = self._stream.get(method)
        if callable_ is None:
            assert self._channel is not None
            callable_ = self._channel.stream_stream(method)
            if method == _STREAM_INFER:  # kept for the v2 service only: names come from clients
                self._stream[method] = callable_
        metadata = context.invocation_metadata()
        call = callable_(metadata=forwarded(metadata), timeout=context.time_remaining())
        infer = method == _STREAM_INFER
        # ModelStreamInfer: requests waiting for their response (received at, message).
        pending: deque[tuple[float, float, bytes | None]] = deque()

        async def pump() -> None:
            async for message in requests:
                if infer:
                    pending.append((time.perf_counter(), time.time(), message))
                await call.write(message)
            await call.done_writing()

        pumping = asyncio.create_task(pump())
        try:
            initial = await call.initial_metadata()
            if initial:
                await context.send_initial_metadata(tuple(initial))
            async for response in call:
                if infer and pending:
                    received, received_at, message = pending.popleft()
                    now = time.perf_counter()
                    self._offer(
                        method, grpc.StatusCode.OK, metadata, received, received_at,
                        now - received, message, response,
                    )  # fmt: skip
                yield response
            trailing = await call.trailing_metadata()
            if trailing:
                context.set_trailing_metadata(tuple(trailing))
        except aio.AioRpcError as err:
            self._count_failure(err)
            if not infer:
                elapsed = time.perf_counter() - started
                self._offer(method, err.code(), metadata, started, started_at, elapsed, None, None)
            await _relay_failure(context, err)
        except asyncio.CancelledError:
            call.cancel()
            self.metrics.client_disconnects.inc()
            raise
        finally:
            if not pumping.done():
                pumping.cancel()
            with contextlib.suppress(asyncio.CancelledError, aio.AioRpcError, grpc.RpcError):
                await pumping
        if not infer:
            elapsed = time.perf_counter() - started
            self._offer(
                method, grpc.StatusCode.OK, metadata, started, started_at, elapsed, None, None
            )

    def _count_failure(self, err: aio.AioRpcError) -> None:
        code = err.code()
        if code == grpc.StatusCode.UNAVAILABLE and not _answered(err):
            self.metrics.upstream_errors.labels("connect").inc()
        elif code == grpc.StatusCode.DEADLINE_EXCEEDED:
            self.metrics.upstream_errors.labels("timeout").inc()

    def _offer(
        self,
        method: str,
        code: grpc.StatusCode,
        metadata: Metadata | None,
        started: float,
        started_at: float,
        upstream_seconds: float,
        request: bytes | None,
        response: bytes | None,
    ) -> None:
        skip: str | None = None
        if method not in INFER_METHODS:
            # Timing and status only; another service's method is a call that may be an
            # inference this sidecar cannot read.
            request = response = None
            if is_inference(PROTOCOL, "POST", method):
                skip = "unrecognized_protocol"
        elif request is None or response is None:
            request = response = None  # never answered: a request entry without rows
        elif not self._capture():
            skip = self.not_captured or "sampled_out"
            request = response = None
        elif len(request) > self.cap or len(response) > self.cap:
            skip = "body_too_large"
            request = response = None
        exchange = Exchange(
            method="POST",
            path=method,
            status=HTTP_STATUS.get(code, 500),
            started_at=started_at,
            total_seconds=time.perf_counter() - started,
            upstream_seconds=upstream_seconds,
            request_id=_request_id(metadata),
            request_body=request,
            response_body=response,
            skip=skip,
            protocol=PROTOCOL,
        )
        if not self.capture.offer(exchange):
            self.drops_queue_full.inc()


def _answered(err: aio.AioRpcError) -> bool:
    """Whether the model answered (with an error status), rather than the call failing on
    the way: a connection that failed, a deadline that passed, a cancelled call."""
    if err.code() in _NOT_ANSWERED:
        # Without response headers an UNAVAILABLE is taken for the channel failing to connect.
        return bool(err.initial_metadata())
    return True


_NOT_ANSWERED: Final = frozenset(
    (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED)
)


def _request_id(metadata: Metadata | None) -> str | None:
    for key, value in metadata or ():
        if key == "x-request-id" and isinstance(value, str):
            return value
    return None


async def _relay_failure(context: aio.ServicerContext, err: aio.AioRpcError) -> None:
    initial = err.initial_metadata()
    if initial:
        with contextlib.suppress(Exception):
            await context.send_initial_metadata(tuple(initial))
    await context.abort(err.code(), err.details() or "", tuple(err.trailing_metadata() or ()))


class _Handlers(grpc.GenericRpcHandler):  # type: ignore[misc]
    """Routes every method to the proxy: unary for the v2 service's unary methods, else a stream."""

    def __init__(self, proxy: GrpcProxy) -> None:
        self.proxy = proxy
        # The v2 service's handlers, made once; any other method's per call (method names
        # come from clients, so caching them all would let a client grow this without end).
        self._known: dict[str, grpc.RpcMethodHandler] = {}

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        method: str = details.method
        handler = self._known.get(method)
        if handler is None:
            handler = self._make(method)
            if method in UNARY_METHODS or method == _STREAM_INFER:
                self._known[method] = handler
        return handler

    def _make(self, method: str) -> grpc.RpcMethodHandler:
        proxy = self.proxy
        if method in UNARY_METHODS:

            async def unary(request: bytes, context: aio.ServicerContext) -> bytes:
                return await proxy.unary(method, request, context)

            return grpc.unary_unary_rpc_method_handler(unary)

        # An async generator function, so that grpcio serves it as one (it tells by that).
        async def stream(
            requests: AsyncIterator[bytes], context: aio.ServicerContext
        ) -> AsyncIterator[bytes]:
            async for response in proxy.stream(method, requests, context):
                yield response

        return grpc.stream_stream_rpc_method_handler(stream)


__all__ = ["HTTP_STATUS", "GrpcProxy", "forwarded"]
