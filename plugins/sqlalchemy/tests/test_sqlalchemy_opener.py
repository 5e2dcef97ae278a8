"""The entry point: ``store_from_url`` for the command line, and nothing else."""

from __future__ import annotations

import sqlite3
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from runtime_snapshot_mount_sqlalchemy import SQLAlchemyStore, create_store_engine, opener
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import StaticPool

from runtime_snapshot_mount import ENTRY_POINT_GROUP, MemoryStore, Plugins, create_app
from runtime_snapshot_mount.testing import make_snapshot

pytestmark = [pytest.mark.sqlite, pytest.mark.anyio]


@pytest.mark.parametrize(
    ("url", "engine_kind", "driver"),
    [
        ("sqlite:///snapshots.db", Engine, "pysqlite"),
        ("sqlite+aiosqlite:///snapshots.db", AsyncEngine, "aiosqlite"),
        ("postgresql+asyncpg://postgres@127.0.0.1:1/nowhere", AsyncEngine, "asyncpg"),
        ("postgresql+psycopg://postgres@127.0.0.1:1/nowhere", AsyncEngine, "psycopg"),
        ("mysql+asyncmy://root@127.0.0.1:1/nowhere", AsyncEngine, "asyncmy"),
        ("mysql+pymysql://root@127.0.0.1:1/nowhere", Engine, "pymysql"),
        ("mariadb+pymysql://root@127.0.0.1:1/nowhere", Engine, "pymysql"),
    ],
)
def test_sqlalchemy_urls_open_a_store_without_connecting(
    url: str, engine_kind: type, driver: str
) -> None:
    store = opener.store_from_url(url)  # port 1 refuses connections: nothing may connect yet
    assert isinstance(store, SQLAlchemyStore)
    assert isinstance(store.engine, engine_kind)
    assert store.engine.dialect.driver == driver
    assert store.table.name == "runtime_snapshots"


@pytest.mark.parametrize("url", ["memory://", "redis://localhost/0", "not a url", ""])
def test_other_urls_are_left_to_other_plugins(url: str) -> None:
    assert opener.store_from_url(url) is None


def test_the_table_parameter_names_the_table_and_never_reaches_the_driver() -> None:
    store = opener.store_from_url("mysql+pymysql://root@127.0.0.1:1/db?table=farm_snapshots")
    assert store is not None and store.table.name == "farm_snapshots"
    assert dict(store.engine.url.query) == {"charset": "utf8mb4"}


def test_the_entry_point_plugin_implements_only_store_from_url() -> None:
    (found,) = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == "sqlalchemy"]
    assert found.load() is opener
    hooks = {
        name
        for name in dir(opener)
        if hasattr(getattr(opener, name), "runtime_snapshot_mount_impl")
    }
    assert hooks == {"store_from_url"}


def test_an_app_with_the_plugin_installed_still_has_exactly_its_own_store() -> None:
    store = MemoryStore()
    app = create_app(store, api_keys=["k"], accounts=["a"])  # loads the installed entry points
    plugins: Plugins = app.state.plugins
    assert plugins.store is store
    assert "runtime_snapshot_mount_sqlalchemy.opener" in plugins.plugin_names()


async def test_a_sqlite_file_store_uses_write_ahead_logging(tmp_path: Path) -> None:
    store = SQLAlchemyStore(f"sqlite:///{tmp_path / 'wal.db'}")
    await store.store_create_tables()
    await store.store_upsert(make_snapshot("a"))
    await store.store_close()
    with sqlite3.connect(tmp_path / "wal.db") as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)


async def test_an_in_memory_sqlite_store_shares_one_database_between_threads() -> None:
    store = SQLAlchemyStore("sqlite://")
    assert isinstance(store.engine, Engine) and isinstance(store.engine.pool, StaticPool)
    await store.store_create_tables()
    snapshot = make_snapshot("a")
    await store.store_upsert(snapshot)
    assert await store.store_get("a") == snapshot
    await store.store_close()


def test_store_engines_for_mysql_talk_utf8mb4_unless_told_otherwise() -> None:
    assert create_store_engine("mysql+pymysql://h/db").url.query["charset"] == "utf8mb4"
    assert create_store_engine("mysql+pymysql://h/db?charset=utf8").url.query["charset"] == "utf8"
