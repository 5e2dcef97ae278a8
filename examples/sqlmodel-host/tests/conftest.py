"""The example host's databases: a SQLite file, and a new database on the PostgreSQL server
named by ``RSM_TEST_POSTGRES_URL`` (with the host's sync driver, psycopg), dropped afterwards.
Without that variable the PostgreSQL tests skip, except under ``CI=true``, where they fail."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import URL, create_engine, make_url

POSTGRES_VARIABLE = "RSM_TEST_POSTGRES_URL"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "postgres: needs the server named by RSM_TEST_POSTGRES_URL")


def unavailable(reason: str) -> None:
    if os.environ.get("CI", "").strip().lower() == "true":
        pytest.fail(f"{reason} (CI=true: database tests must run)")
    pytest.skip(reason)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database (psycopg), dropped afterwards."""
    value = os.environ.get(POSTGRES_VARIABLE, "").strip()
    if not value:
        unavailable(f"{POSTGRES_VARIABLE} is not set")
    server: URL = make_url(value).set(drivername="postgresql+psycopg")
    name = f"rsm_example_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.exec_driver_sql(f"CREATE DATABASE {name}")
    except Exception as error:
        admin.dispose()
        unavailable(f"{POSTGRES_VARIABLE} names an unreachable server: {error}"[:300])
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f"DROP DATABASE {name} WITH (FORCE)")
        admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'host.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str:
    """Each database the migrations are run on."""
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


@pytest.fixture
def anyio_backend() -> str:
    """The host runs on asyncio (uvicorn's loop)."""
    return "asyncio"
