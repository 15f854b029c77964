"""Fixtures for the operator's pure parts: ObservedModel bodies, settings, an RFC 7386 applier."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from mlwarden.operator.settings import OperatorSettings
from mlwarden.patches import apply_merge_patch
from mlwarden.spec import ObservedModel, parse_observed_model

MakeBody = Callable[..., dict[str, Any]]


@pytest.fixture
def merge_patch() -> Callable[[Any, Any], Any]:
    return apply_merge_patch


def _body(
    name: str = "fraud",
    namespace: str = "ml",
    *,
    target: dict[str, Any] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """An ObservedModel as the API (and kopf) hands it over."""
    return {
        "apiVersion": "mlwarden.io/v1alpha1",
        "kind": "ObservedModel",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": "7b4d0a52-52a1-4c39-9d6e-0a3c2b1f9e11",
            "generation": 3,
            "resourceVersion": "4711",
            "creationTimestamp": "2026-01-05T10:00:00Z",
        },
        "spec": {
            "target": target
            or {"deployment": "fraud-model", "service": "fraud-model", "container": "model"},
            "protocol": "v2",
            "features": [
                {"name": "amount", "type": "numeric"},
                {"name": "merchant_category", "type": "categorical"},
            ],
            "detectors": {"drift": {"pValue": 0.01}, "latency": {"p99Ms": 250}},
            **spec,
        },
        "status": {"phase": "Observing"},
    }


@pytest.fixture
def make_body() -> MakeBody:
    return _body


@pytest.fixture
def body() -> dict[str, Any]:
    return _body()


@pytest.fixture
def make_model() -> Callable[[dict[str, Any]], ObservedModel]:
    return parse_observed_model


@pytest.fixture
def model(body: dict[str, Any]) -> ObservedModel:
    return parse_observed_model(body)


@pytest.fixture
def settings() -> OperatorSettings:
    return OperatorSettings(image="registry.example/mlwarden:1.2.3")
