"""The standalone server's ASGI app, for process managers: ``create_app_from_env``.

``uvicorn --factory runtime_snapshot_mount.standalone:create_app_from_env`` runs it, and so
do gunicorn with ``-k uvicorn_worker.UvicornWorker`` and hypercorn with the app
``'runtime_snapshot_mount.standalone:create_app_from_env()'``, granian with
``--interface asgi --factory``, and daphne through :mod:`runtime_snapshot_mount.asgi`
(docs/deployment.md has each command line). ``runtime-snapshot-mount serve`` is a thin layer
over the same factory. The settings come from the environment
variables of :data:`ENVIRONMENT` (see :class:`Settings`). Each worker process opens its own
store on its own event loop at lifespan start-up, and closes it at shutdown; under a server
without lifespan (daphne), at its first request instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from . import answers, logging_setup
from .app import DEFAULT_BODY_TIMEOUT, DEFAULT_MAX_BODY_BYTES, create_app, route_path
from .memory import MemoryStoreOpener
from .operations import LOGGER_NAME, new_request_id
from .plugins import ConfigurationError, Plugins
from .static import AnyAccount, load_accounts_file

__all__ = [
    "CREATE_TABLES_ATTEMPTS",
    "DEFAULT_STORE",
    "ENVIRONMENT",
    "METRICS_PATH",
    "Settings",
    "StandaloneApp",
    "create_app_from_env",
    "create_tables",
    "is_process_local",
    "open_store",
    "sqlite_file",
]

DEFAULT_STORE = "sqlite:///runtime-snapshots.db"
METRICS_PATH = "/metrics"
CREATE_TABLES_ATTEMPTS = 3
_CREATE_TABLES_PAUSE_S = 0.25
_SQLALCHEMY_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "mariadb", "oracle", "mssql")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")

ENVIRONMENT: dict[str, str] = {
    "RSM_STORE": f"store URL (default {DEFAULT_STORE}, relative to the working directory)",
    "RSM_API_KEYS": "accepted bearer tokens, comma-separated (rotation)",
    "PHONEFARM_API_KEY": "one more accepted bearer token",
    "RSM_ACCOUNTS": "path of a JSON array of {account_id, active}; unset: every account id",
    "RSM_MAX_BODY_BYTES": f"largest accepted body in bytes (default {DEFAULT_MAX_BODY_BYTES})",
    "RSM_BODY_TIMEOUT": f"seconds to send the body, else 408; 0: no limit "
    f"(default {DEFAULT_BODY_TIMEOUT:g})",
    "RSM_OPENAPI": "true: also serve the OpenAPI document at /openapi.json (default false)",
    "RSM_READ": "true: also serve GET /runtime-snapshots/{account_id} (default false)",
    "RSM_METRICS": "true: also serve Prometheus metrics at /metrics (extra [prometheus]; "
    "with several workers set PROMETHEUS_MULTIPROC_DIR, as serve --metrics does)",
    "RSM_CREATE_TABLES": "true: create the store's table at start-up if missing (default true)",
    "RSM_ACCESS_LOG": "false: no access record per request (default true)",
    "RSM_LOG_LEVEL": "critical, error, warning, info or debug (default info)",
    "RSM_LOG_FORMAT": "text or json, one JSON object per line (default text)",
}
"""The environment variables :func:`create_app_from_env` reads, with what each means."""

logger = logging.getLogger(LOGGER_NAME)


def _flag(environ: Mapping[str, str], name: str, default: bool) -> bool:
    value = environ.get(name)
    if value is None:
        return default
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigurationError(f"{name} must be true or false, not {value!r}")


def _number(environ: Mapping[str, str], name: str, kind: type[int] | type[float]) -> Any:
    value = environ[name]
    try:
        return kind(value.strip())
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise ConfigurationError(f"{name} must be {what}, not {value!r}") from None


@dataclass(frozen=True)
class Settings:
    """What the standalone server serves, and how it logs.

    :meth:`from_environ` reads them from the variables of :data:`ENVIRONMENT`;
    :meth:`to_environ` writes them back, which is how ``serve`` hands them to its workers.
    """

    api_keys: tuple[str, ...]
    store: str = DEFAULT_STORE
    accounts: str | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    body_timeout: float | None = DEFAULT_BODY_TIMEOUT
    openapi: bool = False
    read: bool = False
    metrics: bool = False
    create_tables: bool = True
    access_log: bool = True
    log_level: str = "info"
    log_format: str = "text"

    def __post_init__(self) -> None:
        if not self.api_keys:
            raise ConfigurationError(
                "no API key: pass --api-key KEY, or set RSM_API_KEYS or PHONEFARM_API_KEY"
            )
        for key in self.api_keys:
            if not key.strip():
                raise ConfigurationError("an API key must not be empty")
            if "," in key or key != key.strip():
                raise ConfigurationError(
                    "an API key must not hold a comma or surrounding spaces (RFC 6750 token)"
                )
        if not self.store:
            raise ConfigurationError("the store URL must not be empty")
        if self.max_body_bytes < 1:
            raise ConfigurationError("--max-body-bytes (RSM_MAX_BODY_BYTES) must be at least 1")
        if self.body_timeout is not None and not self.body_timeout > 0:  # NaN too
            raise ConfigurationError(
                "--body-timeout (RSM_BODY_TIMEOUT) must be a number of seconds, or 0 for no limit"
            )
        if self.log_level.lower() not in logging_setup.LOG_LEVELS:
            levels = ", ".join(logging_setup.LOG_LEVELS)
            raise ConfigurationError(f"the log level must be one of {levels}")
        if self.log_format not in logging_setup.LOG_FORMATS:
            formats = ", ".join(logging_setup.LOG_FORMATS)
            raise ConfigurationError(f"the log format must be one of {formats}")

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], api_keys: Iterable[str] = ()) -> Settings:
        """The settings the variables of :data:`ENVIRONMENT` in ``environ`` describe, with
        ``api_keys`` accepted too.

        Raises :class:`ConfigurationError` with a one-line reason naming the variable.
        """
        keys = [key.strip() for key in environ.get("RSM_API_KEYS", "").split(",")]
        keys = [key for key in keys if key]
        if environ.get("PHONEFARM_API_KEY", "").strip():
            keys.append(environ["PHONEFARM_API_KEY"].strip())
        keys.extend(api_keys)
        options: dict[str, Any] = {"api_keys": tuple(dict.fromkeys(keys))}
        if environ.get("RSM_STORE", "").strip():
            options["store"] = environ["RSM_STORE"].strip()
        if environ.get("RSM_ACCOUNTS", "").strip():
            options["accounts"] = environ["RSM_ACCOUNTS"].strip()
        if environ.get("RSM_MAX_BODY_BYTES", "").strip():
            options["max_body_bytes"] = _number(environ, "RSM_MAX_BODY_BYTES", int)
        if environ.get("RSM_BODY_TIMEOUT", "").strip():
            timeout = _number(environ, "RSM_BODY_TIMEOUT", float)
            options["body_timeout"] = None if timeout == 0 else timeout
        options["openapi"] = _flag(environ, "RSM_OPENAPI", False)
        options["read"] = _flag(environ, "RSM_READ", False)
        options["metrics"] = _flag(environ, "RSM_METRICS", False)
        options["create_tables"] = _flag(environ, "RSM_CREATE_TABLES", True)
        options["access_log"] = _flag(environ, "RSM_ACCESS_LOG", True)
        if environ.get("RSM_LOG_LEVEL", "").strip():
            options["log_level"] = environ["RSM_LOG_LEVEL"].strip().lower()
        if environ.get("RSM_LOG_FORMAT", "").strip():
            options["log_format"] = environ["RSM_LOG_FORMAT"].strip().lower()
        return cls(**options)

    def to_environ(self) -> dict[str, str]:
        """The variables that :meth:`from_environ` reads back as these settings."""
        return {
            "RSM_STORE": self.store,
            "RSM_API_KEYS": ",".join(self.api_keys),
            "RSM_ACCOUNTS": self.accounts or "",
            "RSM_MAX_BODY_BYTES": str(self.max_body_bytes),
            "RSM_BODY_TIMEOUT": "0" if self.body_timeout is None else repr(self.body_timeout),
            "RSM_OPENAPI": str(self.openapi).lower(),
            "RSM_READ": str(self.read).lower(),
            "RSM_METRICS": str(self.metrics).lower(),
            "RSM_CREATE_TABLES": str(self.create_tables).lower(),
            "RSM_ACCESS_LOG": str(self.access_log).lower(),
            "RSM_LOG_LEVEL": self.log_level,
            "RSM_LOG_FORMAT": self.log_format,
        }

    def account_source(self) -> object:
        """The accounts plugin: the accounts file's list, or every account id."""
        if self.accounts is None:
            return AnyAccount()
        return load_accounts_file(self.accounts)


