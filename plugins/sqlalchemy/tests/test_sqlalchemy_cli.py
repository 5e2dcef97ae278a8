"""The command line on SQL stores: in-memory SQLite, ``show`` that creates nothing, quiet
table creation, and gunicorn workers creating one missing table at once."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from rsm_support import wait_until_listening
from sqlalchemy import create_engine, inspect, text
from support_sqlalchemy import (
    API_KEY,
    AUTH,
    EXAMPLE_REQUEST,
    UPSERT,
    Database,
    free_port,
    request_body,
    unique_name,
)

from runtime_snapshot_mount.testing import new_account_id

COMMAND = [sys.executable, "-m", "runtime_snapshot_mount"]
FACTORY = "runtime_snapshot_mount.standalone:create_app_from_env()"


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COMMAND, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


@contextlib.contextmanager
def running(
    command: list[str], port: int, log: Path, cwd: Path
) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as output:
        process = subprocess.Popen(command, cwd=cwd, stdout=output, stderr=subprocess.STDOUT)
    try:
        wait_until_listening(process, port, log)
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def assert_exit_2_with_one_line(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word.lower() in lines[0].lower(), lines[0]


# -- in-memory SQLite serves ------------------------------------------------------------


@pytest.mark.sqlite
@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:", "sqlite+aiosqlite://"])
def test_serve_on_in_memory_sqlite_creates_the_table_where_it_serves(
    tmp_path: Path, url: str
) -> None:
    port = free_port()
    command = [*COMMAND, "serve", "--store", url, "--port", str(port), "--api-key", API_KEY]
    with (
        running(command, port, tmp_path / "server.log", tmp_path) as process,
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client,
    ):
        applied = client.post(UPSERT, json=EXAMPLE_REQUEST, headers=AUTH)
        assert applied.status_code == 200, (tmp_path / "server.log").read_text()
        assert applied.json()["status"] == "upserted"
        stale = {**EXAMPLE_REQUEST, "strategy_version": EXAMPLE_REQUEST["strategy_version"] - 1}
        assert client.post(UPSERT, json=stale, headers=AUTH).json()["status"] == "ignored_stale"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    assert sorted(path.name for path in tmp_path.iterdir()) == ["server.log"]


# -- show creates nothing ---------------------------------------------------------------


@pytest.mark.sqlite
def test_show_on_a_sqlite_file_without_the_table_exits_2_and_creates_no_table(
    tmp_path: Path,
) -> None:
    path = tmp_path / "other.db"
    with contextlib.closing(sqlite3.connect(path)) as connection:
        connection.execute("CREATE TABLE unrelated (x INTEGER)")
        connection.commit()
    result = run("show", "account_x", "--store", f"sqlite:///{path}", cwd=tmp_path)
    assert_exit_2_with_one_line(result, "runtime_snapshots")
    with contextlib.closing(sqlite3.connect(path)) as connection:
        tables = connection.execute("SELECT name FROM sqlite_master WHERE type='table'")
        assert [name for (name,) in tables] == ["unrelated"]


@pytest.mark.sqlite
def test_show_on_an_in_memory_sqlite_database_exits_2(tmp_path: Path) -> None:
    assert_exit_2_with_one_line(run("show", "account_x", "--store", "sqlite://", cwd=tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_show_of_a_missing_table_exits_2_and_creates_nothing(
    database: Database, tmp_path: Path
) -> None:
    missing = unique_name("rsm_absent")
    url = database.url("sync")  # on SQLite, a file the fixture made
    store_url = url.update_query_dict({"table": missing}).render_as_string(hide_password=False)
    result = run("show", "account_x", "--store", store_url, cwd=tmp_path)
    assert_exit_2_with_one_line(result, "cannot read the store")
    engine = create_engine(url)
    try:
        assert missing not in inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_show_of_an_account_without_a_snapshot_exits_1(database: Database, tmp_path: Path) -> None:
    account_id = new_account_id()
    result = run("show", account_id, "--store", database.cli_url(), cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert account_id in result.stderr
    assert result.stdout == ""


# -- table creation ---------------------------------------------------------------------


@pytest.mark.mariadb
def test_serve_on_an_existing_mysql_table_logs_no_already_exists_warning(
    mariadb: Database, tmp_path: Path, mode: str
) -> None:
    port = free_port()
    log = tmp_path / "server.log"
    command = [*COMMAND, "serve", "--store", mariadb.cli_url(mode), "--port", str(port)]
    with running([*command, "--api-key", API_KEY], port, log, tmp_path):
        body = request_body(new_account_id(), 1)
        assert httpx.post(f"http://127.0.0.1:{port}{UPSERT}", json=body, headers=AUTH).is_success
    assert "already exists" not in log.read_text()
    assert "Application startup complete" in log.read_text()


@pytest.mark.skipif(importlib.util.find_spec("gunicorn") is None, reason="no gunicorn")
def test_gunicorn_workers_creating_one_missing_table_at_once_all_start(
    database: Database, tmp_path: Path
) -> None:
    table = unique_name("rsm_race")
    url = database.url("async").update_query_dict({"table": table})
    port = free_port()
    log = tmp_path / "gunicorn.log"
    command = [sys.executable, "-m", "gunicorn", "-k", "uvicorn_worker.UvicornWorker"]
    command += ["-w", "4", "-b", f"127.0.0.1:{port}", FACTORY]
    env_url = url.render_as_string(hide_password=False)
    env = {**os.environ, "RSM_STORE": env_url, "RSM_API_KEYS": API_KEY}
    engine = create_engine(database.url("sync"))
    try:
        with log.open("wb") as output:
            process = subprocess.Popen(
                command, cwd=tmp_path, env=env, stdout=output, stderr=subprocess.STDOUT
            )
        try:
            wait_until_listening(process, port, log)
            deadline = time.monotonic() + 30
            while log.read_text().count("Application startup complete") < 4:
                assert time.monotonic() < deadline, log.read_text()
                assert process.poll() is None, log.read_text()
                time.sleep(0.1)
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
                for version in range(1, 9):
                    body = request_body(new_account_id(), version)
                    assert client.post(UPSERT, json=body, headers=AUTH).status_code == 200
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=30) == 0, log.read_text()
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        assert "Worker failed to boot" not in log.read_text()
        assert "startup failed" not in log.read_text()
        assert table in inspect(engine).get_table_names()
    finally:
        with engine.begin() as connection:
            connection.execute(text(f"DROP TABLE IF EXISTS {table}"))
        engine.dispose()
