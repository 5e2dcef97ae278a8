"""The PostgreSQL upsert on asyncpg as one driver call: SQLAlchemy's statement, not its machinery.

On an :class:`~sqlalchemy.ext.asyncio.AsyncEngine` whose driver is asyncpg, running the upsert
through ``AsyncConnection.run_sync`` and ``Connection.execute`` costs about three times the
CPU of the one round trip it makes. :class:`AsyncpgUpsert` runs the very statement that
:class:`~runtime_snapshot_mount_sqlalchemy.upserts.OnConflictUpsert` built, compiled once for
the engine's dialect (``INSERT ... VALUES ($1::VARCHAR, ...) ON CONFLICT ... RETURNING``),
with one ``fetchrow`` on the asyncpg connection, which asyncpg prepares once per connection:

* the connection comes from the engine's own pool, as ``Engine.raw_connection`` takes it (the
  host's pool size, overflow, timeout, pre-ping and recycle settings and its pool events all
  apply), in one greenlet per request that checks it out, awaits the call and checks it in;
* the parameters are what SQLAlchemy would bind: each column type's bind processor for this
  dialect (the instant as an aware UTC ``datetime``, JSON through the dialect's serializer,
  ``json.dumps`` unless the engine names another), in the compiled statement's order;
* no transaction: a single statement commits by itself, as the normal path's autocommit does;
* a failure is raised as SQLAlchemy would raise it -- the driver's error translated by the
  dialect and wrapped in :class:`sqlalchemy.exc.DBAPIError` -- so ``is_transient`` judges it
  alike; a connection that closed under the call invalidates the pool's connections of its
  generation (as ``Connection`` does on a disconnect), one interrupted mid-call (cancelled)
  is discarded, and only a connection that is still sound goes back to the pool.

On an engine the store made itself (from a URL), where nothing else draws on the pool, the
store goes one step further: it keeps the pool connections its upserts use checked out
between upserts (see :class:`Leases`), so that an upsert costs neither a pool checkout and
checkin nor a greenlet; they go back to the pool once unused for a second, after a minute in
use, once the pool has been invalidated, and when the store closes. A few of the pool's
connections are always left to the store's other statements. On a host's engine, which the
host's own code shares, every upsert checks its connection out and back in.

The store takes this path only while nothing watches the engine's statements -- no
``before_cursor_execute``/``after_cursor_execute``/``before_execute``/``after_execute``/
``handle_error`` listeners, no statement logging (``echo``), no ``schema_translate_map`` --
so instrumentation sees every statement; otherwise, and on every other driver, it runs the
normal path.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any, NoReturn

from sqlalchemy import Table, exc
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import Pool, PoolProxiedConnection, QueuePool
from sqlalchemy.util import greenlet_spawn

from runtime_snapshot_mount import Snapshot

from .schema import COLUMNS, snapshot_values
from .upserts import OnConflictUpsert

try:
    from sqlalchemy.util import await_
except ImportError:  # pragma: no cover - SQLAlchemy 2.0 calls it await_only
    from sqlalchemy.util import await_only as await_

__all__ = ["AsyncpgUpsert", "Leases", "asyncpg_upsert"]

_Processor = Callable[[Any], Any]
_EXITS = (asyncio.TimeoutError, asyncio.CancelledError)  # what SQLAlchemy counts as exits
_LEASED_AT = "runtime_snapshot_mount.leased_at"  # in connection.info: when Leases took it


def asyncpg_upsert(engine: object, table: Table, *, lease: bool = False) -> AsyncpgUpsert | None:
    """The fast path of the ``ON CONFLICT`` upsert into ``table`` on ``engine``, or ``None``
    where there is none: it needs an ``AsyncEngine`` on PostgreSQL through asyncpg.

    ``lease``: keep connections checked out between upserts (see :class:`Leases`); only for
    an engine whose pool nothing else shares, and only with a ``QueuePool``.
    """
    if not isinstance(engine, AsyncEngine):
        return None
    dialect = engine.dialect
    if dialect.name != "postgresql" or dialect.driver != "asyncpg":
        return None
    sync_engine = engine.sync_engine
    pool = sync_engine.pool
    leases = Leases(sync_engine) if lease and isinstance(pool, QueuePool) else None
    try:
        return AsyncpgUpsert(sync_engine, OnConflictUpsert(table, "postgresql"), leases)
    except ValueError:  # pragma: no cover - a statement that cannot be bound by position
        return None


class AsyncpgUpsert:
    """``upsert``'s statement as one asyncpg ``fetchrow`` on a connection of ``engine``'s pool.

    The statement is compiled here, once, for the engine's dialect: ``sql`` with ``$n``
    placeholders, and for each ``$n`` the column it binds and that column type's bind
    processor. :meth:`apply` answers whether the snapshot was applied (a row came back); an
    ignored one is left to the caller to read, as on the normal path.
    """

    def __init__(
        self, engine: Engine, upsert: OnConflictUpsert, leases: Leases | None = None
    ) -> None:
        self.engine = engine
        self.upsert = upsert
        self.leases = leases
        dialect = engine.dialect
        compiled = upsert.statement.compile(dialect=dialect)
        names = compiled.positiontup or []
        if not compiled.positional or not names or not set(COLUMNS).issuperset(names):
            raise ValueError(f"cannot bind the upsert by position: {compiled.string}")
        self.sql = compiled.string
        self._plan: tuple[tuple[str, _Processor | None], ...] = tuple(
            (name, compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect))
            for name in names
        )

    def usable(self) -> bool:
        """True while nothing watches the engine's statements (see the module's notes)."""
        engine = self.engine
        dialect = engine.dialect
        if engine._has_events or dialect._has_events:  # a listener was added at some time
            events: Any = engine.dispatch  # ConnectionEvents; handle_error is the dialect's
            if (
                events.before_cursor_execute
                or events.after_cursor_execute
                or events.before_execute
                or events.after_execute
                or dialect.dispatch.handle_error
            ):
                return False
        if engine.logger.isEnabledFor(logging.INFO):  # echo=True, or the host's logging
            return False
        return "schema_translate_map" not in engine.get_execution_options()

    async def apply(self, snapshot: Snapshot) -> bool:
        """Write ``snapshot`` unless a later one is stored; ``True`` when it was written."""
        leases = self.leases
        if leases is None:
            applied: bool = await greenlet_spawn(self._apply, snapshot)
            return applied
        parameters = self.parameters(snapshot)
        connection = await leases.acquire()
        try:
            driver: Any = connection.driver_connection
            row = await driver.fetchrow(self.sql, *parameters)
        except BaseException as error:
            leases.lost()
            engine, sql = self.engine, self.sql
            await greenlet_spawn(_fail, engine.pool, connection, error, sql, parameters, engine)
            raise  # pragma: no cover - _fail raises
        leases.release(connection)
        return row is not None

    async def close(self) -> None:
        """Give the connections kept between upserts back to the pool."""
        if self.leases is not None:
            await self.leases.close()

    def parameters(self, snapshot: Snapshot) -> tuple[Any, ...]:
        """The statement's parameters for ``snapshot``, in order, as SQLAlchemy binds them."""
        values = snapshot_values(snapshot)
        return tuple(
            [
                values[name] if process is None else process(values[name])
                for name, process in self._plan
            ]
        )

    def _apply(self, snapshot: Snapshot) -> bool:
        """In a greenlet: check a connection out, run the statement, check it back in."""
        engine = self.engine
        pool = engine.pool
        connection = _checkout(engine)
        parameters: tuple[Any, ...] = ()
        try:
            parameters = self.parameters(snapshot)
            driver: Any = connection.driver_connection
            row = await_(driver.fetchrow(self.sql, *parameters))
        except BaseException as error:
            _fail(pool, connection, error, self.sql, parameters, engine)
        connection.close()
        return row is not None


