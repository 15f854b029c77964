"""spec.capture.redact: fields dropped or hashed with a key before records leave the pod."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import pytest

from mlwarden.sidecar.capture import Exchange, RequestIds, describe_exchange
from mlwarden.sidecar.redact import HASH_PREFIX, Redactor, hash_value
from mlwarden.spec import Redaction, SpecError, parse_observed_model

KEY = b"k" * 32


def om(redact: Any, **spec: Any) -> Any:
    return parse_observed_model(
        {
            "apiVersion": "mlwarden.io/v1alpha1",
            "kind": "ObservedModel",
            "metadata": {"name": "m"},
            "spec": {"target": {"deployment": "m"}, "capture": {"redact": redact}, **spec},
        }
    )


def test_the_spec_lists_fields_with_drop_as_the_default() -> None:
    spec = om([{"field": "email"}, {"field": "user_id", "action": "hash"}]).spec
    assert spec.capture.redact == (Redaction("email", "drop"), Redaction("user_id", "hash"))


@pytest.mark.parametrize(
    "redact, message",
    [
        ([{"field": "a", "action": "encrypt"}], "spec.capture.redact[0].action: must be one of"),
        ([{"field": "a"}, {"field": "a"}], "spec.capture.redact[1].field: duplicate field 'a'"),
        ([{"action": "drop"}], "spec.capture.redact[0].field: required field is missing"),
        ([{"field": "a", "mode": "x"}], "spec.capture.redact[0]"),
        ({"field": "a"}, "spec.capture.redact: must be a list"),
        (
            [{"field": "x", "action": "hash"}],
            "spec.capture.redact[0].action: hashing turns the numeric 'x' into text",
        ),
    ],
)
def test_a_bad_redact_entry_names_the_field(redact: Any, message: str) -> None:
    with pytest.raises(SpecError) as info:
        om(redact, features=[{"name": "x", "type": "numeric"}])
    assert message in str(info.value)


def test_hash_is_a_keyed_hmac_not_a_plain_digest() -> None:
    value = "alice@example.com"
    hashed = hash_value(value, KEY)
    assert hashed == HASH_PREFIX + hmac.new(KEY, b'"alice@example.com"', "sha256").hexdigest()[:32]
    # a dictionary attack on a plain digest of the value finds nothing
    assert hashlib.sha256(value.encode()).hexdigest()[:32] not in hashed
    assert hash_value(value, b"another key" * 3) != hashed
    assert hash_value(value, KEY) == hashed  # equal values stay equal: drift still measurable
    assert hash_value(None, KEY) is None  # missing stays missing
    assert hash_value(12, KEY) != hash_value("12", KEY)


def test_the_redactor_drops_and_hashes_features_and_outputs() -> None:
    rules = (Redaction("email", "drop"), Redaction("user_id", "hash"), Redaction("label", "drop"))
    redactor = Redactor.from_rules(rules, KEY)
    assert redactor is not None
    records = [
        {
            "id": "r",
            "row": 0,
            "features": {"email": "a@b", "user_id": 7, "amount": 1.5},
            "outputs": {"label": "fraud", "score": 0.9},
        },
        {"id": "r", "row": 1, "features": {"amount": 2.0}, "outputs": {}},
    ]
    redactor.apply(records)
    assert records[0]["features"] == {"user_id": hash_value(7, KEY), "amount": 1.5}
    assert records[0]["outputs"] == {"score": 0.9}
    assert records[1]["features"] == {"amount": 2.0}
    assert Redactor.from_rules((), KEY) is None


def test_without_a_key_hashed_fields_are_dropped_never_shipped_in_clear() -> None:
    redactor = Redactor.from_rules((Redaction("user_id", "hash"),), None)
    assert redactor is not None
    records = [{"features": {"user_id": "u-1", "x": 1}}]
    redactor.apply(records)
    assert records == [{"features": {"x": 1}}]


def test_describe_exchange_applies_the_redaction_before_the_records_exist() -> None:
    spec = om(
        [{"field": "email", "action": "drop"}, {"field": "user", "action": "hash"}],
        protocol="json",
        features=[
            {"name": "email", "type": "categorical"},
            {"name": "user", "type": "categorical"},
            {"name": "amount", "type": "numeric"},
        ],
    ).spec
    exchange = Exchange(
        method="POST",
        path="/predict",
        status=200,
        started_at=0.0,
        total_seconds=0.01,
        upstream_seconds=0.01,
        request_body=b'{"email": "alice@example.com", "user": "u-42", "amount": 3.5}',
        response_body=b'{"score": 0.2}',
    )
    described = describe_exchange(
        exchange,
        protocol="json",
        spec=spec,
        max_body_bytes=1 << 20,
        ids=RequestIds(),
        redactor=Redactor.from_rules(spec.capture.redact, KEY),
    )
    (record,) = described.records
    assert record["features"] == {"user": hash_value("u-42", KEY), "amount": 3.5}
    assert "alice@example.com" not in repr(described) and "u-42" not in repr(described)
