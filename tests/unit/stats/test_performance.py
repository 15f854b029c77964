"""Performance from labels (checked against scikit-learn) and without them (CBPE)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

from mlwarden.stats.performance import (
    MIN_CALIBRATION_ROWS,
    PerformanceResult,
    calibrate,
    compare,
    estimate_metric,
    labelled_metric,
)

# CBPE against the realised metric at N = 200,000 rows whose labels are drawn from
# the probabilities. The realised metric itself is a random draw around what the
# estimate predicts, with a standard deviation of about 0.001 at this size
# (sqrt(0.25 / N) for accuracy), so 0.005 is about five of them. Seen with these
# seeds (|estimate - realised|): binary accuracy 0.0009, F1 0.0011, ROC AUC 0.0002;
# four classes accuracy 0.0021, macro-F1 0.0019; after calibrating p' = p^2, binary
# 0.0006, 0.0008, 0.0016 and four classes 0.0013, 0.0008. The raw estimate on
# p' = p^2 is off by 0.037 to 0.16, so MISCALIBRATED (0.02) separates the cases.
N = 200_000
TOLERANCE = 0.005
MISCALIBRATED = 0.02
CLASS_WEIGHTS = (0.7, 1.0, 1.5, 0.5)


def binary_probabilities(rng: np.random.Generator, n: int = N) -> np.ndarray:
    # Logistic of a normal: a realistic spread of confident and unsure rows.
    return 1.0 / (1.0 + np.exp(-rng.normal(0.3, 1.5, n)))


def draw_binary(rng: np.random.Generator, p: np.ndarray) -> np.ndarray:
    return (rng.random(p.size) < p).astype(int)


def draw_classes(rng: np.random.Generator, p: np.ndarray) -> np.ndarray:
    # Inverse-CDF sampling of one class per row; min() guards rounding at the top.
    below = (rng.random((p.shape[0], 1)) > p.cumsum(axis=1)).sum(axis=1)
    classes: np.ndarray = np.minimum(below, p.shape[1] - 1)
    return classes


def sharpen(p: np.ndarray) -> np.ndarray:
    """The miscalibration under test: p' = p^2 (rows renormalised for [N, C])."""
    squared = p**2
    return squared if squared.ndim == 1 else squared / squared.sum(axis=1, keepdims=True)


def realised(metric: str, y: np.ndarray, model: np.ndarray) -> float:
    """scikit-learn's metric of the model's own decisions against drawn labels."""
    if model.ndim == 1:
        predicted = (model >= 0.5).astype(int)
        if metric == "accuracy":
            return float(accuracy_score(y, predicted))
        if metric == "f1":
            return float(f1_score(y, predicted))
        return float(roc_auc_score(y, model))
    predicted = np.argmax(model, axis=1)
    if metric == "accuracy":
        return float(accuracy_score(y, predicted))
    return float(f1_score(y, predicted, average="macro"))


# --------------------------------------------------------------------------- labelled


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20240611)


def test_binary_int_labels_match_sklearn(rng: np.random.Generator) -> None:
    y_true = rng.integers(0, 2, 500)
    scores = np.clip(0.3 * y_true + rng.random(500) * 0.7, 0.0, 1.0)
    y_pred = (scores >= 0.5).astype(int)
    assert labelled_metric("accuracy", y_true, y_pred) == pytest.approx(
        accuracy_score(y_true, y_pred), abs=1e-12
    )
    assert labelled_metric("f1", y_true, y_pred) == pytest.approx(
        f1_score(y_true, y_pred), abs=1e-12
    )
    assert labelled_metric("roc_auc", y_true, y_pred, scores) == pytest.approx(
        roc_auc_score(y_true, scores), abs=1e-12
    )


def test_boolean_labels_are_binary_with_true_positive(rng: np.random.Generator) -> None:
    y_true = rng.random(300) < 0.4
    y_pred = rng.random(300) < 0.5
    scores = rng.random(300)
    assert labelled_metric("f1", y_true, y_pred) == pytest.approx(f1_score(y_true, y_pred))
    assert labelled_metric("roc_auc", y_true, y_pred, scores) == pytest.approx(
        roc_auc_score(y_true, scores)
    )


def test_ties_in_scores_count_half_like_sklearn(rng: np.random.Generator) -> None:
    y_true = rng.integers(0, 2, 400)
    scores = np.round(rng.random(400) + 0.2 * y_true, 1)  # few distinct values: many ties
    assert labelled_metric("roc_auc", y_true, y_true, scores) == pytest.approx(
        roc_auc_score(y_true, scores), abs=1e-12
    )


