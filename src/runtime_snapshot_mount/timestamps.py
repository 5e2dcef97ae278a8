"""Parsing and formatting of ``strategy_synced_at``: RFC 3339 date-times with an offset.

An instant is an aware :class:`datetime.datetime` in UTC, truncated to microseconds.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

__all__ = ["format_instant", "parse_instant"]

_PATTERN = re.compile(
    r"(?P<year>\d{4})-(?P<month>\d{2})-(?P<day>\d{2})"
    r"[Tt ](?P<hour>\d{2}):(?P<minute>\d{2})(?::(?P<second>\d{2})(?:[.,](?P<fraction>\d+))?)?"
    r"(?:(?P<zulu>[Zz])|(?P<sign>[+-])(?P<off_hour>\d{2}):?(?P<off_minute>\d{2}))",
    re.ASCII,
)


def parse_instant(text: str) -> datetime:
    """Return the UTC instant that ``text`` names, truncated to microseconds.

    ``text`` must be an ISO 8601 / RFC 3339 date-time with an offset (``Z`` or ``±HH:MM``).
    Raises :class:`ValueError` with a reason for naive times, dates alone, impossible dates
    and instants outside the years 0001-9999 once converted to UTC.
    """
    match = _PATTERN.fullmatch(text)
    if match is None:
        raise ValueError(
            "must be an RFC 3339 date-time with an offset, like 2026-03-22T08:30:00.000Z"
        )
    fraction = (match["fraction"] or "")[:6].ljust(6, "0")
    if match["zulu"]:
        offset = timezone.utc
    else:
        off_hour, off_minute = int(match["off_hour"]), int(match["off_minute"])
        if off_hour > 23 or off_minute > 59:
            raise ValueError("has an impossible UTC offset")
        delta = timedelta(hours=off_hour, minutes=off_minute)
        offset = timezone(-delta if match["sign"] == "-" else delta)
    try:
        local = datetime(
            int(match["year"]),
            int(match["month"]),
            int(match["day"]),
            int(match["hour"]),
            int(match["minute"]),
            int(match["second"] or 0),
            int(fraction),
            tzinfo=offset,
        )
    except ValueError:
        raise ValueError("is not a possible date and time") from None
    try:
        return local.astimezone(timezone.utc)
    except OverflowError:
        raise ValueError("is outside the years 0001-9999 in UTC") from None


def format_instant(instant: datetime) -> str:
    """Format an aware instant as RFC 3339 in UTC with six fractional digits and ``Z``."""
    utc = instant.astimezone(timezone.utc).replace(tzinfo=None)
    return utc.isoformat(timespec="microseconds") + "Z"
