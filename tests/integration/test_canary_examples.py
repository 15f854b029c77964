"""The Argo Rollouts and Flagger examples, held against their documented contracts and a real
detector.

- Argo Rollouts' web metric provider (https://argoproj.github.io/argo-rollouts/analysis/web/):
  GET the URL, read the JSON answer through `jsonPath`, evaluate `successCondition` /
  `failureCondition` on `result`; a non-2xx answer is a measurement Error.
- Flagger's webhooks (https://docs.flagger.app/usage/webhooks): POST
  `{name, namespace, phase, checksum, metadata}`; a 2xx answer passes the check, anything
  else fails it.

The detector process is fed simulated traffic of two revisions (tests/unit/detector/canary_sim)
through `POST /v1/records`, as two sidecars would.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import yaml
from canary_sim import Behaviour, payload, spec
from harness import DetectorProcess, wait_until

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
ARGO = EXAMPLES / "argo-rollouts-analysistemplate.yaml"
FLAGGER = EXAMPLES / "flagger-canary.yaml"
FLAGGER_HOOK_TYPES = {
    "confirm-rollout",
    "pre-rollout",
    "rollout",
    "confirm-traffic-increase",
    "confirm-promotion",
    "post-rollout",
    "rollback",
    "event",
}
STABLE, CANARY = "5d4c3b2a1", "6b8f7c9d4"


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def argo_template() -> dict[str, Any]:
    (template,) = [d for d in documents(ARGO) if d["kind"] == "AnalysisTemplate"]
    return template


def flagger_webhooks() -> list[dict[str, Any]]:
    (canary,) = documents(FLAGGER)
    return list(canary["spec"]["analysis"]["webhooks"])


# --------------------------------------------------------------------------- the YAML


def test_the_argo_example_is_an_analysis_template_with_web_metrics_and_a_rollout() -> None:
    docs = {d["kind"]: d for d in documents(ARGO)}
    assert set(docs) == {"AnalysisTemplate", "Rollout"}
    for doc in docs.values():
        assert doc["apiVersion"] == "argoproj.io/v1alpha1" and doc["metadata"]["name"]
    template = docs["AnalysisTemplate"]
    declared = {a["name"] for a in template["spec"]["args"]}
    for metric in template["spec"]["metrics"]:
        web = metric["provider"]["web"]
        assert set(web) <= {"url", "timeoutSeconds", "jsonPath", "headers", "method"}
        assert re.fullmatch(r"\{\$[.\w]*\}", web["jsonPath"])
        assert set(re.findall(r"\{\{ args\.([\w-]+) \}\}", web["url"])) <= declared
        assert metric["successCondition"] and metric["failureCondition"]
    analysis = docs["Rollout"]["spec"]["strategy"]["canary"]["analysis"]
    assert analysis["templates"] == [{"templateName": template["metadata"]["name"]}]
    (arg,) = analysis["args"]
    assert arg == {"name": "canary-hash", "valueFrom": {"podTemplateHashValue": "Latest"}}


def test_the_flagger_example_is_a_canary_whose_webhooks_are_flaggers() -> None:
    (canary,) = documents(FLAGGER)
    assert canary["apiVersion"] == "flagger.app/v1beta1" and canary["kind"] == "Canary"
    assert canary["spec"]["targetRef"]["kind"] == "Deployment"
    for hook in flagger_webhooks():
        assert hook["type"] in FLAGGER_HOOK_TYPES
        assert set(hook) <= {"name", "type", "url", "timeout", "metadata", "muteAlert"}
        assert hook["url"].endswith("/v1/canary")
        assert all(isinstance(v, str) for v in (hook.get("metadata") or {}).values())


# --------------------------------------------------------------------------- against a detector


def argo_measure(detector: DetectorProcess, metric: dict[str, Any], canary_hash: str) -> str:
    """What Argo Rollouts' web provider makes of one measurement: Successful, Failed,
    Inconclusive, or Error (non-2xx)."""
    web = metric["provider"]["web"]
    url = web["url"].replace("{{ args.canary-hash }}", canary_hash)
    url = url.replace("http://{{ args.detector }}", detector.url)
    resp = requests.get(url, timeout=web.get("timeoutSeconds", 10))
    if not 200 <= resp.status_code < 300:
        return "Error"
    result: Any = resp.json()
    for key in web["jsonPath"].strip("{}").removeprefix("$").strip(".").split("."):
        if key:
            result = result[key]
    # Argo's conditions are expr-lang; these examples use only comparisons Python reads alike.
    env = {"result": result, "__builtins__": {}}
    if eval(metric["failureCondition"], env):
        return "Failed"
    if eval(metric["successCondition"], env):
        return "Successful"
    return "Inconclusive"


def flagger_check(detector: DetectorProcess, hook: dict[str, Any]) -> bool:
    """Flagger's verdict on one webhook call: True (2xx) passes the check."""
    body = {
        "name": "fraud-model",
        "namespace": "ml",
        "phase": "Progressing",
        "checksum": "6b8f7c9d4-0",
        "metadata": hook.get("metadata") or {},
    }
    url = hook["url"].replace("http://fraud-detector.ml.svc:8080", detector.url)
    resp = requests.post(url, json=body, timeout=10)
    return 200 <= resp.status_code < 300


