"""Language-model traffic end to end: OpenAI-compatible servers on loopback behind the real
sidecar, shipping to the real detector.

- An embeddings server (`POST /v1/embeddings`) whose embedding space shifts (a model
  update): the detector flags the `embedding` feature (FeatureDrift, test mmd), and stays
  quiet while nothing changed.
- A chat server whose answers start refusing and running out of tokens: the refusal rate
  and the finish reasons drift like any other output (PredictionDrift on `refusal` and
  `finish_reason`), while no prompt text ever leaves the sidecar.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import requests
from aiohttp import web
from harness import (
    Collector,
    DetectorProcess,
    SidecarProcess,
    ThreadedServer,
    manifest,
    wait_until,
)

DIM = 64
MARKER = "zebra-marker-9f1c"  # in every prompt: must never appear in what the sidecar ships


class EmbeddingsServer:
    """`POST /v1/embeddings`: each input's vector is its topic's centre plus noise, both
    derived from the text; `shift` is added to every vector (a new embedding model)."""

    def __init__(self) -> None:
        self.shift = np.zeros(DIM)
        self.centres = np.random.default_rng(0).normal(0, 3, size=(4, DIM))
        self.server = ThreadedServer(self.app()).start()

    def vector(self, text: str) -> list[float]:
        seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
        rng = np.random.default_rng(seed)
        topic = seed % 4
        out: list[float] = (self.centres[topic] + rng.normal(size=DIM) + self.shift).tolist()
        return out

    def app(self) -> web.Application:
        async def embeddings(request: web.Request) -> web.Response:
            body = await request.json()
            inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
            data = [
                {"object": "embedding", "index": i, "embedding": self.vector(text)}
                for i, text in enumerate(inputs)
            ]
            tokens = sum(len(t.split()) for t in inputs)
            return web.json_response(
                {
                    "object": "list",
                    "data": data,
                    "model": body.get("model", "embed-small"),
                    "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
                }
            )

        app = web.Application()
        app.router.add_post("/v1/embeddings", embeddings)
        return app


class ChatServer:
    """`POST /v1/chat/completions`: answers with finish reasons and refusals drawn at the
    rates in `mode` (`normal`, `degraded`)."""

    def __init__(self) -> None:
        self.mode = "normal"
        self.rng = np.random.default_rng(1)
        self.count = 0
        self.server = ThreadedServer(self.app()).start()

    def app(self) -> web.Application:
        async def chat(request: web.Request) -> web.Response:
            body = await request.json()
            self.count += 1
            refuse_rate, length_rate = (0.02, 0.05) if self.mode == "normal" else (0.3, 0.4)
            u = self.rng.random()
            message: dict[str, Any] = {"role": "assistant", "content": "Sure. " * 20}
            finish = "stop"
            if u < refuse_rate:
                message = {"role": "assistant", "content": None, "refusal": "I can't help."}
            elif u < refuse_rate + length_rate:
                finish = "length"
            return web.json_response(
                {
                    "id": f"chatcmpl-{self.count}",
                    "object": "chat.completion",
                    "model": body.get("model", "chat-small"),
                    "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                    "usage": {"prompt_tokens": 12, "completion_tokens": 40, "total_tokens": 52},
                }
            )

        app = web.Application()
        app.router.add_post("/v1/chat/completions", chat)
        return app


def _prompt(rng: np.random.Generator) -> str:
    words = rng.choice(["cat", "tax", "sky", "river", "loan", "pasta"], size=rng.integers(3, 12))
    return f"{MARKER} " + " ".join(words) + f" {rng.integers(1_000_000)}"


def test_a_shifted_embedding_space_is_flagged_on_the_embedding_feature(
    tmp_path: Path,
    start_sidecar: Callable[..., SidecarProcess],
    start_detector: Callable[..., DetectorProcess],
) -> None:
    upstream = EmbeddingsServer()
    try:
        om = manifest(
            tmp_path,
            "  target: {deployment: embedder}\n  protocol: openai\n"
            "  features:\n    - {name: input_chars, type: numeric}\n"
            f"    - {{name: embedding, type: embedding, dimensions: {DIM}}}\n"
            "  reference: {source: warmup, size: 300}\n  window: {size: 300}\n"
            "  alerting: {evaluationInterval: 200ms, fireAfter: 2, resolveAfter: 2}\n",
            name="embedder",
        )
        detector = start_detector(om)
        sidecar = start_sidecar(upstream.server.url, "--observed-model", str(om),
                                collector=detector.url)  # fmt: skip
        rng = np.random.default_rng(2)
        session = requests.Session()

        def send(n_requests: int) -> None:
            for _ in range(n_requests):
                body = {"model": "embed-small", "input": [_prompt(rng) for _ in range(10)]}
                resp = session.post(f"{sidecar.url}/v1/embeddings", json=body, timeout=10)
                assert resp.status_code == 200 and len(resp.json()["data"]) == 10

        send(30)  # 300 vectors: the reference
        wait_until(
            lambda: detector.status()["embeddings"]["embedding"]["topics"] > 0,
            what="the embedding reference",
        )
        send(20)
        wait_until(
            lambda: detector.status()["embeddings"]["embedding"]["currentVectors"] == 200,
            what="current vectors",
        )
        detector.wait_evaluations(5)
        assert not {a for a in detector.alerts() if a[1] and a[1].startswith("embedding")}
        checks = {(c["feature"], c["test"]) for c in detector.status()["checks"]}
        assert ("embedding", "mmd") in checks and ("embedding.topic", "chisquare") in checks

        # A new embedding model: every vector moves by a third of the vectors' RMS spread
        # around their mean (sqrt(64 x (9 + 1)) ~= 25; the shift's length is 8).
        upstream.shift = np.full(DIM, 1.0)
        send(30)
        wait_until(
            lambda: ("FeatureDrift", "embedding") in detector.alerts(),
            what="drift on the embedding",
        )
        alert = next(a for a in detector.status()["alerts"] if a.get("feature") == "embedding")
        assert alert["test"] == "mmd" and alert["statistic"] >= 0.005
        # The topic mix (nearest reference centroid) did not change: vectors moved together.
        status = detector.status()
        assert status["embeddings"]["embedding"]["typeErrors"] == 0
        assert ("FeatureDrift", "input_chars") not in detector.alerts()
        # Vectors are not columns: no column per dimension, none counted as unexpected.
        assert "embedding" not in status["columns"]
    finally:
        upstream.server.stop()


def test_refusals_and_finish_reasons_drift_and_no_prompt_text_leaves_the_sidecar(
    tmp_path: Path,
    collector: Collector,
    start_sidecar: Callable[..., SidecarProcess],
    start_detector: Callable[..., DetectorProcess],
) -> None:
    upstream = ChatServer()
    try:
        om = manifest(
            tmp_path,
            "  target: {deployment: chat}\n  protocol: openai\n"
            "  features:\n    - {name: prompt_chars, type: numeric}\n"
            "  reference: {source: warmup, size: 400}\n  window: {size: 400}\n"
            "  alerting: {evaluationInterval: 200ms, fireAfter: 2, resolveAfter: 2}\n",
            name="chat",
        )
        detector = start_detector(om)
        sidecar = start_sidecar(upstream.server.url, "--observed-model", str(om),
                                collector=detector.url)  # fmt: skip
        # A second sidecar ships to a plain collector: what leaves the pod, byte for byte.
        watched = start_sidecar(upstream.server.url, "--observed-model", str(om),
                                collector=collector.url)  # fmt: skip
        rng = np.random.default_rng(3)
        session = requests.Session()

        def send(url: str, n: int) -> None:
            for _ in range(n):
                body = {
                    "model": "chat-small",
                    "messages": [{"role": "user", "content": _prompt(rng)}],
                }
                resp = session.post(f"{url}/v1/chat/completions", json=body, timeout=10)
                assert resp.status_code == 200

        send(sidecar.url, 400)  # the reference
        wait_until(lambda: detector.status()["phase"] == "Observing", what="the reference")
        send(sidecar.url, 400)
        detector.wait_evaluations(4)
        quiet = {f for t, f in detector.alerts() if t == "PredictionDrift"}
        assert not quiet & {"refusal", "finish_reason"}, detector.status()["alerts"]
        columns = detector.status()["columns"]
        assert columns["refusal"]["type"] == "categorical"
        assert columns["completion_chars"]["type"] == "numeric"

        upstream.mode = "degraded"
        send(sidecar.url, 400)
        wait_until(
            lambda: (
                {("PredictionDrift", "refusal"), ("PredictionDrift", "finish_reason")}
                <= detector.alerts()
            ),
            what="drift on refusal and finish_reason",
        )

        send(watched.url, 50)
        wait_until(lambda: len(collector.records()) >= 50, what="the watched sidecar's records")
        shipped = json.dumps(collector.batches)
        assert MARKER not in shipped and "I can't help" not in shipped
        refusals = [r["outputs"]["refusal"] for r in collector.records()]
        assert True in refusals and all(isinstance(r, bool) for r in refusals)
        assert all(set(r["features"]) <= {"model", "messages", "prompt_chars"}
                   for r in collector.records())  # fmt: skip
    finally:
        upstream.server.stop()
