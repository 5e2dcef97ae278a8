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
from collections.abc import Iterator, Mapping
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from ..extend.memory import MemoryStoreOpener
from ..extend.plugins import ConfigurationError, Plugins
from ..extend.static import AnyAccount, load_accounts_file
from ..request import answers
from ..request.app import create_app, route_path
from ..request.operations import LOGGER_NAME, new_request_id
from . import logging_setup
from .settings import DEFAULT_STORE, ENVIRONMENT, Settings

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
    "is_sqlalchemy_url",
    "open_store",
    "sqlite_file",
]

METRICS_PATH = "/metrics"
CREATE_TABLES_ATTEMPTS = 3
_CREATE_TABLES_PAUSE_S = 0.25
_SQLALCHEMY_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "mariadb", "oracle", "mssql")

logger = logging.getLogger(LOGGER_NAME)


def is_sqlalchemy_url(url: str) -> bool:
    """True for a URL whose scheme the SQLAlchemy plugin opens (``sqlite:``,
    ``postgresql+asyncpg:``, ...)."""
    return url.partition(":")[0].partition("+")[0].lower() in _SQLALCHEMY_SCHEMES


def _account_source(settings: Settings) -> object:
    """The accounts plugin: the accounts file's list, or every account id."""
    if settings.accounts is None:
        return AnyAccount()
    return load_accounts_file(settings.accounts)


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
        if is_sqlalchemy_url(url):
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
        self.accounts = _account_source(settings)
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
                from ..extend.prometheus import PrometheusMetrics  # the [prometheus] extra

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
            logging_setup.finish()  # a worker may end by a signal next


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
