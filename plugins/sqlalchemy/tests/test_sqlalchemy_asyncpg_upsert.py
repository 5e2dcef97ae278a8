"""The asyncpg upsert: which stores take it, what it sends, the same answers, concurrency, faults.

A store made from a ``postgresql+asyncpg://`` URL runs its upserts and reads on an asyncpg
pool of its own (``runtime_snapshot_mount_sqlalchemy.asyncpg_upsert``). SQLAlchemy's events
do not see those calls, so these tests count statements at the driver: every public asyncpg
method that sends one. The conformance kit runs on it in ``test_sqlalchemy_contract.py``
(``TestStoreMadeFromAURL``, postgres).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import asyncpg
import pytest
from asyncpg.prepared_stmt import PreparedStatement
from runtime_snapshot_mount_sqlalchemy import SQLAlchemyStore, create_store_engine
from runtime_snapshot_mount_sqlalchemy.asyncpg_upsert import (
    AsyncpgUpsert,
    connect_options,
    parameters,
    select_sql,
    upsert_sql,
)
from runtime_snapshot_mount_sqlalchemy.engines import POOL_SIZE
from runtime_snapshot_mount_sqlalchemy.schema import COLUMNS, snapshot_table
from sqlalchemy import MetaData, Table, create_engine, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import QueuePool
from support_sqlalchemy import Database, TcpProxy, dispose, unique_name

from runtime_snapshot_mount import Snapshot, is_stale
from runtime_snapshot_mount.testing import make_snapshot, new_account_id

pytestmark = pytest.mark.anyio

# Every asyncpg method that sends a statement (a pool's reset would go through execute).
SENDING = {
    asyncpg.Connection: ("execute", "executemany", "fetch", "fetchrow", "fetchval"),
    PreparedStatement: ("executemany", "fetch", "fetchrow", "fetchval"),
}


@contextlib.contextmanager
def asyncpg_statements(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, str]]]:
    """Record ``(method, SQL)`` for every statement any asyncpg connection sends meanwhile."""
    sent: list[tuple[str, str]] = []

    def counting(cls: type, name: str) -> Any:
        original = getattr(cls, name)

        async def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            query = self.get_query() if isinstance(self, PreparedStatement) else args[0]
            sent.append((f"{cls.__name__}.{name}", query))
            return await original(self, *args, **kwargs)

        return wrapper

    with monkeypatch.context() as patch:
        for cls, names in SENDING.items():
            for name in names:
                patch.setattr(cls, name, counting(cls, name))
        yield sent


def dsn(database: Database) -> str:
    """``database`` as a libpq URL, for a plain asyncpg connection of the test's own."""
    url = database.async_url.set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


@contextlib.asynccontextmanager
async def asyncpg_upsert(
    database: Database, table: Table | None = None, pool_size: int = POOL_SIZE, **connect: Any
) -> AsyncIterator[AsyncpgUpsert]:
    """The asyncpg upsert on ``database`` (its table unless ``table``), closed afterwards;
    ``connect`` adds to or overrides asyncpg's connect arguments."""
    options = {**connect_options(database.async_url), **connect}
    table = table if table is not None else database.table
    upsert = AsyncpgUpsert(table, options, pool_size=pool_size)
    try:
        yield upsert
    finally:
        await upsert.close()


@contextlib.asynccontextmanager
async def row_locked(database: Database, account_id: str) -> AsyncIterator[None]:
    """Hold ``account_id``'s row locked (``SELECT ... FOR UPDATE``) while the block runs."""
    connection = await asyncpg.connect(dsn(database))
    try:
        async with connection.transaction():
            table = database.table.name
            await connection.execute(
                f"SELECT 1 FROM {table} WHERE account_id = $1 FOR UPDATE", account_id
            )
            yield
    finally:
        await connection.close()


# -- which stores take it, and what it is made of (no database needed) -------------------


@pytest.mark.sqlite
@pytest.mark.parametrize(
    ("url", "options", "expected"),
    [
        ("postgresql+asyncpg://u@h/d", {}, True),
        ("postgresql+asyncpg://u@h/d", {"upsert": "on-conflict"}, False),
        ("postgresql+asyncpg://u@h/d", {"upsert": "locking"}, False),
        ("postgresql+psycopg://u@h/d", {}, False),
        ("sqlite+aiosqlite:///x.db", {}, False),
        ("mysql+asyncmy://u@h/d", {}, False),
    ],
)
async def test_only_a_store_made_from_an_asyncpg_url_owns_an_asyncpg_pool(
    url: str, options: dict[str, Any], expected: bool
) -> None:
    store = SQLAlchemyStore(url, **options)
    try:
        assert (store.asyncpg is not None) is expected
    finally:
        await store.store_close()


