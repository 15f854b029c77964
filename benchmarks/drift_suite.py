"""Drift suite: speed, memory and correctness of mlwarden's drift checks against the peers.

The data (benchmarks/drift_data.py): 20 numeric and 5 categorical columns, 4 of them
drifted (mean, scale, same mean and variance other shape, category frequencies), one with
a negligible 0.02 sd shift that must not be flagged, at 10k, 100k and 1M rows (reference
and current each). Every tool is a runner script (benchmarks/peers/run_<tool>.py) started
as its own process: mlwarden's, scipy's and numpy's with the project's interpreter, each
peer's with its own virtual environment (benchmarks/peers/envs.py). A runner reads the
same files, times the detection alone and reports its peak RSS; the repeats are
interleaved across tools (A, B, C, A, B, C, ...), each a fresh process, and the table
shows medians. A tool that passes its time cap at one size is not run at larger ones.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import drift_data

sys.path.insert(0, str(Path(__file__).resolve().parent / "peers"))
import envs

NAME = "drift_suite"
HERE = Path(__file__).resolve().parent
PEERS_DIR = HERE / "peers"
SIZES = (10_000, 100_000, 1_000_000)
CAP_SECONDS = 120.0  # compute time per run of a tool on one case
STARTUP_ALLOWANCE = 90.0  # interpreter start, imports and reading the files, on top of the cap
SPEEDUP_TARGET = 5.0

# (label, runner, peer environment or None for the project's, version dist, what it runs)
TOOLS: list[tuple[str, str, str | None, str, str]] = [
    ("mlwarden check", "run_mlwarden_check.py", None, "mlwarden",
     "check_columns / run_check: KS (binned on 128 reference quantiles) and chi-square, "
     "Bonferroni at 0.01 and effect floors (D 0.05, Cramér's V 0.1)"),
    ("mlwarden detector", "run_mlwarden_stream.py", None, "mlwarden",
     "Detector: reference sketches, current ingested as one window (batches of 1,000 "
     "records via parse_batch), one evaluation"),
    ("evidently", "run_evidently.py", "evidently", "evidently",
     "Report([DataDriftPreset()]) defaults: Wasserstein (normed) / Jensen-Shannon, threshold 0.1"),
    ("alibi-detect", "run_alibi.py", "alibi", "alibi-detect",
     "TabularDrift(p_val=0.05): KS / chi-square, Bonferroni"),
    ("nannyml", "run_nannyml.py", "nannyml", "nannyml",
     "UnivariateDriftCalculator defaults: Jensen-Shannon, 10 chunks, std thresholds; "
     "flagged if any chunk alerts"),
    ("whylogs", "run_whylogs.py", "whylogs", "whylogs",
     "why.log profiles + calculate_drift_scores defaults: KS on KLL sketches / chi-square, "
     "DRIFT at p < 0.05"),
    ("frouros", "run_frouros.py", "frouros", "frouros",
     "KSTest / ChiSquareTest per column, Bonferroni at 0.05"),
    ("scipy baseline", "run_scipy.py", None, "scipy",
     "ks_2samp / chi2_contingency per column, Bonferroni at 0.05"),
    ("numpy lower bound", "run_numpy.py", None, "numpy",
     "one sort of all numeric columns, KS by searchsorted, chi-square by bincount, "
     "Bonferroni at 0.05"),
]  # fmt: skip
PEER_LABELS = ("evidently", "alibi-detect", "nannyml", "whylogs", "frouros", "scipy baseline")


def _command(python: str, runner: str) -> str:
    rel = os.path.relpath(python, HERE.parent) if python != sys.executable else ".venv/bin/python"
    return f"{rel} benchmarks/peers/{runner} --data CASE --repeats 1 --budget {CAP_SECONDS:g}"


def _run_tool(python: str, runner: str, case: Path) -> dict[str, Any]:
    argv = [python, str(PEERS_DIR / runner), "--data", str(case), "--repeats", "1",
            "--budget", str(CAP_SECONDS)]  # fmt: skip
    timeout = CAP_SECONDS + STARTUP_ALLOWANCE
    started = time.monotonic()
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False,
                             cwd=PEERS_DIR)  # fmt: skip
    except subprocess.TimeoutExpired:
        return {"error": f"timed out: no result {timeout:.0f} s after start "
                         f"(cap {CAP_SECONDS:.0f} s of compute + {STARTUP_ALLOWANCE:.0f} s "
                         "for start-up and reading)"}  # fmt: skip
    wall = time.monotonic() - started
    if out.returncode != 0:
        tail = [ln for ln in out.stderr.splitlines() if ln.strip()][-1:] or ["no output"]
        why = (
            "killed by SIGKILL (out of memory?)"
            if out.returncode == -9
            else (f"exited {out.returncode}: {tail[0][:200]}")
        )
        return {"error": why}
    try:
        result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return {"error": f"no JSON on stdout: {out.stdout[-200:]!r}"}
    result["wall_seconds"] = wall
    return result


def run(*, duration: float = 4.0, repeats: int = 3, warmup: float = 2.0) -> dict[str, Any]:
    del duration, warmup  # the suite's repeats are whole runs of each tool
    pythons: dict[str, str] = {}
    unavailable: dict[str, str] = {}
    versions: dict[str, str] = {}
    for label, _runner, peer, dist, _what in TOOLS:
        if peer is None:
            pythons[label] = sys.executable
            versions[label] = _local_version(dist)
            continue
        path, why = envs.ensure(peer)
        if path is None:
            unavailable[label] = why
        else:
            pythons[label] = str(path)
        versions[label] = envs.version(peer, dist)

    cases: list[dict[str, Any]] = []
    skip: dict[str, str] = dict(unavailable)
    tmp = Path(tempfile.mkdtemp(prefix="mlwarden-drift-"))
    try:
        for n in SIZES:
            case = drift_data.write(tmp / f"case-{n}", n)
            runs: dict[str, list[dict[str, Any]]] = {label: [] for label, *_ in TOOLS}
            errors: dict[str, str] = {}
            over_cap: dict[str, float] = {}  # one run over the cap: no more repeats, no more sizes
            for _ in range(repeats):
                for label, runner, *_rest in TOOLS:
                    if label in skip or label in errors or label in over_cap:
                        continue
                    result = _run_tool(pythons[label], runner, case)
                    if "error" in result:
                        errors[label] = result["error"]
                        continue
                    runs[label].append(result)
                    if result["seconds"][0] > CAP_SECONDS:
                        over_cap[label] = result["seconds"][0]
                    print(f"  drift suite {n:>9,} rows: {label:<18} {result['seconds'][0]:8.3f} s",
                          file=sys.stderr, flush=True)  # fmt: skip
            cases.append(_summarise(n, runs, errors, skip))
            for label, why in errors.items():
                skip.setdefault(label, f"not run: at {n:,} rows it {why.split(':')[0]}")
            for label, secs in over_cap.items():
                skip.setdefault(label, f"not run: took {secs:.0f} s at {n:,} rows (cap "
                                       f"{CAP_SECONDS:.0f} s)")  # fmt: skip
            shutil.rmtree(case)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    commands = {label: _command(pythons.get(label, "?"), runner)
                for label, runner, *_ in TOOLS}  # fmt: skip
    verdicts = _verdicts(cases)
    res = {"cases": cases, "versions": versions, "commands": commands, "repeats": repeats,
           "cap_seconds": CAP_SECONDS, "cpus": os.cpu_count(), "verdicts": verdicts,
           "what": {label: what for label, _r, _p, _d, what in TOOLS}}  # fmt: skip
    res["text"] = _text(res)
    return res


def _local_version(dist: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "?"


def _summarise(
    n: int, runs: dict[str, list[dict[str, Any]]], errors: dict[str, str], skip: dict[str, str]
) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    base = runs.get("mlwarden check") or []
    for label, *_ in TOOLS:
        results = runs[label]
        if not results:
            rows.append({"tool": label, "error": errors.get(label) or skip.get(label, "not run")})
            continue
        seconds = [r["seconds"][0] for r in results]
        # Side by side: this tool's time over mlwarden check's in the same repeat.
        ratios = [s / b["seconds"][0] for s, b in zip(seconds, base, strict=False)]
        last = results[-1]
        score = drift_data.score(last["flagged"])
        agree = all(sorted(r["flagged"]) == sorted(last["flagged"]) for r in results)
        rows.append({
            "tool": label,
            "seconds": statistics.median(seconds),
            "all_seconds": seconds,
            "runs": len(seconds),
            "over_cap": any(x > CAP_SECONDS for x in seconds),
            "vs_check": statistics.median(ratios) if ratios else None,
            "cells_per_second": n * 25 / statistics.median(seconds),
            "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in results),
            "rss_after_read_mb": statistics.median(r["rss_after_read_mb"] for r in results),
            "read_seconds": statistics.median(r["read_seconds"] for r in results),
            "flagged": last["flagged"],
            "consistent": agree,
            **score,
            "details": last.get("details", {}),
        })  # fmt: skip
    return {"rows": n, "tools": rows}


def _row(case: dict[str, Any], tool: str) -> dict[str, Any]:
    return next(r for r in case["tools"] if r["tool"] == tool)


def _verdicts(cases: list[dict[str, Any]]) -> list[tuple[str, bool, str]]:
    out: list[tuple[str, bool, str]] = []
    big = cases[-1]
    check = _row(big, "mlwarden check")
    peers = [r for r in big["tools"] if r["tool"] in PEER_LABELS and "seconds" in r]
    if "seconds" in check and peers:
        fastest = min(peers, key=lambda r: r["seconds"])
        speedup = fastest["vs_check"]  # the peer's time over check's, side by side
        out.append((
            f"mlwarden check >= {SPEEDUP_TARGET:g}x faster than the fastest peer at "
            f"{big['rows']:,} rows (side-by-side ratio, medians)",
            bool(speedup and speedup >= SPEEDUP_TARGET),
            f"{check['seconds']:.3f} s vs {fastest['tool']} {fastest['seconds']:.3f} s: "
            f"{speedup:.2f}x",
        ))  # fmt: skip
    else:
        out.append((f"mlwarden check >= {SPEEDUP_TARGET:g}x faster than the fastest peer", False,
                    f"no figure: {check.get('error', 'no peer ran')}"))  # fmt: skip
    for tool in ("mlwarden check", "mlwarden detector"):
        bad = []
        for case in cases:
            r = _row(case, tool)
            if "seconds" not in r:
                bad.append(f"{case['rows']:,}: {r['error']}")
            elif r["fp"] or r["misses"]:
                bad.append(f"{case['rows']:,}: FP {r['fp_columns']} missed {r['missed_columns']}")
        out.append(
            (
                f"{tool}: zero misses and zero false positives at every size",
                not bad,
                "; ".join(bad) if bad else "4 of 4 drifted columns, none of the 21 others",
            )
        )
    evals = [(c["rows"], _row(c, "mlwarden detector").get("details", {}).get("evaluate_ms"))
             for c in cases]  # fmt: skip
    evals = [(n, ms) for n, ms in evals if ms is not None]
    if len(evals) >= 2:
        # "Must not grow with the window size": no larger window costs over 2x the smallest.
        growth = max(ms for _, ms in evals[1:]) / evals[0][1]
        out.append(("streaming evaluation cost does not grow with the window size "
                    f"(no larger window over 2x the {evals[0][0]:,} one)",
                    growth <= 2.0,
                    ", ".join(f"{n:,}: {ms:.1f} ms" for n, ms in evals)
                    + f" (largest over smallest {growth:.2f})"))  # fmt: skip
    return out


def _cell(r: dict[str, Any]) -> list[str]:
    if "seconds" not in r:
        return [r["error"]]
    vs = (
        "1.00"
        if r["tool"] == "mlwarden check"
        else (f"{r['vs_check']:.2f}" if r["vs_check"] is not None else "-")
    )
    return [
        f"{r['seconds']:.3f}",
        vs,
        f"{r['cells_per_second'] / 1e6:.1f}",
        f"{r['peak_rss_mb']:.0f}",
        str(r["tp"]),
        str(r["fp"]),
        str(r["misses"]),
    ]


def _text(res: dict[str, Any]) -> str:
    lines = ["drift suite (seconds median, x mlwarden check side by side, M cells/s, "
             "peak RSS MB, TP/FP/misses)"]  # fmt: skip
    for case in res["cases"]:
        lines.append(f"  {case['rows']:,} rows x 25 columns")
        for r in case["tools"]:
            c = _cell(r)
            if len(c) == 1:
                lines.append(f"    {r['tool']:<18} {c[0]}")
            else:
                lines.append(f"    {r['tool']:<18} {c[0]:>8} s  x{c[1]:>6}  {c[2]:>6} Mc/s  "
                             f"{c[3]:>6} MB  TP {c[4]} FP {c[5]} miss {c[6]}")  # fmt: skip
    lines += [f"  {'PASS' if ok else 'MISS'}  {what}: {fig}" for what, ok, fig in res["verdicts"]]
    return "\n".join(lines)


def render_markdown(res: dict[str, Any]) -> str:
    out = ["## Drift suite against the peers (`benchmarks/drift_suite.py`)", ""]
    out.append(
        "Synthetic data with known ground truth (benchmarks/drift_data.py): 20 numeric and 5 "
        "categorical columns; drifted: `x00` mean +0.5 sd, `x01` scale x1.5, `x02` normal -> "
        "bimodal with the same mean and variance, `c0` category frequencies .4/.3/.2/.1 -> "
        ".3/.3/.2/.2; `x03` a negligible +0.02 sd shift that must not be flagged; the other 20 "
        "undrifted. Reference and current have the given number of rows each. Every tool runs "
        "as its own process on the same files (peers in their own virtual environments); "
        "`seconds` is the detection alone, timed inside the runner (no interpreter start, "
        "imports or file read), the median of "
        f"{res['repeats']} runs interleaved across tools; `x check` is the tool's time over "
        "mlwarden check's in the same repeat (median of the ratios; above 1 means slower than "
        "mlwarden check); `M cells/s` is rows x 25 / seconds; peak RSS is the runner's "
        "high-water mark, data in memory included. "
        f"Cap: {res['cap_seconds']:.0f} s of compute per run; a tool over it is not run at "
        f"larger sizes. Machine: {res['cpus']} cores, shared with other work (see the load "
        "average above).")  # fmt: skip
    for case in res["cases"]:
        out += ["", f"### {case['rows']:,} rows x 25 columns", "",
                "| tool | seconds | x check | M cells/s | peak RSS MB | TP | FP | misses | "
                "false positives / missed |",
                "|---|---:|---:|---:|---:|---:|---:|---:|---|"]  # fmt: skip
        for r in case["tools"]:
            c = _cell(r)
            if len(c) == 1:
                out.append(f"| {r['tool']} | {c[0]} | | | | | | | |")
                continue
            notes = ", ".join(r["fp_columns"]) or "-"
            if r["missed_columns"]:
                notes += "; missed " + ", ".join(r["missed_columns"])
            if r["over_cap"]:
                notes += f" ({r['runs']} run{'s' if r['runs'] > 1 else ''}: over the cap)"
            if not r["consistent"]:
                notes += " (verdicts differed between repeats; last shown)"
            out.append(f"| {r['tool']} | " + " | ".join(c) + f" | {notes} |")
    out += ["", "### Verdicts", "", "| target | verdict | figure |", "|---|---|---|"]
    out += [f"| {what} | {'PASS' if ok else 'MISS'} | {fig} |" for what, ok, fig in res["verdicts"]]
    check_api = next((r["details"].get("api") for c in res["cases"] for r in c["tools"]
                      if r["tool"] == "mlwarden check" and "details" in r), None)  # fmt: skip
    if check_api:
        out += ["", f"mlwarden check ran through `{check_api}`."]
    out += ["", "### Tools, versions and commands", "",
            "| tool | version | what runs | command (CASE: a directory written by "
            "`drift_data.write`) |", "|---|---|---|---|"]  # fmt: skip
    for label, *_ in TOOLS:
        out.append(f"| {label} | {res['versions'].get(label, '?')} | {res['what'][label]} | "
                   f"`{res['commands'][label]}` |")  # fmt: skip
    out += ["", "Peers' full pins: benchmarks/peers/requirements-<peer>.txt, one virtual "
            "environment each under benchmarks/.peers-venv/ (their pins conflict). The "
            "whole suite: `.venv/bin/python benchmarks/run.py --only drift_suite`.",
            ""]  # fmt: skip
    return "\n".join(out)


if __name__ == "__main__":
    from procs import by_hand

    by_hand(__doc__, "drift_suite")
    print(run(repeats=1)["text"])
