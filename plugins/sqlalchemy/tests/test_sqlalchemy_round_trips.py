"""Round trips: an upsert is exactly one statement on PostgreSQL, SQLite and MariaDB, applied
or ignored, and an ignored one reads nothing back (MariaDB's ``RETURNING`` gives the later row
with the same statement).

Counted with SQLAlchemy's ``before_cursor_execute`` event, which sees every statement that a
store with ``execution="sqlalchemy"`` sends (``BEGIN``/``COMMIT`` are not statements:
PostgreSQL runs the upsert in autocommit mode, and SQLite's and MariaDB's transactions open
with the write itself). The driver path's statements are counted at the driver, in
``test_sqlalchemy_compiled``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from runtime_snapshot_mount_sqlalchemy import SQLAlchemyStore
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine
from support_sqlalchemy import Database, dispose

from runtime_snapshot_mount import Plugins
from runtime_snapshot_mount.testing import make_snapshot, new_account_id

pytestmark = pytest.mark.anyio


@contextlib.contextmanager
def statements_sent(engine: AsyncEngine | Engine) -> Iterator[list[str]]:
    """Collect the SQL of every statement ``engine`` sends while the block runs."""
    sync_engine = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
    sent: list[str] = []

    def record(connection: Any, cursor: Any, statement: str, *context: Any) -> None:
        sent.append(statement)

    event.listen(sync_engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(sync_engine, "before_cursor_execute", record)


@contextlib.asynccontextmanager
async def plugins_on(
    database: Database, mode: str
) -> AsyncIterator[tuple[Plugins, AsyncEngine | Engine]]:
    """A store on a new engine, already connected and with its upsert chosen."""
    engine = database.engine(mode)
    try:
        stores = [SQLAlchemyStore(engine, table=database.table, execution="sqlalchemy")]
        plugins = Plugins(stores, entry_points=False)
        await plugins.store_upsert(make_snapshot(new_account_id()))  # connect; pick the upsert
        yield plugins, engine
    finally:
        await dispose(engine)


async def test_an_applied_upsert_is_one_statement(database: Database, mode: str) -> None:
    account_id = new_account_id()
    async with plugins_on(database, mode) as (plugins, engine):
        with statements_sent(engine) as inserted:
            assert (await plugins.store_upsert(make_snapshot(account_id, 1))).applied
        with statements_sent(engine) as updated:
            assert (await plugins.store_upsert(make_snapshot(account_id, 2))).applied
        with statements_sent(engine) as replayed:
            assert (await plugins.store_upsert(make_snapshot(account_id, 2))).applied
    print(f"\n{database.backend}/{mode}: one upsert sends\n  {updated[0]}")
    assert (len(inserted), len(updated), len(replayed)) == (1, 1, 1)
    assert "INSERT INTO" in updated[0].upper()


async def test_an_ignored_upsert_is_one_statement_too(database: Database, mode: str) -> None:
    account_id = new_account_id()
    async with plugins_on(database, mode) as (plugins, engine):
        await plugins.store_upsert(make_snapshot(account_id, 9, snapshot_id="nine"))
        with statements_sent(engine) as ignored:
            result = await plugins.store_upsert(make_snapshot(account_id, 8))
    assert not result.applied and result.current is None  # the later row is not read back
    assert len(ignored) == 1
