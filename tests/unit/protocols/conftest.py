"""Fixtures for the protocol adapter tests: ObservedModel specs built through the real parser."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest

from mlwarden.spec import ObservedModelSpec, parse_observed_model


def _make_spec(
    features: list[str] | None = None,
    *,
    prediction: str | None = None,
    json: Mapping[str, Any] | None = None,
    protocol: str = "auto",
    embeddings: Sequence[str] = (),
) -> ObservedModelSpec:
    """A spec from a small manifest; features are numeric unless their name ends in `_category`;
    `embeddings` are features of type embedding, after them."""
    spec: dict[str, Any] = {"target": {"deployment": "fraud-model"}, "protocol": protocol}
    if features or embeddings:
        spec["features"] = [
            {"name": f, "type": "categorical" if f.endswith("category") else "numeric"}
            for f in features or ()
        ] + [{"name": f, "type": "embedding"} for f in embeddings]
    if prediction is not None:
        spec["prediction"] = {"name": prediction}
    if json is not None:
        spec["capture"] = {"json": dict(json)}
    manifest = {
        "apiVersion": "mlwarden.io/v1alpha1",
        "kind": "ObservedModel",
        "metadata": {"name": "fraud-model"},
        "spec": spec,
    }
    return parse_observed_model(manifest).spec


# Session-scoped so that hypothesis tests may use them (it refuses function-scoped fixtures).
@pytest.fixture(scope="session")
def make_spec() -> Callable[..., ObservedModelSpec]:
    return _make_spec


@pytest.fixture(scope="session")
def body() -> Callable[[Any], bytes]:
    """Encode a payload the way a client would put it on the wire."""
    return lambda payload: json.dumps(payload).encode()
