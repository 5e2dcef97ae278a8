"""The apps the bench serves besides ``serve``: the ceilings, the FastAPI hosts, the wrk check.

A ceiling is a bare Starlette route doing the least the endpoint must do (parse the body, one
store step, answer: no authentication, validation or plugins) on uvicorn with uvloop,
httptools and no access log: ``python -m bench.apps KIND PORT DB TABLE``. The hosts are
FastAPI apps as ``examples/`` shows them (``uvicorn --factory bench.apps:async_host``); each
mounts the product under ``/phonefarm`` and the host ceiling under ``/ceiling``. SQL text is
fine here: these are hand-written baselines, with the plugin's own column list.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import json
import os
import sqlite3
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timezone
from typing import Any

import asyncpg
from fastapi import FastAPI
from runtime_snapshot_mount_sqlalchemy import SQLAlchemyAccounts, SQLAlchemyStore, snapshot_table
from sqlalchemy import String, create_engine, insert
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from runtime_snapshot_mount import create_app

from .common import PATH, SNAPSHOT_COLUMNS, TOKEN, account_id, answer, libpq

Step = Callable[[Any, dict[str, Any]], Awaitable[bool]]  # (pool, request): applied or not
COMPACT: dict[str, Any] = {"separators": (",", ":"), "ensure_ascii": False}


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def naive_utc(text: str) -> datetime:
    return instant(text).astimezone(timezone.utc).replace(tzinfo=None)


def utc_text(text: str) -> str:
    """The instant as the plugin stores it on SQLite: UTC ``YYYY-MM-DD HH:MM:SS.ffffff``."""
    return naive_utc(text).strftime("%Y-%m-%d %H:%M:%S.%f")


def row(data: dict[str, Any], when: Callable[[str], Any] = instant) -> list[Any]:
    """The request's values in column order, as the plugin stores them: the instant through
    ``when``, JSON as compact text."""
    skills = data.get("active_skills")
    typed = {
        "strategy_synced_at": when(data["strategy_synced_at"]),
        "active_skills": None if skills is None else json.dumps(skills, **COMPACT),
        "personality": json.dumps(data["personality"], **COMPACT),
    }
    return [typed[c] if c in typed else data.get(c) for c in SNAPSHOT_COLUMNS]


def on_conflict(table: str, mark: str = "$") -> str:
    """PostgreSQL's (``$1``) and SQLite's (``?``) conditional upsert: write unless the stored
    snapshot is later."""
    columns = SNAPSHOT_COLUMNS
    marks = [f"${i + 1}" for i in range(len(columns))] if mark == "$" else [mark] * len(columns)
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c != "account_id")
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(marks)}) "
        f"ON CONFLICT (account_id) DO UPDATE SET {updates} "
        f"WHERE {table}.strategy_version < excluded.strategy_version "
        f"OR ({table}.strategy_version = excluded.strategy_version "
        f"AND {table}.strategy_synced_at <= excluded.strategy_synced_at) "
        "RETURNING strategy_version"
    )


def route_app(step: Step, pool: Callable[[], Any] = contextlib.nullcontext) -> Starlette:
    """The ceiling's one route; ``pool`` opens the connections ``step`` is given."""
    state: dict[str, Any] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with pool() as state["pool"]:
            yield

    async def upsert(request: Request) -> Response:
        data = json.loads(await request.body())
        return JSONResponse(answer(data, await step(state["pool"], data)))

    return Starlette(routes=[Route(PATH, upsert, methods=["POST"])], lifespan=lifespan)


async def _keep(connection: Any) -> None:
    """asyncpg's pool takes a connection back as it is: an autocommitted statement leaves
    nothing to reset (the default reset is a second round trip)."""


def pg_pool(dsn: str, size: int) -> Any:
    return asyncpg.create_pool(dsn, min_size=size, max_size=size, reset=_keep)


async def applied(pool: Any, data: dict[str, Any]) -> bool:
    """The HTTP ceiling's store step: none."""
    return True


