"""Shipper pieces that need no network: backoff, batch encoding, buffer bounds."""

from __future__ import annotations

import json
import math
import random

from mlwarden.sidecar.metrics import SidecarMetrics
from mlwarden.sidecar.shipper import (
    BACKOFF_CAP_SECONDS,
    RETRY_AFTER_CAP_SECONDS,
    Shipper,
    backoff_seconds,
    encode_batch,
    encode_item,
)


def test_backoff_is_full_jitter_under_a_growing_cap() -> None:
    rng = random.Random(1)
    for attempt in range(12):
        cap = min(BACKOFF_CAP_SECONDS, 0.1 * 2**attempt)
        samples = [backoff_seconds(attempt, rng=rng) for _ in range(500)]
        assert all(0.0 <= s <= cap for s in samples)
        # Full jitter: spread over the whole interval, mean near cap/2.
        assert abs(sum(samples) / len(samples) - cap / 2) < cap * 0.1


def test_retry_after_wins_but_is_capped() -> None:
    rng = random.Random(1)
    assert backoff_seconds(0, rng=rng, retry_after=2.5) == 2.5
    assert backoff_seconds(0, rng=rng, retry_after=10_000) == RETRY_AFTER_CAP_SECONDS
    assert backoff_seconds(0, rng=rng, retry_after=-3) == 0.0


def test_batch_encoding_keeps_non_finite_values() -> None:
    item = encode_item(
        {"id": "r", "status": 200},
        [{"id": "r", "row": 0, "features": {"a": math.nan, "b": math.inf, "c": None}}],
    )
    empty = encode_item({"id": "q", "status": 502}, [])
    decoded = json.loads(encode_batch([item, empty, item], {"pod": "p"}))
    assert decoded["source"] == {"pod": "p"}
    assert decoded["requests"] == [
        {"id": "r", "status": 200},
        {"id": "q", "status": 502},
        {"id": "r", "status": 200},
    ]
    assert len(decoded["records"]) == 2
    features = decoded["records"][0]["features"]
    assert math.isnan(features["a"]) and features["b"] == math.inf and features["c"] is None


async def test_buffer_evicts_oldest_and_counts_the_rows() -> None:
    metrics = SidecarMetrics()
    shipper = Shipper(
        "http://127.0.0.1:9/v1/records", metrics=metrics, buffer_records=10, batch_size=1000
    )
    for i in range(8):
        shipper.add({"id": str(i)}, [{"row": 0}, {"row": 1}])
    assert shipper.buffered <= 10
    value = metrics.registry.get_sample_value
    assert value("mlwarden_sidecar_records_dropped_total", {"reason": "buffer_full"}) == 6
    assert value("mlwarden_sidecar_buffer_records") == shipper.buffered
