"""Serve one benchmark target on uvicorn; bench/run.py starts one process of this per run.

    python bench/serve.py TARGET --port PORT [--loop uvloop] [--http httptools] [options]

TARGET is one of:
  ceiling-http  (a) bench/ceiling_http.py: body -> json.loads -> same-shaped JSON
  memory        (b) create_app(MemoryStore(), api_keys=[TOKEN], accounts=[ACCOUNTS ids])
  sqlite        (c) the same app on SQLAlchemyStore(sqlite+DRIVER:///--sqlite-path)
  postgres      (d) the same app on SQLAlchemyStore(--pg-url), table --table
                (with --pool-size N: on a host engine with a fixed pool of N connections)
  ceiling-db    (e) bench/ceiling_db.py: the conditional upsert through one asyncpg pool

Every target runs under exactly the same uvicorn settings (see ``serve``): one worker, the
given event loop and HTTP parser, no access log. The SQL stores create their table at start-up
through the store's own ``store_create_tables`` hook and are closed at shutdown (SIGINT).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

TOKEN = "bench-token"


def account_ids(count: int) -> list[str]:
    """The benchmark's accounts: the ids that bench/upsert.lua sends."""
    return [f"account_user{i:09d}" for i in range(count)]


class WithStoreLifespan:
    """Passes HTTP straight to ``app``; on lifespan start-up creates the store's tables, and on
    shutdown closes the store (as the product's own command line does)."""

    def __init__(self, app: ASGIApp, plugins: Any) -> None:
        self.app = app
        self.plugins = plugins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.plugins.store_create_tables()
                except Exception as error:
                    await send({"type": "lifespan.startup.failed", "message": str(error)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.plugins.store_close()
                await send({"type": "lifespan.shutdown.complete"})
                return


def sqlalchemy_store(url: str, table: str | None, pool_size: int = 0) -> Any:
    """The SQLAlchemy plugin's store for ``url``, on the bench-owned table ``table``.

    ``pool_size`` 0: the store makes its engine from the URL, as ``--store URL`` does.
    Otherwise a host-made engine with a fixed pool of ``pool_size`` connections (no overflow).
    """
    from runtime_snapshot_mount_sqlalchemy import (
        DEFAULT_TABLE_NAME,
        SQLAlchemyStore,
        create_store_engine,
    )

    name = table or DEFAULT_TABLE_NAME
    if pool_size <= 0:
        return SQLAlchemyStore(url, table_name=name)
    engine = create_store_engine(url, pool_size=pool_size, max_overflow=0)
    return SQLAlchemyStore(engine, table_name=name)


def product_app(store: object, accounts: int) -> ASGIApp:
    from runtime_snapshot_mount import create_app

    app = create_app(store, api_keys=[TOKEN], accounts=account_ids(accounts))
    return WithStoreLifespan(app, app.state.plugins)


def build(args: argparse.Namespace) -> ASGIApp:
    if args.target == "ceiling-http":
        import ceiling_http

        return ceiling_http.create_app()
    if args.target == "memory":
        from runtime_snapshot_mount import MemoryStore

        return product_app(MemoryStore(), args.accounts)
    if args.target == "sqlite":
        url = f"sqlite+{args.sqlite_driver}:///{args.sqlite_path}"
        return product_app(sqlalchemy_store(url, None), args.accounts)
    if args.target == "postgres":
        store = sqlalchemy_store(args.pg_url, args.table, args.pool_size)
        return product_app(store, args.accounts)
    if args.target == "ceiling-db":
        import ceiling_db

        return ceiling_db.create_app(args.pg_dsn, args.table, args.pool_size)
    raise SystemExit(f"unknown target {args.target!r}")


def serve(app: ASGIApp, port: int, loop: str, http: str) -> None:
    """The one uvicorn configuration that every target runs under."""
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        workers=1,
        loop=loop,
        http=http,
        lifespan="on",
        access_log=False,
        log_level="warning",
        backlog=2048,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "target", choices=["ceiling-http", "memory", "sqlite", "postgres", "ceiling-db"]
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--loop", default="uvloop")
    parser.add_argument("--http", default="httptools")
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--sqlite-path")
    parser.add_argument(
        "--sqlite-driver",
        default="pysqlite",
        help="pysqlite (sqlite:///, the command line's default: worker threads) or aiosqlite",
    )
    parser.add_argument("--pg-url", help="SQLAlchemy URL, postgresql+asyncpg://...")
    parser.add_argument("--pg-dsn", help="libpq URL for asyncpg, postgresql://...")
    parser.add_argument("--table")
    parser.add_argument(
        "--pool-size",
        type=int,
        default=0,
        help="ceiling-db: its pool; postgres: 0 = the store's own engine, N = a fixed pool",
    )
    args = parser.parse_args()
    serve(build(args), args.port, args.loop, args.http)


if __name__ == "__main__":
    main()
