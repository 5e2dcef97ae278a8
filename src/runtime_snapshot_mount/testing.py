"""The conformance kit for storage plugins.

A storage-plugin author subclasses :class:`StoreContract` in their own test suite and gives
it one fixture, ``store``, that returns (or yields) their store plugin, empty or not::

    import pytest
    from runtime_snapshot_mount.testing import StoreContract

    class TestMyStore(StoreContract):
        @pytest.fixture
        def store(self):
            return MyStore(...)

Every test below then runs against that store through the same plugin manager the app uses.
The tests use the ``anyio`` pytest plugin (installed with Starlette); the fixture may be
``async def``. Each test uses fresh account ids, so a store shared between tests is fine.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import anyio
import pytest

from .freshness import is_stale
from .plugins import Plugins
from .snapshot import MAX_VERSION, Snapshot, UpsertResult
from .timestamps import parse_instant

__all__ = ["StoreContract", "make_snapshot", "new_account_id"]

BASE_TIME = "2026-03-22T08:30:00.000Z"
CONCURRENT_WRITERS = 200


def new_account_id() -> str:
    """A fresh account id, so that tests never see each other's snapshots."""
    return f"conformance-{uuid.uuid4().hex}"


def make_snapshot(
    account_id: str, version: int = 7, synced_at: str = BASE_TIME, **fields: Any
) -> Snapshot:
    """A snapshot like the API page's example, with the given version, time and fields."""
    values: dict[str, Any] = {
        "ugc_account_id": "ugc_123",
        "snapshot_id": f"snapshot-{version}-{synced_at}",
        "content_hash": "sha256:abc123",
        "stage": "warmup",
        "active_action": "keyword_warmup",
        "active_skills": ("warmup", "commenting"),
        "personality": {
            "comment_style": "casual, validating",
            "interests": ["healthy recipes", "meal prep"],
        },
    }
    values.update(fields)
    return Snapshot(
        account_id=account_id,
        strategy_version=version,
        strategy_synced_at=parse_instant(synced_at),
        **values,
    )


def _nested(depth: int) -> Any:
    """Objects and arrays in turn, ``depth`` levels deep."""
    value: Any = {"leaf": "🌱"}
    for level in range(depth - 1):
        value = [value, level] if level % 2 == 0 else {"level": level, "child": value}
    return value


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(item) for item in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(item) for item in value), default=0)
    return 0


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


# Equal versions, times that compare as instants: (stored, incoming, incoming applied?).
_TIME_PAIRS = [
    # 10:00+02:00 is 08:00Z: earlier than 09:00Z although it sorts later as a string.
    ("2026-03-22T10:00:00+02:00", "2026-03-22T09:00:00Z", True),
    ("2026-03-22T09:00:00Z", "2026-03-22T10:00:00+02:00", False),
    ("2026-03-22T08:00:00-05:30", "2026-03-22T13:30:00Z", True),
    ("2026-03-22T13:30:00.000001Z", "2026-03-22T08:00:00-05:30", False),
    ("2026-03-22T00:30:00+01:00", "2026-03-21T23:30:00Z", True),
    # digits past the sixth are truncated: the first two pairs are the same instant
    ("2026-03-22T08:30:00.1234569Z", "2026-03-22T08:30:00.123456Z", True),
    ("2026-03-22T08:30:00.123456Z", "2026-03-22T08:30:00.1234561Z", True),
    ("2026-03-22T08:30:00.123457Z", "2026-03-22T08:30:00.1234569Z", False),
    ("2026-03-22T08:30:00.1Z", "2026-03-22T08:30:00.100000Z", True),
    ("2026-03-22T08:30:00.000002Z", "2026-03-22T08:30:00.000001Z", False),
    ("2026-03-22T08:30:00Z", "2026-03-22T08:30:00.000001Z", True),
]


