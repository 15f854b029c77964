"""`mlwarden check`: the detector's drift and data-quality checks on two data files, offline.

For a training or batch pipeline's CI: compare the data a model is about to see (or was
trained on) with a reference. The checks, code and defaults are the detector's own: the
reference file becomes the reference sketches, the current file one window, and one
evaluation runs. Column types come from the ObservedModel when one is given, otherwise
they are inferred from the reference (numbers are numeric, anything else categorical).

Exit status: 0 when the report is produced and nothing selected by `--fail-on` was found;
1 when findings match `--fail-on`; 2 on bad input (unreadable file, invalid manifest).
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass
from typing import Any

from mlwarden.detector.alerts import Evidence
from mlwarden.detector.core import Column, Detector, build_reference, infer_type
from mlwarden.detector.ingest import parse_batch
from mlwarden.detector.reference import read_reference
from mlwarden.records import Value, finite_or_none
from mlwarden.spec import ObservedModel, parse_observed_model

FAIL_ON = ("none", "drift", "quality", "any")


@dataclass(frozen=True)
class CheckReport:
    reference: str
    current: str
    reference_rows: int
    current_rows: int
    columns: dict[str, Column]
    evidence: list[Evidence]

    @property
    def drift(self) -> list[Evidence]:
        return [e for e in self.evidence if e.type in ("FeatureDrift", "PredictionDrift")]

    @property
    def quality(self) -> list[Evidence]:
        return [e for e in self.evidence if e.type == "DataQuality"]

    def failing(self, fail_on: str) -> list[Evidence]:
        if fail_on == "none":
            return []
        pool = {"drift": self.drift, "quality": self.quality, "any": self.evidence}[fail_on]
        return [e for e in pool if e.failing]

    def to_dict(self) -> dict[str, Any]:
        return {
            "reference": {"file": self.reference, "rows": self.reference_rows},
            "current": {"file": self.current, "rows": self.current_rows},
            "columns": {n: {"kind": c.kind, "type": c.type} for n, c in self.columns.items()},
            "findings": [
                {
                    "type": e.type,
                    "feature": e.feature,
                    "test": e.test,
                    "failing": e.failing,
                    "statistic": finite_or_none(e.statistic),
                    "pValue": finite_or_none(e.p_value),
                    "threshold": finite_or_none(e.threshold),
                    "message": e.message,
                }
                for e in self.evidence
            ],
            "drifted": sorted({e.feature or "" for e in self.drift if e.failing}),
            "qualityProblems": sum(e.failing for e in self.quality),
        }


def _model(columns: dict[str, list[Value]], manifest: ObservedModel | None) -> ObservedModel:
    """The ObservedModel to judge by: the one given, or one describing the reference's columns."""
    if manifest is not None:
        return manifest
    features = [{"name": n, "type": infer_type(v)} for n, v in columns.items()]
    return parse_observed_model({
        "apiVersion": "mlwarden.io/v1alpha1", "kind": "ObservedModel",
        "metadata": {"name": "check"},
        "spec": {"target": {"deployment": "check"}, "features": features,
                 "alerting": {"fireAfter": 1, "resolveAfter": 1}},
    })  # fmt: skip


def run_check(
    reference: str, current: str, *, manifest: ObservedModel | None = None, limit: int = 10_000_000
) -> CheckReport:
    """Read both files and evaluate them as the detector would (raises ReferenceError)."""
    ref_columns = read_reference(reference, limit=limit)
    cur_columns = read_reference(current, limit=limit)
    model = _model(ref_columns, manifest)
    detector = Detector(model, now=0.0)
    columns = dict(detector.columns)
    for name, values in ref_columns.items():
        if name not in columns and not model.spec.features:
            columns[name] = Column(name, "feature", infer_type(values))
    n_ref = max((len(v) for v in ref_columns.values()), default=0)
    n_cur = max((len(v) for v in cur_columns.values()), default=0)
    detector.set_reference(
        build_reference(ref_columns, columns, source=f"file:{reference}", since=0.0), now=0.0
    )
    # The whole current file is one window.
    assert detector.window is not None
    detector.window.size = max(n_cur, 1)
    detector.window.chunk_records = max(n_cur, 1)
    prediction = model.spec.prediction.name if model.spec.prediction else None
    records = [
        {"features": {k: v[i] for k, v in cur_columns.items() if k != prediction},
         "outputs": {prediction: cur_columns[prediction][i]}
         if prediction and prediction in cur_columns else {}}
        for i in range(n_cur)
    ]  # fmt: skip
    detector.ingest(parse_batch({"records": records}, now=0.0), now=0.0)
    detector.evaluate(now=0.0, now_iso="check")
    return CheckReport(reference, current, n_ref, n_cur, detector.columns,
                       detector.last_evidence)  # fmt: skip


def render_text(report: CheckReport) -> str:
    lines = [
        f"reference: {report.reference} ({report.reference_rows} rows)",
        f"current:   {report.current} ({report.current_rows} rows)",
        "",
    ]
    drifted = [e for e in report.drift if e.failing]
    lines.append(f"drift: {len(drifted)} of {len(report.drift)} columns drifted")
    for e in report.drift:
        mark = "DRIFT" if e.failing else "ok   "
        lines.append(f"  {mark} {e.feature:<24} {e.message}")
    problems = [e for e in report.quality if e.failing]
    lines.append("")
    lines.append(f"data quality: {len(problems)} problem(s)")
    for e in problems:
        lines.append(f"  FAIL  {(e.feature or '(schema)'):<24} {e.test}: {e.message}")
    return "\n".join(lines) + "\n"


def render_html(report: CheckReport) -> str:
    """A self-contained HTML page: no scripts, no external assets."""
    esc = html.escape
    rows = "".join(
        f'<tr class="{"bad" if e.failing else "ok"}"><td>{esc(e.type)}</td>'
        f"<td>{esc(e.feature or '')}</td><td>{esc(e.test)}</td>"
        f"<td>{'' if not math.isfinite(e.statistic) else f'{e.statistic:.4g}'}</td>"
        f"<td>{'' if e.p_value is None else f'{e.p_value:.2g}'}</td>"
        f"<td>{'yes' if e.failing else 'no'}</td><td>{esc(e.message)}</td></tr>"
        for e in sorted(report.evidence, key=lambda e: (not e.failing, e.type, e.feature or ""))
    )
    drifted = sorted({e.feature or "" for e in report.drift if e.failing})
    summary = (f"{len(drifted)} drifted column(s): {esc(', '.join(drifted))}" if drifted
               else "no drift")  # fmt: skip
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>mlwarden check</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #222; }}
table {{ border-collapse: collapse; width: 100%; }}
th, td {{ border-bottom: 1px solid #ddd; padding: .35rem .5rem; text-align: left; }}
tr.bad td {{ background: #fde8e8; }}
.summary {{ font-size: 1.2rem; margin: 1rem 0; }}
</style></head><body>
<h1>mlwarden check</h1>
<p>Reference <code>{esc(report.reference)}</code> ({report.reference_rows} rows) vs current
<code>{esc(report.current)}</code> ({report.current_rows} rows).</p>
<p class="summary">{summary}; {sum(e.failing for e in report.quality)} data-quality problem(s)</p>
<table><thead><tr><th>check</th><th>column</th><th>test</th><th>statistic</th><th>p-value</th>
<th>failing</th><th>why</th></tr></thead><tbody>{rows}</tbody></table>
</body></html>
"""


def render(report: CheckReport, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(report.to_dict(), indent=2) + "\n"
    if fmt == "html":
        return render_html(report)
    return render_text(report)
