"""The asyncpg upsert: a store's statements as single calls on an asyncpg pool of its own.

A store made from a ``postgresql+asyncpg://`` URL (what ``serve --store`` gives) runs its
upserts and reads here rather than through SQLAlchemy's execution machinery, which costs
several times the CPU of the one round trip each makes. Only public asyncpg API is used:

* the pool is :func:`asyncpg.create_pool`, opened lazily on the running event loop at the
  first call (a mounted app's lifespan may never run; a database that is down then is
  tried again at the next call), of up to ``POOL_SIZE`` connections opened on demand, and
  closed by :meth:`AsyncpgUpsert.close`; it does not reset connections it takes back (that
  costs a round trip): every statement here is one autocommitted statement, leaving nothing
  to reset;
* each call is ``async with pool.acquire()`` and one ``fetchrow``, which asyncpg prepares
  once per connection; a connection that broke, fell out of step with the server or was
  cancelled mid-call is closed rather than reused, its failure is raised as a
  :class:`ConnectionResetError` (transient: the upsert is retried, which is safe, since
  applying a snapshot twice stores it once), and the pool's other connections, likely opened
  to the same lost server, are expired, so a retry gets a fresh one;
* the SQL text is written here from the table's column names, with the parameters in
  :data:`~runtime_snapshot_mount_sqlalchemy.schema.COLUMNS` order: JSON as text (asyncpg
  sends text for ``jsonb``) read back parsed, the instant as RFC 3339 text cast by the server
  (asyncpg would send the first and last instants as -infinity and infinity), read
  back ``AT TIME ZONE 'UTC'`` (a naive UTC wall time, so no session time zone can push
  0001-01-01 or 9999-12-31 out of Python's range);
* errors are asyncpg's own, raised as they come: ``is_transient`` judges them by their
  ``sqlstate``, or as connection errors.

The upsert is :class:`~runtime_snapshot_mount_sqlalchemy.upserts.AnsweringUpsert`'s
statement: one round trip whether the snapshot is applied or ignored.
"""

from __future__ import annotations

import asyncio
import json
import operator
from collections.abc import Mapping, Sequence
from datetime import timezone
from typing import Any

from sqlalchemy import URL, Table

from runtime_snapshot_mount import Snapshot, UpsertResult, format_instant, is_stale

from .engines import POOL_SIZE, LostRace, json_text
from .schema import COLUMNS

__all__ = ["AsyncpgUpsert", "connect_options", "quote", "select_sql", "upsert_sql"]

_UPDATED = COLUMNS[1:]  # every column but the key
_FIELDS = operator.attrgetter(*COLUMNS)  # a snapshot's fields as a tuple, in one call
_SYNCED, _SKILLS = COLUMNS.index("strategy_synced_at"), COLUMNS.index("active_skills")
_JSON_AT = (_SKILLS, COLUMNS.index("personality"))  # jsonb: sent and read back as text


def quote(name: str) -> str:
    """``name`` as a PostgreSQL quoted identifier (which matches it exactly)."""
    return '"' + name.replace('"', '""') + '"'


def _names(table: Table) -> tuple[str, dict[str, str]]:
    """The table's quoted (and schema-qualified) name, and each snapshot column's quoted
    name (a host's table may name a column other than its key)."""
    name = quote(table.name)
    if table.schema is not None:
        name = f"{quote(table.schema)}.{name}"
    return name, {field: quote(table.c[field].name) for field in COLUMNS}


def _read(columns: dict[str, str], alias: str) -> str:
    """The select list of a stored snapshot: its columns in ``COLUMNS`` order."""
    return ", ".join(
        f"{alias}.{columns[field]} AT TIME ZONE 'UTC'"
        if field == "strategy_synced_at"
        else f"{alias}.{columns[field]}"
        for field in COLUMNS
    )


def _placeholder(number: int) -> str:
    """``$n``; the instant is sent as RFC 3339 text and cast by the server, because asyncpg
    sends 0001-01-01T00:00:00Z and 9999-12-31T23:59:59.999999Z as -infinity and infinity."""
    return f"${number}::text::timestamptz" if number == _SYNCED + 1 else f"${number}"


def upsert_sql(table: Table) -> str:
    """The upsert that answers for both outcomes, with ``$1``..``$10`` the ``COLUMNS``.

    Its one row is ``(applied, <stored columns>)``: ``applied`` 1 with the columns ``NULL``,
    or 0 with the stored row as the statement's snapshot saw it (``NULL`` if it saw none).
    """
    name, c = _names(table)
    version, synced = c["strategy_version"], c["strategy_synced_at"]
    return (
        f"WITH written AS (INSERT INTO {name} AS stored ({', '.join(c.values())}) "
        f"VALUES ({', '.join(_placeholder(n) for n in range(1, len(COLUMNS) + 1))}) "
        f"ON CONFLICT ({c['account_id']}) DO UPDATE SET "
        + ", ".join(f"{c[field]} = EXCLUDED.{c[field]}" for field in _UPDATED)
        + f" WHERE stored.{version} < EXCLUDED.{version} OR (stored.{version} = "
        f"EXCLUDED.{version} AND stored.{synced} <= EXCLUDED.{synced}) "
        f"RETURNING stored.{c['account_id']}) "
        f"SELECT w.applied, {_read(c, 'stored')} "
        f"FROM (SELECT count(*) AS applied FROM written) AS w "
        f"LEFT OUTER JOIN {name} AS stored ON stored.{c['account_id']} = $1 AND w.applied = 0"
    )


def select_sql(table: Table) -> str:
    """The stored snapshot of the account ``$1``, columns in ``COLUMNS`` order."""
    name, c = _names(table)
    return f"SELECT {_read(c, 'stored')} FROM {name} AS stored WHERE stored.{c['account_id']} = $1"


