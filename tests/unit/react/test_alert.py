"""The webhook payload: Slack's `text` and `blocks`, and the same facts as generic JSON."""

from __future__ import annotations

import json
from typing import Any

from mlwarden.react.actions import ActionRecord
from mlwarden.react.actuators.alert import summary, webhook_payload

SUSPECT = {
    "kind": "CronJob",
    "name": "feature-etl",
    "score": 0.82,
    "evidence": ["produces amount", "last run failed 4m before onset"],
}


def _record(**kw: Any) -> ActionRecord:
    base: dict[str, Any] = {
        "id": "alert-0123456789",
        "action": "alert",
        "target": "ObservedModel/fraud",
        "from_state": "FeatureDrift/amount",
        "to_state": "Event+webhook",
        "reason": "FeatureDrift on amount since 2026-11-26T15:02:11.204Z",
        "result": "Running",
        "at": "2026-11-26T15:30:00Z",
    }
    return ActionRecord(**{**base, **kw})


def _payload(build: Any, **kw: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "model": build.model({"alert": "FeatureDrift", "action": "alert"}),
        "alerts": [build.alert(revision="7")],
        "diagnosis_top": SUSPECT,
        "record": _record(),
    }
    return webhook_payload(**{**args, **kw})


def test_slack_text_and_blocks(build: Any) -> None:
    payload = _payload(build)
    assert isinstance(payload["text"], str)
    assert payload["text"].startswith("[mlwarden] ObservedModel ml/fraud: FeatureDrift/amount")
    assert "top suspect CronJob/feature-etl" in payload["text"]
    types = [b["type"] for b in payload["blocks"]]
    assert types == ["header", "section", "section", "section", "context"]
    header = payload["blocks"][0]["text"]
    assert header["type"] == "plain_text" and len(header["text"]) <= 150
    alerts = payload["blocks"][1]["text"]["text"]
    assert "FeatureDrift on amount" in alerts and "model revision 7" in alerts
    assert "since 2026-11-26T15:02:11.204Z" in alerts
    assert (
        "CronJob/feature-etl (score 0.82): produces amount" in payload["blocks"][2]["text"]["text"]
    )
    assert "alert-0123456789" in payload["blocks"][-1]["elements"][0]["text"]


def test_generic_json(build: Any) -> None:
    payload = _payload(build)
    assert payload["source"] == "mlwarden"
    assert payload["observedModel"] == {"name": "fraud", "namespace": "ml", "uid": build.UID}
    assert payload["alerts"] == [build.alert(revision="7")]
    assert payload["diagnosis"] == {"topSuspect": SUSPECT}
    assert payload["action"] == _record().to_status()
    assert json.loads(json.dumps(payload)) == payload


def test_without_a_diagnosis(build: Any) -> None:
    payload = _payload(build, diagnosis_top=None)
    assert payload["diagnosis"] == {"topSuspect": None}
    assert [b["type"] for b in payload["blocks"]] == ["header", "section", "section", "context"]
    assert "suspect" not in payload["text"]


def test_a_workload_action_and_a_dry_run(build: Any) -> None:
    record = _record(
        id="rollback-1",
        action="rollback",
        target="Deployment/fraud-model",
        from_state="7",
        to_state="6",
        result="Succeeded",
        dry_run=True,
    )
    payload = _payload(build, record=record)
    action = payload["blocks"][3]["text"]["text"]
    assert "rollback Deployment/fraud-model: 7 → 6" in action
    assert "dry run: nothing applied" in action
    assert payload["action"]["dryRun"] is True


def test_many_alerts_are_cut_to_slack_limits(build: Any) -> None:
    many = [build.alert(feature=f"f{i}") | {"message": "x" * 400} for i in range(25)]
    payload = _payload(build, alerts=many)
    for block in payload["blocks"]:
        text = block.get("text", {}).get("text", "")
        assert len(text) <= (150 if block["type"] == "header" else 3000)
    assert len(payload["alerts"]) == 25  # the JSON keeps them all


def test_summary(build: Any) -> None:
    model = build.model()
    alerts = [build.alert(), build.alert("Latency", None)]
    assert summary(model=model, alerts=alerts) == (
        "ObservedModel ml/fraud: FeatureDrift/amount, Latency"
    )
    assert summary(model=model, alerts=[]) == "ObservedModel ml/fraud: no alert"
