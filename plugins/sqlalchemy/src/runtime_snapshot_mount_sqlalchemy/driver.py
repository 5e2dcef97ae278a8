"""Compiled statements on the raw asyncpg connections of an ``AsyncEngine``'s own pool.

SQLAlchemy's generic execution path costs several times the CPU of the one round trip that
each of the store's statements makes. :class:`DriverConnections` runs a statement's
:class:`~.compiled.CompiledStatement` (compiled once per statement) on the asyncpg
connection underneath a pooled connection, through documented API only:

* :meth:`AsyncEngine.raw_connection() <sqlalchemy.ext.asyncio.AsyncEngine.raw_connection>`
  checks a connection out of the engine's pool -- the host's pool, with its size, overflow
  and timeout, or the store's own -- and ``close()`` gives it back. (The same pooled
  connection as :meth:`AsyncConnection.get_raw_connection()
  <sqlalchemy.ext.asyncio.AsyncConnection.get_raw_connection>`, without the
  ``Connection`` object around it, which costs four times the checkout's CPU.)
* its ``driver_connection`` is the asyncpg connection, on which one ``fetchrow`` runs the
  statement in autocommit mode (each statement here is atomic by itself), and which asyncpg
  prepares once per connection (on asyncmy: one ``execute`` in autocommit mode);
* a connection that broke, fell out of step with the server or was cancelled mid-call is
  invalidated (:meth:`PoolProxiedConnection.invalidate()
  <sqlalchemy.pool.PoolProxiedConnection.invalidate>`), so the pool never hands it out
  again, and its failure is raised as a :class:`ConnectionResetError` (transient: the store
  retries it); any other error is the driver's own, which
  :func:`~runtime_snapshot_mount_sqlalchemy.is_transient` judges by its ``sqlstate`` (or
  MySQL error code).

One request's account lookup and upsert share one checkout: a lookup (``fetch(...,
hand_over=True)``) leaves its connection with the running task instead of returning it, and
the next statement that task runs on the same engine takes it over -- the upsert, which follows
the lookup without waiting on anything. If the task waits first (a 404, another plugin's
hook that awaits, a cancellation), the connection goes back to the pool at that moment, from a
callback of the event loop: it is never held across a wait.

These statements bypass SQLAlchemy's execution events: ``echo``, ``before_cursor_execute``
listeners and the like do not see them (connection events -- ``connect``, ``checkout``,
``checkin`` -- still fire). ``SQLAlchemyStore(engine, execution="sqlalchemy")`` keeps every
statement on SQLAlchemy's own path.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from contextvars import ContextVar
from functools import partial
from typing import Any, Literal

import anyio
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql import ClauseElement

from .compiled import CompiledStatement

__all__ = ["DRIVERS", "EXECUTIONS", "DriverConnections", "Execution", "runs_on"]

DRIVERS = ("asyncpg", "asyncmy")
"""The drivers whose connections :class:`DriverConnections` runs statements on (asyncmy only
on an engine that the store made: see :func:`runs_on`)."""
Execution = Literal["driver", "sqlalchemy"]
EXECUTIONS: tuple[Execution, ...] = ("driver", "sqlalchemy")
"""How statements run: on the driver's connections where :func:`runs_on` allows, or always
through SQLAlchemy's ``Connection``."""
_MYSQL_LOST = frozenset({2006, 2013, 2014, 2055})  # gone away, lost, out of sync, lost (SSL)


def runs_on(engine: Any, *, owned: bool = False) -> bool:
    """True when :class:`DriverConnections` can serve ``engine``: an ``AsyncEngine`` on
    asyncpg; a synchronous ``Engine`` on psycopg (in a worker thread); or, when the store
    made it (``owned``), an ``AsyncEngine`` on asyncmy -- whose connections the statements put
    in autocommit mode, and which the store's own engine takes back without a ``ROLLBACK``
    (``pool_reset_on_return=None``): one round trip per statement."""
    driver = engine.dialect.driver
    if isinstance(engine, AsyncEngine):
        return driver == "asyncpg" or (driver == "asyncmy" and owned)
    return isinstance(engine, Engine) and driver == "psycopg"


