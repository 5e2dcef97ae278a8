"""The MariaDB ceiling: a bare Starlette route that runs the conditional upsert through raw
asyncmy: one pool, autocommit, one round trip per request. Served on the best stack by
``ceiling_server.py``.

Per request: parse the body, run

    INSERT ... ON DUPLICATE KEY UPDATE col = CASE WHEN <stored is not later>
                                              THEN VALUES(col) ELSE col END, ...
    RETURNING strategy_version, strategy_synced_at

with the SQLAlchemy plugin's conditional assignments (every column, the two compared columns
last and ``strategy_version`` very last, because MariaDB assigns left to right and a later
assignment sees the earlier ones), and answer SPEC's body for the outcome: applied when the
row as stored after the statement holds the request's own (version, instant), ignored
otherwise. (The affected-row count cannot tell: an exact repeat changes nothing, yet SPEC
applies it.) No ``SELECT``, no authentication, validation or SQLAlchemy. MariaDB 10.5+
(``RETURNING``). bench/run.py creates the table through the plugin, so it has the plugin's
shape (the instant as ``DATETIME(6)`` in UTC, JSON as text).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import Any
from urllib.parse import unquote, urlsplit

import asyncmy
from ceiling_server import COLUMNS, UPSERT_PATH, answer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

FRESHNESS = ("strategy_synced_at", "strategy_version")


def upsert_sql(table: str) -> str:
    """The conditional upsert: write unless the stored snapshot is strictly later (SPEC §4)."""
    names = ", ".join(COLUMNS)
    values = ", ".join("%s" for _ in COLUMNS)
    not_stale = (
        f"({table}.strategy_version < VALUES(strategy_version) "
        f"OR ({table}.strategy_version = VALUES(strategy_version) "
        f"AND {table}.strategy_synced_at <= VALUES(strategy_synced_at)))"
    )
    order = [c for c in COLUMNS[1:] if c not in FRESHNESS] + list(FRESHNESS)
    updates = ", ".join(
        f"{c} = CASE WHEN {not_stale} THEN VALUES({c}) ELSE {table}.{c} END" for c in order
    )
    return (
        f"INSERT INTO {table} ({names}) VALUES ({values}) ON DUPLICATE KEY UPDATE {updates} "
        "RETURNING strategy_version, strategy_synced_at"
    )


def connect_options(url: str) -> dict[str, Any]:
    """``mysql://user:password@host:port/db`` (any ``+driver``) as asyncmy's keywords."""
    parts = urlsplit(url)
    return {
        "host": parts.hostname or "127.0.0.1",
        "port": parts.port or 3306,
        "user": unquote(parts.username or "root"),
        "password": unquote(parts.password or ""),
        "db": parts.path.lstrip("/") or None,
        "charset": "utf8mb4",
    }


def compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def create_app(url: str, table: str, pool_size: int) -> Starlette:
    statement = upsert_sql(table)
    state: dict[str, Any] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        pool = await asyncmy.create_pool(
            minsize=pool_size, maxsize=pool_size, autocommit=True, **connect_options(url)
        )
        state["pool"] = pool
        try:
            yield
        finally:
            pool.close()
            await pool.wait_closed()

    async def upsert(request: Request) -> Response:
        body = json.loads(await request.body())
        skills = body.get("active_skills")
        instant = datetime.fromisoformat(body["strategy_synced_at"])
        instant = instant.astimezone(timezone.utc).replace(tzinfo=None)
        async with state["pool"].acquire() as connection, connection.cursor() as cursor:
            await cursor.execute(
                statement,
                (
                    body["account_id"],
                    body["ugc_account_id"],
                    body["snapshot_id"],
                    body["strategy_version"],
                    body["content_hash"],
                    instant,
                    body.get("stage"),
                    body.get("active_action"),
                    None if skills is None else compact(skills),
                    compact(body["personality"]),
                ),
            )
            stored = await cursor.fetchone()
        return answer(body, applied=tuple(stored) == (body["strategy_version"], instant))

    return Starlette(routes=[Route(UPSERT_PATH, upsert, methods=["POST"])], lifespan=lifespan)
