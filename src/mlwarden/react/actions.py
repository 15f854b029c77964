"""The action record: one reaction, written to `status.reactions` before it is taken.

A record is the plan, the audit and the restart log in one. Its `patch` holds the JSON merge
patches (RFC 7386) to apply, keyed by the object they apply to (`"Deployment/fraud-model"`),
so the record says exactly what was (or would be) set; `holds` later tells whether an object
still carries it, which is how mlwarden notices a person's change after its own.

Ids are deterministic: a short hash of the ObservedModel's uid, the alert that triggered the
action (type, feature, onset), the action, its target and the transition (from → to). The
same incident planned twice, before and after an operator restart, yields the same id; that
is what makes restarts safe, and the id is what `mlwarden.io/approve` names.

Results, and who moves a record from one to the next:

    Planned    recorded, waiting (for approval, `mlwarden.io/approve: <id>`)
    Running    the planner says "go": the shell writes the record, then applies the patches
               (or sends the Event and webhook), then writes Succeeded or Failed
    Succeeded  done (with `dry_run` true: would have been done; nothing was applied)
    Failed     attempted and failed, or interrupted and not safe to repeat
    Skipped    not taken: a guardrail or a planning error says why (`reason`); unlike the
               others, a Skipped id may be planned again on a later pass

A retrain changes no object: it starts a Job or Workflow, named in `run` once created, and its
record stays Running until that run has ended (`react.actuators.retrain`).

In `status.reactions` a record keeps its `patch` only while the action is open (Planned or
Running: what a restarted operator completes or checks) and in a dry run (what would have
been applied is the point of one). Once an action has ended the record is compact: a
Succeeded one keeps `held` instead, a short digest of each field the patch set as the object
had it right after (JSON pointer → digest, see `fingerprint`), which is all the
person-changed guardrail needs to tell whether someone changed it since.

A record's patch is read with the merge-patch helpers of `mlwarden.patches` (`holds`: does an
object still carry what a patch set?); its times are `mlwarden.timestamps`.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal, TypeAlias

from mlwarden.timestamps import parse_time

Result: TypeAlias = Literal["Planned", "Running", "Succeeded", "Failed", "Skipped"]
# Results whose record keeps its patch in status (the action is still to be taken or checked).
OPEN: Final[frozenset[str]] = frozenset({"Planned", "Running"})
RESULTS: Final[tuple[Result, ...]] = ("Planned", "Running", "Succeeded", "Failed", "Skipped")
# Results of an action that was attempted: they count for cooldown and the hourly limit.
ATTEMPTED: Final[frozenset[str]] = frozenset({"Running", "Succeeded", "Failed"})
# Results after which the planner never plans the same id again.
SETTLED: Final[frozenset[str]] = frozenset({"Planned", "Running", "Succeeded", "Failed"})

# A precondition, not a change: the API answers 409 Conflict when the object moved on.
_PRECONDITION: Final = ("metadata", "resourceVersion")

Patches: TypeAlias = dict[str, dict[str, Any]]


# --------------------------------------------------------------------------- ids


def action_id(
    *,
    model_uid: str,
    alert_key: str,
    onset: str,
    action: str,
    target: str,
    from_state: str,
    to_state: str,
    dry_run: bool = False,
) -> str:
    """`<action>-<10 hex digits>`: the same inputs always give the same id.

    `alert_key` is `Type` or `Type/feature`; `onset` the alert's `since`. The transition
    (from → to) is part of the key so that each step of a stepwise action (scale, traffic)
    has its own id and an approval names exactly what will be done. A dry run gets ids of
    its own, so switching `dryRun` off acts on an incident the dry run already recorded.
    """
    key = [model_uid, alert_key, _canonical_time(onset), action, target, from_state, to_state]
    if dry_run:
        key.append("dry-run")
    digest = hashlib.sha256(json.dumps(key, separators=(",", ":")).encode()).hexdigest()
    return f"{action.lower()}-{digest[:10]}"


def _canonical_time(text: str) -> str:
    when = parse_time(text)
    return text if when is None else when.isoformat()


# --------------------------------------------------------------------------- the record


@dataclass(frozen=True)
class ActionRecord:
    """One action: what, on what, from which state to which, why, and what came of it."""

    id: str
    action: str
    target: str  # "Deployment/fraud-model", "HTTPRoute/fraud", "Deployment/a+Deployment/b"
    from_state: str  # short and human: a revision "7", replicas "3", "stable 50/canary 50"
    to_state: str
    reason: str
    result: Result
    at: str  # ISO 8601, when it was planned (kept as the record moves on)
    dry_run: bool = False
    message: str = ""
    # target ("Kind/name") -> JSON merge patch, in the order to apply them
    patch: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # target -> {JSON pointer of a field the patch set: digest of its value right after}
    held: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    # What the action started, once it exists ("Job/fraud-train-retrain-1a2b3c4d5e"): retrain
    run: str = ""
    # After a workload action succeeded: did it fix its trigger? (`react.verify`)
    verification: Mapping[str, Any] | None = None
    # The id of the action this one undoes (guardrails.undoIfNotFixed); "" for the others.
    undoes: str = ""

    @property
    def objects(self) -> tuple[str, ...]:
        """The objects the action changes, as `Kind/name`."""
        return (
            tuple(self.patch) or tuple(self.held) or tuple(t for t in self.target.split("+") if t)
        )

    @property
    def metric_result(self) -> str:
        """The `result` label for `mlwarden_operator_reactions_total`: dry runs apart."""
        return "DryRun" if self.dry_run and self.result == "Succeeded" else self.result

    def settle(self, result: Result, message: str) -> ActionRecord:
        """The same action with a new result (and message); its id and `at` stay."""
        return replace(self, result=result, message=message)

    def to_status(self) -> dict[str, Any]:
        """The `status.reactions` entry (camelCase keys): `patch` while open or in a dry run."""
        out: dict[str, Any] = {
            "id": self.id,
            "action": self.action,
            "target": self.target,
            "from": self.from_state,
            "to": self.to_state,
            "reason": self.reason,
            "result": self.result,
            "at": self.at,
            "dryRun": self.dry_run,
            "message": self.message,
        }
        if self.patch and (self.result in OPEN or self.dry_run):
            out["patch"] = {k: copy.deepcopy(dict(v)) for k, v in self.patch.items()}
        if self.held:
            out["held"] = {k: dict(v) for k, v in self.held.items()}
        if self.run:
            out["run"] = self.run
        if self.verification is not None:
            out["verification"] = copy.deepcopy(dict(self.verification))
        if self.undoes:
            out["undoes"] = self.undoes
        return out

    @classmethod
    def from_status(cls, entry: Mapping[str, Any]) -> ActionRecord:
        """Read a `status.reactions` entry back; missing optional keys take their defaults.

        An unknown `result` (a newer operator wrote it, or a person edited the status) is
        read as Failed: never as something the planner would continue or repeat.
        """
        result = entry.get("result")
        patch = entry.get("patch")
        held = entry.get("held")
        return cls(
            id=str(entry["id"]),
            action=str(entry["action"]),
            target=str(entry.get("target") or ""),
            from_state=_text(entry.get("from")),
            to_state=_text(entry.get("to")),
            reason=str(entry.get("reason") or ""),
            result=result if result in RESULTS else "Failed",
            at=str(entry.get("at") or ""),
            dry_run=bool(entry.get("dryRun", False)),
            message=str(entry.get("message") or ""),
            patch=(
                {str(k): copy.deepcopy(dict(v)) for k, v in patch.items() if isinstance(v, Mapping)}
                if isinstance(patch, Mapping)
                else {}
            ),
            held=(
                {
                    str(k): {str(p): str(d) for p, d in v.items()}
                    for k, v in held.items()
                    if isinstance(v, Mapping)
                }
                if isinstance(held, Mapping)
                else {}
            ),
            run=str(entry.get("run") or ""),
            verification=(
                copy.deepcopy(dict(entry["verification"]))
                if isinstance(entry.get("verification"), Mapping)
                else None
            ),
            undoes=str(entry.get("undoes") or ""),
        )


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def records_from_status(entries: Sequence[Mapping[str, Any]] | None) -> list[ActionRecord]:
    """`status.reactions` as records (entries without an id or action are not ours: dropped)."""
    return [
        ActionRecord.from_status(e)
        for e in entries or ()
        if isinstance(e, Mapping) and e.get("id") and e.get("action")
    ]


# --------------------------------------------------------------------------- fingerprints


def fingerprint(obj: Mapping[str, Any] | None, patch: Mapping[str, Any]) -> dict[str, str]:
    """JSON pointer (RFC 6901) of each field `patch` sets → a digest of its value in `obj`.

    Taken from the object as the API returned it right after the patch (with whatever the
    server defaulted), so that `changed_since` later compares like with like. A list is one
    field (merge patches replace lists whole); `metadata.resourceVersion` is a precondition,
    not a field the action set.
    """
    return {pointer: _digest(_at(obj, pointer)) for pointer in _pointers(patch, ())}


def held_by(
    record: ActionRecord, live: Callable[[str], Mapping[str, Any] | None]
) -> dict[str, dict[str, str]]:
    """`held` for a record whose patches were applied: `live("Kind/name")` gives the object."""
    return {obj: fingerprint(live(obj), patch) for obj, patch in record.patch.items()}


def changed_since(obj: Mapping[str, Any] | None, held: Mapping[str, str]) -> str | None:
    """None when every field still has the value `fingerprint` saw, else the first that changed."""
    if obj is None:
        return "the object is gone"
    for pointer, digest in held.items():
        if _digest(_at(obj, pointer)) != digest:
            return f"{pointer} changed"
    return None


def _pointers(patch: Mapping[str, Any], path: tuple[str, ...]) -> list[str]:
    out: list[str] = []
    for key, value in patch.items():
        sub = (*path, str(key))
        if sub == _PRECONDITION:
            continue
        if isinstance(value, Mapping) and value:
            out += _pointers(value, sub)
        else:
            out.append("".join("/" + p.replace("~", "~0").replace("/", "~1") for p in sub))
    return out


def _at(obj: Any, pointer: str) -> Any:
    for part in pointer.split("/")[1:]:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(part.replace("~1", "/").replace("~0", "~"))
    return obj


def _digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]
