"""JSON merge patches (RFC 7386), and whether an object already holds what is to be set.

Asked by different parts of mlwarden, answered here once:

    apply_merge_patch        apply a patch (objects merge, null deletes, lists replace)
    merge_patch_diff         the patch that turns one object into another
    holds(obj, patch)        does `obj` still carry everything `patch` set? None, or where it
                             differs (reactions, over the patches they applied)
    covers(current, desired) does `current` already hold every field `desired` sets?
    needs_update             the patch that brings `current` to `desired`, or None (the
                             operator's objects and the sidecar injection)

`holds` compares exactly; `covers` and `needs_update` ignore what the API server defaults or
other controllers add, except in the maps the operator owns whole, and compare resource
quantities by value ("0.5" is "500m"). `plain` copies kopf's mapping views into dicts.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any, Final

_PRECONDITION: Final = ("metadata", "resourceVersion")

_SAME: Final[Any] = object()  # "_diff found nothing to change"
_ABSENT: Final[Any] = object()  # a key the current object does not have

# Maps the operator owns whole: a key present in the API but absent from the desired
# object is removed (elsewhere extra keys are somebody else's, or the API server's defaults).
# "*" stands for any list item.
_OWNED_MAPS: Final[frozenset[tuple[str, ...]]] = frozenset(
    {
        ("data",),
        ("spec", "selector"),
        ("spec", "template", "spec", "containers", "*", "resources", "requests"),
        ("spec", "template", "spec", "containers", "*", "resources", "limits"),
    }
)


def plain(value: Any) -> Any:
    """A deep copy of `value` made of dicts, lists and scalars (kopf hands out mapping views)."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return [plain(v) for v in value]
    return value


# --------------------------------------------------------------------------- merge patches


def apply_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge key by key, null deletes, anything else (lists too) replaces."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result = copy.deepcopy(dict(target)) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = apply_merge_patch(result.get(key), value)
    return result


def merge_patch_diff(current: Mapping[str, Any], wanted: Mapping[str, Any]) -> dict[str, Any]:
    """The merge patch that turns `current` into `wanted` (empty when they are equal)."""
    patch: dict[str, Any] = {}
    for key in current:
        if key not in wanted:
            patch[key] = None
    for key, value in wanted.items():
        have = current.get(key)
        if key in current and have == value:
            continue
        if isinstance(value, Mapping) and isinstance(have, Mapping):
            patch[key] = merge_patch_diff(have, value)
        else:
            patch[key] = copy.deepcopy(value)
    return patch


def holds(obj: Mapping[str, Any] | None, patch: Mapping[str, Any]) -> str | None:
    """None when `obj` carries everything `patch` sets, else where and how it differs.

    Keys the patch does not mention are not compared (the API server defaults fields, other
    controllers add annotations); null in the patch means "absent"; lists must match item by
    item, each holding the patch's item. `metadata.resourceVersion` is a precondition, not a
    change, and is skipped.
    """
    if obj is None:
        return "the object is gone"
    return _mismatch(obj, patch, ())


def _mismatch(have: Any, want: Any, path: tuple[str, ...]) -> str | None:
    where = ".".join(path) or "(object)"
    if isinstance(want, Mapping):
        if not isinstance(have, Mapping):
            return f"{where}: set an object, now {_short(have)}"
        for key, value in want.items():
            sub = (*path, str(key))
            if sub == _PRECONDITION:
                continue
            if value is None:
                if key in have and have[key] is not None:
                    return f"{'.'.join(sub)}: removed, now {_short(have[key])}"
                continue
            if key not in have:
                return f"{'.'.join(sub)}: set {_short(value)}, now absent"
            found = _mismatch(have[key], value, sub)
            if found is not None:
                return found
        return None
    if isinstance(want, list):
        if not isinstance(have, list) or len(have) != len(want):
            return f"{where}: set {_short(want)}, now {_short(have)}"
        for i, (h, w) in enumerate(zip(have, want, strict=True)):
            found = _mismatch(h, w, (*path[:-1], f"{path[-1]}[{i}]") if path else (f"[{i}]",))
            if found is not None:
                return found
        return None
    if have != want:
        return f"{where}: set {_short(want)}, now {_short(have)}"
    return None


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --------------------------------------------------------------------------- comparison


_QUANTITY = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+))([eE][+-]?\d+|Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE])?$")
_QUANTITY_FACTOR: Final[dict[str, Decimal]] = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
    **{s: Decimal(1024**i) for i, s in enumerate(("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"), 1)},
}


