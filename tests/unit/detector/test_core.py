"""The detector core without I/O: windows stay bounded, quality checks see what they should."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from mlwarden.detector.checks import LATENCY_EDGES, latency_quantile
from mlwarden.detector.core import CHUNKS_PER_WINDOW, Detector, to_numeric
from mlwarden.detector.ingest import parse_batch
from mlwarden.spec import parse_observed_model


def model(**spec: Any) -> Any:
    base: dict[str, Any] = {
        "target": {"deployment": "m"},
        "features": [{"name": "x", "type": "numeric"}, {"name": "k", "type": "categorical"}],
        "reference": {"size": 200},
        "window": {"size": 200},
        "alerting": {"fireAfter": 1, "resolveAfter": 1},
    }
    base.update(spec)
    return parse_observed_model(
        {
            "apiVersion": "mlwarden.io/v1alpha1",
            "kind": "ObservedModel",
            "metadata": {"name": "m"},
            "spec": base,
        }
    )


def rows(n: int, seed: int = 0, **override: Any) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    return {
        "records": [
            {
                "id": f"r{seed}-{i}",
                "features": {
                    "x": float(rng.normal()),
                    "k": str(rng.choice(["a", "b"])),
                    **override,
                },
            }
            for i in range(n)
        ]
    }


def warmed(m: Any = None) -> Detector:
    d = Detector(m or model(), now=0.0)
    d.ingest(parse_batch(rows(200), now=0.0), now=0.0)
    assert not d.warming_up
    return d


def failing(d: Detector) -> set[tuple[str, str | None, str]]:
    d.evaluate(now=1.0, now_iso="t")
    return {(e.type, e.feature, e.test) for e in d.last_evidence if e.failing}


def test_to_numeric_counts_type_errors_without_losing_numbers() -> None:
    values, errors = to_numeric([1, 2.5, None, "3", [1], {"a": 1}, True, math.inf])
    assert errors == 3
    assert values[0] == 1 and values[1] == 2.5 and values[6] == 1.0 and values[7] == math.inf
    assert all(math.isnan(v) for v in values[2:6])


def test_window_memory_is_bounded_whatever_the_traffic() -> None:
    d = warmed()
    for i in range(300):
        d.ingest(parse_batch(rows(37, seed=i), now=1.0), now=1.0)
    assert d.window is not None
    assert len(d.window.sealed) <= CHUNKS_PER_WINDOW + 1
    assert 200 <= d.window.view().n_records < 200 + 200 // CHUNKS_PER_WINDOW + 37


def test_duration_windows_drop_old_chunks() -> None:
    d = warmed(model(window={"duration": "10s"}))
    for t in range(100):
        d.ingest(parse_batch(rows(10, seed=t), now=float(t)), now=float(t))
    assert d.window is not None
    assert d.window.view().n_records <= 10 * 13  # ~10 s of 10 records/s, plus a chunk


def test_strings_in_a_numeric_feature_are_type_errors() -> None:
    d = warmed()
    d.ingest(parse_batch(rows(100, seed=1, x="12.5"), now=1.0), now=1.0)
    assert ("DataQuality", "x", "type_errors") in failing(d)


def test_values_outside_the_reference_range_are_flagged() -> None:
    d = warmed()
    d.ingest(parse_batch(rows(100, seed=1, x=1e6), now=1.0), now=1.0)
    assert ("DataQuality", "x", "out_of_range") in failing(d)


def test_new_categories_and_unexpected_fields() -> None:
    d = warmed()
    d.ingest(parse_batch(rows(100, seed=1, k="brand-new", extra=1), now=1.0), now=1.0)
    found = failing(d)
    assert ("DataQuality", "k", "new_categories") in found
    assert ("DataQuality", None, "schema") in found
    schema = next(e for e in d.last_evidence if e.test == "schema")
    assert "extra" in schema.message


def test_a_feature_that_stops_arriving_is_missing() -> None:
    d = warmed()
    batch = rows(100, seed=1)
    for r in batch["records"]:
        del r["features"]["k"]
    d.ingest(parse_batch(batch, now=1.0), now=1.0)
    assert ("DataQuality", "k", "missing_rate") in failing(d)


def test_latency_and_error_slos() -> None:
    d = Detector(model(detectors={"latency": {"p99Ms": 100}, "errors": {"maxRate": 0.05}}), now=0.0)
    reqs = [{"status": 200, "latencySeconds": 0.01}] * 90 + [
        {"status": 503, "latencySeconds": 0.5}
    ] * 10
    d.ingest(parse_batch({"requests": reqs}, now=0.0), now=0.0)
    found = failing(d)  # SLOs need no reference: they work while warming up
    assert ("Latency", None, "p99") in found and ("Errors", None, "error_rate") in found
    latency = next(e for e in d.last_evidence if e.type == "Latency")
    assert 500 <= latency.statistic <= 500 * 1.05


@pytest.mark.parametrize("q", [0.5, 0.9, 0.99])
def test_latency_quantile_matches_numpy_within_a_bin(q: float) -> None:
    rng = np.random.default_rng(0)
    lat = rng.lognormal(-4, 1, size=20_000)
    counts = np.bincount(np.searchsorted(LATENCY_EDGES, lat), minlength=len(LATENCY_EDGES) + 1)
    exact = float(np.quantile(lat, q))
    assert exact <= latency_quantile(counts, q) <= exact * 1.03


def test_status_shape() -> None:
    d = warmed()
    d.evaluate(now=1.0, now_iso="t")
    s = d.status()
    assert s["phase"] == "Observing" and s["reference"]["id"].startswith("warmup@")
    assert s["columns"] == {
        "x": {"kind": "feature", "type": "numeric"},
        "k": {"kind": "feature", "type": "categorical"},
    }
    assert s["alerts"] == [] and s["evaluations"] == 1


def test_inferred_columns_are_capped_and_the_rest_counted() -> None:
    """Without declared features, a producer sending ever-new field names cannot grow memory."""
    from mlwarden.detector.core import MAX_INFERRED_COLUMNS

    d = Detector(model(features=[], reference={"size": 100}), now=0.0)
    for b in range(5):
        names = [f"f{b}_{i}" for i in range(100)]  # 500 distinct names over the warm-up
        batch = {"records": [{"features": dict.fromkeys(names, 1.0)} for _ in range(20)]}
        d.ingest(parse_batch(batch, now=0.0), now=0.0)
    assert not d.warming_up
    assert len(d.columns) == MAX_INFERRED_COLUMNS
    assert d.status()["columnsOverLimit"] == 500 - MAX_INFERRED_COLUMNS
    # The first names seen are the ones kept.
    assert {"f0_0", "f1_99"} <= d.columns.keys() and "f2_0" not in d.columns


LARGEST = float(np.finfo(np.float64).max)


def wasserstein_model() -> Any:
    return model(
        features=[{"name": "x", "type": "numeric"}], detectors={"drift": {"test": "wasserstein"}}
    )


def test_a_sentinel_near_the_largest_float_is_wasserstein_drift_and_not_a_nan() -> None:
    # An upstream starts writing 1.8e308 ("missing") into a tenth of x. Its sums overflowed
    # the sketch's: the Wasserstein distance came out NaN, which no threshold fails.
    d = warmed(wasserstein_model())
    for i in range(200):
        x = LARGEST if i % 10 == 0 else float(np.random.default_rng(i).normal())
        d.ingest(
            parse_batch({"records": [{"id": f"s{i}", "features": {"x": x}}]}, now=1.0), now=1.0
        )
    d.evaluate(now=1.0, now_iso="t")
    (drift,) = [e for e in d.last_evidence if e.feature == "x" and e.test == "wasserstein"]
    assert drift.failing and math.isfinite(drift.statistic) and drift.statistic > 1e306


def test_a_reference_holding_such_a_sentinel_does_not_fail_every_window() -> None:
    # Its sum of squares overflowed: the reference's std was NaN and every window's
    # Wasserstein effect +inf, so x drifted on every evaluation, whatever came.
    d = Detector(wasserstein_model(), now=0.0)
    reference = rows(200)
    reference["records"][7]["features"]["x"] = LARGEST
    d.ingest(parse_batch(reference, now=0.0), now=0.0)
    assert not d.warming_up
    d.ingest(parse_batch(rows(200, seed=1), now=1.0), now=1.0)
    d.evaluate(now=1.0, now_iso="t")
    (drift,) = [e for e in d.last_evidence if e.feature == "x" and e.test == "wasserstein"]
    assert not drift.failing and math.isfinite(drift.statistic)
