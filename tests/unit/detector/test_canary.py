"""Per-revision windows, roles, expiry, promotion and the canary decisions, on the pure core."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

# Beside this file, on pytest's pythonpath (pyproject.toml); benchmarks/canary.py uses it too.
from canary_sim import Behaviour, batch, model
from scipy import stats

from mlwarden.detector import canary
from mlwarden.detector.core import MAX_REVISIONS, Detector
from mlwarden.detector.reporter import should_write, status_patch

GOOD = Behaviour()


def run(
    d: Detector,
    rng: np.random.Generator,
    steps: int,
    *,
    cand: Behaviour = GOOD,
    share: float = 0.1,
    t0: float = 1.0,
    per_step: int = 100,
    x_shift: float = 0.0,
    base_behaviour: Behaviour = GOOD,
) -> list[Any]:
    """Feed `steps` evaluations of traffic split baseline/candidate; the transitions."""
    out = []
    n_c = round(per_step * share)
    for step in range(steps):
        t = t0 + step
        base = batch(
            rng, per_step - n_c, base_behaviour, revision="base", now=t, x_shift=x_shift, prefix="b"
        )
        d.ingest(base, now=t)
        if n_c:
            d.ingest(
                batch(rng, n_c, cand, revision="cand", now=t, x_shift=x_shift, prefix="c"), now=t
            )
        out += d.take_transitions()  # drift decided as the records arrived (sequential)
        out += d.evaluate(now=t, now_iso=f"t{t}")
    return out


def warmed(seed: int = 0, **spec: Any) -> tuple[Detector, np.random.Generator]:
    rng = np.random.default_rng(seed)
    d = Detector(model(**spec), now=0.0)
    d.ingest(batch(rng, 1000, GOOD, revision="base", now=0.0), now=0.0)
    assert not d.warming_up
    return d, rng


def fired(transitions: list[Any], kind: str = "CanaryRegression") -> list[Any]:
    return [t.alert for t in transitions if t.kind == "fired" and t.alert.type == kind]


# --------------------------------------------------------------------------- windows, roles


def test_each_revision_has_its_own_window_and_the_all_traffic_window_has_both() -> None:
    d, rng = warmed()
    run(d, rng, 5, share=0.1)
    assert d.window is not None
    base, cand = d.revisions["base"], d.revisions["cand"]
    assert base.window is not None and cand.window is not None
    assert cand.window.view().n_records == 50  # only its own records
    assert base.window.view().n_records == 450 + 1000 * 0  # warm-up records are the reference
    shares = {r["revision"]: r["share"] for r in d.revision_status(str)}
    assert shares == {"base": 0.9, "cand": 0.1}
    roles = {r["revision"]: r["role"] for r in d.revision_status(str)}
    assert roles == {"base": "baseline", "cand": "candidate"}
    assert d.reference_revision == "base"  # the revision the warm-up records came from


def test_a_batch_without_a_revision_goes_to_the_all_traffic_window_only() -> None:
    d, rng = warmed()
    before = d.window.view().n_records if d.window else 0
    d.ingest(batch(rng, 40, GOOD, revision=None, now=1.0), now=1.0)
    assert d.window is not None and d.window.view().n_records == before + 40
    assert set(d.revisions) == {"base"}


def test_the_baseline_is_the_revision_that_served_before_unless_the_spec_names_one() -> None:
    d, rng = warmed()
    run(d, rng, 3, share=0.5)
    assert d.baseline == "base"
    pinned, rng = warmed(canary={"baseline": "cand"})
    run(pinned, rng, 3, share=0.5)
    assert pinned.baseline == "cand"
    assert {r["revision"]: r["role"] for r in pinned.revision_status(str)}["base"] == "candidate"


def test_idle_revisions_expire_and_live_ones_are_bounded() -> None:
    d, rng = warmed(canary={"idleAfter": "30s"})
    run(d, rng, 3)
    for i in range(MAX_REVISIONS + 3):
        d.ingest(batch(rng, 10, GOOD, revision=f"r{i}", now=5.0), now=5.0)
    assert len(d.revisions) == MAX_REVISIONS and "base" in d.revisions
    assert d.revisions_evicted >= 3
    # Only the baseline keeps sending: the others are forgotten after idleAfter.
    for t in range(6, 60):
        d.ingest(batch(rng, 20, GOOD, revision="base", now=float(t)), now=float(t))
        d.evaluate(now=float(t), now_iso=f"t{t}")
    assert set(d.revisions) == {"base"}


# --------------------------------------------------------------------------- decisions


@pytest.mark.parametrize("share", [0.05, 0.1])
def test_a_bad_candidate_is_a_canary_regression_naming_it_and_its_baseline(share: float) -> None:
    d, rng = warmed()
    bad = Behaviour(classes=(0.7, 0.15, 0.15))
    alerts = fired(run(d, rng, 80, cand=bad, share=share))
    assert len(alerts) == 1
    a = alerts[0]
    assert a.model_revision == "cand" and a.baseline_revision == "base"
    shape = a.to_dict()
    assert shape["modelRevision"] == "cand" and shape["baselineRevision"] == "base"
    signals = {e["signal"]: e for e in shape["evidence"]}
    assert signals["prediction"]["failing"] and not signals["errors"]["failing"]
    assert d.verdicts["cand"] == "Fail"
    assert d.canary_report("cand")["verdict"] == "Fail"  # type: ignore[index]


def test_a_slower_or_failing_candidate_is_caught_on_latency_and_errors() -> None:
    d, rng = warmed()
    slow = Behaviour(latency=0.030, error_rate=0.08)
    alerts = fired(run(d, rng, 60, cand=slow, share=0.1))
    assert alerts and alerts[0].model_revision == "cand"
    failing = {e["signal"] for e in alerts[0].evidence if e["failing"]}
    assert {"latency", "errors"} <= failing


def test_a_candidate_that_differs_within_the_margins_passes() -> None:
    d, rng = warmed()
    # 3 points more of one class: significant with enough samples, but V << 0.1.
    near = Behaviour(classes=(0.37, 0.315, 0.315), latency=0.0105)
    transitions = run(d, rng, 60, cand=near, share=0.5)
    assert not fired(transitions)
    assert d.verdicts["cand"] == "Pass"


def test_a_candidate_passes_only_with_min_samples_of_its_own() -> None:
    d, rng = warmed(canary={"minSamples": 500})
    run(d, rng, 4, share=0.1)  # 40 records
    assert d.verdicts["cand"] == "Pending"
    run(d, rng, 50, share=0.1, t0=10.0)  # 540 records
    assert d.verdicts["cand"] == "Pass"


def test_an_input_shift_shared_by_both_revisions_is_feature_drift_not_a_regression() -> None:
    d, rng = warmed()
    transitions = run(d, rng, 40, share=0.1, x_shift=1.0)
    assert not fired(transitions)
    drift = fired(transitions, "FeatureDrift")
    assert drift and drift[0].model_revision == "base"  # the largest share of the window


def test_an_aa_pair_raises_nothing_over_repeated_runs() -> None:
    """20 independent A/A runs of 5,000 requests (10% candidate): no CanaryRegression.

    (The benchmark runs 100 of 10,000; docs/detector.md has the figures.)
    """
    alerts = 0
    for seed in range(20):
        d, rng = warmed(seed=1000 + seed)
        alerts += len(fired(run(d, rng, 50, share=0.1)))
    assert alerts == 0


def test_a_passed_candidate_that_became_the_only_revision_is_promoted() -> None:
    d, rng = warmed(canary={"idleAfter": "20s"})
    new = Behaviour(classes=(0.4, 0.31, 0.29))  # predicts a little differently, within margins
    run(d, rng, 40, cand=new, share=0.5)
    assert d.verdicts["cand"] == "Pass"
    old_id = d.reference.id if d.reference else None
    for t in range(41, 80):  # the rollout completes: only the candidate serves
        d.ingest(batch(rng, 100, new, revision="cand", now=float(t)), now=float(t))
        d.evaluate(now=float(t), now_iso=f"t{t}")
    assert set(d.revisions) == {"cand"} and d.baseline == "cand"
    assert d.promotion is not None
    assert d.promotion["promotedFrom"] == "base" and d.promotion["reason"] == "promoted"
    assert d.reference_revision == "cand"
    assert d.reference is not None and d.reference.id != old_id
    assert not [a for a in d.alerts.active if a.type == "PredictionDrift"]


def test_a_canary_alert_resolves_when_the_candidate_stops_serving() -> None:
    d, rng = warmed(canary={"idleAfter": "10s"})
    bad = Behaviour(classes=(0.7, 0.15, 0.15))
    assert fired(run(d, rng, 40, cand=bad, share=0.1))
    transitions = run(d, rng, 20, share=0.0, t0=41.0)  # rolled back: only the baseline
    resolved = [t for t in transitions if t.kind == "resolved"]
    assert resolved and resolved[0].alert.type == "CanaryRegression"


def test_a_change_shared_by_both_while_the_baselines_shipping_stalls_is_no_regression() -> None:
    """Both revisions' answers change together (an upstream change) while the baseline's
    sidecar ships nothing for 30 evaluations, then delivers its backlog: the candidate's
    changed records are compared with the baseline's only up to the baseline's latest."""
    d, rng = warmed()
    changed = Behaviour(classes=(0.7, 0.15, 0.15))
    transitions = run(d, rng, 30, share=0.5)
    assert d.verdicts["cand"] == "Pass"
    backlog = []
    for step in range(30):  # the baseline's sidecar stalls; the candidate's ships
        t = 31.0 + step
        backlog.append(batch(rng, 50, changed, revision="base", now=t, prefix="b"))
        d.ingest(batch(rng, 50, changed, revision="cand", now=t, prefix="c"), now=t)
        transitions += d.take_transitions() + d.evaluate(now=t, now_iso=f"t{t}")
    for late in backlog:  # the backlog arrives at once
        d.ingest(late, now=61.0)
    transitions += d.take_transitions() + d.evaluate(now=61.0, now_iso="t61")
    transitions += run(d, rng, 30, cand=changed, share=0.5, t0=62.0, base_behaviour=changed)
    assert not fired(transitions)
    assert d.verdicts["cand"] != "Fail"


# --------------------------------------------------------------------------- statistics


def test_fisher_greater_is_scipys_one_sided_fisher_exact() -> None:
    for k1, n1, k2, n2 in [(5, 100, 1, 900), (0, 30, 3, 500), (20, 200, 10, 2000), (3, 50, 3, 50)]:
        want = stats.fisher_exact([[k1, n1 - k1], [k2, n2 - k2]], alternative="greater")[1]
        assert canary.fisher_greater(k1, n1, k2, n2) == pytest.approx(want, rel=1e-9)


def test_mean_lower_is_a_one_sided_welch_z() -> None:
    rng = np.random.default_rng(3)
    x, y = rng.normal(0.796, 0.05, 400), rng.normal(0.8, 0.05, 3000)
    t = stats.ttest_ind(x, y, equal_var=False, alternative="less")
    assert canary.mean_lower(x, y) == pytest.approx(t.pvalue, rel=0.05)


def test_the_look_level_sums_to_the_p_value_over_all_epochs() -> None:
    levels = [canary.look_level(0.01, 30 * 2**k) for k in range(200)]
    assert levels[0] == pytest.approx(0.01 * 6 / math.pi**2)
    assert sum(levels) < 0.01


def test_a_verdict_is_fail_only_with_the_alert_and_pass_only_when_ready() -> None:
    sig = canary.Signal("errors", "error_rate", 0.0, 0.0, 0.0, 0.01, 1.0)
    ready = canary.CanaryResult("c", "b", 300, 200, (sig,))
    young = canary.CanaryResult("c", "b", 100, 200, (sig,))
    assert canary.verdict(ready, alert_active=True, pending_failure=False) == "Fail"
    assert canary.verdict(ready, alert_active=False, pending_failure=True) == "Pending"
    assert canary.verdict(young, alert_active=False, pending_failure=False) == "Pending"
    assert canary.verdict(ready, alert_active=False, pending_failure=False) == "Pass"


# --------------------------------------------------------------------------- status writes


def test_the_write_policy_costs_nothing_for_a_healthy_idle_model() -> None:
    quiet = dict(
        transitions=False,
        reference_changed=False,
        revisions_changed=False,
        alert_active=False,
        since_last_event=3600.0,
        since_last_write=3600.0,
        verify_within=600.0,
    )
    assert not should_write(payload_changed=True, **quiet)  # type: ignore[arg-type]
    assert should_write(payload_changed=False, **{**quiet, "revisions_changed": True})  # type: ignore[arg-type]
    beat = {**quiet, "alert_active": True}
    assert should_write(payload_changed=True, **beat)  # type: ignore[arg-type]
    assert not should_write(payload_changed=False, **beat)  # type: ignore[arg-type]
    assert not should_write(payload_changed=True, **{**beat, "since_last_write": 30.0})  # type: ignore[arg-type]
    verifying = {**quiet, "since_last_event": 300.0}
    assert should_write(payload_changed=True, **verifying)  # type: ignore[arg-type]


def test_the_status_patch_carries_revisions_and_signals_within_their_bounds() -> None:
    revisions = [{"revision": str(i), "role": "candidate"} for i in range(20)]
    signals = [{"type": "Errors", "test": "error_rate", "failing": True, "at": "t"}] * 80
    patch = status_patch([], {"id": "r"}, 0.0, revisions=revisions, signals=signals)
    detector = patch["status"]["detector"]
    assert len(detector["revisions"]) == 8 and len(detector["signals"]) == 50
    assert "revisions" not in status_patch([], {"id": "r"}, 0.0)["status"]["detector"]


def test_signals_list_the_failing_and_recently_failed_checks_with_their_revision() -> None:
    d, rng = warmed()
    bad = Behaviour(classes=(0.7, 0.15, 0.15))
    run(d, rng, 40, cand=bad, share=0.1)
    signals = d.signals()
    assert signals[0]["type"] == "CanaryRegression" and signals[0]["failing"]
    assert signals[0]["modelRevision"] == "cand" and "feature" not in signals[0]
    assert len(signals) <= 50


def test_the_balanced_cramers_v_is_scipys_v_on_equal_rows_whatever_the_split() -> None:
    from mlwarden.stats import CategoricalSketch

    pb, pc = np.array([0.34, 0.33, 0.33]), np.array([0.55, 0.225, 0.225])
    base = CategoricalSketch.from_counts({"a": 3400, "b": 3300, "c": 3300})
    cand = CategoricalSketch.from_counts({"a": 55, "b": 22, "c": 23})
    table = np.array([pb * 1000, pc * 1000])
    want = stats.contingency.association(table.round().astype(int), method="cramer")
    got = canary.balanced_cramers_v(base, cand)
    assert got == pytest.approx(want, abs=0.01)
    cand_big = CategoricalSketch.from_counts({"a": 5500, "b": 2200, "c": 2300})
    assert canary.balanced_cramers_v(base, cand_big) == pytest.approx(got, abs=1e-9)


def test_a_less_confident_candidate_is_an_estimated_performance_drop() -> None:
    d, rng = warmed(detectors={"performance": {"metric": "accuracy", "maxDrop": 0.05}})
    unsure = Behaviour(confidence=0.6)  # CBPE accuracy ~0.6 against ~0.8
    alerts = fired(run(d, rng, 40, cand=unsure, share=0.1))
    assert alerts and alerts[0].model_revision == "cand"
    (perf,) = [e for e in alerts[0].evidence if e["signal"] == "performance"]
    assert perf["test"] == "accuracy_cbpe" and perf["failing"]
    assert perf["effect"] == pytest.approx(0.2, abs=0.03)


def test_labels_joined_to_a_revisions_predictions_judge_its_labelled_performance() -> None:
    d, rng = warmed(detectors={"performance": {"metric": "accuracy", "maxDrop": 0.05}})
    run(d, rng, 20, share=0.5)
    labels = [
        (rid, row, "setosa" if p.revision == "cand" else p.value)
        for (rid, row), p in list(d.labels.waiting.items())
    ]
    joined, _ = d.add_labels(labels, now=25.0)
    assert joined == len(labels)
    assert len(d.labels.pairs("cand", 0.0)) >= 50 and len(d.labels.pairs("base", 0.0)) >= 50
    d.evaluate(now=30.0, now_iso="t30")
    result = d.canary_results["cand"]
    (perf,) = [s for s in result.signals if s.signal == "performance"]
    assert perf.test == "accuracy_labelled" and perf.baseline == 1.0 and perf.failing


def test_a_canary_alert_survives_a_restart_with_its_candidate_and_onset() -> None:
    from mlwarden.detector.alerts import AlertStateMachine

    d, rng = warmed()
    bad = Behaviour(classes=(0.7, 0.15, 0.15))
    (alert,) = fired(run(d, rng, 40, cand=bad, share=0.1))
    state = d.alerts.state()
    restored = AlertStateMachine(3, 3)
    restored.restore(state)
    (again,) = restored.active
    assert again == d.alerts.active[0]  # the same candidate, baseline, evidence and onset
    assert again.since == alert.since and again.model_revision == "cand"
    assert next(e for e in state if e["type"] == "CanaryRegression")["feature"] == "cand"


def test_a_baseline_held_for_a_tiny_canary_stays_bounded() -> None:
    d, rng = warmed(window={"size": 500})
    run(d, rng, 300, share=0.01, per_step=200)  # 2 candidate records a step: a long span
    base = d.revisions["base"]
    assert base.window is not None and base.window.hold_since is not None
    assert len(base.window.sealed) <= 2 * 10 + 1
    rows = sum(len(p) for c in base.window.sealed for p in c.probabilities)
    assert rows <= 2 * 20_000 + 200 * 10


def test_a_numeric_predictions_type_errors_count_once_in_the_invalid_rate() -> None:
    """A string where a number belongs is NaN in the sketch (`missing`) and a type error:
    the candidate's invalid rate counts it once."""
    from collections import Counter

    from mlwarden.detector.checks import Column, WindowView
    from mlwarden.detector.core import to_numeric
    from mlwarden.spec import Canary
    from mlwarden.stats import NumericSketch, numeric_edges

    rng = np.random.default_rng(3)
    good = rng.normal(size=1000)
    edges = numeric_edges(good)
    cand_values: list[Any] = [*rng.normal(size=900).tolist(), *(["oops"] * 100)]
    cand_array, errors = to_numeric(cand_values)
    assert errors == 100
    sketch_c, sketch_b = NumericSketch(edges), NumericSketch(edges)
    sketch_c.add(cand_array)
    sketch_b.add(good)
    cand = WindowView(sketches={"p": sketch_c}, type_errors=Counter(p=errors), n_records=1000)
    base = WindowView(sketches={"p": sketch_b}, n_records=1000)
    signals = canary._prediction(
        "p", Column("p", "prediction", "numeric"), sketch_c, sketch_b, cand, base, Canary()
    )
    (quality,) = [s for s in signals if s.signal == "quality"]
    assert quality.statistic == pytest.approx(0.10)  # 100 of 1,000, not 200
    assert quality.baseline == 0.0
