"""The capture worker's metrics, relayed to the proxy's /metrics as periodic deltas.

The worker process counts in a `SidecarMetrics` of its own. Every report it sends what
changed since its previous report (`Deltas.take`): per counter series and histogram bucket
the increase, per gauge the new value. The proxy process adds the increases to its own
metrics (`apply`), so its counters stay monotonic across worker restarts: a dead worker's
last unreported increments are lost (at most one report interval's worth), never counted
twice.

Histograms are applied bucket by bucket; prometheus_client has no public way to add
to a bucket, so `apply` writes through its `_upper_bounds`/`_buckets`/`_sum` (checked by
tests/unit/sidecar/test_relay.py, which fails if that layout changes).
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from mlwarden.sidecar.metrics import SidecarMetrics

# (family name, sample suffix, sorted label pairs)
Key = tuple[str, str, tuple[tuple[str, str], ...]]


def _snapshot(registry: CollectorRegistry) -> dict[Key, tuple[str, float]]:
    out: dict[Key, tuple[str, float]] = {}
    for family in registry.collect():
        for sample in family.samples:
            suffix = sample.name[len(family.name) :]
            if suffix == "_created":
                continue
            labels = tuple(sorted(sample.labels.items()))
            out[(family.name, suffix, labels)] = (family.type, sample.value)
    return out


class Deltas:
    """What changed in a registry since the previous `take`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._last: dict[Key, tuple[str, float]] = {}

    def take(self) -> list[list[Any]]:
        now = _snapshot(self.registry)
        out: list[list[Any]] = []
        for key, (kind, value) in now.items():
            before = self._last.get(key, (kind, 0.0))[1]
            if kind == "gauge":
                if key not in self._last or value != before:
                    out.append([kind, key[0], key[1], dict(key[2]), value])
            elif value != before:
                out.append([kind, key[0], key[1], dict(key[2]), value - before])
        self._last = now
        return out


def _by_family(metrics: SidecarMetrics) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for value in vars(metrics).values():
        if isinstance(value, Counter | Gauge | Histogram):
            for family in value.describe():
                found[family.name] = value
    return found


# The gauges the worker owns; the others (queue depth, worker up, info) are the proxy's.
RELAYED_GAUGES = frozenset({"mlwarden_sidecar_buffer_records"})


class Applier:
    """Adds a worker's deltas to the proxy process's metrics."""

    def __init__(self, metrics: SidecarMetrics) -> None:
        self.metrics = metrics
        self._families = _by_family(metrics)

    def apply(self, deltas: list[list[Any]]) -> None:
        # Histogram buckets arrive cumulative (le=...); collect them per series first.
        buckets: dict[tuple[str, tuple[tuple[str, str], ...]], dict[float, float]] = {}
        for kind, family, suffix, labels, value in deltas:
            metric = self._families.get(family)
            if metric is None:
                continue  # a metric this proxy does not know (a newer worker): skipped
            if kind == "counter" and suffix == "_total":
                (metric.labels(**labels) if labels else metric).inc(value)
            elif kind == "gauge" and family in RELAYED_GAUGES:
                (metric.labels(**labels) if labels else metric).set(value)
            elif kind == "histogram":
                rest = {k: v for k, v in labels.items() if k != "le"}
                key = (family, tuple(sorted(rest.items())))
                if suffix == "_bucket":
                    buckets.setdefault(key, {})[float(labels["le"])] = value
                elif suffix == "_sum":
                    child = metric.labels(**rest) if rest else metric
                    child._sum.inc(value)
        for (family, pairs), cumulative in buckets.items():
            metric = self._families[family]
            child = metric.labels(**dict(pairs)) if pairs else metric
            # An unchanged bucket is absent from the deltas: its cumulative increase is 0
            # (only a prefix of the buckets can be unchanged when a later one grew).
            previous = 0.0
            for i, bound in enumerate(child._upper_bounds):
                total = cumulative.get(bound, 0.0)
                if total > previous:
                    child._buckets[i].inc(total - previous)
                    previous = total
