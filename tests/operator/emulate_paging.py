"""Paged lists (`limit` and `continue`), as the Kubernetes API server serves them.

kmock answers a list with every object at once and ignores `limit`. The API server, asked
for `?limit=N`, returns at most N items in key order (namespace, then name) and, when more
remain, `metadata.continue`, an opaque token that the next request passes as `?continue=`
to get the following page (and `metadata.remainingItemCount`); the last page has no token.
See https://kubernetes.io/docs/reference/using-api/api-concepts/#retrieving-large-results-sets-in-chunks

`pages` counts the pages served per resource plural to lists that asked for a `limit`.
"""

from __future__ import annotations

import base64
import collections
import json
from typing import Any


def _token(key: tuple[str, str]) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(key)).encode()).decode()


def _after(token: str) -> tuple[str, str]:
    namespace, name = json.loads(base64.urlsafe_b64decode(token.encode()))
    return str(namespace), str(name)


def _key(item: Any) -> tuple[str, str]:
    meta = item.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


class PagedLists:
    """Mixin for the emulator: `limit`/`continue` on lists (see the module docstring)."""

    pages: collections.Counter[str]

    async def _serve_list(self, request: Any) -> Any:
        payload = await super()._serve_list(request)  # type: ignore[misc]
        params = getattr(request, "params", None) or {}
        limit = int(params.get("limit") or 0)
        if not isinstance(payload, dict) or limit <= 0:
            return payload
        if "pages" not in self.__dict__:
            self.pages = collections.Counter()
        self.pages[str(getattr(request.resource, "plural", request.resource))] += 1
        items = sorted(payload.get("items") or [], key=_key)
        if params.get("continue"):
            after = _after(str(params["continue"]))
            items = [i for i in items if _key(i) > after]
        page, rest = items[:limit], items[limit:]
        meta = dict(payload.get("metadata") or {})
        meta.pop("continue", None)
        meta.pop("remainingItemCount", None)
        if rest:
            meta["continue"] = _token(_key(page[-1]))
            meta["remainingItemCount"] = len(rest)
        return {**payload, "metadata": meta, "items": page}