class DriverConnections:
    """Runs compiled statements on the driver connections of ``engine``'s pool."""

    def __init__(self, engine: AsyncEngine | Engine, *, owned: bool = False) -> None:
        if not runs_on(engine, owned=owned):
            raise ValueError(f"no driver path for {engine.dialect.driver}")
        self.engine = engine
        self._run = _asyncpg_row if engine.dialect.driver == "asyncpg" else _asyncmy_row
        self._compiled: dict[ClauseElement, CompiledStatement] = {}

    async def dialect(self) -> Any:
        """The engine's dialect, initialized by a first connection (its server version)."""
        engine = self.engine
        if isinstance(engine, AsyncEngine):
            raw = await engine.raw_connection()
        else:
            raw = await anyio.to_thread.run_sync(engine.raw_connection, abandon_on_cancel=True)
        raw.close()
        return engine.dialect

    def _compile(self, statement: ClauseElement) -> CompiledStatement:
        compiled = self._compiled.get(statement)
        if compiled is None:  # compiled once, for the dialect that connected
            compiled = CompiledStatement(statement, self.engine.dialect)
            self._compiled[statement] = compiled
        return compiled

    async def fetch(
        self, statement: ClauseElement, values: Mapping[str, Any], *, hand_over: bool = False
    ) -> dict[str, Any] | None:
        """Run ``statement`` with ``values`` and return its first row (``{key: value}``, as
        SQLAlchemy would return it), or ``None``. ``hand_over``: leave the connection to the
        task's next statement on this engine (see the module's notes); on a synchronous
        engine every statement has a checkout of its own."""
        engine = self.engine
        if not isinstance(engine, AsyncEngine):
            fetch = partial(self._fetch_blocking, engine, statement, values)
            return await anyio.to_thread.run_sync(fetch, abandon_on_cancel=True)
        raw = _HandOver.take(engine) or await engine.raw_connection()  # the engine's own pool
        kept = False
        try:
            compiled = self._compile(statement)
            driver = raw.driver_connection
            try:
                record = await self._run(driver, compiled.sql, compiled.parameters(values))
            except BaseException as error:
                if isinstance(error, Exception) and not _lost(driver, error):
                    raise  # the server's answer on a sound connection: is_transient judges it
                if not isinstance(error, Exception):  # cancelled mid-call
                    with anyio.CancelScope(shield=True):
                        await _close(driver)
                    raw.invalidate()
                    raise
                raw.invalidate(error)
                message = f"the database connection was lost: {error}"
                raise ConnectionResetError(message) from error
            kept = hand_over and _HandOver.leave(engine, raw)
        finally:
            if not kept:
                raw.close()  # back to the pool (an invalidated one reconnects at its next use)
        return None if record is None else compiled.row(record)

    def _fetch_blocking(
        self, engine: Engine, statement: ClauseElement, values: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        """:meth:`fetch` on a synchronous engine (psycopg), in a worker thread: the
        statement in autocommit mode (psycopg switches it locally, without a round trip),
        the connection's own mode restored before it goes back to the pool."""
        raw = engine.raw_connection()
        try:
            compiled = self._compile(statement)
            driver = raw.driver_connection
            assert driver is not None
            previous = driver.autocommit
            driver.autocommit = True
            try:
                with driver.cursor() as cursor:
                    cursor.execute(compiled.sql, compiled.named_parameters(values))
                    record = cursor.fetchone()
            except Exception as error:
                if not (driver.closed or driver.broken):
                    raise  # the server's answer on a sound connection: is_transient judges it
                raw.invalidate(error)
                message = f"the database connection was lost: {error}"
                raise ConnectionResetError(message) from error
            if not (driver.closed or driver.broken):
                driver.autocommit = previous
        finally:
            raw.close()
        return None if record is None else compiled.row(record)


class _HandOver:
    """A pooled connection that a task's statement left for the task's next one on the same
    engine; the event loop gives it back to the pool as soon as the task waits first."""

    current: ContextVar[_HandOver | None] = ContextVar("rsm_connection_hand_over", default=None)

    def __init__(self, engine: AsyncEngine, raw: Any) -> None:
        self.engine = engine
        self.raw = raw

    @classmethod
    def leave(cls, engine: AsyncEngine, raw: Any) -> bool:
        """Leave ``raw`` to the running task; False (keep nothing) outside a task."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False
        if asyncio.current_task() is None:
            return False
        left = cls(engine, raw)
        cls.current.set(left)
        loop.call_soon(left.give_back)  # runs once the task waits (or has ended)
        return True

    @classmethod
    def take(cls, engine: AsyncEngine) -> Any:
        """The connection this task left on ``engine``, now the caller's; or ``None``."""
        left = cls.current.get()
        if left is None or left.raw is None or left.engine is not engine:
            return None
        raw, left.raw = left.raw, None
        cls.current.set(None)
        return raw

    def give_back(self) -> None:
        raw, self.raw = self.raw, None
        if raw is not None:
            raw.close()


async def _asyncpg_row(driver: Any, sql: str, parameters: list[Any]) -> Any:
    return await driver.fetchrow(sql, *parameters)


async def _asyncmy_row(driver: Any, sql: str, parameters: list[Any]) -> Any:
    await driver.autocommit(True)  # sends nothing once the connection is in autocommit mode
    async with driver.cursor() as cursor:
        await cursor.execute(sql, parameters)
        return await cursor.fetchone()


async def _close(driver: Any) -> None:
    """Close a driver connection whose statement was cancelled. asyncpg's ``close`` first
    lets the cancel request that it sent for the statement reach the server (terminating
    the connection would drop it, and the statement would still run to its end)."""
    with contextlib.suppress(Exception):
        if hasattr(driver, "is_closed"):
            await driver.close(timeout=2)
        else:
            await driver.ensure_closed()


def _lost(driver: Any, error: Exception) -> bool:
    """True when ``driver``'s connection closed or fell out of step with the server."""
    if isinstance(error, OSError) or type(error).__name__ == "InternalClientError":
        return True  # asyncpg's, for a connection out of step with the server
    args = getattr(error, "args", ())
    if args and type(args[0]) is int and args[0] in _MYSQL_LOST:
        return True
    try:
        closed = driver.is_closed() if hasattr(driver, "is_closed") else not driver.connected
    except Exception:
        return True
    return bool(closed)
