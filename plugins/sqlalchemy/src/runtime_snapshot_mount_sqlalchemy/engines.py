"""Engines: opening one from a URL, running blocking work off the event loop, and retrying.

The store and the accounts plugin accept an :class:`~sqlalchemy.ext.asyncio.AsyncEngine` or a
synchronous :class:`~sqlalchemy.engine.Engine`. Their database work is written once, as
functions of a synchronous :class:`~sqlalchemy.engine.Connection`; :class:`EngineRunner`
runs such a function through ``AsyncConnection.run_sync`` or, for a synchronous engine, in a
worker thread, so a blocking driver never blocks the event loop.
"""

from __future__ import annotations

import math
import random
import sqlite3
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, TypeVar

import anyio
from pydantic_core import to_json
from sqlalchemy import URL, event, exc, make_url
from sqlalchemy.engine import Connection, Engine, create_engine
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from .compiled import CompiledStatement
from .pragmas import WAL

__all__ = [
    "AnyEngine",
    "EngineRunner",
    "LostRace",
    "create_store_engine",
    "is_transient",
    "retry_transient",
]

T = TypeVar("T")
AnyEngine = AsyncEngine | Engine

SQLITE_BUSY_TIMEOUT = 30.0
POOL_SIZE = 20
MAX_OVERFLOW = 0
_MAX_DELAY = 0.25
_SQLITE_BUSY, _SQLITE_LOCKED = 5, 6
_MYSQL_TRANSIENT = frozenset(
    {
        1205,  # lock wait timeout
        1213,  # deadlock
        1053,  # server shutdown in progress
        1927,  # connection was killed (MariaDB)
        2002,  # can't connect through the socket
        2003,  # can't connect to the server (refused, unreachable)
        2006,  # server has gone away
        2013,  # lost connection during query
    }
)
_POSTGRES_TRANSIENT = frozenset(
    {
        "40001",  # serialization failure
        "40P01",  # deadlock
        "57P01",  # admin shutdown: the server is stopping (or the session was terminated)
        "57P02",  # crash shutdown: another server process crashed
        "57P03",  # cannot connect now: the server is starting up or shutting down
    }
)
_POSTGRES_CONNECTION = "08"  # the class of connection exceptions (08000, 08003, 08006, ...)


def json_text(value: Any) -> str:
    """``value`` as compact JSON text (what :func:`create_store_engine` writes JSON with)."""
    return to_json(value).decode("utf-8")


ENGINE_OPTIONS: dict[str, Any] = {"json_serializer": json_text}
"""What :func:`create_store_engine` gives every engine (and its dialect) unless told otherwise."""


class LostRace(Exception):
    """A concurrent writer got in between two steps of an upsert; trying again will do."""


def create_store_engine(url: str | URL, **options: Any) -> AnyEngine:
    """An engine for ``url``, asynchronous when its driver is, set up for the store.

    Does not connect. SQLite gets a 30-second busy timeout and write-ahead logging (so that
    readers never wait for writers), and an in-memory database one shared connection;
    MySQL/MariaDB get ``charset=utf8mb4`` unless the URL names a charset. A database server's
    engine keeps a fixed pool of ``POOL_SIZE`` (20) connections, ``MAX_OVERFLOW`` (0) more: a
    request that finds all of them busy waits for one (``pool_timeout``, 30 s). Overflow
    connections are closed whenever they come back while the pool is full, so under a few
    dozen concurrent requests SQLAlchemy's default 5 + 10 (and even 20 + 10) opened a new
    server session every few requests. Pass ``pool_size``, ``max_overflow`` or a
    ``poolclass`` to choose otherwise (with several worker processes, mind the server's
    ``max_connections``). JSON columns are written by pydantic-core's serializer (compact
    UTF-8 text, several times faster than :func:`json.dumps`) unless ``json_serializer`` is
    given. ``options`` go to :func:`~sqlalchemy.create_engine`.
    """
    url = make_url(url)
    options = {**ENGINE_OPTIONS, **options}
    backend = url.get_backend_name()
    if backend == "sqlite":
        options = _sqlite_options(url, options)
    else:
        options = _server_pool_options(options)
        if backend in ("mysql", "mariadb") and "charset" not in url.query:
            url = url.update_query_dict({"charset": "utf8mb4"})
    try:
        engine: AnyEngine = create_async_engine(url, **options)
    except exc.InvalidRequestError:  # the driver is not an asyncio one
        engine = create_engine(url, **options)
    if backend == "sqlite" and not _is_memory(url):
        _use_wal(engine)
    return engine


