"""Fixtures: the databases the plugin's tests run on, each with a fresh table, and a proxy.

SQLite always runs (a file in ``tmp_path``). PostgreSQL and MariaDB/MySQL run when
``RSM_TEST_POSTGRES_URL`` / ``RSM_TEST_MYSQL_URL`` name a server, e.g.
``postgresql+asyncpg://postgres@127.0.0.1:5432/test`` and
``mysql+asyncmy://root@127.0.0.1:3306/test``; the sync-driver URL (psycopg, pymysql) is
derived from them. Unset or unreachable, their tests skip -- but fail when ``CI=true``.
Each session makes uniquely named tables, so test runs sharing a server never collide, and
drops them at the end. Select a backend with ``-m sqlite``, ``-m postgres`` or ``-m mariadb``.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from runtime_snapshot_mount_sqlalchemy import snapshot_table
from sqlalchemy import MetaData, create_engine, make_url
from support_sqlalchemy import (
    MYSQL_VARIABLE,
    POSTGRES_VARIABLE,
    Database,
    TcpProxy,
    open_server_database,
)

# The core's test helpers (rsm_support, standalone_support: starting a server, waiting for its
# port, stopping it) serve these tests too.
sys.path.append(str(Path(__file__).resolve().parents[3] / "tests"))

MARKERS = {
    "sqlite": "needs only SQLite (a file in tmp_path)",
    "postgres": "needs the PostgreSQL server named by RSM_TEST_POSTGRES_URL",
    "mariadb": "needs the MariaDB/MySQL server named by RSM_TEST_MYSQL_URL",
}


def pytest_configure(config: pytest.Config) -> None:
    """Register the backend markers, whichever ini file this run found."""
    for name, meaning in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {meaning}")


BACKENDS = [
    pytest.param("sqlite", marks=pytest.mark.sqlite),
    pytest.param("postgres", marks=pytest.mark.postgres),
    pytest.param("mariadb", marks=pytest.mark.mariadb),
]
SERVER_BACKENDS = BACKENDS[1:]


@pytest.fixture(scope="session")
def postgres() -> Iterator[Database]:
    """The PostgreSQL server, with a table for this session."""
    with open_server_database("postgres", POSTGRES_VARIABLE) as database:
        yield database


@pytest.fixture(scope="session")
def mariadb() -> Iterator[Database]:
    """The MariaDB (or MySQL) server, with a table for this session."""
    with open_server_database("mariadb", MYSQL_VARIABLE) as database:
        yield database


@pytest.fixture
def sqlite(tmp_path: Path) -> Database:
    """A SQLite file in ``tmp_path`` with the table created and write-ahead logging on (the
    file keeps that mode, so every engine on it gets it)."""
    path = tmp_path / "snapshots.db"
    metadata = MetaData()
    table = snapshot_table(metadata)
    engine = create_engine(f"sqlite:///{path}")
    with engine.connect() as connection:
        connection.exec_driver_sql("PRAGMA journal_mode=WAL")
    metadata.create_all(engine)
    engine.dispose()
    return Database(
        "sqlite", make_url(f"sqlite+aiosqlite:///{path}"), make_url(f"sqlite:///{path}"), table
    )


@pytest.fixture(params=BACKENDS)
def database(request: pytest.FixtureRequest) -> Database:
    """Each backend in turn (marked ``sqlite``, ``postgres`` or ``mariadb``)."""
    found: Database = request.getfixturevalue(request.param)
    return found


@pytest.fixture(params=SERVER_BACKENDS)
def server_database(request: pytest.FixtureRequest) -> Database:
    """Each database server in turn (marked ``postgres`` or ``mariadb``)."""
    found: Database = request.getfixturevalue(request.param)
    return found


@pytest.fixture(params=["async", "sync"])
def mode(request: pytest.FixtureRequest) -> str:
    """``async`` (an AsyncEngine) and ``sync`` (an Engine whose calls run in worker threads)."""
    value: str = request.param
    return value


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def proxy(server_database: Database) -> AsyncIterator[TcpProxy]:
    """A started TCP proxy in front of ``server_database``."""
    url = server_database.sync_url
    default_port = 5432 if url.get_backend_name() == "postgresql" else 3306
    tcp = TcpProxy(url.host or "127.0.0.1", url.port or default_port)
    await tcp.start()
    yield tcp
    await tcp.stop()
