"""`mlwarden check`: the detector's checks on two files, with exit codes for CI.

The oracle for "same checks, same code, same defaults" is the detector itself: the same
rows are fed record by record through `Detector.ingest` (the path a served model's traffic
takes) and column by column through `check_columns`, and every verdict must agree.
"""

from __future__ import annotations

import ast
import csv
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scipy import stats
from served_path import through_the_detector

import mlwarden.report
from mlwarden import cli
from mlwarden.check import (
    CheckError,
    CheckReport,
    Encoded,
    check_columns,
    read_columns,
    render,
    run_check,
)
from mlwarden.check.columns import numeric_values
from mlwarden.detector.alerts import Evidence
from mlwarden.detector.checks import Column
from mlwarden.detector.core import Detector, to_numeric
from mlwarden.detector.datafile import read_reference
from mlwarden.report import TimelineEvent, render_html
from mlwarden.spec import ObservedModel, parse_observed_model

SCHEMA = json.loads((Path(__file__).parents[2] / "docs" / "check-report.schema.json").read_text())


def write_csv(path: Path, columns: dict[str, list[Any]]) -> Path:
    names = list(columns)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(names)
        for row in zip(*columns.values(), strict=True):
            w.writerow(["" if v is None else v for v in row])
    return path


def write_jsonl(path: Path, columns: dict[str, list[Any]]) -> Path:
    names = list(columns)
    with path.open("w") as f:
        for row in zip(*columns.values(), strict=True):
            f.write(json.dumps(dict(zip(names, row, strict=True))) + "\n")
    return path


def write_parquet(path: Path, columns: dict[str, list[Any]]) -> Path:
    pq.write_table(pa.table({k: pa.array(v) for k, v in columns.items()}), path)
    return path


WRITERS = {"csv": write_csv, "jsonl": write_jsonl, "parquet": write_parquet}


def model(features: dict[str, str], detectors: dict[str, Any] | None = None) -> ObservedModel:
    spec: dict[str, Any] = {
        "target": {"deployment": "m"},
        "features": [{"name": n, "type": t} for n, t in features.items()],
    }
    if detectors:
        spec["detectors"] = detectors
    return parse_observed_model(
        {"apiVersion": "mlwarden.io/v1alpha1", "kind": "ObservedModel",
         "metadata": {"name": "m", "namespace": "ml"}, "spec": spec}
    )  # fmt: skip


def assert_same_evidence(ours: list[Evidence], theirs: list[Evidence]) -> None:
    assert [e.key for e in ours] == [e.key for e in theirs]
    for a, b in zip(ours, theirs, strict=True):
        assert a.failing == b.failing, (a, b)
        assert a.statistic == pytest.approx(b.statistic, rel=1e-9, abs=1e-12), (a, b)
        if b.p_value is None:
            assert a.p_value is None
        else:
            assert a.p_value == pytest.approx(b.p_value, rel=1e-9, abs=1e-300), (a, b)
        assert a.threshold == b.threshold
        assert a.message == b.message or a.test in ("ks", "chisquare", "wasserstein")


def mixed_data(seed: int, n: int = 3000) -> tuple[dict[str, list[Any]], dict[str, list[Any]]]:
    """Numeric (continuous, few values, missing, infinities, text), categorical (new, missing)."""
    rng = np.random.default_rng(seed)

    def numbers(x: np.ndarray) -> list[Any]:
        return [float(v) for v in x]

    ref: dict[str, list[Any]] = {
        "amount": numbers(rng.gamma(2.0, 30.0, n).round(2)),
        "age": numbers(rng.normal(40, 10, n).round(1)),
        "visits": [int(v) for v in rng.poisson(3, n)],
        "score": numbers(rng.normal(size=n)),
        "channel": list(rng.choice(["web", "app", "pos"], n, p=[0.5, 0.3, 0.2])),
        "country": [str(c) for c in rng.integers(0, 40, n)],
    }
    cur: dict[str, list[Any]] = {
        "amount": numbers(rng.gamma(2.0, 30.0, n).round(2) * 1.4),
        "age": numbers(rng.normal(40, 10, n).round(1)),
        "visits": [int(v) for v in rng.poisson(3.3, n)],
        "score": numbers(rng.normal(size=n)),
        "channel": list(rng.choice(["web", "app", "pos", "kiosk"], n, p=[0.4, 0.3, 0.2, 0.1])),
        "country": [str(c) for c in rng.integers(0, 44, n)],
    }
    for i in range(0, n, 17):
        cur["score"][i] = None
        cur["channel"][i] = None
    cur["score"][5] = math.inf
    cur["score"][6] = -math.inf
    cur["age"][7] = "forty"  # a type error
    cur["age"][8] = "41.5"  # text where a number belongs: a type error too
    ref["score"][3] = None
    return ref, cur


