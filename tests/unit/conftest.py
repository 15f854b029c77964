"""Fixtures shared by the unit tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import settings
from kubernetes_validate import validate
from kubernetes_validate.utils import ValidationError

# Property tests judge behaviour, not speed (speed lives in benchmarks/): hypothesis's default
# 200 ms deadline per example failed them on a loaded machine (several test processes on two
# cores), where one example of a big random body takes longer without anything being wrong.
settings.register_profile("mlwarden", deadline=None)
settings.load_profile("mlwarden")


def assert_valid_kubernetes(obj: dict[str, Any]) -> None:
    """Kubernetes 1.30's own schema, strict: unknown fields are errors too."""
    try:
        validate(obj, "1.30", strict=True)
    except ValidationError as exc:  # the full error prints the whole schema: keep the point
        where = "/".join(str(p) for p in exc.absolute_path)
        raise AssertionError(f"{obj.get('kind')} invalid at /{where}: {exc.message}") from None


@pytest.fixture
def valid_kubernetes() -> Callable[[dict[str, Any]], None]:
    return assert_valid_kubernetes


def observed_model_of(kind: str, name: str, *reactions: dict[str, Any]) -> Any:
    """An ObservedModel (through the real parser) whose target is `kind`/`name`."""
    from mlwarden.spec import parse_observed_model

    target: dict[str, Any] = {"kind": kind, "name": name}
    if kind != "InferenceService":
        target["service"] = name
    return parse_observed_model({
        "apiVersion": "mlwarden.io/v1alpha1", "kind": "ObservedModel",
        "metadata": {"name": "fraud", "namespace": "ml", "uid": "u-om"},
        "spec": {"target": target, "reactions": list(reactions)},
    })  # fmt: skip


@pytest.fixture
def kind_model() -> Callable[..., Any]:
    """`kind_model("Rollout", "r", *reactions)`: an ObservedModel targeting that kind."""
    return observed_model_of
