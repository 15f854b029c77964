"""Triton's own client (`tritonclient`, HTTP and gRPC) through the real sidecar to MLServer.

MLServer serves the Open Inference Protocol v2 over HTTP and gRPC side by side; the sidecar
runs both listeners (`--listen` to MLServer's HTTP port, `--grpc-listen` to its gRPC port).
What must hold: every answer is the one the client gets calling MLServer directly; the
records a gRPC inference gives are those the same inputs give over HTTP; the calls that are
not inferences pass and are not drops; a detector that is gone does not stop a call. The
gRPC echo server (harness.GrpcEcho) shows what MLServer does not on demand: metadata,
status details and trailers, streams of other services, deadlines.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import requests
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
from harness import IRIS_FEATURES, Collector, GrpcEcho, SidecarProcess, free_port, wait_until
from sklearn.datasets import load_iris
from tritonclient.grpc import service_pb2 as pb
from tritonclient.utils import InferenceServerException

pytestmark = pytest.mark.integration

DROP_REASONS = ("unparseable", "unrecognized_protocol", "decode_error", "body_too_large")


def _start(
    start_sidecar: Callable[..., SidecarProcess],
    mlserver: str,
    mlserver_grpc: str,
    *extra: str,
    collector: str | None = None,
) -> tuple[SidecarProcess, str]:
    """A sidecar with both listeners; its gRPC address."""
    grpc_port = free_port()
    sidecar = start_sidecar(
        mlserver,
        "--grpc-listen", f"127.0.0.1:{grpc_port}",
        "--grpc-upstream", mlserver_grpc,
        *extra,
        collector=collector,
    )  # fmt: skip
    return sidecar, f"127.0.0.1:{grpc_port}"


def _grpc_infer(target: str, rows: np.ndarray, request_id: str = "", **kw: Any) -> Any:
    client = tgrpc.InferenceServerClient(target)
    tensor = tgrpc.InferInput("input-0", list(rows.shape), "FP64")
    tensor.set_data_from_numpy(rows)
    try:
        return client.infer("iris", [tensor], request_id=request_id, **kw)
    finally:
        client.close()


def _http_infer(url: str, rows: np.ndarray, request_id: str, *, binary: bool) -> Any:
    client = thttp.InferenceServerClient(url.removeprefix("http://"))
    tensor = thttp.InferInput("input-0", list(rows.shape), "FP64")
    tensor.set_data_from_numpy(rows, binary_data=binary)
    try:
        return client.infer("iris", [tensor], request_id=request_id)
    finally:
        client.close()


def _outcome(call: Callable[[], Any]) -> tuple[str, Any]:
    """What a client call gave: the answer's protobuf bytes (or value), or the error."""
    try:
        result = call()
    except InferenceServerException as exc:
        return "error", (exc.status(), exc.message())
    if isinstance(result, tgrpc.InferResult):
        return "answer", result.get_response().SerializeToString()
    if hasattr(result, "SerializeToString"):
        return "answer", result.SerializeToString()
    return "answer", result


def _not_drops(sidecar: SidecarProcess) -> float:
    return sum(
        sidecar.metric("mlwarden_sidecar_exchanges_dropped_total", reason=r) for r in DROP_REASONS
    )


