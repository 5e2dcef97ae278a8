"""Where a store's statements run: one interface, one implementation per kind of connection.

An :class:`Executor` applies an upsert and reads a snapshot. The store picks one when it is
made and every hook goes through it:

* :class:`EngineExecutor` -- a SQLAlchemy ``Connection`` from any engine, async or sync,
  any driver: SQLAlchemy's generic execution path, where events and ``echo`` apply, and the
  strategies that take several statements (MySQL's read-back, the locking fallback);
* :class:`DriverExecutor` -- the same single statements, compiled once, on the raw driver
  connections of the engine's pool (asyncpg; psycopg in worker threads; see :mod:`.driver`);
* :class:`WriterExecutor` -- upserts through the SQLite group-commit writer
  (:mod:`.sqlite_writer`), reads through the engine.

All of them run the statements of :mod:`.upserts`, written once, and turn rows into
snapshots with :func:`~.schema.snapshot_from_row`.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager, nullcontext
from functools import partial
from typing import Any, Protocol, TypeVar

import anyio
from sqlalchemy import Table
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from runtime_snapshot_mount import Snapshot, UpsertResult

from .driver import DriverConnections
from .engines import AnyEngine, EngineRunner
from .schema import snapshot_from_row, snapshot_values
from .sqlite_writer import SQLiteWriter
from .upserts import OneStatement, Upsert, UpsertName, choose_upsert, one_statement, select_current

__all__ = ["DriverExecutor", "EngineExecutor", "Executor", "WriterExecutor"]

T = TypeVar("T")


class Executor(Protocol):
    """Runs a store's statements on one kind of connection."""

    async def upsert(self, snapshot: Snapshot) -> UpsertResult:
        """Apply ``snapshot`` unless a later one is stored, atomically."""
        ...

    async def get(self, account_id: str) -> Snapshot | None:
        """The snapshot stored for ``account_id``, or ``None``."""
        ...


class EngineExecutor:
    """Statements on SQLAlchemy ``Connection`` objects of ``engine`` (async or sync)."""

    def __init__(self, engine: AnyEngine, table: Table, upsert: UpsertName = "auto") -> None:
        self.runner = EngineRunner(engine)
        self.table = table
        self.upsert_name = upsert
        self._select = select_current(table)
        self._upsert: Upsert | None = None
        # SQLite has one writer at a time: this process's upserts take turns on a lock (a
        # thread lock around the transaction in the worker threads of a sync engine, a task
        # lock for an async one) rather than in SQLite's busy handler, which polls with
        # sleeps of up to 100 ms; writers in other processes still meet the busy timeout.
        sqlite = engine.dialect.name == "sqlite"
        asynchronous = isinstance(engine, AsyncEngine)
        self._writing_task = anyio.Lock() if sqlite and asynchronous else None
        self._writing_thread: AbstractContextManager[Any] = (
            threading.Lock() if sqlite and not asynchronous else nullcontext()
        )

    async def upsert(self, snapshot: Snapshot) -> UpsertResult:
        attempt = partial(self.runner.run, partial(self._upsert_on, snapshot))
        if self._writing_task is not None:
            return await _in_turn(self._writing_task, attempt)
        return await attempt()

    async def get(self, account_id: str) -> Snapshot | None:
        return await self.runner.run(partial(self._read_on, account_id))

    def _upsert_on(self, snapshot: Snapshot, connection: Connection) -> UpsertResult:
        if self._upsert is None:  # chosen once connected, when the server version is known
            self._upsert = choose_upsert(connection.dialect, self.table, self.upsert_name)
        with self._writing_thread:
            return self._upsert(connection, snapshot)

    def _read_on(self, account_id: str, connection: Connection) -> Snapshot | None:
        if connection.dialect.name == "postgresql":
            # one SELECT reads a consistent row by itself: no BEGIN/ROLLBACK round trips
            connection.execution_options(isolation_level="AUTOCOMMIT")
        row = connection.execute(self._select, {"account_id": account_id}).mappings().first()
        return None if row is None else snapshot_from_row(row)


class DriverExecutor:
    """The single-statement upsert and the read, compiled, on raw driver connections of the
    engine's pool (see :mod:`.driver`).

    The upsert is chosen at the first call, once connected (MariaDB's ``RETURNING`` depends
    on the server's version); a server without a single-statement upsert (MySQL) leaves
    every statement to ``fallback``.
    """

    def __init__(self, engine: AnyEngine, table: Table, *, owned: bool = False) -> None:
        self.connections = DriverConnections(engine, owned=owned)
        self.table = table
        self.fallback = EngineExecutor(engine, table)
        self._select = select_current(table)
        self._chosen: OneStatement | Executor | None = None

    async def upsert(self, snapshot: Snapshot) -> UpsertResult:
        upsert = self._chosen or await self._choose()
        if not isinstance(upsert, OneStatement):
            return await upsert.upsert(snapshot)
        row = await self.connections.fetch(upsert.statement, snapshot_values(snapshot))
        return upsert.answer(snapshot, row)

    async def get(self, account_id: str) -> Snapshot | None:
        chosen = self._chosen or await self._choose()
        if not isinstance(chosen, OneStatement):
            return await chosen.get(account_id)
        row = await self.connections.fetch(self._select, {"account_id": account_id})
        return None if row is None else snapshot_from_row(row)

    async def _choose(self) -> OneStatement | Executor:
        dialect = await self.connections.dialect()
        self._chosen = one_statement(dialect, self.table) or self.fallback
        return self._chosen


class WriterExecutor:
    """Upserts through a :class:`~.sqlite_writer.SQLiteWriter`; reads through ``reader``."""

    def __init__(self, writer: SQLiteWriter, reader: Executor) -> None:
        self.writer = writer
        self.reader = reader

    async def upsert(self, snapshot: Snapshot) -> UpsertResult:
        return await self.writer.upsert(snapshot)

    async def get(self, account_id: str) -> Snapshot | None:
        return await self.reader.get(account_id)


async def _in_turn(lock: anyio.Lock, attempt: Callable[[], Awaitable[T]]) -> T:
    async with lock:
        return await attempt()
