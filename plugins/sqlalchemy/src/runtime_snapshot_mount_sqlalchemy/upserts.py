"""The atomic upsert, one statement per request where the dialect allows it.

Each statement is written here once, as SQLAlchemy Core, and every executor runs that same
statement (a SQLAlchemy ``Connection``; its compiled form on a driver's own connection, see
:mod:`.compiled`; the SQLite writer):

* PostgreSQL and SQLite -- :func:`on_conflict`: ``INSERT ... ON CONFLICT (account_id) DO
  UPDATE SET ... WHERE <not stale> RETURNING account_id``. A returned row means applied; no
  row means the ``WHERE`` kept a later snapshot. Either way one statement: the later
  snapshot is not read back (``UpsertResult.current`` is then ``None``).
* MariaDB 10.5+ -- :func:`duplicate_key`: ``INSERT ... ON DUPLICATE KEY UPDATE`` with
  conditional assignments, ``RETURNING`` the row as stored after it: one statement.
* MySQL (no ``RETURNING``) -- :class:`DuplicateKeyUpsert`: the same statement, then reading
  the row back while the transaction still holds its lock.
* Anything else -- :class:`LockingUpsert`: ``SELECT ... FOR UPDATE``, then ``INSERT`` or
  ``UPDATE``, in one transaction.

:func:`select_current` is the read. ``SQLAlchemyStore(..., upsert=NAME)`` forces one
strategy by its name in :data:`UPSERTS`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from sqlalchemy import (
    Select,
    Table,
    and_,
    bindparam,
    case,
    exc,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.expression import UpdateBase

from runtime_snapshot_mount import Snapshot, UpsertResult, is_stale

from .engines import LostRace
from .schema import COLUMNS, snapshot_from_row, snapshot_values

__all__ = [
    "UPSERTS",
    "DuplicateKeyUpsert",
    "LockingUpsert",
    "OneStatement",
    "StatementUpsert",
    "Upsert",
    "UpsertName",
    "choose_upsert",
    "duplicate_key",
    "on_conflict",
    "one_statement",
    "select_current",
]

UpsertName = Literal["auto", "on-conflict", "duplicate-key", "duplicate-key-read-back", "locking"]
UPSERTS: tuple[UpsertName, ...] = (
    "auto",  # the dialect's own (and, on a URL store with asyncpg, the asyncpg upsert)
    "on-conflict",  # INSERT ... ON CONFLICT: PostgreSQL, SQLite
    "duplicate-key",  # INSERT ... ON DUPLICATE KEY UPDATE, with RETURNING where the server has it
    "duplicate-key-read-back",  # the same without RETURNING (MySQL's): a locked read-back
    "locking",  # SELECT ... FOR UPDATE, then INSERT or UPDATE: any database with row locks
)
_FRESHNESS = ("strategy_synced_at", "strategy_version")  # compared by the stale rule
_UPDATED = [name for name in COLUMNS if name != "account_id"]


class Upsert(Protocol):
    """Applies a snapshot unless it is stale, atomically, on one connection."""

    def __call__(self, connection: Connection, snapshot: Snapshot) -> UpsertResult:
        """Apply or ignore ``snapshot``; say which, and what is stored now."""
        ...


def choose_upsert(dialect: Dialect, table: Table, name: UpsertName = "auto") -> Upsert:
    """The upsert called ``name`` (see :data:`UPSERTS`), or with ``"auto"`` the one for
    ``dialect``, run on a SQLAlchemy ``Connection``; chosen once the dialect has connected,
    so that MariaDB's ``RETURNING`` is known."""
    if name == "on-conflict" and dialect.name not in ("postgresql", "sqlite"):
        raise ValueError(f"{dialect.name} has no INSERT ... ON CONFLICT")
    if name == "locking":
        return LockingUpsert(table)
    single = one_statement(dialect, table, name)
    if single is not None:
        return StatementUpsert(single, autocommit=dialect.name != "sqlite")
    if name != "auto" or dialect.name in ("mysql", "mariadb"):  # the duplicate-key ones
        return DuplicateKeyUpsert(table)
    return LockingUpsert(table)


def select_current(table: Table) -> Select[Any]:
    """``SELECT <snapshot columns> FROM table WHERE account_id = :account_id``."""
    return select(*(table.c[name] for name in COLUMNS)).where(
        table.c.account_id == bindparam("account_id")
    )


