"""The SQLite ceiling: a bare Starlette route that commits every request durably by itself.

Stdlib ``sqlite3`` on the event loop's own thread (no worker threads, no SQLAlchemy), one
connection, write-ahead logging with ``synchronous=FULL`` (so a ``COMMIT`` returns only once
the log is on disk). Per request: parse the body, run one conditional upsert

    INSERT ... ON CONFLICT (account_id) DO UPDATE SET ... WHERE <stored is not later>
    RETURNING strategy_version

and one ``COMMIT``, then answer SPEC's body for the outcome (a returned row: applied; none:
ignored). What a store that commits each request alone can do at best on this disk; the
product's SQLite store is to beat it by committing many requests at once. Served on the best
stack by ``ceiling_server.py``; bench/run.py creates the table through the SQLAlchemy plugin,
so it has the plugin's shape (the instant as fixed-width UTC text, JSON as text).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import Any

from ceiling_server import COLUMNS, UPSERT_PATH, answer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


def upsert_sql(table: str) -> str:
    """The conditional upsert: write unless the stored snapshot is strictly later (SPEC §4)."""
    names = ", ".join(COLUMNS)
    values = ", ".join("?" for _ in COLUMNS)
    updates = ", ".join(f"{c} = excluded.{c}" for c in COLUMNS[1:])
    return (
        f"INSERT INTO {table} ({names}) VALUES ({values}) "
        f"ON CONFLICT (account_id) DO UPDATE SET {updates} "
        f"WHERE {table}.strategy_version < excluded.strategy_version "
        f"OR ({table}.strategy_version = excluded.strategy_version "
        f"AND {table}.strategy_synced_at <= excluded.strategy_synced_at) "
        f"RETURNING strategy_version"
    )


def utc_text(value: str) -> str:
    """An RFC 3339 instant as the plugin stores it on SQLite: UTC ``YYYY-MM-DD HH:MM:SS.ffffff``."""
    instant = datetime.fromisoformat(value).astimezone(timezone.utc)
    return instant.strftime("%Y-%m-%d %H:%M:%S.%f")


def compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def create_app(path: str, table: str) -> Starlette:
    statement = upsert_sql(table)
    state: dict[str, sqlite3.Connection] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        connection = sqlite3.connect(path, isolation_level=None, check_same_thread=True)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")
        state["db"] = connection
        try:
            yield
        finally:
            connection.close()

    async def upsert(request: Request) -> Response:
        body = json.loads(await request.body())
        skills = body.get("active_skills")
        db = state["db"]
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute(
                statement,
                (
                    body["account_id"],
                    body["ugc_account_id"],
                    body["snapshot_id"],
                    body["strategy_version"],
                    body["content_hash"],
                    utc_text(body["strategy_synced_at"]),
                    body.get("stage"),
                    body.get("active_action"),
                    None if skills is None else compact(skills),
                    compact(body["personality"]),
                ),
            ).fetchone()
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return answer(body, applied=row is not None)

    return Starlette(routes=[Route(UPSERT_PATH, upsert, methods=["POST"])], lifespan=lifespan)