def test_multiclass_int_labels_match_sklearn_macro(rng: np.random.Generator) -> None:
    y_true = rng.integers(0, 4, 600)
    y_pred = np.where(rng.random(600) < 0.6, y_true, rng.integers(0, 4, 600))
    assert labelled_metric("accuracy", y_true, y_pred) == pytest.approx(
        accuracy_score(y_true, y_pred)
    )
    assert labelled_metric("f1", y_true, y_pred) == pytest.approx(
        f1_score(y_true, y_pred, average="macro"), abs=1e-12
    )


def test_string_labels_match_sklearn(rng: np.random.Generator) -> None:
    names = np.array(["cat", "dog", "emu"])
    y_true = names[rng.integers(0, 3, 500)]
    y_pred = np.where(rng.random(500) < 0.5, y_true, names[rng.integers(0, 3, 500)])
    assert labelled_metric("accuracy", y_true, y_pred) == pytest.approx(
        accuracy_score(y_true, y_pred)
    )
    assert labelled_metric("f1", y_true, y_pred) == pytest.approx(
        f1_score(y_true, y_pred, average="macro"), abs=1e-12
    )


def test_two_string_labels_give_macro_f1_and_auc_of_the_later_name(
    rng: np.random.Generator,
) -> None:
    names = np.array(["no", "yes"])
    index = rng.integers(0, 2, 400)
    y_true, y_pred = names[index], names[rng.integers(0, 2, 400)]
    scores = np.clip(0.4 * index + rng.random(400) * 0.6, 0.0, 1.0)  # P("yes")
    assert labelled_metric("f1", y_true, y_pred) == pytest.approx(
        f1_score(y_true, y_pred, average="macro")
    )
    assert labelled_metric("roc_auc", y_true, y_pred, scores) == pytest.approx(
        roc_auc_score(y_true, scores)
    )


def test_labelled_missing_rows_are_dropped() -> None:
    y_true = np.array([1, 0, None, 1], dtype=object)
    y_pred = np.array([1.0, 0.0, 1.0, math.nan])
    # The third row (no label) and the fourth (no prediction) go: two rows, both right.
    assert labelled_metric("accuracy", y_true, y_pred) == 1.0
    scores = np.array([0.9, math.nan, 0.2, 0.8])
    # roc_auc keeps the first and fourth rows (labelled and scored): one class only.
    assert math.isnan(labelled_metric("roc_auc", y_true, y_pred, scores))


def test_numbers_read_as_text_against_string_labels() -> None:
    y_true = np.array(["1", "0", "2"])
    y_pred = np.array([1, 0.0, 1], dtype=object)
    assert labelled_metric("accuracy", y_true, y_pred) == pytest.approx(2 / 3)


def test_roc_auc_single_class_is_nan_without_warning_or_error() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        value = labelled_metric("roc_auc", np.ones(5), np.ones(5), np.linspace(0, 1, 5))
    assert math.isnan(value)


def test_roc_auc_multiclass_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"binary classification; y_true holds 3 classes"):
        labelled_metric("roc_auc", np.array([0, 1, 2]), np.array([0, 1, 2]), np.zeros(3))


def test_roc_auc_without_scores_is_an_error() -> None:
    with pytest.raises(ValueError, match="roc_auc needs scores"):
        labelled_metric("roc_auc", np.array([0, 1]), np.array([0, 1]))


def test_unknown_metric_and_length_mismatch_are_errors() -> None:
    with pytest.raises(ValueError, match="unknown performance metric 'precision'"):
        labelled_metric("precision", np.array([1]), np.array([1]))
    with pytest.raises(ValueError, match="y_true has 2 rows but y_pred has 3"):
        labelled_metric("accuracy", np.array([1, 0]), np.array([1, 0, 1]))
    with pytest.raises(ValueError, match="unknown performance metric"):
        estimate_metric("recall", np.array([0.5]))


@pytest.mark.parametrize("metric", ["accuracy", "f1", "roc_auc"])
def test_labelled_empty_is_nan(metric: str) -> None:
    empty = np.array([], dtype=int)
    assert math.isnan(labelled_metric(metric, empty, empty, np.array([])))


# --------------------------------------------------------------------------- CBPE: hand cases


