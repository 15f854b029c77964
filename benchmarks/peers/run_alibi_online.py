"""Alibi Detect's online detectors on the streams of benchmarks/stream_delay.py.

`CVMDriftOnline` for numeric streams and `FETDriftOnline` for binary ones (`ert`,
`window_sizes`, `n_bootstraps` from the flags), each on the stream's own reference.
`FETDriftOnline`'s thresholds depend on the reference's proportions, so it is built per
stream. `CVMDriftOnline`'s do not (they are simulated from standard normals and depend on
the reference only through its size), so it is built once and, per stream, deep-copied
with the stream's reference put in place of the first (`x_ref`, then its
`_configure_ref()`, as its constructor does): the same detector as building it anew,
without simulating the same thresholds nine times. Every record goes through `predict`;
on a detection the record index is an alarm and the detector's state is reset
(`reset_state`), so it goes on watching. A drifted stream stops at its first alarm after
the onset (nothing after it is scored). Categorical streams of more than two levels get
null: Alibi has no online detector for them without a deep-learning backend. Prints JSON:
alarms per stream, configuration seconds, µs per record.

`FETDriftOnline` configures its thresholds by calling scipy's `hypergeom.cdf` on every cell
of an `n_bootstraps` x `t_max` array (1.2 x 10^8 cells at an expected run time of 10^6,
about 28 min of CPU per binary stream), although the cells take at most
`max(window_sizes) + 1` distinct values. `DistinctHypergeom` stands in for `hypergeom` in
Alibi's module: it evaluates `cdf` once per distinct argument and gathers. It changes no
number: scipy's `cdf` is elementwise, it draws no random numbers, and before any stream
`use_distinct_hypergeom` builds a small `FETDriftOnline` both ways from the same random
state and stops the run unless the thresholds and permit probabilities are bit-identical.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from alibi_detect.cd import CVMDriftOnline, FETDriftOnline, fet_online
from scipy.stats import hypergeom


class DistinctHypergeom:
    """scipy's `hypergeom` whose `cdf` is evaluated once per distinct value of its one
    array argument (the rest scalars), then gathered: the same numbers, far fewer calls.
    Any other call shape goes to scipy unchanged."""

    calls = 0

    @staticmethod
    def cdf(k: Any, M: Any, n: Any, N: Any) -> Any:
        args = [k, M, n, N]
        arrays = [i for i, a in enumerate(args) if np.ndim(a) > 0]
        if len(arrays) != 1:
            return hypergeom.cdf(k, M, n, N)
        i = arrays[0]
        values = np.asarray(args[i])
        distinct, inverse = np.unique(values, return_inverse=True)
        args[i] = distinct
        DistinctHypergeom.calls += 1
        return hypergeom.cdf(*args)[inverse].reshape(values.shape)


class CachedCVMDriftOnline(CVMDriftOnline):
    """`CVMDriftOnline` whose simulated thresholds are kept in `cache_dir` (`--cache`) and
    read back by a later run with the same reference size, ERT, windows and bootstraps: they
    depend on nothing else (rank statistics simulated from standard normals), so a cached
    array is one earlier draw of the same simulation, 45 minutes of CPU at an ERT of
    1,000,000. `loaded_from` names the file when they were read rather than simulated."""

    cache_dir: Path | None = None
    loaded_from: str | None = None

    def _configure_thresholds(self) -> None:
        import alibi_detect

        if self.cache_dir is None:
            super()._configure_thresholds()
            return
        windows = "-".join(str(int(w)) for w in self.window_sizes)
        path = self.cache_dir / (
            f"cvm-thresholds-alibi{alibi_detect.__version__}-n{self.n}-ert{self.ert:g}"
            f"-w{windows}-b{self.n_bootstraps}-f{self.n_features}.npy"
        )
        if path.exists():
            self.thresholds = np.load(path)
            CachedCVMDriftOnline.loaded_from = str(path)
            return
        super()._configure_thresholds()
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        np.save(path, self.thresholds)


def with_reference(cvm: CVMDriftOnline, x_ref: np.ndarray) -> CVMDriftOnline:
    """A copy of the configured `cvm` watching `x_ref`: its thresholds depend on the
    reference's size only, so this is the same detector as building it anew on `x_ref`
    (`x_ref`, then `_configure_ref()`, as its constructor does), without the simulation."""
    detector = copy.deepcopy(cvm)
    detector.x_ref = x_ref
    detector._configure_ref()
    detector.reset_state()
    return detector


def use_distinct_hypergeom(x_ref: np.ndarray, windows: list[int]) -> float:
    """Put `DistinctHypergeom` in place of scipy's `hypergeom` in Alibi's FET module, once
    it is shown to change nothing: a small `FETDriftOnline` built with each from the same
    random state must configure the same thresholds and permit probabilities, bit for bit,
    or the run stops. Returns the seconds the check took."""
    started = time.perf_counter()
    built = []
    for stand_in in (hypergeom, DistinctHypergeom):
        fet_online.hypergeom = stand_in
        np.random.seed(20261202)
        built.append(FETDriftOnline(x_ref, ert=200, window_sizes=windows, n_bootstraps=2_400,
                                    verbose=False))  # fmt: skip
    fet_online.hypergeom = hypergeom
    plain, distinct = built
    same = np.array_equal(plain.thresholds, distinct.thresholds, equal_nan=True) and (
        np.array_equal(plain.permit_probs, distinct.permit_probs, equal_nan=True)
    )
    if not same or DistinctHypergeom.calls == 0:
        raise SystemExit(
            "DistinctHypergeom changes FETDriftOnline's thresholds (or was not called); "
            "this Alibi Detect version configures them differently: run without it"
        )
    fet_online.hypergeom = DistinctHypergeom
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--ert", type=float, required=True)
    parser.add_argument("--windows", required=True)
    parser.add_argument("--bootstraps", type=int, required=True)
    parser.add_argument("--onset", type=int, required=True)
    parser.add_argument(
        "--cache",
        type=Path,
        help="keep CVM's simulated thresholds in this directory and reuse them when the "
        "reference size, ERT, windows and bootstraps match (see CachedCVMDriftOnline)",
    )
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    windows = [int(w) for w in args.windows.split(",")]
    started = time.perf_counter()
    items = json.loads((args.data / "streams.json").read_text())
    binary = next((i for i in items if i["kind"] == "binary"), None)
    checked = 0.0
    if binary is not None:
        x_check = np.load(args.data / binary["ref"]).astype(np.float32).reshape(-1, 1)
        checked = use_distinct_hypergeom(x_check, windows)
    cvm = None
    configure: dict[str, list[float]] = {"numeric": [], "binary": []}
    alarms: list[list[int] | None] = []
    scored = {"numeric": 0, "binary": 0}
    scoring = {"numeric": 0.0, "binary": 0.0}
    for item in items:
        kind = item["kind"]
        if kind not in ("numeric", "binary"):  # no online detector for several levels
            alarms.append(None)
            continue
        x_ref = np.load(args.data / item["ref"]).astype(np.float32).reshape(-1, 1)
        values = np.load(args.data / item["file"]).astype(np.float32)
        t0 = time.perf_counter()
        if kind == "binary":
            detector = FETDriftOnline(
                x_ref,
                ert=args.ert,
                window_sizes=windows,
                n_bootstraps=args.bootstraps,
                verbose=False,
            )
        else:
            if cvm is None:
                CachedCVMDriftOnline.cache_dir = args.cache
                cvm = CachedCVMDriftOnline(
                    x_ref,
                    ert=args.ert,
                    window_sizes=windows,
                    n_bootstraps=args.bootstraps,
                    verbose=False,
                )
            detector = with_reference(cvm, x_ref)
        configure[kind].append(time.perf_counter() - t0)
        found: list[int] = []
        t0 = time.perf_counter()
        for i, x in enumerate(values):
            if detector.predict(x.reshape(1))["data"]["is_drift"]:
                found.append(i + 1)
                detector.reset_state()
                if item["drift"] and i + 1 > args.onset:
                    scored[kind] += i + 1
                    break
        else:
            scored[kind] += len(values)
        scoring[kind] += time.perf_counter() - t0
        alarms.append(found)
    print(
        json.dumps(
            {
                "alarms": alarms,
                "configure_seconds": {k: max(v) if v else 0.0 for k, v in configure.items()},
                "us_per_record": {k: 1e6 * scoring[k] / max(1, scored[k]) for k in scoring},
                "seconds": time.perf_counter() - started,
                "distinct_hypergeom_check_seconds": checked,
                "cvm_thresholds_from": CachedCVMDriftOnline.loaded_from or "simulated",
            }
        )
    )


if __name__ == "__main__":
    main()
