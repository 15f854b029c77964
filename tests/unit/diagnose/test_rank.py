"""Ranking: the three factors, the status shapes, and how evidence and summaries read."""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

import pytest

from mlwarden.diagnose import Diagnosis, Suspect, diagnose
from mlwarden.diagnose.rank import (
    KIND_WEIGHTS,
    MAX_SUSPECTS,
    MODEL_KIND_WEIGHTS,
    PLAUSIBLE_SCORE,
    alert_class,
    kind_weight,
    lineage_weight,
    time_weight,
)
from mlwarden.diagnose.timeline import STRONG_KINDS

# --------------------------------------------------------------------------- the factors


@pytest.mark.parametrize(
    ("minutes_before", "weight"),
    [(0, 1.0), (3, 0.945), (12, 0.802), (30, 0.589), (120, 0.209), (360, 0.1), (1440, 0.0125)],
)
def test_time_weight_values_documented(kit: Any, minutes_before: float, weight: float) -> None:
    assert time_weight(kit.at(-minutes_before), kit.onset) == pytest.approx(weight, abs=1e-3)


def test_time_weight_is_zero_after_onset_and_beyond_a_day(kit: Any) -> None:
    assert time_weight(kit.at(0.1), kit.onset) == 0.0
    assert time_weight(kit.at(-60 * 24 - 1), kit.onset) == 0.0
    weights = [time_weight(kit.at(-m), kit.onset) for m in range(0, 1440, 7)]
    assert weights == sorted(weights, reverse=True)


def test_lineage_weight() -> None:
    assert lineage_weight(0) == 1.0
    assert lineage_weight(1) == pytest.approx(0.7)
    assert lineage_weight(2) == pytest.approx(0.49)
    assert lineage_weight(None) == pytest.approx(0.1)
    assert lineage_weight(1) > lineage_weight(2) > lineage_weight(None)


def test_kind_table_encodes_the_issue() -> None:
    # A failed or late job explains missing values.
    for kind in ("job_failed", "job_late", "schedule_missed", "crash_loop"):
        assert kind_weight(kind, "missing", model_side=False) >= 0.9
    # An image or config change upstream explains drift in what it produces.
    assert kind_weight("image", "drift", model_side=False) == 1.0
    assert kind_weight("config_edit", "drift", model_side=False) >= 0.9
    # A model rollout explains prediction drift without input drift, much less with it.
    assert kind_weight("image", "prediction", model_side=True) == 1.0
    assert kind_weight("image", "prediction+input", model_side=True) <= 0.4
    assert kind_weight("image", "prediction", model_side=False) <= 0.5
    # A crash loop of the model explains errors.
    assert kind_weight("crash_loop", "errors", model_side=True) == 1.0
    # A routine run, a restart, the sidecar's injection: weak whatever the alert.
    for kind in ("routine_run", "sidecar"):
        for table in (KIND_WEIGHTS, MODEL_KIND_WEIGHTS):
            if kind in table:
                assert max(table[kind].values()) <= 0.6
    assert max(KIND_WEIGHTS["routine_run"].values()) <= 0.1
    # Model-side rows fall back to the upstream table; unknown kinds weigh nothing.
    assert kind_weight("job_failed", "missing", model_side=True) == 1.0
    assert kind_weight("nonsense", "drift", model_side=False) == 0.0
    # Strong kinds outweigh weak ones for the alert class they explain best.
    for kind, row in KIND_WEIGHTS.items():
        assert (max(row.values()) >= 0.6) == (kind in STRONG_KINDS), kind


def test_alert_class(kit: Any) -> None:
    assert alert_class(kit.drift("amount"), input_alerts=True) == "drift"
    assert alert_class(kit.quality("amount"), input_alerts=True) == "missing"
    assert alert_class(kit.quality("amount", test="out_of_range"), input_alerts=True) == "values"
    assert alert_class(kit.prediction_drift(), input_alerts=False) == "prediction"
    assert alert_class(kit.prediction_drift(), input_alerts=True) == "prediction+input"
    assert alert_class(kit.errors(), input_alerts=False) == "errors"
    assert alert_class({"type": "Latency"}, input_alerts=False) == "latency"
    assert alert_class({"type": "PerformanceDrop"}, input_alerts=False) == "performance"
    assert alert_class({"type": "Mystery"}, input_alerts=False) == "other"


