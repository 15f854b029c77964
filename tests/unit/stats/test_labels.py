"""Labelled performance by prediction time (`stats.labels`), against scikit-learn and numpy."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats
from sklearn.metrics import accuracy_score, f1_score

from mlwarden.stats import performance as perf
from mlwarden.stats.labels import (
    MAX_CELLS,
    Tally,
    bucket_start,
    cells_metric,
    lag_percentiles,
    merged,
    newest_judged,
    scaled_pairs,
)


@given(
    at=st.floats(min_value=0, max_value=4e9, allow_nan=False),
    width=st.sampled_from([1.0, 60.0, 3600.0, 86400.0]),
)
def test_a_time_falls_in_the_epoch_aligned_bucket_that_holds_it(at: float, width: float) -> None:
    start = bucket_start(at, width)
    assert start <= at < start + width
    assert start % width == 0


def tally_of(labels: list[object], predictions: list[object]) -> Tally:
    t = Tally(predicted=len(labels))
    for y, p in zip(labels, predictions, strict=True):
        t.add_label(y, p)
    return t


@pytest.mark.parametrize("classes", [[0, 1], ["a", "b", "c"]])
def test_a_buckets_metric_is_sklearns_on_the_same_rows(classes: list[object]) -> None:
    rng = np.random.default_rng(1)
    y = list(rng.choice(np.array(classes, dtype=object), 700))
    p = [v if rng.random() < 0.7 else rng.choice(np.array(classes, dtype=object)) for v in y]
    t = tally_of(y, p)
    average = "binary" if classes == [0, 1] else "macro"
    assert cells_metric("accuracy", t.cells) == pytest.approx(accuracy_score(y, p))
    assert cells_metric("f1", t.cells) == pytest.approx(f1_score(y, p, average=average))
    assert math.isnan(cells_metric("roc_auc", t.cells))  # needs scores, which cells lack
    assert math.isnan(cells_metric("accuracy", Tally().cells))


def test_merged_tallies_give_the_metric_of_all_their_rows() -> None:
    a = tally_of([1, 1, 0], [1, 0, 0])
    b = tally_of([0, 1], [1, 1])
    both = merged([a, b])
    assert (both.predicted, both.labelled) == (5, 5)
    assert cells_metric("accuracy", both.cells) == pytest.approx(
        accuracy_score([1, 1, 0, 0, 1], [1, 0, 0, 1, 1])
    )


def test_pairs_beyond_the_cell_bound_are_counted_and_left_out_of_the_metric() -> None:
    t = Tally()
    for i in range(MAX_CELLS):
        t.add_label(f"y{i}", f"y{i}")
    t.add_label("new", "other")
    assert len(t.cells) == MAX_CELLS and t.overflow == 1 and t.labelled == MAX_CELLS + 1
    assert cells_metric("accuracy", t.cells) == 1.0


def test_the_judged_bucket_is_the_newest_with_enough_labels_over_all_revisions() -> None:
    tallies = {
        (0.0, "a"): tally_of([1] * 60, [1] * 60),
        (3600.0, "a"): tally_of([1] * 30, [0] * 30),
        (3600.0, "b"): tally_of([1] * 30, [1] * 30),  # with a's: 60 labels
        (7200.0, "a"): tally_of([1] * 10, [1] * 10),  # newest, but too few
    }
    judged = newest_judged(tallies, 50)
    assert judged is not None
    start, total = judged
    assert start == 3600.0 and total.labelled == 60
    assert cells_metric("accuracy", total.cells) == 0.5
    older = newest_judged({k: t for k, t in tallies.items() if k[0] != 3600.0}, 50)
    assert older is not None and older[0] == 0.0
    assert newest_judged(tallies, 1000) is None


def test_warm_up_labels_counted_without_cells_do_not_make_a_bucket_judged() -> None:
    t = Tally(predicted=100, labelled=100)  # labels of warm-up predictions: coverage only
    assert newest_judged({(0.0, None): t}, 50) is None


def test_lag_percentiles_are_numpys() -> None:
    lags = list(np.random.default_rng(2).exponential(3 * 86400, 999))
    got = lag_percentiles(lags)
    want = np.percentile(lags, [50, 90, 99])
    assert got["samples"] == 999
    assert [got["p50"], got["p90"], got["p99"]] == pytest.approx(list(want), abs=1e-3)
    assert lag_percentiles([]) == {"samples": 0, "p50": None, "p90": None, "p99": None}


@pytest.mark.parametrize("metric", ["accuracy", "f1"])
@pytest.mark.parametrize("classes", [[0, 1], [True, False], ["x", "y", "z"], [0, 1, 2]])
def test_weighted_rows_are_sklearns_sample_weight(metric: str, classes: list[object]) -> None:
    rng = np.random.default_rng(5)
    pool = np.array(classes, dtype=object)
    y, p = list(rng.choice(pool, 300)), list(rng.choice(pool, 300))
    w = rng.integers(1, 50, 300).astype(float)
    binary = set(classes) <= {0, 1}
    want = (
        accuracy_score(y, p, sample_weight=w)
        if metric == "accuracy"
        else f1_score(y, p, sample_weight=w, average="binary" if binary else "macro")
    )
    got = perf.labelled_metric(metric, np.asarray(y), np.asarray(p), weights=w)
    assert got == pytest.approx(want)


def test_scaled_pairs_keep_every_row_up_to_the_limit_and_the_proportions_beyond() -> None:
    cells = Counter({(1, 1): 70_001, (1, 0): 19_999, (0, 0): 9_999, (0, 1): 1})
    assert len(scaled_pairs(cells, 200_000)) == 100_000
    rows = scaled_pairs(cells, 1000)
    assert len(rows) == 1000
    got = Counter(rows)
    assert abs(got[(1, 1)] - 700) <= 1 and abs(got[(1, 0)] - 200) <= 1
    accuracy = np.mean([a == b for a, b in rows])
    assert accuracy == pytest.approx(cells_metric("accuracy", cells), abs=len(cells) / 1000)


def test_the_chance_a_stationary_bucket_fails_is_the_binomial_tail() -> None:
    """The false-alarm rate docs/detector.md states: a bucket of 200 labels at a true accuracy
    equal to the reference level 0.90 fails (drop > maxDrop 0.05) with probability 0.95%."""
    rng = np.random.default_rng(11)
    runs, n, level = 4000, 200, 0.9
    fails = 0
    for _ in range(runs):
        y = rng.integers(0, 3, n)
        p = np.where(rng.random(n) < level, y, (y + 1) % 3)
        t = tally_of(y.tolist(), p.tolist())
        _, failing = perf.compare(
            "accuracy", level, cells_metric("accuracy", t.cells), 0.05, False, n
        )
        fails += failing
    want = stats.binom.cdf(math.ceil(n * (level - 0.05)) - 1, n, level)
    assert want == pytest.approx(0.0095, abs=5e-4)
    assert fails / runs == pytest.approx(want, abs=3 * math.sqrt(want / runs))
