"""Compiled statements on a driver's own connections: what they send, the same answers, the
host's pool, concurrency, faults.

A store on an ``AsyncEngine`` on asyncpg -- the host's, or one it made from a URL -- runs its
upsert and read compiled, on the raw asyncpg connections of that engine's pool
(``runtime_snapshot_mount_sqlalchemy.driver``). SQLAlchemy's execution events do not see
those calls, so these tests count statements at the driver: every public asyncpg method that
sends one. The conformance kit runs on this path in ``test_sqlalchemy_contract.py`` (the
postgres-async engine and ``TestStoreMadeFromAURL``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import random
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import asyncpg
import pytest
from asyncpg.prepared_stmt import PreparedStatement
from runtime_snapshot_mount_sqlalchemy import SQLAlchemyAccounts, SQLAlchemyStore
from runtime_snapshot_mount_sqlalchemy.compiled import CompiledStatement
from runtime_snapshot_mount_sqlalchemy.executors import (
    DriverExecutor,
    EngineExecutor,
    WriterExecutor,
)
from runtime_snapshot_mount_sqlalchemy.schema import COLUMNS, snapshot_table, snapshot_values
from runtime_snapshot_mount_sqlalchemy.upserts import on_conflict, select_current
from sqlalchemy import (
    Boolean,
    Column,
    MetaData,
    String,
    Table,
    create_engine,
    event,
    insert,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from support_sqlalchemy import Database, TcpProxy, unique_name

from runtime_snapshot_mount import Account, Snapshot, is_stale
from runtime_snapshot_mount.testing import make_snapshot, new_account_id

pytestmark = pytest.mark.anyio

# Every asyncpg method that sends a statement.
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


@contextlib.asynccontextmanager
async def host_engine(database: Database, **options: Any) -> AsyncIterator[AsyncEngine]:
    """A host's ``AsyncEngine`` on asyncpg, as a host makes it (SQLAlchemy's defaults)."""
    url = options.pop("url", database.async_url)
    engine = create_async_engine(url, **options)
    try:
        yield engine
    finally:
        await engine.dispose()


@contextlib.asynccontextmanager
async def row_locked(engine: AsyncEngine, table: Table, account_id: str) -> AsyncIterator[None]:
    """Hold ``account_id``'s row locked (``SELECT ... FOR UPDATE``) while the block runs."""
    async with engine.connect() as connection, connection.begin():
        locking = select(table.c.account_id).where(table.c.account_id == account_id)
        await connection.execute(locking.with_for_update())
        yield


# -- the compiled statement (no database needed) ------------------------------------------


def test_a_statement_compiles_once_to_the_dialects_positional_sql() -> None:
    table = snapshot_table(MetaData(), "snaps")
    upsert = CompiledStatement(
        on_conflict(table, "postgresql").statement, postgresql.asyncpg.dialect()
    )
    assert upsert.sql.startswith("INSERT INTO snaps (account_id, ugc_account_id")
    assert "ON CONFLICT (account_id) DO UPDATE SET" in upsert.sql
    assert upsert.sql.endswith("RETURNING snaps.account_id")
    assert "$10" in upsert.sql and "$11" not in upsert.sql  # one parameter per column
    assert upsert.columns == ("account_id",)
    read = CompiledStatement(select_current(table), sqlite.pysqlite.dialect())
    assert read.sql.count("?") == 1 and read.columns == COLUMNS


def test_parameters_are_bound_as_sqlalchemy_binds_them() -> None:
    """The column types' own processors: the instant as RFC 3339 text (PostgreSQL casts it),
    JSON as text; parameters in the statement's order."""
    table = snapshot_table(MetaData())
    snapshot = make_snapshot("a", 3, "2026-03-22T08:30:00+02:00", active_skills=("x", "ü"))
    upsert = CompiledStatement(
        on_conflict(table, "postgresql").statement, postgresql.asyncpg.dialect()
    )
    bound = upsert.parameters(snapshot_values(snapshot))
    assert bound[:5] == ["a", snapshot.ugc_account_id, snapshot.snapshot_id, 3, "sha256:abc123"]
    assert bound[5] == "2026-03-22T06:30:00.000000Z"
    assert json.loads(bound[8]) == ["x", "ü"] and isinstance(bound[9], str)
    on_sqlite = CompiledStatement(on_conflict(table, "sqlite").statement, sqlite.pysqlite.dialect())
    assert on_sqlite.parameters(snapshot_values(snapshot))[5] == "2026-03-22 06:30:00.000000"


