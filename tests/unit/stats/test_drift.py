"""The drift layer: test choice, correction across features, effect floors, false alarms."""

from __future__ import annotations

import ast
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from mlwarden.spec import DriftCheck
from mlwarden.stats import drift
from mlwarden.stats.drift import (
    DEFAULT_MIN_EFFECT,
    DEFAULT_THRESHOLD,
    evaluate_drift,
    pick_test,
)
from mlwarden.stats.result import TestResult
from mlwarden.stats.sketch import CategoricalSketch, NumericSketch, Sketch, numeric_edges


def numeric_pair(
    reference: np.ndarray, current: np.ndarray, chunk: int | None = None
) -> tuple[NumericSketch, NumericSketch]:
    edges = numeric_edges(reference)
    ref, cur = NumericSketch(edges), NumericSketch(edges)
    step = chunk or max(reference.size, current.size, 1)
    for sketch, values in ((ref, reference), (cur, current)):
        for start in range(0, values.size, step):
            sketch.add(values[start : start + step])
    return ref, cur


# ---------------------------------------------------------------------- pick_test


def test_pick_test() -> None:
    assert pick_test("numeric", "auto") == "ks"
    assert pick_test("categorical", "auto") == "chisquare"
    assert pick_test("numeric", "psi") == "psi"
    assert pick_test("categorical", "jensenshannon") == "jensenshannon"
    with pytest.raises(ValueError, match="'ks' does not apply to categorical features"):
        pick_test("categorical", "ks")
    with pytest.raises(ValueError, match="'chisquare' does not apply to numeric"):
        pick_test("numeric", "chisquare")
    with pytest.raises(ValueError, match="unknown drift test"):
        pick_test("numeric", "anderson")
    with pytest.raises(ValueError, match="unknown feature type"):
        pick_test("text", "auto")


def test_defaults_cover_every_test() -> None:
    assert set(DEFAULT_MIN_EFFECT) == set(drift.SCORES)
    assert set(DEFAULT_THRESHOLD) == {"wasserstein", "psi", "jensenshannon"}
    assert all(DEFAULT_MIN_EFFECT[t] == v for t, v in DEFAULT_THRESHOLD.items())


# ---------------------------------------------------------------------- floors


def test_half_sigma_shift_is_flagged_by_ks() -> None:
    rng = np.random.default_rng(11)
    ref, cur = numeric_pair(rng.normal(size=2000), rng.normal(0.5, 1.0, 2000))
    [verdict] = evaluate_drift({"x": ref}, {"x": cur}, {"x": "numeric"}, DriftCheck())
    assert verdict.drifted and verdict.result.test == "ks"
    assert verdict.result.effect >= DEFAULT_MIN_EFFECT["ks"]
    assert verdict.adjusted_p is not None and verdict.adjusted_p < 1e-12
    assert verdict.reason.startswith("KS adjusted p=")
    assert "(Bonferroni over 1 feature)" in verdict.reason and "D=0." in verdict.reason


def test_negligible_shift_at_a_million_is_significant_but_not_flagged() -> None:
    # The point of the floor: 0.02 sigma over 10^6 values a side is "significant"
    # (p ~ 1e-40) yet moves the CDF by under 1 percentage point.
    rng = np.random.default_rng(12)
    reference = rng.normal(size=1_000_000)
    current = rng.normal(0.02, 1.0, 1_000_000)
    ref, cur = numeric_pair(reference, current, chunk=50_000)
    assert cur.total == 1_000_000
    [verdict] = evaluate_drift({"x": ref}, {"x": cur}, {"x": "numeric"}, DriftCheck())
    assert verdict.result.p_value is not None and verdict.result.p_value < 1e-6
    assert verdict.result.effect < 0.02
    assert not verdict.drifted
    assert "below the effect floor 0.05" in verdict.reason
    # With no floor the same data is flagged: the floor, not the test, decided.
    [bare] = evaluate_drift({"x": ref}, {"x": cur}, {"x": "numeric"}, DriftCheck(min_effect=0.0))
    assert bare.drifted


def test_scale_change_of_one_and_a_half_is_flagged_at_a_million() -> None:
    # A 1.5x scale change moves a normal CDF by 9.7 points at most (D = 0.097): under the
    # old floor of 0.1 it was missed at large sizes. The default floor must catch it and
    # still leave the 0.02 sigma shift above (D = 0.008) alone.
    rng = np.random.default_rng(14)
    ref, cur = numeric_pair(
        rng.normal(size=1_000_000), rng.normal(0.0, 1.5, 1_000_000), chunk=50_000
    )
    [verdict] = evaluate_drift({"x": ref}, {"x": cur}, {"x": "numeric"}, DriftCheck())
    assert 0.09 <= verdict.result.effect < 0.1
    assert verdict.drifted


