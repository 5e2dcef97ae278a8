"""The core's conformance kit against every backend, with an async and a sync engine."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from runtime_snapshot_mount_sqlalchemy import SQLAlchemyStore
from support_sqlalchemy import Database, dispose

from runtime_snapshot_mount.testing import StoreContract


class TestSQLAlchemyStore(StoreContract):
    """The dialect's own upsert: ON CONFLICT (PostgreSQL, SQLite), ON DUPLICATE KEY (MariaDB)."""

    @pytest.fixture
    async def store(self, database: Database, mode: str) -> AsyncIterator[SQLAlchemyStore]:
        engine = database.engine(mode)
        yield SQLAlchemyStore(engine, table=database.table)
        await dispose(engine)


class TestLockingUpsert(StoreContract):
    """The portable fallback (SELECT ... FOR UPDATE, then INSERT or UPDATE) on real row locks."""

    @pytest.fixture
    async def store(self, server_database: Database, mode: str) -> AsyncIterator[SQLAlchemyStore]:
        engine = server_database.engine(mode)
        store = SQLAlchemyStore(engine, table=server_database.table)
        store = SQLAlchemyStore(engine, table=server_database.table, upsert="locking")
        yield store
        await dispose(engine)


@pytest.mark.mariadb
class TestMySQLUpsertWithoutReturning(StoreContract):
    """MySQL's path (no RETURNING: affected rows, else a locked read-back), run on MariaDB."""

    @pytest.fixture
    async def store(self, mariadb: Database, mode: str) -> AsyncIterator[SQLAlchemyStore]:
        engine = mariadb.engine(mode)
        store = SQLAlchemyStore(engine, table=mariadb.table)
        store = SQLAlchemyStore(engine, table=mariadb.table, upsert="duplicate-key-read-back")
        yield store
        await dispose(engine)


class TestStoreMadeFromAURL(StoreContract):
    """The command line's store: an engine the store makes from a URL (on PostgreSQL through
    asyncpg it keeps its upsert connections between upserts; JSON is written by
    pydantic-core)."""

    @pytest.fixture
    async def store(self, database: Database) -> AsyncIterator[SQLAlchemyStore]:
        url = database.url("async").render_as_string(hide_password=False)
        store = SQLAlchemyStore(url, table=database.table)
        yield store
        await store.store_close()
