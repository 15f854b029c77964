"""The alerting rules (charts/mlwarden/rules), checked and unit-tested by Prometheus' own promtool.

`promtool check rules` parses every expression and template; `promtool test rules` runs
mlwarden-rules.test.yaml, which feeds series through the rules and asserts which alerts fire, with
which labels and annotations, and when (MLwardenModelDrifting only after 15 minutes, a failed
reaction at once, ...). promtool comes from Debian's `prometheus` package.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

RULES = Path(__file__).resolve().parents[2] / "charts" / "mlwarden" / "rules"
RULES_FILE = RULES / "mlwarden-rules.yaml"
TESTS_FILE = RULES / "mlwarden-rules.test.yaml"

PROMTOOL = shutil.which("promtool")
pytestmark = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool not found: install Debian's prometheus package (apt-get install prometheus)",
)


def promtool(*args: str, cwd: Path = RULES) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def test_promtool_check_rules_passes() -> None:
    result = promtool("check", "rules", RULES_FILE.name)
    assert result.returncode == 0, result.stdout + result.stderr
    count = sum(len(g["rules"]) for g in yaml.safe_load(RULES_FILE.read_text())["groups"])
    assert f"SUCCESS: {count} rules found" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    result = promtool("test", "rules", TESTS_FILE.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_unit_tests_cover_the_required_alerts_firing_and_not_firing() -> None:
    tests = yaml.safe_load(TESTS_FILE.read_text())["tests"]
    cases = [c for t in tests for c in t.get("alert_rule_test", [])]
    for alert in (
        "MLwardenModelDrifting",
        "MLwardenDetectorDown",
        "MLwardenSidecarDroppingRecords",
        "MLwardenReactionFailed",
        "MLwardenRetrainFailed",
    ):
        outcomes = {bool(c["exp_alerts"]) for c in cases if c["alertname"] == alert}
        assert outcomes == {True, False}, f"{alert}: needs a firing and a not-firing case"


def test_a_failing_expectation_fails_promtool(tmp_path: Path) -> None:
    """promtool really evaluates the tests: drift expected after only 10 minutes must fail."""
    shutil.copy(RULES_FILE, tmp_path / RULES_FILE.name)
    tests = yaml.safe_load(TESTS_FILE.read_text())
    first = tests["tests"][0]["alert_rule_test"]
    first[0]["exp_alerts"] = first[1]["exp_alerts"]  # "firing" at 15m, while still pending
    (tmp_path / TESTS_FILE.name).write_text(yaml.safe_dump(tests))
    result = promtool("test", "rules", TESTS_FILE.name, cwd=tmp_path)
    assert result.returncode != 0 and "MLwardenModelDrifting" in result.stdout + result.stderr


def test_the_rendered_prometheus_rule_passes_promtool(tmp_path: Path) -> None:
    """The groups as Helm renders them into the PrometheusRule (after the YAML round trip)."""
    helm = pytest.importorskip("helm_python", reason="helm-python-sdk is not installed")
    values = {"prometheusRule": {"enabled": True}, "serviceMonitor": {"enabled": True}}
    with helm.Chart.load(RULES.parent) as chart:
        manifests = chart.render(values, name="mlwarden", namespace="mlwarden-system")
    rule = yaml.safe_load(manifests["mlwarden/templates/prometheusrule.yaml"])
    rendered = tmp_path / "rendered-rules.yaml"
    rendered.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    result = promtool("check", "rules", str(rendered))
    assert result.returncode == 0, result.stdout + result.stderr
