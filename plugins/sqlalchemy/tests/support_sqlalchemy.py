"""Helpers for the SQLAlchemy plugin's tests: requests, databases under test, a TCP proxy."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from runtime_snapshot_mount_sqlalchemy import snapshot_table
from sqlalchemy import URL, MetaData, Table, create_engine, make_url
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
EXAMPLE_REQUEST = json.loads((EXAMPLES / "example-request.json").read_text(encoding="utf-8"))
API_KEY = "test-key"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
UPSERT = "/runtime-snapshots/upsert"
FAILURE = {"detail": "Unexpected update failure"}


def request_body(account_id: str, version: int) -> dict[str, Any]:
    """The API page's example request for ``account_id`` at ``version``."""
    return {
        **EXAMPLE_REQUEST,
        "account_id": account_id,
        "strategy_version": version,
        "snapshot_id": f"v{version}",
    }


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


POSTGRES_VARIABLE = "RSM_TEST_POSTGRES_URL"
MYSQL_VARIABLE = "RSM_TEST_MYSQL_URL"
_DRIVERS = {  # backend -> (async driver, sync driver)
    "postgresql": ("asyncpg", "psycopg"),
    "mysql": ("asyncmy", "pymysql"),
    "mariadb": ("asyncmy", "pymysql"),
}


def in_ci() -> bool:
    """True when the tests run in CI, where a database test must never be skipped."""
    return os.environ.get("CI", "").strip().lower() == "true"


def unavailable(reason: str) -> None:
    """Skip with ``reason`` -- or, under ``CI=true``, fail loudly with it."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: the database tests must run)", pytrace=False)
    pytest.skip(reason)


def unique_name(prefix: str = "rsm_test") -> str:
    """A table name no other test session uses."""
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


@dataclass
class Database:
    """A database under test: its URLs per engine kind and a fresh snapshot table."""

    backend: str
    async_url: URL
    sync_url: URL
    table: Table

    def url(self, mode: str) -> URL:
        """The URL with the ``async`` or ``sync`` driver."""
        return self.async_url if mode == "async" else self.sync_url

    def engine(self, mode: str, **options: Any) -> AsyncEngine | Engine:
        """A new engine of kind ``mode`` (``async`` or ``sync``); the caller disposes of it."""
        if mode == "async":
            return create_async_engine(self.url(mode), **options)
        return create_engine(self.url(mode), **options)

    def cli_url(self, mode: str = "async") -> str:
        """The ``--store`` URL naming this database's table."""
        url = self.url(mode).update_query_dict({"table": self.table.name})
        return url.render_as_string(hide_password=False)


async def dispose(engine: AsyncEngine | Engine) -> None:
    """Dispose of an engine of either kind."""
    if isinstance(engine, AsyncEngine):
        await engine.dispose()
    else:
        engine.dispose()


def _server_urls(variable: str) -> tuple[URL, URL]:
    """The server named by ``variable``: its URL with the async and with the sync driver."""
    value = os.environ.get(variable, "").strip()
    if not value:
        unavailable(f"{variable} is not set")
    url = make_url(value)
    backend = url.get_backend_name()
    async_driver, sync_driver = _DRIVERS[backend]
    return (
        url.set(drivername=f"{backend}+{async_driver}"),
        url.set(drivername=f"{backend}+{sync_driver}"),
    )


@contextlib.contextmanager
def open_server_database(backend: str, variable: str) -> Iterator[Database]:
    """The server named by ``variable`` with a fresh table, dropped afterwards; skips (or,
    under ``CI=true``, fails) when the variable is unset or the server unreachable."""
    async_url, sync_url = _server_urls(variable)
    engine = create_engine(sync_url, connect_args={"connect_timeout": 5})
    try:
        with engine.connect():
            pass
    except Exception as error:
        engine.dispose()
        reason = " ".join(str(error).split())[:200]
        unavailable(f"{variable} names an unreachable server: {reason}")
    metadata = MetaData()
    table = snapshot_table(metadata, unique_name())
    metadata.create_all(engine)
    try:
        yield Database(backend, async_url, sync_url, table)
    finally:
        metadata.drop_all(engine)
        engine.dispose()


class TcpProxy:
    """A TCP proxy on a loopback port in front of a database; stop it to cut the database off.

    Stopping closes the listening socket and every proxied connection; starting again listens
    on the same port.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Listen (again) on the proxy's port."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and drop every proxied connection."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, upstream_writer))
        pipes = [
            asyncio.ensure_future(_pipe(reader, upstream_writer)),
            asyncio.ensure_future(_pipe(upstream_reader, writer)),
        ]
        self._tasks.update(pipes)
        try:
            await asyncio.gather(*pipes, return_exceptions=True)
        finally:
            self._tasks.difference_update(pipes)
            for end in (writer, upstream_writer):
                end.transport.abort()
                self._writers.discard(end)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, asyncio.CancelledError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.transport.abort()
