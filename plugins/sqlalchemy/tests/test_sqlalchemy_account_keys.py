"""Account keys of any type, on every backend: the request's id is converted to the key's type
before any query (an id that does not convert is 404, and no statement runs), and every
spelling of one account's id reaches one stored snapshot, while answers echo the request's
spelling."""

from __future__ import annotations

import contextlib
import random
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlmodel_typed_host
from runtime_snapshot_mount_sqlalchemy import SQLAlchemyAccounts, SQLAlchemyStore
from runtime_snapshot_mount_sqlalchemy.driver import Execution, runs_on
from runtime_snapshot_mount_sqlalchemy.engines import AnyEngine
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    Uuid,
    create_engine,
    event,
    insert,
    select,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import Field, SQLModel
from support_sqlalchemy import AUTH, UPSERT, Database, dispose, request_body, unique_name

from runtime_snapshot_mount import create_app

pytestmark = pytest.mark.anyio

API_PAGE_ID = "account_user095916355"
NOT_FOUND = {"detail": "Account not found or inactive"}

host_metadata = MetaData()


def accounts_table(kind: str, key_type: Any) -> Table:
    return Table(
        unique_name(kind),
        host_metadata,
        Column("id", key_type, primary_key=True, autoincrement=False),
        Column("is_active", Boolean, nullable=False),
    )


UUID_TABLES = {
    "uuid": accounts_table("uuid_users", Uuid()),
    "uuid-as-text": accounts_table("uuid_text_users", Uuid(as_uuid=False)),
}
INTEGER_TABLES = {
    "integer": accounts_table("int_members", Integer()),
    "big-integer": accounts_table("bigint_members", BigInteger()),
}
handles = accounts_table("handles", String(64))


class SQLModelUser(SQLModel, table=True):
    """A SQLModel project's user: a UUID key, as SQLModel maps ``uuid.UUID``."""

    __tablename__ = unique_name("sqlmodel_users")

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    is_active: bool = True


HOST_TABLES = [*UUID_TABLES.values(), *INTEGER_TABLES.values(), handles]


def engine_events(engine: AnyEngine) -> Engine:
    return engine.sync_engine if isinstance(engine, AsyncEngine) else engine


@dataclass
class Host:
    """A host database: its accounts engine (whose statements and connection checkouts are
    counted: the driver path's statements bypass SQLAlchemy's execution events, never its
    pool), a store on the database's snapshot table, and a synchronous engine to seed and
    inspect it."""

    database: Database
    engine: AnyEngine
    store: SQLAlchemyStore
    admin: Engine
    statements: list[str]
    checkouts: list[object]

    def add(self, table: Any, key: Any, active: bool = True) -> None:
        with self.admin.begin() as connection:
            connection.execute(insert(table), [{"id": key, "is_active": active}])

    def app(self, accounts: SQLAlchemyAccounts) -> Any:
        return create_app(
            self.store, accounts, api_keys=["test-key"], entry_points=False, read=True
        )

    def rows(self, account_ids: list[str]) -> list[tuple[str, int]]:
        """The snapshot rows stored under any of ``account_ids``: (account_id, version)."""
        table = self.database.table
        query = select(table.c.account_id, table.c.strategy_version).where(
            table.c.account_id.in_(account_ids)
        )
        with self.admin.connect() as connection:
            return [(row.account_id, row.strategy_version) for row in connection.execute(query)]


@pytest.fixture
async def host(database: Database, mode: str) -> AsyncIterator[Host]:
    admin = create_engine(database.sync_url)
    host_metadata.create_all(admin)
    SQLModel.metadata.create_all(admin, tables=[SQLModelUser.__table__])
    engine = database.engine(mode)
    store_engine = database.engine(mode)
    statements: list[str] = []

    def count(connection: Any, cursor: Any, statement: str, *rest: Any) -> None:
        statements.append(statement)

    checkouts: list[object] = []
    event.listen(engine_events(engine), "before_cursor_execute", count)
    event.listen(engine_events(engine), "checkout", lambda *args: checkouts.append(args[0]))
    store = SQLAlchemyStore(store_engine, table=database.table)
    yield Host(database, engine, store, admin, statements, checkouts)
    await dispose(engine)
    await dispose(store_engine)
    SQLModel.metadata.drop_all(admin, tables=[SQLModelUser.__table__])
    host_metadata.drop_all(admin)
    admin.dispose()


