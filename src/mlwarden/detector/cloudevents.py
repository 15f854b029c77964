"""KServe's payload logger: CloudEvents in binary mode, request and response joined by id.

KServe's `logger` (InferenceService `spec.predictor.logger.url`) posts each
request and each response as its own CloudEvent: the body is the payload as the
model saw it, and the headers carry `ce-type`
(`org.kubeflow.serving.inference.request` / `.response`) and `ce-id`, the same
id on both halves. Pointing that URL at the detector is enough; no sidecar.

`CloudEventJoiner` holds the first half until the second arrives, bounded in
count and age (a half that never finds its partner is dropped and counted).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

REQUEST_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE = "org.kubeflow.serving.inference.response"
MAX_PENDING = 10_000
MAX_AGE_SECONDS = 60.0


@dataclass(frozen=True)
class JoinedExchange:
    id: str
    request: bytes
    response: bytes
    path: str


class CloudEventError(ValueError):
    pass


class CloudEventJoiner:
    def __init__(self, *, max_pending: int = MAX_PENDING, max_age: float = MAX_AGE_SECONDS) -> None:
        self.max_pending = max_pending
        self.max_age = max_age
        self._pending: OrderedDict[str, tuple[str, bytes, float, str]] = OrderedDict()
        self.expired = 0

    def offer(
        self, *, ce_type: str, ce_id: str, body: bytes, now: float, path: str = ""
    ) -> JoinedExchange | None:
        """Take one event; return the exchange once both halves are in."""
        if ce_type.endswith(".request"):
            half = "request"
        elif ce_type.endswith(".response"):
            half = "response"
        else:
            raise CloudEventError(
                f"ce-type {ce_type!r}: expected {REQUEST_TYPE} or {RESPONSE_TYPE}"
            )
        if not ce_id:
            raise CloudEventError("ce-id header is missing: request and response cannot be joined")
        self._expire(now)
        other = self._pending.pop(ce_id, None)
        if other is None or other[0] == half:
            self._pending[ce_id] = (half, body, now, path)
            while len(self._pending) > self.max_pending:
                self._pending.popitem(last=False)
                self.expired += 1
            return None
        _, other_body, _, other_path = other
        request, response = (body, other_body) if half == "request" else (other_body, body)
        return JoinedExchange(ce_id, request, response, path if half == "request" else other_path)

    def _expire(self, now: float) -> None:
        while self._pending:
            _, (_, _, at, _) = next(iter(self._pending.items()))
            if now - at <= self.max_age:
                break
            self._pending.popitem(last=False)
            self.expired += 1

    def __len__(self) -> int:
        return len(self._pending)