def _quantity(value: Any) -> Decimal | None:
    """A Kubernetes resource quantity as a number: the API server rewrites `0.5` as `500m`."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    match = _QUANTITY.match(str(value))
    if match is None:
        return None
    number, suffix = match.group(1), match.group(2) or ""
    try:
        if suffix[:1] in ("e", "E"):
            return Decimal(number + suffix)
        return Decimal(number) * _QUANTITY_FACTOR[suffix]
    except InvalidOperation:
        return None


def _same_scalar(current: Any, desired: Any, path: tuple[str, ...]) -> bool:
    if isinstance(current, bool) != isinstance(desired, bool):
        return False
    if current == desired:
        return True
    if "resources" in path:
        a, b = _quantity(current), _quantity(desired)
        return a is not None and a == b
    return False


def _owned_whole(path: tuple[str, ...]) -> bool:
    return any(
        len(owned) == len(path) and all(o in ("*", p) for o, p in zip(owned, path, strict=True))
        for owned in _OWNED_MAPS
    )


def _diff(current: Any, desired: Any, path: tuple[str, ...]) -> Any:
    """The merge-patch value that turns `current` into `desired` at `path`, or `_SAME`.

    Dicts are compared key by key over the keys `desired` sets; lists (which a merge patch
    replaces whole) are the same when they have the same length and each item is the same
    by this rule, and are otherwise replaced by the desired list.
    """
    if isinstance(desired, Mapping):
        if not isinstance(current, Mapping):
            return plain(desired)
        out: dict[str, Any] = {}
        for key, value in desired.items():
            sub = _diff(current.get(key, _ABSENT), value, (*path, key))
            if sub is not _SAME:
                out[key] = sub
        if _owned_whole(path):
            out.update({key: None for key in current if key not in desired})
        return out if out else _SAME
    if isinstance(desired, Sequence) and not isinstance(desired, str | bytes):
        same = (
            isinstance(current, Sequence)
            and not isinstance(current, str | bytes)
            and len(current) == len(desired)
            and all(
                _diff(c, d, (*path, "*")) is _SAME for c, d in zip(current, desired, strict=True)
            )
        )
        return _SAME if same else plain(desired)
    if current is not _ABSENT and _same_scalar(current, desired, path):
        return _SAME
    return desired


def covers(current: Any, desired: Any, *, path: tuple[str, ...] = ()) -> bool:
    """True when `current` already holds every field `desired` sets, with the same value.

    Fields only in `current` (API-server defaults, other controllers' additions) do not
    count, except in the maps the operator owns whole (a container's resources, a
    ConfigMap's data, a selector). `path` is where the two values sit in their object.
    """
    return _diff(current, desired, path) is _SAME


def _owner_references_patch(current: Any, desired: Any) -> Any:
    """Ours replaced or added by uid; other owners' references are kept."""
    current_refs = (
        [r for r in current if isinstance(r, Mapping)] if isinstance(current, list) else []
    )
    desired_refs = list(desired)
    uids = {r.get("uid") for r in desired_refs}
    mine = [r for r in current_refs if r.get("uid") in uids]
    if len(mine) == len(desired_refs) and covers(mine, desired_refs):
        return _SAME
    return [plain(r) for r in current_refs if r.get("uid") not in uids] + plain(desired_refs)


def needs_update(current: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any] | None:
    """The JSON merge patch that brings `current` to `desired`, or None when nothing differs.

    Compared: the labels, annotations and owner references the operator sets, and every
    top-level field of `desired` other than identity and status (`data`, `rules`,
    `subjects`, `roleRef`, `spec`), by the rules of `covers`. A RoleBinding's `roleRef`
    cannot be patched; it never changes for one ObservedModel.
    """
    patch: dict[str, Any] = {}
    current_meta: Mapping[str, Any] = current.get("metadata") or {}
    desired_meta: Mapping[str, Any] = desired.get("metadata") or {}
    meta: dict[str, Any] = {}
    for key in ("labels", "annotations"):
        if key in desired_meta:
            sub = _diff(current_meta.get(key, _ABSENT), desired_meta[key], ("metadata", key))
            if sub is not _SAME:
                meta[key] = sub
    if "ownerReferences" in desired_meta:
        refs = _owner_references_patch(
            current_meta.get("ownerReferences"), desired_meta["ownerReferences"]
        )
        if refs is not _SAME:
            meta["ownerReferences"] = refs
    if meta:
        patch["metadata"] = meta
    for key, value in desired.items():
        if key in ("apiVersion", "kind", "metadata", "status"):
            continue
        sub = _diff(current.get(key, _ABSENT), value, (key,))
        if sub is not _SAME:
            patch[key] = sub
    return patch or None
