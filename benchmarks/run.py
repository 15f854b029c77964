"""`make bench`: run every benchmark and rewrite benchmarks/RESULTS.md with what it measured.

The benchmarks are the modules in `BENCHMARKS`; each has `NAME`, `run(...) -> dict`
(the figures, with `text` for the terminal and `verdicts`) and
`render_markdown(dict) -> str` (its section of RESULTS.md). Adding a benchmark is
adding a module to the list. The raw figures also go to benchmarks/out/ as JSON.

It measures nothing unless nginx, hey and wrk are installed (the Debian packages
nginx-light, hey and wrk); without them it says so and exits with status 2.

    .venv/bin/python benchmarks/run.py                    # what `make bench` runs (~6 min)
    .venv/bin/python benchmarks/run.py --duration 1 --repeats 1   # a quick smoke run
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

import canary
import capture_cpu
import detector_throughput
import drift_suite
import embedding_check
import grpc_latency
import operator_scale
import sidecar_latency
import sidecar_mlserver
import stream_delay
from procs import sigterm_raises

HERE = Path(__file__).resolve().parent

BENCHMARKS: list[ModuleType] = [
    sidecar_latency,
    sidecar_mlserver,
    grpc_latency,
    capture_cpu,
    detector_throughput,
    operator_scale,
    drift_suite,
    stream_delay,
    canary,
    embedding_check,
]
# The tools each benchmark needs (the others need none).
NEEDS_TOOLS = {
    "sidecar_latency": {"nginx", "hey", "wrk"},
    "sidecar_mlserver": {"nginx", "hey", "wrk"},
    "grpc_latency": {"h2load"},
    "capture_cpu": {"nginx", "hey", "wrk"},
}
TOOLS = {
    "nginx": "/usr/sbin/nginx",
    "hey": "/usr/bin/hey",
    "wrk": "/usr/bin/wrk",
    "h2load": "/usr/bin/h2load",
}
INSTALL_HINT = "benchmarks need these tools: apt-get install nginx-light hey wrk nghttp2-client"


def find_tool(name: str) -> str | None:
    found = shutil.which(name)
    if found is None and os.access(TOOLS[name], os.X_OK):
        found = TOOLS[name]
    return found


def _output(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (out.stdout + out.stderr).strip()


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine(tools: dict[str, str | None]) -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        load = "unknown"

    def deb(pkg: str) -> str:
        return _output(["dpkg-query", "-W", "-f", "${Version}", pkg]) or "?"

    return {
        "nproc": _output(["nproc"]) or str(os.cpu_count()),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "aiohttp": _version("aiohttp"),
        "uvloop": _version("uvloop"),
        "mlwarden": _version("mlwarden"),
        "nginx": _output([tools["nginx"], "-v"]).removeprefix("nginx version: ")
        if tools.get("nginx")
        else "not used",
        "hey": f"{tools['hey']} (Debian package {deb('hey')})" if tools.get("hey") else "not used",
        "wrk": (_output([tools["wrk"], "-v"]).splitlines() or [tools["wrk"]])[0].split(" [")[0]
        if tools.get("wrk")
        else "not used",
        "h2load": (_output([tools["h2load"], "--version"]).splitlines() or ["?"])[0]
        if tools.get("h2load")
        else "not used",
        "load average at start": load,
    }


def results_markdown(
    when: str, info: dict[str, str], sections: list[str], elapsed: float, args: argparse.Namespace
) -> str:
    lines = [
        "# Benchmark results",
        "",
        "Written by `make bench` (`benchmarks/run.py`); do not edit by hand, run it again. "
        "What each benchmark measures and how: benchmarks/README.md.",
        "",
        f"- Date: {when}",
        f"- Run: `benchmarks/run.py --duration {args.duration:g} --repeats {args.repeats}"
        f" --warmup {args.warmup:g}`, {elapsed:.0f} s in all",
    ]
    lines += [f"- {k}: {v}" for k, v in info.items()]
    lines += [
        "",
        "The load generator, the upstream and every proxy share this machine's cores, so "
        "each figure is the median of interleaved repeats; the machine may have been shared "
        "with other work during the run (see the load average above), which shows as noise.",
        "",
    ]
    return "\n".join(lines + sections) + "\n"


def _merge_previous(
    path: Path, selected: list[ModuleType], fresh: list[str], when: str
) -> list[str]:
    """With --only: the fresh sections, plus the previous RESULTS.md's sections of the others.

    A section is a `## ` heading naming its module (`benchmarks/<NAME>.py`) and what follows
    it up to the next `## `; kept ones are marked as coming from the previous run.
    """
    previous = path.read_text() if path.exists() else ""
    old_date = next((ln.removeprefix("- Date: ") for ln in previous.splitlines()
                     if ln.startswith("- Date: ")), "an earlier run")  # fmt: skip
    chunks = previous.split("\n## ")
    by_name: dict[str, str] = {}
    for chunk in chunks[1:]:
        for bench in BENCHMARKS:
            if f"`benchmarks/{bench.NAME}.py`" in chunk.splitlines()[0]:
                by_name[bench.NAME] = "## " + chunk.rstrip("\n") + "\n"
    fresh_by_name = {b.NAME: s for b, s in zip(selected, fresh, strict=True)}
    out = []
    for bench in BENCHMARKS:
        if bench.NAME in fresh_by_name:
            out.append(fresh_by_name[bench.NAME])
        elif bench.NAME in by_name:
            heading, _, body = by_name[bench.NAME].partition("\n")
            if "*Kept from the run of" not in body:
                body = f"\n*Kept from the run of {old_date}: not rerun on {when}.*\n{body}"
            out.append(f"{heading}\n{body}")
    return out


def _hand_run(path: Path) -> list[str]:
    """Sections of the previous RESULTS.md written by benchmarks run by hand (a `## `
    heading marked `(by hand)`, e.g. `sidecar_cpu.py`, which needs a git ref): kept as they
    are, since this run did not redo them."""
    previous = path.read_text() if path.exists() else ""
    return [
        "## " + chunk.rstrip("\n") + "\n"
        for chunk in previous.split("\n## ")[1:]
        if "(by hand)" in chunk.splitlines()[0]
    ]


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="run the mlwarden benchmarks")
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per path")
    parser.add_argument("--results", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated benchmark names to run ("
        + ", ".join(b.NAME for b in BENCHMARKS)
        + "); the other sections of RESULTS.md are kept from the previous run",
    )
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = sorted(set(names) - {b.NAME for b in BENCHMARKS})
    if unknown:
        parser.error(f"--only: unknown benchmark(s) {', '.join(unknown)}")
    selected = [b for b in BENCHMARKS if not names or b.NAME in names]

    tools = {name: find_tool(name) for name in TOOLS}
    needed = set().union(*(NEEDS_TOOLS.get(b.NAME, set()) for b in selected))
    missing = sorted(name for name in needed if tools[name] is None)
    if missing:
        print(f"missing: {', '.join(missing)}. {INSTALL_HINT}", file=sys.stderr)
        return 2
    found = {k: v for k, v in tools.items() if v is not None}
    os.environ["PATH"] = os.pathsep.join(
        [*sorted({str(Path(p).parent) for p in found.values()}), os.environ.get("PATH", "")]
    )

    sigterm_raises()
    started = dt.datetime.now(dt.UTC)
    info = machine(tools)
    sections: list[str] = []
    out_dir = HERE / "out"
    try:
        for bench in selected:
            figures = bench.run(duration=args.duration, repeats=args.repeats, warmup=args.warmup)
            print(figures["text"])
            print()
            sections.append(bench.render_markdown(figures))
            out_dir.mkdir(exist_ok=True)
            (out_dir / f"{bench.NAME}.json").write_text(json.dumps(_json_safe(figures), indent=1))
    except KeyboardInterrupt:
        print("interrupted: every server started was stopped; RESULTS.md not rewritten",
              file=sys.stderr)  # fmt: skip
        return 130
    elapsed = (dt.datetime.now(dt.UTC) - started).total_seconds()
    when = started.strftime("%Y-%m-%d %H:%M UTC")
    if len(selected) < len(BENCHMARKS):
        sections = _merge_previous(args.results, selected, sections, when)
    sections += _hand_run(args.results)
    args.results.write_text(results_markdown(when, info, sections, elapsed, args))
    print(f"wrote {args.results} ({elapsed:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
