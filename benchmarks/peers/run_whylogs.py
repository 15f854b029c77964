"""whylogs: profile reference and current (`why.log(pandas=df).view()`), then its default
drift scoring (`calculate_drift_scores(..., with_thresholds=True)`: KS on the KLL sketches
for numbers, chi-square on the frequent-items sketch for strings). A column is flagged
when its `drift_category` is `DRIFT` (p < 0.05, whylogs' default thresholds);
`POSSIBLE_DRIFT` (0.05 <= p < 0.15) is listed in the details, not counted.
The timed part is both profiles and the scoring."""

from __future__ import annotations

from importlib import metadata
from typing import Any

import whylogs as why
from common import frames, main
from whylogs.viz.drift.column_drift_algorithms import calculate_drift_scores


def prepare(data: dict[str, Any]) -> Any:
    return frames(data)


def detect(inputs: Any) -> tuple[list[str], dict[str, Any]]:
    ref, cur = inputs
    ref_view = why.log(pandas=ref).view()
    cur_view = why.log(pandas=cur).view()
    scores = calculate_drift_scores(
        target_view=cur_view, reference_view=ref_view, with_thresholds=True
    )
    flagged = [c for c, s in scores.items() if s and s.get("drift_category") == "DRIFT"]
    possible = [c for c, s in scores.items() if s and s.get("drift_category") == "POSSIBLE_DRIFT"]
    brief = {
        c: None
        if s is None
        else {
            "algorithm": s.get("algorithm"),
            "p": s.get("pvalue"),
            "category": s.get("drift_category"),
        }
        for c, s in scores.items()
    }
    return flagged, {"possible_drift": possible, "scores": brief}


if __name__ == "__main__":
    main("whylogs", metadata.version("whylogs"), prepare, detect)