TYPES = {
    "amount": "numeric",
    "age": "numeric",
    "visits": "numeric",
    "score": "numeric",
    "channel": "categorical",
    "country": "categorical",
}


# ----------------------------------------------------------------- same as the detector


@pytest.mark.parametrize(
    "detectors",
    [
        None,
        {"drift": {"test": "wasserstein"}},
        {"drift": {"test": "psi", "correction": "none"}},
        {"drift": {"test": "jensenshannon"}},
        {"drift": {"correction": "benjamini-hochberg", "pValue": 0.05, "minEffect": 0.02}},
        {"quality": {"maxMissingRate": 0.01}},
    ],
)
def test_columns_give_the_detectors_verdicts(detectors: dict[str, Any] | None) -> None:
    ref, cur = mixed_data(3)
    types = dict(TYPES)
    test = (detectors or {}).get("drift", {}).get("test")
    if test == "wasserstein":  # a numeric-only test: judge the numeric columns only
        types = {k: t for k, t in TYPES.items() if t == "numeric"}
        ref = {k: ref[k] for k in types}
        cur = {k: cur[k] for k in types}
    om = model(types, detectors)
    ours = check_columns(ref, cur, manifest=om)
    assert_same_evidence(ours.evidence, through_the_detector(ref, cur, om))
    # Every input form gives the same report: lists, numpy arrays, arrow arrays.
    as_numpy = {k: np.array(v, dtype=object) for k, v in ref.items()}
    as_arrow = {k: pa.array(v) for k, v in ref.items() if k != "age"}
    as_arrow["age"] = pa.array(ref["age"])
    for other_ref in (as_numpy, as_arrow):
        again = check_columns(other_ref, cur, manifest=om)
        assert_same_evidence(again.evidence, ours.evidence)


def test_check_builds_no_detector_and_no_manifest(monkeypatch: pytest.MonkeyPatch) -> None:
    """It calls the detector's check functions; it borrows no Detector, invents no manifest."""
    ref, cur = mixed_data(4)
    expected = check_columns(ref, cur).to_dict()

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("mlwarden check built a Detector or an ObservedModel")

    monkeypatch.setattr(Detector, "__init__", refuse)
    monkeypatch.setattr(ObservedModel, "__init__", refuse)
    again = check_columns(ref, cur).to_dict()
    assert {**again, "timings": None} == {**expected, "timings": None}


def test_without_a_manifest_the_checks_hold_to_an_observed_models_defaults() -> None:
    """No manifest: the settings are those of an ObservedModel that sets no detectors."""
    bare = model({"amount": "numeric"})
    ref, cur = mixed_data(5)
    assert check_columns(ref, cur).settings == {
        **check_columns(ref, cur, manifest=bare).settings,
        "observedModel": None,
    }


def test_the_html_report_imports_nothing_of_check() -> None:
    """`mlwarden.report` reads a check result through its protocols: no check <-> report cycle."""
    tree = ast.parse(Path(mlwarden.report.__file__).read_text())
    imported = [
        node.module if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    ]
    assert not [
        m for m in imported if m and (m == "mlwarden.check" or m.startswith("mlwarden.check."))
    ]


def test_more_categories_than_a_sketch_holds_keep_the_detectors_order() -> None:
    rng = np.random.default_rng(9)
    n = 6000
    ref = {"id": [f"u{v}" for v in rng.integers(0, 1500, n)], "x": list(rng.normal(size=n))}
    cur = {"id": [f"u{v}" for v in rng.integers(200, 1700, n)], "x": list(rng.normal(size=n))}
    om = model({"id": "categorical", "x": "numeric"})
    ours = check_columns(ref, cur, manifest=om)
    # Beyond 5,000 rows a side the multivariate check samples rows (check: uniformly; the
    # detector: its reference at random and the window's latest): compared elsewhere.
    per_column = [e for e in through_the_detector(ref, cur, om) if e.type != "MultivariateDrift"]
    assert_same_evidence([e for e in ours.evidence if e.type != "MultivariateDrift"], per_column)
    (feature,) = [f for f in ours.features if f.name == "id"]
    assert feature.reference.overflowed  # type: ignore[union-attr]


