"""Redaction: the captured fields `spec.capture.redact` names, dropped or hashed in the pod.

Applied to every record before it is encoded for shipping, so a redacted value never leaves
the model's pod (nor sits in the shipper's buffer). A field is a feature or an output name,
as the protocol adapter captured it.

- `drop`: the field is removed from the record (the detector sees it as absent).
- `hash`: the value becomes `hmac:` + the first 32 hex digits of HMAC-SHA256 over its JSON
  form, keyed with the model's ingest token. Equal values stay equal (a categorical's
  distribution and drift are still measured) but without the key a hash cannot be reversed
  by hashing guesses (an email address, a user id). Null stays null (missing stays missing).
  Without a key there is nothing safe to hash with: the field is dropped instead.
  The JSON form is the standard library's (`json.dumps`, sorted keys), not orjson's, which
  writes NaN and infinities as `null` (a NaN would hash like nothing at all) and may differ in
  other corners: a hash must not change when the sidecar's encoder does, or every hashed
  categorical would drift at an upgrade.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from mlwarden.spec import Redaction

HASH_PREFIX = "hmac:"


def hash_value(value: Any, key: bytes) -> str | None:
    if value is None:
        return None
    text = json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    digest = hmac.new(key, text.encode(), hashlib.sha256).hexdigest()
    return HASH_PREFIX + digest[:32]


@dataclass(frozen=True)
class Redactor:
    """The rules of one ObservedModel, with the key; `apply` rewrites records in place."""

    drop: frozenset[str]
    hash: frozenset[str]
    key: bytes | None

    @classmethod
    def from_rules(cls, rules: Iterable[Redaction], key: bytes | None) -> Redactor | None:
        rules = tuple(rules)
        if not rules:
            return None
        drop = {r.field for r in rules if r.action == "drop"}
        hashed = {r.field for r in rules if r.action == "hash"}
        if key is None:  # no key: hashing would be reversible by guessing; drop instead
            drop |= hashed
            hashed = set()
        return cls(frozenset(drop), frozenset(hashed), key)

    @property
    def fields(self) -> frozenset[str]:
        return self.drop | self.hash

    def apply(self, records: list[dict[str, Any]]) -> None:
        for record in records:
            for part in ("features", "outputs"):
                values = record.get(part)
                if not isinstance(values, dict) or not (values.keys() & self.fields):
                    continue
                for name in self.drop & values.keys():
                    del values[name]
                if self.key is not None:
                    for name in self.hash & values.keys():
                        values[name] = hash_value(values[name], self.key)