def connect_options(url: URL) -> dict[str, Any]:
    """:func:`asyncpg.connect`'s keyword arguments for a ``postgresql+asyncpg`` URL, as
    SQLAlchemy's asyncpg dialect passes them: host, port, user, password and database, and
    the query's parameters (``?ssl=require``); SQLAlchemy's ``prepared_statement_cache_size``
    becomes asyncpg's ``statement_cache_size``."""
    options: dict[str, Any] = url.translate_connect_args(username="user")
    options.update(url.query)
    if "port" in options:
        options["port"] = int(options["port"])
    if "prepared_statement_cache_size" in options:
        options["statement_cache_size"] = int(options.pop("prepared_statement_cache_size"))
    return options


async def _keep(connection: Any) -> None:
    """The pool's ``reset``: a connection goes back as it is (see the module's notes)."""


class AsyncpgUpsert:
    """Upserts and reads of ``table`` on an asyncpg pool this object opens and closes.

    ``connect`` are :func:`asyncpg.connect`'s keyword arguments (see :func:`connect_options`);
    ``pool_size`` the most connections the pool opens.
    """

    def __init__(
        self, table: Table, connect: Mapping[str, Any], *, pool_size: int = POOL_SIZE
    ) -> None:
        self.connect = dict(connect)
        self.pool_size = pool_size
        self.upsert_sql = upsert_sql(table)
        self.select_sql = select_sql(table)
        self.pool: Any = None  # an asyncpg.Pool once opened
        self._opening: asyncio.Lock | None = None

    async def upsert(self, snapshot: Snapshot) -> UpsertResult:
        """Apply ``snapshot`` unless a later one is stored: one round trip either way, and
        rarely a second when ignored (see ``AnsweringUpsert``)."""
        pool = await self.open()
        async with pool.acquire() as connection:
            row = await self._fetchrow(pool, connection, self.upsert_sql, *parameters(snapshot))
            if row[0]:
                return UpsertResult(applied=True, current=snapshot)
            if row[1] is not None:
                current = snapshot_from_record(tuple(row)[1:])
                if is_stale(snapshot, current):
                    return UpsertResult(applied=False, current=current)
            row = await self._fetchrow(pool, connection, self.select_sql, snapshot.account_id)
        later = None if row is None else snapshot_from_record(row)
        if later is None or not is_stale(snapshot, later):
            raise LostRace(f"the snapshot of {snapshot.account_id!r} changed while it was read")
        return UpsertResult(applied=False, current=later)

    async def get(self, account_id: str) -> Snapshot | None:
        """The snapshot stored for ``account_id``, or ``None``."""
        pool = await self.open()
        async with pool.acquire() as connection:
            row = await self._fetchrow(pool, connection, self.select_sql, account_id)
        return None if row is None else snapshot_from_record(row)

    async def open(self) -> Any:
        """The pool, opened on the running loop at the first call (opening no connection)."""
        if self.pool is None:
            if self._opening is None:
                self._opening = asyncio.Lock()
            async with self._opening:
                if self.pool is None:
                    import asyncpg  # type: ignore[import-untyped]  # only where it is used

                    self.pool = await asyncpg.create_pool(
                        **self.connect, min_size=0, max_size=self.pool_size, reset=_keep
                    )
        return self.pool

    async def close(self) -> None:
        """Close the pool's connections (a later call opens a new pool)."""
        pool, self.pool, self._opening = self.pool, None, None
        if pool is not None:
            await pool.close()

    @staticmethod
    async def _fetchrow(pool: Any, connection: Any, sql: str, *arguments: Any) -> Any:
        try:
            return await connection.fetchrow(sql, *arguments)
        except Exception as error:
            from asyncpg.exceptions import InternalClientError  # type: ignore[import-untyped]

            lost = _lost(connection)
            if not lost and not isinstance(error, InternalClientError):
                raise  # the server's answer on a sound connection: is_transient judges it
            if not lost:  # out of step with the server (it sent a FATAL while idle, say)
                _terminate(connection)
            await pool.expire_connections()  # the others were opened to the same server
            raise ConnectionResetError(f"the database connection was lost: {error}") from error


def _terminate(connection: Any) -> None:
    """Close ``connection`` at once, so that the pool never hands it out again."""
    try:
        connection.terminate()
    except Exception:  # already taken back by the pool: it is closed
        return


def _lost(connection: Any) -> bool:
    """True when ``connection`` closed; a pool connection whose link broke mid-call is taken
    back by the pool at once, and then refuses even ``is_closed()``: lost too."""
    try:
        return bool(connection.is_closed())
    except Exception:
        return True


def parameters(snapshot: Snapshot) -> list[Any]:
    """``$1``..``$10`` for ``snapshot``: its fields in ``COLUMNS`` order (the order of
    :class:`~runtime_snapshot_mount.Snapshot`'s fields), the instant in UTC, JSON as text."""
    values = list(_FIELDS(snapshot))
    values[_SYNCED] = format_instant(snapshot.strategy_synced_at)
    for at in _JSON_AT:
        if values[at] is not None:
            values[at] = json_text(values[at])
    return values


def snapshot_from_record(record: Sequence[Any]) -> Snapshot:
    """The snapshot of a row read by :func:`select_sql` (its values in ``COLUMNS`` order)."""
    values = list(record)
    values[_SYNCED] = values[_SYNCED].replace(tzinfo=timezone.utc)
    for at in _JSON_AT:
        if values[at] is not None:
            values[at] = json.loads(values[at])
    if values[_SKILLS] is not None:
        values[_SKILLS] = tuple(values[_SKILLS])
    return Snapshot(**dict(zip(COLUMNS, values, strict=True)))