def _not_stale(
    stored: Any, incoming_version: ColumnElement[Any], incoming_time: ColumnElement[Any]
) -> ColumnElement[bool]:
    """SQL for "the stored row is not later than the incoming one" (SPEC §4)."""
    return or_(
        stored.strategy_version < incoming_version,
        and_(
            stored.strategy_version == incoming_version,
            stored.strategy_synced_at <= incoming_time,
        ),
    )


def _result_from_row(snapshot: Snapshot, row: Any) -> UpsertResult:
    """Judge from the row as stored after the write: it holds ``snapshot``'s
    ``(version, instant)`` exactly when ``snapshot`` was applied; otherwise it is later."""
    current = snapshot_from_row(row)
    if current.freshness == snapshot.freshness:
        return UpsertResult(applied=True, current=snapshot)
    return UpsertResult(applied=False, current=current)


@dataclass(frozen=True)
class OneStatement:
    """An upsert that is one atomic statement, and how to read its answer.

    ``statement`` binds the snapshot's columns by name (:func:`snapshot_values`); ``answer``
    turns the row it returned (a mapping, or ``None`` for no row) into the
    :class:`UpsertResult`. Every executor runs this same statement: SQLAlchemy's
    ``Connection``, or its compiled form on a driver's connection.
    """

    statement: UpdateBase
    answer: Callable[[Snapshot, Mapping[Any, Any] | None], UpsertResult]


def _values(table: Table) -> dict[str, Any]:
    """A bind parameter per snapshot column, named after it and of its type."""
    return {name: bindparam(name, type_=table.c[name].type) for name in COLUMNS}


def _returned_key(snapshot: Snapshot, row: Mapping[Any, Any] | None) -> UpsertResult:
    """``RETURNING account_id``: a row when written, none when the ``WHERE`` kept a later
    snapshot (which is not read: see ``UpsertResult``)."""
    return UpsertResult(applied=row is not None, current=snapshot if row is not None else None)


def on_conflict(table: Table, dialect_name: str) -> OneStatement:
    """PostgreSQL and SQLite: ``INSERT ... ON CONFLICT (account_id) DO UPDATE SET ...
    WHERE <not stale> RETURNING account_id``."""
    dialect_insert = postgresql.insert if dialect_name == "postgresql" else sqlite.insert
    statement = dialect_insert(table).values(_values(table))
    excluded = statement.excluded
    upsert = statement.on_conflict_do_update(
        index_elements=[table.c.account_id],
        set_={name: excluded[name] for name in _UPDATED},
        where=_not_stale(table.c, excluded.strategy_version, excluded.strategy_synced_at),
    ).returning(table.c.account_id)
    return OneStatement(upsert, _returned_key)


def duplicate_key(table: Table, *, returning: bool = True) -> OneStatement:
    """MySQL and MariaDB: ``INSERT ... ON DUPLICATE KEY UPDATE`` with conditional assignments,
    ``RETURNING`` the stored ``(version, instant)`` after it (MariaDB 10.5+; see
    :class:`DuplicateKeyUpsert`): the request's own when it was applied."""
    statement = mysql.insert(table).values(_values(table))
    new = statement.inserted
    not_stale = _not_stale(table.c, new.strategy_version, new.strategy_synced_at)
    order = [name for name in _UPDATED if name not in _FRESHNESS] + list(_FRESHNESS)
    upsert = statement.on_duplicate_key_update(
        [(name, case((not_stale, new[name]), else_=table.c[name])) for name in order]
    )
    if returning:
        return OneStatement(upsert.returning(*(table.c[name] for name in _FRESHNESS)), _judged)
    return OneStatement(upsert, _judged)


def _judged(snapshot: Snapshot, row: Mapping[Any, Any] | None) -> UpsertResult:
    """``RETURNING`` the stored ``(version, instant)``: ``snapshot``'s own exactly when it was
    applied; otherwise a later snapshot is stored, which is not read (see ``UpsertResult``)."""
    if row is None:
        raise LostRace(f"no row came back for {snapshot.account_id!r}")
    stored = (int(row["strategy_version"]), row["strategy_synced_at"])
    if stored == snapshot.freshness:
        return UpsertResult(applied=True, current=snapshot)
    return UpsertResult(applied=False)


