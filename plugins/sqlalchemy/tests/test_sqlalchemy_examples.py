"""The example FastAPI hosts in examples/ serve the API page's example under /phonefarm."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

pytestmark = [pytest.mark.sqlite, pytest.mark.anyio]

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
EXAMPLE_REQUEST = json.loads((EXAMPLES / "example-request.json").read_text(encoding="utf-8"))
UPSERT = "/phonefarm/runtime-snapshots/upsert"
ACTIVE, RETIRED = "account_user095916355", "account_retired"


def load_example(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` as a module."""
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # the ORM resolves the models' annotations through it
    spec.loader.exec_module(module)
    return module


async def assert_serves_the_example(app: FastAPI) -> None:
    """Post the API page's example through the host and check every answer."""
    auth = {"Authorization": "Bearer host-key"}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://host") as client:
        response = await client.post(UPSERT, json=EXAMPLE_REQUEST, headers=auth)
        assert response.status_code == 200
        assert response.json() == {
            "status": "upserted",
            "account_id": ACTIVE,
            "snapshot_id": "snapshot-2026-03-22-001",
            "strategy_version": 7,
            "strategy_synced_at": "2026-03-22T08:30:00.000Z",
        }
        older = {**EXAMPLE_REQUEST, "strategy_version": 6}
        response = await client.post(UPSERT, json=older, headers=auth)
        assert response.json()["status"] == "ignored_stale"
        retired = {**EXAMPLE_REQUEST, "account_id": RETIRED}
        assert (await client.post(UPSERT, json=retired, headers=auth)).status_code == 404
        assert (await client.post(UPSERT, json=EXAMPLE_REQUEST)).status_code == 401
        document = (await client.get("/phonefarm/openapi.json")).json()
        assert document["openapi"].startswith("3.1")
        assert document["servers"] == [{"url": "/phonefarm"}]
        assert "/runtime-snapshots/upsert" in document["paths"]


async def test_the_sync_engine_host(tmp_path: Path) -> None:
    host = load_example("fastapi_sync_host")
    app = host.build_app(f"sqlite:///{tmp_path / 'host.db'}", ["host-key"])
    async with app.router.lifespan_context(app):
        with Session(app.state.engine) as session:
            session.add(host.PhoneAccount(handle=ACTIVE, status="active"))
            session.add(host.PhoneAccount(handle=RETIRED, status="retired"))
            session.commit()
        await assert_serves_the_example(app)


async def test_the_async_engine_host(tmp_path: Path) -> None:
    host = load_example("fastapi_async_host")
    app = host.build_app(f"sqlite+aiosqlite:///{tmp_path / 'host.db'}", ["host-key"])
    async with app.router.lifespan_context(app):
        async with AsyncSession(app.state.engine) as session:
            session.add(host.Member(account_ref=ACTIVE, enabled=True))
            session.add(host.Member(account_ref=RETIRED, enabled=False))
            await session.commit()
        await assert_serves_the_example(app)
