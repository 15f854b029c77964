"""Fuzzing the spec parser: arbitrary manifests give an ObservedModel or a SpecError, nothing else.

Every example manifest in examples/ is taken apart: one field at a time (at any
depth) is replaced by arbitrary JSON, or removed, or an unknown field is added.
Whatever comes out, `parse_observed_model` either returns a model or raises
`SpecError` whose every problem names a field path inside the manifest.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from mlwarden.spec import ObservedModel, SpecError, parse_observed_model

EXAMPLES = sorted((Path(__file__).parents[2] / "examples").glob("observedmodel-*.yaml"))
MANIFESTS = [yaml.safe_load(p.read_text()) for p in EXAMPLES]
TOP = ("apiVersion", "kind", "metadata", "spec", "status")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def _places(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place (a path of keys and indexes) in a decoded manifest."""
    out = [path]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _places(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _places(v, (*path, i))
    return out


def _check(manifest: Any) -> ObservedModel | None:
    try:
        return parse_observed_model(manifest)
    except SpecError as exc:
        assert exc.errors, "a SpecError must list at least one problem"
        for error in exc.errors:
            assert isinstance(error.path, str) and isinstance(error.message, str)
            assert error.message, error
            # A field path (`spec.features[0].type`) from the root of this manifest.
            roots = (*TOP, *(map(str, manifest) if isinstance(manifest, dict) else ()))
            assert error.path == "" or error.path.startswith(roots), error
        return None


@st.composite
def mutated(draw: st.DrawFn) -> Any:
    manifest = copy.deepcopy(draw(st.sampled_from(MANIFESTS)))
    for _ in range(draw(st.integers(1, 3))):
        place = draw(st.sampled_from(_places(manifest)))
        if not place:
            return draw(json_values)
        parent = manifest
        for key in place[:-1]:
            parent = parent[key]
        how = draw(st.sampled_from(["replace", "remove", "add"]))
        if how == "replace":
            parent[place[-1]] = draw(json_values)
        elif how == "remove" and isinstance(parent, dict):
            del parent[place[-1]]
        elif isinstance(parent[place[-1]], dict):
            parent[place[-1]][draw(st.text(min_size=1, max_size=8))] = draw(json_values)
    return manifest


def test_the_examples_parse() -> None:
    assert len(MANIFESTS) >= 3
    for manifest in MANIFESTS:
        assert isinstance(parse_observed_model(manifest), ObservedModel)


@settings(max_examples=300, deadline=None)
@given(manifest=mutated())
def test_a_mutated_manifest_parses_or_names_the_field(manifest: Any) -> None:
    _check(manifest)


@settings(max_examples=100, deadline=None)
@given(manifest=json_values)
def test_arbitrary_json_parses_or_names_the_field(manifest: Any) -> None:
    _check(manifest)


@pytest.mark.parametrize(
    ("place", "value", "where"),
    [
        (("spec", "detectors", "drift", "pValue"), "high", "spec.detectors.drift.pValue"),
        (("spec", "features", 0, "type"), 7, "spec.features[0].type"),
        (("spec", "window"), [], "spec.window"),
    ],
)
def test_a_bad_field_is_named_by_its_path(place: tuple[Any, ...], value: Any, where: str) -> None:
    manifest = copy.deepcopy(
        MANIFESTS[[p.name for p in EXAMPLES].index("observedmodel-fraud.yaml")]
    )
    parent = manifest
    for key in place[:-1]:
        parent = parent[key]
    parent[place[-1]] = value
    with pytest.raises(SpecError) as info:
        parse_observed_model(manifest)
    assert where in {e.path for e in info.value.errors}, info.value
