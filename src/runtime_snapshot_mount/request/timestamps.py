"""Parsing and formatting of ``strategy_synced_at``: RFC 3339 date-times with an offset.

An instant is an aware :class:`datetime.datetime` in UTC, truncated to microseconds.
"""

from __future__ import annotations

import re
import sys
from datetime import datetime, timedelta, timezone

__all__ = ["format_instant", "parse_instant"]

_PATTERN = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?"
    r"(?:[Zz]|([+-])(\d{2}):?(\d{2}))",
    re.ASCII,
)
# The shape nearly every client sends (``2026-03-22T08:30:00.000Z``): parsed by the C
# ``datetime.fromisoformat``, which reads exactly this shape on every supported Python.
_COMMON_UTC = re.compile(
    r"\d{4}-\d\d-\d\dT(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d(?:\.\d{3}(?:\d{3})?)?Z", re.ASCII
)
if sys.version_info >= (3, 11):
    _from_iso_utc = datetime.fromisoformat
else:  # 3.10 reads offsets, not Z

    def _from_iso_utc(text: str) -> datetime:
        return datetime.fromisoformat(text[:-1] + "+00:00")


_UTC = timezone.utc
_OFFSETS: dict[tuple[str, str, str], timezone] = {}


def _offset(sign: str, hours: str, minutes: str) -> timezone:
    key = (sign, hours, minutes)
    found = _OFFSETS.get(key)
    if found is None:
        if int(hours) > 23 or int(minutes) > 59:
            raise ValueError("has an impossible UTC offset")
        delta = timedelta(hours=int(hours), minutes=int(minutes))
        found = timezone(-delta if sign == "-" else delta)
        if len(_OFFSETS) < 4096:
            _OFFSETS[key] = found
    return found


def parse_instant(text: str) -> datetime:
    """Return the UTC instant that ``text`` names, truncated to microseconds.

    ``text`` must be an ISO 8601 / RFC 3339 date-time with an offset (``Z`` or ``±HH:MM``).
    Raises :class:`ValueError` with a reason for naive times, dates alone, impossible dates
    and instants outside the years 0001-9999 once converted to UTC.
    """
    if _COMMON_UTC.fullmatch(text):
        try:
            return _from_iso_utc(text)
        except ValueError:
            pass  # an impossible date such as 02-30: the general parser says why
    return _parse_general(text)


def _parse_general(text: str) -> datetime:
    """:func:`parse_instant` for every accepted spelling, with the reason for a refusal."""
    match = _PATTERN.fullmatch(text)
    if match is None:
        raise ValueError(
            "must be an RFC 3339 date-time with an offset, like 2026-03-22T08:30:00.000Z"
        )
    year, month, day, hour, minute, second, fraction, sign, off_hours, off_minutes = match.groups()
    offset = _UTC if sign is None else _offset(sign, off_hours, off_minutes)
    try:
        local = datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute),
            int(second) if second else 0,
            int(fraction[:6].ljust(6, "0")) if fraction else 0,
            tzinfo=offset,
        )
    except ValueError:
        raise ValueError("is not a possible date and time") from None
    if offset is _UTC:
        return local
    try:
        return local.astimezone(_UTC)
    except OverflowError:
        raise ValueError("is outside the years 0001-9999 in UTC") from None


def format_instant(instant: datetime) -> str:
    """Format an aware instant as RFC 3339 in UTC with six fractional digits and ``Z``."""
    utc = instant.astimezone(timezone.utc).replace(tzinfo=None)
    return utc.isoformat(timespec="microseconds") + "Z"
