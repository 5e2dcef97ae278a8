"""Connection-level failures, as each driver really raises them, are transient; and the retry
deadline bounds a call even when the database never answers.

The errors come from real refused ports, a real listener that never answers, and throwaway
PostgreSQL and MariaDB servers that the tests terminate sessions of, crash and restart (see
``throwaway_servers``; the shared servers are never touched).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import anyio
import asyncmy.errors
import asyncpg
import psycopg.errors
import pymysql
import pymysql.err
import pytest
from runtime_snapshot_mount_sqlalchemy import SQLAlchemyStore, create_store_engine, is_transient
from runtime_snapshot_mount_sqlalchemy.opener import store_from_url
from runtime_snapshot_mount_sqlalchemy.store import DEFAULT_RETRY_DEADLINE
from sqlalchemy import create_engine, exc, text
from sqlalchemy.ext.asyncio import AsyncEngine
from support_sqlalchemy import free_port
from throwaway_servers import (
    ThrowawayMariaDB,
    ThrowawayPostgres,
    throwaway_mariadb,
    throwaway_postgres,
)

from runtime_snapshot_mount.testing import make_snapshot

pytestmark = pytest.mark.anyio


async def connect_error(url: str, sync: bool = False) -> BaseException:
    """What connecting an engine for ``url`` raises (``sync``: a plain ``create_engine``)."""
    engine = create_engine(url) if sync else create_store_engine(url)
    try:
        if isinstance(engine, AsyncEngine):
            async with engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        else:
            with engine.connect() as connection:
                connection.execute(text("SELECT 1"))
    except Exception as error:
        return error
    finally:
        if isinstance(engine, AsyncEngine):
            await engine.dispose()
        else:
            engine.dispose()
    raise AssertionError(f"{url} connected")


# -- a refused port ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "sync"),
    [
        ("postgresql+asyncpg://postgres@127.0.0.1:{port}/x", False),
        ("postgresql+psycopg://postgres@127.0.0.1:{port}/x", False),  # psycopg's async mode
        ("postgresql+psycopg://postgres@127.0.0.1:{port}/x", True),
        ("mysql+asyncmy://root@127.0.0.1:{port}/x", False),
        ("mysql+pymysql://root@127.0.0.1:{port}/x", True),
        ("mariadb+pymysql://root@127.0.0.1:{port}/x", True),
    ],
)
async def test_a_refused_connection_is_transient_on_every_driver(url: str, sync: bool) -> None:
    error = await connect_error(url.format(port=free_port()), sync)
    assert is_transient(error), repr(error)


async def test_a_refused_raw_asyncpg_connection_is_transient() -> None:
    with pytest.raises(OSError) as raised:
        await asyncpg.connect(host="127.0.0.1", port=free_port(), user="postgres")
    assert is_transient(raised.value)


async def test_mysql_through_a_missing_socket_is_transient() -> None:
    """pymysql and asyncmy report a missing socket file as 2003 (2002 in the C client)."""
    for url in ("mysql+pymysql://root@localhost/x", "mysql+asyncmy://root@localhost/x"):
        error = await connect_error(f"{url}?unix_socket=/nonexistent/mysqld.sock", sync=False)
        assert is_transient(error), repr(error)


# -- the deadline: a database that accepts the connection and never answers -------------


@pytest.mark.parametrize(
    ("url", "sync"),
    [
        ("postgresql+asyncpg://postgres@127.0.0.1:{port}/x", False),
        ("mysql+asyncmy://root@127.0.0.1:{port}/x", False),
        ("postgresql+psycopg://postgres@127.0.0.1:{port}/x", True),  # in a worker thread
        ("mysql+pymysql://root@127.0.0.1:{port}/x", True),
    ],
)
async def test_a_retry_whose_connect_hangs_is_cut_at_the_deadline(url: str, sync: bool) -> None:
    """The first connect is refused; then the port has a listener whose kernel completes the
    TCP handshake but that never answers, so every retry's connect hangs."""
    port = free_port()
    target = url.format(port=port)
    engine = create_engine(target) if sync else create_store_engine(target)
    store = SQLAlchemyStore(engine, retry_deadline=0.5)
    with socket.socket() as listener:

        async def listen_soon() -> None:
            await asyncio.sleep(0.15)  # the first attempt has been refused by then
            listener.bind(("127.0.0.1", port))
            listener.listen(64)

        listening = asyncio.ensure_future(listen_soon())
        started = time.monotonic()
        try:
            with anyio.fail_after(20), pytest.raises(TimeoutError):
                await store.store_upsert(make_snapshot("a"))
            assert time.monotonic() - started < 0.5 + 1.0
        finally:
            await listening
            if isinstance(engine, AsyncEngine):
                await engine.dispose()
            else:
                engine.dispose()


