"""Model performance: measured from labels, or estimated without them (CBPE).

This module owns what "how well is the model doing" means for `PerformanceCheck`:

- `labelled_metric`: accuracy, F1 or ROC AUC from ground-truth labels, with the
  same results as scikit-learn's `accuracy_score`, `f1_score` and `roc_auc_score`
  (binary F1 when every label is 0/1 or a boolean, positive class 1; macro-F1
  otherwise, which includes string labels).
- `estimate_metric`: the same metrics without labels, by confidence-based
  performance estimation (CBPE, as NannyML describes it). If the probabilities are
  calibrated, a row whose predicted class has probability p is right with
  probability p, so every cell of the confusion matrix has an expected value and
  each metric is computed from the expected matrix. That is a ratio of
  expectations, not the expectation of a ratio: it converges to the realised metric
  as the window grows (see the tests for the figures at n = 200,000).
- `calibrate` / `Calibrator`: histogram-binning calibration fitted on a labelled
  reference, so that CBPE stays honest for a model whose scores are not calibrated.
- `compare` / `PerformanceResult`: the reference level against the current one, and
  whether the drop exceeds `max_drop`.

Probabilities are shape [N] (binary: P(class 1)) or [N, C] (column k: P(class k);
[N, 1] is read as [N]; [N, 2] is binary with class 1 positive). Values are clipped
to [0, 1]; [N, C] rows are taken as given, not renormalised (a model's rows sum to
about 1 already, and calibrated rows deliberately do not; see `Calibrator`). Rows
holding NaN or infinity are dropped, as are rows whose label or prediction is
missing (None or NaN). An empty input (or one left empty by dropping) gives NaN,
never an exception.

The only exceptions are ValueErrors for misuse, each saying what to change: an
unknown metric name, arrays of different lengths or the wrong shape, roc_auc
without scores or on more than two classes, and reference labels that are not
class indices.

Labelled and estimated values are comparable when both use the same notion of
class: `estimate_metric` knows classes only as column positions, so a caller with
named classes passes `labelled_metric` the class *indices* (for two classes, the
estimate's F1 is binary F1 of column 1, which `labelled_metric` gives for 0/1
labels but not for two string labels, where it gives macro-F1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

METRICS: Final = ("accuracy", "f1", "roc_auc")

# Calibration: equal-frequency bins, at least this many reference rows in each, and
# between MIN_BINS and MAX_BINS of them. A smaller labelled reference is not worth
# calibrating on: the calibrator it gives is the identity (`Calibrator.fitted` False).
MAX_BINS: Final = 20
MIN_BINS: Final = 10
MIN_ROWS_PER_BIN: Final = 50
MIN_CALIBRATION_ROWS: Final = MIN_BINS * MIN_ROWS_PER_BIN

# A drop equal to max_drop does not fail; this absorbs float noise such as
# 0.90 - 0.85 = 0.05000000000000004.
_DROP_SLACK: Final = 1e-12

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]
BoolArray = npt.NDArray[np.bool_]


# --------------------------------------------------------------------------- shared


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"unknown performance metric {metric!r}; use one of {', '.join(METRICS)}")


def _weighted_auc(scores: FloatArray, positive: FloatArray) -> float:
    """ROC AUC of `scores` when row i is positive with weight `positive[i]` (1 - it negative).

    With 0/1 weights this is the ordinary ROC AUC (ties count half, as in
    scikit-learn). With probabilities as weights it is CBPE's expected ROC AUC: at
    each distinct threshold t, E[TP](t) = sum of p over rows scoring >= t and
    E[FP](t) = sum of 1 - p over the same rows; TPR and FPR divide them by the
    expected positives and negatives; the curve from (0, 0) to (1, 1) through these
    points is integrated by the trapezoid rule.
    """
    total_positive = float(positive.sum())
    total_negative = float((1.0 - positive).sum())
    if total_positive <= 0.0 or total_negative <= 0.0:
        return math.nan
    order = np.argsort(-scores, kind="stable")
    sorted_scores = scores[order]
    tp = np.cumsum(positive[order])
    fp = np.cumsum(1.0 - positive[order])
    # The last row of each group of equal scores: one ROC point per distinct threshold.
    last = np.r_[np.flatnonzero(sorted_scores[1:] != sorted_scores[:-1]), sorted_scores.size - 1]
    tpr = np.r_[0.0, tp[last] / total_positive]
    fpr = np.r_[0.0, fp[last] / total_negative]
    area = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))
    return min(max(area, 0.0), 1.0)


def _f1(tp: float, fp: float, fn: float) -> float:
    """2TP / (2TP + FP + FN); 0 when nothing is predicted or present (scikit-learn's default)."""
    denominator = 2.0 * tp + fp + fn
    return 2.0 * tp / denominator if denominator > 0.0 else 0.0


# --------------------------------------------------------------------------- labelled


def _is_missing(value: object) -> bool:
    return value is None or (isinstance(value, float | np.floating) and math.isnan(value))


def _is_number(value: object) -> bool:
    return isinstance(value, bool | int | float | np.bool_ | np.integer | np.floating)


def _read_labels(values: np.ndarray, name: str) -> tuple[np.ndarray, BoolArray, bool]:
    """(labels, present mask, numeric?): numeric labels as float64, any other as objects."""
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    if array.dtype.kind in "biuf":
        numbers = array.astype(np.float64)
        return numbers, ~np.isnan(numbers), True
    if array.dtype.kind in "US":
        return array.astype(object), np.ones(array.size, dtype=bool), False
    present = np.fromiter((not _is_missing(v) for v in array), dtype=bool, count=array.size)
    if all(_is_number(v) for v in array[present]):
        numbers = np.full(array.size, math.nan)
        numbers[present] = [float(v) for v in array[present]]
        return numbers, present, True
    return array, present, False


def _as_text(value: object) -> str:
    # A number compared with string labels: 1 and 1.0 both read as "1".
    if isinstance(value, bool | np.bool_):
        return str(int(value))
    if _is_number(value) and float(value).is_integer():  # type: ignore[arg-type]
        return str(int(value))  # type: ignore[call-overload]
    return str(value)


def _classes(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[IntArray, IntArray, np.ndarray]:
    """Both label arrays as indices into their sorted union, and that union."""
    labels, inverse = np.unique(np.concatenate([y_true, y_pred]), return_inverse=True)
    inverse = inverse.reshape(-1).astype(np.intp)
    return inverse[: y_true.size], inverse[y_true.size :], labels


def labelled_metric(
    metric: str,
    y_true: np.ndarray,
    y_pred: np.ndarray,
    scores: np.ndarray | None = None,
    *,
    weights: np.ndarray | None = None,
) -> float:
    """Accuracy, F1 or ROC AUC of predictions against ground-truth labels.

    - accuracy: the share of rows where `y_pred` equals `y_true`.
    - f1: binary F1 of the positive class 1 when every label is 0/1 or a boolean;
      otherwise macro-F1, the mean of per-class F1 over the classes present in
      `y_true` or `y_pred`. F1 with nothing predicted or present is 0, as in
      scikit-learn.
    - roc_auc: binary only, from `scores` = P(positive), where the positive class is
      the larger of the two labels in `y_true` (1, True, or the later string), as in
      scikit-learn. `y_pred` is not used. Scores are ranked as given (not clipped).
      One class present: NaN. More than two: ValueError.

    Labels may be ints, floats, booleans or strings; a number compared with strings
    is read as text. Rows with a missing label (None or NaN), prediction or score
    are dropped; nothing left gives NaN. `weights` (accuracy and F1): a count per row,
    as scikit-learn's `sample_weight` (a confusion table's distinct cells and their
    counts give the metric of all its rows).
    """
    _check_metric(metric)
    true, true_present, true_numeric = _read_labels(y_true, "y_true")
    pred, pred_present, pred_numeric = _read_labels(y_pred, "y_pred")
    if pred.size != true.size:
        raise ValueError(f"y_true has {true.size} rows but y_pred has {pred.size}")
    if metric == "roc_auc":
        return _labelled_roc_auc(true, true_present, scores)
    keep = true_present & pred_present
    true, pred = true[keep], pred[keep]
    weight = np.ones(true.size) if weights is None else np.asarray(weights, np.float64)[keep]
    if true.size == 0 or not weight.sum():
        return math.nan
    if not (true_numeric and pred_numeric):
        true = np.array([_as_text(v) for v in true], dtype=object)
        pred = np.array([_as_text(v) for v in pred], dtype=object)
    true_index, pred_index, labels = _classes(true, pred)
    if metric == "accuracy":
        return float(np.average(true_index == pred_index, weights=weight))
    if true_numeric and pred_numeric and set(labels.tolist()) <= {0.0, 1.0}:
        positive_true, positive_pred = true == 1.0, pred == 1.0
        return _f1(
            tp=float(np.sum(weight[positive_true & positive_pred])),
            fp=float(np.sum(weight[~positive_true & positive_pred])),
            fn=float(np.sum(weight[positive_true & ~positive_pred])),
        )
    k = labels.size
    right = true_index == pred_index
    tp = np.bincount(true_index[right], weights=weight[right], minlength=k)
    predicted = np.bincount(pred_index, weights=weight, minlength=k)
    actual = np.bincount(true_index, weights=weight, minlength=k)
    # Every class in `labels` occurs in y_true or y_pred, so no denominator is 0.
    return float(np.mean(2.0 * tp / (predicted + actual)))


def _labelled_roc_auc(true: np.ndarray, present: BoolArray, scores: np.ndarray | None) -> float:
    if scores is None:
        raise ValueError("roc_auc needs scores: the predicted probability of the positive class")
    values = np.asarray(scores, dtype=np.float64)
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim != 1:
        raise ValueError(
            f"roc_auc scores must be one-dimensional (P(positive) per row), got {values.shape}"
        )
    if values.size != true.size:
        raise ValueError(f"y_true has {true.size} rows but scores has {values.size}")
    keep = present & ~np.isnan(values)
    true, values = true[keep], values[keep]
    if true.size == 0:
        return math.nan
    if true.dtype == object:
        true = np.array([_as_text(v) for v in true], dtype=object)
    labels, index = np.unique(true, return_inverse=True)
    if labels.size > 2:
        raise ValueError(
            f"roc_auc is for binary classification; y_true holds {labels.size} classes "
            "(use accuracy or f1 for a multiclass model)"
        )
    if labels.size < 2:
        return math.nan
    return _weighted_auc(values, index.reshape(-1).astype(np.float64))


# --------------------------------------------------------------------------- estimated


def _probability_matrix(probabilities: np.ndarray, name: str) -> tuple[FloatArray, bool]:
    """[N, C] rows of class probabilities (C >= 2; NaN rows kept), and whether input was [N]."""
    values = np.asarray(probabilities, dtype=np.float64)
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim == 1:
        p = np.where(np.isfinite(values), np.clip(values, 0.0, 1.0), math.nan)
        return np.column_stack([1.0 - p, p]), True
    if values.ndim != 2 or values.shape[1] == 0:
        raise ValueError(f"{name} must have shape [N] or [N, C], got {values.shape}")
    # Rows are not renormalised: each column is read as P(class k) on its own, which is
    # what a one-vs-rest calibrated row is (see `Calibrator`).
    rows = np.clip(values, 0.0, 1.0)
    rows[~np.isfinite(values).all(axis=1)] = math.nan
    return rows, False


def _predicted_class(matrix: FloatArray) -> IntArray:
    if matrix.shape[1] == 2:
        # Binary: class 1 when P(class 1) >= 0.5, so a tie predicts the positive class.
        binary: IntArray = (matrix[:, 1] >= matrix[:, 0]).astype(np.intp)
        return binary
    argmax: IntArray = np.argmax(matrix, axis=1).astype(np.intp)
    return argmax


def estimate_metric(
    metric: str,
    probabilities: np.ndarray,
    *,
    model_probabilities: np.ndarray | None = None,
) -> float:
    """The metric a model should reach on these rows if `probabilities` are calibrated (CBPE).

    - accuracy: the mean over rows of the probability of the predicted class.
    - f1 (two classes): from the expected confusion matrix of class 1,
      E[TP] = sum of p over rows predicted 1, E[FP] = sum of 1 - p over those rows,
      E[FN] = sum of p over rows predicted 0, F1 = 2TP / (2TP + FP + FN).
      More than two classes: macro-F1 of the one-vs-rest expected matrices, averaged
      over the classes with a non-zero denominator.
    - roc_auc (two classes only): rows ranked by score, each counting p towards the
      positives and 1 - p towards the negatives; expected TPR and FPR at every
      distinct threshold, trapezoid area (see `_weighted_auc`). NaN when the
      expected positives or negatives are zero. More than two classes: ValueError.

    `model_probabilities` are the model's own outputs when `probabilities` are their
    calibrated version (`Calibrator.apply`): the predicted class, and the ranking
    for roc_auc, are the model's, while the calibrated values say how likely each
    row is to be right. Without it both come from `probabilities`. Calibration
    changes where the decision threshold falls, so estimating from calibrated
    values alone would describe a different classifier from the one deployed.
    """
    _check_metric(metric)
    matrix, _ = _probability_matrix(probabilities, "probabilities")
    if model_probabilities is None:
        model = matrix
    else:
        model, _ = _probability_matrix(model_probabilities, "model_probabilities")
        if model.shape != matrix.shape:
            raise ValueError(
                f"model_probabilities has shape {np.shape(model_probabilities)} but "
                f"probabilities has {np.shape(probabilities)}; they must describe the same rows"
            )
    classes = matrix.shape[1]
    if metric == "roc_auc" and classes > 2:
        raise ValueError(
            f"roc_auc is for binary classification; the probabilities have {classes} classes "
            "(use accuracy or f1 for a multiclass model)"
        )
    keep = ~np.isnan(matrix).any(axis=1) & ~np.isnan(model).any(axis=1)
    matrix, model = matrix[keep], model[keep]
    if matrix.shape[0] == 0:
        return math.nan
    predicted = _predicted_class(model)
    rows = np.arange(matrix.shape[0])
    if metric == "accuracy":
        return float(np.mean(matrix[rows, predicted]))
    if metric == "roc_auc":
        return _weighted_auc(model[:, 1], matrix[:, 1])
    if classes == 2:
        p, positive = matrix[:, 1], predicted == 1
        return _f1(
            tp=float(p[positive].sum()),
            fp=float((1.0 - p[positive]).sum()),
            fn=float(p[~positive].sum()),
        )
    chosen = np.zeros_like(matrix)
    chosen[rows, predicted] = 1.0
    tp = (matrix * chosen).sum(axis=0)
    fp = ((1.0 - matrix) * chosen).sum(axis=0)
    fn = (matrix * (1.0 - chosen)).sum(axis=0)
    denominator = 2.0 * tp + fp + fn
    seen = denominator > 0.0
    return float(np.mean(2.0 * tp[seen] / denominator[seen]))


# --------------------------------------------------------------------------- calibration


@dataclass(frozen=True, eq=False)
class Calibrator:
    """Maps a model's probabilities to calibrated ones; fitted by `calibrate`.

    Histogram binning, one-vs-rest: for each class column, the reference rows are
    split into equal-frequency bins of that column (MIN_BINS to MAX_BINS bins, at
    least MIN_ROWS_PER_BIN rows each), and each bin gives one knot: (mean predicted
    probability, share of rows that are of that class). A probability maps to the
    straight line between the knots on either side of it (flat beyond the first and
    last), which keeps the resolution that plain bin means would lose.

    [N, C] rows are not renormalised after mapping, so they sum to about 1 but not
    exactly. Each calibrated column is an unbiased P(class k) given that column, which
    is all the expected confusion matrix needs; dividing by the row sum mixes the
    columns' errors and biases the estimate (one seeded run, p' = p^2 sharpening four
    Dirichlet classes, n = 200,000: expected accuracy off by 0.010 renormalised and
    0.0014 not; macro-F1 by 0.008 and 0.00003).

    `knots` is empty when the reference had fewer than MIN_CALIBRATION_ROWS usable
    labelled rows: `apply` then only clips, and `fitted` is False so the caller can
    say it estimates from raw probabilities.
    """

    columns: int  # 1 for [N] probabilities, C for [N, C]
    knots: tuple[tuple[FloatArray, FloatArray], ...]  # per column: (mean probability, class rate)
    n_reference: int

    @property
    def fitted(self) -> bool:
        return bool(self.knots)

    def apply(self, probabilities: np.ndarray) -> FloatArray:
        """Calibrated probabilities, same shape as the input; unusable rows come back NaN."""
        values = np.asarray(probabilities, dtype=np.float64)
        columns = 1 if values.ndim == 1 else values.shape[1] if values.ndim == 2 else -1
        if columns != self.columns:
            expected = "[N]" if self.columns == 1 else f"[N, {self.columns}]"
            raise ValueError(
                f"this calibrator was fitted on probabilities of shape {expected}, "
                f"got {values.shape}"
            )
        matrix, binary = _probability_matrix(values, "probabilities")
        if binary:
            p = matrix[:, 1].copy()
            if self.fitted:
                xs, ys = self.knots[0]
                p = np.where(np.isnan(p), math.nan, np.interp(p, xs, ys))
            return p.reshape(values.shape)
        if not self.fitted:
            return matrix
        mapped = np.column_stack(
            [np.interp(matrix[:, k], xs, ys) for k, (xs, ys) in enumerate(self.knots)]
        )
        mapped[np.isnan(matrix).any(axis=1)] = math.nan
        return mapped


def _knots(p: FloatArray, is_class: FloatArray, bins: int) -> tuple[FloatArray, FloatArray]:
    edges = np.unique(np.quantile(p, np.linspace(0.0, 1.0, bins + 1))[1:-1])
    # A value equal to an edge goes to the upper bin, so bins are disjoint intervals
    # and their mean probabilities strictly increase, as np.interp needs.
    index = np.searchsorted(edges, p, side="right")
    count = np.bincount(index, minlength=edges.size + 1).astype(np.float64)
    used = count > 0
    mean_p = np.bincount(index, weights=p, minlength=edges.size + 1)[used] / count[used]
    rate = np.bincount(index, weights=is_class, minlength=edges.size + 1)[used] / count[used]
    return mean_p, rate


def calibrate(reference_probabilities: np.ndarray, reference_labels: np.ndarray) -> Calibrator:
    """Fit a histogram-binning `Calibrator` on a labelled reference.

    `reference_labels` are class indices: 0/1 (or booleans) for [N] probabilities,
    column positions 0..C-1 for [N, C]. Rows with a missing label or unusable
    probabilities are dropped. Fewer than MIN_CALIBRATION_ROWS usable rows give an
    unfitted (identity) calibrator.
    """
    values = np.asarray(reference_probabilities, dtype=np.float64)
    matrix, binary = _probability_matrix(values, "reference_probabilities")
    columns = 1 if binary else matrix.shape[1]
    labels, present, numeric = _read_labels(reference_labels, "reference_labels")
    if labels.size != matrix.shape[0]:
        raise ValueError(
            f"reference_probabilities has {matrix.shape[0]} rows "
            f"but reference_labels has {labels.size}"
        )
    allowed = 2 if binary else columns
    if not numeric:
        raise ValueError(
            "reference_labels must be class indices (the column of each row's class in "
            "reference_probabilities), not names; map class names to indices first"
        )
    known = labels[present]
    bad = known[(known != np.round(known)) | (known < 0) | (known >= allowed)]
    if bad.size:
        raise ValueError(
            f"reference_labels must be class indices in 0..{allowed - 1} for probabilities of "
            f"shape {values.shape}; got {bad[0]:g}"
        )
    keep = present & ~np.isnan(matrix).any(axis=1)
    matrix, labels = matrix[keep], labels[keep].astype(np.intp)
    n = int(matrix.shape[0])
    if n < MIN_CALIBRATION_ROWS:
        return Calibrator(columns=columns, knots=(), n_reference=n)
    bins = min(MAX_BINS, n // MIN_ROWS_PER_BIN)
    fitted = range(1, 2) if binary else range(columns)
    knots = tuple(_knots(matrix[:, k], (labels == k).astype(np.float64), bins) for k in fitted)
    return Calibrator(columns=columns, knots=knots, n_reference=n)


# --------------------------------------------------------------------------- comparison


@dataclass(frozen=True)
class PerformanceResult:
    """The reference level of a metric, the current one, and how far it fell.

    `drop` is reference - current (negative when the model improved; NaN when
    either is unknown); `estimated` says the current value is a CBPE estimate
    rather than measured from labels; `n` is the number of current rows.
    """

    metric: str
    reference: float
    current: float
    drop: float
    estimated: bool
    n: int


def compare(
    metric: str,
    reference_value: float,
    current_value: float,
    max_drop: float,
    estimated: bool,
    n: int,
) -> tuple[PerformanceResult, bool]:
    """The result, and whether it fails: the drop exceeds `max_drop`.

    A NaN reference or current value (an empty window, a single class for
    roc_auc) never fails: there is no evidence of a drop.
    """
    drop = float(reference_value) - float(current_value)
    failing = bool(drop > max_drop + _DROP_SLACK)  # NaN compares False
    result = PerformanceResult(
        metric=metric,
        reference=float(reference_value),
        current=float(current_value),
        drop=drop,
        estimated=estimated,
        n=n,
    )
    return result, failing
