"""The concurrency rules: whatever order concurrent upserts of one account land in, the
greatest snapshot sent is the one stored, inside one instance of the store and across two on
the same storage (the ``another_store`` fixture); and what one instance writes, the other
reads and compares alike."""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone

import anyio
import pytest

from ..extend.plugins import Plugins
from ..request.freshness import is_stale
from ..request.snapshot import Snapshot, UpsertResult
from ..request.timestamps import format_instant, parse_instant
from ._support import (
    BASE_TIME,
    StoreFixtures,
    check,
    check_result,
    check_snapshot,
    make_snapshot,
    new_account_id,
    show,
)

CONCURRENT_WRITERS = 200
"""Writers racing on one account in the shuffled-order tests."""
CONTENTION_ROUNDS = 64
"""Accounts raced at once in the contention tests, each by 4 writers started greatest first."""


class ConcurrencyRules(StoreFixtures):
    """Concurrent writers keep the greatest snapshot, in one instance and across two."""

    async def _race(self, writes: Sequence[tuple[Plugins, Snapshot]]) -> list[UpsertResult]:
        """Start every write in order, all at once, and wait for them all."""
        results: list[UpsertResult | None] = [None] * len(writes)

        async def write(index: int) -> None:
            plugins, snapshot = writes[index]
            results[index] = await plugins.store_upsert(snapshot)

        async with anyio.create_task_group() as group:
            for index in range(len(writes)):
                group.start_soon(write, index)
        return [result for result in results if result is not None]

    async def _check_race(
        self, writes: Sequence[tuple[Plugins, Snapshot]], readers: Sequence[Plugins]
    ) -> None:
        """Race ``writes``; then, per account: the greatest snapshot sent is stored and read by
        every reader, no lesser one was told applied after it, and every ignored answer names
        a strictly later snapshot that some writer sent."""
        __tracebackhide__ = True
        results = await self._race(writes)
        sent = {(s.account_id, s.snapshot_id): s for _, s in writes}
        by_account: dict[str, list[tuple[Snapshot, UpsertResult]]] = {}
        for (_, snapshot), result in zip(writes, results, strict=True):
            by_account.setdefault(snapshot.account_id, []).append((snapshot, result))
        for account_id, outcomes in by_account.items():
            greatest = max((snapshot for snapshot, _ in outcomes), key=lambda s: s.freshness)
            answers = ", ".join(
                f"{s.snapshot_id}:{'applied' if r.applied else 'ignored'}" for s, r in outcomes
            )
            what = (
                f"account {account_id}: {len(outcomes)} concurrent writers ({answers}, in the "
                "order they started); the greatest snapshot sent must be the one stored"
            )
            for reader in readers:
                check_snapshot(await reader.store_get(account_id), greatest, what)
            for snapshot, result in outcomes:
                if result.applied:
                    check_snapshot(
                        result.current, snapshot, f"{what}; {snapshot.snapshot_id} applied"
                    )
                    continue
                current = result.current
                justified = current is None or (  # None: the store did not read it back
                    isinstance(current, Snapshot)
                    and is_stale(snapshot, current)
                    and (current.account_id, current.snapshot_id) in sent
                    and sent[(current.account_id, current.snapshot_id)].freshness
                    == current.freshness
                )
                check(
                    justified,
                    f"{what}; {snapshot.snapshot_id} was ignored, but its current "
                    f"{show(current)} is not a strictly later snapshot that a writer sent",
                )

    def _contention_writes(
        self, instances: Sequence[Plugins]
    ) -> tuple[list[tuple[Plugins, Snapshot]], list[Snapshot]]:
        """The seeds and the racing writes of :data:`CONTENTION_ROUNDS` accounts: four
        writers each, started greatest first and spread over ``instances`` in turn. Between
        a plain read and its write, every writer of an account reads the seed, so whichever
        writes last -- the least, when the writes land in the order they started -- wins: a
        store that is not atomic loses the greatest snapshot."""
        seeds, writes = [], []
        start = datetime(2026, 3, 22, 8, 30, tzinfo=timezone.utc)
        for round_ in range(CONTENTION_ROUNDS):
            account_id = new_account_id()
            if round_ % 2 == 0:  # versions 5, 4, 3, 2 over version 1
                seed = make_snapshot(account_id, 1, snapshot_id="seed")
                racers = [make_snapshot(account_id, v, snapshot_id=f"v{v}") for v in (5, 4, 3, 2)]
            else:  # equal versions, times 4, 3, 2, 1 µs after the seed's
                seed = make_snapshot(account_id, 9, format_instant(start), snapshot_id="seed")
                racers = [
                    make_snapshot(
                        account_id,
                        9,
                        format_instant(start + timedelta(microseconds=us)),
                        snapshot_id=f"t+{us}us",
                    )
                    for us in (4, 3, 2, 1)
                ]
            seeds.append(seed)
            for index, snapshot in enumerate(racers):
                writes.append((instances[(index + round_) % len(instances)], snapshot))
        return writes, seeds

    async def _contend(self, instances: Sequence[Plugins]) -> None:
        __tracebackhide__ = True
        writes, seeds = self._contention_writes(instances)
        for index, seed in enumerate(seeds):
            plugins = instances[index % len(instances)]
            check_result(await plugins.store_upsert(seed), True, seed, "seeding an account")
        await self._check_race(writes, instances)

    @pytest.mark.anyio
    async def test_racing_writers_never_lose_the_greater_snapshot(self, plugins: Plugins) -> None:
        await self._contend([plugins])

    @pytest.mark.anyio
    async def test_concurrent_shuffled_versions_keep_the_greatest(self, plugins: Plugins) -> None:
        account_id = new_account_id()
        versions = list(range(1, CONCURRENT_WRITERS + 1))
        random.shuffle(versions)
        snapshots = [
            make_snapshot(account_id, version, snapshot_id=f"v{version}") for version in versions
        ]
        await self._check_race([(plugins, s) for s in snapshots], [plugins])

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
        await self._check_race([(plugins, s) for s in snapshots], [plugins])

    # -- across instances (the `another_store` fixture) ----------------------------------------

    @pytest.mark.anyio
    async def test_another_instance_reads_and_obeys_what_this_one_wrote(
        self, plugins: Plugins, other_plugins: Plugins
    ) -> None:
        account_id = new_account_id()
        written = make_snapshot(account_id, 5, snapshot_id="written-by-store")
        check_result(await plugins.store_upsert(written), True, written, "upsert via `store`")
        check_snapshot(
            await other_plugins.store_get(account_id), written, "store_get via `another_store`"
        )
        stale = make_snapshot(account_id, 4, snapshot_id="stale-via-another")
        check_result(
            await other_plugins.store_upsert(stale),
            False,
            written,
            "a lesser version via `another_store` after version 5 via `store`",
        )
        newer = make_snapshot(account_id, 6, snapshot_id="newer-via-another")
        check_result(
            await other_plugins.store_upsert(newer), True, newer, "version 6 via `another_store`"
        )
        check_result(
            await plugins.store_upsert(written),
            False,
            newer,
            "version 5 via `store` after version 6 via `another_store`",
        )
        check_snapshot(await plugins.store_get(account_id), newer, "store_get via `store`")

    @pytest.mark.anyio
    async def test_another_instance_reads_and_compares_instants_as_written(
        self, plugins: Plugins, other_plugins: Plugins
    ) -> None:
        for text in (
            "0001-01-01T00:00:00Z",
            "0001-01-01T00:00:00.000001Z",
            "1969-12-31T23:59:59.999999Z",
            BASE_TIME,
            "9999-12-31T23:59:59.999998Z",
            "9999-12-31T23:59:59.999999Z",
        ):
            account_id = new_account_id()
            written = make_snapshot(account_id, 3, text, snapshot_id="written-via-store")
            check_result(await plugins.store_upsert(written), True, written, f"{text} via `store`")
            check_snapshot(
                await other_plugins.store_get(account_id),
                written,
                f"{text} written via `store`, read via `another_store`",
            )
            for instance, via, after in (
                (other_plugins, "another_store", "store"),
                (plugins, "store", "another_store"),
            ):
                again = make_snapshot(account_id, 3, text, snapshot_id=f"replayed-via-{via}")
                check_result(
                    await instance.store_upsert(again),
                    True,
                    again,
                    f"{text} via `{via}` after the same instant via `{after}`: a replay",
                )
            if text.startswith("0001-01-01T00:00:00Z"):
                continue
            earlier = format_instant(parse_instant(text) - timedelta(microseconds=1))
            check_result(
                await other_plugins.store_upsert(make_snapshot(account_id, 3, earlier)),
                False,
                again,
                f"{earlier} via `another_store` after {text} via `store`",
            )

    @pytest.mark.anyio
    async def test_racing_writers_over_two_instances_never_lose_the_greater_snapshot(
        self, plugins: Plugins, other_plugins: Plugins
    ) -> None:
        await self._contend([plugins, other_plugins])

    @pytest.mark.anyio
    async def test_concurrent_writers_over_two_instances_keep_the_greatest(
        self, plugins: Plugins, other_plugins: Plugins
    ) -> None:
        account_id = new_account_id()
        versions = list(range(1, CONCURRENT_WRITERS + 1))
        random.shuffle(versions)
        instances = [plugins, other_plugins]
        writes = [
            (instances[index % 2], make_snapshot(account_id, version, snapshot_id=f"v{version}"))
            for index, version in enumerate(versions)
        ]
        await self._check_race(writes, instances)