def test_numeric_columns_declared_categorical_and_booleans() -> None:
    rng = np.random.default_rng(2)
    n = 800
    ref = {"zip": [int(v) for v in rng.integers(0, 5, n)], "flag": list(rng.random(n) < 0.3)}
    cur = {
        "zip": [float(v) for v in rng.integers(0, 6, n)],  # 3.0 is category "3", as served
        "flag": list(rng.random(n) < 0.6),
    }
    om = model({"zip": "categorical", "flag": "categorical"})
    ours = check_columns(ref, cur, manifest=om)
    assert_same_evidence(ours.evidence, through_the_detector(ref, cur, om))
    assert "flag" in ours.drifted


# ----------------------------------------------------------------- against scipy


def test_exact_sketches_match_scipy(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    n = 5000
    ref = {"level": list(rng.integers(0, 60, n)), "kind": list(rng.choice(list("abcd"), n))}
    cur = {
        "level": list(rng.integers(3, 64, n)),
        "kind": list(rng.choice(list("abcde"), n, p=[0.3, 0.3, 0.2, 0.1, 0.1])),
    }
    out = tmp_path / "r.json"
    args = ["check", "--reference", str(write_parquet(tmp_path / "r.parquet", ref)),
            "--current", str(write_parquet(tmp_path / "c.parquet", cur)),
            "--format", "json", "-o", str(out)]  # fmt: skip
    assert cli.main(args) == 0
    doc = json.loads(out.read_text())
    jsonschema.validate(doc, SCHEMA)
    features = {f["name"]: f for f in doc["features"]}
    # 60 distinct reference values: the sketch is lossless and KS is scipy's exactly.
    ks = stats.ks_2samp(ref["level"], cur["level"], method="asymp")
    assert features["level"]["test"] == "ks"
    assert features["level"]["statistic"] == pytest.approx(ks.statistic, rel=1e-12)
    assert features["level"]["pValue"] == pytest.approx(ks.pvalue, rel=1e-9)
    assert features["level"]["adjustedPValue"] == pytest.approx(min(1.0, 2 * ks.pvalue))
    labels = sorted(set(ref["kind"]) | set(cur["kind"]))
    table = [[ref["kind"].count(c) for c in labels], [cur["kind"].count(c) for c in labels]]
    chi2, p, _, _ = stats.chi2_contingency(table, correction=False)
    assert features["kind"]["test"] == "chisquare"
    assert features["kind"]["statistic"] == pytest.approx(chi2, rel=1e-9)
    assert features["kind"]["pValue"] == pytest.approx(p, rel=1e-9, abs=1e-300)
    shares = np.array(table) / np.array(table).sum(axis=1, keepdims=True)
    tvd = 0.5 * np.abs(shares[0] - shares[1]).sum()
    assert features["kind"]["effectSize"] == pytest.approx(tvd, rel=1e-9)
    assert doc["summary"]["drifted"] == [f for f in ("level", "kind") if features[f]["drift"]]


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path, dict[str, np.ndarray]]:
    rng = np.random.default_rng(5)
    n = 2000
    ref = {
        "amount": rng.gamma(2.0, 30.0, n).round(2),
        "age": rng.normal(40, 10, n).round(1),
        "channel": rng.choice(["web", "app", "pos"], n, p=[0.5, 0.3, 0.2]),
    }
    cur = {
        "amount": (rng.gamma(2.0, 30.0, n) * 1.5).round(2),  # a pricing change upstream
        "age": rng.normal(40, 10, n).round(1),
        "channel": rng.choice(["web", "app", "pos"], n, p=[0.5, 0.3, 0.2]),
    }
    r = write_csv(tmp_path / "ref.csv", {k: list(v) for k, v in ref.items()})
    c = write_csv(tmp_path / "cur.csv", {k: list(v) for k, v in cur.items()})
    return r, c, {"ref_amount": ref["amount"], "cur_amount": cur["amount"]}


