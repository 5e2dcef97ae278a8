"""Group commit on SQLite: the writer's batches, its failures, its lifecycle, and its rows.

The batches are observed and held through the writer's public ``before_commit`` seam, which
runs in the writer's thread just before each ``COMMIT``: blocking it models a slow disk.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest
from runtime_snapshot_mount_sqlalchemy import SQLAlchemyStore, create_store_engine
from runtime_snapshot_mount_sqlalchemy.pragmas import WAL, SQLitePragma
from runtime_snapshot_mount_sqlalchemy.sqlite_writer import SQLiteWriter, writer_for_url
from sqlalchemy import create_engine, exc
from sqlalchemy.dialects import postgresql, sqlite
from support_sqlalchemy import Database, dispose

from runtime_snapshot_mount import Snapshot, UpsertResult
from runtime_snapshot_mount.testing import StoreContract, make_snapshot, new_account_id

pytestmark = [pytest.mark.sqlite, pytest.mark.anyio]
WAIT = 10.0  # seconds: a bound on every wait below, never a timing assertion


class TestGroupCommitStore(StoreContract):
    """The conformance kit on the command line's SQLite store: upserts through the writer,
    reads through SQLAlchemy, so the two must agree on every stored value."""

    @pytest.fixture
    async def store(self, sqlite: Database) -> AsyncIterator[SQLAlchemyStore]:
        store = SQLAlchemyStore(sqlite.sync_url, table=sqlite.table)
        assert isinstance(store.writer, SQLiteWriter)
        yield store
        await store.store_close()

    @pytest.fixture
    async def another_store(self, sqlite: Database) -> AsyncIterator[SQLAlchemyStore]:
        """A second store on the same file, with its own writer thread and connection, as
        another ``serve`` worker opens it."""
        store = SQLAlchemyStore(sqlite.sync_url, table=sqlite.table)
        yield store
        await store.store_close()


class Gate:
    """A ``before_commit`` that records every transaction's snapshots and, while it holds,
    lets each ``COMMIT`` through only on :meth:`release` (waiting at most ``WAIT``)."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.entered = threading.Semaphore(0)
        self.holding = False
        self._permits = threading.Semaphore(0)

    def __call__(self, connection: sqlite3.Connection, snapshots: Sequence[Snapshot]) -> None:
        self.batches.append([snapshot.snapshot_id for snapshot in snapshots])
        self.entered.release()
        if self.holding:
            self._permits.acquire(timeout=WAIT)

    def hold(self) -> None:
        self.holding = True

    def release(self) -> None:
        """Let the one held (or the next) ``COMMIT`` through."""
        self._permits.release()

    def open(self) -> None:
        """Stop holding, and let every held ``COMMIT`` through."""
        self.holding = False
        self._permits.release(100)

    async def wait_for_commit(self) -> None:
        """Until the writer reaches the next ``COMMIT`` (held or not)."""
        assert await anyio.to_thread.run_sync(self.entered.acquire, True, WAIT)


def stored_row(path: Path, account_id: str) -> tuple[Any, ...] | None:
    """The raw row of ``account_id``, read by a connection of its own."""
    with sqlite3.connect(path) as connection:
        found: tuple[Any, ...] | None = connection.execute(
            "SELECT * FROM runtime_snapshots WHERE account_id = ?", (account_id,)
        ).fetchone()
    connection.close()
    return found


def snapshot(name: str, version: int = 1, **fields: Any) -> Snapshot:
    return make_snapshot(new_account_id(), version, snapshot_id=name, **fields)


@pytest.fixture
def gate() -> Iterator[Gate]:
    found = Gate()
    yield found
    found.open()  # never leave the writer's thread waiting


@pytest.fixture
async def writer(sqlite: Database, gate: Gate) -> AsyncIterator[SQLiteWriter]:
    path = sqlite.sync_url.database
    assert path is not None
    found = SQLiteWriter(path, sqlite.table, before_commit=gate)
    yield found
    gate.open()
    await found.close()


# -- batches ---------------------------------------------------------------------------


