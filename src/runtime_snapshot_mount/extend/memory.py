"""The built-in in-memory store: one dict, one lock, atomic per account."""

from __future__ import annotations

import threading

from ..request.freshness import is_stale
from ..request.snapshot import Snapshot, UpsertResult
from .hookspecs import hookimpl

__all__ = ["MemoryStore", "MemoryStoreOpener"]


class MemoryStore:
    """Keeps the newest snapshot of each account in this process's memory.

    The check and the write happen under one lock, so the store is atomic per account for
    coroutines on the event loop and for hook calls from other threads alike. Nothing is
    shared between processes and nothing survives a restart.
    """

    def __init__(self) -> None:
        self._snapshots: dict[str, Snapshot] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._snapshots)

    def contents(self) -> dict[str, Snapshot]:
        """A copy of what is stored now: each account id's snapshot."""
        with self._lock:
            return dict(self._snapshots)

    @hookimpl
    def store_upsert(self, snapshot: Snapshot) -> UpsertResult:
        with self._lock:
            stored = self._snapshots.get(snapshot.account_id)
            if stored is not None and is_stale(snapshot, stored):
                return UpsertResult(False, stored)
            self._snapshots[snapshot.account_id] = snapshot
            return UpsertResult(True, snapshot)

    @hookimpl
    def store_get(self, account_id: str) -> Snapshot | None:
        return self._snapshots.get(account_id)


class MemoryStoreOpener:
    """Opens ``memory://`` for the command line."""

    @hookimpl(trylast=True)
    def store_from_url(self, url: str) -> MemoryStore | None:
        return MemoryStore() if url == "memory://" else None