@pytest.mark.sqlite
async def test_a_hosts_engine_on_asyncpg_runs_through_sqlalchemy() -> None:
    engine = create_async_engine("postgresql+asyncpg://u@h/d")
    store = SQLAlchemyStore(engine)
    assert store.asyncpg is None
    await store.store_close()
    await engine.dispose()


@pytest.mark.sqlite
def test_an_unknown_upsert_name_is_refused() -> None:
    with pytest.raises(ValueError, match="upsert must be one of"):
        SQLAlchemyStore("sqlite://", upsert="merge")  # type: ignore[arg-type]


@pytest.mark.sqlite
def test_connect_options_are_what_sqlalchemys_asyncpg_dialect_passes() -> None:
    url = make_url(
        "postgresql+asyncpg://me:p%40ss@db.example:6543/snaps"
        "?ssl=require&prepared_statement_cache_size=0"
    )
    assert connect_options(url) == {
        "host": "db.example",
        "port": 6543,
        "user": "me",
        "password": "p@ss",
        "database": "snaps",
        "ssl": "require",
        "statement_cache_size": 0,
    }
    assert connect_options(make_url("postgresql+asyncpg:///snaps")) == {"database": "snaps"}


@pytest.mark.sqlite
def test_the_statements_quote_every_name_and_bind_the_columns_in_order() -> None:
    table = snapshot_table(MetaData(), 'We"ird Name', schema="Snap Shots")
    upsert, select = upsert_sql(table), select_sql(table)
    assert upsert.startswith('WITH written AS (INSERT INTO "Snap Shots"."We""ird Name" AS stored')
    names = ", ".join(f'"{name}"' for name in COLUMNS)
    values = ", ".join("$6::text::timestamptz" if n == 6 else f"${n}" for n in range(1, 11))
    assert f'({names}) VALUES ({values}) ON CONFLICT ("account_id")' in upsert
    assert "\"strategy_synced_at\" AT TIME ZONE 'UTC'" in upsert
    assert "$11" not in upsert
    assert select.endswith(
        'FROM "Snap Shots"."We""ird Name" AS stored WHERE stored."account_id" = $1'
    )


