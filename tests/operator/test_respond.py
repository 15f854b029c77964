"""The small pure parts of the operator's diagnosis and reaction pass (respond.py)."""

from __future__ import annotations

from typing import Any

from mlwarden.diagnose import needed_kinds
from mlwarden.operator.cache import CACHED_KINDS
from mlwarden.operator.kube import KINDS
from mlwarden.operator.respond import MAX_RECORDS, describe, has_work, upsert
from mlwarden.react.records import ActionRecord


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
