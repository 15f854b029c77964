"""Renderers of a `CheckReport`: text for a terminal, JSON (the contract), HTML.

The HTML page is drawn by `mlwarden.report`, which reads the report's fields and imports
nothing of `mlwarden.check`.
"""

from __future__ import annotations

import json
import math

from mlwarden.check.result import CheckReport


def _num(x: float | None, spec: str = ".3g") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return format(x, spec)


def render_text(report: CheckReport) -> str:
    lines = [
        f"reference: {report.reference} ({report.reference_rows} rows)",
        f"current:   {report.current} ({report.current_rows} rows)",
        "",
    ]
    evaluated = [f for f in report.features if f.evaluated]
    drifted = [f for f in report.features if f.drifted]
    lines.append(f"drift: {len(drifted)} of {len(evaluated)} columns drifted")
    for f in report.features:
        mark = "DRIFT" if f.drifted else ("ok   " if f.evaluated else "-    ")
        reason = f.verdict.reason if f.verdict else "drift check disabled"
        lines.append(f"  {mark} {f.name:<24} {f.type:<11} {reason}")
    joint = report.multivariate
    if joint is not None:
        mark = "DRIFT" if joint["drift"] else ("ok   " if joint.get("evaluated") else "-    ")
        lines.append("")
        lines.append(f"multivariate ({joint['method']}): {mark.strip()}: {joint['reason']}")
    problems = [e for e in report.quality if e.failing]
    lines.append("")
    lines.append(f"data quality: {len(problems)} problem(s)")
    for e in problems:
        lines.append(f"  FAIL  {(e.feature or '(schema)'):<24} {e.test}: {e.message}")
    for w in report.warnings:
        lines.append(f"warning: {w}")
    return "\n".join(lines) + "\n"


def render(report: CheckReport, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(report.to_dict(), indent=2, allow_nan=False) + "\n"
    if fmt == "html":
        from mlwarden.report import render_html  # reason: matplotlib loads only for HTML

        return render_html(report)
    return render_text(report)
