"""Group commit on a SQLite file: one writer thread, many upserts per transaction.

SQLite lets one connection write at a time and makes every ``COMMIT`` wait for the disk, so a
store that commits each request alone is bounded by the disk's flush rate. A
:class:`SQLiteWriter` is a dedicated thread with its own standard-library ``sqlite3``
connection. Whenever it is free it takes every upsert waiting at that moment and runs them
in one transaction::

    BEGIN IMMEDIATE                                  -- sqlite3's, before the first INSERT
    INSERT ... ON CONFLICT (account_id) DO UPDATE SET ... WHERE <not stale> RETURNING ...
    ...                                              -- one statement per upsert
    COMMIT                                           -- sqlite3's connection.commit()

and answers each request only after ``COMMIT`` returned, so an acknowledged write is on disk:
write-ahead logging with ``synchronous`` ``FULL`` (the default) flushes the log at every
commit. ``synchronous="normal"`` flushes it only at checkpoints: faster, and still safe
against a crash of the process, but a power loss or an operating-system crash can undo the
last transactions that were acknowledged.

The upsert is :func:`~runtime_snapshot_mount_sqlalchemy.upserts.on_conflict`'s statement,
compiled once for SQLite (:class:`~runtime_snapshot_mount_sqlalchemy.compiled.
CompiledStatement`), and bound through the column types' own processors: the rows are
exactly what the SQLAlchemy store writes. An ignored upsert reads nothing back. The
connection's settings, which ``sqlite3`` has no call for (write-ahead logging and
``synchronous``), are :class:`~runtime_snapshot_mount_sqlalchemy.pragmas.SQLitePragma`
constructs, compiled the same way. The transaction is ``sqlite3``'s own: opened with
``isolation_level="IMMEDIATE"``, the connection begins one before the first upsert (an
``INSERT``) and takes the write lock there, before the statement runs; ``commit()`` and
``rollback()`` end it. No SQL is written here.

Failures stay with the snapshot that caused them:

* an error of one statement (a value SQLite refuses, a ``NOT NULL`` column, a full
  database while inserting) undoes only that statement -- SQLite's default ``ABORT``
  conflict resolution -- so that request gets its error and the others commit;
* an error that ends the transaction (SQLite rolls back by itself on some I/O, disk-full or
  memory errors, and a constraint declared ``ON CONFLICT ROLLBACK`` does too), or a failed
  ``COMMIT``: the batch is rolled back and each member is tried again alone, in a
  transaction of its own, so only the ones that fail alone get an error;
* the transaction failing to begin because another process held the write lock past the
  busy timeout (the first upsert's ``execute`` raises it, with no transaction open) runs no
  statement: every request of the batch gets that error, which the store treats as
  transient and retries in a later batch. Any other error of that first ``execute`` with no
  transaction open is handled as one that ended the transaction.

Errors of ``sqlite3`` are raised wrapped as SQLAlchemy's (``OperationalError`` and friends),
as the store's SQLAlchemy path raises them.

Several processes may each run a writer on one file (``serve --workers N``): each
transaction takes SQLite's write lock before any statement, waiting for it up to the busy
timeout (30 s), and the conditional statement keeps the greatest snapshot whoever commits
first.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
from sqlalchemy import URL, MetaData, Table, exc, make_url
from sqlalchemy.dialects.sqlite import pysqlite

from runtime_snapshot_mount import Snapshot, UpsertResult

from .compiled import CompiledStatement
from .engines import ENGINE_OPTIONS, SQLITE_BUSY_TIMEOUT, is_transient
from .pragmas import SYNCHRONOUS_MODES, WAL, SQLitePragma
from .schema import snapshot_table, snapshot_values
from .upserts import on_conflict

__all__ = [
    "SYNCHRONOUS_MODES",
    "SYNCHRONOUS_PARAMETER",
    "SQLiteWriter",
    "writer_for_url",
]

SYNCHRONOUS_PARAMETER = "synchronous"
_DRIVERS = ("pysqlite",)

Row = list[Any]
Outcome = UpsertResult | BaseException
BeforeCommit = Callable[[sqlite3.Connection, Sequence[Snapshot]], None]


def writer_for_url(url: str | URL, table: Table) -> tuple[URL, SQLiteWriter | None]:
    """Split a store URL into the URL for the store's engine and, when it names a SQLite
    file on the standard library's driver (``sqlite:///path.db``), a writer for that file.

    The URL may carry ``?synchronous=normal`` (or ``full``, the default), which the writer
    takes and the engine never sees. Any other query parameter (``?uri=true&mode=ro``, say)
    keeps the store on its SQLAlchemy path, without a writer.
    """
    url = make_url(url)
    mode = url.query.get(SYNCHRONOUS_PARAMETER)
    plain = (
        url.get_backend_name() == "sqlite"
        and url.get_driver_name() in _DRIVERS
        and url.database not in (None, "", ":memory:")
        and set(url.query) <= {SYNCHRONOUS_PARAMETER}
    )
    if not plain:
        if mode is not None:
            raise ValueError(f"?{SYNCHRONOUS_PARAMETER}= applies to a plain sqlite:///FILE URL")
        return url, None
    if not isinstance(mode, str | None):
        raise ValueError(f"?{SYNCHRONOUS_PARAMETER}= must be given once")
    engine_url = url.difference_update_query([SYNCHRONOUS_PARAMETER])
    assert url.database is not None  # checked by ``plain``
    writer = SQLiteWriter(os.path.abspath(url.database), table, synchronous=mode or "full")
    return engine_url, writer


@dataclass(eq=False)
class _Request:
    """One upsert waiting for its batch: the snapshot, its row, and where to answer."""

    snapshot: Snapshot
    row: Row
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[UpsertResult] = field(repr=False)


class _TransactionLost(Exception):
    """A batch's transaction ended before ``COMMIT``: its members are to be tried alone."""