def test_a_parameter_with_a_value_of_its_own_keeps_it() -> None:
    table = Table("members", MetaData(), Column("name", String(20), primary_key=True))
    statement = select(table.c.name).where(table.c.name == "x").limit(1)
    compiled = CompiledStatement(statement, postgresql.asyncpg.dialect())
    assert compiled.parameters({}) == ["x", 1]


def test_a_named_paramstyle_binds_by_name() -> None:
    table = snapshot_table(MetaData())
    read = CompiledStatement(select_current(table), postgresql.psycopg.dialect())
    assert not read.positional and "%(account_id)s" in read.sql
    assert read.named_parameters({"account_id": "a"}) == {"account_id": "a"}


def test_which_executor_each_store_takes() -> None:
    table = snapshot_table(MetaData())
    cases: list[tuple[Any, dict[str, Any], type]] = [
        ("postgresql+asyncpg://u@h/d", {}, DriverExecutor),
        (create_async_engine("postgresql+asyncpg://u@h/d"), {}, DriverExecutor),
        (
            create_async_engine("postgresql+asyncpg://u@h/d"),
            {"execution": "sqlalchemy"},
            EngineExecutor,
        ),
        ("postgresql+asyncpg://u@h/d", {"upsert": "locking"}, EngineExecutor),
        (create_engine("postgresql+psycopg://u@h/d"), {}, DriverExecutor),
        ("sqlite+aiosqlite:///x.db", {}, EngineExecutor),
        ("sqlite:///x.db", {}, WriterExecutor),
    ]
    for engine, options, expected in cases:
        store = SQLAlchemyStore(engine, table=table, **options)
        assert type(store.executor) is expected, (engine, options)
    with pytest.raises(ValueError, match="execution"):
        SQLAlchemyStore("sqlite:///x.db", execution="fast")  # type: ignore[arg-type]


# -- one asyncpg call per statement, on the host's own pool ------------------------------


@pytest.mark.postgres
async def test_an_upsert_is_one_asyncpg_call_applied_or_ignored(
    postgres: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    account_id = new_account_id()
    async with host_engine(postgres) as engine:
        store = SQLAlchemyStore(engine, table=postgres.table)
        assert (await store.store_upsert(make_snapshot(new_account_id()))).applied  # connect
        calls = []
        steps = [(1, True), (2, True), (2, True), (1, False), (3, True)]
        for version, applied in steps:  # insert, update, replay, stale, update
            with asyncpg_statements(monkeypatch) as sent:
                result = await store.store_upsert(make_snapshot(account_id, version))
            assert result.applied is applied
            assert result.current == (make_snapshot(account_id, version) if applied else None)
            calls.append(sent)
        with asyncpg_statements(monkeypatch) as read:
            stored = await store.store_get(account_id)
    for sent in calls:
        assert len(sent) == 1, sent  # no BEGIN, no COMMIT, no reset, no read-back
        method, sql = sent[0]
        assert method == "Connection.fetchrow"
        assert sql.startswith("INSERT INTO") and "ON CONFLICT" in sql
    assert stored is not None and stored.strategy_version == 3
    assert [method for method, _ in read] == ["Connection.fetchrow"]


@pytest.mark.postgres
async def test_sqlalchemy_events_see_the_statements_only_on_the_sqlalchemy_path(
    postgres: Database,
) -> None:
    async with host_engine(postgres) as engine:
        seen: list[str] = []

        def record(connection: Any, cursor: Any, statement: str, *context: Any) -> None:
            seen.append(statement)

        event.listen(engine.sync_engine, "before_cursor_execute", record)
        fast = SQLAlchemyStore(engine, table=postgres.table)
        slow = SQLAlchemyStore(engine, table=postgres.table, execution="sqlalchemy")
        assert (await fast.store_upsert(make_snapshot(new_account_id()))).applied
        assert seen == []
        assert (await slow.store_upsert(make_snapshot(new_account_id()))).applied
        assert len(seen) == 1 and "ON CONFLICT" in seen[0]


@pytest.mark.postgres
async def test_the_driver_path_stores_and_answers_like_sqlalchemy(postgres: Database) -> None:
    """The same snapshots through both paths on one host engine: stored alike, read alike."""
    cases: list[dict[str, Any]] = [
        {"strategy_synced_at": datetime(1, 1, 1, tzinfo=timezone.utc)},
        {"strategy_synced_at": datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc)},
        {"personality": {"deep": [[[{"x": "é🌱"}]]], "big": 2**70, "f": 0.1, "n": None}},
        {"active_skills": None, "stage": None, "active_action": None, "personality": {}},
        {"active_skills": (), "personality": {"k": [], "e": {}}},
    ]
    async with host_engine(postgres) as engine:
        fast = SQLAlchemyStore(engine, table=postgres.table)
        slow = SQLAlchemyStore(engine, table=postgres.table, execution="sqlalchemy")
        for case in cases:
            for store, other in ((fast, slow), (slow, fast)):
                account_id = new_account_id()
                snapshot = dataclasses.replace(make_snapshot(account_id, 7), **case)
                assert (await store.store_upsert(snapshot)).applied
                assert await store.store_get(account_id) == snapshot
                assert await other.store_get(account_id) == snapshot  # what one wrote
                later = make_snapshot(account_id, 8, snapshot_id="later")
                assert (await other.store_upsert(later)).applied
                assert not (await store.store_upsert(snapshot)).applied
                assert await store.store_get(account_id) == later


