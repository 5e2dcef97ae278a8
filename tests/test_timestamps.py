"""``parse_instant`` and ``format_instant``: offsets, case, fractions, range, round trips."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime_snapshot_mount import format_instant, parse_instant

UTC = timezone.utc


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, us: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, us, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-03-22T08:30:00Z", utc(2026, 3, 22, 8, 30)),
        ("2026-03-22T08:30:00.000Z", utc(2026, 3, 22, 8, 30)),
        ("2026-03-22T08:30:00+00:00", utc(2026, 3, 22, 8, 30)),
        ("2026-03-22T08:30:00-00:00", utc(2026, 3, 22, 8, 30)),
        ("2026-03-22T10:30:00+02:00", utc(2026, 3, 22, 8, 30)),
        ("2026-03-22T03:00:00-05:30", utc(2026, 3, 22, 8, 30)),
        ("2026-03-22T14:15:00+05:45", utc(2026, 3, 22, 8, 30)),
        ("2026-03-23T08:29:00+23:59", utc(2026, 3, 22, 8, 30)),
        ("2026-03-21T08:31:00-23:59", utc(2026, 3, 22, 8, 30)),
        ("2026-03-22T00:30:00+01:00", utc(2026, 3, 21, 23, 30)),
        ("2026-12-31T23:30:00-01:00", utc(2027, 1, 1, 0, 30)),
        ("2024-02-29T00:00:00Z", utc(2024, 2, 29)),
    ],
)
def test_offsets_are_converted_to_the_same_utc_instant(text: str, expected: datetime) -> None:
    parsed = parse_instant(text)
    assert parsed == expected
    assert parsed.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    "text",
    [
        "2026-03-22t08:30:00z",
        "2026-03-22T08:30:00z",
        "2026-03-22t08:30:00Z",
        "2026-03-22t10:30:00+02:00",
    ],
)
def test_lower_case_t_and_z_are_accepted(text: str) -> None:
    assert parse_instant(text) == utc(2026, 3, 22, 8, 30)


@pytest.mark.parametrize(
    ("fraction", "microsecond"),
    [
        (".1", 100_000),
        (".12", 120_000),
        (".123456", 123_456),
        (".1234567", 123_456),
        (".1234569", 123_456),
        (".9999999", 999_999),
        (".999999999999", 999_999),
        (".000000999", 0),
        (".0000019", 1),
        (",5", 500_000),
        (",1234567", 123_456),
    ],
)
def test_fraction_is_truncated_to_microseconds_never_rounded(
    fraction: str, microsecond: int
) -> None:
    parsed = parse_instant(f"2026-03-22T08:30:00{fraction}Z")
    assert parsed == utc(2026, 3, 22, 8, 30, 0, microsecond)


def test_truncation_near_the_end_of_the_range_does_not_overflow() -> None:
    assert parse_instant("9999-12-31T23:59:59.9999999999Z") == utc(9999, 12, 31, 23, 59, 59, 999999)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0001-01-01T00:00:00Z", utc(1, 1, 1)),
        ("0001-01-01T01:00:00+01:00", utc(1, 1, 1)),
        ("0001-01-01T00:00:00-01:00", utc(1, 1, 1, 1)),
        ("9999-12-31T23:59:59.999999Z", utc(9999, 12, 31, 23, 59, 59, 999999)),
        ("9999-12-31T23:59:59-00:00", utc(9999, 12, 31, 23, 59, 59)),
        ("9999-12-31T23:30:00+01:00", utc(9999, 12, 31, 22, 30)),
    ],
)
def test_instants_at_the_ends_of_years_0001_to_9999_are_accepted(
    text: str, expected: datetime
) -> None:
    assert parse_instant(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "2026-03-22T08:30:00",
        "2026-03-22",
        "1774168200",
        "2026-02-30T08:30:00Z",
        "2026-04-31T08:30:00Z",
        "2026-03-22T24:00:01Z",
        "2026-03-22T08:30:00+24:00",
        "2026-03-22T08:30:00+00:60",
        "2026-03-22T08:30:00Z+01:00",
        "0000-01-01T00:00:00Z",
        "0001-01-01T00:00:00+01:00",
        "0001-01-01T00:59:59.999999+01:00",
        "9999-12-31T23:30:00-01:00",
        "9999-12-31T23:59:59.999999-00:01",
        "2026-03-22T08:30:00.Z",
        "2026-03-22T08:30:00ZZ",
        "\u0662\u0660\u0662\u0666-03-22T08:30:00Z",
        "",
    ],
)
def test_invalid_text_raises_value_error_with_a_reason(text: str) -> None:
    with pytest.raises(ValueError, match=r"\w"):
        parse_instant(text)


def test_format_writes_utc_with_six_digits_and_z() -> None:
    assert format_instant(utc(2026, 3, 22, 8, 30)) == "2026-03-22T08:30:00.000000Z"
    assert format_instant(utc(1, 1, 1, 0, 0, 0, 1)) == "0001-01-01T00:00:00.000001Z"


def test_format_converts_an_aware_non_utc_instant_to_utc() -> None:
    local = datetime(2026, 3, 22, 10, 30, 0, 5, tzinfo=timezone(timedelta(hours=2)))
    assert format_instant(local) == "2026-03-22T08:30:00.000005Z"


@pytest.mark.parametrize(
    "text",
    [
        "2026-03-22T08:30:00.000Z",
        "2026-03-22T10:30:00.1234567+02:00",
        "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59.999999Z",
        "2026-03-22t03:00:00,5-05:30",
    ],
)
def test_parse_of_format_of_parse_is_the_same_instant(text: str) -> None:
    instant = parse_instant(text)
    formatted = format_instant(instant)
    assert formatted.endswith("Z")
    assert parse_instant(formatted) == instant
    assert format_instant(parse_instant(formatted)) == formatted


@settings(deadline=None)
@given(
    st.datetimes(
        min_value=datetime(1, 1, 1),
        max_value=datetime(9999, 12, 31, 23, 59, 59, 999999),
        timezones=st.just(UTC),
    )
)
def test_every_utc_instant_round_trips_through_format_and_parse(instant: datetime) -> None:
    assert parse_instant(format_instant(instant)) == instant


@settings(max_examples=300)
@given(
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)),
    st.sampled_from([0, 3, 6]),
)
def test_the_common_utc_spelling_parses_as_the_general_parser_does(
    moment: datetime, fraction_digits: int
) -> None:
    # parse_instant reads 2026-03-22T08:30:00[.fff|.ffffff]Z with datetime.fromisoformat;
    # every other spelling (the same instant with +00:00 here), and every refusal, goes
    # through the general parser. Both must name the instant written.
    text = (
        moment.isoformat(
            timespec={0: "seconds", 3: "milliseconds", 6: "microseconds"}[fraction_digits]
        )
        + "Z"
    )
    parsed = parse_instant(text)
    unit = 10 ** (6 - fraction_digits)
    assert parsed == moment.replace(microsecond=moment.microsecond // unit * unit, tzinfo=UTC)
    assert parsed == parse_instant(text.removesuffix("Z") + "+00:00")
    assert parsed.tzinfo is UTC


@pytest.mark.parametrize(
    "text",
    ["2026-02-29T08:30:00Z", "2026-02-30T08:30:00.000Z", "0000-01-01T00:00:00.000000Z"],
)
def test_impossible_dates_in_the_common_spelling_get_the_general_reason(text: str) -> None:
    with pytest.raises(ValueError, match="is not a possible date and time"):
        parse_instant(text)
