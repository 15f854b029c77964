"""Kubernetes timestamps: RFC 3339 in UTC with a `Z`, to the second, as the API server writes them.

One reader and one writer for every timestamp mlwarden reads from or writes to an object
(`metadata.creationTimestamp`, an alert's `since`, an action record's `at`, `status.updated`).
Aware datetimes are always UTC; naive ones are taken as UTC. The detector's own times (alerts,
`/v1/status`) carry milliseconds: `iso`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def as_utc(when: datetime) -> datetime:
    """`when` in UTC; a naive datetime is taken as UTC."""
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def parse_time(value: Any) -> datetime | None:
    """A Kubernetes (RFC 3339) timestamp as an aware UTC datetime; None when absent or bad."""
    if isinstance(value, datetime):
        return as_utc(value)
    if not isinstance(value, str) or not value:
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        return as_utc(datetime.fromisoformat(text))
    except ValueError:
        return None


def format_time(when: datetime) -> str:
    """`when` as Kubernetes writes timestamps: second precision, UTC, `Z`."""
    return as_utc(when).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso(ts: float) -> str:
    """A POSIX time as the detector writes it (alerts, `/v1/status`): RFC 3339 UTC to the
    millisecond, with a `Z`."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def now_iso() -> str:
    """The current time, formatted by `format_time`."""
    return format_time(datetime.now(UTC))