def postgres_ceiling(dsn: str, table: str, pool_size: int) -> Starlette:
    """One autocommitted asyncpg round trip per request."""
    sql = on_conflict(table)

    async def step(pool: Any, data: dict[str, Any]) -> bool:
        async with pool.acquire() as connection:
            return await connection.fetchrow(sql, *row(data)) is not None

    return route_app(step, lambda: pg_pool(dsn, pool_size))


def sqlite_ceiling(path: str, table: str) -> Starlette:
    """Stdlib sqlite3 on the loop's thread, WAL with synchronous=FULL; per request one
    ``BEGIN IMMEDIATE``, the upsert, one ``COMMIT``: each request committed durably alone."""
    sql = on_conflict(table, "?")

    @contextlib.asynccontextmanager
    async def connect() -> AsyncIterator[sqlite3.Connection]:  # on the event loop's thread
        with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            yield db

    async def step(db: sqlite3.Connection, data: dict[str, Any]) -> bool:
        db.execute("BEGIN IMMEDIATE")
        try:
            found = db.execute(sql, row(data, utc_text)).fetchone()
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return found is not None

    return route_app(step, connect)


def mariadb_ceiling(url: str, table: str, pool_size: int) -> Starlette:
    """Raw asyncmy, autocommit, one round trip: ``INSERT ... ON DUPLICATE KEY UPDATE col =
    CASE WHEN <not stale> THEN VALUES(col) ELSE col END ... RETURNING`` (the compared columns
    assigned last: MariaDB assigns left to right). Applied when the stored row holds the
    request's own (version, instant)."""
    import asyncmy

    columns, fresh = SNAPSHOT_COLUMNS, ["strategy_synced_at", "strategy_version"]
    old, new = (f"{table}.strategy_version", f"{table}.strategy_synced_at"), fresh[::-1]
    not_stale = (
        f"({old[0]} < VALUES({new[0]}) OR ({old[0]} = VALUES({new[0]}) "
        f"AND {old[1]} <= VALUES({new[1]})))"
    )
    order = [c for c in columns if c not in fresh and c != "account_id"] + fresh
    updates = ", ".join(f"{c} = CASE WHEN {not_stale} THEN VALUES({c}) ELSE {c} END" for c in order)
    sql = (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))})"
        f" ON DUPLICATE KEY UPDATE {updates} RETURNING strategy_version, strategy_synced_at"
    )
    parts = make_url(url)
    options = {"host": parts.host, "port": parts.port or 3306, "user": parts.username}
    options |= {"password": parts.password or "", "db": parts.database, "charset": "utf8mb4"}
    options |= {"minsize": pool_size, "maxsize": pool_size, "autocommit": True}

    async def step(pool: Any, data: dict[str, Any]) -> bool:
        values = row(data, naive_utc)
        async with pool.acquire() as connection, connection.cursor() as cursor:
            await cursor.execute(sql, values)
            stored = await cursor.fetchone()
        return tuple(stored) == (data["strategy_version"], naive_utc(data["strategy_synced_at"]))

    return route_app(step, lambda: asyncmy.create_pool(**options))