def is_process_local(url: str) -> bool:
    """True for a store that lives in one process's memory (``memory://``, in-memory
    SQLite): a second worker would not share it, and its table must be made where it serves."""
    if url == "memory://":
        return True
    parts = urlsplit(url)
    if parts.scheme.partition("+")[0].lower() != "sqlite":
        return False
    database = parts.path[1:] if parts.path.startswith("/") else parts.path
    query = parse_qs(parts.query)
    return database in ("", ":memory:") or query.get("mode") == ["memory"]


def sqlite_file(url: str) -> Path | None:
    """The database file a ``sqlite://`` URL names (relative to the working directory), or
    ``None`` for another URL or an in-memory database."""
    parts = urlsplit(url)
    if parts.scheme.partition("+")[0].lower() != "sqlite" or is_process_local(url):
        return None
    database = parts.path[1:] if parts.path.startswith("/") else parts.path
    if database.startswith("file:"):  # a URI filename (?uri=true)
        database = urlsplit(database).path
    return Path(database)


async def open_store(url: str) -> tuple[object, Plugins]:
    """Open the store plugin for ``url`` on the running loop; returns it with a plugin
    manager that holds only it.

    Close it with the manager's ``store_close()`` on the same loop, and use it no more.
    """
    opener = Plugins(builtins=[MemoryStoreOpener()], require_store=False)
    store = await opener.store_from_url(url)
    if store is None:
        scheme = url.partition(":")[0].partition("+")[0].lower()
        if scheme in _SQLALCHEMY_SCHEMES:
            raise ConfigurationError(
                f"the store URL {url!r} needs the SQLAlchemy plugin: "
                "pip install 'runtime-snapshot-mount[sqlalchemy]'"
            )
        raise ConfigurationError(f"no installed plugin opens the store URL {url!r}")
    return store, Plugins([store], entry_points=False)