@pytest.mark.postgres
@pytest.mark.parametrize("zone", ["Pacific/Kiritimati", "America/Adak"])
async def test_sessions_in_any_time_zone_keep_instants_at_the_ends_of_the_range(
    postgres: Database, zone: str
) -> None:
    connect_args = {"server_settings": {"timezone": zone}}
    async with host_engine(postgres, connect_args=connect_args) as engine:
        store = SQLAlchemyStore(engine, table=postgres.table)
        for synced_at in ("0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z"):
            account_id = new_account_id()
            snapshot = make_snapshot(account_id, 5, synced_at=synced_at)
            assert (await store.store_upsert(snapshot)).applied
            assert await store.store_get(account_id) == snapshot
            stale = make_snapshot(account_id, 4, synced_at=synced_at)
            assert not (await store.store_upsert(stale)).applied


@pytest.mark.postgres
async def test_a_table_whose_name_needs_quoting(postgres: Database) -> None:
    metadata = MetaData()
    table = snapshot_table(metadata, f'RSM "Quoted" {unique_name()}')
    sync = create_engine(postgres.sync_url)
    metadata.create_all(sync)
    try:
        async with host_engine(postgres) as engine:
            store = SQLAlchemyStore(engine, table=table)
            account_id = new_account_id()
            assert (await store.store_upsert(make_snapshot(account_id, 2))).applied
            assert not (await store.store_upsert(make_snapshot(account_id, 1))).applied
            stored = await store.store_get(account_id)
            assert stored is not None and stored.strategy_version == 2
    finally:
        metadata.drop_all(sync)
        sync.dispose()


# -- accounts on the same path ------------------------------------------------------------


