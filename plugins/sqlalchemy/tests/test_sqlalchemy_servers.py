"""End to end: the command line's servers on each database, an outage, and concurrency."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from rsm_support import wait_until_listening
from runtime_snapshot_mount_sqlalchemy import SQLAlchemyStore
from sqlalchemy import create_engine
from sqlalchemy.ext.asyncio import create_async_engine
from support_sqlalchemy import (
    API_KEY,
    AUTH,
    EXAMPLE_REQUEST,
    EXAMPLES,
    FAILURE,
    UPSERT,
    Database,
    TcpProxy,
    dispose,
    free_port,
    request_body,
)

from runtime_snapshot_mount import create_app, parse_instant
from runtime_snapshot_mount.testing import new_account_id


@contextlib.contextmanager
def serving(store_url: str, log: Path, *options: str) -> Iterator[str]:
    """Run ``runtime-snapshot-mount serve`` on a free loopback port; yield its base URL."""
    port = free_port()
    command = [sys.executable, "-m", "runtime_snapshot_mount", "serve", "--store", store_url]
    command += ["--port", str(port), "--api-key", API_KEY, *options]
    with log.open("wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
        try:
            wait_until_listening(process, port, log)
            yield f"http://127.0.0.1:{port}"
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def show(account_id: str, store_url: str) -> subprocess.CompletedProcess[str]:
    """Run ``runtime-snapshot-mount show``."""
    command = [sys.executable, "-m", "runtime_snapshot_mount", "show", account_id]
    return subprocess.run(
        [*command, "--store", store_url], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.sqlite
def test_serve_then_show_with_the_example_files(tmp_path: Path) -> None:
    store_url = f"sqlite:///{tmp_path / 'x.db'}"
    accounts = str(EXAMPLES / "accounts.json")
    with serving(store_url, tmp_path / "server.log", "--accounts", accounts) as base:
        response = httpx.post(base + UPSERT, json=EXAMPLE_REQUEST, headers=AUTH, timeout=30)
        assert response.status_code == 200
        assert response.json() == {
            "status": "upserted",
            "account_id": "account_user095916355",
            "snapshot_id": "snapshot-2026-03-22-001",
            "strategy_version": 7,
            "strategy_synced_at": "2026-03-22T08:30:00.000Z",
        }
        retired = {**EXAMPLE_REQUEST, "account_id": "account_retired"}
        assert httpx.post(base + UPSERT, json=retired, headers=AUTH).status_code == 404
    shown = show("account_user095916355", store_url)
    assert shown.returncode == 0, shown.stderr
    stored = json.loads(shown.stdout)
    synced_at = stored.pop("strategy_synced_at")
    assert parse_instant(synced_at) == parse_instant(EXAMPLE_REQUEST["strategy_synced_at"])
    assert stored == {k: v for k, v in EXAMPLE_REQUEST.items() if k != "strategy_synced_at"}
    assert show("account_retired", store_url).returncode == 1


def test_two_servers_writing_one_account_at_once_keep_the_greatest(
    database: Database, tmp_path: Path
) -> None:
    account_id = new_account_id()
    versions = list(range(1, 101))
    random.shuffle(versions)
    urls = [database.cli_url("async"), database.cli_url("sync")]  # e.g. asyncpg and psycopg
    with (
        serving(urls[0], tmp_path / "first.log") as first,
        serving(urls[1], tmp_path / "second.log") as second,
        httpx.Client(timeout=60) as client,
        ThreadPoolExecutor(max_workers=16) as pool,
    ):

        def post(index: int) -> httpx.Response:
            base = (first, second)[index % 2]
            body = request_body(account_id, versions[index])
            return client.post(base + UPSERT, json=body, headers=AUTH)

        responses = list(pool.map(post, range(len(versions))))
    assert [r.status_code for r in responses] == [200] * len(versions)
    statuses = {r.json()["strategy_version"]: r.json()["status"] for r in responses}
    assert statuses[max(versions)] == "upserted"
    shown = show(account_id, urls[0])
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["strategy_version"] == max(versions)
    assert json.loads(shown.stdout)["snapshot_id"] == f"v{max(versions)}"


@pytest.mark.anyio
async def test_a_database_outage_answers_500_then_recovers_without_a_restart(
    server_database: Database, mode: str, proxy: TcpProxy
) -> None:
    url = server_database.url(mode).set(host="127.0.0.1", port=proxy.port)
    engine = create_async_engine(url) if mode == "async" else create_engine(url)
    store = SQLAlchemyStore(engine, table=server_database.table)
    account_id = new_account_id()
    app = create_app(store, api_keys=[API_KEY], accounts=[account_id], entry_points=False)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://host") as client:

            async def post(version: int) -> httpx.Response:
                return await client.post(
                    UPSERT, json=request_body(account_id, version), headers=AUTH
                )

            assert (await post(1)).json()["status"] == "upserted"
            await proxy.stop()
            for version in (2, 3):
                response = await post(version)
                assert (response.status_code, response.json()) == (500, FAILURE)
            await proxy.start()
            response = await post(4)
            assert (response.status_code, response.json()["status"]) == (200, "upserted")
        stored = await store.store_get(account_id)
        assert stored is not None and stored.strategy_version == 4
    finally:
        await dispose(engine)


@pytest.mark.sqlite
@pytest.mark.anyio
@pytest.mark.parametrize("driver", ["sqlite", "sqlite+aiosqlite"])
async def test_64_concurrent_requests_on_sqlite_all_succeed(tmp_path: Path, driver: str) -> None:
    store = SQLAlchemyStore(f"{driver}:///{tmp_path / 'busy.db'}")
    await store.store_create_tables()
    accounts = [new_account_id() for _ in range(4)]
    requests = [(account, version) for account in accounts for version in range(1, 17)]
    random.shuffle(requests)
    app = create_app(store, api_keys=[API_KEY], accounts=accounts, entry_points=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://host") as client:
        responses = await asyncio.gather(
            *(
                client.post(UPSERT, json=request_body(account, version), headers=AUTH)
                for account, version in requests
            )
        )
    assert len(responses) == 64
    assert [r.status_code for r in responses] == [200] * 64
    for account in accounts:
        stored = await store.store_get(account)
        assert stored is not None and stored.strategy_version == 16
    await store.store_close()
