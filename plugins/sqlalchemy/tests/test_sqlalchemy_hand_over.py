"""One checkout per request: on a host's AsyncEngine on asyncpg, the account lookup leaves its
pooled connection to the request's upsert, and the pool gets it back whenever the request
waits first (see ``runtime_snapshot_mount_sqlalchemy.driver``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from runtime_snapshot_mount_sqlalchemy import SQLAlchemyAccounts, SQLAlchemyStore, snapshot_table
from sqlalchemy import MetaData, String, create_engine, event, insert
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from support_sqlalchemy import Database, request_body, unique_name

from runtime_snapshot_mount import create_app
from runtime_snapshot_mount.testing import make_snapshot

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]

AUTH = {"Authorization": "Bearer secret"}
UPSERT = "/runtime-snapshots/upsert"
POOL_SIZE = 4


class Base(DeclarativeBase):
    pass


class Member(Base):
    __tablename__ = unique_name("hand_over_members")

    handle: Mapped[str] = mapped_column(String(255), primary_key=True)
    enabled: Mapped[bool]


MEMBERS = [{"handle": f"member-{i}", "enabled": True} for i in range(40)]
MEMBERS.append({"handle": "retired", "enabled": False})


@pytest.fixture
async def host(postgres: Database) -> AsyncIterator[tuple[AsyncEngine, Any, Any, Any]]:
    """A host's AsyncEngine (asyncpg, a pool of 4), its store and accounts, and the app."""
    metadata = MetaData()
    snapshots = snapshot_table(metadata, unique_name("hand_over_snapshots"))
    sync = create_engine(postgres.sync_url)
    Base.metadata.create_all(sync)
    metadata.create_all(sync)
    with sync.begin() as connection:
        connection.execute(insert(Member), MEMBERS)
    engine = create_async_engine(postgres.async_url, pool_size=POOL_SIZE, max_overflow=0)
    store = SQLAlchemyStore(engine, table=snapshots)
    accounts = SQLAlchemyAccounts(engine, Member, id_column="handle", active="enabled")
    app = create_app(store, accounts, api_keys=["secret"], entry_points=False)
    try:
        yield engine, store, accounts, app
    finally:
        await engine.dispose()
        metadata.drop_all(sync)
        Base.metadata.drop_all(sync)
        sync.dispose()


@contextmanager
def checkouts(engine: AsyncEngine) -> Iterator[list[object]]:
    """Every checkout of ``engine``'s pool while the block runs."""
    seen: list[object] = []

    def on_checkout(*args: Any) -> None:
        seen.append(args[0])

    event.listen(engine.sync_engine, "checkout", on_checkout)
    try:
        yield seen
    finally:
        event.remove(engine.sync_engine, "checkout", on_checkout)


async def post(app: Any, account_id: str, version: int) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://host") as client:
        return await client.post(UPSERT, json=request_body(account_id, version), headers=AUTH)


async def settled(engine: AsyncEngine) -> int:
    """Connections still checked out once the loop has run its waiting callbacks."""
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    return engine.sync_engine.pool.checkedout()  # type: ignore[attr-defined, no-any-return]


async def test_a_request_looks_up_and_upserts_on_one_checkout(host: Any) -> None:
    engine, store, _, app = host
    await post(app, "member-0", 1)  # the pool has connected once
    for version, status in [(5, "upserted"), (4, "ignored_stale"), (6, "upserted")]:
        with checkouts(engine) as seen:
            answer = await post(app, "member-0", version)
        assert answer.status_code == 200 and answer.json()["status"] == status
        assert len(seen) == 1, f"version {version}: {len(seen)} checkouts"
        assert await settled(engine) == 0
    stored = await store.store_get("member-0")
    assert stored is not None and stored.strategy_version == 6


@pytest.mark.parametrize("account_id", ["nobody", "retired"])
async def test_a_404_gives_the_lookups_connection_back(host: Any, account_id: str) -> None:
    engine, store, _, app = host
    with checkouts(engine) as seen:
        answer = await post(app, account_id, 1)
    assert answer.status_code == 404
    assert len(seen) == 1
    assert await settled(engine) == 0
    assert await store.store_get(account_id) is None


async def test_a_wait_between_lookup_and_upsert_returns_the_connection_first(host: Any) -> None:
    engine, store, accounts, app = host
    await post(app, "member-0", 1)  # the store has chosen its statement (its first checkout)
    with checkouts(engine) as seen:
        account = await accounts.get_account("member-1", None)
        assert account is not None
        assert await settled(engine) == 0  # given back while the task waited
        assert (await store.store_upsert(make_snapshot("member-1", 3))).applied
    assert len(seen) == 2
    assert await settled(engine) == 0


async def test_a_task_that_ends_after_its_lookup_leaves_nothing_checked_out(host: Any) -> None:
    engine, _, accounts, _ = host
    found = await asyncio.gather(*(accounts.get_account(f"member-{i}", None) for i in range(12)))
    assert all(account is not None for account in found)
    assert await settled(engine) == 0


async def test_many_requests_in_flight_on_a_small_pool(host: Any) -> None:
    """120 requests at once on 4 connections: each is answered, makes one checkout, and the
    pool ends with every connection back."""
    engine, store, _, app = host
    ids = [f"member-{i}" for i in range(40)]
    await post(app, "member-0", 1)  # the store has chosen its statement (its first checkout)
    with checkouts(engine) as seen:
        answers = await asyncio.gather(
            *(post(app, ids[n % 40], 10 + n // 40) for n in range(120)),
            *(post(app, "nobody", 1) for _ in range(8)),
        )
    assert [a.status_code for a in answers] == [200] * 120 + [404] * 8
    assert len(seen) == 128
    assert await settled(engine) == 0
    for account_id in ids:
        stored = await store.store_get(account_id)
        assert stored is not None and stored.strategy_version == 12
