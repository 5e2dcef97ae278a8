"""``runtime-snapshot-mount create-tables --store URL``: creates the snapshot table without
Alembic (exit 0), again changes nothing (exit 0, rows kept), and an unreachable database or a
store without tables exits 2 with one line. The real command, in a subprocess."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from runtime_snapshot_mount_sqlalchemy import SQLAlchemyStore
from sqlalchemy import create_engine, inspect, text
from support_sqlalchemy import Database, free_port, request_body, unique_name

from runtime_snapshot_mount import Snapshot

COMMAND = [sys.executable, "-m", "runtime_snapshot_mount"]


def create_tables(store: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COMMAND, "create-tables", "--store", store],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.sqlite
@pytest.mark.anyio
async def test_create_tables_makes_the_sqlite_table_and_may_repeat(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'new.db'}"
    first = create_tables(url)
    assert (first.returncode, first.stdout) == (0, ""), first.stderr
    engine = create_engine(url)
    assert inspect(engine).get_table_names() == ["runtime_snapshots"]
    store = SQLAlchemyStore(url)
    try:
        assert (await store.store_upsert(Snapshot.from_json(request_body("kept", 3)))).applied
    finally:
        await store.store_close()
    again = create_tables(url)
    assert again.returncode == 0, again.stderr
    with engine.connect() as connection:
        count = connection.execute(text("SELECT count(*) FROM runtime_snapshots")).scalar()
    engine.dispose()
    assert count == 1


@pytest.mark.parametrize(
    "backend",
    [
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("mariadb", marks=pytest.mark.mariadb),
    ],
)
def test_create_tables_on_a_server_names_its_table_and_may_repeat(
    backend: str, request: pytest.FixtureRequest
) -> None:
    database: Database = request.getfixturevalue(backend)
    name = unique_name("rsm_create")
    url = database.async_url.update_query_dict({"table": name}).render_as_string(
        hide_password=False
    )
    engine = create_engine(database.sync_url)
    try:
        for _ in range(2):
            done = create_tables(url)
            assert done.returncode == 0, done.stderr
            assert len(done.stderr.strip().splitlines()) <= 2
        assert name in inspect(engine).get_table_names()
    finally:
        with engine.begin() as connection:
            connection.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")
        engine.dispose()


@pytest.mark.sqlite
@pytest.mark.parametrize(
    "store",
    [
        "postgresql+asyncpg://postgres@127.0.0.1:{port}/test",
        "mysql+asyncmy://root@127.0.0.1:{port}/test",
        "memory://",
        "nosuchscheme://x",
    ],
)
def test_create_tables_exits_2_with_one_line_when_the_store_cannot_be_reached(store: str) -> None:
    done = create_tables(store.format(port=free_port()))
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("runtime-snapshot-mount: ")