async def test_requests_arriving_during_a_commit_go_in_the_next_batch(
    sqlite: Database, writer: SQLiteWriter, gate: Gate
) -> None:
    path = Path(str(sqlite.sync_url.database))
    first, second, third = snapshot("first"), snapshot("second"), snapshot("third")
    gate.hold()
    a = asyncio.ensure_future(writer.upsert(first))
    await gate.wait_for_commit()  # the first batch is committing, with only `first`
    b = asyncio.ensure_future(writer.upsert(second))
    c = asyncio.ensure_future(writer.upsert(third))
    await asyncio.sleep(0.05)
    assert not (a.done() or b.done() or c.done())  # nobody is answered before COMMIT
    assert stored_row(path, first.account_id) is None
    gate.release()
    assert await a == UpsertResult(applied=True, current=first)
    await gate.wait_for_commit()  # the second batch: the two that arrived meanwhile
    await asyncio.sleep(0.05)
    # the first batch was answered without waiting for the requests that came after it,
    # and those are not answered before their own COMMIT returns
    assert not (b.done() or c.done())
    assert stored_row(path, second.account_id) is None
    gate.release()
    assert await b == UpsertResult(applied=True, current=second)
    assert await c == UpsertResult(applied=True, current=third)
    assert gate.batches == [["first"], ["second", "third"]]
    assert stored_row(path, third.account_id) is not None


async def test_every_upsert_waiting_at_that_moment_shares_one_commit(
    writer: SQLiteWriter, gate: Gate
) -> None:
    gate.hold()
    opener = asyncio.ensure_future(writer.upsert(snapshot("opener")))
    await gate.wait_for_commit()
    account_id = new_account_id()
    versions = [5, 1, 4, 2, 3]  # one account, out of order, in one transaction
    waiting = [
        asyncio.ensure_future(writer.upsert(make_snapshot(account_id, v, snapshot_id=f"v{v}")))
        for v in versions
    ]
    others = [asyncio.ensure_future(writer.upsert(snapshot(f"other{i}"))) for i in range(20)]
    await asyncio.sleep(0.05)
    gate.open()
    await opener
    results = await asyncio.gather(*waiting, *others)
    assert len(gate.batches) == 2 and len(gate.batches[1]) == 25
    by_version = dict(zip(versions, results[:5], strict=True))
    assert by_version[5].applied  # the first of the account in the batch, and the greatest
    for version in (1, 4, 2, 3):  # each later statement saw the rows written before it
        result = by_version[version]
        assert not result.applied and result.current is None  # nothing read back
    assert all(result.applied for result in results[5:])


# -- failures stay with the snapshot that caused them ---------------------------------


async def test_a_statement_that_fails_undoes_only_itself_and_fails_only_its_request(
    sqlite: Database, writer: SQLiteWriter, gate: Gate
) -> None:
    path = Path(str(sqlite.sync_url.database))
    gate.hold()
    opener = asyncio.ensure_future(writer.upsert(snapshot("opener")))
    await gate.wait_for_commit()
    members = [
        snapshot("good-1"),
        snapshot("null-ugc", ugc_account_id=None),  # NOT NULL: SQLite refuses the row
        snapshot("good-2"),
        snapshot("too-big", version=2**63),  # no SQLite integer holds it
        snapshot("good-3"),
    ]
    futures = [asyncio.ensure_future(writer.upsert(member)) for member in members]
    await asyncio.sleep(0.05)
    gate.open()
    await opener
    results = await asyncio.gather(*futures, return_exceptions=True)
    assert gate.batches[1] == [m.snapshot_id for m in members]  # one transaction, one commit
    assert isinstance(results[1], exc.IntegrityError)
    assert isinstance(results[3], OverflowError)
    for index in (0, 2, 4):
        assert results[index] == UpsertResult(applied=True, current=members[index])
        assert stored_row(path, members[index].account_id) is not None
    for index in (1, 3):
        assert stored_row(path, members[index].account_id) is None


async def test_a_failed_commit_retries_the_members_alone(sqlite: Database) -> None:
    batches: list[int] = []

    def fail_batches(connection: sqlite3.Connection, snapshots: Sequence[Snapshot]) -> None:
        batches.append(len(snapshots))
        if len(snapshots) > 1:  # a disk that refuses the big transaction, say
            raise sqlite3.OperationalError("database or disk is full")

    path = Path(str(sqlite.sync_url.database))
    writer = SQLiteWriter(path, sqlite.table, before_commit=fail_batches)
    members = [snapshot(f"member-{i}") for i in range(8)]
    try:
        results = await asyncio.gather(*(writer.upsert(member) for member in members))
    finally:
        await writer.close()
    assert results == [UpsertResult(applied=True, current=member) for member in members]
    assert any(size > 1 for size in batches)  # batched at first, ...
    assert sum(1 for size in batches if size == 1) >= len(members) - 1  # ... then alone
    assert all(stored_row(path, member.account_id) is not None for member in members)