async def send(app: Any, account_id: str, version: int, *, read: bool = False) -> httpx.Response:
    """Upsert the API page's example for ``account_id`` at ``version`` (or read it back)."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://host") as client:
        if read:
            return await client.get(f"/runtime-snapshots/{account_id}", headers=AUTH)
        return await client.post(UPSERT, json=request_body(account_id, version), headers=AUTH)


def uuid_host(host: Host, kind: str, execution: Execution = "driver") -> tuple[Any, uuid.UUID]:
    """The app over the UUID-keyed model ``kind``, and the one active user it holds."""
    if kind == "sqlmodel":
        model = SQLModelUser
        table: Any = model.__table__
        accounts = SQLAlchemyAccounts(
            host.engine, model, id_column=model.id, active=model.is_active, execution=execution
        )
    else:
        table = UUID_TABLES[kind]
        accounts = SQLAlchemyAccounts(
            host.engine, table, id_column="id", active="is_active", execution=execution
        )
    user = uuid.uuid4()
    host.add(table, user if kind != "uuid-as-text" else str(user))
    return host.app(accounts), user


UUID_KINDS = ["uuid", "uuid-as-text", "sqlmodel"]


@pytest.mark.parametrize("kind", UUID_KINDS)
@pytest.mark.parametrize("execution", ["driver", "sqlalchemy"])
async def test_the_api_pages_id_against_a_uuid_key_is_not_found_without_a_query(
    host: Host, kind: str, execution: Execution
) -> None:
    app, user = uuid_host(host, kind, execution)
    for not_a_uuid in (API_PAGE_ID, str(user)[:-1], str(user) + "0", "😀" * 32):
        response = await send(app, not_a_uuid, 7)
        assert (response.status_code, response.json()) == (404, NOT_FOUND), not_a_uuid
    assert host.statements == [] and host.checkouts == []  # not even a connection
    response = await send(app, str(user), 7)
    assert response.status_code == 200 and response.json()["status"] == "upserted"
    assert len(host.checkouts) == 1  # the lookup, on the accounts' engine
    if execution == "sqlalchemy" or not runs_on(host.engine):  # the events see the statement
        [lookup] = host.statements
        assert re.search(r"WHERE \w+\.id = ", lookup), lookup  # the key column itself: no cast
    else:
        assert host.statements == []  # the driver path bypasses the execution events


@pytest.mark.parametrize("kind", UUID_KINDS)
async def test_every_spelling_of_a_uuid_reaches_one_row_and_one_stale_rule(
    host: Host, kind: str
) -> None:
    app, user = uuid_host(host, kind)
    upper, dashless, canonical, urn = str(user).upper(), user.hex, str(user), user.urn

    first = await send(app, upper, 7)
    assert first.json() == {
        "status": "upserted",
        "account_id": upper,
        "snapshot_id": "v7",
        "strategy_version": 7,
        "strategy_synced_at": request_body(upper, 7)["strategy_synced_at"],
    }
    older = await send(app, dashless, 6)  # older than what another spelling stored: ignored
    assert older.json() == {
        "status": "ignored_stale",
        "account_id": dashless,
        "snapshot_id": "v6",
        "strategy_version": 6,
    }
    newer = await send(app, urn, 8)
    assert newer.json()["status"] == "upserted" and newer.json()["account_id"] == urn

    assert host.rows([upper, dashless, canonical, urn]) == [(canonical, 8)]
    read = await send(app, dashless, 0, read=True)
    assert read.status_code == 200
    assert read.json()["account_id"] == dashless and read.json()["strategy_version"] == 8


@pytest.mark.parametrize("kind", INTEGER_TABLES)
async def test_integer_keys_take_digits_and_nothing_else(host: Host, kind: str) -> None:
    table = INTEGER_TABLES[kind]
    member = random.randrange(10**6, 10**9)
    host.add(table, member)
    accounts = SQLAlchemyAccounts(host.engine, table, id_column=table.c.id, active="is_active")
    app = host.app(accounts)

    past_the_type = str(2**63 if kind == "big-integer" else 2**31)
    for not_a_key in ("abc", f"{member}.0", f"{member} ", "0x10", past_the_type, "-" * 3):
        response = await send(app, not_a_key, 7)
        assert (response.status_code, response.json()) == (404, NOT_FOUND), not_a_key
    assert host.statements == [] and host.checkouts == []

    spellings = [str(member), f"00{member}", f"+{member}"]
    answers = [await send(app, spelling, 7 + index) for index, spelling in enumerate(spellings)]
    assert [answer.json()["account_id"] for answer in answers] == spellings
    assert {answer.json()["status"] for answer in answers} == {"upserted"}
    assert host.rows(spellings) == [(str(member), 9)]
    stale = await send(app, f"000{member}", 8)
    assert stale.json()["status"] == "ignored_stale"


async def test_a_custom_conversion_decides_the_key(host: Host) -> None:
    handle = f"alice-{uuid.uuid4().hex[:8]}"
    host.add(handles, handle)

    def lower_ascii(account_id: str) -> str:
        if not account_id.isascii():
            raise ValueError("handles are ASCII")
        return account_id.lower()

    accounts = SQLAlchemyAccounts(
        host.engine, handles, id_column="id", active="is_active", convert_id=lower_ascii
    )
    app = host.app(accounts)
    response = await send(app, handle.replace("a", "ä"), 7)
    assert (response.status_code, response.json()) == (404, NOT_FOUND)
    assert host.statements == [] and host.checkouts == []
    shouted = await send(app, handle.upper(), 7)
    assert shouted.json()["status"] == "upserted" and shouted.json()["account_id"] == handle.upper()
    assert (await send(app, handle, 6)).json()["status"] == "ignored_stale"
    assert host.rows([handle, handle.upper()]) == [(handle, 7)]


async def test_string_keys_are_compared_as_sent(host: Host) -> None:
    handle = f"bob-{uuid.uuid4().hex[:8]}"
    host.add(handles, handle)
    accounts = SQLAlchemyAccounts(host.engine, handles, id_column="id", active="is_active")
    app = host.app(accounts)
    assert (await send(app, handle, 7)).json()["status"] == "upserted"
    assert host.rows([handle]) == [(handle, 7)]
    assert (await send(app, API_PAGE_ID + "-" + handle, 7)).status_code == 404


@contextlib.asynccontextmanager
async def one_account(
    database: Database, table: Table, key: Any
) -> AsyncIterator[tuple[Any, SQLAlchemyStore]]:
    """``table`` made on ``database`` with one active account ``key``, and the app whose
    accounts come from it (with its store); the table is dropped afterwards."""
    admin = create_engine(database.sync_url)
    table.create(admin)
    with admin.begin() as connection:
        connection.execute(insert(table), [{"id": key, "is_active": True}])
    engine = database.engine("async")
    store = SQLAlchemyStore(engine, table=database.table)
    accounts = SQLAlchemyAccounts(engine, table, id_column="id", active="is_active")
    try:
        yield create_app(store, accounts, api_keys=["test-key"], entry_points=False), store
    finally:
        await dispose(engine)
        table.drop(admin)
        admin.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize("as_uuid", [True, False])
async def test_a_postgresql_uuid_column_never_sees_a_non_uuid(
    postgres: Database, as_uuid: bool
) -> None:
    """PostgreSQL's ``uuid`` type raised ``invalid input syntax for type uuid`` for a bound
    non-UUID; the id is now converted first, so that answer is 404."""
    table = Table(
        unique_name("pg_uuid_users"),
        MetaData(),
        Column("id", postgresql.UUID(as_uuid=as_uuid), primary_key=True),
        Column("is_active", Boolean, nullable=False),
    )
    user = uuid.uuid4()
    async with one_account(postgres, table, user if as_uuid else str(user)) as (app, store):
        response = await send(app, API_PAGE_ID, 7)
        assert (response.status_code, response.json()) == (404, NOT_FOUND)
        response = await send(app, str(user).upper(), 7)
        assert response.status_code == 200 and response.json()["account_id"] == str(user).upper()
        assert await store.store_get(str(user)) is not None


@pytest.mark.mariadb
async def test_a_case_insensitive_collation_stores_under_the_rows_own_spelling(
    mariadb: Database,
) -> None:
    """MariaDB's ``_ci`` collations find ``alice`` for ``ALICE``: both reach one row, under
    the host's own spelling."""
    table = Table(
        unique_name("ci_handles"),
        MetaData(),
        Column("id", String(64, collation="utf8mb4_general_ci"), primary_key=True),
        Column("is_active", Boolean, nullable=False),
        mariadb_charset="utf8mb4",
    )
    handle = f"carol-{uuid.uuid4().hex[:8]}"
    async with one_account(mariadb, table, handle) as (app, store):
        assert (await send(app, handle.upper(), 7)).json()["status"] == "upserted"
        assert (await send(app, handle.title(), 6)).json()["status"] == "ignored_stale"
        assert (await store.store_get(handle)) is not None
        assert (await store.store_get(handle.upper())) is None


