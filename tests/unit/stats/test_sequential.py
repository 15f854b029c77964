"""Sequential drift decisions (stats/sequential.py): the windows and tests are scipy's, the
false-alarm rate on stationary streams is within the documented bound, and drifted streams
are caught; the delays are printed (pytest -s) and bounded loosely.

Fast by design (seconds): the bound is checked at a rate of one false alarm per 2,000
records, where alarms are frequent enough to count in 200,000 records; the default rate (one
per 1,000,000) is measured by benchmarks/stream_delay.py.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable

import numpy as np
import pytest
from scipy import stats

from mlwarden.stats import sequential
from mlwarden.stats.distributions import chi2_sf_int
from mlwarden.stats.sequential import (
    MAX_LEVELS,
    SCAN_CELLS,
    Finding,
    ScanColumn,
    SequentialScan,
    _ansari_bradley,
    _rank_sum,
    bins_for,
    coarse_cells,
    ladder,
)
from mlwarden.stats.sketch import CategoricalSketch, NumericSketch

Gen = Callable[[np.random.Generator, int], np.ndarray]


def test_ladder() -> None:
    assert ladder(1000) == [32, 64, 128, 256, 512, 1000]
    assert ladder(32) == [32]
    assert ladder(10) == [10]
    assert len(ladder(10**9)) == MAX_LEVELS


def scan_of(
    columns: list[ScanColumn],
    *,
    per: float = 1e6,
    every: int = 50,
    seconds: float = 0.0,
    max_window: int = 1000,
    clear_alpha: float = 0.01,
) -> SequentialScan:
    return SequentialScan(columns, false_alarms_per=per, look_every=every, look_seconds=seconds,
                          max_window=max_window, clear_alpha=clear_alpha, now=0.0)  # fmt: skip


def test_window_statistics_are_scipys_on_the_last_records() -> None:
    rng = np.random.default_rng(1)
    ref = rng.integers(0, 40, 1000).astype(float)  # 40 distinct values: a lossless sketch
    cats = rng.choice(list("abcdefg"), 1000, p=[0.3, 0.2, 0.2, 0.1, 0.1, 0.06, 0.04])
    scan = scan_of(
        [
            ScanColumn("x", NumericSketch.from_array(ref), 0.05),
            ScanColumn("c", CategoricalSketch.from_values(list(cats)), 0.05),
        ],
        clear_alpha=0.0,  # every look of the largest window reports (clear or alarm)
    )
    xs = rng.integers(0, 40, 3000).astype(float)  # within the reference's values: no new ties
    cs = rng.choice(list("abcdefgz"), 3000)
    got: list[Finding] = []
    for start in range(0, 3000, 250):
        part = slice(start, start + 250)
        got += scan.add(scan.cells({"x": xs[part], "c": list(cs[part])}, 250), now=start)
    assert got
    seen = scan.records
    assert {f.column for f in got[-2:]} == {"x", "c"}  # both branches below are checked
    for f in got[-2:]:
        if f.column == "x":
            window = xs[seen - f.window : seen]
            s = stats.ks_2samp(ref, window, method="asymp")
            assert f.statistic == pytest.approx(s.statistic, abs=1e-12)
            # The rank-sum test, values of a cell tied (here a cell is one value: scipy's
            # midranks exactly), normal approximation without continuity correction.
            p_rank = stats.mannwhitneyu(window, ref, method="asymptotic",
                                        use_continuity=False).pvalue  # fmt: skip
            # The 8-bin chi-square: bin j starts at the least value with j/8 of the reference
            # below it.
            starts = [min(u for u in range(41) if np.sum(ref < u) >= j * 1000 / 8)
                      for j in range(1, 8)]  # fmt: skip
            bins = [np.searchsorted(starts, a, side="right") for a in (ref, window)]
            p_bins = pooled_chisquare(bins[0], bins[1], list(range(8)))[1]
            p_scale = ansari_bradley(window, ref)
            assert f.p_value == pytest.approx(min(1.0, 3 * min(p_rank, p_scale, p_bins)),
                                              rel=1e-9)  # fmt: skip
        else:
            window = cs[seen - f.window : seen]
            chi, p, tvd = pooled_chisquare(cats, window, list("abcdefgz"))
            assert f.statistic == pytest.approx(chi, rel=1e-9)
            assert f.p_value == pytest.approx(p, rel=1e-9, abs=1e-300)
            assert f.effect == pytest.approx(tvd)


def ansari_bradley(x: np.ndarray, y: np.ndarray) -> float:
    """The Ansari-Bradley test's two-sided p-value with ties, as the scan computes it: the
    scores |r - (N + 1) / 2| at scipy's mid-ranks r (scipy's `ansari` scores
    min(r, N + 1 - r), the same up to sign and shift), their exact permutation mean and
    variance, normal approximation. scipy's own takes the mean of untied scores, which
    differs where a tie straddles the middle; without ties the two are one (next test)."""
    both = np.concatenate([x, y])
    score = np.abs(stats.rankdata(both) - (both.size + 1) / 2)
    m, n, total = x.size, y.size, both.size
    t = score[:m].sum() - m * score.mean()
    var = m * n / (total * (total - 1)) * ((score - score.mean()) ** 2).sum()
    return float(stats.chi2.sf(t * t / var, 1))


def test_ansari_bradley_is_scipys_without_ties() -> None:
    rng = np.random.default_rng(5)
    ref = rng.normal(size=1000)
    for spread in (1.0, 1.2, 0.8):
        window = rng.normal(size=300) * spread
        edges = np.sort(np.concatenate([ref, window]))
        cells = [np.isin(edges, a).astype(np.float64)[None, None, :] for a in (ref, window)]
        ties = cells[0] + cells[1]
        below = np.cumsum(ties, axis=-1) - ties
        p = _ansari_bradley(ties, np.array([1000.0]), cells[1], np.array([[300.0]]), below=below)
        assert float(p[0, 0]) == pytest.approx(stats.ansari(window, ref).pvalue, rel=1e-9)
        assert float(p[0, 0]) == pytest.approx(ansari_bradley(window, ref), rel=1e-9)


def spread_delays(streams: int = 30) -> list[int]:
    """Records from the onset to the first alarm of `streams` normal columns whose sd grows
    1.5 times (KS D 0.13, above the floor), each a column of one scan at one false alarm per
    1,000,000 records per column, in batches of 10 (as benchmarks/scan_sim.py delays)."""
    rng = np.random.default_rng(11)
    pre, post = 1_517, 1_000
    scan = scan_of([ScanColumn(f"c{i}", NumericSketch.from_array(rng.normal(size=1000)), 0.05)
                    for i in range(streams)], per=1e6 / streams, clear_alpha=0.0)  # fmt: skip
    after = np.arange(pre + post) >= pre
    data = rng.normal(size=(streams, pre + post)) * np.where(after, 1.5, 1.0)
    first: dict[str, int] = {}
    for start in range(0, pre + post, 10):
        batch = {f"c{i}": data[i, start : start + 10] for i in range(streams)}
        for f in scan.add(scan.cells(batch, 10), now=float(start), watch=()):
            assert not (f.alarm and start < pre), f.message
            if f.alarm:
                first.setdefault(f.column, start + 10 - pre)
    return [first.get(f"c{i}", post) for i in range(streams)]


def test_a_change_of_spread_is_caught_by_the_scale_test(monkeypatch: pytest.MonkeyPatch) -> None:
    # The Ansari-Bradley test catches it in a median of 183 records over 300 streams
    # (benchmarks/scan_sim.py delays); the binned chi-square alone took 283, and the
    # rank-sum never sees it.
    with_scale = statistics.median(spread_delays())
    monkeypatch.setattr(sequential, "_ansari_bradley", lambda *a, **_: np.ones_like(a[3]))
    without = statistics.median(spread_delays())
    assert with_scale <= 233 < without, (with_scale, without)


def test_the_bonferroni_factor_is_the_number_of_tests_run() -> None:
    # A continuous column and a 0/1 column at 10% (one cell heavier than TIE_SHARE), on the
    # shortest rung (too short for bins) and the longest: 2, 1, 3 and 2 tests.
    rng = np.random.default_rng(7)
    ref_x, ref_z = rng.normal(size=1000), (rng.random(1000) < 0.1).astype(float)
    scan = scan_of([ScanColumn("x", NumericSketch.from_array(ref_x), 0.05),
                    ScanColumn("z", NumericSketch.from_array(ref_z), 0.05)])  # fmt: skip
    x, z = rng.normal(size=1200), (rng.random(1200) < 0.1).astype(float)
    scan.add(scan.cells({"x": x, "z": z}, 1200), now=0.0)
    levels = [lv for lv in scan.levels if lv.size in (32, 1000)]
    windows = scan.totals[None, :] - np.stack([lv.snapshots[0].totals for lv in levels])
    due = [sequential._Due(lv.size, lv.size, lv.snapshots[0].time) for lv in levels]
    _, p, _, _, _, parts = scan._p_values("ks", scan._num, windows, due)
    p_loc, p_scale, p_bins, heavy, has_bins = parts
    assert heavy.tolist() == [[False, True], [False, True]]
    assert has_bins.tolist() == [[False, False], [True, True]]
    assert (p_scale[:, 1] == 1.0).all() and (p_bins[0] == 1.0).all()
    expected = [[2 * min(p_loc[0, 0], p_scale[0, 0]), p_loc[0, 1]],
                [3 * min(p_loc[1, 0], p_scale[1, 0], p_bins[1, 0]),
                 2 * min(p_loc[1, 1], p_bins[1, 1])]]  # fmt: skip
    assert p == pytest.approx(np.minimum(1.0, expected), rel=1e-12)
    # The heavy column's location test is KS (Kolmogorov's limit), not the rank-sum.
    window = z[-int(windows[1, scan._num["gather"][1]].sum()) :]
    d = stats.ks_2samp(ref_z, window).statistic
    size = np.sqrt(1000 * window.size / (1000 + window.size))
    assert p_loc[1, 1] == pytest.approx(stats.kstwobign.sf(d * size), rel=1e-6)
    # An alarm's message names the tests that ran, each with its p-value.
    parts_z = sequential._tests_run(1e-9, 1.0, 0.25, True, True)
    assert parts_z == [("KS", 1e-9), ("binned chi-square", 0.25)]
    f = scan._finding("ks", "z", "alarm", 0.2, 2e-9, 1e-8, 0.2, 0.05, 1000, 1000, 0.0, parts_z)
    assert "p=2e-09 (twice the smaller of KS p=1e-09, binned chi-square p=0.25) ≤ 1e-08" in (
        f.message
    )
    three = sequential._tests_run(0.5, 1e-7, 0.01, False, True)
    f = scan._finding("ks", "x", "alarm", 0.1, 3e-7, 1e-6, 0.1, 0.05, 900, 1000, 0.0, three)
    assert ("(three times the least of rank-sum p=0.5, Ansari-Bradley p=1e-07, binned "
            "chi-square p=0.01)") in f.message  # fmt: skip
    quiet = scan._finding("ks", "x", "clear", 0.01, 0.999999, 1e-6, 0.01, 0.05, 900, 1000, 0.0,
                          three)  # fmt: skip
    assert "p=1 (clear above" in quiet.message and "times the least" not in quiet.message


def pooled_chisquare(ref: np.ndarray, window: np.ndarray, levels: list) -> tuple[float, ...]:
    """scipy's chi-square of homogeneity, pooled as the scan pools (the levels whose expected
    count in the smaller row is below 20 in one cell, with the least other level if that cell
    still expects fewer than 20): statistic, p-value, TVD."""
    small = min(len(ref), len(window)) / (len(ref) + len(window))
    expected = {c: (np.sum(ref == c) + np.sum(window == c)) * small for c in levels}
    keep = [c for c in levels if expected[c] >= 20]
    rest = [c for c in levels if c not in keep]
    if keep and 0 < sum(expected[c] for c in rest) < 20:  # the pooled cell expects 20 too
        least = min(keep, key=lambda c: expected[c])
        keep.remove(least)
        rest.append(least)
    table = np.array(
        [[np.sum(np.isin(a, [c])) for c in keep] + [np.sum(np.isin(a, rest))]
         for a in (ref, window)]
    )  # fmt: skip
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        return 0.0, 1.0, 0.0
    chi = stats.chi2_contingency(table, correction=False)
    shares = table / table.sum(axis=1, keepdims=True)
    return chi.statistic, chi.pvalue, 0.5 * np.abs(shares[0] - shares[1]).sum()


def test_integer_chi_square_tail_is_scipys() -> None:
    df = np.arange(1, 60)[:, None].repeat(7, axis=1)
    x = np.array([0.0, 0.3, 1.0, 5.0, 30.0, 120.0, 600.0])[None, :] * np.ones_like(df)
    got = chi2_sf_int(df, x)
    want = stats.chi2.sf(x, df)
    assert np.allclose(got, want, rtol=1e-9, atol=1e-300)
    assert chi2_sf_int(3, 7.0) == pytest.approx(stats.chi2.sf(7.0, 3), rel=1e-12)


# ------------------------------------------------------------------- stationary streams

STREAMS: dict[str, tuple[str, Gen]] = {
    "normal": ("numeric", lambda r, n: r.normal(size=n)),
    "heavy-tailed t(2)": ("numeric", lambda r, n: r.standard_t(2, size=n)),
    "discrete with ties (Poisson 3)": ("numeric", lambda r, n: r.poisson(3, n).astype(float)),
    "binary, p = 0.3": ("categorical", lambda r, n: np.where(r.random(n) < 0.3, "yes", "no")),
    "categorical, rare levels": (
        "categorical",
        lambda r, n: r.choice(
            [f"l{i}" for i in range(30)], n, p=np.r_[[0.5, 0.2, 0.1], np.full(27, 0.2 / 27)]
        ),
    ),
}


def run_streams(
    streams: int,
    length: int,
    per: float,
    shift: Callable[[str, np.ndarray, int], np.ndarray],
    max_window: int = 1000,
) -> tuple[dict[str, list[int]], SequentialScan]:
    """Alarm positions per column over `streams` streams, each with its own reference."""
    alarms: dict[str, list[int]] = {name: [] for name in STREAMS}
    scan = None
    for s in range(streams):
        rng = np.random.default_rng([19, s])
        columns = []
        for name, (kind, gen) in STREAMS.items():
            ref = gen(rng, 1000)
            sketch = (
                NumericSketch.from_array(ref)
                if kind == "numeric"
                else CategoricalSketch.from_values(list(ref))
            )
            columns.append(ScanColumn(name, sketch, 0.05))
        scan = scan_of(columns, per=per, max_window=max_window)
        data = {name: shift(name, gen(rng, length), length) for name, (_, gen) in STREAMS.items()}
        for start in range(0, length, 100):
            part = {k: v[start : start + 100] for k, v in data.items()}
            values = {k: (v if STREAMS[k][0] == "numeric" else list(v)) for k, v in part.items()}
            for f in scan.add(scan.cells(values, 100), now=start / 100):
                if f.alarm:
                    alarms[f.column].append(s * length + scan.records)
    assert scan is not None
    return alarms, scan


def test_stationary_false_alarms_within_the_bound() -> None:
    # Many short streams, each with its own reference: the bound is an expectation over
    # reference draws too, and one unlucky reference alarms more than its share for life.
    per, streams, length = 2000.0, 120, 2_000
    alarms, scan = run_streams(streams, length, per, lambda _n, x, _l: x, max_window=512)
    records = streams * length
    bound = records / per  # expected alarming looks, all columns together
    counts = {k: len(v) for k, v in alarms.items()}
    print(f"\nstationary, 1 per {per:,.0f} records: {counts} in {records:,} records "
          f"(bound {bound:.0f} for all {len(STREAMS)} together, windows {scan.sizes})")  # fmt: skip
    assert sum(counts.values()) <= bound
    # Each column's share of the bound (its alpha is 1/4 of it) holds too, up to sampling
    # noise: the chi-square test's p-values are valid but not conservative, so a categorical
    # column's alarms sit near its share (the KS ones well below it).
    for name, c in counts.items():
        assert c <= 1.3 * bound / len(STREAMS), name


def test_drifted_streams_are_caught_and_delays_reported() -> None:
    onset, length = 3000, 8000

    def shift(name: str, x: np.ndarray, n: int) -> np.ndarray:
        after = np.arange(n) >= onset
        if name == "normal":
            return x + 1.0 * after  # +1 sd
        if name == "heavy-tailed t(2)":
            return x * np.where(after, 2.0, 1.0)  # scale x2
        if name == "discrete with ties (Poisson 3)":
            return x + 1.0 * after  # +1 (0.58 sd)
        if name == "binary, p = 0.3":
            return np.where(after & (np.arange(n) % 4 == 0), "yes", x)  # p 0.3 -> 0.475
        moved = x.copy()
        moved[after & (np.arange(n) % 4 == 0)] = "l1"  # a quarter of the values to one level
        return moved

    streams = 6
    alarms, _ = run_streams(streams, length, 1e6, shift)
    report = {}
    for name, positions in alarms.items():
        delays = []
        for s in range(streams):
            after = [p - s * length - onset for p in positions
                     if s * length + onset < p <= (s + 1) * length]  # fmt: skip
            before = [p for p in positions if s * length < p <= s * length + onset]
            assert not before, (name, before)
            delays.append(min(after) if after else float("inf"))
        report[name] = delays
        assert statistics.median(delays) <= 1000, (name, delays)
    print("\ndelays after an abrupt drift, records (1 false alarm per 1,000,000 records):")
    for name, delays in report.items():
        print(f"  {name}: median {statistics.median(delays):,.0f}, all {sorted(delays)}")


def test_looks_are_bounded_by_records_and_time() -> None:
    rng = np.random.default_rng(3)
    col = ScanColumn("x", NumericSketch.from_array(rng.normal(size=1000)), 0.05)
    scan = scan_of([col], every=50, seconds=1.0)
    # 10,000 records in batches of 1,000: a look of the smallest window every 50 records.
    for b in range(10):
        scan.add(scan.cells({"x": rng.normal(size=1000)}, 1000), now=float(b))
    assert scan.looks == 10_000 // 50
    # Slow traffic: 1 record a second; looks follow the clock (1 s), not 50 records.
    slow = scan_of([col], every=50, seconds=1.0)
    for t in range(200):
        slow.add(slow.cells({"x": rng.normal(size=1)}, 1), now=float(t))
    assert slow.looks == 200 - 31  # one a second once the first window (32 records) is full


def test_missing_values_and_absent_columns_count_nowhere() -> None:
    rng = np.random.default_rng(5)
    col = ScanColumn("x", NumericSketch.from_array(rng.normal(size=500)), 0.05)
    cat = ScanColumn("c", CategoricalSketch.from_values(["a", "b"] * 250), 0.05)
    scan = scan_of([col, cat])
    x = rng.normal(size=100)
    x[::2] = np.nan
    x[1] = np.inf
    cells = scan.cells({"x": x, "c": [None] * 100}, 100)
    scan.add(cells, now=0.0)
    assert scan.totals[: scan._nowhere].sum() == 49  # 50 NaN, 1 inf, and no categories
    assert scan.totals[scan._nowhere] == 151


def test_bad_settings_are_refused() -> None:
    col = ScanColumn("x", NumericSketch.from_array(np.arange(100.0)), 0.05)
    with pytest.raises(ValueError, match="false_alarms_per"):
        scan_of([col], per=0)
    with pytest.raises(ValueError, match="look_every"):
        scan_of([col], every=0)
    with pytest.raises(ValueError, match="no columns"):
        scan_of([])


def test_coarse_cells_are_contiguous_and_few() -> None:
    rng = np.random.default_rng(4)
    sketch = NumericSketch.from_array(rng.standard_t(2, 20_000))
    groups = coarse_cells(sketch.counts, SCAN_CELLS)
    assert groups.size == sketch.counts.size and groups[0] == 0
    assert np.all(np.diff(groups) >= 0) and np.all(np.diff(groups) <= 1)  # runs, in order
    assert groups.max() < SCAN_CELLS
    merged = np.bincount(groups, weights=sketch.counts)
    assert merged.max() <= sketch.counts.sum() / SCAN_CELLS + sketch.counts.max()
    # A group is the cells that start within one 1/most of the reference: a heavy tie
    # spans several such slots (its group is that heavy), and the cells after it start anew.
    ties = np.array([0, 5, 0, 900, 0, 40, 55])
    assert coarse_cells(ties, 4).tolist() == [0, 0, 0, 0, 1, 1, 1]


def test_bins_leave_enough_expected_values() -> None:
    assert [bins_for(w, 1000) for w in (32, 64, 128, 160, 1000)] == [1, 3, 6, 8, 8]
    assert bins_for(100_000, 50) == 2  # the smaller sample decides


def test_rank_sum_is_scipys_with_ties() -> None:
    # Ten values, many ties: a lossless sketch, one cell per value, so the cells' ties are
    # the values' ties and scipy's tie-corrected normal approximation is the same test.
    rng = np.random.default_rng(8)
    ref = rng.integers(0, 10, 1000).astype(float)
    scan = scan_of([ScanColumn("x", NumericSketch.from_array(ref), 0.05)])
    m = scan._num
    for shift, size in ((0, 40), (1, 200), (2, 500)):
        window = np.clip(rng.integers(0, 10, size) + shift, 0, 9).astype(float)
        cells = scan.cells({"x": window}, size).columns[0] - scan._offsets["x"]
        counts = np.bincount(cells, minlength=m["width"]).astype(float)[None, None, :]
        got = _rank_sum(m["ref"] + counts, m["n_ref"], m["mid"], counts, counts.sum(axis=2))
        want = stats.mannwhitneyu(window, ref, method="asymptotic", use_continuity=False)
        assert float(got.ravel()[0]) == pytest.approx(want.pvalue, rel=1e-9, abs=1e-300)


def test_heavily_tied_columns_stay_within_the_bound_far_out() -> None:
    # A 0/1 numeric column at 10%, a zero-inflated one (80% zeros) and a binary categorical
    # column at 10%: one cell holds most values, or a cell expects a handful in a short
    # window, and the normal approximations' tails are too light far out (3.7, 1.75 and 3.5
    # times the share at one per 1,000,000 records, measured), hence KS for the numeric ones'
    # location and the second pooling rule. Checked where it shows in seconds: one per
    # 100,000 records, 10,500,000 column-records, bound 105.
    rng = np.random.default_rng(31)

    def draw(c: int, n: int) -> np.ndarray:
        if c % 3 == 0:
            return (rng.random(n) < 0.1).astype(float)
        if c % 3 == 1:
            return np.where(rng.random(n) < 0.8, 0.0, rng.exponential(size=n))
        return np.where(rng.random(n) < 0.1, "yes", "no")

    def sketch(c: int, ref: np.ndarray) -> NumericSketch | CategoricalSketch:
        return CategoricalSketch.from_values(list(ref)) if c % 3 == 2 else (
            NumericSketch.from_array(ref))  # fmt: skip

    cols, length = 105, 100_000
    columns = [ScanColumn(f"c{c}", sketch(c, draw(c, 1000)), 0.05) for c in range(cols)]
    scan = scan_of(columns, per=1e5 / cols)  # each column: one per 100,000 records
    alarms = {k: 0 for k in range(3)}
    for start in range(0, length, 500):
        batch = {f"c{c}": (lambda x: x if c % 3 < 2 else list(x))(draw(c, 500))
                 for c in range(cols)}  # fmt: skip
        for f in scan.add(scan.cells(batch, 500), now=start / 100):
            alarms[int(f.column[1:]) % 3] += f.alarm
    share = cols / 3 * length / 1e5
    print(f"\ntied columns, 1 per 100,000 records: alarms {alarms}, share {share:.0f} each")
    assert all(a <= share for a in alarms.values()), alarms


def test_a_short_reference_takes_the_bins_of_its_own_column_only() -> None:
    # Column "rare" has 30 reference values (mostly null there): too few for two bins of
    # POOL_BELOW expected values. Column "x", with 1,000, keeps its binned chi-square (3 tests).
    rng = np.random.default_rng(11)
    ref_x, ref_rare = rng.normal(size=1000), rng.normal(size=30)
    scan = scan_of([ScanColumn("x", NumericSketch.from_array(ref_x), 0.05),
                    ScanColumn("rare", NumericSketch.from_array(ref_rare), 0.05)])  # fmt: skip
    x, rare = rng.normal(size=1200), rng.normal(size=1200)
    scan.add(scan.cells({"x": x, "rare": rare}, 1200), now=0.0)
    levels = [lv for lv in scan.levels if lv.size == 1000]
    windows = scan.totals[None, :] - np.stack([lv.snapshots[0].totals for lv in levels])
    due = [sequential._Due(lv.size, lv.size, lv.snapshots[0].time) for lv in levels]
    _, p, _, _, _, parts = scan._p_values("ks", scan._num, windows, due)
    p_loc, p_scale, p_bins, heavy, has_bins = parts
    assert heavy.tolist() == [[False, True]]  # 30 reference values: a cell holds over 10%
    assert has_bins.tolist() == [[True, False]]
    assert p_bins[0, 1] == 1.0 and p_bins[0, 0] < 1.0
    assert p[0, 0] == pytest.approx(min(1.0, 3 * min(p_loc[0, 0], p_scale[0, 0], p_bins[0, 0])))
    # x's bins are its own reference's quantiles: the scan's p equals scipy's chi-square over
    # the same bins (the counts of the window in each reference bin).
    b = sequential.bins_for(1000, 1000.0)
    cut = scan._num["cuts"][b][0]
    window = windows[0, scan._num["gather"][0]].astype(float)
    cells = np.r_[0, np.cumsum(window)][cut]
    ref_cells = np.r_[0, np.cumsum(scan._num["ref"][0])][cut]
    table = np.array([np.diff(ref_cells), np.diff(cells)])
    want = stats.chi2_contingency(table, correction=False).pvalue
    assert p_bins[0, 0] == pytest.approx(want, rel=1e-9)


def test_a_batchs_looks_tested_together_decide_as_one_look_at_a_time() -> None:
    # A batch of 500 records holds 10 looks: they are tested in one vectorised pass. Fed
    # `look_every` (50) records at a time, every add makes at most one look, at the same
    # records. The decisions, messages and windows are the same; the p-values to rounding
    # (reductions over arrays of other shapes).
    rng = np.random.default_rng(12)

    def scan() -> SequentialScan:
        return scan_of(
            [
                ScanColumn("x", NumericSketch.from_array(np.arange(2000.0) % 97), 0.05),
                ScanColumn("y", NumericSketch.from_array((np.arange(2000) % 3).astype(float)),
                           0.05),
                ScanColumn("c", CategoricalSketch.from_values(list("aabbbcd" * 100)), 0.05),
            ],
            per=200.0,  # alarms often enough to compare many
            clear_alpha=0.5,
        )  # fmt: skip

    n = 6000
    x = np.where(np.arange(n) < 3000, rng.integers(0, 97, n), rng.integers(20, 120, n))
    values = {"x": x.astype(float), "y": rng.integers(0, 4, n).astype(float),
              "c": list(rng.choice(list("abcde"), n))}  # fmt: skip
    batched, single = scan(), scan()
    got: list[Finding] = []
    for start in range(0, n, 500):
        part = {k: v[start : start + 500] for k, v in values.items()}
        got += batched.add(batched.cells(part, 500), now=1.0, watch={"x"})
    want: list[Finding] = []
    for start in range(0, n, 50):
        part = {k: v[start : start + 50] for k, v in values.items()}
        want += single.add(single.cells(part, 50), now=1.0, watch={"x"})
    assert batched.looks == single.looks > 100
    assert sum(f.alarm for f in want) > 10 and sum(f.clear for f in want) > 10
    assert [(f.column, f.test, f.alarm, f.clear, f.window, f.level, f.message) for f in got] == [
        (f.column, f.test, f.alarm, f.clear, f.window, f.level, f.message) for f in want
    ]
    for a, b in zip(got, want, strict=True):
        assert a.p_value == pytest.approx(b.p_value, rel=1e-9, abs=1e-300)
        assert a.statistic == pytest.approx(b.statistic, rel=1e-9)
