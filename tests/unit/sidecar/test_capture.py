"""Capture queue bounds, body decoding and the exchange → records mapping."""

from __future__ import annotations

import gzip
import json
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlwarden.sidecar.capture import (
    BodyDecodeError,
    CaptureProcessor,
    CaptureQueue,
    Exchange,
    RequestIds,
    decode_body,
    describe_exchange,
    exchange_frame,
    read_exchange,
)
from mlwarden.sidecar.metrics import SidecarMetrics
from mlwarden.spec import parse_observed_model

V2_REQUEST = json.dumps(
    {
        "id": "abc",
        "inputs": [
            {"name": "x", "shape": [2, 2], "datatype": "FP64", "data": [1.0, 2.0, 3.0, 4.0]}
        ],
    }
).encode()
V2_RESPONSE = json.dumps(
    {
        "id": "abc",
        "outputs": [{"name": "predict", "shape": [2], "datatype": "INT64", "data": [0, 1]}],
    }
).encode()


def exchange(**kw: object) -> Exchange:
    base: dict[str, object] = dict(
        method="POST",
        path="/v2/models/m/infer",
        status=200,
        started_at=1.0,
        total_seconds=0.002,
        upstream_seconds=0.0015,
        request_body=V2_REQUEST,
        response_body=V2_RESPONSE,
    )
    base.update(kw)
    return Exchange(**base)  # type: ignore[arg-type]


def test_queue_is_bounded_by_count() -> None:
    q = CaptureQueue(max_items=3, max_bytes=1 << 20)
    assert [q.offer(exchange()) for _ in range(5)] == [True, True, True, False, False]
    assert len(q) == 3
    assert q.take() is not None
    assert q.offer(exchange())


def test_queue_is_bounded_by_bytes_and_gives_them_back() -> None:
    size = len(V2_REQUEST) + len(V2_RESPONSE)
    q = CaptureQueue(max_items=100, max_bytes=size * 2)
    assert q.offer(exchange()) and q.offer(exchange())
    assert not q.offer(exchange())
    # An exchange without bodies (sampled out) costs no bytes and still fits.
    assert q.offer(exchange(request_body=None, response_body=None, skip="sampled_out"))
    q.take()
    assert q.bytes == size
    assert q.offer(exchange())


@given(st.binary(max_size=4096))
def test_gzip_and_deflate_round_trip(data: bytes) -> None:
    assert decode_body(gzip.compress(data), "gzip", limit=8192) == data
    assert decode_body(zlib.compress(data), "deflate", limit=8192) == data
    assert decode_body(data, None, limit=8192) == data
    assert decode_body(data, "identity", limit=8192) == data


def test_decompression_bomb_is_refused_without_inflating_it() -> None:
    bomb = gzip.compress(b"\0" * (50 << 20))  # 50 MB of zeros in ~50 KB
    assert len(bomb) < 100_000
    with pytest.raises(BodyDecodeError, match="expands beyond"):
        decode_body(bomb, "gzip", limit=1 << 20)


@pytest.mark.parametrize(("body", "encoding"), [(b"not gzip", "gzip"), (b"x", "br")])
def test_undecodable_bodies_raise(body: bytes, encoding: str) -> None:
    with pytest.raises(BodyDecodeError):
        decode_body(body, encoding, limit=1024)


def test_describe_a_v2_batch() -> None:
    spec = parse_observed_model(
        {
            "apiVersion": "mlwarden.io/v1alpha1",
            "kind": "ObservedModel",
            "metadata": {"name": "m"},
            "spec": {
                "target": {"deployment": "m"},
                "features": [{"name": "a", "type": "numeric"}, {"name": "b", "type": "numeric"}],
            },
        }
    ).spec
    d = describe_exchange(
        exchange(), protocol="auto", spec=spec, max_body_bytes=1 << 20, ids=RequestIds()
    )
    assert d.protocol == "v2" and d.dropped is None
    assert d.request["id"] == "abc" and d.request["rows"] == 2
    assert d.request["latencySeconds"] == 0.0015
    assert [r["features"] for r in d.records] == [{"a": 1.0, "b": 2.0}, {"a": 3.0, "b": 4.0}]
    assert [r["row"] for r in d.records] == [0, 1]
    assert {r["id"] for r in d.records} == {"abc"}


def test_header_request_id_wins_and_missing_ids_are_generated_uniquely() -> None:
    ids = RequestIds()
    d = describe_exchange(
        exchange(request_id="hdr-1"), protocol="v2", spec=None, max_body_bytes=1 << 20, ids=ids
    )
    assert {r["id"] for r in d.records} == {"hdr-1"}
    body = json.dumps({"instances": [[1, 2]]}).encode()
    made = {
        describe_exchange(
            exchange(request_body=body, response_body=b"{}"),
            protocol="v1",
            spec=None,
            max_body_bytes=1 << 20,
            ids=ids,
        ).request["id"]
        for _ in range(100)
    }
    assert len(made) == 100


@pytest.mark.parametrize(
    ("kw", "reason"),
    [
        ({"request_body": b"{not json"}, "unparseable"),
        ({"request_body": b'{"hello": 1}', "path": "/predict"}, "unrecognized_protocol"),
        ({"request_body": b"junk", "request_encoding": "gzip"}, "decode_error"),
    ],
)
def test_bodies_that_cannot_be_captured_still_give_a_request_entry(
    kw: dict[str, object], reason: str
) -> None:
    d = describe_exchange(
        exchange(**kw), protocol="auto", spec=None, max_body_bytes=1 << 20, ids=RequestIds()
    )
    assert d.dropped == reason
    assert d.records == []
    assert d.request["dropped"] == reason and d.request["status"] == 200


