"""BatchKeys: the Idempotency-Keys of recent batches, bounded per producer and in producers."""

from __future__ import annotations

import pytest

from mlwarden.detector.ingest import BatchError, BatchKeys


def test_a_key_is_seen_once_added_and_scoped_by_its_producer() -> None:
    keys = BatchKeys()
    assert not keys.seen("a.1.5")
    keys.add("a.1.5")
    assert keys.seen("a.1.5")
    assert not keys.seen("a.6.5")
    assert not keys.seen("b.1.5")
    keys.add("nodot")
    assert keys.seen("nodot") and not keys.seen("nodot.1")


def test_each_producer_keeps_its_latest_keys_only() -> None:
    keys = BatchKeys(per_producer=3)
    for seq in range(1, 6):
        keys.add(f"a.{seq}.1")
    assert [keys.seen(f"a.{seq}.1") for seq in range(1, 6)] == [False, False, True, True, True]
    keys.add("a.5.1")  # again: no second copy that would push out a.3.1 early
    assert keys.seen("a.3.1")


def test_the_producer_heard_from_least_recently_is_forgotten_first() -> None:
    keys = BatchKeys(producers=2)
    keys.add("a.1.1")
    keys.add("b.1.1")
    keys.add("a.2.1")  # a is the more recent now
    keys.add("c.1.1")
    assert keys.seen("a.1.1") and keys.seen("c.1.1")
    assert not keys.seen("b.1.1")


@pytest.mark.parametrize("key", ["", "x" * 201])
def test_an_unusable_key_is_refused_by_name(key: str) -> None:
    with pytest.raises(BatchError, match=r"Idempotency-Key: must be 1 to 200 characters"):
        BatchKeys.check(key)
    BatchKeys.check("x" * 200)