def _server_pool_options(options: dict[str, Any]) -> dict[str, Any]:
    if "poolclass" in options or "pool" in options:
        return options
    return {"pool_size": POOL_SIZE, "max_overflow": MAX_OVERFLOW, **options}


def _is_memory(url: URL) -> bool:
    return url.database in (None, "", ":memory:") or url.query.get("mode") == "memory"


def _sqlite_options(url: URL, options: dict[str, Any]) -> dict[str, Any]:
    connect_args = {"timeout": SQLITE_BUSY_TIMEOUT, **options.get("connect_args", {})}
    options = {**options, "connect_args": connect_args}
    if _is_memory(url):
        connect_args.setdefault("check_same_thread", False)
        options.setdefault("poolclass", StaticPool)
    return options


def _use_wal(engine: AnyEngine) -> None:
    sync_engine = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
    wal = CompiledStatement(WAL, sync_engine.dialect).sql

    def on_connect(dbapi_connection: Any, connection_record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(wal)
        finally:
            cursor.close()

    event.listen(sync_engine, "connect", on_connect)


class EngineRunner:
    """Runs functions of a synchronous ``Connection`` on an async or a sync engine."""

    def __init__(self, engine: AnyEngine) -> None:
        self.engine = engine
        self._abandon_on_cancel = engine.dialect.name != "sqlite"

    async def run(self, work: Callable[[Connection], T]) -> T:
        """Check out a connection, call ``work(connection)``, return its result.

        On an async engine ``work`` runs on the event loop through ``run_sync``; on a sync
        engine it runs in a worker thread. Cancelled (by a retry deadline, say), a database
        server's thread is left to finish by itself -- a blocking driver cannot be
        interrupted, and a connect that hangs must not hold the caller -- while SQLite's is
        waited for.
        """
        engine = self.engine
        if isinstance(engine, AsyncEngine):
            async with engine.connect() as connection:
                return await connection.run_sync(work)
        call = partial(_run_blocking, engine, work)
        return await anyio.to_thread.run_sync(call, abandon_on_cancel=self._abandon_on_cancel)

    async def dispose(self) -> None:
        """Close the engine's pooled connections."""
        engine = self.engine
        if isinstance(engine, AsyncEngine):
            await engine.dispose()
        else:
            await anyio.to_thread.run_sync(engine.dispose)


def _run_blocking(engine: Engine, work: Callable[[Connection], T]) -> T:
    with engine.connect() as connection:
        return work(connection)


def is_transient(error: BaseException) -> bool:
    """True for failures that the same request may not meet again a moment later.

    Contention: deadlocks and lock-wait timeouts (MySQL 1213/1205), serialization failures
    and deadlocks (PostgreSQL 40001/40P01), a busy or locked SQLite database, a lost insert
    race. And the database being away: a connection refused, reset, timed out or closed (any
    :class:`OSError`, or one SQLAlchemy found invalidated), a PostgreSQL server shutting down,
    crashed or starting up (57P01, 57P02, 57P03) or any connection exception (class 08), and
    a MySQL/MariaDB server that cannot be reached or went away (2002, 2003, 2006, 2013),
    killed the connection (1927) or is shutting down (1053).

    ``error`` is a SQLAlchemy :class:`~sqlalchemy.exc.DBAPIError` wrapping the driver's
    exception, or the driver's exception itself (asyncpg's, for one, when it is used
    directly).
    """
    if isinstance(error, LostRace | OSError):  # OSError: refused, reset, timed out, ...
        return True
    if isinstance(error, exc.DBAPIError):
        if error.connection_invalidated:
            return True
        return _is_transient_driver_error(error if error.orig is None else error.orig)
    return _is_transient_driver_error(error)


def _is_transient_driver_error(error: BaseException) -> bool:
    """:func:`is_transient` for a driver's own exception."""
    if isinstance(error, OSError):
        return True
    if isinstance(error, sqlite3.OperationalError):
        code = getattr(error, "sqlite_errorcode", None)
        if code is not None:
            return code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED)
        return "locked" in str(error)
    args: tuple[Any, ...] = getattr(error, "args", ())
    if args and type(args[0]) is int:  # MySQL's error code (pymysql, asyncmy)
        return args[0] in _MYSQL_TRANSIENT
    sqlstate = getattr(error, "sqlstate", None)
    if isinstance(sqlstate, str):  # PostgreSQL's (psycopg, asyncpg, SQLAlchemy's asyncpg)
        return sqlstate in _POSTGRES_TRANSIENT or sqlstate.startswith(_POSTGRES_CONNECTION)
    if hasattr(error, "sqlstate") and _is_operational(error):  # psycopg's, sent by no server:
        return True  # libpq's own, on a connection that failed (refused, unreachable) or was lost
    # asyncpg's InterfaceError on a connection that the server closed carries no SQLSTATE;
    # SQLAlchemy's asyncpg dialect recognises it by the same words.
    return "asyncpg" in type(error).__module__ and "connection is closed" in str(error)


