"""The detector's checks as pure functions of (reference summary, window view, check spec)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from mlwarden.detector.checks import (
    LATENCY_EDGES,
    Column,
    ReferenceSummary,
    WindowView,
    check_drift,
    check_quality,
    check_slo,
)
from mlwarden.spec import DriftCheck, ErrorsCheck, LatencyCheck, QualityCheck
from mlwarden.stats import CategoricalSketch, NumericSketch


def test_slo_checks_need_no_reference_only_the_requests() -> None:
    latencies = np.full(100, 0.25)  # every request 250 ms
    counts = np.bincount(
        np.searchsorted(LATENCY_EDGES, latencies), minlength=len(LATENCY_EDGES) + 1
    )
    view = WindowView(sketches={}, n_requests=100, n_errors=10, latency_counts=counts)
    found = {e.type: e for e in check_slo(view, LatencyCheck(p99_ms=200), ErrorsCheck(0.05))}
    assert found["Latency"].failing and found["Errors"].failing
    assert found["Errors"].statistic == 0.1
    assert check_slo(view, None, None) == []


def test_a_window_view_of_records_alone_runs_the_drift_and_quality_checks() -> None:
    rng = np.random.default_rng(0)
    ref_x = NumericSketch.from_array(rng.normal(size=2000))
    cur_x = NumericSketch.from_array(rng.normal(1.0, size=2000), ref_x.edges)
    ref_k = CategoricalSketch.from_counts({"a": 500, "b": 500}, missing=0)
    cur_k = CategoricalSketch.from_counts({"a": 900, "b": 900, "c": 200}, missing=0)
    columns = {"x": Column("x", "feature", "numeric"), "k": Column("k", "feature", "categorical")}
    reference = ReferenceSummary("r", "test", 0.0, 2000, columns, {"x": ref_x, "k": ref_k})
    view = WindowView(sketches={"x": cur_x, "k": cur_k}, n_records=2000)  # no request fields
    drift = {
        e.feature for e in check_drift(reference, view, DriftCheck(), DriftCheck()) if e.failing
    }
    assert drift == {"x", "k"}
    quality = {
        (e.feature, e.test) for e in check_quality(reference, view, QualityCheck()) if e.failing
    }
    assert quality == {("k", "new_categories")}


def test_the_pure_checks_import_no_io() -> None:
    code = (
        "import sys, mlwarden.detector.checks; "
        "bad = {'aiohttp', 'kopf', 'kubernetes', 'pyarrow', 'urllib.request', "
        "'mlwarden.detector.datafile', 'mlwarden.detector.service', 'mlwarden.kube'}; "
        "print(sorted(bad & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
