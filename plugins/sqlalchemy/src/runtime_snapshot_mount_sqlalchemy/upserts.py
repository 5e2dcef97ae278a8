"""The atomic upsert, one statement per request where the dialect allows it.

Every strategy is a callable ``(connection, snapshot) -> UpsertResult`` built once per table
(statements are prebuilt, so each request only binds parameters and hits SQLAlchemy's
compiled cache). :func:`choose_upsert` picks one for a dialect:

* PostgreSQL -- :class:`AnsweringUpsert`: the ``ON CONFLICT`` upsert below in a ``WITH``
  clause, whose main query brings back the stored row when the upsert was ignored: one
  statement either way.
* SQLite -- :class:`OnConflictUpsert`: ``INSERT ... ON CONFLICT (account_id) DO UPDATE SET
  ... WHERE <not stale> RETURNING strategy_version``. A returned row means applied: one
  statement. No row means the ``WHERE`` kept a later snapshot, which one more ``SELECT``
  reads.
* MariaDB 10.5+ -- :class:`DuplicateKeyUpsert` with ``RETURNING``; MySQL -- without it, then
  reading the row back while the transaction still holds its lock.
* Anything else -- :class:`LockingUpsert`: ``SELECT ... FOR UPDATE``, then ``INSERT`` or
  ``UPDATE``, in one transaction.

``SQLAlchemyStore(..., upsert=NAME)`` forces one of them by its name in :data:`UPSERTS`.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

from sqlalchemy import (
    Select,
    Table,
    and_,
    bindparam,
    case,
    exc,
    func,
    insert,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.sql import Executable
from sqlalchemy.sql.elements import ColumnElement

from runtime_snapshot_mount import Snapshot, UpsertResult, is_stale

from .engines import LostRace
from .schema import COLUMNS, snapshot_from_row, snapshot_values

__all__ = [
    "UPSERTS",
    "AnsweringUpsert",
    "DuplicateKeyUpsert",
    "LockingUpsert",
    "OnConflictUpsert",
    "Upsert",
    "UpsertName",
    "choose_upsert",
    "read_ignored",
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
    ``dialect``; chosen once the dialect has connected, so that MariaDB's ``RETURNING`` is
    known."""
    if name == "locking":
        return LockingUpsert(table)
    if name == "duplicate-key-read-back":
        return DuplicateKeyUpsert(table, returning=False)
    if name == "duplicate-key" or (name == "auto" and dialect.name in ("mysql", "mariadb")):
        return DuplicateKeyUpsert(table, returning=dialect.insert_returning)
    if dialect.name == "postgresql":
        return AnsweringUpsert(table)
    if dialect.name == "sqlite":
        return OnConflictUpsert(table)
    if name == "on-conflict":
        raise ValueError(f"{dialect.name} has no INSERT ... ON CONFLICT")
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


def read_ignored(
    connection: Connection, statement: Select[Any], snapshot: Snapshot
) -> UpsertResult:
    """The answer for an incoming snapshot that a later stored one kept out.

    Stored snapshots only ever get later, so whatever this reads is later still, even
    outside the upsert's transaction; a row that vanished means someone deleted it, and the
    upsert is tried again.
    """
    row = connection.execute(statement, {"account_id": snapshot.account_id}).mappings().first()
    current = None if row is None else snapshot_from_row(row)
    if current is None or not is_stale(snapshot, current):
        raise LostRace(f"the snapshot of {snapshot.account_id!r} changed while it was read")
    return UpsertResult(applied=False, current=current)


def _result_from_row(snapshot: Snapshot, row: Any) -> UpsertResult:
    """Judge from the row as stored after the write: it holds ``snapshot``'s
    ``(version, instant)`` exactly when ``snapshot`` was applied; otherwise it is later."""
    current = snapshot_from_row(row)
    if current.freshness == snapshot.freshness:
        return UpsertResult(applied=True, current=snapshot)
    return UpsertResult(applied=False, current=current)


class OnConflictUpsert:
    """SQLite: ``INSERT ... ON CONFLICT DO UPDATE ... WHERE <not stale> RETURNING``.

    It runs in a transaction that the write opens, so SQLite takes its write lock first and
    the busy timeout applies.
    """

    def __init__(self, table: Table) -> None:
        statement = sqlite.insert(table)
        excluded = statement.excluded
        self.statement = statement.on_conflict_do_update(
            index_elements=[table.c.account_id],
            set_={name: excluded[name] for name in _UPDATED},
            where=_not_stale(table.c, excluded.strategy_version, excluded.strategy_synced_at),
        ).returning(table.c.strategy_version)
        self.select = select_current(table)

    def __call__(self, connection: Connection, snapshot: Snapshot) -> UpsertResult:
        """One statement when applied; a second (``SELECT``) when ignored."""
        with connection.begin():
            if connection.execute(self.statement, snapshot_values(snapshot)).first():
                return UpsertResult(applied=True, current=snapshot)
            return read_ignored(connection, self.select, snapshot)


