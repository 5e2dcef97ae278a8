"""The asyncpg fast path: taken where it may be, one driver call, the same answers, and faults.

On an ``AsyncEngine`` with asyncpg the store runs its upsert as one ``fetchrow`` on a connection
of the engine's pool (``runtime_snapshot_mount_sqlalchemy.fast_path``). SQLAlchemy's cursor
events do not see that call -- and a listener on them sends the store down the normal path --
so these tests count the statements at the driver: every asyncpg method that sends one.
The conformance kit runs on the fast path in ``test_sqlalchemy_contract.py`` (postgres-async)
and on the normal path for asyncpg here.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
import time
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import asyncpg
import pytest
from asyncpg.prepared_stmt import PreparedStatement
from runtime_snapshot_mount_sqlalchemy import SQLAlchemyStore, create_store_engine, is_transient
from runtime_snapshot_mount_sqlalchemy.engines import MAX_OVERFLOW, POOL_SIZE
from runtime_snapshot_mount_sqlalchemy.fast_path import AsyncpgUpsert, Leases, asyncpg_upsert
from sqlalchemy import create_engine, event, exc, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool, QueuePool
from support_sqlalchemy import Database, dispose, unique_name

from runtime_snapshot_mount import Plugins
from runtime_snapshot_mount.testing import StoreContract, make_snapshot, new_account_id

pytestmark = pytest.mark.anyio

# Every asyncpg method that sends a statement: the fast path's fetchrow, SQLAlchemy's
# prepared-statement fetch, and BEGIN/COMMIT (asyncpg's Transaction runs Connection.execute).
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
async def fast_store(database: Database, **options: Any) -> AsyncIterator[SQLAlchemyStore]:
    """A store on a new asyncpg engine, connected once (so the pool holds a connection)."""
    engine = database.engine("async", **options)
    try:
        store = SQLAlchemyStore(engine, table=database.table)
        assert (await store.store_upsert(make_snapshot(new_account_id()))).applied
        yield store
    finally:
        await dispose(engine)


def pool_of(store: SQLAlchemyStore) -> QueuePool:
    """The pool of ``store``'s engine."""
    engine = store.engine.sync_engine if isinstance(store.engine, AsyncEngine) else store.engine
    pool = engine.pool
    assert isinstance(pool, QueuePool)
    return pool


def normal_path(store: SQLAlchemyStore) -> SQLAlchemyStore:
    """``store`` without its fast path: every upsert through SQLAlchemy."""
    store._fast = None
    return store


# -- which engines take it --------------------------------------------------------------


@pytest.mark.sqlite
@pytest.mark.parametrize(
    ("url", "asynchronous", "expected"),
    [
        ("postgresql+asyncpg://u@h/d", True, True),
        ("postgresql+psycopg://u@h/d", True, False),
        ("postgresql+psycopg://u@h/d", False, False),
        ("sqlite+aiosqlite:///x.db", True, False),
        ("sqlite:///x.db", False, False),
        ("mysql+asyncmy://u@h/d", True, False),
        ("mariadb+pymysql://u@h/d", False, False),
    ],
)
async def test_only_an_async_engine_on_asyncpg_gets_the_fast_path(
    url: str, asynchronous: bool, expected: bool
) -> None:
    engine = create_async_engine(url) if asynchronous else create_engine(url)
    try:
        store = SQLAlchemyStore(engine)
        assert (store._fast is not None) is expected
        assert (asyncpg_upsert(engine, store.table) is not None) is expected
    finally:
        await dispose(engine)


