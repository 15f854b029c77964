"""The capture worker's metrics, as deltas, land in the proxy's metrics exactly; and capture
off's batches (`CaptureProcessor.process_all`, written through the same histogram internals)
count exactly what one exchange at a time counts."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlwarden.sidecar.capture import CaptureProcessor, Exchange
from mlwarden.sidecar.metrics import DURATION_BUCKETS, OVERHEAD_BUCKETS, SidecarMetrics
from mlwarden.sidecar.relay import Applier, Deltas


def samples(metrics: SidecarMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in metrics.registry.collect()
        for s in family.samples
        if not s.name.endswith("_created")
        and family.name
        not in (
            "mlwarden_sidecar_queue_depth",
            "mlwarden_sidecar_queue_bytes",
            "mlwarden_sidecar_capture_worker_up",
        )
    }


def test_deltas_reproduce_the_workers_metrics_across_reports_and_workers() -> None:
    rng = random.Random(7)
    proxy = SidecarMetrics()
    proxy.client_disconnects.inc(2)  # the proxy's own counts are left alone
    applier = Applier(proxy)
    totals = SidecarMetrics()  # what all workers together counted
    for _worker in range(2):  # a restart: a fresh registry, counting from zero again
        worker = SidecarMetrics()
        deltas = Deltas(worker.registry)
        for _report in range(3):
            for m in (worker, totals):
                m.requests.labels("2xx").inc(3)
                m.records_dropped.labels("retries_exhausted").inc(5)
                m.buffer_records.set(17)
            for _ in range(50):
                value = rng.expovariate(300)
                worker.request_duration.observe(value)
                totals.request_duration.observe(value)
            worker.exchanges_captured.labels("v2").inc()
            totals.exchanges_captured.labels("v2").inc()
            applier.apply(deltas.take())
        assert deltas.take() == []  # nothing new, nothing sent
    totals.client_disconnects.inc(2)
    got, want = samples(proxy), samples(totals)
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert abs(got[key] - value) < 1e-9, (key, got[key], value)
    assert proxy.registry.get_sample_value("mlwarden_sidecar_request_duration_seconds_count") == 300


def test_the_proxys_own_gauges_are_not_overwritten() -> None:
    proxy = SidecarMetrics()
    proxy.capture_worker_up.set(1)
    proxy.queue_depth.set(42)
    worker = SidecarMetrics()
    Applier(proxy).apply(Deltas(worker.registry).take())
    assert proxy.registry.get_sample_value("mlwarden_sidecar_capture_worker_up") == 1
    assert proxy.registry.get_sample_value("mlwarden_sidecar_queue_depth") == 42


# Bucket bounds themselves (a value on a bound counts in that bucket), around them, and any.
_ON_BOUNDS = st.sampled_from([*DURATION_BUCKETS, *OVERHEAD_BUCKETS, 0.0])
_SECONDS = st.one_of(
    _ON_BOUNDS,
    _ON_BOUNDS.map(lambda b: b * (1 + 1e-12)),
    st.floats(min_value=0.0, max_value=60.0),
)
_EXCHANGES = st.builds(
    Exchange,
    method=st.sampled_from(["POST", "GET"]),
    path=st.sampled_from(["/v2/models/m/infer", "/v2/health/ready", "/v2/repository/index"]),
    status=st.sampled_from([101, 200, 204, 404, 502, 504]),
    started_at=st.just(0.0),
    total_seconds=_SECONDS,
    upstream_seconds=_SECONDS,
    overhead_seconds=st.one_of(st.none(), _SECONDS),
    skip=st.one_of(st.none(), st.sampled_from(["sampled_out", "no_manifest", "body_too_large"])),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_EXCHANGES, max_size=40))
def test_a_batch_counts_exactly_what_one_at_a_time_counts(exchanges: list[Exchange]) -> None:
    one, batch = SidecarMetrics(), SidecarMetrics()
    for metrics in (one, batch):
        processor = CaptureProcessor(
            metrics=metrics, sink=None, protocol="v2", spec=None, max_body_bytes=1 << 20
        )
        if metrics is one:
            for exchange in exchanges:
                processor.process(exchange)
        else:
            processor.process_all(exchanges)
    a, b = samples(one), samples(batch)
    assert a.keys() == b.keys()
    for key, value in a.items():
        assert b[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