def host(engine_kind: str) -> FastAPI:
    """A FastAPI host with an ORM ``Account`` model and its own engine on
    ``RSM_BENCH_DATABASE_URL``: an ``AsyncEngine`` (asyncpg) or a sync ``Engine`` (psycopg),
    with a pool of ``RSM_BENCH_POOL_SIZE``, as is the host ceiling's (raw asyncpg)."""
    url = make_url(os.environ["RSM_BENCH_DATABASE_URL"])
    prefix, size = os.environ["RSM_BENCH_TABLE"], int(os.environ["RSM_BENCH_POOL_SIZE"])
    accounts = [{"account_id": account_id(i)} for i in range(int(os.environ["RSM_BENCH_ACCOUNTS"]))]

    class Base(DeclarativeBase):
        pass

    class Account(Base):
        __tablename__ = f"{prefix}_accounts"
        account_id: Mapped[str] = mapped_column(String(255), primary_key=True)
        is_active: Mapped[bool] = mapped_column(default=True)

    snapshots = snapshot_table(Base.metadata, f"{prefix}_snapshots")
    if engine_kind == "async":
        engine: Any = create_async_engine(url, pool_size=size, max_overflow=0)
    else:
        psycopg = url.set(drivername="postgresql+psycopg")
        engine = create_engine(psycopg, pool_size=size, max_overflow=0)
    state: dict[str, Any] = {}

    def prepare(connection: Any) -> None:
        Base.metadata.create_all(connection)
        connection.execute(insert(Account), accounts)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if engine_kind == "async":
            async with engine.begin() as connection:
                await connection.run_sync(prepare)
        else:
            with engine.begin() as connection:
                prepare(connection)
        async with pg_pool(libpq(os.environ["RSM_BENCH_DATABASE_URL"]), size) as pool:
            state["pool"] = pool
            yield
        disposed = engine.dispose()
        if engine_kind == "async":
            await disposed

    find = f"SELECT is_active FROM {Account.__tablename__} WHERE account_id = $1"
    upsert = on_conflict(snapshots.name)
    expected = f"Bearer {TOKEN}".encode()

    async def ceiling(request: Request) -> Response:
        if not hmac.compare_digest(request.headers.get("authorization", "").encode(), expected):
            return JSONResponse({"detail": "Unauthorized"}, 401)
        data = json.loads(await request.body())
        async with state["pool"].acquire() as connection:
            if not await connection.fetchval(find, data["account_id"]):
                return JSONResponse({"detail": "Not Found"}, 404)
            stored = await connection.fetchrow(upsert, *row(data))
        return JSONResponse(answer(data, stored is not None))

    app = FastAPI(lifespan=lifespan)
    store = SQLAlchemyStore(engine, table=snapshots)
    lookup = SQLAlchemyAccounts(engine, Account, id_column="account_id", active="is_active")
    app.mount("/phonefarm", create_app(store, lookup, api_keys=[TOKEN]))
    app.mount("/ceiling", Starlette(routes=[Route(PATH, ceiling, methods=["POST"])]))
    return app


async_host = functools.partial(host, "async")  # uvicorn --factory bench.apps:async_host
sync_host = functools.partial(host, "sync")


class Trivial(asyncio.Protocol):
    """Answers each request (headers plus Content-Length bytes) with a fixed 200: what wrk
    itself can send and check."""

    ANSWER = b'{"status":"upserted"}'
    RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(ANSWER), ANSWER)

    def connection_made(self, transport: Any) -> None:
        self.transport, self.buffer = transport, b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        answers = 0
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head = self.buffer[:end].lower()
            at = head.find(b"content-length:")
            length = int(head[at + 15 :].split(b"\r\n", 1)[0]) if at >= 0 else 0
            if len(self.buffer) < end + 4 + length:
                break
            self.buffer = self.buffer[end + 4 + length :]
            answers += 1
        self.transport.write(self.RESPONSE * answers)


async def trivial(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(Trivial, "127.0.0.1", port)
    await server.serve_forever()


def main(kind: str, port: str, db: str = "", table: str = "") -> None:
    import uvicorn
    import uvloop  # the ceilings refuse to run on a slower stack than the best

    size = int(os.environ.get("RSM_BENCH_POOL_SIZE", "20"))
    if kind == "trivial":
        return uvloop.run(trivial(int(port)))
    app = {
        "http": lambda: route_app(applied),
        "postgres": lambda: postgres_ceiling(db, table, size),
        "sqlite": lambda: sqlite_ceiling(db, table),
        "mariadb": lambda: mariadb_ceiling(db, table, size),
    }[kind]()
    options = {"loop": "uvloop", "http": "httptools", "access_log": False, "backlog": 2048}
    uvicorn.run(app, host="127.0.0.1", port=int(port), log_level="warning", **options)


if __name__ == "__main__":
    main(*sys.argv[1:])
