"""`mlwarden check`: the detector's checks on two files, with exit codes for CI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from mlwarden import cli
from mlwarden.check import run_check


def write_csv(path: Path, columns: dict[str, list[object]]) -> Path:
    names = list(columns)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(names)
        for row in zip(*columns.values(), strict=True):
            w.writerow(["" if v is None else v for v in row])
    return path


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
    drifted = {e.feature for e in report.drift if e.failing}
    assert drifted == {"amount"}
    (ks,) = [e for e in report.drift if e.feature == "amount"]
    exact = stats.ks_2samp(raw["ref_amount"], raw["cur_amount"], method="asymp")
    # Sketched with 128 reference-quantile bins: never above scipy's D, close to it.
    assert exact.statistic - 0.01 <= ks.statistic <= exact.statistic + 1e-12
    assert report.columns["channel"].type == "categorical"
    assert not [e for e in report.quality if e.failing]


def test_exit_codes_and_formats(
    files: tuple[Path, Path, dict[str, np.ndarray]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ref, cur, _ = files
    base = ["check", "--reference", str(ref), "--current", str(cur)]
    assert cli.main(base) == 0  # findings are reported, but nothing asked to fail
    assert "DRIFT amount" in capsys.readouterr().out
    assert cli.main([*base, "--fail-on", "drift"]) == 1
    assert cli.main([*base, "--fail-on", "quality"]) == 0
    capsys.readouterr()
    assert cli.main([*base, "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["drifted"] == ["amount"] and report["current"]["rows"] == 2000
    out = tmp_path / "report.html"
    assert cli.main([*base, "--format", "html", "-o", str(out)]) == 0
    page = out.read_text()
    assert page.startswith("<!doctype html>") and "1 drifted column(s): amount" in page
    assert "<script" not in page


def test_quality_problems_are_found(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    ref = write_csv(
        tmp_path / "r.csv",
        {"x": list(rng.normal(size=500).round(3)), "k": list(rng.choice(["a", "b"], 500))},
    )
    cur = write_csv(
        tmp_path / "c.csv",
        {"x": [None] * 300 + list(rng.normal(size=200).round(3)), "k": ["zz"] * 500},
    )
    report = run_check(str(ref), str(cur))
    found = {(e.feature, e.test) for e in report.quality if e.failing}
    assert ("x", "missing_rate") in found and ("k", "new_categories") in found


def test_unreadable_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        cli.main(
            [
                "check",
                "--reference",
                str(tmp_path / "nope.csv"),
                "--current",
                str(tmp_path / "nope.csv"),
            ]
        )
        == 2
    )
    assert "cannot read" in capsys.readouterr().err
    (tmp_path / "x.txt").write_text("a,b\n")
    assert (
        cli.main(
            ["check", "--reference", str(tmp_path / "x.txt"), "--current", str(tmp_path / "x.txt")]
        )
        == 2
    )
    assert "cannot tell the format" in capsys.readouterr().err
