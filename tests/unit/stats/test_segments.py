"""Segments' pure logic: the heavy-hitters counter against exact counts, the segments' KS and
correction against scipy, and the false-alarm rate of the segment family by simulation."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import pytest
from scipy.stats import chi2_contingency, ks_2samp, kstwo, kstwobign

from mlwarden.stats import CategoricalSketch, NumericSketch, numeric_edges
from mlwarden.stats.segments import (
    OTHER,
    SpaceSaving,
    capacity_for,
    ks_limit_score,
    level_index,
    segment_drift,
    top_levels,
)


@dataclass(frozen=True)
class Check:
    """A drift check's settings (`stats.drift.DriftSettings`)."""

    enabled: bool = True
    test: str = "auto"
    p_value: float = 0.01
    correction: str = "bonferroni"
    min_effect: float | None = None


def test_space_saving_finds_every_frequent_value_with_bounded_error() -> None:
    rng = np.random.default_rng(1)
    values = [f"v{v}" for v in rng.zipf(1.3, size=50_000)]  # thousands of distinct values
    counter = SpaceSaving.empty(64)
    for start in range(0, len(values), 500):  # in batches, as the detector counts them
        counter.add(Counter(values[start : start + 500]).items())
    exact = Counter(values)
    n = len(values)
    assert counter.total == n
    assert len(counter.counts) <= 64 < len(exact)
    for value, count in exact.items():
        if count > n / 64:  # Metwally et al.: every value above N / capacity is kept
            assert value in counter.counts
    for value, estimate in counter.counts.items():
        assert exact[value] <= estimate <= exact[value] + n / 64
        assert counter.guaranteed(value) <= exact[value]
    # The top levels are the exact top ones where the frequencies are well apart.
    exact_top = [v for v, _ in exact.most_common(5)]
    assert list(top_levels(counter, 5)) == exact_top


def test_memory_stays_at_capacity_whatever_the_distinct_values() -> None:
    counter = SpaceSaving.empty(capacity_for(20))
    rng = np.random.default_rng(2)
    for _ in range(20):
        counter.add_values([f"user-{i}" for i in rng.integers(0, 10**9, size=5_000)] + [None])
    assert len(counter.counts) == len(counter.errors) == counter.capacity == 80
    assert counter.total == 20 * 5_001


def test_top_levels_keep_other_as_the_rest_and_index_rows() -> None:
    counter = SpaceSaving.empty(16)
    counter.add_values(["BR"] * 5 + ["other"] * 9 + ["US"] * 7 + ["FR"] * 1)
    levels = top_levels(counter, 2)
    assert levels == ("US", "BR")  # the value "other" is never a level of its own
    index = level_index(["US", None, "FR", "BR", "other"], levels)
    assert index.tolist() == [0, 2, 2, 1, 2]
    assert OTHER == "other"
    with pytest.raises(ValueError, match="capacity"):
        SpaceSaving.empty(0)


@pytest.mark.parametrize(("n1", "n2", "shift"), [(40, 35, 0.0), (200, 60, 0.5), (1000, 300, 1.0)])
def test_segment_ks_is_scipy_d_with_kolmogorov_limit_never_below_the_finite_n_p(
    n1: int, n2: int, shift: float
) -> None:
    rng = np.random.default_rng(n1 + n2)
    a, b = rng.normal(size=n1), rng.normal(shift, size=n2)
    a = np.round(a, 1)  # fewer than 128 distinct values: the sketch is lossless
    ref = NumericSketch(numeric_edges(a))
    ref.add(a)
    cur = ref.empty_like()
    cur.add(b)
    res = ks_limit_score(ref, cur)
    scipy_res = ks_2samp(a, b, method="asymp")
    assert res.statistic == pytest.approx(scipy_res.statistic, abs=1e-12)
    en = round(n1 * n2 / (n1 + n2))
    assert res.p_value == pytest.approx(kstwobign.sf(res.statistic * np.sqrt(en)), rel=1e-9)
    assert res.p_value >= kstwo.sf(res.statistic, en) * (1 - 1e-9)
    assert res.p_value >= scipy_res.pvalue * (1 - 1e-9)


def test_the_limit_is_never_below_the_finite_n_law_on_a_grid() -> None:
    for n in (5, 10, 30, 100, 1000, 9999):
        for d in np.linspace(0.01, 0.99, 50):
            assert kstwobign.sf(d * np.sqrt(n)) >= kstwo.sf(d, n) * (1 - 1e-9), (n, d)