@pytest.mark.parametrize("test", ["wasserstein", "psi", "jensenshannon"])
def test_distance_tests_use_their_threshold(test: str) -> None:
    rng = np.random.default_rng(13)
    reference = rng.normal(size=5000)
    ref, same = numeric_pair(reference, rng.normal(size=5000))
    _, moved = numeric_pair(reference, rng.normal(1.0, 1.0, 5000))
    check = DriftCheck(test=test)
    sketches: dict[str, Sketch] = {"same": same, "moved": moved}
    verdicts = evaluate_drift(
        {"same": ref, "moved": ref}, sketches, {"same": "numeric", "moved": "numeric"}, check
    )
    by_name = {v.feature: v for v in verdicts}
    assert not by_name["same"].drifted and by_name["moved"].drifted
    assert by_name["moved"].adjusted_p is None
    assert f"threshold {DEFAULT_THRESHOLD[test]:.2g}" in by_name["moved"].reason
    # min_effect replaces the threshold.
    [high] = evaluate_drift(
        {"moved": ref}, {"moved": moved}, {"moved": "numeric"}, DriftCheck(test=test, min_effect=50)
    )
    assert not high.drifted


# ---------------------------------------------------------------------- correction


def fake_scores(monkeypatch: pytest.MonkeyPatch, p_values: dict[str, float]) -> dict[str, Sketch]:
    """Sketches whose KS 'result' is a given p-value with a large effect."""
    sketches: dict[str, Sketch] = {
        name: NumericSketch(np.array([float(i)])) for i, name in enumerate(p_values)
    }
    by_id = {id(s): p_values[name] for name, s in sketches.items()}

    def score(reference: Sketch, current: Sketch) -> TestResult:
        return TestResult("ks", 0.5, by_id[id(reference)], 0.5, 100, 100)

    monkeypatch.setitem(drift.SCORES, "ks", score)
    for s in sketches.values():
        s.add(np.zeros(100))
    return sketches


def test_bonferroni_versus_benjamini_hochberg(monkeypatch: pytest.MonkeyPatch) -> None:
    # The textbook set of test_correction: Bonferroni flags one, BH two.
    known = [0.001, 0.008, 0.039, 0.041, 0.042, 0.06, 0.074, 0.205, 0.212, 0.216]
    p_values = {f"f{i}": p for i, p in enumerate(known)}
    sketches = fake_scores(monkeypatch, p_values)
    types = dict.fromkeys(p_values, "numeric")
    bon = evaluate_drift(sketches, sketches, types, DriftCheck(p_value=0.05))
    bh = evaluate_drift(
        sketches, sketches, types, DriftCheck(p_value=0.05, correction="benjamini-hochberg")
    )
    none = evaluate_drift(sketches, sketches, types, DriftCheck(p_value=0.05, correction="none"))
    assert [v.feature for v in bon if v.drifted] == ["f0"]
    assert [v.feature for v in bh if v.drifted] == ["f0", "f1"]
    assert [v.feature for v in none if v.drifted] == ["f0", "f1", "f2", "f3", "f4"]
    assert bon[0].adjusted_p == pytest.approx(0.01)
    assert "Bonferroni over 10 features" in bon[0].reason
    assert "Benjamini-Hochberg over 10 features" in bh[1].reason
    assert bon[1].reason.startswith("not significant: KS adjusted p=0.08 > 0.05")


def test_correction_counts_only_features_with_p_values() -> None:
    rng = np.random.default_rng(14)
    a, b = numeric_pair(rng.normal(size=500), rng.normal(size=500))
    c, d = numeric_pair(rng.normal(size=500), rng.normal(size=10))  # skipped: 10 < 30
    types = {"a": "numeric", "c": "numeric"}
    verdicts = evaluate_drift({"a": a, "c": c}, {"a": b, "c": d}, types, DriftCheck())
    assert "over 1 feature)" in verdicts[0].reason
    assert verdicts[1].reason == "skipped: 10 current values, fewer than the 30 needed"
    assert not verdicts[1].drifted and verdicts[1].adjusted_p is None


# ---------------------------------------------------------------------- categories


def test_unseen_categories_are_flagged_by_chisquare() -> None:
    rng = np.random.default_rng(15)
    reference = rng.choice(["visa", "mastercard", "amex"], 3000, p=[0.6, 0.3, 0.1])
    current = np.concatenate([rng.choice(["visa", "mastercard", "amex"], 800), ["crypto"] * 200])
    ref = CategoricalSketch.from_values(reference.tolist())
    cur = CategoricalSketch.from_values(current.tolist())
    [verdict] = evaluate_drift({"card": ref}, {"card": cur}, {"card": "categorical"}, DriftCheck())
    assert verdict.result.test == "chisquare" and verdict.drifted
    assert verdict.result.effect >= DEFAULT_MIN_EFFECT["chisquare"]
    assert "TVD=" in verdict.reason


