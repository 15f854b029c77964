"""The operator's incident settings: Alertmanager's URLs, the waits, and the CLI flag."""

from __future__ import annotations

import pytest

from mlwarden import cli
from mlwarden.operator.settings import OperatorSettings


def test_defaults_and_values() -> None:
    d = OperatorSettings.from_env({})
    assert (d.alertmanager_urls, d.alertmanager_resend_seconds) == ((), 60)
    assert (d.notify_wait_seconds, d.fleet_span_seconds) == (30, 1800)
    s = OperatorSettings.from_env({
        "MLWARDEN_ALERTMANAGER_URL": "http://am-0.monitoring.svc:9093, http://am-1:9093",
        "MLWARDEN_ALERTMANAGER_RESEND_SECONDS": "30", "MLWARDEN_NOTIFY_WAIT_SECONDS": "0",
    })  # fmt: skip
    assert s.alertmanager_urls == ("http://am-0.monitoring.svc:9093", "http://am-1:9093")
    assert (s.alertmanager_resend_seconds, s.notify_wait_seconds) == (30, 0)


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("MLWARDEN_ALERTMANAGER_URL", "alertmanager:9093", "is not an http(s) URL"),
        ("MLWARDEN_ALERTMANAGER_URL", "ftp://am:9093", "is not an http(s) URL"),
        ("MLWARDEN_NOTIFY_WAIT_SECONDS", "1.5", "whole number of seconds"),
        ("MLWARDEN_FLEET_SPAN_SECONDS", "-1", "whole number of seconds"),
    ],
)
def test_a_bad_setting_names_the_variable(name: str, value: str, says: str) -> None:
    with pytest.raises(ValueError, match=name) as err:
        OperatorSettings.from_env({name: value})
    assert says in str(err.value)


def test_the_alertmanager_flag() -> None:
    args = cli.build_parser().parse_args(["operator", "--alertmanager-url", "http://am:9093"])
    assert args.alertmanager_url == "http://am:9093"
    assert cli.build_parser().parse_args(["operator"]).alertmanager_url is None