def test_only_the_shifted_column_drifts_and_agrees_with_scipy(
    files: tuple[Path, Path, dict[str, np.ndarray]],
) -> None:
    ref, cur, raw = files
    report = run_check(str(ref), str(cur))
    assert report.drifted == ["amount"]
    (ks,) = [e for e in report.drift if e.feature == "amount"]
    exact = stats.ks_2samp(raw["ref_amount"], raw["cur_amount"], method="asymp")
    # Sketched with 128 reference-quantile bins: never above scipy's D, close to it.
    assert exact.statistic - 0.01 <= ks.statistic <= exact.statistic + 1e-12
    assert report.columns["channel"].type == "categorical"
    assert not [e for e in report.quality if e.failing]


# ----------------------------------------------------------------- files and formats


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
def test_every_format_gives_the_detectors_verdicts(tmp_path: Path, fmt: str) -> None:
    ref, cur = mixed_data(11, n=1500)
    if fmt == "parquet":  # Parquet columns have one type: keep the text out of "age"
        cur["age"] = [None if isinstance(v, str) else v for v in cur["age"]]
    if fmt != "csv":  # JSON has no infinities
        cur["score"] = [v if v is None or math.isfinite(v) else None for v in cur["score"]]
    if fmt == "csv":
        # CSV has no types: the detector's file reader reads "41.5" as a number.
        cur["age"][8] = 41.5
    write = WRITERS[fmt]
    r = write(tmp_path / f"ref.{fmt}", ref)
    c = write(tmp_path / f"cur.{fmt}", cur)
    om = model(TYPES)
    report = run_check(str(r), str(c), manifest=om)
    assert_same_evidence(report.evidence, through_the_detector(ref, cur, om))
    assert report.reference_rows == report.current_rows == 1500
    assert report.timings["readSeconds"] >= 0 and report.timings["checkSeconds"] >= 0


def test_csv_cells_follow_the_detectors_reading_rules(tmp_path: Path) -> None:
    r = tmp_path / "r.csv"
    c = tmp_path / "c.csv"
    rows = "\n".join(
        f"{i % 7},2024-01-0{1 + i % 9},{' 05' if i % 2 else 'x'},true" for i in range(60)
    )
    r.write_text("n,day,code,flag\n" + rows + "\n")
    c.write_text("n,day,code,flag\n" + rows + "\n")
    report = run_check(str(r), str(c))
    types = {n: col.type for n, col in report.columns.items()}
    # Dates and booleans are text to the detector; "05" is the number 5 beside text "x".
    assert types == {"n": "numeric", "day": "categorical", "code": "categorical",
                     "flag": "categorical"}  # fmt: skip
    (code,) = [f for f in report.features if f.name == "code"]
    assert set(code.reference.counts) == {"5", "x"}  # type: ignore[union-attr]
    assert report.drifted == []


def test_a_csv_of_many_blocks_reads_as_the_detector_reads_it(tmp_path: Path) -> None:
    # Over 2 MB: several of arrow's 1 MB blocks, each read on its own. A level first seen in
    # a late block, missing cells, and an id column with more distinct cells in a block than
    # the reader keeps as a dictionary (read as plain text instead): the columns must equal
    # the detector's row-by-row reading, the distinct text values in first-seen order.
    n = 90_000
    path = write_csv(tmp_path / "big.csv", {
        "count": [None if i % 13 == 0 else i % 50 for i in range(n)],
        "score": [None if i % 17 == 0 else i / 7 for i in range(n)],
        "level": [None if i % 11 == 0 else ("a", "b", f"L{i // 9000}")[i % 3] for i in range(n)],
        "id": [f"id{i}" if i % 5 else None for i in range(n)],
    })  # fmt: skip
    assert path.stat().st_size > 2 << 20
    read = read_columns(str(path))
    expected = read_reference(str(path), limit=n)
    for name in ("count", "score"):
        x, errors = numeric_values(read[name])
        assert errors == 0
        np.testing.assert_array_equal(x, to_numeric(expected[name])[0])
    for name in ("level", "id"):
        text = read[name]
        assert isinstance(text, Encoded)
        assert [text.uniques[c] if c >= 0 else None for c in text.codes] == expected[name]
        assert text.uniques == list(dict.fromkeys(v for v in expected[name] if v is not None))