# --------------------------------------------------------------------------- shapes


def test_suspect_to_dict() -> None:
    full = Suspect(
        kind="Deployment",
        name="fraud-model",
        score=0.83123,
        evidence=("a", "b"),
        revision="8",
        changed_at="2026-11-26T14:57:00Z",
    )
    assert full.to_dict() == {
        "kind": "Deployment",
        "name": "fraud-model",
        "score": 0.831,
        "evidence": ["a", "b"],
        "revision": "8",
        "changedAt": "2026-11-26T14:57:00Z",
    }
    bare = Suspect(kind="ConfigMap", name="x", score=0.5, evidence=())
    assert set(bare.to_dict()) == {"kind", "name", "score", "evidence"}


def test_diagnosis_to_status_and_top() -> None:
    low = Suspect(kind="CronJob", name="etl", score=PLAUSIBLE_SCORE - 0.01, evidence=("x",))
    d = Diagnosis(suspects=(low,), summary="s", onset="2026-11-26T15:07:00Z", updated="now")
    assert d.top is None
    assert d.to_status() == {
        "suspects": [low.to_dict()],
        "onset": "2026-11-26T15:07:00Z",
        "updated": "now",
    }
    high = Suspect(kind="CronJob", name="etl", score=PLAUSIBLE_SCORE, evidence=("x",))
    assert Diagnosis(suspects=(high,), summary="s", onset=None, updated="now").top == high


# --------------------------------------------------------------------------- ranking


def _namespace(kit: Any) -> Any:
    c = kit.cluster()
    c.fraud_model()
    c.cronjob("feature-etl", "*/15 * * * *", kit.routine_runs())
    c.deployment("merchant-enricher", [kit.Rev(at=-60 * 24 * 4, image="enricher:2.3")])
    return c


def test_no_alerts(kit: Any) -> None:
    d = diagnose(_namespace(kit).snapshot(kit.model(), []))
    assert d.suspects == () and d.onset is None and d.summary == "no active alerts"
    assert d.updated == "2026-11-26T15:10:00Z"


def test_onset_is_the_earliest_since_and_each_alert_keeps_its_own(kit: Any) -> None:
    c = _namespace(kit)
    c.deployment(
        "geo-enricher",
        [kit.Rev(at=-60 * 24, image="geo:1"), kit.Rev(at=5, image="geo:2")],
        annotations={"mlwarden.io/produces": "country"},
    )
    alerts = [kit.drift("amount", since=0), kit.drift("country", since=10)]
    d = diagnose(c.snapshot(kit.model(), alerts, now=12))
    assert d.onset == alerts[0]["since"]
    # 5 minutes *after* the first onset, yet before the country alert's: it explains that one.
    geo = next(s for s in d.suspects if s.name == "geo-enricher")
    assert geo.evidence[0] == (
        "image changed from geo:1 to geo:2 5m before onset of FeatureDrift on country (revision 2)"
    )
    assert geo.evidence[1] == "produces country (FeatureDrift, ks p=1.2e-09)"
    assert d.summary.startswith("top suspect Deployment/geo-enricher (")


def test_evidence_reads_like_the_issue(kit: Any) -> None:
    c = _namespace(kit)
    runs = [*kit.routine_runs(last=-22, count=3), kit.Run(scheduled=-7, outcome="failed", took=4)]
    c.cronjob("feature-etl", "*/15 * * * *", runs)
    d = diagnose(c.snapshot(kit.model(), [kit.drift("amount", p=1e-9)]))
    top = d.suspects[0]
    assert (top.kind, top.name) == ("CronJob", "feature-etl")
    assert top.evidence[0].startswith("last run failed 3m before onset (Job feature-etl-")
    assert top.evidence[1] == "produces amount (FeatureDrift, ks p=1e-09)"
    assert top.evidence[-1] == (
        "score 0.57 = lineage 1 × time 0.95 × kind 0.6 (job_failed vs drift)"
    )
    assert d.summary == (
        f"top suspect CronJob/feature-etl ({top.score:.2f}): last run failed 3m before onset; "
        "produces amount (FeatureDrift, ks p=1e-09)"
    )
    assert top.changed_at == "2026-11-26T15:04:03Z"
    assert 0 < top.score <= 1