@pytest.mark.parametrize("poison_at", [1, 0])  # 0: the statement the transaction begins with
async def test_an_error_that_ends_the_transaction_retries_the_others_alone(
    tmp_path: Path, gate: Gate, poison_at: int
) -> None:
    # The same columns, but a NOT NULL constraint that rolls back the whole transaction.
    path = tmp_path / "rollback.db"
    with sqlite3.connect(path) as connection:
        connection.execute(
            "CREATE TABLE runtime_snapshots (account_id VARCHAR(255) PRIMARY KEY,"
            " ugc_account_id VARCHAR(255) NOT NULL ON CONFLICT ROLLBACK,"
            " snapshot_id VARCHAR(255) NOT NULL, strategy_version BIGINT NOT NULL,"
            " content_hash VARCHAR(255) NOT NULL, strategy_synced_at DATETIME NOT NULL,"
            " stage VARCHAR(1000), active_action VARCHAR(1000), active_skills JSON,"
            " personality JSON NOT NULL)"
        )
    connection.close()
    writer = SQLiteWriter(path, "runtime_snapshots", before_commit=gate)
    gate.hold()
    try:
        opener = asyncio.ensure_future(writer.upsert(snapshot("opener")))
        await gate.wait_for_commit()
        members = [snapshot("good-1"), snapshot("good-2")]
        members.insert(poison_at, snapshot("poison", ugc_account_id=None))
        futures = [asyncio.ensure_future(writer.upsert(member)) for member in members]
        await asyncio.sleep(0.05)
        gate.open()
        await opener
        results = await asyncio.gather(*futures, return_exceptions=True)
    finally:
        gate.open()
        await writer.close()
    for member, result in zip(members, results, strict=True):
        if member.snapshot_id == "poison":
            assert isinstance(result, exc.IntegrityError)
            assert stored_row(path, member.account_id) is None
        else:
            assert result == UpsertResult(applied=True, current=member)
            assert stored_row(path, member.account_id) is not None
    # the batch never reached COMMIT; the good ones committed alone
    assert gate.batches[1:] == [["good-1"], ["good-2"]]


async def test_a_write_lock_held_past_the_busy_timeout_fails_then_recovers(
    sqlite: Database,
) -> None:
    path = Path(str(sqlite.sync_url.database))
    writer = SQLiteWriter(path, sqlite.table, busy_timeout=0.05)
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another process's writer, holding the lock
        results = await asyncio.gather(
            *(writer.upsert(snapshot(f"blocked-{i}")) for i in range(3)),
            return_exceptions=True,
        )
        assert all(isinstance(r, exc.OperationalError) for r in results)
        assert all("locked" in str(r) for r in results)
        other.execute("ROLLBACK")
        late = snapshot("after")
        assert await writer.upsert(late) == UpsertResult(applied=True, current=late)
    finally:
        other.close()
        await writer.close()


async def test_a_batch_takes_the_write_lock_before_its_first_statement_and_waits_once(
    sqlite: Database,
) -> None:
    """sqlite3 begins each transaction IMMEDIATE, before the batch's first upsert: a lock
    held elsewhere fails the whole batch after one busy timeout, and no upsert runs."""
    path = Path(str(sqlite.sync_url.database))
    statements: list[str] = []  # what the writer's connection runs, as SQLite traces it
    began = threading.Semaphore(0)

    def trace(statement: str) -> None:
        statements.append(statement)
        if statement.startswith("BEGIN"):
            began.release()

    def traced(connection: sqlite3.Connection, _: Sequence[Snapshot]) -> None:
        connection.set_trace_callback(trace)

    writer = SQLiteWriter(path, sqlite.table, busy_timeout=1.0, before_commit=traced)
    other = sqlite3.connect(path, isolation_level=None)
    try:
        assert (await writer.upsert(snapshot("first"))).applied  # traced from its COMMIT on
        other.execute("BEGIN IMMEDIATE")  # another process's writer, holding the lock
        statements.clear()
        alone = asyncio.ensure_future(writer.upsert(snapshot("alone")))
        assert await anyio.to_thread.run_sync(began.acquire, True, WAIT)  # waiting for the lock
        queued = [asyncio.ensure_future(writer.upsert(snapshot(f"queued-{i}"))) for i in range(3)]
        results = await asyncio.gather(alone, *queued, return_exceptions=True)
        assert all(isinstance(r, exc.OperationalError) and "locked" in str(r) for r in results)
        assert statements == ["BEGIN IMMEDIATE", "BEGIN IMMEDIATE"]  # two batches, no upsert
        other.execute("ROLLBACK")
        statements.clear()
        members = [snapshot(f"member-{i}") for i in range(3)]
        results = await asyncio.gather(*(writer.upsert(member) for member in members))
        assert results == [UpsertResult(applied=True, current=member) for member in members]
        transactions = " ".join(statements).split("COMMIT")
        assert transactions[-1] == "" and len(transactions) > 1
        for transaction in transactions[:-1]:  # the lock first, then only the upserts
            begin, *upserts = transaction.strip().split(" INSERT ")
            assert begin == "BEGIN IMMEDIATE" and upserts
    finally:
        other.close()
        await writer.close()


