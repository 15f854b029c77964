"""`mlwarden check`'s multivariate check: on by default, its JSON object, the detector's verdict.

The butterfly (two correlated features rotated 90 degrees: no column drifts) must be found in
the `multivariate` object and fail `--fail-on drift`; `--no-multivariate` leaves it out; the
object's figures are the detector's own code on the same rows (a detector fed the same
reference and current rows reaches the same statistic); fewer than two usable features: not
evaluated, with the reason.
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mlwarden import cli
from mlwarden.check import check_columns
from mlwarden.detector.core import Detector
from mlwarden.detector.ingest import parse_batch
from mlwarden.spec import parse_observed_model

SCHEMA = json.loads((Path(__file__).parents[3] / "docs" / "check-report.schema.json").read_text())


def butterfly(rng: np.random.Generator, n: int, *, rotate: bool = False) -> dict[str, list]:
    s = rng.standard_normal(n)
    x1 = s + rng.standard_normal(n) / 8
    x2 = s + rng.standard_normal(n) / 8
    if rotate:
        x1, x2 = -x2, x1
    return {
        "x1": x1.tolist(),
        "x2": x2.tolist(),
        "x3": rng.standard_normal(n).tolist(),
        "shop": [str(v) for v in rng.choice(["a", "b", "c"], size=n, p=[0.5, 0.3, 0.2])],
    }


def write(path: Path, columns: dict[str, list]) -> str:
    pq.write_table(pa.table(columns), path)
    return str(path)


def run(tmp_path: Path, rotate: bool, *extra: str) -> tuple[int, dict]:
    rng = np.random.default_rng(1)
    ref = write(tmp_path / "ref.parquet", butterfly(rng, 3000))
    cur = write(tmp_path / "cur.parquet", butterfly(rng, 2000, rotate=rotate))
    out = tmp_path / "report.json"
    code = cli.main(
        ["check", "--reference", ref, "--current", cur, "--format", "json", "-o", str(out),
         "--fail-on", "drift", *extra]
    )  # fmt: skip
    doc = json.loads(out.read_text())
    jsonschema.validate(doc, SCHEMA)
    return code, doc


def test_a_correlation_flip_fails_the_check_though_no_column_drifts(tmp_path: Path) -> None:
    code, doc = run(tmp_path, rotate=True)
    assert code == 1
    assert doc["summary"]["drifted"] == []  # no column alone moved
    joint = doc["multivariate"]
    assert joint["drift"] is True and joint["evaluated"] is True and joint["method"] == "pca"
    assert joint["pValue"] <= joint["threshold"] == 0.01
    assert {f["feature"] for f in joint["features"][:2]} == {"x1", "x2"}
    assert doc["summary"]["failing"]["drift"] is True and doc["summary"]["multivariateDrift"]
    assert joint["usedFeatures"] == ["shop", "x1", "x2", "x3"]


def test_stationary_files_pass_and_the_flag_turns_it_off(tmp_path: Path) -> None:
    code, doc = run(tmp_path, rotate=False)
    assert code == 0 and doc["multivariate"]["drift"] is False
    code, doc = run(tmp_path, True, "--no-multivariate")
    assert code == 0 and doc["multivariate"] is None


def test_the_check_reaches_the_detectors_figures() -> None:
    rng = np.random.default_rng(2)
    ref, cur = butterfly(rng, 1500), butterfly(rng, 800, rotate=True)
    report = check_columns(ref, cur)
    assert report.multivariate is not None
    om = parse_observed_model(
        {
            "apiVersion": "mlwarden.io/v1alpha1",
            "kind": "ObservedModel",
            "metadata": {"name": "m"},
            "spec": {
                "target": {"deployment": "m"},
                "reference": {"size": 1500},
                "window": {"size": 800},
                "alerting": {"falseAlarmsPer": 0},
            },
        }
    )
    detector = Detector(om, now=0.0)
    for side, n in ((ref, 1500), (cur, 800)):
        records = [{"features": {k: v[j] for k, v in side.items()}} for j in range(n)]
        detector.ingest(parse_batch({"records": records}, now=0.0), now=0.0)
    detector.evaluate(now=1.0, now_iso="1")
    (ev,) = [e for e in detector.last_evidence if e.type == "MultivariateDrift"]
    # The file's reference id differs from the warm-up's (so does the seed: the PCA's split),
    # so the figures agree to sampling error, and the verdict exactly.
    assert ev.failing is report.multivariate["drift"] is True
    assert report.multivariate["statistic"] == pytest.approx(ev.statistic, rel=0.05)


def test_one_usable_feature_is_not_evaluated() -> None:
    rng = np.random.default_rng(3)
    ref = {"x": rng.standard_normal(200).tolist(), "blank": [None] * 200}
    cur = {"x": rng.standard_normal(200).tolist(), "blank": [None] * 200}
    report = check_columns(ref, cur)
    assert report.multivariate is not None
    assert report.multivariate["evaluated"] is False and report.multivariate["drift"] is False
    assert "fewer than two usable features" in report.multivariate["reason"]