@pytest.mark.parametrize(
    ("reference", "current"),
    [
        ([1, 2, 3, 4] * 30, [1, 2, 2.5, 4] * 30),  # a float in an integer column
        ([1.5, 2, 3, 4] * 30, [1, 2, 3, 4] * 30),  # integers in a float column
        ([1.5, 2, 3, 4] * 30, [1.5, "x", 3, None] * 30),  # text in a number column
        (["a", "b", "c", "a"] * 30, [1, 2, 3, " 04"] * 30),  # numbers in a text column
        (["a", "b", "c", "a"] * 30, [None] * 120),  # an empty column
        ([None] * 120, [1, 2, 3, 4] * 30),  # empty in the reference
        ([1, 2, 3, 4] * 30, ["2024-01-01", "2024-01-02", None, "x"] * 30),  # dates
    ],
)
def test_the_current_file_read_with_the_references_types_gives_the_same_report(
    tmp_path: Path, reference: list[Any], current: list[Any]
) -> None:
    # run_check reads the current CSV with the reference's column types (falling back to
    # inference where a cell does not fit): the report must be the one inference gives.
    r = write_csv(tmp_path / "r.csv", {"v": reference, "w": list(range(120))})
    c = write_csv(tmp_path / "c.csv", {"v": current, "w": list(range(120))})
    types: dict[str, pa.DataType] = {}
    ref = read_columns(str(r), on_types=types.update)

    def report(cur: dict[str, Any]) -> dict[str, Any]:
        names = {"reference_name": str(r), "current_name": str(c)}
        doc = json.loads(render(check_columns(ref, cur, **names), "json"))
        doc.pop("timings")
        return doc

    inferred = report(read_columns(str(c)))
    assert report(read_columns(str(c), types=types)) == inferred
    piped = json.loads(render(run_check(str(r), str(c)), "json"))
    piped.pop("timings")
    assert piped == inferred