def test_million_distinct_categories_stay_bounded() -> None:
    ids = [f"user-{i}" for i in range(1_000_000)]
    ref = CategoricalSketch()
    for start in range(0, len(ids), 100_000):
        ref.add(ids[start : start + 100_000])
    cur = CategoricalSketch.from_values([f"user-{i}" for i in range(2_000_000, 2_010_000)])
    assert len(ref.counts) <= ref.max_categories and len(cur.counts) <= cur.max_categories
    assert ref.total == 1_000_000 and ref.other == 1_000_000 - ref.max_categories
    # Comparable, and bounded: the reference overflowed, so new ids fold into `other`.
    [verdict] = evaluate_drift({"id": ref}, {"id": cur}, {"id": "categorical"}, DriftCheck())
    assert verdict.result.p_value is not None


# ---------------------------------------------------------------------- wiring


def test_wiring_errors_and_disabled_check() -> None:
    ref, cur = numeric_pair(np.arange(50.0), np.arange(50.0))
    assert evaluate_drift({"x": ref}, {"x": cur}, {"x": "numeric"}, DriftCheck(enabled=False)) == []
    with pytest.raises(ValueError, match="no reference or current sketch for feature"):
        evaluate_drift({"x": ref}, {}, {"x": "numeric"}, DriftCheck())
    with pytest.raises(ValueError, match="'x' is categorical but its sketches are NumericSketch"):
        evaluate_drift({"x": ref}, {"x": cur}, {"x": "categorical"}, DriftCheck())
    with pytest.raises(ValueError, match="does not apply"):
        evaluate_drift({"x": ref}, {"x": cur}, {"x": "numeric"}, DriftCheck(test="chisquare"))
    [empty] = evaluate_drift({"x": ref.empty_like()}, {"x": cur}, {"x": "numeric"}, DriftCheck())
    assert empty.reason == "skipped: the reference has no values" and not empty.drifted


# ---------------------------------------------------------------------- false alarms

Draw = Callable[[np.random.Generator, int], np.ndarray]
_STATIONARY: list[Draw] = [
    lambda rng, n: rng.normal(size=n),
    lambda rng, n: rng.exponential(size=n),
    lambda rng, n: rng.uniform(size=n),
    lambda rng, n: rng.lognormal(size=n),
    lambda rng, n: rng.standard_t(4, n),
    lambda rng, n: rng.normal(5, 2, n).round(1),  # ties
    lambda rng, n: rng.gamma(2.0, size=n),
    lambda rng, n: rng.beta(2, 5, n),
    lambda rng, n: rng.laplace(size=n),
    lambda rng, n: rng.poisson(20, n).astype(float),  # discrete
]


def test_family_wise_false_alarm_rate_under_no_drift() -> None:
    # 200 evaluations of 10 stationary features (n = m = 1000), Bonferroni at 0.01.
    # If the family-wise rate were exactly the nominal 0.01, alarms ~ Binomial(200,
    # 0.01) (mean 2) and P(alarms >= 7) = 0.0043: we assert <= 6. The KS p-value
    # read off a sketch is conservative (D can only be underestimated; ties make
    # kstwo conservative), so the rate should sit below nominal. Fixed seed:
    # 1 alarm without the effect floor, 0 with it.
    rng = np.random.default_rng(20240601)
    types = {f"f{i}": "numeric" for i in range(len(_STATIONARY))}
    bare = floored = 0
    for _ in range(200):
        reference: dict[str, Sketch] = {}
        current: dict[str, Sketch] = {}
        for i, draw in enumerate(_STATIONARY):
            reference[f"f{i}"], current[f"f{i}"] = numeric_pair(draw(rng, 1000), draw(rng, 1000))
        no_floor = evaluate_drift(reference, current, types, DriftCheck(min_effect=0.0))
        default = evaluate_drift(reference, current, types, DriftCheck())
        bare += any(v.drifted for v in no_floor)
        floored += any(v.drifted for v in default)
    assert stats.binom.sf(6, 200, 0.01) < 0.005
    assert bare <= 6
    assert floored <= bare


def test_stats_takes_plain_settings_and_imports_nothing_of_the_spec() -> None:
    """stats is the lowest pure core: any object with the settings' fields will do."""

    @dataclass(frozen=True)
    class Settings:
        enabled: bool = True
        test: str = "auto"
        p_value: float = 0.01
        correction: str = "bonferroni"
        min_effect: float | None = None

    rng = np.random.default_rng(5)
    ref = NumericSketch.from_array(rng.normal(size=3000))
    cur = NumericSketch.from_array(rng.normal(0.5, size=3000), ref.edges)
    plain = evaluate_drift({"x": ref}, {"x": cur}, {"x": "numeric"}, Settings())
    assert plain == evaluate_drift({"x": ref}, {"x": cur}, {"x": "numeric"}, DriftCheck())
    assert plain[0].drifted
    package = Path(drift.__file__).parent
    for path in package.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom | ast.Import):
                names = (
                    [node.module]
                    if isinstance(node, ast.ImportFrom)
                    else [a.name for a in node.names]
                )
                assert not any(n and n.startswith("mlwarden.spec") for n in names), path.name
