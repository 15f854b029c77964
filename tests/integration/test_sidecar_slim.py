"""The sidecar is slim: what a running sidecar and its capture worker import.

The sidecar runs for real under `PYTHONPROFILEIMPORTTIME=1` (Python's `-X importtime`,
inherited by the capture worker it starts), serves and captures requests (so imports made
on the first request or in the worker count too), and is stopped with SIGTERM. Every
module either process imported is in its log, one `import time:` line each.

Checked: none of scipy, pyarrow, matplotlib, kopf, kubernetes or numpy (the sidecar does
not need numpy), and every third-party distribution imported is in requirements-sidecar.txt
(what the Dockerfile's slim `sidecar` target installs) or required by one listed there
(Requires-Dist, extras included: aiohttp imports brotli when it is installed).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import pytest
import requests
from harness import Collector, SidecarProcess, Upstream, manifest, wait_until

ROOT = Path(__file__).resolve().parents[2]
HEAVY = {"scipy", "pyarrow", "matplotlib", "kopf", "kubernetes", "numpy"}


def import_lines(log: str) -> list[str]:
    """The module of every `import time:` line, both processes' together."""
    return [m.group(1) for m in re.finditer(r"^import time:\s+\d+ \|\s+\d+ \|\s+(\S+)", log, re.M)]


def _name(requirement: str) -> str:
    return re.split(r"[\s;\[<>=!~(]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def allowed_distributions() -> set[str]:
    """requirements-sidecar.txt and, transitively, what those distributions require."""
    listed = [
        _name(line)
        for line in (ROOT / "requirements-sidecar.txt").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    seen: set[str] = set()
    todo = list(listed)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        todo += [_name(r) for r in requires]
    return seen


def _holders(module: str, by_module: dict[str, list[str]]) -> set[str]:
    """The distributions a module comes from. A namespace package several distributions
    share (`google`: protobuf, googleapis-common-protos, ...) is resolved one level down,
    by which distribution's files hold the module's package."""
    top, _, rest = module.partition(".")
    candidates = by_module.get(top, [])
    if len(candidates) <= 1:
        return set(candidates)
    if not rest:
        return set()  # the namespace package itself: the modules under it tell whose
    package = f"{top}/{rest.split('.')[0]}"
    return {d for d in candidates if package in _packages_of(d)}


_PACKAGES: dict[str, set[str]] = {}


def _packages_of(distribution: str) -> set[str]:
    """`top/second` of every file a distribution installed (cached)."""
    if distribution not in _PACKAGES:
        files = metadata.files(distribution) or []
        _PACKAGES[distribution] = {
            "/".join(f.parts[:2]).removesuffix(".py") for f in files if len(f.parts) >= 2
        }
    return _PACKAGES[distribution]


def test_a_running_sidecar_loads_only_the_slim_set(
    upstream: Upstream,
    collector: Collector,
    start_sidecar: Callable[..., SidecarProcess],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("PYTHONPROFILEIMPORTTIME", "1")
    # As the operator injects it: the ObservedModel's manifest mounted and read (PyYAML).
    om = manifest(tmp_path, "  target: {deployment: m}\n  protocol: v1\n")
    sidecar = start_sidecar(
        upstream.url, "--protocol", "v1", "--observed-model", str(om), collector=collector.url
    )
    body = json.dumps({"instances": [[1.0, 2.0]]}).encode()
    for _ in range(5):
        assert requests.post(sidecar.url + "/v1/models/m:predict", data=body).status_code == 200
    wait_until(lambda: len(collector.records()) == 5, what="5 records shipped by the worker")
    requests.get(sidecar.admin_url + "/metrics", timeout=5)
    assert sidecar.stop() == 0
    log = sidecar.log()
    lines = import_lines(log)
    modules = set(lines)
    # Both processes reported: the proxy (the supervisor is its alone) and the worker (run
    # with -m, it imports the shipper, which the proxy process never does).
    assert lines.count("mlwarden.sidecar.supervisor") == 1
    assert lines.count("mlwarden.sidecar.shipper") == 1
    assert lines.count("mlwarden.sidecar.capture") == 2  # one line per process
    heavy = sorted(m for m in modules if m.split(".")[0] in HEAVY)
    assert heavy == [], heavy

    by_module = metadata.packages_distributions()
    distributions = {
        _name(d) for m in modules for d in _holders(m, by_module) if _name(d) != "mlwarden"
    }
    missing = sorted(distributions - allowed_distributions())
    assert missing == [], f"imported by the sidecar, not in requirements-sidecar.txt: {missing}"
    assert {"aiohttp", "orjson", "pyyaml", "prometheus-client"} <= distributions