class ListSink:
    def __init__(self) -> None:
        self.items: list[tuple[dict[str, object], list[dict[str, object]]]] = []

    def add(self, request: dict[str, object], records: list[dict[str, object]]) -> None:
        self.items.append((request, records))


def test_processor_accounts_for_every_exchange() -> None:
    metrics = SidecarMetrics()
    sink = ListSink()
    processor = CaptureProcessor(
        metrics=metrics, sink=sink, protocol="auto", spec=None, max_body_bytes=1 << 20
    )
    for ex in (
        exchange(),
        exchange(request_body=b"{bad"),
        exchange(request_body=None, response_body=None, skip="sampled_out"),
        exchange(request_body=None, response_body=None, status=502),
        exchange(request_body=None, response_body=None, skip="body_too_large"),
    ):
        processor.process(ex)
    value = metrics.registry.get_sample_value
    assert value("mlwarden_sidecar_exchanges_captured_total", {"protocol": "v2"}) == 1
    assert value("mlwarden_sidecar_exchanges_dropped_total", {"reason": "unparseable"}) == 1
    assert value("mlwarden_sidecar_exchanges_dropped_total", {"reason": "body_too_large"}) == 1
    assert value("mlwarden_sidecar_exchanges_sampled_out_total") == 1
    assert value("mlwarden_sidecar_records_captured_total") == 2
    assert value("mlwarden_sidecar_requests_total", {"code_class": "2xx"}) == 4
    assert value("mlwarden_sidecar_requests_total", {"code_class": "5xx"}) == 1
    assert value("mlwarden_sidecar_request_duration_seconds_count") == 5
    # Sampled-out exchanges are not shipped; everything else gives a request entry.
    assert [req["status"] for req, _ in sink.items] == [200, 200, 502, 200]


def test_queue_counts_bytes_in_flight() -> None:
    size = len(V2_REQUEST) + len(V2_RESPONSE)
    q = CaptureQueue(max_items=100, max_bytes=size * 3)
    assert q.offer(exchange(), in_flight=size)
    assert not q.offer(exchange(), in_flight=size + 1)


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"request_body": None, "response_body": None, "skip": "sampled_out"},
        {"request_body": b"", "response_body": b"\x00" * 70_000, "request_id": "r-\u00e9"},
        {"request_body": b"x", "response_body": None, "status": 502},
        {"request_encoding": "gzip", "response_encoding": "deflate", "skip": None},
        {"path": "/inference.GRPCInferenceService/ModelInfer", "protocol": "v2-grpc"},
    ],
)
def test_an_exchange_survives_its_frame(kw: dict[str, object]) -> None:
    ex = exchange(**kw)
    data = b"".join(exchange_frame(ex))
    size = int.from_bytes(data[:4], "big")
    assert len(data) == 4 + size and data[4] == ord("X")
    assert read_exchange(data[5:]) == ex


def test_requests_that_are_not_inferences_are_counted_apart_and_not_shipped() -> None:
    metrics = SidecarMetrics()
    sink = ListSink()
    processor = CaptureProcessor(
        metrics=metrics, sink=sink, protocol="v2", spec=None, max_body_bytes=1 << 20
    )
    ready = b'{"name": "m", "ready": true}'
    for method, path in [
        ("GET", "/v2/health/ready"),
        ("GET", "/v2/models/m"),
        ("GET", "/v2/models/m/ready"),
        ("GET", "/v1/models"),
    ]:
        processor.process(exchange(method=method, path=path, request_body=b"", response_body=ready))
    processor.process(exchange(method="GET", path="/v2/health/live", request_body=None, status=502))
    grpc_live = "/inference.GRPCInferenceService/ServerLive"
    processor.process(
        exchange(path=grpc_live, request_body=b"", response_body=b"\x08\x01", protocol="v2-grpc")
    )
    processor.process(exchange())
    value = metrics.registry.get_sample_value
    assert value("mlwarden_sidecar_exchanges_not_inference_total") == 6
    assert value("mlwarden_sidecar_exchanges_captured_total", {"protocol": "v2"}) == 1
    assert (
        sum(
            value("mlwarden_sidecar_exchanges_dropped_total", {"reason": r}) or 0
            for r in ("unparseable", "unrecognized_protocol", "decode_error", "body_too_large")
        )
        == 0
    )
    assert value("mlwarden_sidecar_requests_total", {"code_class": "2xx"}) == 6
    assert [req["protocol"] for req, _ in sink.items] == ["v2"]


def test_a_grpc_exchange_is_read_with_its_own_protocol_whatever_is_configured() -> None:
    from tritonclient.grpc import service_pb2 as pb

    message = pb.ModelInferRequest(model_name="m", id="g-1")
    tensor = message.inputs.add(name="x", datatype="FP64", shape=[2])
    tensor.contents.fp64_contents.extend([1.5, 2.5])
    d = describe_exchange(
        exchange(
            path="/inference.GRPCInferenceService/ModelInfer",
            request_body=message.SerializeToString(),
            response_body=b"",
            protocol="v2-grpc",
        ),
        protocol="v2",
        spec=None,
        max_body_bytes=1 << 20,
        ids=RequestIds(),
    )
    assert d.protocol == "v2-grpc" and d.dropped is None
    assert [(r["id"], r["features"]) for r in d.records] == [
        ("g-1", {"x": 1.5}),
        ("g-1", {"x": 2.5}),
    ]
