"""An injected sidecar whose ObservedModel is gone still starts, and the model keeps serving.

The injected pod template mounts the manifest from ConfigMap NAME-detector and reads the ingest
token from Secret NAME-ingest-token, both `optional: true`: after an uninstall that did not undo
the injection, a pod (re)starts with an empty manifest directory and no MLWARDEN_INGEST_TOKEN,
and the detector's Service no longer answers. The sidecar is started here exactly so (the
environment the injection sets, the manifest path pointing into an empty directory).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from harness import SidecarProcess, Upstream, free_port, wait_until

V2_BODY = json.dumps(
    {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP64", "data": [1.0, 2.0]}]}
).encode()


def test_sidecar_without_manifest_or_token_proxies_and_counts_what_it_drops(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    upstream: Upstream,
    start_sidecar: Callable[..., SidecarProcess],
) -> None:
    empty = tmp_path / "etc-mlwarden"  # the optional ConfigMap volume, its ConfigMap deleted
    empty.mkdir()
    monkeypatch.setenv("MLWARDEN_OBSERVED_MODEL", str(empty / "observedmodel.yaml"))
    monkeypatch.setenv("MLWARDEN_PROTOCOL", "v2")
    monkeypatch.delenv("MLWARDEN_INGEST_TOKEN", raising=False)  # the optional Secret, gone
    gone = f"http://127.0.0.1:{free_port()}"  # the detector's Service, deleted with it
    sidecar = start_sidecar(upstream.url, collector=gone)

    session = requests.Session()
    for _ in range(20):
        resp = session.post(sidecar.url + "/v2/models/m/infer", data=V2_BODY, timeout=10)
        assert resp.status_code == 200, resp.text
        assert resp.headers["X-Upstream"] == "echo"
    wait_until(
        lambda: (
            sidecar.metric("mlwarden_sidecar_exchanges_dropped_total", reason="no_manifest") == 20
        ),
        what="20 exchanges counted as dropped for want of a manifest",
    )
    assert sidecar.metric("mlwarden_sidecar_exchanges_captured_total", protocol="v2") == 0
    assert sidecar.metric("mlwarden_sidecar_ship_requests_total", outcome="retry") == 0
    ready = requests.get(sidecar.admin_url + "/readyz", timeout=5)
    assert ready.status_code == 200
    assert "no ObservedModel manifest at" in sidecar.log()
