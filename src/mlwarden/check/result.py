"""The result of `mlwarden check`: the report model and its JSON form (the public contract).

`CheckReport` holds what was judged (files, rows, columns), the evidence of every check and,
per column, the drift verdict with the sketches it came from (`FeatureCheck`). `to_dict`
is the `--format json` document described in docs/check.md, with the schema
docs/check-report.schema.json. The renderers (`check.render`, and `mlwarden.report` for
HTML) read this model; nothing here computes a check.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from mlwarden import __version__
from mlwarden.detector.alerts import Evidence
from mlwarden.detector.checks import Column
from mlwarden.records import finite_or_none
from mlwarden.stats import FeatureDrift, NumericSketch
from mlwarden.stats.sketch import Sketch

FAIL_ON = ("none", "drift", "quality", "any")
SCHEMA_ID = "https://mlwarden.io/schemas/check-report-v1.json"


@dataclass(frozen=True)
class FeatureCheck:
    """One column's drift verdict, with the sketches the verdict (and the plots) come from."""

    name: str
    kind: str  # "feature" | "prediction"
    type: str  # "numeric" | "categorical"
    verdict: FeatureDrift | None  # None when the drift check is off for this kind
    alert_type: str
    threshold: float | None  # what the verdict was held against: alpha, or the effect floor
    effect_floor: float | None
    reference: Sketch
    current: Sketch

    @property
    def evaluated(self) -> bool:
        return self.verdict is not None and not self.verdict.reason.startswith("skipped")

    @property
    def drifted(self) -> bool:
        return self.verdict is not None and self.verdict.drifted


@dataclass(frozen=True)
class CheckReport:
    reference: str
    current: str
    reference_rows: int
    current_rows: int
    columns: dict[str, Column]
    evidence: list[Evidence]
    features: list[FeatureCheck] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    # The multivariate check's JSON object (check/multivariate.py); None when not run.
    multivariate: dict[str, Any] | None = None
    # `--segment`: the checks per segment (check/segments.py), and the report's object.
    segment_evidence: list[Evidence] = field(default_factory=list)
    segments: dict[str, Any] | None = None

    @property
    def drift(self) -> list[Evidence]:
        """Drift evidence: all data's (multivariate included) and the segments' (a segment's
        drift fails the check)."""
        kinds = ("FeatureDrift", "PredictionDrift", "MultivariateDrift")
        return [e for e in [*self.evidence, *self.segment_evidence] if e.type in kinds]

    @property
    def multivariate_drift(self) -> bool:
        return bool(self.multivariate and self.multivariate.get("drift"))

    @property
    def quality(self) -> list[Evidence]:
        return [e for e in self.evidence if e.type == "DataQuality"]

    @property
    def drifted(self) -> list[str]:
        return [f.name for f in self.features if f.drifted]

    def failing(self, fail_on: str) -> list[Evidence]:
        if fail_on == "none":
            return []
        pool = {
            "drift": self.drift,
            "quality": self.quality,
            "any": [*self.evidence, *self.segment_evidence],
        }[fail_on]
        return [e for e in pool if e.failing]

    def to_dict(self) -> dict[str, Any]:
        """The `--format json` document (docs/check.md; schema: docs/check-report.schema.json)."""
        problems = [e for e in self.quality if e.failing]
        return {
            "$schema": SCHEMA_ID,
            "mlwarden": {"version": __version__},
            "reference": {"file": self.reference, "rows": self.reference_rows},
            "current": {"file": self.current, "rows": self.current_rows},
            "settings": self.settings,
            "summary": {
                "columns": len(self.columns),
                "drifted": self.drifted,
                "driftCount": len(self.drifted),
                "qualityProblems": len(problems),
                "failing": {
                    "drift": bool(self.drifted) or self.multivariate_drift,
                    "quality": bool(problems),
                },
                "multivariateDrift": self.multivariate_drift,
            },
            "features": [_feature_dict(f) for f in self.features],
            "quality": [
                {
                    "feature": e.feature,
                    "check": e.test,
                    "value": finite_or_none(e.statistic),
                    "threshold": finite_or_none(e.threshold),
                    "failing": e.failing,
                    "message": e.message,
                }
                for e in self.quality
            ],
            "multivariate": self.multivariate,
            **({"segments": self.segments} if self.segments is not None else {}),
            "warnings": self.warnings,
            "timings": {k: round(v, 6) for k, v in self.timings.items()},
        }


def _feature_dict(f: FeatureCheck) -> dict[str, Any]:
    v = f.verdict
    res = v.result if v is not None and f.evaluated else None
    return {
        "name": f.name,
        "kind": f.kind,
        "type": f.type,
        "drift": f.drifted,
        "evaluated": f.evaluated,
        "test": v.result.test if v is not None else None,
        "statistic": finite_or_none(res.statistic) if res else None,
        "pValue": finite_or_none(res.p_value) if res else None,
        "adjustedPValue": finite_or_none(v.adjusted_p) if res and v else None,
        "effectSize": _finite_or_str(res.effect) if res else None,
        "effectFloor": f.effect_floor,
        "threshold": f.threshold,
        "reason": v.reason if v is not None else "drift check disabled",
        "reference": _sketch_summary(f.reference),
        "current": _sketch_summary(f.current),
    }


def _finite_or_str(x: float) -> float | str | None:
    # An effect can be +inf (Wasserstein against a constant reference): JSON has no inf.
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return finite_or_none(x)


def _sketch_summary(s: Sketch) -> dict[str, Any]:
    if isinstance(s, NumericSketch):
        return {
            "count": s.total,
            "missing": s.missing,
            "infinite": s.infinite,
            "mean": finite_or_none(s.mean),
            "std": finite_or_none(s.std),
            "min": finite_or_none(s.min),
            "max": finite_or_none(s.max),
        }
    return {
        "count": s.total,
        "missing": s.missing,
        "categories": len(s.counts) + (1 if s.other else 0),
    }
