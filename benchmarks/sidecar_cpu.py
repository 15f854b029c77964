"""The sidecar's CPU per request, before and after a change, in the same run.

Two source trees of mlwarden (`--before-ref`, e.g. the commit before a change, checked
out with `git archive` into a temporary directory, and this tree), each run as
`python -m mlwarden.cli sidecar` in front of the same fixed-response nginx upstream
(`upstream_nginx.py`), with capture off and with capture on (shipping to a real
`mlwarden detector`, one per sidecar). Each sidecar gets `hey -c 10 -q 100` (1,000 req/s
in bursts of 10, the issue's load) and then `wrk -t1 -c64` (saturation) for `--duration`
seconds; the sidecar's CPU (utime + stime of its process, from /proc) over the run,
divided by the requests it answered, is its CPU per request. Runs are interleaved
(before, after, before, after, ...) and repeated; medians are reported. The detector's
CPU is not counted. The load average is printed: other work on the machine shows as
noise in every figure, though less in CPU per request than in latency.

    .venv/bin/python benchmarks/sidecar_cpu.py --before-ref 77ac850 --duration 5 --repeats 3

The `before` tree's forwarding path is compiled as this tree's is (its own
`tools/build_native.py`, when it has one): a compiled `after` against an interpreted
`before` would credit the change with the compiler's gain. Each sidecar's forwarder
(native or python) is printed as it starts.

`--python-vs-native` compares this tree with itself instead: its forwarding path
interpreted (`MLWARDEN_SIDECAR_NATIVE=0`, "before") and compiled with mypyc (`make native`,
"after"; `mlwarden.sidecar.native`).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from procs import (
    HERE,
    HOST,
    Proc,
    detector_manifest,
    free_port,
    group_usage,
    http_get,
    loadavg,
    source_tree,
    start_detector,
    wait_until,
)
from sidecar_latency import SCENARIOS, forwarder_of, run_hey, run_wrk, v2_request, wrk_script
from upstream_nginx import MODEL_1_ROW, fixed_upstream_conf, infer_path, start_nginx

REPO = HERE.parent


def _sidecar(
    name: str,
    src: Path,
    tmp: Path,
    upstream: str,
    collector: str | None,
    stop: Any,
    extra_env: dict[str, str] | None = None,
) -> tuple[Proc, str, str]:
    """A sidecar from `src`: (process, proxy URL, admin URL)."""
    port, admin = free_port(), free_port()
    argv = [sys.executable, "-m", "mlwarden.cli", "sidecar", "--listen", f"{HOST}:{port}",
            "--upstream", upstream, "--admin-listen", f"{HOST}:{admin}",
            "--protocol", "v2"]  # fmt: skip
    if collector:
        argv += ["--collector", collector]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLWARDEN_")}
    env["PYTHONPATH"] = str(src)
    env |= extra_env or {}
    proc = Proc(name, argv, tmp / f"{name}.log", env=env)
    stop.callback(proc.stop)
    proc.wait_port(port)
    ready = f"http://{HOST}:{admin}/readyz"
    wait_until(lambda: http_get(ready)[0] == 200, timeout=30, what=f"{name} ready")
    print(f"{name}: forwarder {forwarder_of(f'http://{HOST}:{admin}')}", file=sys.stderr)
    return proc, f"http://{HOST}:{port}", f"http://{HOST}:{admin}"


def compiled_tree(ref: str, into: Path) -> Path:
    """`source_tree(ref)`, its forwarding path compiled with its own build script if it has
    one (its `src` returned either way; the forwarder each sidecar runs is printed)."""
    src = source_tree(ref, into)
    listed = subprocess.run(
        ["git", "-C", str(REPO), "ls-tree", "--name-only", ref, "tools/build_native.py"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if listed:
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", ref, "tools"], capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
        subprocess.run(
            [sys.executable, "tools/build_native.py", "--force"],
            cwd=into,
            env={**os.environ, "PYTHONPATH": str(src)},
            check=True,
        )
    return src


def measure(proc: Proc, run: Any) -> dict[str, float]:
    cpu0, _ = group_usage(proc.popen.pid)
    started = time.monotonic()
    out = run()
    wall = time.monotonic() - started
    cpu1, rss = group_usage(proc.popen.pid)
    n = out["requests"]
    return {
        "requests": n,
        "failed": out["failed"],
        "rps": out["rps"],
        "p50_ms": out.get("p50_ms", float("nan")),
        "p99_ms": out.get("p99_ms", float("nan")),
        "cpu_us_per_request": 1e6 * (cpu1 - cpu0) / n if n else float("nan"),
        "cpu_pct": 100 * (cpu1 - cpu0) / wall,
        "rss_mib": rss,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--before-ref", help="git ref of the 'before' tree")
    which.add_argument(
        "--python-vs-native",
        action="store_true",
        help="this tree interpreted (before) against this tree compiled (after)",
    )
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    k1 = next(sc for sc in SCENARIOS if sc.key == "1k-1row")
    print(f"load average at start: {loadavg()}", file=sys.stderr)
    with (
        tempfile.TemporaryDirectory(prefix="mlwarden-cpu-") as tmp_name,
        contextlib.ExitStack() as stop,
    ):
        tmp = Path(tmp_name)
        trees: dict[str, tuple[Path, dict[str, str]]]
        if args.python_vs_native:
            trees = {
                "before": (REPO / "src", {"MLWARDEN_SIDECAR_NATIVE": "0"}),
                "after": (REPO / "src", {"MLWARDEN_SIDECAR_NATIVE": "1"}),
            }
        else:
            before = tmp / "before"
            before.mkdir()
            trees = {
                "before": (compiled_tree(args.before_ref, before), {}),
                "after": (REPO / "src", {}),
            }
        up_port = free_port()
        up = start_nginx("upstream", fixed_upstream_conf(tmp / "up", up_port), tmp / "up", up_port)
        stop.callback(up.stop)
        upstream = f"http://{HOST}:{up_port}"
        body = tmp / "body.json"
        import json

        body.write_text(json.dumps(v2_request(1)))
        script = tmp / "post.lua"
        wrk_script(script, body)
        servers: dict[tuple[str, str], tuple[Proc, str, str]] = {}
        for tree, (src, extra_env) in trees.items():
            for capture in ("off", "on"):
                collector = None
                if capture == "on":
                    dport = free_port()
                    manifest = tmp / f"det-{tree}.yaml"
                    manifest.write_text(detector_manifest("bench"))
                    start_detector(manifest, dport, tmp / f"det-{tree}.log", stop=stop)
                    collector = f"http://{HOST}:{dport}"
                servers[(tree, capture)] = _sidecar(
                    f"{tree}-{capture}", src, tmp, upstream, collector, stop, extra_env
                )
                if args.python_vs_native:
                    admin = servers[(tree, capture)][2]
                    want = "python" if tree == "before" else "native"
                    if forwarder_of(admin) != want:
                        raise SystemExit(
                            f"{tree}-{capture} runs the {forwarder_of(admin)} forwarder, not "
                            f"{want}: `make native` builds the compiled one"
                        )
        results: dict[tuple[str, str, str], list[dict[str, float]]] = {}
        path = infer_path(MODEL_1_ROW)
        for _, url, _ in servers.values():  # warm-up
            run_hey(url + path, k1, body, 1.0)
        for rep in range(args.repeats):
            for load in ("1k", "saturation"):
                for (tree, capture), (proc, url, _) in servers.items():
                    target = url + path
                    if load == "1k":
                        fig = measure(proc, lambda t=target: run_hey(t, k1, body, args.duration))
                    else:
                        fig = measure(proc, lambda t=target: run_wrk(t, script, args.duration))
                    results.setdefault((tree, capture, load), []).append(fig)
                    print(
                        f"[{rep + 1}/{args.repeats}] {load:10s} {tree:6s} capture {capture:3s} "
                        f"{fig['cpu_us_per_request']:6.1f} us/request  {fig['rps']:8,.0f} req/s  "
                        f"failed {fig['failed']:.0f}",
                        file=sys.stderr,
                    )
    print(f"load average at end: {loadavg()}", file=sys.stderr)
    print("| load | tree | capture | CPU us/request | req/s | CPU % | failed | RSS MiB |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for (tree, capture, load), figs in sorted(
        results.items(), key=lambda kv: (kv[0][2], kv[0][1], kv[0][0] != "before")
    ):
        med = {k: statistics.median(f[k] for f in figs) for k in figs[0]}
        print(
            f"| {load} | {tree} | {capture} | {med['cpu_us_per_request']:.1f} | "
            f"{med['rps']:,.0f} | {med['cpu_pct']:.0f} | {sum(f['failed'] for f in figs):.0f} | "
            f"{med['rss_mib']:.0f} |"
        )
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