def test_expected_accuracy_and_f1_by_hand_binary() -> None:
    # p = P(class 1):        0.8  0.7  0.4  0.0
    # predicted (p >= 0.5):    1    1    0    0
    # P(prediction right):   0.8  0.7  0.6  1.0  -> accuracy 3.1 / 4 = 0.775
    # E[TP] = 0.8 + 0.7 = 1.5; E[FP] = 0.2 + 0.3 = 0.5; E[FN] = 0.4 + 0.0 = 0.4
    # F1 = 2 * 1.5 / (2 * 1.5 + 0.5 + 0.4) = 3 / 3.9
    p = np.array([0.8, 0.7, 0.4, 0.0])
    assert estimate_metric("accuracy", p) == pytest.approx(0.775)
    assert estimate_metric("f1", p) == pytest.approx(3 / 3.9)
    # The same rows as [N, 2] columns give the same binary figures.
    two_columns = np.column_stack([1 - p, p])
    assert estimate_metric("accuracy", two_columns) == pytest.approx(0.775)
    assert estimate_metric("f1", two_columns) == pytest.approx(3 / 3.9)


def test_expected_roc_auc_by_hand() -> None:
    # Row i ranked above row j counts p_i (1 - p_j) correctly ordered pairs; a row ties
    # with itself for half of p_i (1 - p_i). Denominator E[pos] E[neg] = 1.9 * 2.1 = 3.99.
    # Above-pairs: .8*.3 + .8*.6 + .8*1 + .7*.6 + .7*1 + .4*1 = 3.04
    # Self ties:   (.8*.2 + .7*.3 + .4*.6 + 0) / 2 = 0.305  -> (3.04 + 0.305) / 3.99
    p = np.array([0.8, 0.7, 0.4, 0.0])
    assert estimate_metric("roc_auc", p) == pytest.approx(3.345 / 3.99)


def test_expected_accuracy_and_macro_f1_by_hand_multiclass() -> None:
    # rows                 predicted  P(right)
    # [0.7, 0.2, 0.1]      0          0.7
    # [0.1, 0.5, 0.4]      1          0.5
    # [0.3, 0.3, 0.4]      2          0.4      -> accuracy 1.6 / 3
    # class 0: TP 0.7, FP 0.3, FN 0.1 + 0.3 = 0.4 -> 1.4 / 2.1
    # class 1: TP 0.5, FP 0.5, FN 0.2 + 0.3 = 0.5 -> 1.0 / 2.0
    # class 2: TP 0.4, FP 0.6, FN 0.1 + 0.4 = 0.5 -> 0.8 / 1.9
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.5, 0.4], [0.3, 0.3, 0.4]])
    assert estimate_metric("accuracy", p) == pytest.approx(1.6 / 3)
    assert estimate_metric("f1", p) == pytest.approx((1.4 / 2.1 + 0.5 + 0.8 / 1.9) / 3)


def test_estimate_drops_nan_rows_and_clips() -> None:
    # 1.02 reads as 1.0 and -0.01 as 0.0: both rows are certainly right.
    assert estimate_metric("accuracy", np.array([1.02, math.nan, -0.01, math.inf])) == 1.0
    rows = np.array([[0.9, 0.1, 0.0], [math.nan, 0.5, 0.5], [0.2, 0.8, 0.0]])
    assert estimate_metric("accuracy", rows) == pytest.approx(0.85)


def test_estimate_roc_auc_multiclass_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="binary classification; the probabilities have 3"):
        estimate_metric("roc_auc", np.full((4, 3), 1 / 3))


def test_estimate_roc_auc_with_no_expected_positives_is_nan() -> None:
    assert math.isnan(estimate_metric("roc_auc", np.zeros(10)))


# --------------------------------------------------------------------------- CBPE: correctness


@pytest.mark.parametrize("metric", ["accuracy", "f1", "roc_auc"])
def test_binary_estimate_matches_labels_drawn_from_the_probabilities(metric: str) -> None:
    rng = np.random.default_rng(7)
    p = binary_probabilities(rng)
    y = draw_binary(rng, p)
    assert estimate_metric(metric, p) == pytest.approx(realised(metric, y, p), abs=TOLERANCE)


@pytest.mark.parametrize("metric", ["accuracy", "f1"])
def test_multiclass_estimate_matches_labels_drawn_from_dirichlet(metric: str) -> None:
    rng = np.random.default_rng(11)
    p = rng.dirichlet(CLASS_WEIGHTS, N)
    y = draw_classes(rng, p)
    assert estimate_metric(metric, p) == pytest.approx(realised(metric, y, p), abs=TOLERANCE)


