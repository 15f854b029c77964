"""When capture's batched work runs (`supervisor.FlushTimer`, `InlineCapture`), on a real
event loop and clock."""

from __future__ import annotations

import asyncio

import pytest

from mlwarden.sidecar.capture import Exchange
from mlwarden.sidecar.metrics import SidecarMetrics
from mlwarden.sidecar.supervisor import (
    FLUSH_DELAY_SECONDS,
    FLUSH_MAX_DELAY_SECONDS,
    METRICS_DELAY_SECONDS,
    METRICS_ITEMS,
    FlushTimer,
    InlineCapture,
)


def exchange(status: int = 200) -> Exchange:
    return Exchange(
        method="POST",
        path="/v2/models/m/infer",
        status=status,
        started_at=0.0,
        total_seconds=0.001,
        upstream_seconds=0.0005,
        overhead_seconds=0.0001,
    )


class StandInForwarder:
    """A stand-in for the forwarder's side: `busy`, counted, and `quiet` when told."""

    def __init__(self, timer: FlushTimer, busy: bool) -> None:
        self.timer, self.is_busy, self.asked = timer, busy, 0
        timer.busy = self.busy

    def busy(self) -> bool:
        self.asked += 1
        return self.is_busy

    def last_request_ended(self) -> None:
        self.is_busy = False
        self.timer.quiet()


def timed_flush() -> tuple[FlushTimer, asyncio.Future[float]]:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[float] = loop.create_future()
    return FlushTimer(lambda: done.set_result(loop.time())), done


async def test_the_first_quiet_moment_after_the_delay_flushes() -> None:
    timer, done = timed_flush()
    fwd = StandInForwarder(timer, busy=True)
    loop = asyncio.get_running_loop()
    start = loop.time()
    timer.later()
    timer.later()  # a second exchange before the flush: still one flush
    fwd.last_request_ended()  # before the delay: not yet
    fwd.is_busy = True
    await asyncio.sleep(FLUSH_DELAY_SECONDS * 3)
    # Past the delay, a request still in progress: no flush, and `busy` not asked (a timer
    # rechecking every millisecond asked about 20 times here, waking the loop each time).
    assert not done.done() and fwd.asked == 0
    fwd.last_request_ended()
    took = await asyncio.wait_for(done, 2.0) - start
    assert FLUSH_DELAY_SECONDS * 3 <= took < FLUSH_MAX_DELAY_SECONDS and fwd.asked == 1


async def test_a_request_read_in_the_same_turn_as_the_quiet_moment_puts_the_flush_off() -> None:
    timer, done = timed_flush()
    fwd = StandInForwarder(timer, busy=True)
    timer.later()
    await asyncio.sleep(FLUSH_DELAY_SECONDS * 2)
    timer.quiet()  # the last request ended, but another was read in the same turn
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert not done.done() and fwd.asked == 1
    fwd.last_request_ended()
    await asyncio.wait_for(done, 2.0)
    assert fwd.asked == 2


@pytest.mark.parametrize("busy", [True, False], ids=["busy", "idle"])
async def test_with_no_quiet_moment_the_flush_comes_at_the_max_delay(busy: bool) -> None:
    # Busy throughout, or idle when the delay ends (the end of the delay is not a quiet
    # moment: the next burst may be arriving) and nothing served after it.
    timer, done = timed_flush()
    fwd = StandInForwarder(timer, busy=busy)
    start = asyncio.get_running_loop().time()
    timer.later()
    took = await asyncio.wait_for(done, 2.0) - start
    assert took >= FLUSH_MAX_DELAY_SECONDS and fwd.asked == 0
    timer.quiet()  # after the flush, a quiet moment asks for nothing
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert fwd.asked == 0


async def test_soon_flushes_on_the_next_turn_even_when_busy() -> None:
    flushes: list[int] = []
    timer = FlushTimer(lambda: flushes.append(1))
    timer.busy = lambda: True
    timer.later()
    timer.soon()
    assert timer.soon_due
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert flushes == [1] and not timer.soon_due
    await asyncio.sleep(FLUSH_DELAY_SECONDS * 2)
    assert flushes == [1]  # the delayed flush was replaced, not added


async def test_capture_off_counts_exchanges_about_once_a_second_and_on_a_scrape() -> None:
    metrics = SidecarMetrics()
    inline = InlineCapture(metrics, protocol="v2", max_body_bytes=1 << 20)

    def served(code_class: str) -> float:
        value = metrics.registry.get_sample_value(
            "mlwarden_sidecar_requests_total", {"code_class": code_class}
        )
        return value or 0.0

    for _ in range(3):
        assert inline.offer(exchange())
    assert served("2xx") == 0 and len(inline) == 3  # not between the requests
    inline.timer.quiet()  # the end of a burst
    await asyncio.sleep(FLUSH_DELAY_SECONDS * 3)
    assert served("2xx") == 0 and len(inline) == 3  # not after each burst
    await asyncio.sleep(METRICS_DELAY_SECONDS)
    inline.timer.quiet()  # the first burst to end after the delay
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert served("2xx") == 3 and len(inline) == 0
    inline.offer(exchange(502))
    inline.update_gauges()  # a scrape sees every exchange served so far
    assert served("5xx") == 1
    for _ in range(METRICS_ITEMS):
        inline.offer(exchange())
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert served("2xx") == 3 + METRICS_ITEMS  # a full batch goes at once
    inline.offer(exchange())
    await inline.stop(1.0)
    assert served("2xx") == 4 + METRICS_ITEMS


async def test_the_delays_are_the_timers_own() -> None:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[float] = loop.create_future()
    timer = FlushTimer(lambda: done.set_result(loop.time()), delay=0.05, max_delay=0.1)
    start = loop.time()
    timer.later()
    took = await asyncio.wait_for(done, 1.0) - start
    assert 0.1 <= took < 0.5  # no quiet moment: the max delay, not FLUSH_MAX_DELAY_SECONDS
