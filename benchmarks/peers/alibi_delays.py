"""Alibi Detect's online detectors' delay distribution on the abrupt changes of
`benchmarks/scan_sim.py delays`, to set beside mlwarden's scan over hundreds of replicates
rather than the stream benchmark's two per change.

By hand, in the peers' environment (`make bench-peers-env`), for example at mlwarden's
default rate:

    benchmarks/.peers-venv/alibi/bin/python benchmarks/peers/alibi_delays.py \\
        --ert 1000000 --cache benchmarks/out/alibi-thresholds --json alibi_delays.json \\
        --against scan_delays.json

where scan_delays.json is mlwarden's side (`PYTHONPATH=src .venv/bin/python
benchmarks/scan_sim.py delays 300 50 scan_delays.json`): both are printed per change and
pooled, with a bootstrap 95% interval of the difference of the pooled medians (again later,
without running Alibi: `--from-json alibi_delays.json --against scan_delays.json`).

Each change (`CHANGES`, as in scan_sim.py: numeric N(0, 1) shifted by 0.25, 0.5 or 1 sd or
scaled by 1.5; binary "yes" at 0.3 -> 0.36 or 0.45) is run on `--refs` references of 1,000
records, each with `--per-ref` streams of its own: `PRE` records as the reference, then
`POST` records after the change. A detection before the change is a false alarm (counted;
the detector is reset and goes on), the delay is records from the change to the first
detection after it, and a stream with none counts as `POST`, as in scan_sim.py. Binary
streams get `FETDriftOnline` (thresholds simulated per reference: they depend on its rate,
each in about a minute with `DistinctHypergeom`), numeric ones `CVMDriftOnline`
(thresholds depend on the reference's size only: simulated once, about 45 minutes of CPU at
an ERT of 1,000,000, or read from `--cache`; see run_alibi_online.py). `ert`, window 100 and
`n_bootstraps` = 1.2 x `ert` as in benchmarks/stream_delay.py. The streams are drawn here,
not shared with scan_sim.py: the two are compared as distributions.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
from alibi_detect.cd import fet_online
from run_alibi_online import CachedCVMDriftOnline, use_distinct_hypergeom, with_reference

PRE, POST, REF = 1_517, 6_003, 1_000  # as scan_sim.py
CHANGES = [("mean +0.25 sd", "mean", 0.25), ("mean +0.5 sd", "mean", 0.5),
           ("mean +1 sd", "mean", 1.0), ("scale x1.5", "scale", 1.5),
           ("p 0.3 -> 0.36", "p", 0.36), ("p 0.3 -> 0.45", "p", 0.45)]  # fmt: skip


def draw(kind: str, magnitude: float, rng: np.random.Generator, after: np.ndarray) -> np.ndarray:
    n = after.size
    if kind == "mean":
        return rng.normal(size=n) + magnitude * after
    if kind == "scale":
        return rng.normal(size=n) * np.where(after, magnitude, 1.0)
    return (rng.random(n) < np.where(after, magnitude, 0.3)).astype(float)


def run_stream(detector: object, xs: np.ndarray) -> tuple[int, int]:
    """(delay after the change, false alarms before it) of one stream."""
    before = 0
    detector.reset_state()  # type: ignore[attr-defined]
    for i, x in enumerate(xs.astype(np.float32)):
        if detector.predict(x.reshape(1))["data"]["is_drift"]:  # type: ignore[attr-defined]
            if i + 1 > PRE:
                return i + 1 - PRE, before
            before += 1
            detector.reset_state()  # type: ignore[attr-defined]
    return POST, before


def compare(alibi: dict, scan: dict, resamples: int = 2_000, seed: int = 7) -> list[str]:
    """Alibi's delays (this script's --json) beside mlwarden's scan's (`scan_sim.py delays`'s
    JSON, at the same rate) per change and pooled, with a bootstrap 95% interval of the
    difference of the pooled medians, resampling within each change what is independent:
    mlwarden's streams (each has a reference of its own) and Alibi's references (each with
    `per_ref` streams that share its thresholds and its luck), with their streams."""
    key = f"{float(alibi['ert']):.0f}"
    if key not in scan:
        raise SystemExit(f"the scan's JSON has no delays at falseAlarmsPer {key}: {list(scan)}")
    mine = scan[key]
    names = [n for n, _, _ in CHANGES if n in alibi["changes"] and n in mine]
    if not names:
        raise SystemExit("no change is in both files: nothing to compare")
    per_ref = int(alibi.get("per_ref", 20))
    theirs = {n: np.asarray(alibi["changes"][n]["delays"], dtype=float) for n in names}
    ours = {n: np.asarray(mine[n], dtype=float) for n in names}
    lines = [f"{'change':16s} {'mlwarden median / mean':>24s} {'Alibi median / mean':>22s}"]
    for n in names:
        lines.append(f"{n:16s} {np.median(ours[n]):>12,.0f} / {ours[n].mean():<9,.0f} "
                     f"{np.median(theirs[n]):>10,.0f} / {theirs[n].mean():,.0f}")  # fmt: skip
    a, b = np.concatenate(list(ours.values())), np.concatenate(list(theirs.values()))
    rng = np.random.default_rng(seed)
    diffs = np.empty(resamples)
    blocks = {n: theirs[n].reshape(-1, per_ref) for n in names}  # references x streams
    for r in range(resamples):
        diffs[r] = np.median(np.concatenate([rng.choice(ours[n], ours[n].size) for n in names]))
        diffs[r] -= np.median(np.concatenate([
            blocks[n][rng.integers(0, len(blocks[n]), len(blocks[n]))].ravel() for n in names
        ]))  # fmt: skip
    low, high = np.percentile(diffs, [2.5, 97.5])
    lines.append(f"pooled: mlwarden median {np.median(a):,.0f} / mean {a.mean():,.0f} "
                 f"({a.size} streams), Alibi {np.median(b):,.0f} / {b.mean():,.0f} ({b.size}); "
                 f"mlwarden - Alibi, median: {np.median(a) - np.median(b):+,.0f}, bootstrap "
                 f"95% interval {low:+,.0f} .. {high:+,.0f} ({resamples:,} resamples; Alibi's "
                 f"references resampled, {per_ref} streams each)")  # fmt: skip
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ert", type=float, default=1_000_000)
    parser.add_argument("--refs", type=int, default=5, help="references per change (5)")
    parser.add_argument("--per-ref", type=int, default=20, help="streams per reference (20)")
    parser.add_argument("--cache", type=Path, help="CVM thresholds' directory (see --help)")
    parser.add_argument("--json", type=Path, help="also write the delays here")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument(
        "--kinds", default="numeric,binary", help="numeric, binary or both (the default)"
    )
    parser.add_argument(
        "--against",
        type=Path,
        metavar="SCAN_JSON",
        help="mlwarden's delays (PYTHONPATH=src .venv/bin/python benchmarks/scan_sim.py delays "
        "300 50 SCAN_JSON): print both side by side with a bootstrap interval of the "
        "difference of the pooled medians",
    )
    parser.add_argument(
        "--from-json",
        type=Path,
        metavar="ALIBI_JSON",
        help="with --against: Alibi's delays from an earlier run's --json, instead of running",
    )
    args = parser.parse_args()
    if args.from_json:
        if not args.against:
            parser.error("--from-json needs --against")
        alibi = json.loads(args.from_json.read_text())
        print("\n".join(compare(alibi, json.loads(args.against.read_text()))))
        return
    warnings.filterwarnings("ignore")
    rng = np.random.default_rng(args.seed)
    bootstraps = int(args.ert * 6 // 5)
    after = np.arange(PRE + POST) >= PRE
    use_distinct_hypergeom((rng.random((REF, 1)) < 0.3).astype(np.float32), [100])
    CachedCVMDriftOnline.cache_dir = args.cache
    cvm = None
    out: dict[str, dict[str, object]] = {}
    kinds = set(args.kinds.split(","))
    for name, kind, magnitude in CHANGES:
        if ("binary" if kind == "p" else "numeric") not in kinds:
            continue
        started = time.perf_counter()
        delays: list[int] = []
        false_alarms = 0
        for _ in range(args.refs):
            x_ref = draw(kind, magnitude, rng, np.zeros(REF, dtype=bool))
            x_ref = x_ref.astype(np.float32).reshape(-1, 1)
            if kind == "p":
                detector = fet_online.FETDriftOnline(
                    x_ref, ert=args.ert, window_sizes=[100], n_bootstraps=bootstraps, verbose=False
                )
            else:
                if cvm is None:
                    cvm = CachedCVMDriftOnline(x_ref, ert=args.ert, window_sizes=[100],
                                               n_bootstraps=bootstraps, verbose=False)  # fmt: skip
                detector = with_reference(cvm, x_ref)
            for _ in range(args.per_ref):
                d, b = run_stream(detector, draw(kind, magnitude, rng, after))
                delays.append(d)
                false_alarms += b
        out[name] = {"delays": delays, "false_alarms_before": false_alarms,
                     "records_before": PRE * len(delays)}  # fmt: skip
        print(f"{name}: median {statistics.median(delays):,.0f} / mean "
              f"{statistics.fmean(delays):,.0f} records over {len(delays)} streams; "
              f"{false_alarms} false alarms in {PRE * len(delays):,} records before the change "
              f"({time.perf_counter() - started:.0f} s)", flush=True)  # fmt: skip
    result = {"ert": args.ert, "window": 100, "bootstraps": bootstraps, "per_ref": args.per_ref,
              "cvm_thresholds_from": CachedCVMDriftOnline.loaded_from or "simulated",
              "changes": out}  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(result))
    pooled = [d for v in out.values() for d in v["delays"]]  # type: ignore[attr-defined]
    print(f"pooled over the changes: median {statistics.median(pooled):,.0f}")
    if args.against:
        print("\n".join(compare(result, json.loads(args.against.read_text()))))


if __name__ == "__main__":
    main()
