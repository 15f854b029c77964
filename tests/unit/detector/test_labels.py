"""Late labels (`mlwarden.detector.labels`): the join window, the bound, the stored form, and
performance credited to the prediction's time bucket and revision. Time is an argument."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
from canary_sim import Behaviour, batch, model

from mlwarden.detector.core import Detector
from mlwarden.detector.labels import LabelLedger, StoredLabelsError, labelled_performance
from mlwarden.spec import SpecError
from mlwarden.timestamps import iso

GOOD = Behaviour()
H = 3600.0
DAY = 24 * H


def ledger(**kw: float) -> LabelLedger:
    return LabelLedger(
        join_window=kw.get("window", 7 * DAY),
        bucket=kw.get("bucket", H),
        capacity=int(kw.get("capacity", 1000)),
    )


def keys(prefix: str, n: int) -> list[tuple[str, int]]:
    return [(f"{prefix}-{i}", 0) for i in range(n)]


def test_a_label_days_late_is_credited_to_its_predictions_bucket_and_revision() -> None:
    led = ledger()
    led.record(keys("a", 3), [1, 0, 1], revision="r1", warmup=False, now=1 * H + 10)
    led.record(keys("b", 2), [1, 1], revision="r2", warmup=False, now=5 * H + 10)
    got = led.join([("a-0", 0, 1), ("a-1", 0, 1), ("b-0", 0, 1)], now=3 * DAY)
    assert len(got.joined) == 3 and got.unmatched == 0
    assert led.tallies[(1 * H, "r1")].labelled == 2
    assert dict(led.tallies[(1 * H, "r1")].cells) == {(1, 1): 1, (1, 0): 1}
    assert led.tallies[(5 * H, "r2")].labelled == 1
    status = led.status("accuracy", iso)
    by_rev = {r["revision"]: r for r in status["revisions"]}
    assert by_rev["r1"]["predicted"] == 3 and by_rev["r1"]["labelled"] == 2
    assert by_rev["r1"]["coverage"] == pytest.approx(2 / 3, abs=1e-4)
    assert by_rev["r1"]["value"] == 0.5 and by_rev["r2"]["value"] == 1.0
    assert by_rev["r1"]["lagSeconds"]["p50"] == pytest.approx(3 * DAY - H - 10)
    assert status["predicted"] == 5 and status["labelled"] == 3 and status["waiting"] == 2
    assert [b["start"] for b in status["buckets"]] == [iso(5 * H), iso(1 * H)]


def test_unknown_repeated_and_too_late_labels_are_unmatched_and_old_things_expire() -> None:
    led = ledger(window=2 * DAY)
    led.record(keys("a", 2), ["x", "y"], revision=None, warmup=False, now=0.0)
    led.record(keys("b", 1), ["x"], revision=None, warmup=False, now=DAY)
    got = led.join([("a-0", 0, "x"), ("a-0", 0, "x"), ("nope", 0, "x")], now=10.0)
    assert len(got.joined) == 1 and got.unmatched == 2
    # a-1 was made at 0: at 2 days + 1 s it is out of the join window.
    assert led.join([("a-1", 0, "y")], now=2 * DAY + 1).unmatched == 1
    led.expire(2 * DAY + H)  # the bucket [0, 1h) has now left the window whole
    assert list(led.waiting) == [("b-0", 0)]
    assert (0.0, None) not in led.tallies and (DAY, None) in led.tallies
    assert led.unmatched == 3 and led.joined == 1 and not led.lags  # the lag is 2 days old


def test_beyond_capacity_the_oldest_waiting_predictions_are_dropped_and_counted() -> None:
    led = ledger(capacity=3)
    led.record(keys("a", 5), [1] * 5, revision=None, warmup=False, now=0.0)
    assert led.dropped == 2 and len(led.waiting) == 3
    got = led.join([(f"a-{i}", 0, 1) for i in range(5)], now=1.0)
    assert len(got.joined) == 3 and got.unmatched == 2
    assert led.tallies[(0.0, None)].predicted == 5  # coverage still counts what was made


def test_warm_up_predictions_count_in_coverage_and_set_the_reference_level() -> None:
    led = ledger()
    led.record(keys("w", 2), [1, 1], revision=None, warmup=True, now=0.0)
    got = led.join([("w-0", 0, 0)], now=5.0)
    assert got.joined[0][0].warmup and led.tallies[(0.0, None)].labelled == 1
    assert not led.tallies[(0.0, None)].cells  # not current performance


def test_the_stored_ledger_restores_exactly_and_late_labels_join_after_it() -> None:
    led = ledger()
    led.record(keys("a", 100), list(range(100)), revision="r1", warmup=False, now=H + 1)
    led.join([(f"a-{i}", 0, i) for i in range(40)], now=2 * H)
    data = led.encode(saved_at="t", budget=1 << 20)
    again = ledger()
    assert again.restore(data, where="test", now=3 * H) == 60
    assert again.status("accuracy", iso) == led.status("accuracy", iso)
    # After the "restart": the rest of the labels, a day later, go to the same bucket.
    got = again.join([(f"a-{i}", 0, i) for i in range(40, 100)], now=DAY)
    assert len(got.joined) == 60
    tally = again.tallies[(H, "r1")]
    assert tally.labelled == 100 and sum(tally.cells.values()) == 100


def test_over_its_budget_the_newest_waiting_predictions_are_stored_and_the_cut_counted() -> None:
    led = ledger(capacity=50_000)
    ids = [(f"request-{i:08d}-{'x' * 20}", 0) for i in range(20_000)]
    led.record(ids, list(np.arange(20_000) % 7), revision="r", warmup=False, now=H)
    full = len(led.encode(saved_at="t", budget=1 << 30))
    led.cut = 0
    data = led.encode(saved_at="t", budget=full // 4)
    assert len(data) <= full // 4
    stored = json.loads(gzip.decompress(data))
    kept = stored["waiting"]["id"]
    assert 0 < len(kept) < 20_000 and kept[-1] == ids[-1][0]  # the newest kept
    assert led.cut == 20_000 - len(kept) == stored["counters"]["notStored"]
    again = ledger(capacity=50_000)
    again.restore(data, where="test", now=H)
    assert again.dropped == led.cut  # the ones left out are gone after a restart, counted
    with pytest.raises(StoredLabelsError, match="does not fit"):
        led.encode(saved_at="t", budget=10)


def test_a_changed_bucket_width_recuts_the_restored_buckets() -> None:
    led = ledger(bucket=H)
    led.record(keys("a", 2), [1, 1], revision=None, warmup=False, now=0.5 * H)
    led.record(keys("b", 3), [1, 1, 1], revision=None, warmup=False, now=1.5 * H)
    wide = ledger(bucket=DAY)
    wide.restore(led.encode(saved_at="t", budget=1 << 20), where="test", now=2 * H)
    assert wide.tallies[(0.0, None)].predicted == 5


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"not gzip", "test: not a stored label ledger"),
        (gzip.compress(b'{"format": "other"}', mtime=0), "format 'other'"),
        (gzip.compress(b'{"format": "mlwarden.io/labels/v1"}', mtime=0), "test: KeyError"),
    ],
    ids=["not-gzip", "other-format", "fields-missing"],
)
def test_an_unreadable_stored_ledger_is_an_error_naming_where(data: bytes, match: str) -> None:
    with pytest.raises(StoredLabelsError, match=match):
        ledger().restore(data, where="test", now=0.0)


def test_the_performance_check_judges_prediction_time_buckets_however_late_labels_come() -> None:
    rng = np.random.default_rng(0)
    d = Detector(model(detectors={"performance": {"metric": "accuracy", "maxDrop": 0.1}}), now=0)
    warm = batch(rng, 1000, GOOD, revision="base", now=0.0, prefix="w")
    d.ingest(warm, now=0.0)
    d.add_labels(
        [(k[0], k[1], r["label"]) for k, r in zip(warm.keys, warm.output_rows, strict=True)],
        now=60.0,
    )
    assert len(d.reference_labelled) >= 900  # the reference level: labelled, accuracy 1.0
    b1 = batch(rng, 200, GOOD, revision="v1", now=H + 5, prefix="b1")
    d.ingest(b1, now=H + 5)
    b2 = batch(rng, 200, GOOD, revision="v2", now=2 * H + 5, prefix="b2")
    d.ingest(b2, now=2 * H + 5)

    def label(b: object, right: bool) -> list[tuple[str, int, object]]:
        out = []
        for k, row in zip(b.keys, b.output_rows, strict=True):  # type: ignore[attr-defined]
            y = row["label"]
            out.append((k[0], k[1], y if right else ("setosa" if y != "setosa" else "virginica")))
        return out

    # Two days later, v1's predictions (made in hour 1) turn out wrong.
    d.add_labels(label(b1, False), now=50 * H)
    d.evaluate(now=50 * H, now_iso=iso(50 * H))
    (ev,) = [e for e in d.last_evidence if e.type == "PerformanceDrop"]
    assert ev.test == "accuracy_labelled" and ev.failing and ev.statistic == 0.0
    assert ev.model_revision == "v1" and iso(H) in ev.message
    assert d.labels.judged_start == H
    # Then hour 2's labels come, right: the newest judged bucket is hour 2, and it passes.
    d.add_labels(label(b2, True), now=51 * H)
    d.evaluate(now=51 * H, now_iso=iso(51 * H))
    (ev,) = [e for e in d.last_evidence if e.type == "PerformanceDrop"]
    assert not ev.failing and ev.statistic == 1.0 and ev.model_revision == "v2"
    status = d.status()["labels"]
    assert status["judgedBucket"] == iso(2 * H)
    by_rev = {r["revision"]: r for r in status["revisions"]}
    assert by_rev["v1"]["value"] == 0.0 and by_rev["v2"]["value"] == 1.0
    assert by_rev["v1"]["coverage"] == by_rev["v2"]["coverage"] == 1.0
    assert by_rev["v1"]["lagSeconds"]["p50"] == pytest.approx(49 * H - 5)
    assert status["lagSeconds"]["samples"] == len(d.reference_labelled) + 400


def test_without_enough_labels_in_any_bucket_the_check_falls_back_to_cbpe() -> None:
    rng = np.random.default_rng(1)
    d = Detector(model(detectors={"performance": {"metric": "accuracy"}}), now=0)
    d.ingest(batch(rng, 1000, GOOD, revision=None, now=0.0), now=0.0)
    b = batch(rng, 300, GOOD, revision=None, now=10.0, prefix="c")
    d.ingest(b, now=10.0)
    d.add_labels([(k[0], k[1], "setosa") for k in b.keys[:49]], now=20.0)
    assert d.reference is not None and d.window is not None
    (ev,) = labelled_performance(
        d.labels, d.reference, d.window.view(), d.model.spec.detectors.performance, []
    )
    assert ev.test == "accuracy_cbpe" and d.labels.judged_start is None


@pytest.mark.parametrize(
    ("window", "message"),
    [
        ("7 days", "must be a duration such as 30s, 5m or 1h30m"),
        ("0s", "must be longer than 0s"),
    ],
)
def test_a_bad_join_window_is_refused_naming_the_field(window: str, message: str) -> None:
    with pytest.raises(SpecError) as info:
        model(detectors={"performance": {"labelJoinWindow": window}})
    (error,) = info.value.errors
    assert error.path == "spec.detectors.performance.labelJoinWindow"
    assert message in error.message


def test_join_window_and_bucket_read_days() -> None:
    m = model(detectors={"performance": {"labelJoinWindow": "7d", "labelBucket": "1d12h"}})
    check = m.spec.detectors.performance
    assert check is not None
    assert check.label_join_window_seconds == 7 * DAY and check.label_bucket_seconds == 1.5 * DAY


def test_a_drop_equal_to_max_drop_passes_and_a_larger_one_fails() -> None:
    rng = np.random.default_rng(2)
    d = Detector(model(detectors={"performance": {"metric": "accuracy", "maxDrop": 0.05}}), now=0)
    warm = batch(rng, 1000, GOOD, revision=None, now=0.0, prefix="w")
    d.ingest(warm, now=0.0)
    assert d.reference is not None and d.window is not None
    d.reference_labelled = [(0, 0)] * 90 + [(0, 1)] * 10  # the reference level: 0.90
    for right, failing in ((170, False), (169, True)):  # 0.85 (a drop of 0.05), then 0.845
        led = LabelLedger(join_window=7 * DAY, bucket=H)
        led.record(keys("c", 200), [0] * 200, revision=None, warmup=False, now=H)
        led.join([(f"c-{i}", 0, 0 if i < right else 1) for i in range(200)], now=2 * H)
        (ev,) = labelled_performance(
            led, d.reference, d.window.view(), d.model.spec.detectors.performance,
            d.reference_labelled,
        )  # fmt: skip
        assert ev.failing is failing, (right, ev)
