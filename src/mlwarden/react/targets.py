"""What a record's patch is keyed by: `Kind/name`, or `Kind/name/subresource`.

A record's `patch` (and `held`) maps an object to the merge patch applied to it. Most
patches go to the object itself (`Deployment/fraud-model`); an Argo Rollout's abort goes to
its status subresource, as `kubectl argo rollouts abort` sends it
(`Rollout/fraud-model/status`). The object is the same either way: the snapshot holds it
under (kind, name), the touched set of a pass counts it once, and the API path names the
subresource. `split_target` is the one reading of such a key.

Pure.
"""

from __future__ import annotations

from typing import Final, NamedTuple

SUBRESOURCES: Final = ("status",)  # the subresources a reaction's patch may go to


class PatchTarget(NamedTuple):
    """One object a patch applies to, and the subresource it goes through (None: the object)."""

    kind: str
    name: str
    subresource: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        """(kind, name): how the snapshot and the operator's caches hold the object."""
        return self.kind, self.name

    def __str__(self) -> str:
        base = f"{self.kind}/{self.name}"
        return f"{base}/{self.subresource}" if self.subresource else base


def split_target(text: str) -> PatchTarget:
    """`Kind/name` or `Kind/name/status` → PatchTarget; ValueError naming what is wrong."""
    parts = text.split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise ValueError(f"patch target {text!r}: expected Kind/name or Kind/name/subresource")
    if len(parts) == 3 and parts[2] not in SUBRESOURCES:
        raise ValueError(
            f"patch target {text!r}: subresource {parts[2]!r} is not one of "
            f"{', '.join(SUBRESOURCES)}"
        )
    return PatchTarget(parts[0], parts[1], parts[2] if len(parts) == 3 else None)


def object_key(text: str) -> tuple[str, str]:
    """(kind, name) of a patch target; (text, "") for a key that is not one: in no snapshot
    (such a record reads as about an object that is gone), and equal only to itself."""
    try:
        return split_target(text).key
    except ValueError:
        return text, ""