@pytest.fixture
def typed_host_engine(tmp_path: Path) -> Iterator[Engine]:
    engine = create_engine(f"sqlite:///{tmp_path / 'typed-host.db'}")
    tables = [sqlmodel_typed_host.User.__table__, sqlmodel_typed_host.snapshots]
    SQLModel.metadata.create_all(engine, tables=tables)
    yield engine
    engine.dispose()


@pytest.mark.sqlite
@pytest.mark.parametrize("hex_ids", [False, True], ids=["by-type", "convert_id"])
async def test_the_typed_sqlmodel_host_serves(typed_host_engine: Engine, hex_ids: bool) -> None:
    host = sqlmodel_typed_host.build_app(typed_host_engine, hex_ids=hex_ids)

    def spelling(user: uuid.UUID) -> str:
        return user.hex if hex_ids else str(user).upper()

    red, blue = uuid.uuid4(), uuid.uuid4()
    with typed_host_engine.begin() as connection:
        rows = [{"id": red, "team": "red", "is_active": True}]
        rows.append({"id": blue, "team": "blue", "is_active": True})
        connection.execute(insert(sqlmodel_typed_host.User), rows)

    async def upsert(account_id: str) -> httpx.Response:
        transport = httpx.ASGITransport(app=host)
        async with httpx.AsyncClient(transport=transport, base_url="http://host") as client:
            body = request_body(account_id, 7)
            headers = {"Authorization": "Bearer secret"}
            return await client.post(f"/phonefarm{UPSERT}", json=body, headers=headers)

    assert (await upsert(API_PAGE_ID)).status_code == 404
    if hex_ids:
        assert (await upsert(str(red))).status_code == 404  # the host's own rule: hex only
    assert (await upsert(spelling(blue))).status_code == 404  # not visible: another team
    answer = await upsert(spelling(red))
    assert answer.status_code == 200 and answer.json()["account_id"] == spelling(red)
    table = sqlmodel_typed_host.snapshots
    with typed_host_engine.connect() as connection:
        assert connection.execute(select(table.c.account_id)).scalars().all() == [str(red)]