@pytest.mark.sqlite
def test_parameters_are_the_fields_in_column_order_with_json_as_text() -> None:
    synced = datetime(2026, 3, 22, 10, 30, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    snapshot = dataclasses.replace(
        make_snapshot("a", 2**63 - 1, active_skills=None), strategy_synced_at=synced
    )
    bound = tuple(parameters(snapshot))
    assert bound[:5] == ("a", "ugc_123", snapshot.snapshot_id, 2**63 - 1, "sha256:abc123")
    assert bound[5] == "2026-03-22T08:30:00.123456Z"  # text in UTC: the server casts it
    assert bound[6:8] == ("warmup", "keyword_warmup")
    assert bound[8] is None  # absent skills: SQL NULL, not JSON null
    assert bound[9] == (
        '{"comment_style":"casual, validating","interests":["healthy recipes","meal prep"]}'
    )
    skilled = parameters(make_snapshot("a", active_skills=("x", "ü")))
    assert skilled[8] == '["x","ü"]'


@pytest.mark.sqlite
def test_a_store_made_from_a_server_url_keeps_a_fixed_pool_of_connections() -> None:
    for url in ("postgresql+asyncpg://u@h/d", "mysql+pymysql://u@h/d"):
        engine = create_store_engine(url)
        sync_engine = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
        assert isinstance(sync_engine.pool, QueuePool)
        assert sync_engine.pool.size() == POOL_SIZE
        sync_engine.dispose()


# -- one asyncpg call per upsert, applied or ignored --------------------------------------


@pytest.mark.postgres
async def test_an_upsert_is_one_asyncpg_call_applied_or_ignored(
    postgres: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    account_id = new_account_id()
    store = SQLAlchemyStore(postgres.async_url, table=postgres.table)
    try:
        assert (await store.store_upsert(make_snapshot(new_account_id()))).applied  # connect
        calls = []
        steps = [(1, True, 1), (2, True, 2), (2, True, 2), (1, False, 2), (3, True, 3)]
        for version, applied, current in steps:  # insert, update, replay, stale, update
            with asyncpg_statements(monkeypatch) as sent:
                result = await store.store_upsert(make_snapshot(account_id, version))
            assert (result.applied, result.current.strategy_version) == (applied, current)
            calls.append(sent)
        with asyncpg_statements(monkeypatch) as read:
            stored = await store.store_get(account_id)
    finally:
        await store.store_close()
    for sent in calls:
        assert len(sent) == 1, sent  # no BEGIN, no COMMIT, no reset, no second statement
        method, sql = sent[0]
        assert method == "Connection.fetchrow"
        assert sql.startswith("WITH written AS (INSERT") and "ON CONFLICT" in sql
    assert stored is not None and stored.strategy_version == 3
    assert [method for method, _ in read] == ["Connection.fetchrow"]


@pytest.mark.postgres
async def test_the_asyncpg_upsert_stores_and_answers_like_sqlalchemy(postgres: Database) -> None:
    """The same snapshots through the asyncpg upsert and through SQLAlchemy's (the same URL
    with ``upsert="on-conflict"``): stored alike, answered alike."""
    cases: list[dict[str, Any]] = [
        {"strategy_synced_at": datetime(1, 1, 1, tzinfo=timezone.utc)},
        {"strategy_synced_at": datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc)},
        {"personality": {"deep": [[[{"x": "é🌱"}]]], "big": 2**70, "f": 0.1, "n": None}},
        {"active_skills": None, "stage": None, "active_action": None, "personality": {}},
        {"active_skills": (), "personality": {"k": [], "e": {}}},
    ]
    fast = SQLAlchemyStore(postgres.async_url, table=postgres.table)
    slow = SQLAlchemyStore(postgres.async_url, table=postgres.table, upsert="on-conflict")
    assert fast.asyncpg is not None and slow.asyncpg is None
    try:
        for case in cases:
            answers = []
            for store in (fast, slow):
                account_id = new_account_id()
                snapshot = dataclasses.replace(make_snapshot(account_id, 7), **case)
                later = make_snapshot(account_id, 8, snapshot_id="later")
                assert (await store.store_upsert(snapshot)).applied
                assert await store.store_get(account_id) == snapshot
                other = slow if store is fast else fast  # what one wrote, the other reads
                assert await other.store_get(account_id) == snapshot
                assert (await store.store_upsert(later)).applied
                ignored = await store.store_upsert(snapshot)
                assert not ignored.applied and ignored.current == later
                answers.append(dataclasses.replace(ignored.current, account_id="-"))
            assert answers[0] == answers[1]
    finally:
        await fast.store_close()
        await slow.store_close()


@pytest.mark.postgres
@pytest.mark.parametrize("zone", ["Pacific/Kiritimati", "America/Adak"])
async def test_sessions_in_any_time_zone_keep_instants_at_the_ends_of_the_range(
    postgres: Database, zone: str
) -> None:
    async with asyncpg_upsert(postgres, server_settings={"timezone": zone}) as upsert:
        for synced_at in ("0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z"):
            account_id = new_account_id()
            snapshot = make_snapshot(account_id, 5, synced_at=synced_at)
            assert (await upsert.upsert(snapshot)).applied
            assert await upsert.get(account_id) == snapshot
            ignored = await upsert.upsert(make_snapshot(account_id, 4, synced_at=synced_at))
            assert not ignored.applied and ignored.current == snapshot


@pytest.mark.postgres
async def test_a_table_whose_name_needs_quoting(postgres: Database) -> None:
    metadata = MetaData()
    table = snapshot_table(metadata, f'RSM "Quoted" {unique_name()}')
    engine = create_engine(postgres.sync_url)
    metadata.create_all(engine)
    try:
        async with asyncpg_upsert(postgres, table) as upsert:
            account_id = new_account_id()
            assert (await upsert.upsert(make_snapshot(account_id, 2))).applied
            assert not (await upsert.upsert(make_snapshot(account_id, 1))).applied
            stored = await upsert.get(account_id)
            assert stored is not None and stored.strategy_version == 2
    finally:
        metadata.drop_all(engine)
        engine.dispose()


# -- concurrency ------------------------------------------------------------------------


def shuffled_snapshots(account_id: str, count: int) -> list[Snapshot]:
    """``count`` snapshots of one account in random order, with versions and instants that
    repeat, so that many compare equal on one part of the stale rule and differ on the other;
    one of them is the greatest (version, instant) alone."""
    base = datetime(2026, 3, 22, tzinfo=timezone.utc)
    snapshots = [
        dataclasses.replace(
            make_snapshot(account_id, random.randint(1, 12), snapshot_id=f"s{n}"),
            strategy_synced_at=base + timedelta(seconds=random.randint(0, 20)),
        )
        for n in range(count - 1)
    ]
    greatest = dataclasses.replace(
        make_snapshot(account_id, 13, snapshot_id="greatest"),
        strategy_synced_at=base + timedelta(seconds=21),
    )
    snapshots.append(greatest)
    random.shuffle(snapshots)
    return snapshots


@pytest.mark.postgres
@pytest.mark.parametrize("path", ["asyncpg", "sqlalchemy-async", "sqlalchemy-sync"])
async def test_concurrent_upserts_on_one_account_justify_every_ignore(
    postgres: Database, path: str
) -> None:
    """300 upserts of one account at once, from two stores (two pools, up to 40 server
    sessions): every ignored answer names a stored snapshot strictly later than the incoming
    one, every applied answer its own, and the greatest snapshot is what stays stored."""
    engines: list[Any] = []
    stores: list[SQLAlchemyStore] = []
    for _ in range(2):
        if path == "asyncpg":
            stores.append(SQLAlchemyStore(postgres.async_url, table=postgres.table))
        else:
            engine = postgres.engine(path.removeprefix("sqlalchemy-"), pool_size=20)
            engines.append(engine)
            stores.append(SQLAlchemyStore(engine, table=postgres.table))
    account_id = new_account_id()
    snapshots = shuffled_snapshots(account_id, 300)
    sent = {snapshot.snapshot_id: snapshot for snapshot in snapshots}
    try:
        results = await asyncio.gather(
            *(stores[n % 2].store_upsert(snapshot) for n, snapshot in enumerate(snapshots))
        )
        for snapshot, result in zip(snapshots, results, strict=True):
            if result.applied:
                assert result.current == snapshot
            else:
                assert is_stale(snapshot, result.current), (snapshot, result.current)
                assert result.current == sent[result.current.snapshot_id]  # one that was sent
        assert any(not result.applied for result in results)
        greatest = max(snapshots, key=lambda snapshot: snapshot.freshness)
        assert await stores[0].store_get(account_id) == greatest
        for store in stores:
            if store.asyncpg is not None:
                assert store.asyncpg.pool.get_size() <= POOL_SIZE
    finally:
        for store in stores:
            await store.store_close()
        for engine in engines:
            await dispose(engine)


# -- faults -----------------------------------------------------------------------------


@pytest.mark.postgres
async def test_a_connection_broken_mid_call_is_not_reused(postgres: Database) -> None:
    """An upsert waiting on a row lock when its connection is cut fails; the pool drops that
    connection, and once the database is reachable again the next upsert applies at once."""
    account_id = new_account_id()
    async with asyncpg_upsert(postgres) as seed:
        assert (await seed.upsert(make_snapshot(account_id, 1))).applied
    url = postgres.async_url
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    await proxy.start()
    try:
        async with asyncpg_upsert(postgres, host="127.0.0.1", port=proxy.port) as upsert:
            assert (await upsert.upsert(make_snapshot(account_id, 2))).applied
            async with row_locked(postgres, account_id):
                waiting = asyncio.ensure_future(upsert.upsert(make_snapshot(account_id, 3)))
                await asyncio.sleep(0.3)  # the upsert now waits on the lock
                assert not waiting.done()
                await proxy.stop()
                with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, OSError)):
                    await asyncio.wait_for(waiting, 10)
            await proxy.start()
            assert upsert.pool.get_idle_size() == 0  # the broken connection was not kept
            with pytest.MonkeyPatch.context() as patch, asyncpg_statements(patch) as sent:
                assert (await upsert.upsert(make_snapshot(account_id, 4))).applied
            assert len(sent) == 1  # on a new connection at the first try
            stored = await upsert.get(account_id)
            assert stored is not None and stored.strategy_version == 4
    finally:
        await proxy.stop()