# -- PostgreSQL: sessions terminated, a crash, a restart --------------------------------


@pytest.fixture(scope="module")
def postgres_server() -> Iterator[ThrowawayPostgres]:
    with throwaway_postgres() as server:
        yield server


def raw_url(server: ThrowawayPostgres) -> str:
    return server.url.replace("postgresql+asyncpg", "postgresql")


@pytest.mark.postgres
async def test_a_terminated_session_is_transient_on_every_postgresql_driver(
    postgres_server: ThrowawayPostgres,
) -> None:
    """``pg_terminate_backend``: the server sends 57P01 and closes the session."""
    url = postgres_server.url
    admin = await asyncpg.connect(raw_url(postgres_server))
    raw = await asyncpg.connect(raw_url(postgres_server))
    sync = create_engine(url.replace("+asyncpg", "+psycopg"))
    async_engine = create_store_engine(url)
    assert isinstance(async_engine, AsyncEngine)
    try:
        sync_connection = sync.connect()
        async_connection = await async_engine.connect()
        pids = [
            await raw.fetchval("SELECT pg_backend_pid()"),
            sync_connection.exec_driver_sql("SELECT pg_backend_pid()").scalar(),
            (await async_connection.exec_driver_sql("SELECT pg_backend_pid()")).scalar(),
        ]
        for pid in pids:
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
        await asyncio.sleep(0.2)
        errors: list[BaseException] = []
        with pytest.raises(Exception) as raised:
            await raw.fetchval("SELECT 1")
        errors.append(raised.value)
        with pytest.raises(exc.DBAPIError) as wrapped:
            sync_connection.exec_driver_sql("SELECT 1")
        errors += [wrapped.value, wrapped.value.orig]
        # 57P01: psycopg.errors.AdminShutdown; psycopg before 3.2.3 reports it plainly
        assert isinstance(wrapped.value.orig, psycopg.OperationalError)
        with pytest.raises(exc.DBAPIError) as wrapped_async:
            await async_connection.exec_driver_sql("SELECT 1")
        errors.append(wrapped_async.value)
        assert [is_transient(error) for error in errors] == [True] * len(errors), errors
        sync_connection.close()
        await async_connection.close()
    finally:
        await admin.close()
        await raw.close()
        sync.dispose()
        await async_engine.dispose()


@pytest.mark.postgres
async def test_a_crashed_server_process_is_transient_on_every_postgresql_driver(
    postgres_server: ThrowawayPostgres,
) -> None:
    """A backend killed with SIGKILL makes the server drop every session (57P02 or a closed
    connection, 08003) and recover."""
    url = postgres_server.url
    victim = await asyncpg.connect(raw_url(postgres_server))
    raw = await asyncpg.connect(raw_url(postgres_server))
    sync = create_engine(url.replace("+asyncpg", "+psycopg"))
    sync_connection = sync.connect()
    sync_connection.exec_driver_sql("SELECT 1")
    try:
        os.kill(await victim.fetchval("SELECT pg_backend_pid()"), signal.SIGKILL)
        await asyncio.sleep(0.5)
        with pytest.raises(Exception) as raised:
            await raw.fetchval("SELECT 1")
        with pytest.raises(exc.DBAPIError) as wrapped:
            sync_connection.exec_driver_sql("SELECT 1")
        for error in (raised.value, wrapped.value, wrapped.value.orig):
            assert is_transient(error), repr(error)
    finally:
        with contextlib.suppress(Exception):
            sync_connection.close()
        sync.dispose()
        raw.terminate()
        victim.terminate()
    await wait_until_up(postgres_server)


