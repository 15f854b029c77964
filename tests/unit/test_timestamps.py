"""Kubernetes timestamps: one reader and one writer, round-tripping what the API server writes."""

from datetime import UTC, datetime, timedelta, timezone

from mlwarden.timestamps import as_utc, format_time, now_iso, parse_time


def test_round_trip_of_what_the_api_server_writes() -> None:
    for text in ("2026-11-26T15:02:11Z", "1970-01-01T00:00:00Z"):
        when = parse_time(text)
        assert when is not None and when.tzinfo is not None
        assert format_time(when) == text


def test_offsets_and_naive_times_are_read_as_utc() -> None:
    assert parse_time("2026-11-26T16:02:11+01:00") == parse_time("2026-11-26T15:02:11Z")
    assert parse_time("2026-11-26T15:02:11z") == parse_time("2026-11-26T15:02:11Z")
    assert parse_time("2026-11-26T15:02:11") == datetime(2026, 11, 26, 15, 2, 11, tzinfo=UTC)
    paris = timezone(timedelta(hours=1))
    assert format_time(datetime(2026, 11, 26, 16, 2, 11, 999_999, tzinfo=paris)) == (
        "2026-11-26T15:02:11Z"
    )
    assert as_utc(datetime(2026, 1, 1)).tzinfo is UTC


def test_what_is_not_a_timestamp_is_none() -> None:
    for value in (None, "", "yesterday", 17, "2026-13-01T00:00:00Z"):
        assert parse_time(value) is None


def test_now_iso_is_now_to_the_second() -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    now = parse_time(now_iso())
    assert now is not None and before <= now <= datetime.now(UTC)
    assert now_iso().endswith("Z") and len(now_iso()) == len("2026-11-26T15:02:11Z")
