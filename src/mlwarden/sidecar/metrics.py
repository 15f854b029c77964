"""The sidecar's Prometheus metrics, in one registry per sidecar instance.

Names follow Prometheus conventions (mlwarden_ prefix, base units, `_total` on
counters) and every label has bounded cardinality: status class, drop reason,
protocol; never paths or request ids. What an SRE alerts on:

- `rate(mlwarden_sidecar_records_dropped_total[5m]) > 0` — observability is losing data;
- `histogram_quantile(0.99, rate(mlwarden_sidecar_overhead_seconds_bucket[5m]))` —
  what the sidecar adds to each request as a client sees it: first request byte read ->
  first byte written to the model, plus first answer byte read -> first byte written
  to the client (a body the sidecar reads whole before passing it on is inside that
  time; `sidecar/forward.py`);
- `mlwarden_sidecar_upstream_errors_total` — the model server refusing or timing out;
- `increase(mlwarden_sidecar_capture_worker_restarts_total[15m]) > 0` — the capture worker
  process died or hung (forwarding is unaffected; what it held is counted as `worker_lost`).

The capture worker process counts in a registry of its own; its counts reach this one as
deltas every 0.2 s (`mlwarden.sidecar.relay`).
"""

from __future__ import annotations

from bisect import bisect_left

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from mlwarden import __version__

# Request and model time: from sub-millisecond models to slow LLM calls.
DURATION_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
# The proxy's own overhead: it should live in the first few buckets.
OVERHEAD_BUCKETS = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.025,
    0.1,
)

EXCHANGE_DROP_REASONS = (
    "queue_full",
    "body_too_large",
    "unparseable",
    "unrecognized_protocol",
    "decode_error",
    "no_manifest",
    "worker_lost",
)
RECORD_DROP_REASONS = (
    "buffer_full",
    "rejected",
    "unauthorized",
    "retries_exhausted",
    "worker_lost",
)
WORKER_RESTART_REASONS = ("exited", "hung")
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")


class SidecarMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.info = Gauge(
            "mlwarden_sidecar_info",
            "Sidecar build and settings (forwarder: native, the forwarding path compiled with "
            "mypyc, or python).",
            ["version", "protocol", "forwarder"],
            registry=r,
        )
        self.requests = Counter(
            "mlwarden_sidecar_requests",
            "Responses returned to clients, by status class.",
            ["code_class"],
            registry=r,
        )
        self.request_duration = Histogram(
            "mlwarden_sidecar_request_duration_seconds",
            "Time from the first request byte read to the last answer byte written.",
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.upstream_duration = Histogram(
            "mlwarden_sidecar_upstream_duration_seconds",
            "Time the model server took: first request byte written to it -> last answer "
            "byte read from it (nothing of the client's side).",
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.overhead = Histogram(
            "mlwarden_sidecar_overhead_seconds",
            "Time the proxy added to a request as a client sees it: first request byte "
            "read -> first byte written to the model, plus first answer byte read -> "
            "first byte written to the client.",
            buckets=OVERHEAD_BUCKETS,
            registry=r,
        )
        self.upstream_errors = Counter(
            "mlwarden_sidecar_upstream_errors",
            "Requests the model server did not answer, by reason (connect, timeout, protocol).",
            ["reason"],
            registry=r,
        )
        self.client_disconnects = Counter(
            "mlwarden_sidecar_client_disconnects",
            "Requests abandoned by the client before the response was complete.",
            registry=r,
        )
        self.client_errors = Counter(
            "mlwarden_sidecar_client_errors",
            "Clients cut off by a limit: body_timeout (408), too_many_connections (503).",
            ["reason"],
            registry=r,
        )
        self.exchanges_captured = Counter(
            "mlwarden_sidecar_exchanges_captured",
            "Request/response pairs parsed into records.",
            ["protocol"],
            registry=r,
        )
        self.exchanges_sampled_out = Counter(
            "mlwarden_sidecar_exchanges_sampled_out",
            "Exchanges not captured because of the sample rate.",
            registry=r,
        )
        self.exchanges_dropped = Counter(
            "mlwarden_sidecar_exchanges_dropped",
            "Exchanges served but not captured, by reason.",
            ["reason"],
            registry=r,
        )
        self.exchanges_not_inference = Counter(
            "mlwarden_sidecar_exchanges_not_inference",
            "Requests that are not inferences (health, readiness, metadata, model listings, "
            "repository calls), passed through and not captured.",
            registry=r,
        )
        self.records_captured = Counter(
            "mlwarden_sidecar_records_captured",
            "Rows parsed from captured exchanges.",
            registry=r,
        )
        self.records_shipped = Counter(
            "mlwarden_sidecar_records_shipped", "Records accepted by the collector.", registry=r
        )
        self.records_dropped = Counter(
            "mlwarden_sidecar_records_dropped",
            "Records captured but never delivered, by reason.",
            ["reason"],
            registry=r,
        )
        self.queue_depth = Gauge(
            "mlwarden_sidecar_queue_depth", "Exchanges waiting to be parsed.", registry=r
        )
        self.queue_bytes = Gauge(
            "mlwarden_sidecar_queue_bytes",
            "Body bytes held by exchanges waiting to be parsed.",
            registry=r,
        )
        self.buffer_records = Gauge(
            "mlwarden_sidecar_buffer_records", "Records waiting to be shipped.", registry=r
        )
        self.ship_requests = Counter(
            "mlwarden_sidecar_ship_requests",
            "Batches posted to the collector, by outcome "
            "(ok, retry, rejected, unauthorized, failed).",
            ["outcome"],
            registry=r,
        )
        self.ship_duration = Histogram(
            "mlwarden_sidecar_ship_duration_seconds",
            "Time to post one batch to the collector.",
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.capture_worker_up = Gauge(
            "mlwarden_sidecar_capture_worker_up",
            "1 while the capture worker process runs, 0 while it is being restarted.",
            registry=r,
        )
        self.capture_worker_restarts = Counter(
            "mlwarden_sidecar_capture_worker_restarts",
            "Capture worker processes restarted, by reason (exited, hung: no report in time).",
            ["reason"],
            registry=r,
        )
        # Pre-create every labelled series so dashboards and alerts see zeros, not gaps.
        for cls in STATUS_CLASSES:
            self.requests.labels(cls)
        for reason in EXCHANGE_DROP_REASONS:
            self.exchanges_dropped.labels(reason)
        for reason in RECORD_DROP_REASONS:
            self.records_dropped.labels(reason)
        for reason in ("connect", "timeout", "protocol"):
            self.upstream_errors.labels(reason)
        for outcome in ("ok", "retry", "rejected", "unauthorized", "failed"):
            self.ship_requests.labels(outcome)
        for reason in WORKER_RESTART_REASONS:
            self.capture_worker_restarts.labels(reason)

    def set_info(self, protocol: str, forwarder: str = "python") -> None:
        self.info.labels(__version__, protocol, forwarder).set(1)


def observe_all(histogram: Histogram, values: list[float]) -> None:
    """`histogram.observe(v)` for each of `values` (an unlabelled histogram), with one
    increment per bucket touched and one of the sum: a batch of exchanges counted at once.

    prometheus_client has no batch observe: this writes through `_upper_bounds`, `_buckets`
    and `_sum`, as `relay.Applier` does (tests/unit/sidecar/test_relay.py and
    test_flush_timer.py fail if that layout changes).
    """
    if not values:
        return
    bounds = histogram._upper_bounds
    counts = [0] * len(bounds)
    for value in values:
        if value == value:  # observe() puts a NaN in no bucket (it is <= no bound)
            counts[bisect_left(bounds, value)] += 1
    buckets = histogram._buckets
    for i, n in enumerate(counts):
        if n:
            buckets[i].inc(n)
    histogram._sum.inc(sum(values))