async def wait_until_up(server: ThrowawayPostgres) -> None:
    for _ in range(200):
        with contextlib.suppress(Exception):
            connection = await asyncpg.connect(raw_url(server))
            await connection.close()
            return
        await asyncio.sleep(0.05)


@pytest.mark.postgres
async def test_a_server_starting_up_is_transient(postgres_server: ThrowawayPostgres) -> None:
    """Connecting while the server recovers from a crash: refused, then 57P03 ("the database
    system is starting up"), through asyncpg itself and through SQLAlchemy."""
    seen: dict[str, list[BaseException]] = {"raw": [], "sqlalchemy": []}
    for kind in seen:
        postgres_server.stop("immediate")
        start_without_waiting(postgres_server)
        engine = create_store_engine(postgres_server.url)
        assert isinstance(engine, AsyncEngine)
        try:
            for _ in range(20000):
                try:
                    if kind == "raw":
                        connection = await asyncpg.connect(raw_url(postgres_server))
                        await connection.close()
                    else:
                        async with engine.connect() as connection:
                            await connection.exec_driver_sql("SELECT 1")
                    break
                except Exception as error:
                    seen[kind].append(error)
        finally:
            await engine.dispose()
    for kind, errors in seen.items():
        assert errors, f"{kind}: the server was up at once"
        assert all(is_transient(error) for error in errors), errors
    starting_up = [
        error
        for error in seen["raw"] + [e.orig for e in seen["sqlalchemy"] if hasattr(e, "orig")]
        if getattr(error, "sqlstate", None) == "57P03"
    ]
    assert starting_up, "no 57P03 seen: the server came up between two tries"
    assert isinstance(seen["raw"][-1], asyncpg.exceptions.CannotConnectNowError | OSError)


def start_without_waiting(server: ThrowawayPostgres) -> None:
    options = f"-p {server.port} -c listen_addresses=127.0.0.1 -k {server.directory}"
    command = [str(server.binaries / "pg_ctl"), "-D", str(server.data), "-l", str(server.log)]
    command += ["-o", options, "-W", "start"]
    kwargs: dict[str, Any] = {"user": "postgres", "group": "postgres"} if os.geteuid() == 0 else {}
    subprocess.run(command, check=True, capture_output=True, timeout=60, **kwargs)


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.exceptions.AdminShutdownError("terminating connection"),
        asyncpg.exceptions.CrashShutdownError("terminating connection"),
        asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
        asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed"),
        asyncpg.exceptions.ConnectionFailureError("connection failure"),
        asyncpg.exceptions.InterfaceError("connection is closed"),
        psycopg.errors.CrashShutdown("terminating connection"),
        psycopg.errors.CannotConnectNow("the database system is starting up"),
        pymysql.err.OperationalError(1927, "Connection was killed"),
        pymysql.err.OperationalError(2006, "MySQL server has gone away"),
        pymysql.err.OperationalError(2002, "Can't connect through socket"),
        pymysql.err.OperationalError(1053, "Server shutdown in progress"),
        asyncmy.errors.OperationalError(1927, "Connection was killed"),
        asyncmy.errors.OperationalError(2006, "MySQL server has gone away"),
    ],
)
def test_the_drivers_connection_errors_that_no_test_server_can_be_made_to_send(
    error: Exception,
) -> None:
    """Codes a restart does not reliably produce here, as the drivers' own exception
    classes: raw and wrapped by SQLAlchemy."""
    assert is_transient(error)
    assert is_transient(exc.DBAPIError("SELECT 1", {}, error))


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.exceptions.UniqueViolationError("duplicate key"),
        asyncpg.exceptions.UndefinedTableError("no such table"),
        asyncpg.exceptions.InterfaceError("another operation is in progress"),
        psycopg.errors.QueryCanceled("canceling statement due to statement timeout"),
        asyncmy.errors.OperationalError(1317, "Query execution was interrupted"),
        pymysql.err.ProgrammingError(1146, "Table doesn't exist"),
    ],
)
def test_lasting_errors_are_not_transient(error: Exception) -> None:
    assert not is_transient(error)
    assert not is_transient(exc.DBAPIError("SELECT 1", {}, error))


