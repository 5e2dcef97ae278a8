"""Engines: opening one from a URL, running blocking work off the event loop, and retrying.

The store and the accounts plugin accept an :class:`~sqlalchemy.ext.asyncio.AsyncEngine` or a
synchronous :class:`~sqlalchemy.engine.Engine`. Their database work is written once, as
functions of a synchronous :class:`~sqlalchemy.engine.Connection`; :class:`EngineRunner`
runs such a function through ``AsyncConnection.run_sync`` or, for a synchronous engine, in a
worker thread, so a blocking driver never blocks the event loop.
"""

from __future__ import annotations

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
_MAX_DELAY = 0.5
_SQLITE_BUSY, _SQLITE_LOCKED = 5, 6
_MYSQL_TRANSIENT = frozenset({1205, 1213})  # lock wait timeout, deadlock
_POSTGRES_TRANSIENT = frozenset({"40001", "40P01"})  # serialization failure, deadlock


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
    options = {"json_serializer": json_text, **options}
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


def json_text(value: Any) -> str:
    """``value`` as compact JSON text (what :func:`create_store_engine` writes JSON with)."""
    return to_json(value).decode("utf-8")


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

    def on_connect(dbapi_connection: Any, connection_record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
        finally:
            cursor.close()

    event.listen(sync_engine, "connect", on_connect)


class EngineRunner:
    """Runs functions of a synchronous ``Connection`` on an async or a sync engine."""

    def __init__(self, engine: AnyEngine) -> None:
        self.engine = engine

    async def run(self, work: Callable[[Connection], T]) -> T:
        """Check out a connection, call ``work(connection)``, return its result.

        On an async engine ``work`` runs on the event loop through ``run_sync``; on a sync
        engine it runs in a worker thread.
        """
        engine = self.engine
        if isinstance(engine, AsyncEngine):
            async with engine.connect() as connection:
                return await connection.run_sync(work)
        return await anyio.to_thread.run_sync(partial(_run_blocking, engine, work))

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

    Deadlocks and lock-wait timeouts (MySQL 1213/1205), serialization failures and deadlocks
    (PostgreSQL 40001/40P01), a busy or locked SQLite database, a lost insert race, and a
    connection that dropped or was refused.
    """
    if isinstance(error, LostRace | ConnectionError):
        return True
    if not isinstance(error, exc.DBAPIError):
        return False
    if error.connection_invalidated:
        return True
    original = error.orig
    if getattr(original, "sqlstate", None) in _POSTGRES_TRANSIENT:
        return True
    if isinstance(original, sqlite3.OperationalError):
        code = getattr(original, "sqlite_errorcode", None)
        if code is not None:
            return code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED)
        return "locked" in str(original)
    args: tuple[Any, ...] = getattr(original, "args", ())
    return bool(args) and args[0] in _MYSQL_TRANSIENT


async def retry_transient(
    attempt: Callable[[], Awaitable[T]], attempts: int, base_delay: float = 0.01
) -> T:
    """Await ``attempt()``; retry transient failures up to ``attempts`` tries in all.

    Waits a random time of up to ``base_delay * 2**n`` (at most half a second) before the
    n-th retry; the last failure is raised.
    """
    for number in range(1, attempts):
        try:
            return await attempt()
        except Exception as error:
            if not is_transient(error):
                raise
        await anyio.sleep(random.uniform(0, min(base_delay * 2**number, _MAX_DELAY)))
    return await attempt()