def test_transitive_and_missing_lineage_evidence(kit: Any) -> None:
    c = _namespace(kit)
    c.configmap("etl-config", created=-60 * 24 * 9, edited=-10)
    c.cronjob("feature-etl", "*/15 * * * *", kit.routine_runs(), env_from=["etl-config"])
    c.deployment(
        "orphan",
        [kit.Rev(at=-60 * 24, image="o:1"), kit.Rev(at=-5, image="o:2")],
        annotations={"mlwarden.io/produces": "amount"},
    )
    d = diagnose(c.snapshot(kit.model(), [kit.quality("merchant_category", test="new_categories")]))
    by_name = {s.name: s for s in d.suspects}
    assert by_name["etl-config"].evidence[1] == (
        "2 hops upstream of merchant_category via feature-etl → merchant-enricher "
        "(DataQuality new_categories 0.31 > 0.05)"
    )
    assert by_name["orphan"].evidence[1].startswith("no known lineage to merchant_category")
    assert by_name["orphan"].score < PLAUSIBLE_SCORE


def test_at_most_five_suspects_best_first(kit: Any) -> None:
    c = _namespace(kit)
    for i in range(8):
        c.deployment(
            f"producer-{i}",
            [kit.Rev(at=-60 * 24, image="p:1"), kit.Rev(at=-2 - 3 * i, image="p:2")],
            annotations={"mlwarden.io/produces": "amount"},
        )
    d = diagnose(c.snapshot(kit.model(), [kit.drift("amount")]))
    assert len(d.suspects) == MAX_SUSPECTS
    assert [s.name for s in d.suspects] == [f"producer-{i}" for i in range(5)]
    scores = [s.score for s in d.suspects]
    assert scores == sorted(scores, reverse=True) and all(s > 0 for s in scores)


def test_unknown_producer_is_said(kit: Any) -> None:
    d = diagnose(_namespace(kit).snapshot(kit.model(), [kit.drift("country")]))
    assert d.top is None
    assert d.summary.startswith("no plausible cause: ")
    assert "nothing is known to produce country" in d.summary


def test_nothing_changed_at_all(kit: Any) -> None:
    c = kit.cluster()
    c.fraud_model()
    d = diagnose(c.snapshot(kit.model([]), [kit.errors()]))
    assert d.suspects == ()
    assert d.summary == "no plausible cause: no node of the graph changed in the 24h before onset"


def test_alert_without_since_uses_now(kit: Any) -> None:
    c = _namespace(kit)
    c.deployment("merchant-enricher", [kit.Rev(at=-60, image="e:1"), kit.Rev(at=1, image="e:2")])
    alert = kit.drift("merchant_category")
    del alert["since"]
    d = diagnose(c.snapshot(kit.model(), [alert], now=3))
    assert d.suspects[0].name == "merchant-enricher"
    assert d.onset == "2026-11-26T15:10:00Z"


def test_pure_and_deterministic(kit: Any) -> None:
    c = _namespace(kit)
    c.configmap("fraud-model-config", created=-60 * 24 * 9, edited=-8)
    snap = c.snapshot(kit.model(), [kit.prediction_drift(), kit.errors(since=1)])
    before = copy.deepcopy(dict(snap.objects)), copy.deepcopy(list(snap.alerts))
    first, second = diagnose(snap), diagnose(snap)
    assert first == second
    assert (dict(snap.objects), list(snap.alerts)) == before
    assert first.updated == (kit.onset + timedelta(minutes=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
