"""Merge patches: apply and diff are inverses; `holds` compares only what a patch sets.

`covers` and `needs_update` are tested on the operator's real objects in
tests/unit/operator/test_objects.py and test_injection.py.
"""

from mlwarden.patches import apply_merge_patch, holds, merge_patch_diff


def test_merge_patch_diff_is_the_inverse_of_apply() -> None:
    current = {"a": 1, "b": {"c": [1, 2], "d": "x"}, "gone": True}
    wanted = {"a": 1, "b": {"c": [3], "e": None}, "new": {"k": "v"}}
    patch = merge_patch_diff(current, wanted)
    assert patch == {"gone": None, "b": {"c": [3], "d": None, "e": None}, "new": {"k": "v"}}
    # e: None in `wanted` cannot survive a merge patch (null deletes); everything else does.
    assert apply_merge_patch(current, patch) == {"a": 1, "b": {"c": [3]}, "new": {"k": "v"}}
    assert merge_patch_diff(wanted, wanted) == {}


def test_holds_compares_only_what_the_patch_sets() -> None:
    obj = {
        "metadata": {"resourceVersion": "101", "annotations": {"other": "x"}},
        "spec": {"replicas": 6, "paused": False, "list": [{"a": 1, "default": 2}]},
    }
    assert holds(obj, {"metadata": {"resourceVersion": "100"}, "spec": {"replicas": 6}}) is None
    assert holds(obj, {"spec": {"list": [{"a": 1}], "gone": None}}) is None
    assert holds(obj, {"spec": {"replicas": 4}}) == "spec.replicas: set 4, now 6"
    assert holds(obj, {"spec": {"paused": None}}) == "spec.paused: removed, now false"
    assert holds(obj, {"spec": {"list": [{"a": 2}]}}) == "spec.list[0].a: set 2, now 1"
    assert holds(obj, {"spec": {"list": []}}) is not None
    assert holds(obj, {"spec": {"x": 1}}) == "spec.x: set 1, now absent"
    assert holds(None, {"spec": {}}) == "the object is gone"
