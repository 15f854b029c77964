"""KServe payload-logger events: halves joined by ce-id, in either order, bounded."""

from __future__ import annotations

import pytest

from mlwarden.detector.cloudevents import (
    REQUEST_TYPE,
    RESPONSE_TYPE,
    CloudEventError,
    CloudEventJoiner,
)


def test_halves_join_in_either_order() -> None:
    j = CloudEventJoiner()
    assert j.offer(ce_type=REQUEST_TYPE, ce_id="1", body=b"req", now=0) is None
    joined = j.offer(ce_type=RESPONSE_TYPE, ce_id="1", body=b"resp", now=1)
    assert joined is not None and (joined.request, joined.response) == (b"req", b"resp")
    assert j.offer(ce_type=RESPONSE_TYPE, ce_id="2", body=b"r2", now=2) is None
    joined = j.offer(ce_type=REQUEST_TYPE, ce_id="2", body=b"q2", now=2)
    assert joined is not None and (joined.request, joined.response) == (b"q2", b"r2")
    assert len(j) == 0


def test_unpaired_halves_expire_and_are_bounded() -> None:
    j = CloudEventJoiner(max_pending=3, max_age=10)
    for i in range(5):
        j.offer(ce_type=REQUEST_TYPE, ce_id=str(i), body=b"", now=0)
    assert len(j) == 3 and j.expired == 2
    j.offer(ce_type=REQUEST_TYPE, ce_id="late", body=b"", now=100)
    assert len(j) == 1 and j.expired == 5


@pytest.mark.parametrize(("ce_type", "ce_id"), [("com.example.other", "1"), (REQUEST_TYPE, "")])
def test_bad_events_are_refused(ce_type: str, ce_id: str) -> None:
    with pytest.raises(CloudEventError):
        CloudEventJoiner().offer(ce_type=ce_type, ce_id=ce_id, body=b"", now=0)
