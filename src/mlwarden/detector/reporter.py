"""Writing alert state into the ObservedModel's status: the Kubernetes API is the bus.

The detector writes `status.alerts` (the whole list of active alerts, so a JSON
merge patch replaces it exactly) and `status.detector` (which reference is in
force, when it last wrote, the revisions serving and the latest signals) through the
status subresource. What triggers a write is `should_write` (alert state changes,
reference changes, revision changes, and a bounded heartbeat); writes go out at most
one per `min_interval` seconds (`write_interval`:
5 s, or the evaluation interval when that is shorter): changes that come faster
are coalesced into the next write. A failed write is retried with
backoff until it lands or a newer state replaces it.

Where and as whom: the `mlwarden.kube` client given. In a cluster, the API server from
KUBERNETES_SERVICE_HOST/PORT with the pod's projected service-account token (re-read when
the kubelet rotates it) and CA; outside, `--report-to URL` (with an optional bearer token
or token file), which is also how the tests point it at an emulator.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp

from mlwarden import backoff
from mlwarden.kube import Kube, in_cluster, path
from mlwarden.spec import MAX_STATUS_ALERTS, MAX_STATUS_REVISIONS, MAX_STATUS_SIGNALS
from mlwarden.timestamps import format_time

log = logging.getLogger(__name__)


MAX_WRITE_INTERVAL = 5.0


def write_interval(evaluation_interval: float) -> float:
    """Least time between two status writes (pure).

    Alert state changes only at an evaluation, so with the default 30 s interval the
    5 s cap never delays a change; with a shorter interval (a demo, a latency-critical
    model) a change is written at the next evaluation's pace instead of up to 5 s late.
    """
    return max(0.0, min(MAX_WRITE_INTERVAL, evaluation_interval))


def status_path(namespace: str, name: str) -> str:
    return path("ObservedModel", namespace, name, "status")


def status_patch(
    alerts: list[dict[str, Any]],
    reference: dict[str, Any],
    now: float,
    *,
    revisions: list[dict[str, Any]] | None = None,
    signals: list[dict[str, Any]] | None = None,
    labels: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The merge patch one write sends (pure).

    At most MAX_STATUS_ALERTS alerts (the CRD's maxItems: a longer list would be refused and
    the write lost); the rest stay in the detector's metrics and log. `revisions` and
    `signals` (status.detector, each list replaced whole) likewise within their bounds;
    `labels` (label coverage, detector/labels.py: bounded lists) as given. None leaves them
    out of the patch.
    """
    updated = format_time(datetime.fromtimestamp(now, UTC))
    shown = alerts[:MAX_STATUS_ALERTS]
    detector: dict[str, Any] = {"reference": reference, "updated": updated}
    if revisions is not None:
        detector["revisions"] = revisions[:MAX_STATUS_REVISIONS]
    if signals is not None:
        detector["signals"] = signals[:MAX_STATUS_SIGNALS]
    if labels is not None:
        detector["labels"] = labels
    return {"status": {"alerts": shown, "detector": detector}}


HEARTBEAT_SECONDS = 60.0


def should_write(
    *,
    transitions: bool,
    reference_changed: bool,
    revisions_changed: bool,
    payload_changed: bool,
    alert_active: bool,
    since_last_event: float,
    since_last_write: float,
    verify_within: float,
) -> bool:
    """The detector's write policy (pure; CONTRACT17): bounded API cost.

    Write on alert transitions, reference changes and changes of the revision set, a role or
    a canary verdict (`revisions_changed`); besides those, a heartbeat at most every 60 s
    while an alert is active or within `verify_within` of the last alert transition or
    revision-set change (what the operator's verification of an action reads), and only when
    the payload changed. A healthy idle model writes nothing.
    """
    if transitions or reference_changed or revisions_changed:
        return True
    if not payload_changed:
        return False
    watched = alert_active or since_last_event <= verify_within
    return watched and since_last_write >= HEARTBEAT_SECONDS


class StatusWriter:
    def __init__(
        self,
        kube: Kube,
        *,
        namespace: str,
        name: str,
        min_interval: float = MAX_WRITE_INTERVAL,
        on_result: Callable[[str], None] | None = None,
    ) -> None:
        self.kube = kube
        self.path = status_path(namespace, name)
        self.min_interval = min_interval
        self.on_result = on_result  # called with "ok" or "error" after every attempt
        self._desired: dict[str, Any] | None = None
        self._written: dict[str, Any] | None = None
        self._last_write = 0.0
        self._task: asyncio.Task[None] | None = None
        self.writes_ok = 0
        self.writes_failed = 0
        self.last_error: str | None = None

    @classmethod
    def in_cluster(
        cls, *, namespace: str, name: str, min_interval: float = MAX_WRITE_INTERVAL
    ) -> StatusWriter | None:
        """With the pod's service account; None outside a pod."""
        credentials = in_cluster()
        if credentials is None:
            return None
        return cls(Kube(credentials, timeout=10.0), namespace=namespace, name=name,
                   min_interval=min_interval)  # fmt: skip

    async def write_alerts(
        self,
        alerts: list[dict[str, Any]],
        *,
        reference: dict[str, Any],
        revisions: list[dict[str, Any]] | None = None,
        signals: list[dict[str, Any]] | None = None,
        labels: dict[str, Any] | None = None,
    ) -> str:
        """Record the desired status; it is written now or at the next allowed moment."""
        self._desired = {
            "alerts": alerts,
            "reference": reference,
            "revisions": revisions,
            "signals": signals,
            "labels": labels,
        }
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._flush(), name="mlwarden-status-writer")
        return "queued"

    async def wait_idle(self) -> None:
        """For tests and shutdown: wait until the latest desired state is written."""
        if self._task is not None:
            await asyncio.shield(self._task)

    async def _flush(self) -> None:
        failures = 0
        while self._desired is not None and self._desired != self._written:
            wait = self._last_write + self.min_interval - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            desired = self._desired
            patch = status_patch(
                desired["alerts"],
                desired["reference"],
                time.time(),
                revisions=desired["revisions"],
                signals=desired["signals"],
                labels=desired["labels"],
            )
            try:
                await self._patch(patch)
            except (aiohttp.ClientError, TimeoutError, OSError, RuntimeError) as exc:
                self.writes_failed += 1
                self.last_error = str(exc)
                if self.on_result is not None:
                    self.on_result("error")
                wait = backoff.exponential(failures, base=1.0, cap=30.0)
                log.warning("status write failed (retrying in %.0fs): %s", wait, exc)
                await asyncio.sleep(wait)
                failures += 1
                continue
            self._written = desired
            self._last_write = time.monotonic()
            self.writes_ok += 1
            if self.on_result is not None:
                self.on_result("ok")
            failures = 0

    async def _patch(self, patch: dict[str, Any]) -> None:
        await self.kube.merge_patch(self.path, patch)

    async def close(self) -> None:
        try:
            async with asyncio.timeout(5.0):
                await self.wait_idle()
        except TimeoutError:
            log.warning("shutdown: latest alert state not written to the ObservedModel")
        if self._task is not None and not self._task.done():
            self._task.cancel()
        await self.kube.close()
