"""The small pure parts of the operator's diagnosis and reaction pass (respond.py)."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web

from mlwarden.diagnose import needed_kinds
from mlwarden.kube import KINDS
from mlwarden.operator.cache import CACHED_KINDS
from mlwarden.operator.notify import post_webhooks, webhook_allow_list
from mlwarden.operator.respond import (
    MAX_RECORDS,
    describe,
    diagnosis_stale,
    has_room,
    has_work,
    upsert,
)
from mlwarden.react.actions import ActionRecord


def record(rid: str = "scale-1", result: Any = "Succeeded", **changes: Any) -> ActionRecord:
    fields: dict[str, Any] = {
        "id": rid, "action": "scale", "target": "Deployment/fraud-model", "from_state": "2",
        "to_state": "4", "reason": "Latency", "result": result, "at": "2026-11-26T15:00:00Z",
    }  # fmt: skip
    fields.update(changes)
    return ActionRecord(**fields)


def test_every_kind_read_is_cached_but_secrets() -> None:
    assert set(needed_kinds()) - {"Secret"} <= set(CACHED_KINDS)
    assert {"HorizontalPodAutoscaler", "HTTPRoute", "VirtualService"} <= set(CACHED_KINDS)
    assert set(CACHED_KINDS) <= set(KINDS)
    assert "Secret" not in CACHED_KINDS  # a watch would bring their contents in


def test_upsert_keeps_one_entry_per_id_the_newest_last() -> None:
    entries = upsert([], record("a", "Running"))
    entries = upsert(entries, record("b", "Skipped"))
    entries = upsert(entries, record("a", "Succeeded"))
    assert [(e["id"], e["result"]) for e in entries] == [("b", "Skipped"), ("a", "Succeeded")]


def test_upsert_trims_the_oldest_settled_entries_and_keeps_open_ones() -> None:
    entries = upsert([], record("planned", "Planned"))
    for i in range(MAX_RECORDS + 5):
        entries = upsert(entries, record(f"r{i}"))
    assert len(entries) == MAX_RECORDS
    assert entries[0]["id"] == "planned"  # still to do: never dropped
    assert entries[1]["id"] == "r6" and entries[-1]["id"] == f"r{MAX_RECORDS + 4}"


def test_upsert_keeps_entries_that_are_not_ours() -> None:
    foreign = {"note": "written by a person"}
    assert upsert([foreign], record())[0] == foreign


def test_describe() -> None:
    rollback = record(action="rollback", from_state="7", to_state="6")
    assert describe(rollback) == "rollback Deployment/fraud-model 7→6 Succeeded"
    assert describe(record(dry_run=True)) == "scale Deployment/fraud-model 2→4 Succeeded (dry run)"
    alert = record(action="alert", target="ObservedModel/fraud", from_state="FeatureDrift/amount",
                   to_state="Event+webhook", result="Failed")  # fmt: skip
    assert describe(alert) == "alert FeatureDrift/amount → Event+webhook Failed"


def test_a_timer_pass_has_work_only_with_alerts_or_open_reactions() -> None:
    assert not has_work(None)
    assert not has_work({"alerts": [], "reactions": [record().to_status()]})
    assert has_work({"alerts": [{"type": "Latency"}]})
    assert has_work({"reactions": [record(result="Planned").to_status()]})
    assert has_work({"reactions": [record(result="Running").to_status()]})


def test_a_new_record_finds_room_unless_every_entry_is_open() -> None:
    entries = [record(f"p{i}", "Planned").to_status() for i in range(MAX_RECORDS - 1)]
    entries = upsert(entries, record("settled"))
    assert has_room(entries, record("new", "Running"))  # the settled one makes way
    entries = upsert(entries, record("new", "Running"))
    assert len(entries) == MAX_RECORDS
    assert [e["id"] for e in entries if e["result"] == "Succeeded"] == []
    assert not has_room(entries, record("one-more", "Planned"))
    assert has_room(entries, record("new", "Succeeded"))  # an update of a recorded one


def test_a_diagnosis_is_stale_unless_it_names_exactly_the_alerts_shown() -> None:
    drift = {"type": "FeatureDrift", "feature": "amount"}
    assert not diagnosis_stale({})
    assert diagnosis_stale({"alerts": [drift]})  # none yet
    assert not diagnosis_stale(
        {"alerts": [drift], "diagnosis": {"forAlerts": ["FeatureDrift/amount"]}}
    )
    assert diagnosis_stale({"alerts": [{"type": "PredictionDrift"}],
                            "diagnosis": {"forAlerts": ["FeatureDrift/amount"]}})  # fmt: skip
    assert diagnosis_stale({"alerts": [], "diagnosis": {"suspects": []}})  # shown with no alert
    assert has_work({"alerts": [], "diagnosis": {"forAlerts": ["Latency"]}})


async def test_webhooks_go_to_the_addresses_checked_and_nowhere_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A name is resolved once (here: injected), checked, and posted to at those addresses."""
    received: list[str] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(request.host)
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    lookups: list[str] = []

    async def resolve(host: str, _port: int) -> list[str]:
        lookups.append(host)
        return ["127.0.0.1"]  # what a rebinding DNS answer would say

    def allow(text: str) -> None:
        monkeypatch.setenv("MLWARDEN_WEBHOOK_ALLOW", text)
        webhook_allow_list.cache_clear()

    events: list[tuple[str, str, str]] = []
    try:
        allow("public")
        url = f"https://hooks.example.com:{port}/hook"
        failures = await post_webhooks(
            [url], {}, event=lambda *e: events.append(e), resolve=resolve
        )
        assert "resolves to 127.0.0.1, which is not a public address" in failures[0]
        assert events[0][:2] == ("Warning", "WebhookRefused")
        # Refused by the URL alone: not even looked up.
        failures = await post_webhooks([f"http://metrics.monitoring.svc:{port}/hook"], {},
                                       resolve=resolve)  # fmt: skip
        assert "in-cluster name" in failures[0] and lookups == ["hooks.example.com"]
        assert received == []
        # Listed: posted, to the address it was checked at (no lookup of its own).
        allow("hooks.example.com")
        url = f"http://hooks.example.com:{port}/hook"
        assert await post_webhooks([url], {}, resolve=resolve) == []
        assert received == [f"hooks.example.com:{port}"]
        # A list that cannot be read refuses everything, and says why.
        allow("https://hooks.example.com")
        failures = await post_webhooks([url], {}, resolve=resolve)
        assert "allow-list is invalid" in failures[0] and len(received) == 1
    finally:
        webhook_allow_list.cache_clear()
        await runner.cleanup()