class StoreContract:
    """Every rule a store must keep (SPEC §4). Subclass it and provide ``store``."""

    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"

    @pytest.fixture
    def store(self) -> Any:
        """Override: return (or yield) the store plugin under test."""
        raise NotImplementedError("StoreContract subclasses must define a `store` fixture")

    @pytest.fixture
    def plugins(self, store: Any) -> Iterator[Plugins]:
        yield Plugins([store], entry_points=False)

    # -- reads and simple writes -------------------------------------------------------

    @pytest.mark.anyio
    async def test_unknown_account_reads_none(self, plugins: Plugins) -> None:
        assert await plugins.store_get(new_account_id()) is None

    @pytest.mark.anyio
    async def test_first_snapshot_is_applied_and_read_back_whole(self, plugins: Plugins) -> None:
        snapshot = make_snapshot(new_account_id())
        result = await plugins.store_upsert(snapshot)
        assert result == UpsertResult(applied=True, current=snapshot)
        stored = await plugins.store_get(snapshot.account_id)
        assert stored is not None
        assert stored.to_json() == snapshot.to_json()
        assert stored.strategy_synced_at == snapshot.strategy_synced_at

    @pytest.mark.anyio
    async def test_optional_fields_round_trip_as_null(self, plugins: Plugins) -> None:
        snapshot = make_snapshot(
            new_account_id(), stage=None, active_action=None, active_skills=None, personality={}
        )
        await plugins.store_upsert(snapshot)
        stored = await plugins.store_get(snapshot.account_id)
        assert stored is not None and stored.to_json() == snapshot.to_json()

    @pytest.mark.anyio
    async def test_accounts_are_independent(self, plugins: Plugins) -> None:
        first, second = make_snapshot(new_account_id(), 9), make_snapshot(new_account_id(), 1)
        assert (await plugins.store_upsert(first)).applied
        assert (await plugins.store_upsert(second)).applied
        stored = await plugins.store_get(second.account_id)
        assert stored is not None and stored.strategy_version == 1

    # -- the stale rule ----------------------------------------------------------------

    @pytest.mark.anyio
    @pytest.mark.parametrize(("version", "time", "applied"), _MATRIX)
    async def test_stale_rule_matrix(
        self, plugins: Plugins, version: int, time: str, applied: bool
    ) -> None:
        account_id = new_account_id()
        stored = make_snapshot(account_id, _STORED_VERSION, BASE_TIME)
        await plugins.store_upsert(stored)
        incoming = make_snapshot(account_id, version, _TIMES[time], snapshot_id="incoming")
        result = await plugins.store_upsert(incoming)
        expected = incoming if applied else stored
        assert result.applied is applied
        assert result.current.to_json() == expected.to_json()
        now = await plugins.store_get(account_id)
        assert now is not None and now.to_json() == expected.to_json()

    @pytest.mark.anyio
    async def test_exact_replay_is_applied_again(self, plugins: Plugins) -> None:
        snapshot = make_snapshot(new_account_id())
        assert (await plugins.store_upsert(snapshot)).applied
        assert (await plugins.store_upsert(snapshot)).applied

    @pytest.mark.anyio
    async def test_equal_key_with_new_content_replaces_the_stored_one(
        self, plugins: Plugins
    ) -> None:
        account_id = new_account_id()
        await plugins.store_upsert(make_snapshot(account_id, stage="one"))
        assert (await plugins.store_upsert(make_snapshot(account_id, stage="two"))).applied
        stored = await plugins.store_get(account_id)
        assert stored is not None and stored.stage == "two"

    @pytest.mark.anyio
    @pytest.mark.parametrize(("stored_time", "incoming_time", "applied"), _TIME_PAIRS)
    async def test_times_compare_as_instants_at_microsecond_precision(
        self, plugins: Plugins, stored_time: str, incoming_time: str, applied: bool
    ) -> None:
        account_id = new_account_id()
        await plugins.store_upsert(make_snapshot(account_id, 3, stored_time))
        result = await plugins.store_upsert(make_snapshot(account_id, 3, incoming_time))
        assert result.applied is applied
        stored = await plugins.store_get(account_id)
        assert stored is not None
        assert stored.strategy_synced_at == parse_instant(incoming_time if applied else stored_time)

    @pytest.mark.anyio
    async def test_instants_near_the_ends_of_the_range_round_trip(self, plugins: Plugins) -> None:
        for synced_at in ("0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z"):
            snapshot = make_snapshot(new_account_id(), synced_at=synced_at)
            await plugins.store_upsert(snapshot)
            stored = await plugins.store_get(snapshot.account_id)
            assert stored is not None
            assert stored.strategy_synced_at == snapshot.strategy_synced_at
            assert stored.strategy_synced_at.utcoffset() == timedelta(0)

    # -- values ------------------------------------------------------------------------

    @pytest.mark.anyio
    async def test_largest_allowed_version_is_stored_and_compared(self, plugins: Plugins) -> None:
        account_id = new_account_id()
        assert (await plugins.store_upsert(make_snapshot(account_id, MAX_VERSION))).applied
        stored = await plugins.store_get(account_id)
        assert stored is not None and stored.strategy_version == MAX_VERSION
        assert not (await plugins.store_upsert(make_snapshot(account_id, MAX_VERSION - 1))).applied
        assert (await plugins.store_upsert(make_snapshot(account_id, MAX_VERSION))).applied

    @pytest.mark.anyio
    async def test_personality_round_trips_as_the_same_json_value(self, plugins: Plugins) -> None:
        personality = {
            "comment_style": "casual, validating",
            "unicode": "naïve café 日本語 emoji 😀👍🏽 \u200b \\ \" '",
            "😀 key": ["𝄞", "\u00e9", "\t\n"],
            "big": [MAX_VERSION, -(2**63), 10**30, -(10**30)],
            "numbers": [0, -1, 1.5, -0.25, 1e-7, 12345.678],
            "flags": [True, False, None],
            "empty": [{}, [], ""],
            "deep": _nested(31),
        }
        assert _depth(personality) == 32
        snapshot = make_snapshot(new_account_id(), personality=personality)
        await plugins.store_upsert(snapshot)
        stored = await plugins.store_get(snapshot.account_id)
        assert stored is not None
        assert stored.personality == personality
        assert _types(stored.personality) == _types(personality)

    @pytest.mark.anyio
    async def test_text_fields_keep_unicode_and_length(self, plugins: Plugins) -> None:
        long_text = "é" * 255
        snapshot = make_snapshot(
            new_account_id()[:200] + "-😀",
            ugc_account_id=long_text,
            snapshot_id="𝄞" * 255,
            content_hash="sha256:" + "a" * 248,
            stage="ステージ" * 250,
            active_action="x" * 1000,
            active_skills=tuple(f"skill-{index}-😀" for index in range(256)),
        )
        await plugins.store_upsert(snapshot)
        stored = await plugins.store_get(snapshot.account_id)
        assert stored is not None and stored.to_json() == snapshot.to_json()

    # -- concurrency -------------------------------------------------------------------

    async def _race(self, plugins: Plugins, snapshots: list[Snapshot]) -> list[UpsertResult]:
        results: list[UpsertResult | None] = [None] * len(snapshots)

        async def write(index: int) -> None:
            results[index] = await plugins.store_upsert(snapshots[index])

        async with anyio.create_task_group() as group:
            for index in range(len(snapshots)):
                group.start_soon(write, index)
        assert all(result is not None for result in results)
        return [result for result in results if result is not None]

    async def _check_race(self, plugins: Plugins, snapshots: list[Snapshot]) -> None:
        account_id = snapshots[0].account_id
        results = await self._race(plugins, snapshots)
        greatest = max(snapshot.freshness for snapshot in snapshots)
        stored = await plugins.store_get(account_id)
        assert stored is not None
        assert stored.freshness == greatest
        applied = [s for s, r in zip(snapshots, results, strict=True) if r.applied]
        assert max(snapshot.freshness for snapshot in applied) == stored.freshness
        sent = {snapshot.snapshot_id: snapshot.freshness for snapshot in snapshots}
        for snapshot, result in zip(snapshots, results, strict=True):
            if result.applied:
                assert result.current.freshness == snapshot.freshness
            else:
                # justified: a strictly later snapshot that some request sent was stored
                assert is_stale(snapshot, result.current)
                assert sent[result.current.snapshot_id] == result.current.freshness

    @pytest.mark.anyio
    async def test_concurrent_shuffled_versions_keep_the_greatest(self, plugins: Plugins) -> None:
        account_id = new_account_id()
        versions = list(range(1, CONCURRENT_WRITERS + 1))
        random.shuffle(versions)
        snapshots = [
            make_snapshot(account_id, version, snapshot_id=f"v{version}") for version in versions
        ]
        await self._check_race(plugins, snapshots)

    @pytest.mark.anyio
    async def test_concurrent_equal_versions_keep_the_latest_time(self, plugins: Plugins) -> None:
        account_id = new_account_id()
        start = datetime(2026, 3, 22, 8, 30, tzinfo=timezone.utc)
        offsets = list(range(CONCURRENT_WRITERS))
        random.shuffle(offsets)
        snapshots = []
        for offset in offsets:
            instant = start + timedelta(seconds=offset, microseconds=offset)
            text = instant.astimezone(timezone(timedelta(hours=offset % 5))).isoformat()
            snapshots.append(make_snapshot(account_id, 42, text, snapshot_id=f"t{offset}"))
        await self._check_race(plugins, snapshots)


def _types(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _types(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_types(item) for item in value]
    return type(value).__name__