async def test_the_store_retries_a_busy_file_through_the_writer(sqlite: Database) -> None:
    path = Path(str(sqlite.sync_url.database))
    store = SQLAlchemyStore(
        sqlite.sync_url,
        table=sqlite.table,
        writer=SQLiteWriter(path, sqlite.table, busy_timeout=0.2),
    )
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    release = threading.Timer(0.3, other.execute, ["ROLLBACK"])  # held past one busy timeout
    release.start()
    try:
        late = snapshot("retried")
        assert await store.store_upsert(late) == UpsertResult(applied=True, current=late)
    finally:
        release.join()
        other.close()
        await store.store_close()


# -- lifecycle ---------------------------------------------------------------------------


def writer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("sqlite-writer")]


async def test_the_thread_starts_on_first_use_and_close_answers_what_is_queued(
    sqlite: Database, gate: Gate
) -> None:
    before = set(writer_threads())
    writer = SQLiteWriter(Path(str(sqlite.sync_url.database)), sqlite.table, before_commit=gate)
    assert set(writer_threads()) == before  # nothing runs until the first upsert
    gate.hold()
    first = asyncio.ensure_future(writer.upsert(snapshot("first")))
    await gate.wait_for_commit()
    assert len(set(writer_threads()) - before) == 1
    queued = [asyncio.ensure_future(writer.upsert(snapshot(f"queued-{i}"))) for i in range(5)]
    await asyncio.sleep(0.01)
    closing = asyncio.ensure_future(writer.close())
    await asyncio.sleep(0.05)
    assert not closing.done()
    gate.open()
    await closing
    assert first.result().applied
    assert all(future.result().applied for future in queued)  # answered before it stopped
    assert set(writer_threads()) == before
    assert writer.closed
    with pytest.raises(RuntimeError, match="closed"):
        await writer.upsert(snapshot("late"))


async def test_a_closed_store_refuses_upserts(sqlite: Database) -> None:
    store = SQLAlchemyStore(sqlite.sync_url, table=sqlite.table)
    first = snapshot("first")
    assert (await store.store_upsert(first)).applied
    await store.store_close()
    with pytest.raises(RuntimeError, match="closed"):
        await store.store_upsert(snapshot("late"))


async def test_one_writer_serves_several_event_loops(sqlite: Database) -> None:
    writer = SQLiteWriter(Path(str(sqlite.sync_url.database)), sqlite.table)
    members = [snapshot(f"loop-{i}") for i in range(4)]

    def in_own_loop(member: Snapshot) -> UpsertResult:
        return asyncio.run(writer.upsert(member))

    try:
        results = await asyncio.gather(
            *(anyio.to_thread.run_sync(in_own_loop, member) for member in members)
        )
    finally:
        await writer.close()
    assert results == [UpsertResult(applied=True, current=member) for member in members]


# -- the URL, the connection, and the rows ----------------------------------------------


async def test_the_connection_is_wal_with_full_sync_unless_normal_is_asked_for(
    tmp_path: Path, sqlite: Database
) -> None:
    seen: dict[str, tuple[Any, Any]] = {}
    for query in ("", "?synchronous=normal", "?synchronous=FULL"):

        def pragmas(
            connection: sqlite3.Connection, _: Sequence[Snapshot], key: str = query
        ) -> None:
            journal = connection.execute("PRAGMA journal_mode").fetchone()[0]
            sync = connection.execute("PRAGMA synchronous").fetchone()[0]
            seen[key] = (journal, sync)

        url = f"sqlite:///{sqlite.sync_url.database}{query}"
        engine_url, made = writer_for_url(url, sqlite.table)
        assert made is not None and "synchronous" not in engine_url.query
        made.before_commit = pragmas
        await made.upsert(snapshot(f"pragma{query}"))
        await made.close()
    assert seen == {
        "": ("wal", 2),
        "?synchronous=normal": ("wal", 1),
        "?synchronous=FULL": ("wal", 2),
    }


