"""Effect floors on one scale (issue 19): a binary or categorical change as large as a
numeric KS D of 0.06 drifts like one; negligible changes do not, however significant;
`mlwarden check` and the detector reach the same verdicts on the same data."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from scipy import stats
from served_path import through_the_detector

from mlwarden.check import check_columns
from mlwarden.detector.alerts import Evidence
from mlwarden.spec import DriftCheck, ObservedModel, parse_observed_model
from mlwarden.stats import DEFAULT_MIN_EFFECT, CategoricalSketch, NumericSketch
from mlwarden.stats.drift import evaluate_drift


def model(features: dict[str, str]) -> ObservedModel:
    spec: dict[str, Any] = {
        "target": {"deployment": "m"},
        "features": [{"name": n, "type": t} for n, t in features.items()],
    }
    return parse_observed_model(
        {"apiVersion": "mlwarden.io/v1alpha1", "kind": "ObservedModel",
         "metadata": {"name": "m", "namespace": "ml"}, "spec": spec}
    )  # fmt: skip


def detector_evidence(
    ref: dict[str, list[Any]], cur: dict[str, list[Any]], om: ObservedModel
) -> list[Evidence]:
    return [e for e in through_the_detector(ref, cur, om) if e.type == "FeatureDrift"]


def binary(rng: np.random.Generator, p: float, n: int) -> list[str]:
    return ["fraud" if v else "ok" for v in rng.random(n) < p]


def test_the_categorical_floor_is_the_numeric_one() -> None:
    assert DEFAULT_MIN_EFFECT["chisquare"] == DEFAULT_MIN_EFFECT["ks"] == 0.05


def test_binary_rate_030_to_036_drifts_like_its_01_coding() -> None:
    rng = np.random.default_rng(19)
    ref_bits, cur_bits = rng.random(20_000) < 0.30, rng.random(20_000) < 0.36
    ref = {"fraud": ["fraud" if v else "ok" for v in ref_bits]}
    cur = {"fraud": ["fraud" if v else "ok" for v in cur_bits]}
    [cat] = check_columns(ref, cur, manifest=model({"fraud": "categorical"})).features
    num_ref = {"fraud": [float(v) for v in ref_bits]}
    num_cur = {"fraud": [float(v) for v in cur_bits]}
    [num] = check_columns(num_ref, num_cur, manifest=model({"fraud": "numeric"})).features
    assert cat.drifted and num.drifted
    assert cat.verdict is not None and num.verdict is not None
    assert cat.verdict.result.test == "chisquare" and num.verdict.result.test == "ks"
    d = stats.ks_2samp(ref_bits.astype(float), cur_bits.astype(float)).statistic
    assert cat.verdict.result.effect == pytest.approx(d, abs=1e-12)
    assert num.verdict.result.effect == pytest.approx(d, abs=1e-12)
    assert 0.05 < d < 0.07


def test_multilevel_change_of_the_same_size_drifts_a_point_does_not() -> None:
    rng = np.random.default_rng(4)
    levels = ["web", "app", "pos", "kiosk", "phone"]
    base = np.array([0.40, 0.25, 0.15, 0.12, 0.08])
    moved = base + np.array([-0.06, 0.0, 0.03, 0.03, 0.0])  # TVD 0.06
    nudged = base + np.array([-0.01, 0.0, 0.01, 0.0, 0.0])  # TVD 0.01: a point
    n = 200_000
    ref = {"channel": list(rng.choice(levels, n, p=base))}
    for p, drifts in ((moved, True), (nudged, False)):
        cur = {"channel": list(rng.choice(levels, n, p=p))}
        [f] = check_columns(ref, cur, manifest=model({"channel": "categorical"})).features
        assert f.verdict is not None
        assert f.drifted is drifts, f.verdict.reason
        true_tvd = 0.5 * np.abs(p - base).sum()
        assert f.verdict.result.effect == pytest.approx(true_tvd, abs=0.005)
        if not drifts:  # significant at this size, but negligible
            assert f.verdict.adjusted_p is not None and f.verdict.adjusted_p < 1e-6
            assert "below the effect floor" in f.verdict.reason


def test_numeric_001_sd_at_1m_rows_is_significant_but_not_drift() -> None:
    rng = np.random.default_rng(8)
    ref = NumericSketch.from_array(rng.normal(size=1_000_000))
    cur = NumericSketch.from_array(rng.normal(0.01, 1.0, 1_000_000), ref.edges)
    [v] = evaluate_drift({"x": ref}, {"x": cur}, {"x": "numeric"}, DriftCheck())
    assert not v.drifted
    assert v.result.effect < 0.01


def test_categorical_point_change_on_few_rows_is_not_drift_either() -> None:
    rng = np.random.default_rng(2)
    ref = CategoricalSketch.from_values(binary(rng, 0.30, 5000))
    cur = CategoricalSketch.from_values(binary(rng, 0.31, 5000))
    [v] = evaluate_drift({"x": ref}, {"x": cur}, {"x": "categorical"}, DriftCheck())
    assert not v.drifted


@pytest.mark.parametrize("seed", range(3))
def test_check_and_detector_agree_on_these_changes(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 6000
    levels = ["a", "b", "c", "d"]
    ref = {
        "rate": binary(rng, 0.30, n),
        "level": list(rng.choice(levels, n, p=[0.4, 0.3, 0.2, 0.1])),
        "small": [float(v) for v in rng.normal(size=n)],
        "point": binary(rng, 0.30, n),
    }
    cur = {
        "rate": binary(rng, 0.36, n),
        "level": list(rng.choice(levels, n, p=[0.34, 0.3, 0.23, 0.13])),
        "small": [float(v) for v in rng.normal(0.01, 1.0, n)],
        "point": binary(rng, 0.31, n),
    }
    om = model({"rate": "categorical", "level": "categorical", "small": "numeric",
                "point": "categorical"})  # fmt: skip
    report = check_columns(ref, cur, manifest=om)
    ours = [e for e in report.evidence if e.type == "FeatureDrift"]
    theirs = detector_evidence(ref, cur, om)
    assert [(e.feature, e.failing) for e in ours] == [(e.feature, e.failing) for e in theirs]
    for a, b in zip(ours, theirs, strict=True):
        assert a.statistic == pytest.approx(b.statistic, rel=1e-9)
        assert a.p_value == pytest.approx(b.p_value, rel=1e-9, abs=1e-300)
    assert report.drifted == ["rate", "level"]