def one_statement(dialect: Dialect, table: Table, name: UpsertName = "auto") -> OneStatement | None:
    """The upsert called ``name`` for ``dialect`` if it is one statement; ``None`` for the
    strategies that take several (MySQL's read-back, the locking fallback)."""
    if name == "auto" and dialect.name in ("mysql", "mariadb"):
        return duplicate_key(table) if dialect.insert_returning else None
    if name == "duplicate-key" and dialect.insert_returning:
        return duplicate_key(table)
    if name in ("auto", "on-conflict") and dialect.name in ("postgresql", "sqlite"):
        return on_conflict(table, dialect.name)
    return None


class StatementUpsert:
    """Runs a :class:`OneStatement` on a SQLAlchemy ``Connection``.

    On PostgreSQL and MariaDB in autocommit mode: the statement is atomic by itself, and no
    ``BEGIN``/``COMMIT`` round trips are spent. On SQLite in a transaction that the write
    opens, so SQLite takes its write lock first and the busy timeout applies.
    """

    def __init__(self, upsert: OneStatement, *, autocommit: bool) -> None:
        self.upsert = upsert
        self.autocommit = autocommit

    def __call__(self, connection: Connection, snapshot: Snapshot) -> UpsertResult:
        """One statement, applied or ignored."""
        if self.autocommit:
            connection.execution_options(isolation_level="AUTOCOMMIT")
        with connection.begin():
            result = connection.execute(self.upsert.statement, snapshot_values(snapshot))
            row = result.mappings().first()
        return self.upsert.answer(snapshot, row)


class DuplicateKeyUpsert:
    """MySQL: :func:`duplicate_key` without ``RETURNING``, then a locked read-back.

    MySQL assigns left to right, and a later assignment sees the columns already assigned:
    so every column is assigned ``CASE WHEN <not stale> THEN VALUES(col) ELSE col END`` and
    the two compared columns come last, ``strategy_version`` very last. An existing row that
    changed (affected rows 2) was applied, and any other outcome is read back with ``SELECT
    ... FOR UPDATE`` in the same transaction, whose upsert still holds the row's lock.
    """

    def __init__(self, table: Table) -> None:
        self.statement = duplicate_key(table, returning=False).statement
        self.locking_select = select_current(table).with_for_update()

    def __call__(self, connection: Connection, snapshot: Snapshot) -> UpsertResult:
        """The statement, then, unless an existing row changed, the locked read-back."""
        with connection.begin():
            result = connection.execute(self.statement, snapshot_values(snapshot))
            if result.rowcount == 2:  # an existing row changed: only a not-stale write does
                return UpsertResult(applied=True, current=snapshot)
            key = {"account_id": snapshot.account_id}
            row = connection.execute(self.locking_select, key).mappings().one()
            return _result_from_row(snapshot, row)


class LockingUpsert:
    """Any other dialect: lock the row (``SELECT ... FOR UPDATE``), compare, then write.

    An account with no row yet is inserted in a transaction of its own, after the locking read's
    transaction has ended: holding the read's gap lock while inserting would deadlock every
    concurrent first write of the account (InnoDB). Two first writes that both found no row: the
    one whose ``INSERT`` fails on the primary key gives up with :class:`LostRace`, and is tried
    again, when it finds the row.
    """

    def __init__(self, table: Table) -> None:
        self.locking_select = select_current(table).with_for_update()
        self.insert = insert(table)
        self.update = update(table).where(table.c.account_id == bindparam("stored_account_id"))

    def __call__(self, connection: Connection, snapshot: Snapshot) -> UpsertResult:
        """The locking read, then the update; or, with no row yet, the insert."""
        values = snapshot_values(snapshot)
        with connection.begin():
            key = {"account_id": snapshot.account_id}
            row = connection.execute(self.locking_select, key).mappings().first()
            if row is not None:
                stored = snapshot_from_row(row)
                if is_stale(snapshot, stored):
                    return UpsertResult(applied=False, current=stored)
                changes = {name: values[name] for name in _UPDATED}
                changes["stored_account_id"] = snapshot.account_id
                connection.execute(self.update, changes)
                return UpsertResult(applied=True, current=snapshot)
        with connection.begin():
            self._insert(connection, values)
        return UpsertResult(applied=True, current=snapshot)

    def _insert(self, connection: Connection, values: dict[str, Any]) -> None:
        try:
            connection.execute(self.insert, values)
        except exc.IntegrityError as error:
            raise LostRace("another writer stored this account first") from error
