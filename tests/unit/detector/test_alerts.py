"""Hysteresis: fire after k failing evaluations, resolve after k passing, one alert per key."""

from __future__ import annotations

from mlwarden.detector.alerts import AlertStateMachine, Evidence


def drift(failing: bool, feature: str = "amount", stat: float = 0.3) -> Evidence:
    return Evidence(
        type="FeatureDrift",
        feature=feature,
        test="ks",
        statistic=stat,
        p_value=1e-9 if failing else 0.5,
        threshold=0.01,
        failing=failing,
    )


def run(machine: AlertStateMachine, pattern: str, feature: str = "amount") -> list[str]:
    out = []
    for i, c in enumerate(pattern):
        for t in machine.observe([drift(c == "F", feature)], now=f"t{i}", reference="ref"):
            out.append(f"{t.kind}@{i}")
    return out


def test_fires_after_k_consecutive_failures_and_resolves_after_k_passes() -> None:
    m = AlertStateMachine(fire_after=3, resolve_after=2)
    assert run(m, "FFPFFFFPFPP") == ["fired@5", "resolved@10"]


def test_one_noisy_evaluation_neither_fires_nor_clears() -> None:
    m = AlertStateMachine(fire_after=2, resolve_after=2)
    assert run(m, "FPFPFP") == []
    m = AlertStateMachine(fire_after=2, resolve_after=2)
    assert run(m, "FFPFPFPP") == ["fired@1", "resolved@7"]


def test_since_is_the_onset_not_the_firing() -> None:
    m = AlertStateMachine(fire_after=3, resolve_after=1)
    run(m, "PFFF")
    (alert,) = m.active
    assert alert.since == "t1"
    d = alert.to_dict()
    assert d == {
        "type": "FeatureDrift",
        "feature": "amount",
        "test": "ks",
        "statistic": 0.3,
        "pValue": 1e-9,
        "threshold": 0.01,
        "since": "t1",
        "reference": "ref",
    }


def test_alerts_are_per_feature_and_absence_is_not_a_pass() -> None:
    m = AlertStateMachine(fire_after=1, resolve_after=1)
    m.observe([drift(True, "a"), drift(True, "b")], now="t0", reference="r")
    assert [a.feature for a in m.active] == ["a", "b"]
    m.observe([drift(False, "a")], now="t1", reference="r")  # b not evaluated this time
    assert [a.feature for a in m.active] == ["b"]


def test_active_alert_keeps_fresh_figures_and_model_revision() -> None:
    m = AlertStateMachine(fire_after=1, resolve_after=3)
    m.observe([drift(True, stat=0.3)], now="t0", reference="r", model_revision="6")
    m.observe([drift(True, stat=0.5)], now="t1", reference="r", model_revision="7")
    (alert,) = m.active
    assert (alert.statistic, alert.since, alert.model_revision) == (0.5, "t0", "7")


def test_non_finite_figures_are_null_for_json_and_the_crd() -> None:
    m = AlertStateMachine(fire_after=1, resolve_after=1)
    m.observe(
        [
            Evidence(
                type="Latency", test="p99", statistic=float("inf"), threshold=250.0, failing=True
            )
        ],
        now="t0",
        reference="r",
    )
    assert m.active[0].to_dict()["statistic"] is None
    assert "feature" not in m.active[0].to_dict()


# --------------------------------------------------------------------------- restarts


def test_a_restored_machine_goes_on_as_the_one_it_was_taken_from() -> None:
    """The state survives a JSON round trip; both machines then behave identically."""
    import json
    import math

    m = AlertStateMachine(fire_after=2, resolve_after=2)
    run(m, "FFF", feature="amount")  # active since t0
    run(m, "PF", feature="age")  # pending, onset t1
    m.observe([drift(False, "quiet")], now="t9", reference="ref")  # nothing to remember
    odd = Evidence("Latency", "p99", math.inf, 100.0, failing=True, message="p99 inf")
    m.observe([odd], now="t3", reference="ref")
    m.observe([odd], now="t4", reference="ref")  # active, its statistic not finite
    state = json.loads(json.dumps(m.state(), allow_nan=False))
    assert [(s["type"], s["feature"]) for s in state] == [
        ("FeatureDrift", "age"),
        ("FeatureDrift", "amount"),
        ("Latency", None),
    ]
    restored = AlertStateMachine(fire_after=2, resolve_after=2)
    restored.restore(state)
    assert restored.onsets() == m.onsets()
    assert [a.to_dict() for a in restored.active] == [a.to_dict() for a in m.active]
    assert restored.pending() == m.pending() == 1
    # The pending check fires with its original onset; the active one keeps its `since`.
    for machine in (m, restored):
        (fired,) = machine.observe([drift(True, "age")], now="t10", reference="ref")
        assert (fired.kind, fired.alert.since) == ("fired", "t1")
        assert machine.observe([drift(True, "amount")], now="t11", reference="ref") == []
        assert [a.since for a in machine.active if a.feature == "amount"] == ["t0"]


def test_onsets_ignore_streak_counts() -> None:
    """Storing on every evaluation would write as often as the checks run."""
    m = AlertStateMachine(fire_after=2, resolve_after=2)
    run(m, "FF")
    before = m.onsets()
    m.observe([drift(True)], now="t5", reference="ref")
    assert m.onsets() == before
    m.observe([drift(False)], now="t6", reference="ref")
    m.observe([drift(False)], now="t7", reference="ref")
    assert m.onsets() == ()
