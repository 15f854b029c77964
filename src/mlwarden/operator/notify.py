"""Webhook delivery: the allow-list, the pinned addresses, retries with backoff, short answers.

`deliver` posts one JSON body to each destination and says, per destination, what came of it:

- **Where it may go.** The URL is checked against the chart's allow-list
  (react/destinations.py, MLWARDEN_WEBHOOK_ALLOW) before any request: first what the URL
  alone decides, then every address its host resolves to; the request then goes to exactly
  those addresses (`_Pinned`), so a DNS answer that changes in between changes nothing. A
  refused URL is never requested: a `WebhookRefused` Warning Event says why.
- **Retries.** A connection error, a timeout, 429 or a 5xx answer is tried again after
  0.5 s, 1 s, 2 s … (`mlwarden.backoff`), at most `attempts` times (3) and
  within `budget` seconds (20) in all, each attempt with a `timeout` of 5 s; any other answer
  of 300 or more is final at once (the receiver said no, and will say it again).
- **What is kept of an answer.** At most WEBHOOK_TEXT_LIMIT (200) characters of a cleaned
  excerpt (control characters and runs of whitespace made single spaces) go into a record's
  message, status and Events; a webhook URL usually carries a secret, so only its host is ever
  named. A 2xx answer whose JSON has a `ts` (Slack's chat.postMessage, and endpoints shaped
  like it) gives the thread to reply in (`Delivery.thread`).
- **URLs from Secrets.** `reactions[].webhookSecret: {name, key}` names a key of a Secret in
  the model's namespace that holds the URL. The operator is granted no read of Secrets by the
  chart; whoever creates such a Secret grants `get` on that one Secret by name (a Role with
  `resourceNames`, bound to the operator's ServiceAccount: docs/operator.md). `secret_url`
  reads it with one GET when a message is sent, never caches it (it is the one Secret the
  operator reads: operator/cache.py caches none), and says what to grant when the API
  answers 403.

Nothing here raises for a webhook that failed: the caller records what `deliver` returns.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import ipaddress
import json
import logging
import os
import re
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from mlwarden import backoff
from mlwarden.kube import Kube, KubeError, path
from mlwarden.operator.metrics import METRICS
from mlwarden.react.destinations import (
    DestinationError,
    WebhookAllowList,
    check_destination,
    webhook_host,
)
from mlwarden.spec import Reaction

log = logging.getLogger(__name__)

WEBHOOK_TIMEOUT_SECONDS: Final = 5.0
WEBHOOK_ATTEMPTS: Final = 3
WEBHOOK_BUDGET_SECONDS: Final = 20.0
# Characters of a webhook's answer (or error) copied into a record's message and an Event.
WEBHOOK_TEXT_LIMIT: Final = 200
_RETRY_BASE: Final = 0.5
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]+")

EventPoster = Callable[[str, str, str], None]
"""(type Normal|Warning, reason, message): an Event on the ObservedModel."""


@dataclass(frozen=True)
class Destination:
    """A URL to post to, and how to name it in status (never the URL: it is a secret)."""

    url: str | None
    where: str  # "hooks.slack.com", "Secret team-hooks/url (hooks.slack.com)"
    problem: str | None = None  # it could not be had (a Secret not readable): why
    fmt: str = "slack"


@dataclass(frozen=True)
class Delivery:
    """What came of one destination: ok, or the one line saying why not."""

    where: str
    ok: bool
    detail: str = ""
    thread: str | None = None  # a Slack-style `ts` to thread the next message under


def excerpt(text: str, limit: int = WEBHOOK_TEXT_LIMIT) -> str:
    """One clean line of at most `limit` characters (copied into status and Events)."""
    flat = " ".join(_CONTROL.sub(" ", text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def host_of(url: str) -> str:
    """Where a webhook goes, without its path (webhook URLs usually carry a secret)."""
    try:
        return urlsplit(url).netloc.rpartition("@")[2] or "?"
    except ValueError:
        return "?"


# --------------------------------------------------------------------------- destinations


@functools.cache
def webhook_allow_list() -> WebhookAllowList | str:
    """The allow-list from MLWARDEN_WEBHOOK_ALLOW, or why it could not be read."""
    try:
        return WebhookAllowList.parse(os.environ.get("MLWARDEN_WEBHOOK_ALLOW"))
    except DestinationError as exc:
        log.error("%s: every reaction webhook is refused until it is fixed", exc)
        return str(exc)


async def secret_url(api: Kube, namespace: str, name: str, key: str) -> tuple[str | None, str]:
    """(the URL in Secret `name`'s `key`, or None and why not)."""
    where = f"Secret {namespace}/{name}"
    try:
        secret = await api.get(path("Secret", namespace, name))
    except KubeError as exc:
        if getattr(exc, "status", None) == 403:
            return None, (
                f"the operator may not read {where}: grant its ServiceAccount get on that "
                "Secret (a Role with resourceNames: [" + name + "], see docs/operator.md)"
            )
        return None, f"reading {where}: {excerpt(str(exc))}"
    except (aiohttp.ClientError, TimeoutError) as exc:
        return None, f"reading {where}: {type(exc).__name__}"
    if secret is None:
        return None, f"{where} not found"
    data = secret.get("data") or {}
    if key not in data:
        return None, f"{where} has no key {key!r}"
    try:
        url = base64.b64decode(str(data[key]), validate=True).decode().strip()
    except (ValueError, UnicodeDecodeError):
        return None, f"{where} key {key!r} is not base64 text"
    if not url.startswith(("http://", "https://")):
        return None, f"{where} key {key!r} is not an http(s) URL"
    return url, ""


async def destinations(
    api: Kube | None, namespace: str, reactions: Sequence[Reaction]
) -> list[Destination]:
    """The webhooks of `reactions`, each once: inline URLs, and URLs read from Secrets."""
    out: list[Destination] = []
    seen: set[str] = set()
    for reaction in reactions:
        if reaction.webhook:
            if reaction.webhook not in seen:
                seen.add(reaction.webhook)
                out.append(Destination(reaction.webhook, host_of(reaction.webhook), None,
                                       reaction.webhook_format))  # fmt: skip
            continue
        ref = reaction.webhook_secret
        if ref is None:
            continue
        label = f"Secret {ref.name}/{ref.key}"
        if label in seen:
            continue
        seen.add(label)
        if api is None:
            out.append(Destination(None, label, "no API client to read it"))
            continue
        url, problem = await secret_url(api, namespace, ref.name, ref.key)
        where = f"{label} ({host_of(url)})" if url else label
        out.append(Destination(url, where, problem or None, reaction.webhook_format))
    return out


# --------------------------------------------------------------------------- the request


async def resolve_host(host: str, port: int) -> list[str]:
    """The addresses `host` resolves to (the system resolver); empty when it does not."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )
    except (OSError, UnicodeError):
        return []
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class _Pinned(AbstractResolver):
    """Resolves the checked host to the addresses it was checked at, and nothing else."""

    def __init__(self, addresses: Sequence[str]) -> None:
        self.addresses = list(addresses)

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            {
                "hostname": host,
                "host": address,
                "port": port,
                "family": socket.AF_INET6 if ":" in address else socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
            for address in self.addresses
        ]

    async def close(self) -> None:
        return None


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


async def _checked(
    url: str, resolve: Callable[[str, int], Awaitable[list[str]]]
) -> tuple[list[str], str | None]:
    """(the addresses to connect to, or why the URL is refused)."""
    allow = webhook_allow_list()
    if isinstance(allow, str):
        return [], f"the webhook allow-list is invalid ({allow})"
    host = webhook_host(url)
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    except ValueError:
        return [], "not a URL"
    # What the URL alone decides first: no DNS query for a name refused anyway.
    refused = check_destination(url, None, allow)
    addresses = [host] if host and _is_address(host) else []
    if refused is None and host and not addresses:
        addresses = await resolve(host, port)
        refused = check_destination(url, addresses, allow)
    return addresses, refused


def _thread(body: bytes) -> str | None:
    try:
        answer = json.loads(body)
    except ValueError:
        return None
    ts = answer.get("ts") if isinstance(answer, Mapping) else None
    return str(ts) if isinstance(ts, str | int | float) and ts else None


async def _post_once(
    http: aiohttp.ClientSession, url: str, payload: Mapping[str, Any]
) -> tuple[bool, bool, str, str | None]:
    """(ok, worth retrying, detail, thread) of one attempt."""
    try:
        async with http.post(url, json=payload, allow_redirects=False) as resp:
            body = await resp.content.read(4 * WEBHOOK_TEXT_LIMIT)
            if resp.status < 300:
                return True, False, f"HTTP {resp.status}", _thread(body)
            text = excerpt(f"HTTP {resp.status} {body.decode('utf-8', 'replace')}")
            return False, resp.status == 429 or resp.status >= 500, text, None
    except TimeoutError:
        return False, True, f"no answer in {WEBHOOK_TIMEOUT_SECONDS:g}s", None
    except aiohttp.ClientError as exc:
        return False, True, excerpt(f"{type(exc).__name__}: {exc}"), None


async def deliver(
    targets: Sequence[Destination],
    payload: Mapping[str, Any] | Callable[[Destination], Mapping[str, Any]],
    *,
    event: EventPoster | None = None,
    resolve: Callable[[str, int], Awaitable[list[str]]] = resolve_host,
    attempts: int = WEBHOOK_ATTEMPTS,
    budget: float = WEBHOOK_BUDGET_SECONDS,
    per_attempt: float = WEBHOOK_TIMEOUT_SECONDS,
) -> list[Delivery]:
    """POST to each destination (module docstring); one Delivery each, never raises.

    `payload`: the body, or a function of the destination giving it (its format).
    """
    out: list[Delivery] = []
    for target in targets:
        where = target.where
        if target.url is None:
            out.append(Delivery(where, False, f"webhook {where}: {target.problem}"))
            continue
        addresses, refused = await _checked(target.url, resolve)
        if refused is not None:
            out.append(
                Delivery(where, False, f"webhook {where}: refused, not sent: {excerpt(refused)}")
            )
            if event is not None:
                event("Warning", "WebhookRefused", f"webhook {where} not sent: {refused}")
            continue
        body = payload(target) if callable(payload) else payload
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget
        detail = ""
        for attempt in range(max(1, attempts)):
            left = deadline - loop.time()
            connector = aiohttp.TCPConnector(resolver=_Pinned(addresses), use_dns_cache=False)
            per_try = aiohttp.ClientTimeout(total=max(0.1, min(per_attempt, left)))
            try:
                async with aiohttp.ClientSession(timeout=per_try, connector=connector) as http:
                    ok, again, detail, thread = await _post_once(http, target.url, body)
            except Exception as exc:  # a webhook must never fail the handler
                ok, again, detail, thread = (
                    False,
                    False,
                    excerpt(f"{type(exc).__name__}: {exc}"),
                    None,
                )
            if ok:
                out.append(Delivery(where, True, detail, thread))
                break
            pause = backoff.exponential(attempt, base=_RETRY_BASE, cap=budget)
            if not again or attempt + 1 >= attempts or loop.time() + pause >= deadline:
                tries = f" (after {attempt + 1} attempts)" if attempt else ""
                out.append(Delivery(where, False, excerpt(f"webhook {where}: {detail}{tries}")))
                break
            await asyncio.sleep(pause)
    for delivery in out:
        denied = "refused, not sent" in delivery.detail
        outcome = "sent" if delivery.ok else "refused" if denied else "failed"
        METRICS.notifications.labels("webhook", outcome).inc()
        if not delivery.ok:
            log.warning("%s", delivery.detail)
    return out


async def post_webhooks(
    urls: Sequence[str],
    payload: dict[str, Any],
    *,
    event: EventPoster | None = None,
    resolve: Callable[[str, int], Awaitable[list[str]]] = resolve_host,
) -> list[str]:
    """POST `payload` to each URL (inline `reactions[].webhook`s); what failed, one line each."""
    targets = [Destination(url, host_of(url)) for url in urls]
    done = await deliver(targets, payload, event=event, resolve=resolve)
    return [d.detail for d in done if not d.ok]
