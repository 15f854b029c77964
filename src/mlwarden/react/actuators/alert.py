"""Alert: what mlwarden tells people, as one JSON document a generic receiver and Slack both read.

`webhook_payload` returns a body for `reactions[].webhook`:

    text, blocks      Slack's incoming-webhook message (`text` is also the notification and
                      the fallback; `blocks` the formatted message: header, alerts, suspect,
                      action). Slack ignores the other keys.
    source            "mlwarden"
    observedModel     {name, namespace, uid}
    alerts            the alerts as the detector wrote them to status.alerts
    diagnosis         {topSuspect: the first suspect, or null}
    action            the action record as in status.reactions

`summary` is the one line used for the Kubernetes Event and the condition message. The HTTP
post, the Event and the condition are the operator shell's; nothing here does I/O.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any, Final

from mlwarden.react.actions import ActionRecord
from mlwarden.spec import ObservedModel

# Slack's limits (api.slack.com/reference/block-kit/blocks); longer texts are cut.
_HEADER_MAX: Final = 150
_SECTION_MAX: Final = 3000
_MAX_ALERTS_SHOWN: Final = 10


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _alert_line(alert: Mapping[str, Any]) -> str:
    what = str(alert.get("type", "?"))
    if alert.get("feature"):
        what += f" on {alert['feature']}"
    parts = [what]
    if alert.get("message"):
        parts.append(str(alert["message"]))
    elif alert.get("test"):
        figure = f"{alert['test']}"
        if _is_number(alert.get("statistic")):
            figure += f" = {alert['statistic']:.3g}"
        if alert.get("threshold") is not None:
            figure += f" (threshold {alert['threshold']})"
        parts.append(figure)
    if alert.get("since"):
        parts.append(f"since {alert['since']}")
    if alert.get("modelRevision"):
        parts.append(f"model revision {alert['modelRevision']}")
    return " · ".join(parts)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _suspect_line(suspect: Mapping[str, Any]) -> str:
    line = f"{suspect.get('kind', '?')}/{suspect.get('name', '?')}"
    if _is_number(suspect.get("score")):
        line += f" (score {suspect['score']:.2f})"
    evidence = [str(e) for e in suspect.get("evidence") or []]
    if evidence:
        line += ": " + "; ".join(evidence)
    return line


def _action_line(record: ActionRecord) -> str:
    if record.action == "alert":
        line = "alert only (no change to the workload)"
    else:
        line = f"{record.action} {record.target}"
        if record.from_state or record.to_state:
            line += f": {record.from_state} → {record.to_state}"
    line += f" · {record.result}"
    if record.dry_run:
        line += " (dry run: nothing applied)"
    if record.message:
        line += f" · {record.message}"
    return line


def summary(*, model: ObservedModel, alerts: Sequence[Mapping[str, Any]]) -> str:
    """One line: which model, which alerts."""
    kinds = ", ".join(
        f"{a.get('type', '?')}" + (f"/{a['feature']}" if a.get("feature") else "") for a in alerts
    )
    return f"ObservedModel {model.namespace}/{model.name}: {kinds or 'no alert'}"


def webhook_payload(
    *,
    model: ObservedModel,
    alerts: Sequence[Mapping[str, Any]],
    diagnosis_top: Mapping[str, Any] | None,
    record: ActionRecord,
) -> dict[str, Any]:
    """The webhook body: Slack's `text` and `blocks`, and the same facts as plain JSON."""
    head = summary(model=model, alerts=alerts)
    shown = list(alerts)[:_MAX_ALERTS_SHOWN]
    alert_text = "\n".join(f"• {_alert_line(a)}" for a in shown) or "• (no active alert)"
    if len(alerts) > len(shown):
        alert_text += f"\n• … and {len(alerts) - len(shown)} more"
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": _cut(f"mlwarden: {head}", _HEADER_MAX)},
        },
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": _cut(f"*Alerts*\n{alert_text}", _SECTION_MAX)},
        },
    ]
    text = f"[mlwarden] {head}"
    if diagnosis_top:
        suspect = _suspect_line(diagnosis_top)
        text += f" · top suspect {diagnosis_top.get('kind', '?')}/{diagnosis_top.get('name', '?')}"
        blocks.append(
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": _cut(f"*Top suspect*\n{suspect}", _SECTION_MAX)},
            }
        )
    action = _action_line(record)
    text += f" · action: {record.action} ({record.result})"
    blocks.append(
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": _cut(f"*Action*\n{action}", _SECTION_MAX)},
        }
    )
    blocks.append(
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": _cut(f"action id `{record.id}` · {record.at}", _SECTION_MAX),
                }
            ],
        }
    )
    return {
        "text": text,
        "blocks": blocks,
        "source": "mlwarden",
        "observedModel": {"name": model.name, "namespace": model.namespace, "uid": model.uid},
        "alerts": [copy.deepcopy(dict(a)) for a in alerts],
        "diagnosis": {"topSuspect": copy.deepcopy(dict(diagnosis_top)) if diagnosis_top else None},
        "action": record.to_status(),
    }
