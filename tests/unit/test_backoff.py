"""One backoff formula for every retry loop: each caller's waits are what its own loop had."""

import random

import pytest

from mlwarden.backoff import exponential, full_jitter


@pytest.mark.parametrize(
    ("base", "cap"),
    [
        (0.1, 5.0),  # the sidecar shipper
        (1.0, 30.0),  # the detector's status writer
        (2.0, 60.0),  # the operator after an API failure (RETRY_SECONDS 2)
        (0.5, 60.0),  # the same in the demo (MLWARDEN_RETRY_SECONDS 0.5)
        (10.0, 300.0),  # the kubelet's CrashLoopBackOff, as the diagnosis models it
    ],
)
def test_doubles_from_the_base_up_to_the_cap(base: float, cap: float) -> None:
    wait = base
    for attempt in range(200):
        assert exponential(attempt, base=base, cap=cap) == min(wait, cap), attempt
        wait *= 2
    assert exponential(10_000, base=base, cap=cap) == cap  # no overflow far out


def test_full_jitter_draws_below_the_exponential() -> None:
    rng = random.Random(7)
    for attempt in range(8):
        ceiling = exponential(attempt, base=0.1, cap=5.0)
        draws = [full_jitter(attempt, base=0.1, cap=5.0, rng=rng) for _ in range(500)]
        assert all(0.0 <= d <= ceiling for d in draws)
        assert max(draws) > 0.8 * ceiling  # spread over the whole range, not near zero