def feed(detector: DetectorProcess, rng: np.random.Generator, cand: Behaviour, steps: int) -> None:
    for step in range(steps):
        now = 1_800_000_000.0 + step
        detector.post(payload(rng, 90, Behaviour(), revision=STABLE, now=now, prefix="s"))
        detector.post(payload(rng, 10, cand, revision=CANARY, now=now, prefix="c"))


@pytest.fixture
def detector_for(
    tmp_path: Path, start_detector: Callable[..., DetectorProcess]
) -> Callable[[], DetectorProcess]:
    def start() -> DetectorProcess:
        body = spec(
            reference={"size": 500},
            window={"size": 500},
            alerting={"evaluationInterval": "200ms", "fireAfter": 2, "resolveAfter": 2},
            canary={"minSamples": 100},
        )
        path = tmp_path / f"om-{len(list(tmp_path.iterdir()))}.yaml"
        path.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "mlwarden.io/v1alpha1",
                    "kind": "ObservedModel",
                    "metadata": {"name": "fraud", "namespace": "ml"},
                    "spec": body,
                }
            )
        )
        detector = start_detector(path)
        rng = np.random.default_rng(0)
        detector.post(payload(rng, 500, Behaviour(), revision=STABLE, now=1.8e9, prefix="w"))
        wait_until(lambda: detector.status()["phase"] == "Observing", what="the reference")
        return detector

    return start


def test_a_good_canary_passes_argo_and_flagger(detector_for: Callable[[], DetectorProcess]) -> None:
    detector = detector_for()
    metrics = {m["name"]: m for m in argo_template()["spec"]["metrics"]}
    # Before the canary has sent anything: Pending, which keeps a background analysis going
    # and leaves a promotion gate undecided.
    assert argo_measure(detector, metrics["mlwarden-no-regression"], CANARY) == "Successful"
    assert argo_measure(detector, metrics["mlwarden-passed"], CANARY) == "Inconclusive"
    feed(detector, np.random.default_rng(1), Behaviour(), 15)
    wait_until(
        lambda: argo_measure(detector, metrics["mlwarden-passed"], CANARY) == "Successful",
        what="the canary to pass",
    )
    assert argo_measure(detector, metrics["mlwarden-no-regression"], CANARY) == "Successful"
    assert all(flagger_check(detector, hook) for hook in flagger_webhooks())


def test_a_bad_canary_fails_argo_and_flagger(detector_for: Callable[[], DetectorProcess]) -> None:
    detector = detector_for()
    metrics = {m["name"]: m for m in argo_template()["spec"]["metrics"]}
    hooks = {h["name"]: h for h in flagger_webhooks()}
    # Pending: Flagger's rollout check passes, the promotion gate does not.
    assert flagger_check(detector, hooks["mlwarden-no-regression"])
    feed(detector, np.random.default_rng(2), Behaviour(), 1)
    assert not flagger_check(detector, hooks["mlwarden-passed"])
    feed(detector, np.random.default_rng(3), Behaviour(classes=(0.8, 0.1, 0.1)), 15)
    wait_until(
        lambda: argo_measure(detector, metrics["mlwarden-no-regression"], CANARY) == "Failed",
        what="the canary to fail",
    )
    assert argo_measure(detector, metrics["mlwarden-passed"], CANARY) == "Failed"
    assert not any(flagger_check(detector, hook) for hook in flagger_webhooks())
    body = requests.post(f"{detector.url}/v1/canary", json={}, timeout=5).json()
    assert body["verdict"] == "Fail" and body["revision"] == CANARY
    assert any(e["signal"] == "prediction" and e["failing"] for e in body["evidence"])
    # The Prometheus gauge per live revision, for Prometheus-based analyses.
    metrics = requests.get(f"{detector.url}/metrics", timeout=5).text
    assert (
        f'mlwarden_detector_canary_verdict{{baseline="{STABLE}",revision="{CANARY}"}} -1.0'
        in metrics
    )
    assert f'mlwarden_detector_revision_share{{revision="{STABLE}",role="baseline"}}' in metrics


def test_with_two_candidates_a_revision_must_be_named(
    detector_for: Callable[[], DetectorProcess],
) -> None:
    detector = detector_for()
    rng = np.random.default_rng(4)
    for step in range(3):
        now = 1_800_000_000.0 + step
        detector.post(payload(rng, 80, Behaviour(), revision=STABLE, now=now, prefix="s"))
        detector.post(payload(rng, 10, Behaviour(), revision=CANARY, now=now, prefix="c"))
        detector.post(payload(rng, 10, Behaviour(), revision="7a7a7a7a7", now=now, prefix="d"))
    detector.wait_evaluations(2)
    resp = requests.post(f"{detector.url}/v1/canary", json={}, timeout=5)
    assert resp.status_code == 409 and "name one" in resp.json()["error"]
    named = requests.post(
        f"{detector.url}/v1/canary", json={"metadata": {"revision": "7a7a7a7a7"}}, timeout=5
    )
    assert named.status_code == 200 and named.json()["revision"] == "7a7a7a7a7"
    roles = {r["revision"]: r["role"] for r in detector.status()["revisions"]}
    assert roles == {STABLE: "baseline", CANARY: "candidate", "7a7a7a7a7": "candidate"}
