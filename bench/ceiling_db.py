"""The PostgreSQL ceiling: a bare Starlette route that runs the conditional upsert through
asyncpg directly: one pool, one round trip per request (the pool does not reset connections
it takes back). Served on the best stack by ``ceiling_server.py``.

It reads the body, parses it as JSON, converts the two values PostgreSQL needs typed (the
instant, and JSON for the personality and the skills), runs

    INSERT ... ON CONFLICT (account_id) DO UPDATE SET ... WHERE <stored is not later> RETURNING

and answers SPEC's body for the outcome (a returned row: applied; none: ignored, the stored
snapshot is later). No authentication, no validation, no account check, no SQLAlchemy: what
one PostgreSQL round trip per request costs on this server. bench/run.py creates the table
through the SQLAlchemy plugin, so it has the plugin's shape.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import asyncpg
from ceiling_server import COLUMNS, UPSERT_PATH, answer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


def upsert_sql(table: str) -> str:
    """The conditional upsert: write unless the stored snapshot is strictly later (SPEC §4)."""
    names = ", ".join(COLUMNS)
    values = ", ".join(f"${i}" for i in range(1, len(COLUMNS) + 1))
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in COLUMNS[1:])
    return (
        f"INSERT INTO {table} ({names}) VALUES ({values}) "
        f"ON CONFLICT (account_id) DO UPDATE SET {updates} "
        f"WHERE {table}.strategy_version < EXCLUDED.strategy_version "
        f"OR ({table}.strategy_version = EXCLUDED.strategy_version "
        f"AND {table}.strategy_synced_at <= EXCLUDED.strategy_synced_at) "
        f"RETURNING strategy_version"
    )


async def _keep(connection: asyncpg.Connection) -> None:
    """A connection goes back to the pool as it is."""


def create_app(dsn: str, table: str, pool_size: int) -> Starlette:
    """The ceiling app; ``dsn`` is a libpq URL (``postgresql://user@host:port/db``)."""
    statement = upsert_sql(table)
    state: dict[str, Any] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # reset=_keep: by default asyncpg resets every connection it takes back (a second
        # round trip: "SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL");
        # one autocommitted statement leaves nothing to reset.
        pool = await asyncpg.create_pool(dsn, min_size=pool_size, max_size=pool_size, reset=_keep)
        state["pool"] = pool
        try:
            yield
        finally:
            await pool.close()

    async def upsert(request: Request) -> Response:
        body = json.loads(await request.body())
        skills = body.get("active_skills")
        async with state["pool"].acquire() as connection:
            row = await connection.fetchrow(
                statement,
                body["account_id"],
                body["ugc_account_id"],
                body["snapshot_id"],
                body["strategy_version"],
                body["content_hash"],
                datetime.fromisoformat(body["strategy_synced_at"]),
                body.get("stage"),
                body.get("active_action"),
                None if skills is None else json.dumps(skills),
                json.dumps(body["personality"]),
            )
        return answer(body, applied=row is not None)

    return Starlette(routes=[Route(UPSERT_PATH, upsert, methods=["POST"])], lifespan=lifespan)