_ALREADY_EXISTS = re.compile(r"Table '[^']*' already exists")


class _TableExistsNote(logging.Filter):
    """Drops the MySQL note ``Table '...' already exists`` that asyncmy logs as a warning
    after ``CREATE TABLE IF NOT EXISTS`` found the table: it is the expected outcome."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not _ALREADY_EXISTS.fullmatch(record.getMessage())


@contextlib.contextmanager
def _quiet_table_exists() -> Iterator[None]:
    driver_logger = logging.getLogger("asyncmy")
    note = _TableExistsNote()
    driver_logger.addFilter(note)
    try:
        yield
    finally:
        driver_logger.removeFilter(note)


async def _create_tables_on(plugins: Plugins) -> None:
    """``store_create_tables``, tried again when it fails: several processes creating one
    missing table at once may collide (PostgreSQL's catalog raises a unique violation), and
    the next ``CREATE TABLE IF NOT EXISTS`` then finds the table made by the winner."""
    with _quiet_table_exists():
        for attempt in range(1, CREATE_TABLES_ATTEMPTS + 1):
            try:
                await plugins.store_create_tables()
                return
            except Exception:
                if attempt == CREATE_TABLES_ATTEMPTS:
                    raise
                logger.debug("creating the tables failed; trying again", exc_info=True)
                await asyncio.sleep(_CREATE_TABLES_PAUSE_S * attempt)


async def create_tables(url: str) -> None:
    """Create the tables of the store at ``url`` if missing, on a store instance of its own
    that is closed before this returns (run it before any worker starts)."""
    _, plugins = await open_store(url)
    try:
        await _create_tables_on(plugins)
    finally:
        await plugins.store_close()


class StandaloneApp:
    """The served ASGI app: opens the store and builds the sub-app at lifespan start-up, on
    the server's own event loop, in each worker process; closes the store at shutdown.

    A server that runs no lifespan (daphne) gets the same start-up on the first request
    instead, like a store that connects on first use; the store then stays open until the
    process ends. If that start-up fails, the request answers 500 and the next one tries again.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.accounts = settings.account_source()
        self.app: ASGIApp | None = None
        self.plugins: Plugins | None = None
        self.metrics: ASGIApp | None = None  # GET /metrics, with settings.metrics
        self._starting = asyncio.Lock()  # bound to the serving loop on first use
        self._stopped = False  # by the lifespan shutdown: no start-up after it

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        app = self.app
        if app is None:  # no lifespan start-up ran: start now, once
            try:
                app = await self._started()
            except Exception:
                logger.exception("start-up on the first request failed")
                if scope["type"] != "http":
                    raise
                await answers.FAILED.send(send, new_request_id())
                return
        if self.metrics is not None and route_path(scope) == METRICS_PATH:
            await self.metrics(scope, receive, send)
            return
        await app(scope, receive, send)

    async def _started(self) -> ASGIApp:
        """The sub-app, after running the start-up unless a request before this one did."""
        async with self._starting:
            if self._stopped:
                raise RuntimeError("the app has shut down")
            if self.app is None:
                await self._start()
            assert self.app is not None
            return self.app

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self._started()
                except Exception as error:
                    logger.exception("start-up failed")
                    await send({"type": "lifespan.startup.failed", "message": str(error)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self._stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _start(self) -> None:
        settings = self.settings
        store, plugins = await open_store(settings.store)
        self.plugins = plugins
        try:
            if settings.create_tables:
                await _create_tables_on(plugins)
            observers: list[object] = []
            if settings.metrics:
                from .prometheus import PrometheusMetrics  # the [prometheus] extra

                exporter = PrometheusMetrics()
                observers.append(exporter)
                self.metrics = exporter.asgi_app()
            self.app = create_app(
                store,
                self.accounts,
                *observers,
                api_keys=list(settings.api_keys),
                max_body_bytes=settings.max_body_bytes,
                openapi=settings.openapi,
                read=settings.read,
                body_timeout=settings.body_timeout,
            )
        except BaseException:
            self.plugins = None
            await plugins.store_close()
            raise

    async def _stop(self) -> None:
        self._stopped = True
        plugins, self.plugins, self.app = self.plugins, None, None
        try:
            if plugins is not None:
                await plugins.store_close()
        finally:
            logging_setup.flush()


def create_app_from_env(environ: Mapping[str, str] | None = None) -> StandaloneApp:
    """The standalone app configured by the environment variables of :data:`ENVIRONMENT`
    (``os.environ`` unless ``environ`` is given); also sets up its logging.

    Raises :class:`ConfigurationError` with a one-line reason for a bad setting, a missing
    API key or an unreadable accounts file. Nothing connects to the store until start-up.
    """
    settings = Settings.from_environ(os.environ if environ is None else environ)
    app = StandaloneApp(settings)  # an unreadable accounts file fails here, before serving
    logging_setup.configure(
        level=settings.log_level, log_format=settings.log_format, access_log=settings.access_log
    )
    return app
