"""The capture worker's metrics, as deltas, land in the proxy's metrics exactly."""

from __future__ import annotations

import random

from mlwarden.sidecar.metrics import SidecarMetrics
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
