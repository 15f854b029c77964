"""The HTML report of a check: one self-contained page, figures drawn by matplotlib.

`render_html(report)` turns a check's result (`CheckResult`: what `mlwarden check`'s
`CheckReport` holds, described here so that this module imports nothing of
`mlwarden.check`) into a page that needs nothing at view
time: no scripts, no fonts, no stylesheets from elsewhere; the figures are SVG written by
matplotlib's own SVG backend and embedded inline (text stays text, so it can be searched
and copied). The page holds, in order:

- an optional key/value summary table (the demo puts time to detect and actions here);
- an optional incident timeline (`TimelineEvent`s: onset, detection, diagnosis,
  reaction), drawn as a figure and listed in a table;
- the drift statistics: one bar per column for its effect size, with the effect floor it
  had to reach, and a table with test, statistic, p-value (raw and corrected), alpha,
  floor and the verdict in words;
- the data-quality table (missing values, type errors, out of range, new categories,
  schema);
- the distributions, reference against current, as small multiples: numeric columns as
  density histograms over the reference-quantile cells of their sketches (or bars of the
  values when there are few), categorical columns as bars of category shares.

Everything drawn comes from the sketches the verdicts were computed from, never from raw
rows: the plots show what the tests saw.
"""

from __future__ import annotations

import html
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol

import numpy as np

from mlwarden import __version__
from mlwarden.stats.sketch import CategoricalSketch, NumericSketch, align_categories

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from mlwarden.detector.alerts import Evidence
    from mlwarden.stats import FeatureDrift
    from mlwarden.stats.sketch import Sketch

KINDS: Final = ("onset", "detection", "diagnosis", "reaction", "info")
_KIND_COLOUR: Final = {
    "onset": "#d62728",
    "detection": "#ff7f0e",
    "diagnosis": "#9467bd",
    "reaction": "#2ca02c",
    "info": "#7f7f7f",
}
_REF, _CUR = "#1f77b4", "#ff7f0e"
_PLOT_BINS: Final = 32  # histogram bars per numeric column (groups of sketch cells)
_FEW_VALUES: Final = 20  # up to this many distinct reference values: bars per value
_TOP_CATEGORIES: Final = 10
_GRID_COLUMNS: Final = 4
_LEVELS: Final = (0.45, -0.45, 1.05, -1.05, 1.65, -1.65)


class CheckedColumn(Protocol):
    """What the page reads of one column's drift verdict (`check.FeatureCheck`)."""

    @property
    def name(self) -> str: ...
    @property
    def kind(self) -> str: ...  # "feature" | "prediction"
    @property
    def type(self) -> str: ...  # "numeric" | "categorical"
    @property
    def verdict(self) -> FeatureDrift | None: ...  # None: the drift check is off
    @property
    def threshold(self) -> float | None: ...
    @property
    def effect_floor(self) -> float | None: ...
    @property
    def reference(self) -> Sketch: ...
    @property
    def current(self) -> Sketch: ...
    @property
    def evaluated(self) -> bool: ...
    @property
    def drifted(self) -> bool: ...


class CheckResult(Protocol):
    """What the page reads of a check's result (`check.CheckReport`)."""

    @property
    def reference(self) -> str: ...
    @property
    def current(self) -> str: ...
    @property
    def reference_rows(self) -> int: ...
    @property
    def current_rows(self) -> int: ...
    @property
    def features(self) -> Sequence[CheckedColumn]: ...
    @property
    def drifted(self) -> list[str]: ...
    @property
    def quality(self) -> list[Evidence]: ...
    @property
    def settings(self) -> dict[str, Any]: ...
    @property
    def warnings(self) -> list[str]: ...


@dataclass(frozen=True)
class TimelineEvent:
    """One moment of an incident, `at_seconds` from the start of the story."""

    at_seconds: float
    kind: str  # one of KINDS
    title: str
    detail: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"timeline event kind {self.kind!r}: expected one of {KINDS}")
        if not math.isfinite(self.at_seconds):
            raise ValueError(f"timeline event {self.title!r}: at_seconds must be finite")


