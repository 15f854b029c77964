"""The operator's Prometheus metrics, served on MLWARDEN_METRICS_PORT (default 8081) at /metrics.

- `mlwarden_operator_reconciles_total{result}`   ok | pending | failed | error
- `mlwarden_operator_observed_models{phase}`     ObservedModels by phase, as last reconciled
- `mlwarden_operator_alert_events_total{type,event}`   alerts fired / resolved (from the detectors)
- `mlwarden_operator_reactions_total{action,result}`   reactions taken (the reaction issue)
- `mlwarden_operator_notifications_total{channel,result}`   webhook posts and Alertmanager
  pushes (channel webhook | alertmanager), by result (sent | failed | refused)
"""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, start_http_server

PHASES = ("Pending", "WarmingUp", "Observing", "Degraded", "Reacting", "Failed")


class OperatorMetrics:
    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.registry = registry
        self.reconciles = Counter(
            "mlwarden_operator_reconciles",
            "Reconciliations of ObservedModels, by result.",
            ["result"],
            registry=registry,
        )
        self.models = Gauge(
            "mlwarden_operator_observed_models",
            "ObservedModels by phase, as last reconciled.",
            ["phase"],
            registry=registry,
        )
        self.alert_events = Counter(
            "mlwarden_operator_alert_events",
            "Alerts the detectors reported fired or resolved.",
            ["type", "event"],
            registry=registry,
        )
        self.reactions = Counter(
            "mlwarden_operator_reactions",
            "Reactions taken, by action and result.",
            ["action", "result"],
            registry=registry,
        )
        self.notifications = Counter(
            "mlwarden_operator_notifications",
            "Webhook messages and Alertmanager pushes, by channel and result.",
            ["channel", "result"],
            registry=registry,
        )
        for channel in ("webhook", "alertmanager"):
            for outcome in ("sent", "failed", "refused"):
                self.notifications.labels(channel, outcome)
        for result in ("ok", "pending", "failed", "error"):
            self.reconciles.labels(result)
        for phase in PHASES:
            self.models.labels(phase)
        # phase of each ObservedModel (namespace/name) -> the gauge is recomputed from it
        self._phases: dict[str, str] = {}

    def set_phase(self, key: str, phase: str | None) -> None:
        if phase is None:
            self._phases.pop(key, None)
        else:
            self._phases[key] = phase
        for p in PHASES:
            self.models.labels(p).set(sum(1 for v in self._phases.values() if v == p))

    def serve(self, port: int) -> None:
        start_http_server(port, registry=self.registry)


METRICS = OperatorMetrics()
