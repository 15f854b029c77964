"""The API server's maxItems check on ObservedModel writes: 422 Invalid, nothing stored.

A real API server validates every write to a custom resource against the CRD's structural
schema, the status subresource included, and refuses one that breaks it with 422 Invalid
(`status.reactions: Too many: 51: must have at most 50 items`); the object keeps its
previous version. kmock's emulator stores whatever it is sent. This mixin imitates that
check for `maxItems` only (what the status-size bounds need), for every array the CRD
(mlwarden.crd) declares under the ObservedModel's schema, on the object as the write would
leave it (a JSON merge patch applied to the current version, or the object sent by PUT).
Rejections are kept in `rejected` for tests to assert on.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from kmock._internal.k8s import KubernetesError

from mlwarden.crd import custom_resource_definition
from mlwarden.patches import apply_merge_patch


def _schema() -> dict[str, Any]:
    version = custom_resource_definition()["spec"]["versions"][0]
    return dict(version["schema"]["openAPIV3Schema"])


def too_many(value: Any, schema: Mapping[str, Any], path: str = "") -> Iterator[str]:
    """`path: Too many: N: must have at most M items` for each list longer than its maxItems."""
    if isinstance(value, list) and schema.get("type") == "array":
        bound = schema.get("maxItems")
        if bound is not None and len(value) > bound:
            yield f"{path}: Too many: {len(value)}: must have at most {bound} items"
        for item in value:
            yield from too_many(item, schema.get("items") or {}, path + "[]")
    elif isinstance(value, Mapping):
        properties = schema.get("properties") or {}
        for key, sub in value.items():
            if key in properties:
                yield from too_many(sub, properties[key], f"{path}.{key}" if path else key)


class SchemaLimits:
    """Mixin for the emulator: ObservedModel writes that break a maxItems are refused (422)."""

    rejected: list[str]
    _SCHEMA = _schema()

    def _on_update(self, request: Any) -> int | None:
        if str(request.resource.plural) == "observedmodels" and isinstance(request.data, dict):
            key = (request.resource, request.namespace, request.name)
            current = self.objects[key] if key in self.objects else None  # noqa: SIM401
            method = str(getattr(request.method, "value", request.method)).upper()
            after = request.data
            if method == "PATCH" and current is not None:
                after = apply_merge_patch(current, request.data)
            self._check(after, request.name)
        return super()._on_update(request)  # type: ignore[misc]

    def _check(self, obj: Any, name: str | None) -> None:
        problems = list(too_many(obj, self._SCHEMA))
        if problems:
            self.__dict__.setdefault("rejected", []).extend(problems)
            raise KubernetesError(
                status=422,
                reason="Invalid",
                message=f'ObservedModel.mlwarden.io "{name}" is invalid: {"; ".join(problems)}',
            )
