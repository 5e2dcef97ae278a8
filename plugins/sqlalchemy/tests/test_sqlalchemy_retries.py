"""Transient failures are retried a bounded number of times, then raised."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import psycopg.errors
import pymysql.err
import pytest
from runtime_snapshot_mount_sqlalchemy import SQLAlchemyStore, is_transient
from runtime_snapshot_mount_sqlalchemy.engines import LostRace, retry_transient
from sqlalchemy import create_engine, event, exc

from runtime_snapshot_mount.testing import make_snapshot

pytestmark = [pytest.mark.sqlite, pytest.mark.anyio]


def wrapped(original: Exception, invalidated: bool = False) -> exc.DBAPIError:
    return exc.DBAPIError("INSERT ...", {}, original, connection_invalidated=invalidated)


@pytest.mark.parametrize(
    "error",
    [
        wrapped(pymysql.err.OperationalError(1213, "Deadlock found")),
        wrapped(pymysql.err.OperationalError(1205, "Lock wait timeout exceeded")),
        wrapped(psycopg.errors.SerializationFailure("could not serialize access")),
        wrapped(psycopg.errors.DeadlockDetected("deadlock detected")),
        wrapped(sqlite3.OperationalError("database is locked")),
        wrapped(Exception("server closed the connection"), invalidated=True),
        LostRace("another writer stored this account first"),
        ConnectionRefusedError(111, "Connection refused"),
    ],
)
def test_transient_failures(error: Exception) -> None:
    assert is_transient(error)


@pytest.mark.parametrize(
    "error",
    [
        wrapped(pymysql.err.IntegrityError(1062, "Duplicate entry")),
        wrapped(psycopg.errors.UndefinedTable("relation does not exist")),
        wrapped(sqlite3.OperationalError("no such table: runtime_snapshots")),
        ValueError("a bug"),
    ],
)
def test_lasting_failures(error: Exception) -> None:
    assert not is_transient(error)


async def test_a_transient_failure_is_retried_until_it_passes() -> None:
    calls = []

    async def attempt() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise LostRace("again")
        return "done"

    assert await retry_transient(attempt, attempts=5, base_delay=0) == "done"
    assert len(calls) == 3


async def test_a_lasting_failure_is_raised_at_once() -> None:
    calls = []

    async def attempt() -> None:
        calls.append(1)
        raise ValueError("a bug")

    with pytest.raises(ValueError):
        await retry_transient(attempt, attempts=5, base_delay=0)
    assert len(calls) == 1


async def test_a_locked_sqlite_database_is_tried_attempts_times_then_raised(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": 0.01})
    store = SQLAlchemyStore(engine, attempts=3)
    await store.store_create_tables()
    tries = []
    event.listen(engine, "before_cursor_execute", lambda *args: tries.append(1))
    blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")  # holds the write lock
    try:
        with pytest.raises(exc.OperationalError, match="database is locked"):
            await store.store_upsert(make_snapshot("a"))
        assert len(tries) == 3
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert (await store.store_upsert(make_snapshot("a"))).applied
    engine.dispose()


async def test_a_lock_released_while_retrying_lets_the_upsert_through(tmp_path: Path) -> None:
    path = tmp_path / "busy.db"
    engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": 0.05})
    store = SQLAlchemyStore(engine, attempts=10)
    await store.store_create_tables()
    blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")
    release = threading.Timer(0.3, lambda: blocker.execute("ROLLBACK"))
    release.start()
    try:
        assert (await store.store_upsert(make_snapshot("a"))).applied
    finally:
        release.join()
        blocker.close()
        engine.dispose()
