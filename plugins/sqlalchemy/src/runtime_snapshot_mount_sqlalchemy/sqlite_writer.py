"""Group commit on a SQLite file: one writer thread, many upserts per transaction.

SQLite lets one connection write at a time and makes every ``COMMIT`` wait for the disk, so a
store that commits each request alone is bounded by the disk's flush rate. A
:class:`SQLiteWriter` is a dedicated thread with its own standard-library ``sqlite3``
connection. Whenever it is free it takes every upsert waiting at that moment and runs them
in one transaction::

    BEGIN IMMEDIATE                                  -- the write lock, up front
    INSERT ... ON CONFLICT (account_id) DO UPDATE SET ... WHERE <not stale> RETURNING ...
    SELECT ... WHERE account_id = ?                  -- only for one that was ignored
    ...                                              -- one statement (or two) per upsert
    COMMIT

and answers each request only after ``COMMIT`` returned, so an acknowledged write is on disk:
write-ahead logging with ``PRAGMA synchronous=FULL`` (the default) flushes the log at every
commit. ``synchronous="normal"`` flushes it only at checkpoints: faster, and still safe
against a crash of the process, but a power loss or an operating-system crash can undo the
last transactions that were acknowledged.

An ignored upsert reads the later row inside the same transaction, which still holds the
write lock: the row it reports is the one that made it stale, and the read costs no round
trip (SQLite runs in this process).

Failures stay with the snapshot that caused them:

* an error of one statement (a value SQLite refuses, a ``NOT NULL`` column, a full
  database while inserting) undoes only that statement -- SQLite's default ``ABORT``
  conflict resolution -- so that request gets its error and the others commit;
* an error that ends the transaction (SQLite rolls back by itself on some I/O, disk-full or
  memory errors, and a constraint declared ``ON CONFLICT ROLLBACK`` does too), or a failed
  ``COMMIT``: the batch is rolled back and each member is tried again alone, in a
  transaction of its own, so only the ones that fail alone get an error;
* ``BEGIN IMMEDIATE`` itself failing (another process held the write lock past the busy
  timeout) runs no statement: every request of the batch gets that error, which the store
  treats as transient and retries in a later batch.

Errors of ``sqlite3`` are raised wrapped as SQLAlchemy's (``OperationalError`` and friends),
as the store's SQLAlchemy path raises them.

Several processes may each run a writer on one file (``serve --workers N``): ``BEGIN
IMMEDIATE`` takes SQLite's write lock before any statement, waiting for it up to the busy
timeout (30 s), and the conditional statement keeps the greatest snapshot whoever commits
first. The rows are exactly what the SQLAlchemy store writes and reads
(:func:`~runtime_snapshot_mount_sqlalchemy.snapshot_table` on SQLite): the instant as
fixed-width UTC text ``YYYY-MM-DD HH:MM:SS.ffffff``, JSON as compact text written by
pydantic-core, the version as an integer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import anyio
from sqlalchemy import URL, Table, exc, make_url
from sqlalchemy.dialects import sqlite

from runtime_snapshot_mount import Snapshot, UpsertResult, is_stale

from .engines import SQLITE_BUSY_TIMEOUT, LostRace, json_text
from .schema import COLUMNS

__all__ = [
    "SYNCHRONOUS_MODES",
    "SYNCHRONOUS_PARAMETER",
    "SQLiteWriter",
    "writer_for_url",
]

SYNCHRONOUS_PARAMETER = "synchronous"
SYNCHRONOUS_MODES = ("full", "normal")
_DRIVERS = ("pysqlite",)
_COLUMNS = COLUMNS  # the row as the writer binds and reads it: the table's columns
_UTC = timezone.utc

Row = tuple[Any, ...]
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
    ``busy_timeout`` is how long ``BEGIN IMMEDIATE`` waits for another process's write lock.
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
        mode = synchronous.lower()
        if mode not in SYNCHRONOUS_MODES:
            raise ValueError(f"synchronous must be one of {', '.join(SYNCHRONOUS_MODES)}")
        if sqlite3.sqlite_version_info < (3, 35):
            raise RuntimeError(f"SQLite {sqlite3.sqlite_version} lacks RETURNING (3.35+)")
        self.path = os.fspath(path)
        self.synchronous = mode
        self.busy_timeout = busy_timeout
        self.before_commit = before_commit
        self.upsert_sql, self.select_sql = _statements(table)
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
        row = _row(snapshot)  # a value that cannot be encoded fails here, alone
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
                    outcomes = [_wrapped(error, self.upsert_sql) for _ in batch]
                _answer(batch, outcomes)
        finally:
            if connection is not None:
                connection.close()

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None)
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute(f"PRAGMA synchronous={self.synchronous.upper()}")
        except BaseException:
            connection.close()
            raise
        return connection

    def _write(self, connection: sqlite3.Connection, batch: list[_Request]) -> list[Outcome]:
        """One transaction for ``batch``; if it cannot commit, one for each member."""
        try:
            connection.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as error:  # nothing ran: every member meets the same lock
            return [_wrapped(error, "BEGIN IMMEDIATE") for _ in batch]
        try:
            outcomes = [self._upsert_one(connection, request) for request in batch]
            if self.before_commit is not None:
                self.before_commit(connection, [request.snapshot for request in batch])
            connection.execute("COMMIT")
        except BaseException as error:
            _roll_back(connection)
            if len(batch) == 1:
                cause = error.__cause__ if isinstance(error, _TransactionLost) else error
                return [_wrapped(cause or error, "COMMIT")]
            return [self._write(connection, [request])[0] for request in batch]
        return outcomes

    def _upsert_one(self, connection: sqlite3.Connection, request: _Request) -> Outcome:
        """The conditional upsert of one member; its error, if only its statement failed."""
        try:
            if connection.execute(self.upsert_sql, request.row).fetchall():
                return UpsertResult(applied=True, current=request.snapshot)
            found = connection.execute(self.select_sql, request.row[:1]).fetchone()
        except Exception as error:
            if not connection.in_transaction:  # SQLite rolled the whole transaction back
                raise _TransactionLost from error
            return _wrapped(error, self.upsert_sql)  # only this statement was undone
        current = None if found is None else _snapshot(found)
        if current is None or not is_stale(request.snapshot, current):
            return LostRace(f"the snapshot of {request.snapshot.account_id!r} changed")
        return UpsertResult(applied=False, current=current)


def _statements(table: Table | str) -> tuple[str, str]:
    """The conditional upsert and the read of one row, for ``table`` (a name or a Table)."""
    preparer = sqlite.dialect().identifier_preparer
    name = preparer.format_table(table) if isinstance(table, Table) else preparer.quote(table)
    columns = ", ".join(_COLUMNS)
    updates = ", ".join(f"{column} = excluded.{column}" for column in _COLUMNS[1:])
    not_stale = (
        f"{name}.strategy_version < excluded.strategy_version"
        f" OR ({name}.strategy_version = excluded.strategy_version"
        f" AND {name}.strategy_synced_at <= excluded.strategy_synced_at)"
    )
    upsert = (
        f"INSERT INTO {name} ({columns}) VALUES ({', '.join('?' * len(_COLUMNS))})"
        f" ON CONFLICT (account_id) DO UPDATE SET {updates} WHERE {not_stale}"
        " RETURNING strategy_version"
    )
    select = f"SELECT {columns} FROM {name} WHERE account_id = ?"
    return upsert, select


def _row(snapshot: Snapshot) -> Row:
    """``snapshot`` as the SQLAlchemy table stores it on SQLite, in ``_COLUMNS`` order."""
    instant = snapshot.strategy_synced_at.astimezone(_UTC).replace(tzinfo=None)
    skills = snapshot.active_skills
    return (
        snapshot.account_id,
        snapshot.ugc_account_id,
        snapshot.snapshot_id,
        snapshot.strategy_version,
        snapshot.content_hash,
        instant.isoformat(" ", "microseconds"),
        snapshot.stage,
        snapshot.active_action,
        None if skills is None else json_text(list(skills)),
        json_text(snapshot.personality),
    )


def _snapshot(row: Row) -> Snapshot:
    """The snapshot a row (in ``_COLUMNS`` order) stores."""
    account_id, ugc_account_id, snapshot_id, version, content_hash, synced_at = row[:6]
    stage, active_action, skills, personality = row[6:]
    return Snapshot(
        account_id=account_id,
        ugc_account_id=ugc_account_id,
        snapshot_id=snapshot_id,
        strategy_version=int(version),
        content_hash=content_hash,
        strategy_synced_at=datetime.fromisoformat(synced_at).replace(tzinfo=_UTC),
        stage=stage,
        active_action=active_action,
        active_skills=None if skills is None else tuple(json.loads(skills)),
        personality=json.loads(personality),
    )


def _roll_back(connection: sqlite3.Connection) -> None:
    if connection.in_transaction:
        with contextlib.suppress(sqlite3.Error):  # the transaction is gone either way
            connection.execute("ROLLBACK")


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