@pytest.mark.sqlite
async def test_the_statement_is_compiled_once_with_typed_positional_parameters() -> None:
    engine = create_async_engine("postgresql+asyncpg://u@h/d")
    store = SQLAlchemyStore(engine, table_name="snapshots")
    fast = store._fast
    assert fast is not None
    assert fast.sql.startswith("INSERT INTO snapshots (account_id, ugc_account_id,")
    assert "VALUES ($1::VARCHAR, $2::VARCHAR" in fast.sql
    assert "$6::TIMESTAMP WITH TIME ZONE" in fast.sql and "$10::JSONB" in fast.sql
    assert "ON CONFLICT (account_id) DO UPDATE SET" in fast.sql
    assert fast.sql.endswith("RETURNING snapshots.strategy_version")
    synced = datetime(2026, 3, 22, 10, 30, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    snapshot = dataclasses.replace(
        make_snapshot("a", 2**63 - 1, active_skills=None), strategy_synced_at=synced
    )
    parameters = fast.parameters(snapshot)
    assert parameters[:5] == ("a", "ugc_123", snapshot.snapshot_id, 2**63 - 1, "sha256:abc123")
    instant = parameters[5]
    assert instant == synced and instant.tzinfo is timezone.utc  # aware, in UTC
    assert parameters[6:8] == ("warmup", "keyword_warmup")
    assert parameters[8] is None  # absent skills: SQL NULL, not JSON null
    assert parameters[9] == (
        '{"comment_style": "casual, validating", "interests": ["healthy recipes", "meal prep"]}'
    )
    await engine.dispose()


@pytest.mark.sqlite
def test_a_store_made_from_a_server_url_keeps_a_fixed_pool_of_connections() -> None:
    urls = ["postgresql+asyncpg://u@h/d", "postgresql+psycopg://u@h/d", "mysql+pymysql://u@h/d"]
    for url in urls:
        pool = pool_of(SQLAlchemyStore(url))
        assert (pool.size(), pool._max_overflow) == (POOL_SIZE, MAX_OVERFLOW)
    chosen = pool_of(SQLAlchemyStore(create_store_engine(urls[0], pool_size=3, max_overflow=2)))
    assert (chosen.size(), chosen._max_overflow) == (3, 2)
    unpooled = create_store_engine(urls[0], poolclass=NullPool)
    assert isinstance(unpooled, AsyncEngine)
    assert isinstance(unpooled.sync_engine.pool, NullPool)


# -- one driver call, and what it sends -------------------------------------------------


@pytest.mark.postgres
async def test_an_applied_upsert_is_one_asyncpg_call(
    postgres: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    account_id = new_account_id()
    async with fast_store(postgres) as store:
        with asyncpg_statements(monkeypatch) as inserted:
            assert (await store.store_upsert(make_snapshot(account_id, 1))).applied
        with asyncpg_statements(monkeypatch) as updated:
            assert (await store.store_upsert(make_snapshot(account_id, 2))).applied
        with asyncpg_statements(monkeypatch) as replayed:
            assert (await store.store_upsert(make_snapshot(account_id, 2))).applied
    for sent in (inserted, updated, replayed):
        assert len(sent) == 1, sent  # no BEGIN, no COMMIT, no second statement
        method, sql = sent[0]
        assert method == "Connection.fetchrow"
        assert sql.startswith("INSERT") and "ON CONFLICT" in sql


@pytest.mark.postgres
async def test_an_ignored_upsert_costs_one_more_statement(
    postgres: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    account_id = new_account_id()
    async with fast_store(postgres) as store:
        await store.store_upsert(make_snapshot(account_id, 9, snapshot_id="nine"))
        with asyncpg_statements(monkeypatch) as sent:
            result = await store.store_upsert(make_snapshot(account_id, 8))
    assert not result.applied and result.current.snapshot_id == "nine"
    assert [method for method, _ in sent] == ["Connection.fetchrow", "PreparedStatement.fetch"]
    assert sent[1][1].lstrip().upper().startswith("SELECT")


@pytest.mark.postgres
async def test_the_fast_path_sends_what_sqlalchemy_would_send(postgres: Database) -> None:
    """The same SQL text and the same bound values as ``Connection.execute`` on the normal
    path (seen by a cursor listener, which itself keeps the store on the normal path)."""
    snapshots = [
        make_snapshot(new_account_id(), 3),
        make_snapshot(new_account_id(), 4, active_skills=None, stage=None, active_action=None),
        make_snapshot(new_account_id(), 5, personality={"ü": ["🌱", 2**70, 1.5, None, True]}),
    ]
    async with fast_store(postgres) as store:
        fast = store._fast
        assert fast is not None and fast.usable()
        seen: list[tuple[str, Any]] = []

        def record(conn: Any, cursor: Any, statement: str, parameters: Any, *rest: Any) -> None:
            seen.append((statement, parameters))

        sync_engine = fast.engine
        event.listen(sync_engine, "before_cursor_execute", record)
        try:
            assert not fast.usable()
            for snapshot in snapshots:
                assert (await store.store_upsert(snapshot)).applied
        finally:
            event.remove(sync_engine, "before_cursor_execute", record)
        assert fast.usable()
    assert len(seen) == len(snapshots)
    for snapshot, (statement, parameters) in zip(snapshots, seen, strict=True):
        assert statement == fast.sql
        assert tuple(parameters) == fast.parameters(snapshot)


@pytest.mark.postgres
async def test_echo_and_statement_listeners_keep_the_store_on_the_normal_path(
    postgres: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with fast_store(postgres, echo=True) as store:
        with asyncpg_statements(monkeypatch) as sent:
            assert (await store.store_upsert(make_snapshot(new_account_id()))).applied
        assert [method for method, _ in sent] == ["PreparedStatement.fetch"]
    async with fast_store(postgres) as store:
        assert isinstance(store.engine, AsyncEngine)
        sync_engine = store.engine.sync_engine
        for name in ("before_execute", "after_cursor_execute", "handle_error"):
            listener = _ignore
            event.listen(sync_engine, name, listener)
            try:
                with asyncpg_statements(monkeypatch) as sent:
                    assert (await store.store_upsert(make_snapshot(new_account_id()))).applied
                assert [method for method, _ in sent] == ["PreparedStatement.fetch"], name
            finally:
                event.remove(sync_engine, name, listener)


def _ignore(*args: Any, **kwargs: Any) -> None:
    return None


@pytest.mark.postgres
async def test_a_replaced_upsert_strategy_is_not_bypassed(
    postgres: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runtime_snapshot_mount_sqlalchemy.upserts import LockingUpsert

    async with fast_store(postgres) as store:
        store._upsert = LockingUpsert(store.table)
        with asyncpg_statements(monkeypatch) as sent:
            assert (await store.store_upsert(make_snapshot(new_account_id()))).applied
    assert "Connection.fetchrow" not in [method for method, _ in sent]
    assert any("FOR UPDATE" in sql for _, sql in sent)


# -- the same answers as the normal path ------------------------------------------------


@pytest.mark.postgres
class TestAsyncpgNormalPath(StoreContract):
    """The kit on asyncpg through SQLAlchemy's execution path (the fast path switched off);
    ``TestSQLAlchemyStore`` in ``test_sqlalchemy_contract.py`` runs it on the fast path."""

    @pytest.fixture
    async def store(self, postgres: Database) -> AsyncIterator[SQLAlchemyStore]:
        engine = postgres.engine("async")
        yield normal_path(SQLAlchemyStore(engine, table=postgres.table))
        await dispose(engine)


@pytest.mark.postgres
async def test_both_paths_store_and_answer_alike(postgres: Database) -> None:
    cases: list[dict[str, Any]] = [
        {"strategy_synced_at": datetime(1, 1, 1, tzinfo=timezone.utc)},
        {"strategy_synced_at": datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc)},
        {"personality": {"deep": [[[{"x": "é🌱"}]]], "big": 2**70, "f": 0.1, "n": None}},
        {"active_skills": None, "stage": None, "active_action": None, "personality": {}},
    ]
    async with fast_store(postgres) as fast, fast_store(postgres) as slow:
        normal_path(slow)
        for case in cases:
            answers = []
            for store in (fast, slow):
                account_id = new_account_id()
                snapshot = dataclasses.replace(make_snapshot(account_id, 7), **case)
                later = make_snapshot(account_id, 8, snapshot_id="later")
                assert (await store.store_upsert(snapshot)).applied
                assert await store.store_get(account_id) == snapshot
                assert (await store.store_upsert(later)).applied
                ignored = await store.store_upsert(snapshot)
                assert not ignored.applied and ignored.current == later
                assert await store.store_get(account_id) == later
                answers.append(dataclasses.replace(ignored.current, account_id="-"))
            assert answers[0] == answers[1]


# -- faults -----------------------------------------------------------------------------


async def _terminate_all(database: Database, application_name: str) -> int:
    """Terminate every session of ``application_name`` and wait until they are gone; how
    many there were."""
    engine = create_async_engine(
        database.async_url, poolclass=NullPool, isolation_level="AUTOCOMMIT"
    )  # autocommit: pg_stat_activity is read afresh by each statement, not once a transaction
    name = {"name": application_name}
    sessions = "FROM pg_stat_activity WHERE application_name = :name"
    try:
        async with engine.connect() as connection:
            terminate = text(f"SELECT count(pg_terminate_backend(pid)) {sessions}")
            terminated = int((await connection.execute(terminate, name)).scalar_one())
            for _ in range(100):
                left = await connection.execute(text(f"SELECT count(*) {sessions}"), name)
                if left.scalar_one() == 0:
                    return terminated
                await asyncio.sleep(0.05)
            raise AssertionError(f"the sessions of {application_name} did not end")
    finally:
        await engine.dispose()


@pytest.mark.postgres
async def test_connections_killed_under_the_pool_are_replaced_after_one_failed_try(
    postgres: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first call on a dead connection fails; that invalidates the pool's whole generation,
    so the retry (and every later upsert) gets a fresh connection, not another dead one."""
    name = unique_name("rsm_fast")
    options = {"connect_args": {"server_settings": {"application_name": name}}}
    async with fast_store(postgres, pool_size=3, max_overflow=0, **options) as store:
        assert isinstance(store.engine, AsyncEngine)
        pool = pool_of(store)
        held = [await store.engine.connect() for _ in range(3)]  # open all three
        for connection in held:
            await connection.close()
        assert pool.checkedin() == 3
        assert await _terminate_all(postgres, name) == 3
        account_id = new_account_id()
        with asyncpg_statements(monkeypatch) as sent:
            assert (await store.store_upsert(make_snapshot(account_id, 1))).applied
        assert [method for method, _ in sent] == ["Connection.fetchrow"] * 2  # failed, then ok
        with asyncpg_statements(monkeypatch) as sent:
            for version in (2, 3, 4):
                assert (await store.store_upsert(make_snapshot(account_id, version))).applied
        assert len(sent) == 3  # one call each: no dead connection came back from the pool
        assert pool.checkedout() == 0


@pytest.mark.postgres
async def test_a_serialization_failure_is_retried_and_then_applied(
    postgres: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    failures: list[BaseException] = []
    original = asyncpg.Connection.fetchrow

    async def fail_twice(self: asyncpg.Connection, *args: Any, **kwargs: Any) -> Any:
        if len(failures) < 2:
            failure = (
                asyncpg.exceptions.SerializationError("could not serialize access")
                if not failures
                else asyncpg.exceptions.DeadlockDetectedError("deadlock detected")
            )
            failures.append(failure)
            raise failure
        return await original(self, *args, **kwargs)

    async with fast_store(postgres) as store:
        assert isinstance(store.engine, AsyncEngine)
        pool = pool_of(store)
        monkeypatch.setattr(asyncpg.Connection, "fetchrow", fail_twice)
        assert (await store.store_upsert(make_snapshot(new_account_id()))).applied
        assert len(failures) == 2
        assert (pool.checkedin(), pool.checkedout()) == (1, 0)  # the sound connection kept


@pytest.mark.postgres
async def test_errors_are_raised_as_sqlalchemy_raises_them(
    postgres: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with fast_store(postgres, pool_size=1, max_overflow=0) as store:
        fast = store._fast
        assert isinstance(fast, AsyncpgUpsert) and isinstance(store.engine, AsyncEngine)
        pool = pool_of(store)
        original = asyncpg.Connection.fetchrow

        async def raising(self: asyncpg.Connection, *args: Any, **kwargs: Any) -> Any:
            raise asyncpg.exceptions.SerializationError("could not serialize access")

        monkeypatch.setattr(asyncpg.Connection, "fetchrow", raising)
        with pytest.raises(exc.DBAPIError) as raised:
            await fast.apply(make_snapshot(new_account_id()))
        assert raised.value.orig is not None
        assert getattr(raised.value.orig, "sqlstate", None) == "40001"
        assert raised.value.statement == fast.sql
        assert not raised.value.connection_invalidated and is_transient(raised.value)
        monkeypatch.setattr(asyncpg.Connection, "fetchrow", original)
        # a lasting error: raised at once, the connection goes back to the pool
        missing = SQLAlchemyStore(store.engine, table_name=unique_name("rsm_missing"))
        with pytest.raises(exc.ProgrammingError, match="does not exist") as lasting:
            await missing.store_upsert(make_snapshot(new_account_id()))
        assert not is_transient(lasting.value)
        assert (pool.checkedin(), pool.checkedout()) == (1, 0)
        assert (await store.store_upsert(make_snapshot(new_account_id()))).applied


@pytest.mark.postgres
async def test_a_call_cancelled_midway_discards_its_connection(
    postgres: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with fast_store(postgres, pool_size=1, max_overflow=0) as store:
        assert isinstance(store.engine, AsyncEngine)
        pool = pool_of(store)
        started = asyncio.Event()
        used: list[asyncpg.Connection] = []
        original = asyncpg.Connection.fetchrow

        async def hanging(self: asyncpg.Connection, *args: Any, **kwargs: Any) -> Any:
            used.append(self)
            started.set()
            return await original(self, "SELECT pg_sleep(30)")

        monkeypatch.setattr(asyncpg.Connection, "fetchrow", hanging)
        task = asyncio.ensure_future(store.store_upsert(make_snapshot(new_account_id())))
        await asyncio.wait_for(started.wait(), 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        monkeypatch.setattr(asyncpg.Connection, "fetchrow", original)
        assert used[0].is_closed()  # not handed back busy with the interrupted call
        assert pool.checkedout() == 0
        with asyncpg_statements(monkeypatch) as sent:
            assert (await store.store_upsert(make_snapshot(new_account_id()))).applied
        assert len(sent) == 1  # on a new connection at the first try


@pytest.mark.postgres
async def test_a_store_from_a_url_keeps_its_connections_under_load(postgres: Database) -> None:
    """More concurrent upserts than the pool holds: the store's own engine keeps reusing its
    connections rather than opening and closing overflow ones (one server session each)."""
    store = SQLAlchemyStore(postgres.async_url, table=postgres.table)
    opened: list[object] = []
    event.listen(pool_of(store), "connect", lambda *args: opened.append(args))
    try:
        for _ in range(5):
            results = await asyncio.gather(
                *(store.store_upsert(make_snapshot(new_account_id())) for _ in range(64))
            )
            assert all(result.applied for result in results)
        assert 1 <= len(opened) <= POOL_SIZE + MAX_OVERFLOW
    finally:
        await store.store_close()


@pytest.mark.postgres
async def test_the_fast_path_under_the_plugin_manager(postgres: Database) -> None:
    async with fast_store(postgres) as store:
        plugins = Plugins([store], entry_points=False)
        account_id = new_account_id()
        assert (await plugins.store_upsert(make_snapshot(account_id, 5))).applied
        result = await plugins.store_upsert(make_snapshot(account_id, 4))
        assert not result.applied and result.current.strategy_version == 5


# -- SQLite: this process's writers take turns ------------------------------------------


@pytest.mark.sqlite
@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_sqlite_upserts_in_one_process_take_turns(sqlite: Database, mode: str) -> None:
    """SQLite lets one writer in at a time; the store's upserts queue on a lock instead of
    polling SQLite's busy handler (whose sleeps gave p99 latencies near a second)."""
    engine = sqlite.engine(mode)
    store = SQLAlchemyStore(engine, table=sqlite.table)
    await store.store_upsert(make_snapshot(new_account_id()))  # picks the upsert
    upsert = store._upsert
    assert upsert is not None
    guard = threading.Lock()
    inside: list[int] = [0]
    most: list[int] = [0]

    def counting(connection: Any, snapshot: Any) -> Any:
        with guard:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        try:
            time.sleep(0.002)  # long enough for others to arrive meanwhile
            return upsert(connection, snapshot)
        finally:
            with guard:
                inside[0] -= 1

    store._upsert = counting
    try:
        accounts = [new_account_id() for _ in range(4)]
        requests = [(account, version) for account in accounts for version in range(1, 9)]
        results = await asyncio.gather(
            *(store.store_upsert(make_snapshot(a, v)) for a, v in requests)
        )
        assert len(results) == 32 and most[0] == 1
        for account in accounts:
            stored = await store.store_get(account)
            assert stored is not None and stored.strategy_version == 8
    finally:
        await dispose(engine)


# -- connections kept between upserts (a store-made engine) -----------------------------


@contextlib.asynccontextmanager
async def leasing(
    database: Database, **options: Any
) -> AsyncIterator[tuple[AsyncpgUpsert, Leases]]:
    """The fast path with leases on a new asyncpg engine of its own (``options`` for it), and
    its leases."""
    engine = database.engine("async", **options)
    fast = asyncpg_upsert(engine, database.table, lease=True)
    assert fast is not None and fast.leases is not None
    try:
        yield fast, fast.leases
    finally:
        await fast.close()
        await dispose(engine)


def count_checkouts(fast: AsyncpgUpsert) -> list[object]:
    checkouts: list[object] = []
    event.listen(fast.engine.pool, "checkout", lambda *args: checkouts.append(args))
    return checkouts


@pytest.mark.sqlite
def test_only_a_store_made_engine_keeps_connections(sqlite: Database) -> None:
    url = "postgresql+asyncpg://u@h/d"
    made = SQLAlchemyStore(url, table=sqlite.table)
    hosts = SQLAlchemyStore(create_store_engine(url), table=sqlite.table)
    assert made._fast is not None and made._fast.leases is not None
    assert hosts._fast is not None and hosts._fast.leases is None
    assert made._fast.leases.limit == POOL_SIZE + MAX_OVERFLOW - 2  # a tenth left over


@pytest.mark.postgres
async def test_upserts_reuse_kept_connections_without_pool_checkouts(postgres: Database) -> None:
    async with leasing(postgres, pool_size=3, max_overflow=0) as (fast, leases):
        checkouts = count_checkouts(fast)
        account_id = new_account_id()
        for version in range(1, 51):
            assert await fast.apply(make_snapshot(account_id, version))
        assert len(checkouts) == 1  # one connection, taken once, used 50 times
        assert pool_of_engine(fast).checkedout() == 1 and len(leases.kept) == 1
        await fast.close()
        assert pool_of_engine(fast).checkedout() == 0 and not leases.kept


@pytest.mark.postgres
async def test_kept_connections_go_back_to_the_pool_once_unused(postgres: Database) -> None:
    async with leasing(postgres, pool_size=3, max_overflow=0) as (fast, leases):
        leases.idle_seconds = 0.05
        await asyncio.gather(*(fast.apply(make_snapshot(new_account_id())) for _ in range(6)))
        assert pool_of_engine(fast).checkedout() == leases.limit == 2  # 3 less one left over
        for _ in range(250):  # within 5 s
            if not pool_of_engine(fast).checkedout():
                break
            await asyncio.sleep(0.02)
        assert pool_of_engine(fast).checkedout() == 0 and not leases.kept
        assert await fast.apply(make_snapshot(new_account_id()))  # and taken again when needed


@pytest.mark.postgres
async def test_a_connection_kept_past_its_lifetime_goes_back(postgres: Database) -> None:
    async with leasing(postgres, pool_size=3, max_overflow=0) as (fast, leases):
        checkouts = count_checkouts(fast)
        leases.lifetime = 0.2
        for _ in range(3):
            assert await fast.apply(make_snapshot(new_account_id()))
            await asyncio.sleep(0.25)
        assert len(checkouts) == 3  # each upsert found its kept connection too old
        assert pool_of_engine(fast).checkedout() == 1


@pytest.mark.postgres
async def test_more_upserts_than_kept_connections_wait_their_turn(postgres: Database) -> None:
    """200 concurrent upserts on a pool of 4: at most 3 connections kept, all applied, and one
    connection always left to the store's other statements (here: a read that waits on it)."""
    async with leasing(postgres, pool_size=4, max_overflow=0, pool_timeout=5) as (fast, leases):
        assert leases.limit == 3
        in_use: list[int] = []
        original = asyncpg.Connection.fetchrow

        async def watching(self: asyncpg.Connection, *args: Any, **kwargs: Any) -> Any:
            in_use.append(leases.in_use)
            return await original(self, *args, **kwargs)

        engine = fast.engine

        async def read_meanwhile() -> int:
            async with store_engine(fast).connect() as connection:
                return int((await connection.execute(text("SELECT 1"))).scalar_one())

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(asyncpg.Connection, "fetchrow", watching)
            results = await asyncio.gather(
                *(fast.apply(make_snapshot(new_account_id())) for _ in range(200)),
                *(read_meanwhile() for _ in range(20)),
            )
        assert results == [True] * 200 + [1] * 20
        assert max(in_use) == 3 and engine.pool.checkedout() == 3


@pytest.mark.postgres
async def test_waiting_upserts_that_are_cancelled_do_not_stall_the_others(
    postgres: Database,
) -> None:
    async with leasing(postgres, pool_size=2, max_overflow=0) as (fast, leases):
        assert leases.limit == 1
        tasks = [
            asyncio.ensure_future(fast.apply(make_snapshot(new_account_id()))) for _ in range(30)
        ]
        await asyncio.sleep(0)
        for task in tasks[1::3]:
            task.cancel()
        done = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 20)
        cancelled = [result for result in done if isinstance(result, asyncio.CancelledError)]
        assert len(cancelled) == 10 and done.count(True) == 20
        assert not leases.waiters and leases.in_use == 0
        assert await fast.apply(make_snapshot(new_account_id()))


@pytest.mark.postgres
async def test_kept_connections_of_a_lost_server_are_not_reused(postgres: Database) -> None:
    """Every session killed: the first upsert fails once on its dead kept connection, which
    invalidates the pool; the other kept ones are dropped unused, not tried in turn."""
    store = SQLAlchemyStore(postgres.async_url, table=postgres.table)
    fast = store._fast
    assert fast is not None and fast.leases is not None
    try:
        await asyncio.gather(
            *(store.store_upsert(make_snapshot(new_account_id())) for _ in range(64))
        )
        kept = fast.leases.kept
        assert len(kept) == fast.leases.limit
        pids = [connection.driver_connection.get_server_pid() for connection in kept]
        killer = await asyncpg.connect(
            postgres.url("async").set(drivername="postgresql").render_as_string(hide_password=False)
        )
        try:
            await killer.execute(
                "SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) AS pid", pids
            )
            for _ in range(100):
                left = await killer.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1::int[])", pids
                )
                if left == 0:
                    break
                await asyncio.sleep(0.05)
        finally:
            await killer.close()
        tries: list[object] = []
        original = asyncpg.Connection.fetchrow

        async def counting(self: asyncpg.Connection, *args: Any, **kwargs: Any) -> Any:
            tries.append(self)
            return await original(self, *args, **kwargs)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(asyncpg.Connection, "fetchrow", counting)
            for _ in range(3):
                assert (await store.store_upsert(make_snapshot(new_account_id()))).applied
        assert len(tries) == 4  # one failure, then three on fresh connections
    finally:
        await store.store_close()


@pytest.mark.postgres
async def test_a_url_store_under_load_answers_applied_and_ignored_alike(
    postgres: Database,
) -> None:
    """The command line's case: the store's own engine, 64 concurrent upserts, half of them
    stale (their reads go through SQLAlchemy on the connections left over)."""
    store = SQLAlchemyStore(postgres.async_url, table=postgres.table)
    try:
        accounts = [new_account_id() for _ in range(32)]
        for account_id in accounts:
            await store.store_upsert(make_snapshot(account_id, 10, snapshot_id="ten"))
        for _ in range(3):
            results = await asyncio.gather(
                *(store.store_upsert(make_snapshot(a, 11, snapshot_id="eleven")) for a in accounts),
                *(store.store_upsert(make_snapshot(a, 9)) for a in accounts),
            )
            assert all(r.current.strategy_version == 11 for r in results[:32])
            assert not any(r.applied for r in results[32:])
            assert {r.current.snapshot_id for r in results[32:]} <= {"ten", "eleven"}
        for account_id in accounts:
            stored = await store.store_get(account_id)
            assert stored is not None and stored.snapshot_id == "eleven"
    finally:
        await store.store_close()


def pool_of_engine(fast: AsyncpgUpsert) -> QueuePool:
    pool = fast.engine.pool
    assert isinstance(pool, QueuePool)
    return pool


def store_engine(fast: AsyncpgUpsert) -> AsyncEngine:
    return AsyncEngine(fast.engine)