@pytest.mark.postgres
async def test_accounts_are_looked_up_on_the_driver_path_and_visible_to_still_applies(
    postgres: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    metadata = MetaData()
    members = Table(
        f"rsm_members_{unique_name()}",
        metadata,
        Column("handle", String(50), primary_key=True),
        Column("owner", String(50), nullable=False),
        Column("enabled", Boolean, nullable=False),
    )
    sync = create_engine(postgres.sync_url)
    metadata.create_all(sync)
    with sync.begin() as connection:
        connection.execute(
            insert(members),
            [
                {"handle": "a", "owner": "alice", "enabled": True},
                {"handle": "b", "owner": "bob", "enabled": False},
            ],
        )
    try:
        async with host_engine(postgres) as engine:
            accounts = SQLAlchemyAccounts(engine, members, id_column="handle", active="enabled")
            assert await accounts.get_account("nobody", None) is None  # connected
            with asyncpg_statements(monkeypatch) as sent:
                assert await accounts.get_account("a", None) == Account("a", True)
                assert await accounts.get_account("b", None) == Account("b", False)
                assert await accounts.get_account("nobody", None) is None
            assert [method for method, _ in sent] == ["Connection.fetchrow"] * 3
            own = SQLAlchemyAccounts(
                engine,
                members,
                id_column="handle",
                visible_to=lambda principal: members.c.owner == principal,
            )
            assert await own.get_account("a", "alice") == Account("a", True)
            assert await own.get_account("a", "bob") is None
    finally:
        metadata.drop_all(sync)
        sync.dispose()


# -- concurrency, and the host's pool -----------------------------------------------------


def shuffled_snapshots(account_id: str, count: int) -> list[Snapshot]:
    """``count`` snapshots of one account in random order, with versions and instants that
    repeat; one of them is the greatest (version, instant) alone."""
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
async def test_concurrent_upserts_keep_the_greatest_within_the_hosts_pool(
    postgres: Database,
) -> None:
    """300 upserts of one account at once through two host engines whose pools hold at most
    3 connections each: the greatest snapshot stays stored, every applied one was not stale
    when written, and no pool ever opened more than its limit."""
    async with (
        host_engine(postgres, pool_size=2, max_overflow=1) as first,
        host_engine(postgres, pool_size=2, max_overflow=1) as second,
    ):
        most = [0, 0]

        def watch(index: int, engine: AsyncEngine) -> None:
            pool = engine.sync_engine.pool

            def checked_out(*args: Any) -> None:
                most[index] = max(most[index], pool.checkedout())  # type: ignore[attr-defined]

            event.listen(engine.sync_engine, "checkout", checked_out)

        watch(0, first)
        watch(1, second)
        stores = [SQLAlchemyStore(engine, table=postgres.table) for engine in (first, second)]
        account_id = new_account_id()
        snapshots = shuffled_snapshots(account_id, 300)
        results = await asyncio.gather(
            *(stores[n % 2].store_upsert(snapshot) for n, snapshot in enumerate(snapshots))
        )
        greatest = max(snapshots, key=lambda snapshot: snapshot.freshness)
        assert await stores[0].store_get(account_id) == greatest
        for snapshot, result in zip(snapshots, results, strict=True):
            if snapshot is greatest:
                assert result.applied
            if not result.applied:
                assert is_stale(snapshot, greatest)
        assert any(not result.applied for result in results)
        assert 1 <= most[0] <= 3 and 1 <= most[1] <= 3


# -- faults ------------------------------------------------------------------------------


@pytest.mark.postgres
async def test_a_connection_broken_mid_call_is_invalidated_and_the_retry_applies(
    postgres: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An upsert waiting on a row lock when its connection is cut fails as a lost connection;
    the host's pool drops that connection, and once the database is reachable again the next
    upsert applies at once, on a new connection."""
    account_id = new_account_id()
    url = postgres.async_url
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    await proxy.start()
    proxied = url.set(host="127.0.0.1", port=proxy.port)
    try:
        async with (
            host_engine(postgres, url=proxied, pool_size=1, max_overflow=0) as engine,
            host_engine(postgres) as direct,
        ):
            store = SQLAlchemyStore(engine, table=postgres.table, attempts=1, retry_deadline=None)
            assert (await store.store_upsert(make_snapshot(account_id, 2))).applied
            async with row_locked(direct, postgres.table, account_id):
                waiting = asyncio.ensure_future(store.store_upsert(make_snapshot(account_id, 3)))
                await asyncio.sleep(0.3)  # the upsert now waits on the lock
                assert not waiting.done()
                await proxy.stop()
                with pytest.raises(ConnectionResetError):
                    await asyncio.wait_for(waiting, 10)
            await proxy.start()
            with asyncpg_statements(monkeypatch) as sent:
                assert (await store.store_upsert(make_snapshot(account_id, 4))).applied
            assert len(sent) == 1  # attempts=1: a new connection, at the first try
            stored = await store.store_get(account_id)
            assert stored is not None and stored.strategy_version == 4
    finally:
        await proxy.stop()


@pytest.mark.postgres
async def test_an_upsert_cancelled_midway_writes_nothing_and_frees_its_connection(
    postgres: Database,
) -> None:
    account_id = new_account_id()
    async with host_engine(postgres, pool_size=1, max_overflow=0) as engine:
        store = SQLAlchemyStore(engine, table=postgres.table)
        assert (await store.store_upsert(make_snapshot(account_id, 1))).applied
        async with (
            host_engine(postgres) as direct,
            row_locked(direct, postgres.table, account_id),
        ):
            waiting = asyncio.ensure_future(store.store_upsert(make_snapshot(account_id, 2)))
            await asyncio.sleep(0.3)
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
        stored = await store.store_get(account_id)  # the pool's one connection came back
        assert stored is not None and stored.strategy_version == 1  # the cancelled one: not
        applied = await asyncio.wait_for(store.store_upsert(make_snapshot(account_id, 3)), 10)
        assert applied.applied


@pytest.mark.postgres
async def test_a_database_down_at_first_use_is_tried_again_at_the_next_call(
    postgres: Database,
) -> None:
    url = postgres.async_url
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    await proxy.start()
    await proxy.stop()  # the port is reserved, nothing listens
    try:
        proxied = url.set(host="127.0.0.1", port=proxy.port)
        async with host_engine(postgres, url=proxied) as engine:
            store = SQLAlchemyStore(engine, table=postgres.table, attempts=1, retry_deadline=None)
            with pytest.raises(OSError):
                await store.store_upsert(make_snapshot(new_account_id()))
            await proxy.start()
            assert (await store.store_upsert(make_snapshot(new_account_id()))).applied
    finally:
        await proxy.stop()


@pytest.mark.postgres
async def test_a_sync_psycopg_engine_runs_the_driver_path_and_leaves_its_connections_as_found(
    postgres: Database,
) -> None:
    """A host's sync ``Engine`` on psycopg: the statements bypass SQLAlchemy's events, run in
    autocommit mode, and each connection goes back to the pool in its own mode, with no
    transaction open."""
    engine = create_engine(postgres.sync_url, pool_size=1, max_overflow=0)
    seen: list[str] = []

    def record(connection: Any, cursor: Any, statement: str, *context: Any) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        store = SQLAlchemyStore(engine, table=postgres.table)
        account_id = new_account_id()
        assert (await store.store_upsert(make_snapshot(account_id, 2))).applied
        assert not (await store.store_upsert(make_snapshot(account_id, 1))).applied
        stored = await store.store_get(account_id)
        assert stored is not None and stored.strategy_version == 2
        assert seen == []
        with engine.connect() as connection:  # the pool's one connection
            driver = connection.connection.driver_connection
            assert driver is not None and driver.autocommit is False
            assert driver.info.transaction_status.name == "IDLE"
    finally:
        engine.dispose()


async def session_questions(engine: AsyncEngine) -> int:
    """The server's count of statements this session's client sent (MariaDB/MySQL)."""
    async with engine.connect() as connection:
        result = await connection.exec_driver_sql("SHOW SESSION STATUS LIKE 'Questions'")
        return int(result.one()[1])


@pytest.mark.mariadb
async def test_a_mariadb_url_store_sends_one_statement_per_upsert_applied_or_ignored(
    mariadb: Database,
) -> None:
    """Counted by the server on the pool's one connection (calls in turn open no other):
    no BEGIN, COMMIT, ROLLBACK or SET around the RETURNING upsert."""
    url = mariadb.async_url.render_as_string(hide_password=False)
    store = SQLAlchemyStore(url, table=mariadb.table)
    try:
        assert isinstance(store.executor, DriverExecutor)
        account_id = new_account_id()
        assert (await store.store_upsert(make_snapshot(account_id, 2))).applied  # connect
        engine = store.engine
        assert isinstance(engine, AsyncEngine)
        before = await session_questions(engine)
        assert (await store.store_upsert(make_snapshot(account_id, 3))).applied
        ignored = await store.store_upsert(make_snapshot(account_id, 1))
        after = await session_questions(engine)
        assert not ignored.applied and ignored.current is None  # nothing read back
        # the first SHOW's ROLLBACK (its Connection closing), two upserts, the second SHOW
        assert after - before == 1 + 2 + 1
    finally:
        await store.store_close()
