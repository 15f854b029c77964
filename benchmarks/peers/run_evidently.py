"""Evidently: `Report([DataDriftPreset()], include_tests=True)` with its defaults, columns
typed by a `DataDefinition` (20 numerical, 5 categorical). The method per column is
Evidently's automatic choice (above 1,000 reference rows: Wasserstein distance (normed)
for numbers, Jensen-Shannon distance for categories, threshold 0.1). A column is flagged
when its "Value Drift for column ..." test fails. Timed: building the two `Dataset`s and
`report.run`."""

from __future__ import annotations

from importlib import metadata
from typing import Any

from common import frames, main
from evidently import DataDefinition, Dataset, Report
from evidently.presets import DataDriftPreset


def prepare(data: dict[str, Any]) -> Any:
    meta = data["meta"]
    definition = DataDefinition(
        numerical_columns=meta["numeric"], categorical_columns=meta["categorical"]
    )
    return (*frames(data), definition)


def detect(inputs: Any) -> tuple[list[str], dict[str, Any]]:
    ref, cur, definition = inputs
    report = Report([DataDriftPreset()], include_tests=True)
    result = report.run(
        Dataset.from_pandas(cur, data_definition=definition),
        Dataset.from_pandas(ref, data_definition=definition),
    )
    out = result.dict()
    flagged, methods = [], {}
    for metric in out["metrics"]:
        cfg = metric.get("config", {})
        if cfg.get("type", "").endswith("ValueDrift"):
            methods[cfg["column"]] = {
                "method": cfg.get("method"),
                "threshold": cfg.get("threshold"),
                "score": metric.get("value"),
            }
    for test in out["tests"]:
        params = test.get("metric_config", {}).get("params", {})
        if params.get("type", "").endswith("ValueDrift") and test.get("status") == "FAIL":
            flagged.append(params["column"])
    return flagged, {"columns": methods}


if __name__ == "__main__":
    main("evidently", metadata.version("evidently"), prepare, detect)
