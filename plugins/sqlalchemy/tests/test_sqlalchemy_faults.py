"""Faults of the database under the app: down at start-up, and a SQLite file it cannot write.

A database that goes away while the app runs is covered in ``test_sqlalchemy_servers.py``
(PostgreSQL and MariaDB, both engine kinds; a SQLite file cannot go away that way).
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from runtime_snapshot_mount_sqlalchemy import SQLAlchemyStore
from starlette.applications import Starlette
from support_sqlalchemy import (
    API_KEY,
    AUTH,
    FAILURE,
    UPSERT,
    Database,
    TcpProxy,
    free_port,
    request_body,
)

from runtime_snapshot_mount import create_app
from runtime_snapshot_mount.testing import make_snapshot, new_account_id

pytestmark = pytest.mark.anyio


def client_for(app: Starlette) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://host")


# -- the database is unreachable when the app starts ------------------------------------


async def test_an_app_built_while_its_database_is_down_answers_500_then_200_without_a_restart(
    server_database: Database, mode: str, proxy: TcpProxy
) -> None:
    await proxy.stop()  # down before anything has connected; the port stays reserved for it
    url = server_database.url(mode).set(host="127.0.0.1", port=proxy.port)
    store = SQLAlchemyStore(url, table_name=server_database.table.name)
    account_id = new_account_id()
    app = create_app(store, api_keys=[API_KEY], accounts=[account_id], entry_points=False)
    try:
        async with client_for(app) as client:
            for version in (1, 2):
                response = await client.post(
                    UPSERT, json=request_body(account_id, version), headers=AUTH
                )
                assert (response.status_code, response.json()) == (500, FAILURE)
            await proxy.start()  # the database is back: the same app, no restart
            response = await client.post(UPSERT, json=request_body(account_id, 3), headers=AUTH)
            assert (response.status_code, response.json()["status"]) == (200, "upserted")
        stored = await store.store_get(account_id)
        assert stored is not None and stored.strategy_version == 3
        assert app.state.metrics.snapshot()["failed"] == 2
    finally:
        await store.store_close()


def unreachable_store_url(database: Database, mode: str) -> str:
    """``database``'s store URL on a loopback port where nothing listens."""
    url = database.url(mode).set(host="127.0.0.1", port=free_port())
    return url.update_query_dict({"table": database.table.name}).render_as_string(False)


def run_serve(store_url: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``runtime-snapshot-mount serve --store STORE_URL``, which must exit rather than serve."""
    command = [sys.executable, "-m", "runtime_snapshot_mount", "serve", "--store", store_url]
    command += ["--port", str(free_port()), "--api-key", API_KEY]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


def assert_exit_2_with_one_line(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("runtime-snapshot-mount: cannot open the store"), lines[0]
    assert "Traceback" not in result.stderr


def test_serve_with_an_unreachable_database_exits_2_with_a_one_line_reason(
    server_database: Database, mode: str, tmp_path: Path
) -> None:
    assert_exit_2_with_one_line(run_serve(unreachable_store_url(server_database, mode), tmp_path))


@pytest.mark.sqlite
def test_serve_with_a_sqlite_file_in_a_missing_directory_exits_2_with_a_one_line_reason(
    tmp_path: Path,
) -> None:
    missing = tmp_path / "no-such-directory" / "snapshots.db"
    assert_exit_2_with_one_line(run_serve(f"sqlite:///{missing}", tmp_path))
    assert not missing.parent.exists()


# -- a SQLite database the app cannot write ---------------------------------------------


@pytest.mark.sqlite
@pytest.mark.parametrize("driver", ["sqlite", "sqlite+aiosqlite"])
async def test_a_read_only_sqlite_database_answers_500_to_every_upsert_and_stores_nothing(
    sqlite: Database, driver: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The tests run as root, whom file permissions do not stop: open the file read-only.
    path = sqlite.sync_url.database
    writable = SQLAlchemyStore(sqlite.sync_url, table=sqlite.table)
    read_only = SQLAlchemyStore(f"{driver}:///file:{path}?mode=ro&uri=true", table=sqlite.table)
    seeded, other = new_account_id(), new_account_id()
    await writable.store_upsert(make_snapshot(seeded, 1))
    app = create_app(read_only, api_keys=[API_KEY], accounts=[seeded, other], entry_points=False)
    caplog.set_level(logging.INFO, logger="runtime_snapshot_mount")
    try:
        async with client_for(app) as client:
            for account_id, version in [(seeded, 2), (other, 1), (seeded, 3)]:
                body = request_body(account_id, version)
                response = await client.post(UPSERT, json=body, headers=AUTH)
                assert (response.status_code, response.json()) == (500, FAILURE)
            # it keeps answering: what does not reach the store is answered as usual
            invalid = await client.post(UPSERT, json={"account_id": seeded}, headers=AUTH)
            assert invalid.status_code == 422
        failures = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(failures) == 3  # once per failed request ...
        assert len({r.__dict__["request_id"] for r in failures}) == 3
        for record in failures:  # ... with the traceback of the refused write
            assert record.exc_info is not None
            assert "readonly database" in str(record.exc_info[1])
        assert app.state.metrics.snapshot()["failed"] == 3
        stored = await writable.store_get(seeded)
        assert stored is not None and stored.strategy_version == 1
        assert await writable.store_get(other) is None
    finally:
        await read_only.store_close()
        await writable.store_close()