@pytest.mark.postgres
async def test_an_upsert_cancelled_midway_writes_nothing_and_frees_its_connection(
    postgres: Database,
) -> None:
    account_id = new_account_id()
    async with asyncpg_upsert(postgres, pool_size=1) as upsert:  # the next must get it back
        assert (await upsert.upsert(make_snapshot(account_id, 1))).applied
        async with row_locked(postgres, account_id):
            waiting = asyncio.ensure_future(upsert.upsert(make_snapshot(account_id, 2)))
            await asyncio.sleep(0.3)
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
        stored = await upsert.get(account_id)
        assert stored is not None and stored.strategy_version == 1  # the cancelled one: not
        assert (await asyncio.wait_for(upsert.upsert(make_snapshot(account_id, 3)), 10)).applied


@pytest.mark.postgres
async def test_a_database_down_at_first_use_is_tried_again_at_the_next_call(
    postgres: Database,
) -> None:
    url = postgres.async_url
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    await proxy.start()
    await proxy.stop()  # the port is reserved, nothing listens
    try:
        async with asyncpg_upsert(postgres, host="127.0.0.1", port=proxy.port) as upsert:
            with pytest.raises(OSError):
                await upsert.upsert(make_snapshot(new_account_id()))
            await proxy.start()
            assert (await upsert.upsert(make_snapshot(new_account_id()))).applied
    finally:
        await proxy.stop()


@pytest.mark.postgres
async def test_close_closes_the_pool_and_a_later_call_opens_another(postgres: Database) -> None:
    async with asyncpg_upsert(postgres) as upsert:
        assert (await upsert.upsert(make_snapshot(new_account_id()))).applied
        pool = upsert.pool
        await upsert.close()
        assert upsert.pool is None and pool.is_closing()
        assert (await upsert.upsert(make_snapshot(new_account_id()))).applied
        assert upsert.pool is not None and upsert.pool is not pool
