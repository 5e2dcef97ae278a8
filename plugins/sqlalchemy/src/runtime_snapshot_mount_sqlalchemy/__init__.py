"""SQLAlchemy storage and accounts for runtime-snapshot-mount.

``SQLAlchemyStore`` keeps the snapshots in one table of SQLite, PostgreSQL, MySQL or MariaDB,
on the host's engine (async or sync) or one made from a URL; ``snapshot_table`` puts that
table on the host's own ``MetaData``; ``SQLAlchemyAccounts`` reads accounts from the host's
own model. Pass them to ``runtime_snapshot_mount.create_app``.
"""

from .accounts import SQLAlchemyAccounts
from .engines import create_store_engine, is_transient
from .schema import DEFAULT_TABLE_NAME, AccountKey, UTCDateTime, snapshot_table
from .store import SQLAlchemyStore

__all__ = [
    "DEFAULT_TABLE_NAME",
    "AccountKey",
    "SQLAlchemyAccounts",
    "SQLAlchemyStore",
    "UTCDateTime",
    "create_store_engine",
    "is_transient",
    "snapshot_table",
]
