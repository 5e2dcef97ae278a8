"""The entry-point plugin: opens SQLAlchemy store URLs for the command line's ``--store``.

Registered in the entry-point group ``runtime_snapshot_mount``, it implements only
``store_from_url``, so installing this distribution never adds a store to anyone's app. The
URL may carry ``?table=NAME`` to use a table other than ``runtime_snapshots``, and
``?retry_deadline=SECONDS`` for the store's ``retry_deadline``; these parameters are removed
before the URL reaches the driver.
"""

from __future__ import annotations

import math

from sqlalchemy import exc, make_url

from runtime_snapshot_mount import hookimpl

from .schema import DEFAULT_TABLE_NAME
from .store import DEFAULT_RETRY_DEADLINE, SQLAlchemyStore

__all__ = ["BACKENDS", "RETRY_DEADLINE_PARAMETER", "TABLE_PARAMETER", "store_from_url"]

BACKENDS = frozenset({"sqlite", "postgresql", "mysql", "mariadb"})
TABLE_PARAMETER = "table"
RETRY_DEADLINE_PARAMETER = "retry_deadline"


@hookimpl
def store_from_url(url: str) -> SQLAlchemyStore | None:
    """A store for a SQLite, PostgreSQL, MySQL or MariaDB URL; ``None`` for any other URL.

    The store's engine is asynchronous when the URL's driver is (``asyncpg``, ``psycopg``,
    ``asyncmy``, ``aiosqlite``) and runs in worker threads otherwise (``sqlite:///path.db``,
    ``pymysql``). Nothing connects yet.
    """
    try:
        parsed = make_url(url)
    except exc.ArgumentError:
        return None
    if parsed.get_backend_name() not in BACKENDS:
        return None
    table_name = parsed.query.get(TABLE_PARAMETER, DEFAULT_TABLE_NAME)
    if not isinstance(table_name, str) or not table_name:
        raise ValueError(f"?{TABLE_PARAMETER}= must name one table")
    deadline = parsed.query.get(RETRY_DEADLINE_PARAMETER, str(DEFAULT_RETRY_DEADLINE))
    try:
        retry_deadline = float(deadline) if isinstance(deadline, str) else math.nan
    except ValueError:
        retry_deadline = math.nan
    if not retry_deadline > 0:  # NaN too
        raise ValueError(f"?{RETRY_DEADLINE_PARAMETER}= must be a positive number of seconds")
    engine_url = parsed.difference_update_query([TABLE_PARAMETER, RETRY_DEADLINE_PARAMETER])
    return SQLAlchemyStore(engine_url, table_name=table_name, retry_deadline=retry_deadline)