def test_grpc_answers_are_identical_to_direct_calls(
    mlserver: str,
    mlserver_grpc: str,
    collector: Collector,
    start_sidecar: Callable[..., SidecarProcess],
    iris_manifest: Path,
) -> None:
    sidecar, proxied = _start(
        start_sidecar, mlserver, mlserver_grpc,
        "--observed-model", str(iris_manifest), collector=collector.url,
    )  # fmt: skip
    x = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]])

    def calls(target: str) -> list[Callable[[], Any]]:
        client = tgrpc.InferenceServerClient(target)
        wrong = tgrpc.InferInput("input-0", [1, 3], "FP64")
        wrong.set_data_from_numpy(np.array([[1.0, 2.0, 3.0]]))
        return [
            lambda: _grpc_infer(target, x, "fixed-id"),
            lambda: _grpc_infer(target, x[:1], "other-id", headers={"x-request-id": "hdr-1"}),
            lambda: client.infer("iris", [wrong], request_id="wrong-shape"),
            lambda: client.infer("nope", [wrong], request_id="no-model"),
            client.is_server_live,
            client.is_server_ready,
            lambda: client.is_model_ready("iris"),
            lambda: client.is_model_ready("nope"),
            client.get_server_metadata,
            lambda: client.get_model_metadata("iris"),
            lambda: client.get_model_metadata("nope"),
            client.get_model_repository_index,
        ]

    direct, through = calls(mlserver_grpc), calls(proxied)
    for i, (a, b) in enumerate(zip(direct, through, strict=True)):
        assert _outcome(b) == _outcome(a), f"call {i}"
    assert _outcome(direct[2])[0] == "error"  # the model's own error, relayed

    # Two inferences and two failed ones are inferences; the other eight are not.
    wait_until(
        lambda: sidecar.metric("mlwarden_sidecar_exchanges_not_inference_total") == 8,
        what="non-inference calls counted",
    )
    wait_until(lambda: len(collector.requests()) == 4, what="four request entries shipped")
    assert _not_drops(sidecar) == 0
    by_id = {r["id"]: r for r in collector.requests()}
    assert by_id["fixed-id"]["status"] == 200 and by_id["fixed-id"]["rows"] == 2
    # The x-request-id metadata names the request, as the header does over HTTP.
    assert by_id["hdr-1"]["protocol"] == "v2-grpc"
    statuses = sorted(r["status"] for r in collector.requests())
    assert statuses[:2] == [200, 200] and all(s >= 400 for s in statuses[2:])


def test_grpc_records_equal_the_http_records(
    mlserver: str,
    mlserver_grpc: str,
    collector: Collector,
    start_sidecar: Callable[..., SidecarProcess],
    iris_manifest: Path,
) -> None:
    sidecar, proxied = _start(
        start_sidecar, mlserver, mlserver_grpc,
        "--observed-model", str(iris_manifest), collector=collector.url,
    )  # fmt: skip
    x, _ = load_iris(return_X_y=True)
    rng = np.random.default_rng(3)
    batches = [x[rng.choice(len(x), size=n)] for n in rng.integers(1, 6, size=12)]
    for i, rows in enumerate(batches):
        over_grpc = _grpc_infer(proxied, rows, f"g-{i}")
        over_http = _http_infer(sidecar.url, rows, f"h-{i}", binary=False)
        assert over_grpc.as_numpy("predict").tolist() == over_http.as_numpy("predict").tolist()
    total = sum(len(b) for b in batches)
    wait_until(lambda: len(collector.records()) == 2 * total, what="records of both paths")

    def rows_of(prefix: str) -> list[tuple[int, int, dict[str, Any], dict[str, Any]]]:
        return sorted(
            (int(r["id"].split("-")[1]), r["row"], r["features"], r["outputs"])
            for r in collector.records()
            if r["id"].startswith(prefix)
        )

    grpc_rows, http_rows = rows_of("g-"), rows_of("h-")
    assert grpc_rows == http_rows
    assert len(grpc_rows) == total
    assert set(grpc_rows[0][2]) == set(IRIS_FEATURES) and "predict" in grpc_rows[0][3]
    protocols = {r["id"][0]: r["protocol"] for r in collector.requests()}
    assert protocols == {"g": "v2-grpc", "h": "v2"}
    # The capture worker reports its counters every 0.2 s.
    wait_until(
        lambda: (
            sidecar.metric("mlwarden_sidecar_exchanges_captured_total", protocol="v2-grpc") == 12
        ),
        what="the worker's count relayed",
    )


