"""The status writer's pacing (pure part)."""

from __future__ import annotations

import pytest

from mlwarden.detector.reporter import MAX_WRITE_INTERVAL, status_patch, write_interval
from mlwarden.spec import MAX_STATUS_ALERTS


@pytest.mark.parametrize(
    ("evaluation", "expected"),
    [(30.0, 5.0), (5.0, 5.0), (4.0, 4.0), (0.5, 0.5), (0.0, 0.0), (-1.0, 0.0)],
)
def test_write_interval_is_the_evaluation_pace_capped_at_five_seconds(
    evaluation: float, expected: float
) -> None:
    assert write_interval(evaluation) == expected
    assert write_interval(evaluation) <= MAX_WRITE_INTERVAL


def test_status_patch_replaces_the_alert_list_and_stamps_the_time() -> None:
    patch = status_patch([{"type": "FeatureDrift"}], {"id": "warmup@1"}, 0.0)
    assert patch == {
        "status": {
            "alerts": [{"type": "FeatureDrift"}],
            "detector": {"reference": {"id": "warmup@1"}, "updated": "1970-01-01T00:00:00Z"},
        }
    }


def test_status_patch_lists_at_most_the_crds_bound_of_alerts() -> None:
    alerts = [{"type": "FeatureDrift", "feature": f"f{i}"} for i in range(MAX_STATUS_ALERTS + 7)]
    shown = status_patch(alerts, {"id": "r"}, 0.0)["status"]["alerts"]
    assert shown == alerts[:MAX_STATUS_ALERTS]