class AnsweringUpsert:
    """PostgreSQL: the ``ON CONFLICT`` upsert that also answers when it was ignored.

    ::

        WITH written AS (INSERT ... ON CONFLICT (account_id) DO UPDATE SET ...
                         WHERE <not stale> RETURNING account_id)
        SELECT w.applied, stored.<columns>
        FROM (SELECT count(*) AS applied FROM written) AS w
        LEFT OUTER JOIN <table> AS stored ON stored.account_id = :account_id AND w.applied = 0

    One row always comes back: ``applied`` 1, or 0 with the stored row. That row is read in
    the statement's snapshot, which can predate the later row that kept this one out (one
    committed meanwhile by a concurrent writer), so a row that does not justify the ignore
    (missing, or not later than the incoming snapshot) is read again, in a statement of its
    own. It runs in autocommit mode: a single statement is atomic by itself, and no
    ``BEGIN``/``COMMIT`` round trips are spent.
    """

    def __init__(self, table: Table) -> None:
        values = {name: bindparam(name, type_=table.c[name].type) for name in COLUMNS}
        upsert = postgresql.insert(table).values(values)
        excluded = upsert.excluded
        written = (
            upsert.on_conflict_do_update(
                index_elements=[table.c.account_id],
                set_={name: excluded[name] for name in _UPDATED},
                where=_not_stale(table.c, excluded.strategy_version, excluded.strategy_synced_at),
            )
            .returning(table.c.account_id)
            .cte("written")
        )
        outcome = select(func.count().label("applied")).select_from(written).subquery("w")
        stored = table.alias("stored")
        ignored = outcome.c.applied == literal_column("0")
        same_account = stored.c.account_id == values["account_id"]
        joined = outcome.outerjoin(stored, and_(same_account, ignored))
        self.statement = select(
            outcome.c.applied, *(stored.c[name] for name in COLUMNS)
        ).select_from(joined)
        self.select = select_current(table)

    def __call__(self, connection: Connection, snapshot: Snapshot) -> UpsertResult:
        """One statement, applied or ignored; rarely a second (``SELECT``) when ignored."""
        connection.execution_options(isolation_level="AUTOCOMMIT")
        with connection.begin():
            row = connection.execute(self.statement, snapshot_values(snapshot)).mappings().one()
            if row["applied"]:
                return UpsertResult(applied=True, current=snapshot)
            if row["account_id"] is not None:
                current = snapshot_from_row(row)
                if is_stale(snapshot, current):
                    return UpsertResult(applied=False, current=current)
            return read_ignored(connection, self.select, snapshot)


class DuplicateKeyUpsert:
    """MySQL and MariaDB: ``INSERT ... ON DUPLICATE KEY UPDATE`` with conditional assignments.

    MySQL assigns left to right, and a later assignment sees the columns already assigned:
    so every column is assigned ``CASE WHEN <not stale> THEN VALUES(col) ELSE col END`` and
    the two compared columns come last, ``strategy_version`` very last. With ``returning``
    (MariaDB 10.5+) the statement gives back the row as stored after it, in one round trip;
    otherwise an existing row that changed (affected rows 2) was applied, and any other
    outcome is read back with ``SELECT ... FOR UPDATE`` in the same transaction, whose
    upsert still holds the row's lock.
    """

    def __init__(self, table: Table, *, returning: bool) -> None:
        statement = mysql.insert(table)
        new = statement.inserted
        not_stale = _not_stale(table.c, new.strategy_version, new.strategy_synced_at)
        order = [name for name in _UPDATED if name not in _FRESHNESS] + list(_FRESHNESS)
        upsert = statement.on_duplicate_key_update(
            [(name, case((not_stale, new[name]), else_=table.c[name])) for name in order]
        )
        self.statement: Executable = (
            upsert.returning(*(table.c[name] for name in COLUMNS)) if returning else upsert
        )
        self.returning = returning
        self.locking_select = select_current(table).with_for_update()

    def __call__(self, connection: Connection, snapshot: Snapshot) -> UpsertResult:
        """One statement with ``RETURNING`` or an updated row; else a locked read-back."""
        with connection.begin():
            result = connection.execute(self.statement, snapshot_values(snapshot))
            if self.returning:
                return _result_from_row(snapshot, result.mappings().one())
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
