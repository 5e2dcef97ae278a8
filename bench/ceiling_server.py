"""Serve one ceiling on the best stack: uvicorn, one worker, uvloop, httptools, no access log.

    bench/.venv/bin/python bench/ceiling_server.py http --port PORT
    bench/.venv/bin/python bench/ceiling_server.py postgres --port PORT --dsn postgresql://...
        --table NAME --pool-size N
    bench/.venv/bin/python bench/ceiling_server.py sqlite --port PORT --path FILE.db --table NAME
    bench/.venv/bin/python bench/ceiling_server.py mariadb --port PORT --url mysql://...
        --table NAME --pool-size N

bench/run.py starts one process of this per ceiling run. A ceiling is a bare Starlette route
that does the least the endpoint must do (read the body, parse it, one store step, answer the
same-shaped JSON): no authentication, no validation, no plugins. It refuses to start without
uvloop and httptools, so that a ceiling is never measured on a slower stack than the product.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from typing import Any

from starlette.responses import JSONResponse, Response

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

UPSERT_PATH = "/runtime-snapshots/upsert"

# The snapshot columns, in the SQLAlchemy plugin's order. bench/run.py creates every ceiling's
# table through the plugin itself, so a column this list names wrongly fails the ceiling's
# first upsert (the readiness check), never silently.
COLUMNS = (
    "account_id",
    "ugc_account_id",
    "snapshot_id",
    "strategy_version",
    "content_hash",
    "strategy_synced_at",
    "stage",
    "active_action",
    "active_skills",
    "personality",
)


def answer(body: dict[str, Any], applied: bool) -> Response:
    """SPEC's success bodies: the applied one, or the ignored one (the incoming values)."""
    if applied:
        return JSONResponse(
            {
                "status": "upserted",
                "account_id": body["account_id"],
                "snapshot_id": body["snapshot_id"],
                "strategy_version": body["strategy_version"],
                "strategy_synced_at": body["strategy_synced_at"],
            }
        )
    return JSONResponse(
        {
            "status": "ignored_stale",
            "account_id": body["account_id"],
            "snapshot_id": body["snapshot_id"],
            "strategy_version": body["strategy_version"],
        }
    )


def build(args: argparse.Namespace) -> Any:
    if args.kind == "http":
        import ceiling_http

        return ceiling_http.create_app()
    if args.kind == "postgres":
        import ceiling_db

        return ceiling_db.create_app(args.dsn, args.table, args.pool_size)
    if args.kind == "sqlite":
        import ceiling_sqlite

        return ceiling_sqlite.create_app(args.path, args.table)
    import ceiling_mariadb

    return ceiling_mariadb.create_app(args.url, args.table, args.pool_size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=["http", "postgres", "sqlite", "mariadb"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dsn", help="postgres: libpq URL, postgresql://user@host:port/db")
    parser.add_argument("--url", help="mariadb: mysql://user:password@host:port/db")
    parser.add_argument("--path", help="sqlite: the database file")
    parser.add_argument("--table", default="runtime_snapshots")
    parser.add_argument("--pool-size", type=int, default=20)
    args = parser.parse_args()
    missing = [name for name in ("uvloop", "httptools") if importlib.util.find_spec(name) is None]
    if missing:
        raise SystemExit(
            f"ceiling_server: {' and '.join(missing)} not installed here ({sys.executable}); "
            "the ceilings run on the best stack: pip install -r bench/requirements.txt"
        )
    import uvicorn

    uvicorn.run(
        build(args),
        host="127.0.0.1",
        port=args.port,
        workers=1,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level="warning",
        backlog=2048,
    )


if __name__ == "__main__":
    main()