def test_binary_http_requests_are_captured_like_json_ones(
    mlserver: str,
    collector: Collector,
    start_sidecar: Callable[..., SidecarProcess],
    iris_manifest: Path,
) -> None:
    """tritonclient's binary_data=True: MLServer does not implement Triton's binary extension
    and answers 422; the sidecar still passes that answer unchanged and reads the inputs."""
    sidecar = start_sidecar(
        mlserver, "--observed-model", str(iris_manifest), collector=collector.url
    )
    rows = np.array([[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3]])
    direct = _outcome(lambda: _http_infer(mlserver, rows, "b-direct", binary=True))
    proxied = _outcome(lambda: _http_infer(sidecar.url, rows, "b-1", binary=True))
    assert proxied == direct
    _http_infer(sidecar.url, rows, "j-1", binary=False)
    wait_until(lambda: len(collector.records()) == 4, what="records of both requests")
    binary = [r for r in collector.records() if r["id"] == "b-1"]
    plain = [r for r in collector.records() if r["id"] == "j-1"]
    assert [r["features"] for r in binary] == [r["features"] for r in plain]
    assert [r["features"]["sepal_length"] for r in binary] == [5.1, 6.2]
    assert _not_drops(sidecar) == 0


def test_http_calls_that_are_not_inferences_are_not_drops(
    mlserver: str, collector: Collector, start_sidecar: Callable[..., SidecarProcess]
) -> None:
    sidecar = start_sidecar(mlserver, collector=collector.url)
    client = thttp.InferenceServerClient(sidecar.url.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("iris")
    assert client.get_model_metadata("iris")["name"] == "iris"
    assert client.get_server_metadata()["name"]
    # Passed through as it is: the sidecar answers what the model answers.
    direct = requests.get(mlserver + "/v1/models", timeout=5).status_code
    assert requests.get(sidecar.url + "/v1/models", timeout=5).status_code == direct
    assert requests.post(sidecar.url + "/v2/repository/index", json={}, timeout=5).ok
    client.close()
    wait_until(
        lambda: sidecar.metric("mlwarden_sidecar_exchanges_not_inference_total") == 7,
        what="seven calls counted as not inferences",
    )
    assert _not_drops(sidecar) == 0
    assert collector.requests() == []


def test_grpc_fails_open_when_the_detector_is_gone(
    mlserver: str,
    mlserver_grpc: str,
    collector: Collector,
    start_sidecar: Callable[..., SidecarProcess],
    iris_manifest: Path,
) -> None:
    sidecar, proxied = _start(
        start_sidecar, mlserver, mlserver_grpc,
        "--observed-model", str(iris_manifest), "--ship-timeout", "0.5",
        collector=collector.url,
    )  # fmt: skip
    assert collector.server is not None
    collector.server.stop()  # the detector is gone
    rows = np.array([[5.1, 3.5, 1.4, 0.2]])
    expected = _grpc_infer(mlserver_grpc, rows, "ok").as_numpy("predict").tolist()
    for i in range(30):
        assert _grpc_infer(proxied, rows, f"r-{i}").as_numpy("predict").tolist() == expected
    wait_until(
        lambda: sidecar.metric("mlwarden_sidecar_records_captured_total") == 30,
        what="records captured",
    )
    ready = requests.get(f"{sidecar.admin_url}/readyz", timeout=5).json()
    assert ready["ready"] is True
    wait_until(
        lambda: (
            requests.get(f"{sidecar.admin_url}/readyz", timeout=5).json()["collectorLastError"]
            is not None
        ),
        what="the shipper to notice the detector is gone",
    )
    assert sidecar.metric("mlwarden_sidecar_records_shipped_total") == 0


def test_protocol_v2_grpc_makes_listen_the_grpc_listener(
    mlserver_grpc: str, collector: Collector, start_sidecar: Callable[..., SidecarProcess]
) -> None:
    """The shape the operator injects: --listen and --upstream, the protocol from the spec."""
    sidecar = start_sidecar(
        f"http://{mlserver_grpc}", "--protocol", "v2-grpc", collector=collector.url
    )
    target = sidecar.url.removeprefix("http://")
    rows = np.array([[5.1, 3.5, 1.4, 0.2]])
    assert _outcome(lambda: _grpc_infer(target, rows, "p-1")) == _outcome(
        lambda: _grpc_infer(mlserver_grpc, rows, "p-1")
    )
    wait_until(lambda: len(collector.records()) == 1, what="the record shipped")
    assert collector.records()[0]["id"] == "p-1"
    assert collector.requests()[0]["protocol"] == "v2-grpc"


def test_model_stream_infer_is_proxied_and_captured(
    mlserver: str,
    mlserver_grpc: str,
    collector: Collector,
    start_sidecar: Callable[..., SidecarProcess],
    iris_manifest: Path,
) -> None:
    """MLServer's ModelStreamInfer: a stream of ModelInferRequests; MLServer's scikit-learn
    runtime answers the first of a stream, once (directly as through the sidecar)."""
    sidecar, proxied = _start(
        start_sidecar, mlserver, mlserver_grpc,
        "--observed-model", str(iris_manifest), collector=collector.url,
    )  # fmt: skip
    x, _ = load_iris(return_X_y=True)
    messages = []
    for i in range(5):
        request = pb.ModelInferRequest(model_name="iris", id=f"s-{i}")
        tensor = request.inputs.add(name="input-0", datatype="FP64", shape=[1, 4])
        tensor.contents.fp64_contents.extend(x[i * 30].tolist())
        messages.append(request.SerializeToString())

    def stream(target: str, message: bytes) -> list[bytes]:
        with grpc.insecure_channel(target) as channel:
            call = channel.stream_stream("/inference.GRPCInferenceService/ModelStreamInfer")
            return list(call(iter([message]), timeout=20))

    for message in messages:
        answers = stream(proxied, message)
        assert answers == stream(mlserver_grpc, message)
        assert len(answers) == 1
    wait_until(lambda: len(collector.records()) == 5, what="one record per streamed request")
    assert sorted(r["id"] for r in collector.records()) == [f"s-{i}" for i in range(5)]
    assert all("predict" in r["outputs"] for r in collector.records())
    got = {r["id"]: r["features"]["sepal_length"] for r in collector.records()}
    assert got == {f"s-{i}": x[i * 30][0] for i in range(5)}
    wait_until(
        lambda: (
            sidecar.metric("mlwarden_sidecar_exchanges_captured_total", protocol="v2-grpc") == 5
        ),
        what="the worker's count relayed",
    )


# --------------------------------------------------------------------------- the echo server


def test_other_services_pass_untouched(
    grpc_echo: GrpcEcho,
    collector: Collector,
    start_sidecar: Callable[..., SidecarProcess],
    upstream: Any,
) -> None:
    grpc_port = free_port()
    sidecar = start_sidecar(
        upstream.url,
        "--grpc-listen", f"127.0.0.1:{grpc_port}",
        "--grpc-upstream", grpc_echo.target,
        collector=collector.url,
    )  # fmt: skip
    metadata = (("x-request-id", "echo-1"), ("x-team", "fraud"), ("trace-bin", b"\x00\x01\xff"))

    def run(target: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        with grpc.insecure_channel(
            target, options=[("grpc.max_receive_message_length", 64 << 20),
                             ("grpc.max_send_message_length", 64 << 20)]
        ) as channel:  # fmt: skip
            unary = channel.unary_unary("/echo.Echo/Unary")
            answer, call = unary.with_call(b"hello", metadata=metadata, timeout=10)
            out["unary"] = answer
            out["initial"] = sorted(call.initial_metadata())
            out["trailing"] = sorted(
                (k, v) for k, v in call.trailing_metadata() if k.startswith(("echo-x", "echo-t"))
            )
            try:
                channel.unary_unary("/echo.Echo/Fail")(b"x", timeout=10)
            except grpc.RpcError as err:
                out["fail"] = (err.code(), err.details(), sorted(err.trailing_metadata()))
            out["server_stream"] = list(
                channel.unary_stream("/echo.Echo/ServerStream")(b"s", timeout=10)
            )
            out["bidi"] = list(
                channel.stream_stream("/echo.Echo/Bidi")(iter([b"a", b"bb", b"ccc"]), timeout=10)
            )
            big = bytes(range(256)) * (32 << 10)  # 8 MiB, beyond grpcio's default 4 MiB limit
            out["big"] = unary(big, timeout=20) == big[::-1]
            try:
                channel.unary_unary("/echo.Echo/Slow")(b"3", timeout=0.5)
            except grpc.RpcError as err:
                out["deadline"] = err.code()
        return out

    direct, proxied = run(grpc_echo.target), run(f"127.0.0.1:{grpc_port}")
    assert proxied == direct
    assert direct["unary"] == b"olleh" and direct["big"] is True
    assert ("echo-x-team", "fraud") in direct["trailing"]
    assert ("echo-trace-bin", b"\x00\x01\xff") in direct["trailing"]
    assert direct["fail"] == (grpc.StatusCode.INVALID_ARGUMENT, "bad input", [("x-why", "because")])
    assert direct["deadline"] == grpc.StatusCode.DEADLINE_EXCEEDED
    # What the echo server received through the sidecar is what the client sent.
    received = [dict((k, v) for k, v in md if not k.startswith((":", "grpc-", "user-agent")))
                for name, md in grpc_echo.seen if name == "Unary"]  # fmt: skip
    assert received[0] == received[2] == dict(metadata)
    # Another service's calls may be inferences no adapter reads: counted, never parsed. Five
    # were answered; the sixth ran out of time, which the client's cancellation or the
    # upstream's deadline error tells the sidecar first (a client disconnect, or a timeout).
    wait_until(
        lambda: (
            sidecar.metric("mlwarden_sidecar_requests_total", code_class="2xx") == 4
            and sidecar.metric("mlwarden_sidecar_requests_total", code_class="4xx") == 1
        ),
        what="the echo calls counted",
    )
    unrecognized = sidecar.metric(
        "mlwarden_sidecar_exchanges_dropped_total", reason="unrecognized_protocol"
    )
    timed_out = sidecar.metric("mlwarden_sidecar_upstream_errors_total", reason="timeout")
    gave_up = sidecar.metric("mlwarden_sidecar_client_disconnects_total")
    assert (unrecognized, timed_out + gave_up) in ((5, 1), (6, 1)), sidecar.metrics()


def test_an_unreachable_model_is_unavailable_as_directly(
    upstream: Any, start_sidecar: Callable[..., SidecarProcess]
) -> None:
    dead = f"127.0.0.1:{free_port()}"
    grpc_port = free_port()
    sidecar = start_sidecar(
        upstream.url, "--grpc-listen", f"127.0.0.1:{grpc_port}", "--grpc-upstream", dead
    )

    def call(target: str) -> grpc.StatusCode:
        with grpc.insecure_channel(target) as channel:
            try:
                channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")(b"", timeout=5)
            except grpc.RpcError as err:
                return err.code()  # type: ignore[no-any-return]
        raise AssertionError("the call succeeded")

    assert call(f"127.0.0.1:{grpc_port}") == call(dead) == grpc.StatusCode.UNAVAILABLE
    wait_until(
        lambda: sidecar.metric("mlwarden_sidecar_upstream_errors_total", reason="connect") == 1,
        what="the failed connection counted",
    )
    assert json.loads(requests.get(f"{sidecar.admin_url}/readyz", timeout=5).text)["ready"]
