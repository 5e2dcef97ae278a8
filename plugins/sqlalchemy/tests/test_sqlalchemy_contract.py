"""The core's conformance kit against every backend, with an async and a sync engine.

Each class gives the kit ``another_store``: a second store with its own engine (its own
connection pool, and on SQLite its own writer lock) on the same table, as another process
would open it, so the kit proves the upsert atomic across instances as well as inside one.
The second store uses the other kind of engine (sync for async and the other way round), so
that what one driver writes, the other reads and compares alike.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from runtime_snapshot_mount_sqlalchemy import SQLAlchemyStore, opener
from runtime_snapshot_mount_sqlalchemy.engines import AnyEngine
from sqlalchemy import MetaData, Table, create_engine
from support_sqlalchemy import Database, dispose, unique_name

from runtime_snapshot_mount.testing import OpenerContract, StoreContract

OTHER_MODE = {"async": "sync", "sync": "async"}


class TestSQLAlchemyStore(StoreContract):
    """The dialect's own upsert: ON CONFLICT (PostgreSQL, SQLite), ON DUPLICATE KEY (MariaDB),
    on a host's engine: on PostgreSQL an ``AsyncEngine`` on asyncpg (the driver path, its
    statements compiled and run on the engine's own pool) and a sync engine on psycopg."""

    @pytest.fixture
    async def store(self, database: Database, mode: str) -> AsyncIterator[SQLAlchemyStore]:
        engine = database.engine(mode)
        yield SQLAlchemyStore(engine, table=database.table)
        await dispose(engine)

    @pytest.fixture
    async def another_store(self, database: Database, mode: str) -> AsyncIterator[SQLAlchemyStore]:
        engine = database.engine(OTHER_MODE[mode])
        yield SQLAlchemyStore(engine, table=database.table)
        await dispose(engine)


@pytest.mark.postgres
class TestSQLAlchemyExecution(StoreContract):
    """A host's PostgreSQL engine with ``execution="sqlalchemy"``: every statement through
    SQLAlchemy's ``Connection``; the other instance takes the default path (the driver path),
    so each reads what the other wrote."""

    @pytest.fixture
    async def store(self, postgres: Database, mode: str) -> AsyncIterator[SQLAlchemyStore]:
        engine = postgres.engine(mode)
        yield SQLAlchemyStore(engine, table=postgres.table, execution="sqlalchemy")
        await dispose(engine)

    @pytest.fixture
    async def another_store(self, postgres: Database) -> AsyncIterator[SQLAlchemyStore]:
        engine = postgres.engine("async")
        yield SQLAlchemyStore(engine, table=postgres.table)
        await dispose(engine)


class TestLockingUpsert(StoreContract):
    """The portable fallback (SELECT ... FOR UPDATE, then INSERT or UPDATE) on real row locks."""

    @staticmethod
    def locking_store(database: Database, engine: AnyEngine) -> SQLAlchemyStore:
        # the fallback the dialect would not pick
        return SQLAlchemyStore(engine, table=database.table, upsert="locking")

    @pytest.fixture
    async def store(self, server_database: Database, mode: str) -> AsyncIterator[SQLAlchemyStore]:
        engine = server_database.engine(mode)
        yield self.locking_store(server_database, engine)
        await dispose(engine)

    @pytest.fixture
    async def another_store(
        self, server_database: Database, mode: str
    ) -> AsyncIterator[SQLAlchemyStore]:
        engine = server_database.engine(OTHER_MODE[mode])
        yield self.locking_store(server_database, engine)
        await dispose(engine)


@pytest.mark.mariadb
class TestMySQLUpsertWithoutReturning(StoreContract):
    """MySQL's path (no RETURNING: affected rows, else a locked read-back), run on MariaDB."""

    @staticmethod
    def mysql_store(database: Database, engine: AnyEngine) -> SQLAlchemyStore:
        return SQLAlchemyStore(engine, table=database.table, upsert="duplicate-key-read-back")

    @pytest.fixture
    async def store(self, mariadb: Database, mode: str) -> AsyncIterator[SQLAlchemyStore]:
        engine = mariadb.engine(mode)
        yield self.mysql_store(mariadb, engine)
        await dispose(engine)

    @pytest.fixture
    async def another_store(self, mariadb: Database, mode: str) -> AsyncIterator[SQLAlchemyStore]:
        engine = mariadb.engine(OTHER_MODE[mode])
        yield self.mysql_store(mariadb, engine)
        await dispose(engine)


class TestStoreMadeFromAURL(StoreContract):
    """The command line's store: an engine the store makes from a URL (on PostgreSQL through
    asyncpg and MariaDB through asyncmy, the driver path on that engine's pool; JSON is
    written by pydantic-core)."""

    @pytest.fixture
    async def store(self, database: Database) -> AsyncIterator[SQLAlchemyStore]:
        url = database.url("async").render_as_string(hide_password=False)
        store = SQLAlchemyStore(url, table=database.table)
        yield store
        await store.store_close()

    @pytest.fixture
    async def another_store(self, database: Database) -> AsyncIterator[SQLAlchemyStore]:
        url = database.url("sync").render_as_string(hide_password=False)
        store = SQLAlchemyStore(url, table=database.table)
        yield store
        await store.store_close()


class TestSQLAlchemyOpener(OpenerContract):
    """The entry point's module on each backend, on a table of its own that the kit creates."""

    @pytest.fixture
    def opener(self) -> object:
        return opener

    @pytest.fixture
    def opener_url(self, database: Database, mode: str) -> Iterator[str]:
        name = unique_name("rsm_opener")
        url = database.url(mode).update_query_dict({"table": name})
        yield url.render_as_string(hide_password=False)
        engine = create_engine(database.sync_url)
        Table(name, MetaData()).drop(engine, checkfirst=True)
        engine.dispose()
