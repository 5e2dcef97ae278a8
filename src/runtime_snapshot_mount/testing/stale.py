"""The stale rule (an incoming snapshot is ignored when its version is lower, or equal with an
earlier ``strategy_synced_at``): versions as integers up to 2**63-1, times as instants at
microsecond precision whatever their offset, spelling or era, and replays applied again."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone

import pytest

from ..extend.plugins import Plugins
from ..request.snapshot import MAX_VERSION
from ..request.timestamps import format_instant
from ._support import (
    BASE_TIME,
    StoreFixtures,
    check_result,
    make_snapshot,
    new_account_id,
)

# The stale matrix: stored (version 5, 08:30Z) against each incoming version and time.
_STORED_VERSION = 5
_TIMES = {
    "older": "2026-03-22T08:29:59.999999Z",
    "equal": BASE_TIME,
    "newer": "2026-03-22T08:30:00.000001Z",
}
_MATRIX = [
    (version, time, version > _STORED_VERSION or (version == _STORED_VERSION and time != "older"))
    for version in (4, 5, 6)
    for time in _TIMES
]


def _pairs(*lines: str) -> list[tuple[str, str, bool]]:
    """``"STORED then INCOMING: applied"`` (or ``ignored``) as (stored, incoming, applied)."""
    pairs = []
    for line in lines:
        times, outcome = line.split(": ")
        stored, incoming = times.split(" then ")
        pairs.append((stored, incoming, outcome == "applied"))
    return pairs


# Equal versions, times that compare as instants.
_TIME_PAIRS = _pairs(
    # 10:00+02:00 is 08:00Z: earlier than 09:00Z although it sorts later as a string.
    "2026-03-22T10:00:00+02:00 then 2026-03-22T09:00:00Z: applied",
    "2026-03-22T09:00:00Z then 2026-03-22T10:00:00+02:00: ignored",
    "2026-03-22T08:00:00-05:30 then 2026-03-22T13:30:00Z: applied",
    "2026-03-22T13:30:00.000001Z then 2026-03-22T08:00:00-05:30: ignored",
    "2026-03-22T00:30:00+01:00 then 2026-03-21T23:30:00Z: applied",
    # digits past the sixth are truncated: the first two pairs are the same instant
    "2026-03-22T08:30:00.1234569Z then 2026-03-22T08:30:00.123456Z: applied",
    "2026-03-22T08:30:00.123456Z then 2026-03-22T08:30:00.1234561Z: applied",
    "2026-03-22T08:30:00.123457Z then 2026-03-22T08:30:00.1234569Z: ignored",
    "2026-03-22T08:30:00.1Z then 2026-03-22T08:30:00.100000Z: applied",
    "2026-03-22T08:30:00.000002Z then 2026-03-22T08:30:00.000001Z: ignored",
    "2026-03-22T08:30:00Z then 2026-03-22T08:30:00.000001Z: applied",
)

# Offsets that move the instant into another day, month or year.
_DAY_CROSSING_PAIRS = _pairs(
    "2026-03-22T23:30:00-01:00 then 2026-03-23T00:29:59.999999Z: ignored",
    "2026-03-22T23:30:00-01:00 then 2026-03-23T00:30:00Z: applied",
    "2026-03-23T00:30:00+01:00 then 2026-03-22T23:30:00.000001Z: applied",
    "2000-01-01T00:00:00+00:01 then 1999-12-31T23:59:00.000001Z: applied",
    "1999-12-31T23:59:00.000001Z then 2000-01-01T00:00:00+00:01: ignored",
    "2024-03-01T01:00:00+02:00 then 2024-02-29T23:00:00Z: applied",
    "2024-02-29T23:00:00.000001Z then 2024-03-01T01:00:00+02:00: ignored",
    "2100-03-01T00:00:00+01:00 then 2100-02-28T23:00:00Z: applied",
    "0001-01-01T23:59:59.999999+23:59 then 0001-01-01T00:00:59.999999Z: applied",
    "0001-01-01T00:01:00Z then 0001-01-01T23:59:59.999999+23:59: ignored",
    "9999-12-31T00:00:00-23:59 then 9999-12-31T23:58:59.999999Z: ignored",
    "9999-12-31T00:00:00-23:59 then 9999-12-31T23:59:00Z: applied",
)

# Spellings of one instant, 2026-03-22T08:30:00Z; storing any then any other is a replay.
_SPELLINGS = [
    "2026-03-22T08:30:00Z",
    "2026-03-22T08:30:00.000000Z",
    "2026-03-22T08:30:00.0000009Z",
    "2026-03-22t08:30:00z",
    "2026-03-22 08:30:00Z",
    "2026-03-22T08:30:00+00:00",
    "2026-03-22T08:30:00-00:00",
    "2026-03-22T09:30:00+01:00",
    "2026-03-22T03:00:00-05:30",
    "2026-03-23T08:29:00+23:59",
    "2026-03-21T08:31:00-23:59",
    "2026-03-22T14:15:00,000+05:45",
]

# Years across the whole allowed range, where precision tricks break (floats of seconds since
# 1970 lose microseconds far from it; 32-bit seconds end in 2038, 64-bit nanoseconds in 2262).
_YEARS = [1, 2, 99, 100, 999, 1000, 1582, 1899, 1900, 1901, 1969, 1970, 2000, 2038, 2106,
          2262, 2263, 2486, 3000, 5000, 9998, 9999]  # fmt: skip


def _equal_versions_test(pairs: list[tuple[str, str, bool]]) -> Callable[..., Awaitable[None]]:
    """A test that runs :meth:`StaleRules._equal_versions` on each of ``pairs``."""

    @pytest.mark.anyio
    @pytest.mark.parametrize(("stored_time", "incoming_time", "applied"), pairs)
    async def test(
        self: StaleRules, plugins: Plugins, stored_time: str, incoming_time: str, applied: bool
    ) -> None:
        await self._equal_versions(plugins, stored_time, incoming_time, applied)

    return test


class StaleRules(StoreFixtures):
    """Which of two snapshots of one account is kept, and what the upsert answers."""

    async def _equal_versions(
        self, plugins: Plugins, stored_time: str, incoming_time: str, applied: bool, note: str = ""
    ) -> None:
        """Store version 3 at ``stored_time``, then upsert version 3 at ``incoming_time``."""
        __tracebackhide__ = True
        account_id = new_account_id()
        await self._store_then(
            plugins,
            make_snapshot(account_id, 3, stored_time, snapshot_id="stored"),
            make_snapshot(account_id, 3, incoming_time, snapshot_id="incoming"),
            applied,
            f"equal versions, stored at {stored_time}, incoming at {incoming_time}{note}",
        )

    @pytest.mark.anyio
    async def test_versions_compare_as_integers_from_1_to_2_63_minus_1(
        self, plugins: Plugins
    ) -> None:
        pairs = [
            (1, 1, True),
            (1, 2, True),
            (2, 1, False),
            (9, 10, True),
            (10, 9, False),
            (2**31 - 1, 2**31, True),
            (2**32, 2**32 - 1, False),
            (2**53, 2**53 + 1, True),
            (2**53 + 1, 2**53, False),
            (MAX_VERSION - 1, MAX_VERSION, True),
            (MAX_VERSION, MAX_VERSION - 1, False),
            (MAX_VERSION, MAX_VERSION, True),
            (1, MAX_VERSION, True),
            (MAX_VERSION, 1, False),
        ]
        for stored_version, incoming_version, applied in pairs:
            account_id = new_account_id()
            await self._store_then(
                plugins,
                make_snapshot(account_id, stored_version, snapshot_id="stored"),
                make_snapshot(account_id, incoming_version, snapshot_id="incoming"),
                applied,
                f"stored version {stored_version}, incoming version {incoming_version}",
            )

    @pytest.mark.anyio
    @pytest.mark.parametrize(("version", "time", "applied"), _MATRIX)
    async def test_stale_rule_matrix(
        self, plugins: Plugins, version: int, time: str, applied: bool
    ) -> None:
        account_id = new_account_id()
        await self._store_then(
            plugins,
            make_snapshot(account_id, _STORED_VERSION, BASE_TIME),
            make_snapshot(account_id, version, _TIMES[time], snapshot_id="incoming"),
            applied,
            f"stored (version {_STORED_VERSION}, {BASE_TIME}), incoming (version {version}, "
            f"{_TIMES[time]})",
        )

    @pytest.mark.anyio
    async def test_exact_replay_is_applied_again(self, plugins: Plugins) -> None:
        snapshot = make_snapshot(new_account_id())
        await self._store_then(plugins, snapshot, snapshot, True, "an exact replay")

    @pytest.mark.anyio
    async def test_equal_key_with_new_content_replaces_the_stored_one(
        self, plugins: Plugins
    ) -> None:
        account_id = new_account_id()
        await self._store_then(
            plugins,
            make_snapshot(account_id, stage="one"),
            make_snapshot(account_id, stage="two", snapshot_id="other", personality={"a": 1}),
            True,
            "equal version and time with new content",
        )

    test_times_compare_as_instants_at_microsecond_precision = _equal_versions_test(_TIME_PAIRS)
    test_offsets_that_cross_a_day_compare_as_instants = _equal_versions_test(_DAY_CROSSING_PAIRS)

    @pytest.mark.anyio
    async def test_equal_instants_in_different_spellings_are_a_replay(
        self, plugins: Plugins
    ) -> None:
        account_id = new_account_id()
        first = make_snapshot(account_id, 3, _SPELLINGS[0], snapshot_id="0")
        check_result(await plugins.store_upsert(first), True, first, "the first spelling")
        for index, spelling in enumerate(_SPELLINGS[1:], 1):
            same = make_snapshot(account_id, 3, spelling, snapshot_id=str(index))
            check_result(
                await plugins.store_upsert(same),
                True,
                same,
                f"{spelling} after {_SPELLINGS[index - 1]}: the same instant, so a replay",
            )
        earlier = make_snapshot(account_id, 3, "2026-03-22T09:29:59.999999+01:00")
        check_result(
            await plugins.store_upsert(earlier),
            False,
            make_snapshot(account_id, 3, _SPELLINGS[-1], snapshot_id=str(len(_SPELLINGS) - 1)),
            "1 µs before the stored instant, spelt with an offset",
        )

    @pytest.mark.anyio
    async def test_stale_rule_holds_at_microsecond_precision_in_every_era(
        self, plugins: Plugins
    ) -> None:
        for year in _YEARS:
            instant = datetime(year, 6, 15, 12, 34, 56, 123456, tzinfo=timezone.utc)
            if year == 1:
                instant = datetime(1, 1, 1, 0, 0, 0, 1, tzinfo=timezone.utc)
            elif year == 9999:
                instant = datetime(9999, 12, 31, 23, 59, 59, 999998, tzinfo=timezone.utc)
            text = format_instant(instant)
            for step, applied in ((-1, False), (0, True), (1, True)):
                other = format_instant(instant + timedelta(microseconds=step))
                await self._equal_versions(plugins, text, other, applied, f" ({step:+d} µs)")

    @pytest.mark.anyio
    async def test_largest_allowed_version_is_stored_and_compared(self, plugins: Plugins) -> None:
        account_id = new_account_id()
        largest = make_snapshot(account_id, MAX_VERSION)
        await self._round_trip(plugins, largest, "version 2**63-1")
        check_result(
            await plugins.store_upsert(make_snapshot(account_id, MAX_VERSION - 1)),
            False,
            largest,
            "version 2**63-2 after 2**63-1",
        )
        check_result(await plugins.store_upsert(largest), True, largest, "version 2**63-1 replayed")
