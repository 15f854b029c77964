"""The gRPC listener's pure parts: metadata forwarded, status mapping, flags and their errors."""

from __future__ import annotations

import grpc
import pytest

from mlwarden import cli
from mlwarden.sidecar.config import SidecarConfig, grpc_target
from mlwarden.sidecar.grpc_proxy import HTTP_STATUS, UNARY_METHODS, forwarded


def test_the_clients_metadata_is_forwarded_without_the_transports_own() -> None:
    metadata = [
        (":authority", "model:8001"),
        ("user-agent", "grpc-python/1.85"),
        ("grpc-accept-encoding", "identity,gzip"),
        ("te", "trailers"),
        ("content-type", "application/grpc"),
        ("x-request-id", "r-1"),
        ("authorization", "Bearer abc"),
        ("trace-bin", b"\x00\x01"),
    ]
    assert forwarded(metadata) == [
        ("x-request-id", "r-1"),
        ("authorization", "Bearer abc"),
        ("trace-bin", b"\x00\x01"),
    ]
    assert forwarded(None) == []


def test_every_grpc_status_has_the_http_status_google_rpc_documents() -> None:
    assert set(HTTP_STATUS) == set(grpc.StatusCode)
    assert all(100 <= s <= 599 for s in HTTP_STATUS.values())  # what the detector accepts
    assert HTTP_STATUS[grpc.StatusCode.OK] == 200
    assert HTTP_STATUS[grpc.StatusCode.NOT_FOUND] == 404
    assert HTTP_STATUS[grpc.StatusCode.UNAVAILABLE] == 503
    assert HTTP_STATUS[grpc.StatusCode.DEADLINE_EXCEEDED] == 504


def test_model_stream_infer_is_the_one_v2_method_not_served_as_unary() -> None:
    assert "/inference.GRPCInferenceService/ModelInfer" in UNARY_METHODS
    assert "/inference.GRPCInferenceService/ModelStreamInfer" not in UNARY_METHODS


@pytest.mark.parametrize(
    ("value", "target"),
    [
        ("127.0.0.1:8081", "127.0.0.1:8081"),
        ("http://127.0.0.1:8081", "127.0.0.1:8081"),
        ("http://127.0.0.1:8081/", "127.0.0.1:8081"),
        ("grpc://model:9000", "model:9000"),
        ("[::1]:8081", "[::1]:8081"),
    ],
)
def test_grpc_targets(value: str, target: str) -> None:
    assert grpc_target(value, what="--grpc-upstream") == target


@pytest.mark.parametrize("value", ["8081", "model", "http://m:81/v2", ":81", "m:0", "m:port"])
def test_bad_grpc_targets_are_named(value: str) -> None:
    with pytest.raises(ValueError, match="--grpc-upstream: expected HOST:PORT"):
        grpc_target(value, what="--grpc-upstream")


def config_for(*extra: str) -> SidecarConfig:
    argv = ["sidecar", "--listen", "127.0.0.1:8000", "--upstream", "http://127.0.0.1:8080", *extra]
    return cli._sidecar_config(cli.build_parser().parse_args(argv))


def test_grpc_flags_and_their_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    c = config_for("--grpc-listen", ":8001", "--grpc-upstream", "127.0.0.1:8081")
    assert (c.grpc_listen, c.grpc_upstream) == (("0.0.0.0", 8001), "127.0.0.1:8081")
    monkeypatch.setenv("MLWARDEN_GRPC_LISTEN", "127.0.0.1:9001")
    monkeypatch.setenv("MLWARDEN_GRPC_UPSTREAM", "127.0.0.1:9081")
    assert config_for().grpc_listen == ("127.0.0.1", 9001)
    monkeypatch.delenv("MLWARDEN_GRPC_LISTEN")
    monkeypatch.delenv("MLWARDEN_GRPC_UPSTREAM")
    # What the operator injects for spec.protocol v2-grpc: --listen is the gRPC listener.
    monkeypatch.setenv("MLWARDEN_PROTOCOL", "v2-grpc")
    c = config_for()
    assert c.protocol == "v2-grpc" and c.grpc_listen is None


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--grpc-listen", ":8001"], "--grpc-listen and --grpc-upstream: give both"),
        (["--grpc-upstream", "127.0.0.1:8081"], "--grpc-listen and --grpc-upstream: give both"),
        (["--grpc-listen", ":8001", "--grpc-upstream", "8081"], "--grpc-upstream: expected"),
        (
            ["--protocol", "v2-grpc", "--grpc-listen", ":8001", "--grpc-upstream", "m:81"],
            "--grpc-listen: with --protocol v2-grpc, --listen is already the gRPC listener",
        ),
        (["--grpc-listen", "8001", "--grpc-upstream", "m:81"], "--grpc-listen: expected HOST:PORT"),
    ],
)
def test_bad_grpc_flags_exit_2_with_the_reason(
    extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["sidecar", "--listen", "127.0.0.1:8000", "--upstream", "http://127.0.0.1:8080", *extra]
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err