def test_the_connection_settings_are_a_construct_compiled_for_sqlite_only() -> None:
    dialect = sqlite.dialect()
    assert str(WAL.compile(dialect=dialect)) == "PRAGMA journal_mode=WAL"
    setting = SQLitePragma("synchronous", "Normal")
    assert str(setting.compile(dialect=dialect)) == "PRAGMA synchronous=NORMAL"
    with pytest.raises(ValueError, match="synchronous must be one of full, normal"):
        SQLitePragma("synchronous", "off")  # the one list that ?synchronous= is checked against
    with pytest.raises(ValueError, match="journal_mode"):
        SQLitePragma("journal_mode", "delete")
    with pytest.raises(ValueError, match="setting"):
        SQLitePragma("foreign_keys", "on")
    with pytest.raises(exc.UnsupportedCompilationError):
        setting.compile(dialect=postgresql.dialect())


@pytest.mark.parametrize(
    ("url", "has_writer"),
    [
        ("sqlite:///x.db", True),
        ("sqlite+pysqlite:///x.db?synchronous=normal", True),
        ("sqlite+aiosqlite:///x.db", False),
        ("sqlite://", False),
        ("sqlite:///file:x.db?mode=ro&uri=true", False),
        ("postgresql+asyncpg://u@h/db", False),
    ],
)
def test_only_a_plain_sqlite_file_url_gets_a_writer(
    url: str, has_writer: bool, sqlite: Database
) -> None:
    _, made = writer_for_url(url, sqlite.table)
    assert (made is not None) == has_writer


@pytest.mark.parametrize(
    "url",
    ["sqlite:///x.db?synchronous=off", "sqlite:///file:x.db?uri=true&synchronous=normal"],
)
def test_a_synchronous_parameter_it_cannot_honour_is_refused(url: str, sqlite: Database) -> None:
    with pytest.raises(ValueError, match="synchronous"):
        SQLAlchemyStore(url, table=sqlite.table)


async def test_the_writer_stores_exactly_the_rows_that_the_sqlalchemy_path_stores(
    sqlite: Database,
) -> None:
    path = Path(str(sqlite.sync_url.database))
    # Today's store made from the URL, but on an engine passed in (so without the writer);
    # and a host's plain engine, whose JSON text is spelled differently but reads the same.
    engine = create_store_engine(sqlite.sync_url)
    classic = SQLAlchemyStore(engine, table=sqlite.table)
    host_engine = create_engine(sqlite.sync_url)
    host = SQLAlchemyStore(host_engine, table=sqlite.table)
    assert classic.writer is None and host.writer is None
    grouped = SQLAlchemyStore(sqlite.sync_url, table=sqlite.table)
    cases = [
        {},
        {"active_skills": None, "stage": None, "active_action": None},
        {"synced_at": "0001-01-01T00:00:00Z"},
        {"synced_at": "9999-12-31T23:59:59.999999Z"},
        {"synced_at": "2026-03-22T10:30:00.123456789+02:00"},
        {"personality": {"ü": ["💡", {"n": 2**70, "f": 1.5, "z": None, "t": True}], "s": "é\n"}},
        {"stage": "x" * 1000, "active_skills": tuple(f"skill-{i}" for i in range(256))},
    ]
    try:
        for fields in cases:
            both = [new_account_id(), new_account_id()]
            written = [make_snapshot(account_id, 3, **fields) for account_id in both]
            assert (await classic.store_upsert(written[0])).applied
            assert (await grouped.store_upsert(written[1])).applied
            rows = [stored_row(path, account_id) for account_id in both]
            assert rows[0] is not None and rows[1] is not None
            assert rows[0][1:] == rows[1][1:]  # every column but the account, byte for byte
            for store in (classic, grouped, host):  # and each reads what the other wrote
                for account_id, expected in zip(both, written, strict=True):
                    assert await store.store_get(account_id) == expected
            # the writer ignores what the row the SQLAlchemy path wrote keeps out
            stale = make_snapshot(both[0], 2)
            assert await grouped.store_upsert(stale) == UpsertResult(False)
    finally:
        await grouped.store_close()
        await dispose(engine)
        host_engine.dispose()
