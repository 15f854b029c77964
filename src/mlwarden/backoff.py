"""Exponential backoff: how long to wait before the next attempt, and the same with jitter.

One formula for every retry loop in mlwarden; each caller keeps its own base and cap:

    sidecar shipper      full jitter, 0.1 s doubling to 5 s (honours Retry-After first)
    detector reporter    1 s doubling to 30 s between status writes that failed
    operator handlers    RETRY_SECONDS doubling to 60 s after a Kubernetes API failure
    diagnose timeline    the kubelet's CrashLoopBackOff, 10 s doubling to 300 s (to date
                         the first crash of a crash-looping container)
"""

from __future__ import annotations

import random
from typing import Final

# 2**16 times the base is beyond every cap in use; stopping there keeps the float finite.
_MAX_DOUBLINGS: Final = 16


def exponential(attempt: int, *, base: float, cap: float) -> float:
    """`base` doubled `attempt` times, at most `cap` (attempt 0 is the first retry: `base`)."""
    return float(min(base * 2.0 ** min(max(attempt, 0), _MAX_DOUBLINGS), cap))


def full_jitter(attempt: int, *, base: float, cap: float, rng: random.Random) -> float:
    """A uniform draw in [0, `exponential(attempt)`] ("full jitter": retries spread out)."""
    return rng.uniform(0.0, exponential(attempt, base=base, cap=cap))
