"""The store: each account's snapshot in its own JSON file, written under an ``flock``.

The check and the write of an upsert happen while holding an exclusive ``flock`` on the
account's lock file. ``flock`` locks belong to an open file, not to a process, so the lock
excludes other threads of this process as well as other processes -- every instance of the
store on the same directory, on this machine. (POSIX ``fcntl`` record locks, ``lockf``,
belong to the process and would not exclude this process's own threads.)

A snapshot is written to a temporary file, flushed to disk, and renamed over the account's
file, so a reader sees the old snapshot or the new one, never half of one, and an upsert
that raises before the rename has written nothing. The blocking file work runs in worker
threads, so the event loop never waits on the disk.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import anyio.to_thread

from runtime_snapshot_mount import Snapshot, UpsertResult, hookimpl, is_stale

__all__ = ["JsonFileStore"]


class JsonFileStore:
    """Keeps the newest snapshot of each account as ``<sha256 of the id>.json`` in
    ``directory``; atomic per account across threads and processes on one machine.

    Nothing touches the disk until the first call; :meth:`store_create_tables` creates the
    directory. Not for network file systems, whose ``flock`` may not lock.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def __repr__(self) -> str:
        return f"JsonFileStore({str(self.directory)!r})"

    def _path(self, account_id: str, suffix: str) -> Path:
        name = hashlib.sha256(account_id.encode("utf-8")).hexdigest()
        return self.directory / f"{name}{suffix}"

    @contextlib.contextmanager
    def _locked(self, account_id: str) -> Iterator[None]:
        with open(self._path(account_id, ".lock"), "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
            yield

    def _read(self, account_id: str) -> Snapshot | None:
        try:
            text = self._path(account_id, ".json").read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        return Snapshot.from_json(json.loads(text))

    def _write(self, snapshot: Snapshot) -> None:
        data = json.dumps(snapshot.to_json(), allow_nan=False).encode("ascii")
        target = self._path(snapshot.account_id, ".json")
        handle, temporary = tempfile.mkstemp(dir=self.directory, suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise

    def _upsert(self, snapshot: Snapshot) -> UpsertResult:
        with self._locked(snapshot.account_id):
            stored = self._read(snapshot.account_id)
            if stored is not None and is_stale(snapshot, stored):
                return UpsertResult(applied=False, current=stored)
            self._write(snapshot)
            return UpsertResult(applied=True, current=snapshot)

    @hookimpl
    async def store_upsert(self, snapshot: Snapshot) -> UpsertResult:
        """Apply ``snapshot`` unless a later one is stored, under the account's lock."""
        return await anyio.to_thread.run_sync(self._upsert, snapshot)

    @hookimpl
    async def store_get(self, account_id: str) -> Snapshot | None:
        """The snapshot stored for ``account_id``, or ``None``."""
        return await anyio.to_thread.run_sync(self._read, account_id)

    @hookimpl
    async def store_create_tables(self) -> None:
        """Create the directory if it is missing; what it holds is kept."""
        await anyio.to_thread.run_sync(partial(self.directory.mkdir, parents=True, exist_ok=True))

    @hookimpl
    def store_close(self) -> None:
        """Nothing to release: every call opens and closes its own files."""


if TYPE_CHECKING:
    from runtime_snapshot_mount.protocols import ManagedStorePlugin

    _check: ManagedStorePlugin = JsonFileStore(".")