def _is_operational(error: BaseException) -> bool:
    """An ``OperationalError`` of the driver's own (PEP 249's name for failures such as a
    connection lost)."""
    return any(kind.__name__ == "OperationalError" for kind in type(error).__mro__)


async def retry_transient(
    attempt: Callable[[], Awaitable[T]],
    attempts: int | None = None,
    base_delay: float = 0.01,
    *,
    deadline: float | None = None,
) -> T:
    """Await ``attempt()``; retry its transient failures (:func:`is_transient`) with backoff.

    Stops at ``attempts`` tries in all, or once ``deadline`` seconds have passed since the
    first failure, whichever comes first (at least one of the two must be given), and raises
    the last failure. The deadline bounds everything after that failure: the waits and the
    retries, a connect that hangs or a wait for a pooled connection included -- a retry still
    running at the deadline is cancelled (its transaction rolled back, never committed by it)
    and :class:`TimeoutError` raised from the last failure. The first attempt is not cut: a
    database that answers slowly under load (lock waits, a busy pool) is not failing, and
    runs under the pool's and the driver's own timeouts.

    Waits a random time of up to ``base_delay * 2**n`` (at most a quarter of a second, and
    never past the deadline) before the n-th retry.
    """
    if attempts is None and deadline is None:
        raise ValueError("retry_transient needs attempts, a deadline, or both")
    if attempts is not None and attempts < 1:
        raise ValueError("attempts must be at least 1")
    try:
        return await attempt()
    except Exception as error:
        if not is_transient(error) or attempts == 1:
            raise
        failures = [error]
    end = math.inf if deadline is None else anyio.current_time() + deadline
    if deadline is None:
        return await _retry(attempt, attempts, base_delay, end, failures)
    with anyio.CancelScope(deadline=end):
        return await _retry(attempt, attempts, base_delay, end, failures)
    raise TimeoutError(f"the database did not answer within {deadline:g} s") from failures[-1]


async def _retry(
    attempt: Callable[[], Awaitable[T]],
    attempts: int | None,
    base_delay: float,
    deadline: float,
    failures: list[Exception],
) -> T:
    """The retries of :func:`retry_transient` after a first failure; ``deadline`` is on
    anyio's clock; ``failures`` holds the last failure."""
    number = 1
    while True:
        delay = random.uniform(0, min(base_delay * 2**number, _MAX_DELAY))
        await anyio.sleep(min(delay, max(0.0, deadline - anyio.current_time())))
        number += 1
        try:
            return await attempt()
        except Exception as error:
            if not is_transient(error) or number == attempts:
                raise
            failures[:] = [error]
            if anyio.current_time() >= deadline:
                raise
