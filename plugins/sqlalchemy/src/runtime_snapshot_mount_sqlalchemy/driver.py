"""Compiled statements on the raw asyncpg connections of an ``AsyncEngine``'s own pool.

SQLAlchemy's generic execution path costs several times the CPU of the one round trip that
each of the store's statements makes. :class:`DriverConnections` runs a statement's
:class:`~.compiled.CompiledStatement` (compiled once per statement) on the asyncpg
connection underneath a pooled connection, through documented API only:

* ``async with engine.connect()`` checks a connection out of the engine's pool -- the
  host's pool, with its size, overflow and timeout, or the store's own;
* :meth:`~sqlalchemy.ext.asyncio.AsyncConnection.get_raw_connection` and its
  ``driver_connection`` give the asyncpg connection, on which one ``fetchrow`` runs the
  statement in autocommit mode (each statement here is atomic by itself), and which asyncpg
  prepares once per connection;
* a connection that broke, fell out of step with the server or was cancelled mid-call is
  invalidated (:meth:`~sqlalchemy.ext.asyncio.AsyncConnection.invalidate`), so the pool
  never hands it out again, and its failure is raised as a :class:`ConnectionResetError`
  (transient: the store retries it); any other error is asyncpg's own, which
  :func:`~runtime_snapshot_mount_sqlalchemy.is_transient` judges by its ``sqlstate``.

These statements bypass SQLAlchemy's execution events: ``echo``, ``before_cursor_execute``
listeners and the like do not see them (connection events -- ``connect``, ``checkout``,
``checkin`` -- still fire). ``SQLAlchemyStore(engine, execution="sqlalchemy")`` keeps every
statement on SQLAlchemy's own path.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import anyio
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql import ClauseElement

from .compiled import CompiledStatement

__all__ = ["DRIVERS", "EXECUTIONS", "DriverConnections", "Execution"]

DRIVERS = ("asyncpg",)
"""The drivers whose connections :class:`DriverConnections` runs statements on."""
Execution = Literal["driver", "sqlalchemy"]
EXECUTIONS: tuple[Execution, ...] = ("driver", "sqlalchemy")
"""How statements run: on the driver's connections where :data:`DRIVERS` allow, or always
through SQLAlchemy's ``Connection``."""


class DriverConnections:
    """Runs compiled statements on the driver connections of ``engine``'s pool."""

    def __init__(self, engine: AsyncEngine) -> None:
        if engine.dialect.driver not in DRIVERS:
            raise ValueError(f"no driver path for {engine.dialect.driver}")
        self.engine = engine
        self._compiled: dict[ClauseElement, CompiledStatement] = {}

    async def fetch(
        self, statement: ClauseElement, values: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        """Run ``statement`` with ``values`` and return its first row (``{key: value}``, as
        SQLAlchemy would return it), or ``None``."""
        async with self.engine.connect() as connection:
            compiled = self._compiled.get(statement)
            if compiled is None:  # compiled once, for the dialect that connected
                compiled = CompiledStatement(statement, connection.dialect)
                self._compiled[statement] = compiled
            parameters = compiled.parameters(values)
            raw = await connection.get_raw_connection()
            record = await _fetchrow(connection, raw.driver_connection, compiled.sql, parameters)
        return None if record is None else compiled.row(record)


async def _fetchrow(
    connection: AsyncConnection, driver: Any, sql: str, parameters: list[Any]
) -> Any:
    try:
        return await driver.fetchrow(sql, *parameters)
    except BaseException as error:
        from asyncpg.exceptions import InternalClientError  # type: ignore[import-untyped]

        sound = isinstance(error, Exception) and not isinstance(error, InternalClientError)
        if sound and not _lost(driver):
            raise  # the server's answer on a sound connection: is_transient judges it
        with anyio.CancelScope(shield=True):  # lost, out of step, or cancelled mid-call
            await connection.invalidate()
        if not isinstance(error, Exception):
            raise
        raise ConnectionResetError(f"the database connection was lost: {error}") from error


def _lost(driver: Any) -> bool:
    """True when the asyncpg connection closed (the server went away, say)."""
    try:
        return bool(driver.is_closed())
    except Exception:
        return True