def _sketches(rng: np.random.Generator, n: int, edges: np.ndarray, shift: float = 0.0):
    num = NumericSketch(edges)
    num.add(rng.normal(shift, size=n))
    cat = CategoricalSketch()
    cat.add(list(rng.choice(["a", "b", "c"], size=n, p=[0.5, 0.3, 0.2])))
    return {"x": num, "k": cat}


def test_one_correction_spans_every_segment_and_feature_as_scipy_computes_it() -> None:
    rng = np.random.default_rng(7)
    edges = numeric_edges(rng.normal(size=2000))
    segments = [("country", c) for c in ("BR", "US", "FR")] + [("device", "ios")]
    reference = {s: _sketches(rng, 400, edges) for s in segments}
    current = {s: _sketches(rng, 120, edges, shift=1.0 if s[1] == "BR" else 0.0) for s in segments}
    out = segment_drift(reference, current, {"x": "numeric", "k": "categorical"}, Check())
    assert len(out) == 8
    m = 8
    for v in out:
        ref, cur = (
            reference[(v.column, v.level)][v.verdict.feature],
            current[(v.column, v.level)][v.verdict.feature],
        )
        if v.verdict.feature == "x":
            d = float(
                np.max(
                    np.abs(np.cumsum(ref.counts) / ref.total - np.cumsum(cur.counts) / cur.total)
                )
            )
            en = round(ref.total * cur.total / (ref.total + cur.total))
            p = kstwobign.sf(d * np.sqrt(en))
        else:
            cats = sorted(set(ref.counts) | set(cur.counts))
            table = [[ref.counts.get(c, 0) for c in cats], [cur.counts.get(c, 0) for c in cats]]
            p = chi2_contingency(table, correction=False).pvalue
        assert v.verdict.adjusted_p == pytest.approx(min(1.0, p * m), rel=1e-6)
        assert "Bonferroni over 8 segment × feature tests" in v.verdict.reason
    drifted = {(v.level, v.verdict.feature) for v in out if v.verdict.drifted}
    assert drifted == {("BR", "x")}


def _family_alarm_rate(
    n_segments: int, trials: int, *, per_segment: bool, alpha: float, seed: int
) -> float:
    """Share of stationary evaluations where any (segment, feature) pair is flagged.

    `per_segment`: each segment corrected alone (over its features), what a per-segment
    check without the family correction would do.
    """
    rng = np.random.default_rng(seed)
    edges = numeric_edges(rng.normal(size=5000))
    types = {f"x{i}": "numeric" for i in range(4)} | {"k": "categorical"}
    check = Check(p_value=alpha, min_effect=0.0)  # the correction alone: no effect floor
    alarms = 0
    for _ in range(trials):
        segs = [("s", str(i)) for i in range(n_segments)]

        def side(n: int) -> dict[str, object]:
            out: dict[str, object] = {}
            for name, kind in types.items():
                if kind == "numeric":
                    sk = NumericSketch(edges)
                    sk.add(rng.normal(size=n))
                else:
                    sk = CategoricalSketch()
                    sk.add(list(rng.choice(["a", "b", "c", "d"], size=n)))
                out[name] = sk
            return out

        reference = {s: side(300) for s in segs}
        current = {s: side(150) for s in segs}
        if per_segment:
            flagged = any(
                v.verdict.drifted
                for s in segs
                for v in segment_drift({s: reference[s]}, {s: current[s]}, types, check)
            )
        else:
            flagged = any(
                v.verdict.drifted for v in segment_drift(reference, current, types, check)
            )
        alarms += flagged
    return alarms / trials


def test_adding_segments_does_not_raise_the_false_alarm_rate() -> None:
    """Stationary traffic, 5 features per segment, at alpha 0.1 (so that rates are measurable
    in a few hundred trials): with one correction over segments x features the share of
    evaluations with any finding stays at most alpha for 1, 5 and 20 segments; corrected per
    segment only, it grows with the segments (towards 1 - 0.9^20 = 0.88)."""
    alpha, trials = 0.1, 200
    rates = {
        s: _family_alarm_rate(s, trials, per_segment=False, alpha=alpha, seed=s) for s in (1, 5, 20)
    }
    sigma = np.sqrt(alpha * (1 - alpha) / trials)
    print("family-wise false-alarm rate per evaluation by segments:", rates)
    for s, rate in rates.items():
        assert rate <= alpha + 3 * sigma, (s, rate)
    naive = _family_alarm_rate(20, 60, per_segment=True, alpha=alpha, seed=99)
    print("corrected per segment only, 20 segments:", naive)
    assert naive > 3 * alpha
