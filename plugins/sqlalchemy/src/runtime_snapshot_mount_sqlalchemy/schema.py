"""The snapshot table, its column types per dialect, and the mapping between rows and snapshots.

One row per account. The types are chosen so that the database compares what the stale rule
compares, and so that every value the core accepts is stored unchanged:

* ``strategy_synced_at``: an instant in UTC at microsecond precision -- ``timestamptz`` on
  PostgreSQL, ``DATETIME(6)`` holding UTC on MySQL/MariaDB, and on SQLite fixed-width text
  ``YYYY-MM-DD HH:MM:SS.ffffff`` in UTC, whose text order is time order for years 0001-9999.
* ``strategy_version``: ``BIGINT`` (up to 2**63-1).
* ``personality`` and ``active_skills``: JSON -- ``JSONB`` on PostgreSQL, and JSON text in
  ``LONGTEXT`` on MySQL/MariaDB (see :class:`JSONText`); ``active_skills`` is SQL ``NULL``
  when absent.
* MySQL/MariaDB: ``utf8mb4`` throughout, so 4-byte characters round-trip, and a binary,
  no-pad collation for ``account_id``, so ids that differ in case or trailing spaces stay
  different accounts.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    MetaData,
    String,
    Table,
    cast,
    func,
    literal,
    type_coerce,
)
from sqlalchemy.dialects import mysql, postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import BindParameter, ColumnElement
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import TypeDecorator, TypeEngine

from runtime_snapshot_mount import MAX_LABEL, MAX_TEXT, Snapshot, format_instant

__all__ = [
    "COLUMNS",
    "DEFAULT_TABLE_NAME",
    "AccountKey",
    "JSONText",
    "SnapshotJSON",
    "UTCDateTime",
    "check_table",
    "snapshot_from_row",
    "snapshot_json",
    "snapshot_table",
    "snapshot_values",
]

DEFAULT_TABLE_NAME = "runtime_snapshots"
COLUMNS = tuple(field.name for field in dataclasses.fields(Snapshot))
"""The table's columns: one per field of :class:`~runtime_snapshot_mount.Snapshot`, named alike."""
_MYSQL_DIALECTS = ("mysql", "mariadb")


class UTCDateTime(TypeDecorator[datetime]):
    """An aware UTC instant at microsecond precision, stored so that the database orders it.

    Binds any aware :class:`~datetime.datetime`; results are aware and in UTC. PostgreSQL
    stores ``timestamptz`` and is read as ``timezone('UTC', column)`` (so a session in another time
    zone cannot push 0001-01-01 or 9999-12-31 out of Python's range) and is sent as RFC 3339
    text that the server casts (asyncpg sends those two instants' ``datetime`` values as
    ``-infinity`` and ``infinity``, which no other driver reads back); MySQL/MariaDB store
    ``DATETIME(6)`` and SQLite fixed-width text, both holding the UTC wall time.
    """

    impl = DateTime
    cache_ok = True

    def column_expression(self, column: ColumnElement[datetime]) -> ColumnElement[datetime]:
        return _UTCWallTime(column, self)

    def bind_expression(self, bindvalue: BindParameter[datetime]) -> ColumnElement[datetime]:
        return _InstantFromText(bindvalue, self)

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.TIMESTAMP(timezone=True, precision=6))
        if dialect.name in _MYSQL_DIALECTS:
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(DateTime())

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        utc = value.astimezone(timezone.utc)
        return utc if dialect.name == "postgresql" else utc.replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


class _UTCWallTime(FunctionElement[datetime]):
    """A ``timestamptz`` column read as its UTC wall time on PostgreSQL; the bare column
    elsewhere."""

    inherit_cache = True

    def __init__(self, column: ColumnElement[datetime], type_: TypeEngine[datetime]) -> None:
        super().__init__(column)
        self.type = type_


class _InstantText(TypeDecorator[datetime]):
    """An aware instant bound as RFC 3339 text in UTC (``...T...Z``)."""

    impl = String
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> str | None:
        return None if value is None else format_instant(value)


class _InstantFromText(FunctionElement[datetime]):
    """A bound instant, sent to PostgreSQL as text and cast there; the bare bind elsewhere."""

    inherit_cache = True

    def __init__(self, bind: BindParameter[datetime], type_: TypeEngine[datetime]) -> None:
        super().__init__(bind)
        self.type = type_


@compiles(_InstantFromText)
def _bare_bind(element: _InstantFromText, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.clauses, **kw)


@compiles(_InstantFromText, "postgresql")
def _cast_text(element: _InstantFromText, compiler: SQLCompiler, **kw: Any) -> str:
    [bind] = element.clauses
    text = type_coerce(bind, _InstantText())
    return compiler.process(cast(text, postgresql.TIMESTAMP(timezone=True)), **kw)


