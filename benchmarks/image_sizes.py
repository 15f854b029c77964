"""Estimate the two images' sizes from the installed packages, where no Docker engine runs.

    python benchmarks/image_sizes.py

Each image is python:3.11-slim plus what pip installs into it: the full image the package's
dependencies (pyproject.toml), the slim `sidecar` target requirements-sidecar.txt, each with
every distribution they require, transitively (markers evaluated for this machine, extras
not followed). A distribution's size is the sum of the files its RECORD lists, as installed
in this environment (same Python 3.11, Linux x86-64 wheels, byte-code caches included, which
`pip install` also writes). The base image is not measured here: its size is given as the
published one (python:3.11-slim, linux/amd64, uncompressed), so the totals are estimates.
"""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
# python:3.11-slim (Debian bookworm, linux/amd64), uncompressed, as `docker images` shows it.
BASE_MIB = 125.0


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(requirements: list[str]) -> set[str]:
    seen: set[str] = set()
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        name = _norm(req.name)
        if name in seen:
            continue
        seen.add(name)
        try:
            todo += [Requirement(r) for r in metadata.requires(req.name) or []]
        except metadata.PackageNotFoundError:
            print(f"not installed here, not counted: {req.name}")
    return seen


def size_mib(name: str) -> float:
    dist = metadata.distribution(name)
    total = 0
    for f in dist.files or []:
        path = Path(str(dist.locate_file(f)))
        if path.is_file():
            total += path.stat().st_size
    return total / 2**20


def main() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    full = closure(pyproject["project"]["dependencies"])
    slim_lines = (ROOT / "requirements-sidecar.txt").read_text().splitlines()
    slim = closure([ln for ln in slim_lines if ln.strip() and not ln.startswith("#")])
    sizes = {n: size_mib(n) for n in full | slim if _installed(n)}
    for label, names in (("full", full), ("sidecar", slim)):
        packages = sum(sizes.get(n, 0.0) for n in names)
        top = sorted(((sizes.get(n, 0.0), n) for n in names), reverse=True)[:6]
        print(
            f"{label}: {len(names)} distributions, {packages:.0f} MiB installed; "
            f"image ~{BASE_MIB + packages:.0f} MiB (base {BASE_MIB:.0f} MiB); largest: "
            + ", ".join(f"{n} {s:.0f}" for s, n in top)
        )


def _installed(name: str) -> bool:
    try:
        metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return False
    return True


if __name__ == "__main__":
    main()
