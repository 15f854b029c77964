"""Canary analysis: how fast a bad candidate is flagged, how often an A/A pair alarms, and what
per-revision windows cost at ingest.

Targets (issue 17):
- a bad candidate on 5% of 1,000 req/s is flagged after at most 500 of its own requests;
- an A/A pair (both revisions the same model): no CanaryRegression in 100 runs of 10,000
  requests;
- per-revision windows add at most 20% to the detector's ingest cost, and evaluation stays
  O(1) in the window size.

Measured on the pure `Detector` with simulated batches (tests/unit/detector/canary_sim.py: a
3-class classifier with class probabilities, latencies and statuses), with a simulated clock:
each simulated second the baseline's sidecar ships its 95% and the candidate's its 5% as
batches, and the detector evaluates every `EVALUATION_INTERVAL` seconds. The ingest cost is
measured on the detector throughput benchmark's batches (25 features, 500 records), the same
batches with and without `source.modelRevision`.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "unit" / "detector"))

from canary_sim import Behaviour, batch, model

from detector_throughput import batches as throughput_batches
from detector_throughput import manifest as throughput_manifest
from mlwarden.detector.core import Detector
from mlwarden.detector.ingest import decode, parse_batch
from mlwarden.spec import parse_observed_model

NAME = "canary"
RATE = 1000  # requests per second, all traffic
SHARE = 0.05
EVALUATION_INTERVAL = 2.0  # seconds (spec.alerting.evaluationInterval)
FLAG_TARGET = 500
AA_RUNS, AA_REQUESTS, AA_SHARE = 100, 10_000, 0.1
AA_RATE = 100  # req/s in the A/A runs: 100 s per run, 100 evaluations (1 s) per run
INGEST_TARGET = 0.20
BAD = {
    "strong: one class 80% of the time": Behaviour(classes=(0.8, 0.1, 0.1)),
    "moderate: one class 55% (Cramér's V ~ 0.2)": Behaviour(classes=(0.55, 0.225, 0.225)),
    "slower (p99 x 2.5) and 8% 5xx": Behaviour(latency=0.025, error_rate=0.08),
}


def spec(interval: float) -> dict[str, Any]:
    return {"alerting": {"evaluationInterval": f"{interval:g}s", "fireAfter": 3, "resolveAfter": 3}}


def flag_after(bad: Behaviour, seed: int) -> int | None:
    """The candidate's own requests until its CanaryRegression fires (None: not in 120 s)."""
    rng = np.random.default_rng(seed)
    d = Detector(model(**spec(EVALUATION_INTERVAL)), now=0.0)
    d.ingest(batch(rng, 1000, Behaviour(), revision="stable", now=0.0), now=0.0)
    own = 0
    n_cand = round(RATE * SHARE)
    for second in range(1, 121):
        t = float(second)
        # The baseline's sidecar ships 500-record batches; the candidate's one batch a second.
        for _ in range(2):
            d.ingest(batch(rng, (RATE - n_cand) // 2, Behaviour(), revision="stable", now=t), now=t)
        d.ingest(batch(rng, n_cand, bad, revision="canary", now=t), now=t)
        own += n_cand
        if second % EVALUATION_INTERVAL == 0:
            for tr in d.evaluate(now=t, now_iso=str(t)):
                if tr.kind == "fired" and tr.alert.type == "CanaryRegression":
                    assert tr.alert.model_revision == "canary"
                    return own
    return None


def aa_run(seed: int) -> tuple[int, int, int, int]:
    """(CanaryRegression alerts, evaluations with a failing canary finding, evaluations,
    other alerts) of one A/A run."""
    rng = np.random.default_rng(seed)
    d = Detector(model(**spec(1.0)), now=0.0)
    d.ingest(batch(rng, 1000, Behaviour(), revision="stable", now=0.0), now=0.0)
    alerts = findings = evaluations = others = 0
    n_cand = round(AA_RATE * AA_SHARE)
    for second in range(1, AA_REQUESTS // AA_RATE + 1):
        t = float(second)
        d.ingest(batch(rng, AA_RATE - n_cand, Behaviour(), revision="stable", now=t), now=t)
        d.ingest(batch(rng, n_cand, Behaviour(), revision="canary", now=t), now=t)
        fired = [x for x in d.evaluate(now=t, now_iso=str(t)) if x.kind == "fired"]
        evaluations += 1
        findings += any(e.type == "CanaryRegression" and e.failing for e in d.last_evidence)
        alerts += sum(x.alert.type == "CanaryRegression" for x in fired)
        others += sum(x.alert.type != "CanaryRegression" for x in fired)
    return alerts, findings, evaluations, others


def ingest_rates(repeats: int) -> tuple[float, float]:
    """Records/s of decode + parse + ingest, without and with source.modelRevision (median)."""
    plain = throughput_batches(40)
    revised = []
    for i, body in enumerate(plain):
        doc = json.loads(body)
        doc["source"]["modelRevision"] = "stable" if i % 10 else "canary"
        revised.append(json.dumps(doc).encode())
    rates: dict[str, list[float]] = {"plain": [], "revised": []}
    for _ in range(repeats):
        for name, bodies in (("plain", plain), ("revised", revised)):
            d = Detector(parse_observed_model(throughput_manifest(100_000)), now=0.0)
            for body in bodies[:10]:
                d.ingest(parse_batch(decode(body), now=0.0), now=0.0)
            started = time.perf_counter()
            for body in bodies:
                d.ingest(parse_batch(decode(body), now=1.0), now=1.0)
            rates[name].append(len(bodies) * 500 / (time.perf_counter() - started))
    return statistics.median(rates["plain"]), statistics.median(rates["revised"])


def evaluation_ms(window: int, *, probabilities: bool) -> float:
    """One evaluation with a baseline and a candidate, windows of `window` records each.

    Without `probabilities` the model declares no class probabilities: with them, the
    all-traffic window keeps every row's probabilities for CBPE and an evaluation copies
    them (O(window), as before revisions existed); the revisions' views read at most the
    latest 20,000 rows, and none without `detectors.performance`.
    """
    rng = np.random.default_rng(5)
    plain = {} if probabilities else {"prediction": {"name": "label", "type": "categorical"}}
    d = Detector(model(window={"size": window}, **plain, **spec(1.0)), now=0.0)
    d.ingest(batch(rng, 1000, Behaviour(), revision="stable", now=0.0), now=0.0)
    body = batch(rng, 500, Behaviour(), revision="stable", now=1.0)
    cand = batch(rng, 500, Behaviour(), revision="canary", now=1.0)
    for _ in range(max(4, 2 * window // 500)):
        d.ingest(body, now=1.0)
        d.ingest(cand, now=1.0)
    times = []
    for _ in range(15):
        started = time.perf_counter()
        d.evaluate(now=2.0, now_iso="t")
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def run(*, duration: float = 4.0, repeats: int = 3, warmup: float = 2.0) -> dict[str, Any]:
    del duration, warmup
    started = time.monotonic()
    flags = {name: [flag_after(bad, seed) for seed in range(20)] for name, bad in BAD.items()}
    aa = [aa_run(10_000 + seed) for seed in range(AA_RUNS)]
    plain, revised = ingest_rates(max(repeats, 3))
    evals = {w: evaluation_ms(w, probabilities=False) for w in (1_000, 100_000)}
    evals_probs = {w: evaluation_ms(w, probabilities=True) for w in (1_000, 100_000)}
    res: dict[str, Any] = {
        "flags": flags,
        "aa": {
            "runs": AA_RUNS,
            "alerts": sum(a for a, _, _, _ in aa),
            "runs_with_alert": sum(1 for a, _, _, _ in aa if a),
            "findings": sum(f for _, f, _, _ in aa),
            "evaluations": sum(e for _, _, e, _ in aa),
            "other_alerts": sum(o for _, _, _, o in aa),
        },
        "ingest": {"plain": plain, "revised": revised, "added": plain / revised - 1},
        "evaluation_ms": evals,
        "evaluation_ms_probabilities": evals_probs,
        "seconds": time.monotonic() - started,
    }
    worst = max((x if x is not None else 10**9) for v in flags.values() for x in v)
    res["verdicts"] = [
        ("bad candidate on 5% of 1,000 req/s flagged within 500 of its own requests",
         worst <= FLAG_TARGET, f"worst {worst} over {sum(map(len, flags.values()))} runs"),
        ("A/A: no CanaryRegression in 100 runs of 10,000 requests",
         res["aa"]["alerts"] == 0, f"{res['aa']['alerts']} alert(s) in {AA_RUNS} runs"),
        ("per-revision windows add <= 20% to ingest", res["ingest"]["added"] <= INGEST_TARGET,
         f"+{res['ingest']['added']:.1%}"),
        ("evaluation O(1) in window size (1k -> 100k within 2x)",
         evals[100_000] <= 2 * evals[1_000],
         f"{evals[1_000]:.2f} ms -> {evals[100_000]:.2f} ms"),
    ]  # fmt: skip
    res["text"] = render_markdown(res)
    return res


def render_markdown(res: dict[str, Any]) -> str:
    out = ["## Canary analysis (`benchmarks/canary.py`)", ""]
    out.append(
        f"Pure `Detector`, simulated clock and traffic (3-class classifier with probabilities, "
        f"latencies, statuses; `tests/unit/detector/canary_sim.py`). Detection: {RATE:,} req/s, "
        f"the candidate on {SHARE:.0%}, evaluation every {EVALUATION_INTERVAL:g} s, "
        f"fireAfter 3, the rest of `spec.canary` at its defaults; 20 seeds per candidate."
    )
    out += ["", "| bad candidate | own requests to CanaryRegression: median | worst |",
            "|---|---:|---:|"]  # fmt: skip
    for name, values in res["flags"].items():
        got = [v for v in values if v is not None]
        missed = len(values) - len(got)
        worst = "not flagged in 120 s" if missed else f"{max(got):,}"
        median = f"{statistics.median(got):,.0f}" if got else "-"
        out.append(f"| {name} | {median} | {worst} |")
    aa = res["aa"]
    out += [
        "",
        f"A/A: {aa['runs']} runs of {AA_REQUESTS:,} requests ({AA_RATE} req/s, {AA_SHARE:.0%} "
        f"candidate, an evaluation every second: {aa['evaluations']:,} evaluations): "
        f"**{aa['alerts']} CanaryRegression alert(s)** ({aa['runs_with_alert']} run(s)); "
        f"{aa['findings']} evaluations ({aa['findings'] / aa['evaluations']:.2%}) had a failing "
        f"canary finding that hysteresis absorbed; other alerts (all-traffic checks): "
        f"{aa['other_alerts']}.",
        "",
        "| ingest (decode + parse + ingest, 25 features, batches of 500) | records/s |",
        "|---|---:|",
        f"| without source.modelRevision | {res['ingest']['plain']:,.0f} |",
        f"| with (90% one revision, 10% another) | {res['ingest']['revised']:,.0f} |",
        "",
        "| window (records per revision) | evaluate, baseline + candidate (ms) | the same, "
        "the model declaring class probabilities (ms) |",
        "|---:|---:|---:|",
    ]
    for w, ms in res["evaluation_ms"].items():
        out.append(f"| {w:,} | {ms:.2f} | {res['evaluation_ms_probabilities'][w]:.2f} |")
    out += [
        "",
        "With class probabilities declared, the all-traffic window keeps each row's "
        "probabilities for its CBPE check and an evaluation copies them: that part grows with "
        "the window, as it did before revisions (the detector throughput benchmark declares "
        "none). The revisions' views read at most the latest 20,000 rows, none without "
        "`detectors.performance`.",
    ]
    out += ["", "| target | verdict | figure |", "|---|---|---|"]
    for what, ok, figure in res["verdicts"]:
        out.append(f"| {what} | {'PASS' if ok else 'MISS'} | {figure} |")
    out += [
        "",
        "Command: `.venv/bin/python benchmarks/run.py --only canary` (or "
        f"`.venv/bin/python benchmarks/canary.py`), {res['seconds']:.0f} s.",
    ]
    return "\n".join(out)


if __name__ == "__main__":
    from procs import by_hand

    by_hand(__doc__, "canary")
    print(run()["text"])