def render_html(
    report: CheckResult,
    *,
    title: str = "mlwarden check",
    timeline: Sequence[TimelineEvent] | None = None,
    summary: Sequence[tuple[str, str]] | None = None,
) -> str:
    """The report as one self-contained HTML page (a string)."""
    import matplotlib

    matplotlib.use("Agg")  # never a window; the SVG backend writes the figures
    esc = html.escape
    parts: list[str] = []
    drifted = report.drifted
    problems = [e for e in report.quality if e.failing]
    verdict = (
        f"{len(drifted)} drifted column(s): {', '.join(drifted)}" if drifted else "no drift"
    ) + f"; {len(problems)} data-quality problem(s)"
    parts.append(f"<h1>{esc(title)}</h1>")
    parts.append(
        f"<p>Reference <code>{esc(report.reference)}</code> ({report.reference_rows:,} rows) "
        f"against current <code>{esc(report.current)}</code> ({report.current_rows:,} rows).</p>"
    )
    parts.append(
        f'<p class="verdict {"bad" if drifted or problems else "good"}">{esc(verdict)}</p>'
    )
    if summary:
        parts.append("<h2>Summary</h2>")
        parts.append(_table(("", ""), [(k, v) for k, v in summary], header=False))
    if timeline:
        events = sorted(timeline, key=lambda e: e.at_seconds)
        parts.append("<h2>Incident timeline</h2>")
        parts.append(_svg(_timeline_figure(events)))
        parts.append(
            _table(
                ("at", "kind", "event", "detail"),
                [(f"{e.at_seconds:.1f} s", e.kind, e.title, e.detail) for e in events],
            )
        )
    for w in report.warnings:
        parts.append(f'<p class="warning">warning: {esc(w)}</p>')
    parts.append("<h2>Drift</h2>")
    checked = [f for f in report.features if f.evaluated]
    if checked:
        parts.append(_svg(_effect_figure(checked)))
    parts.append(_drift_table(report))
    parts.append("<h2>Data quality</h2>")
    parts.append(_quality_tables(report))
    if report.features:
        parts.append("<h2>Distributions: reference against current</h2>")
        parts.append(_svg(_distributions_figure(report.features)))
    parts.append("<h2>Settings</h2>")
    parts.append(
        "<details><summary>the tests, thresholds and corrections used</summary>"
        + _table(("setting", "value"), _settings_rows(report.settings))
        + "</details>"
    )
    body = "\n".join(parts)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>