@compiles(_UTCWallTime)
def _bare_column(element: _UTCWallTime, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.clauses, **kw)


@compiles(_UTCWallTime, "postgresql")
def _at_utc(element: _UTCWallTime, compiler: SQLCompiler, **kw: Any) -> str:
    utc = literal("UTC", String(), literal_execute=True)  # written into the statement
    return compiler.process(func.timezone(utc, *element.clauses), **kw)


class AccountKey(TypeDecorator[str]):
    """``VARCHAR(MAX_TEXT)``; on MySQL/MariaDB with a binary no-pad ``utf8mb4`` collation.

    A case-insensitive or space-padding collation would make ``"Ab"``, ``"ab"`` and
    ``"ab "`` one primary key, so three accounts would share one snapshot.
    """

    impl = String(MAX_TEXT)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name in _MYSQL_DIALECTS:
            is_mariadb = getattr(dialect, "is_mariadb", False)
            collation = "utf8mb4_nopad_bin" if is_mariadb else "utf8mb4_0900_bin"
            return dialect.type_descriptor(
                mysql.VARCHAR(MAX_TEXT, charset="utf8mb4", collation=collation)
            )
        return dialect.type_descriptor(String(MAX_TEXT))


class JSONText(TypeDecorator[Any]):
    """A JSON value kept as its text in ``LONGTEXT``: what MySQL and MariaDB get.

    Their ``JSON`` types reject or change values the core accepts: MariaDB's ``json_valid``
    check refuses nesting deeper than 31 levels, and MySQL turns integers past 64 bits into
    floats. Text keeps every value exactly.
    """

    impl = mysql.LONGTEXT
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        if value is None:
            return None
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))

    def process_result_value(self, value: str | None, dialect: Dialect) -> Any:
        return None if value is None else json.loads(value)


class SnapshotJSON(JSON):
    """SQLAlchemy's ``JSON``, under a name of its own so that Alembic migrations can render the
    columns that use it as :func:`snapshot_json` (see :mod:`.migrations`)."""


def snapshot_json() -> TypeEngine[Any]:
    """JSON; ``JSONB`` on PostgreSQL, JSON text on MySQL/MariaDB; ``None`` is SQL ``NULL``."""
    return (
        SnapshotJSON(none_as_null=True)
        .with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
        .with_variant(JSONText(), *_MYSQL_DIALECTS)
    )


def snapshot_table(
    metadata: MetaData, name: str = DEFAULT_TABLE_NAME, *, schema: str | None = None
) -> Table:
    """Define the snapshot table on ``metadata`` and return it.

    Put it on the host's own :class:`~sqlalchemy.MetaData` so that ``metadata.create_all``
    and Alembic's autogenerate see it, then pass the table to
    :class:`~runtime_snapshot_mount_sqlalchemy.SQLAlchemyStore` as ``table=``.
    """
    return Table(
        name,
        metadata,
        Column("account_id", AccountKey(), primary_key=True),
        Column("ugc_account_id", String(MAX_TEXT), nullable=False),
        Column("snapshot_id", String(MAX_TEXT), nullable=False),
        Column("strategy_version", BigInteger(), nullable=False),
        Column("content_hash", String(MAX_TEXT), nullable=False),
        Column("strategy_synced_at", UTCDateTime(), nullable=False),
        Column("stage", String(MAX_LABEL), nullable=True),
        Column("active_action", String(MAX_LABEL), nullable=True),
        Column("active_skills", snapshot_json(), nullable=True),
        Column("personality", snapshot_json(), nullable=False),
        schema=schema,
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_bin",
        mariadb_engine="InnoDB",
        mariadb_charset="utf8mb4",
        mariadb_collate="utf8mb4_bin",
    )


def check_table(table: Table) -> Table:
    """Return ``table`` if it has every snapshot column; raise :class:`ValueError` otherwise."""
    missing = [name for name in COLUMNS if name not in table.c]
    if missing:
        raise ValueError(f"table {table.name!r} lacks the snapshot columns {', '.join(missing)}")
    return table


def snapshot_values(snapshot: Snapshot) -> dict[str, Any]:
    """The row that stores ``snapshot``, as bind parameters keyed by column name (the skills
    as a JSON list)."""
    values = {name: getattr(snapshot, name) for name in COLUMNS}
    if snapshot.active_skills is not None:
        values["active_skills"] = list(snapshot.active_skills)
    return values


def snapshot_from_row(row: Mapping[Any, Any]) -> Snapshot:
    """The snapshot that a row of the table (as a mapping of column name to value) stores."""
    values = {name: row[name] for name in COLUMNS}
    values["strategy_version"] = int(values["strategy_version"])
    if values["active_skills"] is not None:
        values["active_skills"] = tuple(values["active_skills"])
    return Snapshot(**values)
