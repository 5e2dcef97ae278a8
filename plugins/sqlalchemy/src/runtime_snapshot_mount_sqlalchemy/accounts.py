"""Accounts from the host's own table or mapped class."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from sqlalchemy import Select, bindparam, select, true
from sqlalchemy.engine import Connection
from sqlalchemy.sql import FromClause
from sqlalchemy.sql.elements import ColumnElement

from runtime_snapshot_mount import Account, hookimpl

from .driver import EXECUTIONS, DriverConnections, Execution, runs_on
from .engines import AnyEngine, EngineRunner

__all__ = ["SQLAlchemyAccounts"]

Visibility = Callable[[Any], ColumnElement[bool] | None]


class SQLAlchemyAccounts:
    """Looks accounts up in the host's own table; implements the ``get_account`` hook.

    ``source`` is the host's mapped class or :class:`~sqlalchemy.Table` (any selectable).
    ``id_column`` is the column holding the account id -- a name on ``source`` or a column
    expression, compared with the request's string id. ``active`` says whether an account is
    active: a boolean column, its name, or any SQL condition (``Member.status == "active"``);
    ``None`` means every account found is active. ``visible_to``, if given, is called with the
    authenticated principal and returns an extra SQL condition (or ``None`` for none) that the
    account must meet for that caller to see it.

    ``engine`` is an ``AsyncEngine`` or a synchronous ``Engine`` (run in worker threads).
    On an ``AsyncEngine`` on asyncpg, or a synchronous ``Engine`` on psycopg, the lookup is
    compiled once and runs on the raw driver connections of the engine's own pool, as the
    store's statements do (see
    :mod:`~runtime_snapshot_mount_sqlalchemy.driver`; SQLAlchemy's execution events do not
    see it); a lookup with a ``visible_to`` condition, which differs per principal, and any
    lookup with ``execution="sqlalchemy"``, run through SQLAlchemy's ``Connection``.
    """

    def __init__(
        self,
        engine: AnyEngine,
        source: Any,
        *,
        id_column: str | ColumnElement[Any],
        active: str | ColumnElement[Any] | None = None,
        visible_to: Visibility | None = None,
        execution: Execution = "driver",
    ) -> None:
        if execution not in EXECUTIONS:
            raise ValueError(f"execution must be one of {', '.join(EXECUTIONS)}")
        self._runner = EngineRunner(engine)
        fast = execution == "driver" and runs_on(engine)
        self._driver = DriverConnections(engine) if fast else None
        self._visible_to = visible_to
        account_id = _column(source, id_column)
        is_active = true() if active is None else _column(source, active)
        self._select = (
            select(account_id.label("account_id"), is_active.label("active"))
            .select_from(source)
            .where(account_id == bindparam("account_id"))
            .limit(1)
        )

    @hookimpl
    async def get_account(self, account_id: str, principal: Any) -> Account | None:
        """The account ``account_id`` as ``principal`` may see it, or ``None``."""
        statement = self._select
        if self._visible_to is not None:
            condition = self._visible_to(principal)
            if condition is not None:
                statement = statement.where(condition)
        if self._driver is not None and statement is self._select:
            row = await self._driver.fetch(statement, {"account_id": account_id})
            return None if row is None else Account(account_id, bool(row["active"]))
        return await self._runner.run(partial(_find, statement, account_id))


def _column(source: Any, column: str | ColumnElement[Any]) -> ColumnElement[Any]:
    """``column`` itself, or the column of that name on a selectable or mapped class."""
    if not isinstance(column, str):
        return column
    found: ColumnElement[Any]
    found = source.c[column] if isinstance(source, FromClause) else getattr(source, column)
    return found


def _find(statement: Select[Any], account_id: str, connection: Connection) -> Account | None:
    row = connection.execute(statement, {"account_id": account_id}).first()
    return None if row is None else Account(account_id, bool(row.active))
