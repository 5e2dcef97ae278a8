"""The example host as its developer would test it: the Alembic migrations build the models'
tables (and nothing is left to autogenerate), and the mounted endpoint answers the API page's
example for an active user, keyed by the user's UUID."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from alembic import command
from alembic.config import Config
from fastapi import FastAPI
from sqlalchemy import create_engine, inspect
from sqlmodel import Session, select

from runtime_snapshot_mount import ConfigurationError

HERE = Path(__file__).resolve().parent
EXAMPLE_DIR = HERE.parent
EXAMPLE_REQUEST: dict[str, Any] = json.loads(
    (EXAMPLE_DIR.parent / "example-request.json").read_text(encoding="utf-8")
)
UPSERT = "/phonefarm/runtime-snapshots/upsert"
AUTH = {"Authorization": "Bearer key-1"}
TABLES = {"user", "runtime_snapshots"}


def alembic_config(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Config:
    """The example's own alembic.ini and env.py, on ``database_url`` (as ``DATABASE_URL``,
    which the app reads too)."""
    monkeypatch.setenv("DATABASE_URL", database_url)
    return Config(str(EXAMPLE_DIR / "alembic.ini"))


def table_names(database_url: str) -> set[str]:
    engine = create_engine(database_url)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def test_importing_the_host_reads_no_setting_and_an_empty_key_list_fails_its_start(
    monkeypatch: pytest.MonkeyPatch, sqlite_url: str
) -> None:
    monkeypatch.delenv("PHONEFARM_API_KEYS", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    from sqlmodel_host.main import Settings, create_host

    settings = Settings.from_environ({"DATABASE_URL": sqlite_url, "PHONEFARM_API_KEYS": " "})
    with pytest.raises(ConfigurationError, match="api_keys is empty"):
        create_host(settings)


def test_the_migrations_build_the_models_tables_online_and_offline(
    database_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = alembic_config(database_url, monkeypatch)
    command.upgrade(config, "head")
    assert table_names(database_url) == TABLES
    command.check(config)  # autogenerate finds nothing the migrations left out
    command.downgrade(config, "base")
    assert table_names(database_url) == set()
    command.upgrade(config, "head", sql=True)  # offline: the SQL, nothing run
    assert table_names(database_url) == set()


@asynccontextmanager
async def running_host(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The host on ``database_url``, started (its lifespan runs), with a client."""
    from sqlmodel_host.main import Settings, create_host

    environ = {"DATABASE_URL": database_url, "PHONEFARM_API_KEYS": "key-1,key-2"}
    host = create_host(Settings.from_environ(environ))
    async with host.router.lifespan_context(host):
        transport = httpx.ASGITransport(app=host)
        async with httpx.AsyncClient(transport=transport, base_url="http://host") as client:
            yield host, client


def add_user(database_url: str, email: str, *, active: bool) -> uuid.UUID:
    from sqlmodel_host.models import User

    engine = create_engine(database_url)
    try:
        with Session(engine) as session:
            user = User(email=email, is_active=active)
            session.add(user)
            session.commit()
            return user.id
    finally:
        engine.dispose()


def stored_account_ids(database_url: str) -> list[str]:
    """The account ids of the snapshot table's rows."""
    from sqlmodel_host.models import runtime_snapshots

    engine = create_engine(database_url)
    try:
        with Session(engine) as session:
            return list(session.exec(select(runtime_snapshots.c.account_id)).all())
    finally:
        engine.dispose()


@pytest.mark.anyio
async def test_the_api_example_for_an_active_user_is_stored_under_its_uuid(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The example, sent under the user's UUID in three spellings, keeps one row under the
    canonical one; each answer echoes the spelling that was sent."""
    command.upgrade(alembic_config(database_url, monkeypatch), "head")
    user_id = str(add_user(database_url, "active@example.com", active=True))
    body = {**EXAMPLE_REQUEST, "account_id": user_id}
    async with running_host(database_url, monkeypatch) as (_, client):
        applied = await client.post(UPSERT, json=body, headers=AUTH)
        stale = await client.post(UPSERT, json={**body, "strategy_version": 6}, headers=AUTH)
        upper = {**body, "account_id": user_id.upper(), "strategy_version": 8}
        later = await client.post(UPSERT, json=upper, headers=AUTH)
        dashless = {**body, "account_id": user_id.replace("-", ""), "strategy_version": 6}
        stale_again = await client.post(UPSERT, json=dashless, headers=AUTH)
    expected = {
        "status": "upserted",
        "account_id": user_id,
        "snapshot_id": "snapshot-2026-03-22-001",
        "strategy_version": 7,
        "strategy_synced_at": "2026-03-22T08:30:00.000Z",
    }
    assert applied.status_code == 200
    assert applied.content == json.dumps(expected, separators=(",", ":")).encode()
    assert stale.json()["status"] == "ignored_stale"
    assert later.json() == {**expected, "account_id": user_id.upper(), "strategy_version": 8}
    assert stale_again.json()["status"] == "ignored_stale"
    assert stale_again.json()["account_id"] == user_id.replace("-", "")
    assert stored_account_ids(database_url) == [user_id]


@pytest.mark.anyio
async def test_an_unknown_or_inactive_user_answers_404_and_nothing_is_stored(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The API page's own id is no UUID: 404, as for an unknown or inactive user."""
    command.upgrade(alembic_config(database_url, monkeypatch), "head")
    inactive = str(add_user(database_url, "retired@example.com", active=False))
    unknown = str(uuid.uuid4())
    async with running_host(database_url, monkeypatch) as (_, client):
        for account_id in (unknown, inactive, EXAMPLE_REQUEST["account_id"]):
            body = {**EXAMPLE_REQUEST, "account_id": account_id}
            answer = await client.post(UPSERT, json=body, headers=AUTH)
            assert answer.status_code == 404
            assert answer.content == b'{"detail":"Account not found or inactive"}'
        refused = await client.post(UPSERT, json=EXAMPLE_REQUEST, headers={"Authorization": "x"})
        assert refused.status_code == 401
    assert stored_account_ids(database_url) == []
