"""The in-memory store: the conformance kit, and atomicity under calls from many threads."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor

import pytest

from runtime_snapshot_mount import MemoryStore
from runtime_snapshot_mount.extend.memory import MemoryStoreOpener
from runtime_snapshot_mount.testing import (
    OpenerContract,
    StoreContract,
    make_snapshot,
    new_account_id,
)


class TestMemoryStore(StoreContract):
    @pytest.fixture
    def store(self) -> MemoryStore:
        return MemoryStore()

    @pytest.fixture
    def another_store(self, store: MemoryStore) -> MemoryStore:
        """The memory store's storage is the instance itself: no other instance shares it."""
        return store


class TestMemoryStoreOpener(OpenerContract):
    @pytest.fixture
    def opener(self) -> MemoryStoreOpener:
        return MemoryStoreOpener()

    @pytest.fixture
    def opener_url(self) -> str:
        return "memory://"


def test_hook_calls_from_many_threads_keep_the_greatest_snapshot() -> None:
    store = MemoryStore()
    account_id = new_account_id()
    versions = list(range(1, 2001))
    random.shuffle(versions)
    snapshots = [make_snapshot(account_id, v, snapshot_id=str(v)) for v in versions]
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(store.store_upsert, snapshots))
    stored = store.store_get(account_id)
    assert stored is not None and stored.strategy_version == 2000
    for snapshot, result in zip(snapshots, results, strict=True):
        if not result.applied:
            assert result.current.freshness > snapshot.freshness
