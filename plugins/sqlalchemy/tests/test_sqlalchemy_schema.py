"""The table: on the host's MetaData, its column types per dialect, values kept exactly."""

from __future__ import annotations

import uuid

import pytest
from runtime_snapshot_mount_sqlalchemy import SQLAlchemyStore, snapshot_table
from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, inspect, text
from support_sqlalchemy import Database, dispose, unique_name

from runtime_snapshot_mount import Plugins
from runtime_snapshot_mount.testing import make_snapshot, new_account_id

pytestmark = pytest.mark.anyio
MAX_VERSION = 2**63 - 1


async def test_a_table_on_the_hosts_metadata_created_by_the_host_serves_the_store(
    database: Database, mode: str
) -> None:
    metadata = MetaData()
    Table(unique_name("host_members"), metadata, Column("id", Integer, primary_key=True))
    snapshots = snapshot_table(metadata, unique_name())
    host_engine = create_engine(database.sync_url)
    metadata.create_all(host_engine)
    engine = database.engine(mode)
    try:
        plugins = Plugins([SQLAlchemyStore(engine, table=snapshots)], entry_points=False)
        snapshot = make_snapshot(new_account_id())
        assert (await plugins.store_upsert(snapshot)).applied
        assert await plugins.store_get(snapshot.account_id) == snapshot
    finally:
        await dispose(engine)
        metadata.drop_all(host_engine)
        host_engine.dispose()


async def test_store_create_tables_creates_only_the_snapshot_table_and_may_repeat(
    database: Database,
) -> None:
    metadata = MetaData()
    host_table = Table(
        unique_name("host_members"), metadata, Column("id", Integer, primary_key=True)
    )
    snapshots = snapshot_table(metadata, unique_name())
    engine = database.engine("async")
    plugins = Plugins([SQLAlchemyStore(engine, table=snapshots)], entry_points=False)
    sync_engine = create_engine(database.sync_url)
    try:
        await plugins.store_create_tables()
        await plugins.store_create_tables()
        names = set(inspect(sync_engine).get_table_names())
        assert snapshots.name in names and host_table.name not in names
    finally:
        await dispose(engine)
        snapshots.drop(sync_engine, checkfirst=True)
        sync_engine.dispose()


@pytest.mark.sqlite
def test_a_table_without_the_snapshot_columns_is_refused() -> None:
    table = Table("accounts", MetaData(), Column("account_id", String(255), primary_key=True))
    with pytest.raises(ValueError, match="lacks the snapshot columns ugc_account_id"):
        SQLAlchemyStore("sqlite://", table=table)


async def test_the_largest_version_is_stored_as_a_bigint(database: Database, mode: str) -> None:
    engine = database.engine(mode)
    store = SQLAlchemyStore(engine, table=database.table)
    snapshot = make_snapshot(new_account_id(), MAX_VERSION)
    try:
        assert (await store.store_upsert(snapshot)).applied
        assert (await store.store_get(snapshot.account_id)) == snapshot
    finally:
        await dispose(engine)
    stored = _scalar(
        database,
        f"SELECT strategy_version FROM {database.table.name} WHERE account_id = :id",
        id=snapshot.account_id,
    )
    assert stored == MAX_VERSION


async def test_ids_differing_only_in_case_or_trailing_space_are_different_accounts(
    database: Database, mode: str
) -> None:
    engine = database.engine(mode)
    plugins = Plugins([SQLAlchemyStore(engine, table=database.table)], entry_points=False)
    base = f"Case-{uuid.uuid4().hex}"
    ids = [base, base.lower(), base.upper(), base + " "]
    try:
        for version, account_id in enumerate(ids, start=1):
            assert (await plugins.store_upsert(make_snapshot(account_id, version))).applied
        for version, account_id in enumerate(ids, start=1):
            stored = await plugins.store_get(account_id)
            assert stored is not None and stored.strategy_version == version
    finally:
        await dispose(engine)


@pytest.mark.postgres
def test_postgres_columns_are_timestamptz_bigint_and_jsonb(postgres: Database) -> None:
    columns = _columns(
        postgres,
        "SELECT column_name, data_type, datetime_precision FROM information_schema.columns "
        "WHERE table_name = :table",
    )
    assert columns["strategy_synced_at"] == ("timestamp with time zone", 6)
    assert columns["strategy_version"][0] == "bigint"
    assert columns["personality"][0] == columns["active_skills"][0] == "jsonb"


