"""The atomic upsert, one statement per request where the dialect allows it.

Every strategy is a callable ``(connection, snapshot) -> UpsertResult`` built once per table
(statements are prebuilt, so each request only binds parameters and hits SQLAlchemy's
compiled cache). :func:`choose_upsert` picks one for a dialect:

* PostgreSQL and SQLite -- :class:`OnConflictUpsert`: ``INSERT ... ON CONFLICT (account_id)
  DO UPDATE SET ... WHERE <not stale> RETURNING strategy_version``. A returned row means
  applied: one statement. No row means the ``WHERE`` kept a later snapshot, which one more
  ``SELECT`` reads.
* MariaDB 10.5+ -- :class:`DuplicateKeyUpsert` with ``RETURNING``; MySQL -- without it, then
  reading the row back while the transaction still holds its lock.
* Anything else -- :class:`LockingUpsert`: ``SELECT ... FOR UPDATE``, then ``INSERT`` or
  ``UPDATE``, in one transaction.
"""

from __future__ import annotations

from typing import Any, Protocol

from sqlalchemy import Select, Table, and_, bindparam, case, exc, insert, or_, select, update
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.sql import Executable
from sqlalchemy.sql.elements import ColumnElement

from runtime_snapshot_mount import Snapshot, UpsertResult, is_stale

from .engines import LostRace
from .schema import COLUMNS, snapshot_from_row, snapshot_values

__all__ = [
    "DuplicateKeyUpsert",
    "LockingUpsert",
    "OnConflictUpsert",
    "Upsert",
    "choose_upsert",
    "read_ignored",
    "select_current",
]

_FRESHNESS = ("strategy_synced_at", "strategy_version")  # compared by the stale rule
_UPDATED = [name for name in COLUMNS if name != "account_id"]


class Upsert(Protocol):
    """Applies a snapshot unless it is stale, atomically, on one connection."""

    def __call__(self, connection: Connection, snapshot: Snapshot) -> UpsertResult:
        """Apply or ignore ``snapshot``; say which, and what is stored now."""
        ...


def choose_upsert(dialect: Dialect, table: Table) -> Upsert:
    """The upsert for ``dialect`` (read once the dialect has connected, so that MariaDB's
    ``RETURNING`` is known)."""
    if dialect.name == "postgresql":
        return OnConflictUpsert(table, "postgresql")
    if dialect.name == "sqlite":
        return OnConflictUpsert(table, "sqlite")
    if dialect.name in ("mysql", "mariadb"):
        return DuplicateKeyUpsert(table, returning=dialect.insert_returning)
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
    """PostgreSQL and SQLite: ``INSERT ... ON CONFLICT DO UPDATE ... WHERE <not stale>``.

    On PostgreSQL the statement runs in autocommit mode -- a single statement is atomic by
    itself, and no ``BEGIN``/``COMMIT`` round trips are spent. On SQLite it runs in a
    transaction that a write opens, so SQLite takes its write lock first and the busy
    timeout applies.
    """

    def __init__(self, table: Table, dialect_name: str) -> None:
        dml = postgresql if dialect_name == "postgresql" else sqlite
        statement = dml.insert(table)
        excluded = statement.excluded
        self.statement = statement.on_conflict_do_update(
            index_elements=[table.c.account_id],
            set_={name: excluded[name] for name in _UPDATED},
            where=_not_stale(table.c, excluded.strategy_version, excluded.strategy_synced_at),
        ).returning(table.c.strategy_version)
        self.select = select_current(table)
        self.autocommit = dialect_name == "postgresql"

    def __call__(self, connection: Connection, snapshot: Snapshot) -> UpsertResult:
        """One statement when applied; a second (``SELECT``) when ignored."""
        if self.autocommit:
            connection.execution_options(isolation_level="AUTOCOMMIT")
        with connection.begin():
            if connection.execute(self.statement, snapshot_values(snapshot)).first():
                return UpsertResult(applied=True, current=snapshot)
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