def test_ingest_format_jsonl_and_mixed_types(tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    r = tmp_path / "r.jsonl"
    c = tmp_path / "c.jsonl"
    with r.open("w") as f:
        for v in rng.normal(size=300):
            f.write(json.dumps({"features": {"x": float(v)}, "outputs": {"y": 1}}) + "\n")
    with c.open("w") as f:
        for i, v in enumerate(rng.normal(size=300)):
            x: Any = "broken" if i % 10 == 0 else float(v)  # arrow cannot type this column
            f.write(json.dumps({"x": x, "y": 1}) + "\n")
    report = run_check(str(r), str(c))
    found = {(e.feature, e.test) for e in report.quality if e.failing}
    assert ("x", "type_errors") in found
    (warning,) = report.warnings
    assert "'x' holds numbers in the reference" in warning
    assert "numbers and text in the current" in warning and "type errors" in warning


# ----------------------------------------------------------------- bad input


def test_unreadable_and_unknown_input_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nope = str(tmp_path / "nope.csv")
    assert cli.main(["check", "--reference", nope, "--current", nope]) == 2
    assert "nope.csv: cannot read" in capsys.readouterr().err
    (tmp_path / "x.txt").write_text("a,b\n")
    x = str(tmp_path / "x.txt")
    assert cli.main(["check", "--reference", x, "--current", x]) == 2
    assert "cannot tell the format" in capsys.readouterr().err
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"this is not parquet at all")
    assert cli.main(["check", "--reference", str(bad), "--current", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.parquet: not a readable Parquet file" in err and "Traceback" not in err
    assert cli.main(["check", "--reference", str(tmp_path), "--current", str(tmp_path)]) == 2


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
def test_empty_data_exits_2(tmp_path: Path, fmt: str, capsys: pytest.CaptureFixture[str]) -> None:
    good = WRITERS[fmt](tmp_path / f"good.{fmt}", {"x": [1.0, 2.0, 3.0]})
    zero = tmp_path / f"zero.{fmt}"
    zero.write_bytes(b"")
    assert cli.main(["check", "--reference", str(good), "--current", str(zero)]) == 2
    assert f"zero.{fmt}: the file is empty" in capsys.readouterr().err
    if fmt == "jsonl":
        return
    header_only = tmp_path / f"header.{fmt}"
    if fmt == "csv":
        header_only.write_text("x\n")
    else:
        pq.write_table(pa.table({"x": pa.array([], pa.float64())}), header_only)
    assert cli.main(["check", "--reference", str(header_only), "--current", str(good)]) == 2
    assert f"header.{fmt}: no rows" in capsys.readouterr().err


def test_mismatched_columns_name_what_is_missing_where(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    r = write_csv(tmp_path / "r.csv", {"a": [1, 2], "b": [1, 2], "c": [1, 2]})
    c = write_csv(tmp_path / "c.csv", {"a": [1, 2], "d": [1, 2]})
    assert cli.main(["check", "--reference", str(r), "--current", str(c)]) == 2
    err = capsys.readouterr().err
    assert f"missing from the current {c}: b, c" in err
    assert f"missing from the reference {r}: d" in err
    with pytest.raises(CheckError, match="missing from the current data: b"):
        check_columns({"a": [1.0], "b": [2.0]}, {"a": [1.0]})
    with pytest.raises(CheckError, match="columns of different lengths: a=2, b=1"):
        check_columns({"a": [1.0, 2.0], "b": [2.0]}, {"a": [1.0]})


def test_a_manifest_declares_the_columns_and_extra_ones_are_a_schema_finding(
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(12)
    ref = {"x": list(rng.normal(size=200)), "extra": list(range(200))}
    cur = {"x": list(rng.normal(size=200)), "surprise": ["s"] * 200}
    om = model({"x": "numeric"})
    report = check_columns(ref, cur, manifest=om)
    (schema,) = [e for e in report.quality if e.test == "schema"]
    assert schema.failing and "surprise" in schema.message
    assert report.settings["observedModel"] == "ml/m"
    with pytest.raises(CheckError, match=r"missing from the current data: x"):
        check_columns(ref, {"surprise": ["s"] * 200}, manifest=om)


def test_a_column_whose_type_changed_is_named_and_counted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(13)
    r = write_parquet(tmp_path / "r.parquet", {"x": list(rng.normal(size=100))})
    c = write_parquet(tmp_path / "c.parquet", {"x": [f"{v:.2f} EUR" for v in rng.normal(size=100)]})
    code = cli.main(["check", "--reference", str(r), "--current", str(c), "--format", "json",
                     "--fail-on", "quality"])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 1
    assert "column 'x' holds numbers in the reference" in captured.err
    assert "but text in the current" in captured.err
    doc = json.loads(captured.out)
    jsonschema.validate(doc, SCHEMA)
    (types,) = [q for q in doc["quality"] if q["check"] == "type_errors"]
    assert types["failing"] and types["value"] == 1.0


# ----------------------------------------------------------------- the CLI and the contract


def test_exit_codes_and_formats(
    files: tuple[Path, Path, dict[str, np.ndarray]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ref, cur, raw = files
    base = ["check", "--reference", str(ref), "--current", str(cur)]
    assert cli.main(base) == 0  # findings are reported, but nothing asked to fail
    assert "DRIFT amount" in capsys.readouterr().out
    assert cli.main([*base, "--fail-on", "drift"]) == 1
    assert cli.main([*base, "--fail-on", "any"]) == 1
    assert cli.main([*base, "--fail-on", "quality"]) == 0
    assert cli.main(["check", "--reference", str(ref), "--current", str(ref),
                     "--fail-on", "any"]) == 0  # fmt: skip
    capsys.readouterr()
    assert cli.main([*base, "--format", "json"]) == 0
    out = capsys.readouterr().out
    doc = json.loads(out)  # one JSON document, nothing else on stdout
    jsonschema.validate(doc, SCHEMA)
    assert doc["summary"]["drifted"] == ["amount"] and doc["current"]["rows"] == 2000
    assert doc["reference"]["file"] == str(ref)
    assert [f["name"] for f in doc["features"]] == ["amount", "age", "channel"]
    amount = doc["features"][0]
    assert amount["drift"] is True and amount["type"] == "numeric" and amount["test"] == "ks"
    assert amount["effectSize"] == amount["statistic"]  # KS: the effect is D
    assert amount["threshold"] == 0.01 and amount["effectFloor"] == 0.05
    exact = stats.ks_2samp(raw["ref_amount"], raw["cur_amount"], method="asymp")
    assert exact.statistic - 0.01 <= amount["statistic"] <= exact.statistic + 1e-12
    settings = doc["settings"]
    assert settings["drift"]["correction"] == "bonferroni" and settings["numericBins"] == 128
    assert doc["mlwarden"]["version"]
    page = tmp_path / "report.html"
    assert cli.main([*base, "--format", "html", "-o", str(page)]) == 0
    assert page.read_text().startswith("<!doctype html>")


def test_the_command_loads_no_module_its_csv_path_does_not_need(tmp_path: Path) -> None:
    # What the command's speed rests on (benchmarks/check_e2e.py): pandas (pyarrow's to_numpy
    # and pa.array import it when installed), pyarrow.compute, PyYAML without a manifest,
    # urllib.request for local files, scipy at 20,000 rows a side (KS's limiting law from an
    # effective size of 10,000 on); one BLAS thread.
    rng = np.random.default_rng(3)
    n = 20_000
    columns = {"x": rng.normal(size=n).tolist(), "k": rng.integers(0, 9, n).tolist(),
               "c": [("a", "b", None)[i % 3] for i in range(n)]}  # fmt: skip
    ref = write_csv(tmp_path / "ref.csv", columns)
    cur = write_csv(tmp_path / "cur.csv", columns)
    code = (
        "import json, os, sys; from mlwarden.cli import main; "
        f"rc = main(['check', '--reference', {str(ref)!r}, '--current', {str(cur)!r}, "
        "'--format', 'json', '-o', os.devnull]); "
        "print(json.dumps([rc, os.environ.get('OPENBLAS_NUM_THREADS'), sorted(m for m in "
        "('pandas', 'pyarrow.compute', 'yaml', 'urllib.request', 'scipy') if m in sys.modules)]))"
    )
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert json.loads(out.stdout.splitlines()[-1]) == [0, "1", []]


def test_progress_is_quiet_when_stderr_is_not_a_terminal(
    files: tuple[Path, Path, dict[str, np.ndarray]], capsys: pytest.CaptureFixture[str]
) -> None:
    ref, cur, _ = files
    assert cli.main(["check", "--reference", str(ref), "--current", str(cur)]) == 0
    assert capsys.readouterr().err == ""


def test_progress_reports_reading_and_every_column(
    files: tuple[Path, Path, dict[str, np.ndarray]],
) -> None:
    ref, cur, _ = files
    seen: list[tuple[str, int, int]] = []
    run_check(str(ref), str(cur), progress=lambda *a: seen.append(a))
    assert ("reading ref.csv", 1, 1) in seen and ("reading cur.csv", 1, 1) in seen
    assert [s for s in seen if s[0] == "checking columns"][-1] == ("checking columns", 3, 3)


# ----------------------------------------------------------------- the HTML report


def _report() -> CheckReport:
    ref, cur = mixed_data(21, n=1200)
    return check_columns(ref, cur, manifest=model(TYPES))


def test_html_report_is_self_contained_and_shows_the_figures() -> None:
    report = _report()
    timeline = [
        TimelineEvent(0.0, "info", "steady traffic", "200 rps"),
        TimelineEvent(30.0, "onset", "amount sent in cents", "feature-etl v2"),
        TimelineEvent(41.5, "detection", "FeatureDrift on amount", "KS D=0.41"),
        TimelineEvent(42.0, "diagnosis", "top suspect CronJob/feature-etl", "score 0.82"),
        TimelineEvent(43.0, "reaction", "alert sent", "Event"),
    ]
    page = render_html(
        report, title="fraud demo", timeline=timeline, summary=[("time to detect", "11.5 s")]
    )
    assert page.startswith("<!doctype html>") and page.rstrip().endswith("</html>")
    assert "<script" not in page.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert "@import" not in page and not re.search(r"url\((?!#)", page)  # only #clip-paths
    assert page.count("<svg") == 3  # timeline, effect sizes, distributions
    for f in report.features:
        assert f">{f.name}<" in page  # in the drift table
        assert f.name in page.split("Distributions")[1]  # and in the small multiples
    for f in report.features:
        if f.evaluated:
            assert f"{f.verdict.result.statistic:.4g}" in page  # type: ignore[union-attr]
    assert "effect floor" in page and ">0.01<" in page  # the thresholds
    for q in report.quality:
        assert q.test in page
    for e in timeline:
        assert e.title in page and e.detail in page
    assert "time to detect" in page and "11.5 s" in page and "fraud demo" in page
    for drifted in report.drifted:
        assert f"DRIFT  {drifted}" in page  # the panel title marks it
    assert len(page) < 1_000_000


def test_html_without_timeline_and_bad_events() -> None:
    page = render(_report(), "html")
    assert "Incident timeline" not in page and page.count("<svg") == 2
    with pytest.raises(ValueError, match="kind 'later'"):
        TimelineEvent(1.0, "later", "x", "y")


def test_text_report_lists_every_column_and_problem() -> None:
    text = render(_report(), "text")
    for name in TYPES:
        assert name in text
    assert "data quality:" in text and "missing_rate" in text


def test_columns_dataclass_is_kept() -> None:
    report = _report()
    assert report.columns["amount"] == Column("amount", "feature", "numeric")
