"""runtime-snapshot-mount: a mountable Starlette sub-app that keeps each account's newest
runtime-strategy snapshot, with pluggy hooks for auth, accounts and storage."""

from .extend.hookspecs import hookimpl
from .extend.memory import MemoryStore
from .extend.plugins import ENTRY_POINT_GROUP, ConfigurationError, Plugins
from .extend.static import StaticAccounts, StaticTokens, load_accounts_file
from .request.app import (
    DEFAULT_BODY_TIMEOUT,
    DEFAULT_MAX_BODY_BYTES,
    UPSERT_PATH,
    SnapshotApp,
    create_app,
)
from .request.freshness import is_stale
from .request.operations import Metrics, RequestIdFilter, current_request_id
from .request.snapshot import (
    MAX_LABEL,
    MAX_PERSONALITY_DEPTH,
    MAX_SKILLS,
    MAX_TEXT,
    SNAPSHOT_FIELDS,
    Account,
    Principal,
    Snapshot,
    UpsertResult,
    parse_upsert,
)
from .request.timestamps import format_instant, parse_instant
from .version import __version__

__all__ = [
    "DEFAULT_BODY_TIMEOUT",
    "DEFAULT_MAX_BODY_BYTES",
    "ENTRY_POINT_GROUP",
    "MAX_LABEL",
    "MAX_PERSONALITY_DEPTH",
    "MAX_SKILLS",
    "MAX_TEXT",
    "SNAPSHOT_FIELDS",
    "UPSERT_PATH",
    "Account",
    "ConfigurationError",
    "MemoryStore",
    "Metrics",
    "Plugins",
    "Principal",
    "RequestIdFilter",
    "Snapshot",
    "SnapshotApp",
    "StaticAccounts",
    "StaticTokens",
    "UpsertResult",
    "__version__",
    "create_app",
    "current_request_id",
    "format_instant",
    "hookimpl",
    "is_stale",
    "load_accounts_file",
    "parse_instant",
    "parse_upsert",
]
