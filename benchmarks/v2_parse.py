"""CPU per exchange of the v2 adapter, as the capture worker calls it, before and after a change.

The capture worker turns each exchange into records with
`mlwarden.protocols.parse_exchange("v2", ...)`. This times that call alone, over the
benchmark's own iris-like exchange (`sidecar_latency.v2_request`: 4 FP64 features
nested by row, and what MLServer's sklearn runtime answers, `upstream_nginx.v2_response`:
one INT64 class per row), with a spec naming the four features and the prediction, at
1 and 32 rows per request; and `mlwarden.sidecar.capture.describe_exchange`, which
adds the request entry and the records' ingest form (what the worker does per exchange
before its metrics and the shipper). Two source trees (`--before-ref`, extracted with `git
archive`, and this tree) each run in their own interpreter, alternately, `--repeats`
times; each run reports the least CPU time (`time.process_time`) per exchange of 5
rounds of `--exchanges` calls. Medians over the repeats are printed. CPU time, not wall
time, so that other work on the machine weighs less; it still weighs some, and the
load average is printed.

    PYTHONPATH=$PWD/src .venv/bin/python benchmarks/v2_parse.py --before-ref 30ee470
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from procs import HERE, loadavg, source_tree
from sidecar_latency import v2_request
from upstream_nginx import v2_response

REPO = HERE.parent
ROWS = (1, 32)
PATH = "/v2/models/iris/infer"
# The exchange as the proxy would hand it to the worker, but for its bodies.
HEAD: dict[str, Any] = {
    "method": "POST",
    "path": PATH,
    "status": 200,
    "started_at": 0.0,
    "total_seconds": 0.001,
    "upstream_seconds": 0.001,
}


def child(exchanges: int) -> None:
    """In the tree on sys.path: print {"call rows": least CPU us per exchange}."""
    from mlwarden.protocols import parse_exchange
    from mlwarden.sidecar.capture import Exchange, RequestIds, describe_exchange
    from mlwarden.spec import parse_observed_model

    names = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    manifest = {
        "apiVersion": "mlwarden.io/v1alpha1",
        "kind": "ObservedModel",
        "metadata": {"name": "iris"},
        "spec": {
            "target": {"deployment": "iris"},
            "protocol": "v2",
            "features": [{"name": n, "type": "numeric"} for n in names],
            "prediction": {"name": "species"},
        },
    }
    spec = parse_observed_model(manifest).spec
    ids = RequestIds()
    out: dict[str, float] = {}
    for rows in ROWS:
        request = json.dumps(v2_request(rows)).encode()
        response = json.dumps(v2_response(rows)).encode()
        exchange = Exchange(**HEAD, request_body=request, response_body=response)
        calls: dict[str, Callable[[], object]] = {
            "parse_exchange": partial(parse_exchange, "v2", PATH, request, response, spec),
            "describe_exchange": partial(
                describe_exchange,
                exchange,
                protocol="v2",
                spec=spec,
                max_body_bytes=1 << 20,
                ids=ids,
            ),
        }
        count = max(exchanges // rows, 100)
        for what, call in calls.items():
            best = float("inf")
            for _ in range(5):
                start = time.process_time()
                for _ in range(count):
                    call()
                best = min(best, (time.process_time() - start) / count * 1e6)
            out[f"{what} {rows}"] = best
    print(json.dumps(out))


def run(tree: Path, exchanges: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": f"{tree}{os.pathsep}{HERE}"}
    done = subprocess.run(
        [sys.executable, __file__, "--child", "--exchanges", str(exchanges)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, float] = json.loads(done.stdout)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before-ref", help="git ref of the 'before' tree")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--exchanges", type=int, default=50_000)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.exchanges)
        return 0
    print(f"load average at start: {loadavg()}", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="mlwarden-v2-parse-") as tmp_name:
        trees = {"after": REPO / "src"}
        if args.before_ref:
            before = Path(tmp_name) / "before"
            before.mkdir()
            trees = {"before": source_tree(args.before_ref, before), **trees}
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
        for _ in range(args.repeats):
            for name, tree in trees.items():  # alternately: before, after, before, ...
                runs[name].append(run(tree, args.exchanges))
    print(f"load average at end: {loadavg()}", file=sys.stderr)
    print("| call | rows | tree | CPU us/exchange (median) | runs |")
    print("|---|---:|---|---:|---|")
    for key in runs["after"][0]:
        what, rows = key.split()
        for name, results in runs.items():
            each = [r[key] for r in results]
            shown = ", ".join(f"{x:.1f}" for x in each)
            print(f"| `{what}` | {rows} | {name} | {statistics.median(each):.1f} | {shown} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
