"""The SQLAlchemy store plugin."""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager, nullcontext
from functools import partial
from typing import Any, TypeVar

import anyio
from sqlalchemy import URL, MetaData, Table, inspect, make_url
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.schema import CreateTable

from runtime_snapshot_mount import Snapshot, UpsertResult, hookimpl

from .asyncpg_upsert import AsyncpgUpsert, connect_options
from .engines import AnyEngine, EngineRunner, create_store_engine, retry_transient
from .schema import DEFAULT_TABLE_NAME, check_table, snapshot_from_row, snapshot_table
from .sqlite_writer import SQLiteWriter, writer_for_url
from .upserts import UPSERTS, Upsert, UpsertName, choose_upsert, select_current

__all__ = ["DEFAULT_ATTEMPTS", "DEFAULT_RETRY_DEADLINE", "SQLAlchemyStore"]

DEFAULT_ATTEMPTS = 5
DEFAULT_RETRY_DEADLINE = 2.0
T = TypeVar("T")


class SQLAlchemyStore:
    """Keeps each account's newest snapshot in one table of a SQL database.

    ``engine`` is the host's :class:`~sqlalchemy.ext.asyncio.AsyncEngine` or synchronous
    :class:`~sqlalchemy.engine.Engine` (whose blocking calls then run in worker threads),
    or a URL, from which the store makes its own engine (see :func:`create_store_engine`).
    ``table`` is a table made by :func:`snapshot_table` on the host's ``MetaData``; without
    it the store defines ``table_name`` on a ``MetaData`` of its own. Nothing connects until
    the first call, and tables are only created by :meth:`store_create_tables`.

    Each upsert is atomic against every writer sharing the database. Transient failures
    (see :func:`~runtime_snapshot_mount_sqlalchemy.is_transient`: deadlocks, serialization
    failures, a server restarting, refused or dropped connections) are retried with backoff.
    On a database server a call that failed retries until ``retry_deadline`` seconds (2) have
    passed since that failure -- a retry's connect or wait for a pooled connection is cut off
    then -- and raises (the app answers 500); with ``retry_deadline=None`` it makes
    ``attempts`` tries instead. On SQLite, whose writers already wait for one another (the
    busy timeout), a call makes ``attempts`` tries in all.

    ``upsert`` names the statement (see :data:`~runtime_snapshot_mount_sqlalchemy.upserts.
    UPSERTS`): ``"auto"`` picks the dialect's own; ``"locking"`` (``SELECT ... FOR UPDATE``,
    then ``INSERT`` or ``UPDATE``) works wherever rows can be locked.

    Made from a ``postgresql+asyncpg://`` URL with ``upsert="auto"``, the store also owns an
    asyncpg pool (see :mod:`~runtime_snapshot_mount_sqlalchemy.asyncpg_upsert`), on which
    its upserts and reads run as single asyncpg calls; its engine then serves only
    :meth:`store_create_tables`. A host's engine, of any driver, runs every statement
    through SQLAlchemy, so the host's pool settings, events and logging apply.

    Made from a ``sqlite:///FILE`` URL (the command line's default store), the store's upserts
    go through a :class:`~runtime_snapshot_mount_sqlalchemy.sqlite_writer.SQLiteWriter`: one
    thread that commits every upsert waiting at that moment in one transaction (group commit);
    ``?synchronous=normal`` on the URL trades power-loss durability for speed. A host's own
    engine keeps one transaction per upsert unless ``writer`` is given (a writer on the same
    file and table). Reads always go through the engine.

    Pass the store to ``create_app``; it is deliberately not an entry-point plugin.
    """

    def __init__(
        self,
        engine: AnyEngine | str | URL,
        *,
        table: Table | None = None,
        table_name: str = DEFAULT_TABLE_NAME,
        attempts: int = DEFAULT_ATTEMPTS,
        upsert: UpsertName = "auto",
        writer: SQLiteWriter | None = None,
        retry_deadline: float | None = DEFAULT_RETRY_DEADLINE,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        if upsert not in UPSERTS:
            raise ValueError(f"upsert must be one of {', '.join(UPSERTS)}, not {upsert!r}")
        if retry_deadline is not None and not retry_deadline > 0:  # NaN too
            raise ValueError("retry_deadline must be a positive number of seconds, or None")
        self.table = (
            check_table(table) if table is not None else snapshot_table(MetaData(), table_name)
        )
        self.owns_engine = isinstance(engine, str | URL)
        if isinstance(engine, str | URL) and upsert == "auto":
            engine, url_writer = writer_for_url(engine, self.table)
            writer = writer or url_writer
        self.writer = writer
        self.engine = create_store_engine(engine) if isinstance(engine, str | URL) else engine
        self.attempts = attempts
        self.upsert = upsert
        sqlite = self.engine.dialect.name == "sqlite"
        self.retry_deadline = None if sqlite else retry_deadline
        self._attempts = attempts if self.retry_deadline is None else None
        self._runner = EngineRunner(self.engine)
        self._select = select_current(self.table)
        self._upsert: Upsert | None = None
        # SQLite has one writer at a time: this process's upserts take turns on a lock (a
        # thread lock around the transaction in the worker threads of a sync engine, a task
        # lock for an async one) rather than in SQLite's busy handler, which polls with
        # sleeps of up to 100 ms; writers in other processes still meet the busy timeout.
        asynchronous = isinstance(self.engine, AsyncEngine)
        self._writing_task = anyio.Lock() if sqlite and asynchronous else None
        self._writing_thread: AbstractContextManager[Any] = (
            threading.Lock() if sqlite and not asynchronous else nullcontext()
        )
        self.asyncpg: AsyncpgUpsert | None = None
        if isinstance(engine, str | URL) and upsert == "auto":
            url = make_url(engine)
            if (url.get_backend_name(), url.get_driver_name()) == ("postgresql", "asyncpg"):
                self.asyncpg = AsyncpgUpsert(self.table, connect_options(url))

    def __repr__(self) -> str:
        url = self.engine.url.render_as_string(hide_password=True)
        return f"SQLAlchemyStore({url!r}, table={self.table.name!r})"

    @hookimpl
    async def store_upsert(self, snapshot: Snapshot) -> UpsertResult:
        """Apply ``snapshot`` unless a later one is stored, atomically (see ``upserts``)."""
        if self.writer is not None:
            return await retry_transient(partial(self.writer.upsert, snapshot), self._attempts)
        if self.asyncpg is not None:
            upsert = partial(self.asyncpg.upsert, snapshot)
            return await retry_transient(upsert, self._attempts, deadline=self.retry_deadline)
        work = partial(self._upsert_on, snapshot)
        attempt = partial(self._runner.run, work)
        if self._writing_task is not None:
            attempt = partial(_in_turn, self._writing_task, attempt)
        return await retry_transient(attempt, self._attempts, deadline=self.retry_deadline)

    @hookimpl
    async def store_get(self, account_id: str) -> Snapshot | None:
        """The snapshot stored for ``account_id``, or ``None``."""
        if self.asyncpg is not None:
            read = partial(self.asyncpg.get, account_id)
            return await retry_transient(read, self._attempts, deadline=self.retry_deadline)
        work = partial(self._read_on, account_id)
        attempt = partial(self._runner.run, work)
        return await retry_transient(attempt, self._attempts, deadline=self.retry_deadline)

    @hookimpl
    async def store_create_tables(self) -> None:
        """``CREATE TABLE IF NOT EXISTS`` the snapshot table (and nothing else on its
        ``MetaData``)."""
        await self._runner.run(self._create_table_on)

    @hookimpl
    async def store_close(self) -> None:
        """Stop the SQLite writer (it answers its queued upserts first) and close the
        asyncpg pool, if the store has them, and dispose of the engine if the store made it;
        a host's engine is the host's."""
        if self.writer is not None:
            await self.writer.close()
        if self.asyncpg is not None:
            await self.asyncpg.close()
        if self.owns_engine:
            await self._runner.dispose()

    def _upsert_on(self, snapshot: Snapshot, connection: Connection) -> UpsertResult:
        if self._upsert is None:  # chosen once connected, when the server version is known
            self._upsert = choose_upsert(connection.dialect, self.table, self.upsert)
        with self._writing_thread:
            return self._upsert(connection, snapshot)

    def _read_on(self, account_id: str, connection: Connection) -> Snapshot | None:
        _single_statement(connection)
        key = {"account_id": account_id}
        row = connection.execute(self._select, key).mappings().first()
        return None if row is None else snapshot_from_row(row)

    def _create_table_on(self, connection: Connection) -> None:
        """Create the table unless it exists: looked up first, so that no driver reports the
        server's "already exists" note (PyMySQL before 1.0 turns it into a Python warning);
        ``IF NOT EXISTS`` still covers two processes creating it at once."""
        with connection.begin():
            if inspect(connection).has_table(self.table.name, schema=self.table.schema):
                return
            connection.execute(CreateTable(self.table, if_not_exists=True))


async def _in_turn(lock: anyio.Lock, attempt: Callable[[], Awaitable[T]]) -> T:
    async with lock:
        return await attempt()


def _single_statement(connection: Connection) -> None:
    """Let one ``SELECT`` on PostgreSQL run in autocommit mode: it reads a consistent row by
    itself, and spares the ``BEGIN`` and ``ROLLBACK`` round trips of a transaction."""
    if connection.dialect.name == "postgresql":
        connection.execution_options(isolation_level="AUTOCOMMIT")