@pytest.mark.parametrize("metric", ["accuracy", "f1", "roc_auc"])
def test_binary_miscalibration_is_off_raw_and_fixed_by_calibration(metric: str) -> None:
    rng = np.random.default_rng(7)
    reference_p = binary_probabilities(rng)
    reference_y = draw_binary(rng, reference_p)
    p = binary_probabilities(rng)
    y = draw_binary(rng, p)
    model = sharpen(p)  # what the deployed model reports; its decisions use these
    truth = realised(metric, y, model)

    assert abs(estimate_metric(metric, model) - truth) > MISCALIBRATED

    calibrator = calibrate(sharpen(reference_p), reference_y)
    assert calibrator.fitted
    calibrated = calibrator.apply(model)
    estimate = estimate_metric(metric, calibrated, model_probabilities=model)
    assert estimate == pytest.approx(truth, abs=TOLERANCE)


@pytest.mark.parametrize("metric", ["accuracy", "f1"])
def test_multiclass_miscalibration_is_fixed_by_calibration(metric: str) -> None:
    rng = np.random.default_rng(11)
    reference_p = rng.dirichlet(CLASS_WEIGHTS, N)
    reference_y = draw_classes(rng, reference_p)
    p = rng.dirichlet(CLASS_WEIGHTS, N)
    y = draw_classes(rng, p)
    model = sharpen(p)
    truth = realised(metric, y, model)

    assert abs(estimate_metric(metric, model) - truth) > MISCALIBRATED

    calibrated = calibrate(sharpen(reference_p), reference_y).apply(model)
    estimate = estimate_metric(metric, calibrated, model_probabilities=model)
    assert estimate == pytest.approx(truth, abs=TOLERANCE)


def test_calibrated_values_alone_would_describe_another_classifier() -> None:
    # Why model_probabilities exists: calibration moves the 0.5 threshold, so the
    # argmax of calibrated values is not the deployed model's decision.
    rng = np.random.default_rng(7)
    reference_p = binary_probabilities(rng)
    calibrator = calibrate(sharpen(reference_p), draw_binary(rng, reference_p))
    p = binary_probabilities(rng)
    y = draw_binary(rng, p)
    model = sharpen(p)
    alone = estimate_metric("accuracy", calibrator.apply(model))
    assert abs(alone - realised("accuracy", y, model)) > MISCALIBRATED


# --------------------------------------------------------------------------- calibration


def test_small_reference_gives_an_identity_calibrator() -> None:
    p = np.linspace(0.0, 1.0, MIN_CALIBRATION_ROWS - 1)
    calibrator = calibrate(p, (p > 0.5).astype(int))
    assert not calibrator.fitted
    assert calibrator.n_reference == MIN_CALIBRATION_ROWS - 1
    np.testing.assert_array_equal(calibrator.apply(np.array([0.2, 1.1])), [0.2, 1.0])


def test_calibrator_keeps_shape_and_nan_rows() -> None:
    rng = np.random.default_rng(3)
    p = rng.dirichlet((1.0, 1.0, 1.0), 2000)
    calibrator = calibrate(p, draw_classes(rng, p))
    assert calibrator.fitted
    out = calibrator.apply(np.array([[0.2, 0.3, 0.5], [math.nan, 0.5, 0.5]]))
    assert out.shape == (2, 3)
    assert np.isfinite(out[0]).all()
    assert np.isnan(out[1]).all()


def test_calibrate_rejects_labels_that_are_not_class_indices() -> None:
    p = np.full((10, 3), 1 / 3)
    with pytest.raises(ValueError, match=r"class indices in 0\.\.2 .* got 3"):
        calibrate(p, np.array([0, 1, 2, 3, 0, 1, 2, 0, 1, 2]))
    with pytest.raises(ValueError, match="map class names to indices first"):
        calibrate(p, np.array(["a"] * 10))
    with pytest.raises(ValueError, match="has 10 rows but reference_labels has 2"):
        calibrate(p, np.array([0, 1]))


def test_calibrator_rejects_another_shape() -> None:
    calibrator = calibrate(np.array([0.5] * 3), np.array([0, 1, 1]))
    with pytest.raises(ValueError, match=r"fitted on probabilities of shape \[N\]"):
        calibrator.apply(np.full((2, 3), 1 / 3))


# --------------------------------------------------------------------------- compare


def test_compare_fails_only_beyond_max_drop() -> None:
    result, failing = compare("accuracy", 0.90, 0.80, 0.05, True, 1000)
    assert failing
    assert result == PerformanceResult("accuracy", 0.90, 0.80, result.drop, True, 1000)
    assert result.drop == pytest.approx(0.10)
    # Exactly max_drop (0.90 - 0.85 is 0.05000000000000004 in floats) does not fail.
    assert not compare("accuracy", 0.90, 0.85, 0.05, True, 1000)[1]
    assert not compare("f1", 0.70, 0.75, 0.05, False, 10)[1]  # an improvement