# -- MariaDB: a restart and a killed connection -----------------------------------------


@pytest.fixture(scope="module")
def mariadb_server() -> Iterator[ThrowawayMariaDB]:
    with throwaway_mariadb() as server:
        yield server


@pytest.mark.mariadb
async def test_a_mariadb_restart_and_a_killed_connection_are_transient_on_both_drivers(
    mariadb_server: ThrowawayMariaDB,
) -> None:
    url = mariadb_server.url
    async_engine = create_store_engine(url)
    sync_engine = create_engine(url.replace("+asyncmy", "+pymysql"))
    assert isinstance(async_engine, AsyncEngine)
    killer = pymysql.connect(host="127.0.0.1", port=mariadb_server.port, user="root")
    try:
        errors: list[BaseException] = []
        for restart in (False, True):
            async_connection = await async_engine.connect()
            sync_connection = sync_engine.connect()
            ids = [
                (await async_connection.exec_driver_sql("SELECT CONNECTION_ID()")).scalar(),
                sync_connection.exec_driver_sql("SELECT CONNECTION_ID()").scalar(),
            ]
            if restart:
                mariadb_server.restart()
            else:
                with killer.cursor() as cursor:
                    for connection_id in ids:
                        cursor.execute(f"KILL CONNECTION {int(connection_id)}")
                await asyncio.sleep(0.2)
            with pytest.raises(exc.DBAPIError) as wrapped_async:
                await async_connection.exec_driver_sql("SELECT 1")
            with pytest.raises(exc.DBAPIError) as wrapped_sync:
                sync_connection.exec_driver_sql("SELECT 1")
            errors += [wrapped_async.value, wrapped_async.value.orig]
            errors += [wrapped_sync.value, wrapped_sync.value.orig]
            with contextlib.suppress(Exception):
                await async_connection.close()
            with contextlib.suppress(Exception):
                sync_connection.close()
        codes = {error.args[0] for error in errors if not isinstance(error, exc.DBAPIError)}
        assert codes <= {2006, 2013, 1927}, codes
        assert all(is_transient(error) for error in errors), errors
    finally:
        with contextlib.suppress(Exception):
            killer.close()
        await async_engine.dispose()
        sync_engine.dispose()


# -- the deadline from a store URL ------------------------------------------------------


def test_a_store_url_may_carry_the_retry_deadline() -> None:
    store = store_from_url("postgresql+asyncpg://u@127.0.0.1/d?retry_deadline=0.5&table=t")
    assert store is not None
    assert (store.retry_deadline, store.table.name) == (0.5, "t")
    assert "retry_deadline" not in store.engine.url.query
    default = store_from_url("mysql+asyncmy://u@127.0.0.1/d")
    assert default is not None and default.retry_deadline == DEFAULT_RETRY_DEADLINE
    sqlite = store_from_url("sqlite:///:memory:?retry_deadline=3")
    assert sqlite is not None and sqlite.retry_deadline is None  # SQLite waits in its busy handler


@pytest.mark.parametrize("value", ["0", "-1", "nan", "soon"])
def test_a_bad_retry_deadline_in_a_store_url_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="retry_deadline"):
        store_from_url(f"postgresql+asyncpg://u@127.0.0.1/d?retry_deadline={value}")