class SQLiteWriter:
    """Runs the upserts of one process on one SQLite file, many per transaction.

    ``path`` is the database file; ``table`` the snapshot table (made by
    :func:`~runtime_snapshot_mount_sqlalchemy.snapshot_table`), or its name.
    ``synchronous`` is ``"full"`` (every acknowledged write survives a power loss) or
    ``"normal"`` (it survives a crash of the process, not necessarily a power loss).
    ``busy_timeout`` is how long a transaction waits to begin while another process holds the
    write lock.
    ``before_commit``, if given, is called in the writer's thread with its connection and the
    snapshots of each transaction, just before its ``COMMIT``; whatever it raises fails that
    commit. It is a seam for tests and instrumentation: it may block (a slow disk) or raise
    (a failed commit); statements it runs are part of the transaction.

    The thread and its connection start on the first :meth:`upsert`; :meth:`close` answers
    every request already queued, then stops them. One writer serves any number of event
    loops in its process.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        table: Table | str,
        *,
        synchronous: str = "full",
        busy_timeout: float = SQLITE_BUSY_TIMEOUT,
        before_commit: BeforeCommit | None = None,
    ) -> None:
        durability = SQLitePragma(SYNCHRONOUS_PARAMETER, synchronous)  # one of SYNCHRONOUS_MODES
        if sqlite3.sqlite_version_info < (3, 35):
            raise RuntimeError(f"SQLite {sqlite3.sqlite_version} lacks RETURNING (3.35+)")
        self.path = os.fspath(path)
        self.synchronous = durability.value
        self.busy_timeout = busy_timeout
        self.before_commit = before_commit
        if isinstance(table, str):
            table = snapshot_table(MetaData(), table)
        self.statement = on_conflict(table, "sqlite")
        dialect = pysqlite.dialect(**ENGINE_OPTIONS)  # as create_store_engine's engine binds
        self.compiled = CompiledStatement(self.statement.statement, dialect)
        self._settings = [CompiledStatement(pragma, dialect).sql for pragma in (WAL, durability)]
        self._condition = threading.Condition()
        self._queue: list[_Request] = []
        self._thread: threading.Thread | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"SQLiteWriter({self.path!r}, synchronous={self.synchronous!r})"

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called: further upserts raise."""
        return self._closed

    async def upsert(self, snapshot: Snapshot) -> UpsertResult:
        """Apply ``snapshot`` unless a later one is stored; return once it is committed."""
        row = self.compiled.parameters(snapshot_values(snapshot))  # fails here, alone
        loop = asyncio.get_running_loop()
        request = _Request(snapshot, row, loop, loop.create_future())
        with self._condition:
            if self._closed:
                raise RuntimeError(f"{self!r} is closed")
            self._queue.append(request)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name=f"sqlite-writer {self.path}", daemon=True
                )
                self._thread.start()
            self._condition.notify()
        return await request.future

    async def close(self) -> None:
        """Answer every queued request, then stop the thread and close its connection."""
        with self._condition:
            self._closed = True
            thread = self._thread
            self._condition.notify()
        if thread is not None:
            await anyio.to_thread.run_sync(thread.join)

    # -- the writer's thread -------------------------------------------------------------

    def _run(self) -> None:
        connection: sqlite3.Connection | None = None
        try:
            while True:
                with self._condition:
                    while not self._queue and not self._closed:
                        self._condition.wait()
                    batch, self._queue = self._queue, []
                if not batch:  # closed, and nothing left to answer
                    return
                try:
                    if connection is None:
                        connection = self._connect()
                    outcomes = self._write(connection, batch)
                except BaseException as error:  # a connection that did not open, say
                    outcomes = [_wrapped(error, self.compiled.sql) for _ in batch]
                _answer(batch, outcomes)
        finally:
            if connection is not None:
                connection.close()

    def _connect(self) -> sqlite3.Connection:
        # sqlite3 opens a transaction before the first INSERT (the upsert), IMMEDIATE: the
        # write lock, up front; commit() and rollback() end it.
        connection = sqlite3.connect(
            self.path, timeout=self.busy_timeout, isolation_level="IMMEDIATE"
        )
        try:
            for setting in self._settings:
                connection.execute(setting)
        except BaseException:
            connection.close()
            raise
        return connection

    def _write(self, connection: sqlite3.Connection, batch: list[_Request]) -> list[Outcome]:
        """One transaction for ``batch``; if it cannot commit, one for each member."""
        outcomes: list[Outcome] = []
        try:
            for request in batch:  # the first statement begins the transaction
                outcomes.append(self._upsert_one(connection, request))
            if self.before_commit is not None:
                self.before_commit(connection, [request.snapshot for request in batch])
            connection.commit()
        except BaseException as error:
            _roll_back(connection)
            cause = error.__cause__ if isinstance(error, _TransactionLost) else error
            if not outcomes and cause is not None and _no_write_lock(cause):
                # the transaction did not begin: nothing ran, every member meets the same lock
                return [_wrapped(cause, self.compiled.sql) for _ in batch]
            if len(batch) == 1:
                return [_wrapped(cause or error, "COMMIT")]
            return [self._write(connection, [request])[0] for request in batch]
        return outcomes

    def _upsert_one(self, connection: sqlite3.Connection, request: _Request) -> Outcome:
        """The conditional upsert of one member; its error, if only its statement failed."""
        try:
            found = connection.execute(self.compiled.sql, request.row).fetchone()
        except Exception as error:
            if not connection.in_transaction:  # SQLite rolled the whole transaction back
                raise _TransactionLost from error
            return _wrapped(error, self.compiled.sql)  # only this statement was undone
        row = None if found is None else self.compiled.row(found)
        return self.statement.answer(request.snapshot, row)