def test_compare_with_nan_current_does_not_fail() -> None:
    result, failing = compare("roc_auc", 0.9, math.nan, 0.05, False, 0)
    assert not failing
    assert math.isnan(result.drop)


# --------------------------------------------------------------------------- properties

probability = st.floats(-0.05, 1.05, allow_nan=False)
binary_rows = st.lists(st.one_of(probability, st.just(math.nan)), max_size=60)
multiclass_rows = st.integers(3, 5).flatmap(
    lambda c: st.lists(st.lists(st.floats(0.0, 1.0), min_size=c, max_size=c), max_size=40)
)


def as_rows(rows: list[list[float]]) -> np.ndarray:
    if not rows:
        return np.empty((0, 3))
    array = np.array(rows, dtype=np.float64)
    totals = array.sum(axis=1, keepdims=True)
    normalised: np.ndarray = np.divide(
        array, totals, out=np.full_like(array, 1 / 3), where=totals > 0
    )
    return normalised


@given(values=binary_rows, metric=st.sampled_from(["accuracy", "f1", "roc_auc"]))
def test_binary_estimates_are_in_unit_interval(values: list[float], metric: str) -> None:
    value = estimate_metric(metric, np.array(values, dtype=np.float64))
    assert math.isnan(value) or 0.0 <= value <= 1.0
    if metric != "roc_auc" and any(not math.isnan(v) for v in values):
        assert not math.isnan(value)


@given(rows=multiclass_rows, metric=st.sampled_from(["accuracy", "f1"]))
def test_multiclass_estimates_are_in_unit_interval(rows: list[list[float]], metric: str) -> None:
    value = estimate_metric(metric, as_rows(rows))
    assert (math.isnan(value) and not rows) or 0.0 <= value <= 1.0


@settings(max_examples=60)
@given(values=binary_rows, metric=st.sampled_from(["accuracy", "f1", "roc_auc"]), data=st.data())
def test_binary_estimates_ignore_row_order(
    values: list[float], metric: str, data: st.DataObject
) -> None:
    p = np.array(values, dtype=np.float64)
    order = np.array(data.draw(st.permutations(range(p.size))), dtype=np.intp)
    before, after = estimate_metric(metric, p), estimate_metric(metric, p[order])
    assert (math.isnan(before) and math.isnan(after)) or after == pytest.approx(before, abs=1e-9)


@settings(max_examples=60)
@given(rows=multiclass_rows, metric=st.sampled_from(["accuracy", "f1"]), data=st.data())
def test_multiclass_estimates_ignore_row_order(
    rows: list[list[float]], metric: str, data: st.DataObject
) -> None:
    p = as_rows(rows)
    order = np.array(data.draw(st.permutations(range(p.shape[0]))), dtype=np.intp)
    before, after = estimate_metric(metric, p), estimate_metric(metric, p[order])
    assert (math.isnan(before) and math.isnan(after)) or after == pytest.approx(before, abs=1e-9)


@pytest.mark.parametrize(
    ("metric", "shape"),
    [("accuracy", (0,)), ("f1", (0,)), ("roc_auc", (0,)), ("accuracy", (0, 3)), ("f1", (0, 4))],
)
def test_empty_estimate_is_nan(metric: str, shape: tuple[int, ...]) -> None:
    assert math.isnan(estimate_metric(metric, np.empty(shape)))


@given(
    metric=st.sampled_from(["accuracy", "f1", "roc_auc"]),
    values=st.lists(st.just(math.nan), max_size=5),
)
def test_all_nan_estimate_is_nan(metric: str, values: list[float]) -> None:
    assert math.isnan(estimate_metric(metric, np.array(values, dtype=np.float64)))


labels = st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)), min_size=1, max_size=40)


@given(pairs=labels, binary=st.booleans())
def test_labelled_f1_and_accuracy_equal_sklearn(pairs: list[tuple[int, int]], binary: bool) -> None:
    y_true = np.array([t % 2 if binary else t for t, _ in pairs])
    y_pred = np.array([p % 2 if binary else p for _, p in pairs])
    in_01 = set(y_true) | set(y_pred) <= {0, 1}
    expected_f1 = f1_score(
        y_true, y_pred, average="binary" if in_01 else "macro", zero_division=0.0
    )
    assert labelled_metric("f1", y_true, y_pred) == pytest.approx(expected_f1, abs=1e-12)
    assert labelled_metric("accuracy", y_true, y_pred) == pytest.approx(
        accuracy_score(y_true, y_pred)
    )
