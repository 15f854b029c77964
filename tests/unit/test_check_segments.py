"""`mlwarden check --segment`: a drift confined to a 5% segment is reported under `segments`
(the documented JSON), and the check and the detector give the same per-segment evidence."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
from served_path import through_the_detector

from mlwarden import cli
from mlwarden.check import CheckError, check_columns
from mlwarden.spec import ObservedModel, parse_observed_model

SCHEMA = json.loads((Path(__file__).parents[2] / "docs" / "check-report.schema.json").read_text())
LEVELS = ["BR"] + [f"c{i:02d}" for i in range(19)]
SHARE = [0.05] + [0.95 / 19] * 19


def data(seed: int, n: int, shift: float = 0.0) -> dict[str, list[Any]]:
    rng = np.random.default_rng(seed)
    country = rng.choice(LEVELS, size=n, p=SHARE)
    x = rng.normal(size=(n, 3)).round(3)
    x[country == "BR", 0] += shift
    k = rng.choice(["a", "b", "c"], size=n)
    out: dict[str, list[Any]] = {f"x{i}": [float(v) for v in x[:, i]] for i in range(3)}
    out["k"] = [str(v) for v in k]
    out["country"] = [str(v) for v in country]
    return out


def write_csv(path: Path, columns: dict[str, list[Any]]) -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(columns)
        w.writerows(zip(*columns.values(), strict=True))
    return path


def model() -> ObservedModel:
    spec: dict[str, Any] = {
        "target": {"deployment": "m"},
        "features": [{"name": f"x{i}", "type": "numeric"} for i in range(3)]
        + [{"name": "k", "type": "categorical"}],
        "segments": [{"column": "country", "maxLevels": 20}],
    }
    return parse_observed_model(
        {"apiVersion": "mlwarden.io/v1alpha1", "kind": "ObservedModel",
         "metadata": {"name": "m", "namespace": "ml"}, "spec": spec}
    )  # fmt: skip


def test_a_five_percent_segment_drift_is_in_the_json_where_all_data_shows_none(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ref = write_csv(tmp_path / "ref.csv", data(1, 8000))
    cur = write_csv(tmp_path / "cur.csv", data(2, 8000, shift=1.5))
    argv = ["check", "--reference", str(ref), "--current", str(cur), "--format", "json"]
    assert cli.main([*argv, "--segment", "country,k", "--segment", "country"]) == 0
    doc = json.loads(capsys.readouterr().out)
    jsonschema.validate(doc, SCHEMA)
    assert doc["summary"]["drifted"] == []  # all data: x0's D ~ 0.05 x 0.55, below the floor
    assert doc["segments"]["drifted"] == [{"segment": {"country": "BR"}, "feature": "x0"}]
    assert "bonferroni over" in doc["segments"]["correction"]
    country, k = doc["segments"]["columns"]
    assert country["column"] == "country" and k["column"] == "k"
    assert sorted(s["level"] for s in k["segments"]) == ["a", "b", "c", "other"]
    br = next(s for s in country["segments"] if s["level"] == "BR")
    assert br["evaluated"] and br["drifted"] == ["x0"]
    assert 300 < br["referenceRows"] < 500 and 300 < br["currentRows"] < 500
    failing = [c for c in br["checks"] if c["failing"]]
    assert [(c["type"], c["feature"], c["test"]) for c in failing] == [("FeatureDrift", "x0", "ks")]
    assert failing[0]["message"].startswith("segment country=BR: KS adjusted p=")
    # a segment's drift fails the check on --fail-on drift
    assert cli.main([*argv, "--segment", "country", "--fail-on", "drift"]) == 1
    capsys.readouterr()


def test_an_unknown_segment_column_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ref = write_csv(tmp_path / "ref.csv", data(1, 500))
    argv = ["check", "--reference", str(ref), "--current", str(ref), "--segment", "contry"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "--segment 'contry': no such column in both files" in err and "country" in err


def test_the_check_and_the_detector_agree_on_every_segment() -> None:
    ref, cur = data(3, 6000), data(4, 3000, shift=1.0)
    cur["x1"][:40] = ["oops"] * 40  # type errors, in whichever segments those rows are
    cur["x2"][40:90] = [99.0] * 50  # out of the reference range
    report = check_columns(ref, cur, manifest=model())
    ours = report.segment_evidence
    theirs = [e for e in through_the_detector(ref, cur, model()) if e.segment is not None]
    assert sorted(e.key for e in ours) == sorted(e.key for e in theirs)
    by_key = {e.key: e for e in theirs}
    for a in ours:
        b = by_key[a.key]
        assert a.failing == b.failing, (a, b)
        assert a.statistic == pytest.approx(b.statistic, rel=1e-9, abs=1e-12), (a, b)
        assert (a.p_value is None) == (b.p_value is None)
        if a.p_value is not None:
            assert a.p_value == pytest.approx(b.p_value, rel=1e-9, abs=1e-300)
    assert any(e.failing and e.segment == ("country", "BR") for e in ours)
    assert any(e.test == "type_errors" and e.statistic > 0 for e in ours)
    assert any(e.test == "out_of_range" and e.statistic > 0 for e in ours)


def test_without_segments_the_report_has_no_segments_key() -> None:
    ref = data(5, 400)
    report = check_columns(ref, ref)
    assert "segments" not in report.to_dict() and report.segment_evidence == []
    with pytest.raises(CheckError, match="no such column"):
        check_columns(ref, ref, segments=["nope"])