def _no_write_lock(error: BaseException) -> bool:
    """True for a busy or locked file: the transaction, begun before the batch's first
    statement, waited past the busy timeout for another connection's write lock."""
    return isinstance(error, sqlite3.OperationalError) and is_transient(error)


def _roll_back(connection: sqlite3.Connection) -> None:
    if connection.in_transaction:
        with contextlib.suppress(sqlite3.Error):  # the transaction is gone either way
            connection.rollback()


def _wrapped(error: BaseException, statement: str) -> BaseException:
    """A ``sqlite3`` error as SQLAlchemy raises it (so the store's retries recognise a busy
    file); anything else unchanged."""
    if isinstance(error, sqlite3.Error):
        # SQLAlchemy's class of the same PEP 249 name (OperationalError, IntegrityError, ...)
        for kind in type(error).__mro__:
            wrapper = getattr(exc, kind.__name__, None)
            if isinstance(wrapper, type) and issubclass(wrapper, exc.DBAPIError):
                return wrapper(statement, None, error)
        return exc.DBAPIError(statement, None, error)
    return error


def _answer(batch: list[_Request], outcomes: list[Outcome]) -> None:
    """Settle each request's future on its own event loop: one wake-up per loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Request, Outcome]]] = {}
    for request, outcome in zip(batch, outcomes, strict=True):
        by_loop.setdefault(request.loop, []).append((request, outcome))
    for loop, settled in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
            loop.call_soon_threadsafe(_settle, settled)


def _settle(settled: list[tuple[_Request, Outcome]]) -> None:
    for request, outcome in settled:
        future = request.future
        if future.done():  # cancelled while it waited
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
