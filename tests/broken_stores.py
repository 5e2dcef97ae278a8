"""Deliberately broken stores, one defect each, for the conformance kit's own tests.

Each keeps snapshots in a dict and passes most of the kit; the kit's tests show that the
kit fails each one on the rule it breaks (``test_kit_catches_broken_stores.py``).
"""

from __future__ import annotations

import random
from typing import Any

import anyio
import anyio.lowlevel

from runtime_snapshot_mount import Snapshot, UpsertResult, hookimpl, is_stale


class DictStore:
    """A correct store: the check and the write with no ``await`` between them."""

    def __init__(self, storage: dict[str, Any] | None = None) -> None:
        self.storage: dict[str, Any] = {} if storage is None else storage

    def read(self, account_id: str) -> Snapshot | None:
        found: Snapshot | None = self.storage.get(account_id)
        return found

    def write(self, snapshot: Snapshot) -> None:
        self.storage[snapshot.account_id] = snapshot

    def stale(self, incoming: Snapshot, stored: Snapshot | None) -> bool:
        return is_stale(incoming, stored)

    @hookimpl
    async def store_upsert(self, snapshot: Snapshot) -> UpsertResult:
        stored = self.read(snapshot.account_id)
        if stored is not None and self.stale(snapshot, stored):
            return UpsertResult(False, stored)
        self.write(snapshot)
        return UpsertResult(True, snapshot)

    @hookimpl
    async def store_get(self, account_id: str) -> Snapshot | None:
        return self.read(account_id)


class EmptyAsNullStore(DictStore):
    """Keeps JSON, but like a key-value store where an empty value means "missing": an empty
    ``stage``, ``active_action`` or ``active_skills`` reads back as null."""

    def write(self, snapshot: Snapshot) -> None:
        data = snapshot.to_json()
        for name in ("stage", "active_action", "active_skills"):
            data[name] = data[name] or None
        self.storage[snapshot.account_id] = data

    def read(self, account_id: str) -> Snapshot | None:
        data = self.storage.get(account_id)
        return None if data is None else Snapshot.from_json(data)


class FloatInstantStore(DictStore):
    """Compares instants as float seconds since 1970: exact to the microsecond around 2026,
    but not near the years 1 or 9999, where a float's step is several microseconds."""

    def stale(self, incoming: Snapshot, stored: Snapshot | None) -> bool:
        if stored is None:
            return False
        return (stored.strategy_version, stored.strategy_synced_at.timestamp()) > (
            incoming.strategy_version,
            incoming.strategy_synced_at.timestamp(),
        )


class InstanceLockStore(DictStore):
    """Reads, awaits (as a network round trip would), then writes, under a lock of this
    instance: atomic inside one instance, not across two on the same storage."""

    def __init__(self, storage: dict[str, Any] | None = None) -> None:
        super().__init__(storage)
        self.lock = anyio.Lock()

    @hookimpl
    async def store_upsert(self, snapshot: Snapshot) -> UpsertResult:
        async with self.lock:
            stored = self.read(snapshot.account_id)
            await anyio.lowlevel.checkpoint()
            if stored is not None and self.stale(snapshot, stored):
                return UpsertResult(False, stored)
            self.write(snapshot)
            return UpsertResult(True, snapshot)


class ReadAwaitWriteStore(DictStore):
    """Reads, awaits once, then writes: no atomicity at all."""

    @hookimpl
    async def store_upsert(self, snapshot: Snapshot) -> UpsertResult:
        stored = self.read(snapshot.account_id)
        await anyio.lowlevel.checkpoint()
        if stored is not None and self.stale(snapshot, stored):
            return UpsertResult(False, stored)
        self.write(snapshot)
        return UpsertResult(True, snapshot)


class JitteryReadAwaitWriteStore(DictStore):
    """Reads, waits a random fraction of a millisecond (a network of varying speed), then
    writes: the writes land in no particular order."""

    @hookimpl
    async def store_upsert(self, snapshot: Snapshot) -> UpsertResult:
        stored = self.read(snapshot.account_id)
        await anyio.sleep(random.random() / 1000)
        if stored is not None and self.stale(snapshot, stored):
            return UpsertResult(False, stored)
        self.write(snapshot)
        return UpsertResult(True, snapshot)


class WipingCreateTablesStore(DictStore):
    """``store_create_tables`` drops and recreates the storage: not idempotent."""

    @hookimpl
    def store_create_tables(self) -> None:
        self.storage.clear()


class CachedReadStore(DictStore):
    """``store_get`` answers from a cache filled on the first read and never refreshed."""

    def __init__(self) -> None:
        super().__init__()
        self.cache: dict[str, Snapshot | None] = {}

    @hookimpl
    async def store_get(self, account_id: str) -> Snapshot | None:
        if account_id not in self.cache:
            self.cache[account_id] = self.read(account_id)
        return self.cache[account_id]


class RaisingOpener:
    """Opens ``broken://`` URLs, and raises for every other URL instead of answering None."""

    @hookimpl
    def store_from_url(self, url: str) -> DictStore:
        if not url.startswith("broken://"):
            raise ValueError(f"not a broken:// URL: {url!r}")
        return DictStore()


class OpenerThatIsAStore(DictStore):
    """An opener that is also a store, so its entry point would add a store to every app."""

    @hookimpl
    def store_from_url(self, url: str) -> DictStore | None:
        return DictStore() if url.startswith("broken://") else None
