"""Pushing incidents to Alertmanager (`MLWARDEN_ALERTMANAGER_URL`, `--alertmanager-url`).

Each ObservedModel's incidents become alerts of Alertmanager's v2 API, `POST
/api/v2/alerts` (the shape is `react.notifications.alertmanager_alert`). Routing, grouping,
silences, inhibition and the receivers (Slack, PagerDuty, Opsgenie, email) are then
Alertmanager's, configured where a Kubernetes shop already configures them.

Alertmanager's contract with a client, as Prometheus keeps it:

- **Re-send while firing.** A firing alert is sent with `endsAt` `ttl` ahead, and again
  every `resend` seconds (MLWARDEN_ALERTMANAGER_RESEND_SECONDS, 60; in practice at the next
  diagnosis pass after that, every MLWARDEN_RESPOND_INTERVAL while an alert is active), long
  before `endsAt`: `ttl` is four times the longer of the two. An operator that stops (or
  loses Alertmanager) therefore lets its alerts resolve by themselves within `ttl` instead
  of leaving them firing forever. A changed annotation (a new action, a verification) is sent
  at once.
- **Resolve with `endsAt`.** An incident that resolved is sent once with `endsAt` set to
  when it resolved; so is the old alert when an incident's identifying labels changed (its
  severity rose, or its suspect became known): the new labels are a new alert.
- **Every replica.** Alertmanager replicas gossip notifications, not alerts: a client sends
  each alert to every replica. The setting takes several URLs, separated by commas.

A push that fails is retried within the pass (0.5 s, 1 s; three attempts); the next pass
sends again what is firing. What was sent lives in this process only: a restarted operator
sends every firing incident again at its first pass (Alertmanager deduplicates by labels) and
the resolved ones of the last `ttl` once more.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp

from mlwarden import backoff
from mlwarden.operator.metrics import METRICS
from mlwarden.operator.notify import excerpt
from mlwarden.react.incidents import Incident
from mlwarden.react.notifications import alertmanager_alert, resolved_alert
from mlwarden.timestamps import parse_time

log = logging.getLogger(__name__)

PATH: Final = "/api/v2/alerts"
ATTEMPTS: Final = 3
TIMEOUT_SECONDS: Final = 5.0


@dataclass
class _Sent:
    alert: dict[str, Any]
    at: datetime


@dataclass
class Alertmanager:
    """The pusher for one operator process: the URLs, and what it sent last per incident."""

    urls: tuple[str, ...]
    resend_seconds: float = 60.0
    pass_seconds: float = 30.0  # how often a pass runs while an alert is active
    sent: dict[tuple[str, str, str], _Sent] = field(default_factory=dict)
    resolved: dict[tuple[str, str, str], datetime] = field(default_factory=dict)
    failing: set[str] = field(default_factory=set)

    @property
    def ttl_seconds(self) -> float:
        return 4 * max(self.resend_seconds, self.pass_seconds)

    def due(
        self,
        *,
        namespace: str,
        name: str,
        incidents: Sequence[Incident],
        top: Mapping[str, Any] | None,
        actions: Mapping[str, Sequence[Mapping[str, Any]]],
        now: datetime,
    ) -> list[dict[str, Any]]:
        """The alerts to send now for one model's incidents (and records them as sent)."""
        out: list[dict[str, Any]] = []
        ttl = self.ttl_seconds
        for incident in incidents:
            key = (namespace, name, incident.id)
            if not incident.firing:
                ended = parse_time(incident.resolved) or now
                if key in self.resolved or now - ended > timedelta(seconds=ttl):
                    continue
            alert = alertmanager_alert(
                incident=incident,
                namespace=namespace,
                name=name,
                top=top,
                actions=actions.get(incident.id, ()),
                now=now,
                ttl_seconds=ttl,
            )
            before = self.sent.get(key)
            if before is not None and before.alert["labels"] != alert["labels"]:
                out.append(resolved_alert(before.alert, now=now))
                before = None
            if incident.firing:
                fresh = (
                    before is not None
                    and before.alert["annotations"] == alert["annotations"]
                    and now - before.at < timedelta(seconds=self.resend_seconds)
                )
                if fresh:
                    continue
                self.sent[key] = _Sent(alert, now)
            else:
                self.sent.pop(key, None)
                self.resolved[key] = now
            out.append(alert)
        # Forget what ended long ago.
        for key, when in list(self.resolved.items()):
            if now - when > timedelta(seconds=2 * ttl):
                del self.resolved[key]
        return out

    async def push(self, alerts: Sequence[Mapping[str, Any]]) -> list[str]:
        """POST `alerts` to every URL; what failed, one line per URL (empty: all sent)."""
        if not alerts:
            return []
        failures = []
        timeout = aiohttp.ClientTimeout(total=TIMEOUT_SECONDS)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            for url in self.urls:
                problem = await _post(http, url.rstrip("/") + PATH, list(alerts))
                METRICS.notifications.labels("alertmanager", "failed" if problem else "sent").inc()
                if problem is None:
                    if url in self.failing:
                        log.info("Alertmanager %s: sending again", _where(url))
                    self.failing.discard(url)
                    continue
                failures.append(f"Alertmanager {_where(url)}: {problem}")
                if url not in self.failing:
                    log.warning("%s", failures[-1])
                self.failing.add(url)
        return failures


async def _post(http: aiohttp.ClientSession, url: str, alerts: list[Any]) -> str | None:
    problem = ""
    for attempt in range(ATTEMPTS):
        try:
            async with http.post(url, json=alerts) as resp:
                if resp.status < 300:
                    return None
                body = (await resp.content.read(800)).decode("utf-8", "replace")
                problem = excerpt(f"HTTP {resp.status} {body}")
                if resp.status < 500 and resp.status != 429:
                    return problem  # a 400 says the alerts are wrong: the same again is too
        except TimeoutError:
            problem = f"no answer in {TIMEOUT_SECONDS:g}s"
        except aiohttp.ClientError as exc:
            problem = excerpt(f"{type(exc).__name__}: {exc}")
        if attempt + 1 < ATTEMPTS:
            await asyncio.sleep(backoff.exponential(attempt, base=0.5, cap=2.0))
    return problem


def _where(url: str) -> str:
    """The URL without user information (a password) and path."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")