body {{ font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto;
       max-width: 1200px; color: #222; padding: 0 1rem; }}
table {{ border-collapse: collapse; width: 100%; margin: .5rem 0 1.5rem; font-size: .9rem; }}
th, td {{ border-bottom: 1px solid #ddd; padding: .3rem .5rem; text-align: left;
          vertical-align: top; }}
tr.bad td {{ background: #fde8e8; }}
.verdict {{ font-size: 1.2rem; padding: .5rem .8rem; border-radius: 4px; }}
.verdict.bad {{ background: #fde8e8; }} .verdict.good {{ background: #e6f4ea; }}
.warning {{ background: #fff4ce; padding: .4rem .6rem; }}
figure {{ margin: 0; }} svg {{ max-width: 100%; height: auto; }}
</style></head><body>
{body}
<p style="color:#777;font-size:.8rem">mlwarden {esc(__version__)}</p>
</body></html>
"""


# --------------------------------------------------------------------------- tables


def _fmt(x: float | None, spec: str) -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and math.isnan(x):
        return "-"
    return format(x, spec)


def _table(
    head: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    header: bool = True,
    bad: Sequence[bool] | None = None,
) -> str:
    esc = html.escape
    out = ["<table>"]
    if header:
        out.append("<thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr></thead>")
    out.append("<tbody>")
    for i, row in enumerate(rows):
        cls = ' class="bad"' if bad is not None and bad[i] else ""
        out.append(f"<tr{cls}>" + "".join(f"<td>{esc(str(c))}</td>" for c in row) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _quality_tables(report: CheckResult) -> str:
    if not report.quality:
        return "<p>Not evaluated (too few current rows, or the check is off).</p>"
    head = ("column", "check", "value", "limit", "status", "details")

    def rows(findings: Sequence[Evidence]) -> list[tuple[str, ...]]:
        return [
            (
                e.feature or "(schema)",
                e.test,
                _fmt(e.statistic, ".3g"),
                _fmt(e.threshold, ".3g"),
                "FAIL" if e.failing else "ok",
                e.message,
            )
            for e in findings
        ]

    failing = [e for e in report.quality if e.failing]
    passing = [e for e in report.quality if not e.failing]
    out = []
    if failing:
        out.append(_table(head, rows(failing), bad=[True] * len(failing)))
    else:
        out.append("<p>Every data-quality check passed.</p>")
    if passing:
        out.append(
            f"<details><summary>{len(passing)} passing check(s)</summary>"
            + _table(head, rows(passing))
            + "</details>"
        )
    return "".join(out)


def _drift_table(report: CheckResult) -> str:
    rows = []
    bad = []
    for f in report.features:
        v = f.verdict
        res = v.result if v is not None and f.evaluated else None
        rows.append(
            (
                f.name,
                f"{f.type} {f.kind}" if f.kind != "feature" else f.type,
                res.test if res else (v.result.test if v else "-"),
                _fmt(res.statistic, ".4g") if res else "-",
                _fmt(res.p_value, ".3g") if res else "-",
                _fmt(v.adjusted_p, ".3g") if res and v else "-",
                _fmt(f.threshold, ".3g") if res and res.p_value is not None else "-",
                _fmt(res.effect, ".3g") if res else "-",
                _fmt(f.effect_floor, ".3g"),
                "DRIFT" if f.drifted else ("ok" if f.evaluated else "not evaluated"),
                v.reason if v else "drift check disabled",
            )
        )
        bad.append(f.drifted)
    return _table(
        (
            "column", "type", "test", "statistic", "p-value", "corrected p", "alpha",
            "effect size", "effect floor", "verdict", "why",
        ),
        rows,
        bad=bad,
    )  # fmt: skip


def _settings_rows(settings: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    for key, value in settings.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            rows.extend(_settings_rows(value, name + "."))
        else:
            rows.append((name, "-" if value is None else str(value)))
    return rows


# --------------------------------------------------------------------------- figures


def _svg(fig: Figure) -> str:
    import matplotlib.pyplot as plt

    buffer = io.StringIO()
    with plt.rc_context({"svg.fonttype": "none", "svg.hashsalt": "mlwarden"}):
        fig.savefig(buffer, format="svg")
    plt.close(fig)
    text = buffer.getvalue()
    # Drop the XML prolog and DOCTYPE (which names a URL): inline SVG needs neither.
    start = text.find("<svg")
    return f"<figure>{text[start:]}</figure>"


def _new_figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    # No automatic layout engine: with two dozen axes it redraws the figure several
    # times; fixed margins (set per figure) keep 25 panels well under a second.
    return Figure(figsize=(width, height), dpi=72)


def _timeline_figure(events: Sequence[TimelineEvent]) -> Figure:
    fig = _new_figure(11, 3.2)
    ax = fig.subplots()
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.22, top=0.95)
    end = max(e.at_seconds for e in events)
    start = min(0.0, min(e.at_seconds for e in events))
    span = max(end - start, 1.0)
    ax.axhline(0, color="#999", lw=1, zorder=1)
    for i, e in enumerate(events):
        level = _LEVELS[i % len(_LEVELS)]  # staggered, so close events keep legible labels
        colour = _KIND_COLOUR[e.kind]
        ax.vlines(e.at_seconds, 0, level, color=colour, lw=1)
        ax.scatter([e.at_seconds], [0], color=colour, zorder=3, s=30)
        ax.annotate(
            f"{e.title}\n{e.at_seconds:.1f} s",
            (e.at_seconds, level),
            ha="center",
            va="bottom" if level > 0 else "top",
            fontsize=8,
            color=colour,
        )
    ax.set_xlim(start - 0.05 * span, end + 0.12 * span)
    ax.set_ylim(-2.6, 2.6)
    ax.set_yticks([])
    ax.set_xlabel("seconds")
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    handles = [
        ax.scatter([], [], color=_KIND_COLOUR[k], label=k)
        for k in KINDS
        if any(e.kind == k for e in events)
    ]
    ax.legend(handles=handles, loc="upper left", fontsize=8, frameon=False, ncols=len(handles))
    return fig


def _effect_figure(features: Sequence[CheckedColumn]) -> Figure:
    height = 0.9 + 0.22 * len(features)
    fig = _new_figure(11, height)
    ax = fig.subplots()
    fig.subplots_adjust(left=0.22, right=0.98, bottom=0.6 / height, top=1 - 0.15 / height)
    names = [f.name for f in features]
    effects = []
    floors = []
    for f in features:
        assert f.verdict is not None
        e = f.verdict.result.effect
        effects.append(e if math.isfinite(e) else 0.0)
        floors.append(f.effect_floor if f.effect_floor is not None else math.nan)
    y = np.arange(len(features))[::-1]
    colours = ["#d62728" if f.drifted else "#8c8c8c" for f in features]
    ax.barh(y, effects, color=colours, height=0.7)
    ax.scatter(floors, y, marker="|", s=180, color="#222", label="effect floor", zorder=3)
    ax.set_yticks(
        y,
        [
            f"{n} ({f.verdict.result.test})"
            for n, f in zip(names, features, strict=True)
            if f.verdict
        ],
    )
    ax.set_xlabel("effect size (KS: D; chi-square: TVD; Wasserstein: W/std; PSI; JS)")
    ax.tick_params(axis="y", labelsize=8)
    ax.legend(loc="lower right", fontsize=8, frameon=False)
    ax.set_xlim(0, max([*effects, *(x for x in floors if math.isfinite(x)), 0.01]) * 1.1)
    return fig


def _distributions_figure(features: Sequence[CheckedColumn]) -> Figure:
    cols = min(_GRID_COLUMNS, len(features))
    rows = math.ceil(len(features) / cols)
    height = 2.2 * rows + 0.4
    fig = _new_figure(2.9 * cols, height)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False).ravel())
    fig.subplots_adjust(
        left=0.02, right=0.98, bottom=0.5 / height, top=1 - 0.55 / height, wspace=0.08,
        hspace=0.75,
    )  # fmt: skip
    for ax, f in zip(axes, features, strict=False):
        if isinstance(f.reference, NumericSketch) and isinstance(f.current, NumericSketch):
            _numeric_panel(ax, f.reference, f.current)
        elif isinstance(f.reference, CategoricalSketch) and isinstance(
            f.current, CategoricalSketch
        ):
            _categorical_panel(ax, f.reference, f.current)
        mark = "DRIFT  " if f.drifted else ""
        stat = ""
        if f.evaluated and f.verdict is not None:
            r = f.verdict.result
            stat = f"\n{r.test} effect {r.effect:.3g} (floor {f.effect_floor:.3g})"
        ax.set_title(f"{mark}{f.name}{stat}", fontsize=8, color="#d62728" if f.drifted else "#222")
        ax.tick_params(labelsize=6)
        ax.set_yticks([])
    for ax in axes[len(features) :]:
        ax.set_axis_off()
    handles = [
        axes[0].plot([], [], color=_REF, label="reference")[0],
        axes[0].plot([], [], color=_CUR, label="current")[0],
    ]
    fig.legend(handles=handles, loc="upper right", fontsize=8, frameon=False, ncols=2)
    return fig


def numeric_bins(
    reference: NumericSketch, current: NumericSketch, bins: int = _PLOT_BINS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bin boundaries and the reference and current shares per bin, from the sketch cells.

    The interval (e_{i-1}, e_i] holds the open cell below edge i and the edge's own cell;
    the outer intervals reach the smallest and largest value either sketch saw. Adjacent
    intervals are merged to at most `bins` bars.
    """
    edges = reference.edges
    k = edges.size
    lo = min(reference.min, current.min)
    hi = max(reference.max, current.max)
    if k == 0 or not (math.isfinite(lo) and math.isfinite(hi)):
        return np.array([0.0, 1.0]), np.zeros(1), np.zeros(1)

    def mass(s: NumericSketch) -> np.ndarray:
        c = s.counts.astype(np.float64)
        per = np.empty(k + 1)
        per[:k] = c[0 : 2 * k : 2] + c[1 : 2 * k : 2]  # open cell below edge i + edge i
        per[k] = c[2 * k]
        return per

    bounds = np.concatenate(([min(lo, edges[0])], edges, [max(hi, edges[-1])]))
    m_ref, m_cur = mass(reference), mass(current)
    # Fold zero-width intervals (nothing below the lowest edge) into their neighbour.
    width = np.diff(bounds)
    keep = width > 0
    if not keep.all():
        for i in np.flatnonzero(~keep):
            j = i + 1 if i + 1 < width.size else i - 1
            if 0 <= j < width.size:
                m_ref[j] += m_ref[i]
                m_cur[j] += m_cur[i]
        m_ref, m_cur = m_ref[keep], m_cur[keep]
        bounds = np.concatenate(([bounds[0]], bounds[1:][keep]))
    step = max(1, math.ceil(m_ref.size / bins))
    starts = np.arange(0, m_ref.size, step)
    m_ref = np.add.reduceat(m_ref, starts)
    m_cur = np.add.reduceat(m_cur, starts)
    bounds = np.concatenate((bounds[starts], [bounds[-1]]))
    share_ref = m_ref / max(m_ref.sum(), 1.0)
    share_cur = m_cur / max(m_cur.sum(), 1.0)
    return bounds, share_ref, share_cur


def _numeric_panel(ax: Axes, reference: NumericSketch, current: NumericSketch) -> None:
    from matplotlib.ticker import MaxNLocator

    if 0 < reference.edges.size <= _FEW_VALUES:
        # Few distinct reference values: one pair of bars per value, plus the tails.
        edges = reference.edges
        k = edges.size
        labels = [f"{v:g}" for v in edges]
        ref = reference.counts[1 : 2 * k : 2] / max(reference.total, 1)
        cur = current.counts[1 : 2 * k : 2] / max(current.total, 1)
        # Values between or beyond the reference's values (only the current has them).
        between = current.counts[0 : 2 * k + 1 : 2] / max(current.total, 1)
        if between[0] > 0:
            labels, ref, cur = [f"<{edges[0]:g}", *labels], np.r_[0, ref], np.r_[between[0], cur]
        if between[1:-1].sum() > 0:
            labels, ref, cur = [*labels, "between"], np.r_[ref, 0], np.r_[cur, between[1:-1].sum()]
        if between[-1] > 0:
            labels, ref, cur = [*labels, f">{edges[-1]:g}"], np.r_[ref, 0], np.r_[cur, between[-1]]
        x = np.arange(len(labels))
        ax.bar(x - 0.2, ref, width=0.4, color=_REF)
        ax.bar(x + 0.2, cur, width=0.4, color=_CUR)
        ax.set_xticks(x, labels, rotation=45 if len(labels) > 6 else 0)
        return
    bounds, ref, cur = numeric_bins(reference, current)
    widths = np.diff(bounds)
    with np.errstate(divide="ignore", invalid="ignore"):
        d_ref = np.where(widths > 0, ref / widths, 0.0)
        d_cur = np.where(widths > 0, cur / widths, 0.0)
    ax.stairs(d_ref, bounds, color=_REF, fill=True, alpha=0.35)
    ax.stairs(d_ref, bounds, color=_REF, lw=1)
    ax.stairs(d_cur, bounds, color=_CUR, lw=1.3)
    ax.xaxis.set_major_locator(MaxNLocator(4))


def _categorical_panel(ax: Axes, reference: CategoricalSketch, current: CategoricalSketch) -> None:
    labels, ref, cur = align_categories(reference, current)
    p = ref / max(int(ref.sum()), 1)
    q = cur / max(int(cur.sum()), 1)
    order = np.argsort(-(p + q), kind="stable")
    top = [i for i in order if p[i] + q[i] > 0][:_TOP_CATEGORIES]
    rest = [i for i in range(len(labels)) if i not in top]
    names = ["(other)" if labels[i] is None else str(labels[i]) for i in top]
    shares_p = [float(p[i]) for i in top]
    shares_q = [float(q[i]) for i in top]
    if rest and (p[rest].sum() + q[rest].sum()) > 0:
        names.append("(rest)")
        shares_p.append(float(p[rest].sum()))
        shares_q.append(float(q[rest].sum()))
    x = np.arange(len(names))
    ax.bar(x - 0.2, shares_p, width=0.4, color=_REF)
    ax.bar(x + 0.2, shares_q, width=0.4, color=_CUR)
    short = [n if len(n) <= 10 else n[:9] + "…" for n in names]
    ax.set_xticks(
        x, short, rotation=45 if len(names) > 3 else 0, ha="right" if len(names) > 3 else "center"
    )
