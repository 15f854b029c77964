"""NannyML: `UnivariateDriftCalculator(column_names=...)` with its defaults (Jensen-Shannon
for both kinds, thresholds from the spread across reference chunks, the default chunker:
10 chunks), `fit(reference)` then `calculate(current)`. A column is flagged when any of its
current chunks raises an alert. Timed: fit and calculate."""

from __future__ import annotations

from importlib import metadata
from typing import Any

import nannyml as nml
from common import frames, main


def prepare(data: dict[str, Any]) -> Any:
    return (*frames(data), data["meta"]["numeric"] + data["meta"]["categorical"])


def detect(inputs: Any) -> tuple[list[str], dict[str, Any]]:
    ref, cur, names = inputs
    calc = nml.UnivariateDriftCalculator(column_names=names)
    calc.fit(ref)
    results = calc.calculate(cur).filter(period="analysis").to_df()
    flagged, alerts = [], {}
    for name in names:
        cols = [c for c in results.columns if c[0] == name and c[-1] == "alert"]
        n_alerts = int(sum(results[c].fillna(False).astype(bool).sum() for c in cols))
        alerts[name] = n_alerts
        if n_alerts:
            flagged.append(name)
    return flagged, {"alerting_chunks": alerts, "chunks": len(results)}


if __name__ == "__main__":
    main("nannyml", metadata.version("nannyml"), prepare, detect)
