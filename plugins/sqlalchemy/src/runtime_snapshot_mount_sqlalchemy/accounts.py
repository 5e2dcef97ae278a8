"""Accounts from the host's own table or mapped class."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, Union

from sqlalchemy import Select, bindparam, select, true
from sqlalchemy.engine import Connection
from sqlalchemy.orm import QueryableAttribute
from sqlalchemy.sql import FromClause
from sqlalchemy.sql.elements import ColumnElement

from runtime_snapshot_mount import Account, hookimpl

from .driver import EXECUTIONS, DriverConnections, Execution, runs_on
from .engines import AnyEngine, EngineRunner
from .keys import ConvertId, canonical_text, conversion_for

__all__ = ["ColumnOption", "Condition", "SQLAlchemyAccounts", "Visibility"]

ColumnOption = Union[str, ColumnElement[Any], QueryableAttribute[Any], Any]  # noqa: UP007
"""A column option: a column's name, a column, an ORM attribute or a SQL expression.

``Any`` is part of it because SQLModel types its class attributes by their Python values
(``User.id`` is a ``uuid.UUID`` to a type checker, ``User.status == "on"`` a ``bool``); the
value is checked when :class:`SQLAlchemyAccounts` is made, and a wrong one is a ``TypeError``.
"""
Condition = Union[ColumnElement[bool], Any]  # noqa: UP007
"""A SQL condition (``Member.tenant == principal``); ``Any`` for SQLModel's ``bool``, as above."""
Visibility = Callable[[Any], Condition | None]


class SQLAlchemyAccounts:
    """Looks accounts up in the host's own table; implements the ``get_account`` hook.

    ``source`` is the host's mapped class or :class:`~sqlalchemy.Table` (any selectable).
    ``id_column`` is the account's key -- a column name on ``source``, a column, an ORM
    attribute (``User.id``, a SQLModel field too) or a column expression. ``active`` says
    whether an account is active: a boolean column, its name, or any SQL condition
    (``Member.status == "active"``); ``None`` means every account found is active.
    ``visible_to``, if given, is called with the authenticated principal and returns an extra
    SQL condition (or ``None`` for none) that the account must meet for that caller to see it.

    The request's id is first converted to a value of the key's type (see :mod:`.keys`): a
    UUID key takes any spelling of a UUID, an integer key optional sign and digits within the
    column type's range, a string key the id unchanged. An id that does not convert names no
    account: ``None``, without a query. ``convert_id`` replaces that conversion: a function of
    the request's id that returns the key's value, or raises :class:`ValueError` when the id
    names no account. The account found is reported under its key's canonical text (a UUID's
    lowercase hyphenated text, an integer's digits, a string as stored), which is the id its
    snapshot is stored under.

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
        id_column: ColumnOption,
        active: ColumnOption | None = None,
        visible_to: Visibility | None = None,
        convert_id: ConvertId | None = None,
        execution: Execution = "driver",
    ) -> None:
        if execution not in EXECUTIONS:
            raise ValueError(f"execution must be one of {', '.join(EXECUTIONS)}")
        self._runner = EngineRunner(engine)
        fast = execution == "driver" and runs_on(engine)
        self._driver = DriverConnections(engine) if fast else None
        self._visible_to = visible_to
        account_id = _column(source, id_column)
        self._convert = conversion_for(account_id.type) if convert_id is None else convert_id
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
        try:
            key = self._convert(account_id)
        except ValueError:
            return None  # no value of the key's type: no account, and no query
        statement = self._select
        if self._visible_to is not None:
            condition = self._visible_to(principal)
            if condition is not None:
                statement = statement.where(condition)
        if self._driver is not None and statement is self._select:
            # the connection is left to the request's upsert (see the driver module)
            row = await self._driver.fetch(statement, {"account_id": key}, hand_over=True)
            return None if row is None else _account(row["account_id"], row["active"])
        return await self._runner.run(partial(_find, statement, key))


def _column(source: Any, column: Any) -> ColumnElement[Any]:
    """The column expression ``column`` names: itself, the column of that name on a selectable
    or mapped class, or what an ORM attribute stands for."""
    if isinstance(column, str):
        column = source.c[column] if isinstance(source, FromClause) else getattr(source, column)
    if not isinstance(column, ColumnElement) and hasattr(column, "__clause_element__"):
        column = column.__clause_element__()  # an ORM attribute (User.id)
    if not isinstance(column, ColumnElement):
        raise TypeError(
            "expected a column name, a column, an ORM attribute or a SQL expression, "
            f"got {type(column).__name__}: {column!r}"
        )
    return column


def _find(statement: Select[Any], key: Any, connection: Connection) -> Account | None:
    row = connection.execute(statement, {"account_id": key}).first()
    return None if row is None else _account(row.account_id, row.active)


def _account(key: Any, active: Any) -> Account:
    """The account a found row names: under its key's canonical text."""
    return Account(canonical_text(key), bool(active))