def _checkout(engine: Engine) -> PoolProxiedConnection:
    """In a greenlet: a connection from ``engine``'s pool; a failure raised as SQLAlchemy's."""
    try:
        return engine.pool.connect()
    except Exception as error:
        wrapped = _wrapped(error, None, None, engine, None)
        if wrapped is error:
            raise
        raise wrapped from error


def _give_back(connections: list[PoolProxiedConnection]) -> None:
    """In a greenlet: check ``connections`` back in to their pool."""
    for connection in connections:
        connection.close()


class Leases:
    """Connections of an engine's pool that the fast path keeps checked out between upserts.

    An upsert takes the connection most recently given back (or, while fewer than ``limit``
    are kept, a new one from the pool) and gives it back here, not to the pool; when all
    ``limit`` are in use it waits for one. ``limit`` leaves ``reserve`` of the pool's
    connections (a tenth, at least one) to the store's other statements. A connection goes
    back to the pool when none was used for ``idle`` seconds, when it has been kept for
    ``lifetime`` seconds (so the pool's recycling, pre-ping and events still see it), once
    the pool has been invalidated since it was checked out (a lost server), and on
    :meth:`close`.
    """

    def __init__(self, engine: Engine, *, idle: float = 1.0, lifetime: float = 60.0) -> None:
        pool = engine.pool
        assert isinstance(pool, QueuePool)
        overflow = pool._max_overflow
        capacity = pool.size() + overflow if overflow >= 0 else max(pool.size(), 1) * 2
        self.engine = engine
        self.limit = max(1, capacity - max(1, capacity // 10))
        self.idle_seconds = idle
        self.lifetime = lifetime
        self.kept: list[PoolProxiedConnection] = []  # idle, the most recently used last
        self.in_use = 0
        self.used = 0  # upserts served; the idle timer compares it between its runs
        self.waiters: deque[asyncio.Future[None]] = deque()
        self.timer: asyncio.TimerHandle | None = None
        self.returning: set[asyncio.Task[None]] = set()

    async def acquire(self) -> PoolProxiedConnection:
        """A connection for one statement; hand it to :meth:`release` or :meth:`lost`."""
        while True:
            if self.kept:
                connection = self.kept.pop()
                if self._sound(connection):
                    self.in_use += 1
                    self.used += 1
                    return connection
                await greenlet_spawn(_give_back, [connection])
                continue
            if self.in_use + len(self.kept) < self.limit:
                self.in_use += 1
                try:
                    connection = await greenlet_spawn(_checkout, self.engine)
                except BaseException:
                    self.lost()
                    raise
                connection.info[_LEASED_AT] = time.monotonic()
                self.used += 1
                self._arm()
                return connection
            waiter = asyncio.get_running_loop().create_future()
            self.waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter in self.waiters:
                    self.waiters.remove(waiter)
                elif waiter.done() and not waiter.cancelled():
                    self._wake()  # woken, but leaving: wake the next in line instead
                raise

    def release(self, connection: PoolProxiedConnection) -> None:
        """``connection`` is free again (and sound)."""
        self.in_use -= 1
        self.kept.append(connection)
        self._wake()
        self._arm()  # already armed, except after close(): then it gives them back later

    def lost(self) -> None:
        """A connection of :meth:`acquire` will not come back (its failure disposes of it)."""
        self.in_use -= 1
        self._wake()

    async def close(self) -> None:
        """Give every kept connection back to the pool now."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        kept, self.kept = self.kept, []
        if kept:
            await greenlet_spawn(_give_back, kept)
        if self.returning:
            await asyncio.gather(*self.returning, return_exceptions=True)

    def _sound(self, connection: PoolProxiedConnection) -> bool:
        record: Any = connection._connection_record
        pool: Any = self.engine.pool
        return (
            connection.is_valid
            and time.monotonic() - connection.info.get(_LEASED_AT, 0.0) < self.lifetime
            and record is not None
            and record.starttime >= pool._invalidate_time
        )

    def _wake(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _arm(self) -> None:
        if self.timer is None:
            loop = asyncio.get_running_loop()
            self.timer = loop.call_later(self.idle_seconds, self._tick, self.used)

    def _tick(self, used_before: int) -> None:
        """Every ``idle`` seconds while connections are kept: if no upsert came since the last
        tick, give the kept ones back to the pool."""
        self.timer = None
        if self.used == used_before and self.kept:
            kept, self.kept = self.kept, []
            task = asyncio.ensure_future(greenlet_spawn(_give_back, kept))
            self.returning.add(task)
            task.add_done_callback(self.returning.discard)
        if self.kept or self.in_use:
            self._arm()


def _fail(
    pool: Pool,
    connection: PoolProxiedConnection,
    error: BaseException,
    sql: str,
    parameters: tuple[Any, ...],
    engine: Engine,
) -> NoReturn:
    """Give ``connection`` back (or discard it) after ``error``, and raise it as SQLAlchemy
    would have.

    As ``Connection`` does: a connection that the error closed invalidates its pool generation
    (the others were opened to the same lost server); one interrupted by cancellation (or any
    other exit) is discarded alone; any other error leaves a sound connection, which goes back.
    """
    adapter: Any = connection.dbapi_connection
    driver: Any = connection.driver_connection
    if not isinstance(error, Exception) or isinstance(error, _EXITS):
        connection.invalidate(error)
        raise error
    translated = _translated(adapter, error)
    closed = bool(driver.is_closed())
    if closed:
        pool._invalidate(connection, translated)
    else:
        connection.close()
    wrapped = _wrapped(translated, sql, parameters, engine, closed)
    if wrapped is translated:  # not a driver error: as it was raised
        raise error
    raise wrapped from translated


def _translated(adapter: Any, error: Exception) -> Exception:
    """``error`` as the dialect's DBAPI adapter raises it (asyncpg's error mapped to the DBAPI
    exception classes, with ``sqlstate``); non-driver errors unchanged."""
    handle = getattr(adapter, "_handle_exception", None)
    if handle is None:  # pragma: no cover - every supported SQLAlchemy has it
        return error
    try:
        handle(error)
    except Exception as translated:
        return translated
    return error  # pragma: no cover - it always raises


def _wrapped(
    error: Exception,
    sql: str | None,
    parameters: tuple[Any, ...] | None,
    engine: Engine,
    invalidated: bool | None,
) -> Exception:
    """A DBAPI error wrapped as :class:`sqlalchemy.exc.DBAPIError` (``invalidated`` ``None``:
    as the dialect judges a failed connect); anything else itself."""
    dialect = engine.dialect
    dbapi_error: type[Exception] = dialect.loaded_dbapi.Error
    if not isinstance(error, dbapi_error):
        return error
    if invalidated is None:
        invalidated = dialect.is_disconnect(error, None, None)  # type: ignore[arg-type]
    wrapped: Exception = exc.DBAPIError.instance(
        sql,
        parameters,
        error,
        dbapi_error,
        hide_parameters=engine.hide_parameters,
        connection_invalidated=invalidated,
        dialect=dialect,
    )
    return wrapped