@pytest.mark.postgres
@pytest.mark.parametrize("zone", ["America/New_York", "Asia/Tokyo"])
async def test_postgres_sessions_in_any_time_zone_read_instants_at_the_ends_of_the_range(
    postgres: Database, zone: str
) -> None:
    url = postgres.sync_url  # psycopg converts to the session's zone, unlike asyncpg
    engine = create_engine(url, connect_args={"options": f"-c timezone={zone}"})
    store = SQLAlchemyStore(engine, table=postgres.table)
    try:
        for synced_at in ("0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z"):
            snapshot = make_snapshot(new_account_id(), synced_at=synced_at)
            await store.store_upsert(snapshot)
            assert await store.store_get(snapshot.account_id) == snapshot
    finally:
        engine.dispose()


@pytest.mark.mariadb
def test_mariadb_columns_are_datetime6_bigint_and_utf8mb4(mariadb: Database) -> None:
    columns = _columns(
        mariadb,
        "SELECT column_name, column_type, character_set_name, collation_name "
        "FROM information_schema.columns WHERE table_schema = DATABASE() AND table_name = :table",
    )
    assert columns["strategy_synced_at"][0] == "datetime(6)"
    assert columns["strategy_version"][0].startswith("bigint")
    assert columns["account_id"][1:] == ("utf8mb4", "utf8mb4_nopad_bin")
    assert columns["personality"][:2] == ("longtext", "utf8mb4")
    assert {charset for _, charset, _ in columns.values() if charset} == {"utf8mb4"}


@pytest.mark.mariadb
async def test_four_byte_characters_round_trip_on_mariadb(mariadb: Database, mode: str) -> None:
    engine = mariadb.engine(mode)
    store = SQLAlchemyStore(engine, table=mariadb.table)
    snapshot = make_snapshot(
        f"emoji-😀-{uuid.uuid4().hex}",
        snapshot_id="𝄞😀",
        stage="🌱 warmup",
        active_skills=("👍🏽",),
        personality={"😀": ["𝄞", "👍🏽"], "note": "café"},
    )
    try:
        await store.store_upsert(snapshot)
        assert await store.store_get(snapshot.account_id) == snapshot
    finally:
        await dispose(engine)
    lengths = _columns(
        mariadb,
        f"SELECT account_id, CHAR_LENGTH(snapshot_id), LENGTH(snapshot_id) "
        f"FROM {mariadb.table.name} WHERE account_id = :id",
        id=snapshot.account_id,
    )
    assert lengths[snapshot.account_id] == (2, 8)  # two characters of four bytes each


@pytest.mark.sqlite
async def test_sqlite_keeps_instants_as_utc_text_whose_order_is_time_order(
    sqlite: Database,
) -> None:
    engine = sqlite.engine("sync")
    store = SQLAlchemyStore(engine, table=sqlite.table)
    times = {
        "a": "0001-01-01T00:00:00Z",
        "b": "0999-12-31T23:59:59.999999Z",
        "c": "1000-01-01T01:00:00+01:00",  # 1000-01-01T00:00:00Z
        "d": "2026-03-22T10:00:00+02:00",  # 08:00Z
        "e": "2026-03-22T09:00:00Z",
        "f": "9999-12-31T23:59:59.999999Z",
    }
    try:
        for account_id, synced_at in times.items():
            await store.store_upsert(make_snapshot(account_id, synced_at=synced_at))
    finally:
        await dispose(engine)
    rows = _columns(
        sqlite,
        f"SELECT account_id, strategy_synced_at, typeof(strategy_synced_at) "
        f"FROM {sqlite.table.name} ORDER BY strategy_synced_at",
    )
    assert list(rows) == sorted(times)
    assert rows["c"] == ("1000-01-01 00:00:00.000000", "text")
    assert rows["d"] == ("2026-03-22 08:00:00.000000", "text")


def _columns(database: Database, sql: str, **parameters: object) -> dict[str, tuple[object, ...]]:
    """Run ``sql`` (``:table`` is the snapshot table's name); first column -> the rest."""
    engine = create_engine(database.sync_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(text(sql), {"table": database.table.name, **parameters})
            return {str(row[0]): tuple(row[1:]) for row in rows}
    finally:
        engine.dispose()


def _scalar(database: Database, sql: str, **parameters: object) -> object:
    engine = create_engine(database.sync_url)
    try:
        with engine.connect() as connection:
            return connection.execute(text(sql), parameters).scalar_one()
    finally:
        engine.dispose()
