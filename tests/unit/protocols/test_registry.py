"""The adapter registry, protocol auto-detection and `parse_exchange`."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from mlwarden.protocols import (
    ADAPTERS,
    UnrecognizedProtocol,
    detect_protocol,
    is_inference,
    json_paths,
    openai,
    parse_exchange,
    v1,
    v2,
    v2_grpc,
)
from mlwarden.records import ProtocolError
from mlwarden.spec import PROTOCOLS, ObservedModelSpec

MakeSpec = Callable[..., ObservedModelSpec]

V2_BODY = b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1.5]}]}'
V1_BODY = b'{"instances": [[1.5, 2.0]]}'
CHAT_BODY = b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "Hello!"}]}'


def test_registry_covers_every_spec_protocol() -> None:
    expected = {
        "v2": v2.parse,
        "v2-grpc": v2_grpc.parse,
        "v1": v1.parse,
        "openai": openai.parse,
        "json": json_paths.parse,
    }
    assert expected == ADAPTERS
    assert set(PROTOCOLS) == {"auto", *ADAPTERS}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/v2/models/iris/infer", "v2"),
        ("/v2/models/iris/versions/1/infer", "v2"),
        ("/v2/models/iris/infer/", "v2"),
        ("/v1/chat/completions", "openai"),
        ("/v1/completions", "openai"),
        ("/openai/v1/chat/completions?api-version=2024-06-01", "openai"),
        ("/v1/models/iris:predict", "v1"),
        ("/v1/models/half_plus_three/versions/1:predict", "v1"),
    ],
)
def test_detect_by_path_before_body(path: str, expected: str) -> None:
    # The body is deliberately of another protocol: the path wins.
    assert detect_protocol(path, b'{"prompt": "x", "instances": []}', None) == expected


@pytest.mark.parametrize(
    ("request_body", "expected"),
    [
        (V2_BODY, "v2"),
        (V1_BODY, "v1"),
        (b'{"inputs": {"tag": ["foo", "bar"]}}', "v1"),
        (b'{"inputs": [[1, 2]]}', "v1"),
        (CHAT_BODY, "openai"),
        (b'{"model": "gpt-3.5-turbo-instruct", "prompt": "Say this is a test"}', "openai"),
    ],
)
def test_detect_by_body(request_body: bytes, expected: str) -> None:
    assert detect_protocol("/predict", request_body, None) == expected


def test_key_inside_a_string_value_does_not_count() -> None:
    request = json.dumps({"text": 'send {"instances": []} please'}).encode()

    assert detect_protocol("/score", request, None) is None


def test_json_only_when_the_spec_says_what_to_read(make_spec: MakeSpec) -> None:
    request = b'{"amount": 3}'

    assert detect_protocol("/score", request, None) is None
    assert detect_protocol("/score", request, make_spec()) is None
    assert detect_protocol("/score", request, make_spec(["amount"])) == "json"
    assert detect_protocol("/score", request, make_spec(json={"prediction": "score"})) == "json"


def test_explicit_json_paths_win_over_sniffing(make_spec: MakeSpec) -> None:
    spec = make_spec(json={"features": {"prompt": "prompt"}})

    assert detect_protocol("/v1/completions", b'{"prompt": "hi"}', spec) == "json"


def test_parse_exchange_auto_reports_the_protocol_used() -> None:
    response = b'{"outputs": [{"name": "y", "shape": [1], "datatype": "FP32", "data": [0.5]}]}'

    name, records = parse_exchange("auto", "/v2/models/m/infer", V2_BODY, response, None)

    assert name == "v2"
    assert records[0].features == {"x": 1.5} and records[0].outputs == {"y": 0.5}


def test_parse_exchange_explicit_protocol_ignores_the_path() -> None:
    name, records = parse_exchange("v1", "/v2/models/m/infer", V1_BODY, b"", None)

    assert name == "v1"
    assert records[0].features == {"f0": 1.5, "f1": 2.0}


def test_parse_exchange_unrecognized() -> None:
    with pytest.raises(UnrecognizedProtocol, match="no protocol recognised for /score"):
        parse_exchange("auto", "/score?token=secret", b'{"amount": 3}', b"", None)
    assert issubclass(UnrecognizedProtocol, ProtocolError)


def test_parse_exchange_unknown_name_lists_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown protocol 'grpc'; known protocols: auto, v2, v2-"):
        parse_exchange("grpc", "/", V2_BODY, b"", None)


def test_parse_exchange_passes_protocol_errors_through() -> None:
    with pytest.raises(ProtocolError, match=r"inputs\[0\]\.name: required field is missing"):
        parse_exchange("auto", "/v2/models/m/infer", b'{"inputs": [{"shape": [1]}]}', b"", None)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v2/health/live"),
        ("GET", "/v2/health/ready"),
        ("GET", "/v2"),
        ("GET", "/v2/models/iris"),
        ("GET", "/v2/models/iris/ready"),
        ("GET", "/v2/models/iris/versions/1/ready"),
        ("GET", "/v2/models/iris/config"),
        ("GET", "/v2/models/iris/stats"),
        ("GET", "/v1/models"),
        ("GET", "/v1/models/iris"),
        ("GET", "/v1/models/iris/metadata"),
        ("HEAD", "/v2/health/ready"),
        ("OPTIONS", "/v2/models/iris/infer"),
        ("PUT", "/v2/models/iris/infer"),
        ("DELETE", "/v2/models/iris"),
        ("POST", "/v2/repository/index"),
        ("POST", "/v2/repository/models/iris/load"),
        ("POST", "/v2/repository/models/iris/unload"),
        ("POST", "/v2/systemsharedmemory/region/r0/register"),
        ("POST", "/v2/cudasharedmemory/unregister"),
        ("POST", "/v2/trace/setting"),
        ("POST", "/v2/models/iris/trace/setting"),
        ("POST", "/v2/logging"),
        ("POST", "/v2/repository/index/?x=1"),
    ],
)
def test_requests_that_are_not_inferences(method: str, path: str) -> None:
    assert not is_inference("auto", method, path)
    assert not is_inference("v2", method, path)


@pytest.mark.parametrize(
    "path",
    [
        "/v2/models/iris/infer",
        "/v2/models/iris/versions/1/infer",
        "/v1/models/iris:predict",
        "/v1/chat/completions",
        "/v1/completions",
        "/predict",
        "/",
        "/v2/models/logging/infer",
    ],
)
def test_posts_are_inferences(path: str) -> None:
    assert is_inference("auto", "POST", path)
    assert is_inference("json", "POST", path)


def test_grpc_services_that_are_not_inferences() -> None:
    for path in (
        "/grpc.health.v1.Health/Check",
        "/grpc.health.v1.Health/Watch",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        "/inference.model_repository.ModelRepositoryService/RepositoryIndex",
        "/inference.GRPCInferenceService/ServerLive",
    ):
        assert not is_inference("v2-grpc", "POST", path)
    # Another service's method is an inference this sidecar cannot read.
    assert is_inference("v2-grpc", "POST", "/tensorflow.serving.PredictionService/Predict")
