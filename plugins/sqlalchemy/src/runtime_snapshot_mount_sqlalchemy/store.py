"""The SQLAlchemy store plugin."""

from __future__ import annotations

from typing import Any

from sqlalchemy import URL, MetaData, Table, inspect, make_url
from sqlalchemy.engine import Connection
from sqlalchemy.schema import CreateTable

from runtime_snapshot_mount import Snapshot, UpsertResult, hookimpl

from .driver import DRIVERS, EXECUTIONS, Execution, runs_on
from .engines import AnyEngine, EngineRunner, create_store_engine, retry_transient
from .executors import DriverExecutor, EngineExecutor, Executor, WriterExecutor
from .schema import DEFAULT_TABLE_NAME, check_table, snapshot_table
from .sqlite_writer import SQLiteWriter, writer_for_url
from .upserts import UPSERTS, UpsertName

__all__ = ["DEFAULT_ATTEMPTS", "DEFAULT_RETRY_DEADLINE", "EXECUTIONS", "SQLAlchemyStore"]

DEFAULT_ATTEMPTS = 5
DEFAULT_RETRY_DEADLINE = 2.0


class SQLAlchemyStore:
    """Keeps each account's newest snapshot in one table of a SQL database.

    ``engine`` is the host's :class:`~sqlalchemy.ext.asyncio.AsyncEngine` or synchronous
    :class:`~sqlalchemy.engine.Engine` (whose blocking calls then run in worker threads),
    or a URL, from which the store makes its own engine (see :func:`create_store_engine`).
    ``table`` is a table made by :func:`snapshot_table` on the host's ``MetaData``; without
    it the store defines ``table_name`` on a ``MetaData`` of its own. Nothing connects until
    the first call, and tables are only created by :meth:`store_create_tables`.

    Each upsert is atomic against every writer sharing the database. Transient failures
    (see :func:`~runtime_snapshot_mount_sqlalchemy.is_transient`: deadlocks, serialization
    failures, a server restarting, refused or dropped connections) are retried with backoff.
    On a database server a call that failed retries until ``retry_deadline`` seconds (2) have
    passed since that failure -- a retry's connect or wait for a pooled connection is cut off
    then -- and raises (the app answers 500); with ``retry_deadline=None`` it makes
    ``attempts`` tries instead. On SQLite, whose writers already wait for one another (the
    busy timeout), a call makes ``attempts`` tries in all.

    ``upsert`` names the statement (see :data:`~runtime_snapshot_mount_sqlalchemy.upserts.
    UPSERTS`): ``"auto"`` picks the dialect's own; ``"locking"`` (``SELECT ... FOR UPDATE``,
    then ``INSERT`` or ``UPDATE``) works wherever rows can be locked.

    ``execution`` says how statements run. ``"driver"`` (the default): on an
    ``AsyncEngine`` on asyncpg -- the host's or one made from a ``postgresql+asyncpg://``
    URL -- or a synchronous ``Engine`` on psycopg (in worker threads), the upsert and the
    read are compiled once and run on the raw driver connections of that engine's own pool
    (see :mod:`~runtime_snapshot_mount_sqlalchemy.driver`): the
    pool's size and limits hold, but SQLAlchemy's execution events do not see these
    statements (``echo`` does not log them, ``before_cursor_execute`` listeners are not
    called). ``"sqlalchemy"`` runs every statement through SQLAlchemy's ``Connection``, where
    events and logging apply; every other engine always does.

    Made from a ``sqlite:///FILE`` URL (the command line's default store), the store's upserts
    go through a :class:`~runtime_snapshot_mount_sqlalchemy.sqlite_writer.SQLiteWriter`: one
    thread that commits every upsert waiting at that moment in one transaction (group commit);
    ``?synchronous=normal`` on the URL trades power-loss durability for speed. A host's own
    engine keeps one transaction per upsert unless ``writer`` is given (a writer on the same
    file and table). Reads always go through the engine.

    Pass the store to ``create_app``; it is deliberately not an entry-point plugin.
    """

    def __init__(
        self,
        engine: AnyEngine | str | URL,
        *,
        table: Table | None = None,
        table_name: str = DEFAULT_TABLE_NAME,
        attempts: int = DEFAULT_ATTEMPTS,
        upsert: UpsertName = "auto",
        writer: SQLiteWriter | None = None,
        retry_deadline: float | None = DEFAULT_RETRY_DEADLINE,
        execution: Execution = "driver",
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        if upsert not in UPSERTS:
            raise ValueError(f"upsert must be one of {', '.join(UPSERTS)}, not {upsert!r}")
        if retry_deadline is not None and not retry_deadline > 0:  # NaN too
            raise ValueError("retry_deadline must be a positive number of seconds, or None")
        if execution not in EXECUTIONS:
            raise ValueError(f"execution must be one of {', '.join(EXECUTIONS)}")
        self.table = (
            check_table(table) if table is not None else snapshot_table(MetaData(), table_name)
        )
        self.owns_engine = isinstance(engine, str | URL)
        if isinstance(engine, str | URL) and upsert == "auto":
            engine, url_writer = writer_for_url(engine, self.table)
            writer = writer or url_writer
        self.writer = writer
        if isinstance(engine, str | URL):
            engine = create_store_engine(engine, **_own_engine_options(engine, upsert, execution))
        self.engine = engine
        self.attempts = attempts
        self.upsert = upsert
        self.execution = execution
        sqlite = self.engine.dialect.name == "sqlite"
        self.retry_deadline = None if sqlite else retry_deadline
        self._attempts = attempts if self.retry_deadline is None else None
        self._runner = EngineRunner(self.engine)
        self.executor = self._executor()

    def _executor(self) -> Executor:
        """Where the statements run, chosen once (see :mod:`.executors`)."""
        engine = self.engine
        executor: Executor = EngineExecutor(engine, self.table, self.upsert)
        fast = self.execution == "driver" and self.upsert == "auto"
        if fast and runs_on(engine, owned=self.owns_engine):
            executor = DriverExecutor(engine, self.table, owned=self.owns_engine)
        if self.writer is not None:
            return WriterExecutor(self.writer, executor)
        return executor

    def __repr__(self) -> str:
        url = self.engine.url.render_as_string(hide_password=True)
        return f"SQLAlchemyStore({url!r}, table={self.table.name!r})"

    @hookimpl
    async def store_upsert(self, snapshot: Snapshot) -> UpsertResult:
        """Apply ``snapshot`` unless a later one is stored, atomically (see ``upserts``)."""
        upsert = self.executor.upsert
        return await retry_transient(
            lambda: upsert(snapshot), self._attempts, deadline=self.retry_deadline
        )

    @hookimpl
    async def store_get(self, account_id: str) -> Snapshot | None:
        """The snapshot stored for ``account_id``, or ``None``."""
        get = self.executor.get
        return await retry_transient(
            lambda: get(account_id), self._attempts, deadline=self.retry_deadline
        )

    @hookimpl
    async def store_create_tables(self) -> None:
        """``CREATE TABLE IF NOT EXISTS`` the snapshot table (and nothing else on its
        ``MetaData``)."""
        await self._runner.run(self._create_table_on)

    @hookimpl
    async def store_close(self) -> None:
        """Stop the SQLite writer (it answers its queued upserts first), if the store has one,
        and dispose of the engine if the store made it; a host's engine is the host's."""
        if self.writer is not None:
            await self.writer.close()
        if self.owns_engine:
            await self._runner.dispose()

    def _create_table_on(self, connection: Connection) -> None:
        """Create the table unless it exists: looked up first, so that no driver reports the
        server's "already exists" note (PyMySQL before 1.0 turns it into a Python warning);
        ``IF NOT EXISTS`` still covers two processes creating it at once."""
        with connection.begin():
            if inspect(connection).has_table(self.table.name, schema=self.table.schema):
                return
            connection.execute(CreateTable(self.table, if_not_exists=True))


def _own_engine_options(url: str | URL, upsert: UpsertName, execution: Execution) -> dict[str, Any]:
    """The options of the engine a store makes from ``url``. On asyncpg and asyncmy, whose
    statements then run in autocommit mode on the driver's connections (see :mod:`.driver`),
    the pool takes a connection back without resetting it (on asyncmy a ``ROLLBACK`` round
    trip, on asyncpg a call through SQLAlchemy's adapter): every statement there commits by
    itself, and a SQLAlchemy transaction still ends itself when its connection closes."""
    fast = upsert == "auto" and execution == "driver"
    if fast and make_url(url).get_driver_name() in DRIVERS:
        return {"pool_reset_on_return": None}
    return {}
