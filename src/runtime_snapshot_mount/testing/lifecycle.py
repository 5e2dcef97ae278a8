"""The lifecycle rules: an unknown account reads nothing, a first snapshot is stored whole,
accounts are independent, and ``store_create_tables`` may run again without losing anything."""

from __future__ import annotations

import pytest

from ..extend.plugins import Plugins
from ._support import (
    StoreFixtures,
    check_equal,
    check_result,
    check_snapshot,
    make_snapshot,
    new_account_id,
)


class LifecycleRules(StoreFixtures):
    """An account from nothing to its first snapshot, and tables created more than once."""

    @pytest.mark.anyio
    async def test_unknown_account_reads_none(self, plugins: Plugins) -> None:
        found = await plugins.store_get(new_account_id())
        check_equal(found, None, "store_get of an unknown account")

    @pytest.mark.anyio
    async def test_first_snapshot_is_applied_and_read_back_whole(self, plugins: Plugins) -> None:
        await self._round_trip(plugins, make_snapshot(new_account_id()), "the example snapshot")

    @pytest.mark.anyio
    async def test_accounts_are_independent(self, plugins: Plugins) -> None:
        first, second = make_snapshot(new_account_id(), 9), make_snapshot(new_account_id(), 1)
        check_result(await plugins.store_upsert(first), True, first, "account one")
        check_result(await plugins.store_upsert(second), True, second, "account two")
        check_snapshot(await plugins.store_get(first.account_id), first, "account one after")
        check_snapshot(await plugins.store_get(second.account_id), second, "account two after")

    @pytest.mark.anyio
    async def test_create_tables_is_idempotent_and_keeps_what_is_stored(
        self, plugins: Plugins
    ) -> None:
        await plugins.store_create_tables()
        snapshot = make_snapshot(new_account_id())
        await self._round_trip(plugins, snapshot, "after store_create_tables")
        await plugins.store_create_tables()
        await plugins.store_create_tables()
        check_snapshot(
            await plugins.store_get(snapshot.account_id),
            snapshot,
            "store_get after store_create_tables ran again: it must keep what is stored",
        )
        newer = make_snapshot(snapshot.account_id, 8)
        check_result(await plugins.store_upsert(newer), True, newer, "an upsert afterwards")
        check_snapshot(await plugins.store_get(newer.account_id), newer, "store_get then")
